//! SMTP server session state machine (RFC 5321), sans-I/O.
//!
//! Owns: the order of commands in one SMTP connection (greeting, EHLO/HELO,
//! the MAIL / RCPT / DATA or BDAT transaction, RSET, QUIT), which reply each
//! command gets, the error budget, the envelope of the current transaction
//! and the `Received:` trace header (RFC 5321 section 4.4) of each message.
//! It hands complete messages to the runtime as [`SmtpEvent::Deliver`].
//!
//! Must never: touch sockets, files, timers or the clock (the time comes from
//! [`SmtpContext::now_unix`]); decide who may receive mail (that is
//! [`SmtpContext::recipient`]); accept a recipient outside our domains unless
//! the client authenticated (AUTH, RFC 4954) or is in `relay_networks`
//! ([`SmtpParams::relay_client`]), so the server is never an open relay;
//! check passwords (that is the runtime, answering [`SmtpEvent::Auth`]);
//! panic on any input; or let message data
//! be read as commands (DATA ends only at `CRLF . CRLF`, refused BDAT chunks
//! are still consumed, and a BDAT whose size cannot be read closes the
//! connection).
//!
//! INTERFACE CONTRACT (the runtime in `runtime/` drives it; keep these names):
//!
//! ```text
//! let mut s = SmtpSession::new(params);          // params: SmtpParams
//! s.greeting(&mut out);                          // 220 banner
//! loop {
//!     match s.advance(&buf[pos..], &directory, &mut out) {
//!         (used, SmtpEvent::NeedInput) => { pos += used; flush out; read more }
//!         (used, SmtpEvent::Deliver(tx)) => { pos += used; deliver tx; s.delivered(outcome, &mut out) }
//!         (used, SmtpEvent::Auth { user, password }) => { pos += used; check; s.auth_result(result, &mut out) }
//!         (used, SmtpEvent::Close) => { pos += used; flush out; close }
//!     }
//! }
//! ```
//! The runtime owns timeouts: `s.in_data()` picks the data or command timeout,
//! and `s.timeout(&mut out)` writes the 421 reply. After a `Deliver`, call
//! `delivered` before the next `advance` (until then `advance` consumes
//! nothing), and hand the body buffer back with `recycle_body` when done.
//!
//! # States
//!
//! ```text
//!                      greeting(): 220
//!                            |
//!                            v
//!   +-------------------> Command <------------------------------------+
//!   |                      |     |                                      |
//!   |          DATA: 354   |     | BDAT n [LAST]: chunk read even if    |
//!   |   (MAIL + >=1 RCPT)  |     | refused (503/554/501 after it)       |
//!   |                      v     v                                      |
//!   |                    Data   Bdat --- chunk done, not LAST: 250 -----+
//!   |                      |     |  \--- refused or too big: 5xx -------+
//!   |        CRLF.CRLF     |     | LAST                                 |
//!   |    too big: 552 -----+-----|--------------------------------------+
//!   |                      v     v
//!   |                    Delivering  (advance returned Deliver)
//!   |                          |
//!   +-- delivered(): 250 / 452 +
//!
//!   Command --QUIT: 221-----------------------------------> Closed
//!   any     --error past errors_max: 421 / timeout(): 421 --> Closed
//!   Command --BDAT with unreadable size: 421 --------------> Closed
//! ```
//!
//! AUTH (RFC 4954, mechanisms PLAIN and LOGIN, offered when
//! [`SmtpParams::auth`]): `AUTH` moves to `AuthResponse` while a `334`
//! challenge waits for its answer line (`*` cancels), then to
//! `Authenticating` while the runtime checks the password
//! ([`SmtpEvent::Auth`], answered by [`SmtpSession::auth_result`]): `235` or
//! `535`. On a submission listener ([`SmtpParams::submission`]) MAIL needs
//! AUTH first (`530 5.7.0`).
//!
//! Within `Command`, the session also tracks whether HELO/EHLO was seen and
//! the envelope (`MAIL` seen, accepted recipients, whether BDAT started).
//! EHLO, HELO and RSET discard the envelope (RFC 5321 section 4.1.4).
//!
//! # Error budget
//!
//! Every 4xx/5xx reply to a client command counts toward `errors_max`, except
//! the ones that are not the client's fault or that RFC 5321 tells clients to
//! work around: `452 4.5.3` too many recipients (section 4.5.3.1.10: the
//! client sends the rest later), `451 4.3.0` recipient lookup failure and
//! `452 4.3.1` storage failure (ours), and BDAT chunks refused only because an
//! earlier chunk of the same pipeline failed (RFC 3030 section 2 says the
//! client may already have sent them). When the count goes past `errors_max`,
//! the error reply is followed by `421 4.7.0` and the session closes.
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::protocol::smtp::reply::{self, replies, Reply};
use crate::protocol::smtp::{
    parse_command, BdatReader, BodyType, Command, DataReceiver, LineSplitter, MailParam, Params,
    Progress, Split, SyntaxError,
};
use crate::session::TlsInfo;

/// Per-connection settings, fixed when the connection is accepted.
#[derive(Debug, Clone)]
pub struct SmtpParams {
    /// Our name: banner, EHLO reply, Received.
    pub hostname: String,
    pub peer: SocketAddr,
    /// Advertised in EHLO SIZE, enforced at MAIL SIZE= and at end of data.
    pub message_size_max: usize,
    pub recipients_max: usize,
    pub errors_max: usize,
    /// Appears in Received: id.
    pub session_id: u64,
    /// Offer AUTH PLAIN LOGIN in EHLO and accept the AUTH command without
    /// TLS (loopback clients, or `auth_without_tls`). Under TLS AUTH is
    /// always offered.
    pub auth: bool,
    /// Offer STARTTLS (RFC 3207) while the connection is plain.
    pub starttls: bool,
    /// The connection is TLS from its first byte (implicit TLS, RFC 8314).
    pub tls: Option<TlsInfo>,
    /// A submission listener (RFC 6409): MAIL needs AUTH first.
    pub submission: bool,
    /// The client is in `relay_networks`: it may relay without AUTH.
    pub relay_client: bool,
    /// Failed AUTH attempts before the connection is closed.
    pub auth_failures_max: usize,
    /// MAIL only after STARTTLS (`530 5.7.0`): cluster nodes' hand-overs,
    /// the one place the private MAIL parameters `XMAP=`, `XJUNK` and an
    /// APPEND copy's `XMAILBOX=`, `XFLAGS=`, `XDATE=`, `XKEYWORDS=` are
    /// accepted (elsewhere they are unknown: `555 5.5.4`).
    pub require_tls: bool,
}

/// What the session asks of the rest of the server while it runs.
pub trait SmtpContext {
    /// Classify a recipient (angle brackets, source route removed), e.g. "Bob@Example.test" or "postmaster".
    fn recipient(&self, address: &str) -> RcptVerdict;
    /// Current time, seconds since the Unix epoch (for the Received header). Tests pass a fixed clock.
    fn now_unix(&self) -> i64;
    /// May the authenticated `account` use `address` as its sender (MAIL
    /// FROM, From:)? The null reverse path is always allowed.
    fn may_send_as(&self, account: &str, address: &str) -> bool {
        let _ = (account, address);
        true
    }
    /// Is there room for a message of `size` octets (MAIL FROM's SIZE=,
    /// RFC 1870) in the account, under its storage limit?
    fn has_room(&self, account: &str, size: u64) -> bool {
        let _ = (account, size);
        true
    }
}

/// Answer of [`SmtpContext::recipient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict {
    /// `250 2.1.5`: deliver to this account.
    Local { account: String },
    /// `550 5.1.1`: one of our domains, no such user.
    UnknownUser,
    /// Not one of our domains: relayed if the client may relay (authenticated
    /// or in `relay_networks`), else `550 5.7.1`.
    NotLocal,
    /// `451 4.3.0`: cannot tell right now.
    TempFail,
    /// `452 4.2.2`: a local account at its storage limit (`[limits]
    /// quota_octets` or its own).
    OverQuota { account: String },
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub account: String,
}

/// A complete message with its envelope, handed to the runtime for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// "" for the null sender <>.
    pub reverse_path: String,
    /// Accepted local ones, in order (at most one per account).
    pub recipients: Vec<Recipient>,
    /// Accepted recipients in other domains, to relay (as given, without
    /// duplicates ignoring case), in order.
    pub relay: Vec<String>,
    /// The account the client authenticated as, if it did.
    pub authenticated: Option<String>,
    /// What to store: a Received: trace header (RFC 5321 4.4) followed by the unstuffed message.
    pub body: Vec<u8>,
    pub smtputf8: bool,
    pub body_8bit: bool,
    /// Cluster hand-overs: the sending node's bucket map version (`XMAP=`).
    pub map_version: Option<u64>,
    /// Cluster hand-overs: the message goes to Junk (`XJUNK`).
    pub junk: bool,
    /// Cluster hand-overs: an IMAP APPEND's copy, stored as it is (no
    /// trace fields added) into this mailbox (`XMAILBOX=` and the rest).
    pub append: Option<crate::protocol::smtp::command::AppendTo>,
    /// Cluster hand-overs: the body is a primary's changes to the
    /// recipients' mailboxes (`XCHANGES`), applied, not stored.
    pub changes: bool,
}

/// How storing a [`Transaction`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// `250 2.0.0 Ok: queued as <id>`.
    Stored,
    /// `452 4.3.1 Insufficient system storage`.
    TempFail,
    /// `451 4.3.0`: cluster mode, and this node's lease may have lapsed.
    NotMember,
    /// `451 4.4.0`: cluster mode, and the node that stores a recipient
    /// did not take the message (or none is known to be live).
    OwnerUnavailable,
    /// `451 4.3.1`: the message did not fit the budget for data in flight
    /// (its last bytes arrived over it).
    Busy,
    /// `553 5.7.1`: a From: address is not the authenticated account's.
    SenderNotOwned,
    /// `452 4.7.0`: the account sent its messages or recipients for this
    /// hour.
    RateLimited,
    /// `550 5.7.1`: the message fails DMARC under p=reject (`auth`).
    DmarcRejected,
    /// `550 5.7.23`: SPF fail without DMARC, refused by configuration.
    SpfRejected,
    /// `451 4.7.24`: SPF temperror (DNS), deferred by configuration.
    SpfDeferred,
    /// `550 5.7.1`: From: addresses of several domains (RFC 7489 6.6.1).
    SeveralFromDomains,
    /// `451 4.7.0`: verification is configured but could not run.
    AuthUnavailable,
}

/// The runtime's answer to [`SmtpEvent::Auth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// `235 2.7.0`: the client is now this account.
    Ok { account: String },
    /// `535 5.7.8`.
    Failed,
    /// `454 4.7.0`.
    TempFail,
    /// The client address is banned after failed logins: `421 4.7.0`,
    /// then close.
    Banned,
}

/// What the runtime must do after [`SmtpSession::advance`].
#[derive(Debug)]
pub enum SmtpEvent {
    /// Flush the replies and read more bytes.
    NeedInput,
    /// Store this message, then call [`SmtpSession::delivered`].
    Deliver(Transaction),
    /// Check this password (AUTH), then call [`SmtpSession::auth_result`].
    Auth { user: String, password: String },
    /// The client asked for STARTTLS: call [`SmtpSession::starttls_result`]
    /// (which writes `220` or `454`), flush, and on `220` drop every
    /// unconsumed byte, run the handshake and call
    /// [`SmtpSession::tls_started`] (or close if it fails).
    StartTls,
    /// Flush the replies and close the connection.
    Close,
}

/// Why a BDAT chunk is being read only to be thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    reply: Reply,
    /// Whether the refusal counts toward the error budget.
    counted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Command,
    Data,
    Bdat {
        size: u64,
        last: bool,
        refusal: Option<Refusal>,
    },
    Delivering,
    /// The next line answers a 334 challenge.
    AuthResponse(AuthStep),
    /// advance returned Auth; waiting for auth_result.
    Authenticating,
    /// advance returned StartTls; waiting for starttls_result / tls_started.
    Handshake,
    Closed,
}

/// Which SASL answer a 334 asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword,
}

/// The transaction being built between MAIL and the end of its data.
#[derive(Debug)]
struct Envelope {
    reverse_path: String,
    recipients: Vec<Recipient>,
    relay: Vec<String>,
    smtputf8: bool,
    body_8bit: bool,
    /// A BDAT chunk was accepted: DATA and RCPT are now out of sequence.
    bdat: bool,
    /// MAIL FROM's SIZE= (RFC 1870), if given.
    declared_size: Option<u64>,
    map_version: Option<u64>,
    junk: bool,
    append: Option<crate::protocol::smtp::command::AppendTo>,
    changes: bool,
}

