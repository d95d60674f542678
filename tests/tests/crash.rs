//! Durability under crashes: concurrent SMTP senders (DATA and BDAT, to
//! accounts on both shards) while the server is killed with SIGKILL, twice,
//! then stopped with SIGTERM while they are still sending. After every
//! restart, over POP3: every message that got a 250 to its end of data is in
//! each of its recipients' mailboxes exactly once and byte-identical; any
//! other message found is one we sent, intact, to one of its recipients, at
//! most once; nothing present before a restart disappears; at the end the
//! index rebuilt offline (`ringmail inspect`) counts the same messages.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringmail_tests::*;

const SENDERS: usize = 4;
const SEND_FOR: Duration = Duration::from_millis(2200);

#[derive(Clone)]
struct Sent {
    rcpts: Vec<String>,
    message: Vec<u8>,
    acked: bool,
}

type Log = Arc<Mutex<BTreeMap<String, Sent>>>;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A message with a unique Message-ID and deterministic, varied content:
/// leading dots, 8-bit bytes, sizes from a few hundred bytes to ~60 KiB.
fn build_message(id: &str, seed: u64, rcpts: &[String]) -> Vec<u8> {
    let mut m = format!(
        "From: <crash-sender@example.test>\r\nTo: {}\r\nSubject: crash test {id}\r\nMessage-ID: <{id}@e2e.test>\r\n\r\n",
        rcpts.join(", ")
    )
    .into_bytes();
    let lines = (mix(seed) % 600) as usize + 1;
    for i in 0..lines {
        let r = mix(seed ^ (i as u64) << 20);
        match r % 7 {
            0 => m.extend_from_slice(b"."),
            1 => m.extend_from_slice(b".."),
            2 => m.extend_from_slice("caf\u{e9} \u{2603} ".as_bytes()),
            3 => m.extend_from_slice(&[0x80, 0xfe, 0xff]),
            _ => {}
        }
        let len = (r >> 8) % 120;
        m.resize(m.len() + len as usize, b'a' + (r % 26) as u8);
        m.extend_from_slice(format!(" {id} line {i}\r\n").as_bytes());
    }
    m
}

/// One sender thread: sessions of up to 5 transactions, until `stop` or the
/// server goes away. Every attempt is logged before it is sent; `acked` is
/// set only on a 250 to the end of data.
fn sender(
    smtp: std::net::SocketAddr,
    accounts: Arc<Vec<String>>,
    cycle: usize,
    t: usize,
    stop: Arc<AtomicBool>,
    log: Log,
) {
    let mut n = 0u64;
    'sessions: while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = Client::try_connect(smtp) else {
            break;
        };
        match c.try_reply() {
            Ok(r) if r.code == 220 => {}
            _ => break,
        }
        if c.try_send(b"EHLO crash.e2e.test\r\n").is_err()
            || c.try_reply().map(|r| r.code).ok() != Some(250)
        {
            break;
        }
        for _ in 0..5 {
            if stop.load(Ordering::Relaxed) {
                break 'sessions;
            }
            n += 1;
            let id = format!("crash-c{cycle}-t{t}-n{n}");
            let seed = mix((cycle as u64) << 40 ^ (t as u64) << 32 ^ n);
            let k = 1 + (seed % 3) as usize;
            let mut rcpts: Vec<String> = Vec::new();
            for j in 0..k {
                let a = &accounts[(mix(seed + j as u64) % accounts.len() as u64) as usize];
                if !rcpts.contains(a) {
                    rcpts.push(a.clone());
                }
            }
            let message = build_message(&id, seed, &rcpts);
            log.lock().unwrap().insert(
                id.clone(),
                Sent {
                    rcpts: rcpts.clone(),
                    message: message.clone(),
                    acked: false,
                },
            );
            let how = if t % 2 == 1 {
                Transfer::Bdat(1 + (seed % 9000) as usize)
            } else {
                Transfer::Data
            };
            let refs: Vec<&str> = rcpts.iter().map(|s| s.as_str()).collect();
            match smtp_transaction(&mut c, "crash-sender@example.test", &refs, &message, how) {
                Ok(r) if r.code == 250 => log.lock().unwrap().get_mut(&id).unwrap().acked = true,
                // A refusal (e.g. 421 while stopping) or a dead connection: unacknowledged.
                _ => continue 'sessions,
            }
        }
        let _ = c.try_send(b"QUIT\r\n");
        let _ = c.try_reply();
    }
}

