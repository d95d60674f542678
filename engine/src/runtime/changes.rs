//! Cluster mode: flag changes, expunges, copies and mailbox changes made
//! on a bucket's primary, applied on its replica before the client is told
//! they are done (`cluster::changes` has the form they travel in).
//!
//! The primary's half, [`commit`], is the commit of every IMAP command
//! and of a POP3 update: the records are written here first, as on a
//! single node, then what they changed (messages named by content digest,
//! mailboxes by name) goes to the replica over a hand-over session (`MAIL
//! FROM:<> XCHANGES`, the text in one BDAT chunk), in the account's commit
//! order, and the answer waits for its 250. The replica's half, [`apply_here`], finds each
//! message in its own copy of the mailbox by the same digest and commits
//! the same change with its own UIDs and mod-sequences; a message it does
//! not hold (a bucket copy still running) is passed over.
use std::collections::HashMap;
use std::rc::Rc;

use super::shard::{Shard, ShardMsg};
use crate::cluster::changes::{self, Change, Digest};
use crate::storage::index::{self, Account};
use crate::storage::record::{Loc, Op};
use crate::storage::StorageError;

/// Digests remembered per shard (about 40 octets each, 20 MiB at most);
/// past this about half are forgotten.
const CACHED_MAX: usize = 1 << 19;

/// Text sent in one transaction at most; more goes in several, in order.
const SEND_MAX: usize = 1 << 20;

/// Content digests of stored bodies by location. A body never changes
/// where it lies, so an entry never goes stale (a location compaction
/// freed is simply never asked for again).
#[derive(Default)]
pub struct DigestCache(std::cell::RefCell<HashMap<Loc, Digest>>);

impl DigestCache {
    fn get(&self, loc: Loc) -> Option<Digest> {
        self.0.borrow().get(&loc).copied()
    }

