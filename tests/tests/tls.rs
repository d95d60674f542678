//! TLS end to end: STARTTLS and implicit TLS with Python's ssl clients,
//! swaks and openssl s_client; attacks on the handshake (injection after
//! STARTTLS, old versions, garbage, handshakes that never end, too many at
//! once); certificate reloads under open sessions; check-config.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringmail_tests::*;

/// Credentials only under TLS, loopback included, so these tests see the
/// policy a remote client sees.
const TLS_ONLY: &str = "[tls]\nloopback_auth_without_tls = false\n";

fn py(args: &[&str]) -> String {
    run_python(
        "tls_clients.py",
        &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
}

fn port(a: std::net::SocketAddr) -> String {
    a.port().to_string()
}

fn submission_addr(server: &Server) -> std::net::SocketAddr {
    let v = server
        .ready_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("submission="))
        .expect("submission= in ready line");
    v.split(',').next().unwrap().parse().unwrap()
}

#[test]
fn python_clients_over_starttls_and_implicit_tls() {
    let server = Server::options().config(TLS_ONLY).start();
    let ca = server.tls_cert();
    let ca = ca.to_str().unwrap();
    py(&[
        "smtp",
        ca,
        &port(server.smtp),
        &port(server.submissions),
        &port(submission_addr(&server)),
        "alice@example.test",
        "alice-secret",
    ]);
    let out = py(&[
        "readers",
        ca,
        &port(server.imap),
        &port(server.imaps),
        &port(server.pop3),
        &port(server.pop3s),
        "bob@example.test",
        "bob-secret",
        "3",
    ]);
    let received: Vec<&str> = out.lines().filter(|l| l.starts_with("RECEIVED ")).collect();
    assert_eq!(received.len(), 3, "{out}");
    // RFC 3848: ESMTPS without AUTH (port 25 style), ESMTPSA with it, and
    // the TLS version and cipher as Postfix writes them.
    assert!(received[0].contains(" with ESMTPS id "), "{}", received[0]);
    for r in &received[1..] {
        assert!(r.contains(" with ESMTPSA id "), "{r}");
    }
    for r in &received {
        assert!(r.contains("(using TLSv1.3 with cipher TLS_"), "{r}");
    }
    // The ready line's neighbour names the certificate and its fingerprint.
    assert!(
        server
            .stderr_text()
            .contains("generated a self-signed TLS certificate"),
        "{}",
        server.stderr_tail(20)
    );
}

#[test]
fn tls_logins_move_between_shards_with_their_tls_state() {
    // Accounts on both shards: wherever the kernel puts a connection, some
    // logins land on the shard that does not own the account and move,
    // TLS state and all, to the owner.
    let users = accounts_on_all_shards("tlsmove", 6, 2, 2);
    let server = Server::options().accounts(&users).start();
    for u in &users {
        for i in 0..2 {
            smtp_send(
                server.smtp,
                "a@example.org",
                &[u.as_str()],
                format!("Subject: {i}\r\n\r\nbody {i} for {u}\r\n").as_bytes(),
            );
        }
    }
    let ca = server.tls_cert();
    py(&[
        "readers",
        ca.to_str().unwrap(),
        &port(server.imap),
        &port(server.imaps),
        &port(server.pop3),
        &port(server.pop3s),
        &users.join(","),
        PASSWORD,
        "2",
    ]);
}

#[test]
fn imap_starttls_and_pop3_stls_refuse_credentials_before_tls() {
    let server = Server::options().config(TLS_ONLY).start();
    smtp_send(
        server.smtp,
        "a@example.org",
        &["bob@example.test"],
        b"Subject: one\r\n\r\nbody\r\n",
    );
    let ca = server.tls_cert();
    py(&[
        "starttls_readers",
        ca.to_str().unwrap(),
        &port(server.imap),
        &port(server.pop3),
        "bob@example.test",
        "bob-secret",
        "1",
    ]);
}

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let server = Server::new();
    let ca = server.tls_cert();
    py(&[
        "injection",
        ca.to_str().unwrap(),
        &port(server.imap),
        "imap",
    ]);
    py(&[
        "injection",
        ca.to_str().unwrap(),
        &port(server.pop3),
        "pop3",
    ]);
    py(&[
        "injection",
        ca.to_str().unwrap(),
        &port(server.smtp),
        "smtp",
    ]);
    assert!(
        server
            .stderr_text()
            .contains("discarded plaintext pipelined before the TLS handshake"),
        "{}",
        server.stderr_tail(20)
    );
}