/// One SMTP server connection.
#[derive(Debug)]
pub struct SmtpSession {
    params: SmtpParams,
    ehlo_keywords: Vec<String>,
    /// The client's EHLO/HELO argument, once given.
    helo: Option<String>,
    esmtp: bool,
    phase: Phase,
    splitter: LineSplitter,
    envelope: Option<Envelope>,
    data: DataReceiver,
    bdat: BdatReader,
    /// Body buffer of the message in progress (Received header, then data).
    body: Vec<u8>,
    /// (4xx, 5xx) transactions refused at the end of their data, not yet taken.
    refused_at_end: (u32, u32),
    errors: usize,
    /// Messages started in this session; with the session id it makes the
    /// queue id.
    messages: u32,
    /// Queue id of the message in progress, reused between messages.
    queue_id: String,
    /// The last BDAT transaction failed: further BDAT chunks already in the
    /// pipeline are refused without counting as errors (RFC 3030 section 2).
    bdat_failed: bool,
    /// The account AUTH succeeded for.
    authenticated: Option<String>,
    /// Credentials to hand to the runtime as the next event.
    auth_pending: Option<(String, String)>,
    /// AUTH LOGIN: the user name, while the password is asked for.
    auth_user: String,
    auth_failures: usize,
    /// Set while TLS is active (implicit, or after STARTTLS).
    tls: Option<TlsInfo>,
    /// STARTTLS was accepted: hand the runtime the StartTls event next.
    starttls_pending: bool,
    /// The runtime had no room for the message in flight: its bytes are
    /// thrown away and its end answered 451 (see [`SmtpSession::refuse_message`]).
    refused: bool,
    /// Command lines received (for the runtime's per-address command rate).
    commands_seen: u64,
    /// The refusal is for want of disk: 452 4.3.1 instead of 451 4.3.1.
    refused_disk_full: bool,
}

/// The runtime's answer to [`SmtpEvent::StartTls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTlsResult {
    /// `220 2.0.0 Ready to start TLS`.
    Ready,
    /// `454 4.7.0`: no handshake slot right now; the session goes on in clear.
    TempFail,
}

impl SmtpSession {
    pub fn new(params: SmtpParams) -> Self {
        let ehlo_keywords = vec![
            replies::EHLO_PIPELINING.to_owned(),
            format!("{}{}", replies::EHLO_SIZE_PREFIX, params.message_size_max),
            replies::EHLO_8BITMIME.to_owned(),
            replies::EHLO_ENHANCEDSTATUSCODES.to_owned(),
            replies::EHLO_SMTPUTF8.to_owned(),
            replies::EHLO_CHUNKING.to_owned(),
        ];
        let mut ehlo_keywords = ehlo_keywords;
        if params.starttls && params.tls.is_none() {
            ehlo_keywords.push(replies::EHLO_STARTTLS.to_owned());
        }
        if params.auth || params.tls.is_some() {
            ehlo_keywords.push(replies::EHLO_AUTH.to_owned());
        }
        let tls = params.tls.clone();
        SmtpSession {
            params,
            ehlo_keywords,
            helo: None,
            esmtp: false,
            phase: Phase::Command,
            splitter: LineSplitter::new(),
            envelope: None,
            data: DataReceiver::new(),
            bdat: BdatReader::new(),
            body: Vec::new(),
            refused_at_end: (0, 0),
            errors: 0,
            messages: 0,
            queue_id: String::new(),
            bdat_failed: false,
            authenticated: None,
            auth_pending: None,
            auth_user: String::new(),
            auth_failures: 0,
            tls,
            starttls_pending: false,
            refused: false,
            commands_seen: 0,
            refused_disk_full: false,
        }
    }

    /// AUTH is offered: under TLS, or in clear where the parameters allow.
    fn auth_offered(&self) -> bool {
        self.params.auth || self.tls.is_some()
    }

    /// The runtime's answer to [`SmtpEvent::StartTls`].
    pub fn starttls_result(&mut self, result: StartTlsResult, out: &mut Vec<u8>) {
        if self.phase != Phase::Handshake {
            return;
        }
        match result {
            StartTlsResult::Ready => replies::STARTTLS_READY.write(out),
            StartTlsResult::TempFail => {
                replies::STARTTLS_TEMPFAIL.write(out);
                self.phase = Phase::Command;
            }
        }
    }

    /// The TLS handshake after STARTTLS completed. RFC 3207 section 4.2: the
    /// server "MUST discard any knowledge obtained from the client, such as
    /// the argument to the EHLO command, which was not obtained from the TLS
    /// negotiation itself": the client starts again with EHLO, STARTTLS is
    /// no longer offered, and AUTH now is.
    pub fn tls_started(&mut self, info: TlsInfo) {
        if self.phase != Phase::Handshake {
            return;
        }
        self.phase = Phase::Command;
        self.reset_transaction();
        self.helo = None;
        self.esmtp = false;
        self.authenticated = None;
        self.bdat_failed = false;
        self.tls = Some(info);
        self.ehlo_keywords.retain(|k| k != replies::EHLO_STARTTLS);
        if !self.ehlo_keywords.iter().any(|k| k == replies::EHLO_AUTH) {
            self.ehlo_keywords.push(replies::EHLO_AUTH.to_owned());
        }
    }

    /// TLS is active on this session.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Advertise one more EHLO extension (e.g. `STARTTLS`, `AUTH PLAIN`), after
    /// the built-in ones. Handling its command is up to whoever adds it.
    pub fn add_ehlo_keyword(&mut self, keyword: impl Into<String>) {
        self.ehlo_keywords.push(keyword.into());
    }

    /// The EHLO extension keywords, in the order they are advertised.
    pub fn ehlo_keywords(&self) -> &[String] {
        &self.ehlo_keywords
    }

    /// `220 <hostname> ESMTP ringmail`.
    pub fn greeting(&mut self, out: &mut Vec<u8>) {
        reply::write_greeting(out, &self.params.hostname);
    }

    /// Consume complete commands (and message data) from `input`, writing
    /// their replies to `out` in order (RFC 2920). Returns the bytes consumed
    /// and what the runtime must do next. Bytes after the consumed count are
    /// an incomplete command: pass them again, with more appended.
    pub fn advance(
        &mut self,
        input: &[u8],
        ctx: &dyn SmtpContext,
        out: &mut Vec<u8>,
    ) -> (usize, SmtpEvent) {
        let mut pos = 0;
        loop {
            if let Some((user, password)) = self.auth_pending.take() {
                return (pos, SmtpEvent::Auth { user, password });
            }
            if std::mem::take(&mut self.starttls_pending) {
                // Nothing after the STARTTLS line is consumed: the runtime
                // throws it away (RFC 3207 section 4: a client waits for the
                // 220 before it starts TLS, so such bytes are an injection).
                return (pos, SmtpEvent::StartTls);
            }
            match self.phase {
                Phase::Closed => return (pos, SmtpEvent::Close),
                // The runtime has not called `delivered` / `auth_result` /
                // `tls_started` yet: take nothing.
                Phase::Delivering | Phase::Authenticating | Phase::Handshake => {
                    return (pos, SmtpEvent::NeedInput)
                }
                Phase::AuthResponse(step) => match self.splitter.split(&input[pos..]) {
                    Split::NeedMore => return (pos, SmtpEvent::NeedInput),
                    Split::TooLong { consumed, ended } => {
                        pos += consumed;
                        if ended {
                            self.phase = Phase::Command;
                            self.fail(replies::LINE_TOO_LONG, out);
                        }
                    }
                    Split::Line { line, consumed } => {
                        pos += consumed;
                        self.auth_response(step, line, out);
                    }
                },
                Phase::Data => {
                    let max = if self.refused {
                        0
                    } else {
                        self.params.message_size_max
                    };
                    let (used, progress) = self.data.feed(&input[pos..], &mut self.body, max);
                    pos += used;
                    if progress == Progress::NeedMore {
                        return (pos, SmtpEvent::NeedInput);
                    }
                    if let Some(tx) = self.end_of_data(out) {
                        return (pos, SmtpEvent::Deliver(tx));
                    }
                }
                Phase::Bdat {
                    size,
                    last,
                    refusal,
                } => {
                    let max = if self.refused {
                        0
                    } else {
                        self.params.message_size_max
                    };
                    let (used, progress) = self.bdat.feed(&input[pos..], &mut self.body, max);
                    pos += used;
                    if progress == Progress::NeedMore {
                        return (pos, SmtpEvent::NeedInput);
                    }
                    if let Some(tx) = self.end_of_chunk(size, last, refusal, out) {
                        return (pos, SmtpEvent::Deliver(tx));
                    }
                }
                Phase::Command => match self.splitter.split(&input[pos..]) {
                    Split::NeedMore => return (pos, SmtpEvent::NeedInput),
                    Split::TooLong { consumed, ended } => {
                        pos += consumed;
                        if ended {
                            // RFC 5321 section 4.5.3.1.10: "500 Line too long".
                            self.fail(replies::LINE_TOO_LONG, out);
                        }
                    }
                    Split::Line { line, consumed } => {
                        pos += consumed;
                        self.command(line, ctx, out);
                    }
                },
            }
        }
    }

    /// Report how storing the last delivered transaction went.
    /// Transactions the session itself refused at the end of their data
    /// (over the size limit, NUL octets, no room for data in flight), as
    /// (4xx, 5xx) counts since the last call; the runtime counts them with
    /// the ones it answers through [`SmtpSession::delivered`].
    pub fn take_refused_transactions(&mut self) -> (u32, u32) {
        std::mem::take(&mut self.refused_at_end)
    }

    fn ended_refused(&mut self, code: u16) {
        if code / 100 == 4 {
            self.refused_at_end.0 += 1;
        } else {
            self.refused_at_end.1 += 1;
        }
    }

    /// Returns the code of the reply written (0: not waiting for one).
    pub fn delivered(&mut self, outcome: DeliveryOutcome, out: &mut Vec<u8>) -> u16 {
        if self.phase != Phase::Delivering {
            return 0;
        }
        let r = match outcome {
            DeliveryOutcome::Stored => {
                reply::write_queued(out, &self.queue_id);
                self.phase = Phase::Command;
                return 250;
            }
            DeliveryOutcome::TempFail => replies::STORAGE_TEMPFAIL,
            DeliveryOutcome::NotMember => replies::NODE_UNAVAILABLE,
            DeliveryOutcome::OwnerUnavailable => replies::OWNER_UNAVAILABLE,
            DeliveryOutcome::Busy => replies::BUSY_TEMPFAIL,
            DeliveryOutcome::SenderNotOwned => replies::FROM_NOT_OWNED,
            DeliveryOutcome::RateLimited => replies::SEND_RATE_LIMITED,
            DeliveryOutcome::DmarcRejected => replies::DMARC_REJECT,
            DeliveryOutcome::SpfRejected => replies::SPF_REJECT,
            DeliveryOutcome::SpfDeferred => replies::SPF_TEMPFAIL,
            DeliveryOutcome::SeveralFromDomains => replies::SEVERAL_FROM_DOMAINS,
            DeliveryOutcome::AuthUnavailable => replies::AUTH_UNAVAILABLE,
        };
        r.write(out);
        self.phase = Phase::Command;
        r.code
    }

    /// The runtime's answer to [`SmtpEvent::Auth`]. Ignored in any other state.
    pub fn auth_result(&mut self, result: AuthResult, out: &mut Vec<u8>) {
        if self.phase != Phase::Authenticating {
            return;
        }
        self.phase = Phase::Command;
        match result {
            AuthResult::Ok { account } => {
                self.authenticated = Some(account);
                replies::AUTH_OK.write(out);
            }
            AuthResult::Failed => {
                self.auth_failures += 1;
                self.fail(replies::AUTH_FAILED, out);
                if self.phase != Phase::Closed
                    && self.auth_failures >= self.params.auth_failures_max.max(1)
                {
                    replies::AUTH_TOO_MANY.write_with_host(out, &self.params.hostname);
                    self.phase = Phase::Closed;
                }
            }
            AuthResult::TempFail => replies::AUTH_TEMPFAIL.write(out),
            AuthResult::Banned => {
                replies::AUTH_BANNED.write_with_host(out, &self.params.hostname);
                self.phase = Phase::Closed;
            }
        }
    }

    /// The id of the last transaction (Received header, 250 reply, logs).
    pub fn queue_id(&self) -> &str {
        &self.queue_id
    }

    /// Command lines received so far in this session.
    pub fn commands_seen(&self) -> u64 {
        self.commands_seen
    }

    /// The HELO/EHLO argument of the session (SPF's HELO identity).
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The account the client authenticated as.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// True while message data is being received (DATA or a BDAT chunk): the
    /// runtime then uses the data timeout instead of the command timeout.
    pub fn in_data(&self) -> bool {
        matches!(self.phase, Phase::Data | Phase::Bdat { .. })
    }

    /// A message is being received: from DATA's 354, or from the first
    /// BDAT chunk, to its end (or until it is given up).
    pub fn message_in_progress(&self) -> bool {
        self.in_data() || self.envelope.as_ref().is_some_and(|e| e.bdat)
    }

    /// Counts the messages begun in this session: changes when a new one starts.
    pub fn message_serial(&self) -> u32 {
        self.messages
    }

