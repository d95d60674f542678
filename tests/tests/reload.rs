//! Configuration reload without a restart, against the real binary:
//! - `ringmail reload` applies local domains, aliases, limits and the
//!   hostname to new sessions, lists the keys that need a restart, and a
//!   session open across the reload finishes its transaction;
//! - a file that does not parse (by `ringmail reload` and by SIGHUP) is
//!   reported with file, line and key, and the running configuration stays;
//! - connection limits change for connections admitted after the reload.
use std::time::{Duration, Instant};

use ringmail_tests::*;

const BEFORE: &str = "local_domains = [\"example.test\"]\n\
[limits]\nrecipients_max = 2\n\
[aliases]\n\"postmaster@example.test\" = \"alice@example.test\"\n";

fn data_arg(s: &Server) -> String {
    s.data.to_str().unwrap().to_string()
}

fn reload(s: &Server) -> std::process::Output {
    ringmail(&["reload", "--data", &data_arg(s)], "")
}

fn write_config(s: &Server, text: &str) {
    std::fs::write(s.config_path.as_ref().expect("a config file"), text).unwrap();
}

/// MAIL FROM and RCPT TO each of `rcpts` in a fresh session; the RCPT replies.
fn rcpt_codes(s: &Server, rcpts: &[&str]) -> Vec<u16> {
    let (mut c, _) = smtp_connect(s.smtp);
    c.cmd("EHLO client.test").expect(250, None);
    c.cmd("MAIL FROM:<sender@client.test>").expect(250, None);
    let codes = rcpts
        .iter()
        .map(|r| c.cmd(&format!("RCPT TO:<{r}>")).code)
        .collect();
    c.cmd("QUIT");
    codes
}

/// Wait until the log holds one more line containing `needle` than it did
/// when `before` was taken; that line.
fn wait_for_log(s: &Server, needle: &str, before: &str) -> String {
    let count = |t: &str| t.lines().filter(|l| l.contains(needle)).count();
    let seen = count(before);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let text = s.stderr_text();
        if count(&text) > seen {
            return text
                .lines()
                .rev()
                .find(|l| l.contains(needle))
                .unwrap()
                .to_string();
        }
        assert!(
            Instant::now() < end,
            "no {needle:?} in the log:\n{}",
            s.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_applies_to_new_sessions_and_lists_restart_keys() {
    let s = Server::options()
        .config(BEFORE)
        .accounts(&[
            "alice@example.test",
            "bob@example.test",
            "carol@example.test",
            "dave@example.test",
        ])
        .start();
    let (_, banner) = smtp_connect(s.smtp);
    assert!(
        banner.text().contains("mail.example.test"),
        "{}",
        banner.text()
    );
    assert_eq!(
        rcpt_codes(&s, &["sales@example.test", "info@other.test"]),
        [550, 550],
        "no alias and no domain other.test yet"
    );
    assert_eq!(
        rcpt_codes(
            &s,
            &[
                "alice@example.test",
                "bob@example.test",
                "carol@example.test"
            ]
        )[2],
        452,
        "recipients_max = 2"
    );

    // A transaction open across the reload.
    let (mut open, _) = smtp_connect(s.smtp);
    open.cmd("EHLO client.test").expect(250, None);
    open.cmd("MAIL FROM:<sender@client.test>").expect(250, None);
    open.cmd("RCPT TO:<alice@example.test>").expect(250, None);

    write_config(
        &s,
        "hostname = \"mx-reloaded.example.test\"\n\
         local_domains = [\"example.test\", \"other.test\"]\n\
         [limits]\nrecipients_max = 3\nmessage_size_max = 50000\n\
         [aliases]\n\"sales@example.test\" = \"bob@example.test\"\n\
         \"info@other.test\" = \"alice@example.test\"\n\
         [storage]\ncheckpoint_every_records = 1234\n",
    );
    let out = reload(&s);
    assert_ok(&out, "ringmail reload");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("reloaded\n"), "{text}");
    let applied = text
        .lines()
        .find_map(|l| l.strip_prefix("applied: "))
        .unwrap_or_else(|| panic!("no applied line: {text}"));
    for key in [
        "aliases.info@other.test",
        "aliases.postmaster@example.test",
        "aliases.sales@example.test",
        "hostname",
        "limits.message_size_max",
        "limits.recipients_max",
        "local_domains",
    ] {
        assert!(
            applied.split(", ").any(|k| k == key),
            "{key} not in {applied}"
        );
    }
    assert!(
        text.contains("needs a restart (running values kept): storage.checkpoint_every_records"),
        "{text}"
    );
    assert!(text.contains("certificate: "), "{text}");
    wait_for_log(&s, "configuration reloaded", "");

    // The open session finishes its transaction.
    open.cmd("DATA").expect(354, None);
    open.send(b"Subject: across the reload\r\n\r\nbody\r\n.\r\n");
    open.reply().expect(250, None);
    open.cmd("QUIT");

    // New sessions see the new settings.
    let (mut c, banner) = smtp_connect(s.smtp);
    assert!(
        banner.text().contains("mx-reloaded.example.test"),
        "{}",
        banner.text()
    );
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.text().contains("SIZE 50000"), "{}", ehlo.text());
    c.cmd("QUIT");
    assert_eq!(
        rcpt_codes(
            &s,
            &[
                "sales@example.test",
                "info@other.test",
                "carol@example.test",
                "dave@example.test"
            ]
        ),
        [250, 250, 250, 452],
        "new alias, alias in the new domain, recipients_max = 3"
    );
    assert_eq!(
        rcpt_codes(&s, &["postmaster@example.test"]),
        [550],
        "removed alias"
    );
    // A real client through the new alias: the mail lands in bob's INBOX.
    python_code(&format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=15)\n\
         s.sendmail('sender@client.test', ['sales@example.test'], b'Subject: via alias\\r\\n\\r\\nhi\\r\\n')\n\
         s.quit()\n",
        port = s.smtp.port()
    ));
    let out = ringmail(
        &[
            "mailbox",
            "list",
            "bob@example.test",
            "--data",
            &data_arg(&s),
        ],
        "",
    );
    assert_ok(&out, "mailbox list");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().any(|l| l == "\"INBOX\" 1"), "{list}");

    // Reloading the same file again changes nothing.
    let out = reload(&s);
    assert_ok(&out, "second reload");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("applied: none\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_bad_file_changes_nothing_and_names_file_line_and_key() {
    let mut s = Server::options()
        .config(BEFORE)
        .accounts(&[
            "alice@example.test",
            "bob@example.test",
            "carol@example.test",
        ])
        .start();
    let path = s.config_path.clone().unwrap();
    let file = path.display().to_string();

    // By `ringmail reload`: the error, and exit status 1.
    write_config(
        &s,
        "local_domains = [\"example.test\"]\n\n[limits]\nrecipients_max = \"many\"\n",
    );
    let out = reload(&s);
    assert!(!out.status.success(), "a bad file must fail the reload");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains(&format!("{file}:4:")), "{err}");
    assert!(err.contains("key limits.recipients_max"), "{err}");

    // By SIGHUP: the same in the log.
    write_config(
        &s,
        "local_domains = [\"example.test\"]\n[limits]\nrecipient_max = 5\n",
    );
    let pid = s.pid().unwrap() as i32;
    let before = s.stderr_text();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let log = wait_for_log(&s, "configuration not reloaded", &before);
    assert!(log.contains("reason=\"SIGHUP\""), "{log}");
    assert!(log.contains(&format!("{file}:3:")), "{log}");
    assert!(log.contains("key limits.recipient_max"), "{log}");
    assert!(s.is_running());

    // The running configuration stayed: two recipients, no more.
    assert_eq!(
        rcpt_codes(
            &s,
            &[
                "alice@example.test",
                "bob@example.test",
                "carol@example.test"
            ]
        ),
        [250, 250, 452]
    );

    // A good file by SIGHUP: connection limits apply to new connections.
    write_config(
        &s,
        "local_domains = [\"example.test\"]\n[limits]\nconnections_per_address_max = 1\n",
    );
    let before = s.stderr_text();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let log = wait_for_log(&s, "configuration reloaded", &before);
    assert!(
        log.contains("applied=limits.connections_per_address_max"),
        "{log}"
    );
    let (mut first, _) = smtp_connect(s.smtp);
    let mut second = Client::connect(s.smtp);
    let refused = second.reply();
    assert_eq!(refused.code, 421, "{}", refused.text());
    first.cmd("QUIT").expect(221, None);
    // The server is still fine, and stops cleanly.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(s.smtp);
        if c.reply().code == 220 {
            break;
        }
        assert!(
            Instant::now() < end,
            "the first connection's place was not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.terminate();
}

