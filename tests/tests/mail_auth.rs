//! Inbound mail authentication end to end (`[mail_auth]`): SPF, DKIM, DMARC
//! and ARC checked by the real binary on its SMTP port against the test DNS
//! server on loopback, the Authentication-Results field in the stored
//! message (read back over POP3 and IMAP), and the policy replies.
//!
//! The test client connects from 127.0.0.1, which `trusted_networks`
//! exempts by default; every receiving server here sets it empty.
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use ringmail::relay::testdns::{QType, TestDns, TestZone};
use ringmail::util::base64_encode as b64;
use ringmail_tests::{dot_stuff, ringmail_bin, Client, Reply, Server, PASSWORD};

const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn zone() -> TestZone {
    let mut z = TestZone::new();
    for d in ["a.test", "b.test"] {
        z.mx(d, &[(10, &format!("mx.{d}"))]);
        z.a(&format!("mx.{d}"), &[LOOPBACK]);
    }
    z.txt("a.test", &["v=spf1 ip4:127.0.0.1 -all"]);
    z.txt("_dmarc.a.test", &["v=DMARC1; p=reject"]);
    z.txt("q.test", &["v=spf1 -all"]);
    z.txt("_dmarc.q.test", &["v=DMARC1; p=quarantine"]);
    z.txt("none.test", &["v=spf1 -all"]);
    // pct: the organizational domain's record (pct=100) applies to
    // a.mid.pct.test, not the nearer one of mid.pct.test (pct=0).
    z.txt("_dmarc.pct.test", &["v=DMARC1; p=reject; pct=100"]);
    z.txt("_dmarc.mid.pct.test", &["v=DMARC1; p=reject; pct=0"]);
    z.txt("_dmarc.zero.test", &["v=DMARC1; p=reject; pct=0"]);
    // RFC 7208 4.6.4: an include loop and a chain of more than 10 lookups.
    z.txt("loop.test", &["v=spf1 include:loop.test -all"]);
    for i in 0..12 {
        z.txt(
            &format!("c{i}.chain.test"),
            &[&format!("v=spf1 include:c{}.chain.test -all", i + 1)],
        );
    }
    z.txt("c12.chain.test", &["v=spf1 ip4:127.0.0.1 -all"]);
    z.silent("slow.test");
    z.silent("brisbane._domainkey.slowkey.test");
    // RFC 8463 appendix A: the keys of football.example.com. (The RSA key
    // is the one that matches the appendix's private key, as corrected in
    // the RFC errata.)
    z.txt(
        "brisbane._domainkey.football.example.com",
        &["v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
    );
    z.txt(
        "test._domainkey.football.example.com",
        &["v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"],
    );
    z.txt("football.example.com", &["v=spf1 ip4:127.0.0.1 -all"]);
    z
}

/// The receiving instance, b.test, verifying every client.
fn receiver(dns: SocketAddr, extra: &str) -> Server {
    Server::options()
        .config(&format!(
            "hostname = \"mx.b.test\"\nlocal_domains = [\"b.test\"]\ndemo_accounts = []\n\
             [relay]\nnameservers = [\"{dns}\"]\ndns_timeout_secs = 1\n\
             [mail_auth]\ntrusted_networks = []\ntimeout_secs = 4\n{extra}\n"
        ))
        .accounts(&["bob@b.test"])
        .start()
}

/// Send one message; the reply to the final dot (or the first refusal).
fn send(
    addr: SocketAddr,
    helo: &str,
    auth: Option<&str>,
    from: &str,
    to: &str,
    msg: &[u8],
) -> Reply {
    let mut c = Client::connect(addr);
    c.reply().expect(220, None);
    c.cmd(&format!("EHLO {helo}")).expect(250, None);
    if let Some(user) = auth {
        c.cmd(&format!(
            "AUTH PLAIN {}",
            b64(format!("\0{user}\0{PASSWORD}").as_bytes())
        ))
        .expect(235, None);
    }
    c.cmd(&format!("MAIL FROM:<{from}>")).expect(250, None);
    c.cmd(&format!("RCPT TO:<{to}>")).expect(250, None);
    c.cmd("DATA").expect(354, None);
    c.send(&dot_stuff(msg));
    let r = c.reply();
    c.cmd("QUIT");
    r
}

/// Every message of bob's INBOX over POP3.
fn pop3_all(addr: SocketAddr) -> Vec<String> {
    let mut c = Client::connect(addr);
    assert!(c.line().starts_with("+OK"));
    let cmd = |c: &mut Client, l: &str| {
        c.send(format!("{l}\r\n").as_bytes());
        let r = c.line();
        assert!(r.starts_with("+OK"), "{l}: {r}");
        r
    };
    cmd(&mut c, "USER bob@b.test");
    cmd(&mut c, &format!("PASS {PASSWORD}"));
    let stat = cmd(&mut c, "STAT");
    let n: usize = stat.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut all = Vec::new();
    for i in 1..=n {
        cmd(&mut c, &format!("RETR {i}"));
        let mut m = String::new();
        loop {
            let l = c.line();
            if l == "." {
                break;
            }
            m.push_str(
                l.strip_prefix('.')
                    .filter(|_| l.starts_with(".."))
                    .unwrap_or(&l),
            );
            m.push_str("\r\n");
        }
        all.push(m);
    }
    c.send(b"QUIT\r\n");
    all
}

/// Messages in each of bob's mailboxes (IMAP STATUS).
fn imap_count(addr: SocketAddr, mailbox: &str) -> usize {
    let mut c = Client::connect(addr);
    assert!(c.line().starts_with("* OK"));
    c.send(format!("a LOGIN bob@b.test {PASSWORD}\r\n").as_bytes());
    loop {
        let l = c.line();
        if l.starts_with("a ") {
            assert!(l.starts_with("a OK"), "{l}");
            break;
        }
    }
    c.send(format!("b STATUS {mailbox} (MESSAGES)\r\n").as_bytes());
    let mut n = None;
    loop {
        let l = c.line();
        if let Some(rest) = l.strip_prefix("* STATUS ") {
            let v = rest.split("MESSAGES ").nth(1).unwrap();
            n = Some(
                v.trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap(),
            );
        }
        if l.starts_with("b ") {
            assert!(l.starts_with("b OK"), "{l}");
            break;
        }
    }
    c.send(b"c LOGOUT\r\n");
    n.unwrap()
}

/// The Authentication-Results fields of a stored message, unfolded.
fn results(message: &str) -> Vec<String> {
    let header = message.split("\r\n\r\n").next().unwrap();
    let unfolded = header.replace("\r\n\t", " ").replace("\r\n ", " ");
    unfolded
        .split("\r\n")
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("authentication-results:")
        })
        .map(str::to_string)
        .collect()
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn message(from: &str, subject: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "{extra_headers}From: {from}\r\nTo: bob@b.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@test>\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\n\r\n\
         Hello Bob,\r\nthis is {subject}.\r\n"
    )
    .into_bytes()
}

