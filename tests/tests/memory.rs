//! Memory under hostile load: message data in flight is spooled to disk
//! beyond a small threshold, and budgeted per shard and per client address.
//! Unfinished DATA from many connections and addresses must not grow the
//! server's resident memory with the data, legitimate clients keep being
//! served, and a sender over its address budget gets 451 4.3.1.
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

use ringmail_tests::*;

const ALICE: (&str, &str) = ("alice@example.test", "alice-secret");

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else { panic!("IPv4 listener expected") };
    // SAFETY: plain socket calls on a descriptor we own; addresses are
    // valid sockaddr_in structures.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as libc::sa_family_t;
        local.sin_addr.s_addr = u32::from(from).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &local as *const _ as *const libc::sockaddr, len), 0, "bind {from}");
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as libc::sa_family_t;
        remote.sin_port = to.port().to_be();
        remote.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        assert_eq!(libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len), 0, "connect from {from}");
        TcpStream::from_raw_fd(fd)
    }
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A session that got as far as 354 on `conn`.
fn open_data(conn: TcpStream) -> Client {
    let mut c = Client::from_stream(conn);
    c.reply().expect(220, None);
    c.cmd("EHLO attacker.test").expect(250, None);
    c.cmd("MAIL FROM:<x@attacker.test>").expect(250, None);
    c.cmd("RCPT TO:<alice@example.test>").expect(250, None);
    c.cmd("DATA").expect(354, None);
    c
}

const CHUNK: usize = 1 << 20;

fn send_body(c: &mut Client, bytes: usize) {
    let line = [b'x'; 78];
    let mut chunk = Vec::with_capacity(CHUNK);
    while chunk.len() + 80 <= CHUNK {
        chunk.extend_from_slice(&line);
        chunk.extend_from_slice(b"\r\n");
    }
    let mut sent = 0;
    while sent < bytes {
        c.stream().write_all(&chunk).expect("body write");
        sent += chunk.len();
    }
}

#[test]
fn unfinished_data_costs_disk_not_memory_and_is_budgeted_per_address() {
    // 8 MiB of spool per unauthenticated address and shard.
    let config = "local_domains = [\"example.test\"]\n[[demo_accounts]]\naddress = \"alice@example.test\"\npassword = \"alice-secret\"\n[memory]\nspool_per_address_max = 8388608\n";
    let server = Server::options().config(config).start();
    let pid = server.pid().expect("pid");
    std::thread::sleep(Duration::from_millis(300));
    let before = rss(pid);

    // 48 connections from 6 addresses, each 3 MiB into DATA and not finished.
    let per_conn = 3 * CHUNK;
    let mut open = Vec::new();
    for i in 0..48u8 {
        let from = Ipv4Addr::new(127, 0, 0, 10 + i % 6);
        let mut c = open_data(connect_from(from, server.smtp));
        c.set_read_timeout(Duration::from_secs(30));
        send_body(&mut c, per_conn);
        open.push(c);
    }
    // The server has read what was sent (the writes completed); give it a
    // moment to hand the last pieces to the spool.
    std::thread::sleep(Duration::from_millis(500));
    let during = rss(pid);
    let held = 48 * per_conn as u64;
    let grew = during.saturating_sub(before);
    eprintln!("RSS before {before}, with {held} bytes of unfinished DATA {during} (+{grew})");
    // In RAM each would be 3 MiB: 144 MiB in all. Spooled, each session
    // holds at most the threshold (128 KiB) plus its read buffer.
    assert!(grew < 40 << 20, "resident memory grew by {grew} bytes for {held} bytes of unfinished DATA");

    // A legitimate client is served meanwhile, with a message above the threshold.
    let mut message = b"From: a@b.test\r\nSubject: legit\r\n\r\n".to_vec();
    while message.len() < 600_000 {
        message.extend_from_slice(b"legitimate line of text, long enough to matter ......................\r\n");
    }
    smtp_send(server.smtp, "a@b.test", &[ALICE.0], &message);

    // Finish every unfinished message: the addresses were over their budget
    // (8 connections x 3 MiB per address, 8 MiB per shard), so some get 451.
    let (mut ok, mut busy) = (0, 0);
    for c in &mut open {
        c.stream().write_all(b"\r\n.\r\n").unwrap();
        let r = c.reply();
        match r.code {
            250 => ok += 1,
            451 => {
                assert_eq!(r.enhanced(), Some("4.3.1"), "{}", r.text());
                busy += 1;
            }
            other => panic!("unexpected reply {other} {}", r.text()),
        }
        // The session goes on after the refusal.
        c.cmd("NOOP").expect(250, None);
    }
    eprintln!("accepted {ok}, refused over budget {busy}");
    assert!(ok > 0 && busy > 0, "accepted {ok}, refused {busy}");
    drop(open);

    // Every accepted message (and the legitimate one) is stored whole.
    let stored = fetch_all(server.pop3, ALICE.0, ALICE.1);
    assert_eq!(stored.len(), ok + 1);
    let legit = stored.iter().find(|(_, m)| m.windows(15).any(|w| w == b"Subject: legit\r")).expect("legit message");
    assert!(legit.1.ends_with(&message[message.len() - 200..]));
    for (_, m) in stored.iter().filter(|(_, m)| !m.windows(15).any(|w| w == b"Subject: legit\r")) {
        assert!(m.len() > per_conn, "spooled message of {} bytes", m.len());
    }
    // Spool files are unnamed: nothing is left in the directory.
    let left: Vec<_> = std::fs::read_dir(server.data.join("spool")).unwrap().collect();
    assert!(left.is_empty(), "spool directory not empty: {left:?}");
}
