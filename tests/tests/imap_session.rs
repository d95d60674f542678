//! IMAP4rev1 sessions against the real server (shared client in
//! support/imap.rs): CAPABILITY before/after login, LOGIN, AUTHENTICATE
//! PLAIN (SASL-IR and continuation, cancel), [AUTHENTICATIONFAILED],
//! pre-login size bounds (huge literals and lines are refused without
//! buffering them), pipelining on both cores, malformed commands, and a
//! whole session with Python's imaplib.
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

// ---------------------------------------------------------------------------
// 1. Capability and login
// ---------------------------------------------------------------------------

#[test]
fn capability_and_login() {
    let server = Server::new();
    let mut c = Imap::connect(server.imap);
    // Greeting: "* OK [CAPABILITY IMAP4rev1 ...]" (RFC 3501 7.1.1, optional code).
    if c.greeting.contains("[CAPABILITY") {
        assert!(
            caps_of(&c.greeting).contains(&"IMAP4REV1".to_string()),
            "{}",
            c.greeting
        );
    }
    let r = c.ok("CAPABILITY");
    let lines = r.with_prefix("CAPABILITY ");
    assert_eq!(lines.len(), 1, "{r:#?}");
    let pre = caps_of(&lines[0]);
    for want in ["IMAP4REV1", "AUTH=PLAIN", "SASL-IR", "LITERAL+"] {
        assert!(
            pre.contains(&want.to_string()),
            "pre-login CAPABILITY lacks {want}: {pre:?}"
        );
    }
    // Plain-text LOGIN is allowed (no TLS configured), so no LOGINDISABLED.
    assert!(!pre.contains(&"LOGINDISABLED".to_string()), "{pre:?}");
    // NOOP is valid in every state; mailbox commands are not before login.
    c.ok("NOOP");
    for cmd in [
        "SELECT INBOX",
        "LIST \"\" \"*\"",
        "STATUS INBOX (MESSAGES)",
        "FETCH 1 FLAGS",
    ] {
        let r = c.cmd(cmd);
        assert!(
            r.status.starts_with("BAD") || r.status.starts_with("NO"),
            "{cmd} before login: {r:?}"
        );
    }

    // Wrong password: NO [AUTHENTICATIONFAILED] (RFC 5530), session continues.
    let r = c.cmd(&format!("LOGIN {ALICE} wrong-password"));
    assert!(r.status.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:?}");
    let r = c.cmd("LOGIN nobody@example.test whatever");
    assert!(
        r.status.starts_with("NO [AUTHENTICATIONFAILED]"),
        "unknown user: {r:?}"
    );

    // LOGIN with synchronizing literals for both arguments.
    let t = c.tag();
    c.send(format!("{t} LOGIN {{{}}}\r\n", ALICE.len()).as_bytes());
    assert!(
        c.line().starts_with('+'),
        "continuation for the user literal"
    );
    c.send(format!("{ALICE} {{{}}}\r\n", ALICE_PW.len()).as_bytes());
    assert!(
        c.line().starts_with('+'),
        "continuation for the password literal"
    );
    c.send(format!("{ALICE_PW}\r\n").as_bytes());
    let r = c.until(&t);
    assert!(r.ok(), "LOGIN with literals: {r:?}");
    if let Some(code) = r.code() {
        if code.starts_with("CAPABILITY") {
            let caps = caps_of(&format!("[{code}]"));
            for want in AUTHED_CAPS {
                assert!(
                    caps.contains(&want.to_string()),
                    "LOGIN OK [CAPABILITY] lacks {want}: {caps:?}"
                );
            }
        }
    }
    let r = c.ok("CAPABILITY");
    let caps = caps_of(&r.with_prefix("CAPABILITY ")[0]);
    for want in AUTHED_CAPS {
        assert!(
            caps.contains(&want.to_string()),
            "CAPABILITY after login lacks {want}: {caps:?}"
        );
    }
    // Once authenticated, LOGIN and AUTHENTICATE are invalid.
    let r = c.cmd(&format!("LOGIN {ALICE} {ALICE_PW}"));
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "second LOGIN: {r:?}"
    );
    c.ok("SELECT INBOX");
    // LOGOUT: untagged BYE, tagged OK, connection closed (RFC 3501 6.1.3).
    let r = c.ok("LOGOUT");
    assert!(r.with_prefix("BYE").len() == 1, "{r:?}");
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "no close after LOGOUT"
    );

    // AUTHENTICATE PLAIN with an initial response (SASL-IR, RFC 4959).
    let mut c = Imap::connect(server.imap);
    let r = c.cmd(&format!("AUTHENTICATE PLAIN {}", plain(ALICE, "nope")));
    assert!(r.status.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:?}");
    c.ok(&format!("AUTHENTICATE PLAIN {}", plain(ALICE, ALICE_PW)));
    c.ok("SELECT INBOX");
    c.ok("LOGOUT");

    // AUTHENTICATE PLAIN with a continuation; "+" SP [base64] (RFC 3501 7.5).
    let mut c = Imap::connect(server.imap);
    let t = c.tag();
    c.send(format!("{t} AUTHENTICATE PLAIN\r\n").as_bytes());
    let cont = c.line();
    assert!(cont == "+ " || cont == "+", "empty challenge: {cont:?}");
    // "*" cancels: tagged BAD (RFC 3501 6.2.2).
    c.send(b"*\r\n");
    let r = c.until(&t);
    assert!(r.status.starts_with("BAD"), "cancelled AUTHENTICATE: {r:?}");
    // Invalid base64: BAD, still not logged in.
    let t = c.tag();
    c.send(format!("{t} AUTHENTICATE PLAIN\r\n").as_bytes());
    assert!(c.line().starts_with('+'));
    c.send(b"!!!not base64!!!\r\n");
    let r = c.until(&t);
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "bad base64: {r:?}"
    );
    assert!(
        !c.cmd("SELECT INBOX").ok(),
        "not logged in after a failed AUTHENTICATE"
    );
    // An unknown mechanism: NO.
    let r = c.cmd("AUTHENTICATE X-UNKNOWN");
    assert!(
        r.status.starts_with("NO") || r.status.starts_with("BAD"),
        "{r:?}"
    );
    // And a good one, for bob, whose account may live on the other core.
    let t = c.tag();
    c.send(format!("{t} AUTHENTICATE PLAIN\r\n").as_bytes());
    assert!(c.line().starts_with('+'));
    c.send(format!("{}\r\n", plain(BOB, "bob-secret")).as_bytes());
    let r = c.until(&t);
    assert!(r.ok(), "AUTHENTICATE with continuation: {r:?}");
    let r = c.ok("STATUS INBOX (MESSAGES UIDNEXT)");
    assert_eq!(r.with_prefix("STATUS").len(), 1, "{r:?}");
    c.ok("LOGOUT");
}