/// A session that began before the hostname changed still removes
/// Authentication-Results fields forged for the new name (RFC 8601 section
/// 5), which the verifier writes from the reload on.
#[test]
fn forged_results_for_the_new_hostname_are_removed_across_a_reload() {
    let config = |host: &str| {
        format!(
            "hostname = \"{host}\"\nlocal_domains = [\"example.test\"]\n\
             [mail_auth]\nverify = false\ntrusted_networks = []\n"
        )
    };
    let s = Server::options()
        .config(&config("mx1.example.test"))
        .accounts(&["carol@example.test"])
        .start();
    let (mut c, _) = smtp_connect(s.smtp);
    c.cmd("EHLO client.test").expect(250, None);
    c.cmd("MAIL FROM:<sender@client.test>").expect(250, None);
    c.cmd("RCPT TO:<carol@example.test>").expect(250, None);
    write_config(&s, &config("mx2.example.test"));
    assert_ok(&reload(&s), "reload");
    c.cmd("DATA").expect(354, None);
    c.send(
        b"Authentication-Results: mx2.example.test; dmarc=pass\r\n\
          Authentication-Results: mx1.example.test; spf=pass\r\n\
          Authentication-Results: other.example; dkim=pass\r\n\
          Subject: forged\r\n\r\nbody\r\n.\r\n",
    );
    c.reply().expect(250, None);
    c.cmd("QUIT");
    let got = fetch_all(s.pop3, "carol@example.test", PASSWORD);
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0].1).to_string();
    assert!(
        !text.contains("Authentication-Results: mx2.example.test")
            && !text.contains("Authentication-Results: mx1.example.test"),
        "forged fields for our names must go: {text}"
    );
    assert!(
        text.contains("Authentication-Results: other.example; dkim=pass"),
        "{text}"
    );
}
