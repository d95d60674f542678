//! Process lifecycle and connection handling:
//! - SIGTERM with idle SMTP and POP3 sessions: `421 4.3.2` / `-ERR`, exit 0, promptly;
//! - SIGTERM in the middle of DATA: the message may finish within the grace
//!   period, is acknowledged and survives; SIGINT stops cleanly too;
//! - SIGTERM with a message stalled in DATA: exit 0 after the grace period,
//!   nothing half-received is stored;
//! - `connections_per_address_max`: the connection over the limit gets
//!   `421 4.7.0`; POP3 sessions that moved to another core give their place back;
//! - timeouts: SMTP command `421 4.4.2`, SMTP data (nothing stored), POP3
//!   `-ERR` autologout (DELE not applied).
use std::time::{Duration, Instant};

use ringmail_tests::*;

fn config(extra: &str) -> String {
    format!(
        "[[demo_accounts]]\naddress = \"bob@example.test\"\npassword = \"bob-secret\"\n{extra}\n"
    )
}

#[test]
fn sigterm_with_idle_sessions() {
    let mut server = Server::new();
    let (mut smtp, _) = smtp_connect(server.smtp);
    // One session idle in the middle of a transaction, too.
    let (mut smtp2, _) = smtp_connect(server.smtp);
    smtp2.cmd("MAIL FROM:<a@example.test>").expect(250, None);
    smtp_send(
        server.smtp,
        "a@example.test",
        &["bob@example.test"],
        b"Subject: keep\r\n\r\nkeep me\r\n",
    );
    let mut pop = Pop3::login(server.pop3, "bob@example.test", "bob-secret");
    // DELE without QUIT: the shutdown must not apply it (RFC 1939 6).
    pop.ok("DELE 1");
    let t = Instant::now();
    let status = server.stop_with(libc::SIGTERM, Duration::from_secs(20));
    let took = t.elapsed();
    assert!(status.success(), "exit status {status} after SIGTERM");
    assert!(
        took < Duration::from_secs(5),
        "stopping with idle sessions took {took:?}"
    );
    for c in [&mut smtp, &mut smtp2] {
        let r = c
            .try_reply()
            .unwrap_or_else(|e| panic!("idle SMTP session got no reply before closing: {e}"));
        r.expect(421, Some("4.3.2"));
        assert!(c.closed_within(Duration::from_secs(2)));
    }
    let l = pop.c.line();
    assert!(l.starts_with("-ERR"), "idle POP3 session: {l:?}");
    assert!(pop.c.closed_within(Duration::from_secs(2)));
    server.restart();
    let left = fetch_all(server.pop3, "bob@example.test", "bob-secret");
    assert_eq!(left.len(), 1, "DELE applied without QUIT at shutdown");
    server.terminate();
}

#[test]
fn sigterm_with_a_stalled_message_exits_after_the_grace_period() {
    let mut server = Server::options()
        .config(&config("[timeouts]\nshutdown_grace_secs = 1"))
        .start();
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("MAIL FROM:<stall@example.test>").expect(250, None);
    c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    c.send(b"Subject: never finished\r\n\r\nhalf a message");
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let status = server.stop_with(libc::SIGTERM, Duration::from_secs(20));
    let took = t.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(4),
        "stop took {took:?} with a 1 s grace period"
    );
    // The client is told (421) or at least disconnected; never a 250.
    if let Ok(r) = c.try_reply() {
        r.expect(421, None);
    }
    server.restart();
    let mut p = Pop3::login(server.pop3, "bob@example.test", "bob-secret");
    assert_eq!(p.stat(), (0, 0), "a half-received message was stored");
    p.quit();
    server.terminate();
}

#[test]
fn sigterm_during_data_lets_the_message_finish() {
    let mut server = Server::new();
    let (mut c, _) = smtp_connect(server.smtp);
    // alice and bob live on different shards: whichever shard took the
    // connection, one copy goes through the other shard while it stops.
    assert_ne!(
        shard_of("alice@example.test", 2),
        shard_of("bob@example.test", 2)
    );
    c.cmd("MAIL FROM:<slow@example.test>").expect(250, None);
    c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    let message = b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n";
    c.send(&message[..25]);
    std::thread::sleep(Duration::from_millis(200));
    let pid = server.pid().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    let mut rest = message[25..].to_vec();
    rest.extend_from_slice(b".\r\n");
    c.send(&rest);
    let r = c.try_reply().unwrap_or_else(|e| {
        panic!("no reply to the end of data sent during the grace period: {e}")
    });
    r.expect(250, Some("2.0.0"));
    // Then the server says goodbye instead of waiting for another command.
    let bye = c.try_reply();
    match bye {
        Ok(r) => r.expect(421, Some("4.3.2")),
        Err(e) => panic!("expected 421 after the message, got {e}"),
    };
    let status = server.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    server.restart();
    for (user, pw) in [
        ("bob@example.test", "bob-secret"),
        ("alice@example.test", "alice-secret"),
    ] {
        let got = fetch_all(server.pop3, user, pw);
        assert_eq!(
            got.len(),
            1,
            "{user}: message acknowledged during shutdown missing"
        );
        assert_bytes_eq(strip_trace(&got[0].1).1, message, "in-flight message");
    }
    // SIGINT is a clean stop as well.
    let status = server.stop_with(libc::SIGINT, Duration::from_secs(20));
    assert!(status.success(), "exit status {status} after SIGINT");
}

