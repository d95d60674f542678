//! Login throttling across connections, protocols and cores: a password
//! guessing loop is slowed, then its address is banned (refused before any
//! password check), while the account's owner logs in from an address that
//! has not failed; `ringmail ban list|remove` on the running server.
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ringmail::util::base64_encode as b64;
use ringmail_tests::*;

/// Short delays and a small ban threshold, so the test runs in seconds.
const CONFIG: &str = "[auth_throttle]\nfailure_delay_ms = 100\nfailure_delay_max_ms = 400\nban_after_failures = 10\nban_secs = 300\naccount_lock_after_failures = 30\n";
const ALICE: (&str, &str) = ("alice@example.test", "alice-secret");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    LoggedIn,
    /// The password was checked and was wrong.
    Failed,
    /// Refused before any password check (the address is banned).
    Banned,
}

#[derive(Debug, Clone, Copy)]
enum Proto {
    Smtp,
    Imap,
    Pop3,
}

/// One login attempt on a new connection from `from`.
fn attempt(server: &Server, proto: Proto, from: Ipv4Addr, user: &str, password: &str) -> Outcome {
    match proto {
        Proto::Smtp => {
            let mut c = Client::from_stream(connect_from(from, server.smtp));
            c.set_read_timeout(Duration::from_secs(30));
            c.reply().expect(220, None);
            c.cmd("EHLO guesser.test").expect(250, None);
            let r = c.cmd(&format!(
                "AUTH PLAIN {}",
                b64(format!("\0{user}\0{password}").as_bytes())
            ));
            match r.code {
                235 => Outcome::LoggedIn,
                535 => Outcome::Failed,
                421 => {
                    assert_eq!(r.enhanced(), Some("4.7.0"), "{r:?}");
                    assert!(
                        c.closed_within(Duration::from_secs(5)),
                        "the connection stays open after 421"
                    );
                    Outcome::Banned
                }
                _ => panic!("AUTH answered {r:?}"),
            }
        }
        Proto::Imap => {
            let mut c = Client::from_stream(connect_from(from, server.imap));
            c.set_read_timeout(Duration::from_secs(30));
            assert!(c.line().starts_with("* OK"));
            c.send(format!("a LOGIN \"{user}\" \"{password}\"\r\n").as_bytes());
            loop {
                let l = c.line();
                if l.starts_with("a OK") {
                    return Outcome::LoggedIn;
                }
                if l.starts_with("a NO [AUTHENTICATIONFAILED]") {
                    return Outcome::Failed;
                }
                if l.starts_with("a NO [UNAVAILABLE]") {
                    assert!(c.line().starts_with("* BYE"));
                    return Outcome::Banned;
                }
                assert!(l.starts_with('*'), "LOGIN answered {l:?}");
            }
        }
        Proto::Pop3 => {
            let mut c = Client::from_stream(connect_from(from, server.pop3));
            c.set_read_timeout(Duration::from_secs(30));
            assert!(c.line().starts_with("+OK"));
            c.send(format!("USER {user}\r\n").as_bytes());
            assert!(c.line().starts_with("+OK"));
            c.send(format!("PASS {password}\r\n").as_bytes());
            let l = c.line();
            if l.starts_with("+OK") {
                Outcome::LoggedIn
            } else if l.starts_with("-ERR [AUTH]") {
                Outcome::Failed
            } else if l.starts_with("-ERR [SYS/TEMP]") {
                assert!(
                    c.closed_within(Duration::from_secs(15)),
                    "the connection stays open after the ban"
                );
                Outcome::Banned
            } else {
                panic!("PASS answered {l:?}");
            }
        }
    }
}