/// Run senders for `SEND_FOR`, then stop the server with `stop_server` while they send.
fn send_then(
    server: &mut Server,
    accounts: &Arc<Vec<String>>,
    cycle: usize,
    log: &Log,
    stop_server: impl FnOnce(&mut Server),
) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..SENDERS)
        .map(|t| {
            let (smtp, accounts, stop, log) =
                (server.smtp, accounts.clone(), stop.clone(), log.clone());
            std::thread::spawn(move || sender(smtp, accounts, cycle, t, stop, log))
        })
        .collect();
    std::thread::sleep(SEND_FOR);
    let before = log.lock().unwrap().values().filter(|s| s.acked).count();
    stop_server(server);
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().expect("sender thread panicked");
    }
    before
}

/// Check every mailbox against the log; returns the (account, id) pairs present.
fn verify(
    server: &Server,
    accounts: &[String],
    log: &Log,
    what: &str,
) -> BTreeSet<(String, String)> {
    let log = log.lock().unwrap();
    let mut present = BTreeSet::new();
    for a in accounts {
        for (uidl, stored) in fetch_all(server.pop3, a, PASSWORD) {
            let (_, body) = strip_trace(&stored);
            let text = String::from_utf8_lossy(body);
            let id = text
                .lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| {
                    l.strip_prefix("Message-ID: <")
                        .and_then(|r| r.strip_suffix("@e2e.test>"))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{what}: {a} message {uidl} has no Message-ID we sent: {:?}",
                        &text[..text.len().min(300)]
                    )
                })
                .to_string();
            let sent = log
                .get(&id)
                .unwrap_or_else(|| panic!("{what}: {a} has unknown message {id}"));
            assert!(
                sent.rcpts.contains(a),
                "{what}: {id} delivered to {a}, not a recipient ({:?})",
                sent.rcpts
            );
            assert_bytes_eq(
                body,
                &sent.message,
                &format!("{what}: {id} in {a} (UIDL {uidl}, acked {})", sent.acked),
            );
            assert!(
                present.insert((a.clone(), id.clone())),
                "{what}: {id} duplicated in {a}"
            );
        }
    }
    let mut acked = 0;
    for (id, sent) in log.iter().filter(|(_, s)| s.acked) {
        acked += 1;
        for a in &sent.rcpts {
            assert!(
                present.contains(&(a.clone(), id.clone())),
                "{what}: acknowledged {id} missing from {a}"
            );
        }
    }
    let unacked_present = log
        .iter()
        .filter(|(_, s)| !s.acked)
        .filter(|(id, s)| {
            s.rcpts
                .iter()
                .any(|a| present.contains(&(a.clone(), (*id).clone())))
        })
        .count();
    eprintln!(
        "{what}: {} sent, {acked} acknowledged, {} copies present, {unacked_present} unacknowledged found (allowed)",
        log.len(),
        present.len()
    );
    present
}

#[test]
fn kill9_during_concurrent_delivery_loses_nothing_acknowledged() {
    let t0 = Instant::now();
    let accounts = accounts_on_all_shards("crash", 8, 2, 3);
    let mut server = Server::options().accounts(&accounts).start();
    let accounts = Arc::new(accounts);
    let log: Log = Arc::default();
    let mut present = BTreeSet::new();

    for cycle in 1..=2 {
        let acked_before_kill = send_then(&mut server, &accounts, cycle, &log, |s| s.kill9());
        assert!(
            acked_before_kill >= 10,
            "cycle {cycle}: only {acked_before_kill} messages acknowledged in {SEND_FOR:?}"
        );
        server.restart();
        let now = verify(&server, &accounts, &log, &format!("after kill -9 #{cycle}"));
        assert!(
            now.is_superset(&present),
            "messages vanished after kill -9 #{cycle}"
        );
        present = now;
    }

    // SIGTERM while senders are still going: a graceful stop (exit 0) keeps
    // everything acknowledged, then a restart shows it all again.
    send_then(&mut server, &accounts, 3, &log, |s| {
        s.terminate();
    });
    server.restart();
    let now = verify(&server, &accounts, &log, "after SIGTERM during delivery");
    assert!(now.is_superset(&present), "messages vanished after SIGTERM");
    present = now;

    // An idle clean restart changes nothing at all.
    server.terminate();
    server.restart();
    let now = verify(&server, &accounts, &log, "after an idle SIGTERM restart");
    assert_eq!(now, present, "an idle restart changed the mailboxes");
    server.terminate();
    // The index rebuilt offline from checkpoints and segments agrees with
    // what the live index served over POP3: same number of messages.
    let data = server.data.to_str().expect("utf-8 path").to_string();
    let out = ringmail(&["inspect", "--data", &data, "--count-only"], "");
    assert_ok(&out, "ringmail inspect");
    let offline: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(
        offline,
        present.len(),
        "offline index count vs messages served over POP3"
    );
    eprintln!("crash test took {:?}", t0.elapsed());
}
