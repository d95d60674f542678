//! Parser for one framed command (RFC 3501 section 9 grammar, with the
//! extensions listed in the module docs). Input is exactly what
//! [`super::Framer`] delimited: lines, CRLF (or bare LF) and literal data.
//!
//! The parser is total: every input yields a [`Command`] or a [`ParseError`],
//! never a panic, and nesting (parenthesized search keys, NOT/OR chains) is
//! bounded by [`MAX_DEPTH`] so a hostile command cannot exhaust the stack.

use std::borrow::Cow;

use super::command::*;
use super::date::{Date, DateTime};
use super::seqset::{SequenceArg, SequenceSet};

/// Deepest nesting of search keys (parentheses, NOT, OR) accepted.
pub const MAX_DEPTH: u32 = 32;
/// Most part numbers in one section specifier (`1.2.3...`).
const MAX_SECTION_PARTS: usize = 64;

/// A command that could not be parsed. Answer `<tag> BAD <reason>`, with `*`
/// as the tag when none could be extracted ([`ParseError::tag_or_star`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError<'a> {
    /// The command's tag, if it was well formed.
    pub tag: Option<&'a [u8]>,
    /// Human-readable reason, safe to put in a response text.
    pub reason: &'static str,
}

impl ParseError<'_> {
    /// The tag to answer with.
    pub fn tag_or_star(&self) -> &[u8] {
        self.tag.unwrap_or(b"*")
    }
}

impl std::fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for ParseError<'_> {}

type R<T> = Result<T, &'static str>;

/// `ATOM-CHAR`: any CHAR except atom-specials.
pub(crate) fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

/// `ASTRING-CHAR`: ATOM-CHAR or `]`.
pub(crate) fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// Tag characters: ASTRING-CHAR except `+`.
pub(crate) fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

