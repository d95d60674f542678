//! SMTP command parser.
//!
//! Owns: turning one command line (terminator already removed by
//! [`super::line`]) into a [`Command`] whose fields borrow from the line:
//! verbs (case-insensitive, RFC 5321 section 2.4), paths (RFC 5321 section
//! 4.1.2, with the RFC 6531 section 3.3 UTF-8 extension), and ESMTP parameters
//! (RFC 5321 section 4.1.2 `Mail-parameters`), iterated in place.
//!
//! Must never: allocate, consult session state (whether SMTPUTF8 applies to a
//! RCPT address, or whether a parameter is acceptable now, is the session's
//! call: this module only reports what the line says), or panic on any input.
use memchr::memchr;

/// RFC 5321 section 4.5.3.1.3: a reverse-path or forward-path is at most 256
/// octets, counting the angle brackets. Longer paths get `501` (section
/// 4.5.3.1.10, "501 Path too long").
pub const PATH_MAX: usize = 256;

/// One parsed command. Slices borrow from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain-or-address-literal`.
    Ehlo(&'a str),
    /// `HELO domain`.
    Helo(&'a str),
    /// `MAIL FROM:<reverse-path> [params]`; `reverse_path` has no angle
    /// brackets and no source route, and is empty for the null path `<>`.
    Mail {
        reverse_path: &'a str,
        params: Params<'a>,
    },
    /// `RCPT TO:<forward-path> [params]`; `forward_path` has no angle brackets
    /// and no source route. The special `<Postmaster>` (any case, RFC 5321
    /// section 4.5.1) is returned as typed, without a domain.
    Rcpt {
        forward_path: &'a str,
        params: Params<'a>,
    },
    Data,
    /// `BDAT chunk-size [LAST]` (RFC 3030 section 2).
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 section 4).
    Auth {
        mechanism: &'a str,
        initial_response: Option<&'a str>,
    },
    /// A verb we do not know (including the empty line).
    Unknown,
}

/// Why a line with a known verb could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// Missing, extra or malformed arguments (`501 5.5.4`).
    #[error("syntax error in arguments")]
    Arguments,
    /// EHLO/HELO without a usable domain or address literal.
    #[error("EHLO/HELO needs a domain or address literal")]
    HeloDomain,
    /// Malformed or too long reverse-path on MAIL (`501 5.1.7`).
    #[error("bad sender address syntax")]
    Sender,
    /// Malformed or too long forward-path on RCPT (`501 5.1.3`).
    #[error("bad recipient address syntax")]
    Recipient,
    /// Malformed ESMTP parameter list.
    #[error("bad ESMTP parameter syntax")]
    Params,
    /// Malformed BDAT arguments. `size` is the chunk size if it could still be
    /// read: the session must then consume that many octets before replying,
    /// or it would take chunk data for commands.
    #[error("bad BDAT arguments")]
    Bdat { size: Option<u64> },
}

/// Parse one command line (without CRLF). Trailing spaces and tabs are ignored.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, SyntaxError> {
    let line = trim_end(line);
    let (verb, rest) = match memchr(b' ', line) {
        Some(i) => (&line[..i], trim_start(&line[i + 1..])),
        None => (line, &line[line.len()..]),
    };
    let mut upper = [0u8; 8];
    if verb.len() > upper.len() {
        return Ok(Command::Unknown);
    }
    for (u, v) in upper.iter_mut().zip(verb) {
        *u = v.to_ascii_uppercase();
    }
    let no_args = |cmd: Command<'static>| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(SyntaxError::Arguments)
        }
    };
    match &upper[..verb.len()] {
        b"EHLO" => helo_domain(rest).map(Command::Ehlo),
        b"HELO" => helo_domain(rest).map(Command::Helo),
        b"MAIL" => parse_mail(rest),
        b"RCPT" => parse_rcpt(rest),
        b"DATA" => no_args(Command::Data),
        b"BDAT" => parse_bdat(rest),
        b"RSET" => no_args(Command::Rset),
        // NOOP, HELP, VRFY and EXPN take an optional string we ignore; QUIT
        // takes none, but refusing to let a client leave helps nobody.
        b"NOOP" => Ok(Command::Noop),
        b"QUIT" => Ok(Command::Quit),
        b"VRFY" => Ok(Command::Vrfy),
        b"EXPN" => Ok(Command::Expn),
        b"HELP" => Ok(Command::Help),
        b"STARTTLS" => no_args(Command::StartTls),
        b"AUTH" => parse_auth(rest),
        _ => Ok(Command::Unknown),
    }
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// EHLO/HELO argument: a domain or address literal (RFC 5321 section 4.1.1.1).
/// Liberal: any run of letters, digits, `-._:[]` and UTF-8 (RFC 6531 allows
/// U-labels), up to the first space; anything after it is ignored. The value
/// lands in our Received header, so it may hold nothing that breaks a header.
fn helo_domain(rest: &[u8]) -> Result<&str, SyntaxError> {
    let token = match memchr(b' ', rest) {
        Some(i) => &rest[..i],
        None => rest,
    };
    let ok = !token.is_empty()
        && token.len() <= 255
        && token
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b) || b >= 0x80);
    if !ok {
        return Err(SyntaxError::HeloDomain);
    }
    std::str::from_utf8(token).map_err(|_| SyntaxError::HeloDomain)
}

