//! SORT, ESORT and THREAD (RFC 5256, RFC 5267) end to end: raw exchanges
//! checked byte for byte on a small mailbox whose expected orders and
//! thread trees are worked out by hand in the comments, then the same with
//! Python's imaplib (shared client in support/imap.rs).
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

/// (internal date, header fields) of the seven messages, in append order.
/// Dates in UTC: 1 Jan 3 10:00; 2 Jan 4; 3 Jan 2 04:00 (written as Jan 1
/// 23:00 -0500); 4 Jan 5; 5 Jan 6; 6 Jan 7; 7 none (internal date Jan 10).
const MESSAGES: [(&str, &str); 7] = [
    (
        "06-Jan-2026 12:00:00 +0000",
        "From: Carol <carol@example.test>\r\nSubject: Project plan\r\n\
         Date: Sat, 3 Jan 2026 10:00:00 +0000\r\nMessage-ID: <a@order.test>\r\n",
    ),
    (
        "05-Jan-2026 12:00:00 +0000",
        "From: alice@example.test\r\nSubject: Re: Project plan\r\n\
         Date: Sun, 4 Jan 2026 10:00:00 +0000\r\nMessage-ID: <b@order.test>\r\n\
         In-Reply-To: <a@order.test>\r\nReferences: <a@order.test>\r\n",
    ),
    (
        "04-Jan-2026 12:00:00 +0000",
        "From: \"Bob B.\" <bob@example.test>\r\nSubject: Lunch?\r\n\
         Date: Thu, 1 Jan 2026 23:00:00 -0500\r\nMessage-ID: <c@order.test>\r\n",
    ),
    (
        "03-Jan-2026 12:00:00 +0000",
        "From: Dave <dave@example.test>\r\nSubject: RE: Re: project PLAN\r\n\
         Date: Mon, 5 Jan 2026 10:00:00 +0000\r\nMessage-ID: <d@order.test>\r\n\
         References: <a@order.test>\r\n <b@order.test>\r\n",
    ),
    (
        "02-Jan-2026 12:00:00 +0000",
        "From: Alice <ALICE@example.test>\r\nSubject: Re: Lunch?\r\n\
         Date: Tue, 6 Jan 2026 10:00:00 +0000\r\nMessage-ID: <e@order.test>\r\n\
         References: <missing@order.test>\r\n",
    ),
    (
        "01-Jan-2026 12:00:00 +0000",
        "From: bob@example.test\r\nSubject: [list] Fwd: lunch?\r\n\
         Date: Wed, 7 Jan 2026 10:00:00 +0000\r\nMessage-ID: <f@order.test>\r\n",
    ),
    (
        "10-Jan-2026 12:00:00 +0000",
        "From: zed@example.test\r\nMessage-ID: <g@order.test>\r\n\
         In-Reply-To: <c@order.test>\r\n",
    ),
];

/// A mailbox "Order" with the seven messages at sequence numbers 1..=7 and
/// UIDs 2..=8 (a first message is appended and expunged, so a UID answer
/// cannot pass for a sequence answer).
fn fill(c: &mut Imap) {
    c.ok("CREATE Order");
    c.append_ok("Order", "", None, b"Subject: gone\r\n\r\nx\r\n");
    for (i, (date, head)) in MESSAGES.iter().enumerate() {
        // Sizes differ: message i has i lines of body.
        let body = "line of text\r\n".repeat(7 - i);
        let msg = format!("{head}To: order@example.test\r\n\r\n{body}");
        c.append_ok("Order", "", Some(date), msg.as_bytes());
    }
    c.ok("SELECT Order");
    c.ok("STORE 1 +FLAGS (\\Deleted)");
    c.ok("EXPUNGE");
}

fn sort_line(c: &mut Imap, cmd: &str) -> String {
    let r = c.ok(cmd);
    let lines = r.with_prefix("SORT");
    assert_eq!(lines.len(), 1, "{cmd}: {:?}", r.lines());
    lines[0].clone()
}

fn thread_line(c: &mut Imap, cmd: &str) -> String {
    let r = c.ok(cmd);
    let lines = r.with_prefix("THREAD");
    assert_eq!(lines.len(), 1, "{cmd}: {:?}", r.lines());
    lines[0].clone()
}

