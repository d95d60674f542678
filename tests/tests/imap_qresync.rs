//! QRESYNC (RFC 7162 section 3.2) end to end: ENABLE, VANISHED instead of
//! EXPUNGE, SELECT (QRESYNC ...) with and without known UIDs, UID FETCH
//! (CHANGEDSINCE ... VANISHED), and exact answers after kill -9 and after a
//! clean restart (shared client in support/imap.rs).
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

const U: &str = "resync@example.test";

/// HIGHESTMODSEQ and UIDVALIDITY from a SELECT's responses.
fn select_state(r: &Resp) -> (u64, u32) {
    let mut modseq = None;
    let mut validity = None;
    for l in r.lines() {
        if let Some(rest) = l.strip_prefix("* OK [HIGHESTMODSEQ ") {
            modseq = rest.split(']').next().and_then(|n| n.parse().ok());
        }
        if let Some(rest) = l.strip_prefix("* OK [UIDVALIDITY ") {
            validity = rest.split(']').next().and_then(|n| n.parse().ok());
        }
    }
    (
        modseq.expect("HIGHESTMODSEQ"),
        validity.expect("UIDVALIDITY"),
    )
}

fn qresync_client(addr: SocketAddr) -> Imap {
    let mut c = Imap::login(addr, U, PASSWORD);
    let r = c.ok("ENABLE QRESYNC");
    assert_eq!(r.lines(), vec!["* ENABLED QRESYNC".to_string()]);
    c
}

/// The VANISHED lines of a response, then its FETCH responses written as
/// `* n FETCH (UID u FLAGS (...) MODSEQ)` whatever the item order (the
/// MODSEQ value is the server's; it must be there) and without \Recent.
fn resync_lines(r: &Resp) -> Vec<String> {
    let mut out: Vec<String> = r.with_prefix("VANISHED");
    for f in r.fetches() {
        assert!(f.get("MODSEQ").is_some(), "FETCH without MODSEQ: {r:?}");
        out.push(format!(
            "* {} FETCH (UID {} FLAGS ({}) MODSEQ)",
            f.seq,
            f.uid(),
            // \Recent is per session and starts over after a restart.
            f.must("FLAGS")
                .atoms()
                .into_iter()
                .filter(|a| a != "\\Recent")
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out
}

#[test]
fn qresync_resynchronises_exactly_across_restarts() {
    let mut s = Server::options().accounts(&[U]).start();
    let mut a = Imap::login(s.imap, U, PASSWORD);
    for i in 1..=6 {
        a.append_ok("INBOX", "", None, &simple_message(&format!("m{i}"), "x"));
    }
    // UID 1 goes before the client's snapshot: an exact server never
    // reports it again; one that forgot would.
    a.ok("SELECT INBOX");
    a.ok("UID STORE 1 +FLAGS (\\Deleted)");
    a.ok("UID EXPUNGE 1");

    // The client's snapshot: UIDs 2..6 at HIGHESTMODSEQ h0.
    let mut q = qresync_client(s.imap);
    let (h0, validity) = select_state(&q.ok("SELECT INBOX"));

    // Meanwhile: UID 2 flagged, UIDs 3 and 4 expunged.
    a.ok("UID STORE 2 +FLAGS (\\Flagged)");
    a.ok("UID STORE 3:4 +FLAGS (\\Deleted)");
    a.ok("EXPUNGE");

    // A QRESYNC session hears VANISHED, never EXPUNGE (RFC 7162 3.2.10).
    let r = q.ok("NOOP");
    let lines = r.lines();
    assert!(lines.contains(&"* VANISHED 3:4".to_string()), "{lines:?}");
    assert!(!lines.iter().any(|l| l.ends_with(" EXPUNGE")), "{lines:?}");
    // Its own EXPUNGE too.
    q.ok("UID STORE 6 +FLAGS (\\Deleted)");
    let r = q.ok("EXPUNGE");
    assert_eq!(r.with_prefix("VANISHED"), vec!["* VANISHED 6".to_string()]);
    // RFC 7162 3.2.7: the tagged OK carries the new HIGHESTMODSEQ.
    assert!(r.status.starts_with("OK [HIGHESTMODSEQ "), "{}", r.status);
    q.ok("LOGOUT");
    let want_full = vec![
        "* VANISHED (EARLIER) 3:4,6".to_string(),
        "* 1 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ)".to_string(),
    ];

    let check = |s: &Server, what: &str| {
        let mut c = qresync_client(s.imap);
        // Resync from h0: exactly UIDs 3, 4 and 6 vanished (not 1), and
        // UID 2's new flags.
        let r = c.ok(&format!("SELECT INBOX (QRESYNC ({validity} {h0}))"));
        assert_eq!(resync_lines(&r), want_full, "{what}: {:?}", r.lines());
        // Known UIDs narrow the answer.
        let r = c.ok(&format!("SELECT INBOX (QRESYNC ({validity} {h0} 2:3))"));
        assert!(
            r.lines()
                .iter()
                .any(|l| l == "* OK [CLOSED] Previous mailbox closed"),
            "{what}: {:?}",
            r.lines()
        );
        assert_eq!(
            resync_lines(&r),
            vec![
                "* VANISHED (EARLIER) 3".to_string(),
                "* 1 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ)".to_string(),
            ],
            "{what}"
        );
        // With the sequence-match data form as well.
        let r = c.ok(&format!(
            "EXAMINE INBOX (QRESYNC ({validity} {h0} 1:10 (1:3 2:4)))"
        ));
        assert_eq!(resync_lines(&r), want_full, "{what}: {:?}", r.lines());
        // A UIDVALIDITY that is not the mailbox's: a plain SELECT.
        let r = c.ok(&format!("SELECT INBOX (QRESYNC ({} {h0}))", validity + 1));
        assert!(resync_lines(&r).is_empty(), "{what}: {:?}", r.lines());
        // UID FETCH (CHANGEDSINCE h0 VANISHED): the same, limited to the set.
        let r = c.ok(&format!(
            "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {h0} VANISHED)"
        ));
        assert_eq!(resync_lines(&r), want_full, "{what}: {:?}", r.lines());
        // RFC 7162 3.2.6: VANISHED (EARLIER) before any FETCH.
        assert!(
            r.lines()[0].starts_with("* VANISHED (EARLIER)"),
            "{what}: {:?}",
            r.lines()
        );
        let r = c.ok(&format!(
            "UID FETCH 4:5 (FLAGS) (CHANGEDSINCE {h0} VANISHED)"
        ));
        assert_eq!(
            resync_lines(&r),
            vec!["* VANISHED (EARLIER) 4".to_string()],
            "{what}"
        );
        c.ok("LOGOUT");
    };
    check(&s, "running");
    s.kill9();
    s.restart();
    check(&s, "after kill -9");
    s.terminate();
    s.restart();
    check(&s, "after a clean restart");

    // Python's imaplib: ENABLE, then SELECT with the QRESYNC parameter.
    let out = python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{U}", "{PASSWORD}")
typ, data = m.enable("QRESYNC")
assert typ == "OK", (typ, data)
typ, data = m._simple_command("SELECT", "INBOX", "(QRESYNC ({validity} {h0}))")
assert typ == "OK", (typ, data)
print(m.untagged_responses.get("VANISHED"))
print(m.untagged_responses.get("FETCH"))
m.logout()
"#,
        port = s.imap.port()
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "[b'(EARLIER) 3:4,6']", "{out}");
    assert!(
        lines[1].starts_with("[b'1 (UID 2 FLAGS (\\\\Flagged) MODSEQ ("),
        "{out}"
    );
}

#[test]
fn qresync_forms_need_enable() {
    let s = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(s.imap, U, PASSWORD);
    let caps = c.ok("CAPABILITY").lines()[0].clone();
    assert!(caps.split(' ').any(|w| w == "QRESYNC"), "{caps}");
    // RFC 7162 3.2.5 and 3.2.6: BAD before ENABLE QRESYNC.
    let r = c.cmd("SELECT INBOX (QRESYNC (1 1))");
    assert!(r.status.starts_with("BAD"), "{}", r.status);
    c.ok("SELECT INBOX");
    let r = c.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)");
    assert!(r.status.starts_with("BAD"), "{}", r.status);
    // A classic session still gets EXPUNGE.
    c.append_ok("INBOX", "\\Deleted", None, b"Subject: x\r\n\r\nx\r\n");
    c.ok("NOOP");
    let r = c.ok("EXPUNGE");
    assert_eq!(r.lines(), vec!["* 1 EXPUNGE".to_string()]);
    // ENABLE both: QRESYNC and CONDSTORE are listed as asked.
    let r = c.ok("ENABLE CONDSTORE QRESYNC");
    assert_eq!(r.lines(), vec!["* ENABLED CONDSTORE QRESYNC".to_string()]);
    // VANISHED needs UID FETCH and CHANGEDSINCE, even once enabled.
    let r = c.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)");
    assert!(r.status.starts_with("BAD"), "{}", r.status);
    let r = c.cmd("UID FETCH 1:* (FLAGS) (VANISHED)");
    assert!(r.status.starts_with("BAD"), "{}", r.status);
    let r = c.cmd("SELECT INBOX (QRESYNC (0 1))");
    assert!(r.status.starts_with("BAD"), "uidvalidity 0: {}", r.status);
    c.ok("LOGOUT");
}

