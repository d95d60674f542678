//! Response encoders (RFC 3501 section 7, with the response codes of RFC 4315
//! UIDPLUS, RFC 5530, RFC 7162 and RFC 4469). Everything appends to a
//! caller-owned `Vec<u8>`; nothing here knows about sessions or mailboxes.
//!
//! Human-readable texts are sanitized: CR, LF and NUL become spaces so a text
//! can never end a response early or smuggle a second one.

use super::command::{Flag, Section, SectionText, StatusItem};
use super::date::write_date_time;
use super::parse::{is_astring_char, is_atom_char};
use super::seqset::{write_compressed, SequenceSet};

/// Strings longer than this are always sent as literals.
const QUOTED_MAX: usize = 1024;

/// Condition of a status response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `OK`
    Ok,
    /// `NO`
    No,
    /// `BAD`
    Bad,
    /// `PREAUTH` (greeting only)
    PreAuth,
    /// `BYE`
    Bye,
}

impl Status {
    fn name(self) -> &'static [u8] {
        match self {
            Status::Ok => b"OK",
            Status::No => b"NO",
            Status::Bad => b"BAD",
            Status::PreAuth => b"PREAUTH",
            Status::Bye => b"BYE",
        }
    }
}

/// A response code, written in brackets before the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code<'a> {
    /// `ALERT`
    Alert,
    /// `ALREADYEXISTS` (RFC 5530)
    AlreadyExists,
    /// `APPENDUID validity uid` (RFC 4315)
    AppendUid {
        /// UIDVALIDITY of the destination.
        validity: u32,
        /// UID given to the message.
        uid: u32,
    },
    /// `AUTHENTICATIONFAILED` (RFC 5530)
    AuthenticationFailed,
    /// `BADCHARSET` with the supported charsets (may be empty).
    BadCharset(&'a [&'a str]),
    /// `CANNOT` (RFC 5530)
    Cannot,
    /// `CAPABILITY ...`
    Capability(&'a [&'a str]),
    /// `CLOSED` (RFC 7162)
    Closed,
    /// `COPYUID validity source dest` (RFC 4315). Both lists in the same order;
    /// they are compressed to sequence sets preserving that order.
    CopyUid {
        /// UIDVALIDITY of the destination.
        validity: u32,
        /// Source UIDs.
        source: &'a [u32],
        /// Destination UIDs, pairwise with `source`.
        dest: &'a [u32],
    },
    /// `HIGHESTMODSEQ n` (RFC 7162)
    HighestModSeq(u64),
    /// `LIMIT` (RFC 5530)
    Limit,
    /// `MODIFIED set` (RFC 7162 STORE UNCHANGEDSINCE failures)
    Modified(&'a SequenceSet),
    /// `NOMODSEQ` (RFC 7162)
    NoModSeq,
    /// `NONEXISTENT` (RFC 5530)
    NonExistent,
    /// `OVERQUOTA` (RFC 5530)
    OverQuota,
    /// `PARSE`
    Parse,
    /// `PERMANENTFLAGS (...)`
    PermanentFlags(&'a [Flag<'a>]),
    /// `PRIVACYREQUIRED` (RFC 5530)
    PrivacyRequired,
    /// `READ-ONLY`
    ReadOnly,
    /// `READ-WRITE`
    ReadWrite,
    /// `SERVERBUG` (RFC 5530)
    ServerBug,
    /// `TOOBIG` (RFC 4469 / RFC 7888)
    TooBig,
    /// `TRYCREATE`
    TryCreate,
    /// `UIDNEXT n`
    UidNext(u32),
    /// `UIDVALIDITY n`
    UidValidity(u32),
    /// `UNAVAILABLE` (RFC 5530)
    Unavailable,
    /// `UNSEEN n`
    Unseen(u32),
    /// `MAILBOXID (id)` (RFC 8474 section 4.1), from [`mailbox_objectid`].
    MailboxId(u64),
    /// Any other atom code without arguments.
    Other(&'a str),
}