    fn put(&self, loc: Loc, d: Digest) {
        let mut m = self.0.borrow_mut();
        if m.len() >= CACHED_MAX {
            // Every other entry (in the map's order, which has nothing to
            // do with age): no cliff where everything is hashed again.
            let mut keep = false;
            m.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        m.insert(loc, d);
    }
}

/// The digest of the body at `loc` (`transfer::Digests::Content`), hashed
/// in steps with yields between them. None: the body is gone.
async fn digest_of(shard: &Shard, loc: Loc) -> Option<Digest> {
    digest_held(shard, loc, None).await
}

/// [`digest_of`] with the body's handle taken earlier (`held`), which
/// keeps its segment mapped even if compaction has dropped it since.
async fn digest_held(
    shard: &Shard,
    loc: Loc,
    held: Option<crate::storage::Body>,
) -> Option<Digest> {
    if let Some(d) = shard.digests.get(loc) {
        return Some(d);
    }
    let body = match held {
        Some(b) => b,
        None => shard.store.body(loc)?,
    };
    let bytes = body.bytes();
    let mut d = super::transfer::Digester::new();
    let start = crate::cluster::duplicates::content_start(bytes);
    for step in bytes[start..].chunks(super::transfer::DIGEST_STEP) {
        d.update(step);
        glommio::yield_if_needed().await;
    }
    let d = d.finish();
    shard.digests.put(loc, d);
    Some(d)
}

/// Does a record of this kind change what the replica must mirror? New
/// messages travel on their own (deliveries, APPEND copies); keyword bits
/// travel as names inside `Flags`.
fn replicated(op: &Op<'_>) -> bool {
    matches!(
        op,
        Op::CreateMailbox { .. }
            | Op::DeleteMailbox { .. }
            | Op::RenameMailbox { .. }
            | Op::Subscribe { .. }
            | Op::Flags { .. }
            | Op::Expunge { .. }
            | Op::Link { .. }
    )
}

/// A change whose message is still named by location.
enum Pending {
    Ready(Change),
    Flags {
        mailbox: String,
        loc: Loc,
        flags: u32,
        keywords: Vec<String>,
    },
    Expunge {
        mailbox: String,
        locs: Vec<Loc>,
    },
    Link {
        from: String,
        to: String,
        loc: Loc,
        flags: u32,
        keywords: Vec<String>,
    },
}

/// The names of keyword `bits` of `mailbox`: given a bit in this commit
/// (`new`) or known to the mailbox. A bit without a name is left out.
fn keyword_names(
    new: &HashMap<(u32, u8), String>,
    m: Option<&index::Mailbox>,
    mailbox: u32,
    bits: u64,
) -> Vec<String> {
    (0..64u8)
        .filter(|b| bits & (1u64 << b) != 0)
        .filter_map(|b| {
            new.get(&(mailbox, b))
                .cloned()
                .or_else(|| m.and_then(|m| m.keywords.get(b as usize).cloned()))
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// What `ops` (about to be committed, so the index still shows the state
/// before them) change in `account`, by names and locations.
fn pending(a: &Account, ops: &[Op<'_>]) -> Vec<Pending> {
    // Names as the records go: a mailbox created or renamed earlier in
    // the same commit, a keyword given its bit in it.
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut keywords: HashMap<(u32, u8), String> = HashMap::new();
    let mut holder: Option<HashMap<Loc, u32>> = None;
    let name_of = |names: &HashMap<u32, String>, id: u32| {
        names
            .get(&id)
            .cloned()
            .or_else(|| a.mailbox(id).map(|m| m.name.clone()))
    };
    let mut out = Vec::new();
    for op in ops.iter().filter(|o| o.account() == a.name) {
        match op {
            Op::CreateMailbox {
                mailbox,
                name,
                special_use,
                ..
            } => {
                names.insert(*mailbox, name.to_string());
                out.push(Pending::Ready(Change::Create {
                    name: name.to_string(),
                    special_use: *special_use,
                }));
            }
            Op::DeleteMailbox { mailbox, .. } => {
                if let Some(name) = name_of(&names, *mailbox) {
                    out.push(Pending::Ready(Change::Delete { name }));
                }
            }
            Op::RenameMailbox { mailbox, name, .. } => {
                if let Some(from) = name_of(&names, *mailbox) {
                    out.push(Pending::Ready(Change::Rename {
                        from,
                        to: name.to_string(),
                    }));
                }
                names.insert(*mailbox, name.to_string());
            }
            Op::Subscribe { name, on, .. } => out.push(Pending::Ready(Change::Subscribe {
                name: name.to_string(),
                on: *on,
            })),
            Op::Keyword {
                mailbox, bit, name, ..
            } => {
                keywords.insert((*mailbox, *bit), name.to_string());
            }
            Op::Flags {
                mailbox,
                uid,
                flags,
                keywords: bits,
                ..
            } => {
                let Some(m) = a.mailbox(*mailbox) else {
                    continue;
                };
                let Some(p) = m.position(*uid) else { continue };
                out.push(Pending::Flags {
                    mailbox: name_of(&names, *mailbox).unwrap_or_else(|| m.name.clone()),
                    loc: m.messages[p].loc,
                    flags: *flags,
                    keywords: keyword_names(&keywords, Some(m), *mailbox, *bits),
                });
            }
            Op::Expunge { mailbox, uids, .. } => {
                let Some(m) = a.mailbox(*mailbox) else {
                    continue;
                };
                let locs: Vec<Loc> = uids
                    .iter()
                    .filter_map(|u| m.position(*u).map(|p| m.messages[p].loc))
                    .collect();
                if !locs.is_empty() {
                    out.push(Pending::Expunge {
                        mailbox: name_of(&names, *mailbox).unwrap_or_else(|| m.name.clone()),
                        locs,
                    });
                }
            }
            Op::Link {
                mailbox,
                loc,
                flags,
                keywords: bits,
                ..
            } => {
                // The mailbox the copied message is in now.
                let holder = holder.get_or_insert_with(|| {
                    let mut h = HashMap::new();
                    for m in &a.mailboxes {
                        for e in &m.messages {
                            h.entry(e.loc).or_insert(m.id);
                        }
                    }
                    h
                });
                let (Some(from), Some(to)) = (
                    holder.get(loc).and_then(|id| name_of(&names, *id)),
                    name_of(&names, *mailbox),
                ) else {
                    continue;
                };
                out.push(Pending::Link {
                    from,
                    to,
                    loc: *loc,
                    flags: *flags,
                    keywords: keyword_names(&keywords, a.mailbox(*mailbox), *mailbox, *bits),
                });
            }
            Op::Message { .. }
            | Op::Relocate { .. }
            | Op::Envelope { .. }
            | Op::QueueState { .. } => {}
        }
    }
    out
}

/// Per account, the order in which commits that owe the replica changes
/// were made here, so their changes reach the replica in that order
/// (each carries whole flag states: a later one must not be overtaken).
#[derive(Default)]
pub struct Order(std::cell::RefCell<HashMap<String, Line>>);

#[derive(Default)]
struct Line {
    next: u64,
    serving: u64,
    done: std::collections::BTreeSet<u64>,
    /// Tickets waiting for their turn, woken when `serving` moves.
    waiting: Vec<std::task::Waker>,
}

/// One commit's place in its account's [`Order`]; its turn ends when it
/// is dropped (also when the commit failed and nothing is sent).
struct Ticket<'a> {
    order: &'a Order,
    account: String,
    number: u64,
}

impl Order {
    fn take(&self, account: &str) -> Ticket<'_> {
        let mut lines = self.0.borrow_mut();
        let line = lines.entry(account.to_string()).or_default();
        let number = line.next;
        line.next += 1;
        Ticket {
            order: self,
            account: account.to_string(),
            number,
        }
    }
}

impl Ticket<'_> {
    /// Wait until every earlier commit of the account has sent its changes.
    async fn turn(&self) {
        std::future::poll_fn(|cx| {
            let mut lines = self.order.0.borrow_mut();
            match lines.get_mut(&self.account) {
                Some(line) if line.serving < self.number => {
                    if !line.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                        line.waiting.push(cx.waker().clone());
                    }
                    std::task::Poll::Pending
                }
                _ => std::task::Poll::Ready(()),
            }
        })
        .await
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut lines = self.order.0.borrow_mut();
        let Some(line) = lines.get_mut(&self.account) else {
            return;
        };
        line.done.insert(self.number);
        let before = line.serving;
        while line.done.remove(&line.serving) {
            line.serving += 1;
        }
        let woken = if line.serving > before {
            std::mem::take(&mut line.waiting)
        } else {
            Vec::new()
        };
        if line.serving == line.next {
            lines.remove(&self.account);
        }
        drop(lines);
        // Each checks its own number again (and waits again if not yet).
        for w in woken {
            w.wake();
        }
    }
}

/// Sends of one commit's changes before it is given up.
const SEND_ATTEMPTS: usize = 3;

/// Cluster mode's commit of a session's records (every committing IMAP
/// command, a POP3 update): written here first, exactly as without a
/// cluster (nothing waits between the session's planning and this write,
/// so UIDs and flag states stay in order), then what they change is sent
/// to the replica of each account's bucket, in the account's commit
/// order, and the answer waits for the replica's 250. A replica that is
/// not live fails the command before anything is written (`UNAVAILABLE`);
/// one that fails after the write here is tried again, then logged
/// (`event="change_not_replicated"`): the change is done and the client is
/// told so.
pub async fn commit(shard: &Shard, ops: &[Op<'_>]) -> Result<(), StorageError> {
    if !ops.iter().any(replicated) {
        return shard.store.commit(ops).await;
    }
    let mut accounts: Vec<&str> = Vec::new();
    for op in ops.iter().filter(|o| replicated(o)) {
        let a = op.account();
        if !accounts.contains(&a) {
            accounts.push(a);
        }
    }
    let mut owed = Vec::new();
    for account in accounts {
        match shard.replicas(&[account.to_string()]) {
            Err(e) => {
                shard.store.abandon(ops);
                return Err(StorageError::Unavailable(e));
            }
            Ok(away) if away.is_empty() => continue,
            Ok(_) => {}
        }
        let list = shard
            .store
            .with_account(account, |a| pending(a, ops))
            .unwrap_or_default();
        if !list.is_empty() {
            // The bodies' handles before the write: an expunged message's
            // segment stays readable for its digest.
            let held: HashMap<Loc, crate::storage::Body> = list
                .iter()
                .flat_map(Pending::locs)
                .filter_map(|l| shard.store.body(l).map(|b| (l, b)))
                .collect();
            owed.push((account, list, held, shard.change_order.take(account)));
        }
    }
    shard.store.commit(ops).await?;
    for (account, list, held, ticket) in owed {
        // Written here, not yet sent: if this future is dropped now (the
        // shutdown's grace ran out), say so.
        let mut unsent = Unsent {
            shard,
            account,
            sent: false,
        };
        let texts = texts(shard, list, &held).await;
        drop(held);
        ticket.turn().await;
        send(shard, account, &texts).await;
        unsent.sent = true;
    }
    Ok(())
}

/// A commit written here whose changes the replica has not been sent.
struct Unsent<'a> {
    shard: &'a Shard,
    account: &'a str,
    sent: bool,
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.shard.metrics.change_unreplicated();
            tracing::error!(
                event = "change_not_replicated",
                account = self.account,
                "cluster: a change made here was not sent to the replica (stopped first)"
            );
        }
    }
}

