//! MIME content header fields (RFC 2045 section 5, RFC 2183, RFC 2231).

use std::borrow::Cow;

use super::header::{Lexer, Tok};

/// A `attribute=value` parameter, with quoting removed. RFC 2231 continued
/// parameters (`name*0`, `name*1`, ...) are joined: into `name` when plain,
/// into `name*` (value still `charset'lang'%XX`-encoded) when extended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    /// Attribute as written (compare case-insensitively).
    pub name: Cow<'a, [u8]>,
    /// Value.
    pub value: Cow<'a, [u8]>,
}

/// Look up a parameter by name (case-insensitive).
pub fn param<'p, 'a>(params: &'p [Param<'a>], name: &[u8]) -> Option<&'p Cow<'a, [u8]>> {
    params
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| &p.value)
}

/// A parsed Content-Type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentType<'a> {
    /// Top-level type, e.g. `text`.
    pub mtype: Cow<'a, [u8]>,
    /// Subtype, e.g. `plain`.
    pub subtype: Cow<'a, [u8]>,
    /// Parameters in order.
    pub params: Vec<Param<'a>>,
}

impl<'a> ContentType<'a> {
    /// `text/plain; charset=us-ascii`, the RFC 2045 section 5.2 default.
    pub fn default_text() -> Self {
        ContentType {
            mtype: Cow::Borrowed(b"text"),
            subtype: Cow::Borrowed(b"plain"),
            params: vec![Param {
                name: Cow::Borrowed(b"charset"),
                value: Cow::Borrowed(b"US-ASCII"),
            }],
        }
    }

    /// `message/rfc822`, the default inside multipart/digest (RFC 2046 5.1.5).
    pub fn default_digest() -> Self {
        ContentType {
            mtype: Cow::Borrowed(b"message"),
            subtype: Cow::Borrowed(b"rfc822"),
            params: Vec::new(),
        }
    }

    /// `application/octet-stream`, reported for structure beyond the limits.
    pub fn opaque() -> Self {
        ContentType {
            mtype: Cow::Borrowed(b"application"),
            subtype: Cow::Borrowed(b"octet-stream"),
            params: Vec::new(),
        }
    }

    /// Parse a raw (possibly folded) Content-Type value; `None` when it has no
    /// `type/subtype` (RFC 2045 section 5.2 then says to use the default).
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let mut lx = Lexer::new(value, true).filter(|t| !matches!(t, Tok::Comment(_)));
        let Some(Tok::Atom(mtype)) = lx.next() else {
            return None;
        };
        let Some(Tok::Special(b'/')) = lx.next() else {
            return None;
        };
        let Some(Tok::Atom(subtype)) = lx.next() else {
            return None;
        };
        Some(ContentType {
            mtype: Cow::Borrowed(mtype),
            subtype: Cow::Borrowed(subtype),
            params: parse_params(lx),
        })
    }

    /// Is the type `mtype/*` (case-insensitive)?
    pub fn is_type(&self, mtype: &[u8]) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype)
    }

    /// Is it exactly `mtype/subtype` (case-insensitive)?
    pub fn is(&self, mtype: &[u8], subtype: &[u8]) -> bool {
        self.is_type(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// A parameter's value.
    pub fn param(&self, name: &[u8]) -> Option<&Cow<'a, [u8]>> {
        param(&self.params, name)
    }
}

/// A parsed Content-Disposition (RFC 2183).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disposition<'a> {
    /// `inline`, `attachment`, ...
    pub kind: Cow<'a, [u8]>,
    /// Parameters (`filename`, ...).
    pub params: Vec<Param<'a>>,
}

impl<'a> Disposition<'a> {
    /// Parse a raw Content-Disposition value.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let mut lx = Lexer::new(value, true).filter(|t| !matches!(t, Tok::Comment(_)));
        let Some(Tok::Atom(kind)) = lx.next() else {
            return None;
        };
        Some(Disposition {
            kind: Cow::Borrowed(kind),
            params: parse_params(lx),
        })
    }
}

/// Parse a Content-Language value: a comma-separated list of tags.
pub fn parse_language(value: &[u8]) -> Vec<Cow<'_, [u8]>> {
    Lexer::new(value, true)
        .filter_map(|t| match t {
            Tok::Atom(a) => Some(Cow::Borrowed(a)),
            Tok::Quoted(q) => Some(q),
            _ => None,
        })
        .collect()
}

