//! Decoding for SEARCH: transfer encodings (RFC 2045 section 6), encoded
//! words (RFC 2047), a few charsets, case-insensitive substring matching and
//! RFC 5322 dates. All best effort: bad input decodes to something, never
//! to a panic.

use std::borrow::Cow;

use super::header::{fields, unfold};
use super::tree::{Message, Part, PartKind};
use crate::protocol::imap::{Date, DateTime};

/// Decode base64, skipping characters outside the alphabet (line ends) and
/// stopping at padding.
pub fn base64_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in input {
        if b == b'=' {
            break;
        }
        let Some(v) = crate::util::base64_value(b) else {
            continue;
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decode quoted-printable (RFC 2045 section 6.7). With `header` set, this is
/// the RFC 2047 "Q" encoding, where `_` is a space.
pub fn qp_decode(input: &[u8], header: bool) -> Vec<u8> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'=' {
            match (input.get(i + 1), input.get(i + 2)) {
                (Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                    out.push(hex(h).unwrap_or(0) << 4 | hex(l).unwrap_or(0));
                    i += 3;
                    continue;
                }
                _ => {
                    // A soft line break: `=`, transport padding (rule 3),
                    // then the line end.
                    let pad = input[i + 1..].iter().take_while(|b| blank(b)).count();
                    let after = &input[i + 1 + pad..];
                    let end = match after {
                        [b'\r', b'\n', ..] => Some(2),
                        [b'\n', ..] => Some(1),
                        _ => None,
                    };
                    if let Some(n) = end {
                        i += 1 + pad + n;
                        continue;
                    }
                    out.push(b'=');
                }
            }
        } else if !header && blank(&b) {
            // Rule 3: whitespace at the end of an encoded line was added in
            // transport and is deleted.
            let run = input[i..].iter().take_while(|b| blank(b)).count();
            let rest = &input[i + run..];
            if !(rest.is_empty() || rest.starts_with(b"\r\n") || rest.starts_with(b"\n")) {
                out.extend_from_slice(&input[i..i + run]);
            }
            i += run;
            continue;
        } else if b == b'_' && header {
            out.push(b' ');
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

/// Convert text in `charset` to UTF-8. Known: UTF-8, US-ASCII,
/// ISO-8859-1/Latin-1 (and Windows-1252 approximated by it); anything else is
/// read as UTF-8 with replacement characters.
pub fn to_utf8<'a>(bytes: &'a [u8], charset: &[u8]) -> Cow<'a, str> {
    let cs = charset.split(|&b| b == b'*').next().unwrap_or_default();
    let latin1 = [
        &b"iso-8859-1"[..],
        b"iso8859-1",
        b"latin1",
        b"l1",
        b"windows-1252",
        b"cp1252",
        b"iso_8859-1",
    ]
    .iter()
    .any(|c| cs.eq_ignore_ascii_case(c));
    if latin1 {
        if bytes.is_ascii() {
            // Valid UTF-8 already.
            return String::from_utf8_lossy(bytes);
        }
        return Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect());
    }
    String::from_utf8_lossy(bytes)
}

/// Decode RFC 2047 encoded words in a header value (unfolded first) to
/// UTF-8. Whitespace between two adjacent encoded words is dropped (RFC 2047
/// section 6.2); malformed words are kept as written.
pub fn decode_header(value: &[u8]) -> String {
    let value = unfold(value);
    let mut out = String::with_capacity(value.len());
    let mut rest: &[u8] = &value;
    let mut pending_ws: &[u8] = b"";
    let mut last_was_word = false;
    while !rest.is_empty() {
        if let Some((text, used)) = encoded_word(rest) {
            if !last_was_word {
                out.push_str(&String::from_utf8_lossy(pending_ws));
            }
            out.push_str(&text);
            pending_ws = b"";
            last_was_word = true;
            rest = &rest[used..];
            continue;
        }
        // Whitespace run: held back in case an encoded word follows.
        let ws = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        if ws > 0 {
            out.push_str(&String::from_utf8_lossy(pending_ws));
            pending_ws = &rest[..ws];
            rest = &rest[ws..];
            continue;
        }
        out.push_str(&String::from_utf8_lossy(pending_ws));
        pending_ws = b"";
        let word = rest
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(rest.len());
        out.push_str(&String::from_utf8_lossy(&rest[..word]));
        rest = &rest[word..];
        last_was_word = false;
    }
    out.push_str(&String::from_utf8_lossy(pending_ws));
    out
}

