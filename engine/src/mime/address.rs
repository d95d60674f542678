//! Address lists (RFC 5322 section 3.4) as the IMAP ENVELOPE needs them:
//! name, source route, mailbox and host, with group syntax kept as the
//! RFC 3501 section 7.4.2 start/end markers. Lenient: anything unparsable is
//! skipped, encoded words are left encoded.

use super::header::{Lexer, Tok};

/// Host used for an address without a domain, as c-client and its
/// descendants do; NIL would turn the address into a group marker.
pub const MISSING_HOST: &[u8] = b".MISSING-HOST-NAME.";

/// One ENVELOPE address structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A mailbox: `(name adl mailbox host)`.
    Mailbox {
        /// Display name (phrase or, failing that, a trailing comment).
        name: Option<Vec<u8>>,
        /// Obsolete source route, e.g. `@a,@b`.
        adl: Option<Vec<u8>>,
        /// Local part.
        mailbox: Vec<u8>,
        /// Domain.
        host: Vec<u8>,
    },
    /// Start of a group: `(NIL NIL "name" NIL)`.
    GroupStart(Vec<u8>),
    /// End of a group: `(NIL NIL NIL NIL)`.
    GroupEnd,
}

fn push_word(out: &mut Vec<u8>, w: &[u8]) {
    if !out.is_empty() {
        out.push(b' ');
    }
    out.extend_from_slice(w);
}

fn unfold_comment(c: &[u8]) -> Vec<u8> {
    c.iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect()
}

/// Parse an address-list header value.
pub fn parse_address_list(value: &[u8]) -> Vec<Address> {
    let toks: Vec<Tok<'_>> = Lexer::new(value, false).collect();
    let mut out = Vec::new();
    let mut in_group = false;
    let mut i = 0;
    while i < toks.len() {
        // One address (or group start) runs to ',', ';' or ':' at this level.
        let start = i;
        let mut angle: Option<usize> = None;
        while i < toks.len() {
            match toks[i] {
                Tok::Special(b'<') if angle.is_none() => angle = Some(i),
                Tok::Special(b'>') => {}
                Tok::Special(b',' | b';')
                    if angle.is_none() || angle_closed(&toks[angle.unwrap_or(0)..i]) =>
                {
                    break
                }
                Tok::Special(b':') if angle.is_none() && !in_group => break,
                _ => {}
            }
            i += 1;
        }
        let seg = &toks[start..i];
        match toks.get(i) {
            Some(Tok::Special(b':')) => {
                out.push(Address::GroupStart(phrase(seg)));
                in_group = true;
            }
            sep => {
                if let Some(a) = mailbox(seg) {
                    out.push(a);
                }
                if matches!(sep, Some(Tok::Special(b';'))) && in_group {
                    out.push(Address::GroupEnd);
                    in_group = false;
                }
            }
        }
        i += 1;
    }
    if in_group {
        out.push(Address::GroupEnd);
    }
    out
}