/// Property over the transport's buffering: the pipelined input around
/// STARTTLS/STLS split into two writes at every byte position (see
/// `boundaries` in py/tls_clients.py).
#[test]
fn starttls_at_every_byte_boundary_of_pipelined_input() {
    let server = Server::new();
    let ca = server.tls_cert();
    for (proto, addr) in [
        ("smtp", server.smtp),
        ("imap", server.imap),
        ("pop3", server.pop3),
    ] {
        let out = py(&[
            "boundaries",
            ca.to_str().unwrap(),
            &port(addr),
            proto,
            "bob@example.test",
            "bob-secret",
        ]);
        assert!(out.contains("ok {"), "{proto}: {out}");
    }
    // Still serving after every variant.
    smtp_send(
        server.smtp,
        "a@example.org",
        &["bob@example.test"],
        b"Subject: after\r\n\r\nbody\r\n",
    );
}

#[test]
fn tls_1_0_and_1_1_are_refused() {
    let server = Server::new();
    let out = py(&["old_versions", &port(server.submissions)]);
    assert!(out.contains("refused") || out.contains("skip"), "{out}");
    // Still serving.
    let ca = server.tls_cert();
    py(&[
        "handshakes",
        ca.to_str().unwrap(),
        &port(server.submissions),
        "3",
    ]);
}

/// Read until the peer closes (true) or `within` passes (false).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn unfinished_and_garbage_handshakes_close_only_their_connection() {
    let server = Server::options()
        .config("[tls]\nhandshake_timeout_secs = 1\n")
        .start();
    // Connects and never says a word: closed after the handshake timeout.
    let mut silent = TcpStream::connect(server.submissions).unwrap();
    // Trickles a plausible record header, one byte at a time: the timeout
    // is for the whole handshake, not per read.
    let mut trickle = TcpStream::connect(server.imaps).unwrap();
    let start = Instant::now();
    for b in [0x16u8, 0x03, 0x01] {
        trickle.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    // Garbage instead of a ClientHello: closed at once.
    let mut garbage = TcpStream::connect(server.pop3s).unwrap();
    garbage.write_all(b"USER bob\r\nPASS x\r\n").unwrap();
    assert!(
        closed_within(&mut garbage, Duration::from_secs(2)),
        "garbage ClientHello not closed"
    );
    assert!(
        closed_within(&mut trickle, Duration::from_secs(3)),
        "trickled handshake outlived the timeout"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)),
        "silent handshake not closed"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    // Nothing else was disturbed.
    let ca = server.tls_cert();
    py(&[
        "handshakes",
        ca.to_str().unwrap(),
        &port(server.submissions),
        "5",
    ]);
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("EHLO x").expect(250, None);
}

#[test]
fn the_handshake_cap_answers_454_and_closes_implicit_tls() {
    let server = Server::options()
        .cores(1)
        .config("[tls]\nhandshakes_max = 2\n")
        .start();
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.submissions).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("EHLO x").expect(250, None);
    c.cmd("STARTTLS").expect(454, Some("4.7.0"));
    // The session goes on in clear.
    c.cmd("NOOP").expect(250, None);
    let mut third = TcpStream::connect(server.submissions).unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(2)),
        "implicit TLS beyond the cap not closed"
    );
    drop(held);
    // Places come back when those connections end.
    let ok = wait_for(Duration::from_secs(5), || {
        let (mut c, _) = smtp_connect(server.smtp);
        c.cmd("EHLO x");
        (c.cmd("STARTTLS").code == 220).then_some(())
    });
    assert!(ok.is_some(), "handshake places not released");
}

#[test]
fn a_thousand_concurrent_handshakes() {
    let server = Server::options()
        .config("[tls]\nhandshakes_max = 1000\n[limits]\nconnections_per_address_max = 2000\n")
        .start();
    let ca = server.tls_cert();
    let out = py(&[
        "handshakes",
        ca.to_str().unwrap(),
        &port(server.submissions),
        "1000",
    ]);
    assert!(out.contains("ok 1000 handshakes"), "{out}");
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("EHLO x").expect(250, None);
}

fn sha256_of_pem(pem: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase()
}