/// `=?charset?B|Q?text?=` at the start of `s`: decoded text and length used.
fn encoded_word(s: &[u8]) -> Option<(String, usize)> {
    let s2 = s.strip_prefix(b"=?")?;
    let q1 = memchr::memchr(b'?', s2)?;
    let charset = &s2[..q1];
    let enc = *s2.get(q1 + 1)?;
    if s2.get(q1 + 2) != Some(&b'?') {
        return None;
    }
    let text_start = q1 + 3;
    let end = memchr::memmem::find(s2.get(text_start..)?, b"?=")? + text_start;
    let text = &s2[text_start..end];
    if text.iter().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let raw = match enc.to_ascii_uppercase() {
        b'B' => base64_decode(text),
        b'Q' => qp_decode(text, true),
        _ => return None,
    };
    Some((to_utf8(&raw, charset).into_owned(), end + 2 + 2))
}

/// Case-insensitive substring test: Unicode simple lowercase folding
/// (ASCII folding for ASCII text). An empty needle always matches.
pub fn contains_ci(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if haystack.is_ascii() && needle.is_ascii() {
        let h = haystack.as_bytes();
        let n = needle.as_bytes();
        return h.len() >= n.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    let fold = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<String>();
    memchr::memmem::find(fold(haystack).as_bytes(), fold(needle).as_bytes()).is_some()
}

/// SEARCH HEADER / FROM / SUBJECT ...: does any field called `name` contain
/// `needle` once encoded words are decoded? With an empty needle, matches any
/// message that has the field (RFC 3501 section 6.4.4).
pub fn header_contains(header: &[u8], name: &[u8], needle: &str) -> bool {
    fields(header)
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .any(|f| contains_ci(&decode_header(f.value), needle))
}

/// SEARCH FROM / TO / CC / BCC (RFC 3501 6.4.4): [`header_contains`], and
/// also each address of the field as parsed (RFC 5322 3.4), rendered as
/// `name <local@domain>` without the comments and folding white space
/// (CFWS) the syntax allows inside it, so `<user (x)@ (y) example.org>`
/// matches `user@example.org` like `<user@example.org>` does.
pub fn address_header_contains(header: &[u8], name: &[u8], needle: &str) -> bool {
    use super::address::{parse_address_list, Address, MISSING_HOST};
    fields(header)
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .any(|f| {
            contains_ci(&decode_header(f.value), needle)
                || parse_address_list(f.value).iter().any(|a| match a {
                    Address::Mailbox {
                        name,
                        mailbox,
                        host,
                        ..
                    } => {
                        let mut s = String::new();
                        if let Some(n) = name {
                            s.push_str(&decode_header(n));
                            s.push(' ');
                        }
                        s.push('<');
                        s.push_str(&String::from_utf8_lossy(mailbox));
                        if host != MISSING_HOST {
                            s.push('@');
                            s.push_str(&String::from_utf8_lossy(host));
                        }
                        s.push('>');
                        contains_ci(&s, needle)
                    }
                    Address::GroupStart(n) => contains_ci(&decode_header(n), needle),
                    Address::GroupEnd => false,
                })
        })
}

/// The decoded text of a leaf: transfer encoding removed, charset converted.
pub fn decoded_text<'a>(part: &Part<'a>) -> Cow<'a, str> {
    let enc = &part.encoding;
    let raw: Cow<'a, [u8]> = if enc.eq_ignore_ascii_case(b"base64") {
        Cow::Owned(base64_decode(part.body))
    } else if enc.eq_ignore_ascii_case(b"quoted-printable") {
        Cow::Owned(qp_decode(part.body, false))
    } else {
        Cow::Borrowed(part.body)
    };
    let charset = part
        .content_type
        .param(b"charset")
        .map(|c| c.to_vec())
        .unwrap_or_default();
    match raw {
        Cow::Borrowed(b) => to_utf8(b, &charset),
        Cow::Owned(v) => Cow::Owned(to_utf8(&v, &charset).into_owned()),
    }
}

