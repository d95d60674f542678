//! IMAP conformance cases, each end to end against the real
//! server with a raw client (exact responses) and, where it can say it,
//! Python's imaplib (py/imap_conformance.py):
//!
//! - EXAMINE leaves \Recent alone (RFC 3501 6.3.2), STATUS and SELECT agree;
//! - a mailbox deleted and created again gets a new UIDVALIDITY (RFC 3501
//!   2.3.1.1), with two sessions and across restarts and checkpoints;
//! - a maximal ID (RFC 2971) before login, and the bounds beyond it;
//! - LIST-EXTENDED (RFC 5258) option errors, RECURSIVEMATCH with
//!   SUBSCRIBED (CHILDINFO), several patterns;
//! - CONDSTORE (RFC 7162) HIGHESTMODSEQ on the first enabling command, the
//!   MODSEQ search key with entry name and type;
//! - SEARCH FROM/TO/CC/BCC over addresses with comments (RFC 5322 3.4);
//! - keywords announced in FLAGS before any FETCH carries them (RFC 3501
//!   7.2.6), with many concurrent sessions.
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

const U: &str = "conf@example.test";

fn message(subject: &str) -> Vec<u8> {
    format!("From: <a@example.test>\r\nTo: <{U}>\r\nSubject: {subject}\r\n\r\nbody\r\n")
        .into_bytes()
}

fn server() -> Server {
    Server::options().accounts(&[U]).start()
}

fn py(case: &str, server: &Server) {
    run_python(
        "imap_conformance.py",
        &[
            case.to_string(),
            server.imap.ip().to_string(),
            server.imap.port().to_string(),
            U.to_string(),
            PASSWORD.to_string(),
        ],
    );
}

// ---------------------------------------------------------------------------
// 1. EXAMINE and \Recent
// ---------------------------------------------------------------------------

#[test]
fn examine_does_not_clear_recent() {
    let server = server();
    let mut a = Imap::login(server.imap, U, PASSWORD);
    a.ok("CREATE Box");
    a.append_ok("Box", "", None, &message("one"));
    a.append_ok("Box", "", None, &message("two"));
    let r = a.ok("EXAMINE Box");
    assert_eq!(r.count("RECENT"), Some(2), "{r:#?}");
    assert!(r.status.starts_with("OK [READ-ONLY]"), "{r:?}");
    // The examining session sees them as \Recent too.
    let r = a.ok("FETCH 1:* FLAGS");
    assert!(r.lines().iter().all(|l| l.contains("\\Recent")), "{r:#?}");
    let r = a.ok("SEARCH RECENT");
    assert_eq!(r.search(), vec![1, 2]);
    a.ok("CLOSE");
    assert_eq!(
        a.ok("STATUS Box (RECENT MESSAGES)").status_item("RECENT"),
        2
    );
    // Examined again (and UNSELECTed): still nothing claimed.
    assert_eq!(a.ok("EXAMINE Box").count("RECENT"), Some(2));
    a.ok("UNSELECT");
    let mut b = Imap::login(server.imap, U, PASSWORD);
    assert_eq!(b.ok("STATUS Box (RECENT)").status_item("RECENT"), 2);

    // A message arriving while one session examines the mailbox is \Recent
    // there and still \Recent for the next SELECT.
    a.ok("EXAMINE Box");
    b.append_ok("Box", "", None, &message("three"));
    let r = a.ok("NOOP");
    assert_eq!(r.count("EXISTS"), Some(3), "{r:#?}");
    assert_eq!(r.count("RECENT"), Some(3), "{r:#?}");
    assert_eq!(b.ok("STATUS Box (RECENT)").status_item("RECENT"), 3);

    // The first read-write SELECT gets them all; then nobody else does.
    let r = b.ok("SELECT Box");
    assert_eq!(r.count("RECENT"), Some(3), "{r:#?}");
    assert!(r.status.starts_with("OK [READ-WRITE]"), "{r:?}");
    assert_eq!(
        b.ok("STATUS Box (RECENT)").status_item("RECENT"),
        3,
        "own \\Recent messages count in STATUS"
    );
    a.ok("CLOSE");
    assert_eq!(a.ok("STATUS Box (RECENT)").status_item("RECENT"), 0);
    assert_eq!(a.ok("EXAMINE Box").count("RECENT"), Some(0));
    a.ok("CLOSE");
    b.ok("CLOSE");
    assert_eq!(b.ok("SELECT Box").count("RECENT"), Some(0));
    b.ok("LOGOUT");

    // The same through imaplib: select(readonly=True) is EXAMINE.
    py("examine_recent", &server);
}

