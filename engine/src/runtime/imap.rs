//! Drives one IMAP connection: the I/O around the session's state machine
//! (`session::imap::machine`), which holds every command's logic.
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
//! (like POP3), so every mailbox operation is a local call into the store
//! (the shard is the machine's `Mailstore`). This file performs the effects
//! the machine hands back: credential checks, STARTTLS, COMPRESS, IDLE and
//! the move to the owner shard. Message bytes go out as slices of the
//! segment mappings (`Out` holds them, and `Flush` writes them, or decodes
//! a BINARY part, between the response text).
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpStream;

use crate::protocol::imap::encode;
use crate::protocol::imap::{
    parse_command, rejoin_diverted, Code, Frame, Framer, FramingLimits, Status,
};
use crate::session::fetch::{self, Piece};
use crate::session::imap::machine::{Limits, Machine, Mailstore, Next, Out};
use crate::storage::index::Account;
use crate::storage::record::{Loc, Op};
use crate::storage::{Body, StorageError};

use super::limiter::{Permit, Refusal};
use super::proxy;
use super::shard::{unix_now, ConnCount, Login, Shard, ShardMsg};
use super::spool::{Spooler, Track};
use crate::transport::{Conn, ReadOutcome};

/// RFC 3501 5.4: an autologout timer of at least 30 minutes once logged in.
pub const IMAP_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60 + 60);
/// Before login a client gets less patience.
pub const IMAP_PREAUTH_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest AUTHENTICATE continuation line we buffer.
const SASL_LINE_MAX: usize = 8 * 1024;

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
                    let spaced: Vec<u8> = chunk.iter().map(|&b| fetch::nul_as_space(b)).collect();
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
                let data = fetch::decoded(&body.bytes()[*start..start + len], *cte, *partial);
                conn.write_all(&data).await
            }
        }
    }
}

/// Writing a session's responses to its connection.
trait Flush {
    async fn flush(&mut self, conn: &mut Conn) -> std::io::Result<()>;
}

impl Flush for Out<Body> {
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

/// The shard is the store of the accounts it owns: a commit is a group
/// commit (records written, then fdatasync), bodies are slices of the
/// segment mappings.
impl Mailstore for Shard {
    type Body = Body;

    fn with_account<R>(&self, account: &str, f: impl FnOnce(&Account) -> R) -> Option<R> {
        self.store.with_account(account, f)
    }

    fn with_account_counters<R>(
        &self,
        account: &str,
        f: impl FnOnce(&mut Account) -> R,
    ) -> Result<R, StorageError> {
        self.store.with_account_counters(account, f)
    }

    async fn commit(&self, ops: &[Op<'_>]) -> Result<(), StorageError> {
        if self.mapped().is_none() {
            return self.store.commit(ops).await;
        }
        // Cluster mode: the replica too (flags, expunges, copies, mailbox
        // changes). Boxed: a single node's sessions do not carry it.
        Box::pin(super::changes::commit(self, ops)).await
    }

    async fn replicate_append(
        &self,
        account: &str,
        mailbox: &str,
        flags: u32,
        keywords: &[&[u8]],
        internal_date: i64,
        message: &[u8],
    ) -> Result<Option<Box<dyn std::any::Any>>, StorageError> {
        // Each keyword once (the client may repeat one): the MAIL line
        // that carries them is bounded.
        let mut names: Vec<String> = Vec::with_capacity(keywords.len());
        for k in keywords {
            let k = String::from_utf8_lossy(k).into_owned();
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&k)) {
                names.push(k);
            }
        }
        let to = crate::protocol::smtp::command::AppendTo {
            mailbox: mailbox.to_string(),
            flags,
            keywords: names,
            internal_date,
        };
        let routing = self.routing();
        super::cluster::replicate_append(self, account, &to, message).await?;
        Ok(Some(Box::new(routing)))
    }

    fn body(&self, loc: Loc) -> Option<Body> {
        self.store.body(loc)
    }

    fn quota(&self, account: &str) -> Option<u64> {
        Shard::quota(self, account)
    }

    fn used_octets(&self, account: &str) -> u64 {
        self.store.used_octets(account)
    }

    fn quota_reserved(&self) -> &RefCell<HashMap<String, u64>> {
        &self.quota_reserved
    }

    fn recent_floors(&self) -> &RefCell<HashMap<(String, u32), u32>> {
        &self.imap_recent
    }

    fn limits(&self) -> Limits {
        let l = &self.config().limits;
        Limits {
            message_size_max: l.message_size_max,
            mailboxes_max: l.mailboxes_max,
            subscriptions_max: l.subscriptions_max,
            messages_max: l.messages_max,
        }
    }

    fn now(&self) -> i64 {
        unix_now()
    }
}

