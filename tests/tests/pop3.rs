//! POP3 (RFC 1939, RFC 2449, RFC 3206) against the real server:
//! - a full poplib session (py/pop3_session.py): CAPA, [AUTH], [IN-USE],
//!   STAT, LIST, UIDL, TOP, RETR, DELE, RSET, NOOP, QUIT;
//! - DELE + QUIT persists across reconnect, SIGTERM restart and kill -9;
//!   DELE without QUIT does not;
//! - the failed-login limit closes the connection; the lock is released when
//!   a session ends either way; pipelined commands are answered in order;
//! - a stored message with bare LFs goes out as CRLF lines, correctly stuffed;
//! - AUTH PLAIN (RFC 5034) when CAPA offers it;
//! - the maildrop is a snapshot: mail arriving during a session is not shown
//!   until the next one, and does not disturb DELE.
//! - malformed and over-long commands get -ERR and change nothing.
use std::time::Duration;

use ringmail_tests::*;

const BOB: &str = "bob@example.test";
const BOB_PW: &str = "bob-secret";

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: <sender@example.test>\r\nTo: <bob@example.test>\r\nSubject: m{i}\r\nMessage-ID: <pop3-{i}@e2e.test>\r\n\r\nbody of message {i}\r\n"
    )
    .into_bytes()
}

/// Deliver `n` numbered messages to bob over one SMTP session.
fn deliver(server: &Server, range: std::ops::Range<usize>) {
    let (mut c, _) = smtp_connect(server.smtp);
    for i in range {
        smtp_transaction(
            &mut c,
            "sender@example.test",
            &[BOB],
            &message(i),
            Transfer::Data,
        )
        .unwrap_or_else(|e| panic!("message {i}: {e}"))
        .expect(250, None);
    }
    c.cmd("QUIT").expect(221, None);
}

fn subjects(server: &Server) -> Vec<String> {
    fetch_all(server.pop3, BOB, BOB_PW)
        .into_iter()
        .map(|(_, m)| {
            let body = strip_trace(&m).1.to_vec();
            let s = String::from_utf8(body).unwrap();
            s.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
                .expect("Subject")
        })
        .collect()
}

#[test]
fn poplib_full_session() {
    let server = Server::new();
    run_python(
        "pop3_session.py",
        &[
            "127.0.0.1".into(),
            server.smtp.port().to_string(),
            server.pop3.port().to_string(),
            BOB.into(),
            BOB_PW.into(),
        ],
    );
}

#[test]
fn dele_quit_persists_across_reconnect_restart_and_kill9() {
    let mut server = Server::new();
    deliver(&server, 0..5);
    let all: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    assert_eq!(subjects(&server), all);

    // DELE 1 + QUIT: gone in the next session.
    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    let uidl_before = p.uidl();
    p.ok("DELE 1");
    p.quit();
    assert_eq!(subjects(&server), all[1..]);
    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    let uidl_after: Vec<String> = p.uidl().into_iter().map(|(_, u)| u).collect();
    p.quit();
    let expect: Vec<String> = uidl_before[1..].iter().map(|(_, u)| u.clone()).collect();
    assert_eq!(
        uidl_after, expect,
        "UIDLs must not change when another message is deleted"
    );

    // ... and after a clean restart, with the same UIDLs.
    server.terminate();
    server.restart();
    assert_eq!(subjects(&server), all[1..]);
    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    let uidl_restart: Vec<String> = p.uidl().into_iter().map(|(_, u)| u).collect();
    assert_eq!(uidl_restart, expect, "UIDLs must survive a restart");

    // DELE 1 and 2, QUIT, and kill -9 right after the +OK: still deleted.
    p.ok("DELE 1");
    p.ok("DELE 2");
    p.ok("QUIT");
    server.kill9();
    server.restart();
    assert_eq!(subjects(&server), all[3..]);

    // New mail after the crash gets fresh, distinct UIDLs.
    deliver(&server, 5..6);
    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    let ids: Vec<String> = p.uidl().into_iter().map(|(_, u)| u).collect();
    p.quit();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[..2], expect[2..]);
    assert!(!expect.contains(&ids[2]), "UIDL {} reused", ids[2]);
    server.terminate();
}