/// Logging in moves the connection to the core owning the account; commands
/// pipelined right behind LOGIN must still be answered, in order, for
/// accounts on either core.
#[test]
fn pipelined_after_login_on_both_cores() {
    let accounts = accounts_on_all_shards("pipe", 8, 2, 1);
    let server = Server::options().accounts(&accounts).start();
    for shard in 0..2 {
        let acct = accounts.iter().find(|a| shard_of(a, 2) == shard).unwrap();
        let mut c = Imap::connect(server.imap);
        c.send(
            format!(
                "a LOGIN {acct} {PASSWORD}\r\nb SELECT INBOX\r\nc APPEND INBOX {{19+}}\r\nSubject: x\r\n\r\nhello\r\nd FETCH 1 (BODY.PEEK[TEXT] UID)\r\ne LOGOUT\r\n"
            )
            .as_bytes(),
        );
        for t in ["a", "b", "c", "d"] {
            let r = c.until(t);
            assert!(r.ok(), "shard {shard}: {t} -> {r:?}");
            if t == "d" {
                let f = r.fetches();
                assert_eq!(f.len(), 1, "{r:?}");
                assert_eq!(f[0].uid(), 1);
                assert_eq!(f[0].must("BODY[TEXT]").bytes(), b"hello");
            }
        }
        let r = c.until("e");
        assert!(r.ok(), "{r:?}");
        assert!(c.closed_within(Duration::from_secs(5)));
    }
}

