//! IMAP state kept in step across sessions and clients (shared client in
//! support/imap.rs): two sessions on one mailbox (unsolicited
//! FETCH/EXPUNGE/EXISTS/RECENT, no EXPUNGE during FETCH/STORE/SEARCH, RFC
//! 3501 7.4.1, \Recent in exactly one session), IDLE (RFC 2177) seeing SMTP
//! deliveries on both shards, CONDSTORE (MODSEQ, CHANGEDSINCE,
//! UNCHANGEDSINCE/[MODIFIED]), and mbsync two-way sync with a local Maildir.
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

// ---------------------------------------------------------------------------
// 2. Two sessions on one mailbox
// ---------------------------------------------------------------------------

#[test]
fn two_sessions_see_each_others_changes() {
    const U: &str = "shared@example.test";
    let server = Server::options().accounts(&[U]).start();
    for i in 1..=3 {
        deliver(&server, U, &format!("m{i}"));
    }
    let mut a = Imap::login(server.imap, U, PASSWORD);
    let mut b = Imap::login(server.imap, U, PASSWORD);
    let ra = a.select("INBOX");
    assert_eq!(ra.count("EXISTS"), Some(3), "{ra:?}");
    assert_eq!(
        ra.count("RECENT"),
        Some(3),
        "first session to select gets \\Recent: {ra:?}"
    );
    let rb = b.select("INBOX");
    assert_eq!(rb.count("EXISTS"), Some(3), "{rb:?}");
    assert_eq!(
        rb.count("RECENT"),
        Some(0),
        "\\Recent belongs to one session only: {rb:?}"
    );
    for f in a.fetch("FETCH 1:3 (FLAGS UID)") {
        assert!(has_flag(&f.flags(), "\\Recent"), "A: {f:?}");
    }
    for f in b.fetch("FETCH 1:3 (FLAGS UID)") {
        assert!(!has_flag(&f.flags(), "\\Recent"), "B: {f:?}");
    }

    // A sets a flag; B hears of it on NOOP.
    let r = a.ok("STORE 2 +FLAGS (\\Flagged)");
    let f = r.fetches();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].seq, 2);
    assert!(
        has_flag(&f[0].flags(), "\\Flagged") && has_flag(&f[0].flags(), "\\Recent"),
        "{f:?}"
    );
    let r = b.ok("NOOP");
    let f = r.fetches();
    assert_eq!(f.len(), 1, "B NOOP after A's STORE: {r:?}");
    assert_eq!(f[0].seq, 2);
    let mut fl = f[0].flags();
    fl.sort();
    assert_eq!(
        fl,
        vec!["\\Flagged".to_string()],
        "B sees the new flags, without \\Recent"
    );
    // Nothing more to tell: a second NOOP is quiet.
    let r = b.ok("NOOP");
    assert!(r.untagged.is_empty(), "repeated NOOP: {r:?}");

    // A expunges message 1.
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    let r = a.ok("EXPUNGE");
    assert_eq!(r.expunges(), vec![1], "{r:?}");
    // B: no EXPUNGE in answer to FETCH, STORE or SEARCH (RFC 3501 7.4.1);
    // sequence numbers keep B's old numbering meanwhile.
    let r = b.ok("FETCH 2:3 (UID FLAGS)");
    assert!(r.expunges().is_empty(), "EXPUNGE during FETCH: {r:?}");
    let f = r.fetches();
    assert_eq!(
        f.iter().map(|f| (f.seq, f.uid())).collect::<Vec<_>>(),
        vec![(2, 2), (3, 3)],
        "B's numbering must not change during FETCH: {r:?}"
    );
    let r = b.ok("STORE 3 +FLAGS (\\Answered)");
    assert!(r.expunges().is_empty(), "EXPUNGE during STORE: {r:?}");
    let f = r.fetches();
    assert!(
        f.iter()
            .any(|f| f.seq == 3 && has_flag(&f.flags(), "\\Answered")),
        "{r:?}"
    );
    let r = b.ok("SEARCH ALL");
    assert!(r.expunges().is_empty(), "EXPUNGE during SEARCH: {r:?}");
    let r = b.ok("SEARCH UNDELETED");
    assert!(r.expunges().is_empty(), "EXPUNGE during SEARCH: {r:?}");
    assert!(r.search().contains(&3), "{r:?}");
    // COPY/MOVE of the message expunged meanwhile: no EXPUNGE for COPY, and
    // either NO or OK, but never a COPYUID with empty sets.
    for cmd in ["COPY 1 Trash", "MOVE 1 Trash"] {
        let r = b.cmd(cmd);
        if cmd.starts_with("COPY") {
            assert!(r.expunges().is_empty(), "EXPUNGE during COPY: {r:?}");
        }
        assert!(r.ok() || r.status.starts_with("NO"), "{cmd}: {r:?}");
        for l in r.lines().iter().chain([&r.status]) {
            if l.contains("[COPYUID") {
                copyuid(l.trim_start_matches("* "));
            }
        }
        let t = b.ok("STATUS Trash (MESSAGES)");
        assert_eq!(
            get(&status_of(&t), "MESSAGES"),
            0,
            "{cmd} copied an expunged message: {r:?}"
        );
    }
    // Re-synchronize B's numbering before the checks below.
    let r = b.ok("UID FETCH 1:* (FLAGS)");
    assert_eq!(
        r.expunges(),
        vec![1],
        "UID FETCH announces the expunge: {r:?}"
    );
    let pos_exp = r
        .lines()
        .iter()
        .position(|l| l.ends_with(" EXPUNGE"))
        .unwrap();
    let pos_fetch = r
        .lines()
        .iter()
        .position(|l| l.contains(" FETCH "))
        .unwrap();
    assert!(
        pos_exp < pos_fetch,
        "EXPUNGE must precede FETCHes in the new numbering: {r:?}"
    );
    let f = r.fetches();
    assert_eq!(
        f.iter().map(|f| (f.seq, f.uid())).collect::<Vec<_>>(),
        vec![(1, 2), (2, 3)],
        "{r:?}"
    );
    // A sees B's \Answered.
    let r = a.ok("NOOP");
    let f = r.fetches();
    assert!(
        f.iter()
            .any(|f| f.seq == 2 && has_flag(&f.flags(), "\\Answered")),
        "{r:?}"
    );

    // Second expunge, by A; B gets it on NOOP.
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(a.ok("EXPUNGE").expunges(), vec![1]);
    let r = b.ok("NOOP");
    assert_eq!(r.expunges(), vec![1], "B NOOP after A's EXPUNGE: {r:?}");

    // A new delivery: both get EXISTS; exactly one of them gets it \Recent.
    deliver(&server, U, "m4");
    let ra = a.ok("NOOP");
    let rb = b.ok("NOOP");
    assert_eq!(ra.count("EXISTS"), Some(2), "{ra:?}");
    assert_eq!(rb.count("EXISTS"), Some(2), "{rb:?}");
    assert!(
        ra.count("RECENT").is_some() && rb.count("RECENT").is_some(),
        "RECENT with EXISTS: {ra:?} {rb:?}"
    );
    let recent_a = a.fetch("FETCH 2 (FLAGS UID)");
    let recent_b = b.fetch("FETCH 2 (FLAGS UID)");
    assert_eq!(recent_a[0].uid(), 4);
    assert_eq!(recent_b[0].uid(), 4);
    let n = [&recent_a[0], &recent_b[0]]
        .iter()
        .filter(|f| has_flag(&f.flags(), "\\Recent"))
        .count();
    assert_eq!(
        n, 1,
        "\\Recent in exactly one session: {recent_a:?} {recent_b:?}"
    );
    let in_a = has_flag(&recent_a[0].flags(), "\\Recent");
    assert_eq!(
        ra.count("RECENT"),
        Some(if in_a { 2 } else { 1 }),
        "A's RECENT count: {ra:?}"
    );
    assert_eq!(
        rb.count("RECENT"),
        Some(if in_a { 0 } else { 1 }),
        "B's RECENT count: {rb:?}"
    );
    // APPEND to the selected mailbox: EXISTS before the tagged OK (RFC 3501 6.3.11).
    let r = a.append("INBOX", "", None, &simple_message("m5", "appended"));
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.count("EXISTS"),
        Some(3),
        "APPEND to the selected mailbox: {r:?}"
    );
    // While B idles, A's flag change and expunge arrive unsolicited (RFC 2177).
    let r = b.ok("NOOP");
    assert_eq!(r.count("EXISTS"), Some(3), "{r:?}");
    b.send(b"bi IDLE\r\n");
    assert!(b.line().starts_with('+'));
    a.ok("STORE 3 +FLAGS (\\Seen)");
    let l = text(&b.response());
    let f = parse_fetch(format!("{l}\r\n").as_bytes())
        .unwrap_or_else(|| panic!("IDLE: expected FETCH, got {l:?}"));
    assert_eq!(f.seq, 3);
    assert!(has_flag(&f.flags(), "\\Seen"), "{f:?}");
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    a.ok("EXPUNGE");
    loop {
        let l = text(&b.response());
        if l.starts_with("* 1 FETCH") {
            continue; // the \Deleted flag, if it arrived before the expunge
        }
        assert_eq!(l, "* 1 EXPUNGE", "IDLE after A's EXPUNGE");
        break;
    }
    b.send(b"DONE\r\n");
    assert!(b.until("bi").ok());
    // \Recent cannot be stored (RFC 3501 6.4.6).
    let r = b.cmd("STORE 1 +FLAGS (\\Recent)");
    if r.ok() {
        let f = b.fetch("FETCH 1 (FLAGS)");
        assert!(
            !has_flag(&f[0].flags(), "\\Recent"),
            "\\Recent was stored: {f:?}"
        );
    }
    a.ok("LOGOUT");
    b.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 3. IDLE