fn parse_mail(rest: &[u8]) -> Result<Command<'_>, SyntaxError> {
    let after = strip_prefix_ignore_case(rest, b"FROM:").ok_or(SyntaxError::Arguments)?;
    let after = trim_start(after);
    let (reverse_path, used) = parse_path(after, PathKind::Reverse).ok_or(SyntaxError::Sender)?;
    let params = params_after(&after[used..]).ok_or(SyntaxError::Params)?;
    Ok(Command::Mail {
        reverse_path,
        params,
    })
}

fn parse_rcpt(rest: &[u8]) -> Result<Command<'_>, SyntaxError> {
    let after = strip_prefix_ignore_case(rest, b"TO:").ok_or(SyntaxError::Arguments)?;
    let after = trim_start(after);
    let (forward_path, used) =
        parse_path(after, PathKind::Forward).ok_or(SyntaxError::Recipient)?;
    let params = params_after(&after[used..]).ok_or(SyntaxError::Params)?;
    Ok(Command::Rcpt {
        forward_path,
        params,
    })
}

/// After the closing `>`: nothing, or at least one space then parameters.
fn params_after(tail: &[u8]) -> Option<Params<'_>> {
    if tail.is_empty() {
        return Some(Params::EMPTY);
    }
    if tail[0] != b' ' {
        return None;
    }
    Params::parse(trim_start(tail))
}

fn parse_bdat(rest: &[u8]) -> Result<Command<'_>, SyntaxError> {
    let (size_token, tail) = match memchr(b' ', rest) {
        Some(i) => (&rest[..i], trim_start(&rest[i + 1..])),
        None => (rest, &rest[rest.len()..]),
    };
    let size = parse_decimal(size_token).ok_or(SyntaxError::Bdat { size: None })?;
    if tail.is_empty() {
        Ok(Command::Bdat { size, last: false })
    } else if tail.eq_ignore_ascii_case(b"LAST") {
        Ok(Command::Bdat { size, last: true })
    } else {
        Err(SyntaxError::Bdat { size: Some(size) })
    }
}