    /// The buffer of the message in progress (the Received header, then the
    /// data received so far). The runtime may move its bytes elsewhere (a
    /// spool file) and leave it empty: the message then continues from
    /// where it was, and [`Transaction::body`] holds only what came after.
    pub fn body_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }

    /// The runtime cannot hold the message in progress: throw away what was
    /// received and what still comes, and answer its end (end of data, or
    /// the next BDAT chunk) with `451 4.3.1`. Not counted as a client error.
    pub fn refuse_message(&mut self) {
        if self.message_in_progress() {
            self.refused = true;
            self.body = Vec::new();
        }
    }

    /// Like [`SmtpSession::refuse_message`], for a message the disk has no
    /// room for (its spool file could not grow): `452 4.3.1 Insufficient
    /// system storage`, as when storing it fails.
    pub fn refuse_message_disk_full(&mut self) {
        if self.message_in_progress() {
            self.refused_disk_full = true;
            self.refuse_message();
        }
    }

    /// The runtime's timer fired: `421 4.4.2`, then close.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        if self.phase != Phase::Closed {
            replies::TIMEOUT.write_with_host(out, &self.params.hostname);
            self.phase = Phase::Closed;
        }
    }

    /// Give back the body buffer of a delivered transaction, so its capacity
    /// serves the next message.
    pub fn recycle_body(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > self.body.capacity() && self.body.is_empty() {
            buf.clear();
            self.body = buf;
        }
    }

    /// Write an error reply and count it; past the budget, add 421 and close.
    fn fail(&mut self, reply: Reply, out: &mut Vec<u8>) {
        reply.write(out);
        self.errors += 1;
        if self.errors > self.params.errors_max {
            replies::TOO_MANY_ERRORS.write_with_host(out, &self.params.hostname);
            self.phase = Phase::Closed;
        }
    }

    fn reset_transaction(&mut self) {
        self.envelope = None;
        self.body.clear();
        self.refused = false;
        self.refused_disk_full = false;
    }

    fn command(&mut self, line: &[u8], ctx: &dyn SmtpContext, out: &mut Vec<u8>) {
        self.commands_seen += 1;
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(e) => return self.syntax_error(e, out),
        };
        match command {
            Command::Ehlo(domain) | Command::Helo(domain) => {
                // RFC 5321 section 4.1.4: EHLO/HELO in a session acts like RSET.
                self.reset_transaction();
                self.bdat_failed = false;
                self.esmtp = matches!(command, Command::Ehlo(_));
                let helo = self.helo.get_or_insert_with(String::new);
                helo.clear();
                helo.push_str(domain);
                if self.esmtp {
                    reply::write_ehlo(out, &self.params.hostname, &self.ehlo_keywords);
                } else {
                    reply::write_helo(out, &self.params.hostname);
                }
            }
            Command::Mail {
                reverse_path,
                params,
            } => self.mail(reverse_path, params, ctx, out),
            Command::Rcpt {
                forward_path,
                params,
            } => self.rcpt(forward_path, params, ctx, out),
            Command::Data => self.data_command(ctx, out),
            Command::Bdat { size, last } => self.bdat_command(size, last, ctx),
            Command::Rset => {
                self.reset_transaction();
                self.bdat_failed = false;
                replies::OK.write(out);
            }
            Command::Noop => replies::OK.write(out),
            Command::Quit => {
                replies::BYE.write(out);
                self.phase = Phase::Closed;
            }
            Command::Vrfy => replies::VRFY.write(out),
            Command::Help => replies::HELP.write(out),
            // Not offered (yet): RFC 5321 section 4.2.4, 502 for a command
            // recognized but not implemented.
            Command::Auth {
                mechanism,
                initial_response,
            } if self.auth_offered() => self.auth_command(mechanism, initial_response, out),
            Command::StartTls if self.params.starttls => self.starttls_command(out),
            Command::Expn | Command::StartTls | Command::Auth { .. } => {
                self.fail(replies::NOT_IMPLEMENTED, out)
            }
            Command::Unknown => self.fail(replies::UNRECOGNIZED, out),
        }
    }

    fn starttls_command(&mut self, out: &mut Vec<u8>) {
        // RFC 3207 section 4.2: a second STARTTLS inside TLS is refused.
        if self.tls.is_some() {
            return self.fail(replies::TLS_ALREADY, out);
        }
        // A transaction does not survive the handshake (the state is reset),
        // so it is refused inside one, as Postfix does.
        if self.envelope.is_some() {
            return self.fail(replies::TLS_IN_TRANSACTION, out);
        }
        self.phase = Phase::Handshake;
        self.starttls_pending = true;
    }

    fn auth_command(&mut self, mechanism: &str, initial: Option<&str>, out: &mut Vec<u8>) {
        // RFC 4954 section 4: AUTH is an ESMTP extension, once per session,
        // never inside a transaction.
        if self.helo.is_none() || !self.esmtp {
            return self.fail(replies::NEED_HELO, out);
        }
        if self.authenticated.is_some() {
            return self.fail(replies::AUTH_ALREADY, out);
        }
        if self.envelope.is_some() {
            return self.fail(replies::AUTH_IN_TRANSACTION, out);
        }
        let (step, challenge) = if mechanism.eq_ignore_ascii_case("PLAIN") {
            (AuthStep::Plain, replies::AUTH_CONTINUE)
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            (AuthStep::LoginUser, replies::AUTH_LOGIN_USER)
        } else {
            return self.fail(replies::AUTH_MECHANISM, out);
        };
        match initial {
            Some(response) => self.auth_response(step, response.as_bytes(), out),
            None => {
                challenge.write(out);
                self.phase = Phase::AuthResponse(step);
            }
        }
    }

    /// One SASL response (initial or after a 334).
    fn auth_response(&mut self, step: AuthStep, line: &[u8], out: &mut Vec<u8>) {
        use crate::protocol::pop3::{base64, sasl};
        self.phase = Phase::Command;
        let line = line.trim_ascii();
        if line == sasl::SASL_CANCEL {
            self.auth_user.clear();
            return self.fail(replies::AUTH_CANCELLED, out);
        }
        let text = |line: &[u8]| -> Option<String> {
            let raw = base64::decode(line).ok()?;
            String::from_utf8(raw)
                .ok()
                .filter(|t| !t.is_empty() && !t.contains('\0'))
        };
        match step {
            AuthStep::Plain => match sasl::decode_plain(line) {
                // We only let clients act as themselves.
                Ok(c) if !c.authzid.is_empty() && !c.authzid.eq_ignore_ascii_case(&c.authcid) => {
                    self.auth_pending = Some((String::new(), String::new()));
                    self.phase = Phase::Authenticating;
                }
                Ok(c) => {
                    self.auth_pending = Some((c.authcid, c.password));
                    self.phase = Phase::Authenticating;
                }
                Err(_) => self.fail(replies::AUTH_BAD_RESPONSE, out),
            },
            AuthStep::LoginUser => match text(line) {
                Some(user) => {
                    self.auth_user = user;
                    replies::AUTH_LOGIN_PASSWORD.write(out);
                    self.phase = Phase::AuthResponse(AuthStep::LoginPassword);
                }
                None => self.fail(replies::AUTH_BAD_RESPONSE, out),
            },
            AuthStep::LoginPassword => match text(line) {
                Some(password) => {
                    self.auth_pending = Some((std::mem::take(&mut self.auth_user), password));
                    self.phase = Phase::Authenticating;
                }
                None => {
                    self.auth_user.clear();
                    self.fail(replies::AUTH_BAD_RESPONSE, out)
                }
            },
        }
    }

    /// Whether recipients outside our domains are accepted.
    fn may_relay(&self) -> bool {
        self.authenticated.is_some() || self.params.relay_client
    }

    fn syntax_error(&mut self, e: SyntaxError, out: &mut Vec<u8>) {
        let reply = match e {
            SyntaxError::Arguments => replies::SYNTAX,
            SyntaxError::HeloDomain => replies::HELO_SYNTAX,
            SyntaxError::Sender => replies::BAD_SENDER,
            SyntaxError::Recipient => replies::BAD_RECIPIENT,
            SyntaxError::Params => replies::PARAM_SYNTAX,
            SyntaxError::Bdat { size: Some(size) } => {
                // The size is readable: swallow the chunk, then refuse it, and
                // the transaction with it (RFC 3030 section 2).
                let refusal = Refusal {
                    reply: replies::BDAT_SYNTAX,
                    counted: true,
                };
                self.start_chunk(size, false, Some(refusal));
                return;
            }
            SyntaxError::Bdat { size: None } => {
                // We cannot know where the chunk ends; reading on would take
                // message data for commands.
                replies::BDAT_DESYNC.write_with_host(out, &self.params.hostname);
                self.phase = Phase::Closed;
                return;
            }
        };
        self.fail(reply, out);
    }

    fn mail(
        &mut self,
        reverse_path: &str,
        params: Params<'_>,
        ctx: &dyn SmtpContext,
        out: &mut Vec<u8>,
    ) {
        if self.helo.is_none() {
            return self.fail(replies::NEED_HELO, out);
        }
        if self.envelope.is_some() {
            return self.fail(replies::NESTED_MAIL, out);
        }
        if self.params.require_tls && self.tls.is_none() {
            return self.fail(replies::TLS_REQUIRED, out);
        }
        if self.params.submission && self.authenticated.is_none() {
            // RFC 3207 section 4: "530 Must issue a STARTTLS command first"
            // where AUTH is only offered under TLS.
            if !self.auth_offered() {
                return self.fail(replies::TLS_REQUIRED, out);
            }
            return self.fail(replies::AUTH_REQUIRED, out);
        }
        let (mut size, mut body, mut smtputf8) = (None, None, false);
        let (mut map_version, mut junk, mut changes) = (None, false, false);
        let (mut append, mut append_seen) =
            (crate::protocol::smtp::command::AppendTo::default(), 0u8);
        for param in params {
            // RFC 4954 section 5: AUTH= is accepted (and, from us, ignored)
            // wherever AUTH is offered.
            if self.auth_offered() && param.keyword.eq_ignore_ascii_case("AUTH") {
                continue;
            }
            let duplicate = match param.mail() {
                Err(_) => true,
                Ok(MailParam::Size(n)) => size.replace(n).is_some(),
                Ok(MailParam::Body(b)) => body.replace(b).is_some(),
                Ok(MailParam::SmtpUtf8) => std::mem::replace(&mut smtputf8, true),
                Ok(MailParam::ClusterMap(v)) if self.params.require_tls => {
                    map_version.replace(v).is_some()
                }
                Ok(MailParam::ClusterJunk) if self.params.require_tls => {
                    std::mem::replace(&mut junk, true)
                }
                Ok(MailParam::ClusterChanges) if self.params.require_tls => {
                    std::mem::replace(&mut changes, true)
                }
                Ok(MailParam::ClusterAppend) if self.params.require_tls => {
                    crate::protocol::smtp::command::append_param(
                        &mut append,
                        &mut append_seen,
                        &param,
                    )
                    .is_err()
                }
                Ok(
                    MailParam::Unsupported
                    | MailParam::ClusterMap(_)
                    | MailParam::ClusterJunk
                    | MailParam::ClusterAppend
                    | MailParam::ClusterChanges,
                ) => return self.fail(replies::UNKNOWN_PARAM, out),
            };
            if duplicate {
                return self.fail(replies::PARAM_SYNTAX, out);
            }
        }
        // An APPEND copy names its mailbox; changes are not a message.
        if append_seen != 0 && (append_seen & 1 == 0 || changes) {
            return self.fail(replies::PARAM_SYNTAX, out);
        }
        // RFC 3030 section 3: BINARYMIME only when advertised, and we don't.
        if body == Some(BodyType::BinaryMime) {
            return self.fail(replies::UNKNOWN_PARAM, out);
        }
        // RFC 1870 section 6.1: refuse at MAIL a message declared too large.
        if size.is_some_and(|n| n > self.params.message_size_max as u64) {
            return self.fail(replies::SIZE_EXCEEDED, out);
        }
        // RFC 6531 section 3.5: UTF-8 addresses only under SMTPUTF8.
        if !smtputf8 && !reverse_path.is_ascii() {
            return self.fail(replies::NON_ASCII_ADDRESS, out);
        }
        // An authenticated client sends as its own account (RFC 6409
        // section 8.1 lets a submission server check the sender).
        if let Some(account) = &self.authenticated {
            if !reverse_path.is_empty() && !ctx.may_send_as(account, reverse_path) {
                return self.fail(replies::SENDER_NOT_OWNED, out);
            }
        }
        self.bdat_failed = false;
        self.envelope = Some(Envelope {
            reverse_path: reverse_path.to_owned(),
            recipients: Vec::new(),
            relay: Vec::new(),
            smtputf8,
            body_8bit: body == Some(BodyType::EightBitMime),
            bdat: false,
            declared_size: size,
            map_version,
            junk,
            append: (append_seen != 0).then_some(append),
            changes,
        });
        replies::MAIL_OK.write(out);
    }

    fn rcpt(&mut self, path: &str, params: Params<'_>, ctx: &dyn SmtpContext, out: &mut Vec<u8>) {
        let Some(envelope) = &self.envelope else {
            return self.fail(replies::NEED_MAIL, out);
        };
        if envelope.bdat {
            return self.fail(replies::RCPT_AFTER_BDAT, out);
        }
        // We offer no RCPT parameters (no DSN).
        if !params.is_empty() {
            return self.fail(replies::UNKNOWN_PARAM, out);
        }
        if !envelope.smtputf8 && !path.is_ascii() {
            return self.fail(replies::NON_ASCII_ADDRESS, out);
        }
        if envelope.recipients.len() + envelope.relay.len() >= self.params.recipients_max {
            // RFC 5321 section 4.5.3.1.10: 452, the client retries the rest
            // in a later transaction. Not counted as an error.
            replies::TOO_MANY_RECIPIENTS.write(out);
            return;
        }
        // RFC 5321 section 4.5.1: <Postmaster> without a domain, any case.
        let address = if path.eq_ignore_ascii_case("postmaster") {
            "postmaster"
        } else {
            path
        };
        let declared = envelope.declared_size;
        let changes = envelope.changes;
        // A cluster member's changes or APPEND copy is for accounts here,
        // never relayed on.
        let for_here = changes || envelope.append.is_some();
        let verdict = match ctx.recipient(address) {
            // A primary's changes (expunges among them) free room rather
            // than take it: a full account takes them.
            RcptVerdict::OverQuota { account } if changes => RcptVerdict::Local { account },
            v => v,
        };
        match verdict {
            // A declared size that would take the account past its limit:
            // the same temporary refusal as a full mailbox.
            RcptVerdict::Local { account }
                if !changes && declared.is_some_and(|n| !ctx.has_room(&account, n)) =>
            {
                replies::MAILBOX_FULL.write(out)
            }
            RcptVerdict::Local { account } => {
                if let Some(envelope) = &mut self.envelope {
                    // Two addresses of one account get one copy.
                    if !envelope.recipients.iter().any(|r| r.account == account) {
                        let address = address.to_owned();
                        envelope.recipients.push(Recipient { address, account });
                    }
                }
                replies::RCPT_OK.write(out);
            }
            RcptVerdict::UnknownUser => self.fail(replies::UNKNOWN_USER, out),
            RcptVerdict::NotLocal if self.may_relay() && !for_here => {
                if let Some(envelope) = &mut self.envelope {
                    if !envelope
                        .relay
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(address))
                    {
                        envelope.relay.push(address.to_owned());
                    }
                }
                replies::RCPT_OK.write(out);
            }
            RcptVerdict::NotLocal => self.fail(replies::RELAY_DENIED, out),
            RcptVerdict::TempFail => replies::RCPT_TEMPFAIL.write(out),
            RcptVerdict::OverQuota { .. } => replies::MAILBOX_FULL.write(out),
        }
    }

    fn data_command(&mut self, ctx: &dyn SmtpContext, out: &mut Vec<u8>) {
        let refusal = match &self.envelope {
            None => Some(replies::NEED_MAIL),
            Some(e) if e.bdat => Some(replies::DATA_AFTER_BDAT),
            // RFC 5321 section 3.3: 554 when no recipient was accepted.
            Some(e) if e.recipients.is_empty() && e.relay.is_empty() => {
                Some(replies::NO_RECIPIENTS)
            }
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            return self.fail(reply, out);
        }
        replies::START_DATA.write(out);
        self.begin_message(ctx);
        self.data.reset();
        self.phase = Phase::Data;
    }

    fn bdat_command(&mut self, size: u64, last: bool, ctx: &dyn SmtpContext) {
        let refusal = match &self.envelope {
            None => Some(replies::NEED_MAIL),
            Some(e) if e.recipients.is_empty() && e.relay.is_empty() => {
                Some(replies::NO_RECIPIENTS)
            }
            Some(_) => None,
        };
        let refusal = refusal.map(|reply| Refusal {
            reply,
            counted: !self.bdat_failed,
        });
        if refusal.is_none() {
            if let Some(envelope) = &mut self.envelope {
                if !envelope.bdat {
                    envelope.bdat = true;
                    self.bdat.reset();
                    self.begin_message(ctx);
                }
            }
        }
        self.start_chunk(size, last, refusal);
    }

    fn start_chunk(&mut self, size: u64, last: bool, refusal: Option<Refusal>) {
        self.bdat.start_chunk(size, refusal.is_some());
        self.phase = Phase::Bdat {
            size,
            last,
            refusal,
        };
    }

    /// Start a message: new queue id, Received header at the top of the body.
    fn begin_message(&mut self, ctx: &dyn SmtpContext) {
        self.messages = self.messages.wrapping_add(1);
        self.queue_id.clear();
        let _ = write!(
            self.queue_id,
            "{:016X}{:04X}",
            self.params.session_id, self.messages
        );
        self.body.clear();
        self.refused = false;
        let Some(envelope) = &self.envelope else {
            return;
        };
        // A cluster node's copy of an IMAP APPEND is stored as the primary
        // stored it: it did not travel as mail.
        if envelope.append.is_some() || envelope.changes {
            return;
        }
        // RFC 3848 section 2 ("S" under TLS, "A" once authenticated),
        // RFC 6531 section 3.7.3.
        let authenticated = self.authenticated.is_some();
        let tls = self.tls.is_some();
        let protocol = match (envelope.smtputf8, self.esmtp, tls, authenticated) {
            (true, _, false, false) => "UTF8SMTP",
            (true, _, false, true) => "UTF8SMTPA",
            (true, _, true, false) => "UTF8SMTPS",
            (true, _, true, true) => "UTF8SMTPSA",
            (false, true, false, false) => "ESMTP",
            (false, true, false, true) => "ESMTPA",
            (false, true, true, false) => "ESMTPS",
            (false, true, true, true) => "ESMTPSA",
            (false, false, _, _) => "SMTP",
        };
        let recipient = match (envelope.recipients.as_slice(), envelope.relay.as_slice()) {
            ([only], []) => Some(only.address.as_str()),
            ([], [only]) => Some(only.as_str()),
            _ => None,
        };
        write_received(
            &mut self.body,
            &ReceivedInfo {
                helo: self.helo.as_deref().unwrap_or("unknown"),
                peer: self.params.peer.ip(),
                hostname: &self.params.hostname,
                protocol,
                tls: self.tls.as_ref(),
                id: &self.queue_id,
                recipient,
                date: &crate::util::rfc5322_date(ctx.now_unix()),
            },
        );
    }

    fn end_of_data(&mut self, out: &mut Vec<u8>) -> Option<Transaction> {
        self.phase = Phase::Command;
        if self.refused {
            let reply = if self.refused_disk_full {
                replies::STORAGE_TEMPFAIL
            } else {
                replies::BUSY_TEMPFAIL
            };
            self.reset_transaction();
            reply.write(out);
            self.ended_refused(reply.code);
            return None;
        }
        if self.data.overflowed() {
            // RFC 5321 section 4.5.3.1.10 / RFC 1870 section 6.3.
            self.reset_transaction();
            self.fail(replies::SIZE_EXCEEDED, out);
            self.ended_refused(replies::SIZE_EXCEEDED.code);
            return None;
        }
        if self.data.has_nul() {
            self.reset_transaction();
            replies::NUL_REFUSED.write(out);
            self.ended_refused(replies::NUL_REFUSED.code);
            return None;
        }
        self.take_transaction()
    }

    fn end_of_chunk(
        &mut self,
        size: u64,
        last: bool,
        refusal: Option<Refusal>,
        out: &mut Vec<u8>,
    ) -> Option<Transaction> {
        self.phase = Phase::Command;
        if let Some(Refusal { reply, counted }) = refusal {
            // RFC 3030 section 2: a refused chunk fails the transaction.
            self.reset_transaction();
            self.bdat_failed = true;
            if counted {
                self.fail(reply, out);
            } else {
                reply.write(out);
            }
            return None;
        }
        if self.refused {
            // RFC 3030 section 2: the transaction fails; chunks already in
            // the pipeline are refused without counting as errors.
            let reply = if self.refused_disk_full {
                replies::STORAGE_TEMPFAIL
            } else {
                replies::BUSY_TEMPFAIL
            };
            self.reset_transaction();
            self.bdat_failed = true;
            reply.write(out);
            self.ended_refused(reply.code);
            return None;
        }
        if self.bdat.overflowed() {
            self.reset_transaction();
            self.bdat_failed = true;
            self.fail(replies::SIZE_EXCEEDED, out);
            self.ended_refused(replies::SIZE_EXCEEDED.code);
            return None;
        }
        if !last {
            reply::write_chunk_received(out, size);
            return None;
        }
        // A cluster node's copy of an IMAP APPEND may hold NUL octets (a
        // BINARY literal8 is stored as it came); only members send one.
        let append_copy = self.envelope.as_ref().is_some_and(|e| e.append.is_some());
        if self.bdat.has_nul() && !append_copy {
            self.reset_transaction();
            self.bdat_failed = true;
            replies::NUL_REFUSED.write(out);
            self.ended_refused(replies::NUL_REFUSED.code);
            return None;
        }
        self.take_transaction()
    }

    fn take_transaction(&mut self) -> Option<Transaction> {
        let envelope = self.envelope.take()?;
        self.phase = Phase::Delivering;
        Some(Transaction {
            reverse_path: envelope.reverse_path,
            recipients: envelope.recipients,
            relay: envelope.relay,
            authenticated: self.authenticated.clone(),
            body: std::mem::take(&mut self.body),
            smtputf8: envelope.smtputf8,
            body_8bit: envelope.body_8bit,
            map_version: envelope.map_version,
            junk: envelope.junk,
            append: envelope.append,
            changes: envelope.changes,
        })
    }
}