/// One ringmail instance DKIM-signs (ed25519) what alice submits; another
/// verifies it on its port 25: spf, dkim and dmarc pass. The same signed
/// bytes with a changed body: dkim=fail (DMARC still passes through SPF).
#[test]
fn signed_by_one_instance_verified_by_another() {
    let (dns_addr, dns) = TestDns::start(zone());
    let b = receiver(dns_addr, "");
    let mut a = Server::options()
        .config(&format!(
            "hostname = \"mx.a.test\"\nlocal_domains = [\"a.test\"]\ndemo_accounts = []\n\
             [relay]\nnameservers = [\"{dns_addr}\"]\nport = {}\ndns_timeout_secs = 1\n\
             retry_first_secs = 1\nretry_max_secs = 2\n",
            b.smtp.port()
        ))
        .accounts(&["alice@a.test"])
        .start();
    let out = Command::new(ringmail_bin())
        .args([
            "dkim",
            "generate",
            "a.test",
            "--selector",
            "ed",
            "--algorithm",
            "ed25519",
            "--data",
        ])
        .arg(&a.data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let publish = text
        .lines()
        .find_map(|l| l.strip_prefix("publish: "))
        .unwrap();
    let (name, value) = publish.split_once(" IN TXT ").unwrap();
    let (name, value) = (
        name.trim_end_matches('.').to_string(),
        value.trim_matches('"').to_string(),
    );
    dns.update(|z| {
        z.txt(&name, &[&value]);
    });
    a.terminate();
    a.restart();

    let m = message("Alice <alice@a.test>", "signed", "");
    send(
        a.submission,
        "client.test",
        Some("alice@a.test"),
        "alice@a.test",
        "bob@b.test",
        &m,
    )
    .expect(250, None);
    let stored = wait_for("the relayed message at b", || pop3_all(b.pop3).pop());
    let ar = results(&stored);
    assert_eq!(ar.len(), 1, "{stored}");
    let ar = &ar[0];
    assert!(ar.starts_with("Authentication-Results: mx.b.test;"), "{ar}");
    for want in [
        "dkim=pass header.d=a.test header.s=ed",
        "spf=pass",
        "smtp.mailfrom=alice@a.test",
        "dmarc=pass header.from=a.test policy.dmarc=reject",
    ] {
        assert!(ar.contains(want), "{want:?} missing: {ar}");
    }
    // Our field sits right under Return-Path, above our Received.
    assert!(
        stored.starts_with("Return-Path: <alice@a.test>\r\nAuthentication-Results: mx.b.test;"),
        "{stored}"
    );

    // The signed message as A sent it, body changed, straight to B.
    let signed = &stored[stored.find("DKIM-Signature:").unwrap()..];
    assert!(signed.contains("this is signed."));
    let tampered = signed.replace("this is signed.", "this is tampered.");
    send(
        b.smtp,
        "mx.a.test",
        None,
        "alice@a.test",
        "bob@b.test",
        tampered.as_bytes(),
    )
    .expect(250, None);
    let stored = wait_for("the tampered message", || {
        let all = pop3_all(b.pop3);
        (all.len() == 2).then(|| all[1].clone())
    });
    let ar = &results(&stored)[0];
    assert!(ar.contains("dkim=fail"), "{ar}");
    assert!(ar.contains("spf=pass") && ar.contains("dmarc=pass"), "{ar}");
    assert!(dns.count(&name, QType::Txt) >= 1);
}

/// p=reject and nothing aligned passes: 550 5.7.1. p=quarantine: into
/// Junk (SPECIAL-USE \Junk), not the INBOX. No DMARC record, SPF fail:
/// tagged only (the default).
#[test]
fn dmarc_reject_quarantine_and_spf_fail_without_dmarc() {
    let (dns_addr, _dns) = TestDns::start(zone());
    let b = receiver(dns_addr, "");
    // Envelope from another domain (SPF none there), From: a.test.
    send(
        b.smtp,
        "client.test",
        None,
        "x@other.test",
        "bob@b.test",
        &message("x@a.test", "spoofed", ""),
    )
    .expect(550, Some("5.7.1"));
    send(
        b.smtp,
        "client.test",
        None,
        "x@q.test",
        "bob@b.test",
        &message("x@q.test", "quarantined", ""),
    )
    .expect(250, None);
    assert_eq!(
        wait_for("junk", || (imap_count(b.imap, "Junk") == 1).then_some(1)),
        1
    );
    assert_eq!(imap_count(b.imap, "INBOX"), 0);
    send(
        b.smtp,
        "client.test",
        None,
        "x@none.test",
        "bob@b.test",
        &message("x@none.test", "spffail", ""),
    )
    .expect(250, None);
    let stored = wait_for("inbox", || pop3_all(b.pop3).pop());
    let ar = &results(&stored)[0];
    assert!(ar.contains("spf=fail") && ar.contains("dmarc=none"), "{ar}");
    assert_eq!(imap_count(b.imap, "Junk"), 1);
}

/// Forged Authentication-Results for our authserv-id are removed, others
/// kept; 1,000 DKIM signatures cost at most `dkim_signatures_max` key
/// lookups and are reported; SPF include loops and chains of more than 10
/// lookups are permerror.
#[test]
fn forged_results_removed_and_bad_input_bounded() {
    let (dns_addr, dns) = TestDns::start(zone());
    let b = receiver(dns_addr, "");
    let forged = "Authentication-Results: mx.b.test; dkim=pass header.d=a.test\r\n\
                  Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example\r\n\
                  Authentication-Results: (sneaky) MX.B.TEST.;\r\n\tdmarc=pass\r\n";
    send(
        b.smtp,
        "client.test",
        None,
        "x@none.test",
        "bob@b.test",
        &message("x@none.test", "forged", forged),
    )
    .expect(250, None);
    let stored = wait_for("forged", || pop3_all(b.pop3).pop());
    let ar = results(&stored);
    assert_eq!(ar.len(), 2, "{stored}");
    assert!(
        ar[0].starts_with("Authentication-Results: mx.b.test;") && ar[0].contains("spf=fail"),
        "{ar:?}"
    );
    assert_eq!(
        ar[1],
        "Authentication-Results: other.example; spf=pass smtp.mailfrom=x@other.example"
    );

    let mut many = String::new();
    for i in 0..1000 {
        many.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=sig{i}.test; s=s; h=from; bh=AAAA; b=AAAA\r\n"
        ));
    }
    many.push_str("DKIM-Signature: garbage without tags\r\n");
    send(
        b.smtp,
        "client.test",
        None,
        "x@loop.test",
        "bob@b.test",
        &message("x@loop.test", "many", &many),
    )
    .expect(250, None);
    let stored = wait_for("many", || {
        let all = pop3_all(b.pop3);
        (all.len() == 2).then(|| all[1].clone())
    });
    let ar = &results(&stored)[0];
    assert!(ar.contains("more signatures not checked"), "{ar}");
    assert!(ar.contains("spf=permerror"), "{ar}");
    let key_lookups: u64 = (0..1000)
        .map(|i| dns.count(&format!("s._domainkey.sig{i}.test"), QType::Txt))
        .sum();
    assert!(key_lookups <= 10, "{key_lookups} key lookups");
    assert!(dns.count("loop.test", QType::Txt) <= 12);

    send(
        b.smtp,
        "client.test",
        None,
        "x@c0.chain.test",
        "bob@b.test",
        &message("x@c0.chain.test", "chain", ""),
    )
    .expect(250, None);
    let stored = wait_for("chain", || {
        let all = pop3_all(b.pop3);
        (all.len() == 3).then(|| all[2].clone())
    });
    let ar = &results(&stored)[0];
    assert!(ar.contains("spf=permerror"), "{ar}");
    assert_eq!(
        dns.count("c12.chain.test", QType::Txt),
        0,
        "lookups past the limit"
    );

    // Malformed signatures alone: a clear result, the message accepted.
    let bad = "DKIM-Signature: v=1; a=rsa-sha999; d=; s=\r\n\t=;=;;\r\n\
               DKIM-Signature: \x7f\r\n";
    send(
        b.smtp,
        "client.test",
        None,
        "x@none.test",
        "bob@b.test",
        &message("x@none.test", "malformed", bad),
    )
    .expect(250, None);
    let stored = wait_for("malformed", || {
        let all = pop3_all(b.pop3);
        (all.len() == 4).then(|| all[3].clone())
    });
    let ar = &results(&stored)[0];
    assert!(ar.contains("dkim=") && !ar.contains("dkim=pass"), "{ar}");
}

