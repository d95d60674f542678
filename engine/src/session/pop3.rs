//! POP3 server session state machine (RFC 1939), sans-I/O, with CAPA
//! (RFC 2449), AUTH PLAIN (RFC 5034, RFC 4616) and response codes (RFC 3206).
//!
//! What this module owns: which command is valid in which state, the
//! session's view of the maildrop (frozen at login, deletion marks), login
//! failure counting, and every reply byte except the message bodies, which
//! the runtime streams itself with
//! [`write_stuffed`](crate::protocol::pop3::write_stuffed).
//!
//! What it must never do: touch sockets, files, the clock or passwords
//! (it hands credentials to the runtime and gets a verdict back), hold
//! `Rc`/`RefCell` (the session is `Send`: the runtime moves it to the
//! account's core after login), or panic on any input.
//!
//! INTERFACE CONTRACT (the runtime drives it; keep these names):
//!
//! ```text
//! let mut s = Pop3Session::new(params);
//! s.greeting(&mut out);                                   // +OK <host> POP3 ringmail ready
//! loop {
//!     match s.advance(&buf[pos..], &mut out) {
//!         (used, NeedInput) => { pos += used; flush out; read more }
//!         (used, Login { user, password }) => { pos += used; verify, lock maildrop;
//!                                               s.login_result(result, &mut out) }
//!         (used, SendMessage { index, body_lines }) => { pos += used; flush out;
//!                     write_stuffed(message(index), body_lines, &mut |b| send(b)) }
//!         (used, Update { deleted }) => { pos += used; expunge; s.update_result(ok, &mut out) }
//!         (used, Close) => { pos += used; flush out; close }
//!     }
//! }
//! ```
//!
//! `advance` handles every complete command in the buffer in order (RFC 2449
//! PIPELINING) and stops at the first event. Bytes it has not consumed must be
//! presented again, followed by new input. While a `Login` or `Update` answer
//! is pending, `advance` consumes nothing and returns `NeedInput`. After
//! `login_result` or `update_result` decides to close (too many failures,
//! end of session), the next `advance` returns `Close`, and so does every
//! call after that.
//!
//! Idle timeout: the runtime closes the connection after
//! [`POP3_IDLE_TIMEOUT`] without a command, silently and without entering
//! UPDATE (RFC 1939 section 3: messages marked deleted are not removed).
//!
//! States (RFC 1939 sections 3-6), with the sub-states this machine adds
//! while it waits for the runtime:
//!
//! ```text
//!            greeting
//!               |
//!               v
//!  +------> AUTHORIZATION ---- QUIT ----------------------------> (Close)
//!  |  USER/PASS |  \--- AUTH PLAIN (no initial response) ---+
//!  |  or AUTH   |         "+ " <-- response line or "*" ----+
//!  |   PLAIN    v
//!  |      [login pending] -- Login event; runtime answers login_result
//!  |            |  \
//!  +- failure --+   \-- failure number auth_failures_max --> (Close)
//!    (-ERR [AUTH],  |
//!     [IN-USE],     | Ok(maildrop): "+OK maildrop has N messages"
//!     [SYS/TEMP])   v
//!              TRANSACTION  (STAT LIST RETR TOP DELE NOOP RSET UIDL CAPA)
//!                   |
//!                  QUIT: Update event with the messages marked deleted
//!                   v
//!                UPDATE [pending] -- runtime removes them, update_result
//!                   |
//!                   v
//!                (Close)
//! ```

use crate::limits::{AUTH_FAILURES_MAX, POP3_COMMAND_LINE_MAX, POP3_IDLE_TIMEOUT};
use crate::protocol::pop3::reply::{self, RespCode};
use crate::protocol::pop3::{
    decode_plain, is_valid_uidl, parse_command, Command, LineSplitter, PlainError, Scan,
    POP3_SASL_LINE_MAX,
};
use std::time::Duration;

/// Per-listener settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pop3Params {
    /// Shown in the greeting.
    pub hostname: String,
    /// Failed logins before the connection is closed; 0 behaves as 1.
    pub auth_failures_max: usize,
    /// Offer STLS (RFC 2595 section 4) while the connection is plain.
    pub stls: bool,
    /// The connection is TLS from its first byte (implicit TLS, RFC 8314).
    pub tls: bool,
    /// Accept USER/PASS and AUTH without TLS (loopback, or the operator's
    /// `auth_without_tls`). Under TLS credentials are always accepted.
    pub auth_plaintext: bool,
}

impl Pop3Params {
    /// Defaults from [`crate::limits`].
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            auth_failures_max: AUTH_FAILURES_MAX,
            stls: false,
            tls: false,
            auth_plaintext: true,
        }
    }
}

/// One message as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildropEntry {
    /// Exact size in octets as sent by RETR before stuffing (RFC 1939
    /// section 5, LIST).
    pub size: u64,
    /// RFC 1939 section 7: 1..=70 characters in 0x21..=0x7E (see
    /// [`is_valid_uidl`]). The runtime must provide valid ones; should one be
    /// invalid, its bad bytes go out as '?' so the stream stays well formed.
    pub uidl: String,
}

/// The maildrop, frozen at login: the session's view never changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maildrop {
    pub entries: Vec<MaildropEntry>,
}

/// The runtime's verdict on a `Login` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginResult {
    /// Credentials good and maildrop locked.
    Ok(Maildrop),
    /// Wrong user or password: counts towards `auth_failures_max`.
    BadCredentials,
    /// Maildrop locked by another session (RFC 3206 IN-USE).
    InUse,
    /// Storage or authentication backend unavailable (RFC 3206 SYS/TEMP).
    TempFail,
    /// The client address is banned after failed logins: `-ERR [SYS/TEMP]`,
    /// then close.
    Banned,
}