fn is_list_char(b: u8) -> bool {
    is_atom_char(b) || matches!(b, b'%' | b'*' | b']')
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

struct Cur<'a> {
    b: &'a [u8],
    p: usize,
    depth: u32,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.p).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.b.get(self.p..).unwrap_or_default()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.p += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, msg: &'static str) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(msg)
        }
    }

    fn sp(&mut self) -> R<()> {
        self.expect(b' ', "expected a space")
    }

    fn open(&mut self) -> R<()> {
        self.expect(b'(', "expected '('")
    }

    fn close(&mut self) -> R<()> {
        self.expect(b')', "expected ')'")
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let rest = self.rest();
        let n = rest.iter().position(|&b| !f(b)).unwrap_or(rest.len());
        self.p += n;
        &rest[..n]
    }

    fn atom(&mut self) -> R<&'a [u8]> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            Err("expected an atom")
        } else {
            Ok(a)
        }
    }

    /// Case-insensitive keyword followed by a non-atom character.
    fn keyword(&mut self, word: &[u8]) -> bool {
        let rest = self.rest();
        if rest.len() >= word.len()
            && rest[..word.len()].eq_ignore_ascii_case(word)
            && !rest.get(word.len()).is_some_and(|&b| is_astring_char(b))
        {
            self.p += word.len();
            true
        } else {
            false
        }
    }

    fn end(&self) -> R<()> {
        match self.rest() {
            b"" | b"\n" | b"\r\n" => Ok(()),
            _ => Err("unexpected characters at end of command"),
        }
    }

    fn number64(&mut self) -> R<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return Err("expected a number");
        }
        Ok(d.iter().fold(0u64, |n, &c| n * 10 + u64::from(c - b'0')))
    }

    fn number(&mut self) -> R<u32> {
        u32::try_from(self.number64()?).map_err(|_| "number too large")
    }

    fn nz_number(&mut self) -> R<u32> {
        match self.number()? {
            0 => Err("expected a non-zero number"),
            n => Ok(n),
        }
    }

    fn quoted(&mut self) -> R<Str<'a>> {
        self.expect(b'"', "expected a quoted string")?;
        let start = self.p;
        let mut owned: Option<Vec<u8>> = None;
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string"),
                Some(b'"') => {
                    let s = &self.b[start..self.p];
                    self.p += 1;
                    return Ok(match owned {
                        Some(v) => Cow::Owned(v),
                        None => Cow::Borrowed(s),
                    });
                }
                Some(b'\\') => match self.b.get(self.p + 1) {
                    Some(&c @ (b'"' | b'\\')) => {
                        owned
                            .get_or_insert_with(|| self.b[start..self.p].to_vec())
                            .push(c);
                        self.p += 2;
                    }
                    _ => return Err("invalid escape in quoted string"),
                },
                Some(b'\r' | b'\n' | 0) => return Err("invalid character in quoted string"),
                Some(c) => {
                    if let Some(v) = owned.as_mut() {
                        v.push(c);
                    }
                    self.p += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> R<&'a [u8]> {
        self.expect(b'{', "expected a literal")?;
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() || d.len() > 10 {
            return Err("invalid literal length");
        }
        let n = d.iter().fold(0u64, |n, &c| n * 10 + u64::from(c - b'0'));
        self.eat(b'+');
        self.expect(b'}', "invalid literal")?;
        self.eat(b'\r');
        self.expect(b'\n', "literal must end its line")?;
        let n = usize::try_from(n).map_err(|_| "literal too large")?;
        let end = self
            .p
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("literal data missing")?;
        let data = &self.b[self.p..end];
        self.p = end;
        Ok(data)
    }

    /// The entry name of a MODSEQ search key (RFC 7162 3.1.5), e.g.
    /// `"/flags/\\Seen"`: a string, except that a backslash before
    /// anything but `"` or `\` is kept as written: clients often send the
    /// flag's backslash unescaped (`"/flags/\Seen"`), and no other
    /// reading of it makes sense.
    fn entry_name(&mut self) -> R<Str<'a>> {
        if self.peek() != Some(b'"') {
            return self.string();
        }
        self.p += 1;
        let mut v = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string"),
                Some(b'"') => {
                    self.p += 1;
                    return Ok(Cow::Owned(v));
                }
                Some(b'\\') => match self.b.get(self.p + 1) {
                    Some(&c @ (b'"' | b'\\')) => {
                        v.push(c);
                        self.p += 2;
                    }
                    _ => {
                        v.push(b'\\');
                        self.p += 1;
                    }
                },
                Some(b'\r' | b'\n' | 0) => return Err("invalid character in quoted string"),
                Some(c) => {
                    v.push(c);
                    self.p += 1;
                }
            }
        }
    }

    fn string(&mut self) -> R<Str<'a>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal().map(Cow::Borrowed),
            _ => Err("expected a string"),
        }
    }

    fn astring(&mut self) -> R<Str<'a>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() {
                    Err("expected a string")
                } else {
                    Ok(Cow::Borrowed(a))
                }
            }
        }
    }

    fn nstring(&mut self) -> R<Option<Str<'a>>> {
        if self.keyword(b"NIL") {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    fn mailbox(&mut self) -> R<Mailbox<'a>> {
        self.astring().map(Mailbox::from_name)
    }

    fn list_mailbox(&mut self) -> R<Str<'a>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    Err("expected a mailbox pattern")
                } else {
                    Ok(Cow::Borrowed(a))
                }
            }
        }
    }

    fn seq_set(&mut self) -> R<SequenceArg> {
        if self.eat(b'$') {
            return Ok(SequenceArg::Saved);
        }
        let s = self.take_while(|b| b.is_ascii_digit() || matches!(b, b'*' | b':' | b','));
        SequenceSet::parse(s)
            .map(SequenceArg::Set)
            .ok_or("invalid sequence set")
    }

    fn flag(&mut self) -> R<Flag<'a>> {
        let start = self.p;
        // `\*` (PERMANENTFLAGS) is the one flag that is not an atom.
        let may_create = self.eat(b'\\') && self.eat(b'*');
        if !may_create {
            self.atom()?;
        }
        Flag::parse(&self.b[start..self.p]).ok_or("invalid flag")
    }

    fn flag_list(&mut self) -> R<Vec<Flag<'a>>> {
        self.open()?;
        let mut v = Vec::new();
        if self.eat(b')') {
            return Ok(v);
        }
        loop {
            v.push(self.flag()?);
            if self.eat(b')') {
                return Ok(v);
            }
            self.sp()?;
        }
    }

    fn date(&mut self) -> R<Date> {
        let text: Str<'a> = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            Cow::Borrowed(self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        Date::parse(&text).ok_or("invalid date")
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err("command nested too deeply")
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }
}

/// Parse one complete command as framed by [`super::Framer`].
pub fn parse_command(input: &[u8]) -> Result<Command<'_>, ParseError<'_>> {
    let mut c = Cur {
        b: input,
        p: 0,
        depth: 0,
    };
    let tag = c.take_while(is_tag_char);
    if tag.is_empty() || c.peek() != Some(b' ') {
        return Err(ParseError {
            tag: None,
            reason: "missing or invalid tag",
        });
    }
    c.p += 1;
    match command_body(&mut c).and_then(|body| c.end().map(|()| body)) {
        Ok(body) => Ok(Command { tag, body }),
        Err(reason) => Err(ParseError {
            tag: Some(tag),
            reason,
        }),
    }
}

fn upper(a: &[u8]) -> Vec<u8> {
    a.to_ascii_uppercase()
}

