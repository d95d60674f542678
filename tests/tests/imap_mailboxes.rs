//! IMAP mailboxes (shared client in support/imap.rs):
//! LIST/LSUB/LIST-EXTENDED/LIST-STATUS/SPECIAL-USE, CREATE, RENAME (INBOX
//! too), DELETE, STATUS, NAMESPACE, ID, ENABLE, UNSELECT, CLOSE, EXAMINE.
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

// ---------------------------------------------------------------------------
// 9. Mailboxes
// ---------------------------------------------------------------------------

#[test]
fn mailbox_management() {
    const U: &str = "folders@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let defaults = ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"];

    // The empty pattern asks for the delimiter.
    let r = c.ok("LIST \"\" \"\"");
    assert_eq!(
        r.lines(),
        vec!["* LIST (\\Noselect) \"/\" \"\"".to_string()]
    );
    let r = c.ok("LIST \"\" \"*\"");
    let l = list_of(&r, "LIST");
    let mut n = names(&l);
    n.sort();
    let mut want: Vec<String> = defaults.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(n, want, "{r:?}");
    for (name, use_) in [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ] {
        assert!(
            attrs_of(&l, name).contains(&use_.to_string()),
            "{name}: {l:?}"
        );
        assert!(
            attrs_of(&l, name).contains(&"\\HasNoChildren".to_string()),
            "{name}: {l:?}"
        );
    }
    // LIST (SPECIAL-USE): only the special-use mailboxes (RFC 6154 5.1).
    let r = c.ok("LIST (SPECIAL-USE) \"\" \"*\"");
    let mut n = names(&list_of(&r, "LIST"));
    n.sort();
    assert_eq!(n, vec!["Archive", "Drafts", "Junk", "Sent", "Trash"]);

    // CREATE with hierarchy: superiors are created too (RFC 3501 6.3.3).
    c.ok("CREATE Projects/2026/Q1");
    c.ok("CREATE \"My Folder\"");
    c.ok("CREATE New/"); // a trailing delimiter is not part of the name
    let r = c.ok("LIST \"\" \"*\"");
    let l = list_of(&r, "LIST");
    for name in [
        "Projects",
        "Projects/2026",
        "Projects/2026/Q1",
        "My Folder",
        "New",
    ] {
        assert!(
            names(&l).contains(&name.to_string()),
            "{name} missing: {l:?}"
        );
    }
    assert!(!names(&l).contains(&"New/".to_string()));
    assert!(
        attrs_of(&l, "Projects").contains(&"\\HasChildren".to_string()),
        "{l:?}"
    );
    assert!(
        attrs_of(&l, "Projects/2026").contains(&"\\HasChildren".to_string()),
        "{l:?}"
    );
    assert!(
        attrs_of(&l, "Projects/2026/Q1").contains(&"\\HasNoChildren".to_string()),
        "{l:?}"
    );
    assert!(
        !attrs_of(&l, "Projects").contains(&"\\Noselect".to_string()),
        "created superiors are real mailboxes"
    );
    c.ok("EXAMINE Projects");
    for (cmd, code) in [
        ("CREATE Projects", "ALREADYEXISTS"),
        ("CREATE Projects/", "ALREADYEXISTS"),
        ("CREATE INBOX", "ALREADYEXISTS"),
        ("CREATE inbox", "ALREADYEXISTS"),
    ] {
        let r = c.cmd(cmd);
        assert!(r.status.starts_with("NO"), "{cmd}: {r:?}");
        if r.status.starts_with("NO [") {
            assert_eq!(r.code().as_deref(), Some(code), "{cmd}: {r:?}");
        }
    }
    // "%" does not cross the delimiter.
    let r = c.ok("LIST \"\" \"%\"");
    let mut n = names(&list_of(&r, "LIST"));
    n.sort();
    let mut want: Vec<String> = defaults
        .iter()
        .map(|s| s.to_string())
        .chain(["Projects", "My Folder", "New"].map(String::from))
        .collect();
    want.sort();
    assert_eq!(n, want, "{r:?}");
    let r = c.ok("LIST \"\" \"Projects/%\"");
    assert_eq!(names(&list_of(&r, "LIST")), vec!["Projects/2026"]);
    let r = c.ok("LIST \"Projects/\" \"%\"");
    assert_eq!(
        names(&list_of(&r, "LIST")),
        vec!["Projects/2026"],
        "reference + pattern"
    );
    let r = c.ok("LIST \"\" \"inbox\"");
    assert_eq!(
        names(&list_of(&r, "LIST")),
        vec!["INBOX"],
        "INBOX is case-insensitive"
    );

    // Some mail to count.
    c.append_ok(
        "Projects/2026/Q1",
        "\\Seen",
        None,
        &simple_message("q1", "q1"),
    );
    c.append_ok("INBOX", "", None, &simple_message("in1", "in1"));
    c.append_ok("INBOX", "\\Seen", None, &simple_message("in2", "in2"));
    c.append_ok("Trash", "", None, &simple_message("t1", "t1"));

    // LIST-STATUS (RFC 5819) with SPECIAL-USE returned (RFC 6154).
    let r = c.ok("LIST \"\" \"*\" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN))");
    let l = list_of(&r, "LIST");
    assert!(attrs_of(&l, "Trash").contains(&"\\Trash".to_string()));
    let statuses: Vec<String> = r.with_prefix("STATUS");
    assert!(
        statuses.contains(&"* STATUS INBOX (MESSAGES 2 UNSEEN 1)".to_string()),
        "{r:?}"
    );
    assert!(
        statuses.contains(&"* STATUS Trash (MESSAGES 1 UNSEEN 1)".to_string()),
        "{r:?}"
    );
    assert!(
        statuses.contains(&"* STATUS Projects/2026/Q1 (MESSAGES 1 UNSEEN 0)".to_string()),
        "{r:?}"
    );
    assert!(
        statuses.contains(&"* STATUS \"My Folder\" (MESSAGES 0 UNSEEN 0)".to_string()),
        "{r:?}"
    );
    assert_eq!(
        statuses.len(),
        l.len(),
        "one STATUS per selectable mailbox: {r:?}"
    );
    // Each STATUS follows its LIST.
    let lines = r.lines();
    for (k, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("* STATUS ") {
            let name = rest.rsplit_once(" (").unwrap().0.trim_matches('"');
            assert!(
                k > 0
                    && (lines[k - 1].ends_with(&format!(" {name}"))
                        || lines[k - 1].ends_with(&format!(" \"{name}\""))),
                "STATUS {name} not right after its LIST: {lines:?}"
            );
        }
    }

    // STATUS with everything.
    let r = c.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)");
    let st = status_of(&r);
    assert_eq!(
        st.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        vec![
            "MESSAGES",
            "RECENT",
            "UIDNEXT",
            "UIDVALIDITY",
            "UNSEEN",
            "HIGHESTMODSEQ"
        ]
    );
    assert_eq!(get(&st, "MESSAGES"), 2);
    // Nobody has selected INBOX yet: both appended messages are \Recent
    // (RFC 3501 6.3.11 and 2.3.2: APPEND'ed messages are recent for the next session).
    assert_eq!(
        get(&st, "RECENT"),
        2,
        "STATUS RECENT of never-selected new mail: {r:?}"
    );
    assert_eq!(get(&st, "UIDNEXT"), 3);
    assert_eq!(get(&st, "UNSEEN"), 1);
    let validity = get(&st, "UIDVALIDITY");
    let hms = get(&st, "HIGHESTMODSEQ");
    assert!(validity > 0 && hms > 0);
    let r = c.select("INBOX");
    assert_eq!(r.count("RECENT"), Some(2), "{r:?}");
    // Now they are \Recent in this session only.
    let r = c.ok("STATUS INBOX (RECENT)");
    assert_eq!(
        get(&status_of(&r), "RECENT"),
        2,
        "\\Recent in the selecting session: {r:?}"
    );
    let mut other = Imap::login(server.imap, U, PASSWORD);
    let r = other.ok("STATUS INBOX (RECENT MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "RECENT"),
        0,
        "claimed by the other session: {r:?}"
    );
    other.ok("LOGOUT");
    let r = c.cmd("STATUS Nowhere (MESSAGES)");
    assert!(r.status.starts_with("NO"), "{r:?}");

    // SELECT response (RFC 3501 6.3.1): FLAGS, PERMANENTFLAGS with \*, UIDVALIDITY, UIDNEXT, READ-WRITE.
    let r = c.select("INBOX");
    assert!(r.status.starts_with("OK [READ-WRITE]"), "{r:?}");
    let lines = r.lines();
    assert!(lines.iter().any(|l| l.starts_with("* FLAGS (")), "{r:?}");
    let perm = lines
        .iter()
        .find(|l| l.starts_with("* OK [PERMANENTFLAGS ("))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        perm.contains("\\*") && perm.contains("\\Seen") && perm.contains("\\Deleted"),
        "{perm}"
    );
    assert!(
        lines.contains(&format!("* OK [UIDVALIDITY {validity}] UIDs valid"))
            || lines
                .iter()
                .any(|l| l.starts_with(&format!("* OK [UIDVALIDITY {validity}]"))),
        "{r:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("* OK [UIDNEXT 3]")),
        "{r:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("* OK [UNSEEN 1]")),
        "first unseen is 1: {r:?}"
    );

    // SUBSCRIBE / LSUB / LIST (SUBSCRIBED).
    c.ok("SUBSCRIBE Projects/2026");
    c.ok("SUBSCRIBE INBOX");
    let r = c.ok("LSUB \"\" \"*\"");
    let mut n = names(&list_of(&r, "LSUB"));
    n.sort();
    assert_eq!(n, vec!["INBOX", "Projects/2026"], "{r:?}");
    let r = c.ok("LSUB \"\" \"Proj*\"");
    assert_eq!(names(&list_of(&r, "LSUB")), vec!["Projects/2026"]);
    let r = c.ok("LIST (SUBSCRIBED) \"\" \"*\"");
    let l = list_of(&r, "LIST");
    let mut n = names(&l);
    n.sort();
    assert_eq!(n, vec!["INBOX", "Projects/2026"], "{r:?}");
    assert!(
        attrs_of(&l, "Projects/2026").contains(&"\\Subscribed".to_string()),
        "{l:?}"
    );
    let r = c.ok("LIST \"\" \"*\" RETURN (SUBSCRIBED)");
    let l = list_of(&r, "LIST");
    assert!(
        attrs_of(&l, "INBOX").contains(&"\\Subscribed".to_string()),
        "{l:?}"
    );
    assert!(
        !attrs_of(&l, "Sent").contains(&"\\Subscribed".to_string()),
        "{l:?}"
    );
    // RFC 3501 6.3.9: with "%", a subscribed "Projects/2026" whose parent is
    // not subscribed makes LSUB return "Projects", flagged \Noselect.
    let r = c.ok("LSUB \"\" \"%\"");
    let l = list_of(&r, "LSUB");
    let mut n = names(&l);
    n.sort();
    assert_eq!(
        n,
        vec!["INBOX", "Projects"],
        "LSUB % with a subscribed child only: {r:?}"
    );
    assert!(
        attrs_of(&l, "Projects").contains(&"\\Noselect".to_string()),
        "{r:?}"
    );
    c.ok("UNSUBSCRIBE Projects/2026");
    let r = c.ok("LSUB \"\" \"*\"");
    assert_eq!(names(&list_of(&r, "LSUB")), vec!["INBOX"]);
    // A subscription to a name that doesn't exist (allowed, RFC 3501 6.3.6) is
    // listed by LSUB (\Noselect) and LIST (SUBSCRIBED) (\NonExistent, RFC 5258 3.1).
    let r = c.cmd("SUBSCRIBE Ghost");
    if r.ok() {
        let r = c.ok("LSUB \"\" \"Ghost\"");
        let l = list_of(&r, "LSUB");
        assert_eq!(names(&l), vec!["Ghost"], "{r:?}");
        assert!(
            attrs_of(&l, "Ghost").contains(&"\\Noselect".to_string()),
            "{r:?}"
        );
        let r = c.ok("LIST (SUBSCRIBED) \"\" \"*\"");
        let l = list_of(&r, "LIST");
        let mut n = names(&l);
        n.sort();
        assert_eq!(
            n,
            vec!["Ghost", "INBOX"],
            "LIST (SUBSCRIBED) lists subscriptions, existing or not: {r:?}"
        );
        let a = attrs_of(&l, "Ghost");
        assert!(
            a.contains(&"\\NonExistent".to_string()) && a.contains(&"\\Subscribed".to_string()),
            "{r:?}"
        );
        c.ok("UNSUBSCRIBE Ghost");
    }

    // RENAME: inferiors follow, messages too.
    c.ok("RENAME Projects Work");
    let r = c.ok("LIST \"\" \"*\"");
    let n = names(&list_of(&r, "LIST"));
    for name in ["Work", "Work/2026", "Work/2026/Q1"] {
        assert!(n.contains(&name.to_string()), "{name} after RENAME: {n:?}");
    }
    assert!(!n.iter().any(|x| x.starts_with("Projects")), "{n:?}");
    let r = c.ok("STATUS Work/2026/Q1 (MESSAGES)");
    assert_eq!(get(&status_of(&r), "MESSAGES"), 1);
    for (cmd, what) in [
        ("RENAME Nowhere Else", "missing source"),
        ("RENAME Sent Drafts", "existing target"),
        ("RENAME Sent INBOX", "INBOX target"),
    ] {
        let r = c.cmd(cmd);
        assert!(r.status.starts_with("NO"), "{what}: {r:?}");
    }
    // RENAME INBOX moves its messages to the new name and leaves INBOX empty (RFC 3501 6.3.5).
    let before = c.fetch("FETCH 1:* (BODY.PEEK[] FLAGS)");
    c.ok("UNSELECT");
    c.ok("RENAME INBOX Old-Inbox");
    let r = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "MESSAGES"),
        0,
        "INBOX after RENAME INBOX"
    );
    let r = c.ok("STATUS Old-Inbox (MESSAGES UNSEEN)");
    assert_eq!(get(&status_of(&r), "MESSAGES"), 2);
    assert_eq!(get(&status_of(&r), "UNSEEN"), 1);
    c.select("Old-Inbox");
    let after = c.fetch("FETCH 1:* (BODY.PEEK[])");
    assert_eq!(after.len(), 2);
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a.must("BODY[]"), b.must("BODY[]"));
    }
    let r = c.select("INBOX");
    assert_eq!(r.count("EXISTS"), Some(0));
    c.append_ok("INBOX", "", None, &simple_message("new in inbox", "x"));

    // DELETE.
    c.ok("DELETE Work/2026/Q1");
    let r = c.cmd("DELETE Work/2026/Q1");
    assert!(r.status.starts_with("NO"), "second DELETE: {r:?}");
    let r = c.cmd("DELETE INBOX");
    assert!(r.status.starts_with("NO"), "DELETE INBOX: {r:?}");
    c.ok("DELETE \"My Folder\"");
    let r = c.ok("LIST \"\" \"*\"");
    let n = names(&list_of(&r, "LIST"));
    assert!(
        !n.contains(&"Work/2026/Q1".to_string()) && !n.contains(&"My Folder".to_string()),
        "{n:?}"
    );
    // A new mailbox of a deleted name gets a new UIDVALIDITY and starts at UID 1.
    let r = c.ok("STATUS Trash (UIDVALIDITY)");
    let old_validity = get(&status_of(&r), "UIDVALIDITY");
    c.ok("DELETE Trash");
    c.ok("CREATE Trash");
    let r = c.ok("STATUS Trash (UIDVALIDITY UIDNEXT MESSAGES)");
    let st = status_of(&r);
    assert_ne!(
        get(&st, "UIDVALIDITY"),
        old_validity,
        "UIDVALIDITY reused for a recreated mailbox"
    );
    assert_eq!((get(&st, "UIDNEXT"), get(&st, "MESSAGES")), (1, 0));

    // NAMESPACE, ID, ENABLE.
    let r = c.ok("NAMESPACE");
    assert_eq!(
        r.lines(),
        vec!["* NAMESPACE ((\"\" \"/\")) NIL NIL".to_string()]
    );
    let r = c.ok("ID (\"name\" \"e2e\" \"version\" \"1\")");
    let id = r.with_prefix("ID ");
    assert_eq!(id.len(), 1, "{r:?}");
    let v = parse_value(&id[0].as_bytes()["* ID ".len()..]);
    assert!(matches!(v, V::Nil) || v.list().len() % 2 == 0, "{v:?}");
    c.ok("ID NIL");
    // STATUS ... HIGHESTMODSEQ above already enabled CONDSTORE (RFC 7162
    // 3.1); ENABLED lists only what this command enabled (RFC 5161 3.1).
    let r = c.ok("ENABLE CONDSTORE");
    assert_eq!(r.lines(), vec!["* ENABLED".to_string()]);
    let r = c.ok("ENABLE X-UNKNOWN-EXTENSION");
    assert!(r.lines().iter().all(|l| !l.contains("X-UNKNOWN")), "{r:?}");

    // UNSELECT does not expunge; CLOSE does, silently.
    c.select("Old-Inbox");
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    let r = c.ok("UNSELECT");
    assert!(r.untagged.is_empty(), "{r:?}");
    let r = c.cmd("FETCH 1 FLAGS");
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "FETCH after UNSELECT: {r:?}"
    );
    let r = c.ok("STATUS Old-Inbox (MESSAGES)");
    assert_eq!(get(&status_of(&r), "MESSAGES"), 2, "UNSELECT expunged");
    // EXAMINE is read-only: STORE, EXPUNGE refused; CLOSE doesn't expunge.
    let r = c.ok("EXAMINE Old-Inbox");
    assert!(r.status.starts_with("OK [READ-ONLY]"), "{r:?}");
    let r = c.cmd("STORE 1 +FLAGS (\\Seen)");
    assert!(r.status.starts_with("NO"), "STORE in EXAMINE: {r:?}");
    let r = c.cmd("EXPUNGE");
    assert!(r.status.starts_with("NO"), "EXPUNGE in EXAMINE: {r:?}");
    c.ok("CLOSE");
    let r = c.ok("STATUS Old-Inbox (MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "MESSAGES"),
        2,
        "CLOSE after EXAMINE expunged"
    );
    c.select("Old-Inbox");
    let r = c.ok("CLOSE");
    assert!(r.untagged.is_empty(), "CLOSE must not send EXPUNGE: {r:?}");
    let r = c.ok("STATUS Old-Inbox (MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "MESSAGES"),
        1,
        "CLOSE expunges \\Deleted"
    );
    let r = c.cmd("CLOSE");
    assert!(!r.ok(), "CLOSE with nothing selected: {r:?}");
    c.ok("LOGOUT");
}