impl Pending {
    fn locs(&self) -> Vec<Loc> {
        match self {
            Pending::Ready(_) => Vec::new(),
            Pending::Flags { loc, .. } | Pending::Link { loc, .. } => vec![*loc],
            Pending::Expunge { locs, .. } => locs.clone(),
        }
    }
}

/// The text of `list`, digests taken, in pieces the replica takes.
async fn texts(
    shard: &Shard,
    list: Vec<Pending>,
    held: &HashMap<Loc, crate::storage::Body>,
) -> Vec<Vec<u8>> {
    let digest = |loc: Loc| digest_held(shard, loc, held.get(&loc).cloned());
    let size_max = SEND_MAX.min(shard.config().limits.message_size_max.max(4096));
    let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
    for p in list {
        let change = match p {
            Pending::Ready(c) => Some(c),
            Pending::Flags {
                mailbox,
                loc,
                flags,
                keywords,
            } => digest(loc).await.map(|digest| Change::Flags {
                mailbox,
                digest,
                flags,
                keywords,
            }),
            Pending::Expunge { mailbox, locs } => {
                let mut digests = Vec::with_capacity(locs.len());
                for loc in locs {
                    digests.extend(digest(loc).await);
                }
                (!digests.is_empty()).then_some(Change::Expunge { mailbox, digests })
            }
            Pending::Link {
                from,
                to,
                loc,
                flags,
                keywords,
            } => digest(loc).await.map(|digest| Change::Link {
                from,
                to,
                digest,
                flags,
                keywords,
            }),
        };
        if let Some(c) = change {
            let line = changes::encode(std::slice::from_ref(&c));
            let last = texts.last_mut().expect("one text at least");
            if !last.is_empty() && last.len() + line.len() > size_max {
                texts.push(line);
            } else {
                last.extend_from_slice(&line);
            }
        }
    }
    texts.retain(|t| !t.is_empty());
    for t in &mut texts {
        let mut with_id = changes::id_line(shard.change_ids.next());
        with_id.append(t);
        *t = with_id;
    }
    texts
}

