//! The per-account index: mailboxes, UIDs, flags, modseqs and where each
//! message body lives. Rebuilt at start from a bucket checkpoint plus the
//! records logged after it; changed afterwards only by [`Account::apply`], the
//! same function recovery uses, so the live index and a recovered one agree.
//!
//! Counters (UIDNEXT, HIGHESTMODSEQ, mailbox ids, keyword bits) are advanced
//! when a record is written; entries change when its group commit is durable.
use std::collections::HashMap;

use super::record::{Loc, Op};

/// System flags, as bits of `MessageEntry::flags`.
pub mod flag {
    pub const SEEN: u32 = 1;
    pub const ANSWERED: u32 = 2;
    pub const FLAGGED: u32 = 4;
    pub const DELETED: u32 = 8;
    pub const DRAFT: u32 = 16;
}

/// SPECIAL-USE (RFC 6154) attribute of a mailbox.
pub mod special {
    pub const NONE: u8 = 0;
    pub const SENT: u8 = 1;
    pub const DRAFTS: u8 = 2;
    pub const TRASH: u8 = 3;
    pub const JUNK: u8 = 4;
    pub const ARCHIVE: u8 = 5;

    /// The attribute's IMAP name (`\Junk`), "" for none.
    pub fn name(v: u8) -> &'static str {
        match v {
            SENT => "\\Sent",
            DRAFTS => "\\Drafts",
            TRASH => "\\Trash",
            JUNK => "\\Junk",
            ARCHIVE => "\\Archive",
            _ => "",
        }
    }
}

/// Mailboxes every new account starts with: id, name, special use.
pub const DEFAULT_MAILBOXES: [(u32, &str, u8); 6] = [
    (0, "INBOX", special::NONE),
    (1, "Sent", special::SENT),
    (2, "Drafts", special::DRAFTS),
    (3, "Trash", special::TRASH),
    (4, "Junk", special::JUNK),
    (5, "Archive", special::ARCHIVE),
];
pub const INBOX: u32 = 0;

#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MessageEntry {
    pub uid: u32,
    pub flags: u32,
    pub keywords: u64,
    pub internal_date: i64,
    pub modseq: u64,
    pub loc: Loc,
    /// The message's EMAILID (RFC 8474): given from
    /// [`Account::next_email_id`] when a Message record is applied, carried
    /// over by a COPY or MOVE (Link), kept by compaction (Relocate).
    pub email_id: u64,
}

#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Mailbox {
    pub id: u32,
    pub name: String,
    pub uidvalidity: u32,
    /// Next UID to assign (RFC 3501 2.3.1.1: strictly ascending, never reused).
    pub uidnext: u32,
    pub highest_modseq: u64,
    pub special_use: u8,
    /// Keyword names; index = bit in `MessageEntry::keywords`.
    pub keywords: Vec<String>,
    /// Sorted by UID.
    pub messages: Vec<MessageEntry>,
    /// Expunged UIDs with the mod-sequence of their expunge, in runs, in
    /// the order they were expunged (QRESYNC's VANISHED (EARLIER), RFC 7162
    /// 3.2.5). At most `VANISHED_RUNS_MAX`: the oldest are then forgotten
    /// and `vanished_floor` raised to their mod-sequence.
    pub vanished: Vec<VanishedRun>,
    /// Expunges with a mod-sequence at or below this are not known one by
    /// one any more (0: every expunge is known).
    pub vanished_floor: u64,
    /// Mod-sequences given to new messages, links and expunges that are not
    /// applied yet (they become entries or runs when durable). While one is
    /// pending, HIGHESTMODSEQ is reported just below it
    /// ([`Mailbox::reported_modseq`]): a client must never hold a value
    /// that covers a change it cannot see yet (RFC 7162 3.2). Not in
    /// checkpoints; a commit that failed leaves its entry here, which only
    /// keeps the reported value lower (safe) until the next start.
    #[rkyv(with = rkyv::with::Skip)]
    pub pending_modseqs: Vec<u64>,
}

/// UIDs `first..=last`, expunged at mod-sequence `modseq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct VanishedRun {
    pub first: u32,
    pub last: u32,
    pub modseq: u64,
}

impl Mailbox {
    pub fn new(id: u32, name: &str, uidvalidity: u32, special_use: u8) -> Self {
        Mailbox {
            id,
            name: name.into(),
            uidvalidity,
            uidnext: 1,
            highest_modseq: 1,
            special_use,
            keywords: Vec::new(),
            messages: Vec::new(),
            vanished: Vec::new(),
            vanished_floor: 0,
            pending_modseqs: Vec::new(),
        }
    }

    /// The next mod-sequence, for a record applied only when durable
    /// (Message, Link, Expunge).
    pub fn allocate_pending_modseq(&mut self) -> u64 {
        self.highest_modseq += 1;
        self.pending_modseqs.push(self.highest_modseq);
        self.highest_modseq
    }

    /// HIGHESTMODSEQ as clients may be told it: every change at or below it
    /// is visible in the index.
    pub fn reported_modseq(&self) -> u64 {
        self.pending_modseqs
            .iter()
            .min()
            .map_or(self.highest_modseq, |m| m - 1)
    }

    /// The record with this mod-sequence was applied, or its commit failed.
    pub fn applied_modseq(&mut self, modseq: u64) {
        if !self.pending_modseqs.is_empty() {
            self.pending_modseqs.retain(|&p| p != modseq);
        }
    }