// ---------------------------------------------------------------------------
// 2. UIDVALIDITY of a mailbox deleted and created again
// ---------------------------------------------------------------------------

/// (UIDVALIDITY, UIDNEXT) of a mailbox through STATUS.
#[track_caller]
fn validity(c: &mut Imap, mailbox: &str) -> (u64, u64) {
    let r = c.ok(&format!("STATUS {mailbox} (UIDNEXT UIDVALIDITY)"));
    (r.status_item("UIDVALIDITY"), r.status_item("UIDNEXT"))
}

#[test]
fn recreated_mailbox_gets_a_new_uidvalidity() {
    let mut server = server();
    let mut a = Imap::login(server.imap, U, PASSWORD);
    let mut b = Imap::login(server.imap, U, PASSWORD);
    a.ok("CREATE Cache");
    a.append_ok("Cache", "", None, &message("old"));
    let (v0, next0) = validity(&mut a, "Cache");
    assert_eq!(next0, 2);
    let r = a.ok("SELECT Cache");
    assert!(
        r.lines()
            .iter()
            .any(|l| l.contains(&format!("[UIDVALIDITY {v0}]"))),
        "{r:#?}"
    );
    // Another session deletes it, creates it again and appends, all within
    // the same second: a client caching UID 1 must see another UIDVALIDITY.
    b.ok("DELETE Cache");
    b.ok("CREATE Cache");
    b.append_ok("Cache", "", None, &message("new"));
    let (v1, next1) = validity(&mut b, "Cache");
    assert!(
        v1 > v0,
        "UIDVALIDITY {v1} after delete and create, was {v0}"
    );
    assert_eq!(next1, 2);
    // The session that had it selected is ended with BYE at its next
    // command (as Dovecot does); a new session sees the new mailbox.
    let t = a.tag();
    a.send(format!("{t} NOOP\r\n").as_bytes());
    assert!(text(&a.response()).starts_with("* BYE "));
    assert!(a.closed_within(Duration::from_secs(5)));
    let mut a = Imap::login(server.imap, U, PASSWORD);
    assert_eq!(validity(&mut a, "Cache").0, v1);
    let r = a.ok("SELECT Cache");
    assert!(
        r.lines()
            .iter()
            .any(|l| l.contains(&format!("[UIDVALIDITY {v1}]"))),
        "{r:#?}"
    );
    let r = a.ok("APPEND Cache {1+}\r\nx");
    assert!(r.status.contains(&format!("[APPENDUID {v1} 2]")), "{r:?}");

    // RENAME takes the UIDVALIDITY along; a new mailbox of the old name gets another.
    b.ok("RENAME Cache Moved");
    assert_eq!(validity(&mut b, "Moved").0, v1);
    b.ok("CREATE Cache");
    let v2 = validity(&mut b, "Cache").0;
    assert!(v2 > v1, "{v2} after RENAME and CREATE, was {v1}");
    b.ok("DELETE Cache");
    a.ok("LOGOUT");
    b.ok("LOGOUT");

    // Across restarts: replayed from the log (kill -9), then from the
    // checkpoint a clean shutdown writes, the deleted mailboxes' values stay used.
    let mut seen = vec![v0, v1, v2];
    for clean in [false, true, false] {
        if clean {
            server.terminate();
        } else {
            server.kill9();
        }
        server.restart();
        let mut c = Imap::login(server.imap, U, PASSWORD);
        assert_eq!(validity(&mut c, "Moved").0, v1);
        c.ok("CREATE Cache");
        c.append_ok("Cache", "", None, &message("after restart"));
        let (v, next) = validity(&mut c, "Cache");
        assert!(
            v > *seen.iter().max().unwrap(),
            "UIDVALIDITY {v} after restart, earlier {seen:?}"
        );
        assert_eq!(next, 2);
        seen.push(v);
        c.ok("DELETE Cache");
        c.ok("LOGOUT");
    }
}

// ---------------------------------------------------------------------------
// 3. ID (RFC 2971) at its maximum, before login
// ---------------------------------------------------------------------------