/// Send one commit's `texts` to the account's replica (as the map names
/// it at each attempt).
async fn send(shard: &Shard, account: &str, texts: &[Vec<u8>]) {
    for text in texts {
        let mut last_error = String::new();
        let mut sent = false;
        for attempt in 0..SEND_ATTEMPTS {
            // While the replica is silent (it ran out of time), the last
            // attempt comes after its hold (`peer::SILENT_HOLD`): the change
            // is written here already, and a replica that stalled once may
            // answer by then (or the map names another).
            match attempt {
                0 => {}
                1 => glommio::timer::sleep(std::time::Duration::from_millis(300)).await,
                _ if shard.replica_silent(account) => {
                    glommio::timer::sleep(
                        super::peer::SILENT_HOLD + std::time::Duration::from_millis(500),
                    )
                    .await
                }
                _ => glommio::timer::sleep(std::time::Duration::from_millis(300)).await,
            }
            let away = match shard.replicas(&[account.to_string()]) {
                Ok(away) if away.is_empty() => {
                    // This node is no longer the bucket's primary (or it
                    // lost its replica): the change cannot follow.
                    last_error =
                        "the bucket map no longer names a replica this node sends to".into();
                    break;
                }
                Ok(away) => away,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let message = super::peer::Outgoing {
                reverse_path: "",
                body: text,
                smtputf8: false,
                eight_bit: false,
                map_version: shard.map_version(),
                junk: false,
                append: None,
                changes: true,
            };
            let mut failed = None;
            for a in &away {
                if let Err(e) =
                    super::peer::hand_over(shard, a.to, &a.pins, &a.recipients, &message, false)
                        .await
                {
                    failed = Some(format!("{}: {e}", a.node));
                    break;
                }
            }
            match failed {
                None => {
                    sent = true;
                    break;
                }
                Some(e) => last_error = e,
            }
        }
        if !sent {
            shard.metrics.change_unreplicated();
            tracing::error!(
                event = "change_not_replicated",
                account,
                error = last_error,
                "cluster: the replica did not take a change made here"
            );
            return;
        }
    }
}

/// The replica's half, as an internal session receives it: apply `text`
/// to `accounts` (each of a bucket this node holds), once this node has
/// seen the map the primary acted on.
pub async fn store_changes(
    shard: &Rc<Shard>,
    accounts: &[String],
    text: &[u8],
    map_version: Option<u64>,
) -> Result<(), StorageError> {
    let (id, list) = changes::decode_with_id(text)
        .ok_or_else(|| StorageError::Io("malformed cluster changes".into()))?;
    super::cluster::on_owners(shard, accounts, map_version, |account, reply| {
        ShardMsg::Changes {
            account,
            id,
            changes: list.clone(),
            reply,
        }
    })
    .await
}

/// Records gathered for one commit, owned until they are written.
#[derive(Default)]
struct Batch {
    /// (mailbox, bit, name)
    keywords: Vec<(u32, u8, String)>,
    /// (mailbox, uid, flags, keyword bits, mod-sequence)
    flags: Vec<(u32, u32, u32, u64, u64)>,
    links: Vec<crate::session::transfer::Plan>,
    /// (mailbox, uids, mod-sequence)
    expunges: Vec<(u32, Vec<u32>, u64)>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.keywords.is_empty()
            && self.flags.is_empty()
            && self.links.is_empty()
            && self.expunges.is_empty()
    }

    fn ops<'a>(&'a self, account: &'a str) -> Vec<Op<'a>> {
        let mut ops: Vec<Op<'_>> = Vec::new();
        for (mailbox, bit, name) in &self.keywords {
            ops.push(Op::Keyword {
                account,
                mailbox: *mailbox,
                bit: *bit,
                name,
            });
        }
        for (mailbox, uid, flags, keywords, modseq) in &self.flags {
            ops.push(Op::Flags {
                account,
                mailbox: *mailbox,
                uid: *uid,
                flags: *flags,
                keywords: *keywords,
                modseq: *modseq,
            });
        }
        for plan in &self.links {
            ops.extend(crate::session::transfer::ops(account, plan));
        }
        for (mailbox, uids, modseq) in &self.expunges {
            ops.push(Op::Expunge {
                account,
                mailbox: *mailbox,
                uids: uids.clone(),
                modseq: *modseq,
            });
        }
        ops
    }

    async fn commit(&mut self, shard: &Shard, account: &str) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let b = std::mem::take(self);
        shard
            .store
            .commit(&b.ops(account))
            .await
            .map_err(|e| e.to_string())
    }

    /// Give up what was gathered: its mod-sequences no longer hold
    /// HIGHESTMODSEQ back.
    fn abandon(&mut self, shard: &Shard, account: &str) {
        let b = std::mem::take(self);
        shard.store.abandon(&b.ops(account));
    }
}

/// Per mailbox: the UIDs of its messages by digest, minus those this
/// application already used (an expunge of two equal messages takes two).
type Found = HashMap<u32, HashMap<Digest, Vec<u32>>>;

/// The UIDs of `mailbox` by content digest, hashed (or taken from the
/// cache) once per application.
async fn by_digest<'f>(
    shard: &Shard,
    account: &str,
    mailbox: u32,
    found: &'f mut Found,
) -> &'f mut HashMap<Digest, Vec<u32>> {
    // Hashing yields, so no entry is held across it.
    if found.get(&mailbox).is_none() {
        let entries: Vec<(u32, Loc)> = shard
            .store
            .with_account(account, |a| {
                a.mailbox(mailbox)
                    .map(|m| m.messages.iter().map(|e| (e.uid, e.loc)).collect())
            })
            .flatten()
            .unwrap_or_default();
        let mut map: HashMap<Digest, Vec<u32>> = HashMap::new();
        for (uid, loc) in entries {
            if let Some(d) = digest_of(shard, loc).await {
                map.entry(d).or_default().push(uid);
            }
        }
        found.insert(mailbox, map);
    }
    found.get_mut(&mailbox).expect("inserted above")
}

fn mailbox_id(shard: &Shard, account: &str, name: &str) -> Option<u32> {
    shard
        .store
        .with_account(account, |a| a.mailbox_by_name(name).map(|m| m.id))
        .flatten()
}

/// Apply a primary's `changes` to `account`, which this shard owns: one
/// commit for the message changes between two mailbox changes. Only on
/// the bucket's replica: a node that became primary takes nothing from
/// the node it replaced.
pub async fn apply_here(
    shard: &Rc<Shard>,
    account: &str,
    id: Option<changes::TextId>,
    changes: Vec<Change>,
) -> Result<(), String> {
    let store = &shard.store;
    if !store.owns(account) {
        return Err("account routed to the wrong shard".into());
    }
    if !shard.is_replica_of(account) {
        return Err("this node is not the replica of that account's bucket".into());
    }
    if id.is_some_and(|id| shard.change_ids.taken(account, id)) {
        // A send repeated after its 250 was lost: applied already.
        return Ok(());
    }
    let r = apply_new(shard, account, changes).await;
    if let (Ok(()), Some(id)) = (&r, id) {
        shard.change_ids.took(account, id);
    }
    r
}