    /// UID runs expunged after `modseq`, ascending and merged; `None` when
    /// expunges that old are no longer known one by one.
    pub fn vanished_since(&self, modseq: u64) -> Option<Vec<(u32, u32)>> {
        if modseq < self.vanished_floor {
            return None;
        }
        let mut runs: Vec<(u32, u32)> = self
            .vanished
            .iter()
            .filter(|r| r.modseq > modseq)
            .map(|r| (r.first, r.last))
            .collect();
        runs.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(runs.len());
        for (a, b) in runs {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Some(merged)
    }

    /// Remember `uids` (ascending) as expunged at `modseq`.
    fn record_vanished(&mut self, uids: &[u32], modseq: u64) {
        let mut i = 0;
        while i < uids.len() {
            let mut j = i;
            while j + 1 < uids.len() && uids[j + 1] == uids[j] + 1 {
                j += 1;
            }
            match self.vanished.last_mut() {
                // Adjacent to the last run (messages deleted one by one, in
                // order): one run, with the later mod-sequence. A resync
                // from between the two then also hears of the older UIDs,
                // which RFC 7162 3.2.5 allows (they are gone either way).
                Some(r) if r.last.checked_add(1) == Some(uids[i]) => {
                    r.last = uids[j];
                    r.modseq = r.modseq.max(modseq);
                }
                _ => self.vanished.push(VanishedRun {
                    first: uids[i],
                    last: uids[j],
                    modseq,
                }),
            }
            i = j + 1;
        }
        let max = crate::limits::VANISHED_RUNS_MAX;
        if self.vanished.len() > max {
            // Forget a quarter at once, so the front is not shifted per expunge.
            let cut = self.vanished.len() - max + max / 4;
            let floor = self.vanished[..cut]
                .iter()
                .map(|r| r.modseq)
                .max()
                .unwrap_or(0);
            self.vanished.drain(..cut);
            self.vanished.shrink_to(max);
            self.vanished_floor = self.vanished_floor.max(floor);
        }
    }

    pub fn position(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    pub fn size_octets(&self) -> u64 {
        self.messages.iter().map(|m| u64::from(m.loc.len)).sum()
    }

    /// Insert or replace; returns the size of the entry replaced, if any.
    fn insert(&mut self, e: MessageEntry) -> Option<u64> {
        self.uidnext = self.uidnext.max(e.uid + 1);
        self.highest_modseq = self.highest_modseq.max(e.modseq);
        match self.messages.binary_search_by_key(&e.uid, |m| m.uid) {
            Ok(i) => Some(u64::from(
                std::mem::replace(&mut self.messages[i], e).loc.len,
            )),
            Err(i) => {
                self.messages.insert(i, e);
                None
            }
        }
    }
}

/// Delivery state of a queued recipient (`QueuedRecipient::state & STATE_MASK`).
pub mod queue_state {
    /// Never tried.
    pub const PENDING: u8 = 0;
    /// Tried, temporary failure; retried at `next_attempt`.
    pub const DEFERRED: u8 = 1;
    /// Accepted by the receiving server. Final.
    pub const DELIVERED: u8 = 2;
    /// Permanent failure or given up; the sender was notified. Final.
    pub const BOUNCED: u8 = 3;
    pub const STATE_MASK: u8 = 0x0f;
    /// Bit: a delay warning was sent for this recipient.
    pub const WARNED: u8 = 0x10;

    pub fn is_final(state: u8) -> bool {
        matches!(state & STATE_MASK, DELIVERED | BOUNCED)
    }
}

/// `QueuedMessage::flags` bits.
pub mod queue_flag {
    /// Sent with SMTPUTF8 (RFC 6531).
    pub const SMTPUTF8: u8 = 1;
    /// Sent with BODY=8BITMIME (RFC 6152).
    pub const EIGHT_BIT: u8 = 2;
}

/// One recipient of a message in a relay queue account.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueuedRecipient {
    pub address: String,
    /// [`queue_state`] value, with the `WARNED` bit.
    pub state: u8,
    pub attempts: u32,
    /// Unix seconds; due when `<= now`.
    pub next_attempt: i64,
    /// The last reply (or local reason) for this recipient, for DSNs and `queue list`.
    pub last_reply: String,
}

/// The envelope and per-recipient state of message `uid` of a relay queue
/// account's INBOX (see `relay::queue`).
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct QueuedMessage {
    pub uid: u32,
    /// Unix seconds when the message was accepted.
    pub arrival: i64,
    /// [`queue_flag`] bits.
    pub flags: u8,
    /// Bare address; empty for the null reverse path.
    pub reverse_path: String,
    pub recipients: Vec<QueuedRecipient>,
}

#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Account {
    pub name: String,
    pub mailboxes: Vec<Mailbox>,
    pub subscriptions: Vec<String>,
    pub next_mailbox_id: u32,
    /// The next EMAILID (RFC 8474) to give a new message; applying records
    /// in log order gives every message the same one again after a restart.
    pub next_email_id: u64,
    /// Relay queue accounts only: envelopes and delivery states, sorted by UID.
    /// Empty for every mail account.
    pub queue: Vec<QueuedMessage>,
    /// The highest UIDVALIDITY any mailbox of this account was ever given,
    /// deleted mailboxes included. A new mailbox gets a larger one, so a name
    /// deleted and created again never shows a client its old UIDVALIDITY
    /// with new messages behind it (RFC 3501 2.3.1.1). Raised by every
    /// CreateMailbox record (replay included) and kept in checkpoints.
    pub uidvalidity_max: u32,
    /// Octets of all messages in all mailboxes (each copy counted), what
    /// QUOTA's STORAGE resource (RFC 9208 5.1) measures. Not in checkpoints:
    /// [`Account::recount`] sets it at load, [`Account::apply`] keeps it.
    #[rkyv(with = rkyv::with::Skip)]
    pub used_octets: u64,
}

impl Account {
    pub fn new(name: &str) -> Self {
        Account {
            name: name.into(),
            mailboxes: Vec::new(),
            subscriptions: Vec::new(),
            next_mailbox_id: 0,
            next_email_id: 1,
            queue: Vec::new(),
            uidvalidity_max: 0,
            used_octets: 0,
        }
    }

    /// Count [`Account::used_octets`] from the messages (after a load).
    pub fn recount(&mut self) {
        self.used_octets = self.mailboxes.iter().map(Mailbox::size_octets).sum();
    }

    /// UIDVALIDITY values for `n` new mailboxes, reserved at once (so two
    /// creations waiting for the same group commit cannot share one): each
    /// above every value used before in this account, and no lower than the
    /// clock in seconds, which also keeps them above values of mailboxes
    /// that older checkpoints (format 2 and before) no longer remember.
    pub fn reserve_uidvalidity(&mut self, now: i64, n: usize) -> Vec<u32> {
        let mut last = self
            .mailboxes
            .iter()
            .map(|m| m.uidvalidity)
            .fold(self.uidvalidity_max, u32::max);
        let clock = now.clamp(1, i64::from(u32::MAX)) as u32;
        (0..n)
            .map(|_| {
                last = clock.max(last.saturating_add(1));
                self.uidvalidity_max = last;
                last
            })
            .collect()
    }