struct ReceivedInfo<'a> {
    helo: &'a str,
    peer: IpAddr,
    hostname: &'a str,
    protocol: &'a str,
    tls: Option<&'a TlsInfo>,
    id: &'a str,
    recipient: Option<&'a str>,
    date: &'a str,
}

/// The RFC 5321 section 4.4 trace header:
/// `Received: from <helo> (<peer literal>)` / `by <hostname> (ringmail) with
/// <protocol> id <id>` / `[for <rcpt>]; <date>`, folded with CRLF TAB.
fn write_received(body: &mut Vec<u8>, r: &ReceivedInfo<'_>) {
    let _ = write!(body, "Received: from {} (", r.helo);
    // RFC 5321 section 4.1.3 address literals.
    let _ = match r.peer.to_canonical() {
        IpAddr::V4(ip) => write!(body, "[{ip}]"),
        IpAddr::V6(ip) => write!(body, "[IPv6:{ip}]"),
    };
    body.extend_from_slice(b")\r\n");
    // The TLS comment as Postfix writes it, before "by".
    if let Some(t) = r.tls {
        let _ = write!(body, "\t(using {} with cipher {})\r\n", t.version, t.cipher);
    }
    let _ = write!(
        body,
        "\tby {} (ringmail) with {} id {}",
        r.hostname, r.protocol, r.id
    );
    let _ = match r.recipient {
        Some(rcpt) => write!(body, "\r\n\tfor <{rcpt}>; {}\r\n", r.date),
        None => write!(body, "; {}\r\n", r.date),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::SMTP_COMMAND_LINE_MAX;
    use proptest::prelude::*;

    /// Directory stub: `*@example.test` are ours (`nobody` does not exist,
    /// `tempfail` fails, `bob.alias` is bob), `postmaster` is ours, anything
    /// else is elsewhere.
    struct Stub;

    impl SmtpContext for Stub {
        fn recipient(&self, address: &str) -> RcptVerdict {
            if address == "postmaster" {
                return RcptVerdict::Local {
                    account: "postmaster".into(),
                };
            }
            let Some((local, domain)) = address.rsplit_once('@') else {
                return RcptVerdict::NotLocal;
            };
            if !domain.eq_ignore_ascii_case("example.test") {
                return RcptVerdict::NotLocal;
            }
            match local.to_lowercase().as_str() {
                "nobody" => RcptVerdict::UnknownUser,
                "tempfail" => RcptVerdict::TempFail,
                "full" => RcptVerdict::OverQuota {
                    account: "full".into(),
                },
                "bob.alias" => RcptVerdict::Local {
                    account: "bob".into(),
                },
                other => RcptVerdict::Local {
                    account: other.into(),
                },
            }
        }

        fn now_unix(&self) -> i64 {
            1_795_708_800 // Thu, 26 Nov 2026 16:00:00 +0000
        }

        fn may_send_as(&self, account: &str, address: &str) -> bool {
            matches!(self.recipient(address), RcptVerdict::Local { account: a } if a == account)
        }
    }

    const DATE: &str = "Thu, 26 Nov 2026 16:00:00 +0000";
    const GREETING: &str = "220 mx.example.test ESMTP ringmail\r\n";
    const EHLO: &str =
        "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n\
                        250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
    const OK: &str = "250 2.0.0 Ok\r\n";
    const MAIL_OK: &str = "250 2.1.0 Ok\r\n";
    const RCPT_OK: &str = "250 2.1.5 Ok\r\n";
    const GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
    const QUEUED_1: &str = "250 2.0.0 Ok: queued as 0000000000000ABC0001\r\n";
    const QUEUED_2: &str = "250 2.0.0 Ok: queued as 0000000000000ABC0002\r\n";
    const BYE: &str = "221 2.0.0 Bye\r\n";
    const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size\r\n";

    fn params() -> SmtpParams {
        SmtpParams {
            require_tls: false,
            hostname: "mx.example.test".into(),
            peer: "192.0.2.10:40000".parse().unwrap(),
            message_size_max: 10_000,
            recipients_max: 5,
            errors_max: 10,
            session_id: 0xABC,
            auth: false,
            submission: false,
            relay_client: false,
            auth_failures_max: 3,
            starttls: false,
            tls: None,
        }
    }

    const TLS: TlsInfo = TlsInfo {
        version: "TLSv1.3",
        cipher: "TLS_AES_256_GCM_SHA384",
    };

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Run {
        out: String,
        delivered: Vec<Transaction>,
        closed: bool,
    }

    /// The one test driver: feed the client's bytes in the given pieces, the
    /// way the runtime does (keep unconsumed bytes, append the next read),
    /// answer every Deliver with `outcome`, and collect everything the server
    /// wrote, greeting included.
    fn drive(params: SmtpParams, pieces: &[&[u8]], outcome: DeliveryOutcome) -> Run {
        let mut s = SmtpSession::new(params);
        let mut out = Vec::new();
        s.greeting(&mut out);
        let mut buf = Vec::new();
        let mut delivered = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                let (used, event) = s.advance(&buf, &Stub, &mut out);
                assert!(used <= buf.len());
                buf.drain(..used);
                match event {
                    SmtpEvent::NeedInput => break,
                    SmtpEvent::Deliver(tx) => {
                        assert!(!s.in_data());
                        delivered.push(tx.clone());
                        s.delivered(outcome, &mut out);
                        s.recycle_body(tx.body);
                    }
                    SmtpEvent::Auth { user, password } => {
                        let result = if (user.as_str(), password.as_str())
                            == ("bob@example.test", "secret")
                        {
                            AuthResult::Ok {
                                account: "bob".into(),
                            }
                        } else if user == "temp" {
                            AuthResult::TempFail
                        } else {
                            AuthResult::Failed
                        };
                        s.auth_result(result, &mut out);
                    }
                    SmtpEvent::StartTls => {
                        // As the runtime does: go ahead, drop what the client
                        // pipelined after STARTTLS, "handshake".
                        s.starttls_result(StartTlsResult::Ready, &mut out);
                        buf.clear();
                        s.tls_started(TLS);
                        break;
                    }
                    SmtpEvent::Close => {
                        let out = String::from_utf8_lossy(&out).into_owned();
                        return Run {
                            out,
                            delivered,
                            closed: true,
                        };
                    }
                }
            }
        }
        let out = String::from_utf8_lossy(&out).into_owned();
        Run {
            out,
            delivered,
            closed: false,
        }
    }

    fn run(client: &str) -> Run {
        drive(params(), &[client.as_bytes()], DeliveryOutcome::Stored)
    }

    /// Server bytes for a client transcript, greeting stripped.
    fn replies_to(client: &str) -> String {
        let r = run(client);
        r.out
            .strip_prefix(GREETING)
            .expect("greeting first")
            .to_owned()
    }

    fn received(rcpt: Option<&str>, protocol: &str, seq: u32) -> String {
        let for_clause = rcpt.map(|r| format!("\r\n\tfor <{r}>")).unwrap_or_default();
        format!(
            "Received: from client.test ([192.0.2.10])\r\n\tby mx.example.test (ringmail) \
             with {protocol} id 0000000000000ABC{seq:04X}{for_clause}; {DATE}\r\n"
        )
    }

    #[test]
    fn greeting_and_quit() {
        let r = run("QUIT\r\nNOOP\r\n");
        assert_eq!(r.out, format!("{GREETING}{BYE}"));
        assert!(r.closed);
    }

    #[test]
    fn ehlo_helo_and_extra_keywords() {
        assert_eq!(replies_to("EHLO client.test\r\n"), EHLO);
        assert_eq!(
            replies_to("HELO client.test\r\n"),
            "250 mx.example.test\r\n"
        );
        assert_eq!(
            replies_to("EHLO\r\nHELO a(b)\r\n"),
            "501 5.5.4 Syntax: EHLO/HELO hostname\r\n".repeat(2)
        );
        let mut s = SmtpSession::new(params());
        s.add_ehlo_keyword("STARTTLS");
        assert_eq!(
            s.ehlo_keywords().last().map(String::as_str),
            Some("STARTTLS")
        );
        let mut out = Vec::new();
        s.advance(b"EHLO c\r\n", &Stub, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("250-CHUNKING\r\n250 STARTTLS\r\n"), "{text}");
    }

    #[test]
    fn simple_commands() {
        let not_implemented = "502 5.5.1 Error: command not implemented\r\n";
        assert_eq!(replies_to("NOOP\r\nnoop hello\r\n"), format!("{OK}{OK}"));
        assert_eq!(replies_to("RSET\r\n"), OK);
        assert_eq!(
            replies_to("VRFY bob\r\n"),
            "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery\r\n"
        );
        assert_eq!(replies_to("EXPN list\r\n"), not_implemented);
        assert_eq!(
            replies_to("HELP\r\n"),
            "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\r\n"
        );
        assert_eq!(replies_to("STARTTLS\r\n"), not_implemented);
        assert_eq!(
            replies_to("AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n"),
            not_implemented
        );
        assert_eq!(
            replies_to("FROB\r\n\r\n"),
            "500 5.5.2 Error: command not recognized\r\n".repeat(2)
        );
        assert_eq!(
            replies_to("RSET x\r\nAUTH\r\nDATA now\r\n"),
            "501 5.5.4 Syntax error in parameters or arguments\r\n".repeat(3)
        );
        // Bare LF ends commands too.
        assert_eq!(replies_to("NOOP\nQUIT\n"), format!("{OK}{BYE}"));
    }

    #[test]
    fn one_message_with_received_header() {
        let r = run(
            "EHLO client.test\r\nMAIL FROM:<alice@sender.test>\r\nRCPT TO:<Bob@Example.test>\r\n\
             DATA\r\nSubject: hi\r\n\r\n..leading dot\r\nend\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{GO_AHEAD}{QUEUED_1}{BYE}")
        );
        assert!(r.closed);
        let header = received(Some("Bob@Example.test"), "ESMTP", 1);
        let expected_body = format!("{header}Subject: hi\r\n\r\n.leading dot\r\nend\r\n");
        assert_eq!(
            r.delivered,
            vec![Transaction {
                reverse_path: "alice@sender.test".into(),
                recipients: vec![Recipient {
                    address: "Bob@Example.test".into(),
                    account: "bob".into()
                }],
                relay: vec![],
                authenticated: None,
                body: expected_body.into_bytes(),
                smtputf8: false,
                body_8bit: false,
                map_version: None,
                junk: false,
                append: None,
                changes: false,
            }]
        );
    }

    #[test]
    fn pipelined_transaction_in_one_buffer() {
        let r = run(
            "EHLO client.test\r\nMAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<bob@example.test>\r\n\
             RCPT TO:<carol@example.test>\r\nRCPT TO:<@relay.test:dave@example.test>\r\nDATA\r\n",
        );
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{RCPT_OK}{RCPT_OK}{GO_AHEAD}")
        );
        let mut s = SmtpSession::new(params());
        let mut out = Vec::new();
        let input = b"HELO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n\
                      RCPT TO:<carol@example.test>\r\nRCPT TO:<dave@example.test>\r\n\
                      DATA\r\nx\r\n.\r\nNOOP\r\n";
        let (used, event) = s.advance(input, &Stub, &mut out);
        assert_eq!(&input[used..], b"NOOP\r\n");
        let SmtpEvent::Deliver(tx) = event else {
            panic!("{event:?}")
        };
        let accounts: Vec<&str> = tx.recipients.iter().map(|r| r.account.as_str()).collect();
        assert_eq!(accounts, ["bob", "carol", "dave"]);
        // Three recipients: no "for" clause; HELO: protocol SMTP.
        assert_eq!(
            tx.body,
            format!("{}x\r\n", received(None, "SMTP", 1)).into_bytes()
        );
        // Nothing is consumed until the delivery is reported.
        assert!(matches!(
            s.advance(&input[used..], &Stub, &mut out),
            (0, SmtpEvent::NeedInput)
        ));
        s.delivered(DeliveryOutcome::Stored, &mut out);
        let (used2, event) = s.advance(&input[used..], &Stub, &mut out);
        assert!(matches!(event, SmtpEvent::NeedInput));
        assert_eq!(used2, 6);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(&format!("{GO_AHEAD}{QUEUED_1}{OK}")),
            "{text}"
        );
    }

    #[test]
    fn two_messages_in_one_session() {
        let one = "MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nm\r\n.\r\n";
        let r = run(&format!("EHLO client.test\r\n{one}{one}"));
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{GO_AHEAD}{QUEUED_1}\
                 {MAIL_OK}{RCPT_OK}{GO_AHEAD}{QUEUED_2}"
            )
        );
        assert_eq!(r.delivered.len(), 2);
        let header = received(Some("bob@example.test"), "ESMTP", 2);
        assert!(r.delivered[1].body.starts_with(header.as_bytes()));
    }

    #[test]
    fn sequence_errors() {
        let need_mail = "503 5.5.1 Error: need MAIL command\r\n";
        assert_eq!(
            replies_to("MAIL FROM:<a@b.test>\r\n"),
            "503 5.5.1 Error: send HELO/EHLO first\r\n"
        );
        assert_eq!(
            replies_to("HELO c\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\n"),
            format!("250 mx.example.test\r\n{MAIL_OK}503 5.5.1 Error: nested MAIL command\r\n")
        );
        assert_eq!(
            replies_to("HELO c\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"),
            format!("250 mx.example.test\r\n{need_mail}{need_mail}")
        );
        assert_eq!(
            replies_to(
                "HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\nNOOP\r\n"
            ),
            format!(
                "250 mx.example.test\r\n{MAIL_OK}550 5.1.1 Recipient address rejected: user unknown\r\n\
                 554 5.5.1 Error: no valid recipients\r\n{OK}"
            )
        );
        // RSET and EHLO/HELO both drop the transaction.
        assert_eq!(
            replies_to("HELO c\r\nMAIL FROM:<a@b.test>\r\nRSET\r\nRCPT TO:<bob@example.test>\r\n"),
            format!("250 mx.example.test\r\n{MAIL_OK}{OK}{need_mail}")
        );
        assert_eq!(
            replies_to("HELO c\r\nMAIL FROM:<a@b.test>\r\nHELO c\r\nMAIL FROM:<a@b.test>\r\n"),
            format!("250 mx.example.test\r\n{MAIL_OK}250 mx.example.test\r\n{MAIL_OK}")
        );
    }

    #[test]
    fn recipient_verdicts() {
        let r = run("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<nobody@example.test>\r\n\
             RCPT TO:<someone@elsewhere.test>\r\nRCPT TO:<tempfail@example.test>\r\n\
             RCPT TO:<Postmaster>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<bob.alias@example.test>\r\n\
             RCPT TO:<bob>\r\nRCPT TO:<bob@example.test> NOTIFY=NEVER\r\nDATA\r\n.\r\n");
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}550 5.1.1 Recipient address rejected: user unknown\r\n\
                 550 5.7.1 Relay access denied\r\n451 4.3.0 Error: temporary recipient lookup failure\r\n\
                 {RCPT_OK}{RCPT_OK}{RCPT_OK}501 5.1.3 Bad recipient address syntax\r\n\
                 555 5.5.4 Unsupported MAIL/RCPT parameter\r\n{GO_AHEAD}{QUEUED_1}"
            )
        );
        let tx = &r.delivered[0];
        assert_eq!(
            tx.recipients,
            vec![
                Recipient {
                    address: "postmaster".into(),
                    account: "postmaster".into()
                },
                Recipient {
                    address: "bob@example.test".into(),
                    account: "bob".into()
                },
            ],
            "bob.alias shares bob's account and is stored once"
        );
        // Empty message: just the Received header (two recipients, no "for").
        assert_eq!(tx.body, received(None, "ESMTP", 1).into_bytes());
    }

    #[test]
    fn too_many_recipients() {
        let mut p = params();
        p.recipients_max = 3;
        let client = "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<r1@example.test>\r\n\
                      RCPT TO:<r2@example.test>\r\nRCPT TO:<r3@example.test>\r\n\
                      RCPT TO:<r4@example.test>\r\nDATA\r\n.\r\n";
        let r = drive(p, &[client.as_bytes()], DeliveryOutcome::Stored);
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{RCPT_OK}{RCPT_OK}\
                 452 4.5.3 Error: too many recipients\r\n{GO_AHEAD}{QUEUED_1}"
            )
        );
        assert_eq!(r.delivered[0].recipients.len(), 3);
    }

    #[test]
    fn mail_parameters() {
        let bad_param = "501 5.5.4 Bad MAIL/RCPT parameter syntax\r\n";
        let unsupported = "555 5.5.4 Unsupported MAIL/RCPT parameter\r\n";
        let bad_sender = "501 5.1.7 Bad sender address syntax\r\n";
        let cases = [
            ("MAIL FROM:<a@b.test> SIZE=10000", MAIL_OK),
            ("MAIL FROM:<a@b.test> SIZE=10001", TOO_BIG),
            ("MAIL FROM:<a@b.test> SIZE=99999999999999999999", TOO_BIG),
            ("MAIL FROM:<a@b.test> SIZE=x", bad_param),
            ("MAIL FROM:<a@b.test> SIZE=1 SIZE=2", bad_param),
            ("MAIL FROM:<a@b.test> BODY=7BIT", MAIL_OK),
            ("MAIL FROM:<a@b.test> BODY=BINARYMIME", unsupported),
            ("MAIL FROM:<a@b.test> ENVID=x", unsupported),
            ("MAIL FROM:<a@b.test> =x", bad_param),
            ("MAIL FROM:a@b.test", bad_sender),
            ("MAIL FROM:<a@b.test", bad_sender),
            (
                "MAIL TO:<a@b.test>",
                "501 5.5.4 Syntax error in parameters or arguments\r\n",
            ),
            (
                "MAIL FROM:<pelé@b.test>",
                "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n",
            ),
            ("MAIL FROM:<pelé@b.test> SMTPUTF8", MAIL_OK),
            ("mail from: <a@[192.0.2.1]>", MAIL_OK),
        ];
        for (line, reply) in cases {
            let client = format!("EHLO client.test\r\n{line}\r\n");
            assert_eq!(replies_to(&client), format!("{EHLO}{reply}"), "{line}");
        }
        let long_path = format!(
            "EHLO client.test\r\nMAIL FROM:<{}@b.test>\r\n",
            "x".repeat(300)
        );
        assert_eq!(replies_to(&long_path), format!("{EHLO}{bad_sender}"));
    }

    #[test]
    fn smtputf8_transaction() {
        let r = run(
            "EHLO client.test\r\nMAIL FROM:<pelé@b.test> SMTPUTF8 BODY=8BITMIME\r\n\
             RCPT TO:<jürgen@example.test>\r\nDATA\r\nHallo\r\n.\r\n\
             MAIL FROM:<a@b.test>\r\nRCPT TO:<jürgen@example.test>\r\n",
        );
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{GO_AHEAD}{QUEUED_1}{MAIL_OK}\
                 553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
            )
        );
        let tx = &r.delivered[0];
        assert!(tx.smtputf8 && tx.body_8bit);
        assert_eq!(tx.reverse_path, "pelé@b.test");
        let header = received(Some("jürgen@example.test"), "UTF8SMTP", 1);
        assert_eq!(tx.body, format!("{header}Hallo\r\n").into_bytes());
    }

    #[test]
    fn message_too_large_at_end_of_data() {
        let big = "x".repeat(9_000);
        let head = "MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n";
        let client =
            format!("EHLO client.test\r\n{head}{big}\r\n{big}\r\n.\r\n{head}small\r\n.\r\n");
        let r = run(&client);
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{GO_AHEAD}{TOO_BIG}\
                 {MAIL_OK}{RCPT_OK}{GO_AHEAD}{QUEUED_2}"
            )
        );
        assert_eq!(r.delivered.len(), 1);
        assert!(r.delivered[0].body.ends_with(b"\r\nsmall\r\n"));
        // Exactly at the limit is fine (the Received header does not count).
        let exact = format!("EHLO client.test\r\n{head}{}\r\n.\r\n", "y".repeat(9_998));
        assert_eq!(run(&exact).delivered.len(), 1);
        let over = format!("EHLO client.test\r\n{head}{}\r\n.\r\n", "y".repeat(9_999));
        assert!(run(&over).delivered.is_empty());
    }

    #[test]
    fn delivery_tempfail() {
        let client = "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n\
                      DATA\r\nx\r\n.\r\nNOOP\r\n";
        let r = drive(params(), &[client.as_bytes()], DeliveryOutcome::TempFail);
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{GO_AHEAD}\
                 452 4.3.1 Insufficient system storage\r\n{OK}"
            )
        );
    }

    /// The mail authentication outcomes (auth::policy) map to their replies,
    /// and the session goes on with the next transaction.
    #[test]
    fn delivery_auth_outcomes() {
        let client = "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n\
                      DATA\r\nx\r\n.\r\nNOOP\r\n";
        for (outcome, reply) in [
            (
                DeliveryOutcome::DmarcRejected,
                "550 5.7.1 Message rejected: it fails the DMARC policy of its From: domain\r\n",
            ),
            (
                DeliveryOutcome::SpfRejected,
                "550 5.7.23 Message rejected: SPF does not permit your address to send for this domain\r\n",
            ),
            (
                DeliveryOutcome::SpfDeferred,
                "451 4.7.24 SPF check failed temporarily (DNS), try again later\r\n",
            ),
            (
                DeliveryOutcome::SeveralFromDomains,
                "550 5.7.1 Message rejected: From: addresses of more than one domain\r\n",
            ),
            (
                DeliveryOutcome::AuthUnavailable,
                "451 4.7.0 Sender authentication unavailable, try again later\r\n",
            ),
        ] {
            let r = drive(params(), &[client.as_bytes()], outcome);
            assert_eq!(
                r.out,
                format!("{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{GO_AHEAD}{reply}{OK}")
            );
        }
        let mut s = SmtpSession::new(params());
        let mut out = Vec::new();
        s.greeting(&mut out);
        assert_eq!(s.helo(), None);
        let _ = s.advance(b"EHLO relay.example.org\r\n", &Stub, &mut out);
        assert_eq!(s.helo(), Some("relay.example.org"));
    }

    #[test]
    fn smuggled_commands_stay_in_the_body() {
        for marker in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r", "\r\n.\r", "\r.\r\n"] {
            let client = format!(
                "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n\
                 DATA\r\nhello{marker}MAIL FROM:<evil@b.test>\r\nRCPT TO:<carol@example.test>\r\n\
                 DATA\r\nforged\r\n.\r\n"
            );
            let r = run(&client);
            assert_eq!(
                r.out,
                format!("{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{GO_AHEAD}{QUEUED_1}"),
                "{marker:?}"
            );
            assert_eq!(r.delivered.len(), 1);
            let body = String::from_utf8(r.delivered[0].body.clone()).unwrap();
            assert!(body.contains(
                "MAIL FROM:<evil@b.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\nforged\r\n"
            ));
        }
    }

    #[test]
    fn bdat_chunks() {
        let r = run(
            "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n\
             BDAT 7\r\nHi\r\n.\r\nBDAT 0\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n",
        );
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}250 2.0.0 7 octets received\r\n\
                 250 2.0.0 0 octets received\r\n{QUEUED_1}{OK}"
            )
        );
        // BDAT takes octets as they are: no unstuffing, no end marker.
        let header = received(Some("bob@example.test"), "ESMTP", 1);
        assert_eq!(
            r.delivered[0].body,
            format!("{header}Hi\r\n.\r\nQUIT\r\n").into_bytes()
        );
    }

    #[test]
    fn bdat_refused_chunks_are_consumed() {
        // No MAIL: 503 after the chunk; its "QUIT" is not a command.
        assert_eq!(
            replies_to("EHLO client.test\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n"),
            format!("{EHLO}503 5.5.1 Error: need MAIL command\r\n{OK}")
        );
        // No accepted recipient: 554 after the chunk.
        assert_eq!(
            replies_to(
                "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n"
            ),
            format!("{EHLO}{MAIL_OK}554 5.5.1 Error: no valid recipients\r\n{OK}")
        );
        // A refused RCPT with BDAT pipelined behind it (a cluster hand-over
        // to one recipient, `runtime::peer`): the chunk is read, nothing
        // is stored, the session goes on.
        let r = run_with(
            params(),
            "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\n\
             BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n",
        );
        assert!(r.delivered.is_empty(), "{}", r.out);
        assert!(
            r.out.ends_with(&format!(
                "{MAIL_OK}{DENIED}554 5.5.1 Error: no valid recipients\r\n{OK}"
            )),
            "{}",
            r.out
        );
        // Readable size, bad keyword: the chunk is swallowed, then 501.
        assert_eq!(
            replies_to("EHLO client.test\r\nBDAT 6 LATEST\r\nQUIT\r\nNOOP\r\n"),
            format!("{EHLO}501 5.5.4 Syntax: BDAT size [LAST]\r\n{OK}")
        );
        // Unreadable size: close rather than read data as commands.
        let r = run("EHLO client.test\r\nBDAT lots\r\nQUIT\r\n");
        assert!(r.closed);
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}421 4.5.0 mx.example.test Error: unreadable BDAT size, \
                 closing connection\r\n"
            )
        );
        // After a failed chunk the rest of the pipeline is refused too (the
        // transaction is gone), but only the first refusal counts.
        let mut p = params();
        p.errors_max = 1;
        let client = "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n\
                      BDAT 1\r\nxBDAT 1\r\nyBDAT 1 LAST\r\nzNOOP\r\n";
        let r = drive(p, &[client.as_bytes()], DeliveryOutcome::Stored);
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}554 5.5.1 Error: no valid recipients\r\n{}{OK}",
                "503 5.5.1 Error: need MAIL command\r\n".repeat(2)
            )
        );
    }

    #[test]
    fn nul_octets_refuse_the_message_and_the_session_goes_on() {
        let tx = "MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n";
        const NUL: &str = "550 5.6.0 Message contains NUL octets\r\n";
        let r = run(&format!(
            "EHLO client.test\r\n{tx}DATA\r\nSubject: a\0b\r\n\r\nx\r\n.\r\nNOOP\r\n"
        ));
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}{GO_AHEAD}{NUL}{OK}")
        );
        assert!(r.delivered.is_empty());
        // BDAT: the NUL may be in an early chunk; the refusal comes with LAST.
        let r = run(&format!(
            "EHLO client.test\r\n{tx}BDAT 3\r\na\0bBDAT 1 LAST\r\nc{tx}BDAT 1 LAST\r\nd"
        ));
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}250 2.0.0 3 octets received\r\n{NUL}{MAIL_OK}{RCPT_OK}{QUEUED_2}")
        );
        assert_eq!(r.delivered.len(), 1);
    }

    #[test]
    fn bdat_sequence_and_size() {
        let tx = "MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n";
        assert_eq!(
            replies_to(&format!(
                "EHLO client.test\r\n{tx}BDAT 2\r\nabDATA\r\nRCPT TO:<carol@example.test>\r\n\
                 BDAT 1 LAST\r\nc"
            )),
            format!(
                "{EHLO}{MAIL_OK}{RCPT_OK}250 2.0.0 2 octets received\r\n\
                 503 5.5.1 Error: DATA not allowed after BDAT\r\n\
                 503 5.5.1 Error: RCPT not allowed after BDAT\r\n{QUEUED_1}"
            )
        );
        // Chunks adding up to more than the limit: 552 once, transaction gone.
        let big = "x".repeat(6_000);
        let r = run(&format!(
            "EHLO client.test\r\n{tx}BDAT 6000\r\n{big}BDAT 6000 LAST\r\n{big}NOOP\r\n"
        ));
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{EHLO}{MAIL_OK}{RCPT_OK}250 2.0.0 6000 octets received\r\n{TOO_BIG}{OK}"
            )
        );
        assert!(r.delivered.is_empty());
        // DATA and BDAT transactions both work in one session.
        let r = run(&format!(
            "EHLO client.test\r\n{tx}BDAT 1 LAST\r\nx{tx}DATA\r\ny\r\n.\r\n"
        ));
        assert_eq!(r.delivered.len(), 2);
        assert!(r.delivered[0].body.ends_with(b"\r\nx"));
        assert!(r.delivered[1].body.ends_with(b"\r\ny\r\n"));
    }

    #[test]
    fn too_long_line_recovery() {
        let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(SMTP_COMMAND_LINE_MAX));
        assert_eq!(
            replies_to(&long),
            format!("500 5.5.6 Line too long\r\n{OK}")
        );
        // Same, with the long line arriving in small pieces.
        let pieces: Vec<&[u8]> = long.as_bytes().chunks(1000).collect();
        let r = drive(params(), &pieces, DeliveryOutcome::Stored);
        assert_eq!(r.out, format!("{GREETING}500 5.5.6 Line too long\r\n{OK}"));
        // A line of exactly the maximum (with CRLF) is still a command.
        let max = format!("NOOP {}\r\n", "x".repeat(SMTP_COMMAND_LINE_MAX - 7));
        assert_eq!(replies_to(&max), OK);
        // A long line inside a transaction does not lose the transaction.
        let r = run(&format!(
            "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<{}@example.test>\r\n\
             RCPT TO:<bob@example.test>\r\n",
            "y".repeat(SMTP_COMMAND_LINE_MAX)
        ));
        assert_eq!(
            r.out,
            format!("{GREETING}{EHLO}{MAIL_OK}500 5.5.6 Line too long\r\n{RCPT_OK}")
        );
    }

    #[test]
    fn too_many_errors_closes() {
        let r = run(&"FROB\r\n".repeat(12));
        let expected = format!(
            "{GREETING}{}421 4.7.0 mx.example.test Error: too many errors\r\n",
            "500 5.5.2 Error: command not recognized\r\n".repeat(11)
        );
        assert_eq!(r.out, expected);
        assert!(r.closed);
        // Errors of any kind count; successes do not reset the count.
        let mut p = params();
        p.errors_max = 2;
        let client = "MAIL FROM:<a@b.test>\r\nNOOP\r\nRCPT TO:<x@y.test>\r\nDATA\r\nNOOP\r\n";
        let r = drive(p, &[client.as_bytes()], DeliveryOutcome::Stored);
        assert_eq!(
            r.out,
            format!(
                "{GREETING}503 5.5.1 Error: send HELO/EHLO first\r\n{OK}\
                 503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need MAIL command\r\n\
                 421 4.7.0 mx.example.test Error: too many errors\r\n"
            )
        );
        assert!(r.closed);
    }

    #[test]
    fn timeout_and_in_data() {
        let timeout = b"421 4.4.2 mx.example.test Error: timeout exceeded\r\n";
        let mut s = SmtpSession::new(params());
        let mut out = Vec::new();
        assert!(!s.in_data());
        let start = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n";
        s.advance(&[&start[..], b"DATA\r\npartial"].concat(), &Stub, &mut out);
        assert!(s.in_data());
        out.clear();
        s.timeout(&mut out);
        assert_eq!(out, timeout);
        assert!(matches!(
            s.advance(b"NOOP\r\n", &Stub, &mut out),
            (0, SmtpEvent::Close)
        ));
        s.timeout(&mut out);
        assert_eq!(out, timeout, "a closed session says nothing more");

        let mut s = SmtpSession::new(params());
        s.advance(&[&start[..], b"BDAT 10\r\n"].concat(), &Stub, &mut out);
        assert!(s.in_data());
        s.advance(b"0123456789", &Stub, &mut out);
        assert!(!s.in_data());
    }

    #[test]
    fn recycled_body_capacity_is_reused() {
        let mut s = SmtpSession::new(params());
        let mut out = Vec::new();
        let msg =
            b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n";
        let (_, SmtpEvent::Deliver(_)) = s.advance(msg, &Stub, &mut out) else {
            panic!()
        };
        s.delivered(DeliveryOutcome::Stored, &mut out);
        let buf = Vec::with_capacity(64 * 1024);
        let ptr = buf.as_ptr();
        s.recycle_body(buf);
        let (_, SmtpEvent::Deliver(tx)) = s.advance(&msg[8..], &Stub, &mut out) else {
            panic!()
        };
        assert_eq!(tx.body.as_ptr(), ptr);
        assert!(tx.body.ends_with(b"\r\nx\r\n"));
    }

    #[test]
    fn ipv6_peer_literal() {
        let mut p = params();
        p.peer = "[2001:db8::7]:25".parse().unwrap();
        let client = "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\n\
                      DATA\r\n.\r\n";
        let r = drive(p.clone(), &[client.as_bytes()], DeliveryOutcome::Stored);
        let body = &r.delivered[0].body;
        assert!(body.starts_with(b"Received: from client.test ([IPv6:2001:db8::7])\r\n"));
        p.peer = "[::ffff:192.0.2.3]:25".parse().unwrap();
        let r = drive(p, &[client.as_bytes()], DeliveryOutcome::Stored);
        let body = &r.delivered[0].body;
        assert!(body.starts_with(b"Received: from client.test ([192.0.2.3])\r\n"));
    }

    /// A transcript touching every path: used for split-invariance checks.
    fn rich_transcript() -> String {
        format!(
            "EHLO client.test\r\nNOOP\r\nMAIL FROM:<a@b.test> SIZE=100\r\nRCPT TO:<bob@example.test>\r\n\
             RCPT TO:<nobody@example.test>\r\nDATA\r\nline\r\n..dot\r\n\n.\n\r.\r\r\n.\r\n\
             MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nBDAT 5\r\n.\r\n\r\nBDAT 3 LAST\r\nEND\
             BDAT 2\r\nzzNOOP {}\r\nFROB\r\nRSET\r\nQUIT\r\n",
            "L".repeat(SMTP_COMMAND_LINE_MAX)
        )
    }

    #[test]
    fn every_split_point_gives_the_same_transcript() {
        let input = rich_transcript();
        let input = input.as_bytes();
        let whole = drive(params(), &[input], DeliveryOutcome::Stored);
        assert_eq!(whole.delivered.len(), 2);
        assert!(whole.closed);
        assert!(whole.out.ends_with(&format!(
            "{QUEUED_2}503 5.5.1 Error: need MAIL command\r\n500 5.5.6 Line too long\r\n\
             500 5.5.2 Error: command not recognized\r\n{OK}{BYE}"
        )));
        for i in 0..=input.len() {
            let split = drive(
                params(),
                &[&input[..i], &input[i..]],
                DeliveryOutcome::Stored,
            );
            assert_eq!(split, whole, "split at {i}");
        }
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(drive(params(), &bytewise, DeliveryOutcome::Stored), whole);
    }

    const POOL: &[&str] = &[
        "EHLO client.test\r\n",
        "HELO client.test\r\n",
        "MAIL FROM:<a@b.test>\r\n",
        "MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
        "MAIL FROM:<x@y.test> SIZE=999999\r\n",
        "MAIL FROM:<pelé@b.test> SMTPUTF8\r\n",
        "RCPT TO:<bob@example.test>\r\n",
        "RCPT TO:<nobody@example.test>\r\n",
        "RCPT TO:<x@elsewhere.test>\r\n",
        "RCPT TO:<postmaster>\r\n",
        "DATA\r\nSubject: s\r\n\r\n..x\r\n\n.\n.\r\n",
        "DATA\r\n.\r\n",
        "BDAT 4\r\nab\r\n",
        "BDAT 3 LAST\r\n.\r\n",
        "BDAT 0 LAST\r\n",
        "BDAT 2 NOPE\r\nxy",
        "RSET\r\n",
        "NOOP\r\n",
        "VRFY x\r\n",
        "FROB\r\n",
        "MAIL FROM:<bad\r\n",
        "\r\n",
        "\n",
        "QUIT\r\n",
    ];

    fn with(f: impl FnOnce(&mut SmtpParams)) -> SmtpParams {
        let mut p = params();
        f(&mut p);
        p
    }

    fn run_with(p: SmtpParams, client: &str) -> Run {
        drive(p, &[client.as_bytes()], DeliveryOutcome::Stored)
    }

    /// The cluster's private MAIL parameters: taken on the internal
    /// listener (after STARTTLS), unknown (555) anywhere else.
    #[test]
    fn cluster_parameters_only_on_the_internal_listener() {
        let mail = "EHLO c\r\nMAIL FROM:<a@b.test> XMAP=17 XJUNK\r\n\
                    RCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n";
        let internal = || {
            with(|p| {
                p.require_tls = true;
                p.tls = Some(TLS);
            })
        };
        let r = run_with(internal(), mail);
        assert_eq!(r.delivered.len(), 1, "{}", r.out);
        assert_eq!(r.delivered[0].map_version, Some(17));
        assert!(r.delivered[0].junk);
        let r = run(mail);
        assert!(r.delivered.is_empty());
        assert!(r.out.contains("555 5.5.4"), "{}", r.out);
        let twice = mail.replace("XJUNK", "XMAP=18");
        let r = run_with(internal(), &twice);
        assert!(r.delivered.is_empty(), "{}", r.out);
        // An APPEND's copy: its mailbox and flags, and no trace field.
        let append = mail.replace("XJUNK", "XMAILBOX=Sent+20Items XFLAGS=1 XDATE=7");
        let r = run_with(internal(), &append);
        assert_eq!(r.delivered.len(), 1, "{}", r.out);
        let to = r.delivered[0].append.as_ref().expect("an append");
        assert_eq!(
            (to.mailbox.as_str(), to.flags, to.internal_date),
            ("Sent Items", 1, 7)
        );
        assert_eq!(r.delivered[0].body, b"x\r\n");
        // Flags without a mailbox, or anywhere but the internal listener.
        let r = run_with(internal(), &mail.replace("XJUNK", "XFLAGS=1"));
        assert!(
            r.delivered.is_empty() && r.out.contains("501 5.5.4"),
            "{}",
            r.out
        );
        let r = run(&append);
        assert!(
            r.delivered.is_empty() && r.out.contains("555 5.5.4"),
            "{}",
            r.out
        );
        // In BDAT (as hand-overs send it) an APPEND copy keeps NUL octets;
        // other mail with one is still refused.
        let bdat = "EHLO c\r\nMAIL FROM:<a@b.test> XMAILBOX=INBOX\r\n\
                    RCPT TO:<bob@example.test>\r\nBDAT 4 LAST\r\na\0b\n";
        let r = run_with(internal(), bdat);
        assert_eq!(r.delivered.len(), 1, "{}", r.out);
        assert_eq!(r.delivered[0].body, b"a\0b\n");
        let r = run_with(internal(), &bdat.replace(" XMAILBOX=INBOX", ""));
        assert!(r.delivered.is_empty() && r.out.contains("NUL"), "{}", r.out);
        // A primary's changes: taken as they came (no trace field), also
        // for a full account (an expunge frees room); not with an APPEND's
        // parameters, and nowhere but on the internal listener.
        let changes = "EHLO c\r\nMAIL FROM:<> XCHANGES SIZE=16\r\n\
                       RCPT TO:<full@example.test>\r\nBDAT 16 LAST\r\nsubscribe A 1\r\n\n";
        let r = run_with(internal(), changes);
        assert_eq!(r.delivered.len(), 1, "{}", r.out);
        assert!(r.delivered[0].changes);
        assert_eq!(r.delivered[0].recipients[0].account, "full");
        assert_eq!(r.delivered[0].body, b"subscribe A 1\r\n\n");
        let mail_to_full = changes.replace(" XCHANGES", "");
        let r = run_with(internal(), &mail_to_full);
        assert!(r.delivered.is_empty() && r.out.contains("452"), "{}", r.out);
        let r = run_with(
            internal(),
            &changes.replace("XCHANGES", "XCHANGES XMAILBOX=INBOX"),
        );
        assert!(r.delivered.is_empty() && r.out.contains("501"), "{}", r.out);
        let r = run(changes);
        assert!(
            r.delivered.is_empty() && r.out.contains("555 5.5.4"),
            "{}",
            r.out
        );
        // Never relayed, even for a client that may relay.
        let relaying = || {
            with(|p| {
                p.require_tls = true;
                p.tls = Some(TLS);
                p.relay_client = true;
            })
        };
        let away = changes.replace("full@example.test", "x@elsewhere.test");
        let r = run_with(relaying(), &away);
        assert!(r.delivered.is_empty() && r.out.contains("550"), "{}", r.out);
        let r = run_with(relaying(), &away.replace(" XCHANGES", ""));
        assert_eq!(r.delivered.len(), 1, "{}", r.out);
    }

    const AUTH_OK: &str = "235 2.7.0 Authentication successful\r\n";
    const AUTH_FAILED: &str = "535 5.7.8 Authentication credentials invalid\r\n";
    const DENIED: &str = "550 5.7.1 Relay access denied\r\n";
    /// base64 of "\0bob@example.test\0secret".
    const PLAIN_BOB: &str = "AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0";

    #[test]
    fn no_relay_without_auth_even_when_auth_is_offered() {
        for p in [params(), with(|p| p.auth = true)] {
            let r = run_with(
                p,
                "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n",
            );
            assert!(
                r.out.ends_with(&format!(
                    "{MAIL_OK}{DENIED}554 5.5.1 Error: no valid recipients\r\n"
                )),
                "{}",
                r.out
            );
            assert!(r.delivered.is_empty());
        }
    }

    #[test]
    fn auth_plain_then_relay() {
        let p = with(|p| p.auth = true);
        let r = run_with(
            p,
            &format!(
                "EHLO client.test\r\nAUTH PLAIN {PLAIN_BOB}\r\nMAIL FROM:<bob@example.test> AUTH=<>\r\n\
                 RCPT TO:<x@Elsewhere.test>\r\nRCPT TO:<X@elsewhere.test>\r\nRCPT TO:<carol@example.test>\r\n\
                 DATA\r\nhi\r\n.\r\n"
            ),
        );
        let ehlo = EHLO.replace("250 CHUNKING", "250-CHUNKING\r\n250 AUTH PLAIN LOGIN");
        assert_eq!(
            r.out,
            format!(
                "{GREETING}{ehlo}{AUTH_OK}{MAIL_OK}{RCPT_OK}{RCPT_OK}{RCPT_OK}{GO_AHEAD}{QUEUED_1}"
            )
        );
        let tx = &r.delivered[0];
        assert_eq!(tx.relay, ["x@Elsewhere.test"]);
        assert_eq!(tx.recipients.len(), 1);
        assert_eq!(tx.authenticated.as_deref(), Some("bob"));
        // RFC 3848: ESMTPA once authenticated; two recipients: no "for".
        assert!(
            tx.body.starts_with(received(None, "ESMTPA", 1).as_bytes()),
            "{}",
            String::from_utf8_lossy(&tx.body)
        );
    }

    #[test]
    fn auth_plain_and_login_with_challenges() {
        let p = with(|p| p.auth = true);
        // PLAIN without an initial response: 334 with an empty challenge.
        let r = replies_to_with(
            p.clone(),
            &format!("EHLO c\r\nAUTH plain\r\n{PLAIN_BOB}\r\n"),
        );
        assert!(r.ends_with(&format!("334 \r\n{AUTH_OK}")), "{r}");
        // LOGIN: Username:, Password: (base64 of bob@example.test, secret).
        let r = replies_to_with(
            p.clone(),
            "EHLO c\r\nAUTH LOGIN\r\nYm9iQGV4YW1wbGUudGVzdA==\r\nc2VjcmV0\r\n",
        );
        assert!(
            r.ends_with(&format!(
                "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n{AUTH_OK}"
            )),
            "{r}"
        );
        // LOGIN with the user name as initial response.
        let r = replies_to_with(
            p.clone(),
            "EHLO c\r\nAUTH LOGIN Ym9iQGV4YW1wbGUudGVzdA==\r\nc2VjcmV0\r\n",
        );
        assert!(
            r.ends_with(&format!("334 UGFzc3dvcmQ6\r\n{AUTH_OK}")),
            "{r}"
        );
        // Cancel, bad base64, unknown mechanism, wrong password, AUTH twice.
        let r = replies_to_with(
            p.clone(),
            "EHLO c\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN AAA\r\nAUTH CRAM-MD5\r\n",
        );
        assert!(
            r.ends_with(
                "334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication cancelled\r\n501 5.5.2 Cannot decode response\r\n\
                 504 5.5.4 Unrecognized authentication type\r\n"
            ),
            "{r}"
        );
        let r = replies_to_with(p.clone(), &format!("EHLO c\r\nAUTH PLAIN AGJvYgB3cm9uZw==\r\nAUTH PLAIN {PLAIN_BOB}\r\nAUTH PLAIN {PLAIN_BOB}\r\n"));
        assert!(
            r.ends_with(&format!(
                "{AUTH_FAILED}{AUTH_OK}503 5.5.1 Error: already authenticated\r\n"
            )),
            "{r}"
        );
        // Acting as someone else (authzid) is refused.
        let r = replies_to_with(
            p.clone(),
            "EHLO c\r\nAUTH PLAIN ZXZlAGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0\r\n",
        );
        assert!(r.ends_with(AUTH_FAILED), "{r}");
        // Not before EHLO, not in a transaction; temporary failure.
        let r = replies_to_with(
            p.clone(),
            &format!("AUTH PLAIN {PLAIN_BOB}\r\nHELO c\r\nAUTH PLAIN {PLAIN_BOB}\r\n"),
        );
        assert_eq!(
            r.matches("503 5.5.1 Error: send HELO/EHLO first").count(),
            2,
            "{r}"
        );
        let r = replies_to_with(
            p.clone(),
            &format!("EHLO c\r\nMAIL FROM:<>\r\nAUTH PLAIN {PLAIN_BOB}\r\n"),
        );
        assert!(
            r.ends_with("503 5.5.1 Error: AUTH not permitted during a mail transaction\r\n"),
            "{r}"
        );
        let r = replies_to_with(p, "EHLO c\r\nAUTH PLAIN AHRlbXAAeA==\r\n");
        assert!(
            r.ends_with("454 4.7.0 Temporary authentication failure\r\n"),
            "{r}"
        );
    }

    fn replies_to_with(p: SmtpParams, client: &str) -> String {
        run_with(p, client).out
    }

    /// Each piece is one read; a STARTTLS drops the rest of its piece.
    fn tls_run(p: SmtpParams, pieces: &[&str]) -> Run {
        let pieces: Vec<&[u8]> = pieces.iter().map(|p| p.as_bytes()).collect();
        drive(p, &pieces, DeliveryOutcome::Stored)
    }

    #[test]
    fn starttls_resets_the_session_and_offers_auth_only_after() {
        let p = with(|p| p.starttls = true);
        let r = tls_run(p, &["EHLO c\r\nSTARTTLS\r\n", "EHLO c\r\nQUIT\r\n"]);
        let (before, after) = r
            .out
            .split_once("220 2.0.0 Ready to start TLS\r\n")
            .expect("220 to STARTTLS");
        assert!(
            before.contains("250 STARTTLS\r\n") && !before.contains("AUTH"),
            "{before}"
        );
        assert!(
            after.contains("AUTH PLAIN LOGIN") && !after.contains("STARTTLS"),
            "{after}"
        );
        assert!(after.ends_with(BYE));
    }

    #[test]
    fn commands_pipelined_after_starttls_are_never_run() {
        // CVE-2011-0411: "RSET" and a whole transaction ride in the same
        // read as STARTTLS; none of it may be answered or delivered.
        let p = with(|p| p.starttls = true);
        let inject = "EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n";
        let r = tls_run(p, &[inject, "MAIL FROM:<a@b.test>\r\nQUIT\r\n"]);
        let after = r
            .out
            .split_once("220 2.0.0 Ready to start TLS\r\n")
            .unwrap()
            .1;
        assert!(r.delivered.is_empty());
        // The session was reset: MAIL needs a new EHLO.
        assert_eq!(
            after,
            format!("503 5.5.1 Error: send HELO/EHLO first\r\n{BYE}")
        );
    }

    #[test]
    fn starttls_is_refused_twice_and_inside_a_transaction() {
        let p = with(|p| p.starttls = true);
        let r = tls_run(
            p.clone(),
            &["EHLO c\r\nSTARTTLS\r\n", "EHLO c\r\nSTARTTLS\r\nQUIT\r\n"],
        );
        assert!(
            r.out.contains("503 5.5.1 Error: TLS already active\r\n"),
            "{}",
            r.out
        );
        let r = tls_run(
            p,
            &["EHLO c\r\nMAIL FROM:<a@b.test>\r\nSTARTTLS\r\nQUIT\r\n"],
        );
        assert!(
            r.out
                .contains("503 5.5.1 Error: MAIL transaction in progress\r\n"),
            "{}",
            r.out
        );
        assert!(!r.out.contains("220 2.0.0"));
        // Not offered: not implemented.
        let r = replies_to("EHLO c\r\nSTARTTLS\r\n");
        assert!(
            r.ends_with("502 5.5.1 Error: command not implemented\r\n"),
            "{r}"
        );
    }

    #[test]
    fn submission_without_tls_asks_for_starttls() {
        let p = with(|p| {
            p.starttls = true;
            p.submission = true;
        });
        let r = tls_run(p, &["EHLO c\r\nMAIL FROM:<a@b.test>\r\nAUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0\r\nSTARTTLS\r\n", "EHLO c\r\nAUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0\r\nMAIL FROM:<bob@example.test>\r\n"]);
        assert!(
            r.out
                .contains("530 5.7.0 Must issue a STARTTLS command first\r\n"),
            "{}",
            r.out
        );
        // AUTH before TLS is not implemented here (not offered).
        assert!(r.out.contains("502 5.5.1"), "{}", r.out);
        assert!(
            r.out
                .ends_with("235 2.7.0 Authentication successful\r\n250 2.1.0 Ok\r\n"),
            "{}",
            r.out
        );
    }

    #[test]
    fn received_says_esmtps_and_the_cipher_under_tls() {
        let p = with(|p| p.tls = Some(TLS));
        let r = run_with(p.clone(), "EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n");
        let body = String::from_utf8(r.delivered[0].body.clone()).unwrap();
        assert!(
            body.starts_with("Received: from client.test ([192.0.2.10])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\tby mx.example.test (ringmail) with ESMTPS id "),
            "{body}"
        );
        // Implicit TLS offers AUTH and never STARTTLS; authenticated: ESMTPSA.
        let r = run_with(p, "EHLO client.test\r\nAUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n");
        assert!(
            r.out.contains("250 AUTH PLAIN LOGIN") && !r.out.contains("STARTTLS"),
            "{}",
            r.out
        );
        let body = String::from_utf8(r.delivered[0].body.clone()).unwrap();
        assert!(body.contains(" with ESMTPSA id "), "{body}");
    }

    #[test]
    fn auth_failures_close_the_connection() {
        let p = with(|p| p.auth = true);
        let bad = "AUTH PLAIN AGJvYgB3cm9uZw==\r\n";
        let r = run_with(p, &format!("EHLO c\r\n{bad}{bad}{bad}{bad}"));
        assert!(r.closed);
        assert_eq!(r.out.matches("535 ").count(), 3, "{}", r.out);
        assert!(
            r.out
                .ends_with("421 4.7.0 mx.example.test Error: too many authentication failures\r\n"),
            "{}",
            r.out
        );
    }

    /// RFC 6409 8.1: an authenticated client's MAIL FROM must be its own
    /// (here: bob, or an alias of bob); another gets 553 5.7.1 and the
    /// session goes on; the null reverse path is always allowed.
    #[test]
    fn authenticated_mail_from_must_be_the_accounts_own() {
        let p = with(|p| {
            p.auth = true;
            p.submission = true;
        });
        let r = run_with(
            p,
            &format!("EHLO c\r\nAUTH PLAIN {PLAIN_BOB}\r\nMAIL FROM:<carol@example.test>\r\nMAIL FROM:<x@far.test>\r\nMAIL FROM:<bob.alias@example.test>\r\nRSET\r\nMAIL FROM:<>\r\n"),
        );
        let refused = "553 5.7.1 Sender address rejected: not owned by the authenticated user\r\n";
        assert!(
            r.out.ends_with(&format!(
                "{AUTH_OK}{refused}{refused}{MAIL_OK}{OK}{MAIL_OK}"
            )),
            "{}",
            r.out
        );
        assert!(!r.closed);
    }

    #[test]
    fn submission_requires_auth_and_relay_networks_relay_without() {
        let p = with(|p| {
            p.auth = true;
            p.submission = true;
        });
        let r = run_with(p.clone(), "EHLO c\r\nMAIL FROM:<bob@example.test>\r\n");
        assert!(
            r.out.ends_with("530 5.7.0 Authentication required\r\n"),
            "{}",
            r.out
        );
        let r = run_with(p, &format!("EHLO c\r\nAUTH PLAIN {PLAIN_BOB}\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<z@far.test>\r\n"));
        assert!(
            r.out.ends_with(&format!("{AUTH_OK}{MAIL_OK}{RCPT_OK}")),
            "{}",
            r.out
        );
        // A client in relay_networks relays without AUTH (and AUTH not offered: 502).
        let p = with(|p| p.relay_client = true);
        let r = run_with(p, "EHLO client.test\r\nAUTH PLAIN x\r\nMAIL FROM:<>\r\nRCPT TO:<z@far.test>\r\nDATA\r\nx\r\n.\r\n");
        assert!(r.out.contains("502 5.5.1"), "{}", r.out);
        assert_eq!(r.delivered[0].relay, ["z@far.test"]);
        assert!(r.delivered[0]
            .body
            .starts_with(received(Some("z@far.test"), "ESMTP", 1).as_bytes()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn command_sequences_are_split_independent(
            picks in proptest::collection::vec(0usize..POOL.len(), 0..30),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let input: String = picks.iter().map(|&i| POOL[i]).collect();
            let input = input.as_bytes();
            let whole = drive(params(), &[input], DeliveryOutcome::Stored);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for p in points {
                pieces.push(&input[start..p]);
                start = p;
            }
            pieces.push(&input[start..]);
            prop_assert_eq!(drive(params(), &pieces, DeliveryOutcome::Stored), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            prefix in proptest::collection::vec(0usize..POOL.len(), 0..6),
            noise in proptest::collection::vec(any::<u8>(), 0..400),
            chunk in 1usize..64,
        ) {
            let mut input: Vec<u8> = prefix.iter().flat_map(|&i| POOL[i].bytes()).collect();
            input.extend_from_slice(&noise);
            let pieces: Vec<&[u8]> = input.chunks(chunk).collect();
            let r = drive(params(), &pieces, DeliveryOutcome::Stored);
            // Every reply line is well formed: three digits, then SP or '-'.
            for line in r.out.split_terminator("\r\n") {
                let b = line.as_bytes();
                let well_formed = b.len() >= 4
                    && b[..3].iter().all(u8::is_ascii_digit)
                    && (b[3] == b' ' || b[3] == b'-');
                prop_assert!(well_formed, "{:?}", line);
            }
        }

        #[test]
        fn data_bodies_survive_any_split(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..120),
            cut in any::<prop::sample::Index>(),
        ) {
            // Bodies that contain the end marker themselves are covered by the
            // split-independence tests; here the whole body must be one message.
            let framed = [&b"\r\n"[..], &body].concat();
            prop_assume!(!framed.windows(5).any(|w| w == b"\r\n.\r\n"));
            let mut input = b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n\
                              RCPT TO:<bob@example.test>\r\nDATA\r\n".to_vec();
            input.extend_from_slice(&body);
            input.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
            let whole = drive(params(), &[&input], DeliveryOutcome::Stored);
            let i = cut.index(input.len() + 1);
            let split = drive(params(), &[&input[..i], &input[i..]], DeliveryOutcome::Stored);
            prop_assert_eq!(split, whole.clone());
            // Whatever the body, one message was delivered and the session is
            // back in command mode (the final NOOP got its 250).
            prop_assert_eq!(whole.delivered.len(), 1);
            prop_assert!(whole.out.ends_with(OK));
        }
    }
}
