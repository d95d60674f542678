//! Client tests: the dot-stuffer, the state machine alone, and the glommio
//! driver against a scripted fake SMTP server on 127.0.0.1.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream as StdStream};
use std::sync::Mutex;
use std::time::Instant;

use super::*;

// ---------------------------------------------------------------- dot-stuffing

fn stuffed(body: &[u8]) -> Vec<u8> {
    DotStuffed::new(body).flatten().copied().collect()
}

#[test]
fn dot_stuffing_and_terminator() {
    assert_eq!(stuffed(b""), b".\r\n");
    assert_eq!(stuffed(b"abc"), b"abc\r\n.\r\n");
    assert_eq!(stuffed(b"abc\r\n"), b"abc\r\n.\r\n");
    assert_eq!(stuffed(b".\r\n"), b"..\r\n.\r\n");
    assert_eq!(
        stuffed(b"a\r\n.b\r\n..c\r\n.\r\nend"),
        b"a\r\n..b\r\n...c\r\n..\r\nend\r\n.\r\n"
    );
    // Bare LF becomes CRLF, and a dot after it is stuffed too.
    assert_eq!(stuffed(b"a\nb\n.c\n"), b"a\r\nb\r\n..c\r\n.\r\n");
    assert_eq!(stuffed(b"\n\n"), b"\r\n\r\n.\r\n");
    // Bare CR ends a line too (never `CR . CR` on the wire).
    assert_eq!(stuffed(b"a\r\r\n"), b"a\r\n\r\n.\r\n");
    assert_eq!(stuffed(b"a\r.\rb"), b"a\r\n..\r\nb\r\n.\r\n");
    // Lines beyond 998 octets are wrapped with CRLF SP.
    let long = [b"s: ".as_slice(), &[b'y'; 2000], b"\r\n"].concat();
    let wire = stuffed(&long);
    assert!(
        wire.split(|&b| b == b'\n').all(|l| l.len() <= 999),
        "a line over 998 octets"
    );
    assert!(wire.starts_with(&long[..998]) && wire[998..].starts_with(b"\r\n y"));
    // Dots not at a line start are left alone.
    assert_eq!(stuffed(b"a.b\r\nc .d\r\n"), b"a.b\r\nc .d\r\n.\r\n");
}

#[test]
fn dot_stuffing_borrows_the_body() {
    let mut body = Vec::new();
    for i in 0..1000 {
        body.extend_from_slice(format!("line {i} of some text\r\n").as_bytes());
        if i % 100 == 0 {
            body.extend_from_slice(b".dotted\r\n");
        }
    }
    let range = body.as_ptr_range();
    let pieces: Vec<&[u8]> = DotStuffed::new(&body).collect();
    // 10 dotted lines: each splits a run and inserts one dot; plus the end.
    assert_eq!(pieces.len(), 10 * 2 + 1 + 1);
    let borrowed: usize = pieces
        .iter()
        .filter(|p| range.contains(&p.as_ptr()))
        .map(|p| p.len())
        .sum();
    assert_eq!(
        borrowed,
        body.len(),
        "every body byte is written from the body itself"
    );
}

// ----------------------------------------------------------- state machine only

fn env(from: &str, to: &[&str], size: u64) -> Envelope {
    Envelope {
        reverse_path: from.into(),
        recipients: to.iter().map(|s| s.to_string()).collect(),
        size,
        needs_smtputf8: false,
        is_8bit: false,
    }
}

fn params() -> ClientParams {
    let mut p = ClientParams::new("relay.test");
    p.timeouts = Timeouts::all(Duration::from_millis(500));
    p
}

/// Drive the state machine with canned replies; returns everything it wrote.
fn script(c: &mut Client, replies: &[&str]) -> String {
    let mut wrote = String::new();
    let mut replies = replies.iter();
    for _ in 0..100 {
        match c.action() {
            Action::Send { .. } => {
                wrote.push_str(std::str::from_utf8(c.output()).unwrap());
                c.sent();
            }
            Action::SendBody { message, .. } => {
                wrote.push_str(&format!("<body {message}>"));
                c.sent();
            }
            Action::StartTls { .. } => {
                wrote.push_str("<tls>");
                c.tls_started();
            }
            Action::Receive { .. } => match replies.next() {
                Some(r) => {
                    let r = format!("{r}\r\n");
                    assert_eq!(c.receive(r.as_bytes()), r.len());
                }
                None => c.fail(Failure::Closed),
            },
            Action::Close => return wrote,
        }
    }
    panic!("state machine did not finish");
}

