//! Outbound SMTP client: a sans-I/O state machine ([`Client`]) and a glommio
//! driver ([`deliver`]) that sends a batch of messages over one connection.
//!
//! One session: greeting, EHLO (HELO if EHLO gets a 5xx), then per message
//! MAIL FROM, RCPT TO per recipient, DATA, the dot-stuffed body and `.`, with
//! RSET between messages, and QUIT at the end.
//! - **PIPELINING** (RFC 2920), when offered: `RSET` (from the second message
//!   on), `MAIL`, every `RCPT` and `DATA` go out in one write; the replies are
//!   matched in order. Without it, one command per round trip.
//! - **SIZE** (RFC 1870): `SIZE=<body length>` on MAIL; a message larger than
//!   the server's advertised maximum is not sent and fails permanently
//!   (552 5.3.4).
//! - **SMTPUTF8** (RFC 6531): a message that needs it is sent with the
//!   `SMTPUTF8` parameter; to a server without it, the message fails
//!   permanently (553 5.6.7) without being sent.
//! - **8BITMIME** (RFC 6152): an 8-bit message is sent with `BODY=8BITMIME`.
//!   To a server that does not offer 8BITMIME it is sent anyway, as most MTAs
//!   do (there is no MIME down-conversion here), and
//!   [`MessageOutcome::sent_8bit_unannounced`] is set; with
//!   [`ClientParams::require_8bitmime`] it fails permanently (554 5.6.3)
//!   instead.
//! - Replies: a 4xx/5xx to MAIL, to DATA or at the end of data applies to
//!   every recipient of the message that RCPT had not already rejected. A 421
//!   ends the session: what was not decided yet is temporary. Timeouts,
//!   connection loss and malformed replies are temporary too; the client makes
//!   up a local reply (`451 4.4.2 ...`, [`Reply::local`] set) for them.
//! - Before the session is established (connect, greeting, EHLO/HELO) a
//!   failure is a [`ConnectError`]: the host is unusable, try the next MX.
//!
//! Addresses are given bare (`user@example.com`; `""` is the null reverse
//! path) and are refused (permanently, per recipient) if they contain angle
//! brackets, spaces or control characters, so they can never inject commands.
//!
//! - **STARTTLS** (RFC 3207), with [`ClientParams::tls`] set: between the
//!   EHLO reply and the first transaction the client sends `STARTTLS`, the
//!   driver upgrades the connection on the 220 ([`Action::StartTls`]), and
//!   the client forgets the capabilities and sends EHLO again (RFC 3207 4.2).
//!   Opportunistic (RFC 7435): an MX that does not offer it, or refuses it,
//!   gets the mail in plaintext (a failed handshake is the caller's to
//!   retry without TLS). Required: no STARTTLS, a refusal or a failed
//!   handshake is a [`ConnectError`] and nothing is sent in the clear.
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpStream;

use crate::session::TlsInfo;
use crate::transport::{Conn, ReadOutcome};

pub use super::reply::{parse_reply, Reply, ReplyError};

/// Not in RFC 5321; long enough for a slow network, short enough to move on
/// to the next MX.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 5321 4.5.3.2.1: initial 220 message, 5 minutes.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(300);
/// EHLO/HELO reply; RFC 5321 gives none, we use the MAIL value.
pub const HELO_TIMEOUT: Duration = Duration::from_secs(300);
/// RFC 5321 4.5.3.2.2: MAIL command, 5 minutes.
pub const MAIL_TIMEOUT: Duration = Duration::from_secs(300);
/// RFC 5321 4.5.3.2.3: RCPT command, 5 minutes.
pub const RCPT_TIMEOUT: Duration = Duration::from_secs(300);
/// RFC 5321 4.5.3.2.4: DATA initiation, 2 minutes.
pub const DATA_INIT_TIMEOUT: Duration = Duration::from_secs(120);
/// RFC 5321 4.5.3.2.5: each data block written, 3 minutes.
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
/// RFC 5321 4.5.3.2.6: reply to the final `.`, 10 minutes.
pub const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);
/// TLS handshake after the 220 to STARTTLS (RFC 3207 gives none; Postfix
/// waits 300 s too).
pub const TLS_TIMEOUT: Duration = Duration::from_secs(300);
/// RSET reply; RFC 5321 gives none, we use the MAIL value.
pub const RSET_TIMEOUT: Duration = Duration::from_secs(300);
/// QUIT reply; nothing depends on it, so do not wait long.
pub const QUIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on one reply (all lines).
pub const REPLY_BYTES_MAX: usize = 16 * 1024;

