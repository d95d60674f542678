//! Configuration files and the account CLI, against the real binary:
//! - an unknown key makes `serve` and `check-config` fail with `FILE:LINE:COL`;
//! - `default-config` prints a file `check-config` accepts;
//! - `account add/list/remove/bulk`;
//! - a running server sees an account added or removed with the CLI within ~2 s
//!   (POP3 login, SMTP RCPT).
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringmail_tests::*;

fn data_arg(s: &Server) -> String {
    s.data.to_str().unwrap().to_string()
}

#[test]
fn unknown_config_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "hostname = \"mx.e2e.test\"\n\n[limits]\nmessage_size_max = 1000\nrecipient_max = 5\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let child = Command::new(ringmail_bin())
        .args([
            "serve",
            "--cores",
            "2",
            "--smtp",
            "127.0.0.1:0",
            "--pop3",
            "127.0.0.1:0",
            "--imap",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--data")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "serve with an unknown key must fail; stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no ready line expected, got {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let want = format!("{}:5:1:", cfg.display());
    assert!(
        stderr.contains(&want),
        "stderr should point at {want}, got: {stderr}"
    );
    assert!(
        stderr.contains("recipient_max"),
        "stderr should name the key: {stderr}"
    );

    // check-config reports the same position and fails.
    let out = ringmail(&["check-config", cfg.to_str().unwrap()], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&want), "check-config: {stderr}");
}

#[test]
fn check_config_accepts_good_files_and_rejects_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    // The annotated default configuration is itself a valid file.
    let out = ringmail(&["default-config"], "");
    assert_ok(&out, "default-config");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[limits]") && text.contains("message_size_max"),
        "default-config output: {text}"
    );
    let good = dir.path().join("default.toml");
    std::fs::write(&good, &text).unwrap();
    let out = ringmail(&["check-config", good.to_str().unwrap()], "");
    assert_ok(&out, "check-config on default-config output");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let small = dir.path().join("small.toml");
    std::fs::write(
        &small,
        "local_domains = [\"e2e.test\"]\ndemo_accounts = []\n[limits]\nrecipients_max = 3\n",
    )
    .unwrap();
    assert_ok(
        &ringmail(&["check-config", small.to_str().unwrap()], ""),
        "check-config small",
    );

    // A value out of range, a wrong type, a syntax error: all refused.
    for (name, text, needle) in [
        (
            "zero.toml",
            "[limits]\nmessage_size_max = 0\n",
            "message_size_max",
        ),
        ("type.toml", "cores = \"two\"\n", ":1:"),
        ("syntax.toml", "hostname = \n", ":1:"),
        ("section.toml", "[nonsense]\nx = 1\n", ":1:"),
        (
            "policy.toml",
            "[relay.tls]\n\"example.org\" = \"sometimes\"\n",
            ":2:",
        ),
        (
            "upper.toml",
            "[relay.tls]\n\"Example.org\" = \"require\"\n",
            "lowercase",
        ),
        (
            "ca.toml",
            "[relay]\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
            "/nonexistent/ca.pem",
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = ringmail(&["check-config", p.to_str().unwrap()], "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} accepted");
        assert!(
            stderr.contains(p.to_str().unwrap()) && stderr.contains(needle),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn account_cli_add_list_remove_bulk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let list = || -> Vec<String> {
        let out = ringmail(&["account", "list", "--data", d], "");
        assert_ok(&out, "account list");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_ok(
        &ringmail(
            &["account", "add", "carol@example.test", "--data", d],
            "pw-carol\n",
        ),
        "add carol",
    );
    assert_ok(
        &ringmail(
            &["account", "add", "dave@example.test", "--data", d],
            "pw-dave\n",
        ),
        "add dave",
    );
    assert_eq!(list(), vec!["carol@example.test", "dave@example.test"]);

    // Adding an existing account and adding with an empty password fail.
    assert!(
        !ringmail(
            &["account", "add", "carol@example.test", "--data", d],
            "other\n"
        )
        .status
        .success(),
        "duplicate add"
    );
    assert!(
        !ringmail(&["account", "add", "erin@example.test", "--data", d], "\n")
            .status
            .success(),
        "empty password"
    );
    assert!(
        !ringmail(&["account", "add", "not-an-address", "--data", d], "pw\n")
            .status
            .success(),
        "bad address"
    );

    assert_ok(
        &ringmail(
            &["account", "remove", "carol@example.test", "--data", d],
            "",
        ),
        "remove carol",
    );
    assert_eq!(list(), vec!["dave@example.test"]);
    assert!(
        !ringmail(
            &["account", "remove", "carol@example.test", "--data", d],
            ""
        )
        .status
        .success(),
        "remove twice"
    );

    let out = ringmail(
        &[
            "account",
            "bulk",
            "--pattern",
            "{n}u@example.test",
            "--count",
            "5",
            "--data",
            d,
        ],
        "bulk-pw\n",
    );
    assert_ok(&out, "bulk");
    let l = list();
    for n in 0..5 {
        assert!(
            l.contains(&format!("{n}u@example.test")),
            "{n}u missing from {l:?}"
        );
    }
    assert_eq!(l.len(), 6, "{l:?}");
    assert!(!ringmail(
        &[
            "account",
            "bulk",
            "--pattern",
            "nonum@example.test",
            "--count",
            "2",
            "--data",
            d
        ],
        "pw\n"
    )
    .status
    .success());
}

#[test]
fn running_server_sees_account_changes() {
    let mut server = Server::new();
    let addr = server.pop3;
    // Unknown yet: -ERR [AUTH].
    let mut p = Pop3::connect(addr);
    p.ok("USER frank@example.test");
    let r = p.cmd("PASS frank-pw");
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    drop(p);

    // Make sure the account file's timestamp will differ from the one the server saw.
    std::thread::sleep(Duration::from_millis(20));
    let d = data_arg(&server);
    assert_ok(
        &ringmail(
            &["account", "add", "frank@example.test", "--data", &d],
            "frank-pw\n",
        ),
        "add frank",
    );
    let t = Instant::now();
    let ok = wait_for(Duration::from_secs(5), || {
        let mut p = Pop3::connect(addr);
        p.ok("USER frank@example.test");
        let r = p.cmd("PASS frank-pw");
        r.starts_with("+OK").then(|| p.quit())
    });
    let took = t.elapsed();
    assert!(
        ok.is_some(),
        "new account could not log in within 5 s:\n{}",
        server.stderr_tail(2000)
    );
    // Reloaded within ~1 s, plus at most one failed attempt's penalty delay.
    assert!(
        took < Duration::from_millis(3000),
        "account picked up only after {took:?}"
    );

    // Mail to the new account is accepted (SMTP) and readable.
    let msg = b"From: a@example.test\r\nTo: frank@example.test\r\nSubject: welcome\r\n\r\nhello frank\r\n";
    smtp_send(server.smtp, "a@example.test", &["frank@example.test"], msg);
    let got = fetch_all(addr, "frank@example.test", "frank-pw");
    assert_eq!(got.len(), 1);
    assert_bytes_eq(strip_trace(&got[0].1).1, msg, "frank's message");

    // Removal: login refused and RCPT answered 550 within ~2 s.
    assert_ok(
        &ringmail(
            &["account", "remove", "frank@example.test", "--data", &d],
            "",
        ),
        "remove frank",
    );
    let gone = wait_for(Duration::from_secs(5), || {
        let (mut c, _) = smtp_connect(server.smtp);
        c.cmd("MAIL FROM:<a@example.test>").expect(250, None);
        let r = c.cmd("RCPT TO:<frank@example.test>");
        (r.code == 550).then_some(r)
    });
    let r = gone.expect("RCPT to a removed account still accepted after 5 s");
    r.expect(550, Some("5.1.1"));
    let mut p = Pop3::connect(addr);
    p.ok("USER frank@example.test");
    assert!(p.cmd("PASS frank-pw").starts_with("-ERR [AUTH]"));
    server.terminate();
}

/// Regression: `ringmail account list | head -3` panicked with a
/// broken-pipe backtrace. A reader that closes early must end the command
/// quietly.
#[test]
fn account_list_into_a_closed_pipe_exits_quietly() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = ringmail(
        &[
            "account",
            "bulk",
            "--data",
            d,
            "--pattern",
            "{n}pipe@example.test",
            "--count",
            "5000",
        ],
        "pw\n",
    );
    assert_ok(&out, "account bulk");
    let mut child = std::process::Command::new(ringmail_bin())
        .args(["account", "list", "--data", d])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then close our end, like `head -3`.
    let mut first = [0u8; 64];
    let mut stdout = child.stdout.take().unwrap();
    let _ = stdout.read(&mut first).unwrap();
    drop(stdout);
    let out = wait_output(child, std::time::Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );
}

#[test]
fn mailbox_list_and_stats_and_compact_on_the_running_server() {
    let server = Server::new();
    for i in 0..3 {
        smtp_send(
            server.smtp,
            "carol@remote.test",
            &["bob@example.test"],
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
    }
    let data = server.data.to_str().unwrap();
    let out = ringmail(&["mailbox", "list", "bob@example.test", "--data", data], "");
    assert_ok(&out, "mailbox list");
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(list.lines().any(|l| l == "\"INBOX\" 3"), "{list}");
    assert!(list.lines().any(|l| l == "\"Junk\" 0"), "{list}");
    let out = ringmail(
        &["mailbox", "stats", "bob@example.test", "--data", data],
        "",
    );
    assert_ok(&out, "mailbox stats");
    let stats = String::from_utf8_lossy(&out.stdout).into_owned();
    let inbox = stats
        .lines()
        .find(|l| l.starts_with("\"INBOX\""))
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(
        inbox.contains(" messages=3 unseen=3 ") && inbox.contains(" uidnext=4"),
        "{inbox}"
    );
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("\"Junk\"") && l.ends_with("special=\\Junk")),
        "{stats}"
    );
    assert!(
        stats
            .lines()
            .last()
            .unwrap()
            .starts_with("total messages=3 bytes="),
        "{stats}"
    );
    let out = ringmail(
        &["mailbox", "list", "nobody@example.test", "--data", data],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account nobody@example.test"));
    for args in [vec!["compact"], vec!["compact", "--shard", "1"]] {
        let mut a = args.clone();
        a.extend(["--data", data]);
        let out = ringmail(&a, "");
        assert_ok(&out, "compact");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("compacted "),
            "{out:?}"
        );
    }
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let mut server = Server::new();
    let mut args = vec!["--cores", "1", "--data", server.data.to_str().unwrap()];
    args.extend(LOOPBACK_LISTENERS);
    let err = serve_refused(&args);
    assert!(
        err.contains(&format!(
            "in use by another ringmail (pid {})",
            server.pid().unwrap()
        )),
        "{err}"
    );
    // The first one is unharmed, and after kill -9 a new start takes the lock.
    smtp_send(
        server.smtp,
        "carol@remote.test",
        &["bob@example.test"],
        b"Subject: x\r\n\r\ny\r\n",
    );
    server.kill9();
    server.restart();
    assert_eq!(
        fetch_all(server.pop3, "bob@example.test", "bob-secret").len(),
        1
    );
}