#[test]
fn state_machine_without_io() {
    let mut c = Client::new(
        params(),
        vec![env("a@x.test", &["b@y.test", "c@y.test"], 10)],
    );
    let wrote = script(
        &mut c,
        &[
            "220 hi",
            "250-y.test\r\n250 PIPELINING",
            "250 ok",
            "550 5.1.1 no",
            "250 ok",
            "354 go",
            "250 queued",
            "221 bye",
        ],
    );
    assert_eq!(
        wrote,
        "EHLO relay.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n<body 0>QUIT\r\n"
    );
    let out = c.finish().unwrap();
    assert!(out[0].recipients[0].is_permanent());
    assert!(out[0].recipients[1].is_delivered());
    assert_eq!(out[0].recipients[1].reply().text(), "queued");
}

#[test]
fn state_machine_354_without_recipients_sends_empty_message() {
    let mut c = Client::new(params(), vec![env("", &["b@y.test"], 10)]);
    let wrote = script(
        &mut c,
        &[
            "220 hi",
            "250-y.test\r\n250 PIPELINING",
            "250 ok",
            "550 5.1.1 no",
            "354 go",
            "554 5.5.1 empty",
            "221 bye",
        ],
    );
    assert_eq!(
        wrote,
        "EHLO relay.test\r\nMAIL FROM:<>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n.\r\nQUIT\r\n"
    );
    let out = c.finish().unwrap();
    assert_eq!(out[0].recipients[0].reply().code, 550);
}

#[test]
fn state_machine_rejects_injection_and_empty_batches() {
    let mut c = Client::new(
        params(),
        vec![
            env("a@x.test", &["bad\r\nRSET@y.test", "<ok@y.test>"], 10),
            env("evil>@x.test", &["b@y.test"], 10),
            env("a@x.test", &[], 10),
        ],
    );
    let wrote = script(
        &mut c,
        &[
            "220 hi",
            "250 y.test",
            "250 ok",
            "250 ok",
            "354 go",
            "250 queued",
            "221 bye",
        ],
    );
    assert_eq!(wrote, "EHLO relay.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<ok@y.test>\r\nDATA\r\n<body 0>QUIT\r\n");
    let out = c.finish().unwrap();
    assert!(
        matches!(&out[0].recipients[0], RcptOutcome::Permanent { reply } if reply.local && reply.enhanced() == Some("5.1.3"))
    );
    assert!(out[0].recipients[1].is_delivered());
    assert!(
        matches!(&out[1].recipients[0], RcptOutcome::Permanent { reply } if reply.enhanced() == Some("5.1.7"))
    );
    assert!(out[2].recipients.is_empty());
}

fn with_tls(required: bool) -> ClientParams {
    let mut p = params();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    p.tls = Some(SessionTls {
        config: Arc::new(config),
        name: rustls_pki_types::ServerName::try_from("mx.y.test").unwrap(),
        required,
    });
    p
}

#[test]
fn starttls_when_offered_then_ehlo_again() {
    for required in [false, true] {
        let mut c = Client::new(with_tls(required), vec![env("a@x.test", &["b@y.test"], 10)]);
        let wrote = script(
            &mut c,
            &[
                "220 hi",
                "250-y.test\r\n250-PIPELINING\r\n250 STARTTLS",
                "220 2.0.0 ready",
                // Inside TLS: capabilities come from this EHLO only.
                "250-y.test\r\n250 SIZE 5",
                "250 ok",
            ],
        );
        // RFC 3207 4.2: EHLO again, no STARTTLS twice; SIZE 5 < 10 refuses
        // the message locally: the capabilities are the new ones.
        assert_eq!(
            wrote, "EHLO relay.test\r\nSTARTTLS\r\n<tls>EHLO relay.test\r\nQUIT\r\n",
            "required {required}"
        );
        assert!(c.tls_active());
        let out = c.finish().unwrap();
        assert_eq!(out[0].recipients[0].reply().code, 552);
    }
}