/// Timeouts of each phase. [`Timeouts::default`] is RFC 5321 4.5.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub helo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_init: Duration,
    /// Each write of the message body.
    pub data_block: Duration,
    pub data_end: Duration,
    pub rset: Duration,
    pub quit: Duration,
    /// The STARTTLS reply and the handshake after it, each.
    pub tls: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            greeting: GREETING_TIMEOUT,
            helo: HELO_TIMEOUT,
            mail: MAIL_TIMEOUT,
            rcpt: RCPT_TIMEOUT,
            data_init: DATA_INIT_TIMEOUT,
            data_block: DATA_BLOCK_TIMEOUT,
            data_end: DATA_END_TIMEOUT,
            rset: RSET_TIMEOUT,
            quit: QUIT_TIMEOUT,
            tls: TLS_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// The same timeout everywhere (tests).
    pub fn all(d: Duration) -> Timeouts {
        Timeouts {
            connect: d,
            greeting: d,
            helo: d,
            mail: d,
            rcpt: d,
            data_init: d,
            data_block: d,
            data_end: d,
            rset: d,
            quit: d,
            tls: d,
        }
    }
}

/// Settings of one session.
#[derive(Debug, Clone)]
pub struct ClientParams {
    /// Our name in EHLO/HELO: the host's FQDN.
    pub helo_name: String,
    pub timeouts: Timeouts,
    /// Fail 8-bit messages to servers without 8BITMIME instead of sending them.
    pub require_8bitmime: bool,
    /// Bound on one reply; a longer one breaks the session (temporary).
    pub max_reply_bytes: usize,
    /// STARTTLS: `None` never.
    pub tls: Option<SessionTls>,
}

/// How one session uses STARTTLS.
#[derive(Debug, Clone)]
pub struct SessionTls {
    /// Verifying or not: the caller chose by policy.
    pub config: Arc<rustls::ClientConfig>,
    /// The MX host's name (SNI, and what a verifying config checks).
    pub name: rustls_pki_types::ServerName<'static>,
    /// Never send in the clear: no STARTTLS offered or a refused or failed
    /// upgrade ends the session with a [`ConnectError`].
    pub required: bool,
}

impl ClientParams {
    pub fn new(helo_name: impl Into<String>) -> ClientParams {
        ClientParams {
            helo_name: helo_name.into(),
            timeouts: Timeouts::default(),
            require_8bitmime: false,
            max_reply_bytes: REPLY_BYTES_MAX,
            tls: None,
        }
    }
}

/// A message to send. `B` is anything that derefs to the body bytes
/// (`Arc<[u8]>`, `&[u8]`, `Vec<u8>`, a storage handle): the body is never
/// copied whole. The body is the message as stored, headers and all, with
/// CRLF line endings (a bare LF is sent as CRLF). No `.` terminator, no
/// dot-stuffing: the client does both.
#[derive(Debug, Clone)]
pub struct OutboundMessage<B = Arc<[u8]>> {
    /// Bare address, `""` for the null reverse path.
    pub reverse_path: String,
    /// Bare addresses, all for the host this session talks to.
    pub recipients: Vec<String>,
    pub body: B,
    /// Internationalized addresses or headers (RFC 6531).
    pub needs_smtputf8: bool,
    /// The body has octets above 127 (RFC 6152).
    pub is_8bit: bool,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// Accepted by the server after the final `.` (its reply, e.g. a queue id).
    Delivered { reply: Reply },
    /// Try again later (this host or another MX).
    Temporary { reply: Reply },
    /// Bounce.
    Permanent { reply: Reply },
}

impl RcptOutcome {
    /// 2xx: delivered; 5xx: permanent; anything else: temporary.
    pub fn from_reply(reply: Reply) -> RcptOutcome {
        match reply.class() {
            2 => RcptOutcome::Delivered { reply },
            5 => RcptOutcome::Permanent { reply },
            _ => RcptOutcome::Temporary { reply },
        }
    }

    pub fn reply(&self) -> &Reply {
        match self {
            RcptOutcome::Delivered { reply }
            | RcptOutcome::Temporary { reply }
            | RcptOutcome::Permanent { reply } => reply,
        }
    }

    pub fn is_delivered(&self) -> bool {
        matches!(self, RcptOutcome::Delivered { .. })
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, RcptOutcome::Permanent { .. })
    }

    pub fn is_temporary(&self) -> bool {
        matches!(self, RcptOutcome::Temporary { .. })
    }
}

/// What happened to one message: one outcome per recipient, in the order of
/// [`OutboundMessage::recipients`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOutcome {
    pub recipients: Vec<RcptOutcome>,
    /// The message is 8-bit and the server did not offer 8BITMIME; it was
    /// sent anyway (see the module documentation).
    pub sent_8bit_unannounced: bool,
}

