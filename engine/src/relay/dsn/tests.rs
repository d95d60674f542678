//! DSN tests: parse the result back as MIME and check every field.
use std::time::Duration;

use super::*;
use crate::relay::reply::parse_reply;

fn reply(wire: &str) -> Reply {
    parse_reply(wire.as_bytes(), 4096).unwrap().unwrap().0
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const ORIGINAL: &[u8] = b"Received: from client.src.test by mail.src.test\r\n\
Message-ID: <orig@src.test>\r\n\
From: Alice <alice@src.test>\r\n\
To: bob@dst.test\r\n\
Subject: quarterly figures\r\n\
\tcontinued subject line\r\n\
\r\n\
BODY-MARKER: the body must not be returned\r\n";

fn recipient(addr: &str, action: DsnAction, r: Reply, mta: Option<&str>) -> DsnRecipient {
    DsnRecipient {
        final_recipient: addr.into(),
        original_recipient: None,
        action,
        reply: r,
        remote_mta: mta.map(String::from),
        last_attempt: at(1_700_000_100),
        will_retry_until: (action == DsnAction::Delayed).then(|| at(1_700_432_000)),
    }
}

fn params(recipients: Vec<DsnRecipient>) -> DsnParams<'static> {
    DsnParams {
        hostname: "mail.src.test".into(),
        original_sender: "alice@src.test".into(),
        original_envelope_id: None,
        arrival_date: at(1_700_000_000),
        date: at(1_700_000_200),
        recipients,
        original: ORIGINAL,
        max_header_bytes: MAX_HEADER_BYTES,
        message_id: None,
    }
}

/// Header fields of a header block, unfolded, in order.
fn fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = out.last_mut().expect("continuation after a field");
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.to_string(), value.trim().to_string()));
        } else {
            assert!(line.is_empty(), "not a header line: {line:?}");
        }
    }
    out
}

fn get<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

struct Parsed {
    top: Vec<(String, String)>,
    /// (headers, content) of each body part.
    parts: Vec<(Vec<(String, String)>, String)>,
}

fn parse(dsn: &[u8]) -> Parsed {
    let text = String::from_utf8(dsn.to_vec()).unwrap();
    // CRLF everywhere, lines within the SMTP limit.
    assert!(!text.replace("\r\n", "").contains('\n'), "bare LF");
    assert!(text.split("\r\n").all(|l| l.len() <= 998));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let top = fields(head);
    let ctype = get(&top, "Content-Type").unwrap();
    assert!(
        ctype.starts_with("multipart/report; report-type=delivery-status;"),
        "{ctype}"
    );
    let boundary = ctype
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches('"');
    let delimiter = format!("\r\n--{boundary}");
    assert!(body.ends_with(&format!("--{boundary}--\r\n")));
    let body = format!("\r\n{body}");
    let mut chunks: Vec<&str> = body.split(&delimiter).collect();
    // Preamble first, "--\r\n" (the close delimiter's tail) last.
    assert_eq!(chunks.pop(), Some("--\r\n"));
    chunks.remove(0);
    let parts = chunks
        .iter()
        .map(|c| {
            let c = c
                .strip_prefix("\r\n")
                .expect("delimiter line ends with CRLF");
            let (h, content) = c.split_once("\r\n\r\n").unwrap();
            (fields(h), content.to_string())
        })
        .collect();
    Parsed { top, parts }
}

/// The blocks of a message/delivery-status body: per-message, then per-recipient.
fn status_blocks(content: &str) -> Vec<Vec<(String, String)>> {
    content
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .map(fields)
        .collect()
}

