//! The persistent outbound queue: where relayed mail waits, on the same
//! storage as mailboxes.
//!
//! Each shard owns one or more *queue accounts* named `"\u{1}queue-N"` (a
//! name no client can log in with). A shard enqueues into the first `N`
//! whose bucket it owns ([`queue_account_for`]); queue accounts left in its
//! buckets by an earlier run with another core count are found by prefix
//! ([`QUEUE_PREFIX`]) and drained too.
//!
//! A queued message is:
//! - an `Op::Message` in the queue account's INBOX: the body exactly as it
//!   will be sent (our `Received:` line first), so compaction, checkpoints and
//!   recovery treat it like any stored mail;
//! - an `Op::Envelope` logged right after it, in the same group commit:
//!   reverse path, recipients, SMTPUTF8/8BITMIME flags, arrival time;
//! - `Op::QueueState` records as recipients are tried (pending, deferred
//!   with the next attempt and last reply, delivered, bounced);
//! - an `Op::Expunge` once every recipient is delivered or bounced.
//!
//! The index keeps the envelope and states in `Account::queue` (checkpoint
//! format 2). A Message without an Envelope can only be the torn end of an
//! enqueue that never got its `250`; the worker expunges such orphans.
//!
//! This module is the pure part: names, ids, the retry schedule and what an
//! attempt's outcome does to a recipient. The worker is `runtime::relay`.
use std::fmt::Write as _;

use crate::storage::index::{queue_flag, queue_state, Account, QueuedMessage, INBOX};
use crate::storage::record::Op;
use crate::storage::{self, Result, Store};

/// Names of queue accounts start with this (never a valid address).
pub const QUEUE_PREFIX: &str = "\u{1}queue-";

/// Queue account number `n`.
pub fn queue_account_name(n: u32) -> String {
    format!("{QUEUE_PREFIX}{n}")
}

/// The number of a queue account name.
pub fn queue_number(account: &str) -> Option<u32> {
    account.strip_prefix(QUEUE_PREFIX)?.parse().ok()
}

/// The queue account shard `shard` (of `shards`) enqueues into: the first
/// `n` whose bucket it owns.
pub fn queue_account_for(shard: usize, shards: usize, buckets: u32) -> String {
    (0u32..)
        .map(queue_account_name)
        .find(|name| storage::shard_of_bucket(storage::bucket_of(name, buckets), shards) == shard)
        .expect("some queue number maps to every shard")
}

/// A queued message's id, as shown by `ringmail queue list`: `q<N>-<UID>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId {
    pub queue: u32,
    pub uid: u32,
}

impl QueueId {
    pub fn account(&self) -> String {
        queue_account_name(self.queue)
    }

    pub fn parse(s: &str) -> Option<QueueId> {
        let (q, uid) = s.trim().strip_prefix('q')?.split_once('-')?;
        Some(QueueId {
            queue: q.parse().ok()?,
            uid: uid.parse().ok()?,
        })
    }
}

impl std::fmt::Display for QueueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "q{}-{}", self.queue, self.uid)
    }
}

/// Retry policy, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Delay before the first retry; it doubles after every further failure...
    pub retry_first: i64,
    /// ...up to this.
    pub retry_max: i64,
    /// A recipient still undelivered this long after arrival is bounced.
    pub give_up: i64,
    /// Send one delay warning when a recipient is still deferred this long
    /// after arrival (0: never).
    pub delay_warning: i64,
}

impl Schedule {
    /// Delay after the `attempts`-th failed attempt (1-based).
    pub fn backoff(&self, attempts: u32) -> i64 {
        let first = self.retry_first.max(1);
        let shift = attempts.saturating_sub(1).min(40);
        first
            .saturating_mul(1i64 << shift)
            .min(self.retry_max.max(first))
    }
}

/// What one attempt did to a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered(String),
    Temporary(String),
    Permanent(String),
}

/// A recipient's new persisted state after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub state: u8,
    pub attempts: u32,
    pub next_attempt: i64,
    pub last_reply: String,
    /// The recipient failed for good: the sender gets a DSN.
    pub bounce: bool,
}

/// Apply an attempt's result to a recipient currently in `state` with
/// `attempts` earlier attempts, for a message that arrived at `arrival`.
/// A temporary failure past the give-up time bounces.
pub fn after_attempt(
    schedule: &Schedule,
    state: u8,
    attempts: u32,
    arrival: i64,
    now: i64,
    attempt: Attempt,
) -> Update {
    let attempts = attempts.saturating_add(1);
    let keep = state & queue_state::WARNED;
    match attempt {
        Attempt::Delivered(reply) => Update {
            state: queue_state::DELIVERED | keep,
            attempts,
            next_attempt: 0,
            last_reply: reply,
            bounce: false,
        },
        Attempt::Permanent(reply) => Update {
            state: queue_state::BOUNCED | keep,
            attempts,
            next_attempt: 0,
            last_reply: reply,
            bounce: true,
        },
        Attempt::Temporary(reply) => {
            let next = now.saturating_add(schedule.backoff(attempts));
            if now >= arrival.saturating_add(schedule.give_up) {
                let reply = format!("{reply} (gave up after {attempts} attempts)");
                Update {
                    state: queue_state::BOUNCED | keep,
                    attempts,
                    next_attempt: 0,
                    last_reply: reply,
                    bounce: true,
                }
            } else {
                Update {
                    state: queue_state::DEFERRED | keep,
                    attempts,
                    next_attempt: next,
                    last_reply: reply,
                    bounce: false,
                }
            }
        }
    }
}