fn num(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Write a response code without the brackets.
pub fn write_code(out: &mut Vec<u8>, code: &Code<'_>) {
    let simple: &[u8] = match code {
        Code::Alert => b"ALERT",
        Code::AlreadyExists => b"ALREADYEXISTS",
        Code::AuthenticationFailed => b"AUTHENTICATIONFAILED",
        Code::Cannot => b"CANNOT",
        Code::Closed => b"CLOSED",
        Code::Limit => b"LIMIT",
        Code::NoModSeq => b"NOMODSEQ",
        Code::NonExistent => b"NONEXISTENT",
        Code::OverQuota => b"OVERQUOTA",
        Code::Parse => b"PARSE",
        Code::PrivacyRequired => b"PRIVACYREQUIRED",
        Code::ReadOnly => b"READ-ONLY",
        Code::ReadWrite => b"READ-WRITE",
        Code::ServerBug => b"SERVERBUG",
        Code::TooBig => b"TOOBIG",
        Code::TryCreate => b"TRYCREATE",
        Code::Unavailable => b"UNAVAILABLE",
        Code::Other(s) => s.as_bytes(),
        Code::MailboxId(id) => {
            out.extend_from_slice(b"MAILBOXID (");
            write_mailbox_objectid(out, *id);
            out.push(b')');
            return;
        }
        Code::AppendUid { validity, uid } => {
            out.extend_from_slice(b"APPENDUID ");
            num(out, validity);
            out.push(b' ');
            num(out, uid);
            return;
        }
        Code::BadCharset(list) => {
            out.extend_from_slice(b"BADCHARSET");
            if !list.is_empty() {
                out.extend_from_slice(b" (");
                for (i, cs) in list.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    write_astring(out, cs.as_bytes());
                }
                out.push(b')');
            }
            return;
        }
        Code::Capability(caps) => {
            out.extend_from_slice(b"CAPABILITY");
            for c in *caps {
                out.push(b' ');
                out.extend_from_slice(c.as_bytes());
            }
            return;
        }
        Code::CopyUid {
            validity,
            source,
            dest,
        } => {
            out.extend_from_slice(b"COPYUID ");
            num(out, validity);
            out.push(b' ');
            write_compressed(source, out);
            out.push(b' ');
            write_compressed(dest, out);
            return;
        }
        Code::HighestModSeq(n) => {
            out.extend_from_slice(b"HIGHESTMODSEQ ");
            num(out, n);
            return;
        }
        Code::Modified(set) => {
            out.extend_from_slice(b"MODIFIED ");
            set.write(out);
            return;
        }
        Code::PermanentFlags(flags) => {
            out.extend_from_slice(b"PERMANENTFLAGS ");
            write_flag_list(out, flags);
            return;
        }
        Code::UidNext(n) | Code::UidValidity(n) | Code::Unseen(n) => {
            out.extend_from_slice(match code {
                Code::UidNext(_) => b"UIDNEXT ",
                Code::UidValidity(_) => b"UIDVALIDITY ",
                _ => b"UNSEEN ",
            });
            num(out, n);
            return;
        }
    };
    out.extend_from_slice(simple);
}

fn write_text(out: &mut Vec<u8>, text: &str) {
    let text = if text.is_empty() { "done" } else { text };
    out.extend(text.bytes().map(|b| {
        if matches!(b, b'\r' | b'\n' | 0) {
            b' '
        } else {
            b
        }
    }));
}

/// `tag SP status SP [code] text CRLF`; with `tag == None`, an untagged
/// (`*`) status response.
pub fn write_status(
    out: &mut Vec<u8>,
    tag: Option<&[u8]>,
    status: Status,
    code: Option<&Code<'_>>,
    text: &str,
) {
    out.extend_from_slice(tag.unwrap_or(b"*"));
    out.push(b' ');
    out.extend_from_slice(status.name());
    out.push(b' ');
    if let Some(code) = code {
        out.push(b'[');
        write_code(out, code);
        out.extend_from_slice(b"] ");
    }
    write_text(out, text);
    out.extend_from_slice(b"\r\n");
}

/// `+ text CRLF`: continuation request (literal or IDLE).
pub fn write_continuation(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+ ");
    write_text(out, text);
    out.extend_from_slice(b"\r\n");
}