fn angle_closed(toks: &[Tok<'_>]) -> bool {
    toks.contains(&Tok::Special(b'>'))
}

/// Words of a phrase joined by single spaces (quotes removed).
fn phrase(toks: &[Tok<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in toks {
        match t {
            Tok::Atom(a) => push_word(&mut out, a),
            Tok::Quoted(q) => push_word(&mut out, q),
            Tok::Special(b'.') => out.push(b'.'),
            _ => {}
        }
    }
    out
}

/// `local "@" domain` from a token run, as (mailbox, host).
fn addr_spec(toks: &[Tok<'_>]) -> Option<(Vec<u8>, Vec<u8>)> {
    let at = toks.iter().rposition(|t| *t == Tok::Special(b'@'));
    let (local, domain) = match at {
        Some(at) => (&toks[..at], &toks[at + 1..]),
        None => (toks, &toks[toks.len()..]),
    };
    let mut mailbox = Vec::new();
    for t in local {
        match t {
            Tok::Atom(a) => mailbox.extend_from_slice(a),
            Tok::Quoted(q) => mailbox.extend_from_slice(q),
            Tok::Special(b'.') => mailbox.push(b'.'),
            _ => {}
        }
    }
    let mut host = Vec::new();
    for t in domain {
        match t {
            Tok::Atom(a) | Tok::DomainLiteral(a) => host.extend_from_slice(a),
            Tok::Special(b'.') => host.push(b'.'),
            _ => {}
        }
    }
    if mailbox.is_empty() {
        return None;
    }
    if host.is_empty() {
        host = MISSING_HOST.to_vec();
    }
    Some((mailbox, host))
}

fn mailbox(seg: &[Tok<'_>]) -> Option<Address> {
    // A comment may stand in for the display name, but not one inside the
    // angle brackets (CFWS within the address, RFC 5322 3.4).
    let mut inside = false;
    let first_comment = seg.iter().find_map(|t| match t {
        Tok::Special(b'<') => {
            inside = true;
            None
        }
        Tok::Special(b'>') => {
            inside = false;
            None
        }
        Tok::Comment(c) if !inside => Some(unfold_comment(c)),
        _ => None,
    });
    let words: Vec<Tok<'_>> = seg
        .iter()
        .filter(|t| !matches!(t, Tok::Comment(_)))
        .cloned()
        .collect();
    if words.is_empty() {
        return None;
    }
    if let Some(lt) = words.iter().position(|t| *t == Tok::Special(b'<')) {
        let gt = words
            .iter()
            .position(|t| *t == Tok::Special(b'>'))
            .filter(|&g| g > lt)
            .unwrap_or(words.len());
        let inner = &words[lt + 1..gt];
        // Obsolete route: "@a,@b:" before the addr-spec (RFC 5322 section 4.4).
        let (adl, spec) = match inner.iter().position(|t| *t == Tok::Special(b':')) {
            Some(colon) => {
                let mut adl = Vec::new();
                for t in &inner[..colon] {
                    match t {
                        Tok::Atom(a) | Tok::DomainLiteral(a) => adl.extend_from_slice(a),
                        Tok::Special(c @ (b'@' | b',' | b'.')) => adl.push(*c),
                        _ => {}
                    }
                }
                (Some(adl).filter(|a| !a.is_empty()), &inner[colon + 1..])
            }
            None => (None, inner),
        };
        let (mailbox, host) = addr_spec(spec)?;
        let name = phrase(&words[..lt]);
        let name = if name.is_empty() {
            first_comment
        } else {
            Some(name)
        };
        return Some(Address::Mailbox {
            name,
            adl,
            mailbox,
            host,
        });
    }
    let (mailbox, host) = addr_spec(&words)?;
    Some(Address::Mailbox {
        name: first_comment,
        adl: None,
        mailbox,
        host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(name: Option<&str>, mailbox: &str, host: &str) -> Address {
        Address::Mailbox {
            name: name.map(|n| n.as_bytes().to_vec()),
            adl: None,
            mailbox: mailbox.as_bytes().to_vec(),
            host: host.as_bytes().to_vec(),
        }
    }

    #[test]
    fn address_forms() {
        assert_eq!(
            parse_address_list(b"\"Doe, John\" <john.doe@example.com>, jane@example.org (Jane R.)"),
            vec![
                mb(Some("Doe, John"), "john.doe", "example.com"),
                mb(Some("Jane R."), "jane", "example.org")
            ]
        );
        assert_eq!(
            parse_address_list(b"John Q. Public <JQP@x.example>"),
            vec![mb(Some("John Q. Public"), "JQP", "x.example")]
        );
        assert_eq!(
            parse_address_list(b"=?utf-8?q?J=C3=B6rg?= <j@example.com>"),
            vec![mb(Some("=?utf-8?q?J=C3=B6rg?="), "j", "example.com")]
        );
        assert_eq!(
            parse_address_list(b"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, Mary <mary@x.test>"),
            vec![
                Address::GroupStart(b"A Group".to_vec()),
                mb(Some("Ed Jones"), "c", "a.test"),
                mb(None, "joe", "where.test"),
                mb(Some("John"), "jdoe", "one.test"),
                Address::GroupEnd,
                mb(Some("Mary"), "mary", "x.test"),
            ]
        );
        assert_eq!(
            parse_address_list(b"undisclosed-recipients:;"),
            vec![
                Address::GroupStart(b"undisclosed-recipients".to_vec()),
                Address::GroupEnd
            ]
        );
        assert_eq!(
            parse_address_list(b"<@route.a,@route.b:user@host>"),
            vec![Address::Mailbox {
                name: None,
                adl: Some(b"@route.a,@route.b".to_vec()),
                mailbox: b"user".to_vec(),
                host: b"host".to_vec()
            }]
        );
        assert_eq!(
            parse_address_list(b"localonly"),
            vec![mb(None, "localonly", ".MISSING-HOST-NAME.")]
        );
        // Comments and folding white space inside the address (RFC 5322 3.4).
        assert_eq!(
            parse_address_list(b"<user-from (comment)@ (comment) domain.org>"),
            vec![mb(None, "user-from", "domain.org")]
        );
        assert_eq!(
            parse_address_list(b"Name (c1) <u (c2) . v @ (c3)\r\n example . org> (trailing)"),
            vec![mb(Some("Name"), "u.v", "example.org")]
        );
        assert_eq!(
            parse_address_list(b"<u(x)@d.org> (Real Name)"),
            vec![mb(Some("Real Name"), "u", "d.org")]
        );
        assert_eq!(parse_address_list(b" , ,"), vec![]);
        for junk in [
            &b"<<<>>>"[..],
            b"@@@",
            b"a:b:c;;;",
            b"\"unterminated",
            b"(",
            b"<a@b",
            b">,<",
        ] {
            let _ = parse_address_list(junk);
        }
    }
}