/// `1*DIGIT` as u64; None if empty, not all digits, or overflowing.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn parse_auth(rest: &[u8]) -> Result<Command<'_>, SyntaxError> {
    let (mech, tail) = match memchr(b' ', rest) {
        Some(i) => (&rest[..i], trim_start(&rest[i + 1..])),
        None => (rest, &rest[rest.len()..]),
    };
    // RFC 4422 section 3.1: 1 to 20 of upper-case letters, digits, '-' and '_'
    // (we accept lower case too and let the session compare case-insensitively).
    let mech_ok = (1..=20).contains(&mech.len())
        && mech
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    // RFC 4954 section 4: initial-response is base64 or a single "=".
    let response_ok = tail
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    if !mech_ok || !response_ok || memchr(b' ', tail).is_some() {
        return Err(SyntaxError::Arguments);
    }
    // Both checked as ASCII above.
    let mechanism = std::str::from_utf8(mech).map_err(|_| SyntaxError::Arguments)?;
    let initial_response = if tail.is_empty() {
        None
    } else {
        Some(std::str::from_utf8(tail).map_err(|_| SyntaxError::Arguments)?)
    };
    Ok(Command::Auth {
        mechanism,
        initial_response,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PathKind {
    /// MAIL: `<>` allowed.
    Reverse,
    /// RCPT: `<Postmaster>` allowed.
    Forward,
}

/// RFC 5322 section 3.2.3 `atext`, extended with UTF-8 (RFC 6531 section 3.3).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// Parse `<...>` at the start of `s`; return the address (brackets and source
/// route removed) and the number of bytes used, up to and including `>`.
fn parse_path(s: &[u8], kind: PathKind) -> Option<(&str, usize)> {
    if s.first() != Some(&b'<') {
        return None;
    }
    let mut i = 1;
    if s.get(i) == Some(&b'>') {
        return (kind == PathKind::Reverse).then_some(("", 2));
    }
    // RFC 5321 section 4.1.2 and appendix C: a source route `@a,@b:` is
    // accepted and ignored.
    if s.get(i) == Some(&b'@') {
        loop {
            i += 1; // the '@'
            i += domain_len(&s[i..])?;
            match s.get(i)? {
                b',' if s.get(i + 1) == Some(&b'@') => i += 1,
                b':' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    let start = i;
    if kind == PathKind::Forward {
        if let Some(after) = strip_prefix_ignore_case(&s[start..], b"postmaster>") {
            let end = s.len() - after.len();
            let addr = std::str::from_utf8(&s[start..end - 1]).ok()?;
            return Some((addr, end));
        }
    }
    // Local part: Quoted-string or Dot-string. The dot-string is parsed
    // liberally (leading, trailing or doubled dots occur in real mail).
    if s.get(i) == Some(&b'"') {
        i += 1;
        loop {
            match *s.get(i)? {
                b'"' => {
                    i += 1;
                    break;
                }
                // quoted-pairSMTP = %d92 %d32-126
                b'\\' => match s.get(i + 1) {
                    Some(&c) if (32..=126).contains(&c) => i += 2,
                    _ => return None,
                },
                // qtextSMTP, plus UTF-8
                c if c == 32 || c == 33 || (35..=126).contains(&c) || c >= 0x80 => i += 1,
                _ => return None,
            }
        }
    } else {
        let n = s[i..]
            .iter()
            .take_while(|&&b| is_atext(b) || b == b'.')
            .count();
        if n == 0 {
            return None;
        }
        i += n;
    }
    if s.get(i) != Some(&b'@') {
        return None;
    }
    i += 1;
    i += if s.get(i) == Some(&b'[') {
        address_literal_len(&s[i..])?
    } else {
        domain_len(&s[i..])?
    };
    if s.get(i) != Some(&b'>') {
        return None;
    }
    let address = &s[start..i];
    if address.len() + 2 > PATH_MAX {
        return None;
    }
    Some((std::str::from_utf8(address).ok()?, i + 1))
}

/// Length of a Domain (RFC 5321 section 4.1.2) at the start of `s`: dot-
/// separated non-empty labels of letters, digits, '-' (and '_', common in
/// practice, and UTF-8 U-labels, RFC 6531 section 3.3). None if there is none.
fn domain_len(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let label = s[i..]
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80)
            .count();
        if label == 0 {
            return None;
        }
        i += label;
        if s.get(i) == Some(&b'.') && s.get(i + 1).is_some_and(|&b| b != b'.') {
            i += 1;
        } else {
            return Some(i);
        }
    }
}

/// Length of an address literal `[...]` (RFC 5321 section 4.1.3) at the start
/// of `s`, brackets included. The content is checked only for `dcontent`
/// (printable ASCII except `[`, `\`, `]`); the session never routes on it.
fn address_literal_len(s: &[u8]) -> Option<usize> {
    let n = s[1..]
        .iter()
        .take_while(|&&b| (33..=126).contains(&b) && !b"[\\]".contains(&b))
        .count();
    if n == 0 || s.get(1 + n) != Some(&b']') {
        return None;
    }
    Some(n + 2)
}

/// ESMTP parameters of MAIL or RCPT (`keyword[=value]`, separated by spaces),
/// validated once at parse time and then iterated without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params<'a>(&'a str);

impl<'a> Params<'a> {
    /// No parameters.
    pub const EMPTY: Params<'static> = Params("");

    /// Validate a parameter list: `esmtp-keyword = (ALPHA / DIGIT) *(ALPHA /
    /// DIGIT / "-")`, `esmtp-value = 1*(%d33-60 / %d62-126)` (RFC 5321 section
    /// 4.1.2), values widened to UTF-8 by RFC 6531 section 3.3.
    pub fn parse(s: &'a [u8]) -> Option<Self> {
        let s = std::str::from_utf8(s).ok()?;
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            let (keyword, value) = match token.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (token, None),
            };
            let kw = keyword.as_bytes();
            if kw.is_empty()
                || !kw[0].is_ascii_alphanumeric()
                || !kw.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return None;
            }
            if let Some(v) = value {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| ((33..=126).contains(&b) && b != b'=') || b >= 0x80)
                {
                    return None;
                }
            }
        }
        Some(Params(s))
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Iterate the parameters in order.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { rest: self.0 }
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = Param<'a>;
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    fn next(&mut self) -> Option<Param<'a>> {
        let s = self.rest.trim_start_matches(' ');
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let (token, rest) = s.split_once(' ').unwrap_or((s, ""));
        self.rest = rest;
        Some(match token.split_once('=') {
            Some((keyword, value)) => Param {
                keyword,
                value: Some(value),
            },
            None => Param {
                keyword: token,
                value: None,
            },
        })
    }
}

