//! End-to-end tests: run the loadgen binary against tiny in-test SMTP and
//! POP3 servers on 127.0.0.1:0 and check the counts it reports.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Delivered messages per recipient address (as the POP3 side will serve them).
#[derive(Default)]
struct Store {
    boxes: Mutex<BTreeMap<String, Vec<Vec<u8>>>>,
    /// Flip one byte of every message delivered to this address.
    corrupt_for: Option<String>,
    /// Advertise CHUNKING.
    chunking: bool,
}

impl Store {
    fn deliver(&self, rcpts: &[String], msg: &[u8]) {
        let mut b = self.boxes.lock().unwrap();
        for r in rcpts {
            let mut m = b"Return-Path: <x@y>\r\nReceived: from loadgen by test-sink;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n".to_vec();
            m.extend_from_slice(msg);
            if self.corrupt_for.as_deref() == Some(r.as_str()) {
                let l = m.len();
                m[l - 10] ^= 0x20;
            }
            b.entry(r.clone()).or_default().push(m);
        }
    }
}

fn serve(store: Arc<Store>, handler: fn(TcpStream, &Store) -> std::io::Result<()>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(10_000) {
            let Ok(s) = s else { break };
            let store = store.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(20))).ok();
                s.set_nodelay(true).ok();
                let _ = handler(s, &store);
            });
        }
    });
    addr
}

fn addr_in(line: &str) -> String {
    let s = line.find('<').map(|i| i + 1).unwrap_or(0);
    let e = line.find('>').unwrap_or(line.len());
    line[s..e].to_string()
}

fn smtp_session(s: TcpStream, store: &Store) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    w.write_all(b"220 test-sink ESMTP\r\n")?;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    for _ in 0..1_000_000 {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let up = line.to_ascii_uppercase();
        if up.starts_with("EHLO") {
            let chunk = if store.chunking {
                "250-CHUNKING\r\n"
            } else {
                ""
            };
            write!(
                w,
                "250-test-sink\r\n250-PIPELINING\r\n{chunk}250 SIZE 100000000\r\n"
            )?;
        } else if up.starts_with("MAIL FROM:") {
            rcpts.clear();
            w.write_all(b"250 2.1.0 ok\r\n")?;
        } else if up.starts_with("RCPT TO:") {
            let a = addr_in(&line);
            if a.starts_with("7u@") {
                w.write_all(b"452 4.2.2 mailbox full\r\n")?;
            } else {
                rcpts.push(a);
                w.write_all(b"250 2.1.5 ok\r\n")?;
            }
        } else if up.starts_with("DATA") {
            if rcpts.is_empty() {
                w.write_all(b"554 5.5.1 no valid recipients\r\n")?;
                continue;
            }
            w.write_all(b"354 go ahead\r\n")?;
            let mut msg = Vec::new();
            let mut l = Vec::new();
            loop {
                l.clear();
                if r.read_until(b'\n', &mut l)? == 0 {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                let body = if l.first() == Some(&b'.') {
                    &l[1..]
                } else {
                    &l[..]
                };
                msg.extend_from_slice(body);
            }
            store.deliver(&rcpts, &msg);
            w.write_all(b"250 2.0.0 queued\r\n")?;
        } else if up.starts_with("BDAT") {
            let n: usize = up
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            let mut msg = vec![0; n];
            r.read_exact(&mut msg)?;
            if rcpts.is_empty() {
                w.write_all(b"554 5.5.1 no valid recipients\r\n")?;
            } else {
                store.deliver(&rcpts, &msg);
                w.write_all(b"250 2.0.0 queued\r\n")?;
            }
        } else if up.starts_with("RSET") {
            rcpts.clear();
            w.write_all(b"250 ok\r\n")?;
        } else if up.starts_with("QUIT") {
            w.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"500 unknown\r\n")?;
        }
    }
    Ok(())
}