#[test]
fn certificates_reload_on_change_and_sighup_without_dropping_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, k1) = openssl_cert(dir.path(), "one", "mail.example.test,localhost");
    let (c2, k2) = openssl_cert(dir.path(), "two", "mail.example.test,localhost");
    let live_c = dir.path().join("live.pem");
    let live_k = dir.path().join("live.key");
    std::fs::copy(&c1, &live_c).unwrap();
    std::fs::copy(&k1, &live_k).unwrap();
    let config = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        live_c.display().to_string(),
        live_k.display().to_string()
    );
    let server = Server::options().config(&config).start();

    // 100 sessions open over the first certificate.
    let flag = dir.path().join("go");
    let done = dir.path().join("done");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join("tls_clients.py");
    let mut holder = Command::new("python3")
        .arg(&script)
        .args([
            "hold",
            c1.to_str().unwrap(),
            &port(server.submissions),
            "100",
        ])
        .arg(&flag)
        .arg(&done)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(holder.stdout.as_mut().unwrap());
        r.read_line(&mut line).unwrap();
    }
    assert_eq!(
        line.trim(),
        format!("fingerprint {}", sha256_of_pem(&c1)),
        "first certificate"
    );

    // A changed file is picked up by itself (no signal).
    std::fs::copy(&k2, &live_k).unwrap();
    std::fs::copy(&c2, &live_c).unwrap();
    let loaded = wait_for(Duration::from_secs(10), || {
        server
            .stderr_text()
            .contains("TLS certificate loaded")
            .then_some(())
    });
    assert!(
        loaded.is_some(),
        "no reload after the files changed:\n{}",
        server.stderr_tail(20)
    );
    std::fs::write(&flag, "go").unwrap();
    let out = wait_output(holder, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "holder: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&done).unwrap(),
        sha256_of_pem(&c2),
        "new sessions see the new certificate"
    );

    // A bad file on SIGHUP: logged, the certificate in force stays.
    std::fs::write(&live_c, "not a certificate").unwrap();
    let pid = server.pid().unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let failed = wait_for(Duration::from_secs(10), || {
        server
            .stderr_text()
            .contains("TLS certificates not reloaded")
            .then_some(())
    });
    assert!(failed.is_some(), "{}", server.stderr_tail(20));
    let out = py(&[
        "handshakes",
        c2.to_str().unwrap(),
        &port(server.submissions),
        "2",
    ]);
    assert!(out.contains("ok 2 handshakes"), "{out}");
}

