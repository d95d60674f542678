//! SMTP (RFC 5321) and its extensions against the real server, mostly with a
//! raw socket so that every reply code is checked exactly:
//! EHLO keywords, PIPELINING (RFC 2920), CHUNKING/BDAT (RFC 3030), SIZE
//! (RFC 1870), recipient verdicts (unknown user, relay denied, postmaster),
//! command sequencing, recipient limit, over-long lines, SMTP smuggling,
//! RSET/NOOP/VRFY/QUIT, the error limit, SMTPUTF8 (RFC 6531), the trace
//! headers and `--hostname`, and swaks when it is installed.
use std::process::{Command, Stdio};
use std::time::Duration;

use ringmail_tests::*;

const ALICE: (&str, &str) = ("alice@example.test", "alice-secret");
const BOB: (&str, &str) = ("bob@example.test", "bob-secret");

fn mailbox(server: &Server, who: (&str, &str)) -> Vec<Vec<u8>> {
    fetch_all(server.pop3, who.0, who.1)
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

fn count(server: &Server, who: (&str, &str)) -> usize {
    let mut p = Pop3::login(server.pop3, who.0, who.1);
    let (n, _) = p.stat();
    p.quit();
    n
}

fn small_config(extra_limits: &str) -> String {
    format!("local_domains = [\"example.test\"]\n[[demo_accounts]]\naddress = \"alice@example.test\"\npassword = \"alice-secret\"\n[[demo_accounts]]\naddress = \"bob@example.test\"\npassword = \"bob-secret\"\n[aliases]\n\"postmaster@example.test\" = \"alice@example.test\"\n[limits]\n{extra_limits}\n")
}

#[test]
fn greeting_and_ehlo_keywords() {
    let server = Server::new();
    let mut c = Client::connect(server.smtp);
    let greet = c.reply();
    greet.expect(220, None);
    assert!(
        greet.lines[0].starts_with("mail.example.test"),
        "greeting should name the host: {greet:?}"
    );

    let ehlo = c.cmd("EHLO client.e2e.test");
    ehlo.expect(250, None);
    assert!(
        ehlo.lines[0].starts_with("mail.example.test"),
        "EHLO first line should name the host: {ehlo:?}"
    );
    let keywords: Vec<String> = ehlo.lines[1..]
        .iter()
        .map(|l| l.to_ascii_uppercase())
        .collect();
    for want in [
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
    ] {
        assert!(
            keywords.iter().any(|k| k == want),
            "EHLO lacks {want}: {ehlo:?}"
        );
    }
    assert!(
        keywords.iter().any(|k| k == "SIZE 33554432"),
        "EHLO should say SIZE 33554432 (the default limit): {ehlo:?}"
    );
    // STARTTLS (RFC 3207) is offered on every plain SMTP connection.
    assert!(
        keywords.iter().any(|k| k == "STARTTLS"),
        "STARTTLS not offered: {ehlo:?}"
    );

    // EHLO again resets and answers the same; HELO is accepted too.
    assert_eq!(c.cmd("EHLO again.e2e.test").lines[1..], ehlo.lines[1..]);
    c.cmd("HELO old.e2e.test").expect(250, None);
    // EHLO/HELO need a domain or address literal (RFC 5321 4.1.1.1).
    c.cmd("EHLO").expect(501, None);
    c.cmd("HELO").expect(501, None);
    c.cmd("NOOP").expect(250, Some("2.0.0"));
    c.cmd("NOOP with an argument").expect(250, None);
    // RFC 5321 3.5.3: 252 when the server will not verify but accepts mail.
    c.cmd("VRFY bob").expect(252, None);
    c.cmd("VRFY <bob@example.test>").expect(252, None);
    c.cmd("QUIT").expect(221, Some("2.0.0"));
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "connection open after QUIT"
    );
}

