//! How many times a body byte is copied in user space on the TLS write path,
//! between the memory mapping a POP3 RETR or IMAP FETCH body is served from
//! and the socket.
//!
//! The server side is the real one: `transport::Conn` over a glommio socket,
//! with the server's own rustls configuration (`tls::Tls`, the generated
//! ECDSA P-256 certificate); the body is a 4 MiB file mapped with mmap, and
//! `Conn::write_all` gets the whole mapping, as the POP3 and IMAP writers
//! hand it slices of the segment mapping. A std thread is the client
//! (rustls), counting the ciphertext it receives and checking the body.
//!
//! Measured while the body is written (after a first write of the same size,
//! so buffers have their steady-state capacity):
//! - bytes allocated on the server thread (a counting global allocator):
//!   every TLS record is a fresh buffer of one record's size (16 KiB of
//!   plaintext and its overhead) that rustls copies the plaintext into and
//!   then seals in place. About 1.0x the body: one copy.
//! - bytes rustls wrote into `Conn`'s `tls_out` (the `write-stats` counter):
//!   exactly the body plus the record overhead (header, content type, tag):
//!   the second copy, from rustls' record queue into `tls_out`.
//! - bytes the client received: what `tls_out` held, nothing more (the
//!   socket write sends from `tls_out` without another buffer; the kernel's
//!   copy into socket buffers is not user space).
//!
//! Result: two user-space copies per body byte under TLS (1.2 and 1.3),
//! none on a plain connection (the last test).
//! Run: `cargo test -p ringmail-bench --test tls_write_copies -- --nocapture`.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ringmail::config::Config;
use ringmail::tls::Tls;
use ringmail::transport::Conn;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
    static REALLOCATED: Cell<u64> = const { Cell::new(0) };
    static LARGEST: Cell<u64> = const { Cell::new(0) };
}

fn add(c: &'static std::thread::LocalKey<Cell<u64>>, n: usize) {
    if ON.with(Cell::get) {
        c.with(|v| v.set(v.get() + n as u64));
        LARGEST.with(|v| v.set(v.get().max(n as u64)));
    }
}

fn start_counting() {
    for c in [&ALLOCATED, &REALLOCATED, &LARGEST] {
        c.with(|v| v.set(0));
    }
    ON.with(|c| c.set(true));
}

// SAFETY: every call goes to the system allocator unchanged; the counters
// are thread-local cells with constant initializers and no destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        add(&ALLOCATED, l.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        add(&ALLOCATED, l.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // A realloc may move (copy) the old contents: counted apart.
        add(&REALLOCATED, new_size);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(p, l, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BODY: usize = 4 << 20;
const GREETING: &[u8] = b"+OK 4194304 octets\r\n";
const END: &[u8] = b".\r\n";

/// A message body of realistic lines (76 characters and CRLF, varying).
fn body_file(dir: &std::path::Path) -> (PathBuf, Vec<u8>) {
    let mut b = Vec::with_capacity(BODY);
    let mut i = 0u32;
    while b.len() < BODY {
        let n = (40 + (i * 7919) % 37) as usize;
        b.extend((0..n).map(|k| b'a' + ((i as usize + k) % 26) as u8));
        b.extend_from_slice(b"\r\n");
        i += 1;
    }
    b.truncate(BODY);
    let path = dir.join("body.eml");
    std::fs::write(&path, &b).unwrap();
    (path, b)
}

/// Reads everything until the server closes, counting ciphertext bytes;
/// returns (ciphertext bytes received, plaintext received).
fn client(
    addr: SocketAddr,
    ca: PathBuf,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
) -> (u64, Vec<u8>) {
    struct CountingStream(std::net::TcpStream, u64);
    impl Read for CountingStream {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(b)?;
            self.1 += n as u64;
            Ok(n)
        }
    }
    impl Write for CountingStream {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("mail.bench.test").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, CountingStream(sock, 0));
    let mut plain = Vec::with_capacity(2 * BODY + 64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => plain.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("client read: {e}"),
        }
    }
    (tls.sock.1, plain)
}

struct Measured {
    version: &'static str,
    cipher: String,
    body: u64,
    records: u64,
    allocated: u64,
    largest: u64,
    reallocated: u64,
    tls_out: u64,
    tls_out_total: u64,
    socket: u64,
}

fn measure(versions: &'static [&'static rustls::SupportedProtocolVersion]) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        hostname: "mail.bench.test".into(),
        ..Config::default()
    };
    let tls = Tls::load(&config).unwrap();
    let server_cfg = tls.server_config();
    let ca = tls.certificates()[0].cert_path.clone();
    let (path, expected) = body_file(dir.path());
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a private file nobody else changes while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();

    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    let (m, (socket, plain)) = ex.run(async move {
        let l = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || client(addr, ca, versions));
        let stream = l.accept().await.unwrap();
        let mut conn = Conn::new(stream, Vec::new());
        conn.start_tls(server_cfg).unwrap();
        conn.handshake(Duration::from_secs(10)).await.unwrap();
        let info = conn.tls_info().unwrap();
        // A first RETR of the same size: tls_out and rustls' queue reach
        // the capacity they keep for the rest of the session.
        conn.write_all(GREETING).await.unwrap();
        conn.write_all(&map[..]).await.unwrap();
        conn.write_all(END).await.unwrap();

        conn.write_all(GREETING).await.unwrap();
        let before = conn.tls_out_total();
        start_counting();
        conn.write_all(&map[..]).await.unwrap();
        ON.with(|c| c.set(false));
        let tls_out = conn.tls_out_total() - before;
        conn.write_all(END).await.unwrap();
        let tls_out_total = conn.tls_out_total();
        drop(conn); // close_notify
        let got = client.join().unwrap();
        let records = BODY.div_ceil(16384) as u64;
        let m = Measured {
            version: info.version,
            cipher: info.cipher.to_string(),
            body: BODY as u64,
            records,
            allocated: ALLOCATED.with(Cell::get),
            largest: LARGEST.with(Cell::get),
            reallocated: REALLOCATED.with(Cell::get),
            tls_out,
            tls_out_total,
            socket: 0,
        };
        (m, got)
    });
    let mut want = Vec::new();
    for _ in 0..2 {
        want.extend_from_slice(GREETING);
        want.extend_from_slice(&expected);
        want.extend_from_slice(END);
    }
    assert!(plain == want, "the client did not receive the body intact");
    Measured { socket, ..m }
}