/// One ESMTP parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub keyword: &'a str,
    pub value: Option<&'a str>,
}

/// xtext (RFC 3461 section 4): every octet outside `!`..`~`, and `+` and
/// `=`, written as `+HH`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// [`xtext_encode`] undone; None for a malformed value or one that is not
/// UTF-8 once decoded.
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c @ b'!'..=b'~' if c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// BODY= values (RFC 6152 section 2, RFC 3030 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// A MAIL parameter, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailParam {
    /// `SIZE=n` (RFC 1870 section 6); a value too large for u64 saturates.
    Size(u64),
    /// `BODY=...`.
    Body(BodyType),
    /// `SMTPUTF8` (RFC 6531 section 3.4), no value.
    SmtpUtf8,
    /// `XMAP=n`: cluster hand-overs only, the sending node's bucket map
    /// version (a private extension, RFC 5321 section 4.1.5's "X").
    ClusterMap(u64),
    /// `XJUNK`: cluster hand-overs only, the receiving edge's verdict
    /// files the message under Junk.
    ClusterJunk,
    /// `XMAILBOX=`, `XFLAGS=`, `XDATE=`, `XKEYWORDS=`: cluster hand-overs
    /// only, an IMAP APPEND's copy for the account's replica (the session
    /// reads the values, [`append_param`]).
    ClusterAppend,
    /// `XCHANGES`: cluster hand-overs only, the body is a primary's
    /// changes to an account's mailboxes for its replica
    /// (`cluster::changes`), not a message.
    ClusterChanges,
    /// A keyword we do not implement (`555 5.5.4`).
    Unsupported,
}

