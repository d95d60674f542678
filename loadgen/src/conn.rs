//! Buffered connection shared by the SMTP, POP3 and IMAP clients, over
//! plain TCP or TLS (tokio-rustls).
//!
//! Reads go through one growable buffer; lines are found with `memchr`, so
//! parsing never walks the input byte by byte in Rust code. Every read and
//! write, and every TLS handshake, is bounded by the connection's
//! inactivity timeout.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::Stats;
use crate::tls::{TlsCtx, TlsMode};

/// Longest line accepted from a server before the reply is treated as broken.
pub const MAX_LINE: usize = 1 << 20;
const INITIAL_BUF: usize = 16 * 1024;

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// While a handshake runs, and after one failed.
    Gone,
}

pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Inactivity timeout applied to each read and write.
    pub timeout: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// TLS settings of the run and the target, for the handshake.
    tls: Option<Arc<TlsCtx>>,
    target: String,
}

/// An I/O error with its own error-count key (see [`io_error_key`]).
#[derive(Debug)]
struct Keyed {
    key: String,
    msg: String,
}

impl std::fmt::Display for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Keyed {}

pub fn keyed(kind: io::ErrorKind, key: impl Into<String>, msg: impl Into<String>) -> io::Error {
    io::Error::new(
        kind,
        Keyed {
            key: key.into(),
            msg: msg.into(),
        },
    )
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timeout")
}

fn not_connected() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection unusable after a failed TLS handshake",
    )
}

/// Short stable name for an I/O error, used as the error-count key.
pub fn io_error_key(e: &io::Error) -> String {
    if let Some(k) = e.get_ref().and_then(|i| i.downcast_ref::<Keyed>()) {
        return k.key.clone();
    }
    match e.kind() {
        io::ErrorKind::TimedOut => "timeout".into(),
        io::ErrorKind::UnexpectedEof => "eof".into(),
        io::ErrorKind::ConnectionRefused => "conn_refused".into(),
        io::ErrorKind::ConnectionReset => "conn_reset".into(),
        io::ErrorKind::BrokenPipe => "broken_pipe".into(),
        io::ErrorKind::InvalidData => "protocol".into(),
        io::ErrorKind::AddrNotAvailable => "addr_not_available".into(),
        _ => "io".into(),
    }
}