/// `ID (...)` with `pairs` pairs of 30-octet fields and `value`-octet values.
fn id_args(pairs: usize, value: usize) -> String {
    let list: Vec<String> = (0..pairs)
        .map(|i| format!("\"{}{i:02}\" \"{}\"", "f".repeat(28), "v".repeat(value)))
        .collect();
    format!("ID ({})", list.join(" "))
}

#[test]
fn maximal_id_before_login() {
    let server = server();
    let mut c = Imap::connect(server.imap);
    // 30 pairs, 30-octet fields, 1024-octet values: about 32 KiB on one line.
    let r = c.ok(&id_args(30, 1024));
    assert_eq!(r.with_prefix("ID (").len(), 1, "{r:#?}");
    // Values as synchronizing literals (the client waits for each "+").
    let t = c.tag();
    let mut line = format!("{t} ID (");
    for i in 0..30 {
        line.push_str(&format!("\"field{i}\" {{1024}}\r\n"));
        c.send(line.as_bytes());
        let cont = c.line();
        assert!(cont.starts_with("+ "), "{cont:?}");
        line = "v".repeat(1024);
        if i < 29 {
            line.push(' ');
        }
    }
    line.push_str(")\r\n");
    c.send(line.as_bytes());
    assert!(c.until(&t).ok());
    // Beyond the RFC's bounds: BAD, and the session goes on.
    c.bad(&id_args(31, 10));
    c.bad(&id_args(1, 1025));
    c.bad(&format!("ID (\"{}\" NIL)", "f".repeat(31)));
    let t = c.tag();
    c.send(format!("{t} ID (\"k\" {{1025+}}\r\n{}\r\n", "v".repeat(1025)).as_bytes());
    assert!(c.until(&t).status.starts_with("BAD"));
    // Longer than the largest ID, and any other command of a few KiB: refused.
    let t = c.tag();
    c.send(format!("{t} ID (\"k\" \"{}\")\r\n", "v".repeat(100_000)).as_bytes());
    assert!(c.until(&t).status.starts_with("BAD"));
    c.bad(&format!("LOGIN {U} \"{}\"", "p".repeat(5000)));
    c.ok("NOOP");
    c.ok(&format!("LOGIN {U} {PASSWORD}"));
    // The same after login.
    assert_eq!(c.ok(&id_args(30, 1024)).with_prefix("ID (").len(), 1);
    c.bad(&id_args(31, 10));
    c.ok("LOGOUT");
    py("id_maximal", &server);
}

// ---------------------------------------------------------------------------
// 4. LIST-EXTENDED (RFC 5258)
// ---------------------------------------------------------------------------

/// The LIST responses of a command, as (attributes, name, extended data).
#[track_caller]
fn list(c: &mut Imap, cmd: &str) -> Vec<(String, String, String)> {
    let r = c.ok(cmd);
    r.with_prefix("LIST ")
        .iter()
        .map(|l| {
            let open = l.find('(').unwrap();
            let close = l[open..].find(')').unwrap() + open;
            let attrs = l[open + 1..close].to_string();
            // `) "/" NAME [EXTENDED]`
            let rest = &l[close + 6..];
            let (name, ext) = if let Some(q) = rest.strip_prefix('"') {
                let end = q.find('"').unwrap();
                (q[..end].to_string(), q[end + 1..].trim().to_string())
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                (rest[..end].to_string(), rest[end..].trim().to_string())
            };
            (attrs, name, ext)
        })
        .collect()
}

fn list_names(l: &[(String, String, String)]) -> Vec<&str> {
    l.iter().map(|e| e.1.as_str()).collect()
}