/// One connection: the session's state machine and what belongs to the
/// connection only.
struct Session {
    shard: Rc<Shard>,
    m: Machine<Shard>,
    framer: Framer,
    auth_failures: usize,
    /// The TLS version, for the login event ("" without TLS).
    tls_version: &'static str,
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
    s.m.tls = implicit_tls;
    s.tls_version = conn.tls_info().map_or("", |i| i.version);
    s.peer = peer.ip();
    s.m.auth_plaintext = s.shard.config().auth_without_tls_for(peer.ip());
    s.m.out.buf.extend_from_slice(b"* OK [CAPABILITY ");
    s.m.out
        .buf
        .extend_from_slice(s.m.caps_preauth().join(" ").as_bytes());
    s.m.out
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
    let mut s = Session::new(shard, Some(account.clone()));
    s.finish_login(account, &tag).await;
    run(s, conn, permit, count).await;
}

async fn run(mut s: Session, mut conn: Conn, permit: Permit, count: ConnCount) {
    let fd = conn.fd();
    loop {
        let next = if let Some(tag) = s.m.sasl_tag.take() {
            let pending = conn.pending();
            match memchr::memchr(b'\n', pending) {
                Some(i) => {
                    let next = s.m.sasl_continue(tag, &pending[..=i]);
                    conn.consume(i + 1);
                    next
                }
                None if pending.len() > SASL_LINE_MAX => {
                    s.m.out.status(
                        Some(&tag),
                        Status::Bad,
                        None,
                        "Authentication line too long",
                    );
                    let _ = s.m.out.flush(&mut conn).await;
                    return;
                }
                None => {
                    s.m.sasl_tag = Some(tag);
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
                    encode::write_continuation(&mut s.m.out.buf, "Ready for literal data");
                    if s.m.out.flush(&mut conn).await.is_err() {
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
                        s.m.out.status(
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
                    s.m.out.status(
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
                                s.m.out.status(
                                    Some(cmd.tag),
                                    Status::No,
                                    Some(&Code::Unavailable),
                                    "Server busy; try again later",
                                );
                                Next::Continue
                            }
                            Ok(cmd) => s.m.execute(cmd, external.flatten()).await,
                            Err(e) => {
                                let tag = e.tag_or_star().to_vec();
                                let text = format!("Syntax error: {}", e.reason);
                                s.m.out.status(Some(&tag), Status::Bad, None, &text);
                                Next::Continue
                            }
                        }
                    };
                    conn.consume(n);
                    next
                }
            }
        };
        // Credentials are checked here (the throttle, argon2 off the shard).
        let next = match next {
            Next::Login {
                tag,
                user,
                password,
            } => match s.login(&tag, &user, &password).await {
                // Cluster mode: an account stored on another node is
                // served there, through this connection.
                Next::LoggedIn { account, tag } => {
                    match s.shard.remote_home(&account, proxy::Kind::Imap) {
                        Ok(None) => Next::LoggedIn { account, tag },
                        Ok(Some(home)) => {
                            if s.m.out.flush(&mut conn).await.is_err() {
                                return;
                            }
                            let (shard, kind) = (s.shard.clone(), proxy::Kind::Imap);
                            proxy::relay(&shard, &mut conn, home, kind, &tag, &account, &password)
                                .await;
                            return;
                        }
                        Err(why) => {
                            tracing::warn!(
                                account,
                                why,
                                "cluster: the account's node is unavailable"
                            );
                            s.m.out.status(
                                Some(&tag),
                                Status::No,
                                Some(&Code::Unavailable),
                                "The mailbox's node is not reachable, try again later",
                            );
                            Next::Continue
                        }
                    }
                }
                next => next,
            },
            next => next,
        };
        match next {
            Next::Login { .. } | Next::Continue => {}
            Next::Close => {
                let _ = s.m.out.flush(&mut conn).await;
                return;
            }
            Next::Idle(tag) => {
                if !s.idle(tag, &mut conn).await {
                    return;
                }
            }
            Next::Compress(tag) => {
                s.m.out
                    .status(Some(&tag), Status::Ok, None, "DEFLATE active");
                if s.m.out.flush(&mut conn).await.is_err() {
                    return;
                }
                // RFC 4978 section 3: everything after the tagged OK is
                // compressed, both ways; bytes already received are the
                // start of the client's compressed stream.
                s.framer.reset();
                conn.start_deflate();
                s.m.compressed = true;
            }
            Next::StartTls(tag) => {
                let peer = conn.peer();
                let Some(slot) = s.shard.handshake_slot() else {
                    s.m.out.status(
                        Some(&tag),
                        Status::No,
                        Some(&Code::Unavailable),
                        "TLS not available now, try again later",
                    );
                    continue;
                };
                s.m.out
                    .status(Some(&tag), Status::Ok, None, "Begin TLS negotiation now");
                if s.m.out.flush(&mut conn).await.is_err() {
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
                s.m.tls = true;
                s.tls_version = conn.tls_info().map_or("TLS", |i| i.version);
            }
            Next::LoggedIn { account, tag } => {
                let owner = s.shard.owner_of(&account);
                if owner == s.shard.id {
                    conn.set_buffer_max(
                        FramingLimits::AUTHENTICATED.command_max + crate::limits::READ_CHUNK,
                    );
                    s.finish_login(account, &tag).await;
                    continue;
                }
                // Move to the owner: earlier pipelined answers go out first.
                if s.m.out.flush(&mut conn).await.is_err() {
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
        encode::write_continuation(&mut s.m.out.buf, "Ready for literal data");
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
    if s.m.out.flush(conn).await.is_err() {
        return false;
    }
    if s.shard.stopping() {
        let _ = conn.write_all(b"* BYE Server shutting down\r\n").await;
        return false;
    }
    if moved_away(&s.shard, &s.m.account, conn).await {
        return false;
    }
    let timeout = if s.m.account.is_some() {
        IMAP_IDLE_TIMEOUT
    } else {
        IMAP_PREAUTH_TIMEOUT
    };
    s.shard.set_idle_as(fd, s.m.account.as_deref());
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
            } else {
                moved_away(&s.shard, &s.m.account, conn).await;
            }
            false
        }
    }
}

/// Cluster mode: has the account's bucket moved to another node since the
/// session logged in? Then its mailboxes are served there (and changed
/// there): say BYE, so that the client connects again and is relayed to
/// the new primary (RFC 5530 UNAVAILABLE). True: the session is over.
async fn moved_away(shard: &Shard, account: &Option<String>, conn: &mut Conn) -> bool {
    match account {
        Some(a) if !shard.serves(a) => {
            let _ = conn
                .write_all(b"* BYE [UNAVAILABLE] Account moved to another node, connect again\r\n")
                .await;
            true
        }
        _ => false,
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
            m: Machine::new(shard.clone(), None),
            shard,
            framer: Framer::new(limits),
            auth_failures: 0,
            tls_version: "",
            diverted: None,
            peer: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }

    /// Logged in, on the shard that owns `account`.
    async fn finish_login(&mut self, account: String, tag: &[u8]) {
        self.framer.set_limits(FramingLimits::AUTHENTICATED);
        self.framer.set_divert(self.shard.budget.threshold().max(1));
        if let Err(e) = self.shard.store.ensure_account(&account).await {
            tracing::warn!(error = %e, "creating account mailboxes failed");
        }
        self.m.logged_in(account, tag);
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
                self.m.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::Unavailable),
                    "Too many failed logins from your address, try again later",
                );
                self.m
                    .out
                    .buf
                    .extend_from_slice(b"* BYE Too many failed logins\r\n");
                Next::Close
            }
            Login::Busy => {
                self.m.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::Unavailable),
                    "Temporary authentication failure, try again later",
                );
                Next::Continue
            }
            Login::Failed => {
                self.auth_failures += 1;
                self.m.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::AuthenticationFailed),
                    "Authentication failed",
                );
                if self.auth_failures >= self.shard.config().limits.auth_failures_max.max(1) {
                    self.m
                        .out
                        .buf
                        .extend_from_slice(b"* BYE Too many failed logins\r\n");
                    return Next::Close;
                }
                Next::Continue
            }
        }
    }

    /// IDLE (RFC 2177): report changes as they happen until the client sends DONE.
    async fn idle(&mut self, tag: Vec<u8>, conn: &mut Conn) -> bool {
        let fd = conn.fd();
        loop {
            self.m.sync(true);
            let bye = self.m.take_bye();
            if self.m.out.flush(conn).await.is_err() || bye {
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
                    self.m.ok(&tag, "IDLE terminated");
                } else {
                    self.m
                        .out
                        .status(Some(&tag), Status::Bad, None, "Expected DONE");
                }
                return true;
            }
            if conn.pending().len() > 1024 {
                self.m
                    .out
                    .status(Some(&tag), Status::Bad, None, "Expected DONE");
                return false;
            }
            if self.shard.stopping() {
                let _ = conn.write_all(b"* BYE Server shutting down\r\n").await;
                return false;
            }
            if moved_away(&self.shard, &self.m.account, conn).await {
                return false;
            }
            conn.shrink();
            self.m.out.buf.shrink_to(1024);
            let watch = self
                .shard
                .store
                .watch(self.m.account.as_deref().unwrap_or_default());
            let stop = self.shard.on_stop();
            self.shard.set_idle_as(fd, self.m.account.as_deref());
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
                    } else {
                        moved_away(&self.shard, &self.m.account, conn).await;
                    }
                    return false;
                }
            }
        }
    }
}