#[test]
fn pipelined_transaction_replies_in_order() {
    let server = Server::new();
    let (mut c, _) = smtp_connect(server.smtp);
    let body = b"Subject: pipelined\r\n\r\nsent in one write\r\n";
    // RFC 2920: MAIL, RCPTs and DATA in one write; replies come in order.
    let mut batch = b"MAIL FROM:<pipe@example.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n".to_vec();
    c.send(&batch);
    c.reply().expect(250, Some("2.1.0"));
    c.reply().expect(250, Some("2.1.5"));
    c.reply().expect(550, Some("5.1.1"));
    c.reply().expect(250, Some("2.1.5"));
    c.reply().expect(354, None);
    // The message, a whole second transaction and QUIT, all in one write.
    batch = dot_stuff(body);
    batch.extend_from_slice(
        b"MAIL FROM:<pipe2@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n",
    );
    batch.extend_from_slice(&dot_stuff(b"Subject: second\r\n\r\nsecond\r\n"));
    batch.extend_from_slice(b"QUIT\r\n");
    c.send(&batch);
    c.reply().expect(250, Some("2.0.0"));
    c.reply().expect(250, None);
    c.reply().expect(250, None);
    c.reply().expect(354, None);
    c.reply().expect(250, None);
    c.reply().expect(221, None);
    assert!(c.closed_within(Duration::from_secs(5)));

    let a = mailbox(&server, ALICE);
    assert_eq!(a.len(), 1);
    assert_bytes_eq(strip_trace(&a[0]).1, body, "alice");
    let b = mailbox(&server, BOB);
    assert_eq!(b.len(), 2);
    assert_bytes_eq(strip_trace(&b[0]).1, body, "bob 1");
    assert_eq!(return_path(&b[1]), "pipe2@example.test");
}