fn command_body<'a>(c: &mut Cur<'a>) -> R<CommandBody<'a>> {
    let name = upper(c.atom().map_err(|_| "missing command")?);
    let body = match name.as_slice() {
        b"CAPABILITY" => CommandBody::Capability,
        b"NOOP" => CommandBody::Noop,
        b"LOGOUT" => CommandBody::Logout,
        b"STARTTLS" => CommandBody::StartTls,
        b"CHECK" => CommandBody::Check,
        b"CLOSE" => CommandBody::Close,
        b"UNSELECT" => CommandBody::Unselect,
        b"EXPUNGE" => CommandBody::Expunge,
        b"IDLE" => CommandBody::Idle,
        b"COMPRESS" => {
            c.sp()?;
            CommandBody::Compress {
                mechanism: c.atom()?,
            }
        }
        b"NAMESPACE" => CommandBody::Namespace,
        b"LOGIN" => {
            c.sp()?;
            let username = c.astring()?;
            c.sp()?;
            let password = c.astring()?;
            CommandBody::Login { username, password }
        }
        b"AUTHENTICATE" => {
            c.sp()?;
            let mechanism = c.atom()?;
            let initial_response = if c.eat(b' ') {
                let ir = c.take_while(is_base64_char);
                if ir.is_empty() {
                    return Err("invalid initial response");
                }
                Some(if ir == b"=" { &ir[..0] } else { ir })
            } else {
                None
            };
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            }
        }
        b"SELECT" | b"EXAMINE" => {
            c.sp()?;
            let mailbox = c.mailbox()?;
            let mut condstore = false;
            let mut qresync = None;
            if c.eat(b' ') {
                c.open()?;
                loop {
                    if c.keyword(b"CONDSTORE") {
                        condstore = true;
                    } else if c.keyword(b"QRESYNC") && qresync.is_none() {
                        c.sp()?;
                        qresync = Some(qresync_param(c)?);
                    } else {
                        return Err("unsupported SELECT parameter");
                    }
                    if c.eat(b')') {
                        break;
                    }
                    c.sp()?;
                }
            }
            if name == b"SELECT" {
                CommandBody::Select {
                    mailbox,
                    condstore,
                    qresync,
                }
            } else {
                CommandBody::Examine {
                    mailbox,
                    condstore,
                    qresync,
                }
            }
        }
        b"CREATE" => {
            c.sp()?;
            let mailbox = c.mailbox()?;
            let mut special_use = Vec::new();
            if c.eat(b' ') {
                // RFC 6154 section 3: CREATE name (USE (\Drafts ...))
                c.open()?;
                if !c.keyword(b"USE") {
                    return Err("unsupported CREATE parameter");
                }
                c.sp()?;
                c.open()?;
                if !c.eat(b')') {
                    loop {
                        let start = c.p;
                        c.expect(b'\\', "expected a special-use attribute")?;
                        c.atom()?;
                        special_use.push(&c.b[start..c.p]);
                        if c.eat(b')') {
                            break;
                        }
                        c.sp()?;
                    }
                }
                c.close()?;
            }
            CommandBody::Create {
                mailbox,
                special_use,
            }
        }
        b"DELETE" | b"SUBSCRIBE" | b"UNSUBSCRIBE" => {
            c.sp()?;
            let mailbox = c.mailbox()?;
            match name.as_slice() {
                b"DELETE" => CommandBody::Delete { mailbox },
                b"SUBSCRIBE" => CommandBody::Subscribe { mailbox },
                _ => CommandBody::Unsubscribe { mailbox },
            }
        }
        b"RENAME" => {
            c.sp()?;
            let from = c.mailbox()?;
            c.sp()?;
            let to = c.mailbox()?;
            CommandBody::Rename { from, to }
        }
        b"LIST" => CommandBody::List(list(c)?),
        b"LSUB" => {
            c.sp()?;
            let reference = c.astring()?;
            c.sp()?;
            let pattern = c.list_mailbox()?;
            CommandBody::Lsub { reference, pattern }
        }
        b"STATUS" => {
            c.sp()?;
            let mailbox = c.mailbox()?;
            c.sp()?;
            CommandBody::Status {
                mailbox,
                items: status_items(c)?,
            }
        }
        b"APPEND" => append(c)?,
        b"SEARCH" => CommandBody::Search {
            uid: false,
            search: search(c)?,
        },
        b"SORT" => sort(c, false)?,
        b"THREAD" => thread(c, false)?,
        b"GETQUOTA" => {
            c.sp()?;
            CommandBody::GetQuota { root: c.astring()? }
        }
        b"GETQUOTAROOT" => {
            c.sp()?;
            CommandBody::GetQuotaRoot {
                mailbox: c.mailbox()?,
            }
        }
        b"SETQUOTA" => {
            // RFC 9208 section 4.1: setquota-list = "(" [setquota-resource
            // *(SP setquota-resource)] ")", resource = atom SP number64.
            c.sp()?;
            c.astring()?;
            c.sp()?;
            c.open()?;
            if !c.eat(b')') {
                loop {
                    c.atom()?;
                    c.sp()?;
                    if c.take_while(|b| b.is_ascii_digit()).is_empty() {
                        return Err("expected a number");
                    }
                    if c.eat(b')') {
                        break;
                    }
                    c.sp()?;
                }
            }
            CommandBody::SetQuota
        }
        b"FETCH" => fetch(c, false)?,
        b"STORE" => store(c, false)?,
        b"COPY" | b"MOVE" => copy_move(c, false, name == b"MOVE")?,
        b"UID" => {
            c.sp()?;
            let sub = upper(c.atom()?);
            match sub.as_slice() {
                b"FETCH" => fetch(c, true)?,
                b"STORE" => store(c, true)?,
                b"SEARCH" => CommandBody::Search {
                    uid: true,
                    search: search(c)?,
                },
                b"SORT" => sort(c, true)?,
                b"THREAD" => thread(c, true)?,
                b"COPY" | b"MOVE" => copy_move(c, true, sub == b"MOVE")?,
                b"EXPUNGE" => {
                    c.sp()?;
                    CommandBody::UidExpunge { set: c.seq_set()? }
                }
                _ => return Err("unknown UID command"),
            }
        }
        b"ID" => {
            c.sp()?;
            if c.keyword(b"NIL") {
                CommandBody::Id(None)
            } else {
                c.open()?;
                let mut params = Vec::new();
                if !c.eat(b')') {
                    loop {
                        // RFC 2971 3.3: at most 30 pairs, fields of at most
                        // 30 octets, values of at most 1024.
                        use crate::limits::{
                            IMAP_ID_FIELD_MAX, IMAP_ID_PAIRS_MAX, IMAP_ID_VALUE_MAX,
                        };
                        if params.len() == IMAP_ID_PAIRS_MAX {
                            return Err("ID has more than 30 field-value pairs");
                        }
                        let k = c.string()?;
                        if k.len() > IMAP_ID_FIELD_MAX {
                            return Err("ID field longer than 30 octets");
                        }
                        c.sp()?;
                        let v = c.nstring()?;
                        if v.as_ref().is_some_and(|v| v.len() > IMAP_ID_VALUE_MAX) {
                            return Err("ID value longer than 1024 octets");
                        }
                        params.push((k, v));
                        if c.eat(b')') {
                            break;
                        }
                        c.sp()?;
                    }
                }
                CommandBody::Id(Some(params))
            }
        }
        b"ENABLE" => {
            let mut caps = Vec::new();
            while c.eat(b' ') {
                caps.push(c.atom()?);
            }
            if caps.is_empty() {
                return Err("ENABLE needs at least one capability");
            }
            CommandBody::Enable(caps)
        }
        _ => return Err("unknown command"),
    };
    Ok(body)
}