/// Walk the searchable text of a part: text leaves, and the headers of
/// attached messages. Stops at the first `true`.
fn any_text(part: &Part<'_>, f: &mut dyn FnMut(Searchable<'_, '_>) -> bool) -> bool {
    match &part.kind {
        PartKind::Multipart(children) => children.iter().any(|c| any_text(c, f)),
        PartKind::Message(inner) => f(Searchable::Header(inner.header)) || any_text(inner, f),
        PartKind::Leaf => part.content_type.is_type(b"text") && f(Searchable::Text(part)),
    }
}

enum Searchable<'p, 'a> {
    Header(&'a [u8]),
    Text(&'p Part<'a>),
}

/// SEARCH BODY: does any text part (decoded) contain `needle`? Non-text
/// leaves (images, attachments) are not searched; headers of attached
/// messages are.
pub fn body_contains(msg: &Message<'_>, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    any_text(&msg.root, &mut |s| match s {
        Searchable::Text(p) => contains_ci(&decoded_text(p), needle),
        Searchable::Header(h) => fields(h).any(|f| contains_ci(&decode_header(f.value), needle)),
    })
}

/// SEARCH TEXT: the header or the body contains `needle`.
pub fn text_contains(msg: &Message<'_>, needle: &str) -> bool {
    fields(msg.root.header).any(|f| contains_ci(&decode_header(f.value), needle))
        || body_contains(msg, needle)
}

/// Parse an RFC 5322 date-time (section 3.3, with the obsolete forms of
/// section 4.3: two-digit years, missing seconds, named zones). Returns the
/// local date and time with its zone.
pub fn parse_rfc5322_date(value: &[u8]) -> Option<DateTime> {
    let value = unfold(value);
    let mut words = value
        .split(|&b| b.is_ascii_whitespace() || b == b',')
        .filter(|w| !w.is_empty() && !w.starts_with(b"("));
    let mut w = words.next()?;
    if w.first()?.is_ascii_alphabetic() {
        w = words.next()?; // day of week
    }
    let day = num(w)?;
    let month = words.next()?;
    const MONTHS: [&[u8]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| month.len() >= 3 && month[..3].eq_ignore_ascii_case(m))?
        as u8
        + 1;
    let y = words.next()?;
    let mut year = num(y)?;
    if y.len() <= 2 {
        year += if year < 50 { 2000 } else { 1900 };
    } else if y.len() == 3 {
        year += 1900;
    }
    let date = Date::new(u16::try_from(year).ok()?, month, u8::try_from(day).ok()?)?;
    let mut dt = DateTime {
        date,
        hour: 0,
        minute: 0,
        second: 0,
        zone_minutes: 0,
    };
    let Some(time) = words.next() else {
        return Some(dt);
    };
    let mut hms = time.split(|&b| b == b':');
    dt.hour = u8::try_from(num(hms.next()?)?).ok().filter(|&h| h < 24)?;
    dt.minute = u8::try_from(num(hms.next()?)?).ok().filter(|&m| m < 60)?;
    dt.second = match hms.next() {
        Some(s) => u8::try_from(num(s)?).ok().filter(|&s| s <= 60)?,
        None => 0,
    };
    dt.zone_minutes = words.next().map_or(0, zone);
    Some(dt)
}

