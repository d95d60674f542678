//! A connection's bytes: a bounded read buffer over a glommio TcpStream.
//! Parsers borrow from `pending()`; the driver calls `consume(n)` with what
//! they used, so a command is never copied out of the buffer.
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::limits::READ_CHUNK;

/// Read buffer kept by a connection waiting idle (see [`Conn::shrink`]).
const IDLE_BUFFER: usize = 1024;
/// Grow the buffer when less than this is free for the next read.
const READ_MIN: usize = 512;

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
}

#[derive(Debug)]
pub enum ReadOutcome {
    Data,
    Eof,
    TimedOut,
    Failed(std::io::Error),
}

impl Conn {
    pub fn new(stream: TcpStream, initial: Vec<u8>) -> Conn {
        // Without TCP_NODELAY a short request/reply exchange waits for the
        // peer's delayed ACK (tens of milliseconds).
        let _ = stream.set_nodelay(true);
        let end = initial.len();
        let mut buf = initial;
        buf.reserve(READ_CHUNK);
        Conn { stream, buf, start: 0, end, timeout: None, max: 4 * READ_CHUNK }
    }

    pub fn fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    /// Admit a new connection, or tell the client why not (`refusal` gives
    /// the protocol's words for a full server and a full address) and close.
    pub async fn admit<P>(&mut self, permit: Result<P, super::limiter::Refusal>, refusal: impl Fn(super::limiter::Refusal) -> &'static [u8]) -> Option<P> {
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

    /// Read more bytes. Fails the read (as `TimedOut`) after `timeout` without data.
    pub async fn fill(&mut self, timeout: Duration) -> ReadOutcome {
        if self.timeout != Some(timeout) {
            let _ = self.stream.set_read_timeout(Some(timeout));
            self.timeout = Some(timeout);
        }
        // Keep the buffer bounded: move unconsumed bytes to the front.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end > self.max {
            // The sessions consume or reject every line long before this.
            return ReadOutcome::Failed(std::io::Error::other("read buffer limit"));
        }
        if self.buf.len() < self.end + READ_MIN {
            // Grow by exactly one chunk (resize would double the capacity).
            self.buf.reserve_exact(self.end + READ_CHUNK - self.buf.len());
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let r = self.stream.read(&mut self.buf[self.end..]).await;
        match r {
            Ok(0) => ReadOutcome::Eof,
            Ok(n) => {
                self.end += n;
                ReadOutcome::Data
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock {
                    ReadOutcome::TimedOut
                } else {
                    ReadOutcome::Failed(e)
                }
            }
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.stream.write_all(data).await
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
