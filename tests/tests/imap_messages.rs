//! IMAP message commands (shared client in support/imap.rs): APPEND (flags,
//! date, LITERAL+, APPENDUID) surviving kill -9, COPY/MOVE with UIDPLUS
//! (COPYUID, TRYCREATE, RFC 6851 ordering), FETCH partial ranges, a 5 MiB
//! body, \Seen with BODY[] vs BODY.PEEK[], ENVELOPE/BODYSTRUCTURE/BODY of a
//! nested multipart with part sections, keywords persisted across kill -9
//! and PERMANENTFLAGS \*.
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

// ---------------------------------------------------------------------------
// 4. APPEND durability
// ---------------------------------------------------------------------------

#[test]
fn append_survives_kill9() {
    const U: &str = "appender@example.test";
    let mut server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let m1 = simple_message("first append", "line one\r\nline two");
    let mut m2 = simple_message("second append", "8-bit: gr\u{fc}\u{df}e");
    m2.extend_from_slice(b"no final newline");
    let m3 = {
        let mut v = b"Subject: binary-ish\r\n\r\n".to_vec();
        v.extend((0u8..=255).filter(|b| *b != 0 && *b != b'\r' && *b != b'\n'));
        v.extend_from_slice(b"\r\n.\r\n..leading dots\r\n");
        v
    };
    let m4 = simple_message("sent copy", "to the Sent folder");
    // With flags and a date (zone +0200), synchronizing literal.
    let r = c.append_sync(
        "INBOX",
        "\\Seen $Custom",
        Some("14-Jul-2021 09:08:07 +0200"),
        &m1,
    );
    let (v1, u1) = appenduid(&r.status);
    let before = now_secs();
    // No flags, no date, LITERAL+.
    let (v2, u2) = c.append_ok("INBOX", "", None, &m2);
    let after = now_secs();
    // Flags only; a negative zone and a day with a leading space.
    let (v3, u3) = c.append_ok(
        "inbox",
        "\\Flagged \\Draft \\Answered",
        Some(" 5-Mar-1999 23:59:59 -0800"),
        &m3,
    );
    let (vs, us) = c.append_ok("Sent", "\\Seen", None, &m4);
    assert_eq!((v1, v1), (v2, v3), "one UIDVALIDITY for INBOX");
    assert!(u1 < u2 && u2 < u3, "UIDs ascend: {u1} {u2} {u3}");
    assert_eq!(us, 1, "first UID in Sent");
    let r = c.ok("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)");
    assert_eq!(
        r.with_prefix("STATUS")[0],
        format!(
            "* STATUS INBOX (MESSAGES 3 UIDNEXT {} UIDVALIDITY {v1})",
            u3 + 1
        )
    );
    // Crash right after the tagged OKs.
    server.kill9();
    server.restart();

    let mut c = Imap::login(server.imap, U, PASSWORD);
    let r = c.select("INBOX");
    assert_eq!(r.count("EXISTS"), Some(3), "{r:?}");
    assert!(
        r.lines()
            .iter()
            .any(|l| l.starts_with(&format!("* OK [UIDVALIDITY {v1}]"))),
        "UIDVALIDITY changed: {r:?}"
    );
    let f = c.fetch("UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])");
    assert_eq!(f.len(), 3);
    let want = [
        (
            u1,
            &m1,
            vec!["\\Seen", "$Custom"],
            Some(imap_date_secs("14-Jul-2021 09:08:07 +0200")),
        ),
        (u2, &m2, vec![], None),
        (
            u3,
            &m3,
            vec!["\\Flagged", "\\Draft", "\\Answered"],
            Some(imap_date_secs("05-Mar-1999 23:59:59 -0800")),
        ),
    ];
    for (f, (uid, msg, flags, date)) in f.iter().zip(want) {
        assert_eq!(f.uid(), uid);
        assert_bytes_eq(
            f.must("BODY[]").bytes(),
            msg,
            &format!("UID {uid} after kill -9"),
        );
        assert_eq!(f.must("RFC822.SIZE").num(), msg.len() as u64);
        let mut got = f.flags();
        got.retain(|x| x != "\\Recent");
        got.sort();
        let mut flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        flags.sort();
        assert_eq!(got, flags, "UID {uid} flags");
        let d = String::from_utf8(f.must("INTERNALDATE").bytes().to_vec()).unwrap();
        let secs = imap_date_secs(&d);
        match date {
            Some(want) => assert_eq!(secs, want, "INTERNALDATE {d:?} of UID {uid}"),
            None => assert!(
                secs >= before - 2 && secs <= after + 2,
                "INTERNALDATE {d:?} of UID {uid} is not the append time"
            ),
        }
    }
    // Sent too.
    let f = c.fetch("FETCH 1 (BODY.PEEK[])");
    assert_eq!(f[0].must("BODY[]").bytes(), &m1[..]);
    c.ok("EXAMINE Sent");
    let f = c.fetch("UID FETCH 1:* (FLAGS BODY.PEEK[])");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].must("BODY[]").bytes(), &m4[..]);
    assert!(has_flag(&f[0].flags(), "\\Seen"));
    // UIDs keep ascending, UIDVALIDITY stays.
    let (v4, u4) = c.append_ok("INBOX", "", None, b"Subject: after crash\r\n\r\nx\r\n");
    assert_eq!(v4, v1);
    assert!(u4 > u3, "UID {u4} after restart must exceed {u3}");
    let (vs2, us2) = c.append_ok("Sent", "", None, b"Subject: after crash\r\n\r\ny\r\n");
    assert_eq!((vs2, us2), (vs, 2));
    // Bad dates and flags are refused with BAD and nothing is stored.
    let r = c.append(
        "INBOX",
        "",
        Some("31-Foo-2021 00:00:00 +0000"),
        b"Subject: x\r\n\r\nx\r\n",
    );
    assert!(r.status.starts_with("BAD"), "bad date: {r:?}");
    let r = c.append("NoSuchBox", "", None, b"Subject: x\r\n\r\nx\r\n");
    assert!(
        r.status.starts_with("NO [TRYCREATE]"),
        "APPEND to a missing mailbox: {r:?}"
    );
    let r = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(r.with_prefix("STATUS")[0], "* STATUS INBOX (MESSAGES 4)");
    c.ok("LOGOUT");
    server.terminate();
}

