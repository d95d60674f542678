//! Drives one IMAP connection (RFC 3501 plus IDLE, UIDPLUS, MOVE, LITERAL+,
//! NAMESPACE, ID, ENABLE, UNSELECT, SPECIAL-USE, CHILDREN, LIST-EXTENDED,
//! LIST-STATUS, CONDSTORE, SASL-IR, ESEARCH, SEARCHRES).
//!
//! The framer (`protocol::imap::Framer`) finds complete commands in the read
//! buffer (asking for `+` continuations for synchronizing literals) and the
//! parser borrows from it; nothing is copied out of the buffer, except APPEND
//! literals of `memory.spool_threshold` octets or more: the framer diverts
//! those, and they go through the shard's spool budget like SMTP DATA (RAM
//! up to the threshold, then an unnamed spool file; over budget, the APPEND
//! gets `NO [UNAVAILABLE]`). Before login the framer's limits are a few KiB (an ID
//! command may be as large as RFC 2971 allows, about 63 KiB). After
//! LOGIN/AUTHENTICATE the connection moves to the shard owning the account
//! (like POP3), so every mailbox operation is a local call into the store.
//! Message bytes go out as slices of the segment mappings (`Out` writes
//! them, or decodes a BINARY part, between the response text at flush).
use std::borrow::Cow;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpStream;

use crate::mime;
use crate::protocol::imap::encode;
use crate::protocol::imap::{
    parse_command, parse_sasl_response, rejoin_diverted, Code, Command, CommandBody, FetchAttr,
    Flag, Frame, Framer, FramingLimits, ListReturn, Mailbox as MailboxArg, Qresync, SaslResponse,
    SearchReturn, SequenceArg, SequenceSet, Status, StatusItem, StoreMode,
};
use crate::session::fetch::{self, Piece};
use crate::session::imap::{self as logic, View, DELIMITER};
use crate::session::mailboxes::{self, special_use_code, status_items};
use crate::session::search::{self, Hit};
use crate::session::store;
use crate::session::transfer;
use crate::storage::index::{self, flag, special, Account, Mailbox};
use crate::storage::record::Op;
use crate::storage::{Body, StorageError};

use super::limiter::{Permit, Refusal};
use super::shard::{unix_now, ConnCount, Login, Shard, ShardMsg};
use super::spool::{Spooler, Track};
use crate::transport::{Conn, ReadOutcome};

/// RFC 3501 5.4: an autologout timer of at least 30 minutes once logged in.
pub const IMAP_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60 + 60);
/// Before login a client gets less patience.
pub const IMAP_PREAUTH_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest AUTHENTICATE continuation line we buffer.
const SASL_LINE_MAX: usize = 8 * 1024;

/// Before login, after IMAP4rev1, IMAP4rev2 and the login words of [`Session::caps_preauth`].
const CAPS_PREAUTH_BASE: &[&str] = &["LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"];
const CAPS: &[&str] = &[
    "IMAP4rev1",
    "IMAP4rev2",
    "LITERAL+",
    "SASL-IR",
    "AUTH=PLAIN",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "UNSELECT",
    "SPECIAL-USE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "BINARY",
    "CONDSTORE",
    "QRESYNC",
    "COMPRESS=DEFLATE",
    "ESEARCH",
    "SEARCHRES",
    "STATUS=SIZE",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "SORT",
    "ESORT",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "OBJECTID",
];

/// The one quota root of every account (RFC 9208 section 3.2).
const QUOTA_ROOT: &[u8] = b"";

/// Response bytes plus pieces of messages written in at given offsets of
/// `buf` when it is flushed, so that a FETCH of many large messages holds
/// references to the mappings, not copies.
struct Out {
    buf: Vec<u8>,
    splices: Vec<(usize, Piece<Body>)>,
}

/// NUL-to-space copies are made this many octets at a time.
const NUL_CHUNK: usize = 64 * 1024;

impl Piece<Body> {
    async fn write(&self, conn: &mut Conn) -> std::io::Result<()> {
        match self {
            Piece::Slice { body, start, len } => {
                conn.write_all(&body.bytes()[*start..start + len]).await
            }
            Piece::NulAsSpace { body, start, len } => {
                for chunk in body.bytes()[*start..start + len].chunks(NUL_CHUNK) {
                    let spaced: Vec<u8> = chunk
                        .iter()
                        .map(|&b| if b == 0 { b' ' } else { b })
                        .collect();
                    conn.write_all(&spaced).await?;
                }
                Ok(())
            }
            Piece::Decoded {
                body,
                start,
                len,
                cte,
                partial,
            } => {
                let decoded = cte.decode(&body.bytes()[*start..start + len]);
                let data = match partial {
                    Some(p) => mime::partial(decoded, *p),
                    None => decoded,
                };
                conn.write_all(&data).await
            }
        }
    }
}

impl Out {
    fn new() -> Out {
        Out {
            buf: Vec::with_capacity(4096),
            splices: Vec::new(),
        }
    }

    fn status(&mut self, tag: Option<&[u8]>, status: Status, code: Option<&Code<'_>>, text: &str) {
        encode::write_status(&mut self.buf, tag, status, code, text);
    }

    async fn flush(&mut self, conn: &mut Conn) -> std::io::Result<()> {
        if self.splices.is_empty() {
            return conn.flush(&mut self.buf).await;
        }
        conn.cork(true);
        let mut at = 0;
        let mut result = Ok(());
        for (pos, piece) in self.splices.drain(..) {
            if let Err(e) = conn.write_all(&self.buf[at..pos]).await {
                result = Err(e);
                break;
            }
            if let Err(e) = piece.write(conn).await {
                result = Err(e);
                break;
            }
            at = pos;
        }
        if result.is_ok() {
            result = conn.write_all(&self.buf[at..]).await;
        }
        self.buf.clear();
        conn.cork(false);
        result
    }
}

/// Octets of quota held by a command in flight (see `Session::hold_quota`).
struct QuotaHold {
    shard: Rc<Shard>,
    account: String,
    octets: u64,
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        if self.octets == 0 {
            return;
        }
        let mut held = self.shard.quota_reserved.borrow_mut();
        if let Some(v) = held.get_mut(&self.account) {
            *v = v.saturating_sub(self.octets);
            if *v == 0 {
                held.remove(&self.account);
            }
        }
    }
}

struct Selected {
    id: u32,
    read_only: bool,
    view: View,
}

struct Session {
    shard: Rc<Shard>,
    out: Out,
    framer: Framer,
    account: Option<String>,
    sel: Option<Selected>,
    auth_failures: usize,
    condstore: bool,
    /// ENABLE QRESYNC was given (RFC 7162 3.2.3): expunges are announced as
    /// VANISHED, and SELECT and UID FETCH accept their QRESYNC forms.
    qresync: bool,
    /// COMPRESS=DEFLATE is on (RFC 4978).
    compressed: bool,
    /// ENABLE IMAP4rev2 was given (RFC 9051): mailbox names are UTF-8,
    /// SEARCH answers ESEARCH, \Recent and RECENT are gone, and SELECT
    /// names the mailbox in a LIST response.
    rev2: bool,
    /// CONDSTORE was just enabled while a mailbox is selected: the next
    /// tagged OK carries `[HIGHESTMODSEQ n]` (RFC 7162 3.1).
    modseq_pending: bool,
    saved: Vec<u32>,
    /// AUTHENTICATE waiting for the client's continuation line: the tag.
    sasl_tag: Option<Vec<u8>>,
    /// TLS is active (implicit, or after STARTTLS).
    tls: bool,
    /// Its version, for the login event ("" without TLS).
    tls_version: &'static str,
    /// LOGIN/AUTHENTICATE are accepted without TLS (loopback or the
    /// operator's `auth_without_tls`).
    auth_plaintext: bool,
    /// A diverted APPEND literal: the command's head and the literal
    /// received, until the rest of the command arrives.
    diverted: Option<(Vec<u8>, Literal)>,
    /// The client's address (login throttling).
    peer: std::net::IpAddr,
}

/// The literal of a diverted APPEND.
enum Literal {
    /// A synchronizing literal refused before the client sent it (no
    /// continuation request went out; the client abandons the command,
    /// RFC 3501 7.5).
    Refused,
    /// Refused while arriving (over budget, or the spool failed); its
    /// octets were read and dropped.
    Dropped,
    /// Received whole: still charged to the shard's spool budget until the
    /// command completes and the message is stored.
    Held(Spooler, Vec<u8>),
}

enum Next {
    Continue,
    Close,
    Idle(Vec<u8>),
    /// COMPRESS DEFLATE accepted: answer `tag OK` plainly, then deflate.
    Compress(Vec<u8>),
    /// Logged in as this account; answer `tag OK` once on the owner shard.
    LoggedIn {
        account: String,
        tag: Vec<u8>,
    },
    /// STARTTLS accepted (RFC 3501 6.2.1): answer, then the handshake.
    StartTls(Vec<u8>),
}