/// The session could not be established with this host. Always temporary for
/// the messages: try the next MX host, or retry later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("timed out waiting for the {0}")]
    Timeout(&'static str),
    #[error("connection closed during the {0}")]
    Closed(&'static str),
    #[error("I/O error during the {phase}: {reason}")]
    Io { phase: &'static str, reason: String },
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The greeting was not 220 (a 554 means "no service here").
    #[error("server greeting: {0}")]
    Greeting(Reply),
    /// EHLO failed and HELO too (or EHLO got a 4xx).
    #[error("EHLO/HELO refused: {0}")]
    Helo(Reply),
    /// TLS is required and the server does not offer STARTTLS, or refused it.
    #[error("TLS required: {0}")]
    TlsUnavailable(String),
    /// The TLS handshake failed (certificate, protocol, timeout).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

impl ConnectError {
    /// The server's reply, or a local one describing the failure (for a
    /// delay notice's Diagnostic-Code).
    pub fn reply(&self) -> Reply {
        match self {
            ConnectError::Greeting(r) | ConnectError::Helo(r) => r.clone(),
            // RFC 3463: 4.7.4 security features not supported, 4.7.5
            // cryptographic failure.
            ConnectError::TlsUnavailable(_) => Reply::local(451, format!("4.7.4 {self}")),
            ConnectError::Tls(_) => Reply::local(451, format!("4.7.5 {self}")),
            other => Reply::local(451, format!("4.4.1 {other}")),
        }
    }
}

/// What the server offered in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// EHLO succeeded (false after a HELO fallback).
    pub esmtp: bool,
    pub pipelining: bool,
    /// SIZE offered.
    pub size: bool,
    /// Its fixed maximum; `None` or `Some(0)`: no limit announced.
    pub size_limit: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub enhanced_status_codes: bool,
    pub chunking: bool,
    pub starttls: bool,
}

impl Capabilities {
    /// Read the keywords of a positive EHLO reply (the first line is the
    /// greeting).
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities {
            esmtp: true,
            ..Capabilities::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    caps.size = true;
                    caps.size_limit = words.next().and_then(|n| n.parse().ok());
                }
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "CHUNKING" => caps.chunking = true,
                "STARTTLS" => caps.starttls = true,
                _ => {}
            }
        }
        caps
    }
}

/// What the state machine needs to know of a message (no body).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub reverse_path: String,
    pub recipients: Vec<String>,
    /// Body length in octets (for SIZE).
    pub size: u64,
    pub needs_smtputf8: bool,
    pub is_8bit: bool,
}

impl Envelope {
    pub fn of<B: AsRef<[u8]>>(m: &OutboundMessage<B>) -> Envelope {
        Envelope {
            reverse_path: m.reverse_path.clone(),
            recipients: m.recipients.clone(),
            size: m.body.as_ref().len() as u64,
            needs_smtputf8: m.needs_smtputf8,
            is_8bit: m.is_8bit,
        }
    }
}

/// What the driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write [`Client::output`] completely, then call [`Client::sent`].
    Send { timeout: Duration },
    /// Write message `message`'s body through [`DotStuffed`] (which ends with
    /// the `.` line), each write within `timeout`; then call [`Client::sent`].
    SendBody { message: usize, timeout: Duration },
    /// Read; pass the bytes to [`Client::receive`]. No reply within `timeout`:
    /// call [`Client::fail`] with [`Failure::Timeout`].
    Receive { timeout: Duration },
    /// The server said 220 to STARTTLS: run the TLS handshake (dropping any
    /// byte received before it) within `timeout`, then call
    /// [`Client::tls_started`], or [`Client::fail`] with [`Failure::Tls`].
    StartTls { timeout: Duration },
    /// Close the connection; take the result with [`Client::finish`].
    Close,
}

/// A transport failure reported by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Timeout,
    Closed,
    Io(String),
    Protocol(String),
    /// The TLS handshake failed.
    Tls(String),
}

impl Failure {
    fn from_io(e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Failure::Closed,
            _ => Failure::Io(e.to_string()),
        }
    }
}

/// The reply being waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    DataEnd,
    /// The `.` sent after a 354 that came with no accepted recipient.
    EmptyDataEnd,
    Quit,
}

impl Expect {
    fn phase(self) -> &'static str {
        match self {
            Expect::Greeting => "greeting",
            Expect::Ehlo => "EHLO reply",
            Expect::Helo => "HELO reply",
            Expect::StartTls => "STARTTLS reply",
            Expect::Rset => "RSET reply",
            Expect::Mail => "MAIL FROM reply",
            Expect::Rcpt(_) => "RCPT TO reply",
            Expect::Data => "DATA reply",
            Expect::DataEnd | Expect::EmptyDataEnd => "reply to end of data",
            Expect::Quit => "QUIT reply",
        }
    }
}

