//! COMPRESS=DEFLATE (RFC 4978) end to end, over plain TCP and over TLS,
//! driven by Python's zlib on a raw socket (tests/py/imap_compress.py), and
//! a client that sends garbage instead of a deflate stream (shared client
//! in support/imap.rs).
#![allow(dead_code)] // each file uses part of the shared helpers

include!("support/imap.rs");

const N: usize = 30;

/// The same message as imap_compress.py's `message(i)`.
fn message(user: &str, i: usize) -> Vec<u8> {
    let lines: String = (0..40)
        .map(|j| {
            format!("Line {j} of message {i}: the quick brown fox jumps over the lazy dog.\r\n")
        })
        .collect();
    format!("From: <sender@example.test>\r\nTo: <{user}>\r\nSubject: compress {i}\r\n\r\n{lines}")
        .into_bytes()
}

fn run_client(s: &Server, user: &str, port: u16, tls: bool) -> (u64, u64) {
    let out = run_python(
        "imap_compress.py",
        &[
            "127.0.0.1".into(),
            port.to_string(),
            user.into(),
            PASSWORD.into(),
            if tls { "1" } else { "0" }.into(),
            s.smtp.port().to_string(),
            N.to_string(),
        ],
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("plain="))
        .unwrap_or_else(|| panic!("{out}"));
    let nums: Vec<u64> = line
        .split(' ')
        .map(|kv| kv.split('=').nth(1).unwrap().parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn compress_deflate_plain_and_tls() {
    let users = ["zplain@example.test", "ztls@example.test"];
    let s = Server::options().accounts(&users).start();
    for u in users {
        let mut c = Imap::login(s.imap, u, PASSWORD);
        for i in 1..=N {
            c.append_ok("INBOX", "", None, &message(u, i));
        }
        c.ok("LOGOUT");
    }
    let (plain, wire) = run_client(&s, users[0], s.imap.port(), false);
    // Mail text compresses: the server sent well under half the octets.
    assert!(
        plain > 60_000 && wire * 2 < plain,
        "plain {plain} wire {wire}"
    );
    let (plain, wire) = run_client(&s, users[1], s.imaps.port(), true);
    assert!(
        plain > 60_000 && wire * 2 < plain,
        "TLS: plain {plain} wire {wire}"
    );
}

#[test]
fn corrupt_deflate_stream_closes_the_connection() {
    let s = Server::new();
    let mut c = Imap::login(s.imap, ALICE, ALICE_PW);
    let r = c.ok("COMPRESS DEFLATE");
    assert_eq!(r.status, "OK DEFLATE active");
    // 0xff.. is no valid deflate block type (BTYPE 11 is reserved).
    c.send(&[0xff; 64]);
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "the server keeps a connection whose stream cannot be inflated"
    );
    // A client that ends its stream (a final block) has closed its side.
    let mut e = Imap::login(s.imap, ALICE, ALICE_PW);
    e.ok("COMPRESS DEFLATE");
    // BFINAL=1, BTYPE=01 (fixed Huffman), then the end-of-block code.
    e.send(&[0x03, 0x00]);
    assert!(
        e.closed_within(Duration::from_secs(10)),
        "the server waits on after the client's final deflate block"
    );
    // The server is fine.
    let mut d = Imap::login(s.imap, ALICE, ALICE_PW);
    d.ok("NOOP");
}