    /// A queued message's envelope and states.
    pub fn queued(&self, uid: u32) -> Option<&QueuedMessage> {
        self.queue
            .binary_search_by_key(&uid, |q| q.uid)
            .ok()
            .map(|i| &self.queue[i])
    }

    pub fn mailbox(&self, id: u32) -> Option<&Mailbox> {
        self.mailboxes.iter().find(|m| m.id == id)
    }

    pub fn mailbox_mut(&mut self, id: u32) -> Option<&mut Mailbox> {
        self.mailboxes.iter_mut().find(|m| m.id == id)
    }

    /// A new EMAILID (RFC 8474), given when a Message record is written.
    pub fn allocate_email_id(&mut self) -> u64 {
        self.next_email_id += 1;
        self.next_email_id - 1
    }

    pub fn mailbox_by_name(&self, name: &str) -> Option<&Mailbox> {
        self.mailboxes
            .iter()
            .find(|m| mailbox_name_eq(&m.name, name))
    }

    /// Apply one durable record. Idempotent where replay may repeat work
    /// (a create of an existing mailbox, an expunge of missing UIDs).
    /// `body_loc` is where the record's body landed (Message, Relocate).
    pub fn apply(&mut self, op: &Op<'_>, body_loc: Option<Loc>) {
        match op {
            Op::CreateMailbox {
                mailbox,
                name,
                uidvalidity,
                special_use,
                ..
            } => {
                self.next_mailbox_id = self.next_mailbox_id.max(mailbox + 1);
                self.uidvalidity_max = self.uidvalidity_max.max(*uidvalidity);
                if self.mailbox(*mailbox).is_none() {
                    self.mailboxes
                        .push(Mailbox::new(*mailbox, name, *uidvalidity, *special_use));
                }
            }
            Op::DeleteMailbox { mailbox, .. } => {
                if let Some(m) = self.mailbox(*mailbox) {
                    self.used_octets = self.used_octets.saturating_sub(m.size_octets());
                }
                self.mailboxes.retain(|m| m.id != *mailbox);
            }
            Op::RenameMailbox { mailbox, name, .. } => {
                if let Some(m) = self.mailbox_mut(*mailbox) {
                    m.name = (*name).into();
                }
            }
            Op::Subscribe { name, on, .. } => {
                self.subscriptions.retain(|s| s != name);
                if *on {
                    self.subscriptions.push((*name).into());
                }
            }
            // A new message carries its body; a link (COPY/MOVE) points at an existing one.
            Op::Message {
                mailbox,
                uid,
                internal_date,
                flags,
                keywords,
                modseq,
                ..
            }
            | Op::Link {
                mailbox,
                uid,
                internal_date,
                flags,
                keywords,
                modseq,
                ..
            } => {
                let (loc, email_id) = match op {
                    Op::Link { loc, email_id, .. } => (*loc, *email_id),
                    Op::Message { email_id, .. } => {
                        (body_loc.expect("message record has a body"), *email_id)
                    }
                    _ => unreachable!(),
                };
                // Records of the older kinds (0) are numbered as they are
                // applied; a carried id keeps the counter above it.
                let email_id = match email_id {
                    0 => self.allocate_email_id(),
                    id => id,
                };
                self.next_email_id = self.next_email_id.max(email_id + 1);
                if let Some(m) = self.mailbox_mut(*mailbox) {
                    m.applied_modseq(*modseq);
                    let replaced = m.insert(MessageEntry {
                        uid: *uid,
                        flags: *flags,
                        keywords: *keywords,
                        internal_date: *internal_date,
                        modseq: *modseq,
                        loc,
                        email_id,
                    });
                    self.used_octets = (self.used_octets + u64::from(loc.len))
                        .saturating_sub(replaced.unwrap_or(0));
                }
            }
            Op::Flags {
                mailbox,
                uid,
                flags,
                keywords,
                modseq,
                ..
            } => {
                if let Some(m) = self.mailbox_mut(*mailbox) {
                    m.highest_modseq = m.highest_modseq.max(*modseq);
                    if let Some(i) = m.position(*uid) {
                        let e = &mut m.messages[i];
                        e.flags = *flags;
                        e.keywords = *keywords;
                        e.modseq = *modseq;
                    }
                }
            }
            Op::Keyword {
                mailbox, bit, name, ..
            } => {
                if let Some(m) = self.mailbox_mut(*mailbox) {
                    let bit = usize::from(*bit);
                    if m.keywords.len() <= bit {
                        m.keywords.resize(bit + 1, String::new());
                    }
                    m.keywords[bit] = (*name).into();
                }
            }
            Op::Expunge {
                mailbox,
                uids,
                modseq,
                ..
            } => {
                if let Some(m) = self.mailbox_mut(*mailbox) {
                    m.highest_modseq = m.highest_modseq.max(*modseq);
                    m.applied_modseq(*modseq);
                    let mut freed = 0;
                    let mut gone = Vec::new();
                    m.messages.retain(|e| {
                        let keep = uids.binary_search(&e.uid).is_err();
                        if !keep {
                            freed += u64::from(e.loc.len);
                            gone.push(e.uid);
                        }
                        keep
                    });
                    m.record_vanished(&gone, *modseq);
                    self.used_octets = self.used_octets.saturating_sub(freed);
                }
                if *mailbox == INBOX && !self.queue.is_empty() {
                    self.queue.retain(|q| uids.binary_search(&q.uid).is_err());
                }
            }
            Op::Envelope {
                uid,
                arrival,
                flags,
                reverse_path,
                recipients,
                ..
            } => {
                let q = QueuedMessage {
                    uid: *uid,
                    arrival: *arrival,
                    flags: *flags,
                    reverse_path: (*reverse_path).into(),
                    recipients: recipients
                        .iter()
                        .map(|a| QueuedRecipient {
                            address: (*a).into(),
                            state: queue_state::PENDING,
                            attempts: 0,
                            next_attempt: *arrival,
                            last_reply: String::new(),
                        })
                        .collect(),
                };
                match self.queue.binary_search_by_key(uid, |q| q.uid) {
                    Ok(i) => self.queue[i] = q,
                    Err(i) => self.queue.insert(i, q),
                }
            }
            Op::QueueState {
                uid,
                rcpt,
                state,
                attempts,
                next_attempt,
                last_reply,
                ..
            } => {
                if let Ok(i) = self.queue.binary_search_by_key(uid, |q| q.uid) {
                    if let Some(r) = self.queue[i].recipients.get_mut(*rcpt as usize) {
                        r.state = *state;
                        r.attempts = *attempts;
                        r.next_attempt = *next_attempt;
                        r.last_reply.clear();
                        r.last_reply.push_str(last_reply);
                    }
                }
            }
            Op::Relocate { old, .. } => {
                let new = body_loc.expect("relocate record has a body");
                let mut used = self.used_octets;
                for m in &mut self.mailboxes {
                    for e in &mut m.messages {
                        if e.loc == *old {
                            used = (used + u64::from(new.len)).saturating_sub(u64::from(old.len));
                            e.loc = new;
                        }
                    }
                }
                self.used_octets = used;
            }
        }
    }

