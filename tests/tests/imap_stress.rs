//! Concurrent sessions on one mailbox (tests/py/imap_stress.py): six
//! clients, two with QRESYNC and two with IMAP4rev2, run random APPEND, STORE, EXPUNGE,
//! COPY, MOVE, FETCH, SEARCH and NOOP commands against the same INBOX, each
//! checking every untagged response against its own model of the mailbox
//! (EXISTS never shrinks, EXPUNGE/VANISHED/FETCH name messages it has, a
//! sequence number keeps its UID, UIDs ascend), and all of them agree on
//! UIDs and flags at the end. `RINGMAIL_STRESS=ROUNDS:OPS` runs longer
//! (more seeds and operations per client) when hunting a bug.
use ringmail_tests::*;

fn stress(cores: usize, seed: u32) {
    let (rounds, ops) = std::env::var("RINGMAIL_STRESS")
        .ok()
        .and_then(|v| {
            let (r, o) = v.split_once(':')?;
            Some((r.parse().ok()?, o.parse().ok()?))
        })
        .unwrap_or((1u32, 200u32));
    for round in 0..rounds {
        stress_round(cores, seed * 1000 + round, ops);
    }
}

fn stress_round(cores: usize, seed: u32, ops: u32) {
    let user = "stress@example.test";
    let s = Server::options().cores(cores).accounts(&[user]).start();
    let out = run_python(
        "imap_stress.py",
        &[
            "127.0.0.1".into(),
            s.imap.port().to_string(),
            user.into(),
            PASSWORD.into(),
            "6".into(),
            ops.to_string(),
            seed.to_string(),
        ],
    );
    assert!(out.contains("stress ok"), "{out}");
    eprintln!("{}", out.trim());
}

#[test]
fn six_sessions_on_one_core() {
    stress(1, 7);
}

#[test]
fn six_sessions_on_two_cores() {
    stress(2, 11);
}
