//! Delivery end to end (SMTP in, POP3 out):
//! - one message to many recipients spread over both shards arrives in every
//!   mailbox exactly once, byte-identical (lettre as the SMTP client);
//! - plus-addressing, the postmaster alias, a message built with lettre;
//! - dot-stuffing and 8-bit bytes survive smtplib -> poplib (py/dots_8bit.py);
//! - a 10 MiB message survives smtplib -> poplib (py/big_message.py);
//! - concurrent sessions (DATA and BDAT) to accounts on both shards: every
//!   message stored once per mailbox, intact, with distinct UIDLs.
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::{Address, Message, SmtpTransport, Transport};

use ringmail_tests::*;

/// What lettre transmits as message content: it always ends the data with
/// CRLF "." CRLF after the message, so a message ending in CRLF arrives with
/// one more empty line (RFC 5321 4.1.1.4: the first CRLF of the terminator
/// ends the last line of content).
fn as_sent_by_lettre(message: &[u8]) -> Vec<u8> {
    [message, b"\r\n"].concat()
}

fn transport(server: &Server) -> SmtpTransport {
    SmtpTransport::builder_dangerous("127.0.0.1")
        .port(server.smtp.port())
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
            "lettre.e2e.test".into(),
        ))
        .timeout(Some(std::time::Duration::from_secs(15)))
        .build()
}

#[test]
fn one_message_many_recipients_on_both_shards() {
    let accounts = accounts_on_all_shards("spread", 20, 2, 5);
    let server = Server::options().accounts(&accounts).start();

    let message = b"From: Fan Out <fanout@example.test>\r\n\
To: undisclosed-recipients:;\r\n\
Subject: to twenty mailboxes on two shards\r\n\
Message-ID: <fan-out-1@e2e.test>\r\n\
\r\n\
One copy each.\r\n\
.A line with a leading dot.\r\n\
\r\n"
        .to_vec();
    // Every account once, one of them a second time under a +tag: still one copy.
    let mut rcpts: Vec<Address> = accounts.iter().map(|a| a.parse().unwrap()).collect();
    rcpts.push("spread3+again@example.test".parse().unwrap());
    let envelope = Envelope::new(Some("fanout@example.test".parse().unwrap()), rcpts).unwrap();
    let resp = transport(&server)
        .send_raw(&envelope, &message)
        .expect("lettre send_raw");
    assert_eq!(resp.code().to_string(), "250");

    for a in &accounts {
        let got = fetch_all(server.pop3, a, PASSWORD);
        assert_eq!(
            got.len(),
            1,
            "{a} (shard {}) has {} copies",
            shard_of(a, 2),
            got.len()
        );
        let (trace, body) = strip_trace(&got[0].1);
        assert_bytes_eq(
            body,
            &as_sent_by_lettre(&message),
            &format!("message for {a}"),
        );
        assert!(
            trace.starts_with(b"Return-Path: <fanout@example.test>\r\n"),
            "{}",
            String::from_utf8_lossy(trace)
        );
    }
}

#[test]
fn plus_addressing_postmaster_alias_and_lettre_builder() {
    let server = Server::new();
    let t = transport(&server);
    let email = Message::builder()
        .from("Lettre <lettre@example.test>".parse().unwrap())
        .to("Bob <bob+newsletters@example.test>".parse().unwrap())
        .subject("built by lettre")
        .message_id(Some("<lettre-built@e2e.test>".into()))
        .header(ContentType::TEXT_PLAIN)
        .body(String::from("Hello Bob, this is lettre.\n"))
        .unwrap();
    let formatted = email.formatted();
    t.send(&email).expect("send to bob+tag");

    // postmaster@ is an alias of alice; an empty reverse path (bounce) is accepted too.
    let bounce =
        b"From: MAILER-DAEMON@elsewhere.test\r\nSubject: bounce\r\n\r\nundeliverable\r\n".to_vec();
    let envelope = Envelope::new(None, vec!["postmaster@example.test".parse().unwrap()]).unwrap();
    t.send_raw(&envelope, &bounce)
        .expect("send to postmaster with null sender");

    let bob = fetch_all(server.pop3, "bob@example.test", "bob-secret");
    assert_eq!(bob.len(), 1);
    let (trace, body) = strip_trace(&bob[0].1);
    assert_bytes_eq(body, &as_sent_by_lettre(&formatted), "lettre-built message");
    assert_eq!(return_path(trace), "lettre@example.test");

    let alice = fetch_all(server.pop3, "alice@example.test", "alice-secret");
    assert_eq!(alice.len(), 1);
    let (trace, body) = strip_trace(&alice[0].1);
    assert_bytes_eq(body, &as_sent_by_lettre(&bounce), "postmaster message");
    assert_eq!(
        return_path(trace),
        "",
        "null reverse path must give Return-Path: <>"
    );
}

#[test]
fn dot_stuffing_and_8bit_survive_smtplib_and_poplib() {
    let server = Server::new();
    run_python(
        "dots_8bit.py",
        &[
            "127.0.0.1".into(),
            server.smtp.port().to_string(),
            server.pop3.port().to_string(),
            "alice@example.test".into(),
            "alice-secret".into(),
        ],
    );
}

#[test]
fn ten_mib_message() {
    let server = Server::new();
    run_python(
        "big_message.py",
        &[
            "127.0.0.1".into(),
            server.smtp.port().to_string(),
            server.pop3.port().to_string(),
            "bob@example.test".into(),
            "bob-secret".into(),
        ],
    );
}

#[test]
fn concurrent_sessions_deliver_every_message_once() {
    const THREADS: usize = 12;
    const EACH: usize = 5;
    let server = Server::new();
    let smtp = server.smtp;
    let msg = |t: usize, i: usize| {
        format!("Subject: c{t}-{i}\r\nMessage-ID: <conc-{t}-{i}@e2e.test>\r\n\r\nthread {t} message {i}\r\n.\r\n")
            .into_bytes()
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let (mut c, _) = smtp_connect(smtp);
                for i in 0..EACH {
                    let how = if (t + i) % 2 == 1 {
                        Transfer::Bdat(50)
                    } else {
                        Transfer::Data
                    };
                    smtp_transaction(
                        &mut c,
                        "conc@example.test",
                        &["alice@example.test", "bob@example.test"],
                        &msg(t, i),
                        how,
                    )
                    .unwrap()
                    .expect(250, None);
                }
                c.cmd("QUIT").expect(221, None);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (user, pw) in [
        ("alice@example.test", "alice-secret"),
        ("bob@example.test", "bob-secret"),
    ] {
        let got = fetch_all(server.pop3, user, pw);
        assert_eq!(got.len(), THREADS * EACH, "{user}");
        let mut seen = std::collections::BTreeSet::new();
        let mut uidls = std::collections::BTreeSet::new();
        for (uidl, m) in &got {
            assert!(uidls.insert(uidl.clone()), "{user}: UIDL {uidl} twice");
            let body = strip_trace(m).1;
            let text = String::from_utf8_lossy(body);
            let subj = text
                .lines()
                .next()
                .unwrap()
                .trim_start_matches("Subject: c")
                .to_string();
            let (t, i) = subj.split_once('-').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_bytes_eq(body, &msg(t, i), &format!("{user}: c{t}-{i}"));
            assert!(seen.insert((t, i)), "{user}: c{t}-{i} twice");
        }
    }
}