/// Before login a client can make the server hold a few KiB at most: a huge
/// synchronizing literal is refused without a continuation, a huge
/// non-synchronizing one and an endless line are refused before they end.
#[test]
fn preauth_is_bounded() {
    let server = Server::new();

    // Synchronizing literal of 100 MB: answered right away, no "+".
    let mut c = Imap::connect(server.imap);
    c.send(b"a LOGIN {100000000}\r\n");
    let l = c.line();
    assert!(
        l.starts_with("a BAD") || l.starts_with("a NO"),
        "huge synchronizing literal before login: {l:?}"
    );
    // The session is still in step (or closed).
    match (|| -> std::io::Result<Resp> {
        c.s.write_all(b"b NOOP\r\n")?;
        c.try_until("b")
    })() {
        Ok(r) => assert!(r.ok(), "{r:?}"),
        Err(e) => eprintln!("connection closed after the refused literal ({e}), acceptable"),
    }

    // Non-synchronizing literal of 8 MiB: refused before the data is through.
    let mut c = Imap::connect(server.imap);
    c.send(b"a LOGIN alice {8388608+}\r\n");
    c.send(&vec![b'x'; 64 * 1024]);
    c.set_timeout(Duration::from_secs(5));
    let early = c.try_raw_line();
    c.set_timeout(IO_TIMEOUT);
    match early {
        Ok(l) => {
            let l = text(&l);
            assert!(l.starts_with("a BAD") || l.starts_with("a NO"), "{l:?}");
            // Send the rest; the server discards it and stays in step.
            let mut sent_all = true;
            let chunk = vec![b'x'; 256 * 1024];
            let mut left = 8_388_608 - 64 * 1024;
            while left > 0 {
                let n = left.min(chunk.len());
                if c.s.write_all(&chunk[..n]).is_err() {
                    sent_all = false;
                    break;
                }
                left -= n;
            }
            if sent_all && c.s.write_all(b" x\r\nb NOOP\r\n").is_ok() {
                match c.try_until("b") {
                    Ok(r) => assert!(r.ok(), "{r:?}"),
                    Err(e) => eprintln!("closed after the discarded literal ({e}), acceptable"),
                }
            }
        }
        Err(e) => {
            // Closing the connection is also fine, but it must be closed, not hanging.
            assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "no answer to an 8 MiB literal before login after 64 KiB: {e}"
            );
        }
    }

    // An endless line: refused long before 1 MiB.
    let mut c = Imap::connect(server.imap);
    c.send(b"a LOGIN ");
    let mut answered = None;
    for _ in 0..16 {
        if c.s.write_all(&[b'y'; 64 * 1024]).is_err() {
            break;
        }
        c.set_timeout(Duration::from_millis(100));
        if let Ok(l) = c.try_raw_line() {
            answered = Some(text(&l));
            break;
        }
    }
    c.set_timeout(IO_TIMEOUT);
    let l = answered.expect("no answer to a 1 MiB line before login");
    assert!(
        l.starts_with("a BAD") || l.starts_with("* BAD") || l.starts_with("* BYE"),
        "{l:?}"
    );

    // The server is fine: another client logs in and works.
    let mut c = Imap::login(server.imap, ALICE, ALICE_PW);
    c.select("INBOX");
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 13. Malformed commands, pipelining, robustness
// ---------------------------------------------------------------------------