/// Serve one IMAP connection; `implicit_tls`: TLS from the first byte (RFC 8314).
pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: Result<Permit, Refusal>,
    implicit_tls: bool,
) {
    let count = ConnCount::new(&shard);
    let mut conn = Conn::accepted(stream);
    // Before login the framer holds at most one maximal ID command (RFC 2971).
    conn.set_buffer_max(FramingLimits::ID.command_max + crate::limits::READ_CHUNK);
    let refusal: &'static [u8] = if implicit_tls {
        b""
    } else {
        b"* BYE Too many connections, try again later\r\n"
    };
    let Some(permit) = conn.admit(permit, |_| refusal).await else {
        return;
    };
    if implicit_tls && shard.accept_tls(&mut conn, peer, "imaps").await.is_none() {
        return;
    }
    let mut s = Session::new(shard, None);
    s.tls = implicit_tls;
    s.tls_version = conn.tls_info().map_or("", |i| i.version);
    s.peer = peer.ip();
    s.auth_plaintext = s.shard.config().auth_without_tls_for(peer.ip());
    s.out.buf.extend_from_slice(b"* OK [CAPABILITY ");
    s.out
        .buf
        .extend_from_slice(s.caps_preauth().join(" ").as_bytes());
    s.out
        .buf
        .extend_from_slice(b"] ringmail IMAP4rev1 ready\r\n");
    run(s, conn, permit, count).await;
}

/// Continue a session moved here after its login.
pub async fn adopted(
    shard: Rc<Shard>,
    mut conn: Conn,
    account: String,
    tag: Vec<u8>,
    permit: Permit,
) {
    let count = ConnCount::new(&shard);
    conn.set_buffer_max(FramingLimits::AUTHENTICATED.command_max + crate::limits::READ_CHUNK);
    let mut s = Session::new(shard, Some(account));
    s.finish_login(&tag).await;
    run(s, conn, permit, count).await;
}

async fn run(mut s: Session, mut conn: Conn, permit: Permit, count: ConnCount) {
    let fd = conn.fd();
    loop {
        let next = if let Some(tag) = s.sasl_tag.take() {
            let pending = conn.pending();
            match memchr::memchr(b'\n', pending) {
                Some(i) => {
                    let next = s.sasl_continue(tag, &pending[..=i]).await;
                    conn.consume(i + 1);
                    next
                }
                None if pending.len() > SASL_LINE_MAX => {
                    s.out.status(
                        Some(&tag),
                        Status::Bad,
                        None,
                        "Authentication line too long",
                    );
                    let _ = s.out.flush(&mut conn).await;
                    return;
                }
                None => {
                    s.sasl_tag = Some(tag);
                    if !read_more(&mut s, &mut conn, fd).await {
                        return;
                    }
                    continue;
                }
            }
        } else {
            match s.framer.feed(conn.pending()) {
                Frame::NeedMore => {
                    if !read_more(&mut s, &mut conn, fd).await {
                        return;
                    }
                    continue;
                }
                Frame::Continue { .. } => {
                    encode::write_continuation(&mut s.out.buf, "Ready for literal data");
                    if s.out.flush(&mut conn).await.is_err() {
                        return;
                    }
                    continue;
                }
                Frame::Discard(n) => {
                    conn.consume(n);
                    continue;
                }
                Frame::Divert { head, len, sync } => {
                    let head_bytes = conn.pending()[..head].to_vec();
                    conn.consume(head);
                    let Some(literal) = receive_literal(&mut s, &mut conn, fd, len, sync).await
                    else {
                        return;
                    };
                    if let Literal::Refused = literal {
                        let tag = head_bytes
                            .split(|b| *b == b' ')
                            .next()
                            .unwrap_or(b"*")
                            .to_vec();
                        s.out.status(
                            Some(&tag),
                            Status::No,
                            Some(&Code::Unavailable),
                            "Server busy; try again later",
                        );
                    } else {
                        s.diverted = Some((head_bytes, literal));
                    }
                    continue;
                }
                Frame::Rejected(r) => {
                    s.diverted = None;
                    let tag = r.tag.clone().map(|t| conn.pending()[t].to_vec());
                    let (status, code, text) = r.answer();
                    s.out.status(
                        Some(tag.as_deref().unwrap_or(b"*")),
                        status,
                        code.as_ref(),
                        text,
                    );
                    conn.consume(r.consume);
                    continue;
                }
                Frame::Command(n) => {
                    let next = {
                        let diverted = match s.diverted.take() {
                            Some((head, Literal::Held(mut spooler, tail))) => {
                                match spooler.finish(tail).await {
                                    Ok(body) => Some((head, Some(body))),
                                    Err(e) => {
                                        tracing::warn!(error = %e, "spooling an APPEND literal failed");
                                        Some((head, None))
                                    }
                                }
                            }
                            Some((head, _)) => Some((head, None)),
                            None => None,
                        };
                        let rejoined;
                        let (bytes, external) = match &diverted {
                            Some((head, body)) => {
                                rejoined = rejoin_diverted(head, &conn.pending()[..n]);
                                (&rejoined[..], Some(body.as_deref()))
                            }
                            None => (&conn.pending()[..n], None),
                        };
                        match parse_command(bytes) {
                            Ok(cmd) if external == Some(None) => {
                                s.out.status(
                                    Some(cmd.tag),
                                    Status::No,
                                    Some(&Code::Unavailable),
                                    "Server busy; try again later",
                                );
                                Next::Continue
                            }
                            Ok(cmd) => s.execute(cmd, external.flatten()).await,
                            Err(e) => {
                                let tag = e.tag_or_star().to_vec();
                                let text = format!("Syntax error: {}", e.reason);
                                s.out.status(Some(&tag), Status::Bad, None, &text);
                                Next::Continue
                            }
                        }
                    };
                    conn.consume(n);
                    next
                }
            }
        };
        match next {
            Next::Continue => {}
            Next::Close => {
                let _ = s.out.flush(&mut conn).await;
                return;
            }
            Next::Idle(tag) => {
                if !s.idle(tag, &mut conn).await {
                    return;
                }
            }
            Next::Compress(tag) => {
                s.out.status(Some(&tag), Status::Ok, None, "DEFLATE active");
                if s.out.flush(&mut conn).await.is_err() {
                    return;
                }
                // RFC 4978 section 3: everything after the tagged OK is
                // compressed, both ways; bytes already received are the
                // start of the client's compressed stream.
                s.framer.reset();
                conn.start_deflate();
                s.compressed = true;
            }
            Next::StartTls(tag) => {
                let peer = conn.peer();
                let Some(slot) = s.shard.handshake_slot() else {
                    s.out.status(
                        Some(&tag),
                        Status::No,
                        Some(&Code::Unavailable),
                        "TLS not available now, try again later",
                    );
                    continue;
                };
                s.out
                    .status(Some(&tag), Status::Ok, None, "Begin TLS negotiation now");
                if s.out.flush(&mut conn).await.is_err() {
                    return;
                }
                // Whatever was pipelined behind STARTTLS is dropped with the
                // buffer (command injection); the framer starts afresh.
                s.framer.reset();
                if s.shard
                    .tls_handshake(slot, &mut conn, peer, "imap")
                    .await
                    .is_none()
                {
                    return;
                }
                s.tls = true;
                s.tls_version = conn.tls_info().map_or("TLS", |i| i.version);
            }
            Next::LoggedIn { account, tag } => {
                let owner = s.shard.owner_of(&account);
                if owner == s.shard.id {
                    s.account = Some(account);
                    conn.set_buffer_max(
                        FramingLimits::AUTHENTICATED.command_max + crate::limits::READ_CHUNK,
                    );
                    s.finish_login(&tag).await;
                    continue;
                }
                // Move to the owner: earlier pipelined answers go out first.
                if s.out.flush(&mut conn).await.is_err() {
                    return;
                }
                let Ok(conn) = conn.detach() else { return };
                drop(count);
                let msg = ShardMsg::AdoptImap {
                    conn,
                    account,
                    tag,
                    permit,
                };
                if s.shard.senders.send_to(owner, msg).await.is_err() {
                    tracing::error!(owner, "owner shard unavailable; connection dropped");
                }
                return;
            }
        }
    }
}

/// Receive the `len` octets of a diverted APPEND literal from `conn`
/// through a spooler on the shard's budget. `None`: the connection is over.
async fn receive_literal(
    s: &mut Session,
    conn: &mut Conn,
    fd: i32,
    len: u64,
    sync: bool,
) -> Option<Literal> {
    let budget = s.shard.budget.clone();
    if sync {
        if !budget.spool_room(len) {
            return Some(Literal::Refused);
        }
        encode::write_continuation(&mut s.out.buf, "Ready for literal data");
    }
    // Authenticated: charged to the shard's budget, not to an address.
    let mut spooler = Spooler::new(budget, None);
    let mut buf = Vec::new();
    let mut remaining = len;
    let mut refused = false;
    while remaining > 0 {
        if conn.pending().is_empty() && !read_more(s, conn, fd).await {
            return None;
        }
        let pending = conn.pending();
        let n = (pending.len() as u64).min(remaining) as usize;
        if !refused {
            buf.extend_from_slice(&pending[..n]);
        }
        conn.consume(n);
        remaining -= n as u64;
        if refused {
            continue;
        }
        match spooler.track(&mut buf).await {
            Ok(Track::Held) => {}
            Ok(Track::Refused) => refused = true,
            Err(e) => {
                tracing::warn!(error = %e, "spooling an APPEND literal failed");
                spooler.reset();
                refused = true;
            }
        }
        if refused {
            buf = Vec::new();
        }
    }
    Some(if refused {
        Literal::Dropped
    } else {
        Literal::Held(spooler, buf)
    })
}

