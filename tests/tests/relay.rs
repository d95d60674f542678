//! Relay end to end: two ringmail instances (a.test and b.test/c.test) and a
//! test DNS server on 127.0.0.1 answering their MX records, everything on
//! loopback. Instance A relays to B through the MX lookup and `[relay] port`
//! (B's SMTP port, chosen before either starts).
//!
//! The two `bench_*` tests check relaying in bulk (every message delivered;
//! about one MX query per domain) and print their figures without asserting
//! on time. In the suite they use a few hundred messages; docs/BENCHMARKS.md
//! has the commands for the recorded figures (`RELAY_BENCH_MESSAGES`).
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ringmail::relay::testdns::{QType, TestDns, TestZone};
use ringmail::util::base64_encode as b64;
use ringmail_tests::{ca_signed, free_port, make_test_ca};

const PW: &str = "relay-secret";
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

fn bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("RINGMAIL_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap();
        let deps = exe.parent().unwrap();
        let profile_dir = if deps.ends_with("deps") {
            deps.parent().unwrap()
        } else {
            deps
        };
        let target = profile_dir.parent().unwrap();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "ringmail",
            "--bin",
            "ringmail",
            "--target-dir",
        ])
        .arg(target)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building ringmail failed");
        profile_dir.join("ringmail")
    })
}

fn dns_zone(domains: &[&str]) -> TestZone {
    let mut z = TestZone::new();
    for d in domains {
        let mx = format!("mx.{d}");
        z.mx(d, &[(10, &mx)]);
        z.a(&mx, &["127.0.0.1".parse().unwrap()]);
    }
    z.mx("null.test", &[(0, ".")]);
    z
}

struct Instance {
    _dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    smtp_port: u16,
    child: Option<Child>,
    smtp: SocketAddr,
    pop3: SocketAddr,
    submission: SocketAddr,
}

struct Setup<'a> {
    domains: &'a [&'a str],
    accounts: &'a [&'a str],
    dns: SocketAddr,
    relay_port: u16,
    smtp_port: u16,
    extra: &'a str,
}

impl Instance {
    fn start(s: Setup<'_>) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix("ringmail-relay-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("ringmail.toml");
        let mut text = format!(
            "hostname = \"mx.{}\"\nlocal_domains = {:?}\ndemo_accounts = [\n{}]\n[aliases]\n[relay]\nnameservers = [\"{}\"]\nport = {}\n\
             dns_timeout_secs = 1\nretry_first_secs = 1\nretry_max_secs = 2\n{}\n",
            s.domains[0],
            s.domains,
            s.accounts.iter().map(|a| format!("  {{ address = \"{a}\", password = \"{PW}\" }},\n")).collect::<String>(),
            s.dns,
            s.relay_port,
            s.extra,
        );
        text.push_str("[storage]\ncompact_interval_secs = 0\n");
        std::fs::write(&config, text).unwrap();
        let unset: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut i = Instance {
            _dir: dir,
            data,
            config,
            smtp_port: s.smtp_port,
            child: None,
            smtp: unset,
            pop3: unset,
            submission: unset,
        };
        i.spawn();
        i
    }