impl Param<'_> {
    /// Classify this parameter as a MAIL parameter. `Err` when a keyword we
    /// know has a malformed value.
    pub fn mail(&self) -> Result<MailParam, SyntaxError> {
        let k = self.keyword;
        if k.eq_ignore_ascii_case("SIZE") {
            // RFC 1870 section 6: size-value = 1*20DIGIT.
            let v = self.value.ok_or(SyntaxError::Params)?;
            if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SyntaxError::Params);
            }
            Ok(MailParam::Size(
                parse_decimal(v.as_bytes()).unwrap_or(u64::MAX),
            ))
        } else if k.eq_ignore_ascii_case("BODY") {
            let v = self.value.ok_or(SyntaxError::Params)?;
            let body = if v.eq_ignore_ascii_case("7BIT") {
                BodyType::SevenBit
            } else if v.eq_ignore_ascii_case("8BITMIME") {
                BodyType::EightBitMime
            } else if v.eq_ignore_ascii_case("BINARYMIME") {
                BodyType::BinaryMime
            } else {
                return Err(SyntaxError::Params);
            };
            Ok(MailParam::Body(body))
        } else if k.eq_ignore_ascii_case("SMTPUTF8") {
            match self.value {
                None => Ok(MailParam::SmtpUtf8),
                Some(_) => Err(SyntaxError::Params),
            }
        } else if k.eq_ignore_ascii_case("XMAP") {
            let v = self.value.ok_or(SyntaxError::Params)?;
            if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SyntaxError::Params);
            }
            Ok(MailParam::ClusterMap(
                parse_decimal(v.as_bytes()).ok_or(SyntaxError::Params)?,
            ))
        } else if ["XMAILBOX", "XFLAGS", "XDATE", "XKEYWORDS"]
            .iter()
            .any(|x| k.eq_ignore_ascii_case(x))
        {
            Ok(MailParam::ClusterAppend)
        } else if k.eq_ignore_ascii_case("XJUNK") {
            match self.value {
                None => Ok(MailParam::ClusterJunk),
                Some(_) => Err(SyntaxError::Params),
            }
        } else if k.eq_ignore_ascii_case("XCHANGES") {
            match self.value {
                None => Ok(MailParam::ClusterChanges),
                Some(_) => Err(SyntaxError::Params),
            }
        } else {
            Ok(MailParam::Unsupported)
        }
    }
}

/// Where an IMAP APPEND's copy goes on the replica (`XMAILBOX=` and the
/// parameters with it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendTo {
    pub mailbox: String,
    /// System flags, as stored (the low five bits).
    pub flags: u32,
    pub keywords: Vec<String>,
    pub internal_date: i64,
}

impl AppendTo {
    /// The MAIL parameters that carry it (leading space included).
    pub fn params(&self) -> String {
        let mut p = format!(
            " XMAILBOX={} XFLAGS={} XDATE={}",
            xtext_encode(&self.mailbox),
            self.flags,
            self.internal_date
        );
        if !self.keywords.is_empty() {
            p.push_str(" XKEYWORDS=");
            p.push_str(&xtext_encode(&self.keywords.join(" ")));
        }
        p
    }
}