fn num(w: &[u8]) -> Option<u32> {
    if w.is_empty() || w.len() > 4 || !w.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(w.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0')))
}

fn zone(z: &[u8]) -> i16 {
    if let (Some(&s @ (b'+' | b'-')), Some(d)) = (z.first(), z.get(1..5)) {
        if let Some(n) = num(d) {
            let m = (n / 100 * 60 + n % 100) as i16;
            return if s == b'-' { -m } else { m };
        }
    }
    // RFC 5322 section 4.3 obsolete zone names; others count as +0000.
    let hours: i16 = match z.to_ascii_uppercase().as_slice() {
        b"EDT" => -4,
        b"EST" | b"CDT" => -5,
        b"CST" | b"MDT" => -6,
        b"MST" | b"PDT" => -7,
        b"PST" => -8,
        _ => 0,
    };
    hours * 60
}

/// The Date: header's date, disregarding time and zone (for SENTBEFORE,
/// SENTON, SENTSINCE, RFC 3501 section 6.4.4).
pub fn sent_date(header: &[u8]) -> Option<Date> {
    let v = super::header::field_value(header, b"Date")?;
    parse_rfc5322_date(v).map(|dt| dt.date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_encodings() {
        assert_eq!(
            base64_decode(b"SGVsbG8s\r\nIHdvcmxk\r\nIQ=="),
            b"Hello, world!"
        );
        assert_eq!(base64_decode(b"!!"), b"");
        assert_eq!(
            qp_decode(b"caf=C3=A9 =\r\nau lait=3D=\nok =zz", false),
            "café au lait=ok =zz".as_bytes()
        );
        assert_eq!(qp_decode(b"a_b=5F", true), b"a b_");
        assert_eq!(qp_decode(b"=", false), b"=");
    }

    #[test]
    fn encoded_words() {
        // RFC 2047 section 8 examples.
        assert_eq!(
            decode_header(b"=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>"),
            "Keld Jørn Simonsen <keld@dkuug.dk>"
        );
        assert_eq!(
            decode_header(b"=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?="),
            "ab"
        );
        assert_eq!(
            decode_header(b"=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?="),
            "ab"
        );
        assert_eq!(
            decode_header(b"(=?ISO-8859-1?Q?a?= b)"),
            "(=?ISO-8859-1?Q?a?= b)"
        );
        assert_eq!(decode_header(b"=?ISO-8859-1?Q?a?= b"), "a b");
        assert_eq!(decode_header(b"=?utf-8?B?w6lsw6hyZQ==?= x"), "élère x");
        assert_eq!(
            decode_header(b"=?US-ASCII*EN?Q?Keith_Moore?="),
            "Keith Moore"
        );
        assert_eq!(decode_header(b"=?bogus?X?abc?= =?x"), "=?bogus?X?abc?= =?x");
    }

    #[test]
    fn case_insensitive_search() {
        assert!(contains_ci("Hello World", "WORLD"));
        assert!(!contains_ci("Hello", "hello!"));
        assert!(contains_ci("Grüße aus KÖLN", "köln"));
        assert!(contains_ci("x", ""));
    }

    #[test]
    fn rfc5322_dates() {
        let dt = parse_rfc5322_date(b"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)").unwrap();
        assert_eq!(
            (dt.date, dt.hour, dt.minute, dt.second, dt.zone_minutes),
            (Date::new(1996, 7, 17).unwrap(), 2, 23, 25, -420)
        );
        let dt = parse_rfc5322_date(b"1 Jan 99 10:00 EST").unwrap();
        assert_eq!((dt.date.year, dt.second, dt.zone_minutes), (1999, 0, -300));
        assert!(parse_rfc5322_date(b"yesterday").is_none());
        assert_eq!(
            sent_date(b"Date: 7 Feb 1994 21:52:25 -0800\r\n\r\n"),
            Date::new(1994, 2, 7)
        );
    }
}
