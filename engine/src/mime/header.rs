//! Header sections (RFC 5322 section 2.2): where the header ends, its fields,
//! and unfolding. Everything borrows from the message.

use std::borrow::Cow;

/// Split a message or MIME part into its header section and body.
///
/// The header slice includes the blank line that ends it (so BODY[HEADER]
/// and BODY[n.MIME] can be served as is); the body starts right after it.
/// Bare LF line ends are accepted. A line that is neither a header field nor
/// a continuation also ends the header (a message whose blank line is
/// missing); the header then has no blank line and the body starts at that
/// line. Without either, the whole input is header and the body is empty.
pub fn split(msg: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < msg.len() {
        let end = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return (&msg[..end], &msg[end..]);
        }
        let continuation = matches!(line[0], b' ' | b'\t');
        if !continuation && !is_field_line(line) {
            return (&msg[..pos], &msg[pos..]);
        }
        pos = end;
    }
    (msg, &msg[msg.len()..])
}

/// `field-name ":"` where field-name is printable ASCII except colon
/// (RFC 5322 section 3.6.8), tolerating whitespace before the colon.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    let name = trim_end(&line[..colon]);
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &s[..n]
}

/// Trim ASCII whitespace (including CR and LF) on both sides.
pub fn trim(s: &[u8]) -> &[u8] {
    let s = trim_end(s);
    let n = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    &s[n..]
}

/// One header field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name as written (compare case-insensitively).
    pub name: &'a [u8],
    /// The raw value after the colon, still folded, without the final line end.
    pub value: &'a [u8],
    /// The whole field, from its name to its final line end inclusive.
    pub raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The value unfolded (RFC 5322 section 2.2.3) and trimmed.
    pub fn unfolded(&self) -> Cow<'a, [u8]> {
        unfold(self.value)
    }
}

/// Iterator over the fields of a header section (see [`fields`]).
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

/// Iterate the fields of `header` (as returned by [`split`]). Lines that are
/// not fields (garbage, or continuations with no field before them) are
/// skipped.
pub fn fields(header: &[u8]) -> Fields<'_> {
    Fields { rest: header }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // The field runs to the first line end not followed by WSP.
            let mut end = 0;
            loop {
                match memchr::memchr(b'\n', &self.rest[end..]) {
                    Some(i) => {
                        end += i + 1;
                        if !matches!(self.rest.get(end), Some(b' ' | b'\t')) {
                            break;
                        }
                    }
                    None => {
                        end = self.rest.len();
                        break;
                    }
                }
            }
            let raw = &self.rest[..end];
            self.rest = &self.rest[end..];
            let Some(colon) = memchr::memchr(b':', raw) else {
                continue;
            };
            let name = trim_end(&raw[..colon]);
            if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
                continue;
            }
            let mut value = &raw[colon + 1..];
            value = value.strip_suffix(b"\n").unwrap_or(value);
            value = value.strip_suffix(b"\r").unwrap_or(value);
            return Some(Field { name, value, raw });
        }
    }
}

/// Unfold a field value: drop every CR and LF (folding is a line end before
/// whitespace, and a value never contains other line ends), then trim.
/// Borrows when there was nothing to remove.
pub fn unfold(value: &[u8]) -> Cow<'_, [u8]> {
    let value = trim(value);
    if memchr::memchr2(b'\r', b'\n', value).is_none() {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(
            value
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect(),
        )
    }
}

/// The raw (folded) value of the first field called `name`
/// (case-insensitive), if any.
pub fn field_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    fields(header)
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
}

/// Raw values of every field called `name`, in order.
pub fn field_values<'a>(header: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields(header)
        .filter(move |f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
}

