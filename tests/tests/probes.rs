//! Defects found by probing the server as an attacker would: login timing
//! that tells accounts apart, and the handling of message bytes that the
//! protocols forbid or bound (NUL, bare CR, overlong lines, dot lines).
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{Address, SmtpTransport, Transport};

use ringmail_tests::*;

/// One SMTP AUTH PLAIN attempt with lettre on the submission port (a new
/// connection each time); how long the whole attempt took and whether the
/// server accepted it. With throttling off there is no failure delay, so the time is the
/// server's password check plus the connection.
fn auth_attempt(server: &Server, user: &str, password: &str) -> (Duration, bool) {
    let transport = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(server.submission.port())
        .credentials(Credentials::new(user.into(), password.into()))
        .authentication(vec![Mechanism::Plain])
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let envelope = Envelope::new(
        Some(user.parse::<Address>().unwrap()),
        vec!["alice@example.test".parse::<Address>().unwrap()],
    )
    .unwrap();
    let start = Instant::now();
    let result = transport.send_raw(&envelope, b"Subject: t\r\n\r\nbody\r\n");
    (start.elapsed(), result.is_ok())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A wrong password for an existing account and any password for a name
/// that is no account cost the same: both pay one argon2 verification, so
/// the time of a failed login does not tell which accounts exist.
#[test]
fn failed_login_takes_as_long_for_unknown_accounts_as_for_known_ones() {
    // Throttling off: this measures the password check alone.
    let server = Server::options()
        .config(NO_THROTTLE)
        .accounts(&["alice@example.test", "bob@example.test"])
        .start();
    // Warm up: the first connection of each kind pays one-time costs.
    let (_, ok) = auth_attempt(&server, "bob@example.test", PASSWORD);
    assert!(ok, "the right password is accepted");
    auth_attempt(&server, "nobody@example.test", "x");

    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..9 {
        let (t, ok) = auth_attempt(&server, "alice@example.test", &format!("wrong-{i}"));
        assert!(!ok);
        known.push(t);
        let (t, ok) = auth_attempt(
            &server,
            &format!("nobody-{i}@example.test"),
            &format!("wrong-{i}"),
        );
        assert!(!ok);
        unknown.push(t);
    }
    let (known, unknown) = (median(known), median(unknown));
    eprintln!("median failed login: existing account {known:?}, unknown account {unknown:?}");
    // A password check is an argon2id verification with 19 MiB of memory:
    // milliseconds even optimised. Without the dummy hash the unknown name
    // answered in well under a millisecond plus the connection.
    assert!(
        unknown >= Duration::from_millis(5),
        "unknown account answered in {unknown:?}: no password check"
    );
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.6..1.6).contains(&ratio),
        "unknown/known = {ratio:.2} ({unknown:?} vs {known:?})"
    );
}

/// NUL octets are refused by SMTP DATA (550 5.6.0) and IMAP APPEND
/// (NO [PARSE]) with the session going on; a 100,000-octet line is stored
/// whole and served intact over IMAP and POP3 (smtplib, imaplib, poplib).
#[test]
fn nul_is_refused_and_long_lines_are_kept_whole() {
    let server = Server::new();
    let out = run_python(
        "forbidden_octets.py",
        &[
            "127.0.0.1".into(),
            server.smtp.port().to_string(),
            server.imap.port().to_string(),
            server.pop3.port().to_string(),
            "alice@example.test".into(),
            "alice-secret".into(),
        ],
    );
    assert!(out.contains("ok"), "{out}");
}

/// BDAT (RFC 3030) with a NUL in its last chunk: 550 5.6.0 for the whole
/// message, and the next transaction on the connection is accepted.
#[test]
fn bdat_with_nul_is_refused_and_the_session_goes_on() {
    let server = Server::new();
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("EHLO probe.test").expect(250, None);
    c.cmd("MAIL FROM:<probe@example.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    let first = b"Subject: bdat nul\r\n\r\n";
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes());
    c.send(first);
    c.reply().expect(250, None);
    let last = b"one\x00two\r\n";
    c.send(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    c.send(last);
    c.reply().expect(550, Some("5.6.0"));
    c.cmd("MAIL FROM:<probe@example.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    let clean = b"Subject: bdat clean\r\n\r\nclean\r\n";
    c.send(format!("BDAT {} LAST\r\n", clean.len()).as_bytes());
    c.send(clean);
    c.reply().expect(250, None);
    c.cmd("QUIT").expect(221, None);
    let stored = fetch_all(server.pop3, "alice@example.test", "alice-secret");
    assert_eq!(stored.len(), 1);
    assert!(
        strip_trace(&stored[0].1).1 == clean,
        "{:?}",
        String::from_utf8_lossy(&stored[0].1)
    );
}