/// The message being sent.
#[derive(Debug)]
struct Txn {
    msg: usize,
    pipelined: bool,
    /// Recipient indexes to send RCPT for (valid addresses), and how many of
    /// them have been sent (without pipelining).
    to_send: Vec<usize>,
    next: usize,
    mail_sent: bool,
    mail_ok: bool,
    mail_failure: Option<Reply>,
    accepted: Vec<usize>,
}

/// The sans-I/O session: feed it replies and transport events, follow its
/// [`Action`]s. One instance per connection.
#[derive(Debug)]
pub struct Client {
    params: ClientParams,
    envelopes: Vec<Envelope>,
    results: Vec<Vec<Option<RcptOutcome>>>,
    unannounced: Vec<bool>,
    caps: Capabilities,
    out: Vec<u8>,
    out_timeout: Duration,
    body: Option<usize>,
    expect: VecDeque<Expect>,
    txn: Option<Txn>,
    next_msg: usize,
    transactions: usize,
    ready: bool,
    error: Option<ConnectError>,
    done: bool,
    /// The 220 to STARTTLS came; the driver is to upgrade.
    upgrade: bool,
    /// TLS is on (EHLO was sent again inside it).
    tls_active: bool,
}

fn valid_address(a: &str) -> bool {
    a.len() <= 512
        && a.bytes()
            .all(|b| b > b' ' && b != 0x7f && b != b'<' && b != b'>')
}

fn bare(a: &str) -> &str {
    a.strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(a)
}

impl Client {
    /// A session that will send `envelopes` in order, starting by waiting for
    /// the greeting.
    pub fn new(params: ClientParams, envelopes: Vec<Envelope>) -> Client {
        let results = envelopes
            .iter()
            .map(|e| vec![None; e.recipients.len()])
            .collect();
        let n = envelopes.len();
        let mut c = Client {
            params,
            envelopes,
            results,
            unannounced: vec![false; n],
            caps: Capabilities::default(),
            out: Vec::new(),
            out_timeout: Duration::ZERO,
            body: None,
            expect: VecDeque::new(),
            txn: None,
            next_msg: 0,
            transactions: 0,
            ready: false,
            error: None,
            done: false,
            upgrade: false,
            tls_active: false,
        };
        c.expect.push_back(Expect::Greeting);
        c
    }

    /// The server's capabilities (empty until EHLO succeeds).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The next thing to do.
    pub fn action(&self) -> Action {
        if self.done {
            Action::Close
        } else if !self.out.is_empty() {
            Action::Send {
                timeout: self.out_timeout,
            }
        } else if self.upgrade {
            Action::StartTls {
                timeout: self.params.timeouts.tls,
            }
        } else if let Some(message) = self.body {
            Action::SendBody {
                message,
                timeout: self.params.timeouts.data_block,
            }
        } else if let Some(e) = self.expect.front() {
            Action::Receive {
                timeout: self.timeout(*e),
            }
        } else {
            Action::Close
        }
    }

    /// The session runs inside TLS.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// The handshake asked for by [`Action::StartTls`] completed: forget
    /// what the server said in plaintext and greet it again (RFC 3207 4.2).
    pub fn tls_started(&mut self) {
        if !self.upgrade {
            return;
        }
        self.upgrade = false;
        self.tls_active = true;
        self.caps = Capabilities::default();
        let ehlo = format!("EHLO {}", self.params.helo_name);
        self.command(&[&ehlo], Expect::Ehlo);
    }

    /// Bytes to write for [`Action::Send`].
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The write asked for by [`Action::Send`] or [`Action::SendBody`] is done.
    pub fn sent(&mut self) {
        if !self.out.is_empty() {
            self.out.clear();
        } else {
            self.body = None;
        }
    }

    /// Bytes received: consumes at most one complete reply from the start of
    /// `data` and returns how many bytes it used (0: incomplete, read more).
    pub fn receive(&mut self, data: &[u8]) -> usize {
        if self.done {
            return data.len();
        }
        match parse_reply(data, self.params.max_reply_bytes) {
            Ok(None) => 0,
            Ok(Some((reply, used))) => {
                self.on_reply(reply);
                used
            }
            Err(e) => {
                self.fail(Failure::Protocol(e.to_string()));
                data.len()
            }
        }
    }