fn pop3_session(s: TcpStream, store: &Store) -> std::io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    w.write_all(b"+OK test pop3\r\n")?;
    let mut user = String::new();
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    let mut line = String::new();
    for _ in 0..1_000_000 {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let t = line.trim_end();
        let (cmd, arg) = t.split_once(' ').unwrap_or((t, ""));
        match cmd.to_ascii_uppercase().as_str() {
            "USER" => {
                user = arg.to_string();
                w.write_all(b"+OK\r\n")?;
            }
            "PASS" => {
                if arg != "secret" {
                    w.write_all(b"-ERR auth\r\n")?;
                    continue;
                }
                msgs = store
                    .boxes
                    .lock()
                    .unwrap()
                    .get(&user)
                    .cloned()
                    .unwrap_or_default();
                w.write_all(b"+OK logged in\r\n")?;
            }
            "STAT" => {
                let total: usize = msgs.iter().map(|m| m.len()).sum();
                write!(w, "+OK {} {}\r\n", msgs.len(), total)?;
            }
            "LIST" | "UIDL" => {
                let mut out = b"+OK\r\n".to_vec();
                for (i, m) in msgs.iter().enumerate() {
                    if cmd.eq_ignore_ascii_case("LIST") {
                        write!(out, "{} {}\r\n", i + 1, m.len())?;
                    } else {
                        write!(out, "{} uid{}\r\n", i + 1, i + 1)?;
                    }
                }
                out.extend_from_slice(b".\r\n");
                w.write_all(&out)?;
            }
            "RETR" => {
                let n: usize = arg.parse().unwrap_or(0);
                let Some(m) = n.checked_sub(1).and_then(|i| msgs.get(i)) else {
                    w.write_all(b"-ERR no such message\r\n")?;
                    continue;
                };
                let mut out = b"+OK\r\n".to_vec();
                for l in m.split_inclusive(|&b| b == b'\n') {
                    if l.first() == Some(&b'.') {
                        out.push(b'.');
                    }
                    out.extend_from_slice(l);
                }
                out.extend_from_slice(b".\r\n");
                w.write_all(&out)?;
            }
            "DELE" => w.write_all(b"+OK\r\n")?,
            "QUIT" => {
                w.write_all(b"+OK bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"-ERR unknown\r\n")?,
        }
    }
    Ok(())
}

fn loadgen(args: &[&str]) -> (serde_json::Value, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--json", "--timeout", "10", "--max-time", "60"])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code().unwrap_or(-1))
}

const ACCOUNTS: [&str; 4] = ["--accounts", "10", "--account-pattern", "{n}u@example.test"];

#[test]
fn smtp_pipelined_counts_and_rejections() {
    let store = Arc::new(Store::default());
    let addr = serve(store.clone(), smtp_session).to_string();
    let mut args = vec![
        "smtp",
        "--target",
        &addr,
        "--connections",
        "4",
        "--messages",
        "40",
        "--size",
        "3000",
    ];
    args.extend(ACCOUNTS);
    let (v, code) = loadgen(&args);
    assert_eq!(code, 0);
    assert_eq!(v["mode"], "smtp");
    // round-robin over 10 accounts: messages 7, 17, 27, 37 go to 7u@ which rejects
    assert_eq!(v["messages_ok"], 36, "{v}");
    assert_eq!(v["messages_failed"], 4);
    assert_eq!(v["errors"]["452"], 4);
    assert_eq!(v["bytes"], 36 * 3000);
    assert_eq!(v["ops"]["message"]["count"], 36);
    assert_eq!(v["ops"]["connect"]["count"], 4);
    assert!(
        v["ops"].get("envelope").is_some(),
        "pipelined group recorded as envelope"
    );
    assert!(v["ops"].get("mail").is_none());
    let b = store.boxes.lock().unwrap();
    assert_eq!(b.values().map(|v| v.len()).sum::<usize>(), 36);
    assert_eq!(b["3u@example.test"].len(), 4);
}

#[test]
fn smtp_unpipelined_bdat_with_reuse() {
    let store = Arc::new(Store {
        chunking: true,
        ..Default::default()
    });
    let addr = serve(store.clone(), smtp_session).to_string();
    let mut args = vec![
        "smtp",
        "--target",
        &addr,
        "--connections",
        "3",
        "--messages",
        "30",
        "--size",
        "mix",
        "--no-pipelining",
        "--bdat",
        "--reuse",
        "4",
        "--recipients-per-message",
        "2",
    ];
    args.extend(ACCOUNTS);
    let (v, code) = loadgen(&args);
    assert_eq!(code, 0);
    // every message has two recipients n*2, n*2+1 (mod 10); 7u@ is rejected in
    // 1 of 5 messages but the message still goes to the other recipient
    assert_eq!(v["messages_ok"], 30, "{v}");
    assert_eq!(v["errors"]["452"], 6);
    assert_eq!(v["counters"]["recipients_ok"], 54);
    for op in ["mail", "rcpt", "bdat", "quit"] {
        assert!(v["ops"].get(op).is_some(), "op {op} missing: {v}");
    }
    assert_eq!(v["ops"]["rcpt"]["count"], 60);
    // at most 4 messages per connection: at least 30/4 connections
    assert!(v["ops"]["connect"]["count"].as_u64().unwrap() >= 8);
}

#[test]
fn smtp_verify_over_pop3_and_pop3_load() {
    let store = Arc::new(Store::default());
    let smtp = serve(store.clone(), smtp_session).to_string();
    let pop3 = serve(store.clone(), pop3_session).to_string();
    let mut args = vec![
        "smtp",
        "--target",
        &smtp,
        "--connections",
        "4",
        "--messages",
        "50",
        "--size",
        "8k",
        "--verify",
        "--verify-pop3",
        &pop3,
        "--password",
        "secret",
        "--run-id",
        "itest1",
    ];
    args.extend(ACCOUNTS);
    let (v, code) = loadgen(&args);
    assert_eq!(code, 0, "{v}");
    let ver = &v["verify"];
    assert_eq!(ver["ok"], true, "{v}");
    assert_eq!(ver["expected"], 45);
    assert_eq!(ver["found_ok"], 45);
    assert_eq!(ver["missing"], 0);
    assert_eq!(v["run_id"], "itest1");

    // POP3 load over the same mailboxes: one session per account
    let mut args = vec![
        "pop3",
        "--target",
        &pop3,
        "--connections",
        "3",
        "--password",
        "secret",
    ];
    args.extend(ACCOUNTS);
    let (p, code) = loadgen(&args);
    assert_eq!(code, 0);
    assert_eq!(p["sessions_ok"], 10, "{p}"); // 7u@ has an empty mailbox but logs in fine
    assert_eq!(p["sessions_failed"], 0);
    assert_eq!(p["messages_ok"], 45);
    assert_eq!(p["ops"]["retr"]["count"], 45);
    assert_eq!(p["ops"]["session"]["count"], 10);

    // Open loop: 10 sessions at 20 per second take about half a second
    // (the last is due at 0.45 s), each with its schedule lag.
    let mut args = vec![
        "pop3",
        "--target",
        &pop3,
        "--connections",
        "3",
        "--rate",
        "20",
        "--sessions",
        "10",
        "--password",
        "secret",
    ];
    args.extend(ACCOUNTS);
    let (p, code) = loadgen(&args);
    assert_eq!(code, 0, "{p}");
    assert_eq!(p["open_loop"], true, "{p}");
    assert_eq!(p["target_rate"], 20.0, "{p}");
    assert_eq!(p["sessions_ok"], 10, "{p}");
    assert_eq!(p["ops"]["schedule_lag"]["count"], 10, "{p}");
    assert_eq!(p["ops"]["session"]["count"], 10, "{p}");
    assert!(p["duration_s"].as_f64().unwrap() >= 0.44, "{p}");
    let refused = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["pop3", "--target", &pop3, "--rate", "0", "--password", "x"])
        .args(ACCOUNTS)
        .output()
        .expect("run loadgen");
    assert_eq!(refused.status.code(), Some(2), "a rate of 0 is refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--rate"));
}

