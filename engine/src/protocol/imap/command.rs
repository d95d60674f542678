//! The parsed form of a client command. Every string borrows from the framed
//! command buffer unless it was a quoted string containing escapes (then it is
//! an owned, unescaped copy), hence [`Str`] is a `Cow`.

use std::borrow::Cow;

use super::date::{Date, DateTime};
use super::seqset::{SequenceArg, SequenceSet};

/// An IMAP string value (atom, quoted or literal) with quoting removed.
pub type Str<'a> = Cow<'a, [u8]>;

/// One tagged client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    /// The client's tag, echoed in the tagged response.
    pub tag: &'a [u8],
    /// What the client asked for.
    pub body: CommandBody<'a>,
}

/// A mailbox name. RFC 3501 section 5.1: `INBOX` is case-insensitive; every
/// other name is compared byte for byte (modified UTF-7 is left as bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mailbox<'a> {
    /// `INBOX`, however it was spelled.
    Inbox,
    /// Any other name.
    Other(Str<'a>),
}

impl<'a> Mailbox<'a> {
    /// Classify a decoded name.
    pub fn from_name(name: Str<'a>) -> Self {
        if name.eq_ignore_ascii_case(b"INBOX") {
            Mailbox::Inbox
        } else {
            Mailbox::Other(name)
        }
    }

    /// The name, with INBOX in its canonical spelling.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Mailbox::Inbox => b"INBOX",
            Mailbox::Other(n) => n,
        }
    }
}

/// A message flag (RFC 3501 section 2.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flag<'a> {
    /// `\Seen`
    Seen,
    /// `\Answered`
    Answered,
    /// `\Flagged`
    Flagged,
    /// `\Deleted`
    Deleted,
    /// `\Draft`
    Draft,
    /// `\Recent` (server-set only; a client storing it gets BAD from the session).
    Recent,
    /// `\*` in PERMANENTFLAGS: clients may create keywords.
    MayCreate,
    /// Another system flag, the atom after the backslash.
    Extension(&'a [u8]),
    /// A keyword (atom without backslash).
    Keyword(&'a [u8]),
}

impl<'a> Flag<'a> {
    /// Parse `\Seen`, `$Forwarded`, `\Foo` ... (case-insensitive system flags).
    pub fn parse(atom: &'a [u8]) -> Option<Flag<'a>> {
        let Some(name) = atom.strip_prefix(b"\\") else {
            return (!atom.is_empty()).then_some(Flag::Keyword(atom));
        };
        let f = match name.to_ascii_uppercase().as_slice() {
            b"SEEN" => Flag::Seen,
            b"ANSWERED" => Flag::Answered,
            b"FLAGGED" => Flag::Flagged,
            b"DELETED" => Flag::Deleted,
            b"DRAFT" => Flag::Draft,
            b"RECENT" => Flag::Recent,
            b"*" => Flag::MayCreate,
            b"" => return None,
            _ => Flag::Extension(name),
        };
        Some(f)
    }

    /// Write the flag as it appears on the wire.
    pub fn write(&self, out: &mut Vec<u8>) {
        let s: &[u8] = match self {
            Flag::Seen => b"\\Seen",
            Flag::Answered => b"\\Answered",
            Flag::Flagged => b"\\Flagged",
            Flag::Deleted => b"\\Deleted",
            Flag::Draft => b"\\Draft",
            Flag::Recent => b"\\Recent",
            Flag::MayCreate => b"\\*",
            Flag::Extension(n) => {
                out.push(b'\\');
                n
            }
            Flag::Keyword(k) => k,
        };
        out.extend_from_slice(s);
    }
}

/// STATUS data items (RFC 3501 section 6.3.10, RFC 7162 HIGHESTMODSEQ,
/// RFC 8438 SIZE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusItem {
    /// `MESSAGES`
    Messages,
    /// `RECENT`
    Recent,
    /// `UIDNEXT`
    UidNext,
    /// `UIDVALIDITY`
    UidValidity,
    /// `UNSEEN`
    Unseen,
    /// `HIGHESTMODSEQ`
    HighestModSeq,
    /// `SIZE` (RFC 8438)
    Size,
    /// `DELETED`: messages with \Deleted (RFC 9208 section 4.3)
    Deleted,
    /// `DELETED-STORAGE`: octets of those messages (RFC 9208 section 4.3)
    DeletedStorage,
    /// `MAILBOXID` (RFC 8474 section 4.4); its value is the packed id of
    /// [`crate::protocol::imap::encode::mailbox_objectid`].
    MailboxId,
}

impl StatusItem {
    /// The item's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            StatusItem::Messages => "MESSAGES",
            StatusItem::Recent => "RECENT",
            StatusItem::UidNext => "UIDNEXT",
            StatusItem::UidValidity => "UIDVALIDITY",
            StatusItem::Unseen => "UNSEEN",
            StatusItem::HighestModSeq => "HIGHESTMODSEQ",
            StatusItem::Size => "SIZE",
            StatusItem::Deleted => "DELETED",
            StatusItem::DeletedStorage => "DELETED-STORAGE",
            StatusItem::MailboxId => "MAILBOXID",
        }
    }

    pub(crate) fn from_atom(a: &[u8]) -> Option<StatusItem> {
        Some(match a.to_ascii_uppercase().as_slice() {
            b"MESSAGES" => StatusItem::Messages,
            b"RECENT" => StatusItem::Recent,
            b"UIDNEXT" => StatusItem::UidNext,
            b"UIDVALIDITY" => StatusItem::UidValidity,
            b"UNSEEN" => StatusItem::Unseen,
            b"HIGHESTMODSEQ" => StatusItem::HighestModSeq,
            b"SIZE" => StatusItem::Size,
            b"DELETED" => StatusItem::Deleted,
            b"DELETED-STORAGE" => StatusItem::DeletedStorage,
            b"MAILBOXID" => StatusItem::MailboxId,
            _ => return None,
        })
    }
}

