//! Duplicate suppression for cluster deliveries.
//!
//! Replication makes one failure leave a copy behind that no client was
//! told about: the primary sends its copy to the replica, the replica makes
//! it durable, and the primary (or the node that handed the message over)
//! dies before the 250. The client got a 451 or a cut connection and sends
//! the message again, now to the promoted replica, which already holds it.
//! A partial hand-over (one node took its share, another did not) does the
//! same on the node that took it.
//!
//! So a cluster node remembers, per account, what it stored in the last
//! `[cluster] duplicate_window_secs`, and stores a message that comes again
//! once (answering 250, as the first attempt would have). The identity of a
//! message is the SHA-256 of its envelope sender and of the message from
//! its first header field that is not a trace field (Received:,
//! Return-Path:, Authentication-Results:, which each hop prepends and which
//! differ between attempts): every attempt of a sending client carries the
//! same bytes there, while two messages that differ in any other field
//! (Subject:, Date:, To:...) or in the body are two messages. A message
//! without a Message-ID is never taken for a duplicate. The table lives in
//! memory, bounded per shard. A node that starts (after a kill -9 too)
//! fills it again from what it stores: every message of the window carries
//! its envelope sender in the `Return-Path:` field the delivery put first
//! ([`reverse_path_of`]), so its identity is computed again from the
//! stored octets ([`Recent::remember_older`]).
use std::collections::{HashSet, VecDeque};

use crate::mime::header;

/// Entries a shard keeps at most (16 octets of key, plus the queue and
/// table overhead: under 20 MiB). Under a load that fills it before the
/// window ends, the oldest entries go first and the window is shorter.
pub const ENTRIES_MAX: usize = 250_000;

/// The identity of a message across a sending client's attempts, or None
/// (no Message-ID: nothing to tell two attempts from two messages).
pub fn identity(reverse_path: &str, message: &[u8]) -> Option<[u8; 32]> {
    let (head, _) = header::split(message);
    let id = header::field_value(head, b"Message-ID")?;
    if id.trim_ascii().is_empty() {
        return None;
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        reverse_path.as_bytes(),
        b"\0",
        &message[after_trace(head)..],
    ] {
        ctx.update(part);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Some(out)
}

/// Where a message's content starts: after its leading trace fields, the
/// part every node's copy of a delivery has in common (each node that
/// stores a copy adds its own Received: and Return-Path:).
pub fn content_start(message: &[u8]) -> usize {
    after_trace(header::split(message).0)
}

/// Where the leading trace fields of a header section end.
fn after_trace(head: &[u8]) -> usize {
    const TRACE: [&[u8]; 3] = [b"received", b"return-path", b"authentication-results"];
    let mut pos = 0;
    while pos < head.len() {
        let line_end =
            |from: usize| memchr::memchr(b'\n', &head[from..]).map_or(head.len(), |i| from + i + 1);
        let first = &head[pos..line_end(pos)];
        let Some(colon) = memchr::memchr(b':', first) else {
            break;
        };
        let name = first[..colon].trim_ascii();
        if !TRACE.iter().any(|t| name.eq_ignore_ascii_case(t)) {
            break;
        }
        // The field and its continuation lines.
        pos = line_end(pos);
        while pos < head.len() && matches!(head[pos], b' ' | b'\t') {
            pos = line_end(pos);
        }
    }
    pos
}

/// The envelope sender a delivery wrote into the stored message: the
/// value of its first line, `Return-Path: <...>` (RFC 5321 4.4, as the SMTP
/// driver writes it). None for a message that does not start so (an IMAP
/// APPEND, an import).
pub fn reverse_path_of(stored: &[u8]) -> Option<&str> {
    const FIELD: &[u8] = b"Return-Path: <";
    let rest = stored.strip_prefix(FIELD)?;
    let end = memchr::memchr(b'\n', rest)?;
    let line = rest[..end].strip_suffix(b"\r")?;
    std::str::from_utf8(line.strip_suffix(b">")?).ok()
}

/// What a shard stored lately: (account, identity) keys with the second
/// each was stored at, oldest first.
#[derive(Default)]
pub struct Recent {
    order: VecDeque<(i64, u128)>,
    keys: HashSet<u128>,
}

fn key(account: &str, identity: &[u8; 32]) -> u128 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(identity);
    ctx.update(account.as_bytes());
    let d = ctx.finish();
    let mut k = [0; 16];
    k.copy_from_slice(&d.as_ref()[..16]);
    u128::from_le_bytes(k)
}

impl Recent {
    /// Drop what is older than `window` seconds at `now`.
    fn expire(&mut self, now: i64, window: i64) {
        while let Some(&(at, k)) = self.order.front() {
            if at > now - window && self.order.len() <= ENTRIES_MAX {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&k);
        }
    }

    /// Was this message stored for `account` in the last `window` seconds?
    pub fn seen(&mut self, account: &str, identity: &[u8; 32], now: i64, window: i64) -> bool {
        self.expire(now, window);
        self.keys.contains(&key(account, identity))
    }

    /// This message is durable for `account`.
    pub fn stored(&mut self, account: &str, identity: &[u8; 32], now: i64, window: i64) {
        let k = key(account, identity);
        if self.keys.insert(k) {
            self.order.push_back((now, k));
        }
        self.expire(now, window);
    }