/// A DNS timeout: SPF temperror defers with 451 4.7.24 by default and is
/// accepted with temperror recorded under `spf_temperror = "accept"`; a DKIM
/// key that times out is recorded, never deferred.
#[test]
fn dns_timeouts() {
    let (dns_addr, _dns) = TestDns::start(zone());
    let b = receiver(dns_addr, "");
    let started = Instant::now();
    send(
        b.smtp,
        "client.test",
        None,
        "x@slow.test",
        "bob@b.test",
        &message("x@slow.test", "slow", ""),
    )
    .expect(451, Some("4.7.24"));
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(b);
    let b = receiver(dns_addr, "spf_temperror = \"accept\"");
    send(
        b.smtp,
        "client.test",
        None,
        "x@slow.test",
        "bob@b.test",
        &message("x@slow.test", "slow", ""),
    )
    .expect(250, None);
    let stored = wait_for("slow", || pop3_all(b.pop3).pop());
    let ar = &results(&stored)[0];
    assert!(ar.contains("spf=temperror"), "{ar}");
    // The RFC 8463 message re-signed for a domain whose key never answers.
    let slow_key = RFC8463_A3.replace(
        "d=football.example.com; i=@football.example.com",
        "d=slowkey.test",
    );
    send(
        b.smtp,
        "client.test",
        None,
        "joe@football.example.com",
        "bob@b.test",
        slow_key.as_bytes(),
    )
    .expect(250, None);
    let stored = wait_for("slow key", || {
        let all = pop3_all(b.pop3);
        (all.len() == 2).then(|| all[1].clone())
    });
    let ar = &results(&stored)[0];
    assert!(ar.contains("dkim=temperror"), "{ar}");
}

