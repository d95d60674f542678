//! An in-memory [`Mailstore`]: the same account index (`storage::index`)
//! the shard keeps, with bodies in a vector instead of segment mappings
//! and commits that apply at once. Unit tests and the `imap_session` fuzz
//! target run [`Machine`](super::machine::Machine) on it.
//!
//! It follows the store's rules where the session can see them: records
//! that only change existing state (flags, keywords, mailbox names,
//! subscriptions) are applied when written, records that add or remove
//! messages when durable; a failed commit (see [`MemStore::fail_next`])
//! has applied the first kind at most and forgets the mod-sequences of
//! the second, as `Store::commit` does; and a commit may be made to wait
//! between the two ([`MemStore::yield_next`]) so that other sessions run
//! in the window a group commit leaves open.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::machine::{Limits, Mailstore};
use crate::storage::index::{Account, DEFAULT_MAILBOXES, INBOX};
use crate::storage::record::{Loc, Op};
use crate::storage::{is_eager, StorageError};

/// A stored body: the message's octets, shared.
#[derive(Clone)]
pub struct MemBody(Rc<[u8]>);

impl std::ops::Deref for MemBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// How an injected commit failure happens (`Store::commit`'s two ways).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Before anything is written (no room in the log): nothing applied.
    NoRoom,
    /// The records were written, the sync failed: the records that change
    /// existing state were applied when written, the others never are.
    AfterWrite,
}

