//! A connection's bytes: one transport for every protocol, plain TCP or TLS
//! (rustls, set up at accept for implicit TLS or upgraded in place by
//! STARTTLS/STLS), under a bounded read buffer. Parsers borrow from
//! `pending()`; the driver calls `consume(n)` with what they used, so a
//! command is never copied out of the buffer. Sessions never know which
//! transport they run over.
//!
//! TLS is driven by hand over rustls' buffered connection rather than through
//! an async adaptor: ciphertext read from the socket is handed to rustls and
//! the decrypted bytes land in the same read buffer plain connections use;
//! writes are encrypted by rustls straight from the caller's slice (for a
//! message body, the segment mapping) into its record buffer. The whole TLS
//! state is one `rustls::Connection`, which is `Send`: a connection moving
//! to the shard that owns its account takes it along ([`Detached`]), with
//! every byte rustls still buffers in either direction.
//!
//! IMAP's COMPRESS=DEFLATE (RFC 4978) is a third layer, between the
//! session and TLS (compression before encryption, as section 4 orders):
//! once [`Conn::start_deflate`] ran, what `fill` reads from the socket or
//! from rustls is raw deflate, inflated into the read buffer no faster than
//! the buffer has room (a small input that inflates to gigabytes only ever
//! fills the bounded buffer), and every `write_all` is deflated and sync
//! flushed, so each burst of replies reaches the client whole.
//!
//! The same type carries the relay's outbound sessions: there the TLS side
//! is a `rustls::ClientConnection` started after the MX's 220 to STARTTLS
//! ([`Conn::start_tls_client`]).
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::limits::{READ_CHUNK, TLS_READ_CHUNK};

/// Read buffer kept by a connection waiting idle (see [`Conn::shrink`]).
const IDLE_BUFFER: usize = 1024;
/// Grow the buffer when less than this is free for the next read.
const READ_MIN: usize = 512;

pub use crate::session::TlsInfo;

/// A connection taken off its glommio stream to move to another shard.
pub struct Detached {
    pub fd: OwnedFd,
    /// Received bytes not yet consumed (plaintext).
    pub pending: Vec<u8>,
    /// The TLS state, with whatever rustls still buffers.
    pub tls: Option<Box<rustls::Connection>>,
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake timed out")]
    TimedOut,
    #[error("peer closed during the handshake")]
    Eof,
    #[error("{0}")]
    Failed(std::io::Error),
}

pub struct Conn {
    pub stream: TcpStream,
    /// Received bytes live in `buf[start..end]`; bytes beyond `end` are
    /// scratch space for the next read. Keeping `end` apart from the Vec's
    /// length makes `fill` cancellation-safe: a read future dropped half-way
    /// (IMAP IDLE races reads against mailbox changes) leaves nothing behind.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    timeout: Option<Duration>,
    /// Most bytes the buffer may hold (the protocol's largest command).
    max: usize,
    /// The TLS layer, once started. Boxed: a plain connection pays a pointer.
    tls: Option<Box<rustls::Connection>>,
    /// Encrypted records on their way to the socket (empty when plain).
    tls_out: Vec<u8>,
    /// Bytes rustls wrote into `tls_out` so far (feature `write-stats`, for
    /// the copy-count test in bench/).
    #[cfg(feature = "write-stats")]
    tls_out_total: u64,
    /// COMPRESS=DEFLATE, once started. Boxed: its state is large.
    deflate: Option<Box<Deflate>>,
}

/// Both directions of a raw deflate stream (RFC 1951, no zlib header:
/// RFC 4978 section 3).
struct Deflate {
    inflate: flate2::Decompress,
    /// None while idle (see [`Conn::shrink`]): its state is most of a
    /// compressed connection's memory.
    deflate: Option<flate2::Compress>,
    /// The client ended its stream (a final block): end of input.
    ended: bool,
    /// Compressed bytes received and not inflated yet.
    input: Vec<u8>,
    /// Compressed bytes of the write in progress.
    output: Vec<u8>,
}

/// Deflate level for COMPRESS. With flate2's miniz_oxide backend, level 1
/// is a special fast path that compresses mail text to 0.49 of its size at
/// 103 MB/s; level 2 reaches 0.37 at 98 MB/s and level 6 0.29 at 27 MB/s
/// (docs/BENCHMARKS.md, "COMPRESS=DEFLATE").
const DEFLATE_LEVEL: u32 = 2;
/// Plaintext deflated and sent at a time.
const DEFLATE_PIECE: usize = 64 * 1024;