    /// Live body bytes per segment referenced by this account (shared bodies counted once).
    pub fn live_bytes(&self, into: &mut HashMap<u64, u64>) {
        let mut seen = std::collections::HashSet::new();
        for m in &self.mailboxes {
            for e in &m.messages {
                if seen.insert(e.loc) {
                    *into.entry(e.loc.seg).or_default() += u64::from(e.loc.len);
                }
            }
        }
    }
}

/// IMAP mailbox names: INBOX is case-insensitive (RFC 3501 5.1), others exact.
pub fn mailbox_name_eq(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case("INBOX") || b.eq_ignore_ascii_case("INBOX") {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// A position in a writer's log: the record starting at or after `offset`
/// in segment `seg` comes after this position.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct LogPos {
    pub seg: u64,
    pub offset: u32,
}

/// Checkpoint format 1 (before relay queues): accounts without `queue`.
/// Read at start-up so that a data directory of an older version keeps its
/// checkpoints (and never needs segments compaction already deleted).
pub mod v1 {
    use super::v3::Mailbox;
    use super::LogPos;

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Account {
        pub name: String,
        pub mailboxes: Vec<Mailbox>,
        pub subscriptions: Vec<String>,
        pub next_mailbox_id: u32,
    }

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct BucketCheckpoint {
        pub version: u32,
        pub bucket: u32,
        pub applied: LogPos,
        pub accounts: Vec<Account>,
    }

    /// Format 1 is format 2 without queues; the rest of the upgrade is
    /// format 2's.
    impl From<BucketCheckpoint> for super::BucketCheckpoint {
        fn from(c: BucketCheckpoint) -> Self {
            super::v2::BucketCheckpoint {
                version: c.version,
                bucket: c.bucket,
                applied: c.applied,
                accounts: c
                    .accounts
                    .into_iter()
                    .map(|a| super::v2::Account {
                        name: a.name,
                        mailboxes: a.mailboxes,
                        subscriptions: a.subscriptions,
                        next_mailbox_id: a.next_mailbox_id,
                        queue: Vec::new(),
                    })
                    .collect(),
            }
            .into()
        }
    }
}

/// Checkpoint format 2 (relay queues, before `Account::uidvalidity_max`).
/// Read at start-up like format 1; the UIDVALIDITY of mailboxes deleted
/// before it was written is not known any more, so the counter starts at the
/// highest one still there (new values are also never below the clock).
pub mod v2 {
    use super::v3::Mailbox;
    use super::{LogPos, QueuedMessage};

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Account {
        pub name: String,
        pub mailboxes: Vec<Mailbox>,
        pub subscriptions: Vec<String>,
        pub next_mailbox_id: u32,
        pub queue: Vec<QueuedMessage>,
    }

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct BucketCheckpoint {
        pub version: u32,
        pub bucket: u32,
        pub applied: LogPos,
        pub accounts: Vec<Account>,
    }

    impl From<BucketCheckpoint> for super::BucketCheckpoint {
        fn from(c: BucketCheckpoint) -> Self {
            super::v3::BucketCheckpoint {
                version: c.version,
                bucket: c.bucket,
                applied: c.applied,
                accounts: c
                    .accounts
                    .into_iter()
                    .map(|a| super::v3::Account {
                        uidvalidity_max: a
                            .mailboxes
                            .iter()
                            .map(|m| m.uidvalidity)
                            .max()
                            .unwrap_or(0),
                        name: a.name,
                        mailboxes: a.mailboxes,
                        subscriptions: a.subscriptions,
                        next_mailbox_id: a.next_mailbox_id,
                        queue: a.queue,
                    })
                    .collect(),
            }
            .into()
        }
    }
}

/// Checkpoint format 3 (before QRESYNC's expunged UIDs): mailboxes without
/// `vanished`. Their earlier expunges are not known one by one, so each
/// mailbox's `vanished_floor` starts at its highest mod-sequence.
pub mod v3 {
    use super::v4::MessageEntry;
    use super::{LogPos, QueuedMessage};

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Mailbox {
        pub id: u32,
        pub name: String,
        pub uidvalidity: u32,
        pub uidnext: u32,
        pub highest_modseq: u64,
        pub special_use: u8,
        pub keywords: Vec<String>,
        pub messages: Vec<MessageEntry>,
    }

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Account {
        pub name: String,
        pub mailboxes: Vec<Mailbox>,
        pub subscriptions: Vec<String>,
        pub next_mailbox_id: u32,
        pub queue: Vec<QueuedMessage>,
        pub uidvalidity_max: u32,
    }

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct BucketCheckpoint {
        pub version: u32,
        pub bucket: u32,
        pub applied: LogPos,
        pub accounts: Vec<Account>,
    }

    impl From<Mailbox> for super::v4::Mailbox {
        fn from(m: Mailbox) -> Self {
            super::v4::Mailbox {
                vanished: Vec::new(),
                vanished_floor: m.highest_modseq,
                id: m.id,
                name: m.name,
                uidvalidity: m.uidvalidity,
                uidnext: m.uidnext,
                highest_modseq: m.highest_modseq,
                special_use: m.special_use,
                keywords: m.keywords,
                messages: m.messages,
            }
        }
    }

    impl From<BucketCheckpoint> for super::BucketCheckpoint {
        fn from(c: BucketCheckpoint) -> Self {
            super::v4::BucketCheckpoint {
                version: c.version,
                bucket: c.bucket,
                applied: c.applied,
                accounts: c
                    .accounts
                    .into_iter()
                    .map(|a| super::v4::Account {
                        name: a.name,
                        mailboxes: a.mailboxes.into_iter().map(Into::into).collect(),
                        subscriptions: a.subscriptions,
                        next_mailbox_id: a.next_mailbox_id,
                        queue: a.queue,
                        uidvalidity_max: a.uidvalidity_max,
                    })
                    .collect(),
            }
            .into()
        }
    }
}

/// Checkpoint format 4 (QRESYNC's expunged UIDs, before EMAILIDs): message
/// entries without `email_id`. The upgrade numbers each account's messages
/// in mailbox and UID order; copies (entries sharing a body) share a number,
/// as a COPY or MOVE made from now on does (RFC 8474 5.1).
pub mod v4 {
    use super::{Loc, LogPos, QueuedMessage, VanishedRun};
    use std::collections::HashMap;

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct MessageEntry {
        pub uid: u32,
        pub flags: u32,
        pub keywords: u64,
        pub internal_date: i64,
        pub modseq: u64,
        pub loc: Loc,
    }

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Mailbox {
        pub id: u32,
        pub name: String,
        pub uidvalidity: u32,
        pub uidnext: u32,
        pub highest_modseq: u64,
        pub special_use: u8,
        pub keywords: Vec<String>,
        pub messages: Vec<MessageEntry>,
        pub vanished: Vec<VanishedRun>,
        pub vanished_floor: u64,
    }

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Account {
        pub name: String,
        pub mailboxes: Vec<Mailbox>,
        pub subscriptions: Vec<String>,
        pub next_mailbox_id: u32,
        pub queue: Vec<QueuedMessage>,
        pub uidvalidity_max: u32,
    }

    #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct BucketCheckpoint {
        pub version: u32,
        pub bucket: u32,
        pub applied: LogPos,
        pub accounts: Vec<Account>,
    }

    fn upgrade(a: Account) -> super::Account {
        let mut next = 1u64;
        let mut ids: HashMap<Loc, u64> = HashMap::new();
        let mailboxes = a
            .mailboxes
            .into_iter()
            .map(|m| super::Mailbox {
                messages: m
                    .messages
                    .into_iter()
                    .map(|e| super::MessageEntry {
                        email_id: *ids.entry(e.loc).or_insert_with(|| {
                            next += 1;
                            next - 1
                        }),
                        uid: e.uid,
                        flags: e.flags,
                        keywords: e.keywords,
                        internal_date: e.internal_date,
                        modseq: e.modseq,
                        loc: e.loc,
                    })
                    .collect(),
                pending_modseqs: Vec::new(),
                id: m.id,
                name: m.name,
                uidvalidity: m.uidvalidity,
                uidnext: m.uidnext,
                highest_modseq: m.highest_modseq,
                special_use: m.special_use,
                keywords: m.keywords,
                vanished: m.vanished,
                vanished_floor: m.vanished_floor,
            })
            .collect();
        super::Account {
            name: a.name,
            mailboxes,
            subscriptions: a.subscriptions,
            next_mailbox_id: a.next_mailbox_id,
            next_email_id: next,
            queue: a.queue,
            uidvalidity_max: a.uidvalidity_max,
            used_octets: 0,
        }
    }

    impl From<BucketCheckpoint> for super::BucketCheckpoint {
        fn from(c: BucketCheckpoint) -> Self {
            super::BucketCheckpoint {
                version: c.version,
                bucket: c.bucket,
                applied: c.applied,
                accounts: c.accounts.into_iter().map(upgrade).collect(),
            }
        }
    }
}