    /// The transport failed; the session is over.
    pub fn fail(&mut self, failure: Failure) {
        if self.done {
            return;
        }
        let phase = if self.body.is_some() && self.out.is_empty() {
            "message body"
        } else {
            self.expect.front().map(|e| e.phase()).unwrap_or("session")
        };
        if self.expect.front() == Some(&Expect::Quit) {
            // Everything was decided already.
            self.close();
            return;
        }
        if !self.ready {
            self.error = Some(match failure {
                Failure::Timeout => ConnectError::Timeout(phase),
                Failure::Closed => ConnectError::Closed(phase),
                Failure::Io(reason) => ConnectError::Io { phase, reason },
                Failure::Protocol(reason) => ConnectError::Protocol(reason),
                Failure::Tls(reason) => ConnectError::Tls(reason),
            });
            self.upgrade = false;
            self.close();
            return;
        }
        let what = match &failure {
            Failure::Timeout => format!("timed out waiting for the {phase}"),
            Failure::Closed => format!("connection lost during the {phase}"),
            Failure::Io(reason) => format!("I/O error during the {phase}: {reason}"),
            Failure::Protocol(reason) => format!("protocol error during the {phase}: {reason}"),
            Failure::Tls(reason) => format!("TLS failure during the {phase}: {reason}"),
        };
        self.abort(Reply::local(451, format!("4.4.2 {what}")));
    }

