//! Cluster mode: flag changes, expunges, copies and mailbox changes made
//! on a bucket's primary, applied on its replica before the client is told
//! they are done (`cluster::changes` has the form they travel in).
//!
//! The primary's half, [`replicate`], runs in the commit of every IMAP
//! command and of a POP3 update, before the records are written here: it
//! names the messages the records touch by content digest and mailboxes by
//! name, sends that to the replica over a hand-over session (`MAIL FROM:<>
//! XCHANGES`, the text in one BDAT chunk), and waits for its 250. A replica
//! that does not take it fails the command (NO, or -ERR for POP3) with
//! nothing changed here. The replica's half, [`apply_here`], finds each
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

/// Digests remembered per shard (about 48 octets each); past this the
/// memory starts over.
const CACHED_MAX: usize = 1 << 18;

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
            m.clear();
        }
        m.insert(loc, d);
    }
}

/// The digest of the body at `loc` (`transfer::Digests::Content`), hashed
/// in steps with yields between them. None: the body is gone.
async fn digest_of(shard: &Shard, loc: Loc) -> Option<Digest> {
    if let Some(d) = shard.digests.get(loc) {
        return Some(d);
    }
    let body = shard.store.body(loc)?;
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
    },
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
                let names_of_bits = (0..64u8)
                    .filter(|b| bits & (1u64 << b) != 0)
                    .filter_map(|b| {
                        keywords
                            .get(&(*mailbox, b))
                            .cloned()
                            .or_else(|| m.keywords.get(b as usize).cloned())
                    })
                    .collect();
                out.push(Pending::Flags {
                    mailbox: name_of(&names, *mailbox).unwrap_or_else(|| m.name.clone()),
                    loc: m.messages[p].loc,
                    flags: *flags,
                    keywords: names_of_bits,
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
            Op::Link { mailbox, loc, .. } => {
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

/// The primary's half: before `ops` are committed here, mirror what they
/// change on the replica of each account's bucket and wait for it. Ok at
/// once outside a cluster, for an account this node is not primary for,
/// and for records that change nothing the replica must mirror.
pub async fn replicate(shard: &Shard, ops: &[Op<'_>]) -> Result<(), StorageError> {
    if shard.mapped().is_none() || !ops.iter().any(replicated) {
        return Ok(());
    }
    let mut accounts: Vec<&str> = Vec::new();
    for op in ops.iter().filter(|o| replicated(o)) {
        let a = op.account();
        if !accounts.contains(&a) {
            accounts.push(a);
        }
    }
    for account in accounts {
        let away = shard
            .replicas(&[account.to_string()])
            .map_err(StorageError::Io)?;
        if away.is_empty() {
            continue;
        }
        let list = shard
            .store
            .with_account(account, |a| pending(a, ops))
            .unwrap_or_default();
        let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
        for p in list {
            let change = match p {
                Pending::Ready(c) => Some(c),
                Pending::Flags {
                    mailbox,
                    loc,
                    flags,
                    keywords,
                } => digest_of(shard, loc).await.map(|digest| Change::Flags {
                    mailbox,
                    digest,
                    flags,
                    keywords,
                }),
                Pending::Expunge { mailbox, locs } => {
                    let mut digests = Vec::with_capacity(locs.len());
                    for loc in locs {
                        digests.extend(digest_of(shard, loc).await);
                    }
                    (!digests.is_empty()).then_some(Change::Expunge { mailbox, digests })
                }
                Pending::Link { from, to, loc } => digest_of(shard, loc)
                    .await
                    .map(|digest| Change::Link { from, to, digest }),
            };
            if let Some(c) = change {
                let line = changes::encode(std::slice::from_ref(&c));
                let last = texts.last_mut().expect("one text at least");
                if !last.is_empty() && last.len() + line.len() > SEND_MAX {
                    texts.push(line);
                } else {
                    last.extend_from_slice(&line);
                }
            }
        }
        for text in texts.iter().filter(|t| !t.is_empty()) {
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
            for a in &away {
                super::peer::hand_over(shard, a.to, &a.pins, &a.recipients, &message)
                    .await
                    .map_err(|e| {
                        StorageError::Io(format!("replica {} did not take the change: {e}", a.node))
                    })?;
            }
        }
    }
    Ok(())
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
    let list = changes::decode(text)
        .ok_or_else(|| StorageError::Io("malformed cluster changes".into()))?;
    super::cluster::on_owners(shard, accounts, map_version, |account, reply| {
        ShardMsg::Changes {
            account,
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

    async fn commit(&mut self, shard: &Shard, account: &str) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let b = std::mem::take(self);
        let mut ops: Vec<Op<'_>> = Vec::new();
        for (mailbox, bit, name) in &b.keywords {
            ops.push(Op::Keyword {
                account,
                mailbox: *mailbox,
                bit: *bit,
                name,
            });
        }
        for (mailbox, uid, flags, keywords, modseq) in &b.flags {
            ops.push(Op::Flags {
                account,
                mailbox: *mailbox,
                uid: *uid,
                flags: *flags,
                keywords: *keywords,
                modseq: *modseq,
            });
        }
        for plan in &b.links {
            ops.extend(crate::session::transfer::ops(account, plan));
        }
        for (mailbox, uids, modseq) in &b.expunges {
            ops.push(Op::Expunge {
                account,
                mailbox: *mailbox,
                uids: uids.clone(),
                modseq: *modseq,
            });
        }
        shard.store.commit(&ops).await.map_err(|e| e.to_string())
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
/// commit for the message changes between two mailbox changes.
pub async fn apply_here(
    shard: &Rc<Shard>,
    account: &str,
    changes: Vec<Change>,
) -> Result<(), String> {
    let store = &shard.store;
    if !store.owns(account) {
        return Err("account routed to the wrong shard".into());
    }
    store
        .ensure_account(account)
        .await
        .map_err(|e| e.to_string())?;
    let mut batch = Batch::default();
    let mut found: Found = HashMap::new();
    let mut missed = 0usize;
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
                    _ => missed += 1,
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
                    _ => missed += 1,
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
                let Some(id) = mailbox_id(shard, account, &mailbox) else {
                    missed += 1;
                    continue;
                };
                let Some(&uid) = by_digest(shard, account, id, &mut found)
                    .await
                    .get(&digest)
                    .and_then(|uids| uids.first())
                else {
                    missed += 1;
                    continue;
                };
                let kws: Vec<&[u8]> = keywords.iter().map(|k| k.as_bytes()).collect();
                let planned = store
                    .with_account_counters(account, |a| {
                        let m = a.mailbox_mut(id)?;
                        let new = crate::session::store::allocate_keywords(m, &kws)?;
                        let mask = crate::session::imap::keyword_mask(&m.keywords, &kws);
                        let e = &m.messages[m.position(uid)?];
                        let changed = (e.flags, e.keywords) != (flags & 0x1f, mask);
                        let modseq = changed.then(|| {
                            m.highest_modseq += 1;
                            m.highest_modseq
                        });
                        Some((new, mask, modseq))
                    })
                    .map_err(|e| e.to_string())?;
                let Some((new, mask, modseq)) = planned else {
                    missed += 1;
                    continue;
                };
                batch
                    .keywords
                    .extend(new.into_iter().map(|(bit, n)| (id, bit, n)));
                if let Some(modseq) = modseq {
                    batch.flags.push((id, uid, flags & 0x1f, mask, modseq));
                }
            }
            Change::Expunge { mailbox, digests } => {
                let Some(id) = mailbox_id(shard, account, &mailbox) else {
                    missed += digests.len();
                    continue;
                };
                let map = by_digest(shard, account, id, &mut found).await;
                let mut uids = Vec::new();
                for d in &digests {
                    match map.get_mut(d).filter(|u| !u.is_empty()) {
                        Some(u) => uids.push(u.remove(0)),
                        None => missed += 1,
                    }
                }
                if uids.is_empty() {
                    continue;
                }
                let modseq = store.next_modseq(account, id).map_err(|e| e.to_string())?;
                uids.sort_unstable();
                batch.expunges.push((id, uids, modseq));
            }
            Change::Link { from, to, digest } => {
                let Some(id) = mailbox_id(shard, account, &from) else {
                    missed += 1;
                    continue;
                };
                let uid = by_digest(shard, account, id, &mut found)
                    .await
                    .get(&digest)
                    .and_then(|u| u.first().copied());
                let Some(uid) = uid else {
                    missed += 1;
                    continue;
                };
                let plan = store
                    .with_account_counters(account, |a| {
                        crate::session::transfer::plan(a, id, &[uid], &to, false)
                    })
                    .map_err(|e| e.to_string())?;
                match plan {
                    Some(p) => {
                        // The destination's digests now include this one.
                        if let Some(l) = p.links.first() {
                            if let Some(map) = found.get_mut(&p.dest) {
                                map.entry(digest).or_default().push(l.uid);
                            }
                        }
                        batch.links.push(p)
                    }
                    None => missed += 1,
                }
            }
        }
    }
    batch.commit(shard, account).await?;
    if missed > 0 {
        // A bucket copy still running, or a change already applied.
        tracing::debug!(
            account,
            missed,
            "cluster: changes for messages or mailboxes this replica does not hold"
        );
    }
    Ok(())
}
