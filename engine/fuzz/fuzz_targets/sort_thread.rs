//! Hostile mailboxes through SORT and THREAD (RFC 5256): the input is cut
//! into messages at NUL octets, each one's header section taken as a
//! message header (Subject, From, To, Cc, Date, Message-ID, References,
//! In-Reply-To are what the algorithms read).
//!
//! Invariants checked, beyond "no panic" and "no stack overflow":
//! - every sort returns a permutation of the messages, and messages equal
//!   in every key come back in sequence order;
//! - both threading algorithms place every message exactly once, dummies
//!   are never leaves, and the written form is balanced parentheses holding
//!   each sequence number once;
//! - base subject extraction is idempotent on its own output's words and
//!   never longer than the decoded subject.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmail::session::order::{self, Algorithm, MsgInfo, Node, SortCriterion, SortKey};

const KEYS: [SortKey; 7] = [
    SortKey::Arrival,
    SortKey::Cc,
    SortKey::Date,
    SortKey::From,
    SortKey::Size,
    SortKey::Subject,
    SortKey::To,
];

fn placed(roots: &[Node], n: usize) {
    let mut seen = vec![false; n];
    let mut stack: Vec<&Node> = roots.iter().collect();
    while let Some(node) = stack.pop() {
        match node.msg {
            Some(i) => {
                assert!(!seen[i], "message {i} placed twice");
                seen[i] = true;
            }
            None => assert!(!node.children.is_empty(), "a dummy leaf"),
        }
        stack.extend(node.children.iter());
    }
    assert!(
        seen.iter().all(|&s| s),
        "a message is missing from the threads"
    );
}

fn written(roots: &[Node], n: usize) {
    let mut out = Vec::new();
    order::write_threads(&mut out, roots, |i| i as u32 + 1);
    let mut depth = 0i64;
    let mut nums = Vec::new();
    let mut cur: Option<u32> = None;
    for &b in &out {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                assert!(depth >= 0, "unbalanced: {out:?}");
            }
            b'0'..=b'9' => {
                cur = Some(cur.unwrap_or(0) * 10 + u32::from(b - b'0'));
                continue;
            }
            b' ' => {}
            _ => panic!("unexpected octet {b} in {out:?}"),
        }
        if let Some(v) = cur.take() {
            nums.push(v);
        }
    }
    assert_eq!(depth, 0);
    nums.sort_unstable();
    assert_eq!(nums, (1..=n as u32).collect::<Vec<_>>(), "{out:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let msgs: Vec<MsgInfo<'_>> = input
        .split(|&b| b == 0)
        .take(200)
        .enumerate()
        .map(|(i, m)| MsgInfo {
            seq: i as u32 + 1,
            internal_date: i64::from(knob) * 1000 - i as i64 * 7,
            size: m.len() as u64 % 3,
            header: ringmail::mime::split(m).0,
        })
        .collect();
    let n = msgs.len();
    for k in 0..2 {
        let criteria: Vec<SortCriterion> = (0..1 + usize::from(knob % 3))
            .map(|j| SortCriterion {
                reverse: (knob >> j) & 1 == 1,
                key: KEYS[(usize::from(knob) + j * 3 + k) % KEYS.len()],
            })
            .collect();
        let sorted = order::sort(&msgs, &criteria);
        let mut check = sorted.clone();
        check.sort_unstable();
        assert_eq!(check, (0..n).collect::<Vec<_>>(), "not a permutation");
    }
    // All keys equal (SIZE over messages of equal size): sequence order.
    let same: Vec<MsgInfo<'_>> = msgs.iter().map(|m| MsgInfo { size: 1, ..*m }).collect();
    let by_size = order::sort(
        &same,
        &[SortCriterion {
            reverse: knob & 1 == 1,
            key: SortKey::Size,
        }],
    );
    assert_eq!(by_size, (0..n).collect::<Vec<_>>());
    for alg in [Algorithm::OrderedSubject, Algorithm::References] {
        let roots = order::thread(&msgs, alg);
        placed(&roots, n);
        written(&roots, n);
    }
    for m in &msgs {
        if let Some(subject) = ringmail::mime::header::field_value(m.header, b"Subject") {
            let (base, _) = order::base_subject(subject);
            let decoded = ringmail::mime::decode_header(subject);
            assert!(base.len() <= decoded.len() + 4, "{base:?} from {decoded:?}");
        }
    }
});