/// [`apply_here`] for a text not applied before.
async fn apply_new(shard: &Rc<Shard>, account: &str, changes: Vec<Change>) -> Result<(), String> {
    let store = &shard.store;
    store
        .ensure_account(account)
        .await
        .map_err(|e| e.to_string())?;
    // Behind changes already kept for this account, in their order.
    let bucket = shard.bucket(account);
    let copying = shard.catchup.is_copying(bucket);
    if copying && shard.deferred_changes.has(bucket, account) {
        if !shard.deferred_changes.put(bucket, account, changes) {
            shard.catchup.copy_again(bucket);
        }
        return Ok(());
    }
    let sent = copying.then(|| touches(&changes));
    let mut batch = Batch::default();
    let r = apply(shard, account, changes, &mut batch, false).await;
    match r {
        Err(e) => {
            batch.abandon(shard, account);
            Err(e)
        }
        Ok(missed) => {
            if let Some(sent) = sent {
                // What was applied while the bucket is copied: the copy
                // must neither set those messages back to its snapshot's
                // flags nor bring back what was expunged (`catchup`).
                let not_applied = touches(&missed);
                shard.catchup.touched(
                    bucket,
                    account,
                    sent.into_iter().filter(|t| !not_applied.contains(t)),
                );
            }
            if !missed.is_empty() {
                // A bucket copy still running: again once it is done.
                if shard.catchup.is_copying(bucket) {
                    if !shard.deferred_changes.put(bucket, account, missed) {
                        // Dropped: a copy after this one brings their effect.
                        shard.catchup.copy_again(bucket);
                    }
                } else {
                    tracing::debug!(
                        account,
                        missed = missed.len(),
                        "cluster: changes for messages or mailboxes this replica does not hold"
                    );
                }
            }
            Ok(())
        }
    }
}

/// The (mailbox, message) pairs `changes` name.
fn touches(changes: &[Change]) -> std::collections::HashSet<(String, Digest)> {
    let mut out = std::collections::HashSet::new();
    for c in changes {
        match c {
            Change::Flags {
                mailbox, digest, ..
            } => {
                out.insert((mailbox.clone(), *digest));
            }
            Change::Expunge { mailbox, digests } => {
                out.extend(digests.iter().map(|d| (mailbox.clone(), *d)));
            }
            Change::Link { to, digest, .. } => {
                out.insert((to.clone(), *digest));
            }
            _ => {}
        }
    }
    out
}

/// A bucket copy from the bucket's primary brings a mailbox to the state
/// of the primary's snapshot (`catchup`): `changes` (flag states of the
/// messages it held already, expunges of those the primary no longer has)
/// applied as a replay, in one go.
pub async fn sync_mailbox(
    shard: &Rc<Shard>,
    account: &str,
    changes: Vec<Change>,
) -> Result<(), String> {
    let mut batch = Batch::default();
    match apply(shard, account, changes, &mut batch, true).await {
        Ok(_) => Ok(()),
        Err(e) => {
            batch.abandon(shard, account);
            Err(e)
        }
    }
}

/// Identities of change texts ([`changes::TextId`]).
pub struct Ids {
    epoch: u64,
    next: std::cell::Cell<u64>,
    /// Per account, the last text it took: (epoch, seq).
    taken: std::cell::RefCell<HashMap<String, (u64, u64)>>,
}

impl Default for Ids {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        Ids {
            epoch: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            next: std::cell::Cell::new(1),
            taken: Default::default(),
        }
    }
}

impl Ids {
    fn next(&self) -> changes::TextId {
        let seq = self.next.get();
        self.next.set(seq + 1);
        changes::TextId {
            epoch: self.epoch,
            seq,
        }
    }

    /// Did `account` take this text (or a later one from its sender)?
    fn taken(&self, account: &str, id: changes::TextId) -> bool {
        self.taken
            .borrow()
            .get(account)
            .is_some_and(|&(e, s)| e == id.epoch && s >= id.seq)
    }

    fn took(&self, account: &str, id: changes::TextId) {
        self.taken
            .borrow_mut()
            .insert(account.to_string(), (id.epoch, id.seq));
    }
}

/// Changes a replica could not apply while the bucket was being copied to
/// it (the message or mailbox was not there yet), and those that came for
/// the same account after them, per bucket in arrival order, applied once
/// the copy is done ([`replay`]).
#[derive(Default)]
pub struct Deferred {
    by_bucket: std::cell::RefCell<HashMap<u32, Vec<(String, Change)>>>,
    count: std::cell::Cell<usize>,
    bytes: std::cell::Cell<usize>,
}

/// Changes a shard keeps for [`replay`] at most, and their size (names,
/// digests, keywords); past either they are dropped (and logged).
const DEFERRED_MAX: usize = 100_000;
const DEFERRED_BYTES_MAX: usize = 64 << 20;

/// About what a kept change holds in memory.
fn weight(c: &Change) -> usize {
    let names = |v: &[String]| v.iter().map(|k| k.len() + 24).sum::<usize>();
    64 + match c {
        Change::Create { name, .. } | Change::Delete { name } | Change::Subscribe { name, .. } => {
            name.len()
        }
        Change::Rename { from, to } => from.len() + to.len(),
        Change::Flags {
            mailbox, keywords, ..
        } => mailbox.len() + names(keywords),
        Change::Expunge { mailbox, digests } => mailbox.len() + 16 * digests.len(),
        Change::Link {
            from, to, keywords, ..
        } => from.len() + to.len() + names(keywords),
    }
}

