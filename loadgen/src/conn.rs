//! Buffered TCP connection shared by the SMTP, POP3 and IMAP clients.
//!
//! Reads go through one growable buffer; lines are found with `memchr`, so
//! parsing never walks the input byte by byte in Rust code. Every read and
//! write is bounded by the connection's inactivity timeout.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest line accepted from a server before the reply is treated as broken.
pub const MAX_LINE: usize = 1 << 20;
const INITIAL_BUF: usize = 16 * 1024;

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Inactivity timeout applied to each read and write.
    pub timeout: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timeout")
}

/// Short stable name for an I/O error, used as the error-count key.
pub fn io_error_key(e: &io::Error) -> String {
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

impl Conn {
    /// TCP connect with a timeout; Nagle is disabled because every command
    /// group is written with a single write.
    pub async fn connect(addr: &str, timeout: Duration) -> io::Result<Conn> {
        Conn::connect_with(addr, timeout, INITIAL_BUF).await
    }

    /// Connect with a given initial read buffer size (it grows when a single
    /// line does not fit). Small buffers suit many mostly idle sessions.
    pub async fn connect_with(addr: &str, timeout: Duration, buf_size: usize) -> io::Result<Conn> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => return Err(timed_out()),
        };
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: vec![0; buf_size.max(256)],
            start: 0,
            end: 0,
            timeout,
            bytes_in: 0,
            bytes_out: 0,
        })
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        // Fast path: most command groups fit in the socket buffer at once.
        let mut off = 0;
        match self.stream.try_write(data) {
            Ok(n) => off = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if off < data.len() {
            match tokio::time::timeout(self.timeout, self.stream.write_all(&data[off..])).await {
                Ok(r) => r?,
                Err(_) => return Err(timed_out()),
            }
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
        let n = match self.stream.try_read(&mut self.buf[self.end..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(
                    self.timeout,
                    self.stream.read(&mut self.buf[self.end..]),
                )
                .await
                {
                    Ok(r) => r?,
                    Err(_) => return Err(timed_out()),
                }
            }
            Err(e) => return Err(e),
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
