//! The IMAP session as a state machine without I/O (RFC 3501 / RFC 9051).
//!
//! [`Machine`] owns everything a session knows: its state (not
//! authenticated, authenticated, selected), the selected mailbox's view,
//! the enabled extensions and the saved search result. It takes one parsed
//! command at a time and writes the responses into [`Out`]. What it cannot
//! do itself it asks for in one of two ways:
//!
//! - through [`Mailstore`], the owner's mailbox store: reads of the index,
//!   message bodies, and `commit`, the one effect that waits (records made
//!   durable before the answer is written);
//! - through [`Next`]: the effects that belong to the connection (check
//!   credentials, start TLS or compression, IDLE, close).
//!
//! The runtime (`runtime/imap.rs`) implements `Mailstore` on the shard
//! (commit = write the records and wait for fdatasync) and performs the
//! `Next` effects; [`super::memory::MemStore`] implements it in memory, so
//! unit tests and the `imap_session` fuzz target drive this same code with
//! no sockets and no disk.
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use crate::protocol::imap::encode;
use crate::protocol::imap::{
    parse_sasl_response, Code, Command, CommandBody, FetchAttr, Flag, ListReturn,
    Mailbox as MailboxArg, Qresync, SaslResponse, SearchReturn, SequenceArg, SequenceSet, Status,
    StatusItem, StoreMode,
};
use crate::session::fetch::{self, Piece};
use crate::session::imap::{self as logic, View, DELIMITER};
use crate::session::mailboxes::{self, special_use_code, status_items};
use crate::session::search::{self, Hit};
use crate::session::store;
use crate::session::transfer;
use crate::storage::index::{self, flag, special, Account, Mailbox};
use crate::storage::record::{Loc, Op};
use crate::storage::StorageError;

/// What the session needs from the store that owns the account's mail.
pub trait Mailstore {
    /// A message body: the octets stay where they are (a mapping) until
    /// the runtime writes them.
    type Body: std::ops::Deref<Target = [u8]> + Clone;
    /// Read an account's index.
    fn with_account<R>(&self, account: &str, f: impl FnOnce(&Account) -> R) -> Option<R>;
    /// Advance an account's counters (UIDs, mod-sequences, mailbox ids,
    /// keyword bits) before their records are committed.
    fn with_account_counters<R>(
        &self,
        account: &str,
        f: impl FnOnce(&mut Account) -> R,
    ) -> Result<R, StorageError>;
    /// Log the records and return once they are durable and applied; on
    /// an error nothing may be reported as done.
    fn commit(&self, ops: &[Op<'_>]) -> impl Future<Output = Result<(), StorageError>>;
    /// A message body by location.
    fn body(&self, loc: Loc) -> Option<Self::Body>;
    /// The account's storage limit in octets, if it has one (RFC 9208).
    fn quota(&self, account: &str) -> Option<u64>;
    /// Octets the account uses now.
    fn used_octets(&self, account: &str) -> u64;
    /// Octets held by commands in flight, per account (not yet committed).
    fn quota_reserved(&self) -> &RefCell<HashMap<String, u64>>;
    /// Per (account, mailbox): the highest UID some session has claimed
    /// as \Recent (RFC 3501 2.3.2).
    fn recent_floors(&self) -> &RefCell<HashMap<(String, u32), u32>>;
    /// The bounds a session keeps to (`[limits]`).
    fn limits(&self) -> Limits;
    /// Seconds since the epoch (INTERNALDATE, UIDVALIDITY).
    fn now(&self) -> i64;
    /// Cluster mode: hand the message an APPEND is about to store in
    /// `mailbox` to the account's replica first (with its flags, keywords
    /// and internal date); the APPEND answers NO if that fails. Called
    /// before any UID is taken, so the wait cannot reorder commits. A
    /// single node has nothing to do. What it returns is held until the
    /// APPEND's own commit is done (the cluster's record of an operation
    /// in flight).
    fn replicate_append(
        &self,
        _account: &str,
        _mailbox: &str,
        _flags: u32,
        _keywords: &[&[u8]],
        _internal_date: i64,
        _message: &[u8],
    ) -> impl Future<Output = Result<Option<Box<dyn std::any::Any>>, StorageError>> {
        async { Ok(None) }
    }
}

/// The bounds of what one session may do to an account.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message APPEND takes.
    pub message_size_max: usize,
    /// Mailboxes per account (CREATE, RENAME of INBOX).
    pub mailboxes_max: usize,
    /// Subscribed names per account.
    pub subscriptions_max: usize,
    /// Messages per account that APPEND, COPY and MOVE may reach.
    pub messages_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_size_max: crate::limits::MESSAGE_SIZE_MAX,
            mailboxes_max: crate::limits::IMAP_MAILBOXES_MAX,
            subscriptions_max: crate::limits::IMAP_SUBSCRIPTIONS_MAX,
            messages_max: crate::limits::IMAP_MESSAGES_MAX,
        }
    }
}