pub fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The first failed handshake of a run is explained on stderr once (the
/// error counts only carry a key).
static HANDSHAKE_ERROR_SHOWN: AtomicBool = AtomicBool::new(false);

/// Error key of a failed handshake: `tls_certificate` (verification),
/// `tls_handshake` (other TLS errors, alerts), `tls_<io kind>` otherwise.
fn handshake_error(target: &str, e: io::Error) -> io::Error {
    let tls_err = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let key = match tls_err {
        Some(rustls::Error::InvalidCertificate(_)) => "tls_certificate".to_string(),
        Some(_) => "tls_handshake".to_string(),
        None => format!("tls_{}", io_error_key(&e)),
    };
    if !HANDSHAKE_ERROR_SHOWN.swap(true, Ordering::Relaxed) {
        eprintln!("loadgen: TLS handshake with {target} failed: {e}");
    }
    keyed(e.kind(), key, e.to_string())
}

impl Conn {
    /// Connect for a protocol client: records `connect` (TCP), and with
    /// implicit TLS runs the handshake (`tls_handshake`). With `--starttls`
    /// the connection starts plain and [`Conn::upgrade`] follows the
    /// protocol's STARTTLS/STLS. `buf_size` 0 takes the default.
    pub async fn open(
        addr: &str,
        timeout: Duration,
        buf_size: usize,
        tls: Option<&Arc<TlsCtx>>,
        st: &mut Stats,
    ) -> io::Result<Conn> {
        let t0 = Instant::now();
        let buf_size = if buf_size == 0 { INITIAL_BUF } else { buf_size };
        let mut c = Conn::connect_with(addr, timeout, buf_size).await?;
        let t1 = Instant::now();
        st.record("connect", t0, t1);
        c.tls = tls.cloned();
        c.target = addr.to_string();
        if tls.is_some_and(|t| t.mode == TlsMode::Implicit) {
            c.handshake(st, t1).await?;
        }
        Ok(c)
    }

    /// True when `--starttls` asks the protocol client to upgrade.
    pub fn wants_starttls(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.mode == TlsMode::StartTls)
            && matches!(self.stream, Stream::Plain(_))
    }

    /// TLS handshake on the plain connection after the server accepted
    /// STARTTLS/STLS; `since` is when the command was sent, so
    /// `tls_handshake` covers the command's round trip and the handshake.
    /// Bytes already buffered would be plaintext the server sent ahead of
    /// the handshake (an injection): the upgrade is refused.
    pub async fn upgrade(&mut self, st: &mut Stats, since: Instant) -> io::Result<()> {
        if self.start < self.end {
            return Err(keyed(
                io::ErrorKind::InvalidData,
                "tls_plaintext_before_handshake",
                format!(
                    "{} bytes arrived after the STARTTLS reply, before the handshake",
                    self.end - self.start
                ),
            ));
        }
        self.start = 0;
        self.end = 0;
        self.handshake(st, since).await
    }

    async fn handshake(&mut self, st: &mut Stats, since: Instant) -> io::Result<()> {
        let ctx = self
            .tls
            .clone()
            .ok_or_else(|| protocol_error("TLS requested without --tls/--starttls"))?;
        let name = ctx.name_for(&self.target)?;
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(t) => t,
            other => {
                self.stream = other;
                return Err(protocol_error("TLS is already active"));
            }
        };
        let tls = match tokio::time::timeout(self.timeout, ctx.connector.connect(name, tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(handshake_error(&self.target, e)),
            Err(_) => {
                return Err(keyed(
                    io::ErrorKind::TimedOut,
                    "tls_timeout",
                    "TLS handshake timed out",
                ))
            }
        };
        let end = Instant::now();
        st.record("tls_handshake", since, end);
        let c = tls.get_ref().1;
        match c.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => st.count("tls_resumed", end, 1),
            Some(rustls::HandshakeKind::FullWithHelloRetryRequest) => {
                st.count("tls_full", end, 1);
                st.count("tls_hello_retry", end, 1);
            }
            _ => st.count("tls_full", end, 1),
        }
        st.note_tls(c.protocol_version(), c.negotiated_cipher_suite());
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// TCP connect with a timeout and a given initial read buffer size (it
    /// grows when a single line does not fit; small buffers suit many mostly
    /// idle sessions). Nagle is disabled because every command group is
    /// written with a single write.
    async fn connect_with(addr: &str, timeout: Duration, buf_size: usize) -> io::Result<Conn> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out()),
        };
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: Stream::Plain(stream),
            buf: vec![0; buf_size.max(256)],
            start: 0,
            end: 0,
            timeout,
            bytes_in: 0,
            bytes_out: 0,
            tls: None,
            target: addr.to_string(),
        })
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => {
                // Fast path: most command groups fit in the socket buffer at once.
                let mut off = 0;
                match s.try_write(data) {
                    Ok(n) => off = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if off < data.len() {
                    match tokio::time::timeout(self.timeout, s.write_all(&data[off..])).await {
                        Ok(r) => r?,
                        Err(_) => return Err(timed_out()),
                    }
                }
            }
            Stream::Tls(s) => {
                let w = async {
                    s.write_all(data).await?;
                    s.flush().await
                };
                match tokio::time::timeout(self.timeout, w).await {
                    Ok(r) => r?,
                    Err(_) => return Err(timed_out()),
                }
            }
            Stream::Gone => return Err(not_connected()),
        }
        self.bytes_out += data.len() as u64;
        Ok(())
    }

    /// Read more bytes into the buffer. Cancel-safe: state only changes after
    /// a read completed.
    async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let n = self.buf.len() * 2;
                self.buf.resize(n, 0);
            }
        }
        let space = &mut self.buf[self.end..];
        let n = match &mut self.stream {
            Stream::Plain(s) => match s.try_read(space) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(self.timeout, s.read(space)).await {
                        Ok(r) => r?,
                        Err(_) => return Err(timed_out()),
                    }
                }
                Err(e) => return Err(e),
            },
            Stream::Tls(s) => match tokio::time::timeout(self.timeout, s.read(space)).await {
                Ok(r) => r?,
                Err(_) => return Err(timed_out()),
            },
            Stream::Gone => return Err(not_connected()),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.end += n;
        self.bytes_in += n as u64;
        Ok(())
    }

    /// Next line without its line ending (`\r\n` or bare `\n`).
    pub async fn read_line(&mut self) -> io::Result<&[u8]> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.buf[self.start + scanned..self.end]) {
                let s = self.start;
                let nl = s + scanned + pos;
                self.start = nl + 1;
                let e = if nl > s && self.buf[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                return Ok(&self.buf[s..e]);
            }
            scanned = self.end - self.start;
            if scanned > MAX_LINE {
                return Err(protocol_error("line too long"));
            }
            self.fill().await?;
        }
    }

    /// Read exactly `n` bytes (an IMAP literal); append them to `out` if given.
    pub async fn read_exact_into(
        &mut self,
        mut n: usize,
        mut out: Option<&mut Vec<u8>>,
    ) -> io::Result<()> {
        loop {
            let avail = (self.end - self.start).min(n);
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(&self.buf[self.start..self.start + avail]);
            }
            self.start += avail;
            n -= avail;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Read a POP3 multi-line block up to the terminating `.` line. Lines are
    /// un-dot-stuffed and appended with CRLF to `out` when given. Returns the
    /// number of (unstuffed) bytes in the block.
    pub async fn read_dot_block(&mut self, mut out: Option<&mut Vec<u8>>) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let line = self.read_line().await?;
            let body = if line.first() == Some(&b'.') {
                if line.len() == 1 {
                    return Ok(total);
                }
                &line[1..]
            } else {
                line
            };
            total += body.len() as u64 + 2;
            if let Some(o) = out.as_deref_mut() {
                o.extend_from_slice(body);
                o.extend_from_slice(b"\r\n");
            }
        }
    }

    /// Wait up to `dur` for data to arrive (without consuming it). Returns
    /// false on timeout; EOF and errors are returned as errors.
    pub async fn wait_data(&mut self, dur: Duration) -> io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        let saved = self.timeout;
        self.timeout = dur;
        let r = self.fill().await;
        self.timeout = saved;
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{OnOff, TlsArgs};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A self-signed certificate for `localhost`, written as a CA file.
    struct Pki {
        dir: std::path::PathBuf,
        server: Arc<rustls::ServerConfig>,
    }

    impl Pki {
        fn new(tag: &str) -> Pki {
            let dir =
                std::env::temp_dir().join(format!("loadgen-conn-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            std::fs::write(dir.join("ca.pem"), ck.cert.pem()).unwrap();
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let server = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![CertificateDer::from(ck.cert.der().to_vec())], key)
                .unwrap();
            Pki {
                dir,
                server: Arc::new(server),
            }
        }

        fn ctx(&self, starttls: bool, name: &str, resume: OnOff) -> Arc<TlsCtx> {
            TlsCtx::from_args(&TlsArgs {
                tls: !starttls,
                starttls,
                tls_ca: Some(self.dir.join("ca.pem")),
                tls_insecure: false,
                tls_server_name: Some(name.into()),
                tls_resume: resume,
            })
            .unwrap()
            .unwrap()
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }

    /// Serves `n` connections one after another: optionally a plain
    /// `220` greeting and STARTTLS exchange (with `inject` appended to the
    /// go-ahead), then TLS: `hello`, and waits for `bye`.
    async fn serve(
        l: tokio::net::TcpListener,
        cfg: Arc<rustls::ServerConfig>,
        n: usize,
        starttls: bool,
        inject: &'static [u8],
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            if starttls {
                s.write_all(b"220 ready\r\n").await.unwrap();
                let mut r = BufReader::new(&mut s);
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                assert_eq!(line, "STARTTLS\r\n");
                let mut go = b"220 go ahead\r\n".to_vec();
                go.extend_from_slice(inject);
                s.write_all(&go).await.unwrap();
            }
            let Ok(tls) = acceptor.accept(s).await else {
                continue;
            };
            let mut r = BufReader::new(tls);
            r.get_mut().write_all(b"hello\r\n").await.unwrap();
            r.get_mut().flush().await.unwrap();
            let mut line = String::new();
            let _ = r.read_line(&mut line).await;
        }
    }

    /// Connect (and STARTTLS if asked), read `hello`, say `bye`.
    async fn client(addr: &str, ctx: &Arc<TlsCtx>, st: &mut Stats) -> io::Result<()> {
        let mut c = Conn::open(addr, Duration::from_secs(5), 256, Some(ctx), st).await?;
        if c.wants_starttls() {
            assert_eq!(c.read_line().await?, b"220 ready");
            let t = Instant::now();
            c.write_all(b"STARTTLS\r\n").await?;
            assert_eq!(c.read_line().await?, b"220 go ahead");
            // whatever the server sent along has arrived
            c.wait_data(Duration::from_millis(200)).await?;
            c.upgrade(st, t).await?;
            assert!(!c.wants_starttls());
        }
        assert_eq!(c.read_line().await?, b"hello");
        c.write_all(b"bye\r\n").await?;
        Ok(())
    }

    fn run(
        pki: &Pki,
        ctx: Arc<TlsCtx>,
        n: usize,
        inject: &'static [u8],
    ) -> (Stats, Vec<io::Result<()>>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = pki.server.clone();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap().to_string();
            let srv = tokio::spawn(serve(l, cfg, n, ctx.mode == TlsMode::StartTls, inject));
            let mut st = Stats::new(Instant::now());
            let mut results = Vec::new();
            for _ in 0..n {
                results.push(client(&addr, &ctx, &mut st).await);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), srv).await;
            (st, results)
        })
    }

    #[test]
    fn implicit_tls_resumes_sessions() {
        let pki = Pki::new("resume");
        let (st, res) = run(&pki, pki.ctx(false, "localhost", OnOff::On), 3, b"");
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
        assert_eq!(st.hists["tls_handshake"].len(), 3);
        assert_eq!(st.hists["connect"].len(), 3);
        assert_eq!(st.counter("tls_full"), 1);
        assert_eq!(st.counter("tls_resumed"), 2);
        assert_eq!(st.tls_version, Some("TLSv1.3"));
        assert!(st.tls_cipher.is_some_and(|c| c.starts_with("TLS13_")));

        let (st, res) = run(&pki, pki.ctx(false, "localhost", OnOff::Off), 3, b"");
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
        assert_eq!(st.counter("tls_full"), 3);
        assert_eq!(st.counter("tls_resumed"), 0);
    }

    #[test]
    fn starttls_upgrade_and_injection() {
        let pki = Pki::new("starttls");
        let (st, res) = run(&pki, pki.ctx(true, "localhost", OnOff::On), 2, b"");
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
        assert_eq!(st.hists["tls_handshake"].len(), 2);
        assert_eq!(st.counter("tls_full") + st.counter("tls_resumed"), 2);

        // plaintext sent behind the go-ahead must not be taken as TLS data
        let (st, res) = run(
            &pki,
            pki.ctx(true, "localhost", OnOff::On),
            1,
            b"250 injected\r\n",
        );
        let e = res.into_iter().next().unwrap().unwrap_err();
        assert_eq!(io_error_key(&e), "tls_plaintext_before_handshake");
        assert!(!st.hists.contains_key("tls_handshake"));
    }

    #[test]
    fn certificate_name_is_verified() {
        let pki = Pki::new("name");
        let (st, res) = run(
            &pki,
            pki.ctx(false, "other.example.test", OnOff::On),
            1,
            b"",
        );
        let e = res.into_iter().next().unwrap().unwrap_err();
        assert_eq!(io_error_key(&e), "tls_certificate");
        assert_eq!(st.counter("tls_full"), 0);
        // --tls-insecure takes it
        let ctx = TlsCtx::from_args(&TlsArgs {
            tls: true,
            starttls: false,
            tls_ca: None,
            tls_insecure: true,
            tls_server_name: None,
            tls_resume: OnOff::On,
        })
        .unwrap()
        .unwrap();
        let (st, res) = run(&pki, ctx, 1, b"");
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
        assert_eq!(st.counter("tls_full"), 1);
    }
}