#[test]
fn check_config_validates_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = openssl_cert(dir.path(), "one", "mail.example.test");
    let (_, other_key) = openssl_cert(dir.path(), "two", "mail.example.test");
    let write = |name: &str, body: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let good = write(
        "good.toml",
        format!(
            "hostname = \"mail.example.test\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
            c.to_str().unwrap(),
            k.to_str().unwrap()
        ),
    );
    let out = ringmail(&["check-config", good.to_str().unwrap()], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("names=mail.example.test") && text.contains("sha256="),
        "{text}"
    );
    let wrong_name = write(
        "name.toml",
        format!(
            "hostname = \"mx.other.test\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
            c.to_str().unwrap(),
            k.to_str().unwrap()
        ),
    );
    let out = ringmail(&["check-config", wrong_name.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not cover hostname mx.other.test"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong_key = write(
        "key.toml",
        format!(
            "hostname = \"mail.example.test\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
            c.to_str().unwrap(),
            other_key.to_str().unwrap()
        ),
    );
    let out = ringmail(&["check-config", wrong_key.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn swaks_and_openssl_speak_starttls_and_implicit_tls() {
    let server = Server::new();
    let ca = server.tls_cert();
    if on_path("swaks") {
        for (addr, flag) in [(server.smtp, "--tls"), (server.submissions, "--tlsc")] {
            let child = Command::new("swaks")
                .args([
                    "--to",
                    "bob@example.test",
                    "--from",
                    "alice@example.test",
                    "--server",
                    "127.0.0.1",
                ])
                .args(["--port", &port(addr), flag, "--timeout", "15"])
                .args([
                    "--auth",
                    "PLAIN",
                    "--auth-user",
                    "alice@example.test",
                    "--auth-password",
                    "alice-secret",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("swaks");
            let out = wait_output(child, Duration::from_secs(30));
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "swaks {flag} failed:\n{text}");
            assert!(
                text.contains("TLS started") || text.contains("TLS"),
                "{text}"
            );
        }
    } else {
        eprintln!("note: swaks not on PATH, skipping it (.ci/run installs it)");
    }
    // openssl s_client -starttls smtp, verifying our certificate.
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
            "-CAfile",
        ])
        .arg(&ca)
        .args(["-starttls", "smtp", "-connect", &server.smtp.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"EHLO s-client.test\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: s_client\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        .unwrap();
    let out = wait_output(child, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("250 2.0.0 Ok: queued as"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("221 2.0.0"), "{text}");
}

/// A short message with CRLF line ends.
fn note(subject: &str) -> Vec<u8> {
    format!("From: carol@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n").into_bytes()
}

#[test]
fn mbsync_over_imaps_and_starttls_verifying_the_certificate() {
    assert!(
        on_path("mbsync"),
        "mbsync (isync) missing: .ci/run installs it"
    );
    // hostname localhost: the certificate names the host mbsync connects to,
    // so its verification is the real one.
    let server = Server::options()
        .hostname("localhost")
        .config(TLS_ONLY)
        .start();
    let ca = server.tls_cert();
    for (i, (ssl_type, port)) in [
        ("IMAPS", server.imaps.port()),
        ("STARTTLS", server.imap.port()),
    ]
    .into_iter()
    .enumerate()
    {
        let subject = format!("over {ssl_type}");
        smtp_send(
            server.smtp,
            "carol@example.test",
            &["bob@example.test"],
            &note(&subject),
        );
        let local = server.root().join(format!("maildir-{i}"));
        std::fs::create_dir_all(&local).unwrap();
        let cfg = server.root().join(format!("mbsyncrc-{i}"));
        std::fs::write(
            &cfg,
            format!(
                "IMAPAccount ringmail\nHost localhost\nPort {port}\nUser bob@example.test\nPass bob-secret\n\
                 SSLType {ssl_type}\nSSLVersions TLSv1.2 TLSv1.3\nCertificateFile {ca}\nAuthMechs PLAIN LOGIN\n\n\
                 IMAPStore remote\nAccount ringmail\n\nMaildirStore local\nPath {dir}/\nInbox {dir}/INBOX\n\n\
                 Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSyncState *\n",
                ca = ca.display(),
                dir = local.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("mbsync");
        cmd.arg("-c").arg(&cfg).arg("-a").env("HOME", server.root());
        let log = run_tool(cmd, &format!("mbsync {ssl_type}"));
        let mut bodies = Vec::new();
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(local.join("INBOX").join(sub)).unwrap() {
                bodies.push(
                    String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap())
                        .into_owned(),
                );
            }
        }
        assert_eq!(bodies.len(), i + 1, "{ssl_type}: {bodies:?}\n{log}");
        assert!(
            bodies
                .iter()
                .any(|b| b.contains(&format!("Subject: {subject}"))),
            "{bodies:?}"
        );
    }
    // The certificate is really checked: a CA file that does not hold it fails.
    let (other, _) = openssl_cert(server.root(), "other", "localhost");
    let cfg = server.root().join("mbsyncrc-bad");
    std::fs::write(
        &cfg,
        format!(
            "IMAPAccount ringmail\nHost localhost\nPort {}\nUser bob@example.test\nPass bob-secret\nSSLType IMAPS\n\
             CertificateFile {}\nSystemCertificates no\n\nIMAPStore remote\nAccount ringmail\n\nMaildirStore local\n\
             Path {dir}/\nInbox {dir}/INBOX\n\nChannel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\n",
            server.imaps.port(),
            other.display(),
            dir = server.root().join("maildir-bad").display()
        ),
    )
    .unwrap();
    let out = wait_output(
        Command::new("mbsync")
            .arg("-c")
            .arg(&cfg)
            .arg("-a")
            .env("HOME", server.root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert!(
        !out.status.success(),
        "mbsync took a certificate it does not trust"
    );
}

#[test]
fn fetchmail_over_pop3s_and_stls_verifying_the_certificate() {
    assert!(
        on_path("fetchmail"),
        "fetchmail missing: .ci/run installs it"
    );
    let server = Server::options()
        .hostname("localhost")
        .config(TLS_ONLY)
        .start();
    let ca = server.tls_cert();
    for (i, (mode, port)) in [
        ("--ssl", server.pop3s.port()),
        ("--sslproto=TLS1.2+", server.pop3.port()),
    ]
    .into_iter()
    .enumerate()
    {
        let subject = format!("fetched {i}");
        smtp_send(
            server.smtp,
            "carol@example.test",
            &["bob@example.test"],
            &note(&subject),
        );
        let rc = server.root().join(format!("fetchmailrc-{i}"));
        let mbox = server.root().join(format!("mbox-{i}"));
        // Implicit TLS with --ssl; STLS (RFC 2595) with sslproto alone on
        // the plain port, which fetchmail then insists on.
        std::fs::write(
            &rc,
            format!(
                "poll localhost protocol POP3 port {port} user \"bob@example.test\" password \"bob-secret\" \
                 {ssl} sslcertck sslcertfile \"{ca}\" mda \"/bin/sh -c 'cat >> {mbox}'\" fetchall\n",
                ssl = if mode == "--ssl" { "ssl" } else { "sslproto TLS1.2+" },
                ca = ca.display(),
                mbox = mbox.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut cmd = Command::new("fetchmail");
        cmd.arg("-f")
            .arg(&rc)
            .args(["--nodetach", "--nosyslog", "-v"])
            .env("HOME", server.root())
            .env("FETCHMAILHOME", server.root());
        let log = run_tool(cmd, &format!("fetchmail {mode}"));
        let got = std::fs::read_to_string(&mbox).unwrap_or_default();
        assert!(
            got.contains(&format!("Subject: {subject}")),
            "{mode}: {got}\n{log}"
        );
        assert!(log.contains("STLS") || mode == "--ssl", "{log}");
    }
}