/// What the runtime must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pop3Event {
    NeedInput,
    /// USER+PASS, or AUTH PLAIN, received. Runtime verifies and calls `login_result`.
    Login {
        user: String,
        password: String,
    },
    /// The session already wrote the "+OK ..." line into `out`; the runtime now writes message `index`
    /// (0-based into the maildrop) with `protocol::pop3::write_stuffed(msg, body_lines, ...)`.
    SendMessage {
        index: usize,
        body_lines: Option<usize>,
    },
    /// STLS was accepted in AUTHORIZATION: call `starttls_result` (it writes
    /// `+OK` or `-ERR`); after `+OK`, flush, drop every unconsumed byte,
    /// run the handshake and call `tls_started` (or close on failure).
    StartTls,
    /// QUIT in TRANSACTION state: the runtime removes these (0-based) messages, then calls `update_result`.
    Update {
        deleted: Vec<usize>,
    },
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// RFC 1939 section 4. `user` is the name from a USER command that
    /// the very next command, PASS, may complete (RFC 1939 section 7).
    Authorization { user: Option<String> },
    /// AUTH PLAIN without initial response: "+ " was sent, the next line is
    /// the base64 response or "*" (RFC 5034 section 4).
    SaslResponse,
    /// A `Login` event is out.
    LoginPending { user: String },
    /// A `StartTls` event is out.
    TlsPending,
    /// RFC 1939 section 5.
    Transaction,
    /// RFC 1939 section 6: an `Update` event is out.
    UpdatePending,
    /// Every further `advance` returns `Close`.
    Closed,
}

/// One POP3 connection's protocol state.
#[derive(Debug)]
pub struct Pop3Session {
    params: Pop3Params,
    state: State,
    splitter: LineSplitter,
    failures: usize,
    user: Option<String>,
    maildrop: Maildrop,
    deleted: Vec<bool>,
    /// Messages not marked deleted, and their total size (STAT, RFC 1939
    /// section 5: deleted messages are not counted).
    live_count: usize,
    live_size: u64,
    /// TLS is active (implicit, or after STLS).
    tls: bool,
}

// The runtime moves the session to another core after login.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Pop3Session>();
};

impl Pop3Session {
    pub fn new(params: Pop3Params) -> Self {
        let tls = params.tls;
        Self {
            params,
            state: State::Authorization { user: None },
            splitter: LineSplitter::new(),
            failures: 0,
            user: None,
            maildrop: Maildrop::default(),
            deleted: Vec::new(),
            live_count: 0,
            live_size: 0,
            tls,
        }
    }

    /// Credentials may be given on this connection now.
    fn credentials_allowed(&self) -> bool {
        self.tls || self.params.auth_plaintext
    }