impl Deferred {
    /// Keep `changes`; false if they were dropped (over the bounds).
    fn put(&self, bucket: u32, account: &str, changes: Vec<Change>) -> bool {
        let bytes: usize =
            changes.iter().map(weight).sum::<usize>() + account.len() * changes.len();
        if self.count.get() + changes.len() > DEFERRED_MAX
            || self.bytes.get() + bytes > DEFERRED_BYTES_MAX
        {
            tracing::warn!(
                account,
                changes = changes.len(),
                "cluster: too many changes waiting for bucket copies; these are dropped and the bucket is copied again afterwards"
            );
            return false;
        }
        self.count.set(self.count.get() + changes.len());
        self.bytes.set(self.bytes.get() + bytes);
        let mut m = self.by_bucket.borrow_mut();
        let list = m.entry(bucket).or_default();
        list.extend(changes.into_iter().map(|c| (account.to_string(), c)));
        true
    }

    /// Changes taken out of the lists.
    fn released<'a>(&self, gone: impl Iterator<Item = &'a (String, Change)>) {
        for (a, c) in gone {
            self.count.set(self.count.get().saturating_sub(1));
            self.bytes
                .set(self.bytes.get().saturating_sub(weight(c) + a.len()));
        }
    }

    fn has(&self, bucket: u32, account: &str) -> bool {
        self.by_bucket
            .borrow()
            .get(&bucket)
            .is_some_and(|l| l.iter().any(|(a, _)| a == account))
    }

    /// A flag change was applied live: one waiting for the same message
    /// is older and must not be applied after it.
    fn superseded(&self, bucket: u32, account: &str, mailbox: &str, digest: &Digest) {
        let mut m = self.by_bucket.borrow_mut();
        let Some(list) = m.get_mut(&bucket) else {
            return;
        };
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(list).into_iter().partition(|(a, c)| {
            a == account
                && matches!(c, Change::Flags { mailbox: mb, digest: d, .. } if mb == mailbox && d == digest)
        });
        *list = kept;
        self.released(gone.iter());
    }

    /// The first account's run of changes kept for `bucket`, taken out
    /// (the rest stays, where a live change can still supersede it).
    fn next_run(&self, bucket: u32) -> Option<(String, Vec<Change>)> {
        let mut m = self.by_bucket.borrow_mut();
        let list = m.get_mut(&bucket)?;
        let Some(account) = list.first().map(|(a, _)| a.clone()) else {
            m.remove(&bucket);
            return None;
        };
        let n = list.iter().take_while(|(a, _)| *a == account).count();
        let run: Vec<(String, Change)> = list.drain(..n).collect();
        self.released(run.iter());
        Some((account, run.into_iter().map(|(_, c)| c).collect()))
    }

    /// The bucket will not be copied here after all.
    pub fn forget(&self, bucket: u32) {
        let list = self
            .by_bucket
            .borrow_mut()
            .remove(&bucket)
            .unwrap_or_default();
        self.released(list.iter());
    }
}

/// A bucket copy is done: apply what [`Deferred`] kept for `buckets`, in
/// the order it came. A copy (link) whose destination already holds the
/// message is not made again: the copy brought it.
pub async fn replay(shard: &Rc<Shard>, buckets: &[u32]) {
    for &bucket in buckets {
        while let Some((account, run)) = shard.deferred_changes.next_run(bucket) {
            if !shard.is_replica_of(&account) {
                // Promoted (or moved away) meanwhile: the old primary's
                // changes no longer apply here.
                shard.deferred_changes.forget(bucket);
                break;
            }
            let mut batch = Batch::default();
            match apply(shard, &account, run, &mut batch, true).await {
                Ok(missed) => tracing::debug!(
                    account,
                    missed = missed.len(),
                    "cluster: changes kept during a bucket copy applied"
                ),
                Err(e) => {
                    batch.abandon(shard, &account);
                    tracing::warn!(
                        account,
                        error = e,
                        "cluster: changes kept during a bucket copy failed"
                    );
                }
            }
        }
    }
}