    /// The per-message outcomes, or why no session could be established.
    pub fn finish(self) -> Result<Vec<MessageOutcome>, ConnectError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !self.ready {
            return Err(ConnectError::Closed("greeting"));
        }
        Ok(self
            .results
            .into_iter()
            .zip(self.unannounced)
            .map(|(rcpts, unannounced)| MessageOutcome {
                recipients: rcpts
                    .into_iter()
                    .map(|r| {
                        r.unwrap_or_else(|| RcptOutcome::Temporary {
                            reply: Reply::local(451, "4.4.2 not attempted: session ended"),
                        })
                    })
                    .collect(),
                sent_8bit_unannounced: unannounced,
            })
            .collect())
    }

    fn timeout(&self, e: Expect) -> Duration {
        let t = &self.params.timeouts;
        match e {
            Expect::Greeting => t.greeting,
            Expect::Ehlo | Expect::Helo => t.helo,
            Expect::StartTls => t.tls,
            Expect::Rset => t.rset,
            Expect::Mail => t.mail,
            Expect::Rcpt(_) => t.rcpt,
            Expect::Data => t.data_init,
            Expect::DataEnd | Expect::EmptyDataEnd => t.data_end,
            Expect::Quit => t.quit,
        }
    }

    fn command(&mut self, parts: &[&str], expect: Expect) {
        if self.out.is_empty() {
            self.out_timeout = self.timeout(expect);
        }
        for p in parts {
            self.out.extend_from_slice(p.as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
        self.expect.push_back(expect);
    }

    fn close(&mut self) {
        self.done = true;
        self.out.clear();
        self.body = None;
        self.expect.clear();
    }

    fn set(&mut self, msg: usize, rcpt: usize, reply: &Reply) {
        self.results[msg][rcpt] = Some(RcptOutcome::from_reply(reply.clone()));
    }

    /// End the session: the current message's undecided recipients and every
    /// message not started get `reply` (made temporary if it is not a 5xx).
    fn abort(&mut self, reply: Reply) {
        let reply = if reply.is_permanent() || reply.is_transient() {
            reply
        } else {
            Reply { code: 451, ..reply }
        };
        if let Some(txn) = self.txn.take() {
            for i in 0..self.results[txn.msg].len() {
                if let Some(mail) = &txn.mail_failure {
                    if txn.to_send.contains(&i) {
                        let mail = mail.clone();
                        self.set(txn.msg, i, &mail);
                    }
                } else if self.results[txn.msg][i].is_none() || txn.accepted.contains(&i) {
                    self.set(txn.msg, i, &reply);
                }
            }
        }
        let not_attempted = Reply {
            lines: reply
                .lines
                .iter()
                .map(|l| format!("{l} (not attempted)"))
                .collect(),
            ..reply.clone()
        };
        for m in self.next_msg..self.envelopes.len() {
            for i in 0..self.results[m].len() {
                self.set(m, i, &not_attempted);
            }
        }
        self.next_msg = self.envelopes.len();
        self.close();
    }

    fn on_reply(&mut self, reply: Reply) {
        let Some(expect) = self.expect.pop_front() else {
            self.fail(Failure::Protocol(
                "reply with no command outstanding".into(),
            ));
            return;
        };
        match expect {
            Expect::Greeting => {
                if reply.code == 220 {
                    let ehlo = format!("EHLO {}", self.params.helo_name);
                    self.command(&[&ehlo], Expect::Ehlo);
                } else {
                    self.error = Some(ConnectError::Greeting(reply));
                    self.close();
                }
                return;
            }
            Expect::Ehlo => {
                if reply.is_positive() {
                    self.caps = Capabilities::from_ehlo(&reply);
                    if let Some(tls) = self.params.tls.as_ref().filter(|_| !self.tls_active) {
                        if self.caps.starttls {
                            // RFC 3207 4: STARTTLS ends a pipelined group; it
                            // goes alone and waits for its reply.
                            self.command(&["STARTTLS"], Expect::StartTls);
                            return;
                        }
                        if tls.required {
                            self.error = Some(ConnectError::TlsUnavailable(
                                "the server does not offer STARTTLS".into(),
                            ));
                            self.close();
                            return;
                        }
                    }
                    self.ready = true;
                    self.start_next();
                } else if reply.is_permanent() {
                    let helo = format!("HELO {}", self.params.helo_name);
                    self.command(&[&helo], Expect::Helo);
                } else {
                    self.error = Some(ConnectError::Helo(reply));
                    self.close();
                }
                return;
            }
            Expect::Helo => {
                if reply.is_positive()
                    && !self.tls_active
                    && self.params.tls.as_ref().is_some_and(|t| t.required)
                {
                    self.error = Some(ConnectError::TlsUnavailable(
                        "the server does not speak ESMTP (no STARTTLS)".into(),
                    ));
                    self.close();
                } else if reply.is_positive() {
                    self.caps = Capabilities::default();
                    self.ready = true;
                    self.start_next();
                } else {
                    self.error = Some(ConnectError::Helo(reply));
                    self.close();
                }
                return;
            }
            Expect::StartTls => {
                let required = self.params.tls.as_ref().is_some_and(|t| t.required);
                if reply.code == 220 {
                    self.upgrade = true;
                } else if required || reply.code == 421 {
                    self.error = Some(ConnectError::TlsUnavailable(format!(
                        "STARTTLS refused: {reply}"
                    )));
                    self.close();
                } else {
                    // RFC 3207 4: a refusal leaves the session as it was;
                    // an opportunistic client goes on in plaintext.
                    self.ready = true;
                    self.start_next();
                }
                return;
            }
            Expect::Quit => {
                self.close();
                return;
            }
            Expect::Rset => {
                if !reply.is_positive() {
                    self.abort(reply);
                    return;
                }
                if let Some(t) = &self.txn {
                    if !t.pipelined && !t.mail_sent {
                        self.send_mail();
                    }
                }
            }
            Expect::Mail => {
                let Some(t) = self.txn.as_mut() else {
                    return self.fail(Failure::Protocol("no transaction".into()));
                };
                t.mail_ok = reply.is_positive();
                if !t.mail_ok {
                    t.mail_failure = Some(reply.clone());
                }
                if !t.pipelined {
                    if t.mail_ok {
                        self.send_next_rcpt();
                    } else {
                        self.finish_txn();
                    }
                }
            }
            Expect::Rcpt(i) => {
                let Some(t) = self.txn.as_mut() else {
                    return self.fail(Failure::Protocol("no transaction".into()));
                };
                let msg = t.msg;
                if reply.is_positive() {
                    t.accepted.push(i);
                } else {
                    self.set(msg, i, &reply);
                }
                if !self.txn.as_ref().is_some_and(|t| t.pipelined) {
                    self.send_next_rcpt();
                }
            }
            Expect::Data => {
                let Some(t) = self.txn.as_ref() else {
                    return self.fail(Failure::Protocol("no transaction".into()));
                };
                let (msg, ok) = (t.msg, t.mail_ok && !t.accepted.is_empty());
                if reply.code == 354 {
                    if ok {
                        self.body = Some(msg);
                        self.expect.push_back(Expect::DataEnd);
                    } else {
                        // RFC 2920 3.1: DATA accepted with no valid recipient;
                        // end it with an empty message.
                        self.command(&["."], Expect::EmptyDataEnd);
                    }
                } else {
                    if ok {
                        for i in t.accepted.clone() {
                            self.set(msg, i, &reply);
                        }
                    }
                    self.finish_txn();
                }
            }
            Expect::DataEnd => {
                if let Some(t) = self.txn.as_ref() {
                    let msg = t.msg;
                    for i in t.accepted.clone() {
                        self.set(msg, i, &reply);
                    }
                }
                self.finish_txn();
            }
            Expect::EmptyDataEnd => self.finish_txn(),
        }
        if reply.code == 421 && !self.done {
            // The server is closing the connection.
            self.abort(reply);
        }
    }

    fn send_mail(&mut self) {
        let Some(t) = self.txn.as_mut() else { return };
        t.mail_sent = true;
        let env = &self.envelopes[t.msg];
        let mut cmd = format!("MAIL FROM:<{}>", bare(&env.reverse_path));
        if self.caps.size {
            cmd.push_str(&format!(" SIZE={}", env.size));
        }
        if env.is_8bit && self.caps.eight_bit_mime {
            cmd.push_str(" BODY=8BITMIME");
        }
        if env.needs_smtputf8 && self.caps.smtputf8 {
            cmd.push_str(" SMTPUTF8");
        }
        let pipelined = t.pipelined;
        let rcpts: Vec<usize> = t.to_send.clone();
        let msg = t.msg;
        self.command(&[&cmd], Expect::Mail);
        if pipelined {
            for i in rcpts {
                let to = bare(&self.envelopes[msg].recipients[i]).to_string();
                self.command(&["RCPT TO:<", &to, ">"], Expect::Rcpt(i));
            }
            self.command(&["DATA"], Expect::Data);
        }
    }

    /// Without pipelining: the next RCPT, or DATA, or the end of the message.
    fn send_next_rcpt(&mut self) {
        let Some(t) = self.txn.as_mut() else { return };
        if let Some(&i) = t.to_send.get(t.next) {
            t.next += 1;
            let to = bare(&self.envelopes[t.msg].recipients[i]).to_string();
            self.command(&["RCPT TO:<", &to, ">"], Expect::Rcpt(i));
        } else if !t.accepted.is_empty() {
            self.command(&["DATA"], Expect::Data);
        } else {
            self.finish_txn();
        }
    }

    fn finish_txn(&mut self) {
        if let Some(t) = self.txn.take() {
            let fallback = t
                .mail_failure
                .unwrap_or_else(|| Reply::local(451, "4.4.2 no reply for this recipient"));
            for i in 0..self.results[t.msg].len() {
                if self.results[t.msg][i].is_none() || (!t.mail_ok && t.to_send.contains(&i)) {
                    self.set(t.msg, i, &fallback);
                }
            }
        }
        self.start_next();
    }

    /// Start the next sendable message, deciding locally the ones that cannot
    /// be sent to this server; QUIT when none is left.
    fn start_next(&mut self) {
        while self.next_msg < self.envelopes.len() {
            let m = self.next_msg;
            self.next_msg += 1;
            let env = &self.envelopes[m];
            let refusal = if !env.reverse_path.is_empty() && !valid_address(bare(&env.reverse_path))
            {
                Some(Reply::local(553, "5.1.7 invalid sender address syntax"))
            } else if self
                .caps
                .size_limit
                .is_some_and(|max| max > 0 && env.size > max)
            {
                Some(Reply::local(
                    552,
                    format!(
                        "5.3.4 message size {} exceeds the server's limit of {}",
                        env.size,
                        self.caps.size_limit.unwrap_or(0)
                    ),
                ))
            } else if env.needs_smtputf8 && !self.caps.smtputf8 {
                Some(Reply::local(
                    553,
                    "5.6.7 the message needs SMTPUTF8, which the server does not support",
                ))
            } else if env.is_8bit && !self.caps.eight_bit_mime && self.params.require_8bitmime {
                Some(Reply::local(
                    554,
                    "5.6.3 8-bit message and the server does not support 8BITMIME",
                ))
            } else {
                None
            };
            if let Some(reply) = refusal {
                for i in 0..self.results[m].len() {
                    self.set(m, i, &reply);
                }
                continue;
            }
            let mut to_send = Vec::new();
            for (i, r) in env.recipients.iter().enumerate() {
                if valid_address(bare(r)) {
                    to_send.push(i);
                } else {
                    self.results[m][i] = Some(RcptOutcome::Permanent {
                        reply: Reply::local(553, "5.1.3 invalid recipient address syntax"),
                    });
                }
            }
            if to_send.is_empty() {
                continue;
            }
            self.unannounced[m] = env.is_8bit && !self.caps.eight_bit_mime;
            let pipelined = self.caps.pipelining;
            self.txn = Some(Txn {
                msg: m,
                pipelined,
                to_send,
                next: 0,
                mail_sent: false,
                mail_ok: false,
                mail_failure: None,
                accepted: Vec::new(),
            });
            self.transactions += 1;
            if self.transactions > 1 {
                self.command(&["RSET"], Expect::Rset);
                if !pipelined {
                    return; // MAIL goes after the RSET reply.
                }
            }
            self.send_mail();
            return;
        }
        self.command(&["QUIT"], Expect::Quit);
    }
}

/// A body as sent after DATA: dot-stuffed (RFC 5321 4.5.2), bare LF and
/// bare CR turned into CRLF, lines longer than 998 octets broken with
/// CRLF SP (RFC 5321 4.5.3.1.6), ending with `CRLF.CRLF`
/// (`protocol::pop3::stuff::stuff_lines`, shared with POP3 RETR). Yields
/// slices of the body between the points where something is inserted, so
/// the body is never copied; the inserted pieces are static.
#[derive(Debug, Clone)]
pub struct DotStuffed<'a>(std::vec::IntoIter<&'a [u8]>);

