//! IMAP SEARCH over 10,000 messages (flags, UIDs, text, dates, OR/NOT,
//! UTF-8, ESEARCH, SEARCHRES), checked against a model of what was
//! appended (shared client in support/imap.rs).
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

// ---------------------------------------------------------------------------
// 8. SEARCH over 10,000 messages
// ---------------------------------------------------------------------------

#[test]
fn search_ten_thousand_messages() {
    const U: &str = "searcher@example.test";
    const N: usize = 10_000;
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let t0 = Instant::now();
    let mut model: Vec<Model> = Vec::with_capacity(N);
    let batch = 250;
    for start in (0..N).step_by(batch) {
        let mut out = Vec::new();
        let mut tags = Vec::new();
        for i in start..(start + batch).min(N) {
            let (msg, date, flags, sent_day) = corpus_message(i);
            let tag = format!("ap{i}");
            out.extend_from_slice(&append_bytes(&tag, "INBOX", flags, Some(&date), &msg));
            let body = String::from_utf8_lossy(
                &msg[msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..],
            )
            .into_owned();
            let subject = if i % 1000 == 7 {
                format!("Gr\u{fc}\u{df}e report {i}")
            } else {
                format!("Report {i} {}", WORDS[i % 4])
            };
            model.push(Model {
                i,
                uid: 0,
                seen: flags.contains("\\Seen"),
                flagged: flags.contains("\\Flagged"),
                answered: flags.contains("\\Answered"),
                label1: flags.contains("$Label1"),
                deleted: flags.contains("\\Deleted"),
                from: format!("Sender {k} <sender{k}@example.test>", k = i % 7),
                subject,
                body,
                sent_day,
                internal_day: 1 + ((i * 5) % 28) as u32,
                size: msg.len(),
            });
            tags.push(tag);
        }
        c.send(&out);
        for (k, tag) in tags.iter().enumerate() {
            let r = c.until(tag);
            let (_, uid) = appenduid(&r.status);
            model[start + k].uid = uid;
        }
    }
    let append_time = t0.elapsed();
    eprintln!("APPEND of {N} messages (LITERAL+, pipelined by {batch}) took {append_time:?}");
    for w in model.windows(2) {
        assert!(w[0].uid < w[1].uid, "UIDs ascend in append order");
    }
    let r = c.select("INBOX");
    assert_eq!(r.count("EXISTS"), Some(N as u32));
    // Expunge the \Deleted ones so sequence numbers and UIDs differ, then
    // mark a few others \Deleted.
    let r = c.ok("EXPUNGE");
    let gone = model.iter().filter(|m| m.deleted).count();
    assert_eq!(r.expunges().len(), gone);
    model.retain(|m| !m.deleted);
    let mark: Vec<String> = model
        .iter()
        .filter(|m| m.i % 89 == 0)
        .map(|m| m.uid.to_string())
        .collect();
    c.ok(&format!(
        "UID STORE {} +FLAGS.SILENT (\\Deleted)",
        mark.join(",")
    ));
    for m in model.iter_mut() {
        m.deleted = m.i % 89 == 0;
    }
    let seqs = |f: &dyn Fn(&Model) -> bool| -> Vec<u32> {
        model
            .iter()
            .enumerate()
            .filter(|(_, m)| f(m))
            .map(|(k, _)| k as u32 + 1)
            .collect()
    };
    let uids = |f: &dyn Fn(&Model) -> bool| -> Vec<u32> {
        model.iter().filter(|m| f(m)).map(|m| m.uid).collect()
    };
    let ci = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());

    let check = |c: &mut Imap, cmd: &str, want: Vec<u32>| {
        let t = Instant::now();
        let r = c.ok(cmd);
        let el = t.elapsed();
        let mut got = r.search();
        got.sort_unstable();
        assert_eq!(
            got.len(),
            want.len(),
            "{cmd}: {} hits, want {}",
            got.len(),
            want.len()
        );
        assert_eq!(got, want, "{cmd}");
        eprintln!("{cmd:?}: {} hits in {el:?}", want.len());
    };
    check(&mut c, "SEARCH SEEN", seqs(&|m| m.seen));
    check(
        &mut c,
        "SEARCH UNSEEN FLAGGED",
        seqs(&|m| !m.seen && m.flagged),
    );
    check(&mut c, "SEARCH KEYWORD $Label1", seqs(&|m| m.label1));
    check(
        &mut c,
        "SEARCH UNKEYWORD $Label1 ANSWERED",
        seqs(&|m| !m.label1 && m.answered),
    );
    check(&mut c, "SEARCH DELETED", seqs(&|m| m.deleted));
    check(
        &mut c,
        "SEARCH UNDELETED UNANSWERED UNFLAGGED",
        seqs(&|m| !m.deleted && !m.answered && !m.flagged),
    );
    check(&mut c, "SEARCH KEYWORD $NeverUsed", vec![]);
    check(
        &mut c,
        "UID SEARCH UID 100:200",
        uids(&|m| (100..=200).contains(&m.uid)),
    );
    check(&mut c, "UID SEARCH UID 9990:*", uids(&|m| m.uid >= 9990));
    check(
        &mut c,
        "SEARCH 50:60,9000:*",
        seqs(&|_| true)
            .into_iter()
            .filter(|s| (50..=60).contains(s) || *s >= 9000)
            .collect(),
    );
    check(&mut c, "UID SEARCH 1:5", uids(&|_| true)[..5].to_vec());
    check(
        &mut c,
        "SEARCH FROM sender3",
        seqs(&|m| m.from.contains("sender3")),
    );
    check(
        &mut c,
        "SEARCH FROM \"SENDER 4\"",
        seqs(&|m| ci(&m.from, "sender 4")),
    );
    check(
        &mut c,
        "SEARCH SUBJECT \"report 123\"",
        seqs(&|m| ci(&m.subject, "report 123")),
    );
    check(
        &mut c,
        "SEARCH HEADER Message-ID <search-4321@",
        seqs(&|m| m.i == 4321),
    );
    let t = Instant::now();
    check(
        &mut c,
        "SEARCH BODY tok-42-end",
        seqs(&|m| m.body.contains("tok-42-end")),
    );
    eprintln!(
        "SEARCH BODY over {} messages: {:?}",
        model.len(),
        t.elapsed()
    );
    check(
        &mut c,
        "SEARCH BODY \"message 4321.\"",
        seqs(&|m| m.i == 4321),
    );
    check(
        &mut c,
        "SEARCH TEXT sender6 BODY tok-1-end",
        seqs(&|m| m.i % 7 == 6 && m.body.contains("tok-1-end")),
    );
    check(
        &mut c,
        "SEARCH SINCE 10-Feb-2020 BEFORE 15-Feb-2020",
        seqs(&|m| (10..15).contains(&m.internal_day)),
    );
    check(
        &mut c,
        "SEARCH ON 3-Feb-2020",
        seqs(&|m| m.internal_day == 3),
    );
    check(
        &mut c,
        "SEARCH SENTON 5-Jan-2020",
        seqs(&|m| m.sent_day == 5),
    );
    check(
        &mut c,
        "SEARCH SENTSINCE 27-Jan-2020",
        seqs(&|m| m.sent_day >= 27),
    );
    check(
        &mut c,
        "SEARCH SENTBEFORE 2-Jan-2020 SEEN",
        seqs(&|m| m.sent_day < 2 && m.seen),
    );
    check(
        &mut c,
        "SEARCH OR FLAGGED NOT SEEN",
        seqs(&|m| m.flagged || !m.seen),
    );
    check(
        &mut c,
        "SEARCH NOT (OR SEEN FLAGGED)",
        seqs(&|m| !(m.seen || m.flagged)),
    );
    check(
        &mut c,
        "SEARCH OR (FROM sender1 SEEN) (SUBJECT alpha NOT KEYWORD $Label1)",
        seqs(&|m| {
            (m.from.contains("sender1") && m.seen) || (m.subject.contains("alpha") && !m.label1)
        }),
    );
    check(
        &mut c,
        "SEARCH OR OR ANSWERED DELETED OR FLAGGED KEYWORD $Label1",
        seqs(&|m| m.answered || m.deleted || m.flagged || m.label1),
    );
    let median = {
        let mut s: Vec<usize> = model.iter().map(|m| m.size).collect();
        s.sort_unstable();
        s[s.len() / 2]
    };
    check(
        &mut c,
        &format!("SEARCH LARGER {median}"),
        seqs(&|m| m.size > median),
    );
    check(
        &mut c,
        &format!("SEARCH SMALLER {median}"),
        seqs(&|m| m.size < median),
    );
    // Non-ASCII: CHARSET UTF-8 with literals (8-bit data can't be quoted).
    let grusse = "Gr\u{fc}\u{df}e";
    let r = c.cmd_bytes(
        format!(
            "SEARCH CHARSET UTF-8 SUBJECT {{{}+}}\r\n{grusse}",
            grusse.len()
        )
        .as_bytes(),
    );
    assert!(r.ok(), "{r:?}");
    let mut got = r.search();
    got.sort_unstable();
    assert_eq!(
        got,
        seqs(&|m| m.subject.contains(grusse)),
        "SUBJECT Grüße (encoded word)"
    );
    assert!(!got.is_empty());
    let koeln = "K\u{f6}ln";
    let r = c
        .cmd_bytes(format!("SEARCH CHARSET UTF-8 BODY {{{}+}}\r\n{koeln}", koeln.len()).as_bytes());
    assert!(r.ok(), "{r:?}");
    let mut got = r.search();
    got.sort_unstable();
    assert_eq!(got, seqs(&|m| m.body.contains(koeln)), "BODY Köln (8-bit)");
    assert!(!got.is_empty());
    let r = c.cmd("SEARCH CHARSET X-UNKNOWN-CHARSET SUBJECT x");
    assert!(r.status.starts_with("NO [BADCHARSET"), "{r:?}");

    // ESEARCH (RFC 4731).
    let want = seqs(&|m| m.flagged);
    let r = c.ok("SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED");
    let tag = format!("t{}", c.next);
    let (uid, items) = esearch(&r, &tag);
    assert!(!uid);
    let get = |k: &str| items.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("MIN"), Some(want[0].to_string()));
    assert_eq!(get("MAX"), Some(want.last().unwrap().to_string()));
    assert_eq!(get("COUNT"), Some(want.len().to_string()));
    assert_eq!(expand_set(&get("ALL").unwrap()), want);
    let want = uids(&|m| m.seen && m.label1);
    let r = c.ok("UID SEARCH RETURN (COUNT MIN) SEEN KEYWORD $Label1");
    let (uid, items) = esearch(&r, &format!("t{}", c.next));
    assert!(uid, "UID SEARCH ESEARCH carries UID: {r:?}");
    assert!(
        items.contains(&("MIN".to_string(), want[0].to_string())),
        "{r:?}"
    );
    assert!(
        items.contains(&("COUNT".to_string(), want.len().to_string())),
        "{r:?}"
    );
    assert_eq!(items.len(), 2, "{r:?}");
    // RETURN () means ALL.
    let want = seqs(&|m| m.subject.contains("gamma"));
    let r = c.ok("SEARCH RETURN () SUBJECT gamma");
    let (_, items) = esearch(&r, &format!("t{}", c.next));
    assert_eq!(items.len(), 1, "{r:?}");
    assert_eq!(items[0].0, "ALL");
    assert_eq!(expand_set(&items[0].1), want);
    // No match: MIN/MAX/ALL are omitted, COUNT is 0.
    let r = c.ok("SEARCH RETURN (MIN MAX COUNT ALL) UID 20000:30000");
    let (_, items) = esearch(&r, &format!("t{}", c.next));
    assert_eq!(items, vec![("COUNT".to_string(), "0".to_string())], "{r:?}");
    assert!(
        r.with_prefix("SEARCH").is_empty(),
        "SEARCH and ESEARCH both sent: {r:?}"
    );

    // SEARCHRES (RFC 5182): SAVE, then $ in FETCH, SEARCH and STORE.
    let want = uids(&|m| m.from.contains("sender5") && m.subject.contains("beta"));
    let r = c.ok("UID SEARCH RETURN (SAVE) FROM sender5 SUBJECT beta");
    assert!(
        r.with_prefix("ESEARCH").is_empty() && r.with_prefix("SEARCH").is_empty(),
        "SAVE alone returns nothing: {r:?}"
    );
    let f = c.fetch("UID FETCH $ (UID)");
    let mut got: Vec<u32> = f.iter().map(|f| f.uid()).collect();
    got.sort_unstable();
    assert_eq!(got, want);
    let r = c.ok("UID SEARCH $ SEEN");
    let mut got = r.search();
    got.sort_unstable();
    assert_eq!(
        got,
        uids(&|m| m.from.contains("sender5") && m.subject.contains("beta") && m.seen)
    );
    let r = c.ok("SEARCH RETURN (SAVE MIN) SUBJECT delta FLAGGED");
    let want_seq = seqs(&|m| m.subject.contains("delta") && m.flagged);
    let (_, items) = esearch(&r, &format!("t{}", c.next));
    assert_eq!(items, vec![("MIN".to_string(), want_seq[0].to_string())]);
    // RFC 5182 2.4: SAVE with MIN (and no other result option) saves the
    // MIN message only.
    let f = c.fetch("FETCH $ (UID)");
    let got: Vec<u32> = f.iter().map(|f| f.uid()).collect();
    assert_eq!(
        got,
        uids(&|m| m.subject.contains("delta") && m.flagged)[..1].to_vec(),
        "$ after SEARCH RETURN (SAVE MIN)"
    );
    // Non-UID STORE on $ touches exactly the saved messages.
    c.ok("SEARCH RETURN (SAVE) SUBJECT delta FLAGGED");
    c.ok("STORE $ +FLAGS.SILENT ($Saved)");
    let r = c.ok("UID SEARCH KEYWORD $Saved");
    let mut got = r.search();
    got.sort_unstable();
    assert_eq!(
        got,
        uids(&|m| m.subject.contains("delta") && m.flagged),
        "STORE $"
    );
    // An empty saved result: $ names no message; commands on it succeed and do nothing.
    c.ok("SEARCH RETURN (SAVE) UID 20000:30000");
    for cmd in [
        "FETCH $ (UID)",
        "UID FETCH $ (UID)",
        "STORE $ +FLAGS (\\Seen)",
        "COPY $ INBOX",
    ] {
        let r = c.ok(cmd);
        assert!(r.fetches().is_empty(), "{cmd} on an empty $: {r:?}");
    }
    c.ok("LOGOUT");
}