    fn spawn(&mut self) {
        let log = self.data.with_file_name("stderr.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(bin())
            .arg("serve")
            .arg("--data")
            .arg(&self.data)
            .arg("--config")
            .arg(&self.config)
            .args([
                "--cores",
                "2",
                "--smtp",
                &format!("127.0.0.1:{}", self.smtp_port),
                "--pop3",
                "127.0.0.1:0",
            ])
            .args(["--imap", "127.0.0.1:0", "--submission", "127.0.0.1:0"])
            .args([
                "--submissions",
                "127.0.0.1:0",
                "--imaps",
                "127.0.0.1:0",
                "--pop3s",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .env("RINGMAIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server ready line");
        assert!(
            line.starts_with("ringmail: ready "),
            "{line:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap()
                .parse()
                .unwrap()
        };
        self.smtp = field("smtp");
        self.pop3 = field("pop3");
        self.submission = field("submission");
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn queue(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .arg("queue")
            .args(args)
            .arg("--data")
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "queue {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw line client.
struct Line {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Line {
    fn connect(addr: SocketAddr) -> Line {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Line {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }
    fn send(&mut self, data: &[u8]) {
        self.w.write_all(data).unwrap();
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l
    }
    /// One SMTP reply (all lines), the last line returned.
    fn reply(&mut self) -> String {
        loop {
            let l = self.line();
            if l.len() < 4 || l.as_bytes()[3] != b'-' {
                return l;
            }
        }
    }
    fn cmd(&mut self, c: &str) -> String {
        self.send(format!("{c}\r\n").as_bytes());
        self.reply()
    }
}

/// Send one message; Err(first non-positive reply).
fn smtp_send(
    addr: SocketAddr,
    auth: Option<&str>,
    from: &str,
    to: &[&str],
    data: &[u8],
) -> Result<(), String> {
    let mut c = Line::connect(addr);
    c.reply();
    c.cmd("EHLO client.test");
    let check = |r: String, want: &str| if r.starts_with(want) { Ok(()) } else { Err(r) };
    if let Some(user) = auth {
        check(
            c.cmd(&format!(
                "AUTH PLAIN {}",
                b64(format!("\0{user}\0{PW}").as_bytes())
            )),
            "235",
        )?;
    }
    check(c.cmd(&format!("MAIL FROM:<{from}>")), "250")?;
    for t in to {
        check(c.cmd(&format!("RCPT TO:<{t}>")), "250")?;
    }
    let mut stuffed = Vec::new();
    for line in data.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    check(c.cmd("DATA"), "354")?;
    c.send(&stuffed);
    check(c.cmd("."), "250")?;
    c.cmd("QUIT");
    Ok(())
}

/// Submit `wire` as DATA octets exactly as given (already stuffed, without
/// the final dot line) as an authenticated sender.
fn submit_raw(addr: SocketAddr, user: &str, to: &str, wire: &[u8]) -> Result<(), String> {
    let mut c = Line::connect(addr);
    c.reply();
    c.cmd("EHLO client.test");
    let check = |r: String, want: &str| if r.starts_with(want) { Ok(()) } else { Err(r) };
    check(
        c.cmd(&format!(
            "AUTH PLAIN {}",
            b64(format!("\0{user}\0{PW}").as_bytes())
        )),
        "235",
    )?;
    check(c.cmd(&format!("MAIL FROM:<{user}>")), "250")?;
    check(c.cmd(&format!("RCPT TO:<{to}>")), "250")?;
    check(c.cmd("DATA"), "354")?;
    c.send(wire);
    check(c.cmd("."), "250")?;
    c.cmd("QUIT");
    Ok(())
}

/// Every message of a maildrop, unstuffed (POP3, read only).
fn pop3_all(addr: SocketAddr, user: &str) -> Vec<Vec<u8>> {
    let mut c = Line::connect(addr);
    assert!(c.line().starts_with("+OK"));
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {PW}"));
    assert!(r.starts_with("+OK"), "{r}");
    let stat = c.cmd("STAT");
    let n: usize = stat.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut all = Vec::new();
    for i in 1..=n {
        assert!(c.cmd(&format!("RETR {i}")).starts_with("+OK"));
        let mut msg = Vec::new();
        loop {
            let mut l = Vec::new();
            c.r.read_until(b'\n', &mut l).unwrap();
            if l == b".\r\n" {
                break;
            }
            msg.extend_from_slice(if l.starts_with(b"..") { &l[1..] } else { &l });
        }
        all.push(msg);
    }
    c.cmd("QUIT");
    all
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn message(subject: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: alice@a.test\r\nTo: bob@b.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@a.test>\r\n\r\n").into_bytes();
    m.extend_from_slice(b".a line with a leading dot\r\n8-bit: \xc3\xa9t\xc3\xa9\r\n");
    while m.len() < size {
        m.extend_from_slice(
            b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n",
        );
    }
    m
}

/// DNS, then B (b.test, c.test), then A (a.test) relaying to B.
fn pair(extra_a: &str) -> (TestDns, Instance, Instance) {
    let (dns_addr, dns) = TestDns::start(dns_zone(&["a.test", "b.test", "c.test"]));
    let (a_port, b_port) = (free_port(), free_port());
    let b = Instance::start(Setup {
        domains: &["b.test", "c.test"],
        accounts: &["bob@b.test", "carol@c.test"],
        dns: dns_addr,
        relay_port: a_port,
        smtp_port: b_port,
        extra: "",
    });
    let a = Instance::start(Setup {
        domains: &["a.test"],
        accounts: &["alice@a.test", "al2@a.test"],
        dns: dns_addr,
        relay_port: b_port,
        smtp_port: a_port,
        extra: extra_a,
    });
    (dns, a, b)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn relay_is_byte_identical_and_one_message_reaches_three_domains() {
    let (_dns, a, b) = pair("");
    let m = message("three", 3000);
    smtp_send(
        a.smtp,
        Some("alice@a.test"),
        "alice@a.test",
        &["bob@b.test", "carol@c.test", "al2@a.test"],
        &m,
    )
    .unwrap();
    wait_for("bob and carol", || {
        pop3_all(b.pop3, "bob@b.test").len() == 1 && pop3_all(b.pop3, "carol@c.test").len() == 1
    });
    for user in ["bob@b.test", "carol@c.test"] {
        let got = &pop3_all(b.pop3, user)[0];
        assert!(
            got.ends_with(&m),
            "{user}: not byte-identical:\n{}",
            String::from_utf8_lossy(got)
        );
        let text = String::from_utf8_lossy(got);
        assert!(
            text.starts_with("Return-Path: <alice@a.test>\r\nReceived: from mx.a.test"),
            "{text}"
        );
        // A's trace header, with ESMTPA (RFC 3848) for the authenticated submission.
        assert!(text.contains("with ESMTPA id"), "{text}");
        // B's, on top: A used STARTTLS, opportunistically, to B's
        // self-signed certificate.
        let b_received = text.split("\r\nReceived: ").nth(1).unwrap_or("");
        assert!(
            b_received.starts_with("from mx.a.test") && b_received.contains("with ESMTPS id"),
            "{text}"
        );
    }
    let local = &pop3_all(a.pop3, "al2@a.test")[0];
    assert!(local.ends_with(&m));
    wait_for("an empty queue", || {
        a.queue(&["list"]) == "queue is empty\n"
    });
}

#[test]
fn deferred_while_the_mx_is_down_then_delivered() {
    let (dns_addr, _dns) = TestDns::start(dns_zone(&["a.test", "b.test"]));
    let b_port = free_port();
    let a = Instance::start(Setup {
        domains: &["a.test"],
        accounts: &["alice@a.test"],
        dns: dns_addr,
        relay_port: b_port,
        smtp_port: free_port(),
        extra: "",
    });
    let m = message("later", 500);
    smtp_send(
        a.submission,
        Some("alice@a.test"),
        "alice@a.test",
        &["bob@b.test"],
        &m,
    )
    .unwrap();
    wait_for("a deferral", || {
        a.queue(&["list"]).contains("deferred attempts=")
    });
    let list = a.queue(&["list"]);
    assert!(
        list.contains("from=<alice@a.test>") && list.contains("bob@b.test deferred"),
        "{list}"
    );
    let b = Instance::start(Setup {
        domains: &["b.test"],
        accounts: &["bob@b.test"],
        dns: dns_addr,
        relay_port: 25,
        smtp_port: b_port,
        extra: "",
    });
    assert!(a
        .queue(&["flush", "b.test"])
        .ends_with("recipients scheduled now\n"));
    wait_for("delivery after the MX came up", || {
        pop3_all(b.pop3, "bob@b.test").len() == 1
    });
    assert!(pop3_all(b.pop3, "bob@b.test")[0].ends_with(&m));
    wait_for("an empty queue", || {
        a.queue(&["list"]) == "queue is empty\n"
    });
    // One relay_attempt event per attempt, with stable fields.
    let log = stderr_log(&a);
    let attempts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=\"relay_attempt\""))
        .collect();
    let deferred = attempts
        .iter()
        .find(|l| l.contains("result=\"deferred\""))
        .unwrap_or_else(|| panic!("no deferred relay_attempt in\n{log}"));
    assert!(
        deferred.contains("recipient=\"bob@b.test\"")
            && deferred.contains("domain=\"b.test\"")
            && deferred.contains("attempts=1")
            && !deferred.contains("next_retry=0"),
        "{deferred}"
    );
    let delivered = attempts
        .iter()
        .find(|l| l.contains("result=\"delivered\""))
        .unwrap_or_else(|| panic!("no delivered relay_attempt in\n{log}"));
    assert!(
        delivered.contains("mx=\"")
            && !delivered.contains("mx=\"\"")
            && delivered.contains("reply=250"),
        "{delivered}"
    );
}

#[test]
fn rejections_and_null_mx_become_bounces_but_never_for_the_null_sender() {
    let (dns, a, b) = pair("");
    let m = message("bounce", 800);
    smtp_send(
        a.smtp,
        Some("alice@a.test"),
        "alice@a.test",
        &["nobody@b.test", "bob@b.test"],
        &m,
    )
    .unwrap();
    smtp_send(
        a.smtp,
        Some("alice@a.test"),
        "alice@a.test",
        &["x@null.test"],
        &m,
    )
    .unwrap();
    // The null sender never gets a notification.
    smtp_send(
        a.smtp,
        Some("alice@a.test"),
        "",
        &["nobody@b.test", "y@null.test"],
        &m,
    )
    .unwrap();
    wait_for("two notifications", || {
        pop3_all(a.pop3, "alice@a.test").len() >= 2
    });
    wait_for("an empty queue", || {
        a.queue(&["list"]) == "queue is empty\n"
    });
    std::thread::sleep(Duration::from_millis(500));
    let dsns: Vec<String> = pop3_all(a.pop3, "alice@a.test")
        .iter()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert_eq!(dsns.len(), 2, "{dsns:#?}");
    let rejected = dsns
        .iter()
        .find(|d| d.contains("nobody@b.test"))
        .expect("DSN for the 550");
    assert!(rejected.starts_with("Return-Path: <>\r\n"), "{rejected}");
    assert!(
        rejected.contains("multipart/report; report-type=delivery-status"),
        "{rejected}"
    );
    assert!(
        rejected.contains("Action: failed") && rejected.contains("Status: 5.1.1"),
        "{rejected}"
    );
    assert!(
        rejected.contains("Remote-MTA: dns; mx.b.test"),
        "{rejected}"
    );
    assert!(
        !rejected.contains("Final-Recipient: rfc822; bob@b.test"),
        "{rejected}"
    );
    assert!(
        rejected.contains("Subject: bounce"),
        "original headers attached: {rejected}"
    );
    let null = dsns
        .iter()
        .find(|d| d.contains("x@null.test"))
        .expect("DSN for the null MX");
    assert!(null.contains("Status: 5.1.10"), "{null}");
    // bob got his copy; the null MX domain was never connected to.
    assert_eq!(pop3_all(b.pop3, "bob@b.test").len(), 1);
    assert_eq!(dns.count("null.test", QType::Mx), 1);
}

#[test]
fn kill_9_with_a_full_queue_then_everything_is_delivered() {
    let (dns_addr, _dns) = TestDns::start(dns_zone(&["a.test", "b.test"]));
    let b_port = free_port();
    let mut a = Instance::start(Setup {
        domains: &["a.test"],
        accounts: &["alice@a.test"],
        dns: dns_addr,
        relay_port: b_port,
        smtp_port: free_port(),
        extra: "",
    });
    let n = 20;
    let msgs: Vec<Vec<u8>> = (0..n)
        .map(|i| message(&format!("crash{i}"), 1500))
        .collect();
    for m in &msgs {
        smtp_send(
            a.smtp,
            Some("alice@a.test"),
            "alice@a.test",
            &["bob@b.test"],
            m,
        )
        .unwrap();
    }
    assert_eq!(a.queue(&["list"]).matches("bob@b.test").count(), n);
    a.kill9();
    let b = Instance::start(Setup {
        domains: &["b.test"],
        accounts: &["bob@b.test"],
        dns: dns_addr,
        relay_port: 25,
        smtp_port: b_port,
        extra: "",
    });
    a.spawn();
    wait_for("all queued messages after the restart", || {
        pop3_all(b.pop3, "bob@b.test").len() >= n
    });
    let got = pop3_all(b.pop3, "bob@b.test");
    assert_eq!(got.len(), n, "no duplicates");
    for m in &msgs {
        assert!(got.iter().any(|g| g.ends_with(m)));
    }
    wait_for("an empty queue", || {
        a.queue(&["list"]) == "queue is empty\n"
    });
}

#[test]
fn no_open_relay() {
    let (_dns, a, b) = pair("");
    let m = message("spam", 200);
    // Port 25 style listener, loopback client, no AUTH: local mail only.
    let e = smtp_send(a.smtp, None, "alice@a.test", &["bob@b.test"], &m).unwrap_err();
    assert!(e.starts_with("550 5.7.1"), "{e}");
    smtp_send(
        a.smtp,
        None,
        "someone@elsewhere.test",
        &["alice@a.test"],
        &m,
    )
    .unwrap();
    // Submission: AUTH before MAIL.
    let e = smtp_send(a.submission, None, "alice@a.test", &["bob@b.test"], &m).unwrap_err();
    assert!(e.starts_with("530 5.7.0"), "{e}");
    // A wrong password does not authenticate.
    let mut c = Line::connect(a.smtp);
    c.reply();
    c.cmd("EHLO x");
    let r = c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice@a.test\0wrong")));
    assert!(r.starts_with("535 5.7.8"), "{r}");
    c.cmd("MAIL FROM:<alice@a.test>");
    assert!(c.cmd("RCPT TO:<bob@b.test>").starts_with("550 5.7.1"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.queue(&["list"]), "queue is empty\n");
    assert!(pop3_all(b.pop3, "bob@b.test").is_empty());
}

#[test]
fn auth_plain_and_login_with_smtplib_and_swaks() {
    let (_dns, a, b) = pair("");
    let script = r#"
import smtplib, sys
port, sub = int(sys.argv[1]), int(sys.argv[2])
msg = "From: alice@a.test\r\nTo: bob@b.test\r\nSubject: smtplib {}\r\n\r\nhello\r\n"
with smtplib.SMTP("127.0.0.1", port) as s:
    s.ehlo()
    assert "PLAIN" in s.esmtp_features["auth"], s.esmtp_features
    s.login("alice@a.test", sys.argv[3])          # PLAIN (smtplib's choice)
    s.sendmail("alice@a.test", ["bob@b.test"], msg.format("plain"))
with smtplib.SMTP("127.0.0.1", sub) as s:
    s.ehlo()
    s.esmtp_features["auth"] = "LOGIN"            # force AUTH LOGIN
    s.login("alice@a.test", sys.argv[3])
    s.sendmail("alice@a.test", ["bob@b.test"], msg.format("login"))
try:
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.login("alice@a.test", "wrong")
    sys.exit("wrong password accepted")
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535
print("ok")
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &a.smtp.port().to_string(),
            &a.submission.port().to_string(),
            PW,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = 2;
    let swaks = Command::new("swaks")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if swaks {
        for (mech, addr) in [("PLAIN", a.smtp), ("LOGIN", a.submission)] {
            let out = Command::new("swaks")
                .args([
                    "--server",
                    &addr.to_string(),
                    "--auth",
                    mech,
                    "--auth-user",
                    "alice@a.test",
                    "--auth-password",
                    PW,
                ])
                .args([
                    "--from",
                    "alice@a.test",
                    "--to",
                    "bob@b.test",
                    "--header",
                    &format!("Subject: swaks {mech}"),
                ])
                .args(["--timeout", "20"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "swaks {mech}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            want += 1;
        }
    } else {
        eprintln!("swaks not installed: AUTH checked with smtplib only");
    }
    wait_for("every authenticated message", || {
        pop3_all(b.pop3, "bob@b.test").len() == want
    });
    let all: Vec<String> = pop3_all(b.pop3, "bob@b.test")
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    for s in ["Subject: smtplib plain", "Subject: smtplib login"] {
        assert!(all.iter().any(|m| m.contains(s)), "{s}");
    }
}

// ---------------------------------------------------------------------------
// Benchmarks: RELAY_BENCH_MESSAGES=20000 cargo test --release -p ringmail-tests --test relay bench_ -- --nocapture --test-threads 1
// ---------------------------------------------------------------------------

/// Send `count` messages from `senders` parallel connections (relay_networks, no AUTH cost).
fn blast(
    addr: SocketAddr,
    senders: usize,
    count: usize,
    to: impl Fn(usize) -> String + Sync,
    body: &[u8],
) {
    std::thread::scope(|s| {
        for t in 0..senders {
            let to = &to;
            s.spawn(move || {
                let mut c = Line::connect(addr);
                c.reply();
                c.cmd("EHLO bench.test");
                let mut i = t;
                while i < count {
                    let mut batch = format!(
                        "MAIL FROM:<alice@a.test>\r\nRCPT TO:<{}>\r\nDATA\r\n",
                        to(i)
                    )
                    .into_bytes();
                    c.send(&batch);
                    for _ in 0..3 {
                        c.reply();
                    }
                    batch.clear();
                    batch.extend_from_slice(body);
                    batch.extend_from_slice(b".\r\n");
                    c.send(&batch);
                    let r = c.reply();
                    assert!(r.starts_with("250"), "{r}");
                    i += senders;
                }
                c.cmd("QUIT");
            });
        }
    });
}

/// A 4096-byte message (headers included, CRLF lines).
fn bench_body() -> Vec<u8> {
    let mut m = b"From: alice@a.test\r\nSubject: bench\r\n\r\n".to_vec();
    let line = b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n";
    while m.len() + line.len() < 4096 {
        m.extend_from_slice(line);
    }
    let pad = 4096 - m.len();
    m.resize(m.len() + pad - 2, b'x');
    m.extend_from_slice(b"\r\n");
    assert_eq!(m.len(), 4096);
    m
}

#[test]
fn bench_relay_throughput_4k() {
    let count: usize = std::env::var("RELAY_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (_dns, a, b) = pair("relay_networks = [\"127.0.0.1/32\"]\n");
    let body = bench_body();
    let t0 = Instant::now();
    blast(a.smtp, 8, count, |_| "bob@b.test".into(), &body);
    let accepted = t0.elapsed();
    wait_for_empty(&a, Duration::from_secs(600));
    let total = t0.elapsed();
    let delivered = pop3_count(b.pop3, "bob@b.test");
    assert_eq!(delivered, count);
    println!(
        "relay A->B: {count} messages of {} bytes: accepted by A in {:.2}s ({:.0}/s), all delivered to B in {:.2}s ({:.0} msg/s end to end)",
        body.len(),
        accepted.as_secs_f64(),
        count as f64 / accepted.as_secs_f64(),
        total.as_secs_f64(),
        count as f64 / total.as_secs_f64()
    );
}

#[test]
fn bench_dns_queries_per_1000_messages_to_100_domains() {
    let domains: Vec<String> = (0..100).map(|i| format!("d{i}.test")).collect();
    let mut zone = TestZone::new();
    for d in &domains {
        zone.mx(d, &[(10, "mx.b.test")]);
    }
    zone.a("mx.b.test", &["127.0.0.1".parse().unwrap()]);
    zone.mx("a.test", &[(10, "mx.a.test")]);
    zone.a("mx.a.test", &["127.0.0.1".parse().unwrap()]);
    let (dns_addr, dns) = TestDns::start(zone);
    let (a_port, b_port) = (free_port(), free_port());
    let list: Vec<&str> = domains.iter().map(String::as_str).collect();
    let aliases: String = list
        .iter()
        .map(|d| format!("\"@{d}\" = \"sink@{d}\"\n"))
        .collect();
    let b = {
        let mut all = vec!["b.test"];
        all.extend(&list);
        let dir = tempfile::Builder::new()
            .prefix("ringmail-relay-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("ringmail.toml");
        let text = format!(
            "hostname = \"mx.b.test\"\nlocal_domains = {all:?}\ndemo_accounts = [{}]\n[aliases]\n{aliases}",
            list.iter().map(|d| format!("{{ address = \"sink@{d}\", password = \"{PW}\" }}")).collect::<Vec<_>>().join(", ")
        );
        std::fs::write(&config, text).unwrap();
        let unset: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut i = Instance {
            _dir: dir,
            data,
            config,
            smtp_port: b_port,
            child: None,
            smtp: unset,
            pop3: unset,
            submission: unset,
        };
        i.spawn();
        i
    };
    let a = Instance::start(Setup {
        domains: &["a.test"],
        accounts: &["alice@a.test"],
        dns: dns_addr,
        relay_port: b_port,
        smtp_port: a_port,
        extra: "relay_networks = [\"127.0.0.1/32\"]\n",
    });
    dns.reset_counts();
    let body = bench_body();
    let t0 = Instant::now();
    blast(
        a.smtp,
        4,
        1000,
        |i| format!("user{i}@d{}.test", i % 100),
        &body,
    );
    wait_for_empty(&a, Duration::from_secs(600));
    let (mx, aq, aaaa) = (
        dns.count_type(QType::Mx),
        dns.count_type(QType::A),
        dns.count_type(QType::Aaaa),
    );
    let txt = dns.count_type(QType::Txt);
    println!(
        "DNS for 1000 messages to 100 domains: {mx} MX + {aq} A + {aaaa} AAAA + {txt} TXT (_mta-sts) queries ({} total) in {:.2}s",
        dns.total(),
        t0.elapsed().as_secs_f64()
    );
    // Batching and the TTL cache: one MX query per domain, the shared
    // exchanger's addresses once, never one lookup per message.
    assert_eq!(mx, 100, "MX queries for 100 domains");
    assert!(
        aq + aaaa <= 4,
        "address queries for one exchanger: {aq} A + {aaaa} AAAA"
    );
    drop(b);
}

fn pop3_count(addr: SocketAddr, user: &str) -> usize {
    let mut c = Line::connect(addr);
    c.line();
    c.cmd(&format!("USER {user}"));
    c.cmd(&format!("PASS {PW}"));
    let stat = c.cmd("STAT");
    c.cmd("QUIT");
    stat.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn wait_for_empty(a: &Instance, limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if a.queue(&["list"]) == "queue is empty\n" {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("queue not drained");
}

// ---------------------------------------------------------------------------
// TLS towards the MX (STARTTLS, RFC 3207; policies from [relay.tls])
// ---------------------------------------------------------------------------

/// A test CA and a certificate it signs for `names`: (ca.pem, cert, key).
fn test_ca(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let ca = make_test_ca(dir);
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let (cert, key) = ca_signed(dir, "mx", names[0], &san, "serverAuth");
    (ca, cert, key)
}

fn stderr_log(i: &Instance) -> String {
    std::fs::read_to_string(i.data.with_file_name("stderr.log")).unwrap_or_default()
}

#[test]
fn require_verified_relays_over_starttls_and_defers_on_a_wrong_certificate() {
    let certs = tempfile::tempdir().unwrap();
    // B's certificate names mx.b.test only: valid for b.test, wrong for
    // c.test (whose MX is mx.c.test, the same instance).
    let (ca, cert, key) = test_ca(certs.path(), &["mx.b.test"]);
    let (dns_addr, _dns) = TestDns::start(dns_zone(&["a.test", "b.test", "c.test"]));
    let (a_port, b_port) = (free_port(), free_port());
    let b_tls = format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert, key);
    let b = Instance::start(Setup {
        domains: &["b.test", "c.test"],
        accounts: &["bob@b.test", "carol@c.test"],
        dns: dns_addr,
        relay_port: a_port,
        smtp_port: b_port,
        extra: &b_tls,
    });
    let a_tls = format!("tls_ca_file = {ca:?}\n[relay.tls]\n\"b.test\" = \"require-verified\"\n\"c.test\" = \"require-verified\"\n");
    let a = Instance::start(Setup {
        domains: &["a.test"],
        accounts: &["alice@a.test"],
        dns: dns_addr,
        relay_port: b_port,
        smtp_port: a_port,
        extra: &a_tls,
    });
    let m = message("verified", 2000);
    smtp_send(
        a.submission,
        Some("alice@a.test"),
        "alice@a.test",
        &["bob@b.test", "carol@c.test"],
        &m,
    )
    .unwrap();
    wait_for("bob's copy", || pop3_all(b.pop3, "bob@b.test").len() == 1);
    let got = String::from_utf8_lossy(&pop3_all(b.pop3, "bob@b.test")[0]).into_owned();
    assert!(
        got.ends_with(&String::from_utf8_lossy(&m).into_owned()),
        "not byte-identical"
    );
    let top = got.split("\r\nReceived: ").nth(1).unwrap_or("");
    assert!(
        top.starts_with("from mx.a.test")
            && top.contains("with ESMTPS id")
            && top.contains("TLSv1.3"),
        "{got}"
    );
    wait_for("carol deferred for the certificate", || {
        let l = a.queue(&["list"]);
        l.contains("carol@c.test deferred") && l.contains("4.7.5")
    });
    let list = a.queue(&["list"]);
    assert!(list.contains("bob@b.test delivered"), "{list}");
    assert!(
        list.contains("TLS handshake failed") && list.to_lowercase().contains("certificate"),
        "{list}"
    );
    // A retry (retry_first_secs = 1) does no better, and carol never got the
    // message in the clear.
    std::thread::sleep(Duration::from_secs(3));
    assert!(a.queue(&["list"]).contains("carol@c.test deferred"));
    assert_eq!(pop3_all(b.pop3, "carol@c.test").len(), 0);
    assert!(
        stderr_log(&a).contains("relay session over TLS"),
        "{}",
        stderr_log(&a)
    );
}

/// A fake MX from py/fake_mx.py; its stdout gives the port, then one JSON
/// line per message it took.
struct FakeMx {
    child: Child,
    port: u16,
    lines: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl FakeMx {
    fn start(mode: &str) -> FakeMx {
        let dir = tempfile::tempdir().unwrap();
        let (_, cert, key) = test_ca(dir.path(), &["mx.d.test", "mx.e.test"]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/fake_mx.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([mode, cert.to_str().unwrap(), key.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(WAIT).expect("fake MX port");
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        FakeMx {
            child,
            port: v["port"].as_u64().unwrap() as u16,
            lines,
            _dir: dir,
        }
    }

    fn message(&self) -> serde_json::Value {
        serde_json::from_str(
            &self
                .lines
                .recv_timeout(WAIT)
                .expect("a message at the fake MX"),
        )
        .unwrap()
    }
}

impl Drop for FakeMx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A alone, relaying d.test (opportunistic, the default) and e.test
/// ("require") to `mx`.
fn sender_for(mx: &FakeMx) -> (TestDns, Instance) {
    let (dns_addr, dns) = TestDns::start(dns_zone(&["a.test", "d.test", "e.test"]));
    let a = Instance::start(Setup {
        domains: &["a.test"],
        accounts: &["alice@a.test"],
        dns: dns_addr,
        relay_port: mx.port,
        smtp_port: free_port(),
        extra: "[relay.tls]\n\"e.test\" = \"require\"\n",
    });
    (dns, a)
}

#[test]
fn failed_handshake_falls_back_to_plaintext_only_where_opportunistic() {
    let mx = FakeMx::start("garbage");
    let (_dns, a) = sender_for(&mx);
    let m = message("fallback", 700);
    smtp_send(
        a.submission,
        Some("alice@a.test"),
        "alice@a.test",
        &["x@d.test"],
        &m,
    )
    .unwrap();
    smtp_send(
        a.submission,
        Some("alice@a.test"),
        "alice@a.test",
        &["y@e.test"],
        &m,
    )
    .unwrap();
    let got = mx.message();
    assert_eq!(got["rcpt"], serde_json::json!(["x@d.test"]), "{got}");
    assert_eq!(got["tls"], false);
    wait_for("y deferred", || {
        let l = a.queue(&["list"]);
        l.contains("y@e.test deferred") && l.contains("4.7.5")
    });
    assert!(!a.queue(&["list"]).contains("x@d.test"));
    assert!(
        stderr_log(&a).contains("TLS handshake failed; delivering in plaintext"),
        "{}",
        stderr_log(&a)
    );
    // Retries of the required destination never go out in the clear.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        mx.lines.try_recv().is_err(),
        "a message reached the MX in the clear"
    );
}

#[test]
fn replies_injected_before_the_handshake_are_dropped() {
    let mx = FakeMx::start("inject");
    let (_dns, a) = sender_for(&mx);
    let m = message("inject", 700);
    // The forged "250 SIZE 10" would make A refuse the message as too large.
    smtp_send(
        a.submission,
        Some("alice@a.test"),
        "alice@a.test",
        &["y@e.test"],
        &m,
    )
    .unwrap();
    let got = mx.message();
    assert_eq!(got["rcpt"], serde_json::json!(["y@e.test"]), "{got}");
    assert_eq!(got["tls"], true);
    wait_for("an empty queue", || {
        a.queue(&["list"]) == "queue is empty\n"
    });
}

/// What went over the wire in a DATA the fake MX received.
fn raw_data(got: &serde_json::Value) -> Vec<u8> {
    let hex = got["raw"].as_str().expect("raw");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// A submitted message with a bare CR before a dot (`\r.\r\n`), bare LFs
/// around dots (`\n.\n`, `\r\n.\n`, `\n.\r\n`) and a 5,000-octet line
/// reaches the next hop as RFC 5321 text: CRLF line ends only, every line
/// at most 998 octets (long lines broken with CRLF SP), every line
/// starting with a dot stuffed, so nothing in the body can end the data
/// early. Undoing the stuffing and the breaks gives the message with its
/// bare CRs and LFs made CRLF.
#[test]
fn relayed_data_has_crlf_lines_of_at_most_998_octets_all_dots_stuffed() {
    let mx = FakeMx::start("plain");
    let (_dns, a) = sender_for(&mx);
    // The DATA octets as the client sends them: the CRLF-delimited dot
    // lines are stuffed; what the server stores is their RFC 5321 4.5.2
    // unstuffing (only CRLF-delimited lines lose a leading dot).
    let mut wire = b"From: alice@a.test\r\nTo: x@d.test\r\nSubject: next hop\r\n\r\nbare cr\r.\r\nbare lf\n.\nmixed\r\n..\nother\n.\r\n".to_vec();
    wire.extend_from_slice(&[b'x'; 5000]);
    wire.extend_from_slice(b"\r\n..leading dot\r\nend\r\n");
    let stored = ringmail_tests::rfc_unstuff(&wire);
    submit_raw(a.submission, "alice@a.test", "x@d.test", &wire).unwrap();
    let got = mx.message();
    // The fake MX split the data at CRLF.CRLF: give back the last CRLF.
    let mut next_hop = raw_data(&got);
    next_hop.extend_from_slice(b"\r\n");
    let mut unstuffed = Vec::new();
    for line in next_hop.split_inclusive(|b| *b == b'\n') {
        assert!(
            line.ends_with(b"\r\n") && !line[..line.len() - 2].contains(&b'\r'),
            "not a CRLF line: {:?}",
            String::from_utf8_lossy(line)
        );
        assert!(line.len() <= 1000, "a line of {} octets", line.len());
        assert_ne!(line, b".\r\n", "a lone dot line in the data");
        unstuffed.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    // The body has no line starting with SP: every CRLF SP is a break.
    let mut unbroken = Vec::new();
    let mut i = 0;
    while i < unstuffed.len() {
        if unstuffed[i..].starts_with(b"\r\n ") {
            i += 3;
            continue;
        }
        unbroken.push(unstuffed[i]);
        i += 1;
    }
    let want = ringmail_tests::normalize_line_ends(&stored);
    assert!(
        unbroken.ends_with(&want),
        "next hop got:\n{}",
        String::from_utf8_lossy(&unstuffed)
    );
}

/// `ringmail dkim generate` for a.test; the TXT record it says to publish
/// (name, value).
fn dkim_generate(a: &Instance, selector: &str, algorithm: &str) -> (String, String) {
    dkim_generate_for(a, "a.test", selector, algorithm)
}

fn dkim_generate_for(
    a: &Instance,
    domain: &str,
    selector: &str,
    algorithm: &str,
) -> (String, String) {
    let out = Command::new(bin())
        .args([
            "dkim",
            "generate",
            domain,
            "--selector",
            selector,
            "--algorithm",
            algorithm,
            "--data",
        ])
        .arg(&a.data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("publish: "))
        .unwrap_or_else(|| panic!("{text}"));
    let rest = line.strip_prefix("publish: ").unwrap();
    let (name, value) = rest.split_once(" IN TXT ").unwrap();
    (name.to_string(), value.trim_matches('"').to_string())
}

/// Mail relayed for an authenticated sender is DKIM-signed for its From:
/// domain with each of the domain's keys (ed25519-sha256 and rsa-sha256,
/// relaxed/relaxed), and an independent verifier (dkimpy) accepts both
/// signatures as the next hop received them; `ringmail dns-records` lists
/// the keys with the domain's other records.
#[test]
fn relayed_mail_is_dkim_signed_and_verifies_elsewhere() {
    let mx = FakeMx::start("plain");
    let (_dns, mut a) = sender_for(&mx);
    let ed = dkim_generate(&a, "ed", "ed25519");
    let rsa = dkim_generate(&a, "rs", "rsa");
    assert!(
        ed.1.starts_with("v=DKIM1; k=ed25519; p=") && rsa.1.starts_with("v=DKIM1; k=rsa; p="),
        "{ed:?} {rsa:?}"
    );
    // The server loads keys at start.
    a.kill9();
    a.spawn();
    let m = message("signed", 3000);
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        smtp_send(
            a.submission,
            Some("alice@a.test"),
            "alice@a.test",
            &["x@d.test"],
            &m,
        )
    }));
    if !matches!(sent, Ok(Ok(()))) {
        panic!("submission failed: {sent:?}\n{}", stderr_log(&a));
    }
    let got = mx.message();
    let mut wire = raw_data(&got);
    wire.extend_from_slice(b"\r\n");
    let received = ringmail_tests::rfc_unstuff(&wire);
    assert!(
        received.starts_with(b"DKIM-Signature: "),
        "{}",
        String::from_utf8_lossy(&received[..200])
    );
    assert!(received.ends_with(&m));
    let file = a.data.with_file_name("received.eml");
    std::fs::write(&file, &received).unwrap();
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/dkim_verify.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&file)
        .arg(format!("{}={}", ed.0, ed.1))
        .arg(format!("{}={}", rsa.0, rsa.1))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dkimpy: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines.iter().any(|l| l.ends_with("ed25519-sha256 ed pass")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("rsa-sha256 rs pass")),
        "{text}"
    );
    // A changed body no longer verifies.
    let tampered =
        String::from_utf8_lossy(&received).replacen("0123456789 abcdef", "0123456789 ABCDEF", 1);
    std::fs::write(&file, tampered.as_bytes()).unwrap();
    let out = Command::new(python)
        .arg(&script)
        .arg(&file)
        .arg(format!("{}={}", ed.0, ed.1))
        .arg(format!("{}={}", rsa.0, rsa.1))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.matches(" fail").count(),
        2,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The domain's DNS records, with both keys.
    let out = Command::new(bin())
        .args(["dns-records", "a.test", "--data"])
        .arg(&a.data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success());
    for want in [
        "a.test. IN MX 10 ",
        "v=spf1 mx -all",
        &format!("{} IN TXT \"{}\"", ed.0, ed.1),
        "_dmarc.a.test. IN TXT",
        "_mta-sts.a.test.",
        "_smtp._tls.a.test.",
        "_submissions._tcp.a.test. IN SRV 0 1 465 ",
        "_imaps._tcp.a.test. IN SRV",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

/// dkimpy's verdicts on every signature of `message` (one line each).
fn dkimpy(dir: &Path, message: &[u8], records: &[&(String, String)]) -> String {
    let file = dir.join("dkimpy.eml");
    std::fs::write(&file, message).unwrap();
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/dkim_verify.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&file)
        .args(records.iter().map(|(n, v)| format!("{n}={v}")))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dkimpy: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A bounce that A sends back to a sender on B (queued with MAIL FROM:<>,
/// relayed through B's MX) carries a DKIM signature for A's hostname, the
/// domain of its From: (MAILER-DAEMON@mx.a.test), which dkimpy accepts as
/// B stored it.
#[test]
fn notifications_are_dkim_signed_for_the_hostname_and_verify_elsewhere() {
    let (_dns, mut a, b) = pair("relay_networks = [\"127.0.0.1\"]\n");
    let key = dkim_generate_for(&a, "mx.a.test", "dsn", "ed25519");
    let rsa = dkim_generate_for(&a, "mx.a.test", "dsnr", "rsa");
    a.kill9();
    a.spawn();
    let m = message("bounced", 900);
    // bob@b.test relays through A (relay_networks) to a domain with a null
    // MX: A bounces it to bob, over SMTP to B.
    smtp_send(a.smtp, None, "bob@b.test", &["x@null.test"], &m).unwrap();
    wait_for("the notification at bob's", || {
        pop3_all(b.pop3, "bob@b.test").len() == 1
    });
    let dsn = pop3_all(b.pop3, "bob@b.test").remove(0);
    let text = String::from_utf8_lossy(&dsn).into_owned();
    assert!(
        text.contains("From: Mail Delivery System <MAILER-DAEMON@mx.a.test>"),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.10"), "{text}");
    assert!(text.contains("DKIM-Signature: "), "{text}");
    let verdicts = dkimpy(&a.data.with_file_name(""), &dsn, &[&key, &rsa]);
    let lines: Vec<&str> = verdicts.lines().collect();
    assert_eq!(lines.len(), 2, "{verdicts}\n{text}");
    assert!(
        lines.iter().any(|l| l.ends_with("ed25519-sha256 dsn pass")),
        "{verdicts}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("rsa-sha256 dsnr pass")),
        "{verdicts}"
    );
    assert!(text.contains("d=mx.a.test"), "{text}");
    wait_for_empty(&a, WAIT);
}

// ---------------------------------------------------------------------------
// MTA-STS (RFC 8461): policies served over HTTPS by a test server
// ---------------------------------------------------------------------------

/// What the policy server answers for one host: HTTP status, media type,
/// body.
type Served = (u16, &'static str, String);

/// A small HTTPS server (std threads + rustls) answering
/// `GET /.well-known/mta-sts.txt` per Host header, with a certificate from
/// the test CA; counts requests per host. Stops when dropped.
struct PolicyServer {
    port: u16,
    policies: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Served>>>,
    hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl PolicyServer {
    fn start(cert: &Path, key: &Path) -> PolicyServer {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = PolicyServer {
            port,
            policies: Arc::new(Mutex::new(Default::default())),
            hits: Arc::new(Mutex::new(Default::default())),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let (policies, hits, stop) = (
            server.policies.clone(),
            server.hits.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (tcp, _) = match listener.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let (config, policies, hits) = (config.clone(), policies.clone(), hits.clone());
                std::thread::spawn(move || {
                    tcp.set_nonblocking(false).unwrap();
                    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                        match std::io::Read::read(&mut tls, &mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let host = text
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    let host = host.split(':').next().unwrap_or("").to_string();
                    *hits.lock().unwrap().entry(host.clone()).or_default() += 1;
                    let (status, media, body) = if text.starts_with("GET /.well-known/mta-sts.txt ")
                    {
                        policies.lock().unwrap().get(&host).cloned().unwrap_or((
                            404,
                            "text/plain",
                            "not here\n".into(),
                        ))
                    } else {
                        (404, "text/plain", "not here\n".into())
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {media}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes());
                    let _ = tls.write_all(body.as_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        server
    }

    fn serve(&self, host: &str, mode: &str, mx: &[&str]) {
        let mut body = format!("version: STSv1\r\nmode: {mode}\r\n");
        for m in mx {
            body.push_str(&format!("mx: {m}\r\n"));
        }
        body.push_str("max_age: 86400\r\n");
        self.policies
            .lock()
            .unwrap()
            .insert(host.to_string(), (200, "text/plain; charset=utf-8", body));
    }

    fn serve_raw(&self, host: &str, status: u16, media: &'static str, body: String) {
        self.policies
            .lock()
            .unwrap()
            .insert(host.to_string(), (status, media, body));
    }

    fn hits(&self, host: &str) -> usize {
        self.hits.lock().unwrap().get(host).copied().unwrap_or(0)
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A (a.test) relays to B, which hosts b.test ... g.test. B's certificate
/// names mx.b.test only (and the policy hosts), so B is a valid MX for
/// b.test and a wrong one for the others. Each domain publishes
/// `_mta-sts` TXT and a policy:
/// - b.test: enforce, mx.b.test: delivered, over verified TLS;
/// - c.test: enforce, mx.c.test, certificate wrong: deferred, never sent;
/// - d.test: enforce, naming another host than its MX: deferred, never sent;
/// - e.test: testing, certificate wrong: delivered, and logged;
/// - f.test: TXT record but the policy host answers 404: no policy,
///   delivered (opportunistic);
/// - g.test: testing with `*.g.test`, delivered; then the TXT id changes and
///   the new policy (enforce, another host) is fetched and applied;
/// - h.test (a redirect), i.test (text/html), j.test (a body over 64 KiB),
///   k.test (a policy host whose certificate does not name it): each
///   serves an enforce policy naming another host, each fetch fails
///   (RFC 8461 section 3.3), so there is no policy and mail is delivered.
///
/// Retries do not fetch a policy again while the id stays the same.
#[test]
fn mta_sts_policies_are_fetched_cached_and_enforced() {
    let certs = tempfile::tempdir().unwrap();
    let domains = [
        "b.test", "c.test", "d.test", "e.test", "f.test", "g.test", "h.test", "i.test", "j.test",
        "k.test",
    ];
    let mut names = vec!["mx.b.test".to_string()];
    names.extend(
        domains
            .iter()
            .filter(|d| **d != "k.test")
            .map(|d| format!("mta-sts.{d}")),
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (ca, cert, key) = test_ca(certs.path(), &names);
    let web = PolicyServer::start(&cert, &key);
    web.serve("mta-sts.b.test", "enforce", &["mx.b.test"]);
    web.serve("mta-sts.c.test", "enforce", &["mx.c.test"]);
    web.serve("mta-sts.d.test", "enforce", &["mx.elsewhere.test"]);
    web.serve("mta-sts.e.test", "testing", &["mx.e.test"]);
    web.serve("mta-sts.g.test", "testing", &["*.g.test"]);
    let elsewhere =
        "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n";
    web.serve_raw("mta-sts.h.test", 302, "text/plain", elsewhere.into());
    web.serve_raw("mta-sts.i.test", 200, "text/html", elsewhere.into());
    let mut big = elsewhere.to_string();
    while big.len() <= 64 * 1024 {
        big.push_str("# padding padding padding padding padding padding padding\r\n");
    }
    web.serve_raw("mta-sts.j.test", 200, "text/plain", big);
    web.serve_raw("mta-sts.k.test", 200, "text/plain", elsewhere.into());
    let mut all = vec!["a.test"];
    all.extend(domains);
    let mut zone = dns_zone(&all);
    // Short TTLs: the changed id at the end is seen at the next attempt.
    zone.ttl = 1;
    for d in domains {
        zone.a(&format!("mta-sts.{d}"), &["127.0.0.1".parse().unwrap()]);
        zone.txt(&format!("_mta-sts.{d}"), &["v=STSv1; id=1"]);
    }
    let (dns_addr, dns) = TestDns::start(zone);
    let (a_port, b_port) = (free_port(), free_port());
    let b_tls = format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert, key);
    let users = [
        "bob@b.test",
        "carol@c.test",
        "dave@d.test",
        "eve@e.test",
        "fred@f.test",
        "gina@g.test",
        "hal@h.test",
        "ivy@i.test",
        "jo@j.test",
        "kim@k.test",
    ];
    let b = Instance::start(Setup {
        domains: &domains,
        accounts: &users,
        dns: dns_addr,
        relay_port: a_port,
        smtp_port: b_port,
        extra: &b_tls,
    });
    let a = Instance::start(Setup {
        domains: &["a.test"],
        accounts: &["alice@a.test"],
        dns: dns_addr,
        relay_port: b_port,
        smtp_port: a_port,
        extra: &format!("tls_ca_file = {ca:?}\nmta_sts_port = {}\n", web.port),
    });
    let m = message("sts", 1500);
    smtp_send(
        a.submission,
        Some("alice@a.test"),
        "alice@a.test",
        &users,
        &m,
    )
    .unwrap();
    for u in [
        "bob@b.test",
        "eve@e.test",
        "fred@f.test",
        "gina@g.test",
        "hal@h.test",
        "ivy@i.test",
        "jo@j.test",
        "kim@k.test",
    ] {
        wait_for(u, || pop3_all(b.pop3, u).len() == 1);
    }
    let got = String::from_utf8_lossy(&pop3_all(b.pop3, "bob@b.test")[0]).into_owned();
    assert!(got.contains("with ESMTPS id"), "{got}");
    wait_for("carol and dave deferred", || {
        let l = a.queue(&["list"]);
        l.contains("carol@c.test deferred") && l.contains("dave@d.test deferred")
    });
    let list = a.queue(&["list"]);
    assert!(list.contains("4.7.5"), "{list}");
    assert!(list.contains("no MX host matches the policy"), "{list}");
    let log = stderr_log(&a);
    assert!(log.contains("MTA-STS policy fetched"), "{log}");
    assert!(
        log.contains("MTA-STS testing: enforce would defer this MX"),
        "{log}"
    );
    assert!(log.contains("MTA-STS policy fetch failed"), "{log}");
    let verified_b = log.lines().any(|l| {
        l.contains("relay session over TLS")
            && l.contains("domain=\"b.test\"")
            && l.contains("verified=true")
            && l.contains("mta_sts=Enforce")
    });
    assert!(verified_b, "{log}");
    // Retries (retry_first_secs = 1) keep deferring, use the cached
    // policies (one fetch per host) and never send in the clear.
    std::thread::sleep(Duration::from_secs(4));
    let list = a.queue(&["list"]);
    assert!(
        list.contains("carol@c.test deferred") && list.contains("dave@d.test deferred"),
        "{list}"
    );
    assert_eq!(pop3_all(b.pop3, "carol@c.test").len(), 0);
    assert_eq!(pop3_all(b.pop3, "dave@d.test").len(), 0);
    for d in domains {
        // k.test's policy host fails the handshake before any request.
        let want = usize::from(d != "k.test");
        assert_eq!(web.hits(&format!("mta-sts.{d}")), want, "{d}");
    }
    for why in [
        "mta-sts.h.test answered HTTP 302",
        "not text/plain",
        "length limit exceeded",
        "TLS with mta-sts.k.test",
    ] {
        assert!(log.contains(why), "{why:?} not in:\n{log}");
    }
    assert!(dns.count("_mta-sts.c.test", QType::Txt) >= 2);
    // A new policy id: fetched again, and the new policy (enforce, another
    // host) applies to the next message for g.test.
    web.serve("mta-sts.g.test", "enforce", &["mx.elsewhere.test"]);
    dns.update(|z| {
        z.txt("_mta-sts.g.test", &["v=STSv1; id=2"]);
    });
    std::thread::sleep(Duration::from_millis(1500));
    smtp_send(
        a.submission,
        Some("alice@a.test"),
        "alice@a.test",
        &["gina@g.test"],
        &m,
    )
    .unwrap();
    wait_for("gina's second message deferred", || {
        a.queue(&["list"]).contains("gina@g.test deferred")
    });
    assert_eq!(web.hits("mta-sts.g.test"), 2);
    assert_eq!(pop3_all(b.pop3, "gina@g.test").len(), 1);
    // Yet another id whose policy cannot be fetched (HTTP 500): the cached
    // enforce policy still applies until its max_age.
    web.serve_raw("mta-sts.g.test", 500, "text/plain", "oops\n".into());
    dns.update(|z| {
        z.txt("_mta-sts.g.test", &["v=STSv1; id=3"]);
    });
    std::thread::sleep(Duration::from_millis(1500));
    a.queue(&["flush", "g.test"]);
    wait_for("the fetch of id 3", || web.hits("mta-sts.g.test") == 3);
    std::thread::sleep(Duration::from_secs(2));
    let list = a.queue(&["list"]);
    assert!(
        list.contains("gina@g.test deferred") && list.contains("no MX host matches the policy"),
        "{list}"
    );
    assert_eq!(pop3_all(b.pop3, "gina@g.test").len(), 1);
    assert!(stderr_log(&a).contains("answered HTTP 500"));
}