impl<'a> DotStuffed<'a> {
    pub fn new(body: &'a [u8]) -> DotStuffed<'a> {
        let mut pieces = Vec::new();
        crate::protocol::pop3::stuff::stuff_lines(
            body,
            Some(crate::protocol::pop3::stuff::SMTP_LINE_MAX),
            &mut |p| pieces.push(p),
        );
        DotStuffed(pieces.into_iter())
    }
}

impl<'a> Iterator for DotStuffed<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.0.next()
    }
}

/// Pieces shorter than this are gathered into one write; longer body slices
/// are written directly.
const GATHER_MAX: usize = 16 * 1024;

/// The session's transport: the server side's [`Conn`] (plain, or TLS once
/// STARTTLS succeeded), with a write timeout per write.
struct Io {
    conn: Conn,
}

impl Io {
    async fn write(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        self.conn
            .stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        self.conn.write_all(data).await
    }

    async fn write_body(&mut self, body: &[u8], timeout: Duration) -> io::Result<()> {
        let mut gather: Vec<u8> = Vec::with_capacity(GATHER_MAX);
        for piece in DotStuffed::new(body) {
            if piece.len() >= GATHER_MAX / 4 {
                if !gather.is_empty() {
                    self.write(&gather, timeout).await?;
                    gather.clear();
                }
                self.write(piece, timeout).await?;
            } else {
                if gather.len() + piece.len() > GATHER_MAX {
                    self.write(&gather, timeout).await?;
                    gather.clear();
                }
                gather.extend_from_slice(piece);
            }
        }
        if !gather.is_empty() {
            self.write(&gather, timeout).await?;
        }
        Ok(())
    }
}