#[test]
fn dele_without_quit_is_not_applied() {
    let mut server = Server::new();
    deliver(&server, 0..3);
    let all: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();

    // Connection dropped after DELE: RFC 1939 says no UPDATE state, nothing removed.
    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    p.ok("DELE 1");
    p.ok("DELE 3");
    drop(p);
    // The lock must be released once the connection is gone.
    let again = wait_for(Duration::from_secs(5), || {
        let mut p = Pop3::connect(server.pop3);
        p.ok(&format!("USER {BOB}"));
        p.cmd(&format!("PASS {BOB_PW}"))
            .starts_with("+OK")
            .then_some(p)
    })
    .expect("maildrop still locked 5 s after the connection dropped");
    again.quit();
    assert_eq!(subjects(&server), all);

    // Same with a kill -9 while the session with DELE is still open.
    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    p.ok("DELE 2");
    server.kill9();
    drop(p);
    server.restart();
    assert_eq!(subjects(&server), all);
    server.terminate();
}

#[test]
fn failed_logins_limit_and_case_insensitive_commands() {
    let server = Server::new();
    let mut p = Pop3::connect(server.pop3);
    // Commands are case-insensitive (RFC 1939 3); a bare local part names the account.
    p.ok("user bob");
    let r = p.cmd("pass wrong");
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    p.ok("USER bob");
    assert!(p.cmd("PASS wrong-again").starts_with("-ERR [AUTH]"));
    // Unknown users get the same answer as bad passwords.
    p.ok("USER nobody@example.test");
    assert!(p.cmd("PASS whatever").starts_with("-ERR [AUTH]"));
    // Third failure (auth_failures_max = 3): the server closes the connection.
    assert!(
        p.c.closed_within(Duration::from_secs(5)),
        "connection still open after 3 failed logins"
    );

    // The right password right after works on a new connection, with a bare local part.
    let mut p = Pop3::login(server.pop3, "bob", BOB_PW);
    assert_eq!(p.stat(), (0, 0));
    // Commands not valid in TRANSACTION, unknown commands: -ERR and the session goes on.
    assert!(p.cmd("USER bob").starts_with("-ERR"));
    assert!(p.cmd("XYZZY").starts_with("-ERR"));
    assert!(p.cmd("RETR 1").starts_with("-ERR"));
    assert!(p.cmd("RETR x").starts_with("-ERR"));
    assert!(p.cmd("DELE 0").starts_with("-ERR"));
    p.ok("NOOP");
    p.quit();
}

#[test]
fn pipelined_commands_answered_in_order() {
    let server = Server::new();
    deliver(&server, 0..2);
    let mut p = Pop3::connect(server.pop3);
    // RFC 2449 6.6 PIPELINING: several commands in one write.
    p.c.send(format!("CAPA\r\nUSER {BOB}\r\nPASS {BOB_PW}\r\nSTAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nNOOP\r\nQUIT\r\n").as_bytes());
    let capa = p.c.line();
    assert!(capa.starts_with("+OK"), "{capa}");
    let caps: Vec<String> = p
        .multiline()
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    for want in ["TOP", "UIDL", "USER", "PIPELINING"] {
        assert!(
            caps.iter()
                .any(|c| c.split_whitespace().next() == Some(want)),
            "CAPA lacks {want}: {caps:?}"
        );
    }
    assert!(p.c.line().starts_with("+OK"));
    assert!(p.c.line().starts_with("+OK"));
    let stat = p.c.line();
    assert!(stat.starts_with("+OK 2 "), "{stat}");
    assert!(p.c.line().starts_with("+OK"));
    let list = p.multiline();
    assert_eq!(list.len(), 2);
    let uidl = p.c.line();
    assert!(uidl.starts_with("+OK 2 "), "{uidl}");
    assert!(p.c.line().starts_with("+OK"));
    let m = join_lines(p.multiline());
    assert_bytes_eq(strip_trace(&m).1, &message(0), "RETR 1 (pipelined)");
    assert!(p.c.line().starts_with("+OK"), "NOOP");
    assert!(p.c.line().starts_with("+OK"), "QUIT");
    assert!(p.c.closed_within(Duration::from_secs(5)));
}