/// `+ base64 CRLF`: a SASL challenge, already base64-encoded (may be empty).
pub fn write_sasl_challenge(out: &mut Vec<u8>, base64: &[u8]) {
    out.extend_from_slice(b"+ ");
    out.extend(
        base64
            .iter()
            .copied()
            .filter(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')),
    );
    out.extend_from_slice(b"\r\n");
}

/// Can `s` be sent as a quoted string? (RFC 3501 `QUOTED-CHAR`: 7-bit,
/// no NUL, CR or LF.)
fn quotable(s: &[u8]) -> bool {
    s.len() <= QUOTED_MAX
        && s.iter()
            .all(|&b| b != 0 && b < 0x80 && b != b'\r' && b != b'\n')
}

/// Write `s` as a quoted string; the caller has checked it is quotable.
fn write_quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Write a synchronizing literal `{n}CRLF` followed by the data.
///
/// RFC 3501 section 4.3: a literal (without BINARY, RFC 3516) must not
/// contain NUL. The server refuses NUL in new mail, but a message stored
/// before that rule, or imported, may hold some: each NUL is sent as a
/// space, which keeps the literal's length (and every offset a client
/// computed from RFC822.SIZE or a partial fetch) unchanged.
pub fn write_literal(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'{');
    num(out, s.len());
    out.extend_from_slice(b"}\r\n");
    let start = out.len();
    out.extend_from_slice(s);
    if memchr::memchr(0, s).is_some() {
        for b in &mut out[start..] {
            if *b == 0 {
                *b = b' ';
            }
        }
    }
}

/// Write a literal8, `~{n}CRLF` and the data as it is (RFC 3516 section
/// 4.2): BINARY content that holds NUL.
pub fn write_literal8(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(b"~{");
    num(out, s.len());
    out.extend_from_slice(b"}\r\n");
    out.extend_from_slice(s);
}

/// `string`: quoted when every byte allows it, a literal otherwise.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    if quotable(s) {
        write_quoted(out, s);
    } else {
        write_literal(out, s);
    }
}

/// `astring`: a bare atom when possible (never for `NIL`), else a string.
pub fn write_astring(out: &mut Vec<u8>, s: &[u8]) {
    if !s.is_empty() && s.iter().all(|&b| is_astring_char(b)) && !s.eq_ignore_ascii_case(b"NIL") {
        out.extend_from_slice(s);
    } else {
        write_string(out, s);
    }
}

/// A mailbox name: an atom, or a quoted string, which may carry UTF-8
/// (RFC 9051 section 9, `QUOTED-CHAR`; only an IMAP4rev2 session is shown
/// names that are not ASCII), or a literal.
pub fn write_mailbox(out: &mut Vec<u8>, s: &[u8]) {
    let utf8_quotable = s.len() <= QUOTED_MAX
        && !s.is_ascii()
        && std::str::from_utf8(s).is_ok()
        && !s.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n');
    if utf8_quotable {
        write_quoted(out, s);
    } else {
        write_astring(out, s);
    }
}

/// `nstring`: `NIL` or a string.
pub fn write_nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        None => out.extend_from_slice(b"NIL"),
        Some(s) => write_string(out, s),
    }
}

/// `(\Seen $Label)`.
pub fn write_flag_list(out: &mut Vec<u8>, flags: &[Flag<'_>]) {
    out.push(b'(');
    for (i, f) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        f.write(out);
    }
    out.push(b')');
}

/// `* CAPABILITY IMAP4rev1 ...`
pub fn write_capability(out: &mut Vec<u8>, caps: &[&str]) {
    out.extend_from_slice(b"* ");
    write_code(out, &Code::Capability(caps));
    out.extend_from_slice(b"\r\n");
}