#[test]
fn connections_per_address_limit() {
    let server = Server::options()
        .config(&config("[limits]\nconnections_per_address_max = 3"))
        .start();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(server.smtp);
        c.reply().expect(220, None);
        open.push(c);
    }
    let mut fourth = Client::connect(server.smtp);
    fourth.reply().expect(421, Some("4.7.0"));
    assert!(
        fourth.closed_within(Duration::from_secs(3)),
        "refused connection left open"
    );
    // The admitted sessions work; closing one frees a place.
    open[0].cmd("NOOP").expect(250, None);
    open[0].cmd("QUIT").expect(221, None);
    assert!(open[0].closed_within(Duration::from_secs(3)));
    let ok = wait_for(Duration::from_secs(3), || {
        let mut c = Client::connect(server.smtp);
        (c.reply().code == 220).then_some(c)
    });
    assert!(ok.is_some(), "no place after a connection closed");
    drop(ok);
    drop(open);

    // POP3 sessions move to the core owning the account after login; their
    // places must be given back when they end (QUIT, drop, failed login).
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..12 {
        // The previous session may take a moment to be reaped.
        let mut p = wait_for(Duration::from_secs(3), || {
            let mut c = Client::connect(server.pop3);
            let greeting = c.line();
            greeting.starts_with("+OK").then_some(Pop3 { c, greeting })
        })
        .unwrap_or_else(|| panic!("POP3 connection {i} refused for 3 s"));
        match i % 3 {
            0 => {
                p.ok("USER bob@example.test");
                p.ok("PASS bob-secret");
                p.quit();
            }
            1 => {
                p.ok("USER bob@example.test");
                p.ok("PASS bob-secret");
                drop(p);
            }
            _ => {
                p.ok("USER bob@example.test");
                assert!(p.cmd("PASS wrong").starts_with("-ERR"));
                drop(p);
            }
        }
    }
    let three = wait_for(Duration::from_secs(3), || {
        let mut v = Vec::new();
        for _ in 0..3 {
            let mut c = Client::connect(server.smtp);
            if c.reply().code != 220 {
                return None;
            }
            v.push(c);
        }
        Some(v)
    });
    assert!(three.is_some(), "places leaked by POP3 sessions");
    let mut fourth = Client::connect(server.smtp);
    fourth.reply().expect(421, Some("4.7.0"));
}

#[test]
fn idle_timeouts() {
    let server = Server::options()
        .config(&config(
            "[timeouts]\nsmtp_command_secs = 1\nsmtp_data_secs = 1\npop3_idle_secs = 1",
        ))
        .start();
    smtp_send(
        server.smtp,
        "a@example.test",
        &["bob@example.test"],
        b"Subject: keep\r\n\r\nkeep\r\n",
    );
    let (mut c, _) = smtp_connect(server.smtp);
    // A message that stalls in DATA.
    let (mut d, _) = smtp_connect(server.smtp);
    d.cmd("MAIL FROM:<slow@example.test>").expect(250, None);
    d.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    d.cmd("DATA").expect(354, None);
    d.send(b"Subject: stalled\r\n\r\npart");
    let mut p = Pop3::login(server.pop3, "bob@example.test", "bob-secret");
    p.ok("DELE 1");
    let t = Instant::now();
    let r = c.reply();
    r.expect(421, Some("4.4.2"));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "SMTP timeout after {:?}",
        t.elapsed()
    );
    assert!(c.closed_within(Duration::from_secs(2)));
    d.reply().expect(421, Some("4.4.2"));
    assert!(d.closed_within(Duration::from_secs(2)));
    // RFC 1939 3: the autologout timer closes without entering UPDATE.
    let l = p.c.line();
    assert!(l.starts_with("-ERR"), "{l}");
    assert!(p.c.closed_within(Duration::from_secs(2)));
    let mut p = Pop3::login(server.pop3, "bob@example.test", "bob-secret");
    assert_eq!(
        p.stat().0,
        1,
        "autologout applied DELE, or the stalled message was stored"
    );
    p.quit();
}
