//! A session's view of its selected mailbox (`session::imap::View`) under
//! arbitrary interleavings of deliveries, flag changes and expunges by
//! other sessions, changes the session reports itself, and syncs that may
//! or may not send expunges. The client is modelled by what it was told.
//!
//! Invariants checked, beyond "no panic":
//! - the view's UIDs are strictly ascending, and after a sync that may
//!   expunge they are exactly the mailbox's;
//! - every EXPUNGE names a sequence number the client has at that moment,
//!   and EXISTS is never below what the client has (it never shrinks
//!   without EXPUNGE); the client's count then equals the view's;
//! - every flag change made by someone else to a message the client still
//!   has is reported by the next sync, and a change the session reported
//!   itself is not reported again;
//! - held-back expunges are listed in `held` and reported later.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use ringmail::session::imap::{report, Modes, View};
use ringmail::storage::index::{Mailbox, MessageEntry};
use ringmail::storage::record::Loc;

fn entry(uid: u32, modseq: u64) -> MessageEntry {
    MessageEntry {
        uid,
        flags: 0,
        keywords: 0,
        internal_date: 0,
        modseq,
        loc: Loc {
            seg: 1,
            offset: uid,
            len: 10,
        },
        email_id: u64::from(uid),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut mb = Mailbox::new(0, "INBOX", 1, 0);
    let mut view = View::default();
    let mut floor = 0u32;
    // What the client believes: its number of messages.
    let mut client = 0u32;
    // UIDs someone else changed since the last sync (must be reported).
    let mut owed: HashSet<u32> = HashSet::new();
    // UIDs whose change the session reported itself (must not be).
    let mut told: HashSet<u32> = HashSet::new();
    for pair in data.chunks(2) {
        let (op, arg) = (pair[0] % 6, *pair.get(1).unwrap_or(&0) as usize);
        match op {
            // A delivery.
            0 => {
                if mb.messages.len() < 300 {
                    let uid = mb.uidnext;
                    mb.uidnext += 1;
                    mb.highest_modseq += 1;
                    mb.messages.push(entry(uid, mb.highest_modseq));
                }
            }
            // Another session changes flags.
            1 | 2 if !mb.messages.is_empty() => {
                let i = arg % mb.messages.len();
                mb.highest_modseq += 1;
                let e = &mut mb.messages[i];
                e.flags ^= 1;
                e.modseq = mb.highest_modseq;
                told.remove(&e.uid);
                owed.insert(e.uid);
            }
            // Another session expunges.
            3 if !mb.messages.is_empty() => {
                let i = arg % mb.messages.len();
                let uid = mb.messages.remove(i).uid;
                mb.highest_modseq += 1;
                owed.remove(&uid);
                told.remove(&uid);
            }
            // This session changes a message it has and reports it itself.
            4 if !view.uids.is_empty() => {
                let uid = view.uids[arg % view.uids.len()];
                if let Ok(p) = mb.messages.binary_search_by_key(&uid, |e| e.uid) {
                    mb.highest_modseq += 1;
                    let e = &mut mb.messages[p];
                    e.flags ^= 2;
                    e.modseq = mb.highest_modseq;
                    view.told_now(e);
                    owed.remove(&uid);
                    told.insert(uid);
                }
            }
            // A sync, with or without expunges allowed.
            _ => {
                let allow = arg % 2 == 0;
                let known: HashSet<u32> = view.uids.iter().copied().collect();
                // The same sync through the response writer, on a copy.
                let modes = Modes {
                    condstore: arg & 2 != 0,
                    qresync: arg & 4 != 0,
                    rev2: arg & 8 != 0,
                };
                let (mut copy, mut copy_floor, mut out) = (view.clone(), floor, Vec::new());
                report(
                    &mut out,
                    &mb,
                    &mut copy,
                    false,
                    allow,
                    &mut copy_floor,
                    modes,
                );
                let ch = view.sync(&mb, allow, &mut floor);
                assert_eq!(copy.uids, view.uids, "the writer's sync is the same sync");
                let text = String::from_utf8(out).expect("responses are UTF-8");
                assert!(text.is_empty() || text.ends_with("\r\n"));
                let expunges = text.lines().filter(|l| l.ends_with(" EXPUNGE")).count();
                let vanished = text
                    .lines()
                    .filter(|l| l.starts_with("* VANISHED "))
                    .count();
                if modes.qresync {
                    assert_eq!(expunges, 0, "EXPUNGE after QRESYNC");
                    assert_eq!(vanished, usize::from(!ch.expunged.is_empty()));
                } else {
                    assert_eq!((expunges, vanished), (ch.expunged.len(), 0));
                }
                assert_eq!(text.contains(" EXISTS\r\n"), ch.exists.is_some());
                if modes.rev2 {
                    assert!(!text.contains("RECENT") && !text.contains("\\Recent"));
                }
                assert!(
                    view.uids.windows(2).all(|w| w[0] < w[1]),
                    "UIDs not ascending"
                );
                if !allow {
                    assert!(ch.expunged.is_empty(), "EXPUNGE sent while not allowed");
                }
                for &seq in &ch.expunged {
                    assert!(seq >= 1 && seq <= client, "EXPUNGE {seq} of {client}");
                    client -= 1;
                }
                assert_eq!(ch.expunged.len(), ch.expunged_uids.len());
                if let Some(n) = ch.exists {
                    assert!(n >= client, "EXISTS {n} below the client's {client}");
                    client = n;
                }
                assert_eq!(client, view.len(), "the client's count is the view's");
                let present: HashSet<u32> = mb.messages.iter().map(|e| e.uid).collect();
                if allow {
                    let all: Vec<u32> = mb.messages.iter().map(|e| e.uid).collect();
                    assert_eq!(view.uids, all, "the view after a full sync");
                    assert!(ch.held.is_empty());
                }
                for &u in &ch.held {
                    assert!(!present.contains(&u), "held UID {u} is present");
                }
                let reported: HashSet<u32> = ch
                    .flags
                    .iter()
                    .map(|&s| {
                        assert!(s >= 1 && s <= view.len(), "FETCH {s} of {}", view.len());
                        view.uids[s as usize - 1]
                    })
                    .collect();
                for u in &owed {
                    // New to the client: it learns of it through EXISTS.
                    if present.contains(u) && known.contains(u) {
                        assert!(reported.contains(u), "change of UID {u} not reported");
                    }
                }
                for u in &told {
                    assert!(
                        !reported.contains(u),
                        "own change of UID {u} reported again"
                    );
                }
                owed.clear();
                told.clear();
            }
        }
    }
});