/// LIST selection options (RFC 5258 section 3.1, RFC 6154).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListSelect<'a> {
    /// `SUBSCRIBED`
    Subscribed,
    /// `REMOTE`
    Remote,
    /// `RECURSIVEMATCH`
    RecursiveMatch,
    /// `SPECIAL-USE`
    SpecialUse,
    /// Unknown option; RFC 5258 says the server answers BAD, the session decides.
    Other(&'a [u8]),
}

/// LIST return options (RFC 5258 section 3.2, RFC 5819, RFC 6154).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListReturn<'a> {
    /// `SUBSCRIBED`
    Subscribed,
    /// `CHILDREN`
    Children,
    /// `SPECIAL-USE`
    SpecialUse,
    /// `STATUS (items)` (RFC 5819)
    Status(Vec<StatusItem>),
    /// Unknown option.
    Other(&'a [u8]),
}

/// LIST, basic or extended (RFC 5258).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListCommand<'a> {
    /// Selection options (empty for basic LIST).
    pub selection: Vec<ListSelect<'a>>,
    /// The reference name (may be empty).
    pub reference: Str<'a>,
    /// One or more patterns (`%` and `*` wildcards kept as is).
    pub patterns: Vec<Str<'a>>,
    /// Return options (empty without `RETURN`).
    pub returns: Vec<ListReturn<'a>>,
    /// Whether any RFC 5258 syntax was used (selection options, a pattern
    /// list or RETURN): the reply then follows extended rules.
    pub extended: bool,
}

