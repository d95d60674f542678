//! End-to-end delivery check for `smtp --verify`.
//!
//! Every message acknowledged with a 2xx after DATA/BDAT is remembered as
//! (message number, recipient account) -> (hash, length) of the exact bytes
//! sent (before dot-stuffing). After the run every involved mailbox is read
//! back over POP3 or IMAP. A retrieved message is matched by its
//! `X-Loadgen-Id` header; everything before the first line that starts with
//! `X-Loadgen-Id:` (the trace headers the server prepends: Return-Path,
//! Received, Delivered-To, ...) is stripped, and the rest must be
//! byte-identical to what was sent.

use std::collections::HashMap;

use serde::Serialize;

use crate::msggen::{content_hash, ID_HEADER};

/// What was acknowledged by the server, keyed by (message number, account).
#[derive(Default)]
pub struct Expected {
    pub map: HashMap<(u64, u32), (u64, u64)>,
}

impl Expected {
    pub fn insert(&mut self, n: u64, account: u32, hash: u64, len: u64) {
        self.map.insert((n, account), (hash, len));
    }
    pub fn accounts(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.map.keys().map(|k| k.1).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Classification of one retrieved message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Carries this run's id: message number, hash and length of the part
    /// from the X-Loadgen-Id line to the end.
    Ours { n: u64, hash: u64, len: u64 },
    /// Has an X-Loadgen-Id of another run, or none at all.
    Foreign,
}

/// Part of `msg` starting at the first line beginning with `X-Loadgen-Id:`.
pub fn strip_trace(msg: &[u8]) -> Option<&[u8]> {
    let needle = format!("{ID_HEADER}:");
    if msg.starts_with(needle.as_bytes()) {
        return Some(msg);
    }
    let nl_needle = format!("\n{ID_HEADER}:");
    memchr::memmem::find(msg, nl_needle.as_bytes()).map(|p| &msg[p + 1..])
}

pub fn parse_retrieved(run_id: &str, msg: &[u8]) -> Parsed {
    let Some(body) = strip_trace(msg) else {
        return Parsed::Foreign;
    };
    let line_end = memchr::memchr(b'\n', body).unwrap_or(body.len());
    let value = std::str::from_utf8(&body[ID_HEADER.len() + 1..line_end])
        .unwrap_or("")
        .trim();
    let Some((run, n)) = value.rsplit_once('-') else {
        return Parsed::Foreign;
    };
    if run != run_id {
        return Parsed::Foreign;
    }
    let Ok(n) = n.parse::<u64>() else {
        return Parsed::Foreign;
    };
    Parsed::Ours {
        n,
        hash: content_hash(body),
        len: body.len() as u64,
    }
}

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct VerifyReport {
    /// "pop3" or "imap".
    pub method: String,
    pub accounts_checked: u64,
    /// (message, recipient) pairs acknowledged by the server.
    pub expected: u64,
    /// Pairs found exactly once and byte-identical.
    pub found_ok: u64,
    pub missing: u64,
    /// Pairs found more than once.
    pub duplicated: u64,
    /// Pairs found with different content.
    pub corrupted: u64,
    /// This run's messages that were not acknowledged for that mailbox.
    pub unexpected: u64,
    /// Messages without this run's id (other runs, other mail).
    pub foreign: u64,
    pub fetch_errors: u64,
    pub ok: bool,
    /// Up to 10 examples of problems.
    pub examples: Vec<String>,
}

impl VerifyReport {
    pub fn human(&self) -> String {
        format!(
            "verify ({}): {} accounts, expected {}, ok {}, missing {}, duplicated {}, corrupted {}, unexpected {}, foreign {}, fetch errors {} => {}{}",
            self.method,
            self.accounts_checked,
            self.expected,
            self.found_ok,
            self.missing,
            self.duplicated,
            self.corrupted,
            self.unexpected,
            self.foreign,
            self.fetch_errors,
            if self.ok { "OK" } else { "FAILED" },
            if self.examples.is_empty() { String::new() } else { format!("\n  {}", self.examples.join("\n  ")) }
        )
    }
}

/// Compare what was retrieved with what was acknowledged.
/// `retrieved` holds (account, classification) for every message read back.
pub fn reconcile(
    method: &str,
    expected: &Expected,
    retrieved: &[(u32, Parsed)],
    accounts_checked: u64,
    fetch_errors: u64,
) -> VerifyReport {
    let mut r = VerifyReport {
        method: method.into(),
        accounts_checked,
        expected: expected.map.len() as u64,
        fetch_errors,
        ..Default::default()
    };
    // (n, account) -> (copies, any mismatch)
    let mut seen: HashMap<(u64, u32), (u32, bool)> = HashMap::new();
    let example = |r: &mut VerifyReport, s: String| {
        if r.examples.len() < 10 {
            r.examples.push(s);
        }
    };
    for &(acct, p) in retrieved {
        match p {
            Parsed::Foreign => r.foreign += 1,
            Parsed::Ours { n, hash, len } => match expected.map.get(&(n, acct)) {
                None => {
                    r.unexpected += 1;
                    example(&mut r, format!("unexpected: message {n} in account {acct}"));
                }
                Some(&(h, l)) => {
                    let e = seen.entry((n, acct)).or_insert((0, false));
                    e.0 += 1;
                    if h != hash || l != len {
                        e.1 = true;
                    }
                }
            },
        }
    }
    let mut keys: Vec<&(u64, u32)> = expected.map.keys().collect();
    keys.sort_unstable();
    for k in keys {
        match seen.get(k) {
            None => {
                r.missing += 1;
                example(
                    &mut r,
                    format!("missing: message {} for account {}", k.0, k.1),
                );
            }
            Some(&(copies, bad)) => {
                if copies > 1 {
                    r.duplicated += 1;
                    example(
                        &mut r,
                        format!(
                            "duplicated: message {} for account {} ({copies} copies)",
                            k.0, k.1
                        ),
                    );
                }
                if bad {
                    r.corrupted += 1;
                    example(
                        &mut r,
                        format!("corrupted: message {} for account {}", k.0, k.1),
                    );
                }
                if copies == 1 && !bad {
                    r.found_ok += 1;
                }
            }
        }
    }
    r.ok = r.missing == 0 && r.duplicated == 0 && r.corrupted == 0 && r.fetch_errors == 0;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msggen::{build_message, Filler, MsgSpec};

    fn msg(run: &str, n: u64) -> Vec<u8> {
        let filler = Filler::new(8192);
        let mut out = Vec::new();
        let to = ["a@x"];
        build_message(
            &MsgSpec {
                run_id: run,
                n,
                from: "f@x",
                to: &to,
                date: "d",
                size: 3000,
            },
            &filler,
            &mut out,
        );
        out
    }

    fn with_trace(m: &[u8]) -> Vec<u8> {
        let mut v =
            b"Return-Path: <f@x>\r\nReceived: from loadgen by mx; Thu, 1 Jan 1970\r\n\tid 123\r\n"
                .to_vec();
        v.extend_from_slice(m);
        v
    }

    #[test]
    fn strip_and_parse() {
        let m = msg("run1", 7);
        let traced = with_trace(&m);
        assert_eq!(strip_trace(&traced).unwrap(), &m[..]);
        assert_eq!(strip_trace(&m).unwrap(), &m[..]);
        assert_eq!(
            parse_retrieved("run1", &traced),
            Parsed::Ours {
                n: 7,
                hash: content_hash(&m),
                len: m.len() as u64
            }
        );
        assert_eq!(parse_retrieved("run2", &traced), Parsed::Foreign);
        assert_eq!(
            parse_retrieved("run1", b"Subject: hi\r\n\r\nbody\r\n"),
            Parsed::Foreign
        );
        // a header that merely contains the name in its value does not count
        assert_eq!(strip_trace(b"Subject: X-Loadgen-Id: run1-1\r\n"), None);
    }

    #[test]
    fn reconcile_counts() {
        let mut exp = Expected::default();
        let mut retrieved = Vec::new();
        for n in 0..6u64 {
            let m = msg("r", n);
            exp.insert(n, 1, content_hash(&m), m.len() as u64);
        }
        // 0, 1: delivered fine (with trace headers)
        for n in 0..2 {
            retrieved.push((1, parse_retrieved("r", &with_trace(&msg("r", n)))));
        }
        // 2: duplicated
        retrieved.push((1, parse_retrieved("r", &msg("r", 2))));
        retrieved.push((1, parse_retrieved("r", &msg("r", 2))));
        // 3: corrupted (one byte changed at the end)
        let mut bad = msg("r", 3);
        let l = bad.len();
        bad[l - 5] ^= 1;
        retrieved.push((1, parse_retrieved("r", &bad)));
        // 4: missing; 5: delivered to the wrong account
        retrieved.push((2, parse_retrieved("r", &msg("r", 5))));
        // foreign mail
        retrieved.push((1, parse_retrieved("r", &msg("other", 0))));
        let r = reconcile("pop3", &exp, &retrieved, 2, 0);
        assert_eq!(r.expected, 6);
        assert_eq!(r.found_ok, 2);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.corrupted, 1);
        assert_eq!(r.missing, 2);
        assert_eq!(r.unexpected, 1);
        assert_eq!(r.foreign, 1);
        assert!(!r.ok);
        assert!(!r.examples.is_empty());

        let exp2 = Expected::default();
        let r = reconcile("imap", &exp2, &[], 0, 0);
        assert!(r.ok);
        let r = reconcile("imap", &exp2, &[], 0, 1);
        assert!(!r.ok, "fetch errors fail verification");
    }
}