/// Messages in all of an account's mailboxes.
fn account_messages(a: &Account) -> usize {
    a.mailboxes.iter().map(|m| m.messages.len()).sum()
}

/// Room under a limit of which 0 means none.
fn within(max: usize, n: usize) -> bool {
    max == 0 || n <= max
}

/// Capabilities once logged in.
pub const CAPS: &[&str] = &[
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

/// Before login, after IMAP4rev1, IMAP4rev2 and the login words of [`Machine::caps_preauth`].
const CAPS_PREAUTH_BASE: &[&str] = &["LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE"];

/// The one quota root of every account (RFC 9208 section 3.2).
const QUOTA_ROOT: &[u8] = b"";

/// Response bytes plus pieces of messages written in at given offsets of
/// `buf` when it is flushed, so that a FETCH of many large messages holds
/// references to the mappings, not copies.
pub struct Out<B> {
    pub buf: Vec<u8>,
    pub splices: Vec<(usize, Piece<B>)>,
}

impl<B: std::ops::Deref<Target = [u8]>> Out<B> {
    pub fn new() -> Out<B> {
        Out {
            buf: Vec::with_capacity(4096),
            splices: Vec::new(),
        }
    }

    pub fn status(
        &mut self,
        tag: Option<&[u8]>,
        status: Status,
        code: Option<&Code<'_>>,
        text: &str,
    ) {
        encode::write_status(&mut self.buf, tag, status, code, text);
    }

    /// Everything written so far as the client would receive it (pieces
    /// spliced in), and cleared; for tests and the fuzz target.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.buf.len());
        let mut at = 0;
        for (pos, piece) in self.splices.drain(..) {
            v.extend_from_slice(&self.buf[at..pos]);
            piece.render(&mut v);
            at = pos;
        }
        v.extend_from_slice(&self.buf[at..]);
        self.buf.clear();
        v
    }
}

impl<B: std::ops::Deref<Target = [u8]>> Default for Out<B> {
    fn default() -> Self {
        Self::new()
    }
}

/// Octets of quota held by a command in flight (see `Machine::hold_quota`).
struct QuotaHold<S: Mailstore> {
    store: Rc<S>,
    account: String,
    octets: u64,
}

impl<S: Mailstore> Drop for QuotaHold<S> {
    fn drop(&mut self) {
        if self.octets == 0 {
            return;
        }
        let mut held = self.store.quota_reserved().borrow_mut();
        if let Some(v) = held.get_mut(&self.account) {
            *v = v.saturating_sub(self.octets);
            if *v == 0 {
                held.remove(&self.account);
            }
        }
    }
}

/// The selected mailbox.
pub struct Selected {
    pub id: u32,
    pub read_only: bool,
    pub view: View,
}

/// What the connection does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    Close,
    /// IDLE (RFC 2177): the continuation is written; report changes as they
    /// happen until DONE, then answer with this tag.
    Idle(Vec<u8>),
    /// COMPRESS DEFLATE accepted: answer `tag OK` plainly, then deflate.
    Compress(Vec<u8>),
    /// STARTTLS accepted (RFC 3501 6.2.1): answer, then the handshake.
    StartTls(Vec<u8>),
    /// Check these credentials (LOGIN, AUTHENTICATE PLAIN) and answer.
    Login {
        tag: Vec<u8>,
        user: String,
        password: String,
    },
    /// The runtime's answer to `Login`: logged in as this account; answer
    /// `tag OK` once on the shard that owns it.
    LoggedIn {
        account: String,
        tag: Vec<u8>,
    },
}

/// One IMAP session's state and command logic.
pub struct Machine<S: Mailstore> {
    pub store: Rc<S>,
    pub out: Out<S::Body>,
    pub account: Option<String>,
    pub sel: Option<Selected>,
    condstore: bool,
    /// ENABLE QRESYNC was given (RFC 7162 3.2.3): expunges are announced as
    /// VANISHED, and SELECT and UID FETCH accept their QRESYNC forms.
    qresync: bool,
    /// COMPRESS=DEFLATE is on (RFC 4978).
    pub compressed: bool,
    /// ENABLE IMAP4rev2 was given (RFC 9051): mailbox names are UTF-8,
    /// SEARCH answers ESEARCH, \Recent and RECENT are gone, and SELECT
    /// names the mailbox in a LIST response.
    rev2: bool,
    /// CONDSTORE was just enabled while a mailbox is selected: the next
    /// tagged OK carries `[HIGHESTMODSEQ n]` (RFC 7162 3.1).
    modseq_pending: bool,
    saved: Vec<u32>,
    /// AUTHENTICATE waiting for the client's continuation line: the tag.
    pub sasl_tag: Option<Vec<u8>>,
    /// A sync said BYE (the selected mailbox was deleted): where in `out`
    /// its line ends.
    bye: Option<usize>,
    /// TLS is active (implicit, or after STARTTLS).
    pub tls: bool,
    /// LOGIN/AUTHENTICATE are accepted without TLS (loopback or the
    /// operator's `auth_without_tls`).
    pub auth_plaintext: bool,
}