/// What one session did: per-message outcomes and, when it ran over TLS,
/// the protocol version and cipher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub outcomes: Vec<MessageOutcome>,
    pub tls: Option<TlsInfo>,
}

/// Deliver `batch` to the SMTP server at `target` over one connection. All
/// messages should be for recipients this host handles (one MX host).
///
/// `Err` when no session could be established (connect, greeting,
/// EHLO/HELO, a required or failed STARTTLS): nothing was sent, try the
/// next MX. Otherwise one [`MessageOutcome`] per message, in order.
pub async fn deliver<B: AsRef<[u8]>>(
    target: SocketAddr,
    params: ClientParams,
    batch: &[OutboundMessage<B>],
) -> Result<Delivery, ConnectError> {
    let connect_timeout = params.timeouts.connect.max(Duration::from_millis(1));
    let tls = params.tls.clone();
    let max_reply = params.max_reply_bytes;
    let mut client = Client::new(params, batch.iter().map(Envelope::of).collect());
    let stream = TcpStream::connect_timeout(target, connect_timeout)
        .await
        .map_err(|e| ConnectError::Connect {
            addr: target,
            reason: e.to_string(),
        })?;
    // Conn sets TCP_NODELAY: commands are small and each waits for its reply.
    let mut io = Io {
        conn: Conn::new(stream, Vec::new()),
    };
    io.conn
        .set_buffer_max(max_reply + crate::limits::READ_CHUNK);
    loop {
        match client.action() {
            Action::Close => break,
            Action::Send { timeout } => match io.write(client.output(), timeout).await {
                Ok(()) => client.sent(),
                Err(e) => client.fail(Failure::from_io(&e)),
            },
            Action::SendBody { message, timeout } => {
                match io.write_body(batch[message].body.as_ref(), timeout).await {
                    Ok(()) => client.sent(),
                    Err(e) => client.fail(Failure::from_io(&e)),
                }
            }
            Action::StartTls { timeout } => {
                let Some(tls) = tls.as_ref() else {
                    client.fail(Failure::Protocol(
                        "STARTTLS without a TLS configuration".into(),
                    ));
                    continue;
                };
                let started = match io
                    .conn
                    .start_tls_client(tls.config.clone(), tls.name.clone())
                {
                    Ok(_dropped) => io.conn.handshake(timeout).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match started {
                    Ok(()) => client.tls_started(),
                    Err(e) => client.fail(Failure::Tls(e)),
                }
            }
            Action::Receive { timeout } => {
                let used = client.receive(io.conn.pending());
                if used > 0 {
                    io.conn.consume(used);
                    continue;
                }
                match io.conn.fill(timeout).await {
                    ReadOutcome::Data => {}
                    ReadOutcome::Eof => client.fail(Failure::Closed),
                    ReadOutcome::TimedOut => client.fail(Failure::Timeout),
                    ReadOutcome::Failed(e) => client.fail(Failure::from_io(&e)),
                }
            }
        }
    }
    let info = if client.tls_active() {
        io.conn.tls_info()
    } else {
        None
    };
    drop(io);
    client.finish().map(|outcomes| Delivery {
        outcomes,
        tls: info,
    })
}

#[cfg(test)]
mod tests;