/// Add one `XMAILBOX=`/`XFLAGS=`/`XDATE=`/`XKEYWORDS=` parameter to `to`;
/// Err for a malformed value or a keyword given twice (`seen`, bit per
/// keyword in that order).
pub fn append_param(to: &mut AppendTo, seen: &mut u8, p: &Param<'_>) -> Result<(), SyntaxError> {
    let v = p.value.ok_or(SyntaxError::Params)?;
    let k = p.keyword.to_ascii_uppercase();
    let (bit, ok) = match k.as_str() {
        "XMAILBOX" => (
            1,
            xtext_decode(v)
                .filter(|n| !n.is_empty())
                .map(|n| to.mailbox = n),
        ),
        "XFLAGS" => (
            2,
            v.parse::<u32>()
                .ok()
                .filter(|f| *f < 32)
                .map(|f| to.flags = f),
        ),
        "XDATE" => (4, v.parse::<i64>().ok().map(|d| to.internal_date = d)),
        "XKEYWORDS" => (
            8,
            xtext_decode(v).map(|k| {
                to.keywords = k
                    .split(' ')
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect()
            }),
        ),
        _ => (0, None),
    };
    if ok.is_none() || *seen & bit != 0 {
        return Err(SyntaxError::Params);
    }
    *seen |= bit;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_round_trips_and_refuses_what_is_malformed() {
        for s in ["INBOX", "a b+c=d", "Entw&APw-rfe", "é"] {
            let e = xtext_encode(s);
            assert!(
                e.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'='),
                "{e}"
            );
            assert_eq!(xtext_decode(&e).as_deref(), Some(s));
        }
        assert_eq!(xtext_encode("a b"), "a+20b");
        for bad in ["+", "+4", "+GG", "a=b", "a b", "+FF"] {
            assert_eq!(xtext_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_append_copy_is_described_by_its_parameters() {
        let to = AppendTo {
            mailbox: "Sent Items".into(),
            flags: 1,
            keywords: vec!["$Work".into(), "x".into()],
            internal_date: -5,
        };
        let line = format!("MAIL FROM:<>{}", to.params());
        let Ok(Command::Mail { params, .. }) = parse_command(line.as_bytes()) else {
            panic!("{line}");
        };
        let (mut got, mut seen) = (AppendTo::default(), 0);
        for p in params {
            assert_eq!(p.mail(), Ok(MailParam::ClusterAppend));
            append_param(&mut got, &mut seen, &p).unwrap();
        }
        assert_eq!((got, seen), (to, 15));
        let twice = Param {
            keyword: "XFLAGS",
            value: Some("2"),
        };
        let (mut got, mut seen) = (AppendTo::default(), 2);
        assert!(append_param(&mut got, &mut seen, &twice).is_err());
        for (k, v) in [
            ("XFLAGS", "32"),
            ("XDATE", "x"),
            ("XMAILBOX", ""),
            ("XMAILBOX", "+4"),
        ] {
            let p = Param {
                keyword: k,
                value: Some(v),
            };
            assert!(
                append_param(&mut AppendTo::default(), &mut 0, &p).is_err(),
                "{k}={v}"
            );
        }
    }

    fn p(line: &str) -> Result<Command<'_>, SyntaxError> {
        parse_command(line.as_bytes())
    }

    fn mail(line: &str) -> Result<(&str, Vec<Param<'_>>), SyntaxError> {
        match parse_command(line.as_bytes())? {
            Command::Mail {
                reverse_path,
                params,
            } => Ok((reverse_path, params.iter().collect())),
            other => panic!("not MAIL: {other:?}"),
        }
    }

    fn rcpt(line: &str) -> Result<&str, SyntaxError> {
        match parse_command(line.as_bytes())? {
            Command::Rcpt { forward_path, .. } => Ok(forward_path),
            other => panic!("not RCPT: {other:?}"),
        }
    }

    #[test]
    fn simple_verbs_any_case() {
        assert_eq!(p("DATA"), Ok(Command::Data));
        assert_eq!(p("data  "), Ok(Command::Data));
        assert_eq!(p("DATA x"), Err(SyntaxError::Arguments));
        assert_eq!(p("RsEt"), Ok(Command::Rset));
        assert_eq!(p("RSET now"), Err(SyntaxError::Arguments));
        assert_eq!(p("noop anything at all"), Ok(Command::Noop));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("VRFY bob"), Ok(Command::Vrfy));
        assert_eq!(p("EXPN list"), Ok(Command::Expn));
        assert_eq!(p("HELP"), Ok(Command::Help));
        assert_eq!(p("starttls"), Ok(Command::StartTls));
        assert_eq!(p(""), Ok(Command::Unknown));
        assert_eq!(p("FROB x"), Ok(Command::Unknown));
        assert_eq!(p("VERYLONGVERB"), Ok(Command::Unknown));
        assert_eq!(
            p("DATA\r"),
            Ok(Command::Unknown),
            "bare CR is not whitespace"
        );
    }

    #[test]
    fn helo_and_ehlo() {
        assert_eq!(
            p("EHLO client.example"),
            Ok(Command::Ehlo("client.example"))
        );
        assert_eq!(p("ehlo [192.0.2.1]"), Ok(Command::Ehlo("[192.0.2.1]")));
        assert_eq!(
            p("EHLO [IPv6:2001:db8::1]"),
            Ok(Command::Ehlo("[IPv6:2001:db8::1]"))
        );
        assert_eq!(p("HELO host extra words"), Ok(Command::Helo("host")));
        assert_eq!(
            p("HELO bücher.example"),
            Ok(Command::Helo("bücher.example"))
        );
        assert_eq!(p("EHLO"), Err(SyntaxError::HeloDomain));
        assert_eq!(p("EHLO a(b)"), Err(SyntaxError::HeloDomain));
        assert_eq!(parse_command(b"EHLO a\xff"), Err(SyntaxError::HeloDomain));
    }

    #[test]
    fn mail_paths() {
        assert_eq!(mail("MAIL FROM:<a@b.example>"), Ok(("a@b.example", vec![])));
        assert_eq!(
            mail("mail from: <a@b.example>"),
            Ok(("a@b.example", vec![]))
        );
        assert_eq!(mail("MAIL FROM:<>"), Ok(("", vec![])));
        assert_eq!(
            mail("MAIL FROM:<@r1.example,@r2.example:a@b.example>"),
            Ok(("a@b.example", vec![]))
        );
        assert_eq!(
            mail("MAIL FROM:<\"a b\\\"c\"@b.example>"),
            Ok(("\"a b\\\"c\"@b.example", vec![]))
        );
        assert_eq!(
            mail("MAIL FROM:<\"a>b\"@b.example>"),
            Ok(("\"a>b\"@b.example", vec![]))
        );
        assert_eq!(
            mail("MAIL FROM:<a@[192.0.2.1]>"),
            Ok(("a@[192.0.2.1]", vec![]))
        );
        assert_eq!(
            mail("MAIL FROM:<pelé@exämple.test>"),
            Ok(("pelé@exämple.test", vec![]))
        );
        assert_eq!(
            mail("MAIL FROM:<first..last.@b.example>"),
            Ok(("first..last.@b.example", vec![]))
        );
        for bad in [
            "MAIL FROM:a@b.example",
            "MAIL FROM:<a@b.example",
            "MAIL FROM:<a>",
            "MAIL FROM:<@b.example>",
            "MAIL FROM:<a@>",
            "MAIL FROM:<a@b..c>",
            "MAIL FROM:<a@.b>",
            "MAIL FROM:<a@b.>",
            "MAIL FROM:<a b@c>",
            "MAIL FROM:<a@[]>",
            "MAIL FROM:<@x:>",
            "MAIL FROM:<@x,a@b>",
            "MAIL FROM:<postmaster>",
            "MAIL FROM:<a@b.example>junk",
        ] {
            assert!(
                matches!(mail(bad), Err(SyntaxError::Sender | SyntaxError::Params)),
                "{bad}"
            );
        }
        assert_eq!(mail("MAIL TO:<a@b>"), Err(SyntaxError::Arguments));
        assert_eq!(mail("MAIL"), Err(SyntaxError::Arguments));
        assert_eq!(
            parse_command(b"MAIL FROM:<a\xff@b>"),
            Err(SyntaxError::Sender)
        );
        let long = format!("MAIL FROM:<{}@b.example>", "x".repeat(245));
        assert_eq!(mail(&long), Err(SyntaxError::Sender));
        let fits = format!("MAIL FROM:<{}@b.example>", "x".repeat(244));
        assert!(mail(&fits).is_ok());
    }

    #[test]
    fn rcpt_paths() {
        assert_eq!(rcpt("RCPT TO:<Bob@Example.test>"), Ok("Bob@Example.test"));
        assert_eq!(rcpt("rcpt to: <bob@example.test>"), Ok("bob@example.test"));
        assert_eq!(rcpt("RCPT TO:<Postmaster>"), Ok("Postmaster"));
        assert_eq!(
            rcpt("RCPT TO:<postmaster@example.test>"),
            Ok("postmaster@example.test")
        );
        assert_eq!(
            rcpt("RCPT TO:<@relay.test:bob@example.test>"),
            Ok("bob@example.test")
        );
        assert_eq!(rcpt("RCPT TO:<>"), Err(SyntaxError::Recipient));
        assert_eq!(rcpt("RCPT TO:<bob>"), Err(SyntaxError::Recipient));
        assert_eq!(rcpt("RCPT FROM:<bob@x>"), Err(SyntaxError::Arguments));
    }

    #[test]
    fn esmtp_params() {
        let (_, params) = mail("MAIL FROM:<a@b> SIZE=1000  BODY=8BITMIME SMTPUTF8").unwrap();
        assert_eq!(
            params,
            vec![
                Param {
                    keyword: "SIZE",
                    value: Some("1000")
                },
                Param {
                    keyword: "BODY",
                    value: Some("8BITMIME")
                },
                Param {
                    keyword: "SMTPUTF8",
                    value: None
                },
            ]
        );
        assert_eq!(params[0].mail(), Ok(MailParam::Size(1000)));
        assert_eq!(
            params[1].mail(),
            Ok(MailParam::Body(BodyType::EightBitMime))
        );
        assert_eq!(params[2].mail(), Ok(MailParam::SmtpUtf8));
        let p = |k, v| Param {
            keyword: k,
            value: v,
        };
        assert_eq!(
            p("size", Some("99999999999999999999")).mail(),
            Ok(MailParam::Size(u64::MAX))
        );
        assert_eq!(
            p("SIZE", Some("999999999999999999999")).mail(),
            Err(SyntaxError::Params)
        );
        assert_eq!(p("SIZE", Some("12a")).mail(), Err(SyntaxError::Params));
        assert_eq!(p("SIZE", None).mail(), Err(SyntaxError::Params));
        assert_eq!(
            p("body", Some("7bit")).mail(),
            Ok(MailParam::Body(BodyType::SevenBit))
        );
        assert_eq!(
            p("BODY", Some("BINARYMIME")).mail(),
            Ok(MailParam::Body(BodyType::BinaryMime))
        );
        assert_eq!(p("BODY", Some("9BIT")).mail(), Err(SyntaxError::Params));
        assert_eq!(p("SMTPUTF8", Some("x")).mail(), Err(SyntaxError::Params));
        assert_eq!(p("XMAP", Some("42")).mail(), Ok(MailParam::ClusterMap(42)));
        assert_eq!(p("xjunk", None).mail(), Ok(MailParam::ClusterJunk));
        assert_eq!(p("XCHANGES", None).mail(), Ok(MailParam::ClusterChanges));
        assert_eq!(p("XCHANGES", Some("1")).mail(), Err(SyntaxError::Params));
        for bad in [
            None,
            Some(""),
            Some("-1"),
            Some("1x"),
            Some("99999999999999999999"),
        ] {
            assert_eq!(p("XMAP", bad).mail(), Err(SyntaxError::Params), "{bad:?}");
        }
        assert_eq!(p("XJUNK", Some("1")).mail(), Err(SyntaxError::Params));
        assert_eq!(p("ENVID", Some("x")).mail(), Ok(MailParam::Unsupported));
        for bad in [
            "MAIL FROM:<a@b> =x",
            "MAIL FROM:<a@b> K=",
            "MAIL FROM:<a@b> -K",
            "MAIL FROM:<a@b> K=a=b",
        ] {
            assert_eq!(mail(bad), Err(SyntaxError::Params), "{bad}");
        }
    }

    #[test]
    fn bdat_and_auth() {
        assert_eq!(
            p("BDAT 100"),
            Ok(Command::Bdat {
                size: 100,
                last: false
            })
        );
        assert_eq!(
            p("bdat 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            p("BDAT 10 LAST junk"),
            Err(SyntaxError::Bdat { size: Some(10) })
        );
        assert_eq!(
            p("BDAT 10 FIRST"),
            Err(SyntaxError::Bdat { size: Some(10) })
        );
        assert_eq!(p("BDAT"), Err(SyntaxError::Bdat { size: None }));
        assert_eq!(p("BDAT -1"), Err(SyntaxError::Bdat { size: None }));
        assert_eq!(
            p("BDAT 99999999999999999999999"),
            Err(SyntaxError::Bdat { size: None })
        );
        assert_eq!(
            p("AUTH PLAIN"),
            Ok(Command::Auth {
                mechanism: "PLAIN",
                initial_response: None
            })
        );
        assert_eq!(
            p("AUTH PLAIN AGJvYgBzZWNyZXQ="),
            Ok(Command::Auth {
                mechanism: "PLAIN",
                initial_response: Some("AGJvYgBzZWNyZXQ=")
            })
        );
        assert_eq!(p("AUTH"), Err(SyntaxError::Arguments));
        assert_eq!(p("AUTH PLAIN a b"), Err(SyntaxError::Arguments));
        assert_eq!(p("AUTH PL@IN"), Err(SyntaxError::Arguments));
    }
}