#[test]
fn starttls_not_offered_or_refused() {
    // Opportunistic: on in plaintext, pipelined as offered.
    for ehlo in [
        "250-y.test\r\n250 PIPELINING",
        "250-y.test\r\n250-PIPELINING\r\n250 STARTTLS",
    ] {
        let refused = ehlo.contains("STARTTLS");
        let mut replies = vec!["220 hi", ehlo];
        if refused {
            replies.push("454 4.7.0 TLS not available");
        }
        replies.extend(["250 ok", "250 ok", "354 go", "250 queued", "221 bye"]);
        let mut c = Client::new(with_tls(false), vec![env("a@x.test", &["b@y.test"], 10)]);
        let wrote = script(&mut c, &replies);
        assert!(
            wrote.ends_with(
                "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n<body 0>QUIT\r\n"
            ),
            "{wrote}"
        );
        assert!(!c.tls_active());
        assert!(c.finish().unwrap()[0].recipients[0].is_delivered());
        // Required: nothing is sent in the clear.
        let mut c = Client::new(with_tls(true), vec![env("a@x.test", &["b@y.test"], 10)]);
        let replies: &[&str] = if refused {
            &["220 hi", ehlo, "454 4.7.0 TLS not available"]
        } else {
            &["220 hi", ehlo]
        };
        let wrote = script(&mut c, replies);
        assert!(!wrote.contains("MAIL"), "{wrote}");
        let e = c.finish().unwrap_err();
        assert!(matches!(e, ConnectError::TlsUnavailable(_)), "{e:?}");
        assert_eq!(e.reply().enhanced(), Some("4.7.4"));
    }
    // HELO servers cannot do STARTTLS.
    let mut c = Client::new(with_tls(true), vec![env("a@x.test", &["b@y.test"], 10)]);
    script(&mut c, &["220 hi", "502 no EHLO", "250 y.test"]);
    assert!(matches!(c.finish(), Err(ConnectError::TlsUnavailable(_))));
}

#[test]
fn failed_handshake_is_a_connect_error() {
    let mut c = Client::new(with_tls(false), vec![env("a@x.test", &["b@y.test"], 10)]);
    for r in ["220 hi\r\n", "250-y.test\r\n250 STARTTLS\r\n"] {
        while !matches!(c.action(), Action::Receive { .. }) {
            c.sent();
        }
        assert_eq!(c.receive(r.as_bytes()), r.len());
    }
    c.sent();
    // A 220 followed by injected bytes: only the 220 is taken; the driver
    // drops the rest when it starts TLS.
    let injected = b"220 go\r\n250 2.0.0 injected\r\n";
    assert_eq!(c.receive(injected), 8);
    assert!(matches!(c.action(), Action::StartTls { .. }));
    c.fail(Failure::Tls("bad record".into()));
    let e = c.finish().unwrap_err();
    assert!(
        matches!(&e, ConnectError::Tls(r) if r == "bad record"),
        "{e:?}"
    );
    assert_eq!(e.reply().enhanced(), Some("4.7.5"));
}

#[test]
fn capabilities_from_ehlo() {
    let (r, _) = parse_reply(
        b"250-mx.test hello\r\n250-pipelining\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
        4096,
    )
    .unwrap()
    .unwrap();
    let c = Capabilities::from_ehlo(&r);
    assert!(c.esmtp && c.pipelining && c.size && c.eight_bit_mime && c.smtputf8 && c.starttls);
    assert!(c.enhanced_status_codes && c.chunking);
    assert_eq!(c.size_limit, Some(35882577));
    let (r, _) = parse_reply(b"250-mx.test\r\n250 SIZE\r\n", 4096)
        .unwrap()
        .unwrap();
    let c = Capabilities::from_ehlo(&r);
    assert!(c.size && !c.pipelining);
    assert_eq!(c.size_limit, None);
}

// ------------------------------------------------------------ fake SMTP server

#[derive(Debug)]
enum Event<'a> {
    Greeting,
    Command(&'a str),
    /// Body bytes arrived (the terminator not yet seen).
    DataBytes,
    EndOfData,
}