    /// RFC 2449 capabilities for the current state. RFC 2595 section 4:
    /// STLS only while plain and in AUTHORIZATION; the login mechanisms
    /// only where credentials would be accepted.
    fn capabilities(&self) -> Vec<&'static str> {
        let authorization = !matches!(self.state, State::Transaction);
        let mut caps = Vec::with_capacity(10);
        for cap in reply::CAPABILITIES {
            let login = *cap == "USER" || cap.starts_with("SASL ");
            if !login || self.credentials_allowed() {
                caps.push(*cap);
            }
        }
        if authorization && self.params.stls && !self.tls {
            caps.push(reply::CAPA_STLS);
        }
        caps
    }

    /// The runtime's answer to a `StartTls` event: true to go ahead (`+OK`),
    /// false when no handshake can start now (`-ERR [SYS/TEMP]`).
    pub fn starttls_result(&mut self, ready: bool, out: &mut Vec<u8>) {
        if self.state != State::TlsPending {
            return;
        }
        if ready {
            reply::ok(out, reply::OK_STLS);
        } else {
            reply::err(out, Some(RespCode::SysTemp), reply::ERR_TEMP_FAIL);
            self.state = State::Authorization { user: None };
        }
    }

    /// The TLS handshake after STLS completed: back to AUTHORIZATION with
    /// nothing remembered from before (RFC 2595 section 4).
    pub fn tls_started(&mut self) {
        if self.state == State::TlsPending {
            self.tls = true;
            self.state = State::Authorization { user: None };
        }
    }

    /// `+OK <hostname> POP3 ringmail ready`. No APOP timestamp: APOP is not
    /// offered (RFC 1939 section 7).
    pub fn greeting(&mut self, out: &mut Vec<u8>) {
        reply::greeting(out, &self.params.hostname);
    }

    /// How long the runtime waits for a command before closing silently.
    pub fn idle_timeout(&self) -> Duration {
        POP3_IDLE_TIMEOUT
    }

    /// The logged-in user, once `login_result(Ok)` accepted the login.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// Process buffered input; see the module docs.
    pub fn advance(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Pop3Event) {
        let mut pos = 0;
        loop {
            let max = match self.state {
                State::Closed => return (pos, Pop3Event::Close),
                State::LoginPending { .. } | State::UpdatePending | State::TlsPending => {
                    return (pos, Pop3Event::NeedInput)
                }
                State::SaslResponse => POP3_SASL_LINE_MAX,
                State::Authorization { .. } | State::Transaction => POP3_COMMAND_LINE_MAX,
            };
            match self.splitter.next(&input[pos..], max) {
                Scan::NeedMore { consumed } => return (pos + consumed, Pop3Event::NeedInput),
                Scan::TooLong { consumed } => {
                    pos += consumed;
                    if !matches!(self.state, State::Transaction) {
                        // Aborts a SASL exchange, forgets a pending USER.
                        self.state = State::Authorization { user: None };
                    }
                    reply::err(out, None, reply::ERR_LINE_TOO_LONG);
                }
                Scan::Line { line, consumed } => {
                    pos += consumed;
                    if let Some(event) = self.line(line, out) {
                        return (pos, event);
                    }
                }
            }
        }
    }

    /// The runtime's answer to a `Login` event. Ignored in any other state.
    pub fn login_result(&mut self, result: LoginResult, out: &mut Vec<u8>) {
        let State::LoginPending { user } = &mut self.state else {
            return;
        };
        let user = std::mem::take(user);
        self.state = State::Authorization { user: None };
        match result {
            LoginResult::Ok(maildrop) => {
                self.live_count = maildrop.entries.len();
                self.live_size = maildrop
                    .entries
                    .iter()
                    .fold(0u64, |sum, e| sum.saturating_add(e.size));
                self.deleted = vec![false; maildrop.entries.len()];
                self.maildrop = maildrop;
                self.user = Some(user);
                self.state = State::Transaction;
                self.maildrop_summary(out);
            }
            LoginResult::BadCredentials => self.auth_failure(out, reply::ERR_AUTH_FAILED),
            LoginResult::InUse => reply::err(out, Some(RespCode::InUse), reply::ERR_IN_USE),
            LoginResult::TempFail => reply::err(out, Some(RespCode::SysTemp), reply::ERR_TEMP_FAIL),
            LoginResult::Banned => {
                reply::err(out, Some(RespCode::SysTemp), reply::ERR_BANNED);
                self.state = State::Closed;
            }
        }
    }

    /// The runtime's answer to an `Update` event: whether every marked
    /// message was removed. Ignored in any other state.
    pub fn update_result(&mut self, ok: bool, out: &mut Vec<u8>) {
        if self.state != State::UpdatePending {
            return;
        }
        self.state = State::Closed;
        if !ok {
            // RFC 1939 section 6, QUIT: "-ERR some deleted messages not removed".
            reply::err(out, Some(RespCode::SysTemp), reply::ERR_UPDATE_FAILED);
        } else if self.live_count == 0 {
            reply::ok_fmt(out, format_args!("{} (maildrop empty)", reply::OK_QUIT));
        } else {
            reply::ok_fmt(
                out,
                format_args!("{} ({} messages left)", reply::OK_QUIT, self.live_count),
            );
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Pop3Event> {
        match self.state {
            State::Authorization { .. } => self.authorization(line, out),
            State::SaslResponse => {
                self.state = State::Authorization { user: None };
                if line == crate::protocol::pop3::sasl::SASL_CANCEL {
                    reply::err(out, None, reply::ERR_AUTH_CANCELLED);
                    None
                } else {
                    self.plain(line, out)
                }
            }
            State::Transaction => self.transaction(line, out),
            // `advance` never reads a line in these states.
            State::LoginPending { .. }
            | State::UpdatePending
            | State::TlsPending
            | State::Closed => None,
        }
    }

    fn authorization(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Pop3Event> {
        // Whatever this command is, a USER name only survives until the next
        // command (RFC 1939 section 7: PASS comes "immediately after" USER).
        let pending_user = match &mut self.state {
            State::Authorization { user } => user.take(),
            _ => None,
        };
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(e) => {
                reply::err_fmt(out, None, format_args!("{e}"));
                return None;
            }
        };
        let login = matches!(
            command,
            Command::User(_)
                | Command::Pass(_)
                | Command::Auth {
                    mechanism: Some(_),
                    ..
                }
        );
        if login && !self.credentials_allowed() {
            // Not a failed login: the password never reached us in a form
            // we would check (as Dovecot answers).
            reply::err(out, Some(RespCode::Auth), reply::ERR_NEED_TLS);
            return None;
        }
        match command {
            Command::User(name) => match valid_name(name) {
                Some(name) => {
                    // Any name is accepted here, so USER cannot probe which
                    // mailboxes exist (RFC 1939 section 13).
                    self.state = State::Authorization { user: Some(name) };
                    reply::ok(out, reply::OK_USER);
                }
                None => reply::err(out, None, reply::ERR_BAD_USER),
            },
            Command::Pass(password) => match (pending_user, std::str::from_utf8(password)) {
                (None, _) => reply::err(out, None, reply::ERR_PASS_WITHOUT_USER),
                (Some(user), Ok(password)) => return Some(self.start_login(user, password)),
                // A non-UTF-8 password cannot match; it is still a failed try.
                (Some(_), Err(_)) => self.auth_failure(out, reply::ERR_AUTH_FAILED),
            },
            Command::Auth {
                mechanism: None, ..
            } => reply::auth_list(out),
            Command::Auth {
                mechanism: Some(mechanism),
                initial_response,
            } => {
                if !mechanism.eq_ignore_ascii_case(b"PLAIN") {
                    reply::err(out, None, reply::ERR_AUTH_MECHANISM);
                } else if let Some(response) = initial_response {
                    return self.plain(response, out);
                } else {
                    self.state = State::SaslResponse;
                    reply::sasl_continue(out);
                }
            }
            Command::Capa => reply::capa(out, &self.capabilities()),
            Command::Quit => {
                // RFC 1939 section 4: QUIT here ends the session without UPDATE.
                reply::ok(out, reply::OK_QUIT);
                self.state = State::Closed;
                return Some(Pop3Event::Close);
            }
            Command::Apop => reply::err(out, None, reply::ERR_APOP),
            Command::Stls if self.tls => reply::err(out, None, reply::ERR_TLS_ACTIVE),
            Command::Stls if self.params.stls => {
                self.state = State::TlsPending;
                return Some(Pop3Event::StartTls);
            }
            Command::Stls => reply::err(out, None, reply::ERR_STLS),
            Command::Unknown(_) => reply::err(out, None, reply::ERR_UNKNOWN),
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Top { .. }
            | Command::Uidl(_) => reply::err(out, None, reply::ERR_WRONG_STATE),
        }
        None
    }

    /// A base64 PLAIN response, from AUTH's initial response or the line
    /// after "+ ". The state is AUTHORIZATION on entry.
    fn plain(&mut self, response: &[u8], out: &mut Vec<u8>) -> Option<Pop3Event> {
        match decode_plain(response) {
            // RFC 5034 section 4: undecodable responses are rejected with -ERR.
            Err(PlainError::Base64) => reply::err(out, None, reply::ERR_AUTH_BASE64),
            Err(PlainError::Malformed) => reply::err(out, None, reply::ERR_AUTH_MALFORMED),
            // RFC 4616 section 2: we support no proxy authorization, so an
            // authzid must be empty or name the authenticating user.
            Ok(c) if !c.authzid.is_empty() && c.authzid != c.authcid => {
                self.auth_failure(out, reply::ERR_AUTHZ)
            }
            Ok(c) => match valid_name(c.authcid.as_bytes()) {
                Some(user) => return Some(self.start_login(user, c.password)),
                None => self.auth_failure(out, reply::ERR_AUTH_FAILED),
            },
        }
        None
    }

    fn start_login(&mut self, user: String, password: impl Into<String>) -> Pop3Event {
        self.state = State::LoginPending { user: user.clone() };
        Pop3Event::Login {
            user,
            password: password.into(),
        }
    }

    /// A failed login: -ERR [AUTH] (RFC 3206 section 5), and after
    /// `auth_failures_max` of them, close.
    fn auth_failure(&mut self, out: &mut Vec<u8>, text: &str) {
        self.failures += 1;
        if self.failures >= self.params.auth_failures_max.max(1) {
            reply::err(out, Some(RespCode::Auth), reply::ERR_AUTH_TOO_MANY);
            self.state = State::Closed;
        } else {
            reply::err(out, Some(RespCode::Auth), text);
            self.state = State::Authorization { user: None };
        }
    }

    fn transaction(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Pop3Event> {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(e) => {
                reply::err_fmt(out, None, format_args!("{e}"));
                return None;
            }
        };
        match command {
            Command::Stat => {
                reply::ok_fmt(out, format_args!("{} {}", self.live_count, self.live_size))
            }
            Command::List(None) => {
                self.maildrop_summary(out);
                for (i, e) in self.live_entries() {
                    reply::line_fmt(out, format_args!("{} {}", i + 1, e.size));
                }
                reply::end_multiline(out);
            }
            Command::List(Some(n)) => {
                if let Some(i) = self.live_index(n, out) {
                    let size = self.maildrop.entries[i].size;
                    reply::ok_fmt(out, format_args!("{n} {size}"));
                }
            }
            Command::Uidl(None) => {
                reply::ok(out, "");
                for (i, e) in self.live_entries() {
                    reply::line_fmt(out, format_args!("{} {}", i + 1, SafeUidl(&e.uidl)));
                }
                reply::end_multiline(out);
            }
            Command::Uidl(Some(n)) => {
                if let Some(i) = self.live_index(n, out) {
                    let uidl = SafeUidl(&self.maildrop.entries[i].uidl);
                    reply::ok_fmt(out, format_args!("{n} {uidl}"));
                }
            }
            Command::Retr(n) => {
                let i = self.live_index(n, out)?;
                let size = self.maildrop.entries[i].size;
                reply::ok_fmt(out, format_args!("{size} octets"));
                return Some(Pop3Event::SendMessage {
                    index: i,
                    body_lines: None,
                });
            }
            Command::Top { msg, lines } => {
                let i = self.live_index(msg, out)?;
                reply::ok(out, "top of message follows");
                return Some(Pop3Event::SendMessage {
                    index: i,
                    body_lines: Some(lines),
                });
            }
            Command::Dele(n) => {
                if let Some(i) = self.live_index(n, out) {
                    self.deleted[i] = true;
                    self.live_count -= 1;
                    self.live_size = self.live_size.saturating_sub(self.maildrop.entries[i].size);
                    reply::ok_fmt(out, format_args!("message {n} deleted"));
                }
            }
            Command::Noop => reply::ok(out, reply::OK_NOOP),
            Command::Rset => {
                // RFC 1939 section 5: unmark every message marked deleted.
                self.deleted.iter_mut().for_each(|d| *d = false);
                self.live_count = self.maildrop.entries.len();
                self.live_size = self
                    .maildrop
                    .entries
                    .iter()
                    .fold(0u64, |sum, e| sum.saturating_add(e.size));
                self.maildrop_summary(out);
            }
            Command::Quit => {
                self.state = State::UpdatePending;
                let deleted = (0..self.deleted.len())
                    .filter(|&i| self.deleted[i])
                    .collect();
                return Some(Pop3Event::Update { deleted });
            }
            Command::Capa => reply::capa(out, &self.capabilities()),
            // RFC 2595 section 4: STLS only in AUTHORIZATION.
            Command::Stls => reply::err(out, None, reply::ERR_WRONG_STATE),
            Command::Unknown(_) => reply::err(out, None, reply::ERR_UNKNOWN),
            Command::User(_) | Command::Pass(_) | Command::Apop | Command::Auth { .. } => {
                reply::err(out, None, reply::ERR_WRONG_STATE)
            }
        }
        None
    }

    /// "+OK maildrop has N messages (S octets)", counting live messages.
    fn maildrop_summary(&self, out: &mut Vec<u8>) {
        reply::ok_fmt(
            out,
            format_args!(
                "maildrop has {} message{} ({} octets)",
                self.live_count,
                if self.live_count == 1 { "" } else { "s" },
                self.live_size
            ),
        );
    }

    fn live_entries(&self) -> impl Iterator<Item = (usize, &MaildropEntry)> {
        self.maildrop
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// The 0-based index of live message `n` (1-based), or write the -ERR.
    fn live_index(&self, n: usize, out: &mut Vec<u8>) -> Option<usize> {
        let total = self.maildrop.entries.len();
        if n == 0 || n > total {
            reply::err_fmt(
                out,
                None,
                format_args!(
                    "{}, only {total} message{} in maildrop",
                    reply::ERR_NO_SUCH_MESSAGE,
                    if total == 1 { "" } else { "s" }
                ),
            );
            return None;
        }
        if self.deleted[n - 1] {
            reply::err_fmt(out, None, format_args!("message {n} already deleted"));
            return None;
        }
        Some(n - 1)
    }
}

/// A user name from USER or AUTH PLAIN: UTF-8 without control characters
/// (so it is safe to log and to hand to the runtime).
fn valid_name(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    (!name.is_empty() && !name.chars().any(char::is_control)).then(|| name.to_owned())
}

/// Displays a uidl, replacing what RFC 1939 section 7 forbids by '?'.
struct SafeUidl<'a>(&'a str);

impl std::fmt::Display for SafeUidl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if is_valid_uidl(self.0.as_bytes()) {
            return f.write_str(self.0);
        }
        let mut written = 0;
        for b in self.0.bytes().take(crate::protocol::pop3::UIDL_MAX) {
            let c = if (0x21..=0x7e).contains(&b) {
                b as char
            } else {
                '?'
            };
            write!(f, "{c}")?;
            written += 1;
        }
        if written == 0 {
            f.write_str("?")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pop3::write_stuffed;
    use proptest::prelude::*;

    /// RFC 1939 section 7 example unique-ids.
    const UIDS: [&str; 2] = ["whqtswO00WBw418f9t5JxYwZ", "QhdPYR:00WBw1Ph7x7"];

    /// A message of exactly `size` octets: `head`, then a line of 'x'.
    fn sized(head: &str, size: usize) -> Vec<u8> {
        let mut m = head.as_bytes().to_vec();
        m.resize(size - 2, b'x');
        m.extend_from_slice(b"\r\n");
        m
    }

    /// The fake runtime: a two-message maildrop like RFC 1939's examples
    /// (120 and 200 octets), and a password table.
    struct Rt {
        messages: Vec<Vec<u8>>,
        update_ok: bool,
    }

    impl Rt {
        fn rfc() -> Self {
            Rt {
                messages: vec![
                    sized("Subject: one\r\n\r\n.dot\r\n", 120),
                    sized("Subject: two\r\n\r\nl1\r\n.l2\r\nl3\r\n", 200),
                ],
                update_ok: true,
            }
        }

        fn maildrop(&self) -> Maildrop {
            Maildrop {
                entries: self
                    .messages
                    .iter()
                    .zip(UIDS)
                    .map(|(m, u)| MaildropEntry {
                        size: m.len() as u64,
                        uidl: u.into(),
                    })
                    .collect(),
            }
        }

        fn login(&self, user: &str, password: &str) -> LoginResult {
            match (user, password) {
                ("mrose", "tanstaaf") => LoginResult::Ok(self.maildrop()),
                ("busy", _) => LoginResult::InUse,
                ("temp", _) => LoginResult::TempFail,
                _ => LoginResult::BadCredentials,
            }
        }
    }

    fn params() -> Pop3Params {
        Pop3Params::new("dewey")
    }

    /// Drive a session like the runtime would: feed `chunks` one at a time,
    /// answer events, keep unconsumed bytes. Returns everything the server
    /// sent and every event except `NeedInput`.
    fn drive(rt: &Rt, params: Pop3Params, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Pop3Event>) {
        let mut s = Pop3Session::new(params);
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut buf = Vec::new();
        s.greeting(&mut out);
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                let (used, event) = s.advance(&buf, &mut out);
                buf.drain(..used);
                if event != Pop3Event::NeedInput {
                    events.push(event.clone());
                }
                match event {
                    Pop3Event::NeedInput => break,
                    Pop3Event::Login { user, password } => {
                        s.login_result(rt.login(&user, &password), &mut out);
                        assert_eq!(s.is_authenticated(), s.user() == Some(user.as_str()));
                    }
                    Pop3Event::SendMessage { index, body_lines } => {
                        write_stuffed(&rt.messages[index], body_lines, &mut |b: &[u8]| {
                            out.extend_from_slice(b)
                        })
                    }
                    Pop3Event::Update { .. } => s.update_result(rt.update_ok, &mut out),
                    Pop3Event::StartTls => {
                        // As the runtime: go ahead, drop the rest of the read.
                        s.starttls_result(true, &mut out);
                        buf.clear();
                        s.tls_started();
                        break;
                    }
                    Pop3Event::Close => return (out, events),
                }
            }
        }
        (out, events)
    }

    fn tls_params() -> Pop3Params {
        Pop3Params {
            stls: true,
            auth_plaintext: false,
            ..params()
        }
    }

    fn run_pieces(p: Pop3Params, pieces: &[&str]) -> String {
        let pieces: Vec<&[u8]> = pieces.iter().map(|p| p.as_bytes()).collect();
        String::from_utf8(drive(&Rt::rfc(), p, &pieces).0).unwrap()
    }

    #[test]
    fn credentials_wait_for_stls() {
        let out = run_pieces(tls_params(), &["CAPA\r\nUSER mrose\r\nPASS tanstaaf\r\nAUTH PLAIN AG1yb3NlAHRhbnN0YWFm\r\nSTLS\r\n", "CAPA\r\nUSER mrose\r\nPASS tanstaaf\r\nSTLS\r\nQUIT\r\n"]);
        let (before, after) = out
            .split_once("+OK Begin TLS negotiation\r\n")
            .expect("STLS accepted");
        // Before TLS: STLS offered, no login mechanism, logins refused
        // with [AUTH] and not counted as failures.
        assert!(
            before.contains("\r\nSTLS\r\n")
                && !before.contains("\r\nUSER\r\n")
                && !before.contains("SASL"),
            "{before}"
        );
        assert_eq!(
            before
                .matches("-ERR [AUTH] Plaintext authentication disallowed")
                .count(),
            3,
            "{before}"
        );
        // After: USER and SASL offered, STLS not; login works; a second STLS
        // (in TRANSACTION) is refused.
        let (capa, rest) = after.split_once(".\r\n").unwrap();
        assert!(
            capa.contains("\r\nUSER\r\n") && capa.contains("SASL PLAIN") && !capa.contains("STLS"),
            "{capa}"
        );
        assert!(
            rest.starts_with("+OK send PASS\r\n+OK maildrop has"),
            "{rest}"
        );
        assert!(
            rest.contains("-ERR command not valid in this state\r\n"),
            "{rest}"
        );
    }

    #[test]
    fn commands_pipelined_after_stls_are_dropped_and_stls_twice_refused() {
        let out = run_pieces(
            tls_params(),
            &[
                "STLS\r\nUSER mrose\r\nPASS tanstaaf\r\n",
                "PASS tanstaaf\r\nSTLS\r\nQUIT\r\n",
            ],
        );
        let after = out.split_once("+OK Begin TLS negotiation\r\n").unwrap().1;
        // The injected USER was never run: PASS has no USER before it.
        assert!(
            after.starts_with(
                "-ERR PASS must follow a successful USER\r\n-ERR TLS already active\r\n"
            ),
            "{after}"
        );
        // Implicit TLS: no STLS at all, logins accepted.
        let p = Pop3Params {
            tls: true,
            ..tls_params()
        };
        let out = run_pieces(p, &["CAPA\r\nSTLS\r\nUSER mrose\r\nPASS tanstaaf\r\n"]);
        assert!(
            !out.contains("\r\nSTLS\r\n")
                && out.contains("-ERR TLS already active")
                && out.contains("+OK maildrop has"),
            "{out}"
        );
    }

    /// Whole input at once, default runtime and params; output as text.
    fn run(client: &str) -> (String, Vec<Pop3Event>) {
        let (out, events) = drive(&Rt::rfc(), params(), &[client.as_bytes()]);
        (String::from_utf8(out).unwrap(), events)
    }

    fn login_event(user: &str, password: &str) -> Pop3Event {
        Pop3Event::Login {
            user: user.into(),
            password: password.into(),
        }
    }

    const GREETING: &str = "+OK dewey POP3 ringmail ready\r\n";
    const LOGIN: &str = "USER mrose\r\nPASS tanstaaf\r\n";
    const LOGGED_IN: &str = "+OK send PASS\r\n+OK maildrop has 2 messages (320 octets)\r\n";

    fn x(n: usize) -> String {
        "x".repeat(n)
    }

    #[test]
    fn rfc1939_example_session() {
        // RFC 1939 section 10, with USER/PASS in place of APOP.
        let (out, events) = run(
            "USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nLIST\r\nRETR 1\r\nDELE 1\r\n\
             RETR 2\r\nDELE 2\r\nQUIT\r\n",
        );
        let msg1 = format!("Subject: one\r\n\r\n..dot\r\n{}\r\n.\r\n", x(120 - 22 - 2));
        let msg2 = format!(
            "Subject: two\r\n\r\nl1\r\n..l2\r\nl3\r\n{}\r\n.\r\n",
            x(200 - 29 - 2)
        );
        assert_eq!(
            out,
            format!(
                "{GREETING}{LOGGED_IN}+OK 2 320\r\n\
                 +OK maildrop has 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n\
                 +OK 120 octets\r\n{msg1}+OK message 1 deleted\r\n\
                 +OK 200 octets\r\n{msg2}+OK message 2 deleted\r\n\
                 +OK ringmail POP3 server signing off (maildrop empty)\r\n"
            )
        );
        assert_eq!(
            events,
            vec![
                login_event("mrose", "tanstaaf"),
                Pop3Event::SendMessage {
                    index: 0,
                    body_lines: None
                },
                Pop3Event::SendMessage {
                    index: 1,
                    body_lines: None
                },
                Pop3Event::Update {
                    deleted: vec![0, 1]
                },
                Pop3Event::Close,
            ]
        );
    }

    #[test]
    fn transaction_commands_and_deletion_marks() {
        let (out, events) = run(&format!(
            "{LOGIN}LIST 2\r\nLIST 3\r\nDELE 1\r\nDELE 1\r\nLIST 1\r\nRETR 1\r\nTOP 1 0\r\n\
             UIDL 1\r\nSTAT\r\nLIST\r\nUIDL\r\nRSET\r\nSTAT\r\nUIDL\r\nUIDL 2\r\nUIDL 3\r\n\
             NOOP\r\nQUIT\r\n"
        ));
        let gone = "-ERR message 1 already deleted\r\n";
        assert_eq!(
            out,
            format!(
                "{GREETING}{LOGGED_IN}+OK 2 200\r\n\
                 -ERR no such message, only 2 messages in maildrop\r\n\
                 +OK message 1 deleted\r\n{gone}{gone}{gone}{gone}{gone}\
                 +OK 1 200\r\n\
                 +OK maildrop has 1 message (200 octets)\r\n2 200\r\n.\r\n\
                 +OK\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n\
                 +OK maildrop has 2 messages (320 octets)\r\n+OK 2 320\r\n\
                 +OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n\
                 +OK 2 QhdPYR:00WBw1Ph7x7\r\n\
                 -ERR no such message, only 2 messages in maildrop\r\n\
                 +OK\r\n\
                 +OK ringmail POP3 server signing off (2 messages left)\r\n"
            )
        );
        assert_eq!(
            events,
            vec![
                login_event("mrose", "tanstaaf"),
                Pop3Event::Update { deleted: vec![] },
                Pop3Event::Close
            ]
        );
    }

    #[test]
    fn top_sends_header_and_n_lines() {
        let (out, events) = run(&format!("{LOGIN}TOP 2 1\r\nTOP 2 0\r\nQUIT\r\n"));
        assert_eq!(
            out,
            format!(
                "{GREETING}{LOGGED_IN}\
                 +OK top of message follows\r\nSubject: two\r\n\r\nl1\r\n.\r\n\
                 +OK top of message follows\r\nSubject: two\r\n\r\n.\r\n\
                 +OK ringmail POP3 server signing off (2 messages left)\r\n"
            )
        );
        assert_eq!(
            events[1],
            Pop3Event::SendMessage {
                index: 1,
                body_lines: Some(1)
            }
        );
        assert_eq!(
            events[2],
            Pop3Event::SendMessage {
                index: 1,
                body_lines: Some(0)
            }
        );
    }

    #[test]
    fn authorization_state_rules() {
        let (out, events) = run(
            "STAT\r\nPASS x\r\nUSER mrose\r\nNOOP\r\nPASS tanstaaf\r\nAPOP mrose c4c9\r\n\
             STLS\r\nFOO\r\nRETR 0\r\nuser\r\nCAPA\r\nAUTH\r\nAUTH CRAM-MD5\r\nquit\r\nNOOP\r\n",
        );
        assert_eq!(
            out,
            format!(
                "{GREETING}-ERR command not valid in this state\r\n\
                 -ERR PASS must follow a successful USER\r\n+OK send PASS\r\n\
                 -ERR command not valid in this state\r\n\
                 -ERR PASS must follow a successful USER\r\n-ERR APOP not supported\r\n\
                 -ERR STLS not available\r\n-ERR unknown command\r\n\
                 -ERR invalid message number\r\n-ERR missing argument\r\n\
                 +OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\n\
                 AUTH-RESP-CODE\r\nPIPELINING\r\nSASL PLAIN\r\nIMPLEMENTATION ringmail\r\n.\r\n\
                 +OK supported mechanisms follow\r\nPLAIN\r\n.\r\n\
                 -ERR unsupported authentication mechanism\r\n\
                 +OK ringmail POP3 server signing off\r\n"
            )
        );
        // QUIT in AUTHORIZATION closes without UPDATE; input after it is ignored.
        assert_eq!(events, vec![Pop3Event::Close]);
    }

    #[test]
    fn transaction_state_rules() {
        let (out, _) = run(&format!(
            "{LOGIN}USER mrose\r\nPASS tanstaaf\r\nAUTH PLAIN\r\nAPOP a b\r\nSTLS\r\nRETR\r\n\
             CAPA\r\nQUIT\r\n"
        ));
        let wrong = "-ERR command not valid in this state\r\n";
        assert_eq!(
            out,
            format!(
                "{GREETING}{LOGGED_IN}{wrong}{wrong}{wrong}{wrong}{wrong}\
                 -ERR missing argument\r\n\
                 +OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\n\
                 AUTH-RESP-CODE\r\nPIPELINING\r\nSASL PLAIN\r\nIMPLEMENTATION ringmail\r\n.\r\n\
                 +OK ringmail POP3 server signing off (2 messages left)\r\n"
            )
        );
    }

    #[test]
    fn login_failures_and_response_codes() {
        let (out, events) = run(
            "USER busy\r\nPASS x\r\nUSER temp\r\nPASS x\r\nUSER mrose\r\nPASS bad\r\n\
             USER mrose\r\nPASS tanstaaf\r\nQUIT\r\n",
        );
        assert_eq!(
            out,
            format!(
                "{GREETING}+OK send PASS\r\n\
                 -ERR [IN-USE] maildrop already locked, try again later\r\n+OK send PASS\r\n\
                 -ERR [SYS/TEMP] temporary failure, try again later\r\n+OK send PASS\r\n\
                 -ERR [AUTH] invalid user name or password\r\n{LOGGED_IN}\
                 +OK ringmail POP3 server signing off (2 messages left)\r\n"
            )
        );
        assert_eq!(events.len(), 6);
    }

    #[test]
    fn too_many_failures_close_the_connection() {
        let (out, events) =
            run("USER mrose\r\nPASS a\r\nUSER mrose\r\nPASS b\r\nUSER mrose\r\nPASS c\r\nNOOP\r\n");
        let fail = "+OK send PASS\r\n-ERR [AUTH] invalid user name or password\r\n";
        assert_eq!(
            out,
            format!(
                "{GREETING}{fail}{fail}+OK send PASS\r\n\
                 -ERR [AUTH] too many authentication failures, closing connection\r\n"
            )
        );
        assert_eq!(
            events,
            vec![
                login_event("mrose", "a"),
                login_event("mrose", "b"),
                login_event("mrose", "c"),
                Pop3Event::Close
            ]
        );
        // A limit of 0 behaves as 1.
        let p = Pop3Params {
            auth_failures_max: 0,
            ..params()
        };
        let (_, events) = drive(&Rt::rfc(), p, &[b"USER a\r\nPASS b\r\nNOOP\r\n"]);
        assert_eq!(events, vec![login_event("a", "b"), Pop3Event::Close]);
    }

    #[test]
    fn auth_plain() {
        let (out, events) = run("AUTH PLAIN AG1yb3NlAHdyb25n\r\n\
             auth plain\r\n*\r\n\
             AUTH PLAIN\r\nnot base64!\r\n\
             AUTH PLAIN =\r\n\
             AUTH PLAIN YWRtaW4AbXJvc2UAdGFuc3RhYWY=\r\n\
             AUTH PLAIN\r\nbXJvc2UAbXJvc2UAdGFuc3RhYWY=\r\nQUIT\r\n");
        assert_eq!(
            out,
            format!(
                "{GREETING}-ERR [AUTH] invalid user name or password\r\n\
                 + \r\n-ERR authentication cancelled\r\n\
                 + \r\n-ERR invalid base64 in authentication response\r\n\
                 -ERR malformed PLAIN authentication response\r\n\
                 -ERR [AUTH] not authorized to act as that user\r\n\
                 + \r\n+OK maildrop has 2 messages (320 octets)\r\n\
                 +OK ringmail POP3 server signing off (2 messages left)\r\n"
            )
        );
        assert_eq!(
            events,
            vec![
                login_event("mrose", "wrong"),
                login_event("mrose", "tanstaaf"),
                Pop3Event::Update { deleted: vec![] },
                Pop3Event::Close
            ]
        );
        // Control characters in the user name are refused before the runtime sees them.
        let (out, events) = run("AUTH PLAIN AG1ybwFzZQB0YW5zdGFhZg==\r\n");
        assert_eq!(
            out,
            format!("{GREETING}-ERR [AUTH] invalid user name or password\r\n")
        );
        assert!(events.is_empty());
    }

    /// Minimal base64 encoder for building long PLAIN responses.
    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in data.chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                s.push(if i <= c.len() {
                    A[(n >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        s
    }

    #[test]
    fn long_sasl_response_allowed_only_as_continuation() {
        let user = "u".repeat(200);
        let password = "p".repeat(200);
        let response = b64(format!("\0{user}\0{password}").as_bytes());
        assert!(response.len() > POP3_COMMAND_LINE_MAX);
        let (out, events) = run(&format!(
            "AUTH PLAIN {response}\r\nAUTH PLAIN\r\n{response}\r\n"
        ));
        assert_eq!(out, format!("{GREETING}-ERR line too long\r\n+ \r\n-ERR [AUTH] invalid user name or password\r\n"));
        assert_eq!(events, vec![login_event(&user, &password)]);
        // Beyond the SASL limit the exchange is aborted.
        let (out, _) = run(&format!("AUTH PLAIN\r\n{}\r\nNOOP\r\n", "A".repeat(2000)));
        assert_eq!(
            out,
            format!(
                "{GREETING}+ \r\n-ERR line too long\r\n-ERR command not valid in this state\r\n"
            )
        );
    }

    #[test]
    fn overlong_lines_keep_sync() {
        let (out, _) = run(&format!(
            "{}\r\nCAPA\r\nUSER mrose\r\n{}\nPASS tanstaaf\r\n{LOGIN}{}\r\nSTAT\r\n",
            x(300),
            x(1000),
            x(254)
        ));
        assert_eq!(
            out,
            format!(
                "{GREETING}-ERR line too long\r\n+OK capability list follows\r\nTOP\r\nUIDL\r\n\
                 USER\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nSASL PLAIN\r\n\
                 IMPLEMENTATION ringmail\r\n.\r\n+OK send PASS\r\n-ERR line too long\r\n\
                 -ERR PASS must follow a successful USER\r\n{LOGGED_IN}-ERR line too long\r\n\
                 +OK 2 320\r\n"
            )
        );
    }

    #[test]
    fn update_failure_is_reported() {
        let mut rt = Rt::rfc();
        rt.update_ok = false;
        let input = format!("{LOGIN}DELE 2\r\nQUIT\r\n");
        let (out, events) = drive(&rt, params(), &[input.as_bytes()]);
        assert!(out.ends_with(
            b"+OK message 2 deleted\r\n-ERR [SYS/TEMP] some deleted messages not removed\r\n"
        ));
        assert_eq!(events[1], Pop3Event::Update { deleted: vec![1] });
        assert_eq!(events[2], Pop3Event::Close);
    }

    #[test]
    fn advance_reports_exact_consumption_and_waits_for_answers() {
        let mut s = Pop3Session::new(params());
        let mut out = Vec::new();
        let input = b"CAPA\r\nUSER mrose\r\nPASS tanstaaf\r\nSTAT\r\nRETR 2\r\nNOOP\r\nNO";
        let (used, ev) = s.advance(input, &mut out);
        assert_eq!(used, 33);
        assert_eq!(ev, login_event("mrose", "tanstaaf"));
        assert!(!s.is_authenticated());
        // Nothing moves until the runtime answers.
        out.clear();
        assert_eq!(
            s.advance(&input[used..], &mut out),
            (0, Pop3Event::NeedInput)
        );
        s.update_result(true, &mut out);
        assert!(out.is_empty());
        s.login_result(LoginResult::Ok(Rt::rfc().maildrop()), &mut out);
        assert!(s.is_authenticated());
        assert_eq!(s.user(), Some("mrose"));
        let rest = &input[used..];
        let (used2, ev) = s.advance(rest, &mut out);
        assert_eq!(used2, 14);
        assert_eq!(
            ev,
            Pop3Event::SendMessage {
                index: 1,
                body_lines: None
            }
        );
        let (used3, ev) = s.advance(&rest[used2..], &mut out);
        assert_eq!((used3, ev), (6, Pop3Event::NeedInput));
        s.login_result(LoginResult::BadCredentials, &mut out); // not pending: ignored
        assert_eq!(
            out,
            b"+OK maildrop has 2 messages (320 octets)\r\n+OK 2 320\r\n+OK 200 octets\r\n+OK\r\n"
        );
        assert_eq!(s.idle_timeout(), POP3_IDLE_TIMEOUT);
    }

    #[test]
    fn close_is_sticky() {
        let mut s = Pop3Session::new(params());
        let mut out = Vec::new();
        assert_eq!(
            s.advance(b"QUIT\r\nNOOP\r\n", &mut out),
            (6, Pop3Event::Close)
        );
        assert_eq!(s.advance(b"NOOP\r\n", &mut out), (0, Pop3Event::Close));
        assert_eq!(out, b"+OK ringmail POP3 server signing off\r\n");
    }

    #[test]
    fn invalid_uidl_cannot_break_the_stream() {
        let mut s = Pop3Session::new(params());
        let mut out = Vec::new();
        let _ = s.advance(b"USER a\r\nPASS b\r\n", &mut out);
        let maildrop = Maildrop {
            entries: vec![
                MaildropEntry {
                    size: 1,
                    uidl: "bad uid\r\n.".into(),
                },
                MaildropEntry {
                    size: 1,
                    uidl: String::new(),
                },
            ],
        };
        s.login_result(LoginResult::Ok(maildrop), &mut out);
        out.clear();
        let _ = s.advance(b"UIDL\r\n", &mut out);
        assert_eq!(out, b"+OK\r\n1 bad?uid??.\r\n2 ?\r\n.\r\n");
    }

    // ---- property tests ----

    fn command_strategy() -> impl Strategy<Value = Vec<u8>> {
        let fixed: Vec<&'static [u8]> = vec![
            b"USER mrose\r\n",
            b"PASS tanstaaf\r\n",
            b"PASS wrong\r\n",
            b"AUTH PLAIN\r\n",
            b"AG1yb3NlAHRhbnN0YWFm\r\n",
            b"AUTH PLAIN AG1yb3NlAHRhbnN0YWFm\r\n",
            b"*\r\n",
            b"AUTH\r\n",
            b"CAPA\r\n",
            b"STAT\r\n",
            b"LIST\r\n",
            b"LIST 1\r\n",
            b"LIST 2\n",
            b"UIDL\r\n",
            b"UIDL 2\r\n",
            b"RETR 1\r\n",
            b"RETR 3\r\n",
            b"TOP 2 1\r\n",
            b"DELE 1\r\n",
            b"DELE 2\r\n",
            b"RSET\r\n",
            b"NOOP\r\n",
            b"STLS\r\n",
            b"FOO bar\r\n",
            b"RETR 0\r\n",
            b"\r\n",
            b"QUIT\r\n",
        ];
        let line = prop_oneof![
            10 => proptest::sample::select(fixed).prop_map(|l| l.to_vec()),
            1 => (250usize..300).prop_map(|n| { let mut v = vec![b'x'; n]; v.extend_from_slice(b"\r\n"); v }),
            1 => (1020usize..1040).prop_map(|n| { let mut v = vec![b'A'; n]; v.push(b'\n'); v }),
            1 => proptest::collection::vec(any::<u8>(), 0..12),
        ];
        proptest::collection::vec(line, 0..14).prop_map(|lines| lines.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The same stream split at every byte boundary gives the same
        /// replies and events as the stream in one piece.
        #[test]
        fn split_at_every_boundary_is_invisible(stream in command_strategy()) {
            let rt = Rt::rfc();
            let whole = drive(&rt, params(), &[&stream]);
            for k in 0..=stream.len() {
                let split = drive(&rt, params(), &[&stream[..k], &stream[k..]]);
                prop_assert_eq!(&split, &whole, "split at {}", k);
            }
        }

        /// Byte-at-a-time and random chunkings agree too.
        #[test]
        fn any_chunking_is_invisible(stream in command_strategy(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            let rt = Rt::rfc();
            let whole = drive(&rt, params(), &[&stream]);
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(&drive(&rt, params(), &bytes), &whole);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&stream[last..c]); last = c; }
            chunks.push(&stream[last..]);
            prop_assert_eq!(&drive(&rt, params(), &chunks), &whole);
        }

        /// Arbitrary bytes never panic, and the server only ever sends
        /// whole CRLF-terminated lines.
        #[test]
        fn arbitrary_input_never_panics(stream in proptest::collection::vec(any::<u8>(), 0..600)) {
            let rt = Rt::rfc();
            let mut input = LOGIN.as_bytes().to_vec();
            input.extend_from_slice(&stream);
            let (out, _) = drive(&rt, params(), &[&input]);
            prop_assert!(out.ends_with(b"\r\n"));
        }
    }
}