#[test]
fn malformed_commands_and_pipelining() {
    const U: &str = "robust@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.append_ok("INBOX", "", None, &simple_message("r1", "x"));
    c.append_ok("INBOX", "", None, &simple_message("r2", "y"));
    c.select("INBOX");
    let bad = |c: &mut Imap, raw: &[u8], tag: &str| {
        c.send(raw);
        let r = c.until(tag);
        assert!(
            r.status.starts_with("BAD"),
            "{:?} -> {r:?}",
            String::from_utf8_lossy(raw)
        );
        // In step: a NOOP right after is answered.
        let r = c.ok("NOOP");
        assert!(r.ok());
    };
    bad(&mut c, b"g1 hello world\r\n", "g1");
    bad(&mut c, b"g2 FETCH (1\r\n", "g2");
    bad(&mut c, b"g3 FETCH 1 (FLAGS\r\n", "g3");
    bad(&mut c, b"g4 FETCH 1:x FLAGS\r\n", "g4");
    bad(&mut c, b"g5 FETCH 0 FLAGS\r\n", "g5");
    bad(&mut c, b"g6 FETCH 1 BODY[\r\n", "g6");
    bad(&mut c, b"g7 UID FROB 1\r\n", "g7");
    bad(&mut c, b"g8 SELECT\r\n", "g8");
    bad(&mut c, b"g9 STORE 1 +FLAGS\r\n", "g9");
    bad(&mut c, b"g10 SEARCH FROM\r\n", "g10");
    bad(&mut c, b"g11 SEARCH ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((ALL))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))\r\n", "g11");
    bad(&mut c, b"g12 FETCH 1 \x00\xff\r\n", "g12");
    bad(&mut c, b"g13 STORE 1 +FLAGS (\\Seen\r\n", "g13");
    bad(
        &mut c,
        b"g14 APPEND INBOX (\\Seen) \"99-Xyz-2020 00:00:00 +0000\" {1+}\r\nx\r\n",
        "g14",
    );
    // Sequence numbers past the end are not OK.
    let r = c.cmd("FETCH 3 FLAGS");
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "{r:?}"
    );
    let r = c.cmd("STORE 1:5 +FLAGS (\\Seen)");
    assert!(!r.ok(), "{r:?}");
    // A line without a tag or with nothing on it.
    c.send(b"\r\n");
    let l = c.line();
    assert!(
        l.starts_with("* BAD") || l.starts_with("BAD"),
        "empty line: {l:?}"
    );
    c.ok("NOOP");

    // Literals of the wrong size: the literal swallows what follows, the
    // remains form a bad command line, and the session is in step again.
    c.send(b"w1 APPEND INBOX {3+}\r\nhello\r\n");
    let r = c.until("w1");
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "{r:?}"
    );
    c.ok("NOOP");
    c.send(b"w2 APPEND INBOX {10+}\r\nshort\r\nw3 NOOP\r\n");
    let r = c.until("w2");
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "{r:?}"
    );
    c.ok("NOOP");
    let r = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "MESSAGES"),
        2,
        "no message was stored by a broken APPEND"
    );
    // Over-long line after login.
    let mut long = b"w4 SEARCH SUBJECT ".to_vec();
    long.extend(vec![b'z'; 200 * 1024]);
    long.extend_from_slice(b"\r\n");
    c.send(&long);
    let r = c.until("w4");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    c.ok("NOOP");

    // Pipelining: several tagged commands in one write, answered in order.
    c.send(b"p1 NOOP\r\np2 FETCH 1 (UID)\r\np3 STORE 1 +FLAGS (\\Seen)\r\np4 SEARCH SEEN\r\np5 UID FETCH 1:* (FLAGS)\r\np6 LOGOUT\r\n");
    let mut order = Vec::new();
    loop {
        let r = c.response();
        let l = text(&r);
        if let Some(t) = l.split(' ').next().filter(|t| t.starts_with('p')) {
            assert!(l[t.len()..].starts_with(" OK"), "{l}");
            order.push(t.to_string());
            if t == "p6" {
                break;
            }
        } else if l.starts_with("* SEARCH") {
            assert_eq!(l, "* SEARCH 1");
        }
    }
    assert_eq!(order, ["p1", "p2", "p3", "p4", "p5", "p6"]);
    assert!(c.closed_within(Duration::from_secs(5)));

    // Garbage from a not-logged-in client, including binary.
    let mut g = Imap::connect(server.imap);
    g.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n");
    let _ = g.line();
    g.send(b"x1 NOOP\r\n");
    assert!(g.until("x1").ok());

    // The server is alive and serving.
    assert!(server.is_running());
    let mut d = Imap::login(server.imap, U, PASSWORD);
    let r = d.select("INBOX");
    assert_eq!(r.count("EXISTS"), Some(2));
    d.ok("LOGOUT");
    let _ = fetch_all(server.pop3, U, PASSWORD);
}

// ---------------------------------------------------------------------------
// Python's imaplib as a client
// ---------------------------------------------------------------------------

#[test]
fn imaplib_full_session() {
    const U: &str = "pyclient@example.test";
    let server = Server::options().accounts(&[U]).start();
    run_python(
        "imap_session.py",
        &[
            "127.0.0.1".into(),
            server.smtp.port().to_string(),
            server.imap.port().to_string(),
            U.into(),
            PASSWORD.into(),
        ],
    );
}
