//! The real `loadgen` binary against the real server over TLS: SMTP
//! STARTTLS, POP3 STLS and POP3S, IMAP STARTTLS and IMAPS, verifying the
//! server's generated certificate with `--tls-ca`. Every run must finish
//! without errors, record `tls_handshake` latencies, and (several
//! connections one after another, `--tls-resume on`) resume sessions.
//!
//! `smtp --tls` is not run here: implicit TLS SMTP is the submissions
//! listener, which requires AUTH, and the load generator does not
//! authenticate.
use std::process::{Command, Stdio};
use std::time::Duration;

use ringmail_tests::*;

/// The generated certificate names `hostname` and `localhost`, not
/// 127.0.0.1, so the name to verify is given explicitly.
const NAME: &str = "localhost";

/// Accounts `lt0@example.test`, `lt1@example.test`.
const PATTERN: &str = "lt{n}@example.test";
const ACCOUNTS: [&str; 2] = ["lt0@example.test", "lt1@example.test"];

fn server() -> Server {
    Server::options().accounts(&ACCOUNTS).start()
}

/// Run loadgen with `args` plus account, output and time-limit options;
/// returns its JSON report. Panics unless it exits 0.
#[track_caller]
fn loadgen(args: &[&str]) -> serde_json::Value {
    let child = Command::new(loadgen_bin())
        .args(args)
        .args([
            "--accounts",
            "2",
            "--account-pattern",
            PATTERN,
            "--password",
            PASSWORD,
        ])
        .args([
            "--json",
            "--no-progress",
            "--timeout",
            "20",
            "--max-time",
            "60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning loadgen");
    let out = wait_output(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("loadgen JSON: {e}: {stdout}"))
}

/// No errors, handshakes recorded as their own op, TLS 1.3, and at least
/// `resumed` resumed handshakes. Returns (full, resumed).
#[track_caller]
fn check_tls(r: &serde_json::Value, mode: &str, resumed: u64) -> (u64, u64) {
    let what = format!("{} {}", r["mode"], r["target"]);
    assert_eq!(r["errors_total"], 0, "{what}: errors {}", r["errors"]);
    let t = &r["tls"];
    assert_eq!(t["mode"], mode, "{what}: {t}");
    assert_eq!(t["version"], "TLSv1.3", "{what}: {t}");
    assert!(
        t["cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS13_")),
        "{what}: {t}"
    );
    let full = t["handshakes_full"].as_u64().unwrap();
    let res = t["handshakes_resumed"].as_u64().unwrap();
    let timed = r["ops"]["tls_handshake"]["count"].as_u64().unwrap_or(0);
    assert!(timed > 0, "{what}: no tls_handshake op: {}", r["ops"]);
    assert_eq!(timed, full + res, "{what}: every handshake is timed: {t}");
    assert!(full >= 1, "{what}: {t}");
    assert!(
        res >= resumed,
        "{what}: want at least {resumed} resumed: {t}"
    );
    (full, res)
}

fn addr(a: std::net::SocketAddr) -> String {
    a.to_string()
}

#[test]
fn loadgen_smtp_starttls_delivers_and_resumes() {
    let server = server();
    let ca = server.tls_cert();
    // 4 connections one after another (3 messages each): 1 full handshake,
    // then resumptions.
    let r = loadgen(&[
        "smtp",
        "--target",
        &addr(server.smtp),
        "--starttls",
        "--tls-ca",
        ca.to_str().unwrap(),
        "--tls-server-name",
        NAME,
        "--connections",
        "1",
        "--messages",
        "12",
        "--reuse",
        "3",
    ]);
    check_tls(&r, "starttls", 1);
    assert_eq!(r["messages_ok"], 12, "{r}");
    // the EHLO before and the one after the handshake
    assert_eq!(r["ops"]["ehlo"]["count"], 8, "{}", r["ops"]);
    // everything arrived
    let mut n = 0;
    for a in ACCOUNTS {
        n += fetch_all(server.pop3, a, PASSWORD).len();
    }
    assert_eq!(n, 12);
}

#[test]
fn loadgen_pop3_and_imap_over_implicit_tls_and_starttls() {
    let server = server();
    for a in ACCOUNTS {
        for i in 0..3 {
            smtp_send(
                server.smtp,
                "s@example.org",
                &[a],
                format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
            );
        }
    }
    let ca = server.tls_cert();
    let ca = ca.to_str().unwrap();
    let tls = ["--tls-ca", ca, "--tls-server-name", NAME];
    for (target, mode, flag) in [
        (server.pop3s, "implicit", "--tls"),
        (server.pop3, "starttls", "--starttls"),
    ] {
        let t = addr(target);
        let mut args = vec!["pop3", "--target", &t, flag];
        args.extend(tls);
        args.extend(["--connections", "1", "--sessions", "4"]);
        let r = loadgen(&args);
        check_tls(&r, mode, 1);
        assert_eq!(r["sessions_ok"], 4, "{r}");
        assert_eq!(r["messages_ok"], 12, "{r}");
    }
    // IMAP: sessions end by LOGOUT or a new login and reconnect, one
    // connection at a time, for 2 seconds
    for (target, mode, flag) in [
        (server.imaps, "implicit", "--tls"),
        (server.imap, "starttls", "--starttls"),
    ] {
        let t = addr(target);
        let mut args = vec!["imap", "--target", &t, flag];
        args.extend(tls);
        args.extend([
            "--connections",
            "1",
            "--duration",
            "2",
            "--mix",
            "login=2,select=2,fetch_headers=2,fetch_body=2,search=1,logout=1",
        ]);
        let r = loadgen(&args);
        check_tls(&r, mode, 1);
        assert!(r["messages_ok"].as_u64().unwrap() > 0, "{r}");
        assert!(r["sessions_ok"].as_u64().unwrap() >= 2, "{r}");
    }
}

#[test]
fn loadgen_verifies_the_certificate_and_can_turn_resumption_off() {
    let server = server();
    let ca = server.tls_cert();
    let ca = ca.to_str().unwrap();
    let pop3s = addr(server.pop3s);
    // --tls-resume off: every handshake is full
    let r = loadgen(&[
        "pop3",
        "--target",
        &pop3s,
        "--tls",
        "--tls-ca",
        ca,
        "--tls-server-name",
        NAME,
        "--tls-resume",
        "off",
        "--connections",
        "1",
        "--sessions",
        "3",
    ]);
    assert_eq!(check_tls(&r, "implicit", 0), (3, 0), "{}", r["tls"]);
    // Without --tls-server-name the name checked is 127.0.0.1, which the
    // certificate does not carry: every session fails verification.
    let r = loadgen(&[
        "pop3",
        "--target",
        &pop3s,
        "--tls",
        "--tls-ca",
        ca,
        "--connections",
        "1",
        "--sessions",
        "2",
    ]);
    assert_eq!(r["errors"]["tls_certificate"], 2, "{}", r["errors"]);
    assert_eq!(r["sessions_ok"], 0);
    // --tls-insecure takes the self-signed certificate as it is
    let r = loadgen(&[
        "pop3",
        "--target",
        &pop3s,
        "--tls",
        "--tls-insecure",
        "--connections",
        "1",
        "--sessions",
        "2",
    ]);
    check_tls(&r, "implicit", 1);
}