/// 1,000 guesses at alice's password from one address, by 100 parallel
/// clients over SMTP, IMAP and POP3 (one connection per guess): the first
/// failures are slowed, then the address is banned and every further guess
/// is refused before its password is checked. Meanwhile alice logs in from
/// another address over all three protocols.
#[test]
fn password_guessing_is_slowed_then_banned_and_the_owner_still_logs_in() {
    let server = Server::options().config(CONFIG).start();
    let attacker = Ipv4Addr::new(127, 0, 0, 66);
    let owner = Ipv4Addr::new(127, 0, 0, 7);
    let started = Instant::now();
    let results: Vec<(Outcome, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..100)
            .map(|w| {
                let server = &server;
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let proto = [Proto::Smtp, Proto::Imap, Proto::Pop3][(w + i) % 3];
                            let t = Instant::now();
                            let o = attempt(
                                server,
                                proto,
                                attacker,
                                ALICE.0,
                                &format!("guess-{w}-{i}"),
                            );
                            (o, t.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // The owner, from an address that never failed, during the attack.
        for proto in [Proto::Smtp, Proto::Imap, Proto::Pop3] {
            assert_eq!(
                attempt(&server, proto, owner, ALICE.0, ALICE.1),
                Outcome::LoggedIn,
                "{proto:?} from the owner's address"
            );
        }
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed();
    let failed: Vec<Duration> = results
        .iter()
        .filter(|(o, _)| *o == Outcome::Failed)
        .map(|(_, t)| *t)
        .collect();
    let banned = results
        .iter()
        .filter(|(o, _)| *o == Outcome::Banned)
        .count();
    eprintln!(
        "1,000 guesses in {elapsed:?}: {} checked and failed, {banned} refused as banned",
        failed.len()
    );
    assert!(results.iter().all(|(o, _)| *o != Outcome::LoggedIn));
    // Ten failures ban the address; guesses already past the ban check when
    // the tenth failed (at most one per parallel client) still count.
    assert!(
        failed.len() >= 10 && failed.len() <= 10 + 100,
        "{} guesses were checked",
        failed.len()
    );
    assert_eq!(failed.len() + banned, 1000);
    // Every checked guess was answered after the failure delay.
    assert!(
        failed.iter().all(|t| *t >= Duration::from_millis(100)),
        "a failure was answered without delay: {failed:?}"
    );

    // The ban is logged, listed, and lifted by the operator.
    assert!(
        server
            .stderr_text()
            .contains("address banned after failed logins"),
        "{}",
        server.stderr_tail(3000)
    );
    let data = server.data.to_str().unwrap().to_string();
    let out = ringmail(&["ban", "list", "--data", &data], "");
    assert_ok(&out, "ban list");
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.contains("127.0.0.66 until"), "{list}");
    assert_eq!(
        attempt(&server, Proto::Imap, attacker, ALICE.0, ALICE.1),
        Outcome::Banned,
        "banned even with the right password"
    );
    let out = ringmail(&["ban", "remove", "127.0.0.66", "--data", &data], "");
    assert_ok(&out, "ban remove");
    assert!(String::from_utf8_lossy(&out.stdout).contains("unbanned 127.0.0.66"));
    assert_eq!(
        attempt(&server, Proto::Pop3, attacker, ALICE.0, ALICE.1),
        Outcome::LoggedIn
    );
    let out = ringmail(&["ban", "list", "--data", &data], "");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no banned addresses"));
}

/// Guessing spread over many addresses, each under the ban threshold: the
/// account's failures lock it for every address that has failed, and never
/// for the owner's address, which has not.
#[test]
fn an_account_under_attack_refuses_failing_addresses_but_not_its_owner() {
    let server = Server::options().config(CONFIG).start();
    // 10 addresses x 3 failures: no address reaches 10, the account has 30.
    for round in 0..3 {
        std::thread::scope(|s| {
            for a in 0..10u8 {
                let server = &server;
                s.spawn(move || {
                    let from = Ipv4Addr::new(127, 0, 2, 1 + a);
                    let proto = [Proto::Smtp, Proto::Imap, Proto::Pop3][(a as usize + round) % 3];
                    assert_eq!(
                        attempt(server, proto, from, ALICE.0, "nope"),
                        Outcome::Failed
                    );
                });
            }
        });
    }
    // A failing address is refused now, even with the right password.
    assert_eq!(
        attempt(
            &server,
            Proto::Imap,
            Ipv4Addr::new(127, 0, 2, 1),
            ALICE.0,
            ALICE.1
        ),
        Outcome::Banned
    );
    // The owner's address never failed: in.
    for proto in [Proto::Smtp, Proto::Imap, Proto::Pop3] {
        assert_eq!(
            attempt(
                &server,
                proto,
                Ipv4Addr::new(127, 0, 3, 1),
                ALICE.0,
                ALICE.1
            ),
            Outcome::LoggedIn,
            "{proto:?}"
        );
    }
    // Other accounts are not affected from the failing addresses.
    assert_eq!(
        attempt(
            &server,
            Proto::Pop3,
            Ipv4Addr::new(127, 0, 2, 2),
            "bob@example.test",
            "bob-secret"
        ),
        Outcome::LoggedIn
    );
}

/// An authenticated SMTP session on the submission port from `from`.
fn submit_session(server: &Server, user: &str, password: &str) -> Client {
    let mut c = Client::connect(server.submission);
    c.set_read_timeout(Duration::from_secs(30));
    c.reply().expect(220, None);
    c.cmd("EHLO client.test").expect(250, None);
    c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("\0{user}\0{password}").as_bytes())
    ))
    .expect(235, None);
    c
}

/// One transaction; the reply to the end of data.
fn send(c: &mut Client, from: &str, to: &[&str]) -> Reply {
    c.cmd(&format!("MAIL FROM:<{from}>")).expect(250, None);
    for t in to {
        c.cmd(&format!("RCPT TO:<{t}>")).expect(250, None);
    }
    c.cmd("DATA").expect(354, None);
    c.send(format!("From: {from}\r\nSubject: rate\r\n\r\nbody\r\n").as_bytes());
    c.cmd(".")
}