fn status_items(c: &mut Cur<'_>) -> R<Vec<StatusItem>> {
    c.open()?;
    let mut items = Vec::new();
    loop {
        items.push(StatusItem::from_atom(c.atom()?).ok_or("unknown STATUS item")?);
        if c.eat(b')') {
            return Ok(items);
        }
        c.sp()?;
    }
}

fn list<'a>(c: &mut Cur<'a>) -> R<ListCommand<'a>> {
    c.sp()?;
    let mut extended = false;
    let mut selection = Vec::new();
    if c.eat(b'(') {
        extended = true;
        if !c.eat(b')') {
            loop {
                let a = c.atom()?;
                selection.push(match upper(a).as_slice() {
                    b"SUBSCRIBED" => ListSelect::Subscribed,
                    b"REMOTE" => ListSelect::Remote,
                    b"RECURSIVEMATCH" => ListSelect::RecursiveMatch,
                    b"SPECIAL-USE" => ListSelect::SpecialUse,
                    _ => ListSelect::Other(a),
                });
                if c.eat(b')') {
                    break;
                }
                c.sp()?;
            }
        }
        c.sp()?;
    }
    let reference = c.astring()?;
    c.sp()?;
    let patterns = if c.eat(b'(') {
        extended = true;
        let mut v = vec![c.list_mailbox()?];
        while c.eat(b' ') {
            v.push(c.list_mailbox()?);
        }
        c.close()?;
        v
    } else {
        vec![c.list_mailbox()?]
    };
    let mut returns = Vec::new();
    if c.eat(b' ') {
        if !c.keyword(b"RETURN") {
            return Err("expected RETURN");
        }
        extended = true;
        c.sp()?;
        c.open()?;
        if !c.eat(b')') {
            loop {
                let a = c.atom()?;
                returns.push(match upper(a).as_slice() {
                    b"SUBSCRIBED" => ListReturn::Subscribed,
                    b"CHILDREN" => ListReturn::Children,
                    b"SPECIAL-USE" => ListReturn::SpecialUse,
                    b"STATUS" => {
                        c.sp()?;
                        ListReturn::Status(status_items(c)?)
                    }
                    _ => ListReturn::Other(a),
                });
                if c.eat(b')') {
                    break;
                }
                c.sp()?;
            }
        }
    }
    Ok(ListCommand {
        selection,
        reference,
        patterns,
        returns,
        extended,
    })
}

fn append<'a>(c: &mut Cur<'a>) -> R<CommandBody<'a>> {
    c.sp()?;
    let mailbox = c.mailbox()?;
    c.sp()?;
    let mut flags = Vec::new();
    if c.peek() == Some(b'(') {
        flags = c.flag_list()?;
        c.sp()?;
    }
    let mut date = None;
    if c.peek() == Some(b'"') {
        let text = c.quoted()?;
        date = Some(DateTime::parse(&text).ok_or("invalid date-time")?);
        c.sp()?;
    }
    // RFC 3516 section 4.4 / RFC 9051: the message may be a literal8,
    // `~{n}`, whose content may hold NUL.
    let binary = c.eat(b'~');
    let message = c.literal()?;
    if c.peek() == Some(b' ') {
        return Err("MULTIAPPEND not supported");
    }
    Ok(CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
        binary,
    })
}