/// Build the HEADER.FIELDS / HEADER.FIELDS.NOT subset (RFC 3501 section
/// 6.4.5): the matching fields, byte for byte in message order, followed by
/// a blank line. Matching is case-insensitive but otherwise exact.
pub fn select_fields<N: AsRef<[u8]>>(header: &[u8], names: &[N], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields(header) {
        let listed = names
            .iter()
            .any(|n| n.as_ref().eq_ignore_ascii_case(f.name));
        if listed != not {
            out.extend_from_slice(f.raw);
            if !f.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Tokens of a structured field (RFC 5322 section 3.2, RFC 2045 section 5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    /// An atom (address mode: atext and dots; MIME mode: a token).
    Atom(&'a [u8]),
    /// A quoted string, unquoted and unfolded.
    Quoted(Cow<'a, [u8]>),
    /// A comment's contents (outer parentheses removed, still raw).
    Comment(&'a [u8]),
    /// A domain literal including brackets.
    DomainLiteral(&'a [u8]),
    /// Any other special character.
    Special(u8),
}

/// Lexer for structured field values. Folding whitespace is skipped like any
/// whitespace; nothing here can fail, malformed input yields odd tokens.
pub(crate) struct Lexer<'a> {
    s: &'a [u8],
    p: usize,
    mime: bool,
}

impl<'a> Lexer<'a> {
    /// `mime`: use RFC 2045 tspecials (so `/`, `=`, `?` are specials).
    pub(crate) fn new(s: &'a [u8], mime: bool) -> Self {
        Lexer { s, p: 0, mime }
    }

    fn is_special(&self, b: u8) -> bool {
        match b {
            b'(' | b')' | b'<' | b'>' | b'@' | b',' | b';' | b':' | b'\\' | b'"' | b'[' | b']' => {
                true
            }
            b'/' | b'?' | b'=' => self.mime,
            _ => b.is_ascii_whitespace() || b < 0x20 || b == 0x7f,
        }
    }

    fn quoted(&mut self) -> Cow<'a, [u8]> {
        self.p += 1;
        let start = self.p;
        let mut owned: Option<Vec<u8>> = None;
        while self.p < self.s.len() {
            match self.s[self.p] {
                b'"' => {
                    let slice = &self.s[start..self.p];
                    self.p += 1;
                    return owned.map_or(Cow::Borrowed(slice), Cow::Owned);
                }
                b'\\' if self.p + 1 < self.s.len() => {
                    let v = owned.get_or_insert_with(|| self.s[start..self.p].to_vec());
                    v.push(self.s[self.p + 1]);
                    self.p += 2;
                }
                b'\r' | b'\n' => {
                    owned.get_or_insert_with(|| self.s[start..self.p].to_vec());
                    self.p += 1;
                }
                c => {
                    if let Some(v) = owned.as_mut() {
                        v.push(c);
                    }
                    self.p += 1;
                }
            }
        }
        // Unterminated: everything to the end.
        owned.map_or(Cow::Borrowed(&self.s[start..]), Cow::Owned)
    }

    fn comment(&mut self) -> &'a [u8] {
        let start = self.p + 1;
        let mut depth = 0usize;
        while self.p < self.s.len() {
            match self.s[self.p] {
                b'\\' => self.p += 1,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        self.p += 1;
                        return &self.s[start..self.p - 1];
                    }
                }
                _ => {}
            }
            self.p += 1;
        }
        &self.s[start.min(self.s.len())..]
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        while self.p < self.s.len() && self.s[self.p].is_ascii_whitespace() {
            self.p += 1;
        }
        let b = *self.s.get(self.p)?;
        Some(match b {
            b'"' => Tok::Quoted(self.quoted()),
            b'(' => Tok::Comment(self.comment()),
            b'[' if !self.mime => {
                let start = self.p;
                let end =
                    memchr::memchr(b']', &self.s[start..]).map_or(self.s.len(), |i| start + i + 1);
                self.p = end;
                Tok::DomainLiteral(&self.s[start..end])
            }
            _ if self.is_special(b) => {
                self.p += 1;
                Tok::Special(b)
            }
            _ => {
                let start = self.p;
                while self.p < self.s.len() && !self.is_special(self.s[self.p]) {
                    self.p += 1;
                }
                Tok::Atom(&self.s[start..self.p])
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_variants() {
        assert_eq!(
            split(b"A: b\r\n\r\nbody"),
            (&b"A: b\r\n\r\n"[..], &b"body"[..])
        );
        assert_eq!(split(b"A: b\n\nbody\n"), (&b"A: b\n\n"[..], &b"body\n"[..]));
        assert_eq!(split(b"\r\nbody"), (&b"\r\n"[..], &b"body"[..]));
        assert_eq!(split(b"A: b\r\n"), (&b"A: b\r\n"[..], &b""[..]));
        // Missing blank line: the first non-field line starts the body.
        assert_eq!(
            split(b"A: b\r\n folded\r\nHello world\r\n"),
            (&b"A: b\r\n folded\r\n"[..], &b"Hello world\r\n"[..])
        );
        assert_eq!(split(b""), (&b""[..], &b""[..]));
    }

    #[test]
    fn fields_and_unfolding() {
        let h = b"Subject: a\r\n  b\r\nX-Y :z\nbroken line\r\nTo: t\r\n\r\n";
        let f: Vec<Field<'_>> = fields(h).collect();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, b"Subject");
        assert_eq!(f[0].raw, b"Subject: a\r\n  b\r\n");
        assert_eq!(f[0].unfolded(), &b"a  b"[..]);
        assert_eq!(f[1].name, b"X-Y");
        assert_eq!(f[1].unfolded(), &b"z"[..]);
        assert_eq!(field_value(h, b"to"), Some(&b" t"[..]));
        assert_eq!(field_value(h, b"cc"), None);
        assert_eq!(
            select_fields(h, &[&b"TO"[..], b"subject"], false),
            b"Subject: a\r\n  b\r\nTo: t\r\n\r\n"
        );
        assert_eq!(select_fields(h, &["to", "subject"], true), b"X-Y :z\n\r\n");
    }

    #[test]
    fn lexer() {
        let toks: Vec<Tok<'_>> = Lexer::new(
            b"text/plain; charset=\"us\\\"-\r\n ascii\" (c (nested))",
            true,
        )
        .collect();
        assert_eq!(
            toks,
            vec![
                Tok::Atom(b"text"),
                Tok::Special(b'/'),
                Tok::Atom(b"plain"),
                Tok::Special(b';'),
                Tok::Atom(b"charset"),
                Tok::Special(b'='),
                Tok::Quoted(Cow::Owned(b"us\"- ascii".to_vec())),
                Tok::Comment(b"c (nested)"),
            ]
        );
        // Unterminated constructs never panic.
        for s in [&b"\"abc"[..], b"(abc", b"((", b"\\", b"\"\\", b"[x", b")"] {
            let _: Vec<Tok<'_>> = Lexer::new(s, false).collect();
            let _: Vec<Tok<'_>> = Lexer::new(s, true).collect();
        }
    }
}