#[test]
fn list_extended_options_and_recursivematch() {
    let server = server();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    // RFC 5258 section 5, example 8: Foo, Foo/Bar, Foo/Baz, Moo; only Foo/Baz subscribed.
    for m in ["Foo", "Foo/Bar", "Foo/Baz", "Moo"] {
        c.ok(&format!("CREATE {m}"));
    }
    c.ok("SUBSCRIBE Foo/Baz");

    // Selection and return options the server must refuse.
    for bad in [
        "LIST (unknownoption) \"\" \"\"",
        "LIST (RECURSIVEMATCH) \"\" \"\"",
        "LIST (RECURSIVEMATCH) \"\" \"%\"",
        "LIST (REMOTE RECURSIVEMATCH) \"\" \"%\"",
        "LIST (RECURSIVEMATCH REMOTE) \"\" \"*\"",
        "LIST (SUBSCRIBED unknown) \"\" \"*\"",
        "LIST \"\" \"%\" RETURN (unknown)",
        "LIST (SUBSCRIBED) \"\" \"%\" RETURN (CHILDREN unknown)",
        "LIST () \"\" \"%\" RETURN (STATUS (MESSAGES) x-unknown)",
    ] {
        c.bad(bad);
    }
    c.ok("LIST (REMOTE) \"\" \"%\"");
    c.ok("LIST () \"\" \"%\" RETURN ()");

    let l = list(&mut c, "LIST (SUBSCRIBED) \"\" \"*\"");
    assert_eq!(list_names(&l), ["Foo/Baz"], "{l:?}");
    assert!(list(&mut c, "LIST (SUBSCRIBED) \"\" \"%\"").is_empty());
    // Foo is not subscribed but has a subscribed child that `%` does not return.
    let l = list(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"");
    assert_eq!(list_names(&l), ["Foo"], "{l:?}");
    assert!(!l[0].0.contains("\\Subscribed"), "{l:?}");
    assert_eq!(l[0].2, "(\"CHILDINFO\" (\"SUBSCRIBED\"))", "{l:?}");
    // Same with the options in the other order and RETURN (CHILDREN).
    let l = list(
        &mut c,
        "LIST (RECURSIVEMATCH SUBSCRIBED) \"\" \"%\" RETURN (CHILDREN)",
    );
    assert_eq!(list_names(&l), ["Foo"], "{l:?}");
    assert!(
        l[0].0.contains("\\HasChildren") && l[0].2.contains("CHILDINFO"),
        "{l:?}"
    );
    // With `*` the child is returned itself: no redundant parent (RFC 5258 3.5).
    let l = list(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"*\"");
    assert_eq!(list_names(&l), ["Foo/Baz"], "{l:?}");
    assert_eq!(l[0].2, "", "{l:?}");

    // A1: Foo subscribed as well.
    c.ok("SUBSCRIBE Foo");
    let l = list(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"");
    assert_eq!(list_names(&l), ["Foo"], "{l:?}");
    assert!(l[0].0.contains("\\Subscribed"), "{l:?}");
    assert_eq!(l[0].2, "(\"CHILDINFO\" (\"SUBSCRIBED\"))", "{l:?}");
    // Without RECURSIVEMATCH there is never CHILDINFO.
    let l = list(&mut c, "LIST (SUBSCRIBED) \"\" \"%\"");
    assert_eq!(list_names(&l), ["Foo"], "{l:?}");
    assert_eq!(l[0].2, "", "{l:?}");
    c.ok("UNSUBSCRIBE Foo");

    // A2: the parent does not exist (only its children do).
    c.ok("CREATE Par/Kid");
    c.ok("SUBSCRIBE Par/Kid");
    c.ok("UNSUBSCRIBE Foo/Baz");
    let l = list(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"");
    assert_eq!(list_names(&l), ["Par"], "{l:?}");
    assert_eq!(l[0].2, "(\"CHILDINFO\" (\"SUBSCRIBED\"))", "{l:?}");
    // A subscription to a mailbox that does not exist counts too.
    c.ok("SUBSCRIBE Ghost/Sub");
    let l = list(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"");
    assert_eq!(list_names(&l), ["Ghost", "Par"], "{l:?}");
    assert!(l[0].0.contains("\\NonExistent"), "{l:?}");
    let l = list(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"G*\"");
    assert_eq!(list_names(&l), ["Ghost/Sub"], "{l:?}");
    assert!(
        l[0].0.contains("\\NonExistent") && l[0].0.contains("\\Subscribed"),
        "{l:?}"
    );
    // Deeper descendants count (RECURSIVEMATCH is recursive).
    c.ok("CREATE Deep/A/B");
    c.ok("SUBSCRIBE Deep/A/B");
    let l = list(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"D%\"");
    assert_eq!(list_names(&l), ["Deep"], "{l:?}");
    let l = list(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"Deep/\" \"%\"");
    assert_eq!(list_names(&l), ["Deep/A"], "{l:?}");
    assert!(l[0].2.contains("CHILDINFO"), "{l:?}");

    // Several patterns: each is matched, every mailbox listed once.
    let l = list(&mut c, "LIST \"\" (\"INBOX\" Moo \"Foo/%\")");
    assert_eq!(
        list_names(&l),
        ["INBOX", "Foo/Bar", "Foo/Baz", "Moo"],
        "{l:?}"
    );
    let l = list(
        &mut c,
        "LIST () \"\" (Moo \"M*\" \"Foo\") RETURN (CHILDREN)",
    );
    assert_eq!(list_names(&l), ["Foo", "Moo"], "{l:?}");
    let l = list(
        &mut c,
        "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"Par\" \"Deep/%\")",
    );
    assert_eq!(list_names(&l), ["Deep/A", "Par"], "{l:?}");
    let l = list(&mut c, "LIST \"Foo/\" (Bar Baz nothing)");
    assert_eq!(list_names(&l), ["Foo/Bar", "Foo/Baz"], "{l:?}");
    let l = list(
        &mut c,
        "LIST (SPECIAL-USE) \"\" (\"Sent\" \"Drafts\" Moo) RETURN (SPECIAL-USE)",
    );
    assert_eq!(list_names(&l), ["Drafts", "Sent"], "{l:?}");
    let l = list(&mut c, "LIST \"\" (Moo) RETURN (STATUS (MESSAGES))");
    assert_eq!(list_names(&l), ["Moo"], "{l:?}");
    c.ok("LOGOUT");
    py("list_extended", &server);
}