/// One SEARCH key (RFC 3501 section 6.4.4, RFC 7162 MODSEQ).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchKey<'a> {
    /// A sequence set of message numbers.
    Sequence(SequenceArg),
    /// `ALL`
    All,
    /// `ANSWERED`
    Answered,
    /// `BCC string`
    Bcc(Str<'a>),
    /// `BEFORE date` (internal date)
    Before(Date),
    /// `BODY string`
    Body(Str<'a>),
    /// `CC string`
    Cc(Str<'a>),
    /// `DELETED`
    Deleted,
    /// `DRAFT`
    Draft,
    /// `FLAGGED`
    Flagged,
    /// `FROM string`
    From(Str<'a>),
    /// `HEADER field-name string`
    Header(Str<'a>, Str<'a>),
    /// `KEYWORD flag`
    Keyword(&'a [u8]),
    /// `LARGER n`
    Larger(u64),
    /// `NEW` (RECENT UNSEEN)
    New,
    /// `NOT key`
    Not(Box<SearchKey<'a>>),
    /// `OLD` (NOT RECENT)
    Old,
    /// `ON date`
    On(Date),
    /// `OR key key`
    Or(Box<SearchKey<'a>>, Box<SearchKey<'a>>),
    /// `RECENT`
    Recent,
    /// `SEEN`
    Seen,
    /// `SENTBEFORE date` (Date: header)
    SentBefore(Date),
    /// `SENTON date`
    SentOn(Date),
    /// `SENTSINCE date`
    SentSince(Date),
    /// `SINCE date`
    Since(Date),
    /// `SMALLER n`
    Smaller(u64),
    /// `SUBJECT string`
    Subject(Str<'a>),
    /// `TEXT string`
    Text(Str<'a>),
    /// `TO string`
    To(Str<'a>),
    /// `UID set`
    Uid(SequenceArg),
    /// `UNANSWERED`
    Unanswered,
    /// `UNDELETED`
    Undeleted,
    /// `UNDRAFT`
    Undraft,
    /// `UNFLAGGED`
    Unflagged,
    /// `UNKEYWORD flag`
    Unkeyword(&'a [u8]),
    /// `UNSEEN`
    Unseen,
    /// A parenthesized list: all keys must match.
    And(Vec<SearchKey<'a>>),
    /// `MODSEQ [entry-name entry-type] n` (RFC 7162 section 3.1.5); the
    /// optional entry is kept raw: `(name, "priv"/"shared"/"all")`.
    ModSeq {
        /// Optional metadata entry and its type.
        entry: Option<(Str<'a>, &'a [u8])>,
        /// Messages with a mod-sequence at least this large match.
        modseq: u64,
    },
    /// `EMAILID objectid` (RFC 8474 section 6): the id as a number, None
    /// when it is not one this server gives (nothing matches).
    EmailId(Option<u64>),
    /// `THREADID objectid` (RFC 8474 section 6): threads have no id here
    /// (THREADID is NIL), so nothing matches.
    ThreadId,
}

/// ESEARCH return options (RFC 4731, RFC 5182 SAVE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SearchReturn {
    /// `MIN`
    Min,
    /// `MAX`
    Max,
    /// `ALL`
    All,
    /// `COUNT`
    Count,
    /// `SAVE`
    Save,
}

/// The arguments of SEARCH / UID SEARCH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Search<'a> {
    /// `CHARSET` argument, if given.
    pub charset: Option<Str<'a>>,
    /// The keys; a message must match all of them.
    pub keys: Vec<SearchKey<'a>>,
    /// `RETURN (...)`: `None` for a classic SEARCH (untagged `SEARCH`
    /// reply), `Some` for ESEARCH. An empty `RETURN ()` means `ALL`
    /// (RFC 4731 section 3.1) and is returned as `[All]`.
    pub returns: Option<Vec<SearchReturn>>,
}

/// A BODY[section] specifier (RFC 3501 section 6.4.5).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Section<'a> {
    /// Part numbers, e.g. `[1, 2, 3]` for `1.2.3`; empty for the whole message.
    pub part: Vec<u32>,
    /// What of that part.
    pub text: Option<SectionText<'a>>,
}

/// The textual part of a section specifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SectionText<'a> {
    /// `HEADER`
    Header,
    /// `HEADER.FIELDS (names)` or with `not`, `HEADER.FIELDS.NOT (names)`.
    HeaderFields {
        /// True for `HEADER.FIELDS.NOT`.
        not: bool,
        /// Field names as the client wrote them.
        fields: Vec<Str<'a>>,
    },
    /// `TEXT`
    Text,
    /// `MIME` (only after a part number).
    Mime,
}

/// `<start.length>` of a FETCH BODY[...] request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Partial {
    /// First octet.
    pub start: u32,
    /// Maximum number of octets (non-zero).
    pub len: u32,
}

/// FETCH data items. The macros ALL, FAST and FULL are expanded by the
/// parser (RFC 3501 section 6.4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchAttr<'a> {
    /// `ENVELOPE`
    Envelope,
    /// `FLAGS`
    Flags,
    /// `INTERNALDATE`
    InternalDate,
    /// `RFC822` (like BODY[], sets \Seen)
    Rfc822,
    /// `RFC822.HEADER` (like BODY.PEEK[HEADER])
    Rfc822Header,
    /// `RFC822.SIZE`
    Rfc822Size,
    /// `RFC822.TEXT` (like BODY[TEXT], sets \Seen)
    Rfc822Text,
    /// `BODY` (non-extensible BODYSTRUCTURE)
    Body,
    /// `BODYSTRUCTURE`
    BodyStructure,
    /// `UID`
    Uid,
    /// `MODSEQ` (RFC 7162)
    ModSeq,
    /// `EMAILID` (RFC 8474 section 5.1)
    EmailId,
    /// `THREADID` (RFC 8474 section 5.2)
    ThreadId,
    /// `BODY[section]<partial>` or `BODY.PEEK[...]`.
    BodySection {
        /// `.PEEK`: do not set \Seen.
        peek: bool,
        /// What to return.
        section: Section<'a>,
        /// Optional byte range.
        partial: Option<Partial>,
    },
    /// `BINARY[part]<partial>` or `BINARY.PEEK[...]` (RFC 3516, RFC 9051
    /// 6.4.5): a part's content with its transfer encoding undone. An empty
    /// part list is the whole message.
    Binary {
        /// `.PEEK`: do not set \Seen.
        peek: bool,
        /// Part numbers, as in `BODY[1.2]`.
        part: Vec<u32>,
        /// Optional byte range of the decoded content.
        partial: Option<Partial>,
    },
    /// `BINARY.SIZE[part]` (RFC 3516): the decoded content's size.
    BinarySize {
        /// Part numbers.
        part: Vec<u32>,
    },
}

/// How STORE changes flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// `FLAGS`
    Replace,
    /// `+FLAGS`
    Add,
    /// `-FLAGS`
    Remove,
}

/// The command and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandBody<'a> {
    /// `CAPABILITY`
    Capability,
    /// `NOOP`
    Noop,
    /// `LOGOUT`
    Logout,
    /// `STARTTLS`
    StartTls,
    /// `AUTHENTICATE mechanism [initial-response]` (RFC 4959 SASL-IR).
    Authenticate {
        /// Mechanism name as sent (compare case-insensitively).
        mechanism: &'a [u8],
        /// Base64 initial response, still encoded; `=` (an empty response)
        /// is returned as an empty slice.
        initial_response: Option<&'a [u8]>,
    },
    /// `LOGIN user password`
    Login {
        /// User name.
        username: Str<'a>,
        /// Password.
        password: Str<'a>,
    },
    /// `SELECT mailbox [(CONDSTORE)]`
    Select {
        /// Mailbox to open read-write.
        mailbox: Mailbox<'a>,
        /// RFC 7162 CONDSTORE parameter present.
        condstore: bool,
        /// RFC 7162 QRESYNC parameter.
        qresync: Option<Qresync>,
    },
    /// `EXAMINE mailbox [(CONDSTORE)]`
    Examine {
        /// Mailbox to open read-only.
        mailbox: Mailbox<'a>,
        /// RFC 7162 CONDSTORE parameter present.
        condstore: bool,
        /// RFC 7162 QRESYNC parameter.
        qresync: Option<Qresync>,
    },
    /// `CREATE mailbox [(USE (attrs))]` (RFC 6154 section 3)
    Create {
        /// New mailbox.
        mailbox: Mailbox<'a>,
        /// Special-use attributes such as `\Drafts`, as written.
        special_use: Vec<&'a [u8]>,
    },
    /// `DELETE mailbox`
    Delete {
        /// Mailbox to delete.
        mailbox: Mailbox<'a>,
    },
    /// `RENAME from to`
    Rename {
        /// Existing name.
        from: Mailbox<'a>,
        /// New name.
        to: Mailbox<'a>,
    },
    /// `SUBSCRIBE mailbox`
    Subscribe {
        /// Mailbox.
        mailbox: Mailbox<'a>,
    },
    /// `UNSUBSCRIBE mailbox`
    Unsubscribe {
        /// Mailbox.
        mailbox: Mailbox<'a>,
    },
    /// `LIST ...`
    List(ListCommand<'a>),
    /// `LSUB reference pattern`
    Lsub {
        /// Reference name.
        reference: Str<'a>,
        /// Pattern.
        pattern: Str<'a>,
    },
    /// `STATUS mailbox (items)`
    Status {
        /// Mailbox.
        mailbox: Mailbox<'a>,
        /// Requested items, in order.
        items: Vec<StatusItem>,
    },
    /// `APPEND mailbox [(flags)] [date-time] literal`
    Append {
        /// Destination.
        mailbox: Mailbox<'a>,
        /// Initial flags.
        flags: Vec<Flag<'a>>,
        /// Internal date to set, if given.
        date: Option<DateTime>,
        /// The message, borrowed from the command buffer.
        message: &'a [u8],
        /// Sent as a literal8 (RFC 3516 `~{n}`): NUL octets are allowed.
        binary: bool,
    },
    /// `CHECK`
    Check,
    /// `CLOSE`
    Close,
    /// `UNSELECT` (RFC 3691)
    Unselect,
    /// `EXPUNGE`
    Expunge,
    /// `UID EXPUNGE set` (RFC 4315)
    UidExpunge {
        /// UIDs to expunge (if \Deleted).
        set: SequenceArg,
    },
    /// `[UID] SEARCH ...`
    Search {
        /// UID SEARCH.
        uid: bool,
        /// Arguments.
        search: Search<'a>,
    },
    /// `[UID] SORT [RETURN (...)] (criteria) charset keys` (RFC 5256, 5267).
    Sort {
        /// UID SORT.
        uid: bool,
        /// Sort criteria, at least one.
        criteria: Vec<SortCriterion>,
        /// Charset (always given), keys and ESORT return options.
        search: Search<'a>,
    },
    /// `[UID] THREAD algorithm charset keys` (RFC 5256).
    Thread {
        /// UID THREAD.
        uid: bool,
        /// The threading algorithm.
        algorithm: Algorithm,
        /// Charset (always given) and keys.
        search: Search<'a>,
    },
    /// `[UID] FETCH set items [(CHANGEDSINCE n)]`. For UID FETCH the reply
    /// must include UID even if not asked (RFC 3501 section 6.4.8); the
    /// parser does not add it.
    Fetch {
        /// UID FETCH.
        uid: bool,
        /// Messages.
        set: SequenceArg,
        /// Items, macros expanded.
        attrs: Vec<FetchAttr<'a>>,
        /// RFC 7162 CHANGEDSINCE modifier.
        changed_since: Option<u64>,
        /// RFC 7162 3.2.6 VANISHED modifier (UID FETCH with CHANGEDSINCE only).
        vanished: bool,
    },
    /// `[UID] STORE set [(UNCHANGEDSINCE n)] [+-]FLAGS[.SILENT] flags`
    Store {
        /// UID STORE.
        uid: bool,
        /// Messages.
        set: SequenceArg,
        /// Replace, add or remove.
        mode: StoreMode,
        /// `.SILENT`: no untagged FETCH for this client.
        silent: bool,
        /// The flags.
        flags: Vec<Flag<'a>>,
        /// RFC 7162 UNCHANGEDSINCE modifier.
        unchanged_since: Option<u64>,
    },
    /// `[UID] COPY set mailbox`
    Copy {
        /// UID COPY.
        uid: bool,
        /// Messages.
        set: SequenceArg,
        /// Destination.
        mailbox: Mailbox<'a>,
    },
    /// `[UID] MOVE set mailbox` (RFC 6851)
    Move {
        /// UID MOVE.
        uid: bool,
        /// Messages.
        set: SequenceArg,
        /// Destination.
        mailbox: Mailbox<'a>,
    },
    /// `IDLE` (RFC 2177); the session then waits for `DONE`, see
    /// [`super::is_idle_done`].
    Idle,
    /// `COMPRESS mechanism` (RFC 4978)
    Compress {
        /// The algorithm; DEFLATE is the one defined.
        mechanism: &'a [u8],
    },
    /// `NAMESPACE` (RFC 2342)
    Namespace,
    /// `ID NIL` or `ID (field value ...)` (RFC 2971).
    Id(Option<Vec<(Str<'a>, Option<Str<'a>>)>>),
    /// `GETQUOTA root` (RFC 9208 section 4.2)
    GetQuota {
        /// The quota root.
        root: Str<'a>,
    },
    /// `GETQUOTAROOT mailbox` (RFC 9208 section 4.3)
    GetQuotaRoot {
        /// The mailbox.
        mailbox: Mailbox<'a>,
    },
    /// `SETQUOTA root (resource limit ...)` (RFC 9208 section 4.1); the
    /// arguments are checked for syntax only: limits are the
    /// administrator's (no QUOTASET).
    SetQuota,
    /// `ENABLE cap...` (RFC 5161)
    Enable(Vec<&'a [u8]>),
}

impl CommandBody<'_> {
    /// The command name, for logs and BAD texts.
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::Capability => "CAPABILITY",
            CommandBody::Noop => "NOOP",
            CommandBody::Logout => "LOGOUT",
            CommandBody::StartTls => "STARTTLS",
            CommandBody::Authenticate { .. } => "AUTHENTICATE",
            CommandBody::Login { .. } => "LOGIN",
            CommandBody::Select { .. } => "SELECT",
            CommandBody::Examine { .. } => "EXAMINE",
            CommandBody::Create { .. } => "CREATE",
            CommandBody::Delete { .. } => "DELETE",
            CommandBody::Rename { .. } => "RENAME",
            CommandBody::Subscribe { .. } => "SUBSCRIBE",
            CommandBody::Unsubscribe { .. } => "UNSUBSCRIBE",
            CommandBody::List(_) => "LIST",
            CommandBody::Lsub { .. } => "LSUB",
            CommandBody::Status { .. } => "STATUS",
            CommandBody::Append { .. } => "APPEND",
            CommandBody::Check => "CHECK",
            CommandBody::Close => "CLOSE",
            CommandBody::Unselect => "UNSELECT",
            CommandBody::Expunge => "EXPUNGE",
            CommandBody::UidExpunge { .. } => "UID EXPUNGE",
            CommandBody::Search { .. } => "SEARCH",
            CommandBody::Sort { .. } => "SORT",
            CommandBody::Thread { .. } => "THREAD",
            CommandBody::Fetch { .. } => "FETCH",
            CommandBody::Store { .. } => "STORE",
            CommandBody::Copy { .. } => "COPY",
            CommandBody::Move { .. } => "MOVE",
            CommandBody::Idle => "IDLE",
            CommandBody::Compress { .. } => "COMPRESS",
            CommandBody::Namespace => "NAMESPACE",
            CommandBody::Id(_) => "ID",
            CommandBody::Enable(_) => "ENABLE",
            CommandBody::GetQuota { .. } => "GETQUOTA",
            CommandBody::GetQuotaRoot { .. } => "GETQUOTAROOT",
            CommandBody::SetQuota => "SETQUOTA",
        }
    }
}

/// A sort key (RFC 5256 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Internal date.
    Arrival,
    /// addr-mailbox of the first Cc address.
    Cc,
    /// Sent date (Date: in UTC, the internal date when Date: is unusable).
    Date,
    /// addr-mailbox of the first From address.
    From,
    /// RFC822.SIZE.
    Size,
    /// Base subject (section 2.1).
    Subject,
    /// addr-mailbox of the first To address.
    To,
}

/// One sort criterion: a key, possibly reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortCriterion {
    /// REVERSE before the key.
    pub reverse: bool,
    /// The key.
    pub key: SortKey,
}

/// A threading algorithm (RFC 5256 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// THREAD=ORDEREDSUBJECT.
    OrderedSubject,
    /// THREAD=REFERENCES.
    References,
}

/// The QRESYNC parameter of SELECT/EXAMINE (RFC 7162 section 3.2.5):
/// what the client remembers of the mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qresync {
    /// The UIDVALIDITY the client's cache belongs to.
    pub uidvalidity: u32,
    /// The last HIGHESTMODSEQ the client saw.
    pub modseq: u64,
    /// UIDs the client knows (all up to the highest when absent).
    pub known_uids: Option<SequenceSet>,
    /// Pairs of sequence numbers and UIDs the client knows, to narrow the
    /// answer when the server cannot be exact.
    pub seq_match: Option<(SequenceSet, SequenceSet)>,
}