/// `* FLAGS (...)`
pub fn write_flags(out: &mut Vec<u8>, flags: &[Flag<'_>]) {
    out.extend_from_slice(b"* FLAGS ");
    write_flag_list(out, flags);
    out.extend_from_slice(b"\r\n");
}

fn write_number_response(out: &mut Vec<u8>, n: u32, what: &[u8]) {
    out.extend_from_slice(b"* ");
    num(out, n);
    out.push(b' ');
    out.extend_from_slice(what);
    out.extend_from_slice(b"\r\n");
}

/// `* n EXISTS`
pub fn write_exists(out: &mut Vec<u8>, n: u32) {
    write_number_response(out, n, b"EXISTS");
}

/// `* n RECENT`
pub fn write_recent(out: &mut Vec<u8>, n: u32) {
    write_number_response(out, n, b"RECENT");
}

/// `* n EXPUNGE`
pub fn write_expunge(out: &mut Vec<u8>, seq: u32) {
    write_number_response(out, seq, b"EXPUNGE");
}

/// `* LIST (attrs) "/" name` (or LSUB). `delimiter == None` writes NIL.
/// Attributes are written as given (e.g. `\HasNoChildren`, `\Sent`).
pub fn write_list(
    out: &mut Vec<u8>,
    lsub: bool,
    attrs: &[&str],
    delimiter: Option<u8>,
    name: &[u8],
) {
    write_list_head(out, lsub, attrs, delimiter, name);
    out.extend_from_slice(b"\r\n");
}

/// `* LIST (attrs) "/" name ("CHILDINFO" (criteria))` (RFC 5258 3.5): the
/// selection criteria some descendant of the mailbox matches; no extended
/// data when `childinfo` is empty.
pub fn write_list_extended(
    out: &mut Vec<u8>,
    attrs: &[&str],
    delimiter: Option<u8>,
    name: &[u8],
    childinfo: &[&str],
) {
    write_list_head(out, false, attrs, delimiter, name);
    if !childinfo.is_empty() {
        out.extend_from_slice(b" (\"CHILDINFO\" (");
        for (i, c) in childinfo.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            write_quoted(out, c.as_bytes());
        }
        out.extend_from_slice(b"))");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_list_head(
    out: &mut Vec<u8>,
    lsub: bool,
    attrs: &[&str],
    delimiter: Option<u8>,
    name: &[u8],
) {
    out.extend_from_slice(if lsub { b"* LSUB (" } else { b"* LIST (" });
    for (i, a) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(a.as_bytes());
    }
    out.extend_from_slice(b") ");
    match delimiter {
        Some(d) => write_quoted(out, &[d]),
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    write_mailbox(out, name);
}

/// A mailbox's MAILBOXID (RFC 8474 section 4) as a number: its UIDVALIDITY
/// (never given twice in an account) and its internal id, neither of which
/// a RENAME changes. Written as `F` and 16 hex digits.
pub fn mailbox_objectid(uidvalidity: u32, id: u32) -> u64 {
    u64::from(uidvalidity) << 32 | u64::from(id)
}

fn write_mailbox_objectid(out: &mut Vec<u8>, id: u64) {
    out.extend_from_slice(format!("F{id:016x}").as_bytes());
}

/// A message's EMAILID (RFC 8474 section 5.1): `M` and its number in hex.
pub fn write_email_objectid(out: &mut Vec<u8>, id: u64) {
    out.extend_from_slice(format!("M{id:x}").as_bytes());
}

/// The number of an EMAILID this server gives; None for any other objectid.
pub fn parse_email_objectid(id: &[u8]) -> Option<u64> {
    let hex = id.strip_prefix(b"M")?;
    // Object ids are case-sensitive (RFC 8474 section 7): lower-case hex only.
    let digit = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if hex.is_empty() || hex.len() > 16 || hex[0] == b'0' || !hex.iter().all(digit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// `* STATUS name (ITEM n ...)`
pub fn write_status_data(out: &mut Vec<u8>, mailbox: &[u8], items: &[(StatusItem, u64)]) {
    out.extend_from_slice(b"* STATUS ");
    write_mailbox(out, mailbox);
    out.extend_from_slice(b" (");
    for (i, (item, n)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(item.name().as_bytes());
        out.push(b' ');
        if *item == StatusItem::MailboxId {
            out.push(b'(');
            write_mailbox_objectid(out, *n);
            out.push(b')');
        } else {
            num(out, n);
        }
    }
    out.extend_from_slice(b")\r\n");
}

/// `* SEARCH n...` with an optional RFC 7162 `(MODSEQ n)`.
pub fn write_search(out: &mut Vec<u8>, ids: &[u32], modseq: Option<u64>) {
    write_id_list(out, b"* SEARCH", ids, modseq);
}

/// `* SORT n...` in the given order (RFC 5256 section 4), with `(MODSEQ
/// n)` after a MODSEQ search key (RFC 7162 section 3.1.5).
pub fn write_sort(out: &mut Vec<u8>, ids: &[u32], modseq: Option<u64>) {
    write_id_list(out, b"* SORT", ids, modseq);
}

fn write_id_list(out: &mut Vec<u8>, head: &[u8], ids: &[u32], modseq: Option<u64>) {
    out.extend_from_slice(head);
    for id in ids {
        out.push(b' ');
        num(out, id);
    }
    if let Some(m) = modseq {
        out.extend_from_slice(b" (MODSEQ ");
        num(out, m);
        out.push(b')');
    }
    out.extend_from_slice(b"\r\n");
}

/// The data of an ESEARCH response (RFC 4731); `None` fields are omitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Esearch<'a> {
    /// `MIN n`
    pub min: Option<u32>,
    /// `MAX n`
    pub max: Option<u32>,
    /// `ALL set` (written compressed; omitted when empty, per RFC 4731)
    pub all: Option<&'a [u32]>,
    /// `COUNT n`
    pub count: Option<u32>,
    /// `MODSEQ n` (RFC 7162 section 3.1.5)
    pub modseq: Option<u64>,
    /// ALL is a sort result (RFC 5267 section 3.1): written in the given
    /// order, ranges only over ascending runs.
    pub in_order: bool,
}

/// `* ESEARCH (TAG "tag") [UID] ...`
pub fn write_esearch(out: &mut Vec<u8>, tag: &[u8], uid: bool, data: &Esearch<'_>) {
    out.extend_from_slice(b"* ESEARCH (TAG ");
    write_string(out, tag);
    out.push(b')');
    if uid {
        out.extend_from_slice(b" UID");
    }
    let mut kv = |k: &[u8], v: u64| {
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b' ');
        num(out, v);
    };
    if let Some(n) = data.min {
        kv(b"MIN", n.into());
    }
    if let Some(n) = data.max {
        kv(b"MAX", n.into());
    }
    if let Some(all) = data.all.filter(|a| !a.is_empty()) {
        out.extend_from_slice(b" ALL ");
        if data.in_order {
            // Ranges over ascending runs only, in the given order.
            write_compressed(all, out);
        } else {
            let mut sorted = all.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            write_compressed(&sorted, out);
        }
    }
    if let Some(n) = data.count {
        out.extend_from_slice(b" COUNT ");
        num(out, n);
    }
    if let Some(n) = data.modseq {
        out.extend_from_slice(b" MODSEQ ");
        num(out, n);
    }
    out.extend_from_slice(b"\r\n");
}

/// `* NAMESPACE (("prefix" "delim")) NIL NIL`: a single personal namespace.
pub fn write_namespace(out: &mut Vec<u8>, prefix: &[u8], delimiter: u8) {
    out.extend_from_slice(b"* NAMESPACE ((");
    write_string(out, prefix);
    out.push(b' ');
    write_quoted(out, &[delimiter]);
    out.extend_from_slice(b")) NIL NIL\r\n");
}

/// `* VANISHED [(EARLIER)] uid-set` (RFC 7162 section 3.2.10), from sorted,
/// merged ranges; nothing when they are empty.
pub fn write_vanished(out: &mut Vec<u8>, earlier: bool, ranges: &[(u32, u32)]) {
    if ranges.is_empty() {
        return;
    }
    out.extend_from_slice(if earlier {
        b"* VANISHED (EARLIER) "
    } else {
        b"* VANISHED "
    });
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        num(out, lo);
        if hi > lo {
            out.push(b':');
            num(out, hi);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `* QUOTAROOT mailbox root...` (RFC 9208 section 5.2)
pub fn write_quotaroot(out: &mut Vec<u8>, mailbox: &[u8], roots: &[&[u8]]) {
    out.extend_from_slice(b"* QUOTAROOT ");
    write_mailbox(out, mailbox);
    for r in roots {
        out.push(b' ');
        write_string(out, r);
    }
    out.extend_from_slice(b"\r\n");
}

/// `* QUOTA root (STORAGE used limit)`, in units of 1024 octets (RFC 9208
/// sections 5.1 and 5.3).
pub fn write_quota_storage(out: &mut Vec<u8>, root: &[u8], used_kib: u64, limit_kib: u64) {
    out.extend_from_slice(b"* QUOTA ");
    write_string(out, root);
    out.extend_from_slice(b" (STORAGE ");
    num(out, used_kib);
    out.push(b' ');
    num(out, limit_kib);
    out.extend_from_slice(b")\r\n");
}

/// `* ENABLED cap...` (RFC 5161)
pub fn write_enabled(out: &mut Vec<u8>, caps: &[&[u8]]) {
    out.extend_from_slice(b"* ENABLED");
    for c in caps {
        out.push(b' ');
        out.extend(c.iter().copied().filter(|&b| is_atom_char(b)));
    }
    out.extend_from_slice(b"\r\n");
}

/// `* ID ("name" "ringmail" ...)` or `* ID NIL` (RFC 2971).
pub fn write_id(out: &mut Vec<u8>, params: Option<&[(&str, Option<&str>)]>) {
    out.extend_from_slice(b"* ID ");
    match params {
        None => out.extend_from_slice(b"NIL"),
        Some(params) => {
            out.push(b'(');
            for (i, (k, v)) in params.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                write_string(out, k.as_bytes());
                out.push(b' ');
                write_nstring(out, v.map(str::as_bytes));
            }
            out.push(b')');
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Builder for one `* n FETCH (...)` response. Items are separated
/// automatically; [`FetchWriter::finish`] closes the response.
pub struct FetchWriter<'o> {
    out: &'o mut Vec<u8>,
    items: usize,
}

impl<'o> FetchWriter<'o> {
    /// Start `* seq FETCH (`.
    pub fn new(out: &'o mut Vec<u8>, seq: u32) -> Self {
        out.extend_from_slice(b"* ");
        num(out, seq);
        out.extend_from_slice(b" FETCH (");
        FetchWriter { out, items: 0 }
    }

    /// Start an item: writes `NAME ` and returns the buffer for its value
    /// (e.g. for [`crate::mime::write_envelope`]).
    pub fn item(&mut self, name: &str) -> &mut Vec<u8> {
        if self.items > 0 {
            self.out.push(b' ');
        }
        self.items += 1;
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b' ');
        self.out
    }

    /// `UID n`
    pub fn uid(&mut self, uid: u32) {
        num(self.item("UID"), uid);
    }

    /// `FLAGS (...)`
    pub fn flags(&mut self, flags: &[Flag<'_>]) {
        write_flag_list(self.item("FLAGS"), flags);
    }

    /// `INTERNALDATE "dd-Mon-yyyy hh:mm:ss +zzzz"`
    pub fn internal_date(&mut self, unix_secs: i64, zone_minutes: i16) {
        write_date_time(self.item("INTERNALDATE"), unix_secs, zone_minutes);
    }

    /// `RFC822.SIZE n`
    pub fn rfc822_size(&mut self, n: u64) {
        num(self.item("RFC822.SIZE"), n);
    }

    /// `MODSEQ (n)` (RFC 7162)
    pub fn modseq(&mut self, n: u64) {
        let out = self.item("MODSEQ");
        out.push(b'(');
        num(out, n);
        out.push(b')');
    }

    /// `RFC822`, `RFC822.HEADER` or `RFC822.TEXT` followed by a literal.
    pub fn literal_item(&mut self, name: &str, data: &[u8]) {
        write_literal(self.item(name), data);
    }

    /// `BODY[section]<origin> data`, with `data == None` written as `NIL`.
    /// `origin` is the start of a partial fetch (RFC 3501 section 7.4.2).
    pub fn body_section(
        &mut self,
        section: &Section<'_>,
        origin: Option<u32>,
        data: Option<&[u8]>,
    ) {
        if self.items > 0 {
            self.out.push(b' ');
        }
        self.items += 1;
        self.out.extend_from_slice(b"BODY[");
        section.write(self.out);
        self.out.push(b']');
        if let Some(o) = origin {
            self.out.push(b'<');
            num(self.out, o);
            self.out.push(b'>');
        }
        self.out.push(b' ');
        match data {
            Some(d) => write_literal(self.out, d),
            None => self.out.extend_from_slice(b"NIL"),
        }
    }

    /// Close the response: `)CRLF`.
    pub fn finish(self) {
        self.out.extend_from_slice(b")\r\n");
    }
}

// Written here, not in `command`, so that `command` (the types) imports
// neither `parse` nor `encode`: parse -> command <- encode.
impl Section<'_> {
    /// Write the specifier between the brackets, e.g. `1.2.HEADER.FIELDS (TO)`,
    /// as it must be echoed in the FETCH response.
    pub fn write(&self, out: &mut Vec<u8>) {
        for (i, p) in self.part.iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            out.extend_from_slice(p.to_string().as_bytes());
        }
        let Some(text) = &self.text else { return };
        if !self.part.is_empty() {
            out.push(b'.');
        }
        match text {
            SectionText::Header => out.extend_from_slice(b"HEADER"),
            SectionText::Text => out.extend_from_slice(b"TEXT"),
            SectionText::Mime => out.extend_from_slice(b"MIME"),
            SectionText::HeaderFields { not, fields } => {
                out.extend_from_slice(if *not {
                    b"HEADER.FIELDS.NOT ("
                } else {
                    b"HEADER.FIELDS ("
                });
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    write_astring(out, f);
                }
                out.push(b')');
            }
        }
    }
}
