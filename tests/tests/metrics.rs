//! The HTTP listener: `/metrics` in the Prometheus text format, counting
//! what clients did, and `/healthz` following the server's life.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringmail_tests::*;

#[test]
fn metrics_count_what_clients_did() {
    let server = Server::new();
    assert_eq!(http_get(server.http, "/healthz"), (200, "ok\n".into()));
    for i in 0..3 {
        smtp_send(
            server.smtp,
            "carol@remote.test",
            &["bob@example.test"],
            format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    // A refused message (5xx at end of data): NUL octets are refused.
    let (mut c, _) = smtp_connect(server.smtp);
    c.cmd("EHLO client.test").expect(250, None);
    c.cmd("MAIL FROM:<carol@remote.test>").expect(250, None);
    c.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    c.send(b"Subject: nul\r\n\r\na\0b\r\n.\r\n");
    c.reply().expect(550, None);
    c.cmd("QUIT");
    // A failed and a good POP3 login; an implicit-TLS handshake.
    let mut p = Pop3::connect(server.pop3);
    p.ok("USER bob@example.test");
    assert!(p.cmd("PASS wrong").starts_with("-ERR"));
    drop(p);
    fetch_all(server.pop3, "bob@example.test", "bob-secret");
    let script = format!(
        "import imaplib, ssl\n\
         c = ssl.create_default_context(cafile='{}')\n\
         m = imaplib.IMAP4_SSL('localhost', {}, ssl_context=c)\n\
         m.login('bob@example.test', 'bob-secret'); m.logout()\n",
        server.tls_cert().display(),
        server.imaps.port()
    );
    python_code(&script);
    let text = scrape_until(&server, |t| {
        metric_sum(t, "ringmail_smtp_transactions_total", &[("reply", "2xx")]) >= 3.0
            && metric_sum(
                t,
                "ringmail_logins_total",
                &[("proto", "pop3"), ("result", "success")],
            ) >= 1.0
            && metric_sum(
                t,
                "ringmail_logins_total",
                &[("proto", "imap"), ("result", "success")],
            ) >= 1.0
            && metric_sum(t, "ringmail_tls_handshakes_total", &[("result", "ok")]) >= 1.0
            && metric_sum(t, "ringmail_storage_segment_bytes", &[]) > 0.0
    });
    assert_eq!(
        metric_sum(
            &text,
            "ringmail_smtp_transactions_total",
            &[("proto", "smtp"), ("reply", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "ringmail_smtp_transactions_total",
            &[("reply", "5xx")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "ringmail_recipients_accepted_total",
            &[("destination", "local")]
        ),
        3.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "ringmail_logins_total",
            &[("proto", "pop3"), ("result", "failure")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "ringmail_tls_handshakes_total",
            &[("result", "ok"), ("version", "TLSv1.3")]
        ),
        1.0
    );
    assert!(
        metric_sum(
            &text,
            "ringmail_connections_accepted_total",
            &[("proto", "smtp")]
        ) >= 4.0
    );
    // The NUL refusal is the session's own: no delivery, no delivery time.
    assert_eq!(
        metric_sum(&text, "ringmail_delivery_seconds_count", &[]),
        3.0
    );
    assert!(metric_sum(&text, "ringmail_storage_syncs_total", &[]) >= 1.0);
    assert!(metric_sum(&text, "ringmail_storage_sync_seconds_count", &[]) >= 1.0);
    assert!(
        metric_sum(&text, "ringmail_storage_segment_bytes", &[]) > 0.0,
        "{text}"
    );
    assert!(text.contains("# TYPE ringmail_delivery_seconds histogram"));
    // The Grafana dashboard only plots series the server exports.
    let dash =
        std::fs::read_to_string(workspace_root().join("contrib/grafana/ringmail.json")).unwrap();
    let mut names: Vec<&str> = dash
        .match_indices("ringmail_")
        .map(|(i, _)| {
            let rest = &dash[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() > 10, "{names:?}");
    for n in names {
        assert!(
            text.lines()
                .any(|l| l.starts_with(n) && !l.starts_with('#')),
            "the dashboard plots {n}, which /metrics lacks"
        );
    }
    // Every shard reports.
    for shard in 0..server.cores {
        assert!(
            text.contains(&format!("ringmail_accounts{{shard=\"{shard}\"}}")),
            "{text}"
        );
    }
}

#[test]
fn the_http_listener_is_bounded_and_answers_only_its_paths() {
    let mut server = Server::new();
    assert_eq!(http_get(server.http, "/nope").0, 404);
    // Idle connections that never send a request do not stop a scrape.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(server.http).unwrap())
        .collect();
    assert_eq!(http_get(server.http, "/healthz").0, 200);
    // A request with a method other than GET/HEAD, and a huge header.
    let mut s = TcpStream::connect(server.http).unwrap();
    s.write_all(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 405"));
    let mut s = TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(big.as_bytes());
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    assert!(
        !String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"),
        "an oversized head was served"
    );
    drop(idle);
    // While stopping (a message in the middle of its data holds the grace
    // period open), /healthz is 503.
    let (mut held, _) = smtp_connect(server.smtp);
    held.cmd("EHLO client.test").expect(250, None);
    held.cmd("MAIL FROM:<carol@remote.test>").expect(250, None);
    held.cmd("RCPT TO:<bob@example.test>").expect(250, None);
    held.cmd("DATA").expect(354, None);
    held.send(b"Subject: unfinished\r\n\r\n");
    let pid = server.pid().unwrap();
    // SAFETY: kill(2) on the server we started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = wait_for(Duration::from_secs(5), || {
        let (s, _) = http_get(server.http, "/healthz");
        (s == 503).then_some(s)
    });
    assert_eq!(status, Some(503));
    drop(held);
    server.wait_exit(Duration::from_secs(30));
}

#[test]
fn json_logs_have_one_object_per_line_and_an_event_per_transaction() {
    let mut server = Server::options().config("log_format = \"json\"\n").start();
    smtp_send(
        server.smtp,
        "carol@remote.test",
        &["bob@example.test"],
        b"Subject: logged\r\n\r\nx\r\n",
    );
    let mut p = Pop3::connect(server.pop3);
    p.ok("USER bob@example.test");
    assert!(p.cmd("PASS wrong").starts_with("-ERR"));
    drop(p);
    server.terminate();
    let text = server.stderr_text();
    let mut tx = None;
    let mut login = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["event"] == "smtp_transaction" {
            tx = Some(v.clone());
        }
        if v["event"] == "login" {
            login = Some(v);
        }
    }
    let tx = tx.unwrap_or_else(|| panic!("no smtp_transaction event in\n{text}"));
    assert_eq!(tx["reply"], 250);
    assert_eq!(tx["sender"], "carol@remote.test");
    assert_eq!(tx["recipients"], 1);
    assert_eq!(tx["client"], "127.0.0.1");
    assert!(
        tx["queue_id"].as_str().is_some_and(|q| !q.is_empty()),
        "{tx}"
    );
    assert!(
        tx["size"].as_u64().unwrap() > 20 && tx["latency_us"].is_u64(),
        "{tx}"
    );
    let login = login.unwrap_or_else(|| panic!("no login event in\n{text}"));
    assert_eq!(login["proto"], "pop3");
    assert_eq!(login["result"], "failure");
    assert_eq!(login["user"], "bob@example.test");
    assert_eq!(login["client"], "127.0.0.1");
    assert_eq!(login["tls"], "", "a plain POP3 login");
    // Never a password in the logs.
    assert!(!text.contains("wrong"), "{text}");
}

#[test]
fn status_reports_every_shard_and_autoconfig_describes_the_listeners() {
    let server = Server::new();
    for i in 0..4 {
        smtp_send(
            server.smtp,
            "carol@remote.test",
            &["bob@example.test", "alice@example.test"],
            format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    let _idle = Client::connect(server.imap);
    let json = wait_for(Duration::from_secs(15), || {
        let out = ringmail(
            &["status", "--json", "--data", server.data.to_str().unwrap()],
            "",
        );
        assert_ok(&out, "ringmail status --json");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let shards = v["shards"].as_array().unwrap();
        let messages: u64 = shards.iter().map(|s| s["messages"].as_u64().unwrap()).sum();
        let imap: u64 = shards
            .iter()
            .map(|s| s["sessions"]["imap"].as_u64().unwrap())
            .sum();
        (shards.len() == server.cores && messages >= 8 && imap >= 1).then_some(v)
    })
    .expect("status never showed the 8 stored messages and the IMAP session");
    assert_eq!(json["cores"], server.cores);
    assert!(json["version"].is_string() && json["uptime_seconds"].is_u64());
    let shards = json["shards"].as_array().unwrap();
    assert!(
        shards
            .iter()
            .map(|s| s["records_per_second"].as_f64().unwrap())
            .sum::<f64>()
            > 0.0,
        "{json}"
    );
    assert!(
        shards
            .iter()
            .all(|s| s["segment_bytes"].as_u64().unwrap() > 0),
        "{json}"
    );
    let out = ringmail(&["status", "--data", server.data.to_str().unwrap()], "");
    assert_ok(&out, "ringmail status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("ringmail ") && text.contains("commits/s"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2 + server.cores, "{text}");

    // Thunderbird's autoconfig file, read with Python's XML parser.
    let script = format!(
        "import urllib.request, xml.etree.ElementTree as ET\n\
         x = ET.fromstring(urllib.request.urlopen('http://{}/.well-known/autoconfig/mail/config-v1.1.xml', timeout=10).read())\n\
         p = x.find('emailProvider')\n\
         print(','.join(d.text for d in p.findall('domain')))\n\
         for s in list(p.findall('incomingServer')) + list(p.findall('outgoingServer')):\n\
         \x20   print(s.get('type'), s.find('hostname').text, s.find('port').text, s.find('socketType').text, s.find('username').text)\n",
        server.http
    );
    let text = python_code(&script);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("example.test"));
    let servers: Vec<&str> = lines.collect();
    let host = "mail.example.test";
    for want in [
        format!("imap {host} {} SSL %EMAILADDRESS%", server.imaps.port()),
        format!("imap {host} {} STARTTLS %EMAILADDRESS%", server.imap.port()),
        format!("pop3 {host} {} SSL %EMAILADDRESS%", server.pop3s.port()),
        format!("pop3 {host} {} STARTTLS %EMAILADDRESS%", server.pop3.port()),
        format!(
            "smtp {host} {} SSL %EMAILADDRESS%",
            server.submissions.port()
        ),
        format!(
            "smtp {host} {} STARTTLS %EMAILADDRESS%",
            server.submission.port()
        ),
    ] {
        assert!(
            servers.contains(&want.as_str()),
            "missing {want:?} in {servers:?}"
        );
    }
    assert_eq!(http_get(server.http, "/mail/config-v1.1.xml").0, 200);
}