/// Attack: another session deletes the mailbox this one has selected, and
/// this one goes on with commands of the selected state. Each of them used
/// to find the selection gone after its sync and panic the shard. Now, as
/// Dovecot does (RFC 2180 3.3 leaves the choice), the session is ended
/// with an untagged BYE and closed, and the server keeps serving.
#[test]
fn mailbox_deleted_under_a_selecting_session() {
    const U: &str = "vanishing@example.test";
    let server = Server::options().accounts(&[U]).start();
    let commands = [
        "FETCH 1:* (FLAGS)",
        "UID SEARCH ALL",
        "STORE 1 +FLAGS (\\Seen)",
        "COPY 1 INBOX",
        "UID SORT (SUBJECT) UTF-8 ALL",
        "THREAD REFERENCES UTF-8 ALL",
        "NOOP",
        "EXPUNGE",
    ];
    let mut other = Imap::login(server.imap, U, PASSWORD);
    for (i, cmd) in commands.iter().enumerate() {
        let name = format!("Gone{i}");
        let mut c = Imap::login(server.imap, U, PASSWORD);
        c.ok(&format!("CREATE {name}"));
        c.append_ok(&name, "", None, b"Subject: x\r\n\r\nbody\r\n");
        c.select(&name);
        other.ok(&format!("DELETE {name}"));
        let t = c.tag();
        c.send(format!("{t} {cmd}\r\n").as_bytes());
        let bye = text(&c.response());
        assert_eq!(
            bye, "* BYE Selected mailbox was deleted, have to disconnect.",
            "{cmd}"
        );
        assert!(c.closed_within(Duration::from_secs(5)), "{cmd}: still open");
    }
    // IDLE on the mailbox: the BYE comes while idling.
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.ok("CREATE Idled");
    c.select("Idled");
    let t = c.tag();
    c.send(format!("{t} IDLE\r\n").as_bytes());
    assert!(c.line().starts_with("+ "));
    other.ok("DELETE Idled");
    assert_eq!(
        text(&c.response()),
        "* BYE Selected mailbox was deleted, have to disconnect."
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    // The shard is alive: a new session logs in and works.
    let mut fresh = Imap::login(server.imap, U, PASSWORD);
    fresh.ok("LIST \"\" \"*\"");
}

/// Attack: an account creates mailboxes, subscribes to names (a
/// subscription need not name a mailbox), appends empty messages and
/// copies them without end, or makes long keywords and names, each kept
/// in the account's index in memory and in every checkpoint. `[limits]
/// mailboxes_max`, `subscriptions_max` and `messages_max` bound the
/// counts (NO [LIMIT], RFC 5530), and names and keywords have a length.
#[test]
fn account_counts_and_names_are_bounded() {
    const U: &str = "hoarder@example.test";
    let config =
        "local_domains = [\"example.test\"]\n[limits]\nmailboxes_max = 10\nsubscriptions_max = 5\nmessages_max = 4\n";
    let mut server = Server::options().config(config).accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    // Six default mailboxes: four more fit.
    for i in 0..4 {
        c.ok(&format!("CREATE Box{i}"));
    }
    let r = c.cmd("CREATE Box4");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    // A hierarchy counts every level it creates, all or nothing.
    c.ok("DELETE Box3");
    let r = c.cmd("CREATE Deep/Er");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    c.ok("CREATE Box3");
    // RENAME INBOX makes a mailbox too.
    let r = c.cmd("RENAME INBOX Old");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    // RENAME of another mailbox does not.
    c.ok("RENAME Box0 Renamed");
    let r = c.ok("LIST \"\" \"*\"");
    assert_eq!(r.with_prefix("LIST").len(), 10, "{r:?}");

    for i in 0..5 {
        c.ok(&format!("SUBSCRIBE Sub{i}"));
    }
    let r = c.cmd("SUBSCRIBE Sub5");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    // Subscribing again to a name already subscribed is no new entry.
    c.ok("SUBSCRIBE Sub4");
    c.ok("UNSUBSCRIBE Sub0");
    c.ok("SUBSCRIBE Sub5");
    let r = c.ok("LSUB \"\" \"*\"");
    assert_eq!(r.with_prefix("LSUB").len(), 5, "{r:?}");
    c.ok("UNSUBSCRIBE Sub1");
    let long = "x".repeat(300);
    let r = c.cmd(&format!("SUBSCRIBE {long}"));
    assert!(r.status.starts_with("NO"), "{r:?}");
    // The bounds hold across a restart (they are counts of durable state).
    drop(c);
    server.terminate();
    server.restart();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let r = c.cmd("CREATE Box9");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    c.ok("SUBSCRIBE Sub1");
    let r = c.cmd("SUBSCRIBE Sub6");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");

    // Messages: an empty one costs no quota, and COPY 1:* doubles a
    // mailbox for nothing; `messages_max` bounds both (not delivery).
    for _ in 0..3 {
        c.append_ok("INBOX", "", None, b"");
    }
    c.select("INBOX");
    c.ok("COPY 1 Trash");
    let r = c.append("INBOX", "", None, b"");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    let r = c.cmd("COPY 1:* Trash");
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    // MOVE adds nothing.
    c.ok("MOVE 1 Archive");
    // Keywords: at most 50 octets each, so every FLAGS response stays small.
    let r = c.cmd(&format!("STORE 1 +FLAGS ({})", "k".repeat(51)));
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
    c.ok(&format!("STORE 1 +FLAGS ({})", "k".repeat(50)));
    // RENAME cannot stretch an inferior's name past 255 octets.
    c.ok("DELETE Box1");
    c.ok("DELETE Box2");
    c.ok(&format!("CREATE Box9/{}", "n".repeat(240)));
    let r = c.cmd(&format!("RENAME Box9 {}", "m".repeat(30)));
    assert!(r.status.starts_with("NO [LIMIT]"), "{r:?}");
}