/// [`apply_here`]'s work; what `batch` holds on an error is abandoned.
/// Ok: the changes (or their parts) that found nothing to apply to.
/// `replay`: changes kept during a bucket copy ([`replay`]).
async fn apply(
    shard: &Rc<Shard>,
    account: &str,
    changes: Vec<Change>,
    batch: &mut Batch,
    replay: bool,
) -> Result<Vec<Change>, String> {
    let store = &shard.store;
    let mut found: Found = HashMap::new();
    let mut missed: Vec<Change> = Vec::new();
    // Digests whose copy (a MOVE's link) found nothing here: the move's
    // expunge must not remove the only copy.
    let mut unlinked: HashMap<Digest, usize> = HashMap::new();
    for change in changes {
        match change {
            Change::Create { name, special_use } => {
                batch.commit(shard, account).await?;
                if mailbox_id(shard, account, &name).is_none() {
                    super::transfer::open(
                        shard,
                        account,
                        &name,
                        0,
                        special_use,
                        super::transfer::Digests::Skip,
                    )
                    .await?;
                }
            }
            Change::Delete { name } => {
                batch.commit(shard, account).await?;
                match mailbox_id(shard, account, &name) {
                    Some(id) if id != index::INBOX => {
                        found.remove(&id);
                        store
                            .commit(&[Op::DeleteMailbox {
                                account,
                                mailbox: id,
                            }])
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Some(_) => {}
                    None => missed.push(Change::Delete { name }),
                }
            }
            Change::Rename { from, to } => {
                batch.commit(shard, account).await?;
                match (
                    mailbox_id(shard, account, &from),
                    mailbox_id(shard, account, &to),
                ) {
                    (Some(id), None) if id != index::INBOX => store
                        .commit(&[Op::RenameMailbox {
                            account,
                            mailbox: id,
                            name: &to,
                        }])
                        .await
                        .map_err(|e| e.to_string())?,
                    (None, None) => missed.push(Change::Rename { from, to }),
                    _ => {}
                }
            }
            Change::Subscribe { name, on } => {
                batch.commit(shard, account).await?;
                store
                    .commit(&[Op::Subscribe {
                        account,
                        name: &name,
                        on,
                    }])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Change::Flags {
                mailbox,
                digest,
                flags,
                keywords,
            } => {
                let Some((id, uid)) =
                    first_with(shard, account, &mailbox, &digest, &mut found).await
                else {
                    missed.push(Change::Flags {
                        mailbox,
                        digest,
                        flags,
                        keywords,
                    });
                    continue;
                };
                let kws: Vec<&[u8]> = keywords.iter().map(|k| k.as_bytes()).collect();
                let planned = store
                    .with_account_counters(account, |a| {
                        let m = a.mailbox_mut(id)?;
                        // The message first: nothing is allocated for one
                        // that is gone.
                        let p = m.position(uid)?;
                        let new = crate::session::store::allocate_keywords(m, &kws)?;
                        let mask = crate::session::imap::keyword_mask(&m.keywords, &kws);
                        let e = &m.messages[p];
                        let changed = (e.flags, e.keywords) != (flags & 0x1f, mask);
                        let modseq = changed.then(|| {
                            m.highest_modseq += 1;
                            m.highest_modseq
                        });
                        Some((new, mask, modseq))
                    })
                    .map_err(|e| e.to_string())?;
                let Some((new, mask, modseq)) = planned else {
                    continue;
                };
                if !replay {
                    shard.deferred_changes.superseded(
                        shard.bucket(account),
                        account,
                        &mailbox,
                        &digest,
                    );
                }
                batch
                    .keywords
                    .extend(new.into_iter().map(|(bit, n)| (id, bit, n)));
                if let Some(modseq) = modseq {
                    batch.flags.push((id, uid, flags & 0x1f, mask, modseq));
                }
            }
            Change::Expunge { mailbox, digests } => {
                let Some(id) = mailbox_id(shard, account, &mailbox) else {
                    missed.push(Change::Expunge { mailbox, digests });
                    continue;
                };
                let map = by_digest(shard, account, id, &mut found).await;
                let mut uids = Vec::new();
                let mut not_here = Vec::new();
                for d in &digests {
                    if let Some(n) = unlinked.get_mut(d).filter(|n| **n > 0) {
                        *n -= 1;
                        not_here.push(*d);
                        continue;
                    }
                    match map.get_mut(d).filter(|u| !u.is_empty()) {
                        Some(u) => uids.push(u.remove(0)),
                        None => not_here.push(*d),
                    }
                }
                if !not_here.is_empty() {
                    missed.push(Change::Expunge {
                        mailbox,
                        digests: not_here,
                    });
                }
                if uids.is_empty() {
                    continue;
                }
                let modseq = store.next_modseq(account, id).map_err(|e| e.to_string())?;
                uids.sort_unstable();
                batch.expunges.push((id, uids, modseq));
            }
            Change::Link {
                from,
                to,
                digest,
                flags,
                keywords,
            } => {
                if replay
                    && first_with(shard, account, &to, &digest, &mut found)
                        .await
                        .is_some()
                {
                    continue;
                }
                let linked = link(
                    shard,
                    account,
                    (&from, &to, digest),
                    (flags, &keywords),
                    &mut found,
                    batch,
                )
                .await?;
                if !linked {
                    *unlinked.entry(digest).or_default() += 1;
                    missed.push(Change::Link {
                        from,
                        to,
                        digest,
                        flags,
                        keywords,
                    });
                }
            }
        }
    }
    batch.commit(shard, account).await?;
    Ok(missed)
}

/// The mailbox `name` and its first message with `digest`, if it has one.
async fn first_with(
    shard: &Shard,
    account: &str,
    name: &str,
    digest: &Digest,
    found: &mut Found,
) -> Option<(u32, u32)> {
    let id = mailbox_id(shard, account, name)?;
    let uid = *by_digest(shard, account, id, found)
        .await
        .get(digest)?
        .first()?;
    Some((id, uid))
}

/// A copy of the message with `digest` into `to`, with the primary's
/// flags and keywords for it: taken from `from` (the mailbox the primary
/// named), else from any mailbox holding it. False: none here holds it,
/// or `to` is missing or has no keyword bits left.
async fn link(
    shard: &Rc<Shard>,
    account: &str,
    (from, to, digest): (&str, &str, Digest),
    (flags, keywords): (u32, &[String]),
    found: &mut Found,
    batch: &mut Batch,
) -> Result<bool, String> {
    let store = &shard.store;
    let Some(dest) = mailbox_id(shard, account, to) else {
        return Ok(false);
    };
    let named = mailbox_id(shard, account, from);
    let mut candidates: Vec<u32> = named.into_iter().collect();
    candidates.extend(
        store
            .with_account(account, |a| {
                a.mailboxes.iter().map(|m| m.id).collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|id| Some(*id) != named),
    );
    let mut source = None;
    for id in candidates {
        let uid = by_digest(shard, account, id, found)
            .await
            .get(&digest)
            .and_then(|u| u.first().copied());
        if let Some(uid) = uid {
            source = Some((id, uid));
            break;
        }
    }
    let Some((id, uid)) = source else {
        return Ok(false);
    };
    let kws: Vec<&[u8]> = keywords.iter().map(|k| k.as_bytes()).collect();
    let plan = store
        .with_account_counters(account, |a| {
            let dest_name = a.mailbox(dest)?.name.clone();
            if !crate::session::store::keywords_fit(a.mailbox(dest)?, &kws) {
                return None;
            }
            let mut plan = crate::session::transfer::plan(a, id, &[uid], &dest_name, false)?;
            let d = a.mailbox_mut(dest)?;
            let Some(new) = crate::session::store::allocate_keywords(d, &kws) else {
                // The source's own names took the last bits: give the
                // links' mod-sequences back.
                for l in &plan.links {
                    d.applied_modseq(l.modseq);
                }
                return None;
            };
            plan.new_keywords.extend(new);
            let mask = crate::session::imap::keyword_mask(&d.keywords, &kws);
            for l in &mut plan.links {
                l.flags = flags & 0x1f;
                l.keywords = mask;
            }
            Some(plan)
        })
        .map_err(|e| e.to_string())?;
    let Some(plan) = plan else {
        return Ok(false);
    };
    let Some(l) = plan.links.first() else {
        return Ok(false);
    };
    // The destination's digests now include this one.
    if let Some(map) = found.get_mut(&plan.dest) {
        map.entry(digest).or_default().push(l.uid);
    }
    batch.links.push(plan);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(o: &Order, account: &str) -> Option<u64> {
        o.0.borrow().get(account).map(|l| l.serving)
    }

    /// A commit's turn comes once every earlier one of its account ended,
    /// in whatever order they end; a line with nothing left is dropped.
    #[test]
    fn tickets_turn_in_commit_order_whatever_order_they_end_in() {
        let o = Order::default();
        let t0 = o.take("a");
        let t1 = o.take("a");
        let t2 = o.take("a");
        let other = o.take("b");
        assert_eq!(
            (t0.number, t1.number, t2.number, other.number),
            (0, 1, 2, 0)
        );
        assert_eq!(serving(&o, "a"), Some(0));
        drop(t1);
        assert_eq!(serving(&o, "a"), Some(0), "t0 has not ended");
        drop(t0);
        assert_eq!(serving(&o, "a"), Some(2));
        drop(t2);
        assert_eq!(serving(&o, "a"), None);
        assert_eq!(serving(&o, "b"), Some(0));
        drop(other);
        assert!(o.0.borrow().is_empty());
    }

    /// A commit waiting for its turn is woken when the one before it ends,
    /// not by a timer.
    #[test]
    fn a_waiting_turn_is_woken_when_the_earlier_commit_ends() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        struct Count(AtomicUsize);
        impl futures::task::ArcWake for Count {
            fn wake_by_ref(c: &std::sync::Arc<Self>) {
                c.0.fetch_add(1, SeqCst);
            }
        }
        let o = Order::default();
        let (t0, t1) = (o.take("a"), o.take("a"));
        let count = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures::task::waker(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut turn = Box::pin(t1.turn());
        assert!(turn.as_mut().poll(&mut cx).is_pending());
        assert!(turn.as_mut().poll(&mut cx).is_pending());
        assert_eq!(o.0.borrow()["a"].waiting.len(), 1, "registered once");
        drop(t0);
        assert_eq!(count.0.load(SeqCst), 1);
        assert!(turn.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_text_is_taken_once_per_account_and_a_new_sender_starts_over() {
        let ids = Ids::default();
        let (a, b) = (ids.next(), ids.next());
        assert!(b.seq > a.seq && a.epoch == b.epoch);
        assert!(!ids.taken("x", a));
        ids.took("x", a);
        assert!(ids.taken("x", a) && !ids.taken("x", b) && !ids.taken("y", a));
        ids.took("x", b);
        assert!(ids.taken("x", a), "an older text again");
        let other = Ids::default().next();
        assert!(!ids.taken("x", other), "another sender's run");
    }

    #[test]
    fn kept_changes_come_back_per_account_run_and_are_bounded() {
        let d = Deferred::default();
        let flags = |n: u8| Change::Flags {
            mailbox: "INBOX".into(),
            digest: [n; 16],
            flags: 1,
            keywords: vec![],
        };
        d.put(7, "a", vec![flags(1), flags(2)]);
        d.put(7, "b", vec![flags(3)]);
        d.put(7, "a", vec![flags(1)]);
        assert!(d.has(7, "a") && !d.has(8, "a"));
        // A live change to message 1 of a: the kept ones for it go.
        d.superseded(7, "a", "INBOX", &[1; 16]);
        assert_eq!(d.count.get(), 2);
        assert_eq!(d.next_run(7), Some(("a".into(), vec![flags(2)])));
        assert_eq!(d.next_run(7), Some(("b".into(), vec![flags(3)])));
        assert_eq!(d.next_run(7), None);
        assert_eq!((d.count.get(), d.bytes.get()), (0, 0));
        d.put(9, "a", (0..DEFERRED_MAX).map(|_| flags(0)).collect());
        d.put(9, "a", vec![flags(1)]);
        assert_eq!(d.count.get(), DEFERRED_MAX, "past the bound, dropped");
        d.forget(9);
        assert_eq!((d.count.get(), d.bytes.get()), (0, 0));
        // The size bound: one expunge of many digests.
        let huge = Change::Expunge {
            mailbox: "INBOX".into(),
            digests: vec![[0; 16]; DEFERRED_BYTES_MAX / 16],
        };
        d.put(9, "a", vec![huge]);
        assert_eq!(d.count.get(), 0, "past the size bound, dropped");
    }
}