// ---------------------------------------------------------------------------
// 5. CONDSTORE enabling commands and the MODSEQ search key (RFC 7162)
// ---------------------------------------------------------------------------

/// A session with `Cond` selected without CONDSTORE.
fn selected_plain(server: &Server) -> Imap {
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let r = c.ok("SELECT Cond");
    assert!(r.ok());
    let r = c.ok("FETCH 1:* FLAGS");
    assert!(r.lines().iter().all(|l| !l.contains("MODSEQ")), "{r:#?}");
    c
}

#[test]
fn condstore_enabling_commands_and_modseq_search() {
    let server = server();
    let mut a = Imap::login(server.imap, U, PASSWORD);
    a.ok("CREATE Cond");
    for i in 1..=4 {
        a.append_ok(
            "Cond",
            if i == 3 { "\\Seen" } else { "" },
            None,
            &message(&format!("m{i}")),
        );
    }
    a.ok("SELECT Cond");
    a.ok("STORE 1 +FLAGS (\\Flagged)");
    a.ok("CLOSE");
    let highest = a
        .ok("STATUS Cond (HIGHESTMODSEQ)")
        .status_item("HIGHESTMODSEQ");
    let want = format!("OK [HIGHESTMODSEQ {highest}]");

    // Each enabling command, first in a session with the mailbox selected.
    for cmd in [
        "FETCH 1 MODSEQ",
        "FETCH 1:2 (FLAGS) (CHANGEDSINCE 1)",
        "UID FETCH 1:* (UID MODSEQ)",
        "SEARCH MODSEQ 1",
        "UID SEARCH RETURN (COUNT) MODSEQ 1",
        "STATUS Cond (HIGHESTMODSEQ)",
        "STATUS INBOX (MESSAGES HIGHESTMODSEQ)",
        "ENABLE CONDSTORE",
    ] {
        let mut c = selected_plain(&server);
        let r = c.ok(cmd);
        assert!(r.status.starts_with(&want), "{cmd}: {r:#?}");
        // Only the first one says it; from now on FETCH carries MODSEQ.
        let r = c.ok(cmd);
        assert!(!r.status.contains("HIGHESTMODSEQ"), "{cmd} again: {r:?}");
        let r = c.ok("FETCH 2 FLAGS");
        assert!(
            r.lines()[0].contains("MODSEQ ("),
            "{cmd}, then FETCH: {r:#?}"
        );
        c.ok("LOGOUT");
    }
    // STORE UNCHANGEDSINCE changes the mailbox: the value after the change.
    let mut c = selected_plain(&server);
    let r = c.ok("STORE 4 (UNCHANGEDSINCE 1000000) +FLAGS (\\Answered)");
    let now = c
        .ok("STATUS Cond (HIGHESTMODSEQ)")
        .status_item("HIGHESTMODSEQ");
    assert!(
        now > highest && r.status.starts_with(&format!("OK [HIGHESTMODSEQ {now}]")),
        "{r:#?}"
    );
    // A conditional STORE that fails for some messages keeps [MODIFIED] in
    // the tagged OK; HIGHESTMODSEQ comes untagged.
    let mut c = selected_plain(&server);
    let r = c.ok("STORE 1:2 (UNCHANGEDSINCE 1) +FLAGS (\\Draft)");
    assert!(r.status.starts_with("OK [MODIFIED 1:2]"), "{r:#?}");
    assert!(
        r.lines()
            .iter()
            .any(|l| l.starts_with(&format!("* OK [HIGHESTMODSEQ {now}]"))),
        "{r:#?}"
    );
    // SELECT (CONDSTORE) and ENABLE before SELECT report it at SELECT already.
    for first in ["SELECT Cond (CONDSTORE)", "ENABLE CONDSTORE"] {
        let mut c = Imap::login(server.imap, U, PASSWORD);
        let r = c.ok(first);
        let r = if first.starts_with("ENABLE") {
            assert!(!r.status.contains("HIGHESTMODSEQ"), "{r:?}");
            c.ok("SELECT Cond")
        } else {
            r
        };
        assert!(
            r.lines()
                .iter()
                .any(|l| l.contains(&format!("[HIGHESTMODSEQ {now}]"))),
            "{r:#?}"
        );
        let r = c.ok("FETCH 1 MODSEQ");
        assert!(!r.status.contains("HIGHESTMODSEQ"), "{r:?}");
    }
    // Not selected: nothing to report.
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let r = c.ok("STATUS Cond (HIGHESTMODSEQ)");
    assert!(!r.status.contains("["), "{r:?}");

    // The MODSEQ key with an entry name and type (RFC 7162 3.1.5).
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.ok("SELECT Cond");
    let ms: Vec<u64> = c
        .fetch("FETCH 1:4 MODSEQ")
        .iter()
        .map(Fetch::modseq)
        .collect();
    let m23 = ms[1].max(ms[2]);
    for cmd in [
        "SEARCH RETURN (ALL) 2:3 MODSEQ \"/flags/\\\\seen\" all 1",
        "SEARCH RETURN (ALL) 2:3 MODSEQ \"/flags/\\seen\" all 1",
        "SEARCH RETURN (ALL) 2:3 MODSEQ \"/flags/\\\\seen\" all",
        "SEARCH RETURN (ALL) 2:3 MODSEQ \"/flags/\\\\Seen\" shared 1",
        "SEARCH RETURN (ALL) 2:3 MODSEQ \"/flags/$Label1\" priv 0",
    ] {
        let r = c.ok(cmd);
        let e = r.with_prefix("ESEARCH");
        assert_eq!(e.len(), 1, "{cmd}: {r:#?}");
        assert!(
            e[0].ends_with(&format!(") ALL 2:3 MODSEQ {m23}")),
            "{cmd}: {e:?}"
        );
    }
    let r = c.ok("UID SEARCH RETURN (ALL) 2:3 MODSEQ \"/flags/\\\\seen\" all 1");
    assert!(
        r.with_prefix("ESEARCH")[0].ends_with(&format!(") UID ALL 2:3 MODSEQ {m23}")),
        "{r:#?}"
    );
    // SEARCH without RETURN: `(MODSEQ n)` after the numbers.
    let r = c.ok("SEARCH 2:3 MODSEQ \"/flags/\\\\seen\" all 1");
    assert_eq!(
        r.with_prefix("SEARCH")[0],
        format!("* SEARCH 2 3 (MODSEQ {m23})")
    );
    // MIN/MAX only: the mod-sequence of the messages returned.
    let r = c.ok("SEARCH RETURN (MIN) 2:3 MODSEQ 1");
    assert!(
        r.with_prefix("ESEARCH")[0].ends_with(&format!(") MIN 2 MODSEQ {}", ms[1])),
        "{r:#?}"
    );
    // A MODSEQ key inside OR or NOT counts as well; no match: no MODSEQ.
    let r = c.ok("SEARCH RETURN (COUNT) OR MODSEQ 1 SEEN");
    assert!(
        r.with_prefix("ESEARCH")[0].contains(" COUNT 4 MODSEQ "),
        "{r:#?}"
    );
    let r = c.ok("SEARCH MODSEQ 999999999");
    assert_eq!(r.with_prefix("SEARCH")[0], "* SEARCH");
    c.bad("SEARCH MODSEQ \"/flags/\\\\seen\" bogus 1");
    c.bad("SEARCH MODSEQ");
    c.ok("LOGOUT");
    py("condstore", &server);
}