fn copy_move<'a>(c: &mut Cur<'a>, uid: bool, is_move: bool) -> R<CommandBody<'a>> {
    c.sp()?;
    let set = c.seq_set()?;
    c.sp()?;
    let mailbox = c.mailbox()?;
    Ok(if is_move {
        CommandBody::Move { uid, set, mailbox }
    } else {
        CommandBody::Copy { uid, set, mailbox }
    })
}

fn search<'a>(c: &mut Cur<'a>) -> R<Search<'a>> {
    c.sp()?;
    let returns = search_returns(c)?;
    let mut charset = None;
    if c.keyword(b"CHARSET") {
        c.sp()?;
        charset = Some(c.astring()?);
        c.sp()?;
    }
    search_keys(c, charset, returns)
}

/// `[RETURN (opts) SP]` of SEARCH (RFC 4731) and SORT (RFC 5267 ESORT).
fn search_returns(c: &mut Cur<'_>) -> R<Option<Vec<SearchReturn>>> {
    if !c.keyword(b"RETURN") {
        return Ok(None);
    }
    c.sp()?;
    c.open()?;
    let mut v = Vec::new();
    if !c.eat(b')') {
        loop {
            v.push(match upper(c.atom()?).as_slice() {
                b"MIN" => SearchReturn::Min,
                b"MAX" => SearchReturn::Max,
                b"ALL" => SearchReturn::All,
                b"COUNT" => SearchReturn::Count,
                b"SAVE" => SearchReturn::Save,
                _ => return Err("unknown SEARCH return option"),
            });
            if c.eat(b')') {
                break;
            }
            c.sp()?;
        }
    }
    if v.is_empty() {
        v.push(SearchReturn::All);
    }
    c.sp()?;
    Ok(Some(v))
}

fn search_keys<'a>(
    c: &mut Cur<'a>,
    charset: Option<Str<'a>>,
    returns: Option<Vec<SearchReturn>>,
) -> R<Search<'a>> {
    let mut keys = vec![search_key(c)?];
    while c.eat(b' ') {
        keys.push(search_key(c)?);
    }
    Ok(Search {
        charset,
        keys,
        returns,
    })
}

/// `SORT [RETURN (...)] (criteria) charset keys` (RFC 5256 section 5,
/// RFC 5267 section 3). The charset is not optional here.
fn sort<'a>(c: &mut Cur<'a>, uid: bool) -> R<CommandBody<'a>> {
    c.sp()?;
    let returns = search_returns(c)?;
    c.open()?;
    let mut criteria = Vec::new();
    let mut given = 0;
    let mut reverse = false;
    loop {
        let key = match upper(c.atom()?).as_slice() {
            b"REVERSE" => {
                if reverse {
                    return Err("REVERSE twice");
                }
                reverse = true;
                c.sp()?;
                continue;
            }
            b"ARRIVAL" => SortKey::Arrival,
            b"CC" => SortKey::Cc,
            b"DATE" => SortKey::Date,
            b"FROM" => SortKey::From,
            b"SIZE" => SortKey::Size,
            b"SUBJECT" => SortKey::Subject,
            b"TO" => SortKey::To,
            _ => return Err("unknown sort key"),
        };
        given += 1;
        if given > crate::limits::IMAP_SORT_KEYS_MAX {
            return Err("too many sort keys");
        }
        // A key given again can never break a tie the first one left, so
        // it is dropped (and costs no second key per message).
        if !criteria.iter().any(|c: &SortCriterion| c.key == key) {
            criteria.push(SortCriterion { reverse, key });
        }
        reverse = false;
        if c.eat(b')') {
            break;
        }
        c.sp()?;
    }
    c.sp()?;
    let charset = Some(c.astring()?);
    c.sp()?;
    let search = search_keys(c, charset, returns)?;
    Ok(CommandBody::Sort {
        uid,
        criteria,
        search,
    })
}

/// `THREAD algorithm charset keys` (RFC 5256 section 5).
fn thread<'a>(c: &mut Cur<'a>, uid: bool) -> R<CommandBody<'a>> {
    c.sp()?;
    let algorithm = match upper(c.atom()?).as_slice() {
        b"ORDEREDSUBJECT" => Algorithm::OrderedSubject,
        b"REFERENCES" => Algorithm::References,
        _ => return Err("unknown threading algorithm"),
    };
    c.sp()?;
    let charset = Some(c.astring()?);
    c.sp()?;
    let search = search_keys(c, charset, None)?;
    Ok(CommandBody::Thread {
        uid,
        algorithm,
        search,
    })
}

fn search_key<'a>(c: &mut Cur<'a>) -> R<SearchKey<'a>> {
    c.enter()?;
    let k = search_key_inner(c);
    c.leave();
    k
}