fn report(m: &Measured) {
    let x = |n: u64| n as f64 / m.body as f64;
    eprintln!(
        "{} {}: body {} bytes in {} records; during its write: allocated {} bytes ({:.4}x the body, \
         largest {}), reallocated {} bytes, copied into tls_out {} bytes ({:.4}x); the socket carried {} bytes, \
         tls_out {} bytes in all: user-space copies per body byte = {:.2}",
        m.version,
        m.cipher,
        m.body,
        m.records,
        m.allocated,
        x(m.allocated),
        m.largest,
        m.reallocated,
        m.tls_out,
        x(m.tls_out),
        m.socket,
        m.tls_out_total,
        x(m.allocated).round() + x(m.tls_out).round(),
    );
}

fn check(m: &Measured, overhead: u64) {
    report(m);
    // Copy into tls_out: each body byte exactly once, plus each record's
    // header, content type and tag.
    assert_eq!(
        m.tls_out,
        m.body + m.records * overhead,
        "bytes through tls_out"
    );
    // Copy into the records: one fresh buffer per record holding the body
    // once (and its overhead), nothing that holds it a second time.
    assert!(
        m.allocated >= m.body,
        "records are not new buffers? {} < {}",
        m.allocated,
        m.body
    );
    assert!(
        m.allocated < m.body + m.body / 50,
        "more than one buffer per body byte: {}",
        m.allocated
    );
    // ... the largest a record: 16 KiB of plaintext and its overhead.
    assert!(
        m.largest > 16384 && m.largest <= 16384 + 64,
        "largest allocation {}",
        m.largest
    );
    assert!(
        m.reallocated < m.body / 100,
        "buffers grew (and moved) while writing: {}",
        m.reallocated
    );
    // The socket carried what tls_out held: the handshake, both writes,
    // and the close_notify record sent on drop (24 bytes under TLS 1.3, 31
    // under TLS 1.2 with AES-GCM).
    assert!(
        m.socket >= m.tls_out_total && m.socket <= m.tls_out_total + 31,
        "socket {} vs tls_out {}",
        m.socket,
        m.tls_out_total
    );
}

#[test]
fn tls13_body_bytes_are_copied_twice_in_user_space() {
    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let m = measure(TLS13);
    assert_eq!(m.version, "TLSv1.3");
    // 5-byte header, 1 content type byte, 16-byte AEAD tag.
    check(&m, 22);
}

#[test]
fn tls12_body_bytes_are_copied_twice_in_user_space() {
    static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let m = measure(TLS12);
    assert_eq!(m.version, "TLSv1.2");
    // 5-byte header, then AES-GCM: 8-byte explicit nonce and 16-byte tag;
    // ChaCha20-Poly1305: the tag only.
    let overhead = if m.cipher.contains("CHACHA20") {
        21
    } else {
        29
    };
    check(&m, overhead);
}

/// Without TLS the body goes from the mapping to the socket with no
/// user-space buffer in between: no allocation near the size of a chunk of
/// it is made while it is written.
#[test]
fn plain_body_bytes_are_not_copied_in_user_space() {
    let dir = tempfile::tempdir().unwrap();
    let (path, expected) = body_file(dir.path());
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a private file nobody else changes while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    let (allocated, got) = ex.run(async move {
        let l = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut v = vec![0u8; 2 * BODY];
            s.read_exact(&mut v).unwrap();
            v
        });
        let stream = l.accept().await.unwrap();
        let mut conn = Conn::new(stream, Vec::new());
        conn.write_all(&map[..]).await.unwrap();
        start_counting();
        conn.write_all(&map[..]).await.unwrap();
        ON.with(|c| c.set(false));
        let allocated = (ALLOCATED.with(Cell::get), LARGEST.with(Cell::get));
        assert_eq!(conn.tls_out_total(), 0);
        drop(conn);
        (allocated, client.join().unwrap())
    });
    let (allocated, largest) = allocated;
    eprintln!("plain: body {BODY} bytes; allocated during its write: {allocated} bytes (largest {largest}): no copy");
    assert!(got.len() == 2 * BODY && got[..BODY] == expected[..] && got[BODY..] == expected[..]);
    // Only the reactor's bookkeeping while the socket is full, never a
    // buffer for the data.
    assert!(
        allocated < 64 * 1024 && largest < 4096,
        "plain writes allocated {allocated} bytes (largest {largest})"
    );
}