/// Messages and recipients per authenticated account and hour, counted on
/// the account's owner shard whatever shard the session runs on: beyond,
/// 452 4.7.0 and nothing is stored.
#[test]
fn sending_rates_per_account_and_hour() {
    let server = Server::options()
        .config("[senders]\nmessages_per_hour = 3\nrecipients_per_hour = 5\n")
        .start();
    // alice: three messages, then the fourth is refused, in a new session too.
    let mut c = submit_session(&server, ALICE.0, ALICE.1);
    for _ in 0..3 {
        send(&mut c, ALICE.0, &["bob@example.test"]).expect(250, None);
    }
    send(&mut c, ALICE.0, &["bob@example.test"]).expect(452, Some("4.7.0"));
    c.cmd("QUIT").expect(221, None);
    let mut c = submit_session(&server, ALICE.0, ALICE.1);
    send(&mut c, ALICE.0, &["bob@example.test"]).expect(452, Some("4.7.0"));
    // bob: four recipients fit, two more do not.
    let mut c = submit_session(&server, "bob@example.test", "bob-secret");
    send(
        &mut c,
        "bob@example.test",
        &[
            "alice@example.test",
            "a@far.test",
            "b@far.test",
            "c@far.test",
        ],
    )
    .expect(250, None);
    send(
        &mut c,
        "bob@example.test",
        &["alice@example.test", "d@far.test"],
    )
    .expect(452, Some("4.7.0"));
    send(&mut c, "bob@example.test", &["alice@example.test"]).expect(250, None);
    // bob got alice's three messages (and, maybe, bounces for far.test).
    let stored = fetch_all(server.pop3, "bob@example.test", "bob-secret");
    assert_eq!(
        stored
            .iter()
            .filter(|(_, m)| return_path(m) == ALICE.0)
            .count(),
        3
    );
}

/// Wait until at least `margin` is left in the current minute (the rates
/// count in fixed minutes).
fn early_in_a_minute(margin: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now % 60 > 60 - margin {
        std::thread::sleep(Duration::from_secs(60 - now % 60 + 1));
    }
}

/// New connections per address per minute, over all listeners and cores:
/// beyond, 421 4.7.0 (SMTP) or * BYE (IMAP) and the connection is closed;
/// another address is not affected.
#[test]
fn connections_per_address_and_minute() {
    let server = Server::options()
        .config("[limits]\nconnections_per_address_per_minute = 6\nrate_limits_exempt_trusted = false\n")
        .start();
    early_in_a_minute(20);
    let from = Ipv4Addr::new(127, 0, 0, 9);
    for i in 0..6 {
        let addr = if i % 2 == 0 { server.smtp } else { server.imap };
        let mut c = Client::from_stream(connect_from(from, addr));
        let l = c.line();
        assert!(
            l.starts_with("220 ") || l.starts_with("* OK"),
            "connection {i}: {l}"
        );
    }
    let mut c = Client::from_stream(connect_from(from, server.smtp));
    let r = c.reply();
    assert_eq!((r.code, r.enhanced()), (421, Some("4.7.0")), "{r:?}");
    assert!(c.closed_within(Duration::from_secs(5)));
    let mut c = Client::from_stream(connect_from(from, server.imap));
    assert!(c.line().starts_with("* BYE"));
    let mut c = Client::from_stream(connect_from(Ipv4Addr::new(127, 0, 0, 10), server.smtp));
    c.reply().expect(220, None);
}

/// SMTP commands per address per minute, summed over its sessions: a client
/// that pipelines past the limit gets 421 4.7.0 and is disconnected.
#[test]
fn smtp_commands_per_address_and_minute() {
    let server = Server::options()
        .config("[limits]\nsmtp_commands_per_address_per_minute = 40\nrate_limits_exempt_trusted = false\n")
        .start();
    early_in_a_minute(20);
    let mut c = Client::from_stream(connect_from(Ipv4Addr::new(127, 0, 0, 11), server.smtp));
    c.set_read_timeout(Duration::from_secs(10));
    c.reply().expect(220, None);
    let mut noops = 0;
    for _ in 0..100 {
        let r = c.cmd("NOOP");
        if r.code == 250 {
            noops += 1;
            continue;
        }
        assert_eq!((r.code, r.enhanced()), (421, Some("4.7.0")), "{r:?}");
        break;
    }
    // Charged in batches of 16: the batch that passes 40 ends the session.
    assert!((40..=64).contains(&noops), "{noops} NOOPs answered");
    assert!(c.closed_within(Duration::from_secs(5)));
    // The address stays refused for the rest of the minute, in a new session.
    let mut c = Client::from_stream(connect_from(Ipv4Addr::new(127, 0, 0, 11), server.smtp));
    c.reply().expect(220, None);
    let mut refused = false;
    for _ in 0..20 {
        if c.cmd("NOOP").code == 421 {
            refused = true;
            break;
        }
    }
    assert!(refused, "a new session of the address was not refused");
}