#[derive(Debug)]
pub enum ReadOutcome {
    Data,
    Eof,
    TimedOut,
    Failed(std::io::Error),
}

impl Conn {
    /// An outgoing connection (the relay client). Without TCP_NODELAY a
    /// short request/reply exchange waits for the peer's delayed ACK (tens
    /// of milliseconds).
    pub fn new(stream: TcpStream, initial: Vec<u8>) -> Conn {
        let _ = stream.set_nodelay(true);
        Self::with_tls(stream, initial, None)
    }

    /// An accepted connection: TCP_NODELAY comes with it from the listening
    /// socket (`runtime::listen`), so no setsockopt per connection.
    pub fn accepted(stream: TcpStream) -> Conn {
        Self::with_tls(stream, Vec::new(), None)
    }

    /// A connection arriving from another shard: its unconsumed plaintext
    /// and, on TLS, its rustls state.
    pub fn with_tls(
        stream: TcpStream,
        initial: Vec<u8>,
        tls: Option<Box<rustls::Connection>>,
    ) -> Conn {
        let end = initial.len();
        let mut buf = initial;
        buf.reserve(READ_CHUNK);
        Conn {
            stream,
            buf,
            start: 0,
            end,
            timeout: None,
            max: 4 * READ_CHUNK,
            tls,
            tls_out: Vec::new(),
            #[cfg(feature = "write-stats")]
            tls_out_total: 0,
            deflate: None,
        }
    }

    /// Start COMPRESS=DEFLATE in both directions (after the tagged OK went
    /// out uncompressed). Bytes already received and not consumed were sent
    /// after the client started compressing, so they are compressed input.
    pub fn start_deflate(&mut self) {
        let input = self.take_pending();
        self.deflate = Some(Box::new(Deflate {
            inflate: flate2::Decompress::new(false),
            deflate: None,
            ended: false,
            input,
            output: Vec::new(),
        }));
    }

    /// Bytes copied into `tls_out` (records for the socket) so far.
    #[cfg(feature = "write-stats")]
    pub fn tls_out_total(&self) -> u64 {
        self.tls_out_total
    }

    /// The client's address (unspecified if the socket cannot tell).
    pub fn peer(&self) -> std::net::SocketAddr {
        self.stream
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Version and cipher suite, once a TLS handshake completed.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        let tls = self.tls.as_ref()?;
        if tls.is_handshaking() {
            return None;
        }
        let version = match tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        // rustls spells the TLS 1.3 suites TLS13_*; logs and Received
        // headers use the IANA names.
        let cipher = match tls
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown")
        {
            "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256",
            "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384",
            "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256",
            other => other,
        };
        Some(TlsInfo { version, cipher })
    }

    /// Start TLS on this connection (implicit TLS at accept, or after the
    /// reply to STARTTLS/STLS was flushed). Every received byte not yet
    /// consumed is discarded: the client sent it before it could have seen
    /// our go-ahead, so it must never be executed inside TLS (the
    /// CVE-2011-0411 class of command injection). Returns how many bytes
    /// were dropped; then call [`Conn::handshake`].
    /// SHA-256 fingerprint of the peer's certificate (`AB:CD:...`), once
    /// the handshake is done and the peer sent one.
    pub fn peer_certificate_sha256(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        if tls.is_handshaking() {
            return None;
        }
        let leaf = tls.peer_certificates()?.first()?;
        Some(crate::tls::fingerprint(leaf.as_ref()))
    }

    pub fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> std::io::Result<usize> {
        assert!(self.tls.is_none(), "TLS started twice");
        let dropped = self.end - self.start;
        self.start = self.end;
        let tls = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
        self.tls = Some(Box::new(rustls::Connection::Server(tls)));
        Ok(dropped)
    }

    /// Start the client side of TLS towards `name` (the relay, after the
    /// server's 220 to STARTTLS). As on the server side, every received byte
    /// not yet consumed is dropped: a server must not get to inject replies
    /// that were sent before the handshake (RFC 3207 4.2: the client discards
    /// any knowledge obtained before TLS). Returns how many bytes were
    /// dropped; then call [`Conn::handshake`].
    pub fn start_tls_client(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: rustls_pki_types::ServerName<'static>,
    ) -> std::io::Result<usize> {
        assert!(self.tls.is_none(), "TLS started twice");
        let dropped = self.end - self.start;
        self.start = self.end;
        let tls = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        self.tls = Some(Box::new(rustls::Connection::Client(tls)));
        Ok(dropped)
    }