enum Act {
    Default,
    Reply(String),
    Drop,
    /// Never answer; keep the connection open until the client gives up.
    Hang,
}

type Hook = Box<dyn FnMut(&Event) -> Act + Send>;

#[derive(Default)]
struct Log {
    received: Vec<u8>,
    /// Each read(), as received: shows how commands were grouped.
    chunks: Vec<Vec<u8>>,
    /// Message bodies as received (still dot-stuffed, with the terminator).
    bodies: Vec<Vec<u8>>,
    done: bool,
}

struct Fake {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Fake {
    fn received(&self) -> String {
        self.wait();
        String::from_utf8_lossy(&self.log.lock().unwrap().received).into_owned()
    }
    fn chunks(&self) -> Vec<String> {
        self.wait();
        self.log
            .lock()
            .unwrap()
            .chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }
    fn bodies(&self) -> Vec<Vec<u8>> {
        self.wait();
        self.log.lock().unwrap().bodies.clone()
    }
    /// The server thread notes when its connection ended; bounded wait.
    fn wait(&self) {
        for _ in 0..200 {
            if self.log.lock().unwrap().done {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A one-connection SMTP server. `caps`: EHLO keywords, or `None` to refuse
/// EHLO (502) so the client falls back to HELO. `hook` may override any reply.
fn fake_server(caps: Option<&[&str]>, hook: impl FnMut(&Event) -> Act + Send + 'static) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let caps: Option<Vec<String>> = caps.map(|c| c.iter().map(|s| s.to_string()).collect());
    let l = log.clone();
    let hook: Hook = Box::new(hook);
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match listener.accept() {
                Ok((c, _)) => break Some(c),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break None,
            }
        };
        if let Some(conn) = conn {
            serve_fake(conn, caps, hook, &l);
        }
        l.lock().unwrap().done = true;
    });
    Fake { addr, log }
}

fn serve_fake(mut conn: StdStream, caps: Option<Vec<String>>, mut hook: Hook, log: &Mutex<Log>) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let send = |conn: &mut StdStream, text: &str| {
        let _ = conn.write_all(format!("{text}\r\n").as_bytes());
    };
    let hang = |conn: &mut StdStream| {
        // Wait for the client to give up and close (bounded by the read timeout).
        let mut b = [0u8; 1024];
        while let Ok(n) = conn.read(&mut b) {
            if n == 0 {
                break;
            }
        }
    };
    match hook(&Event::Greeting) {
        Act::Default => send(&mut conn, "220 fake.test ESMTP"),
        Act::Reply(r) => send(&mut conn, &r),
        Act::Drop => return,
        Act::Hang => return hang(&mut conn),
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut in_data = false;
    let (mut mail, mut rcpts, mut queued) = (false, 0, 0);
    let mut chunk = [0u8; 65536];
    for _ in 0..10_000 {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        {
            let mut l = log.lock().unwrap();
            l.received.extend_from_slice(&chunk[..n]);
            l.chunks.push(chunk[..n].to_vec());
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            if in_data {
                let end = if buf.starts_with(b".\r\n") {
                    Some(3)
                } else {
                    memchr::memmem::find(&buf, b"\r\n.\r\n").map(|i| i + 5)
                };
                let Some(end) = end else {
                    match hook(&Event::DataBytes) {
                        Act::Drop => return,
                        Act::Hang => return hang(&mut conn),
                        _ => {}
                    }
                    break;
                };
                log.lock().unwrap().bodies.push(buf[..end].to_vec());
                buf.drain(..end);
                in_data = false;
                let (m, r) = (mail, rcpts);
                mail = false;
                rcpts = 0;
                match hook(&Event::EndOfData) {
                    Act::Default => {
                        queued += 1;
                        assert!(m && r > 0);
                        send(&mut conn, &format!("250 2.0.0 Ok: queued as Q{queued}"));
                    }
                    Act::Reply(text) => send(&mut conn, &text),
                    Act::Drop => return,
                    Act::Hang => return hang(&mut conn),
                }
                continue;
            }
            let Some(nl) = memchr::memmem::find(&buf, b"\r\n") else {
                break;
            };
            let line = String::from_utf8_lossy(&buf[..nl]).into_owned();
            buf.drain(..nl + 2);
            let verb = line
                .split([' ', ':'])
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let default = match verb.as_str() {
                "EHLO" => match &caps {
                    Some(c) => {
                        let mut lines = vec!["fake.test greets you".to_string()];
                        lines.extend(c.iter().cloned());
                        let n = lines.len();
                        lines
                            .iter()
                            .enumerate()
                            .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
                            .collect::<Vec<_>>()
                            .join("\r\n")
                    }
                    None => "502 5.5.2 Error: command not recognized".into(),
                },
                "HELO" => "250 fake.test".into(),
                "MAIL" => "250 2.1.0 Ok".into(),
                "RCPT" => "250 2.1.5 Ok".into(),
                "DATA" => {
                    if mail && rcpts > 0 {
                        "354 End data with <CR><LF>.<CR><LF>".into()
                    } else {
                        "554 5.5.1 Error: no valid recipients".into()
                    }
                }
                "RSET" => "250 2.0.0 Ok".into(),
                "QUIT" => "221 2.0.0 Bye".into(),
                _ => "500 5.5.2 Error: bad syntax".into(),
            };
            let reply = match hook(&Event::Command(&line)) {
                Act::Default => default,
                Act::Reply(r) => r,
                Act::Drop => return,
                Act::Hang => return hang(&mut conn),
            };
            let ok = reply.starts_with('2');
            match verb.as_str() {
                "MAIL" => mail = ok,
                "RCPT" if ok => rcpts += 1,
                "RSET" => {
                    mail = false;
                    rcpts = 0;
                }
                "DATA" => in_data = reply.starts_with("354"),
                _ => {}
            }
            send(&mut conn, &reply);
            if verb == "QUIT" || reply.starts_with("421") {
                return;
            }
        }
    }
}

const FULL: &[&str] = &[
    "PIPELINING",
    "SIZE 100000",
    "8BITMIME",
    "SMTPUTF8",
    "ENHANCEDSTATUSCODES",
];

fn msg(from: &str, to: &[&str], body: &[u8]) -> OutboundMessage<Vec<u8>> {
    OutboundMessage {
        reverse_path: from.into(),
        recipients: to.iter().map(|s| s.to_string()).collect(),
        body: body.to_vec(),
        needs_smtputf8: false,
        is_8bit: false,
    }
}

fn run(
    addr: SocketAddr,
    p: ClientParams,
    batch: Vec<OutboundMessage<Vec<u8>>>,
) -> Result<Vec<MessageOutcome>, ConnectError> {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { deliver(addr, p, &batch).await.map(|d| d.outcomes) })
        .unwrap()
        .join()
        .unwrap()
}

const BODY1: &[u8] = b"Subject: one\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n";
const BODY1_WIRE: &str = "Subject: one\r\n\r\n..leading dot\r\n...two dots\r\nend\r\n.\r\n";

#[test]
fn pipelined_session_with_two_messages() {
    let fake = fake_server(Some(FULL), |_| Act::Default);
    let batch = vec![
        msg("a@src.test", &["b@dst.test", "c@dst.test"], BODY1),
        msg("", &["d@dst.test"], b"Subject: bounce\r\n\r\nhi"),
    ];
    let out = run(fake.addr, params(), batch).unwrap();
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|m| m.recipients.iter().all(RcptOutcome::is_delivered)),
        "{out:?}"
    );
    assert_eq!(
        out[0].recipients[0].reply().to_string(),
        "250 2.0.0 Ok: queued as Q1"
    );
    assert_eq!(
        out[1].recipients[0].reply().text(),
        "2.0.0 Ok: queued as Q2"
    );
    let expected = format!(
        "EHLO relay.test\r\n\
         MAIL FROM:<a@src.test> SIZE={}\r\nRCPT TO:<b@dst.test>\r\nRCPT TO:<c@dst.test>\r\nDATA\r\n\
         {BODY1_WIRE}\
         RSET\r\nMAIL FROM:<> SIZE=21\r\nRCPT TO:<d@dst.test>\r\nDATA\r\n\
         Subject: bounce\r\n\r\nhi\r\n.\r\n\
         QUIT\r\n",
        BODY1.len()
    );
    assert_eq!(fake.received(), expected);
    // The pipelined groups arrived as single writes.
    let chunks = fake.chunks();
    assert!(chunks.contains(&format!(
        "MAIL FROM:<a@src.test> SIZE={}\r\nRCPT TO:<b@dst.test>\r\nRCPT TO:<c@dst.test>\r\nDATA\r\n",
        BODY1.len()
    )));
    assert!(chunks
        .contains(&"RSET\r\nMAIL FROM:<> SIZE=21\r\nRCPT TO:<d@dst.test>\r\nDATA\r\n".to_string()));
    assert_eq!(fake.bodies()[0], BODY1_WIRE.as_bytes());
}