    /// A message stored for `account` at `at`, no later than anything
    /// remembered so far (the start-up fill, newest first); nothing once
    /// the table is full. Whether it is a new entry.
    pub fn remember_older(&mut self, account: &str, identity: &[u8; 32], at: i64) -> bool {
        if self.order.len() >= ENTRIES_MAX {
            return false;
        }
        let k = key(account, identity);
        if !self.keys.insert(k) {
            return false;
        }
        // Older than every entry: the front keeps the oldest.
        let at = at.min(self.order.front().map_or(at, |f| f.0));
        self.order.push_front((at, k));
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_starts_after_the_leading_trace_fields() {
        let body = b"From: a@example.org\r\nReceived: late\r\n\r\nhi\r\n";
        let primary = [
            &b"Return-Path: <s@example.org>\r\nReceived: from c by n1;\r\n\tdate\r\n"[..],
            body,
        ]
        .concat();
        let replica = [&b"Return-Path: <s@example.org>\r\nReceived: from n1 by n2\r\nAuthentication-Results: n1; spf=pass\r\nReceived: from c by n1;\r\n\tdate\r\n"[..], body].concat();
        assert_eq!(&primary[content_start(&primary)..], body);
        assert_eq!(&replica[content_start(&replica)..], body);
        // A trace field after the first other field is content.
        assert_eq!(content_start(body), 0);
    }

    use super::*;

    const M: &[u8] = b"Message-ID: <a@x>\r\nSubject: s\r\n\r\nbody\r\n";

    #[test]
    fn identity_ignores_prepended_trace_fields_only() {
        let base = identity("s@x", M).unwrap();
        let traced = [
            b"Received: from a by b; now\r\nAuthentication-Results: h; none\r\n",
            M,
        ]
        .concat();
        assert_eq!(identity("s@x", &traced), Some(base));
        let folded = [
            b"Received: from a\r\n\tby b; now\r\nReturn-Path: <s@x>\r\n",
            M,
        ]
        .concat();
        assert_eq!(identity("s@x", &folded), Some(base));
        assert_ne!(identity("t@x", M), Some(base), "another sender");
        let other_subject = b"Message-ID: <a@x>\r\nSubject: t\r\n\r\nbody\r\n";
        assert_ne!(identity("s@x", other_subject), Some(base));
        let traced_later = b"Message-ID: <a@x>\r\nReceived: x\r\nSubject: s\r\n\r\nbody\r\n";
        assert_ne!(
            identity("s@x", traced_later),
            Some(base),
            "only leading trace fields go"
        );
        let other_body = b"Message-ID: <a@x>\r\nSubject: s\r\n\r\nbody2\r\n";
        assert_ne!(identity("s@x", other_body), Some(base));
        let other_id = b"Message-ID: <b@x>\r\nSubject: s\r\n\r\nbody\r\n";
        assert_ne!(identity("s@x", other_id), Some(base));
        assert_eq!(identity("s@x", b"Subject: s\r\n\r\nbody\r\n"), None);
        assert_eq!(identity("s@x", b"Message-ID:  \r\n\r\nbody\r\n"), None);
    }

    #[test]
    fn remembers_per_account_within_the_window() {
        let id = identity("s@x", M).unwrap();
        let mut r = Recent::default();
        assert!(!r.seen("a@x", &id, 100, 60));
        r.stored("a@x", &id, 100, 60);
        assert!(r.seen("a@x", &id, 159, 60));
        assert!(!r.seen("b@x", &id, 159, 60), "another account");
        assert!(!r.seen("a@x", &id, 160, 60), "the window ended");
        assert!(r.is_empty());
    }

    #[test]
    fn the_sender_and_identity_come_back_from_the_stored_message() {
        // What the delivery hashed: our Received: and the client's message.
        let delivered = [&b"Received: from c by n1; now\r\n"[..], M].concat();
        let stored = [
            &b"Return-Path: <s@x>\r\nAuthentication-Results: h; spf=pass\r\n"[..],
            &delivered,
        ]
        .concat();
        let rp = reverse_path_of(&stored).unwrap();
        assert_eq!(rp, "s@x");
        assert_eq!(identity(rp, &stored), identity("s@x", &delivered));
        assert!(identity(rp, &stored).is_some());
        assert_eq!(reverse_path_of(b"Return-Path: <>\r\n\r\nx"), Some(""));
        assert_eq!(reverse_path_of(M), None, "no Return-Path first");
        assert_eq!(reverse_path_of(b"Return-Path: <s@x"), None);
        assert_eq!(reverse_path_of(b"Return-Path: s@x\r\n"), None);
    }

    #[test]
    fn the_start_up_fill_goes_in_front_of_new_entries() {
        let id = |i: u8| [i; 32];
        let mut r = Recent::default();
        // A delivery after the start, then the fill, newest first.
        r.stored("a@x", &id(9), 1000, 60);
        assert!(r.remember_older("a@x", &id(2), 990));
        assert!(r.remember_older("a@x", &id(1), 950));
        assert!(!r.remember_older("a@x", &id(9), 980), "known already");
        assert_eq!(r.len(), 3, "no key twice");
        assert!(r.seen("a@x", &id(1), 1000, 60));
        assert!(r.seen("a@x", &id(2), 1000, 60));
        // The oldest expire first.
        assert!(!r.seen("a@x", &id(1), 1011, 60));
        assert!(r.seen("a@x", &id(2), 1011, 60));
        assert!(r.seen("a@x", &id(9), 1059, 60));
        assert!(!r.seen("a@x", &id(9), 1060, 60));
        assert!(r.is_empty());
    }

    #[test]
    fn bounded() {
        let mut r = Recent::default();
        for i in 0..ENTRIES_MAX + 10 {
            let mut id = [0; 32];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            r.stored("a@x", &id, 1, 3600);
        }
        assert_eq!(r.len(), ENTRIES_MAX);
        assert_eq!(r.keys.len(), ENTRIES_MAX);
        assert!(!r.seen("a@x", &[0; 32], 1, 3600), "the oldest went first");
    }
}