/// `*(";" attribute "=" value)`; malformed parameters are skipped.
fn parse_params<'a>(mut lx: impl Iterator<Item = Tok<'a>>) -> Vec<Param<'a>> {
    let mut raw: Vec<Param<'a>> = Vec::new();
    loop {
        // Find the next ';'.
        match lx.next() {
            None => break,
            Some(Tok::Special(b';')) => {}
            Some(_) => continue,
        }
        let Some(Tok::Atom(name)) = lx.next() else {
            continue;
        };
        let Some(Tok::Special(b'=')) = lx.next() else {
            continue;
        };
        let value: Cow<'a, [u8]> = match lx.next() {
            Some(Tok::Atom(v)) => Cow::Borrowed(v),
            Some(Tok::Quoted(q)) => q,
            // Unquoted values with tspecials (common in the wild): take what we can.
            Some(Tok::Special(b)) if b != b';' => Cow::Owned(vec![b]),
            _ => continue,
        };
        if raw.len() < 64 {
            raw.push(Param {
                name: Cow::Borrowed(name),
                value,
            });
        }
    }
    join_continuations(raw)
}

/// RFC 2231 section 3: join `name*0`, `name*1`... into one parameter.
fn join_continuations(params: Vec<Param<'_>>) -> Vec<Param<'_>> {
    fn section(name: &[u8]) -> Option<(&[u8], u32, bool)> {
        let star = memchr::memchr(b'*', name)?;
        let (base, rest) = (&name[..star], &name[star + 1..]);
        let (digits, encoded) = match rest.strip_suffix(b"*") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        if base.is_empty()
            || digits.is_empty()
            || digits.len() > 3
            || !digits.iter().all(u8::is_ascii_digit)
        {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        Some((base, n, encoded))
    }
    if !params.iter().any(|p| section(&p.name).is_some()) {
        return params;
    }
    let mut out: Vec<Param<'_>> = Vec::new();
    let mut done: Vec<Vec<u8>> = Vec::new();
    for p in &params {
        let Some((base, _, _)) = section(&p.name) else {
            out.push(p.clone());
            continue;
        };
        let key = base.to_ascii_lowercase();
        if done.contains(&key) {
            continue;
        }
        let mut parts: Vec<(u32, bool, &[u8])> = params
            .iter()
            .filter_map(|q| {
                let (b, n, enc) = section(&q.name)?;
                b.eq_ignore_ascii_case(base)
                    .then_some((n, enc, &q.value[..]))
            })
            .collect();
        parts.sort_by_key(|&(n, _, _)| n);
        let encoded = parts.first().is_some_and(|&(_, enc, _)| enc);
        let mut name = base.to_vec();
        if encoded {
            name.push(b'*');
        }
        let value: Vec<u8> = parts
            .iter()
            .flat_map(|&(_, _, v)| v.iter().copied())
            .collect();
        out.push(Param {
            name: Cow::Owned(name),
            value: Cow::Owned(value),
        });
        done.push(key);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type() {
        let ct =
            ContentType::parse(b" Multipart/Mixed; boundary=\"=_a b\"; (comment) charset=UTF-8 ")
                .unwrap();
        assert!(ct.is(b"multipart", b"MIXED"));
        assert_eq!(ct.param(b"BOUNDARY").map(|v| &v[..]), Some(&b"=_a b"[..]));
        assert_eq!(ct.param(b"charset").map(|v| &v[..]), Some(&b"UTF-8"[..]));
        assert!(ContentType::parse(b"text").is_none());
        assert!(ContentType::parse(b"").is_none());
        let ct = ContentType::parse(b"text/plain;; foo; a=b;").unwrap();
        assert_eq!(ct.params.len(), 1);
    }

    #[test]
    fn rfc2231_continuations() {
        let ct = ContentType::parse(
            b"message/external-body; access-type=URL;\r\n URL*0=\"ftp://\";\r\n URL*1=\"cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar\"",
        )
        .unwrap();
        assert_eq!(
            ct.param(b"url").map(|v| &v[..]),
            Some(&b"ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar"[..])
        );
        let d =
            Disposition::parse(b"attachment; filename*1*=%20b.txt; filename*0*=utf-8''a").unwrap();
        assert_eq!(d.kind, &b"attachment"[..]);
        assert_eq!(
            d.params,
            vec![Param {
                name: Cow::Borrowed(b"filename*"),
                value: Cow::Borrowed(b"utf-8''a%20b.txt")
            }]
        );
        assert_eq!(
            parse_language(b"en, de-CH"),
            vec![Cow::Borrowed(&b"en"[..]), Cow::Borrowed(&b"de-CH"[..])]
        );
    }
}