/// Flush, then read more input. False when the connection is over.
async fn read_more(s: &mut Session, conn: &mut Conn, fd: i32) -> bool {
    if s.out.flush(conn).await.is_err() {
        return false;
    }
    if s.shard.stopping() {
        let _ = conn.write_all(b"* BYE Server shutting down\r\n").await;
        return false;
    }
    let timeout = if s.account.is_some() {
        IMAP_IDLE_TIMEOUT
    } else {
        IMAP_PREAUTH_TIMEOUT
    };
    s.shard.set_idle(fd, true);
    let r = conn.fill(timeout).await;
    s.shard.set_idle(fd, false);
    match r {
        ReadOutcome::Data => true,
        ReadOutcome::TimedOut => {
            let _ = conn
                .write_all(b"* BYE Autologout; idle for too long\r\n")
                .await;
            false
        }
        ReadOutcome::Eof | ReadOutcome::Failed(_) => {
            if s.shard.stopping() {
                let _ = conn.write_all(b"* BYE Server shutting down\r\n").await;
            }
            false
        }
    }
}

impl Session {
    fn new(shard: Rc<Shard>, account: Option<String>) -> Session {
        let limits = if account.is_some() {
            FramingLimits::AUTHENTICATED
        } else {
            FramingLimits::NOT_AUTHENTICATED
        };
        Session {
            shard,
            out: Out::new(),
            framer: Framer::new(limits),
            account,
            sel: None,
            auth_failures: 0,
            condstore: false,
            qresync: false,
            compressed: false,
            rev2: false,
            modseq_pending: false,
            saved: Vec::new(),
            sasl_tag: None,
            tls: false,
            tls_version: "",
            auth_plaintext: false,
            diverted: None,
            peer: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }

    /// Credentials may be sent now: under TLS, or where plain text is allowed.
    fn credentials_allowed(&self) -> bool {
        self.tls || self.auth_plaintext
    }

    /// Capabilities before login. RFC 3501 6.2.1 / 7.2.1: STARTTLS while
    /// plain; LOGINDISABLED (and no AUTH=) where credentials would be
    /// refused in clear; re-announced only when the client asks again.
    fn caps_preauth(&self) -> Vec<&'static str> {
        let mut caps = vec!["IMAP4rev1", "IMAP4rev2"];
        if !self.tls {
            caps.push("STARTTLS");
        }
        if self.credentials_allowed() {
            caps.push("AUTH=PLAIN");
        } else {
            caps.push("LOGINDISABLED");
        }
        caps.extend_from_slice(CAPS_PREAUTH_BASE);
        caps
    }

    fn account(&self) -> &str {
        self.account
            .as_deref()
            .expect("authenticated state has an account")
    }

    async fn finish_login(&mut self, tag: &[u8]) {
        self.framer.set_limits(FramingLimits::AUTHENTICATED);
        self.framer.set_divert(self.shard.budget.threshold().max(1));
        let account = self.account().to_string();
        if let Err(e) = self.shard.store.ensure_account(&account).await {
            tracing::warn!(error = %e, "creating account mailboxes failed");
        }
        self.out.status(
            Some(tag),
            Status::Ok,
            Some(&Code::Capability(CAPS)),
            "Logged in",
        );
    }