/// RFC 7162 3.2: a session that gets flag updates (with MODSEQ) while an
/// expunge is held back from it (during FETCH) is also told a HIGHESTMODSEQ
/// below that expunge; the expunge comes with the next command that may.
#[test]
fn held_back_expunge_lowers_highestmodseq() {
    let s = Server::options().accounts(&[U]).start();
    let mut a = Imap::login(s.imap, U, PASSWORD);
    for i in 1..=3 {
        a.append_ok("INBOX", "", None, &simple_message(&format!("m{i}"), "x"));
    }
    let mut q = qresync_client(s.imap);
    q.ok("SELECT INBOX");
    a.ok("SELECT INBOX");
    a.ok("UID STORE 2 +FLAGS (\\Deleted)");
    a.ok("UID EXPUNGE 2");
    a.ok("UID STORE 3 +FLAGS (\\Flagged)");
    let r = q.ok("FETCH 1 (UID)");
    let lines = r.lines();
    let modseq_of = |l: &str| -> u64 {
        let i = l.find("MODSEQ (").expect("MODSEQ") + 8;
        l[i..].split(')').next().unwrap().parse().unwrap()
    };
    let flag_line = lines
        .iter()
        .find(|l| l.contains("\\Flagged"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let hms = lines
        .iter()
        .find_map(|l| l.strip_prefix("* OK [HIGHESTMODSEQ "))
        .unwrap_or_else(|| panic!("no HIGHESTMODSEQ while an expunge is held: {lines:?}"));
    let hms: u64 = hms.split(']').next().unwrap().parse().unwrap();
    assert!(hms < modseq_of(flag_line), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.starts_with("* VANISHED")),
        "{lines:?}"
    );
    let r = q.ok("NOOP");
    assert_eq!(r.with_prefix("VANISHED"), vec!["* VANISHED 2".to_string()]);
}