#[test]
fn sort_and_thread_raw() {
    const U: &str = "order@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let caps = c.ok("CAPABILITY").lines()[0].clone();
    for cap in [
        "SORT",
        "ESORT",
        "THREAD=ORDEREDSUBJECT",
        "THREAD=REFERENCES",
    ] {
        assert!(caps.split(' ').any(|w| w == cap), "{cap} in {caps}");
    }
    fill(&mut c);
    // Base subjects (RFC 5256 2.1): 7 "", 3/5/6 "LUNCH?", 1/2/4 "PROJECT
    // PLAN"; ties by sequence number.
    assert_eq!(
        sort_line(&mut c, "SORT (SUBJECT) UTF-8 ALL"),
        "* SORT 7 3 5 6 1 2 4"
    );
    // Sent dates in UTC; 7 has no Date: and sorts by its internal date.
    assert_eq!(
        sort_line(&mut c, "SORT (DATE) UTF-8 ALL"),
        "* SORT 3 1 2 4 5 6 7"
    );
    assert_eq!(
        sort_line(&mut c, "SORT (REVERSE DATE) US-ASCII ALL"),
        "* SORT 7 6 5 4 2 1 3"
    );
    assert_eq!(
        sort_line(&mut c, "SORT (ARRIVAL) UTF-8 ALL"),
        "* SORT 6 5 4 3 2 1 7"
    );
    // The first From address's mailbox, case-insensitive: alice (2, 5),
    // bob (3, 6), carol, dave, zed.
    assert_eq!(
        sort_line(&mut c, "SORT (FROM) UTF-8 ALL"),
        "* SORT 2 5 3 6 1 4 7"
    );
    // REVERSE applies to one key only.
    assert_eq!(
        sort_line(&mut c, "SORT (REVERSE FROM DATE) UTF-8 ALL"),
        "* SORT 7 4 1 3 6 2 5"
    );
    // Everyone has the same To: sequence order remains.
    assert_eq!(
        sort_line(&mut c, "SORT (TO) UTF-8 ALL"),
        "* SORT 1 2 3 4 5 6 7"
    );
    // Sizes: bodies shrink with i, headers vary; compare with RFC822.SIZE.
    let sizes: Vec<(u32, u64)> = c
        .fetch("FETCH 1:* RFC822.SIZE")
        .iter()
        .map(|f| (f.seq, f.must("RFC822.SIZE").num()))
        .collect();
    let mut by_size = sizes.clone();
    by_size.sort_by_key(|&(seq, size)| (size, seq));
    let want: Vec<String> = by_size.iter().map(|(s, _)| s.to_string()).collect();
    assert_eq!(
        sort_line(&mut c, "SORT (SIZE) UTF-8 ALL"),
        format!("* SORT {}", want.join(" "))
    );
    // Search keys filter; UID SORT answers UIDs (sequence + 1 here).
    assert_eq!(
        sort_line(&mut c, "SORT (DATE) UTF-8 FROM alice"),
        "* SORT 2 5"
    );
    assert_eq!(
        sort_line(&mut c, "UID SORT (DATE) UTF-8 FROM alice"),
        "* SORT 3 6"
    );
    assert_eq!(
        sort_line(&mut c, "SORT (DATE) UTF-8 SUBJECT nothing"),
        "* SORT"
    );
    // ESORT (RFC 5267): MIN/MAX are the first and last in sort order, ALL
    // keeps the order.
    let t = c.tag();
    c.send(format!("{t} SORT RETURN (MIN MAX COUNT ALL) (DATE) UTF-8 ALL\r\n").as_bytes());
    let r = c.until(&t);
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.lines(),
        vec![format!(
            "* ESEARCH (TAG \"{t}\") MIN 3 MAX 7 ALL 3,1:2,4:7 COUNT 7"
        )]
    );
    // RFC 5182 2.4: SAVE with MIN saves only that message; a SAVE that
    // fails with NO empties `$` (2.1).
    c.ok("SORT RETURN (SAVE MIN) (DATE) UTF-8 ALL");
    let f = c.fetch("FETCH $ (UID)");
    assert_eq!(f.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![3]);
    c.ok("SORT RETURN (SAVE) (SUBJECT) UTF-8 ALL");
    assert_eq!(c.fetch("FETCH $ (UID)").len(), 7);
    let r = c.cmd("SORT RETURN (SAVE) (DATE) KOI8-R ALL");
    assert!(r.status.starts_with("NO [BADCHARSET"), "{}", r.status);
    assert_eq!(c.fetch("FETCH $ (UID)").len(), 0);
    // THREAD=REFERENCES (RFC 5256 section 3): 1 <- 2 <- 4 by References;
    // 7 replies to 3 by In-Reply-To; 5's parent is missing (its dummy has
    // one child and is dropped); 5 and 6 are replies with 3's base subject,
    // so they join 3's thread; children by date.
    assert_eq!(
        thread_line(&mut c, "THREAD REFERENCES UTF-8 ALL"),
        "* THREAD (3 (5)(6)(7))(1 2 4)"
    );
    assert_eq!(
        thread_line(&mut c, "UID THREAD REFERENCES UTF-8 ALL"),
        "* THREAD (4 (6)(7)(8))(2 3 5)"
    );
    // ORDEREDSUBJECT: one thread per base subject, the first by date the
    // parent of the others; threads by their first message's date.
    assert_eq!(
        thread_line(&mut c, "THREAD ORDEREDSUBJECT UTF-8 ALL"),
        "* THREAD (3 (5)(6))(1 (2)(4))(7)"
    );
    assert_eq!(
        thread_line(&mut c, "THREAD REFERENCES UTF-8 FROM nobody"),
        "* THREAD"
    );
    // Errors: unknown charset, key, algorithm; no mailbox selected.
    let r = c.cmd("SORT (DATE) KOI8-R ALL");
    assert!(r.status.starts_with("NO [BADCHARSET"), "{}", r.status);
    let r = c.cmd("SORT (COLOUR) UTF-8 ALL");
    assert!(r.status.starts_with("BAD"), "{}", r.status);
    let r = c.cmd("THREAD GUESS UTF-8 ALL");
    assert!(r.status.starts_with("BAD"), "{}", r.status);
    c.ok("UNSELECT");
    let r = c.cmd("SORT (DATE) UTF-8 ALL");
    assert!(r.status.starts_with("BAD"), "{}", r.status);
    c.ok("LOGOUT");

    // The same through Python's imaplib.
    let out = python_code(&format!(
        r#"
import imaplib
m = imaplib.IMAP4("127.0.0.1", {port})
m.login("{U}", "{PASSWORD}")
m.select("Order", readonly=True)
print(m.sort("(SUBJECT)", "UTF-8", "ALL")[1][0].decode())
print(m.uid("SORT", "(REVERSE DATE)", "UTF-8", "ALL")[1][0].decode())
print(m.thread("REFERENCES", "UTF-8", "ALL")[1][0].decode())
print(m.thread("ORDEREDSUBJECT", "UTF-8", "NOT", "FROM", "zed")[1][0].decode())
m.logout()
"#,
        port = server.imap.port()
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "7 3 5 6 1 2 4",
            "8 7 6 5 3 2 4",
            "(3 (5)(6)(7))(1 2 4)",
            "(3 (5)(6))(1 (2)(4))",
        ]
    );
}