impl<S: Mailstore> Machine<S> {
    pub fn new(store: Rc<S>, account: Option<String>) -> Machine<S> {
        Machine {
            store,
            out: Out::new(),
            account,
            sel: None,
            condstore: false,
            qresync: false,
            compressed: false,
            rev2: false,
            modseq_pending: false,
            saved: Vec::new(),
            sasl_tag: None,
            bye: None,
            tls: false,
            auth_plaintext: false,
        }
    }

    /// Credentials may be sent now: under TLS, or where plain text is allowed.
    fn credentials_allowed(&self) -> bool {
        self.tls || self.auth_plaintext
    }

    /// Capabilities before login. RFC 3501 6.2.1 / 7.2.1: STARTTLS while
    /// plain; LOGINDISABLED (and no AUTH=) where credentials would be
    /// refused in clear; re-announced only when the client asks again.
    pub fn caps_preauth(&self) -> Vec<&'static str> {
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

    /// The session is logged in as `account` (on the shard that owns it):
    /// the tagged OK of LOGIN/AUTHENTICATE, with the capabilities.
    pub fn logged_in(&mut self, account: String, tag: &[u8]) {
        self.account = Some(account);
        self.out.status(
            Some(tag),
            Status::Ok,
            Some(&Code::Capability(CAPS)),
            "Logged in",
        );
    }