/// The checkpoint form of one bucket: every account in it and the log
/// position up to which records are included.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BucketCheckpoint {
    pub version: u32,
    pub bucket: u32,
    pub applied: LogPos,
    pub accounts: Vec<Account>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_builds_and_expunges() {
        let mut a = Account::new("a@x");
        for (id, name, su) in DEFAULT_MAILBOXES {
            a.apply(
                &Op::CreateMailbox {
                    account: "a@x",
                    mailbox: id,
                    name,
                    uidvalidity: 5,
                    special_use: su,
                },
                None,
            );
        }
        let loc = |o| Loc {
            seg: 1,
            offset: o,
            len: 10,
        };
        for uid in 1..=3 {
            let op = Op::Message {
                account: "a@x",
                mailbox: INBOX,
                uid,
                internal_date: 0,
                flags: 0,
                keywords: 0,
                modseq: uid as u64 + 1,
                email_id: 0,
                body: b"",
            };
            a.apply(&op, Some(loc(uid * 100)));
        }
        a.apply(
            &Op::Flags {
                account: "a@x",
                mailbox: INBOX,
                uid: 2,
                flags: flag::SEEN,
                keywords: 0,
                modseq: 9,
            },
            None,
        );
        a.apply(
            &Op::Expunge {
                account: "a@x",
                mailbox: INBOX,
                uids: vec![1, 3],
                modseq: 10,
            },
            None,
        );
        let inbox = a.mailbox(INBOX).unwrap();
        assert_eq!(inbox.messages.len(), 1);
        assert_eq!(inbox.messages[0].flags, flag::SEEN);
        assert_eq!(inbox.uidnext, 4);
        assert_eq!(inbox.highest_modseq, 10);
        a.apply(
            &Op::Relocate {
                account: "a@x",
                old: loc(200),
                body: b"",
            },
            Some(Loc {
                seg: 2,
                offset: 64,
                len: 10,
            }),
        );
        let kept = a.mailbox(INBOX).unwrap().messages[0].clone();
        assert_eq!(kept.loc.seg, 2);
        // Messages are numbered in the order they arrived; compaction
        // moving a body keeps its EMAILID.
        assert_eq!((kept.uid, kept.email_id), (2, 2));
        assert_eq!(a.next_email_id, 4);
        // A link (COPY) carries its source's EMAILID; one of the older
        // record kind (0) gets a new one.
        for (uid, carried) in [(1, 2), (2, 0)] {
            a.apply(
                &Op::Link {
                    account: "a@x",
                    mailbox: 1,
                    uid,
                    internal_date: 0,
                    flags: 0,
                    keywords: 0,
                    modseq: 11,
                    loc: kept.loc,
                    email_id: carried,
                },
                None,
            );
        }
        let ids: Vec<u64> = a
            .mailbox(1)
            .unwrap()
            .messages
            .iter()
            .map(|e| e.email_id)
            .collect();
        assert_eq!(ids, vec![2, 4]);
        let mut live = HashMap::new();
        a.live_bytes(&mut live);
        assert_eq!(live.get(&2), Some(&10));
        assert_eq!(a.mailbox_by_name("inbox").unwrap().id, INBOX);
    }

    /// The quota's usage follows every change and equals a recount.
    #[test]
    fn used_octets_follow_every_change() {
        let mut a = Account::new("a@x");
        for (id, name, su) in DEFAULT_MAILBOXES {
            a.apply(
                &Op::CreateMailbox {
                    account: "a@x",
                    mailbox: id,
                    name,
                    uidvalidity: 5,
                    special_use: su,
                },
                None,
            );
        }
        let loc = |o, len| Loc {
            seg: 1,
            offset: o,
            len,
        };
        let msg = |mailbox, uid| Op::Message {
            account: "a@x",
            mailbox,
            uid,
            internal_date: 0,
            flags: 0,
            keywords: 0,
            modseq: 2,
            email_id: 0,
            body: b"",
        };
        let check = |a: &Account, want: u64| {
            assert_eq!(a.used_octets, want);
            let mut b = a.clone();
            b.recount();
            assert_eq!(b.used_octets, want, "recount agrees");
        };
        a.apply(&msg(INBOX, 1), Some(loc(0, 100)));
        a.apply(&msg(INBOX, 2), Some(loc(100, 50)));
        check(&a, 150);
        // Replay of the same record replaces, never double counts.
        a.apply(&msg(INBOX, 2), Some(loc(100, 50)));
        check(&a, 150);
        // A copy counts again; a message into a missing mailbox does not.
        a.apply(
            &Op::Link {
                account: "a@x",
                mailbox: 5,
                uid: 1,
                internal_date: 0,
                flags: 0,
                keywords: 0,
                modseq: 3,
                loc: loc(0, 100),
                email_id: 1,
            },
            None,
        );
        a.apply(&msg(77, 1), Some(loc(200, 1000)));
        check(&a, 250);
        a.apply(
            &Op::Expunge {
                account: "a@x",
                mailbox: INBOX,
                uids: vec![2, 9],
                modseq: 4,
            },
            None,
        );
        check(&a, 200);
        // Compaction moves bodies: same size.
        a.apply(
            &Op::Relocate {
                account: "a@x",
                old: loc(0, 100),
                body: b"",
            },
            Some(Loc {
                seg: 3,
                offset: 0,
                len: 100,
            }),
        );
        check(&a, 200);
        a.apply(
            &Op::DeleteMailbox {
                account: "a@x",
                mailbox: 5,
            },
            None,
        );
        check(&a, 100);
    }

    #[test]
    fn queue_records_build_and_expunge_drops_state() {
        let q = "\u{1}queue-0";
        let mut a = Account::new(q);
        a.apply(
            &Op::CreateMailbox {
                account: q,
                mailbox: INBOX,
                name: "INBOX",
                uidvalidity: 1,
                special_use: 0,
            },
            None,
        );
        let msg = Op::Message {
            account: q,
            mailbox: INBOX,
            uid: 1,
            internal_date: 0,
            flags: 0,
            keywords: 0,
            modseq: 2,
            email_id: 0,
            body: b"",
        };
        a.apply(
            &msg,
            Some(Loc {
                seg: 1,
                offset: 64,
                len: 0,
            }),
        );
        a.apply(
            &Op::Envelope {
                account: q,
                uid: 1,
                arrival: 100,
                flags: 0,
                reverse_path: "s@x",
                recipients: vec!["a@y", "b@z"],
            },
            None,
        );
        a.apply(
            &Op::QueueState {
                account: q,
                uid: 1,
                rcpt: 1,
                state: queue_state::DEFERRED,
                attempts: 1,
                next_attempt: 400,
                last_reply: "451 x",
            },
            None,
        );
        // Out-of-range recipient or unknown uid: ignored.
        a.apply(
            &Op::QueueState {
                account: q,
                uid: 1,
                rcpt: 9,
                state: queue_state::DELIVERED,
                attempts: 1,
                next_attempt: 0,
                last_reply: "",
            },
            None,
        );
        a.apply(
            &Op::QueueState {
                account: q,
                uid: 7,
                rcpt: 0,
                state: queue_state::DELIVERED,
                attempts: 1,
                next_attempt: 0,
                last_reply: "",
            },
            None,
        );
        let m = a.queued(1).unwrap();
        assert_eq!(m.recipients[0].state, queue_state::PENDING);
        assert_eq!(m.recipients[0].next_attempt, 100);
        assert_eq!(
            (
                m.recipients[1].state,
                m.recipients[1].attempts,
                m.recipients[1].next_attempt
            ),
            (queue_state::DEFERRED, 1, 400)
        );
        assert_eq!(m.recipients[1].last_reply, "451 x");
        a.apply(
            &Op::Expunge {
                account: q,
                mailbox: INBOX,
                uids: vec![1],
                modseq: 3,
            },
            None,
        );
        assert!(a.queue.is_empty());
        assert!(a.mailbox(INBOX).unwrap().messages.is_empty());
    }

    /// EMAILIDs come with Message records (given when written): a record
    /// whose sync failed live but is replayed after a crash keeps its own
    /// id and shifts no other; the counter stays above every id applied.
    #[test]
    fn email_ids_come_from_the_records() {
        let mut a = Account::new("a@x");
        a.apply(
            &Op::CreateMailbox {
                account: "a@x",
                mailbox: INBOX,
                name: "INBOX",
                uidvalidity: 1,
                special_use: 0,
            },
            None,
        );
        let msg = |uid, email_id| Op::Message {
            account: "a@x",
            mailbox: INBOX,
            uid,
            internal_date: 0,
            flags: 0,
            keywords: 0,
            modseq: u64::from(uid),
            email_id,
            body: b"",
        };
        let at = |o| {
            Some(Loc {
                seg: 1,
                offset: o,
                len: 5,
            })
        };
        a.apply(&msg(2, 6), at(100));
        a.apply(&msg(1, 5), at(50));
        assert_eq!(a.next_email_id, 7);
        // A record of the older kind is numbered when applied.
        a.apply(&msg(3, 0), at(150));
        let ids: Vec<(u32, u64)> = a
            .mailbox(INBOX)
            .unwrap()
            .messages
            .iter()
            .map(|e| (e.uid, e.email_id))
            .collect();
        assert_eq!(ids, vec![(1, 5), (2, 6), (3, 7)]);
        assert_eq!(a.allocate_email_id(), 8);
    }

    /// What a format 3 mailbox (without messages) becomes.
    fn upgraded(m: v3::Mailbox) -> Mailbox {
        let m = v4::Mailbox::from(m);
        Mailbox {
            id: m.id,
            name: m.name,
            uidvalidity: m.uidvalidity,
            uidnext: m.uidnext,
            highest_modseq: m.highest_modseq,
            special_use: m.special_use,
            keywords: m.keywords,
            messages: vec![],
            vanished: m.vanished,
            vanished_floor: m.vanished_floor,
            pending_modseqs: vec![],
        }
    }

    #[test]
    fn version_4_checkpoints_number_their_messages() {
        let entry = |uid, seg| v4::MessageEntry {
            uid,
            flags: 0,
            keywords: 0,
            internal_date: 0,
            modseq: 1,
            loc: Loc {
                seg,
                offset: 64,
                len: 10,
            },
        };
        let mailbox = |id, messages| v4::Mailbox {
            id,
            name: format!("m{id}"),
            uidvalidity: 5 + id,
            uidnext: 9,
            highest_modseq: 3,
            special_use: 0,
            keywords: vec![],
            messages,
            vanished: vec![VanishedRun {
                first: 1,
                last: 2,
                modseq: 2,
            }],
            vanished_floor: 0,
        };
        let old = v4::BucketCheckpoint {
            version: 4,
            bucket: 1,
            applied: LogPos { seg: 1, offset: 8 },
            accounts: vec![v4::Account {
                name: "a@x".into(),
                // m1's second message is a copy of m0's first (same body).
                mailboxes: vec![
                    mailbox(0, vec![entry(3, 7), entry(4, 8)]),
                    mailbox(1, vec![entry(1, 9), entry(2, 7)]),
                ],
                subscriptions: vec![],
                next_mailbox_id: 2,
                queue: vec![],
                uidvalidity_max: 6,
            }],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let archived =
            rkyv::access::<v4::ArchivedBucketCheckpoint, rkyv::rancor::Error>(&bytes).unwrap();
        let back: v4::BucketCheckpoint =
            rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        let now: BucketCheckpoint = back.into();
        let a = &now.accounts[0];
        let ids: Vec<Vec<u64>> = a
            .mailboxes
            .iter()
            .map(|m| m.messages.iter().map(|e| e.email_id).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 2], vec![3, 1]]);
        assert_eq!(a.next_email_id, 4);
        assert_eq!(a.mailboxes[1].vanished.len(), 1);
        assert_eq!(a.mailboxes[1].uidvalidity, 6);
    }

    /// A mailbox as format 3 and before stored it.
    fn old_mailbox(uidvalidity: u32, uidnext: u32) -> v3::Mailbox {
        v3::Mailbox {
            id: 0,
            name: "INBOX".into(),
            uidvalidity,
            uidnext,
            highest_modseq: 7,
            special_use: 0,
            keywords: vec![],
            messages: vec![],
        }
    }

    #[test]
    fn version_1_checkpoints_still_load() {
        let mb = old_mailbox(3, 5);
        let old = v1::BucketCheckpoint {
            version: 1,
            bucket: 2,
            applied: LogPos { seg: 1, offset: 8 },
            accounts: vec![v1::Account {
                name: "a@x".into(),
                mailboxes: vec![mb.clone()],
                subscriptions: vec![],
                next_mailbox_id: 1,
            }],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let archived =
            rkyv::access::<v1::ArchivedBucketCheckpoint, rkyv::rancor::Error>(&bytes).unwrap();
        let back: v1::BucketCheckpoint =
            rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        let now: BucketCheckpoint = back.into();
        assert_eq!(now.accounts[0].mailboxes, vec![upgraded(mb)]);
        assert!(now.accounts[0].queue.is_empty());
    }

    #[test]
    fn uidvalidity_is_never_reused_after_delete() {
        let mut a = Account::new("a@x");
        let now = 1_800_000_000;
        for (id, name, su) in DEFAULT_MAILBOXES {
            a.apply(
                &Op::CreateMailbox {
                    account: "a@x",
                    mailbox: id,
                    name,
                    uidvalidity: now as u32,
                    special_use: su,
                },
                None,
            );
        }
        let v = a.reserve_uidvalidity(now, 2);
        assert_eq!(v, vec![now as u32 + 1, now as u32 + 2]);
        a.apply(
            &Op::CreateMailbox {
                account: "a@x",
                mailbox: 6,
                name: "box",
                uidvalidity: v[1],
                special_use: 0,
            },
            None,
        );
        a.apply(
            &Op::DeleteMailbox {
                account: "a@x",
                mailbox: 6,
            },
            None,
        );
        // Same second, the mailbox with the highest value is gone: still higher.
        assert_eq!(a.reserve_uidvalidity(now, 1), vec![now as u32 + 3]);
        // The clock wins when it is ahead; a clock gone backwards does not matter.
        assert_eq!(a.reserve_uidvalidity(now + 100, 1), vec![now as u32 + 100]);
        assert_eq!(a.reserve_uidvalidity(now - 1000, 1), vec![now as u32 + 101]);
        // Replay of a creation record raises the counter as well.
        let mut b = Account::new("a@x");
        b.apply(
            &Op::CreateMailbox {
                account: "a@x",
                mailbox: 3,
                name: "x",
                uidvalidity: 77,
                special_use: 0,
            },
            None,
        );
        b.apply(
            &Op::DeleteMailbox {
                account: "a@x",
                mailbox: 3,
            },
            None,
        );
        assert_eq!(b.uidvalidity_max, 77);
        assert_eq!(b.reserve_uidvalidity(5, 1), vec![78]);
    }

    #[test]
    fn version_2_checkpoints_still_load() {
        let mb = old_mailbox(9, 3);
        let old = v2::BucketCheckpoint {
            version: 2,
            bucket: 1,
            applied: LogPos { seg: 1, offset: 8 },
            accounts: vec![v2::Account {
                name: "a@x".into(),
                mailboxes: vec![mb.clone()],
                subscriptions: vec!["INBOX".into()],
                next_mailbox_id: 4,
                queue: vec![],
            }],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let archived =
            rkyv::access::<v2::ArchivedBucketCheckpoint, rkyv::rancor::Error>(&bytes).unwrap();
        let back: v2::BucketCheckpoint =
            rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        let now: BucketCheckpoint = back.into();
        assert_eq!(now.accounts[0].mailboxes, vec![upgraded(mb)]);
        assert_eq!(now.accounts[0].next_mailbox_id, 4);
        assert_eq!(now.accounts[0].uidvalidity_max, 9);
    }

    #[test]
    fn version_3_checkpoints_still_load() {
        let old = v3::BucketCheckpoint {
            version: 3,
            bucket: 1,
            applied: LogPos { seg: 1, offset: 8 },
            accounts: vec![v3::Account {
                name: "a@x".into(),
                mailboxes: vec![old_mailbox(9, 3)],
                subscriptions: vec![],
                next_mailbox_id: 1,
                queue: vec![],
                uidvalidity_max: 11,
            }],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        let archived =
            rkyv::access::<v3::ArchivedBucketCheckpoint, rkyv::rancor::Error>(&bytes).unwrap();
        let back: v3::BucketCheckpoint =
            rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        let now: BucketCheckpoint = back.into();
        let mb = &now.accounts[0].mailboxes[0];
        assert_eq!((mb.uidvalidity, mb.uidnext, mb.highest_modseq), (9, 3, 7));
        assert_eq!(now.accounts[0].uidvalidity_max, 11);
        // Expunges before the upgrade are unknown: a resync from before
        // modseq 7 cannot be answered exactly, one from 7 on can.
        assert_eq!(mb.vanished_since(6), None);
        assert_eq!(mb.vanished_since(7), Some(vec![]));
    }

    /// Expunges are remembered in runs with their mod-sequence, survive a
    /// checkpoint round trip, and the oldest are forgotten past the cap.
    #[test]
    fn vanished_uids_are_remembered() {
        let mut a = Account::new("a@x");
        a.apply(
            &Op::CreateMailbox {
                account: "a@x",
                mailbox: 0,
                name: "INBOX",
                uidvalidity: 5,
                special_use: 0,
            },
            None,
        );
        for uid in 1..=10 {
            let op = Op::Message {
                account: "a@x",
                mailbox: 0,
                uid,
                internal_date: 0,
                flags: 0,
                keywords: 0,
                modseq: u64::from(uid) + 1,
                email_id: 0,
                body: b"",
            };
            a.apply(
                &op,
                Some(Loc {
                    seg: 1,
                    offset: uid * 10,
                    len: 10,
                }),
            );
        }
        let expunge = |a: &mut Account, uids: Vec<u32>, modseq| {
            a.apply(
                &Op::Expunge {
                    account: "a@x",
                    mailbox: 0,
                    uids,
                    modseq,
                },
                None,
            )
        };
        expunge(&mut a, vec![2, 3, 4, 8, 99], 20);
        expunge(&mut a, vec![5], 21);
        // Replay of the same expunge adds nothing.
        expunge(&mut a, vec![5], 21);
        let mb = a.mailbox(0).unwrap();
        assert_eq!(mb.vanished_since(0), Some(vec![(2, 5), (8, 8)]));
        // Modseqs of records not applied yet hold HIGHESTMODSEQ below them.
        let mut m = mb.clone();
        let h = m.highest_modseq;
        let e1 = m.allocate_pending_modseq();
        m.highest_modseq += 1; // an eager flag change after it
        assert_eq!(m.reported_modseq(), e1 - 1);
        m.applied_modseq(e1);
        assert_eq!(m.reported_modseq(), h + 2);
        // One by one deletions in UID order stay one run.
        let mut m = Mailbox::new(1, "x", 1, 0);
        m.record_vanished(&[10], 5);
        m.record_vanished(&[11, 12], 6);
        m.record_vanished(&[20], 7);
        assert_eq!(m.vanished.len(), 2);
        assert_eq!(m.vanished_since(5), Some(vec![(10, 12), (20, 20)]));
        assert_eq!(mb.vanished_since(20), Some(vec![(5, 5)]));
        assert_eq!(mb.vanished_since(21), Some(vec![]));
        let c = BucketCheckpoint {
            version: 4,
            bucket: 0,
            applied: LogPos::default(),
            accounts: vec![a.clone()],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&c).unwrap();
        let archived =
            rkyv::access::<ArchivedBucketCheckpoint, rkyv::rancor::Error>(&bytes).unwrap();
        let back: BucketCheckpoint = rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(back.accounts[0].mailboxes[0].vanished, mb.vanished);
        // Past the cap the oldest runs go and the floor rises.
        let mut m = Mailbox::new(1, "x", 1, 0);
        let max = crate::limits::VANISHED_RUNS_MAX as u32;
        for i in 0..max + 10 {
            m.record_vanished(&[i * 2 + 1], u64::from(i) + 100);
        }
        assert!(m.vanished.len() <= max as usize);
        assert!(m.vanished_floor > 100);
        assert_eq!(m.vanished_since(99), None);
        let recent = m.vanished_since(u64::from(max) + 100 + 8).unwrap();
        assert_eq!(recent, vec![((max + 9) * 2 + 1, (max + 9) * 2 + 1)]);
    }

    #[test]
    fn checkpoint_archive_round_trips() {
        let mut a = Account::new("a@x");
        a.mailboxes.push(Mailbox::new(0, "INBOX", 3, 0));
        let c = BucketCheckpoint {
            version: 1,
            bucket: 7,
            applied: LogPos { seg: 9, offset: 64 },
            accounts: vec![a],
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&c).unwrap();
        let archived =
            rkyv::access::<ArchivedBucketCheckpoint, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(archived.bucket, 7);
        let back: BucketCheckpoint = rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(back, c);
    }
}