fn search_key_inner<'a>(c: &mut Cur<'a>) -> R<SearchKey<'a>> {
    match c.peek() {
        Some(b'(') => {
            c.p += 1;
            let mut v = vec![search_key(c)?];
            while c.eat(b' ') {
                v.push(search_key(c)?);
            }
            c.close()?;
            return Ok(SearchKey::And(v));
        }
        Some(b'0'..=b'9' | b'*' | b'$') => return c.seq_set().map(SearchKey::Sequence),
        _ => {}
    }
    let name = upper(c.atom()?);
    let arg_string = |c: &mut Cur<'a>| -> R<Str<'a>> {
        c.sp()?;
        c.astring()
    };
    let arg_date = |c: &mut Cur<'a>| -> R<Date> {
        c.sp()?;
        c.date()
    };
    Ok(match name.as_slice() {
        b"ALL" => SearchKey::All,
        b"ANSWERED" => SearchKey::Answered,
        b"DELETED" => SearchKey::Deleted,
        b"DRAFT" => SearchKey::Draft,
        b"FLAGGED" => SearchKey::Flagged,
        b"NEW" => SearchKey::New,
        b"OLD" => SearchKey::Old,
        b"RECENT" => SearchKey::Recent,
        b"SEEN" => SearchKey::Seen,
        b"UNANSWERED" => SearchKey::Unanswered,
        b"UNDELETED" => SearchKey::Undeleted,
        b"UNDRAFT" => SearchKey::Undraft,
        b"UNFLAGGED" => SearchKey::Unflagged,
        b"UNSEEN" => SearchKey::Unseen,
        b"BCC" => SearchKey::Bcc(arg_string(c)?),
        b"BODY" => SearchKey::Body(arg_string(c)?),
        b"CC" => SearchKey::Cc(arg_string(c)?),
        b"FROM" => SearchKey::From(arg_string(c)?),
        b"SUBJECT" => SearchKey::Subject(arg_string(c)?),
        b"TEXT" => SearchKey::Text(arg_string(c)?),
        b"TO" => SearchKey::To(arg_string(c)?),
        b"BEFORE" => SearchKey::Before(arg_date(c)?),
        b"ON" => SearchKey::On(arg_date(c)?),
        b"SINCE" => SearchKey::Since(arg_date(c)?),
        b"SENTBEFORE" => SearchKey::SentBefore(arg_date(c)?),
        b"SENTON" => SearchKey::SentOn(arg_date(c)?),
        b"SENTSINCE" => SearchKey::SentSince(arg_date(c)?),
        b"HEADER" => {
            let field = arg_string(c)?;
            SearchKey::Header(field, arg_string(c)?)
        }
        b"KEYWORD" | b"UNKEYWORD" => {
            c.sp()?;
            let k = c.atom()?;
            if name == b"KEYWORD" {
                SearchKey::Keyword(k)
            } else {
                SearchKey::Unkeyword(k)
            }
        }
        b"LARGER" | b"SMALLER" => {
            c.sp()?;
            let n = c.number64()?;
            if name == b"LARGER" {
                SearchKey::Larger(n)
            } else {
                SearchKey::Smaller(n)
            }
        }
        b"NOT" => {
            c.sp()?;
            SearchKey::Not(Box::new(search_key(c)?))
        }
        b"OR" => {
            c.sp()?;
            let a = search_key(c)?;
            c.sp()?;
            SearchKey::Or(Box::new(a), Box::new(search_key(c)?))
        }
        b"UID" => {
            c.sp()?;
            SearchKey::Uid(c.seq_set()?)
        }
        b"EMAILID" | b"THREADID" => {
            c.sp()?;
            let id = c.atom()?;
            // RFC 8474 section 7: objectid = 1*255(ALPHA / DIGIT / "_" / "-")
            if id.len() > 255
                || !id
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err("invalid objectid");
            }
            if name.as_slice() == b"THREADID" {
                SearchKey::ThreadId
            } else {
                SearchKey::EmailId(super::encode::parse_email_objectid(id))
            }
        }
        b"MODSEQ" => {
            c.sp()?;
            let mut entry = None;
            if matches!(c.peek(), Some(b'"' | b'{')) {
                let name = c.entry_name()?;
                c.sp()?;
                let kind = c.atom()?;
                if !(kind.eq_ignore_ascii_case(b"priv")
                    || kind.eq_ignore_ascii_case(b"shared")
                    || kind.eq_ignore_ascii_case(b"all"))
                {
                    return Err("invalid MODSEQ entry type");
                }
                entry = Some((name, kind));
                // Some clients end the key after the entry type; the value
                // is then 0 (every message matches, as mod-sequences are
                // at least 1), the key still asks for MODSEQ in the result.
                if !matches!(c.b.get(c.p..c.p + 2), Some([b' ', b'0'..=b'9'])) {
                    return Ok(SearchKey::ModSeq { entry, modseq: 0 });
                }
                c.sp()?;
            }
            SearchKey::ModSeq {
                entry,
                modseq: c.number64()?,
            }
        }
        _ => return Err("unknown search key"),
    })
}