#[test]
fn failed_notification_structure_and_fields() {
    let dsn = build_dsn(params(vec![
        recipient(
            "bob@dst.test",
            DsnAction::Failed,
            reply("550-5.1.1 <bob@dst.test>: Recipient address rejected:\r\n550 5.1.1 User unknown\r\n"),
            Some("mx.dst.test"),
        ),
        recipient(
            "carol@dst.test",
            DsnAction::Failed,
            Reply::local(451, "4.4.2 timed out waiting for the reply to end of data"),
            Some("mx.dst.test"),
        ),
        recipient("dave@dst.test", DsnAction::Failed, reply("554 rejected\r\n"), None),
    ]));
    assert!(dsn.is_ascii());
    let p = parse(&dsn);
    assert_eq!(
        get(&p.top, "From"),
        Some("Mail Delivery System <MAILER-DAEMON@mail.src.test>")
    );
    assert_eq!(get(&p.top, "To"), Some("<alice@src.test>"));
    assert_eq!(
        get(&p.top, "Subject"),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(get(&p.top, "Date"), Some("Tue, 14 Nov 2023 22:16:40 +0000"));
    assert_eq!(get(&p.top, "Auto-Submitted"), Some("auto-replied"));
    assert_eq!(get(&p.top, "MIME-Version"), Some("1.0"));
    let mid = get(&p.top, "Message-ID").unwrap();
    assert!(
        mid.starts_with('<') && mid.ends_with("@mail.src.test>"),
        "{mid}"
    );

    assert_eq!(p.parts.len(), 3);
    let (h0, human) = &p.parts[0];
    assert_eq!(get(h0, "Content-Type"), Some("text/plain; charset=utf-8"));
    assert!(human.contains("<bob@dst.test>:"));
    let human = human.replace("\r\n    ", " ");
    assert!(human
        .contains("host mx.dst.test said: 550 5.1.1 <bob@dst.test>: Recipient address rejected: 5.1.1 User unknown"));
    assert!(human.contains("could not be delivered"));

    let (h1, report) = &p.parts[1];
    assert_eq!(get(h1, "Content-Type"), Some("message/delivery-status"));
    let blocks = status_blocks(report);
    assert_eq!(blocks.len(), 4);
    assert_eq!(get(&blocks[0], "Reporting-MTA"), Some("dns; mail.src.test"));
    assert_eq!(
        get(&blocks[0], "Arrival-Date"),
        Some("Tue, 14 Nov 2023 22:13:20 +0000")
    );
    let bob = &blocks[1];
    assert_eq!(get(bob, "Final-Recipient"), Some("rfc822; bob@dst.test"));
    assert_eq!(get(bob, "Action"), Some("failed"));
    assert_eq!(get(bob, "Status"), Some("5.1.1"));
    assert_eq!(get(bob, "Remote-MTA"), Some("dns; mx.dst.test"));
    assert_eq!(
        get(bob, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <bob@dst.test>: Recipient address rejected: 5.1.1 User unknown")
    );
    assert_eq!(
        get(bob, "Last-Attempt-Date"),
        Some("Tue, 14 Nov 2023 22:15:00 +0000")
    );
    assert_eq!(get(bob, "Will-Retry-Until"), None);
    let carol = &blocks[2];
    // A temporary reply on a recipient given up on: class 5, same detail.
    assert_eq!(get(carol, "Status"), Some("5.4.2"));
    assert_eq!(
        get(carol, "Diagnostic-Code"),
        Some("X-ringmail; 4.4.2 timed out waiting for the reply to end of data")
    );
    let dave = &blocks[3];
    assert_eq!(get(dave, "Status"), Some("5.0.0"));
    assert_eq!(get(dave, "Remote-MTA"), None);
    assert_eq!(get(dave, "Diagnostic-Code"), Some("smtp; 554 rejected"));

    let (h2, headers) = &p.parts[2];
    assert_eq!(get(h2, "Content-Type"), Some("text/rfc822-headers"));
    assert!(headers.starts_with("Received: from client.src.test by mail.src.test\r\n"));
    assert!(headers.contains("Subject: quarterly figures\r\n\tcontinued subject line\r\n"));
    assert!(!headers.contains("BODY-MARKER"));
    assert!(!String::from_utf8_lossy(&dsn).contains("BODY-MARKER"));
}

#[test]
fn delayed_notification() {
    let mut r = recipient(
        "bob@dst.test",
        DsnAction::Delayed,
        reply("451 4.7.1 Greylisted, try later\r\n"),
        Some("mx.dst.test"),
    );
    r.original_recipient = Some("rfc822;Bob@dst.test".into());
    let mut p = params(vec![
        r,
        recipient(
            "eve@dst.test",
            DsnAction::Delayed,
            reply("421 busy\r\n"),
            None,
        ),
    ]);
    p.original_envelope_id = Some("QQ314159".into());
    p.message_id = Some("<fixed@mail.src.test>".into());
    let dsn = build_dsn(p);
    let p = parse(&dsn);
    assert_eq!(
        get(&p.top, "Subject"),
        Some("Delayed Mail (still being retried)")
    );
    assert_eq!(get(&p.top, "Message-ID"), Some("<fixed@mail.src.test>"));
    assert!(p.parts[0]
        .1
        .contains("keep trying until Sun, 19 Nov 2023 22:13:20 +0000"));
    assert!(p.parts[0].1.contains("delayed"));
    let blocks = status_blocks(&p.parts[1].1);
    assert_eq!(get(&blocks[0], "Original-Envelope-Id"), Some("QQ314159"));
    assert_eq!(
        get(&blocks[1], "Original-Recipient"),
        Some("rfc822; Bob@dst.test")
    );
    assert_eq!(get(&blocks[1], "Action"), Some("delayed"));
    assert_eq!(get(&blocks[1], "Status"), Some("4.7.1"));
    assert_eq!(
        get(&blocks[1], "Will-Retry-Until"),
        Some("Sun, 19 Nov 2023 22:13:20 +0000")
    );
    assert_eq!(get(&blocks[2], "Status"), Some("4.0.0"));
}

#[test]
fn mixed_failed_and_delayed_reads_as_a_bounce() {
    let dsn = build_dsn(params(vec![
        recipient(
            "a@dst.test",
            DsnAction::Delayed,
            reply("451 4.3.0 later\r\n"),
            None,
        ),
        recipient(
            "b@dst.test",
            DsnAction::Failed,
            reply("550 5.1.1 unknown\r\n"),
            None,
        ),
    ]));
    let p = parse(&dsn);
    assert_eq!(
        get(&p.top, "Subject"),
        Some("Undelivered Mail Returned to Sender")
    );
    let blocks = status_blocks(&p.parts[1].1);
    assert_eq!(get(&blocks[1], "Action"), Some("delayed"));
    assert_eq!(get(&blocks[2], "Action"), Some("failed"));
}

#[test]
fn original_headers_are_bounded_and_normalized() {
    let mut original = Vec::new();
    for i in 0..500 {
        original.extend_from_slice(format!("X-Filler-{i}: some header value here\n").as_bytes());
    }
    original.extend_from_slice(b"\nbody\n");
    let mut p = params(vec![recipient(
        "b@dst.test",
        DsnAction::Failed,
        reply("550 no\r\n"),
        None,
    )]);
    p.original = &original;
    p.max_header_bytes = 1000;
    let dsn = build_dsn(p);
    let parsed = parse(&dsn);
    let headers = &parsed.parts[2].1;
    let included = headers.as_str();
    assert!(included.len() <= 1000, "{}", included.len());
    assert!(included.starts_with("X-Filler-0: some header value here\r\n"));
    assert!(included.ends_with("here\r\n"), "cut at a line boundary");
    assert!(!included.contains("body"));

    // A message without a body: all of it is the header section.
    let mut p = params(vec![recipient(
        "b@dst.test",
        DsnAction::Failed,
        reply("550 no\r\n"),
        None,
    )]);
    p.original = b"Subject: only headers";
    let parsed = parse(&build_dsn(p));
    assert!(parsed.parts[2].1.starts_with("Subject: only headers\r\n"));
}

#[test]
fn long_diagnostics_are_folded() {
    let long = format!("550 5.7.1 {}\r\n", "word ".repeat(80).trim_end());
    let dsn = build_dsn(params(vec![recipient(
        "b@dst.test",
        DsnAction::Failed,
        reply(&long),
        Some("mx.dst.test"),
    )]));
    let text = String::from_utf8(dsn.clone()).unwrap();
    assert!(text.split("\r\n").all(|l| l.len() <= 78), "folded");
    let p = parse(&dsn);
    let blocks = status_blocks(&p.parts[1].1);
    assert_eq!(
        get(&blocks[1], "Diagnostic-Code").unwrap(),
        format!("smtp; {}", long.trim_end())
    );
}

#[test]
fn utf8_addresses() {
    let mut p = params(vec![recipient(
        "j\u{f6}rg@dst.test",
        DsnAction::Failed,
        reply("550 5.1.1 unknown\r\n"),
        None,
    )]);
    p.original = "Subject: gr\u{fc}\u{df}e\r\n\r\nbody".as_bytes();
    let dsn = build_dsn(p);
    assert!(!dsn.is_ascii(), "the caller must send this one as 8-bit");
    let p = parse(&dsn);
    let blocks = status_blocks(&p.parts[1].1);
    assert_eq!(
        get(&blocks[1], "Final-Recipient"),
        Some("utf-8; j\\x{F6}rg@dst.test")
    );
    assert_eq!(
        get(&p.parts[2].0, "Content-Transfer-Encoding"),
        Some("8bit")
    );
    assert_eq!(
        get(&p.parts[0].0, "Content-Transfer-Encoding"),
        Some("8bit")
    );
}

#[test]
fn status_derivation() {
    assert_eq!(
        status_for(DsnAction::Failed, &reply("550 5.1.1 x\r\n")),
        "5.1.1"
    );
    assert_eq!(
        status_for(DsnAction::Failed, &reply("452 4.2.2 full\r\n")),
        "5.2.2"
    );
    assert_eq!(
        status_for(DsnAction::Failed, &reply("550 nope\r\n")),
        "5.0.0"
    );
    assert_eq!(
        status_for(DsnAction::Delayed, &reply("451 4.7.1 grey\r\n")),
        "4.7.1"
    );
    assert_eq!(
        status_for(DsnAction::Delayed, &reply("421 busy\r\n")),
        "4.0.0"
    );
    assert_eq!(
        status_for(DsnAction::Delayed, &reply("550 5.1.1 odd\r\n")),
        "4.1.1"
    );
}

#[test]
fn dates_and_null_senders() {
    assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(at(1_700_000_000)),
        "Tue, 14 Nov 2023 22:13:20 +0000"
    );
    assert_eq!(
        rfc5322_date(at(951_782_400)),
        "Tue, 29 Feb 2000 00:00:00 +0000"
    );
    assert_eq!(
        rfc5322_date(at(4_102_444_799)),
        "Thu, 31 Dec 2099 23:59:59 +0000"
    );
    assert!(should_notify("alice@src.test"));
    assert!(!should_notify(""));
    assert!(!should_notify("<>"));
    assert_eq!(DSN_REVERSE_PATH, "");
}