#[test]
fn smtp_verify_detects_corruption() {
    let store = Arc::new(Store {
        corrupt_for: Some("2u@example.test".into()),
        ..Default::default()
    });
    let smtp = serve(store.clone(), smtp_session).to_string();
    let pop3 = serve(store.clone(), pop3_session).to_string();
    let mut args = vec![
        "smtp",
        "--target",
        &smtp,
        "--connections",
        "2",
        "--messages",
        "20",
        "--verify",
        "--verify-pop3",
        &pop3,
        "--password",
        "secret",
    ];
    args.extend(ACCOUNTS);
    let (v, code) = loadgen(&args);
    assert_eq!(code, 1, "verification failure sets the exit code");
    assert_eq!(v["verify"]["ok"], false);
    assert_eq!(v["verify"]["corrupted"], 2);
    assert_eq!(v["verify"]["found_ok"], 16);
}

#[test]
fn mixed_smtp_and_pop3() {
    let store = Arc::new(Store::default());
    let smtp = serve(store.clone(), smtp_session).to_string();
    let pop3 = serve(store.clone(), pop3_session).to_string();
    let mut args = vec![
        "mixed",
        "--smtp-target",
        &smtp,
        "--pop3-target",
        &pop3,
        "--smtp-connections",
        "2",
        "--pop3-connections",
        "1",
        "--duration",
        "0.5",
        "--rate",
        "200",
        "--password",
        "secret",
        "--pop3-max-retr",
        "2",
    ];
    args.extend(ACCOUNTS);
    let (v, code) = loadgen(&args);
    assert_eq!(code, 0);
    assert_eq!(v["mode"], "mixed");
    let s = &v["parts"]["smtp"];
    let p = &v["parts"]["pop3"];
    assert!(v["parts"].get("imap").is_none());
    // open loop at 200/s for 0.5 s: ~100 messages, 1 in 10 rejected
    let ok = s["messages_ok"].as_u64().unwrap();
    assert!((70..=100).contains(&ok), "{s}");
    assert_eq!(s["open_loop"], true);
    assert!(s["ops"].get("schedule_lag").is_some());
    assert!(p["sessions_ok"].as_u64().unwrap() > 0, "{p}");
    assert!(p["ops"].get("login").is_some());
}