/// Whether a deferred recipient is due for its delay warning.
pub fn wants_delay_warning(schedule: &Schedule, state: u8, arrival: i64, now: i64) -> bool {
    schedule.delay_warning > 0
        && state & queue_state::STATE_MASK == queue_state::DEFERRED
        && state & queue_state::WARNED == 0
        && now >= arrival.saturating_add(schedule.delay_warning)
}

/// The domain of an address, lower case (`""` if there is none).
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Flags for a message's envelope.
pub fn flags(smtputf8: bool, body_8bit: bool) -> u8 {
    (if smtputf8 { queue_flag::SMTPUTF8 } else { 0 })
        | (if body_8bit { queue_flag::EIGHT_BIT } else { 0 })
}

/// Put a message in a queue account (created on first use): its body and
/// envelope are durable when this returns. Returns its UID.
pub async fn enqueue(
    store: &Store,
    account: &str,
    body: &[u8],
    arrival: i64,
    flags: u8,
    reverse_path: &str,
    recipients: &[&str],
) -> Result<u32> {
    store.ensure_account(account).await?;
    let (uid, modseq, email_id) = store.with_account_counters(account, |a| {
        let inbox = a.mailbox_mut(INBOX).expect("queue account has an INBOX");
        let uid = inbox.uidnext;
        inbox.uidnext += 1;
        inbox.highest_modseq += 1;
        let modseq = inbox.highest_modseq;
        (uid, modseq, a.allocate_email_id())
    })?;
    store
        .commit(&[
            Op::Message {
                account,
                mailbox: INBOX,
                uid,
                internal_date: arrival,
                flags: 0,
                keywords: 0,
                modseq,
                email_id,
                body,
            },
            Op::Envelope {
                account,
                uid,
                arrival,
                flags,
                reverse_path,
                recipients: recipients.to_vec(),
            },
        ])
        .await?;
    Ok(uid)
}

/// UIDs of INBOX messages of a queue account that have no envelope (torn
/// enqueues that were never acknowledged).
pub fn orphans(account: &Account) -> Vec<u32> {
    let Some(inbox) = account.mailbox(INBOX) else {
        return Vec::new();
    };
    inbox
        .messages
        .iter()
        .map(|m| m.uid)
        .filter(|uid| account.queued(*uid).is_none())
        .collect()
}

/// UIDs of queued messages whose recipients are all final.
pub fn finished(account: &Account) -> Vec<u32> {
    account
        .queue
        .iter()
        .filter(|q| q.recipients.iter().all(|r| queue_state::is_final(r.state)))
        .map(|q| q.uid)
        .collect()
}

/// Human name of a state.
pub fn state_name(state: u8) -> &'static str {
    match state & queue_state::STATE_MASK {
        queue_state::PENDING => "pending",
        queue_state::DEFERRED => "deferred",
        queue_state::DELIVERED => "delivered",
        queue_state::BOUNCED => "bounced",
        _ => "unknown",
    }
}