// ---------------------------------------------------------------------------

#[test]
fn idle_sees_deliveries_on_both_cores() {
    let accounts = accounts_on_all_shards("idle", 10, 2, 1);
    let server = Server::options().accounts(&accounts).start();
    let chosen: Vec<&String> = (0..2)
        .map(|s| accounts.iter().find(|a| shard_of(a, 2) == s).unwrap())
        .collect();
    let mut sessions: Vec<Imap> = chosen
        .iter()
        .map(|acct| {
            let mut c = Imap::login(server.imap, acct, PASSWORD);
            let r = c.select("INBOX");
            assert_eq!(r.count("EXISTS"), Some(0));
            c.send(b"idle1 IDLE\r\n");
            let cont = c.line();
            assert!(cont.starts_with('+'), "IDLE continuation: {cont:?}");
            c
        })
        .collect();
    // Several rounds, so at least one delivery crosses cores whichever core
    // accepts the SMTP connection, and IDLE keeps reporting after the first.
    for round in 1..=3u32 {
        for (k, acct) in chosen.iter().enumerate() {
            let (mut smtp, _) = smtp_connect(server.smtp);
            let msg = simple_message(&format!("idle {round} {k}"), "hello idler");
            let r = smtp_transaction(
                &mut smtp,
                "sender@example.test",
                &[acct],
                &msg,
                Transfer::Data,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.expect(250, None);
            let accepted = Instant::now();
            let got = wait_exists(&mut sessions[k], round, Duration::from_secs(5));
            let waited = accepted.elapsed();
            let (_, seen) = got.unwrap_or_else(|| panic!("IDLE on shard {k}: no EXISTS {round}"));
            eprintln!("IDLE shard {k} round {round}: EXISTS after {waited:?} ({seen:?})");
            assert!(
                waited < Duration::from_secs(1),
                "IDLE on shard {k} took {waited:?} to report delivery {round}"
            );
            smtp.cmd("QUIT").expect(221, None);
            // The other session, on another account, hears nothing.
            sessions[1 - k].assert_quiet(Duration::from_millis(100), "the other account's IDLE");
        }
    }
    for (k, c) in sessions.iter_mut().enumerate() {
        c.send(b"DONE\r\n");
        let r = c.until("idle1");
        assert!(r.ok(), "DONE -> {r:?}");
        // RECENT may follow EXISTS; nothing else.
        for l in r.lines() {
            assert!(l.ends_with(" RECENT"), "shard {k}: after DONE: {l:?}");
        }
        let r = c.ok("SEARCH SUBJECT idle");
        assert_eq!(r.search(), vec![1, 2, 3]);
        // IDLE again, and DONE right away.
        c.send(b"idle2 IDLE\r\n");
        assert!(c.line().starts_with('+'));
        c.send(b"DONE\r\n");
        assert!(c.until("idle2").ok());
        c.ok("LOGOUT");
    }
}

// ---------------------------------------------------------------------------
// 10. CONDSTORE (RFC 7162)
// ---------------------------------------------------------------------------

#[test]
fn condstore() {
    const U: &str = "modseq@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    for i in 1..=4 {
        c.append_ok("INBOX", "", None, &simple_message(&format!("c{i}"), "x"));
    }
    let r = c.ok("SELECT INBOX (CONDSTORE)");
    let h0 = highestmodseq(&r);
    let st = status_of(&c.ok("STATUS INBOX (HIGHESTMODSEQ)"));
    assert_eq!(get(&st, "HIGHESTMODSEQ"), h0, "STATUS and SELECT agree");
    let f = c.fetch("FETCH 1:* (MODSEQ UID)");
    assert_eq!(f.len(), 4);
    let ms: Vec<u64> = f.iter().map(|f| f.modseq()).collect();
    assert!(ms.iter().all(|m| *m > 0 && *m <= h0), "{ms:?} vs {h0}");
    assert_eq!(
        *ms.iter().max().unwrap(),
        h0,
        "HIGHESTMODSEQ is the largest MODSEQ"
    );

    // STORE reports the new MODSEQ; HIGHESTMODSEQ grows.
    let r = c.ok("STORE 2 +FLAGS (\\Seen)");
    let f = r.fetches();
    assert_eq!(f.len(), 1);
    let m2 = f[0].modseq();
    assert!(m2 > h0, "MODSEQ {m2} after STORE must exceed {h0}");
    let h1 = get(
        &status_of(&c.ok("STATUS INBOX (HIGHESTMODSEQ)")),
        "HIGHESTMODSEQ",
    );
    assert_eq!(h1, m2);
    // A no-op STORE changes nothing.
    let r = c.ok("STORE 2 +FLAGS (\\Seen)");
    for f in r.fetches() {
        assert_eq!(f.modseq(), m2, "unchanged flags, unchanged MODSEQ");
    }
    // CHANGEDSINCE: only what changed after h0.
    let f = c.fetch(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {h0})"));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].seq, f[0].modseq()),
        (2, m2),
        "CHANGEDSINCE includes MODSEQ"
    );
    let f = c.fetch(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m2})"));
    assert!(f.is_empty(), "nothing changed since {m2}: {f:?}");
    // SEARCH MODSEQ (RFC 7162 3.1.5): results plus the highest MODSEQ among them.
    let r = c.ok(&format!("SEARCH MODSEQ {}", h0 + 1));
    let l = r.with_prefix("SEARCH");
    assert_eq!(l, vec![format!("* SEARCH 2 (MODSEQ {m2})")], "{r:?}");

    // UNCHANGEDSINCE: message 2 changed after h0, so it is not modified and
    // is reported in [MODIFIED]; message 3 is stored.
    let r = c.ok(&format!(
        "STORE 2:3 (UNCHANGEDSINCE {h0}) +FLAGS (\\Flagged)"
    ));
    assert_eq!(r.code().as_deref(), Some("MODIFIED 2"), "{r:?}");
    let f = r.fetches();
    assert!(
        f.iter()
            .any(|f| f.seq == 3 && has_flag(&f.flags(), "\\Flagged")),
        "{r:?}"
    );
    let f = c.fetch("FETCH 2:3 (FLAGS MODSEQ)");
    assert!(
        !has_flag(&f[0].flags(), "\\Flagged"),
        "message 2 must be untouched: {f:?}"
    );
    assert!(has_flag(&f[1].flags(), "\\Flagged"));
    let m3 = f[1].modseq();
    assert!(m3 > m2);
    // UID STORE UNCHANGEDSINCE reports UIDs.
    let r = c.ok(&format!(
        "UID STORE 1:4 (UNCHANGEDSINCE {m2}) -FLAGS (\\Seen)"
    ));
    assert_eq!(r.code().as_deref(), Some("MODIFIED 3"), "{r:?}");
    // UNCHANGEDSINCE 0 fails for every message (RFC 7162 3.1.3).
    let r = c.ok("STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Answered)");
    assert_eq!(r.code().as_deref(), Some("MODIFIED 1"), "{r:?}");

    // Another session's change arrives with MODSEQ (RFC 7162 3.2: CONDSTORE enabled).
    let mut b = Imap::login(server.imap, U, PASSWORD);
    b.select("INBOX");
    let r = b.ok("STORE 4 +FLAGS (\\Draft)");
    let mb = r.fetches()[0].get("MODSEQ").map(|v| v.list()[0].num());
    assert!(
        mb.is_none(),
        "MODSEQ without CONDSTORE enabled in session B: {r:?}"
    );
    let r = c.ok("NOOP");
    let f = r.fetches();
    assert_eq!(f.len(), 1, "{r:?}");
    assert_eq!(f[0].seq, 4);
    assert!(has_flag(&f[0].flags(), "\\Draft"));
    let m4 = f[0].modseq();
    assert!(m4 > m3);
    // EXPUNGE raises HIGHESTMODSEQ as well.
    let h_before = get(
        &status_of(&c.ok("STATUS INBOX (HIGHESTMODSEQ)")),
        "HIGHESTMODSEQ",
    );
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    let h_after = get(
        &status_of(&c.ok("STATUS INBOX (HIGHESTMODSEQ)")),
        "HIGHESTMODSEQ",
    );
    assert!(
        h_after > h_before,
        "HIGHESTMODSEQ after EXPUNGE: {h_before} -> {h_after}"
    );
    let r = c.ok("SELECT INBOX");
    assert_eq!(highestmodseq(&r), h_after);
    b.ok("LOGOUT");
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 12. mbsync (isync) two-way sync
// ---------------------------------------------------------------------------