/// Pending once, then ready.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[derive(Default)]
pub struct MemStore {
    accounts: RefCell<HashMap<String, Account>>,
    bodies: RefCell<Vec<Rc<[u8]>>>,
    quota_limits: RefCell<HashMap<String, u64>>,
    reserved: RefCell<HashMap<String, u64>>,
    floors: RefCell<HashMap<(String, u32), u32>>,
    fail_next: Cell<Option<Failure>>,
    yield_next: Cell<bool>,
    /// Records written and not yet durable: (sequence, kind, payload).
    log: RefCell<std::collections::VecDeque<(u64, u8, Vec<u8>)>>,
    next_seq: Cell<u64>,
    clock: Cell<i64>,
    /// The bounds sessions keep to.
    pub limits: Limits,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            clock: Cell::new(1_700_000_000),
            limits: Limits::default(),
            ..MemStore::default()
        }
    }

    /// An account with the default mailboxes (INBOX, Sent, Drafts, ...).
    pub fn add_account(&self, name: &str) {
        let mut a = Account::new(name);
        let uidvalidity = self.now() as u32;
        for (id, mbox, su) in DEFAULT_MAILBOXES {
            a.apply(
                &Op::CreateMailbox {
                    account: name,
                    mailbox: id,
                    name: mbox,
                    uidvalidity,
                    special_use: su,
                },
                None,
            );
        }
        self.accounts.borrow_mut().insert(name.to_string(), a);
    }

    /// An account's storage limit.
    pub fn set_quota(&self, account: &str, octets: Option<u64>) {
        let mut q = self.quota_limits.borrow_mut();
        match octets {
            Some(n) => q.insert(account.to_string(), n),
            None => q.remove(account),
        };
    }

    /// The next commit fails the way `how` says.
    pub fn fail_next(&self, how: Failure) {
        self.fail_next.set(Some(how));
    }

    /// The next commit waits once (returns Pending to its first poll)
    /// after its records are written and before they are durable, as a
    /// group commit does: other sessions run meanwhile.
    pub fn yield_next(&self) {
        self.yield_next.set(true);
    }

    /// Forget a `yield_next` that no commit took.
    pub fn no_yield(&self) {
        self.yield_next.set(false);
    }

    /// Let time pass (INTERNALDATE, UIDVALIDITY of new mailboxes).
    pub fn advance(&self, secs: i64) {
        self.clock.set(self.clock.get() + secs);
    }

    /// A delivery into an account's INBOX, as SMTP makes one. The UID.
    pub fn deliver(&self, account: &str, body: &[u8]) -> Option<u32> {
        let mut accounts = self.accounts.borrow_mut();
        let a = accounts.get_mut(account)?;
        let email_id = a.allocate_email_id();
        let m = a.mailbox_mut(INBOX)?;
        let uid = m.uidnext;
        m.uidnext += 1;
        let modseq = m.allocate_pending_modseq();
        let op = Op::Message {
            account,
            mailbox: INBOX,
            uid,
            internal_date: self.now(),
            flags: 0,
            keywords: 0,
            modseq,
            email_id,
            body,
        };
        drop(accounts);
        // Through the log like every record: after what was written before.
        let upto = self.write(&[op]);
        self.durable(upto);
        Some(uid)
    }

    /// Write records: what only changes existing state is applied now,
    /// the rest joins the log, to be applied in log order once durable.
    /// Returns the log position after them.
    fn write(&self, ops: &[Op<'_>]) -> u64 {
        for op in ops.iter().filter(|op| is_eager(op)) {
            self.apply(op);
        }
        for op in ops.iter().filter(|op| !is_eager(op)) {
            let mut payload = Vec::new();
            op.encode_meta(&mut payload);
            payload.extend_from_slice(op.body().unwrap_or_default());
            let seq = self.next_seq.get();
            self.next_seq.set(seq + 1);
            self.log.borrow_mut().push_back((seq, op.kind(), payload));
        }
        self.next_seq.get()
    }

    /// The log is durable up to `upto`: apply its records in order.
    fn durable(&self, upto: u64) {
        loop {
            let next = {
                let mut log = self.log.borrow_mut();
                match log.front() {
                    Some((seq, ..)) if *seq < upto => log.pop_front(),
                    _ => None,
                }
            };
            let Some((_, kind, payload)) = next else {
                break;
            };
            let op = Op::decode(kind, &payload).expect("a record this store encoded");
            self.apply(&op);
        }
    }

    /// A failed commit's records will not be applied: their pending
    /// mod-sequences no longer hold HIGHESTMODSEQ back.
    fn forget(&self, ops: &[Op<'_>]) {
        let mut accounts = self.accounts.borrow_mut();
        for (account, mailbox, modseq) in ops.iter().filter_map(Op::pending_modseq) {
            if let Some(m) = accounts
                .get_mut(account)
                .and_then(|a| a.mailbox_mut(mailbox))
            {
                m.applied_modseq(modseq);
            }
        }
    }

    fn keep(&self, body: &[u8]) -> Loc {
        let mut bodies = self.bodies.borrow_mut();
        bodies.push(Rc::from(body));
        Loc {
            seg: 0,
            offset: (bodies.len() - 1) as u32,
            len: body.len() as u32,
        }
    }

    fn apply(&self, op: &Op<'_>) {
        let loc = match op {
            Op::Message { body, .. } => Some(self.keep(body)),
            _ => None,
        };
        let mut accounts = self.accounts.borrow_mut();
        let a = accounts
            .entry(op.account().to_string())
            .or_insert_with(|| Account::new(op.account()));
        a.apply(op, loc);
    }
}

impl Mailstore for MemStore {
    type Body = MemBody;

    fn with_account<R>(&self, account: &str, f: impl FnOnce(&Account) -> R) -> Option<R> {
        self.accounts.borrow().get(account).map(f)
    }

    fn with_account_counters<R>(
        &self,
        account: &str,
        f: impl FnOnce(&mut Account) -> R,
    ) -> Result<R, StorageError> {
        let mut accounts = self.accounts.borrow_mut();
        let a = accounts
            .get_mut(account)
            .ok_or_else(|| StorageError::NoAccount(account.into()))?;
        Ok(f(a))
    }

    async fn commit(&self, ops: &[Op<'_>]) -> Result<(), StorageError> {
        let failure = self.fail_next.take();
        if failure == Some(Failure::NoRoom) {
            self.forget(ops);
            return Err(StorageError::Full);
        }
        let first = self.next_seq.get();
        let written = self.write(ops);
        if failure == Some(Failure::AfterWrite) {
            // The sync failed: these records are never applied.
            self.log.borrow_mut().retain(|(seq, ..)| *seq < first);
            self.forget(ops);
            return Err(StorageError::Io("injected failure".into()));
        }
        if self.yield_next.replace(false) {
            YieldOnce(false).await;
        }
        // Durable: this commit's records and every one written before them
        // (a commit that waited may find its records applied already).
        self.durable(written);
        Ok(())
    }

    fn body(&self, loc: Loc) -> Option<MemBody> {
        self.bodies
            .borrow()
            .get(loc.offset as usize)
            .map(|b| MemBody(b.clone()))
    }

    fn quota(&self, account: &str) -> Option<u64> {
        self.quota_limits.borrow().get(account).copied()
    }

    fn used_octets(&self, account: &str) -> u64 {
        self.with_account(account, |a| a.used_octets).unwrap_or(0)
    }

    fn quota_reserved(&self) -> &RefCell<HashMap<String, u64>> {
        &self.reserved
    }

    fn recent_floors(&self) -> &RefCell<HashMap<(String, u32), u32>> {
        &self.floors
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn now(&self) -> i64 {
        self.clock.get()
    }
}