#[test]
fn bdat_chunks() {
    let server = Server::new();
    let (mut c, _) = smtp_connect(server.smtp);
    // Chunk contents are taken literally (RFC 3030 2): a CRLF.CRLF inside ends
    // nothing, and leading dots are not un-stuffed.
    let parts: [&[u8]; 4] = [
        b"Subject: chunked\r\n\r\nfirst chunk ends mid-li",
        b"ne\r\n.\r\nMAIL FROM:<x@y.test>\r\n..two dots stay two dots\r",
        b"\n8-bit: \x01\xff\xfe\x80\r\n.",
        b"\r\nlast line\r\n",
    ];
    let whole: Vec<u8> = parts.concat();
    c.cmd("MAIL FROM:<chunks@example.test> BODY=8BITMIME")
        .expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    for p in parts {
        let mut b = format!("BDAT {}\r\n", p.len()).into_bytes();
        b.extend_from_slice(p);
        c.send(&b);
        c.reply().expect(250, None);
    }
    c.cmd("BDAT 0 LAST").expect(250, Some("2.0.0"));

    // Pipelined: MAIL, RCPT, two chunks and LAST in one write (RFC 3030 4.2).
    let mut b = b"MAIL FROM:<chunks2@example.test>\r\nRCPT TO:<alice@example.test>\r\nBDAT 10\r\n0123456789BDAT 7 LAST\r\n\r\n.\r\n\r\n".to_vec();
    b.extend_from_slice(b"NOOP\r\n");
    c.send(&b);
    for _ in 0..3 {
        c.reply().expect(250, None);
    }
    c.reply().expect(250, Some("2.0.0"));
    c.reply().expect(250, None);

    // An empty message in one BDAT 0 LAST.
    c.cmd("MAIL FROM:<empty@example.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    c.cmd("BDAT 0 LAST").expect(250, None);

    // No valid recipient: the pipelined chunk is refused but consumed, and
    // the session stays in step (RFC 3030 2, RFC 2920).
    c.send(b"MAIL FROM:<none@example.test>\r\nRCPT TO:<nobody@example.test>\r\nBDAT 5 LAST\r\nhelloNOOP\r\n");
    c.reply().expect(250, None);
    c.reply().expect(550, Some("5.1.1"));
    let r = c.reply();
    assert!(
        r.code == 554 || r.code == 503,
        "BDAT without valid recipients: {r:?}"
    );
    c.reply().expect(250, None);
    c.cmd("RSET").expect(250, None);

    // RSET in the middle of a chunked message discards it.
    c.cmd("MAIL FROM:<abandoned@example.test>")
        .expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    c.send(b"BDAT 9\r\nabandoned");
    c.reply().expect(250, None);
    c.cmd("RSET").expect(250, None);
    c.send(b"BDAT 1 LAST\r\nx");
    c.reply().expect(503, None);

    // DATA after BDAT in the same transaction is out of sequence (RFC 3030 3).
    c.cmd("MAIL FROM:<mixed@example.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    c.send(b"BDAT 3\r\nabc");
    c.reply().expect(250, None);
    c.cmd("DATA").expect(503, None);
    c.cmd("RSET").expect(250, None);
    // BDAT without a transaction: 503; its octets are still consumed.
    c.send(b"BDAT 5 LAST\r\nhello");
    c.reply().expect(503, None);
    c.cmd("NOOP").expect(250, None);
    // A malformed BDAT size: 501, or 421 and close (the server cannot know
    // how many octets follow, so it may not be able to stay in sync).
    let r = c.cmd("BDAT x");
    if r.code == 421 {
        assert!(
            c.closed_within(Duration::from_secs(5)),
            "421 without closing"
        );
    } else {
        r.expect(501, None);
        c.cmd("QUIT").expect(221, None);
    }

    let a = mailbox(&server, ALICE);
    assert_eq!(a.len(), 3, "three messages expected");
    assert_bytes_eq(strip_trace(&a[0]).1, &whole, "chunked message");
    assert_bytes_eq(
        strip_trace(&a[1]).1,
        b"0123456789\r\n.\r\n\r\n",
        "pipelined chunked message",
    );
    assert_bytes_eq(strip_trace(&a[2]).1, b"", "empty BDAT message");
}

#[test]
fn size_limit() {
    let server = Server::options()
        .config(&small_config("message_size_max = 10000"))
        .start();
    let (mut c, ehlo) = smtp_connect(server.smtp);
    assert!(
        ehlo.lines.iter().any(|l| l == "SIZE 10000"),
        "EHLO should advertise SIZE 10000: {ehlo:?}"
    );

    // Declared too big at MAIL (RFC 1870 6.2).
    c.cmd("MAIL FROM:<big@example.test> SIZE=10001")
        .expect(552, Some("5.3.4"));
    c.cmd("MAIL FROM:<big@example.test> SIZE=99999999999999999999")
        .expect(552, Some("5.3.4"));
    c.cmd("MAIL FROM:<ok@example.test> SIZE=10000")
        .expect(250, None);
    c.cmd("RSET").expect(250, None);

    // Not declared, but too big: the whole DATA is read, then 552, nothing stored.
    let mut big = b"Subject: too big\r\n\r\n".to_vec();
    while big.len() <= 12000 {
        big.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    let r = smtp_transaction(&mut c, "big@example.test", &[ALICE.0], &big, Transfer::Data).unwrap();
    r.expect(552, Some("5.3.4"));
    // Same with BDAT, in several chunks: the server may refuse the chunk that
    // crosses the limit or wait for LAST; either way 552 5.3.4 and no 2xx after it.
    c.cmd("MAIL FROM:<big@example.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    let chunks: Vec<&[u8]> = big.chunks(4000).collect();
    let mut replies = Vec::new();
    for (i, part) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut b =
            format!("BDAT {}{}\r\n", part.len(), if last { " LAST" } else { "" }).into_bytes();
        b.extend_from_slice(part);
        c.send(&b);
        replies.push(c.reply());
    }
    check_refused_chunks(&replies);
    c.cmd("RSET").expect(250, None);
    // The session is still usable: a message at the limit goes through.
    let mut fits = b"Subject: fits\r\n\r\n".to_vec();
    fits.resize(10000 - 2, b'x');
    fits.extend_from_slice(b"\r\n");
    assert_eq!(fits.len(), 10000);
    smtp_transaction(&mut c, "ok@example.test", &[ALICE.0], &fits, Transfer::Data)
        .unwrap()
        .expect(250, None);
    c.cmd("QUIT").expect(221, None);

    let a = mailbox(&server, ALICE);
    assert_eq!(
        a.len(),
        1,
        "only the message within the limit may be stored"
    );
    assert_bytes_eq(strip_trace(&a[0]).1, &fits, "message at the limit");
}

/// BDAT replies of an over-size message: a 552 5.3.4 somewhere, nothing
/// positive after it, and the LAST chunk not accepted.
#[track_caller]
fn check_refused_chunks(replies: &[Reply]) {
    let first = replies
        .iter()
        .position(|r| r.code == 552)
        .unwrap_or_else(|| panic!("no 552 among {replies:?}"));
    assert_eq!(replies[first].enhanced(), Some("5.3.4"), "{replies:?}");
    assert!(
        replies[first..].iter().all(|r| r.code >= 500),
        "a chunk accepted after the refusal: {replies:?}"
    );
}

#[test]
fn size_limit_bdat_chunk_refused_midway_keeps_sync() {
    let server = Server::options()
        .config(&small_config("message_size_max = 1000"))
        .start();
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("MAIL FROM:<big@example.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    // 3 chunks of 600 bytes, pipelined: the server must consume every chunk's
    // octets whatever it answers, and answer each BDAT once.
    let chunk = vec![b'z'; 600];
    let mut b = Vec::new();
    for i in 0..3 {
        b.extend_from_slice(
            format!("BDAT 600{}\r\n", if i == 2 { " LAST" } else { "" }).as_bytes(),
        );
        b.extend_from_slice(&chunk);
    }
    b.extend_from_slice(b"NOOP\r\n");
    c.send(&b);
    let replies: Vec<Reply> = (0..3).map(|_| c.reply()).collect();
    assert_eq!(replies[0].code, 250, "{replies:?}");
    check_refused_chunks(&replies);
    c.reply().expect(250, None); // NOOP: still in sync
    c.cmd("QUIT").expect(221, None);
    assert_eq!(count(&server, ALICE), 0);
}

#[test]
fn recipient_verdicts_and_sequence_errors() {
    let server = Server::new();
    let (mut c, _) = smtp_connect(server.smtp);
    // Out of sequence (RFC 5321 4.3.2 / 3.3).
    c.cmd("RCPT TO:<alice@example.test>")
        .expect(503, Some("5.5.1"));
    let r = c.cmd("DATA");
    assert!(
        r.code == 503 || r.code == 554,
        "DATA without a transaction: {r:?}"
    );
    c.cmd("MAIL FROM:<s@example.test>").expect(250, None);
    c.cmd("MAIL FROM:<s@example.test>")
        .expect(503, Some("5.5.1"));
    let r = c.cmd("DATA");
    assert!(
        r.code == 503 || r.code == 554,
        "DATA without recipients: {r:?}"
    );

    // Unknown local user; foreign domain (no open relay); syntax errors.
    c.cmd("RCPT TO:<nobody@example.test>")
        .expect(550, Some("5.1.1"));
    c.cmd("RCPT TO:<someone@elsewhere.test>")
        .expect(550, Some("5.7.1"));
    c.cmd("RCPT TO:<bob@example.test.evil.test>")
        .expect(550, Some("5.7.1"));
    let r = c.cmd("RCPT TO:<@relay.test:bob@elsewhere.test>");
    assert_eq!(r.code, 550, "source-routed foreign recipient: {r:?}");
    let r = c.cmd("RCPT TO:bob@example.test with junk");
    assert!(
        r.code == 501 || r.code == 555 || r.code == 500,
        "malformed RCPT: {r:?}"
    );
    // Case-insensitive verbs, local parts case-preserving but accounts case-insensitive.
    c.cmd("rcpt to:<BOB@Example.TEST>")
        .expect(250, Some("2.1.5"));
    // postmaster without a domain must be accepted (RFC 5321 4.5.1).
    c.cmd("RCPT TO:<Postmaster>").expect(250, None);
    c.cmd("RCPT TO:<bob+folder@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    c.send(&dot_stuff(b"Subject: verdicts\r\n\r\nx\r\n"));
    c.reply().expect(250, None);

    // Unknown MAIL parameters: 555 (RFC 5321 4.1.1.11); BODY and SMTPUTF8 are known.
    c.cmd("MAIL FROM:<s@example.test> FROBNICATE=yes")
        .expect(555, None);
    c.cmd("MAIL FROM:<s@example.test> BODY=8BITMIME SMTPUTF8")
        .expect(250, None);
    c.cmd("RSET").expect(250, None);
    let r = c.cmd("MAIL FROM:<s@example.test> BODY=9BITMIME");
    assert!(r.code == 501 || r.code == 555, "bad BODY value: {r:?}");
    let r = c.cmd("MAIL FROM:s@example.test>");
    assert_eq!(r.code, 501, "malformed MAIL: {r:?}");
    let r = c.cmd("FROB");
    r.expect(500, None);
    assert!(r.enhanced().is_some_and(|e| e.starts_with("5.5.")), "{r:?}");
    c.cmd("QUIT").expect(221, None);

    assert_eq!(
        count(&server, BOB),
        1,
        "bob (case-insensitive and +tag) once"
    );
    assert_eq!(count(&server, ALICE), 1, "postmaster -> alice");
}

#[test]
fn rset_discards_the_transaction() {
    let server = Server::new();
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("MAIL FROM:<r@example.test>").expect(250, None);
    c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    c.cmd("RSET").expect(250, Some("2.0.0"));
    let r = c.cmd("DATA");
    assert!(r.code == 503 || r.code == 554, "DATA after RSET: {r:?}");
    c.cmd("RCPT TO:<bob@example.test>").expect(503, None);
    // A fresh transaction after RSET works and goes only to its own recipients.
    smtp_transaction(
        &mut c,
        "r2@example.test",
        &[ALICE.0],
        b"Subject: after rset\r\n\r\n.\r\n",
        Transfer::Data,
    )
    .unwrap()
    .expect(250, None);
    c.cmd("QUIT").expect(221, None);
    assert_eq!(count(&server, BOB), 0);
    let a = mailbox(&server, ALICE);
    assert_eq!(a.len(), 1);
    assert_bytes_eq(
        strip_trace(&a[0]).1,
        b"Subject: after rset\r\n\r\n.\r\n",
        "after RSET",
    );
}

#[test]
fn too_many_recipients() {
    let server = Server::options()
        .config(&small_config("recipients_max = 3"))
        .accounts(&["carol@example.test", "dave@example.test"])
        .start();
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("MAIL FROM:<many@example.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    c.cmd("RCPT TO:<carol@example.test>").expect(250, None);
    // RFC 5321 4.5.3.1.10: 452 for too many recipients, the transaction goes on.
    c.cmd("RCPT TO:<dave@example.test>")
        .expect(452, Some("4.5.3"));
    c.cmd("DATA").expect(354, None);
    c.send(&dot_stuff(b"Subject: three recipients\r\n\r\nhi\r\n"));
    c.reply().expect(250, None);
    // The client retries the rest in a new transaction (4.5.3.1.10).
    c.cmd("MAIL FROM:<many@example.test>").expect(250, None);
    c.cmd("RCPT TO:<dave@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    c.send(&dot_stuff(b"Subject: three recipients\r\n\r\nhi\r\n"));
    c.reply().expect(250, None);
    c.cmd("QUIT").expect(221, None);
    assert_eq!(count(&server, ALICE), 1);
    assert_eq!(count(&server, BOB), 1);
    for who in ["carol@example.test", "dave@example.test"] {
        assert_eq!(count(&server, (who, PASSWORD)), 1, "{who}");
    }
}

#[test]
fn over_long_lines_are_refused_and_the_session_survives() {
    let server = Server::new();
    let (mut c, _) = smtp_connect(server.smtp);
    // RFC 5321 4.5.3.1.4: command lines are at least 512 octets; a server may
    // accept more (this one: 4096), and answers 500 beyond its limit.
    let long = format!("NOOP {}", "a".repeat(5000));
    let r = c.cmd(&long);
    assert_eq!(r.code, 500, "over-long command: {r:?}");
    let r = c.cmd(&format!("NOOP {}", "a".repeat(500)));
    assert_eq!(
        r.code, 250,
        "a 512-octet command line must be accepted: {r:?}"
    );
    c.cmd("NOOP").expect(250, None);
    let long_rcpt = format!("RCPT TO:<{}@example.test>", "b".repeat(6000));
    c.cmd("MAIL FROM:<l@example.test>").expect(250, None);
    let r = c.cmd(&long_rcpt);
    assert!(r.code >= 500, "over-long RCPT: {r:?}");
    // A huge line (64 KiB without CRLF) too; the transaction is still there.
    let mut huge = vec![b'x'; 64 * 1024];
    huge.extend_from_slice(b"\r\n");
    c.send(&huge);
    c.reply().expect(500, None);
    c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    c.send(&dot_stuff(b"Subject: after long lines\r\n\r\nok\r\n"));
    c.reply().expect(250, None);
    c.cmd("QUIT").expect(221, None);
    assert_eq!(count(&server, BOB), 1);
}

/// Body containing bare-LF and CR-LF-dot-LF sequences followed by a complete
/// fake second transaction: none of it may end the message (SMTP smuggling).
#[test]
fn smuggling_sequences_never_end_the_message() {
    let server = Server::new();
    let variants: [&[u8]; 4] = [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"];
    let mut expected = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let mut body = format!("Subject: smuggle {i}\r\n\r\nbefore").into_bytes();
        body.extend_from_slice(v);
        body.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n");
        body.extend_from_slice(v);
        body.extend_from_slice(b"after\r\n");
        let (mut c, _) = smtp_connect(server.smtp);
        c.cmd("MAIL FROM:<honest@example.test>").expect(250, None);
        c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
        c.cmd("DATA").expect(354, None);
        // Sent raw: our own stuffing would not touch these (no CRLF before the dots).
        let mut wire = body.clone();
        wire.extend_from_slice(b".\r\n");
        // What RFC 5321 4.5.2 makes of it: a CRLF-delimited line starting with a
        // dot loses that dot (the "\r\n.\n..." variant has such a line).
        let body = rfc_unstuff(&body);
        c.send(&wire);
        // Exactly one reply (250) to the whole thing, then QUIT's 221: no
        // replies to the smuggled commands.
        let r = c.reply();
        if r.code != 250 {
            panic!("variant {i} ({v:?}) refused with {r:?}; the message must be accepted and kept intact");
        }
        c.send(b"QUIT\r\n");
        c.reply().expect(221, None);
        let rest = c.drain_for(Duration::from_millis(300));
        assert!(
            rest.is_empty(),
            "variant {i}: extra output {:?}",
            String::from_utf8_lossy(&rest)
        );
        expected.push(body);
    }
    assert_eq!(count(&server, BOB), 0, "a smuggled message reached bob");
    // The stored messages, as an LF-splitting POP3 client reads them: the
    // body is complete, bytes kept as sent, or with bare LFs turned into CRLF
    // (normalising is a legitimate choice too). How bare LFs go out over POP3
    // is checked in pop3.rs.
    let mut p = Pop3::login(server.pop3, ALICE.0, ALICE.1);
    assert_eq!(p.stat().0, variants.len());
    for (i, want) in expected.iter().enumerate() {
        let stored = p.retr_lf_framed(i + 1);
        let got = strip_trace(&stored).1;
        if got != want.as_slice() && got != normalize_line_ends(want).as_slice() {
            assert_bytes_eq(
                got,
                want,
                &format!("smuggling variant {i} ({:?})", variants[i]),
            );
        }
    }
    p.quit();
}

#[test]
fn too_many_errors_close_the_session() {
    let server = Server::options()
        .config(&small_config("smtp_errors_max = 3"))
        .start();
    let (mut c, _) = smtp_connect(server.smtp);
    // Three errors allowed; the session ends with 421 by the fourth at the latest.
    let mut closed_at = None;
    for i in 1..=5 {
        c.send(format!("BOGUS{i}\r\n").as_bytes());
        let r = c.reply();
        let r = if r.code == 500 && i >= 3 {
            // A 421 may follow the 500 of the error that hit the limit.
            c.set_read_timeout(Duration::from_millis(500));
            let next = c.try_reply();
            c.set_read_timeout(IO_TIMEOUT);
            next.unwrap_or(r)
        } else {
            r
        };
        if r.code == 421 {
            closed_at = Some(i);
            break;
        }
        r.expect(500, None);
    }
    let at = closed_at.expect("no 421 after 5 errors with smtp_errors_max = 3");
    assert!(
        (3..=4).contains(&at),
        "421 after {at} errors with smtp_errors_max = 3"
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    // Other sessions are unaffected.
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("QUIT").expect(221, None);
}

#[test]
fn swaks_pipelining_when_installed() {
    if !on_path("swaks") {
        eprintln!("note: swaks not on PATH, skipping (.ci/run installs it)");
        return;
    }
    let server = Server::new();
    let port = server.smtp.port().to_string();
    let run = |extra: &[&str]| {
        let child = Command::new("swaks")
            .args([
                "--to",
                "bob@example.test",
                "--from",
                "swaks@example.test",
                "--server",
                "127.0.0.1",
                "--port",
                &port,
            ])
            .args(["--helo", "swaks.e2e.test", "--timeout", "15"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("swaks");
        let out = wait_output(child, Duration::from_secs(30));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "swaks {extra:?} failed:\n{text}");
        text
    };
    let t = run(&["--pipeline"]);
    assert!(t.contains("PIPELINING"), "{t}");
    run(&["--body", "line one\n.\n..two\nlast"]);
    run(&["--to", "bob+swaks@example.test,alice@example.test"]);
    assert_eq!(count(&server, BOB), 3);
    assert_eq!(count(&server, ALICE), 1);
    // A refused recipient makes swaks fail.
    let child = Command::new("swaks")
        .args([
            "--to",
            "nobody@example.test",
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--timeout",
            "15",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("550"));
}

#[test]
fn hostname_flag_and_trace_headers() {
    let server = Server::options().hostname("mx.e2e.test").start();
    let mut c = Client::connect(server.smtp);
    let greet = c.reply();
    greet.expect(220, None);
    assert!(greet.lines[0].starts_with("mx.e2e.test "), "{greet:?}");
    let ehlo = c.cmd("EHLO trace-client.e2e.test");
    assert!(ehlo.lines[0].starts_with("mx.e2e.test"), "{ehlo:?}");
    let body = b"Subject: trace\r\n\r\ntrace me\r\n";
    smtp_transaction(
        &mut c,
        "tracer@example.test",
        &[BOB.0],
        body,
        Transfer::Data,
    )
    .unwrap()
    .expect(250, None);
    c.cmd("QUIT").expect(221, None);
    let m = mailbox(&server, BOB);
    assert_eq!(m.len(), 1);
    let (trace, rest) = strip_trace(&m[0]);
    assert_bytes_eq(rest, body, "body after trace headers");
    let trace = String::from_utf8_lossy(trace);
    assert!(
        trace.starts_with("Return-Path: <tracer@example.test>\r\n"),
        "{trace}"
    );
    // RFC 5321 4.4: FROM with the EHLO name and the client's address, BY our
    // name, WITH the protocol (ESMTP), then "; date-time".
    let unfolded = trace.replace("\r\n\t", " ").replace("\r\n ", " ");
    for want in [
        "from trace-client.e2e.test",
        "[127.0.0.1]",
        "by mx.e2e.test",
        "with ESMTP",
    ] {
        assert!(unfolded.contains(want), "Received lacks {want:?}: {trace}");
    }
    let date = unfolded.rsplit(';').next().unwrap().trim();
    assert!(
        date.ends_with("+0000") && date.contains(':'),
        "Received date {date:?}"
    );
}

#[test]
fn smtputf8_addresses() {
    let server = Server::new();
    let (mut c, _) = smtp_connect(server.smtp);
    // RFC 6531 3.4: a non-ASCII address needs the SMTPUTF8 parameter.
    c.cmd("MAIL FROM:<j\u{f6}rg@example.test>")
        .expect(553, Some("5.6.7"));
    c.cmd("MAIL FROM:<j\u{f6}rg@example.test> SMTPUTF8")
        .expect(250, None);
    c.cmd("RCPT TO:<b\u{f6}b@example.test>")
        .expect(550, Some("5.1.1"));
    c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    let body = "From: J\u{f6}rg <j\u{f6}rg@example.test>\r\nSubject: gr\u{fc}\u{df}e\r\n\r\nUTF-8 headers \u{2713}\r\n".as_bytes();
    c.send(&dot_stuff(body));
    c.reply().expect(250, None);
    c.cmd("QUIT").expect(221, None);
    let m = mailbox(&server, BOB);
    assert_eq!(m.len(), 1);
    assert_eq!(return_path(&m[0]), "j\u{f6}rg@example.test");
    assert_bytes_eq(strip_trace(&m[0]).1, body, "SMTPUTF8 message");
}

/// Submission: an authenticated client's MAIL FROM and From: must be its
/// own account's (the account, a +detail, an alias leading to it), or
/// 553 5.7.1; an account in `send_as_anyone` is exempt (smtplib).
#[test]
fn authenticated_senders_send_as_their_own_account() {
    let config = "local_domains = [\"example.test\"]\n[[demo_accounts]]\naddress = \"alice@example.test\"\npassword = \"alice-secret\"\n[[demo_accounts]]\naddress = \"bob@example.test\"\npassword = \"bob-secret\"\n[[demo_accounts]]\naddress = \"boss@example.test\"\npassword = \"boss-secret\"\n[aliases]\n\"postmaster@example.test\" = \"alice@example.test\"\n[senders]\nsend_as_anyone = [\"boss@example.test\"]\n";
    let server = Server::options().config(config).start();
    let out = run_python(
        "sender_ownership.py",
        &["127.0.0.1".into(), server.submission.port().to_string()],
    );
    assert!(out.contains("ok"), "{out}");
    // Five accepted (four from alice, one from boss), none of the refused.
    assert_eq!(count(&server, BOB), 5);
}