#[test]
fn bare_lf_in_a_stored_message_goes_out_as_crlf_lines() {
    let server = Server::new();
    // The SMTP side keeps bare LFs inside a message (see smtp.rs, smuggling).
    let body = b"Subject: bare lf\r\n\r\nbefore\n.\nmiddle\n..x\nafter\r\n";
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("MAIL FROM:<lf@example.test>").expect(250, None);
    c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    c.send(&[&body[..], b".\r\n"].concat());
    c.reply().expect(250, None);
    c.cmd("QUIT").expect(221, None);

    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    p.ok("RETR 1");
    let mut raw = Vec::new();
    while !raw.ends_with(b"\r\n.\r\n") {
        raw.extend_from_slice(&p.c.read_line());
    }
    // RFC 1939 3: every line of a multi-line response ends in CRLF, so a
    // client splitting on CRLF and one splitting on LF read the same lines.
    let bare = raw
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' && (*i == 0 || raw[i - 1] != b'\r'))
        .count();
    assert_eq!(
        bare,
        0,
        "RETR response contains {bare} bare LF(s): {:?}",
        String::from_utf8_lossy(&raw)
    );
    let lines: Vec<Vec<u8>> = raw[..raw.len() - 5]
        .split(|b| *b == b'\n')
        .map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            l.strip_prefix(b".").unwrap_or(l).to_vec()
        })
        .collect();
    let got = join_lines(lines);
    assert_bytes_eq(
        strip_trace(&got).1,
        &normalize_line_ends(body),
        "bare-LF message over POP3",
    );
    p.quit();
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn auth_plain_when_offered() {
    let server = Server::new();
    deliver(&server, 0..1);
    let mut p = Pop3::connect(server.pop3);
    p.ok("CAPA");
    let caps: Vec<String> = p
        .multiline()
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap().to_ascii_uppercase())
        .collect();
    let Some(sasl) = caps.iter().find(|c| c.starts_with("SASL ")) else {
        eprintln!("note: CAPA offers no SASL, AUTH not tested: {caps:?}");
        return;
    };
    assert!(
        sasl.split_whitespace().any(|m| m == "PLAIN"),
        "SASL without PLAIN: {sasl}"
    );
    // Wrong password with an initial response.
    let r = p.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("\0{BOB}\0nope").as_bytes())
    ));
    assert!(r.starts_with("-ERR"), "{r}");
    // Without an initial response: "+ " continuation, then the response.
    p.c.send(b"AUTH PLAIN\r\n");
    let cont = p.c.line();
    assert!(
        cont == "+" || cont.starts_with("+ "),
        "continuation: {cont:?}"
    );
    let r = p.cmd(&b64(format!("\0{BOB}\0{BOB_PW}").as_bytes()));
    assert!(r.starts_with("+OK"), "{r}");
    assert_eq!(p.stat().0, 1);
    p.quit();
    // With an initial response, authorization identity equal to the user.
    let mut p = Pop3::connect(server.pop3);
    let r = p.cmd(&format!(
        "AUTH PLAIN {}",
        b64(format!("{BOB}\0{BOB}\0{BOB_PW}").as_bytes())
    ));
    assert!(r.starts_with("+OK"), "{r}");
    p.quit();
    // A client may cancel with "*" (RFC 5034 4).
    let mut p = Pop3::connect(server.pop3);
    p.c.send(b"AUTH PLAIN\r\n");
    assert!(p.c.line().starts_with('+'));
    assert!(p.cmd("*").starts_with("-ERR"));
    // Still in AUTHORIZATION: USER/PASS work.
    p.ok(&format!("USER {BOB}"));
    p.ok(&format!("PASS {BOB_PW}"));
    p.quit();
}

#[test]
fn maildrop_is_a_snapshot_during_a_session() {
    let server = Server::new();
    deliver(&server, 0..2);
    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    let (n, size) = p.stat();
    assert_eq!(n, 2);
    let first: u64 = p
        .ok("LIST 1")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    p.ok("DELE 1");
    deliver(&server, 2..3);
    // Message numbers stay fixed for the session (RFC 1939 5).
    assert_eq!(p.stat(), (1, size - first));
    assert!(
        p.cmd("RETR 3").starts_with("-ERR"),
        "mail delivered during the session is visible"
    );
    p.quit();
    assert_eq!(subjects(&server), vec!["m1", "m2"]);
}

#[test]
fn malformed_commands_get_err_and_the_session_goes_on() {
    let server = Server::new();
    deliver(&server, 0..3);
    let mut p = Pop3::login(server.pop3, BOB, BOB_PW);
    // RFC 2449 4: command lines are at most 255 octets.
    let r = p.cmd(&format!("NOOP {}", "x".repeat(400)));
    assert!(r.starts_with("-ERR"), "over-long line: {r}");
    p.ok("NOOP");
    for bad in [
        "LIST 0",
        "LIST 4",
        "LIST -1",
        "LIST abc",
        "LIST 99999999999999999999",
        "UIDL 0",
        "RETR",
        "RETR 4",
        "TOP 1",
        "TOP 1 -1",
        "TOP 9 0",
        "DELE",
        "",
    ] {
        let r = p.cmd(bad);
        assert!(r.starts_with("-ERR"), "{bad:?} -> {r:?}");
    }
    // Nothing was deleted or changed by all that.
    assert_eq!(p.stat().0, 3);
    p.ok("DELE 3");
    p.quit();
    assert_eq!(subjects(&server), vec!["m0", "m1"]);
}