// ---------------------------------------------------------------------------
// 6. SEARCH FROM/TO/CC/BCC over addresses with comments (RFC 5322 3.4)
// ---------------------------------------------------------------------------

#[test]
fn search_address_with_comments() {
    let server = server();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.ok("CREATE Addr");
    let forms = [
        "user-from@domain.org",
        "User From <user-from@domain.org>",
        "user-from@domain.org (User From)",
        "<user-from (comment)@ (comment) domain.org>",
        "(lead) user-from (x) @ (y)\r\n domain (z) . org",
    ];
    for form in forms {
        let msg = format!(
            "From: {form}\r\nTo: {}\r\nCc: {}\r\nBcc: {}\r\nSubject: cfws\r\n\r\nbody\r\n",
            form.replace("from", "to"),
            form.replace("from", "cc"),
            form.replace("from", "bcc")
        );
        c.append_ok("Addr", "", None, msg.as_bytes());
    }
    c.append_ok(
        "Addr",
        "",
        None,
        b"From: <someone (a comment)@else.org>\r\nSubject: no\r\n\r\nx\r\n",
    );
    c.ok("SELECT Addr");
    let all: Vec<u32> = (1..=forms.len() as u32).collect();
    for (key, addr) in [
        ("FROM", "user-from@domain.org"),
        ("TO", "user-to@domain.org"),
        ("CC", "user-cc@domain.org"),
        ("BCC", "user-bcc@domain.org"),
    ] {
        assert_eq!(c.ok(&format!("SEARCH {key} {addr}")).search(), all, "{key}");
        assert_eq!(
            c.ok(&format!("SEARCH {key} \"{}\"", addr.to_uppercase()))
                .search(),
            all,
            "{key}"
        );
        // The UID form, and through NOT / OR.
        assert_eq!(
            c.ok(&format!("UID SEARCH {key} {addr}")).search(),
            all,
            "UID {key}"
        );
        assert_eq!(
            c.ok(&format!("SEARCH NOT {key} {addr}")).search().len(),
            1,
            "NOT {key}"
        );
        assert_eq!(
            c.ok(&format!("SEARCH OR {key} {addr} SUBJECT nothing"))
                .search(),
            all,
            "OR {key}"
        );
    }
    assert!(c
        .ok("SEARCH FROM user-from@domain.org.uk")
        .search()
        .is_empty());
    assert_eq!(c.ok("SEARCH FROM someone@else.org").search(), vec![6]);
    assert!(
        c.ok("SEARCH FROM \"a comment\"").search() == vec![6],
        "the field text still matches as well"
    );
    c.ok("LOGOUT");
    py("search_cfws", &server);
}