    async fn login(&mut self, tag: &[u8], user: &str, password: &str) -> Next {
        match self
            .shard
            .login(self.peer, "imap", self.tls_version, user, password)
            .await
        {
            Login::Ok(account) => Next::LoggedIn {
                account,
                tag: tag.to_vec(),
            },
            Login::Banned => {
                self.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::Unavailable),
                    "Too many failed logins from your address, try again later",
                );
                self.out
                    .buf
                    .extend_from_slice(b"* BYE Too many failed logins\r\n");
                Next::Close
            }
            Login::Busy => {
                self.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::Unavailable),
                    "Temporary authentication failure, try again later",
                );
                Next::Continue
            }
            Login::Failed => {
                self.auth_failures += 1;
                self.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::AuthenticationFailed),
                    "Authentication failed",
                );
                if self.auth_failures >= self.shard.config().limits.auth_failures_max.max(1) {
                    self.out
                        .buf
                        .extend_from_slice(b"* BYE Too many failed logins\r\n");
                    return Next::Close;
                }
                Next::Continue
            }
        }
    }

    async fn sasl_plain(&mut self, tag: &[u8], response: &[u8]) -> Next {
        match crate::protocol::pop3::decode_plain(response) {
            Ok(c) if c.authzid.is_empty() || c.authzid == c.authcid => {
                self.login(tag, &c.authcid, &c.password).await
            }
            Ok(_) => {
                self.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::AuthenticationFailed),
                    "Cannot act as another user",
                );
                Next::Continue
            }
            Err(_) => {
                self.out
                    .status(Some(tag), Status::Bad, None, "Invalid SASL PLAIN response");
                Next::Continue
            }
        }
    }

    async fn sasl_continue(&mut self, tag: Vec<u8>, line: &[u8]) -> Next {
        match parse_sasl_response(line) {
            Some(SaslResponse::Data(d)) => self.sasl_plain(&tag, d).await,
            Some(SaslResponse::Cancel) => {
                self.out
                    .status(Some(&tag), Status::Bad, None, "Authentication cancelled");
                Next::Continue
            }
            None => {
                self.out
                    .status(Some(&tag), Status::Bad, None, "Invalid base64");
                Next::Continue
            }
        }
    }

    /// Run one command; `external`: the literal of a diverted APPEND, which
    /// stands for the command's (empty) message literal.
    async fn execute(&mut self, cmd: Command<'_>, external: Option<&[u8]>) -> Next {
        let tag = cmd.tag;
        let authed = self.account.is_some();
        match cmd.body {
            CommandBody::Capability => {
                let pre = if authed {
                    Vec::new()
                } else {
                    self.caps_preauth()
                };
                encode::write_capability(&mut self.out.buf, if authed { CAPS } else { &pre });
                self.ok(tag, "CAPABILITY completed");
            }
            CommandBody::Noop | CommandBody::Check => {
                self.sync(true);
                self.ok(tag, "NOOP completed");
            }
            CommandBody::Logout => {
                self.out.buf.extend_from_slice(b"* BYE Logging out\r\n");
                self.ok(tag, "LOGOUT completed");
                return Next::Close;
            }
            CommandBody::Id(_) => {
                encode::write_id(
                    &mut self.out.buf,
                    Some(&[
                        ("name", Some("ringmail")),
                        ("version", Some(env!("CARGO_PKG_VERSION"))),
                    ]),
                );
                self.ok(tag, "ID completed");
            }
            CommandBody::StartTls if self.tls => {
                self.out
                    .status(Some(tag), Status::Bad, None, "TLS already active")
            }
            // RFC 3501 6.2.1: only in the not-authenticated state.
            CommandBody::StartTls if authed => {
                self.out
                    .status(Some(tag), Status::Bad, None, "STARTTLS only before login")
            }
            CommandBody::StartTls => return Next::StartTls(tag.to_vec()),
            CommandBody::Login { .. } | CommandBody::Authenticate { .. }
                if !authed && !self.credentials_allowed() =>
            {
                // RFC 3501 6.2.3 (LOGINDISABLED) and RFC 5530 PRIVACYREQUIRED;
                // not counted as a failed login.
                self.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::PrivacyRequired),
                    "Plaintext authentication disallowed on non-secure connections; use STARTTLS",
                );
            }
            CommandBody::Login { username, password } if !authed => {
                let (u, p) = (
                    String::from_utf8_lossy(&username).into_owned(),
                    String::from_utf8_lossy(&password).into_owned(),
                );
                return self.login(tag, &u, &p).await;
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } if !authed => {
                if !mechanism.eq_ignore_ascii_case(b"PLAIN") {
                    self.out.status(
                        Some(tag),
                        Status::No,
                        None,
                        "Unsupported authentication mechanism",
                    );
                } else if let Some(ir) = initial_response {
                    return self.sasl_plain(tag, ir).await;
                } else {
                    // PLAIN starts with an empty challenge: "+ " CRLF (RFC 4616,
                    // RFC 3501 7.5); any text here would be decoded as base64.
                    encode::write_sasl_challenge(&mut self.out.buf, b"");
                    self.sasl_tag = Some(tag.to_vec());
                }
            }
            CommandBody::Login { .. } | CommandBody::Authenticate { .. } => {
                self.out
                    .status(Some(tag), Status::Bad, None, "Already authenticated");
            }
            _ if !authed => self
                .out
                .status(Some(tag), Status::Bad, None, "Log in first"),
            CommandBody::Enable(caps) => {
                let mut enabled: Vec<&[u8]> = Vec::new();
                for c in caps {
                    if c.eq_ignore_ascii_case(b"CONDSTORE") && !self.condstore {
                        self.enable_condstore();
                        enabled.push(b"CONDSTORE");
                    } else if c.eq_ignore_ascii_case(b"IMAP4rev2") && !self.rev2 {
                        self.rev2 = true;
                        enabled.push(b"IMAP4rev2");
                    } else if c.eq_ignore_ascii_case(b"QRESYNC") && !self.qresync {
                        // RFC 7162 3.2.3: QRESYNC implies CONDSTORE (which
                        // is listed only when asked for).
                        self.qresync = true;
                        self.enable_condstore();
                        enabled.push(b"QRESYNC");
                    }
                }
                encode::write_enabled(&mut self.out.buf, &enabled);
                self.ok(tag, "ENABLE completed");
            }
            // RFC 4978 section 3: BAD for an unknown argument or when
            // COMPRESS is already active.
            CommandBody::Compress { mechanism } => {
                if self.compressed {
                    self.out.status(
                        Some(tag),
                        Status::Bad,
                        Some(&Code::Other("COMPRESSIONACTIVE")),
                        "DEFLATE active already",
                    );
                } else if !mechanism.eq_ignore_ascii_case(b"DEFLATE") {
                    self.out.status(
                        Some(tag),
                        Status::Bad,
                        None,
                        "Unknown compression mechanism",
                    );
                } else {
                    return Next::Compress(tag.to_vec());
                }
            }
            CommandBody::Namespace => {
                encode::write_namespace(&mut self.out.buf, b"", DELIMITER);
                self.ok(tag, "NAMESPACE completed");
            }
            // RFC 7162 3.2.5: the QRESYNC parameter before ENABLE QRESYNC is BAD.
            CommandBody::Select {
                qresync: Some(_), ..
            }
            | CommandBody::Examine {
                qresync: Some(_), ..
            } if !self.qresync => {
                self.out
                    .status(Some(tag), Status::Bad, None, "ENABLE QRESYNC first")
            }
            CommandBody::Select {
                mailbox,
                condstore,
                qresync,
            } => self.select(tag, &mailbox, false, condstore, qresync.as_ref()),
            CommandBody::Examine {
                mailbox,
                condstore,
                qresync,
            } => self.select(tag, &mailbox, true, condstore, qresync.as_ref()),
            CommandBody::Create {
                mailbox,
                special_use,
            } => self.create(tag, &mailbox, &special_use).await,
            CommandBody::Delete { mailbox } => self.delete(tag, &mailbox).await,
            CommandBody::Rename { from, to } => self.rename(tag, &from, &to).await,
            CommandBody::Subscribe { mailbox } => self.subscribe(tag, &mailbox, true).await,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(tag, &mailbox, false).await,
            CommandBody::List(list) => self.list(tag, &list),
            CommandBody::Lsub { reference, pattern } => self.lsub(tag, &reference, &pattern),
            // RFC 9051 section 9: RECENT is not a status-att of IMAP4rev2.
            CommandBody::Status { items, .. }
                if self.rev2 && items.contains(&StatusItem::Recent) =>
            {
                self.out
                    .status(Some(tag), Status::Bad, None, "No RECENT in IMAP4rev2")
            }
            CommandBody::Status { mailbox, items } => {
                if items.contains(&StatusItem::HighestModSeq) {
                    self.enable_condstore();
                }
                match self.with_mailbox_named(&mailbox, |_, m| {
                    status_items(m, &items, self.recent_count(m))
                }) {
                    Some(values) => {
                        encode::write_status_data(&mut self.out.buf, mailbox.as_bytes(), &values);
                        self.ok(tag, "STATUS completed");
                    }
                    None => self.out.status(
                        Some(tag),
                        Status::No,
                        Some(&Code::NonExistent),
                        "No such mailbox",
                    ),
                }
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                if self.with_mailbox_named(&mailbox, |_, _| ()).is_none() {
                    self.out.status(
                        Some(tag),
                        Status::No,
                        Some(&Code::NonExistent),
                        "No such mailbox",
                    );
                } else {
                    // RFC 9208 5.2: one root, "", for all of an account's
                    // mailboxes; none when the account has no limit.
                    let limit = self.shard.quota(self.account());
                    let roots: &[&[u8]] = if limit.is_some() { &[QUOTA_ROOT] } else { &[] };
                    encode::write_quotaroot(&mut self.out.buf, mailbox.as_bytes(), roots);
                    self.write_quota();
                    self.ok(tag, "GETQUOTAROOT completed");
                }
            }
            CommandBody::GetQuota { root } => {
                if &root[..] == QUOTA_ROOT && self.write_quota() {
                    self.ok(tag, "GETQUOTA completed");
                } else {
                    self.out.status(
                        Some(tag),
                        Status::No,
                        Some(&Code::NonExistent),
                        "No such quota root",
                    );
                }
            }
            CommandBody::SetQuota => self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Other("NOPERM")),
                "Quotas are set by the administrator",
            ),
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
                binary,
            } => {
                let message = external.unwrap_or(message);
                let date = date.map(|d| d.unix_secs());
                self.append(tag, &mailbox, &flags, date, message, binary)
                    .await
            }
            CommandBody::Idle => {
                if self.sel.is_none() {
                    // IDLE in the authenticated state is allowed; nothing to watch but BYE.
                }
                encode::write_continuation(&mut self.out.buf, "idling");
                return Next::Idle(tag.to_vec());
            }
            _ if self.sel.is_none() => {
                self.out
                    .status(Some(tag), Status::Bad, None, "No mailbox selected")
            }
            CommandBody::Close => {
                if !self.sel.as_ref().expect("selected").read_only {
                    let _ = self.expunge_deleted(None).await;
                }
                self.sel = None;
                self.ok(tag, "CLOSE completed");
            }
            CommandBody::Unselect => {
                self.sel = None;
                self.ok(tag, "UNSELECT completed");
            }
            CommandBody::Expunge => self.expunge_cmd(tag, None).await,
            CommandBody::UidExpunge { set } => match self.seqset(&set, true) {
                Some(set) => self.expunge_cmd(tag, Some(set)).await,
                // `$` names no message (RFC 5182 2.1): nothing to do.
                None => self.ok(tag, "Completed, no messages"),
            },
            CommandBody::Search { uid, search } => self.search(tag, uid, &search),
            CommandBody::Sort {
                uid,
                criteria,
                search,
            } => self.sort_or_thread(tag, uid, &search, search::Order::Sort(&criteria)),
            CommandBody::Thread {
                uid,
                algorithm,
                search,
            } => self.sort_or_thread(tag, uid, &search, search::Order::Thread(algorithm)),
            // RFC 7162 3.2.6: VANISHED before ENABLE QRESYNC is BAD.
            CommandBody::Fetch { vanished: true, .. } if !self.qresync => {
                self.out
                    .status(Some(tag), Status::Bad, None, "ENABLE QRESYNC first")
            }
            CommandBody::Fetch {
                uid,
                set,
                attrs,
                changed_since,
                vanished,
            } => match self.seqset(&set, uid) {
                Some(set) => {
                    if vanished {
                        self.write_vanished_earlier(&set, changed_since.unwrap_or(0));
                    }
                    self.fetch(tag, uid, &set, &attrs, changed_since).await
                }
                // `$` names no message (RFC 5182 2.1): nothing to do.
                None => self.ok(tag, "Completed, no messages"),
            },
            CommandBody::Store {
                uid,
                set,
                mode,
                silent,
                flags,
                unchanged_since,
            } => match self.seqset(&set, uid) {
                Some(set) => {
                    self.store_flags(tag, uid, &set, mode, silent, &flags, unchanged_since)
                        .await
                }
                // `$` names no message (RFC 5182 2.1): nothing to do.
                None => self.ok(tag, "Completed, no messages"),
            },
            CommandBody::Copy { uid, set, mailbox } => match self.seqset(&set, uid) {
                Some(set) => self.copy(tag, uid, &set, &mailbox, false).await,
                // `$` names no message (RFC 5182 2.1): nothing to do.
                None => self.ok(tag, "Completed, no messages"),
            },
            CommandBody::Move { uid, set, mailbox } => match self.seqset(&set, uid) {
                Some(set) => self.copy(tag, uid, &set, &mailbox, true).await,
                // `$` names no message (RFC 5182 2.1): nothing to do.
                None => self.ok(tag, "Completed, no messages"),
            },
        }
        Next::Continue
    }

    /// UID FETCH (CHANGEDSINCE m VANISHED), RFC 7162 3.2.6: the UIDs of
    /// `set` expunged since `m`. Written before the command's sync, so that
    /// it precedes every FETCH response, the sync's flag updates included.
    fn write_vanished_earlier(&mut self, set: &SequenceSet, modseq: u64) {
        let Some(id) = self.sel.as_ref().map(|s| s.id) else {
            return;
        };
        let out = &mut self.out.buf;
        self.shard
            .store
            .with_account(self.account.as_deref().unwrap_or(""), |a| {
                if let Some(mb) = a.mailbox(id) {
                    // `*` is the highest UID ever given out.
                    let known = set.normalized(mb.uidnext.saturating_sub(1));
                    encode::write_vanished(out, true, &logic::vanished_earlier(mb, modseq, &known));
                }
            });
    }

    /// `* QUOTA "" (STORAGE used limit)` for the account, if it has a
    /// limit; false if not.
    fn write_quota(&mut self) -> bool {
        let account = self.account().to_string();
        let Some(limit) = self.shard.quota(&account) else {
            return false;
        };
        // This session runs on the account's owner: its own count is exact.
        let used = self.shard.store.used_octets(&account);
        // Units of 1024 octets (RFC 9208 5.1): usage rounded up, so a full
        // account never shows room it does not have.
        encode::write_quota_storage(
            &mut self.out.buf,
            QUOTA_ROOT,
            used.div_ceil(1024),
            limit / 1024,
        );
        true
    }

    /// Room for `adding` more octets under the account's limit, counting
    /// what other commands hold and have not committed yet: a hold to keep
    /// until the command's records are durable (it is given back when
    /// dropped). None: the command is answered NO [OVERQUOTA] (RFC 9208
    /// section 4.3.1).
    fn hold_quota(&mut self, tag: &[u8], adding: u64) -> Option<QuotaHold> {
        let account = self.account().to_string();
        let hold = |octets| QuotaHold {
            shard: self.shard.clone(),
            account: account.clone(),
            octets,
        };
        let Some(limit) = self.shard.quota(&account) else {
            return Some(hold(0));
        };
        let used = self.shard.store.used_octets(&account);
        let held = self
            .shard
            .quota_reserved
            .borrow()
            .get(&account)
            .copied()
            .unwrap_or(0);
        if used.saturating_add(held).saturating_add(adding) <= limit {
            *self
                .shard
                .quota_reserved
                .borrow_mut()
                .entry(account.clone())
                .or_default() += adding;
            return Some(hold(adding));
        }
        self.out.status(
            Some(tag),
            Status::No,
            Some(&Code::OverQuota),
            "Quota exceeded (mailbox full)",
        );
        None
    }

    /// The tagged OK of a command that expunged messages: with QRESYNC on,
    /// it carries the mailbox's new HIGHESTMODSEQ (RFC 7162 3.2.7 EXPUNGE,
    /// 3.2.9 UID EXPUNGE; RFC 6851 4.4 MOVE).
    fn ok_expunged(&mut self, tag: &[u8], expunged: bool, text: &str) {
        if self.qresync && expunged {
            self.modseq_pending = self.sel.is_some();
        }
        self.ok(tag, text);
    }

    fn ok(&mut self, tag: &[u8], text: &str) {
        if let Some(n) = self.take_modseq_pending() {
            self.out
                .status(Some(tag), Status::Ok, Some(&Code::HighestModSeq(n)), text);
            return;
        }
        self.out.status(Some(tag), Status::Ok, None, text);
    }

    /// A CONDSTORE-enabling command (RFC 7162 3.1: ENABLE CONDSTORE, SELECT
    /// (CONDSTORE), STATUS HIGHESTMODSEQ, FETCH MODSEQ or CHANGEDSINCE,
    /// STORE UNCHANGEDSINCE, SEARCH MODSEQ). From now on untagged FETCH
    /// responses carry MODSEQ; if this is the first one and a mailbox is
    /// selected, its tagged OK reports HIGHESTMODSEQ (RFC 7162 3.1.2.1),
    /// which the client did not get from a plain SELECT.
    fn enable_condstore(&mut self) {
        if !self.condstore {
            self.condstore = true;
            self.modseq_pending = self.sel.is_some();
        }
    }

    /// The selected mailbox's HIGHESTMODSEQ, if it is still owed to the client.
    fn take_modseq_pending(&mut self) -> Option<u64> {
        if !std::mem::take(&mut self.modseq_pending) {
            return None;
        }
        let id = self.sel.as_ref()?.id;
        self.shard
            .store
            .with_account(self.account(), |a| {
                a.mailbox(id).map(|m| m.reported_modseq())
            })
            .flatten()
    }

    fn storage_failed(&mut self, tag: &[u8], e: &StorageError) {
        tracing::warn!(error = %e, "IMAP storage operation failed");
        let code = match e {
            StorageError::Full => Code::OverQuota,
            _ => Code::ServerBug,
        };
        self.out.status(
            Some(tag),
            Status::No,
            Some(&code),
            "Temporary storage failure, try again",
        );
    }

    /// `$` (RFC 5182) becomes the saved messages: their UIDs for a UID
    /// command, their current sequence numbers otherwise (the saved result
    /// is kept as UIDs so it survives expunges). None when `$` names no
    /// message that still exists.
    fn seqset(&self, arg: &SequenceArg, uid: bool) -> Option<SequenceSet> {
        match arg {
            SequenceArg::Set(s) => Some(s.clone()),
            SequenceArg::Saved if uid => SequenceSet::compress(&self.saved),
            SequenceArg::Saved => {
                let view = &self.sel.as_ref()?.view;
                SequenceSet::compress(&logic::saved_seqs(view, &self.saved))
            }
        }
    }

    /// STATUS RECENT: messages no session has claimed as \Recent yet, plus
    /// those that are \Recent in this session if it has the mailbox selected.
    fn recent_count(&self, m: &Mailbox) -> u64 {
        let floor = self
            .shard
            .imap_recent
            .borrow()
            .get(&(self.account().to_string(), m.id))
            .copied()
            .unwrap_or(0);
        let own = self
            .sel
            .as_ref()
            .filter(|s| s.id == m.id)
            .map(|s| &s.view.recent);
        logic::recent_count(m, floor, own)
    }

    fn with_mailbox_named<R>(
        &self,
        name: &MailboxArg<'_>,
        f: impl FnOnce(&Account, &Mailbox) -> R,
    ) -> Option<R> {
        let name = self.stored_name(name)?;
        self.shard.store.with_account(self.account(), |a| {
            a.mailbox_by_name(&name).map(|m| f(a, m))
        })?
    }

    /// The stored form of a mailbox name the client gave: an IMAP4rev1
    /// session names mailboxes in modified UTF-7 already (RFC 3501 5.1.3),
    /// the form the store keeps; an IMAP4rev2 session in UTF-8 (RFC 9051
    /// 5.1), which is encoded. None: not UTF-8.
    fn stored_name<'n>(&self, name: &'n MailboxArg<'_>) -> Option<Cow<'n, str>> {
        let stored = mailboxes::stored_name(self.rev2, name.as_bytes())?;
        // A mailbox stored before names were checked (`mailboxes::shown`).
        if !self.exists(&stored) {
            if let Some(old) = mailboxes::legacy_name(self.rev2, name.as_bytes()) {
                if self.exists(&old) {
                    return Some(Cow::Owned(old));
                }
            }
        }
        Some(stored)
    }

    /// The stored form of a name for a new mailbox (CREATE, RENAME's
    /// target), without trailing delimiters; None when it is not a name we
    /// accept. From an IMAP4rev1 session it must be valid modified UTF-7
    /// (RFC 3501 5.1.3), so every name has one UTF-8 form for IMAP4rev2.
    fn new_name(&self, name: &MailboxArg<'_>) -> Option<String> {
        let stored = self.stored_name(name)?;
        // An existing mailbox (maybe one stored before names were checked)
        // is answered as existing, not as an invalid name.
        if self.exists(&stored) {
            return Some(stored.into_owned());
        }
        mailboxes::new_name(&stored)
    }

    /// Report changes made by others (and by our own durable commits).
    fn sync(&mut self, allow_expunge: bool) {
        let Some(sel) = self.sel.as_mut() else { return };
        let account = self
            .account
            .as_deref()
            .expect("selected implies authenticated");
        let key = (account.to_string(), sel.id);
        let mut floor = self
            .shard
            .imap_recent
            .borrow()
            .get(&key)
            .copied()
            .unwrap_or(0);
        let out = &mut self.out.buf;
        let condstore = self.condstore;
        let rev2 = self.rev2;
        let qresync = self.qresync;
        let found = self.shard.store.with_account(account, |a| {
            let mb = a.mailbox(sel.id)?;
            let modes = logic::Modes {
                condstore,
                qresync,
                rev2,
            };
            logic::report(
                out,
                mb,
                &mut sel.view,
                sel.read_only,
                allow_expunge,
                &mut floor,
                modes,
            );
            Some(())
        });
        // A read-only session claims nothing (RFC 3501 6.3.2): new messages
        // are \Recent for it and stay so for the next read-write session.
        if !sel.read_only {
            self.shard.imap_recent.borrow_mut().insert(key, floor);
        }
        if found.flatten().is_none() {
            // The selected mailbox was deleted elsewhere (RFC 3501 allows BYE; we deselect).
            self.out
                .buf
                .extend_from_slice(b"* OK [CLOSED] Mailbox no longer exists\r\n");
            self.sel = None;
        }
    }

    fn select(
        &mut self,
        tag: &[u8],
        name: &MailboxArg<'_>,
        read_only: bool,
        condstore_param: bool,
        qresync: Option<&Qresync>,
    ) {
        if condstore_param {
            self.condstore = true;
        }
        let had = self.sel.take().is_some();
        // RFC 7162 3.2.11 (and RFC 9051 7.1): the implicit close of the
        // selected mailbox is announced, so the client knows where the
        // responses of the old one end. Harmless to any other client.
        if had {
            self.out
                .buf
                .extend_from_slice(b"* OK [CLOSED] Previous mailbox closed\r\n");
        }
        let account = self.account().to_string();
        let Some(name) = self.stored_name(name) else {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::NonExistent),
                "No such mailbox",
            );
            return;
        };
        let rev2 = self.rev2;
        let mut floor_map = self.shard.imap_recent.borrow_mut();
        let out = &mut self.out.buf;
        let sel = self.shard.store.with_account(&account, |a| {
            let mb = a.mailbox_by_name(&name)?;
            let key = (account.clone(), mb.id);
            let floor = floor_map.entry(key).or_insert(0);
            let view = logic::open(out, mb, read_only, floor, rev2, qresync);
            Some(Selected {
                id: mb.id,
                read_only,
                view,
            })
        });
        drop(floor_map);
        match sel.flatten() {
            Some(s) => {
                let code = if read_only {
                    Code::ReadOnly
                } else {
                    Code::ReadWrite
                };
                self.sel = Some(s);
                self.out.status(
                    Some(tag),
                    Status::Ok,
                    Some(&code),
                    if read_only {
                        "EXAMINE completed"
                    } else {
                        "SELECT completed"
                    },
                );
            }
            None => self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::NonExistent),
                "No such mailbox",
            ),
        }
    }

    async fn create(&mut self, tag: &[u8], name: &MailboxArg<'_>, special_use: &[&[u8]]) {
        let Some(name) = self.new_name(name) else {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Cannot),
                "Invalid mailbox name",
            );
            return;
        };
        if name.eq_ignore_ascii_case("INBOX") || self.exists(&name) {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::AlreadyExists),
                "Mailbox already exists",
            );
            return;
        }
        let mut su = special::NONE;
        for attr in special_use {
            match special_use_code(attr) {
                Some(c) => su = c,
                None => {
                    self.out.status(
                        Some(tag),
                        Status::No,
                        Some(&Code::Other("USEATTR")),
                        "Unsupported special-use attribute",
                    );
                    return;
                }
            }
        }
        // RFC 3501 6.3.3: create the superior names a new name needs.
        let mut names: Vec<String> = Vec::new();
        let mut prefix = String::new();
        for (i, part) in name.split(DELIMITER as char).enumerate() {
            if i > 0 {
                prefix.push(DELIMITER as char);
            }
            prefix.push_str(part);
            if !self.exists(&prefix) && !prefix.eq_ignore_ascii_case("INBOX") {
                names.push(prefix.clone());
            }
        }
        match self.create_mailboxes(&names, su).await {
            // RFC 8474 4.1: the new mailbox's MAILBOXID in the tagged OK.
            Ok(created) => match created {
                Some(id) => self.out.status(
                    Some(tag),
                    Status::Ok,
                    Some(&Code::MailboxId(id)),
                    "CREATE completed",
                ),
                None => self.ok(tag, "CREATE completed"),
            },
            Err(e) => self.storage_failed(tag, &e),
        }
    }

    fn exists(&self, name: &str) -> bool {
        self.shard
            .store
            .with_account(self.account(), |a| a.mailbox_by_name(name).is_some())
            .unwrap_or(false)
    }

    /// Create mailboxes (the last one gets `su`), durably.
    /// Create mailboxes (the last one gets `su`), durably; the MAILBOXID
    /// (RFC 8474) of the last one.
    async fn create_mailboxes(
        &mut self,
        names: &[String],
        su: u8,
    ) -> Result<Option<u64>, StorageError> {
        let account = self.account().to_string();
        let now = unix_now();
        let ids = self.shard.store.with_account_counters(&account, |a| {
            // RFC 3501 2.3.1.1: a name created again (after DELETE or RENAME)
            // must not get the UIDVALIDITY of an earlier mailbox of that name;
            // the account's counter remembers deleted ones too.
            let validities = a.reserve_uidvalidity(now, names.len());
            validities
                .into_iter()
                .map(|validity| {
                    let id = a.next_mailbox_id;
                    a.next_mailbox_id += 1;
                    (id, validity)
                })
                .collect::<Vec<_>>()
        })?;
        let ops: Vec<Op<'_>> = names
            .iter()
            .zip(&ids)
            .enumerate()
            .map(|(i, (n, (id, v)))| Op::CreateMailbox {
                account: &account,
                mailbox: *id,
                name: n,
                uidvalidity: *v,
                special_use: if i + 1 == names.len() {
                    su
                } else {
                    special::NONE
                },
            })
            .collect();
        self.shard.store.commit(&ops).await?;
        Ok(ids.last().map(|(id, v)| encode::mailbox_objectid(*v, *id)))
    }

    async fn delete(&mut self, tag: &[u8], name: &MailboxArg<'_>) {
        let Some(name) = self.stored_name(name) else {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::NonExistent),
                "No such mailbox",
            );
            return;
        };
        if name.eq_ignore_ascii_case("INBOX") {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Cannot),
                "INBOX cannot be deleted",
            );
            return;
        }
        let account = self.account().to_string();
        let info = self.shard.store.with_account(&account, |a| {
            let m = a.mailbox_by_name(&name)?;
            let child_prefix = format!("{}{}", m.name, DELIMITER as char);
            Some((
                m.id,
                a.mailboxes
                    .iter()
                    .any(|c| c.name.starts_with(&child_prefix)),
            ))
        });
        match info.flatten() {
            None => self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::NonExistent),
                "No such mailbox",
            ),
            Some((_, true)) => self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Other("HASCHILDREN")),
                "Mailbox has children, delete them first",
            ),
            Some((id, false)) => {
                if self.sel.as_ref().is_some_and(|s| s.id == id) {
                    self.sel = None;
                }
                match self
                    .shard
                    .store
                    .commit(&[Op::DeleteMailbox {
                        account: &account,
                        mailbox: id,
                    }])
                    .await
                {
                    Ok(()) => self.ok(tag, "DELETE completed"),
                    Err(e) => self.storage_failed(tag, &e),
                }
            }
        }
    }

    async fn rename(&mut self, tag: &[u8], from: &MailboxArg<'_>, to: &MailboxArg<'_>) {
        let (Some(from), Some(to)) = (self.stored_name(from), self.new_name(to)) else {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Cannot),
                "Invalid mailbox name",
            );
            return;
        };
        if !self.exists(&from) {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::NonExistent),
                "No such mailbox",
            );
            return;
        }
        if self.exists(&to) || to.eq_ignore_ascii_case("INBOX") {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::AlreadyExists),
                "Target mailbox exists",
            );
            return;
        }
        let account = self.account().to_string();
        if from.eq_ignore_ascii_case("INBOX") {
            // RFC 3501 6.3.5: renaming INBOX moves its messages to a new
            // mailbox and leaves INBOX empty.
            if let Err(e) = self
                .create_mailboxes(std::slice::from_ref(&to), special::NONE)
                .await
            {
                return self.storage_failed(tag, &e);
            }
            let uids: Vec<u32> = self
                .shard
                .store
                .with_account(&account, |a| {
                    a.mailbox(index::INBOX)
                        .map(|m| m.messages.iter().map(|e| e.uid).collect())
                })
                .flatten()
                .unwrap_or_default();
            if let Err(e) = self.transfer(index::INBOX, &uids, &to, true).await {
                return self.storage_failed(tag, &e);
            }
            self.ok(tag, "RENAME completed");
            return;
        }
        let prefix = format!("{from}{}", DELIMITER as char);
        let renames: Vec<(u32, String)> = self
            .shard
            .store
            .with_account(&account, |a| {
                a.mailboxes
                    .iter()
                    .filter_map(|m| {
                        if m.name == from {
                            Some((m.id, to.clone()))
                        } else {
                            m.name
                                .strip_prefix(&prefix)
                                .map(|rest| (m.id, format!("{to}{}{rest}", DELIMITER as char)))
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let ops: Vec<Op<'_>> = renames
            .iter()
            .map(|(id, n)| Op::RenameMailbox {
                account: &account,
                mailbox: *id,
                name: n,
            })
            .collect();
        match self.shard.store.commit(&ops).await {
            Ok(()) => self.ok(tag, "RENAME completed"),
            Err(e) => self.storage_failed(tag, &e),
        }
    }

    async fn subscribe(&mut self, tag: &[u8], name: &MailboxArg<'_>, on: bool) {
        let Some(name) = self.stored_name(name) else {
            self.out
                .status(Some(tag), Status::No, None, "Invalid mailbox name");
            return;
        };
        let name = if name.eq_ignore_ascii_case("INBOX") {
            "INBOX"
        } else {
            &name
        };
        let account = self.account().to_string();
        match self
            .shard
            .store
            .commit(&[Op::Subscribe {
                account: &account,
                name,
                on,
            }])
            .await
        {
            Ok(()) => self.ok(
                tag,
                if on {
                    "SUBSCRIBE completed"
                } else {
                    "UNSUBSCRIBE completed"
                },
            ),
            Err(e) => self.storage_failed(tag, &e),
        }
    }

    fn list(&mut self, tag: &[u8], list: &crate::protocol::imap::ListCommand<'_>) {
        let recent_asked = list
            .returns
            .iter()
            .any(|r| matches!(r, ListReturn::Status(items) if items.contains(&StatusItem::Recent)));
        if self.rev2 && recent_asked {
            return self
                .out
                .status(Some(tag), Status::Bad, None, "No RECENT in IMAP4rev2");
        }
        let mut out = Vec::new();
        let result = self
            .shard
            .store
            .with_account(self.account(), |a| {
                mailboxes::list(list, a, self.rev2, &|m| self.recent_count(m), &mut out)
            })
            .unwrap_or(Ok(()));
        self.out.buf.extend_from_slice(&out);
        match result {
            Ok(()) => self.ok(tag, "LIST completed"),
            Err(text) => self.out.status(Some(tag), Status::Bad, None, text),
        }
    }

    fn lsub(&mut self, tag: &[u8], reference: &[u8], pattern: &[u8]) {
        let out = &mut self.out.buf;
        let rev2 = self.rev2;
        let account = self.account.as_deref().expect("authenticated");
        let _ = self.shard.store.with_account(account, |a| {
            mailboxes::lsub(reference, pattern, a, rev2, out);
        });
        self.ok(tag, "LSUB completed");
    }

    async fn append(
        &mut self,
        tag: &[u8],
        name: &MailboxArg<'_>,
        flags: &[Flag<'_>],
        date: Option<i64>,
        message: &[u8],
        binary: bool,
    ) {
        if message.len() > self.shard.config().limits.message_size_max {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::TooBig),
                "Message too large",
            );
            return;
        }
        // RFC 3501 section 4.3 (and 9, CHAR8): a literal has no NUL; a
        // message with one comes as a literal8 (RFC 3516 section 4.4),
        // which is stored as it is.
        if !binary && memchr::memchr(0, message).is_some() {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Parse),
                "Message contains NUL octets",
            );
            return;
        }
        let Some(name) = self.stored_name(name) else {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::TryCreate),
                "No such mailbox",
            );
            return;
        };
        let name = &name[..];
        let _quota = if self.exists(name) {
            match self.hold_quota(tag, message.len() as u64) {
                Some(h) => Some(h),
                None => return,
            }
        } else {
            None
        };
        let account = self.account().to_string();
        let (sys, kws) = logic::split_flags(flags);
        let alloc = self.shard.store.with_account_counters(&account, |a| {
            let m = a
                .mailboxes
                .iter_mut()
                .find(|m| index::mailbox_name_eq(&m.name, name))?;
            let new_kw = store::allocate_keywords(m, &kws)?;
            let kwmask = logic::keyword_mask(&m.keywords, &kws);
            let uid = m.uidnext;
            m.uidnext += 1;
            let modseq = m.allocate_pending_modseq();
            let found = (m.id, m.uidvalidity, uid, modseq, kwmask, new_kw);
            Some((found, a.allocate_email_id()))
        });
        let Ok(Some(((mbox, validity, uid, modseq, kwmask, new_kw), email_id))) = alloc else {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::TryCreate),
                "No such mailbox (or too many keywords)",
            );
            return;
        };
        let mut ops: Vec<Op<'_>> = new_kw
            .iter()
            .map(|(bit, n)| Op::Keyword {
                account: &account,
                mailbox: mbox,
                bit: *bit,
                name: n,
            })
            .collect();
        ops.push(Op::Message {
            account: &account,
            mailbox: mbox,
            uid,
            internal_date: date.unwrap_or_else(unix_now),
            flags: sys,
            keywords: kwmask,
            modseq,
            email_id,
            body: message,
        });
        match self.shard.store.commit(&ops).await {
            Ok(()) => {
                self.sync(true);
                self.out.status(
                    Some(tag),
                    Status::Ok,
                    Some(&Code::AppendUid { validity, uid }),
                    "APPEND completed",
                );
            }
            Err(e) => self.storage_failed(tag, &e),
        }
    }

    /// Expunge messages marked \Deleted (all, or those whose UIDs are in `set`). Returns the count.
    async fn expunge_deleted(&mut self, set: Option<&SequenceSet>) -> Result<usize, StorageError> {
        let sel = self.sel.as_ref().expect("selected");
        let account = self.account().to_string();
        let id = sel.id;
        let uids: Vec<u32> = self
            .shard
            .store
            .with_account(&account, |a| {
                a.mailbox(id).map(|m| {
                    let max = m.messages.last().map_or(0, |e| e.uid);
                    m.messages
                        .iter()
                        .filter(|e| {
                            e.flags & flag::DELETED != 0
                                && set.is_none_or(|s| s.contains(e.uid, max))
                        })
                        .map(|e| e.uid)
                        .collect()
                })
            })
            .flatten()
            .unwrap_or_default();
        let n = uids.len();
        self.shard.store.expunge(&account, id, uids).await?;
        Ok(n)
    }

    async fn expunge_cmd(&mut self, tag: &[u8], set: Option<SequenceSet>) {
        if self.sel.as_ref().is_some_and(|s| s.read_only) {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::ReadOnly),
                "Mailbox is read-only",
            );
            return;
        }
        match self.expunge_deleted(set.as_ref()).await {
            Ok(n) => {
                self.sync(true);
                self.ok_expunged(tag, n > 0, "EXPUNGE completed");
            }
            Err(e) => self.storage_failed(tag, &e),
        }
    }

    /// The charset of SEARCH, SORT and THREAD: UTF-8 and US-ASCII (RFC 3501
    /// 6.4.4; RFC 5256 section 3 requires both). Answers NO
    /// [BADCHARSET] and returns false for any other.
    fn charset_ok(&mut self, tag: &[u8], search: &crate::protocol::imap::Search<'_>) -> bool {
        if search::charset_ok(search) {
            return true;
        }
        self.out.status(
            Some(tag),
            Status::No,
            Some(&Code::BadCharset(search::CHARSETS)),
            "Unsupported charset",
        );
        // RFC 5182 2.1: a SAVE command answered NO empties `$`.
        if search
            .returns
            .as_ref()
            .is_some_and(|r| r.contains(&SearchReturn::Save))
        {
            self.saved.clear();
        }
        false
    }

    /// The selected mailbox's messages that match every key, in sequence
    /// order, after the sync that SEARCH, SORT and THREAD start with (a
    /// MODSEQ key enables CONDSTORE). None: the charset was refused
    /// (answered).
    fn search_hits(
        &mut self,
        tag: &[u8],
        uid: bool,
        search: &crate::protocol::imap::Search<'_>,
    ) -> Option<Vec<Hit>> {
        if !self.charset_ok(tag, search) {
            return None;
        }
        if search::modseq_key(search) {
            self.enable_condstore();
        }
        self.sync(uid);
        let sel = self.sel.as_ref().expect("selected");
        let store = &self.shard.store;
        let found = store.with_account(self.account(), |a| {
            let mb = a.mailbox(sel.id)?;
            let body = |loc| store.body(loc);
            Some(search::hits(
                mb,
                &sel.view,
                &self.saved,
                search,
                self.rev2,
                body,
            ))
        });
        Some(found.flatten().unwrap_or_default())
    }

    fn search(&mut self, tag: &[u8], uid: bool, search: &crate::protocol::imap::Search<'_>) {
        let Some(hits) = self.search_hits(tag, uid, search) else {
            return;
        };
        if let Some(saved) =
            search::write_search(&mut self.out.buf, tag, uid, search, &hits, self.rev2)
        {
            self.saved = saved;
        }
        self.ok(tag, "SEARCH completed");
    }

    /// SORT and THREAD (RFC 5256): the search, then the order computed by
    /// `session::order` over the header sections of the matches.
    fn sort_or_thread(
        &mut self,
        tag: &[u8],
        uid: bool,
        search: &crate::protocol::imap::Search<'_>,
        how: search::Order<'_>,
    ) {
        let Some(hits) = self.search_hits(tag, uid, search) else {
            return;
        };
        let thread = matches!(how, search::Order::Thread(_));
        let store = &self.shard.store;
        let body = |loc| store.body(loc);
        let saved = search::write_order(&mut self.out.buf, tag, uid, search, &hits, how, body);
        if let Some(saved) = saved {
            self.saved = saved;
        }
        self.ok(
            tag,
            if thread {
                "THREAD completed"
            } else {
                "SORT completed"
            },
        );
    }

    async fn fetch(
        &mut self,
        tag: &[u8],
        uid: bool,
        set: &SequenceSet,
        attrs: &[FetchAttr<'_>],
        changed_since: Option<u64>,
    ) {
        self.sync(uid);
        let sel = self.sel.as_ref().expect("selected");
        if !uid && !sel.view.valid_seqs(set) {
            self.out.status(
                Some(tag),
                Status::Bad,
                None,
                "Invalid message sequence number",
            );
            return;
        }
        if changed_since.is_some() || attrs.contains(&FetchAttr::ModSeq) {
            // enable_condstore() with a mailbox selected (`sel` is borrowed).
            self.modseq_pending |= !self.condstore;
            self.condstore = true;
        }
        let idx = sel.view.resolve(set, uid);
        let account = self.account().to_string();
        // RFC 3516 section 4.1: a transfer encoding BINARY cannot undo fails
        // the command, before any response or \Seen.
        let sel = self.sel.as_ref().expect("selected");
        let store = &self.shard.store;
        let decodable = store.with_account(&account, |a| {
            a.mailbox(sel.id).is_none_or(|mb| {
                fetch::binary_decodable(mb, &sel.view, &idx, attrs, |loc| store.body(loc))
            })
        });
        if decodable == Some(false) {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Other("UNKNOWN-CTE")),
                "Unknown Content-Transfer-Encoding",
            );
            return;
        }
        let sel = self.sel.as_ref().expect("selected");
        let read_only = sel.read_only;
        let sets_seen = !read_only
            && attrs.iter().any(|a| {
                matches!(
                    a,
                    FetchAttr::Rfc822
                        | FetchAttr::Rfc822Text
                        | FetchAttr::BodySection { peek: false, .. }
                        | FetchAttr::Binary { peek: false, .. }
                )
            });
        // \Seen is set first (durably), so the FETCH shows the new flags (RFC 3501 6.4.5).
        if sets_seen {
            let id = sel.id;
            let to_mark: Vec<u32> = idx.iter().map(|&i| sel.view.uids[i]).collect();
            if !to_mark.is_empty() {
                let changes = self.shard.store.with_account_counters(&account, |a| {
                    let mut ch = Vec::new();
                    if let Some(m) = a.mailbox_mut(id) {
                        for u in &to_mark {
                            if let Some(p) = m.position(*u) {
                                if m.messages[p].flags & flag::SEEN != 0 {
                                    continue;
                                }
                                m.highest_modseq += 1;
                                let e = &m.messages[p];
                                ch.push((*u, e.flags | flag::SEEN, e.keywords, m.highest_modseq));
                            }
                        }
                    }
                    ch
                });
                if let Ok(ch) = changes {
                    let ops: Vec<Op<'_>> = ch
                        .iter()
                        .map(|(u, f, k, ms)| Op::Flags {
                            account: &account,
                            mailbox: id,
                            uid: *u,
                            flags: *f,
                            keywords: *k,
                            modseq: *ms,
                        })
                        .collect();
                    if let Err(e) = self.shard.store.commit(&ops).await {
                        return self.storage_failed(tag, &e);
                    }
                }
            }
        }
        let sel = self.sel.as_mut().expect("selected");
        let opts = fetch::Options {
            uid,
            condstore: self.condstore,
            rev2: self.rev2,
            sets_seen,
            changed_since,
            read_only: sel.read_only,
        };
        let store = &self.shard.store;
        let Out { buf, splices } = &mut self.out;
        store.with_account(&account, |a| {
            if let Some(mb) = a.mailbox(sel.id) {
                let body_of = |loc| store.body(loc);
                fetch::render(buf, splices, mb, &mut sel.view, &idx, attrs, opts, body_of);
            }
        });
        self.ok(tag, "FETCH completed");
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_flags(
        &mut self,
        tag: &[u8],
        uid: bool,
        set: &SequenceSet,
        mode: StoreMode,
        silent: bool,
        flags: &[Flag<'_>],
        unchanged_since: Option<u64>,
    ) {
        self.sync(uid);
        let sel = self.sel.as_ref().expect("selected");
        if sel.read_only {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::ReadOnly),
                "Mailbox is read-only",
            );
            return;
        }
        if !uid && !sel.view.valid_seqs(set) {
            self.out.status(
                Some(tag),
                Status::Bad,
                None,
                "Invalid message sequence number",
            );
            return;
        }
        if unchanged_since.is_some() {
            // enable_condstore() with a mailbox selected (`sel` is borrowed).
            self.modseq_pending |= !self.condstore;
            self.condstore = true;
        }
        let idx = sel.view.resolve(set, uid);
        let uids: Vec<u32> = idx.iter().map(|&i| sel.view.uids[i]).collect();
        let id = sel.id;
        let account = self.account().to_string();
        let plan = self.shard.store.with_account_counters(&account, |a| {
            store::plan(a.mailbox_mut(id)?, &uids, mode, flags, unchanged_since)
        });
        let Ok(Some(plan)) = plan else {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Limit),
                "Too many keywords in this mailbox",
            );
            return;
        };
        if let Err(e) = self
            .shard
            .store
            .commit(&store::ops(&account, id, &plan))
            .await
        {
            return self.storage_failed(tag, &e);
        }
        let sel = self.sel.as_mut().expect("selected");
        let answer = store::Answer {
            silent,
            uid,
            condstore: self.condstore,
            conditional: unchanged_since.is_some(),
            rev2: self.rev2,
            read_only: sel.read_only,
        };
        let out = &mut self.out.buf;
        self.shard.store.with_account(&account, |a| {
            if let Some(mb) = a.mailbox(id) {
                store::answer(out, mb, &mut sel.view, &idx, &plan, answer);
            }
        });
        let modified = store::modified_set(&sel.view, uid, &plan);
        match modified {
            Some(set) => {
                // The tagged OK has room for one code: HIGHESTMODSEQ, if owed, goes untagged.
                if let Some(n) = self.take_modseq_pending() {
                    self.out
                        .status(None, Status::Ok, Some(&Code::HighestModSeq(n)), "Highest");
                }
                self.out.status(
                    Some(tag),
                    Status::Ok,
                    Some(&Code::Modified(&set)),
                    "Conditional STORE failed for some messages",
                )
            }
            None => self.ok(tag, "STORE completed"),
        }
    }

    async fn copy(
        &mut self,
        tag: &[u8],
        uid: bool,
        set: &SequenceSet,
        dest: &MailboxArg<'_>,
        mv: bool,
    ) {
        self.sync(uid);
        let sel = self.sel.as_ref().expect("selected");
        if mv && sel.read_only {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::ReadOnly),
                "Mailbox is read-only",
            );
            return;
        }
        if !uid && !sel.view.valid_seqs(set) {
            self.out.status(
                Some(tag),
                Status::Bad,
                None,
                "Invalid message sequence number",
            );
            return;
        }
        let Some(dest) = self.stored_name(dest) else {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::TryCreate),
                "No such mailbox",
            );
            return;
        };
        let dest = &dest[..];
        if !self.exists(dest) {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::TryCreate),
                "No such mailbox",
            );
            return;
        }
        let uids: Vec<u32> = sel
            .view
            .resolve(set, uid)
            .iter()
            .map(|&i| sel.view.uids[i])
            .collect();
        let src = sel.id;
        // RFC 9208 4.3.1: a COPY that would pass the limit fails whole. A
        // MOVE stays under the account's one quota root, so it never does.
        let adding = if mv {
            0
        } else {
            self.shard
                .store
                .with_account(self.account(), |a| {
                    a.mailbox(src).map_or(0, |m| {
                        uids.iter()
                            .filter_map(|u| m.position(*u))
                            .map(|p| u64::from(m.messages[p].loc.len))
                            .sum()
                    })
                })
                .unwrap_or(0)
        };
        let _quota = match adding {
            0 => None,
            n => match self.hold_quota(tag, n) {
                Some(h) => Some(h),
                None => return,
            },
        };
        match self.transfer(src, &uids, dest, mv).await {
            Ok(Some((validity, from, to))) => {
                let code = Code::CopyUid {
                    validity,
                    source: &from,
                    dest: &to,
                };
                if mv {
                    // RFC 6851 4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
                    self.out.status(None, Status::Ok, Some(&code), "Moved");
                    self.sync(true);
                    self.ok_expunged(tag, true, "MOVE completed");
                } else {
                    self.out
                        .status(Some(tag), Status::Ok, Some(&code), "COPY completed");
                }
            }
            // Every message asked for was expunged by another session since
            // this one last heard (RFC 2180 4.4.1, RFC 5530 EXPUNGEISSUED).
            Ok(None) if !uids.is_empty() => self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Other("EXPUNGEISSUED")),
                "Messages were expunged meanwhile",
            ),
            Ok(None) => self.ok(
                tag,
                if mv {
                    "MOVE completed"
                } else {
                    "COPY completed"
                },
            ),
            Err(e) => self.storage_failed(tag, &e),
        }
    }

    /// Link messages into another mailbox (sharing their bodies) and, for a
    /// move, expunge them from the source, in one durable commit. Returns
    /// (destination UIDVALIDITY, source UIDs, destination UIDs).
    async fn transfer(
        &mut self,
        src: u32,
        uids: &[u32],
        dest: &str,
        mv: bool,
    ) -> Result<Option<(u32, Vec<u32>, Vec<u32>)>, StorageError> {
        if uids.is_empty() {
            return Ok(None);
        }
        let account = self.account().to_string();
        let plan = self
            .shard
            .store
            .with_account_counters(&account, |a| transfer::plan(a, src, uids, dest, mv))?;
        let Some(plan) = plan else {
            return Err(StorageError::NoMailbox);
        };
        if plan.links.is_empty() {
            // None of them exists any more: nothing to commit, and no COPYUID
            // (its sets cannot be empty).
            return Ok(None);
        }
        self.shard
            .store
            .commit(&transfer::ops(&account, &plan))
            .await?;
        let (from, to) = plan.copyuid();
        Ok(Some((plan.validity, from, to)))
    }

    /// IDLE (RFC 2177): report changes as they happen until the client sends DONE.
    async fn idle(&mut self, tag: Vec<u8>, conn: &mut Conn) -> bool {
        let fd = conn.fd();
        loop {
            self.sync(true);
            if self.out.flush(conn).await.is_err() {
                return false;
            }
            // A complete line already buffered?
            if let Some(i) = memchr::memchr(b'\n', conn.pending()) {
                let line = &conn.pending()[..i];
                let done = line
                    .strip_suffix(b"\r")
                    .unwrap_or(line)
                    .eq_ignore_ascii_case(b"DONE");
                conn.consume(i + 1);
                if done {
                    self.ok(&tag, "IDLE terminated");
                } else {
                    self.out
                        .status(Some(&tag), Status::Bad, None, "Expected DONE");
                }
                return true;
            }
            if conn.pending().len() > 1024 {
                self.out
                    .status(Some(&tag), Status::Bad, None, "Expected DONE");
                return false;
            }
            if self.shard.stopping() {
                let _ = conn.write_all(b"* BYE Server shutting down\r\n").await;
                return false;
            }
            conn.shrink();
            self.out.buf.shrink_to(1024);
            let watch = self.shard.store.watch(self.account());
            let stop = self.shard.on_stop();
            self.shard.set_idle(fd, true);
            let outcome = {
                let read = conn.fill(IMAP_IDLE_TIMEOUT);
                futures::pin_mut!(read);
                let wake = futures::future::select(watch, stop);
                match futures::future::select(read, wake).await {
                    futures::future::Either::Left((r, _)) => Some(r),
                    futures::future::Either::Right(_) => None,
                }
            };
            self.shard.set_idle(fd, false);
            match outcome {
                None => continue,
                Some(ReadOutcome::Data) => continue,
                Some(ReadOutcome::TimedOut) => {
                    let _ = conn
                        .write_all(b"* BYE Autologout; idle for too long\r\n")
                        .await;
                    return false;
                }
                Some(_) => {
                    if self.shard.stopping() {
                        let _ = conn.write_all(b"* BYE Server shutting down\r\n").await;
                    }
                    return false;
                }
            }
        }
    }
}