fn fetch<'a>(c: &mut Cur<'a>, uid: bool) -> R<CommandBody<'a>> {
    c.sp()?;
    let set = c.seq_set()?;
    c.sp()?;
    let mut attrs = Vec::new();
    if c.eat(b'(') {
        loop {
            fetch_attr(c, &mut attrs, false)?;
            if c.eat(b')') {
                break;
            }
            c.sp()?;
        }
    } else {
        fetch_attr(c, &mut attrs, true)?;
    }
    let mut changed_since = None;
    let mut vanished = false;
    if c.eat(b' ') {
        c.open()?;
        loop {
            if c.keyword(b"CHANGEDSINCE") && changed_since.is_none() {
                c.sp()?;
                changed_since = Some(c.number64()?);
            } else if c.keyword(b"VANISHED") && !vanished {
                vanished = true;
            } else {
                return Err("unsupported FETCH modifier");
            }
            if c.eat(b')') {
                break;
            }
            c.sp()?;
        }
    }
    // RFC 7162 3.2.6: VANISHED only in UID FETCH, and only with CHANGEDSINCE.
    if vanished && !(uid && changed_since.is_some()) {
        return Err("VANISHED needs UID FETCH with CHANGEDSINCE");
    }
    Ok(CommandBody::Fetch {
        uid,
        set,
        attrs,
        changed_since,
        vanished,
    })
}

/// `(uidvalidity modseq [known-uids [(known-sequence-set known-uid-set)]])`
/// (RFC 7162 section 3.2.5 and its section 7 grammar: UID sets without `*`).
fn qresync_param(c: &mut Cur<'_>) -> R<Qresync> {
    c.open()?;
    let uidvalidity = c.nz_number()?;
    c.sp()?;
    let modseq = c.number64()?;
    let mut known_uids = None;
    let mut seq_match = None;
    if c.eat(b' ') {
        if c.peek() != Some(b'(') {
            known_uids = Some(plain_set(c)?);
            if c.eat(b' ') {
                seq_match = Some(seq_match_data(c)?);
            }
        } else {
            seq_match = Some(seq_match_data(c)?);
        }
    }
    c.close()?;
    Ok(Qresync {
        uidvalidity,
        modseq,
        known_uids,
        seq_match,
    })
}

/// `(known-sequence-set known-uid-set)` of QRESYNC.
fn seq_match_data(c: &mut Cur<'_>) -> R<(SequenceSet, SequenceSet)> {
    c.open()?;
    let seqs = plain_set(c)?;
    c.sp()?;
    let uids = plain_set(c)?;
    c.close()?;
    Ok((seqs, uids))
}

/// A sequence set of numbers only (no `*`, no `$`).
fn plain_set(c: &mut Cur<'_>) -> R<SequenceSet> {
    let s = c.take_while(|b| b.is_ascii_digit() || matches!(b, b':' | b','));
    SequenceSet::parse(s).ok_or("invalid sequence set")
}

fn fetch_attr<'a>(c: &mut Cur<'a>, out: &mut Vec<FetchAttr<'a>>, macros: bool) -> R<()> {
    let name = upper(c.take_while(|b| b.is_ascii_alphanumeric() || b == b'.'));
    let attr = match name.as_slice() {
        b"ALL" | b"FAST" | b"FULL" if macros => {
            out.extend([
                FetchAttr::Flags,
                FetchAttr::InternalDate,
                FetchAttr::Rfc822Size,
            ]);
            if name != b"FAST" {
                out.push(FetchAttr::Envelope);
            }
            if name == b"FULL" {
                out.push(FetchAttr::Body);
            }
            return Ok(());
        }
        b"ENVELOPE" => FetchAttr::Envelope,
        b"FLAGS" => FetchAttr::Flags,
        b"INTERNALDATE" => FetchAttr::InternalDate,
        b"RFC822" => FetchAttr::Rfc822,
        b"RFC822.HEADER" => FetchAttr::Rfc822Header,
        b"RFC822.SIZE" => FetchAttr::Rfc822Size,
        b"RFC822.TEXT" => FetchAttr::Rfc822Text,
        b"BODYSTRUCTURE" => FetchAttr::BodyStructure,
        b"UID" => FetchAttr::Uid,
        b"MODSEQ" => FetchAttr::ModSeq,
        b"EMAILID" => FetchAttr::EmailId,
        b"THREADID" => FetchAttr::ThreadId,
        b"BODY" if c.peek() != Some(b'[') => FetchAttr::Body,
        b"BODY" | b"BODY.PEEK" => {
            let section = section(c)?;
            FetchAttr::BodySection {
                peek: name != b"BODY",
                section,
                partial: partial(c)?,
            }
        }
        b"BINARY" | b"BINARY.PEEK" => {
            let part = section_binary(c)?;
            FetchAttr::Binary {
                peek: name != b"BINARY",
                part,
                partial: partial(c)?,
            }
        }
        b"BINARY.SIZE" => FetchAttr::BinarySize {
            part: section_binary(c)?,
        },
        _ => return Err("unknown FETCH item"),
    };
    out.push(attr);
    Ok(())
}