// ---------------------------------------------------------------------------
// 7. Keywords are announced in FLAGS before FETCH uses them (RFC 3501 7.2.6)
// ---------------------------------------------------------------------------

/// Follows one session's FLAGS announcements and checks every FETCH FLAGS
/// against them.
#[derive(Default)]
struct FlagsWatch {
    known: Vec<String>,
    fetches: usize,
}

impl FlagsWatch {
    #[track_caller]
    fn see(&mut self, line: &str, who: &str) {
        if let Some(rest) = line.strip_prefix("* FLAGS (") {
            self.known = rest
                .trim_end_matches(')')
                .split(' ')
                .map(str::to_string)
                .collect();
            return;
        }
        let Some(i) = line.find(" FETCH (") else {
            return;
        };
        let Some(f) = line[i..].find("FLAGS (") else {
            return;
        };
        let list = &line[i + f + 7..];
        let list = &list[..list.find(')').unwrap()];
        self.fetches += 1;
        for flag in list
            .split(' ')
            .filter(|f| !f.is_empty() && !f.starts_with('\\'))
        {
            assert!(
                self.known.iter().any(|k| k.eq_ignore_ascii_case(flag)),
                "{who}: {flag} in {line:?} before any FLAGS naming it (FLAGS was {:?})",
                self.known
            );
        }
    }

    #[track_caller]
    fn resp(&mut self, r: &Resp, who: &str) {
        for l in r.lines() {
            self.see(&l, who);
        }
    }
}