    /// Run the TLS handshake to its end, within `timeout` in all (a client
    /// trickling bytes cannot stretch it). A failure has already sent the
    /// alert rustls chose; the caller closes the connection.
    pub async fn handshake(&mut self, timeout: Duration) -> Result<(), HandshakeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(tls) = self.tls.as_ref() else {
                return Ok(());
            };
            if !tls.is_handshaking() {
                // Our last flight (TLS 1.2 Finished, TLS 1.3 tickets).
                return self.flush_tls().await.map_err(HandshakeError::Failed);
            }
            self.flush_tls().await.map_err(HandshakeError::Failed)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandshakeError::TimedOut);
            }
            self.set_timeout(left.max(Duration::from_millis(1)));
            self.make_room();
            match self.read_tls().await {
                ReadOutcome::Data => {}
                ReadOutcome::Eof => return Err(HandshakeError::Eof),
                ReadOutcome::TimedOut => return Err(HandshakeError::TimedOut),
                ReadOutcome::Failed(e) => return Err(HandshakeError::Failed(e)),
            }
        }
    }

    /// Take the connection off this shard: the socket (duplicated; the
    /// glommio stream closes its own descriptor), the unconsumed plaintext,
    /// and the TLS state. Call after flushing every reply.
    pub fn detach(mut self) -> std::io::Result<Detached> {
        if self.deflate.is_some() {
            // COMPRESS comes after login, and so after any hand-off.
            return Err(std::io::Error::other("cannot move a compressed connection"));
        }
        let pending = self.take_pending();
        let tls = self.tls.take();
        // SAFETY: dup of an open descriptor we own; the result is owned by OwnedFd.
        let fd = unsafe { libc::fcntl(self.stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Detached { fd, pending, tls })
    }

    pub fn fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    /// Admit a new connection, or tell the client why not (`refusal` gives
    /// the protocol's words for a full server and a full address) and close.
    pub async fn admit<P, R>(
        &mut self,
        permit: Result<P, R>,
        refusal: impl Fn(R) -> &'static [u8],
    ) -> Option<P> {
        match permit {
            Ok(p) => Some(p),
            Err(r) => {
                let _ = self.write_all(refusal(r)).await;
                None
            }
        }
    }

    /// Before a long wait with nothing buffered (IMAP IDLE), give the read
    /// buffer back and keep a small one: thousands of idle sessions then cost
    /// a few KiB each. It grows again by whole chunks when data flows.
    pub fn shrink(&mut self) {
        if self.start == self.end && self.buf.capacity() > IDLE_BUFFER {
            self.buf = vec![0; IDLE_BUFFER];
            self.start = 0;
            self.end = 0;
        }
        self.tls_out = Vec::new();
        if let Some(z) = self.deflate.as_mut() {
            // The compressor is about 300 KiB; the inflater must stay (the
            // client's stream goes on), the buffers need not.
            z.deflate = None;
            z.output = Vec::new();
            if z.input.is_empty() {
                z.input = Vec::new();
            }
        }
    }

    /// Let the buffer grow to `max` bytes (IMAP APPEND literals).
    pub fn set_buffer_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Bytes received and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        assert!(self.start <= self.end, "consumed more than was read");
    }

    /// Hand the unconsumed bytes over (a connection moving to another shard).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let v = self.pending().to_vec();
        self.start = self.end;
        v
    }

    fn set_timeout(&mut self, timeout: Duration) {
        if self.timeout != Some(timeout) {
            let _ = self.stream.set_read_timeout(Some(timeout));
            self.timeout = Some(timeout);
        }
    }

    /// Move unconsumed bytes to the front and make sure a read has room.
    fn make_room(&mut self) {
        self.compact();
        self.grow();
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    fn grow(&mut self) {
        if self.buf.len() < self.end + READ_MIN {
            // Grow by exactly one chunk (resize would double the capacity).
            self.buf
                .reserve_exact(self.end + READ_CHUNK - self.buf.len());
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
    }

    /// Read more bytes. Fails the read (as `TimedOut`) after `timeout` without data.
    pub async fn fill(&mut self, timeout: Duration) -> ReadOutcome {
        if self.deflate.is_none() {
            return self.fill_wire(timeout).await;
        }
        loop {
            // Inflate what is there into the free part of the buffer. No
            // await while `deflate` is borrowed, so a dropped read (IDLE)
            // loses nothing.
            self.compact();
            if self.end > self.max {
                return ReadOutcome::Failed(std::io::Error::other("read buffer limit"));
            }
            self.grow();
            let room = (self.buf.len() - self.end).min(self.max + READ_CHUNK - self.end);
            let z = self.deflate.as_mut().expect("deflating");
            if z.ended {
                // Nothing may follow the client's final block.
                return if z.input.is_empty() {
                    ReadOutcome::Eof
                } else {
                    ReadOutcome::Failed(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "data after the end of the deflate stream",
                    ))
                };
            }
            if !z.input.is_empty() {
                let (in0, out0) = (z.inflate.total_in(), z.inflate.total_out());
                let r = z.inflate.decompress(
                    &z.input,
                    &mut self.buf[self.end..self.end + room],
                    flate2::FlushDecompress::None,
                );
                let used = (z.inflate.total_in() - in0) as usize;
                let made = (z.inflate.total_out() - out0) as usize;
                z.input.drain(..used);
                match r {
                    Ok(flate2::Status::StreamEnd) => {
                        z.ended = true;
                        if made == 0 {
                            continue;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return ReadOutcome::Failed(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            e,
                        ))
                    }
                }
                if made > 0 {
                    self.end += made;
                    return ReadOutcome::Data;
                }
                if used == 0 && !z.input.is_empty() {
                    // No progress with input left: a corrupt stream.
                    return ReadOutcome::Failed(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "deflate stream stalled",
                    ));
                }
            }
            // More compressed bytes: read them where plaintext would go,
            // then move them to the inflater's input.
            let mark = self.end;
            match self.fill_wire(timeout).await {
                ReadOutcome::Data => {}
                other => return other,
            }
            let z = self.deflate.as_mut().expect("deflating");
            z.input.extend_from_slice(&self.buf[mark..self.end]);
            self.end = mark;
        }
    }

    /// Read more bytes off the socket (through TLS when on).
    async fn fill_wire(&mut self, timeout: Duration) -> ReadOutcome {
        self.set_timeout(timeout);
        // Keep the buffer bounded: move unconsumed bytes to the front.
        self.compact();
        if self.end > self.max {
            // The sessions consume or reject every line long before this.
            return ReadOutcome::Failed(std::io::Error::other("read buffer limit"));
        }
        self.grow();
        if self.tls.is_none() {
            let r = self.stream.read(&mut self.buf[self.end..]).await;
            return match r {
                Ok(0) => ReadOutcome::Eof,
                Ok(n) => {
                    self.end += n;
                    ReadOutcome::Data
                }
                Err(e) => io_outcome(e),
            };
        }
        loop {
            let tls = self.tls.as_mut().expect("TLS connection");
            match tls.reader().read(&mut self.buf[self.end..]) {
                // close_notify: the peer is done.
                Ok(0) => return ReadOutcome::Eof,
                Ok(n) => {
                    self.end += n;
                    return ReadOutcome::Data;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // Closed without close_notify (truncation is the
                // application's problem: every protocol here has its own end).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return ReadOutcome::Eof,
                Err(e) => return ReadOutcome::Failed(e),
            }
            // Key updates and alerts rustls wants to send.
            if let Err(e) = self.flush_tls().await {
                return ReadOutcome::Failed(e);
            }
            let before = self.end;
            match self.read_tls().await {
                // read_tls took decrypted bytes into the buffer itself:
                // they come first (a close_notify after them is seen on
                // the next read).
                ReadOutcome::Data if self.end > before => return ReadOutcome::Data,
                ReadOutcome::Data => {}
                other => return other,
            }
        }
    }

    /// One socket read of ciphertext, handed to rustls and processed. The
    /// free part of the read buffer is the scratch space: rustls copies what
    /// it is given, and decrypted bytes are read into the same place after.
    /// At most [`TLS_READ_CHUNK`] per read. rustls holds at most about 16 KiB
    /// of decrypted data: a read that completes a full record and a small
    /// one, with more after them, would overflow it, so then the rest of
    /// the ciphertext is moved aside and the decrypted bytes are taken into
    /// the buffer before rustls gets more.
    async fn read_tls(&mut self) -> ReadOutcome {
        let at = self.end;
        let room = (self.buf.len() - at).min(TLS_READ_CHUNK);
        let n = match self.stream.read(&mut self.buf[at..at + room]).await {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => n,
            Err(e) => return io_outcome(e),
        };
        // Ciphertext not yet given to rustls: in the buffer at `at + pos`,
        // or moved aside.
        let mut aside: Option<Vec<u8>> = None;
        let mut pos = 0;
        loop {
            let tls = self.tls.as_mut().expect("TLS connection");
            let mut input: &[u8] = match &aside {
                Some(v) => &v[pos..],
                None => &self.buf[at + pos..at + n],
            };
            if input.is_empty() {
                break;
            }
            let before = input.len();
            match tls.read_tls(&mut input) {
                // Nothing more is taken after close_notify.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return ReadOutcome::Failed(e),
            }
            pos += before - input.len();
            let left = input.len();
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Tell the peer why (rustls queued the alert), then fail.
                    let _ = self.flush_tls().await;
                    return ReadOutcome::Failed(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e,
                    ));
                }
            };
            if left > 0 && state.plaintext_bytes_to_read() > 0 {
                if aside.is_none() {
                    aside = Some(self.buf[at + pos..at + n].to_vec());
                    pos = 0;
                }
                if let Err(e) = self.take_plaintext() {
                    return ReadOutcome::Failed(e);
                }
            }
        }
        ReadOutcome::Data
    }

    /// Move every decrypted byte rustls holds into the read buffer.
    fn take_plaintext(&mut self) -> std::io::Result<()> {
        loop {
            self.grow();
            let tls = self.tls.as_mut().expect("TLS connection");
            match tls.reader().read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(()),
                Ok(k) => self.end += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Send every record rustls has ready.
    async fn flush_tls(&mut self) -> std::io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        while tls.wants_write() {
            self.tls_out.clear();
            let _n = tls.write_tls(&mut self.tls_out)?;
            #[cfg(feature = "write-stats")]
            {
                self.tls_out_total += _n as u64;
            }
            self.stream.write_all(&self.tls_out).await?;
        }
        Ok(())
    }

    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.deflate.is_some() {
            // Deflate in bounded pieces, sending each before the next: a
            // 30 MB body costs one piece of memory, and the shard runs
            // other sessions between pieces. The last piece is sync-flushed
            // (RFC 4978 section 4: the client must be able to decode every
            // response it is sent).
            let mut rest = data;
            loop {
                let last = rest.len() <= DEFLATE_PIECE;
                let (piece, tail) = rest.split_at(rest.len().min(DEFLATE_PIECE));
                let out = self.deflate_piece(piece, last)?;
                let r = self.write_wire(&out).await;
                if let Some(z) = self.deflate.as_mut() {
                    z.output = out;
                }
                r?;
                rest = tail;
                if last {
                    return Ok(());
                }
            }
        }
        self.write_wire(data).await
    }

    /// Deflate one piece into the connection's output buffer (taken out of
    /// it; the caller puts it back), sync-flushed when `flush`.
    fn deflate_piece(&mut self, piece: &[u8], flush: bool) -> std::io::Result<Vec<u8>> {
        let z = self.deflate.as_mut().expect("deflating");
        // Dropped by `shrink` while idle: a fresh raw deflater continues
        // the stream, as the last write ended on a sync flush.
        let c = z.deflate.get_or_insert_with(|| {
            flate2::Compress::new(flate2::Compression::new(DEFLATE_LEVEL), false)
        });
        let mode = if flush {
            flate2::FlushCompress::Sync
        } else {
            flate2::FlushCompress::None
        };
        let mut out = std::mem::take(&mut z.output);
        out.clear();
        let mut rest = piece;
        loop {
            out.reserve(rest.len() / 2 + 4096);
            let before = c.total_in();
            c.compress_vec(rest, &mut out, mode)
                .map_err(std::io::Error::other)?;
            rest = &rest[(c.total_in() - before) as usize..];
            // Done when all input is taken and, for a flush, it had room
            // to finish (it leaves spare capacity behind).
            if rest.is_empty() && (!flush || out.len() < out.capacity()) {
                break;
            }
        }
        Ok(out)
    }

    /// Write bytes to the socket (through TLS when on).
    async fn write_wire(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.tls.is_none() {
            return self.stream.write_all(data).await;
        }
        let mut rest = data;
        while !rest.is_empty() {
            // rustls encrypts from `rest` into its record buffer, up to its
            // buffer limit (64 KiB) at a time.
            let n = self
                .tls
                .as_mut()
                .expect("TLS connection")
                .writer()
                .write(rest)?;
            rest = &rest[n..];
            self.flush_tls().await?;
        }
        Ok(())
    }

    /// Write and clear `out`.
    pub async fn flush(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let r = self.write_all(out).await;
        out.clear();
        r
    }

    /// TCP_CORK: while set, the kernel coalesces our writes into full segments,
    /// so a message written as several slices leaves in as few packets as one buffer.
    pub fn cork(&self, on: bool) {
        let v: libc::c_int = i32::from(on);
        // SAFETY: setsockopt on our own open socket with a valid int option.
        unsafe {
            libc::setsockopt(
                self.fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                &v as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

fn io_outcome(e: std::io::Error) -> ReadOutcome {
    if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock {
        ReadOutcome::TimedOut
    } else {
        ReadOutcome::Failed(e)
    }
}

impl Drop for Conn {
    /// A TLS connection says close_notify on its way out, best effort: one
    /// non-blocking send, never a wait.
    fn drop(&mut self) {
        let Some(tls) = self.tls.as_mut() else { return };
        tls.send_close_notify();
        let mut out = Vec::new();
        while tls.wants_write() {
            if tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        if !out.is_empty() {
            // SAFETY: send on our own open socket from a valid buffer.
            unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    out.as_ptr().cast(),
                    out.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A peer that sends full-size TLS records and small ones back to
    /// back, all in one socket write: a read completes a full record, a
    /// small one and part of the next, which is more decrypted data than
    /// rustls holds at once. Every byte must come through, in order.
    #[test]
    fn mixed_record_sizes_in_one_read_all_come_through() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone().into()], key)
            .unwrap();
        let client =
            crate::tls::pinned_client_config(vec![crate::tls::fingerprint(&der)], None).unwrap();
        let mut sent = Vec::new();
        for i in 0..12u8 {
            sent.push(vec![b'a' + i; 16 * 1024]);
            sent.push(vec![b'0' + i; 10 + i as usize]);
        }
        let expected = sent.concat();
        let got = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let peer = std::thread::spawn(move || {
                    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                    let mut tls = rustls::ClientConnection::new(client, name).unwrap();
                    let mut sock = std::net::TcpStream::connect(addr).unwrap();
                    while tls.is_handshaking() {
                        tls.complete_io(&mut sock).unwrap();
                    }
                    // One record per write call, then everything at once.
                    let mut wire = Vec::new();
                    for piece in &sent {
                        tls.writer().write_all(piece).unwrap();
                        while tls.wants_write() {
                            tls.write_tls(&mut wire).unwrap();
                        }
                    }
                    sock.write_all(&wire).unwrap();
                    // Wait for the server to close (it may send tickets).
                    let mut sink = [0u8; 4096];
                    while std::io::Read::read(&mut sock, &mut sink).is_ok_and(|n| n > 0) {}
                });
                let stream = listener.accept().await.unwrap();
                let mut conn = Conn::accepted(stream);
                conn.set_buffer_max(1 << 20);
                conn.start_tls(Arc::new(server)).unwrap();
                conn.handshake(Duration::from_secs(10)).await.unwrap();
                let mut got = Vec::new();
                while got.len() < 12 * (16 * 1024 + 10) + 66 {
                    if conn.pending().is_empty() {
                        match conn.fill(Duration::from_secs(10)).await {
                            ReadOutcome::Data => {}
                            ReadOutcome::Eof => break,
                            ReadOutcome::TimedOut => panic!("timed out"),
                            ReadOutcome::Failed(e) => panic!("read failed: {e}"),
                        }
                    }
                    got.extend_from_slice(conn.pending());
                    let n = conn.pending().len();
                    conn.consume(n);
                }
                drop(conn);
                peer.join().unwrap();
                got
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes differ");
    }
}