#[test]
fn mbsync_two_way() {
    if !on_path("mbsync") {
        eprintln!("NOTE: mbsync (isync) is not installed; skipping the mbsync test");
        return;
    }
    const U: &str = "syncer@example.test";
    let server = Server::options().accounts(&[U]).start();
    let local = server.root().join("maildir");
    std::fs::create_dir_all(&local).unwrap();
    let cfg = server.root().join("mbsyncrc");
    std::fs::write(
        &cfg,
        format!(
            "IMAPAccount ringmail\nHost 127.0.0.1\nPort {port}\nUser {U}\nPass {PASSWORD}\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount ringmail\n\n\
             MaildirStore local\nPath {dir}/\nInbox {dir}/INBOX\nSubFolders Verbatim\n\n\
             Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n",
            port = server.imap.port(),
            dir = local.display()
        ),
    )
    .unwrap();

    // (a) Mail delivered over SMTP reaches the local Maildir.
    let m1 = simple_message("mbsync one", "first synced message");
    let m2 = simple_message("mbsync two", "second synced message");
    smtp_send(server.smtp, "sender@example.test", &[U], &m1);
    smtp_send(server.smtp, "sender@example.test", &[U], &m2);
    let log = run_mbsync(&cfg, server.root());
    let inbox = local.join("INBOX");
    let files = maildir_files(&inbox);
    assert_eq!(
        files.len(),
        2,
        "local INBOX after the first sync: {files:?}\n{log}"
    );
    let mut got: Vec<Vec<u8>> = files
        .iter()
        .map(|p| {
            strip_trace(&unmbsync(&std::fs::read(p).unwrap()))
                .1
                .to_vec()
        })
        .collect();
    got.sort();
    let mut want = vec![m1.clone(), m2.clone()];
    want.sort();
    assert_eq!(
        got, want,
        "synced messages are byte-identical (after the trace headers)"
    );
    // The server's folders were created locally too.
    for f in ["Sent", "Drafts", "Trash", "Junk", "Archive"] {
        assert!(
            local.join(f).join("cur").is_dir(),
            "local {f} missing\n{log}"
        );
    }

    // (b) A message added locally (Sent/cur) is uploaded.
    let sent = simple_message("written locally", "composed offline");
    let host = "e2e";
    std::fs::write(
        local
            .join("Sent/cur")
            .join(format!("1700000000.R1.{host},U=0:2,S")),
        &sent,
    )
    .unwrap();
    // (c) A local flag change: Flagged + Seen on one INBOX message.
    let target = files
        .iter()
        .find(|p| strip_trace(&unmbsync(&std::fs::read(p).unwrap())).1 == &m1[..])
        .unwrap()
        .clone();
    let fname = target.file_name().unwrap().to_string_lossy().into_owned();
    let base = fname.split(":2,").next().unwrap().to_string();
    std::fs::rename(&target, inbox.join("cur").join(format!("{base}:2,FS"))).unwrap();
    let log = run_mbsync(&cfg, server.root());

    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.ok("EXAMINE Sent");
    let f = c.fetch("FETCH 1:* (FLAGS BODY.PEEK[])");
    assert_eq!(f.len(), 1, "server Sent after upload\n{log}");
    assert_eq!(unmbsync(f[0].must("BODY[]").bytes()), sent);
    assert!(has_flag(&f[0].flags(), "\\Seen"), "{f:?}");
    c.select("INBOX");
    let f = c.fetch("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert_eq!(f.len(), 2);
    for x in &f {
        let subj =
            String::from_utf8_lossy(x.must("BODY[HEADER.FIELDS (SUBJECT)]").bytes()).into_owned();
        let fl = x.flags();
        if subj.contains("mbsync one") {
            assert!(
                has_flag(&fl, "\\Flagged") && has_flag(&fl, "\\Seen"),
                "flags after local change: {fl:?}\n{log}"
            );
        } else {
            assert!(!has_flag(&fl, "\\Flagged"), "{fl:?}");
        }
    }

    // (d) A message deleted on the server disappears locally.
    let two = f
        .iter()
        .find(|x| {
            String::from_utf8_lossy(x.must("BODY[HEADER.FIELDS (SUBJECT)]").bytes())
                .contains("mbsync two")
        })
        .unwrap()
        .seq;
    c.ok(&format!("STORE {two} +FLAGS.SILENT (\\Deleted)"));
    c.ok("EXPUNGE");
    c.ok("LOGOUT");
    let log = run_mbsync(&cfg, server.root());
    let files = maildir_files(&inbox);
    assert_eq!(
        files.len(),
        1,
        "local INBOX after the server-side delete: {files:?}\n{log}"
    );
    assert_eq!(
        strip_trace(&unmbsync(&std::fs::read(&files[0]).unwrap())).1,
        &m1[..]
    );
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(":2,FS"), "local flags kept: {name}");
    // A further sync changes nothing.
    run_mbsync(&cfg, server.root());
    assert_eq!(maildir_files(&inbox).len(), 1);
    assert_eq!(maildir_files(&local.join("Sent")).len(), 1);
}