#[test]
fn keywords_announced_before_fetch_uses_them() {
    let server = server();
    let mut setup = Imap::login(server.imap, U, PASSWORD);
    setup.ok("CREATE Kw");
    for i in 0..20 {
        setup.append_ok("Kw", "", None, &message(&format!("k{i}")));
    }

    // The plain cases, one by one: another session's STORE, APPEND with a
    // keyword, COPY of a message with one, seen by NOOP, FETCH, STORE and IDLE.
    let mut a = Imap::login(server.imap, U, PASSWORD);
    let mut wa = FlagsWatch::default();
    wa.resp(&a.ok("SELECT Kw"), "a");
    let mut b = Imap::login(server.imap, U, PASSWORD);
    b.ok("SELECT Kw");
    b.ok("STORE 1 +FLAGS ($Label1)");
    let r = a.ok("NOOP");
    wa.resp(&r, "a");
    assert!(wa.known.contains(&"$Label1".to_string()), "{r:#?}");
    b.ok("STORE 2 +FLAGS ($Label2)");
    wa.resp(&a.ok("FETCH 1:3 FLAGS"), "a");
    b.ok("STORE 3 +FLAGS ($Label3)");
    let r = a.ok("STORE 3 +FLAGS (\\Flagged)");
    wa.resp(&r, "a");
    assert!(wa.known.contains(&"$Label3".to_string()), "{r:#?}");
    b.ok("STORE 4 +FLAGS ($Label4)");
    wa.resp(&a.ok("UID FETCH 1:* (FLAGS)"), "a");
    b.ok("STORE 5 +FLAGS ($Label5)");
    wa.resp(&a.ok("UID STORE 5 +FLAGS.SILENT (\\Seen)"), "a");
    wa.resp(&a.ok("FETCH 5 (FLAGS BODY[TEXT])"), "a");
    // APPEND and COPY into the selected mailbox by the other session.
    b.append_ok("Kw", "$Appended", None, &message("with keyword"));
    b.ok("CREATE Other");
    b.append_ok("Other", "$Copied", None, &message("to copy"));
    b.ok("SELECT Other");
    b.ok("COPY 1 Kw");
    let r = a.ok("NOOP");
    wa.resp(&r, "a");
    for k in ["$Appended", "$Copied"] {
        assert!(wa.known.contains(&k.to_string()), "{k}: {r:#?}");
    }
    // IDLE: the FLAGS comes before the FETCH within the idle updates.
    let t = a.tag();
    a.send(format!("{t} IDLE\r\n").as_bytes());
    assert!(a.response().starts_with(b"+ "));
    b.ok("SELECT Kw");
    b.ok("STORE 6 +FLAGS ($Idle)");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = text(&a.response());
        wa.see(&l, "a (IDLE)");
        if l.contains(" FETCH (") && l.contains("$Idle") {
            break;
        }
        assert!(Instant::now() < deadline, "no FETCH with $Idle during IDLE");
    }
    a.send(b"DONE\r\n");
    let r = a.until(&t);
    assert!(r.ok());
    wa.resp(&r, "a");
    a.ok("LOGOUT");
    b.ok("LOGOUT");

    // 50 concurrent sessions storing new keywords on shared messages and
    // fetching flags; every session checks what it is told.
    let addr = server.imap;
    let threads: Vec<_> = (0..50)
        .map(|n| {
            std::thread::spawn(move || {
                let who = format!("client {n}");
                let mut c = Imap::login(addr, U, PASSWORD);
                let mut w = FlagsWatch::default();
                w.resp(&c.ok("SELECT Kw"), &who);
                for round in 0..12u32 {
                    let msg = (n * 7 + round as usize * 3) % 20 + 1;
                    let kw = format!("$Stress{}", (n + round as usize) % 30);
                    let cmd = match round % 4 {
                        0 => format!("STORE {msg} +FLAGS ({kw})"),
                        1 => "FETCH 1:* FLAGS".to_string(),
                        2 => format!("UID STORE {msg} FLAGS ({kw} $Label1 \\Seen)"),
                        _ => "NOOP".to_string(),
                    };
                    let r = c.cmd(&cmd);
                    assert!(r.ok(), "{who}: {cmd} -> {r:?}");
                    w.resp(&r, &who);
                }
                c.ok("LOGOUT");
                w.fetches
            })
        })
        .collect();
    let fetches: usize = threads
        .into_iter()
        .map(|t| t.join().expect("a stress session failed"))
        .sum();
    assert!(
        fetches > 500,
        "only {fetches} FETCH FLAGS responses checked"
    );
    py("keywords_announced", &server);
}