/// `[<start.len>]` after a section.
fn partial(c: &mut Cur<'_>) -> R<Option<Partial>> {
    if !c.eat(b'<') {
        return Ok(None);
    }
    let start = c.number()?;
    c.expect(b'.', "invalid partial")?;
    let len = c.nz_number()?;
    c.expect(b'>', "invalid partial")?;
    Ok(Some(Partial { start, len }))
}

/// RFC 3516 `section-binary = "[" [section-part] "]"`: part numbers only.
fn section_binary(c: &mut Cur<'_>) -> R<Vec<u32>> {
    c.expect(b'[', "expected '['")?;
    let mut part = Vec::new();
    if c.peek() != Some(b']') {
        loop {
            part.push(c.nz_number()?);
            if part.len() > MAX_SECTION_PARTS {
                return Err("section nested too deeply");
            }
            if !c.eat(b'.') {
                break;
            }
        }
    }
    c.expect(b']', "expected ']'")?;
    Ok(part)
}

fn section<'a>(c: &mut Cur<'a>) -> R<Section<'a>> {
    c.expect(b'[', "expected '['")?;
    let mut s = Section::default();
    if c.peek() != Some(b']') {
        if c.peek().is_some_and(|b| b.is_ascii_digit()) {
            loop {
                s.part.push(c.nz_number()?);
                if s.part.len() > MAX_SECTION_PARTS {
                    return Err("section nested too deeply");
                }
                if !c.eat(b'.') {
                    break;
                }
                if !c.peek().is_some_and(|b| b.is_ascii_digit()) {
                    s.text = Some(section_text(c, true)?);
                    break;
                }
            }
        } else {
            s.text = Some(section_text(c, false)?);
        }
    }
    c.expect(b']', "expected ']'")?;
    Ok(s)
}

fn section_text<'a>(c: &mut Cur<'a>, after_part: bool) -> R<SectionText<'a>> {
    let name = upper(c.take_while(|b| b.is_ascii_alphabetic() || b == b'.'));
    Ok(match name.as_slice() {
        b"HEADER" => SectionText::Header,
        b"TEXT" => SectionText::Text,
        b"MIME" if after_part => SectionText::Mime,
        b"HEADER.FIELDS" | b"HEADER.FIELDS.NOT" => {
            c.sp()?;
            c.open()?;
            let mut fields = vec![c.astring()?];
            while c.eat(b' ') {
                fields.push(c.astring()?);
            }
            c.close()?;
            SectionText::HeaderFields {
                not: name.len() > 13,
                fields,
            }
        }
        _ => return Err("invalid section"),
    })
}

fn store<'a>(c: &mut Cur<'a>, uid: bool) -> R<CommandBody<'a>> {
    c.sp()?;
    let set = c.seq_set()?;
    c.sp()?;
    let mut unchanged_since = None;
    if c.eat(b'(') {
        if !c.keyword(b"UNCHANGEDSINCE") {
            return Err("unsupported STORE modifier");
        }
        c.sp()?;
        unchanged_since = Some(c.number64()?);
        c.close()?;
        c.sp()?;
    }
    let item = upper(c.take_while(|b| b.is_ascii_alphabetic() || matches!(b, b'.' | b'+' | b'-')));
    let (mode, rest) = match item.first() {
        Some(b'+') => (StoreMode::Add, &item[1..]),
        Some(b'-') => (StoreMode::Remove, &item[1..]),
        _ => (StoreMode::Replace, &item[..]),
    };
    let silent = match rest {
        b"FLAGS" => false,
        b"FLAGS.SILENT" => true,
        _ => return Err("invalid STORE item"),
    };
    c.sp()?;
    let flags = if c.peek() == Some(b'(') {
        c.flag_list()?
    } else {
        let mut v = vec![c.flag()?];
        while c.eat(b' ') {
            v.push(c.flag()?);
        }
        v
    };
    Ok(CommandBody::Store {
        uid,
        set,
        mode,
        silent,
        flags,
        unchanged_since,
    })
}

/// Is `line` the `DONE` that ends IDLE (RFC 2177)? Case-insensitive; CRLF or
/// bare LF.
pub fn is_idle_done(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.eq_ignore_ascii_case(b"DONE")
}

/// A client's answer to an AUTHENTICATE challenge (RFC 3501 section 6.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslResponse<'a> {
    /// Base64 data, still encoded (possibly empty).
    Data(&'a [u8]),
    /// `*`: the client cancels; answer BAD.
    Cancel,
}

/// Parse one continuation line sent during AUTHENTICATE. `None` when the line
/// is not valid base64 text.
pub fn parse_sasl_response(line: &[u8]) -> Option<SaslResponse<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == b"*" {
        return Some(SaslResponse::Cancel);
    }
    line.iter()
        .all(|&b| is_base64_char(b))
        .then_some(SaslResponse::Data(line))
}