/// One message of `ringmail queue list`:
/// `q0-7 arrived=<unix> from=<sender> size=<n>` then one indented line per
/// recipient: `<addr> <state> attempts=<n> [next=+<secs>s] [last="<reply>"]`.
pub fn describe(id: QueueId, q: &QueuedMessage, size: u64, now: i64, out: &mut String) {
    let _ = writeln!(
        out,
        "{id} arrived={} from=<{}> size={size}",
        q.arrival, q.reverse_path
    );
    for r in &q.recipients {
        let _ = write!(
            out,
            "  {} {} attempts={}",
            r.address,
            state_name(r.state),
            r.attempts
        );
        if !queue_state::is_final(r.state) {
            let _ = write!(out, " next=+{}s", (r.next_attempt - now).max(0));
        }
        if !r.last_reply.is_empty() {
            let reply: String = r
                .last_reply
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let _ = write!(out, " last=\"{reply}\"");
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schedule = Schedule {
        retry_first: 300,
        retry_max: 14_400,
        give_up: 432_000,
        delay_warning: 14_400,
    };

    #[test]
    fn names_and_ids() {
        assert_eq!(queue_number(&queue_account_name(12)), Some(12));
        assert_eq!(queue_number("alice@example.test"), None);
        for shards in 1..6 {
            for shard in 0..shards {
                let a = queue_account_for(shard, shards, 256);
                assert_eq!(
                    storage::shard_of_bucket(storage::bucket_of(&a, 256), shards),
                    shard
                );
            }
        }
        let id = QueueId { queue: 3, uid: 17 };
        assert_eq!(id.to_string(), "q3-17");
        assert_eq!(QueueId::parse("q3-17"), Some(id));
        assert_eq!(QueueId::parse("3-17"), None);
        assert_eq!(QueueId::parse("q3-x"), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let d: Vec<i64> = (1..=8).map(|a| S.backoff(a)).collect();
        assert_eq!(d, [300, 600, 1200, 2400, 4800, 9600, 14_400, 14_400]);
        assert_eq!(S.backoff(1000), 14_400);
        let tiny = Schedule {
            retry_first: 1,
            retry_max: 4,
            give_up: 10,
            delay_warning: 0,
        };
        assert_eq!(
            (1..=4).map(|a| tiny.backoff(a)).collect::<Vec<_>>(),
            [1, 2, 4, 4]
        );
    }

    #[test]
    fn outcomes_change_states() {
        let t = 1_000_000;
        let u = after_attempt(
            &S,
            queue_state::PENDING,
            0,
            t,
            t,
            Attempt::Temporary("451 later".into()),
        );
        assert_eq!(
            (u.state, u.attempts, u.next_attempt, u.bounce),
            (queue_state::DEFERRED, 1, t + 300, false)
        );
        let u = after_attempt(
            &S,
            queue_state::DEFERRED | queue_state::WARNED,
            1,
            t,
            t + 300,
            Attempt::Temporary("451".into()),
        );
        assert_eq!(
            (u.state, u.next_attempt),
            (queue_state::DEFERRED | queue_state::WARNED, t + 900)
        );
        let u = after_attempt(
            &S,
            queue_state::DEFERRED,
            5,
            t,
            t + 432_000,
            Attempt::Temporary("451 x".into()),
        );
        assert_eq!((u.state, u.bounce), (queue_state::BOUNCED, true));
        assert!(u.last_reply.starts_with("451 x (gave up"));
        let u = after_attempt(
            &S,
            queue_state::PENDING,
            0,
            t,
            t,
            Attempt::Permanent("550 no".into()),
        );
        assert_eq!(
            (u.state, u.bounce, u.last_reply.as_str()),
            (queue_state::BOUNCED, true, "550 no")
        );
        let u = after_attempt(
            &S,
            queue_state::DEFERRED,
            2,
            t,
            t,
            Attempt::Delivered("250 ok".into()),
        );
        assert_eq!((u.state, u.bounce), (queue_state::DELIVERED, false));
        assert!(queue_state::is_final(u.state));
    }

    #[test]
    fn delay_warning_once() {
        let t = 1_000;
        assert!(!wants_delay_warning(&S, queue_state::DEFERRED, t, t + 100));
        assert!(wants_delay_warning(
            &S,
            queue_state::DEFERRED,
            t,
            t + 14_400
        ));
        assert!(!wants_delay_warning(
            &S,
            queue_state::DEFERRED | queue_state::WARNED,
            t,
            t + 14_400
        ));
        assert!(!wants_delay_warning(
            &S,
            queue_state::PENDING,
            t,
            t + 14_400
        ));
        let off = Schedule {
            delay_warning: 0,
            ..S
        };
        assert!(!wants_delay_warning(
            &off,
            queue_state::DEFERRED,
            t,
            t + 1_000_000
        ));
    }

    #[test]
    fn domains_and_listing() {
        assert_eq!(domain_of("Bob@B.Test."), "b.test");
        assert_eq!(domain_of("nodomain"), "");
        let q = QueuedMessage {
            uid: 7,
            arrival: 100,
            flags: 0,
            reverse_path: "a@a.test".into(),
            recipients: vec![
                crate::storage::index::QueuedRecipient {
                    address: "b@b.test".into(),
                    state: queue_state::DEFERRED,
                    attempts: 2,
                    next_attempt: 160,
                    last_reply: "451 4.4.1 refused\r\n".into(),
                },
                crate::storage::index::QueuedRecipient {
                    address: "c@c.test".into(),
                    state: queue_state::DELIVERED,
                    attempts: 1,
                    next_attempt: 0,
                    last_reply: String::new(),
                },
            ],
        };
        let mut out = String::new();
        describe(QueueId { queue: 0, uid: 7 }, &q, 42, 100, &mut out);
        assert_eq!(
            out,
            "q0-7 arrived=100 from=<a@a.test> size=42\n  b@b.test deferred attempts=2 next=+60s last=\"451 4.4.1 refused  \"\n  c@c.test delivered attempts=1\n"
        );
    }
}
