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
/// server accepted it. SMTP AUTH has no failure delay, so the time is the
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
    let server = Server::options().accounts(&["alice@example.test", "bob@example.test"]).start();
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
        let (t, ok) = auth_attempt(&server, &format!("nobody-{i}@example.test"), &format!("wrong-{i}"));
        assert!(!ok);
        unknown.push(t);
    }
    let (known, unknown) = (median(known), median(unknown));
    eprintln!("median failed login: existing account {known:?}, unknown account {unknown:?}");
    // A password check is an argon2id verification with 19 MiB of memory:
    // milliseconds even optimised. Without the dummy hash the unknown name
    // answered in well under a millisecond plus the connection.
    assert!(unknown >= Duration::from_millis(5), "unknown account answered in {unknown:?}: no password check");
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!((0.6..1.6).contains(&ratio), "unknown/known = {ratio:.2} ({unknown:?} vs {known:?})");
}