// ---------------------------------------------------------------------------
// 5. COPY and MOVE with UIDPLUS
// ---------------------------------------------------------------------------

#[test]
fn copy_and_move_with_uidplus() {
    const U: &str = "copier@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.ok("CREATE Dest");
    let flags = [
        "",
        "\\Seen",
        "\\Flagged $Work",
        "\\Answered",
        "\\Seen $Home",
    ];
    let msgs: Vec<Vec<u8>> = (1..=5)
        .map(|i| simple_message(&format!("copy {i}"), &format!("body {i}")))
        .collect();
    for (m, f) in msgs.iter().zip(flags) {
        c.append_ok("INBOX", f, None, m);
    }
    let r = c.ok("STATUS Dest (UIDVALIDITY UIDNEXT)");
    let st = r.with_prefix("STATUS")[0].clone();
    let vd: u32 = st
        .split("UIDVALIDITY ")
        .nth(1)
        .unwrap()
        .split([' ', ')'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    c.select("INBOX");

    // COPY by sequence numbers.
    let r = c.ok("COPY 2:4 Dest");
    assert_eq!(
        copyuid(&r.status),
        (vd, vec![2, 3, 4], vec![1, 2, 3]),
        "{r:?}"
    );
    // UID COPY with a list; destination UIDs pair up in order.
    let r = c.ok("UID COPY 5,1 Dest");
    let (v, src, dst) = copyuid(&r.status);
    assert_eq!(v, vd);
    let mut pairs: Vec<(u32, u32)> = src.into_iter().zip(dst).collect();
    pairs.sort();
    assert_eq!(pairs.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 5]);
    let mut d: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    d.sort();
    assert_eq!(d, vec![4, 5], "{r:?}");
    // COPY leaves the source alone.
    let r = c.ok("NOOP");
    assert!(r.expunges().is_empty(), "{r:?}");
    // UID COPY of UIDs that don't exist copies nothing, successfully.
    let r = c.ok("UID COPY 100:200 Dest");
    assert!(
        !r.status.contains("COPYUID"),
        "nothing copied, no COPYUID: {r:?}"
    );

    // The copies carry flags (keywords included) and bodies.
    let mut d = Imap::login(server.imap, U, PASSWORD);
    let r = d.ok("EXAMINE Dest");
    assert_eq!(r.count("EXISTS"), Some(5));
    let f = d.fetch("UID FETCH 1:* (FLAGS BODY.PEEK[])");
    let by_uid: Vec<(u32, Vec<String>, Vec<u8>)> = f
        .iter()
        .map(|f| {
            let mut fl = f.flags();
            fl.retain(|x| x != "\\Recent");
            fl.sort();
            (f.uid(), fl, f.must("BODY[]").bytes().to_vec())
        })
        .collect();
    let src_of_dest = |u: u32| -> usize {
        match u {
            1..=3 => u as usize + 1, // from source UIDs 2..4
            _ => pairs.iter().find(|p| p.1 == u).unwrap().0 as usize,
        }
    };
    for (uid, fl, body) in &by_uid {
        let s = src_of_dest(*uid);
        let mut want: Vec<String> = flags[s - 1]
            .split_whitespace()
            .map(str::to_string)
            .collect();
        want.sort();
        assert_eq!(fl, &want, "flags of Dest UID {uid} (from INBOX UID {s})");
        assert_eq!(body, &msgs[s - 1], "body of Dest UID {uid}");
    }

    // MOVE: untagged OK [COPYUID] before the EXPUNGEs (RFC 6851 4.3).
    let r = c.ok("MOVE 1:2 Dest");
    let lines = r.lines();
    let ok_pos = lines
        .iter()
        .position(|l| l.starts_with("* OK [COPYUID "))
        .unwrap_or_else(|| panic!("MOVE without untagged COPYUID: {r:?}"));
    let (v, src, dst) = copyuid(&lines[ok_pos]);
    assert_eq!((v, src, dst), (vd, vec![1, 2], vec![6, 7]), "{r:?}");
    let exp = r.expunges();
    assert_eq!(exp.len(), 2, "{r:?}");
    assert!(
        exp == vec![1, 1] || exp == vec![2, 1],
        "EXPUNGEs of seqs 1 and 2: {exp:?}"
    );
    let first_exp = lines.iter().position(|l| l.ends_with(" EXPUNGE")).unwrap();
    assert!(
        ok_pos < first_exp,
        "COPYUID must come before EXPUNGE: {r:?}"
    );
    assert!(
        !r.status.contains("COPYUID"),
        "COPYUID in the tagged OK of MOVE too: {r:?}"
    );
    // UID MOVE of the last message.
    let r = c.ok("UID MOVE 5 Dest");
    let ok = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* OK [COPYUID "))
        .expect("COPYUID");
    assert_eq!(copyuid(&ok), (vd, vec![5], vec![8]));
    assert_eq!(r.expunges(), vec![3], "{r:?}");
    let f = c.fetch("FETCH 1:* (UID)");
    assert_eq!(f.iter().map(|f| f.uid()).collect::<Vec<_>>(), vec![3, 4]);
    // The other session hears about the arrivals.
    let r = d.ok("NOOP");
    assert_eq!(r.count("EXISTS"), Some(8), "{r:?}");
    let f = d.fetch("UID FETCH 6:8 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    let subj: Vec<String> = f
        .iter()
        .map(|f| {
            String::from_utf8_lossy(f.must("BODY[HEADER.FIELDS (SUBJECT)]").bytes()).into_owned()
        })
        .collect();
    assert_eq!(
        subj,
        vec![
            "Subject: copy 1\r\n\r\n",
            "Subject: copy 2\r\n\r\n",
            "Subject: copy 5\r\n\r\n"
        ]
    );
    assert!(
        has_flag(&f[1].flags(), "\\Seen") && has_flag(&f[2].flags(), "$Home"),
        "{f:?}"
    );

    // Missing destination: NO [TRYCREATE] (RFC 3501 6.4.7), nothing changes.
    for cmd in [
        "COPY 1 Nowhere",
        "MOVE 1 Nowhere",
        "UID COPY 3 Nowhere",
        "UID MOVE 3 Nowhere",
    ] {
        let r = c.cmd(cmd);
        assert!(r.status.starts_with("NO [TRYCREATE]"), "{cmd}: {r:?}");
        assert!(r.expunges().is_empty(), "{cmd}: {r:?}");
    }
    // Sequence numbers that don't exist: not OK.
    let r = c.cmd("COPY 7 Dest");
    assert!(!r.ok(), "COPY of a missing sequence number: {r:?}");
    // COPY to the same mailbox duplicates.
    let r = c.ok("COPY 1 INBOX");
    let (_, s, d2) = copyuid(&r.status);
    assert_eq!((s, d2), (vec![3], vec![6]));
    let r = c.ok("NOOP");
    assert_eq!(r.count("EXISTS"), Some(3), "{r:?}");
    // EXAMINE: MOVE refused, COPY allowed (it does not change the source).
    c.ok("EXAMINE INBOX");
    let r = c.cmd("MOVE 1 Dest");
    assert!(
        r.status.starts_with("NO"),
        "MOVE from a read-only mailbox: {r:?}"
    );
    c.ok("COPY 1 Dest");
    c.ok("LOGOUT");
    d.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 6. FETCH: partial ranges, a large body, \Seen
// ---------------------------------------------------------------------------

#[test]
fn fetch_partial_large_and_seen() {
    const U: &str = "fetcher@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let body: String = (0..40)
        .map(|i| format!("line {i:02} of the text\r\n"))
        .collect();
    let m1 = simple_message("partial", body.trim_end());
    c.append_ok("INBOX", "", None, &m1);
    c.append_ok("INBOX", "", None, MULTIPART.as_bytes());
    // ~5 MiB, varied bytes in 76-column lines.
    let mut big = b"From: big@example.test\r\nSubject: big\r\n\r\n".to_vec();
    let mut x: u32 = 12345;
    while big.len() < 5 * 1024 * 1024 {
        for _ in 0..76 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            big.push(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(x >> 16) as usize % 64],
            );
        }
        big.extend_from_slice(b"\r\n");
    }
    c.append_ok("INBOX", "", None, &big);
    c.select("INBOX");
    let header_len = m1.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let text1 = &m1[header_len..];

    let f = c.fetch("FETCH 1 (BODY.PEEK[]<0.100> BODY.PEEK[TEXT]<10.20> RFC822.SIZE)");
    assert_eq!(f[0].must("BODY[]<0>").bytes(), &m1[..100]);
    assert_eq!(f[0].must("BODY[TEXT]<10>").bytes(), &text1[10..30]);
    assert_eq!(f[0].must("RFC822.SIZE").num(), m1.len() as u64);
    assert!(
        f[0].get("FLAGS").is_none(),
        "PEEK must not change flags: {f:?}"
    );
    // Ranges reaching past the end are cut; starting past the end gives "".
    let n = m1.len();
    let f = c.fetch(&format!(
        "FETCH 1 (BODY.PEEK[]<{}.100> BODY.PEEK[TEXT]<{}.5> BODY.PEEK[HEADER]<0.10>)",
        n - 7,
        n + 10
    ));
    assert_eq!(
        f[0].must(&format!("BODY[]<{}>", n - 7)).bytes(),
        &m1[n - 7..]
    );
    assert_eq!(f[0].must(&format!("BODY[TEXT]<{}>", n + 10)).bytes(), b"");
    assert_eq!(f[0].must("BODY[HEADER]<0>").bytes(), &m1[..10]);

    // Parts of a multipart, with ranges.
    let m2 = MULTIPART.as_bytes();
    let part1 = b"The first part, which is long enough to cut.\r\n";
    let f = c.fetch("FETCH 2 (BODY.PEEK[1] BODY.PEEK[1]<4.5> BODY.PEEK[2] BODY.PEEK[2]<100.5> BODY.PEEK[3] RFC822.SIZE BODY.PEEK[])");
    assert_eq!(f[0].must("BODY[1]").bytes(), part1);
    assert_eq!(f[0].must("BODY[1]<4>").bytes(), b"first");
    assert_eq!(f[0].must("BODY[2]").bytes(), b"second");
    assert_eq!(f[0].must("BODY[2]<100>").bytes(), b"");
    // A part that doesn't exist: empty (or NIL).
    let p3 = f[0].must("BODY[3]");
    assert!(matches!(p3, V::Nil) || p3.bytes().is_empty(), "{p3:?}");
    assert_eq!(f[0].must("BODY[]").bytes(), m2);
    assert_eq!(f[0].must("RFC822.SIZE").num(), m2.len() as u64);

    // 5 MiB byte-exact, whole and in a window, RFC822.SIZE = literal length.
    let t = Instant::now();
    let f = c.fetch("FETCH 3 (RFC822.SIZE BODY.PEEK[] BODY.PEEK[]<1000000.2000000>)");
    eprintln!(
        "FETCH of a {} byte message took {:?}",
        big.len(),
        t.elapsed()
    );
    assert_bytes_eq(f[0].must("BODY[]").bytes(), &big, "5 MiB BODY[]");
    assert_eq!(f[0].must("RFC822.SIZE").num(), big.len() as u64);
    assert_bytes_eq(
        f[0].must("BODY[]<1000000>").bytes(),
        &big[1_000_000..3_000_000],
        "window",
    );
    // Macros (RFC 3501 6.4.5): ALL = FLAGS INTERNALDATE RFC822.SIZE ENVELOPE;
    // FAST without ENVELOPE; FULL adds BODY.
    let f = c.fetch("FETCH 1 ALL");
    let mut k: Vec<&str> = f[0].items.iter().map(|i| i.0.as_str()).collect();
    k.sort();
    assert_eq!(k, vec!["ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE"]);
    let f = c.fetch("FETCH 1 FAST");
    let mut k: Vec<&str> = f[0].items.iter().map(|i| i.0.as_str()).collect();
    k.sort();
    assert_eq!(k, vec!["FLAGS", "INTERNALDATE", "RFC822.SIZE"]);
    let f = c.fetch("FETCH 2 FULL");
    let mut k: Vec<&str> = f[0].items.iter().map(|i| i.0.as_str()).collect();
    k.sort();
    assert_eq!(
        k,
        vec!["BODY", "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    );
    // HEADER.FIELDS naming no present field: just the blank line.
    let f = c.fetch("FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-Missing)])");
    assert_eq!(
        f[0].must("BODY[HEADER.FIELDS (X-MISSING)]").bytes(),
        b"\r\n"
    );
    // RFC822.HEADER / RFC822.TEXT.
    let f = c.fetch("FETCH 1 (RFC822.HEADER)");
    assert_eq!(f[0].must("RFC822.HEADER").bytes(), &m1[..header_len]);
    assert!(f[0].get("FLAGS").is_none());

    // Nothing is \Seen yet.
    let r = c.ok("SEARCH SEEN");
    assert!(r.search().is_empty(), "{r:?}");
    // BODY[] (not PEEK) sets \Seen, and the FETCH reports it (RFC 3501 6.4.5).
    let f = c.fetch("FETCH 1 (BODY[]<0.10>)");
    assert_eq!(f[0].must("BODY[]<0>").bytes(), &m1[..10]);
    let fl = f[0]
        .get("FLAGS")
        .unwrap_or_else(|| panic!("\\Seen set but FLAGS not sent: {f:?}"));
    assert!(fl.atoms().iter().any(|x| x == "\\Seen"), "{f:?}");
    // Already \Seen: no FLAGS needed any more, and they stay.
    let f = c.fetch("FETCH 1 (BODY[TEXT])");
    assert_eq!(f[0].must("BODY[TEXT]").bytes(), text1);
    // RFC822.TEXT and RFC822 also set \Seen.
    let f = c.fetch("FETCH 2 (RFC822.TEXT)");
    assert_eq!(
        f[0].must("RFC822.TEXT").bytes(),
        &m2[m2.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..]
    );
    assert!(has_flag(&f[0].flags(), "\\Seen"), "{f:?}");
    let r = c.ok("SEARCH SEEN");
    assert_eq!(r.search(), vec![1, 2]);
    // In a read-only (EXAMINE) session BODY[] does not set \Seen.
    c.ok("EXAMINE INBOX");
    let f = c.fetch("FETCH 3 (BODY[]<0.4> FLAGS)");
    assert!(!has_flag(&f[0].flags(), "\\Seen"), "{f:?}");
    c.select("INBOX");
    let f = c.fetch("FETCH 3 (FLAGS)");
    assert!(
        !has_flag(&f[0].flags(), "\\Seen"),
        "EXAMINE set \\Seen: {f:?}"
    );
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 7. ENVELOPE, BODYSTRUCTURE, BODY and part sections of a nested multipart
// ---------------------------------------------------------------------------

#[test]
fn envelope_and_bodystructure_of_nested_multipart() {
    const U: &str = "structure@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let msg = nested_message();
    c.append_ok("INBOX", "", None, msg.as_bytes());
    c.select("INBOX");

    // RFC 3501 7.4.2. Part bodies end before the CRLF that precedes the next
    // boundary (RFC 2046 5.1.1); body sizes are octets of the encoded body,
    // lines count the text lines. Media types and parameter names are
    // upper-cased as in the RFC examples; values are as written. A missing
    // charset is US-ASCII and a missing encoding 7BIT. Sender and Reply-To
    // default to From.
    let inner_env = "(\"Tue, 24 Nov 2026 09:00:00 +0100\" \"Inner message\" ((\"Carol\" NIL \"carol\" \"example.test\")) ((\"Carol\" NIL \"carol\" \"example.test\")) ((\"Carol\" NIL \"carol\" \"example.test\")) ((NIL NIL \"alice\" \"example.test\")) NIL NIL NIL \"<inner@e2e.test>\")";
    let outer_env = "(\"Wed, 25 Nov 2026 10:00:00 +0000\" \"Nested test\" ((\"Alice Example\" NIL \"alice\" \"example.test\")) ((\"Alice Example\" NIL \"alice\" \"example.test\")) ((\"Alice Example\" NIL \"alice\" \"example.test\")) ((\"Bob\" NIL \"bob\" \"example.test\")(NIL NIL \"carol\" \"example.test\")) NIL NIL \"<parent@e2e.test>\" \"<nested-1@e2e.test>\")";
    let inner_len = INNER.len();
    let inner_lines = INNER.matches("\r\n").count();
    assert_eq!(inner_lines, 8);
    let bodystructure = format!(
        "(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 13 1 NIL NIL NIL NIL)\
         (\"TEXT\" \"HTML\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 19 1 NIL NIL NIL NIL) \
         \"ALTERNATIVE\" (\"BOUNDARY\" \"alt\") NIL NIL NIL)\
         (\"APPLICATION\" \"PDF\" (\"NAME\" \"doc.pdf\") \"<pdf1@e2e.test>\" \"A document\" \"BASE64\" 14 NIL (\"ATTACHMENT\" (\"FILENAME\" \"doc.pdf\")) NIL NIL)\
         (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" {inner_len} {inner_env} \
         (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 38 2 NIL NIL NIL NIL) {inner_lines} NIL NIL NIL NIL) \
         \"MIXED\" (\"BOUNDARY\" \"outer\") NIL NIL NIL)"
    );
    let body = format!(
        "(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 13 1)\
         (\"TEXT\" \"HTML\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 19 1) \"ALTERNATIVE\")\
         (\"APPLICATION\" \"PDF\" (\"NAME\" \"doc.pdf\") \"<pdf1@e2e.test>\" \"A document\" \"BASE64\" 14)\
         (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" {inner_len} {inner_env} \
         (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 38 2) {inner_lines}) \"MIXED\")"
    );
    let r = c.ok("FETCH 1 (ENVELOPE)");
    assert_eq!(r.lines(), vec![format!("* 1 FETCH (ENVELOPE {outer_env})")]);
    let r = c.ok("FETCH 1 (BODYSTRUCTURE)");
    assert_eq!(
        r.lines(),
        vec![format!("* 1 FETCH (BODYSTRUCTURE {bodystructure})")]
    );
    let r = c.ok("FETCH 1 (BODY)");
    assert_eq!(r.lines(), vec![format!("* 1 FETCH (BODY {body})")]);
    // The strings also parse as IMAP data.
    parse_value(bodystructure.as_bytes());
    parse_value(outer_env.as_bytes());

    // Sections (RFC 3501 6.4.5).
    let f = c.fetch(
        "FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.1] BODY.PEEK[1.2] BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[2.MIME] \
         BODY.PEEK[3] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] BODY.PEEK[3.1] BODY.PEEK[3.MIME] \
         BODY.PEEK[3.HEADER.FIELDS (Subject From)] BODY.PEEK[HEADER.FIELDS.NOT (To From Date Message-ID In-Reply-To MIME-Version)])",
    );
    let f = &f[0];
    let s = |k: &str| String::from_utf8_lossy(f.must(k).bytes()).into_owned();
    assert_eq!(s("BODY[1]"), ALT_BODY);
    assert_eq!(s("BODY[1.1]"), "Hello plain\r\n");
    assert_eq!(s("BODY[1.2]"), "<p>Hello html</p>\r\n");
    assert_eq!(
        s("BODY[1.MIME]"),
        "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
    );
    assert_eq!(s("BODY[2]"), "JVBERi0xLjQK\r\n");
    assert_eq!(s("BODY[2.MIME]"), PART2_MIME);
    assert_eq!(s("BODY[3]"), INNER);
    let inner_header_len = INNER.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(s("BODY[3.HEADER]"), &INNER[..inner_header_len]);
    assert_eq!(s("BODY[3.TEXT]"), &INNER[inner_header_len..]);
    assert_eq!(s("BODY[3.1]"), &INNER[inner_header_len..]);
    assert_eq!(s("BODY[3.MIME]"), "Content-Type: message/rfc822\r\n\r\n");
    assert_eq!(
        s("BODY[3.HEADER.FIELDS (SUBJECT FROM)]"),
        "From: Carol <carol@example.test>\r\nSubject: Inner message\r\n\r\n"
    );
    assert_eq!(
        s("BODY[HEADER.FIELDS.NOT (TO FROM DATE MESSAGE-ID IN-REPLY-TO MIME-VERSION)]"),
        "Subject: Nested test\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    );
    // Groups, a display name with a comma, an encoded word left encoded,
    // Reply-To differing from From, and absent fields as NIL (RFC 3501 7.4.2).
    let groups = "From: \"Doe, John\" <john.doe@example.test>\r\n\
                  To: Friends: ann@example.test, \"Bo B\" <bo@example.test>;, solo@example.test\r\n\
                  Cc: undisclosed-recipients:;\r\n\
                  Subject: =?UTF-8?B?SGVsbG8=?=\r\n\
                  Reply-To: <replies@example.test>\r\n\
                  \r\n\
                  body\r\n";
    c.append_ok("INBOX", "", None, groups.as_bytes());
    c.ok("NOOP");
    let r = c.ok("FETCH 2 (ENVELOPE)");
    assert_eq!(
        r.lines(),
        vec!["* 2 FETCH (ENVELOPE (NIL \"=?UTF-8?B?SGVsbG8=?=\" ((\"Doe, John\" NIL \"john.doe\" \"example.test\")) ((\"Doe, John\" NIL \"john.doe\" \"example.test\")) ((NIL NIL \"replies\" \"example.test\")) ((NIL NIL \"Friends\" NIL)(NIL NIL \"ann\" \"example.test\")(\"Bo B\" NIL \"bo\" \"example.test\")(NIL NIL NIL NIL)(NIL NIL \"solo\" \"example.test\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL))".to_string()]
    );
    let r = c.ok("FETCH 2 (BODYSTRUCTURE)");
    assert_eq!(
        r.lines(),
        vec!["* 2 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 6 1 NIL NIL NIL NIL))".to_string()]
    );
    // The whole message is still byte-exact, and nothing got \Seen.
    let f = c.fetch("FETCH 1 (BODY.PEEK[] FLAGS)");
    assert_eq!(f[0].must("BODY[]").bytes(), msg.as_bytes());
    assert!(!has_flag(&f[0].flags(), "\\Seen"));
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 11. Keywords persist
// ---------------------------------------------------------------------------

#[test]
fn keywords_persist_across_restart() {
    const U: &str = "keywords@example.test";
    let mut server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.append_ok("INBOX", "", None, &simple_message("k1", "x"));
    c.append_ok("INBOX", "", None, &simple_message("k2", "y"));
    let r = c.select("INBOX");
    let perm = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* OK [PERMANENTFLAGS ("))
        .expect("PERMANENTFLAGS");
    assert!(perm.contains("\\*"), "new keywords allowed: {perm}");
    let r = c.ok("STORE 1 +FLAGS ($Label1 custom)");
    // New keywords are announced in FLAGS (and PERMANENTFLAGS) first.
    let flags_line = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* FLAGS ("))
        .unwrap_or_else(|| panic!("no FLAGS update: {r:?}"));
    assert!(
        flags_line.contains("$Label1") && flags_line.contains("custom"),
        "{flags_line}"
    );
    let f = r.fetches();
    assert!(
        has_flag(&f[0].flags(), "$Label1") && has_flag(&f[0].flags(), "custom"),
        "{f:?}"
    );
    c.ok("STORE 2 +FLAGS (\\Flagged other-kw)");
    c.ok("STORE 2 -FLAGS (other-kw)");
    server.kill9();
    server.restart();

    let mut c = Imap::login(server.imap, U, PASSWORD);
    let r = c.select("INBOX");
    let flags_line = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* FLAGS ("))
        .unwrap();
    assert!(
        flags_line.contains("$Label1") && flags_line.contains("custom"),
        "{flags_line}"
    );
    let f = c.fetch("FETCH 1:2 (FLAGS)");
    let mut f1 = f[0].flags();
    f1.retain(|x| x != "\\Recent");
    f1.sort();
    assert_eq!(f1, vec!["$Label1", "custom"]);
    let mut f2 = f[1].flags();
    f2.retain(|x| x != "\\Recent");
    assert_eq!(f2, vec!["\\Flagged"], "removed keyword stays removed");
    // Keywords are case-insensitive for SEARCH and STORE.
    let r = c.ok("SEARCH KEYWORD CUSTOM");
    assert_eq!(r.search(), vec![1]);
    c.ok("STORE 1 -FLAGS (Custom)");
    let r = c.ok("SEARCH KEYWORD custom");
    assert!(r.search().is_empty());
    c.ok("STORE 2 FLAGS ($Label1)");
    server.terminate();
    server.restart();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.select("INBOX");
    let r = c.ok("SEARCH KEYWORD $Label1");
    assert_eq!(r.search(), vec![1, 2]);
    let f = c.fetch("FETCH 2 (FLAGS)");
    assert!(
        !has_flag(&f[0].flags(), "\\Flagged"),
        "FLAGS replaces: {f:?}"
    );
    c.ok("LOGOUT");
}