#[test]
fn one_recipient_rejected() {
    let fake = fake_server(Some(FULL), |e| match e {
        Event::Command(c) if c.contains("nobody@") => Act::Reply(
            "550-5.1.1 <nobody@dst.test>: Recipient address rejected:\r\n550 5.1.1 User unknown"
                .into(),
        ),
        _ => Act::Default,
    });
    let out = run(
        fake.addr,
        params(),
        vec![msg(
            "a@src.test",
            &["b@dst.test", "nobody@dst.test", "c@dst.test"],
            BODY1,
        )],
    )
    .unwrap();
    let r = &out[0].recipients;
    assert!(r[0].is_delivered() && r[2].is_delivered());
    match &r[1] {
        RcptOutcome::Permanent { reply } => {
            assert_eq!(reply.code, 550);
            assert_eq!(reply.enhanced(), Some("5.1.1"));
            assert_eq!(
                reply.lines,
                [
                    "5.1.1 <nobody@dst.test>: Recipient address rejected:",
                    "5.1.1 User unknown"
                ]
            );
            assert!(!reply.local);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn temporary_failure_at_mail_then_next_message() {
    let mut n = 0;
    let fake = fake_server(Some(FULL), move |e| match e {
        Event::Command(c) if c.starts_with("MAIL") => {
            n += 1;
            if n == 1 {
                Act::Reply("451 4.3.0 Try again later".into())
            } else {
                Act::Default
            }
        }
        _ => Act::Default,
    });
    let out = run(
        fake.addr,
        params(),
        vec![
            msg("a@src.test", &["b@dst.test", "c@dst.test"], BODY1),
            msg("a@src.test", &["e@dst.test"], b"x\r\n"),
        ],
    )
    .unwrap();
    for r in &out[0].recipients {
        assert!(
            matches!(r, RcptOutcome::Temporary { reply } if reply.code == 451 && reply.text() == "4.3.0 Try again later"),
            "{r:?}"
        );
    }
    assert!(out[1].recipients[0].is_delivered());
    // The first transaction's DATA got 554 (no MAIL), so no body was sent for it.
    assert_eq!(fake.bodies(), vec![b"x\r\n.\r\n".to_vec()]);
    assert!(fake.received().contains("RSET\r\nMAIL FROM:<a@src.test>"));
}

#[test]
fn permanent_failure_at_end_of_data_keeps_earlier_rejections() {
    let fake = fake_server(Some(FULL), |e| match e {
        Event::Command(c) if c.contains("nobody@") => Act::Reply("550 5.1.1 User unknown".into()),
        Event::EndOfData => Act::Reply(
            "552-5.3.4 Message size exceeds\r\n552 5.3.4 fixed maximum message size".into(),
        ),
        _ => Act::Default,
    });
    let out = run(
        fake.addr,
        params(),
        vec![msg("a@src.test", &["b@dst.test", "nobody@dst.test"], BODY1)],
    )
    .unwrap();
    let r = &out[0].recipients;
    assert!(
        matches!(&r[0], RcptOutcome::Permanent { reply } if reply.code == 552 && reply.lines.len() == 2)
    );
    assert!(matches!(&r[1], RcptOutcome::Permanent { reply } if reply.code == 550));
}

#[test]
fn without_pipelining_one_command_per_write() {
    let fake = fake_server(Some(&["SIZE 100000", "8BITMIME"]), |e| match e {
        Event::Command(c) if c.contains("nobody@") => Act::Reply("550 5.1.1 User unknown".into()),
        _ => Act::Default,
    });
    let out = run(
        fake.addr,
        params(),
        vec![
            msg("a@src.test", &["b@dst.test", "nobody@dst.test"], BODY1),
            msg("a@src.test", &["nobody@dst.test"], BODY1),
            msg("a@src.test", &["c@dst.test"], b"two\r\n"),
        ],
    )
    .unwrap();
    assert!(out[0].recipients[0].is_delivered());
    assert!(out[0].recipients[1].is_permanent());
    assert!(out[1].recipients[0].is_permanent());
    assert!(out[2].recipients[0].is_delivered());
    let chunks = fake.chunks();
    for c in &chunks {
        if !c.starts_with("Subject") && !c.starts_with("two") {
            assert_eq!(c.matches("\r\n").count(), 1, "one command per write: {c:?}");
        }
    }
    let received = fake.received();
    // The second message had no accepted recipient: no DATA for it.
    assert_eq!(received.matches("DATA\r\n").count(), 2);
    assert_eq!(received.matches("RSET\r\n").count(), 2);
}

#[test]
fn helo_fallback_and_extension_checks() {
    let fake = fake_server(None, |_| Act::Default);
    let mut utf8 = msg("a@src.test", &["b@dst.test"], b"x\r\n");
    utf8.needs_smtputf8 = true;
    let mut eight = msg("a@src.test", &["c@dst.test"], "caf\u{e9}\r\n".as_bytes());
    eight.is_8bit = true;
    let out = run(fake.addr, params(), vec![utf8.clone(), eight.clone()]).unwrap();
    assert!(
        matches!(&out[0].recipients[0], RcptOutcome::Permanent { reply } if reply.enhanced() == Some("5.6.7") && reply.local)
    );
    assert!(out[1].recipients[0].is_delivered());
    assert!(out[1].sent_8bit_unannounced);
    assert_eq!(
        fake.received(),
        "EHLO relay.test\r\nHELO relay.test\r\nMAIL FROM:<a@src.test>\r\nRCPT TO:<c@dst.test>\r\nDATA\r\ncaf\u{e9}\r\n.\r\nQUIT\r\n"
    );

    // With require_8bitmime the 8-bit message is refused instead.
    let fake = fake_server(None, |_| Act::Default);
    let mut p = params();
    p.require_8bitmime = true;
    let out = run(fake.addr, p, vec![eight]).unwrap();
    assert!(
        matches!(&out[0].recipients[0], RcptOutcome::Permanent { reply } if reply.enhanced() == Some("5.6.3"))
    );
    assert_eq!(
        fake.received(),
        "EHLO relay.test\r\nHELO relay.test\r\nQUIT\r\n"
    );
}

#[test]
fn extensions_announced_in_mail_from() {
    let fake = fake_server(Some(FULL), |_| Act::Default);
    let mut m = msg(
        "j\u{f6}rg@src.test",
        &["b@dst.test"],
        "caf\u{e9}\r\n".as_bytes(),
    );
    m.is_8bit = true;
    m.needs_smtputf8 = true;
    let out = run(fake.addr, params(), vec![m]).unwrap();
    assert!(out[0].recipients[0].is_delivered() && !out[0].sent_8bit_unannounced);
    assert!(fake
        .received()
        .contains("MAIL FROM:<j\u{f6}rg@src.test> SIZE=7 BODY=8BITMIME SMTPUTF8\r\n"));
}

#[test]
fn message_over_the_size_limit_is_not_sent() {
    let fake = fake_server(Some(&["PIPELINING", "SIZE 100"]), |_| Act::Default);
    let big = vec![b'x'; 200];
    let out = run(
        fake.addr,
        params(),
        vec![
            msg("a@src.test", &["b@dst.test"], &big),
            msg("a@src.test", &["c@dst.test"], b"small"),
        ],
    )
    .unwrap();
    assert!(
        matches!(&out[0].recipients[0], RcptOutcome::Permanent { reply } if reply.code == 552 && reply.enhanced() == Some("5.3.4"))
    );
    assert!(out[1].recipients[0].is_delivered());
    let received = fake.received();
    assert_eq!(received.matches("MAIL FROM").count(), 1);
    assert!(received.contains("SIZE=5"));
}

#[test]
fn connection_dropped_mid_data() {
    let fake = fake_server(Some(&["PIPELINING", "SIZE"]), |e| match e {
        Event::DataBytes => Act::Drop,
        _ => Act::Default,
    });
    let mut big = Vec::new();
    for i in 0..20_000 {
        big.extend_from_slice(format!("line {i}\r\n").as_bytes());
    }
    let out = run(
        fake.addr,
        params(),
        vec![
            msg("a@src.test", &["b@dst.test", "c@dst.test"], &big),
            msg("a@src.test", &["d@dst.test"], b"x"),
        ],
    )
    .unwrap();
    for m in &out {
        for r in &m.recipients {
            assert!(
                matches!(r, RcptOutcome::Temporary { reply } if reply.local && reply.code == 451),
                "{r:?}"
            );
        }
    }
    assert!(out[1].recipients[0]
        .reply()
        .text()
        .contains("not attempted"));
}

#[test]
fn slow_server_times_out() {
    let mut p = params();
    p.timeouts = Timeouts::all(Duration::from_millis(200));
    // Silent after the greeting's TCP accept.
    let fake1 = fake_server(Some(FULL), |e| match e {
        Event::Greeting => Act::Hang,
        _ => Act::Default,
    });
    let t0 = Instant::now();
    let err = run(
        fake1.addr,
        p.clone(),
        vec![msg("a@src.test", &["b@dst.test"], b"x")],
    )
    .unwrap_err();
    assert_eq!(err, ConnectError::Timeout("greeting"));
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(err.reply().local && err.reply().is_transient());

    // Silent after the final dot.
    let fake2 = fake_server(Some(FULL), |e| match e {
        Event::EndOfData => Act::Hang,
        _ => Act::Default,
    });
    let t0 = Instant::now();
    let out = run(
        fake2.addr,
        p,
        vec![msg("a@src.test", &["b@dst.test"], b"x")],
    )
    .unwrap();
    assert!(
        matches!(&out[0].recipients[0], RcptOutcome::Temporary { reply } if reply.text().contains("timed out waiting for the reply to end of data")),
        "{out:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[test]
fn server_closing_with_421() {
    let fake = fake_server(Some(FULL), |e| match e {
        Event::Command(c) if c.contains("c@") => {
            Act::Reply("421 4.7.0 Too many errors, closing".into())
        }
        _ => Act::Default,
    });
    let out = run(
        fake.addr,
        params(),
        vec![
            msg("a@src.test", &["b@dst.test", "c@dst.test"], BODY1),
            msg("a@src.test", &["d@dst.test"], b"x"),
        ],
    )
    .unwrap();
    for m in &out {
        for r in &m.recipients {
            assert!(
                matches!(r, RcptOutcome::Temporary { reply } if reply.code == 421),
                "{r:?}"
            );
        }
    }
    assert!(!fake.received().contains("QUIT"));
}

#[test]
fn connect_errors() {
    // Nothing listens on a port we just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = run(
        port,
        params(),
        vec![msg("a@src.test", &["b@dst.test"], b"x")],
    )
    .unwrap_err();
    assert!(matches!(err, ConnectError::Connect { .. }), "{err:?}");

    let fake = fake_server(Some(FULL), |e| match e {
        Event::Greeting => Act::Reply("554 5.7.1 No SMTP service here".into()),
        _ => Act::Default,
    });
    let err = run(
        fake.addr,
        params(),
        vec![msg("a@src.test", &["b@dst.test"], b"x")],
    )
    .unwrap_err();
    assert!(matches!(&err, ConnectError::Greeting(r) if r.code == 554));
    assert_eq!(err.reply().code, 554);

    let fake = fake_server(Some(FULL), |e| match e {
        Event::Command(c) if c.starts_with("EHLO") => Act::Reply("421 4.3.2 busy".into()),
        _ => Act::Default,
    });
    let err = run(
        fake.addr,
        params(),
        vec![msg("a@src.test", &["b@dst.test"], b"x")],
    )
    .unwrap_err();
    assert!(matches!(&err, ConnectError::Helo(r) if r.code == 421));
}