/// A reply chain thousands deep, and a mailbox of many threads: THREAD
/// and SORT answer without running out of stack, and the chain comes back
/// as one thread in order.
#[test]
fn thread_deep_chain() {
    const U: &str = "chain@example.test";
    const N: usize = 1000;
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let mut batch = Vec::new();
    for i in 0..N {
        let refs = if i == 0 {
            String::new()
        } else {
            format!("In-Reply-To: <m{}@chain.test>\r\n", i - 1)
        };
        let msg = format!(
            "Subject: Re: chain\r\nMessage-ID: <m{i}@chain.test>\r\n{refs}\
             Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n{i}\r\n"
        );
        batch.extend_from_slice(&append_bytes(
            &format!("c{i}"),
            "INBOX",
            "",
            None,
            msg.as_bytes(),
        ));
    }
    c.send(&batch);
    for i in 0..N {
        let r = c.until(&format!("c{i}"));
        assert!(r.ok(), "{}", r.status);
    }
    c.ok("SELECT INBOX");
    let line = thread_line(&mut c, "THREAD REFERENCES UTF-8 ALL");
    let want: Vec<String> = (1..=N).map(|n| n.to_string()).collect();
    assert_eq!(line, format!("* THREAD ({})", want.join(" ")));
    let line = sort_line(&mut c, "SORT (REVERSE SUBJECT DATE) UTF-8 ALL");
    assert_eq!(line, format!("* SORT {}", want.join(" ")));
    c.ok("LOGOUT");
}