/// RFC 8463 appendix A.3: the example message signed with ed25519-sha256
/// and rsa-sha256 by football.example.com, whose keys (appendix A.2) the
/// test zone publishes. Both signatures verify.
const RFC8463_A3: &str = "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r
 d=football.example.com; i=@football.example.com;\r
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r
 subject : date : message-id : from : subject : date;\r
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r
 d=football.example.com; i=@football.example.com;\r
 q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r
 date : message-id : from : subject : date;\r
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r
 b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r
 DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r
 dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r
From: Joe SixPack <joe@football.example.com>\r
To: Suzie Q <suzie@shopping.example.net>\r
Subject: Is dinner ready?\r
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r
Message-ID: <20030712040037.46341.5F8J@football.example.com>\r
\r
Hi.\r
\r
We lost the game.  Are you hungry yet?\r
\r
Joe.\r
";

#[test]
fn rfc8463_example_verifies() {
    let (dns_addr, _dns) = TestDns::start(zone());
    let b = receiver(dns_addr, "");
    send(
        b.smtp,
        "mail.football.example.com",
        None,
        "joe@football.example.com",
        "bob@b.test",
        RFC8463_A3.as_bytes(),
    )
    .expect(250, None);
    let stored = wait_for("the RFC 8463 message", || pop3_all(b.pop3).pop());
    let ar = &results(&stored)[0];
    assert!(
        ar.contains("dkim=pass header.i=@football.example.com header.s=brisbane"),
        "{ar}"
    );
    assert!(
        ar.contains("dkim=pass header.i=@football.example.com header.s=test"),
        "{ar}"
    );
    assert!(ar.contains("spf=pass"), "{ar}");
    assert!(ar.contains("dmarc=none"), "{ar}");
    assert!(stored.ends_with(&RFC8463_A3[RFC8463_A3.find("From: Joe").unwrap()..]));
}

