//! Segment compaction end to end: after most mail is deleted over POP3 and
//! a restart seals the old segments, a compaction pass (every second here)
//! moves the live messages and removes the old files, while new mail keeps
//! arriving. Every remaining message stays byte-identical under the same
//! UIDL, also after kill -9 and after restarting with another core count.
use std::collections::BTreeMap;

use std::time::Duration;

use ringmail_tests::*;

const CONFIG: &str =
    "demo_accounts = []\n[storage]\ncompact_interval_secs = 1\ncompact_live_percent = 50\n";

fn message(account: &str, n: usize) -> Vec<u8> {
    let mut m = format!("From: <compact@example.test>\r\nTo: <{account}>\r\nSubject: {n}\r\nMessage-ID: <compact-{n}-{account}>\r\n\r\n").into_bytes();
    for i in 0..(40 + n * 7 % 90) {
        m.extend_from_slice(
            format!("{account} message {n} line {i} {}\r\n", ".".repeat(i % 5)).as_bytes(),
        );
        if i % 11 == 0 {
            m.extend_from_slice(b".leading dot\r\n");
        }
    }
    m
}

/// account -> (UIDL, message without trace headers), in maildrop order.
type Mail = BTreeMap<String, Vec<(String, Vec<u8>)>>;

/// The Subject of each message.
fn subjects(msgs: &[(String, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .map(|(_, m)| {
            let text = String::from_utf8_lossy(m);
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

fn snapshot(server: &Server, accounts: &[String]) -> Mail {
    accounts
        .iter()
        .map(|a| {
            let msgs = fetch_all(server.pop3, a, PASSWORD)
                .into_iter()
                .map(|(u, m)| (u, strip_trace(&m).1.to_vec()))
                .collect();
            (a.clone(), msgs)
        })
        .collect()
}

fn segment_files(server: &Server) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(server.data.join("segments"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn compaction_keeps_live_mail() {
    let accounts = accounts_on_all_shards("compact", 6, 2, 2);
    let mut server = Server::options().config(CONFIG).accounts(&accounts).start();
    let (mut c, _) = smtp_connect(server.smtp);
    for n in 0..12 {
        for a in &accounts {
            smtp_transaction(
                &mut c,
                "compact@example.test",
                &[a],
                &message(a, n),
                Transfer::Data,
            )
            .unwrap()
            .expect(250, None);
        }
    }
    c.cmd("QUIT").expect(221, None);

    // Delete 10 of every 12 messages.
    for a in &accounts {
        let mut p = Pop3::login(server.pop3, a, PASSWORD);
        for n in 1..=12 {
            if n % 6 != 0 {
                p.ok(&format!("DELE {n}"));
            }
        }
        p.quit();
    }
    let mut expect = snapshot(&server, &accounts);
    for a in &accounts {
        assert_eq!(subjects(&expect[a]), ["5", "11"], "{a} after DELE");
        assert!(
            expect[a][0].1 == message(a, 5) && expect[a][1].1 == message(a, 11),
            "{a}: contents after DELE"
        );
    }

    // A restart seals the segments written so far.
    server.terminate();
    server.restart();
    let old = segment_files(&server);
    assert!(
        !old.is_empty(),
        "no segment files in {}",
        server.data.display()
    );

    // New mail while compaction runs.
    let (mut c, _) = smtp_connect(server.smtp);
    for n in 100..104 {
        for a in &accounts {
            smtp_transaction(
                &mut c,
                "compact@example.test",
                &[a],
                &message(a, n),
                Transfer::Bdat(777),
            )
            .unwrap()
            .expect(250, None);
        }
    }
    c.cmd("QUIT").expect(221, None);

    let compacted = wait_for(Duration::from_secs(10), || {
        let now = segment_files(&server);
        old.iter().any(|f| !now.contains(f)).then_some(now)
    });
    let now = compacted.unwrap_or_else(|| {
        panic!(
            "no old segment removed within 10 s (before {old:?}, now {:?}):\n{}",
            segment_files(&server),
            server.stderr_tail(3000)
        )
    });
    eprintln!("segments before {old:?}, after {now:?}");

    let got = snapshot(&server, &accounts);
    for a in &accounts {
        assert_eq!(
            subjects(&got[a]),
            ["5", "11", "100", "101", "102", "103"],
            "{a} after compaction"
        );
        // The old messages keep their UIDLs and bytes.
        assert_eq!(
            got[a][..2].iter().map(|(u, _)| u).collect::<Vec<_>>(),
            expect[a].iter().map(|(u, _)| u).collect::<Vec<_>>()
        );
        for ((uidl, m), (_, want)) in got[a].iter().zip(&expect[a]) {
            assert_bytes_eq(m, want, &format!("{a} {uidl} after compaction"));
        }
        for (i, n) in (100..104).enumerate() {
            assert_bytes_eq(
                &got[a][2 + i].1,
                &message(a, n),
                &format!("{a}: new message {n}"),
            );
        }
    }
    expect = got;

    server.kill9();
    server.restart();
    assert!(
        snapshot(&server, &accounts) == expect,
        "mail changed after compaction and kill -9"
    );
    server.terminate();
    server.restart_with_cores(1);
    assert!(
        snapshot(&server, &accounts) == expect,
        "mail changed after compaction, on one core"
    );
    server.terminate();
}

/// kill -9 at moments around the first compaction pass (1 s after start):
/// whatever step it interrupts, the live mail is intact afterwards.
#[test]
fn kill9_around_compaction() {
    let accounts = accounts_on_all_shards("kc", 4, 2, 1);
    let mut server = Server::options().config(CONFIG).accounts(&accounts).start();
    let mut next = 0;
    let mut expect: Option<Mail> = None;
    for (round, kill_after_ms) in [950u64, 1010, 1060, 1150].into_iter().enumerate() {
        // Some new mail, most of it (and of the older mail) deleted again.
        let (mut c, _) = smtp_connect(server.smtp);
        for _ in 0..6 {
            for a in &accounts {
                smtp_transaction(
                    &mut c,
                    "compact@example.test",
                    &[a],
                    &message(a, next),
                    Transfer::Data,
                )
                .unwrap()
                .expect(250, None);
            }
            next += 1;
        }
        c.cmd("QUIT").expect(221, None);
        for a in &accounts {
            let mut p = Pop3::login(server.pop3, a, PASSWORD);
            let (n, _) = p.stat();
            for i in 1..n {
                p.ok(&format!("DELE {i}"));
            }
            p.quit();
        }
        let now = snapshot(&server, &accounts);
        for a in &accounts {
            assert_eq!(now[a].len(), 1, "round {round}: {a}");
        }
        // Seal, start again, and kill near the first compaction pass.
        server.terminate();
        server.restart();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        server.kill9();
        server.restart();
        let after = snapshot(&server, &accounts);
        assert!(
            after == now,
            "round {round}: mail changed by kill -9 {kill_after_ms} ms after start: {:?} vs {:?}",
            after.values().map(|m| subjects(m)).collect::<Vec<_>>(),
            now.values().map(|m| subjects(m)).collect::<Vec<_>>()
        );
        expect = Some(after);
    }
    server.terminate();
    server.restart_with_cores(1);
    assert!(
        snapshot(&server, &accounts) == expect.unwrap(),
        "on one core"
    );
    server.terminate();
}