    fn sasl_plain(&mut self, tag: &[u8], response: &[u8]) -> Next {
        match crate::protocol::pop3::decode_plain(response) {
            Ok(c) if c.authzid.is_empty() || c.authzid == c.authcid => Next::Login {
                tag: tag.to_vec(),
                user: c.authcid,
                password: c.password,
            },
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

    /// The client's line after AUTHENTICATE's challenge.
    pub fn sasl_continue(&mut self, tag: Vec<u8>, line: &[u8]) -> Next {
        match parse_sasl_response(line) {
            Some(SaslResponse::Data(d)) => self.sasl_plain(&tag, d),
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
    pub async fn execute(&mut self, cmd: Command<'_>, external: Option<&[u8]>) -> Next {
        let next = self.run(cmd, external).await;
        if self.take_bye() {
            return Next::Close;
        }
        next
    }

    async fn run(&mut self, cmd: Command<'_>, external: Option<&[u8]>) -> Next {
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
                return Next::Login {
                    tag: tag.to_vec(),
                    user: u,
                    password: p,
                };
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
                    return self.sasl_plain(tag, ir);
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
                    None => self.no_such_mailbox(tag, Code::NonExistent),
                }
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                if self.with_mailbox_named(&mailbox, |_, _| ()).is_none() {
                    self.no_such_mailbox(tag, Code::NonExistent);
                } else {
                    // RFC 9208 5.2: one root, "", for all of an account's
                    // mailboxes; none when the account has no limit.
                    let limit = self.store.quota(self.account());
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
                self.saved.clear();
                self.ok(tag, "CLOSE completed");
            }
            CommandBody::Unselect => {
                self.sel = None;
                self.saved.clear();
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
    fn write_vanished_earlier(&mut self, set: &SequenceSet, modseq: u64) {
        let Some(id) = self.sel.as_ref().map(|s| s.id) else {
            return;
        };
        let out = &mut self.out.buf;
        self.store
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
        let Some(limit) = self.store.quota(&account) else {
            return false;
        };
        // This session runs on the account's owner: its own count is exact.
        let used = self.store.used_octets(&account);
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
    fn hold_quota(&mut self, tag: &[u8], adding: u64) -> Option<QuotaHold<S>> {
        let account = self.account().to_string();
        let hold = |octets| QuotaHold {
            store: self.store.clone(),
            account: account.clone(),
            octets,
        };
        let Some(limit) = self.store.quota(&account) else {
            return Some(hold(0));
        };
        let used = self.store.used_octets(&account);
        let held = self
            .store
            .quota_reserved()
            .borrow()
            .get(&account)
            .copied()
            .unwrap_or(0);
        if adding == 0 {
            return Some(hold(0));
        }
        if used.saturating_add(held).saturating_add(adding) <= limit {
            *self
                .store
                .quota_reserved()
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

    pub fn ok(&mut self, tag: &[u8], text: &str) {
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
        self.store
            .with_account(self.account(), |a| {
                a.mailbox(id).map(|m| m.reported_modseq())
            })
            .flatten()
    }

    fn storage_failed(&mut self, tag: &[u8], e: &StorageError) {
        tracing::warn!(error = %e, "IMAP storage operation failed");
        let code = match e {
            StorageError::Full => Code::OverQuota,
            StorageError::Unavailable(_) => Code::Unavailable,
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
            .store
            .recent_floors()
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
        self.store.with_account(self.account(), |a| {
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

    /// The sync a command of the selected state starts with. False when
    /// the mailbox was deleted by another session meanwhile: the sync
    /// said BYE and the command stops (`execute` ends the session).
    fn sync_selected(&mut self, allow_expunge: bool) -> bool {
        self.sync(allow_expunge);
        // Only a deleted mailbox (BYE) takes the selection away here.
        self.sel.is_some()
    }

    /// A sync found the selected mailbox deleted and said BYE: drop what
    /// was written after it (the command's own answer) and return true;
    /// the connection is to be closed once the output is flushed.
    pub fn take_bye(&mut self) -> bool {
        let Some(at) = self.bye.take() else {
            return false;
        };
        self.out.buf.truncate(at);
        self.out.splices.retain(|(p, _)| *p <= at);
        true
    }

    /// What a command on messages of the selected mailbox starts with: the
    /// sync, NO [READ-ONLY] if it `writes` to an EXAMINEd mailbox, BAD for
    /// a sequence number the client does not have. False: answered.
    fn start_on_messages(
        &mut self,
        tag: &[u8],
        uid: bool,
        set: &SequenceSet,
        writes: bool,
    ) -> bool {
        if !self.sync_selected(uid) {
            return false;
        }
        let sel = self.sel.as_ref().expect("selected");
        if writes && sel.read_only {
            self.read_only(tag);
            return false;
        }
        if !uid && !sel.view.valid_seqs(set) {
            self.out.status(
                Some(tag),
                Status::Bad,
                None,
                "Invalid message sequence number",
            );
            return false;
        }
        true
    }

    /// NO for a mailbox that does not exist: [NONEXISTENT] (RFC 5530), or
    /// [TRYCREATE] where creating it would help (RFC 3501 6.3.11, 6.4.7).
    fn no_such_mailbox(&mut self, tag: &[u8], code: Code<'_>) {
        self.out
            .status(Some(tag), Status::No, Some(&code), "No such mailbox");
    }

    fn read_only(&mut self, tag: &[u8]) {
        self.out.status(
            Some(tag),
            Status::No,
            Some(&Code::ReadOnly),
            "Mailbox is read-only",
        );
    }

    /// Report changes made by others (and by our own durable commits).
    pub fn sync(&mut self, allow_expunge: bool) {
        let Some(sel) = self.sel.as_mut() else { return };
        let account = self
            .account
            .as_deref()
            .expect("selected implies authenticated");
        let key = (account.to_string(), sel.id);
        let mut floor = self
            .store
            .recent_floors()
            .borrow()
            .get(&key)
            .copied()
            .unwrap_or(0);
        let out = &mut self.out.buf;
        let condstore = self.condstore;
        let rev2 = self.rev2;
        let qresync = self.qresync;
        let found = self.store.with_account(account, |a| {
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
        let found = found.flatten().is_some();
        if !sel.read_only && found {
            self.store.recent_floors().borrow_mut().insert(key, floor);
        }
        if !found {
            // RFC 5182 2.1: `$` belongs to the mailbox it was saved in.
            self.saved.clear();
            // The selected mailbox was deleted by another session. RFC 2180
            // 3.3 leaves the choice; like Dovecot, the session ends with
            // BYE (nothing of the command goes out after it, see
            // `take_bye`): a client cannot be told of the deletion any
            // other way it would understand, and every client handles BYE.
            self.out
                .buf
                .extend_from_slice(b"* BYE Selected mailbox was deleted, have to disconnect.\r\n");
            self.bye = Some(self.out.buf.len());
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
        // RFC 5182 2.1: SELECT and EXAMINE reset `$`.
        self.saved.clear();
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
            self.no_such_mailbox(tag, Code::NonExistent);
            return;
        };
        let rev2 = self.rev2;
        let mut floor_map = self.store.recent_floors().borrow_mut();
        let out = &mut self.out.buf;
        let sel = self.store.with_account(&account, |a| {
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
            None => self.no_such_mailbox(tag, Code::NonExistent),
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
        if !self.room_for_mailboxes(tag, names.len()) {
            return;
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

    /// Room for `n` more mailboxes under `[limits] mailboxes_max`; if
    /// not, the command is answered NO [LIMIT] (RFC 5530).
    fn room_for_mailboxes(&mut self, tag: &[u8], n: usize) -> bool {
        let have = self
            .store
            .with_account(self.account(), |a| a.mailboxes.len())
            .unwrap_or(0);
        if within(self.store.limits().mailboxes_max, have + n) {
            return true;
        }
        self.out.status(
            Some(tag),
            Status::No,
            Some(&Code::Limit),
            "Too many mailboxes",
        );
        false
    }

    fn exists(&self, name: &str) -> bool {
        self.store
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
        let now = self.store.now();
        let ids = self.store.with_account_counters(&account, |a| {
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
        self.store.commit(&ops).await?;
        Ok(ids.last().map(|(id, v)| encode::mailbox_objectid(*v, *id)))
    }

    async fn delete(&mut self, tag: &[u8], name: &MailboxArg<'_>) {
        let Some(name) = self.stored_name(name) else {
            self.no_such_mailbox(tag, Code::NonExistent);
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
        let info = self.store.with_account(&account, |a| {
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
            None => self.no_such_mailbox(tag, Code::NonExistent),
            Some((_, true)) => self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Other("HASCHILDREN")),
                "Mailbox has children, delete them first",
            ),
            Some((id, false)) => {
                if self.sel.as_ref().is_some_and(|s| s.id == id) {
                    self.sel = None;
                    self.saved.clear();
                }
                // Mailbox ids are never reused: its \Recent floor goes too.
                self.store
                    .recent_floors()
                    .borrow_mut()
                    .remove(&(account.clone(), id));
                match self
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
            self.no_such_mailbox(tag, Code::NonExistent);
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
            if !self.room_for_mailboxes(tag, 1) {
                return;
            }
            if let Err(e) = self
                .create_mailboxes(std::slice::from_ref(&to), special::NONE)
                .await
            {
                return self.storage_failed(tag, &e);
            }
            let uids: Vec<u32> = self
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
        // The target was checked; the names its inferiors get must fit too.
        if renames.iter().any(|(_, n)| n.len() > mailboxes::NAME_MAX) {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Limit),
                "A mailbox name would be too long",
            );
            return;
        }
        let ops: Vec<Op<'_>> = renames
            .iter()
            .map(|(id, n)| Op::RenameMailbox {
                account: &account,
                mailbox: *id,
                name: n,
            })
            .collect();
        match self.store.commit(&ops).await {
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
        // A subscription need not name an existing mailbox (RFC 3501
        // 6.3.6), so its name and number are bounded here.
        if on && name.len() > mailboxes::NAME_MAX {
            self.out
                .status(Some(tag), Status::No, None, "Invalid mailbox name");
            return;
        }
        let account = self.account().to_string();
        let (subscribed, count) = self
            .store
            .with_account(&account, |a| {
                (
                    a.subscriptions.iter().any(|s| s == name),
                    a.subscriptions.len(),
                )
            })
            .unwrap_or((false, 0));
        if on && !subscribed && !within(self.store.limits().subscriptions_max, count + 1) {
            self.out.status(
                Some(tag),
                Status::No,
                Some(&Code::Limit),
                "Too many subscriptions",
            );
            return;
        }
        match self
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
        let _ = self.store.with_account(account, |a| {
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
        if message.len() > self.store.limits().message_size_max {
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
            self.no_such_mailbox(tag, Code::TryCreate);
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
        let messages_max = self.store.limits().messages_max;
        let date = date.unwrap_or_else(|| self.store.now());
        // Cluster mode: the replica takes its copy before a UID is taken
        // here, once the checks below would pass (a mailbox that does not
        // exist, too many messages or keywords are refused below).
        let will_take = self
            .store
            .with_account(&account, |a| {
                (messages_max == 0 || account_messages(a) < messages_max)
                    && a.mailboxes
                        .iter()
                        .find(|m| index::mailbox_name_eq(&m.name, name))
                        .is_some_and(|m| store::keywords_fit(m, &kws))
            })
            .unwrap_or(false);
        let mut _in_flight = None;
        if will_take {
            match self
                .store
                .replicate_append(&account, name, sys, &kws, date, message)
                .await
            {
                Ok(held) => _in_flight = held,
                Err(e) => return self.storage_failed(tag, &e),
            }
        }
        let alloc = self.store.with_account_counters(&account, |a| {
            if messages_max != 0 && account_messages(a) >= messages_max {
                return Err((Code::Limit, "Too many messages in this account"));
            }
            let m = a
                .mailboxes
                .iter_mut()
                .find(|m| index::mailbox_name_eq(&m.name, name))
                .ok_or((Code::TryCreate, "No such mailbox"))?;
            let new_kw = store::allocate_keywords(m, &kws)
                .ok_or((Code::Limit, "Too many keywords, or one too long"))?;
            let kwmask = logic::keyword_mask(&m.keywords, &kws);
            let uid = m.uidnext;
            m.uidnext += 1;
            let modseq = m.allocate_pending_modseq();
            let found = (m.id, m.uidvalidity, uid, modseq, kwmask, new_kw);
            Ok((found, a.allocate_email_id()))
        });
        let ((mbox, validity, uid, modseq, kwmask, new_kw), email_id) = match alloc {
            Ok(Ok(found)) => found,
            Ok(Err((code, text))) => {
                return self.out.status(Some(tag), Status::No, Some(&code), text)
            }
            Err(_) => return self.no_such_mailbox(tag, Code::TryCreate),
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
            internal_date: date,
            flags: sys,
            keywords: kwmask,
            modseq,
            email_id,
            body: message,
        });
        match self.store.commit(&ops).await {
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
        if n == 0 {
            return Ok(0);
        }
        let modseq = self.store.with_account_counters(&account, |a| {
            a.mailbox_mut(id).map(|m| m.allocate_pending_modseq())
        })?;
        let Some(modseq) = modseq else {
            return Err(StorageError::NoMailbox);
        };
        self.store
            .commit(&[Op::Expunge {
                account: &account,
                mailbox: id,
                uids,
                modseq,
            }])
            .await?;
        Ok(n)
    }

    async fn expunge_cmd(&mut self, tag: &[u8], set: Option<SequenceSet>) {
        if self.sel.as_ref().is_some_and(|s| s.read_only) {
            return self.read_only(tag);
        }
        match self.expunge_deleted(set.as_ref()).await {
            Ok(n) => {
                if self.sync_selected(true) {
                    self.ok_expunged(tag, n > 0, "EXPUNGE completed");
                }
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
        if !self.sync_selected(uid) {
            return None;
        }
        let sel = self.sel.as_ref().expect("selected");
        let store = &*self.store;
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
        let store = &*self.store;
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
        if !self.start_on_messages(tag, uid, set, false) {
            return;
        }
        let sel = self.sel.as_ref().expect("selected");
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
        let store = &*self.store;
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
                let changes = self.store.with_account_counters(&account, |a| {
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
                    if let Err(e) = self.store.commit(&ops).await {
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
        let store = &*self.store;
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
        if !self.start_on_messages(tag, uid, set, true) {
            return;
        }
        let sel = self.sel.as_ref().expect("selected");
        if unchanged_since.is_some() {
            // enable_condstore() with a mailbox selected (`sel` is borrowed).
            self.modseq_pending |= !self.condstore;
            self.condstore = true;
        }
        let idx = sel.view.resolve(set, uid);
        let uids: Vec<u32> = idx.iter().map(|&i| sel.view.uids[i]).collect();
        let id = sel.id;
        let account = self.account().to_string();
        let plan = self.store.with_account_counters(&account, |a| {
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
        if let Err(e) = self.store.commit(&store::ops(&account, id, &plan)).await {
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
        self.store.with_account(&account, |a| {
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
        if !self.start_on_messages(tag, uid, set, mv) {
            return;
        }
        let Some(dest) = self.stored_name(dest).filter(|d| self.exists(d)) else {
            self.no_such_mailbox(tag, Code::TryCreate);
            return;
        };
        let dest = &dest[..];
        let sel = self.sel.as_ref().expect("selected");
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
            self.store
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
        // A MOVE adds no message to the account.
        if !mv {
            let have = self
                .store
                .with_account(self.account(), account_messages)
                .unwrap_or(0);
            if !within(self.store.limits().messages_max, have + uids.len()) {
                self.out.status(
                    Some(tag),
                    Status::No,
                    Some(&Code::Limit),
                    "Too many messages in this account",
                );
                return;
            }
        }
        let Some(_quota) = self.hold_quota(tag, adding) else {
            return;
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
        self.store.commit(&transfer::ops(&account, &plan)).await?;
        let (from, to) = plan.copyuid();
        Ok(Some((plan.validity, from, to)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::imap::parse_command;
    use crate::session::imap::exercise::ready;
    use crate::session::imap::memory::{Failure, MemStore};

    const A: &str = "user@example.test";

    fn store() -> Rc<MemStore> {
        let s = MemStore::new();
        s.add_account(A);
        Rc::new(s)
    }

    /// Run one command line; the responses as text.
    fn run(m: &mut Machine<MemStore>, line: &str) -> (Next, String) {
        let bytes = format!("{line}\r\n");
        let cmd = parse_command(bytes.as_bytes()).expect("parses");
        let next = ready(m.execute(cmd, None));
        (next, String::from_utf8(m.out.take_bytes()).unwrap())
    }

    fn say(m: &mut Machine<MemStore>, line: &str) -> String {
        run(m, line).1
    }

    #[test]
    fn login_is_an_effect_and_needs_tls_or_permission() {
        let s = store();
        let mut m = Machine::new(s.clone(), None);
        let out = say(&mut m, "a LOGIN u p");
        assert!(out.starts_with("a NO [PRIVACYREQUIRED]"), "{out}");
        assert!(m.caps_preauth().contains(&"LOGINDISABLED"));
        m.tls = true;
        let (next, out) = run(&mut m, "b LOGIN u p");
        assert_eq!(
            next,
            Next::Login {
                tag: b"b".to_vec(),
                user: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(out, "");
        // AUTHENTICATE PLAIN without an initial response: challenge, then the line.
        let out = say(&mut m, "c AUTHENTICATE PLAIN");
        assert_eq!(out, "+ \r\n");
        let tag = m.sasl_tag.take().expect("waiting for the response");
        // "\0u\0p"
        let next = m.sasl_continue(tag, b"AHUAcA==\r\n");
        assert!(matches!(next, Next::Login { ref user, .. } if user == "u"));
        // Mailbox commands need a login.
        assert!(say(&mut m, "d SELECT INBOX").starts_with("d BAD"));
        m.logged_in(A.into(), b"e");
        assert!(m
            .out
            .take_bytes()
            .starts_with(b"e OK [CAPABILITY IMAP4rev1"));
        assert!(say(&mut m, "f SELECT INBOX").contains("f OK [READ-WRITE]"));
    }

    #[test]
    fn a_failed_commit_answers_no() {
        let s = store();
        let mut m = Machine::new(s.clone(), Some(A.into()));
        say(&mut m, "a SELECT INBOX");
        // No message appears, whichever way the commit failed.
        for how in [Failure::NoRoom, Failure::AfterWrite] {
            s.fail_next(how);
            let out = say(&mut m, "b APPEND INBOX {5+}\r\nhello");
            assert!(
                out.starts_with("b NO [") && !out.contains("EXISTS"),
                "{out}"
            );
            assert_eq!(
                s.with_account(A, |a| a.mailboxes[0].messages.len()),
                Some(0)
            );
        }
        let out = say(&mut m, "c APPEND INBOX {5+}\r\nhello");
        assert!(
            out.contains("* 1 EXISTS") && out.contains("c OK [APPENDUID"),
            "{out}"
        );
        // A STORE refused before it was written changes nothing.
        s.fail_next(Failure::NoRoom);
        let out = say(&mut m, "d STORE 1 +FLAGS (\\Flagged)");
        assert!(out.starts_with("d NO [OVERQUOTA]"), "{out}");
        let out = say(&mut m, "e FETCH 1 FLAGS");
        assert!(
            out.starts_with("* 1 FETCH (FLAGS (") && !out.contains("Flagged"),
            "{out}"
        );
        // One whose sync failed after it was written was applied, as the
        // store applies flag records when written: the client is told.
        s.fail_next(Failure::AfterWrite);
        let out = say(&mut m, "f STORE 1 +FLAGS (\\Flagged)");
        assert!(out.contains("f NO [SERVERBUG]"), "{out}");
        let out = say(&mut m, "g FETCH 1 FLAGS");
        assert!(out.contains("\\Flagged"), "{out}");
    }

    /// While one session's commit waits for its sync, another runs: it
    /// sees flag changes at once and the new message only once durable.
    #[test]
    fn a_commit_waiting_for_its_sync_shows_only_what_the_store_shows() {
        let s = store();
        let mut a = Machine::new(s.clone(), Some(A.into()));
        let mut b = Machine::new(s.clone(), Some(A.into()));
        say(&mut a, "a SELECT INBOX");
        say(&mut b, "b SELECT INBOX");
        s.yield_next();
        let bytes = b"a APPEND INBOX (\\Seen) {5+}\r\nhello\r\n".to_vec();
        let cmd = parse_command(&bytes).unwrap();
        let next = {
            let mut waiting = std::pin::pin!(a.execute(cmd, None));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
            let out = say(&mut b, "b NOOP");
            assert_eq!(out, "b OK NOOP completed\r\n");
            ready(waiting)
        };
        assert_eq!(next, Next::Continue);
        let out = String::from_utf8(a.out.take_bytes()).unwrap();
        assert!(
            out.contains("* 1 EXISTS") && out.contains("a OK [APPENDUID"),
            "{out}"
        );
        let out = say(&mut b, "b NOOP");
        assert!(out.starts_with("* 1 EXISTS"), "{out}");
    }

    #[test]
    fn expunges_wait_for_a_command_that_may_send_them() {
        let s = store();
        let mut a = Machine::new(s.clone(), Some(A.into()));
        let mut b = Machine::new(s.clone(), Some(A.into()));
        s.deliver(A, b"Subject: one\r\n\r\n1\r\n");
        s.deliver(A, b"Subject: two\r\n\r\n2\r\n");
        say(&mut a, "a SELECT INBOX");
        say(&mut b, "b SELECT INBOX");
        say(&mut b, "b STORE 1 +FLAGS.SILENT (\\Deleted)");
        let out = say(&mut b, "b EXPUNGE");
        assert!(out.contains("* 1 EXPUNGE"), "{out}");
        // RFC 3501 7.4.1: not during FETCH, STORE or SEARCH.
        let out = say(&mut a, "a FETCH 1:* (UID)");
        assert!(!out.contains("EXPUNGE"), "{out}");
        // Sequence numbers stay as the client knows them; the expunged
        // message is left out (RFC 2180 4.1.2).
        assert!(out.starts_with("* 2 FETCH (UID 2)"), "{out}");
        let out = say(&mut a, "a NOOP");
        assert!(out.starts_with("* 1 EXPUNGE\r\n"), "{out}");
        let out = say(&mut a, "a UID FETCH 1:* (UID)");
        assert!(out.starts_with("* 1 FETCH (UID 2)"), "{out}");
    }

    /// RFC 2180 3.3, as Dovecot does it: a session whose selected mailbox
    /// another session deleted is ended with BYE at its next command (or
    /// sync), and nothing of that command's answer follows the BYE.
    #[test]
    fn a_mailbox_deleted_under_a_session_ends_it_with_bye() {
        let s = store();
        let mut b = Machine::new(s.clone(), Some(A.into()));
        for cmd in [
            "FETCH 1 FLAGS",
            "SEARCH ALL",
            "STORE 1 +FLAGS (\\Seen)",
            "COPY 1 INBOX",
            "MOVE 1 INBOX",
            "EXPUNGE",
            "NOOP",
            "UID SORT (SUBJECT) UTF-8 ALL",
        ] {
            let mut a = Machine::new(s.clone(), Some(A.into()));
            say(&mut a, "a CREATE X");
            say(&mut a, "a APPEND X {5+}\r\nhello");
            say(&mut a, "a SELECT X");
            say(&mut b, "b DELETE X");
            let (next, out) = run(&mut a, &format!("t {cmd}"));
            assert_eq!(next, Next::Close, "{cmd}: {out}");
            assert_eq!(
                out, "* BYE Selected mailbox was deleted, have to disconnect.\r\n",
                "{cmd}"
            );
        }
        // During IDLE, the runtime's sync finds it the same way.
        let mut a = Machine::new(s.clone(), Some(A.into()));
        say(&mut a, "a CREATE X");
        say(&mut a, "a SELECT X");
        let (next, _) = run(&mut a, "a IDLE");
        assert_eq!(next, Next::Idle(b"a".to_vec()));
        say(&mut b, "b DELETE X");
        a.sync(true);
        assert!(a.take_bye());
        assert!(String::from_utf8(a.out.take_bytes())
            .unwrap()
            .starts_with("* BYE"));
    }

    #[test]
    fn limits_answer_no_limit() {
        let mut st = MemStore::new();
        st.limits.mailboxes_max = 8;
        st.limits.subscriptions_max = 1;
        st.add_account(A);
        let s = Rc::new(st);
        let mut m = Machine::new(s.clone(), Some(A.into()));
        assert!(say(&mut m, "a CREATE One").contains("a OK"));
        assert!(say(&mut m, "a CREATE Two/Three").starts_with("a NO [LIMIT]"));
        assert!(say(&mut m, "a CREATE Two").contains("a OK"));
        assert!(say(&mut m, "a SUBSCRIBE One").contains("a OK"));
        assert!(say(&mut m, "a SUBSCRIBE Two").starts_with("a NO [LIMIT]"));
        assert!(say(&mut m, "a SUBSCRIBE One").contains("a OK"));
        let out = say(&mut m, &format!("a SUBSCRIBE {}", "y".repeat(256)));
        assert!(out.starts_with("a NO"), "{out}");
        // A name subscribed before the bound can still be removed.
        let out = say(&mut m, &format!("a UNSUBSCRIBE {}", "y".repeat(256)));
        assert!(out.starts_with("a OK"), "{out}");
        // Keywords: at most 50 octets each.
        say(&mut m, "a SELECT INBOX");
        say(&mut m, "a APPEND INBOX {5+}\r\nhello");
        let out = say(&mut m, &format!("a STORE 1 +FLAGS ({})", "k".repeat(51)));
        assert!(out.starts_with("a NO [LIMIT]"), "{out}");
        let out = say(
            &mut m,
            &format!("a APPEND INBOX ({}) {{5+}}\r\nhello", "k".repeat(51)),
        );
        assert!(out.starts_with("a NO [LIMIT]"), "{out}");
        assert!(say(&mut m, &format!("a STORE 1 +FLAGS ({})", "k".repeat(50))).contains("a OK"));
        // A rename may not make an inferior's name longer than 255 octets.
        say(&mut m, "a DELETE One");
        say(&mut m, "a DELETE Two");
        say(&mut m, &format!("a CREATE P/{}", "c".repeat(240)));
        let out = say(&mut m, &format!("a RENAME P {}", "q".repeat(20)));
        assert!(out.starts_with("a NO [LIMIT]"), "{out}");
    }
}