/// `ringmail dkim generate` into `data`; the TXT record to publish.
fn dkim_generate(data: &std::path::Path, selector: &str, algorithm: &str) -> (String, String) {
    let out = Command::new(ringmail_bin())
        .args([
            "dkim",
            "generate",
            "a.test",
            "--selector",
            selector,
            "--algorithm",
            algorithm,
            "--data",
        ])
        .arg(data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let publish = text
        .lines()
        .find_map(|l| l.strip_prefix("publish: "))
        .unwrap();
    let (name, value) = publish.split_once(" IN TXT ").unwrap();
    (
        name.trim_end_matches('.').to_string(),
        value.trim_matches('"').to_string(),
    )
}

/// Inbound throughput with full verification (SPF + DKIM ed25519 and
/// rsa-2048 + DMARC + ARC, warm caches, the test DNS on loopback) against
/// the same server configuration without verification, both running, runs
/// alternating, the loadgen sending one signed 4 KiB message over and over.
/// Prints the figures (docs/BENCHMARKS.md); asserts only that every message
/// was accepted and that warm verification sends almost no DNS queries.
/// `MAIL_AUTH_BENCH_SECS` (default 2) sets each run's length.
#[test]
fn bench_verification_cost() {
    let secs: f64 = std::env::var("MAIL_AUTH_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let (dns_addr, dns) = TestDns::start(zone());
    let keys = tempfile::tempdir().unwrap();
    for (sel, alg) in [("ed", "ed25519"), ("rs", "rsa")] {
        let (name, value) = dkim_generate(keys.path(), sel, alg);
        dns.update(|z| {
            z.txt(&name, &[&value]);
        });
    }
    let signer = ringmail::dkim::Keys::load(keys.path()).unwrap();
    let mut body = message("Alice <alice@a.test>", "bench", "");
    while body.len() < 4096 {
        body.extend_from_slice(
            b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n",
        );
    }
    let mut signed = signer.sign("a.test", &body).unwrap();
    signed.extend_from_slice(&body);
    let file = keys.path().join("signed.eml");
    std::fs::write(&file, &signed).unwrap();
    let accounts: Vec<String> = (0..16).map(|i| format!("u{i}@b.test")).collect();
    let server = |verify: bool| {
        Server::options()
            .config(&format!(
                "hostname = \"mx.b.test\"\nlocal_domains = [\"b.test\"]\ndemo_accounts = []\n\
                 [relay]\nnameservers = [\"{dns_addr}\"]\n\
                 [mail_auth]\nverify = {verify}\ntrusted_networks = []\n"
            ))
            .accounts(&accounts)
            .start()
    };
    let (plain, verified) = (server(false), server(true));
    // CPU seconds the server's DNS thread (where verification runs) used.
    let dns_thread_cpu = |s: &Server| -> f64 {
        let pid = s.pid().unwrap();
        let mut total = 0.0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() != "ringmail-dns" {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<f64> = after.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
            // utime and stime: fields 14 and 15 of stat, in clock ticks.
            total += (f[11] + f[12]) / 100.0;
        }
        total
    };
    let run = |s: &Server| -> (f64, f64, f64) {
        let child = Command::new(ringmail_tests::loadgen_bin())
            .args([
                "smtp",
                "--target",
                &s.smtp.to_string(),
                "--connections",
                "32",
            ])
            .args(["--duration", &secs.to_string(), "--warmup", "0.5"])
            .args(["--accounts", "16", "--account-pattern", "u{n}@b.test"])
            .args([
                "--from",
                "alice@a.test",
                "--helo",
                "mx.a.test",
                "--message-file",
            ])
            .arg(&file)
            .args([
                "--json",
                "--no-progress",
                "--timeout",
                "20",
                "--max-time",
                "120",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = ringmail_tests::wait_output(child, Duration::from_secs(180));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["errors_total"], 0, "{r}");
        let p50 = r["ops"]["message"]["p50_us"].as_f64().unwrap_or(0.0);
        (
            r["messages_per_s"].as_f64().unwrap(),
            p50,
            r["messages_ok"].as_f64().unwrap(),
        )
    };
    // Warm the verifier's caches, and check what it stores.
    run(&verified);
    let stored = pop3_user(verified.pop3, "u0@b.test");
    let ar = &results(&stored)[0];
    assert!(
        ar.matches("dkim=pass").count() == 2
            && ar.contains("spf=pass")
            && ar.contains("dmarc=pass"),
        "{ar}"
    );
    let mut rows = Vec::new();
    for round in 0..2 {
        let q0 = dns.total();
        let cpu0 = dns_thread_cpu(&verified);
        let v = run(&verified);
        let cpu = dns_thread_cpu(&verified) - cpu0;
        let queries = dns.total() - q0;
        let p = run(&plain);
        rows.push((round, p, v, queries, cpu));
    }
    for (round, p, v, q, cpu) in &rows {
        println!(
            "round {round}: without verification {:.0} msg/s (p50 {:.0} us), with {:.0} msg/s (p50 {:.0} us): ratio {:.3}; \
             DNS queries during the verified run: {q}; DNS thread CPU {:.0} us per verified message ({:.0}% of one core)",
            p.0, p.1, v.0, v.1, v.0 / p.0,
            cpu * 1e6 / v.2.max(1.0),
            cpu * 100.0 / secs
        );
        assert!(*q < 50, "warm verification sent {q} queries");
    }
}

/// The first message in `user`'s maildrop.
fn pop3_user(addr: SocketAddr, user: &str) -> String {
    let mut c = Client::connect(addr);
    assert!(c.line().starts_with("+OK"));
    for l in [
        format!("USER {user}"),
        format!("PASS {PASSWORD}"),
        "RETR 1".into(),
    ] {
        c.send(format!("{l}\r\n").as_bytes());
        let r = c.line();
        assert!(r.starts_with("+OK"), "{l}: {r}");
    }
    let mut m = String::new();
    loop {
        let l = c.line();
        if l == "." {
            break;
        }
        m.push_str(&l);
        m.push_str("\r\n");
    }
    m
}

/// RFC 8617: a message ARC-sealed by a forwarder (ed25519 key published in
/// the test zone, sealed with mail-auth's sealer) verifies as arc=pass; the
/// same message with its seal's instance changed is arc=fail.
#[test]
fn arc_sealed_message_verifies() {
    use mail_auth::arc::ArcSealer;
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};

    let der = Ed25519Key::generate_pkcs8().unwrap();
    let key = Ed25519Key::from_pkcs8_der(&der).unwrap();
    let mut zone = zone();
    zone.txt(
        "arc._domainkey.forwarder.test",
        &[&format!("v=DKIM1; k=ed25519; p={}", b64(&key.public_key()))],
    );
    let (dns_addr, _dns) = TestDns::start(zone);
    let b = receiver(dns_addr, "");
    let original = message("x@none.test", "forwarded", "");
    let parsed = AuthenticatedMessage::parse(&original).unwrap();
    let theirs = AuthenticationResults::new("forwarder.test");
    let set = ArcSealer::from_key(key)
        .domain("forwarder.test")
        .selector("arc")
        .headers(["From", "To", "Subject"])
        .seal(&parsed, &theirs, &ArcOutput::default())
        .unwrap();
    let sealed = format!(
        "{}{}{}",
        set.to_header(),
        theirs.to_header(),
        String::from_utf8(original.clone()).unwrap()
    );
    send(
        b.smtp,
        "client.test",
        None,
        "x@other.test",
        "bob@b.test",
        sealed.as_bytes(),
    )
    .expect(250, None);
    let stored = wait_for("sealed", || pop3_all(b.pop3).pop());
    let ar = &results(&stored)[0];
    assert!(ar.contains("arc=pass"), "{ar}");
    let broken = sealed
        .replace("Say hello", "x")
        .replace("this is forwarded.", "this is changed.");
    send(
        b.smtp,
        "client.test",
        None,
        "x@other.test",
        "bob@b.test",
        broken.as_bytes(),
    )
    .expect(250, None);
    let stored = wait_for("broken", || {
        let all = pop3_all(b.pop3);
        (all.len() == 2).then(|| all[1].clone())
    });
    let ar = &results(&stored)[0];
    assert!(!ar.contains("arc=pass") && ar.contains("arc="), "{ar}");
}

/// Ways around the From: domain's DMARC policy are closed: a header padded
/// past 1 MiB (DMARC is evaluated from its From: fields, without DKIM), a
/// From: with addresses of two domains (refused, RFC 7489 section 6.6.1),
/// and an envelope domain in capitals with a final dot or not (aligned
/// after lowercasing).
#[test]
fn dmarc_cannot_be_escaped() {
    let (dns_addr, _dns) = TestDns::start(zone());
    let b = receiver(dns_addr, "");
    let mut padding = String::new();
    while padding.len() <= 1024 * 1024 {
        padding.push_str("X-Filler: 0123456789012345678901234567890123456789012345678\r\n");
    }
    // A spoof of p=reject a.test: no aligned SPF, DKIM never checked.
    send(
        b.smtp,
        "client.test",
        None,
        "x@other.test",
        "bob@b.test",
        &message("x@a.test", "padded", &padding),
    )
    .expect(550, Some("5.7.1"));
    // The same size from a.test's own address: SPF aligns, DMARC passes.
    send(
        b.smtp,
        "client.test",
        None,
        "x@a.test",
        "bob@b.test",
        &message("x@a.test", "padded-honest", &padding),
    )
    .expect(250, None);
    let stored = wait_for("padded", || pop3_all(b.pop3).pop());
    let ar = &results(&stored)[0];
    assert!(
        ar.contains("dmarc=pass") && ar.contains("dkim=permerror (header too large"),
        "{ar}"
    );

    // Two From: domains, the first one with no policy at all.
    let r = send(
        b.smtp,
        "client.test",
        None,
        "x@none.test",
        "bob@b.test",
        &message("x@none.test, y@a.test", "two-domains", ""),
    );
    r.expect(550, Some("5.7.1"));
    assert!(r.text().contains("more than one domain"), "{r:?}");
    // Two From: fields count as well.
    send(
        b.smtp,
        "client.test",
        None,
        "x@none.test",
        "bob@b.test",
        &message("x@none.test", "two-fields", "From: y@A.test\r\n"),
    )
    .expect(550, Some("5.7.1"));
    // Several addresses of one domain, in any case: no refusal.
    send(
        b.smtp,
        "Client.TEST.",
        None,
        "x@A.Test",
        "bob@b.test",
        &message("x@a.test, y@A.TEST", "one-domain", ""),
    )
    .expect(250, None);
    let stored = wait_for("one-domain", || {
        let all = pop3_all(b.pop3);
        (all.len() == 2).then(|| all[1].clone())
    });
    let ar = &results(&stored)[0];
    assert!(
        ar.contains("spf=pass")
            && ar.contains("dmarc=pass")
            && ar.contains("smtp.mailfrom=x@a.test"),
        "{ar}"
    );
}

/// Authentication-Results claiming our authserv-id are removed from every
/// client outside the trust boundary, with verification off too, and in
/// their quoted form with quoted-pairs (RFC 5322 section 3.2.4).
#[test]
fn forged_results_removed_without_verification() {
    let (dns_addr, _dns) = TestDns::start(zone());
    let forged = "Authentication-Results: mx.b.test; dmarc=pass header.from=a.test\r\n\
                  Authentication-Results: \"mx\\.b\\.TEST\"; dkim=pass header.d=a.test\r\n\
                  Authentication-Results: other.example; none\r\n";
    for extra in ["verify = false", ""] {
        let b = receiver(dns_addr, extra);
        send(
            b.smtp,
            "client.test",
            None,
            "x@a.test",
            "bob@b.test",
            &message("x@a.test", "forged", forged),
        )
        .expect(250, None);
        let stored = wait_for("forged", || pop3_all(b.pop3).pop());
        let ar = results(&stored);
        assert!(!stored.contains("mx\\.b"), "{stored}");
        assert!(!stored.contains("dkim=pass header.d=a.test"), "{stored}");
        assert_eq!(
            ar.last().unwrap(),
            "Authentication-Results: other.example; none",
            "{extra}: {ar:?}"
        );
        assert_eq!(ar.len(), if extra.is_empty() { 2 } else { 1 }, "{ar:?}");
    }
}

/// RFC 7489 section 6.6.4: `pct` is read from the record the policy came
/// from. pct=0 lowers p=reject to quarantine (Junk); for a subdomain
/// without a record of its own, the organizational domain's record applies
/// (pct=100: refused), not that of a domain in between.
#[test]
fn pct_of_the_selected_record() {
    let (dns_addr, _dns) = TestDns::start(zone());
    let b = receiver(dns_addr, "");
    send(
        b.smtp,
        "client.test",
        None,
        "x@other.test",
        "bob@b.test",
        &message("x@zero.test", "pct0", ""),
    )
    .expect(250, None);
    assert_eq!(
        wait_for("junk", || (imap_count(b.imap, "Junk") == 1).then_some(1)),
        1
    );
    send(
        b.smtp,
        "client.test",
        None,
        "x@other.test",
        "bob@b.test",
        &message("x@a.mid.pct.test", "pct-org", ""),
    )
    .expect(550, Some("5.7.1"));
}
