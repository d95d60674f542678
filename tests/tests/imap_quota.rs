//! Storage quotas (RFC 9208): the limit from `[limits] quota_octets` and
//! from `ringmail account quota`, GETQUOTA/GETQUOTAROOT, enforcement at
//! SMTP RCPT (452 4.2.2), APPEND and COPY (NO [OVERQUOTA]), and usage that
//! stays exact across expunge and restart (shared client in support/imap.rs).
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

const CONFIG: &str = "local_domains = [\"example.test\"]\n[limits]\nquota_octets = 1048576\n";

fn quota_cli(s: &Server, args: &[&str]) -> String {
    let data = s.data.to_str().unwrap().to_string();
    let mut all = vec!["account", "quota"];
    all.extend_from_slice(args);
    let config = s
        .config_path
        .as_ref()
        .map(|p| p.to_str().unwrap().to_string());
    all.extend_from_slice(&["--data", &data]);
    if let Some(c) = &config {
        all.extend_from_slice(&["--config", c]);
    }
    let out = ringmail(&all, "");
    assert_ok(&out, &format!("account quota {args:?}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `* QUOTA` line of GETQUOTA "" once it reports `limit_kib`, within 10 s.
fn wait_quota(s: &Server, user: &str, limit_kib: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Imap::login(s.imap, user, PASSWORD);
        let r = c.cmd("GETQUOTA \"\"");
        let line = r.with_prefix("QUOTA ").first().cloned().unwrap_or_default();
        c.ok("LOGOUT");
        if line.ends_with(&format!(" {limit_kib})")) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "GETQUOTA never showed {limit_kib}: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn quota_limits_delivery_append_copy_and_survives_restart() {
    const U: &str = "quota@example.test";
    const LIMIT: u64 = 8192;
    let mut s = Server::options()
        .config(CONFIG)
        .accounts(&[U, "other@example.test"])
        .start();
    // The account file's own limit replaces the configured one, picked up
    // by the running server.
    assert_eq!(
        quota_cli(&s, &["quota@example.test", "8K"]),
        "quota@example.test: quota 8192 octets (its own)"
    );
    assert_eq!(
        quota_cli(&s, &["quota@example.test"]),
        "quota@example.test: quota 8192 octets (its own)"
    );
    wait_quota(&s, U, LIMIT / 1024);
    // Everyone else has the configured 1 MiB.
    assert_eq!(
        wait_quota(&s, "other@example.test", 1024),
        "* QUOTA \"\" (STORAGE 0 1024)"
    );
    let quota_py = |s: &Server, phase: String| {
        run_python(
            "quota.py",
            &[
                "127.0.0.1".into(),
                s.smtp.port().to_string(),
                s.imap.port().to_string(),
                U.into(),
                PASSWORD.into(),
                LIMIT.to_string(),
                phase,
            ],
        )
    };
    let out = quota_py(&s, "fill".into());
    let used: u64 = out
        .lines()
        .rev()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("quota.py output: {out:?}"));
    assert!(used > 0 && used <= LIMIT / 1024 + 2, "used {used} KiB");
    // The same usage after kill -9 and a restart (counted again from the
    // checkpoint and the records replayed after it).
    s.kill9();
    s.restart();
    quota_py(&s, format!("check:{used}"));
    // RCPT still refused for a full account after the restart, while
    // another recipient of the same transaction is accepted.
    let (mut c, _) = smtp_connect(s.smtp);
    c.cmd("EHLO client.test").expect(250, None);
    c.cmd("MAIL FROM:<sender@example.test>").expect(250, None);
    for i in 0..20 {
        let r = c.cmd(&format!("RCPT TO:<{U}>"));
        if r.code == 452 {
            r.expect(452, Some("4.2.2"));
            break;
        }
        r.expect(250, Some("2.1.5"));
        c.cmd("RSET").expect(250, None);
        c.cmd("MAIL FROM:<sender@example.test>").expect(250, None);
        assert!(i < 19, "never full");
        // Below the limit still: fill it up.
        smtp_send(
            s.smtp,
            "sender@example.test",
            &[U],
            &simple_message("top up", &"y".repeat(1000)),
        );
    }
    c.cmd("RCPT TO:<other@example.test>")
        .expect(250, Some("2.1.5"));
    c.cmd("QUIT").expect(221, None);
    // `default` removes the account's own limit: the configured one
    // applies again; `none` exempts the account from any limit.
    assert_eq!(
        quota_cli(&s, &["quota@example.test", "default"]),
        "quota@example.test: quota 1048576 octets (the default, [limits] quota_octets)"
    );
    wait_quota(&s, U, 1024);
    assert_eq!(
        quota_cli(&s, &["other@example.test", "none"]),
        "other@example.test: no quota (its own)"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Imap::login(s.imap, "other@example.test", PASSWORD);
        let r = c.ok("GETQUOTAROOT INBOX");
        c.ok("LOGOUT");
        if r.lines() == vec!["* QUOTAROOT INBOX".to_string()] {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", r.lines());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Parallel APPENDs cannot all pass the check against the same usage;
/// deleting a full mailbox makes room for SMTP at once.
#[test]
fn quota_holds_parallel_appends_and_frees_on_delete() {
    const V: &str = "racer@example.test";
    let s = Server::options().config(CONFIG).accounts(&[V]).start();
    quota_cli(&s, &[V, "8K"]);
    wait_quota(&s, V, 8);
    let mut setup = Imap::login(s.imap, V, PASSWORD);
    setup.ok("CREATE Big");
    setup.ok("LOGOUT");
    let msg = simple_message("race", &"z".repeat(3000));
    let accepted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let msg = msg.clone();
                let addr = s.imap;
                scope.spawn(move || {
                    let mut c = Imap::login(addr, V, PASSWORD);
                    let r = c.append("Big", "", None, &msg);
                    c.ok("LOGOUT");
                    if r.ok() {
                        1
                    } else {
                        assert!(r.status.starts_with("NO [OVERQUOTA]"), "{}", r.status);
                        0
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let each = msg.len();
    assert_eq!(
        accepted,
        8192 / each,
        "{accepted} appends of {each} octets under 8 KiB"
    );
    // Top up over SMTP until RCPT refuses (the last one may pass the limit).
    for _ in 0..10 {
        let (mut c, _) = smtp_connect(s.smtp);
        c.cmd("EHLO client.test").expect(250, None);
        c.cmd("MAIL FROM:<sender@example.test>").expect(250, None);
        let r = c.cmd(&format!("RCPT TO:<{V}>"));
        if r.code == 452 {
            break;
        }
        c.cmd("DATA").expect(354, None);
        c.cmd("Subject: top\r\n\r\nup\r\n.").expect(250, None);
    }
    let rcpt = |s: &Server| {
        let (mut c, _) = smtp_connect(s.smtp);
        c.cmd("EHLO client.test").expect(250, None);
        c.cmd("MAIL FROM:<sender@example.test>").expect(250, None);
        c.cmd(&format!("RCPT TO:<{V}>")).code
    };
    assert_eq!(rcpt(&s), 452);
    // DELETE frees the room at once, for RCPT on any core too.
    let mut c = Imap::login(s.imap, V, PASSWORD);
    c.ok("DELETE Big");
    c.ok("LOGOUT");
    assert_eq!(rcpt(&s), 250);
    // RFC 1870 SIZE: a message declared larger than the room left is
    // refused at RCPT like a full mailbox; a small one is welcome.
    for (size, code) in [(100_000, 452), (100, 250)] {
        let (mut c, _) = smtp_connect(s.smtp);
        c.cmd("EHLO client.test").expect(250, None);
        c.cmd(&format!("MAIL FROM:<sender@example.test> SIZE={size}"))
            .expect(250, None);
        let r = c.cmd(&format!("RCPT TO:<{V}>"));
        assert_eq!(r.code, code, "SIZE={size}: {}", r.text());
    }
}

#[test]
fn no_quota_means_no_root() {
    let s = Server::new();
    let mut c = Imap::login(s.imap, ALICE, ALICE_PW);
    let caps = c.cmd("CAPABILITY");
    assert!(caps.lines()[0].contains(" QUOTA "), "{:?}", caps.lines());
    // RFC 9208 4.3: no quota root applies to the mailbox.
    let r = c.ok("GETQUOTAROOT INBOX");
    assert_eq!(r.lines(), vec!["* QUOTAROOT INBOX".to_string()]);
    let r = c.cmd("GETQUOTA \"\"");
    assert!(r.status.starts_with("NO [NONEXISTENT]"), "{}", r.status);
    let r = c.cmd("GETQUOTAROOT Nowhere");
    assert!(r.status.starts_with("NO [NONEXISTENT]"), "{}", r.status);
    let r = c.cmd("SETQUOTA \"\" (STORAGE 10)");
    assert!(r.status.starts_with("NO [NOPERM]"), "{}", r.status);
    let r = c.cmd("SETQUOTA \"\" (STORAGE)");
    assert!(r.status.starts_with("BAD"), "{}", r.status);
    // STATUS's new items on an empty mailbox.
    let r = c.ok("STATUS INBOX (DELETED DELETED-STORAGE SIZE)");
    assert!(
        r.lines()[0].ends_with("(DELETED 0 DELETED-STORAGE 0 SIZE 0)"),
        "{:?}",
        r.lines()
    );
    c.ok("LOGOUT");
}
