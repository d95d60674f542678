//! Pure functions over a message's bytes for inbound authentication: finding
//! the header fields to remove as forged (RFC 8601 section 5), the end of the
//! first field (our own `Received:`), counting signature fields, and the
//! `pct` tag of a DMARC record (RFC 7489 section 6.3). No I/O, no allocation
//! beyond the returned ranges; every function accepts any bytes (fuzzed).
use std::borrow::Cow;
use std::ops::Range;

/// Where the header section ends: the offset of the empty line that ends
/// it, or the whole message when there is none (a message of header fields
/// only). A bare LF counts as a line end, as in the rest of the MIME code.
pub fn header_len(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        let line_end = memchr::memchr(b'\n', &message[at..]).map_or(message.len(), |i| at + i + 1);
        let line = &message[at..line_end];
        if line == b"\r\n" || line == b"\n" {
            return at;
        }
        at = line_end;
    }
    message.len()
}

/// The header fields of `message` (name, whole field with its line end), in
/// order. A field is its first line plus every continuation line starting
/// with SP or HTAB (RFC 5322 section 2.2.3). Lines that are no field (no
/// colon) are returned with an empty name, so the ranges cover the header.
pub fn fields(message: &[u8]) -> impl Iterator<Item = (&[u8], Range<usize>)> {
    let end = header_len(message);
    let header = &message[..end];
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= header.len() {
            return None;
        }
        let start = at;
        loop {
            at = memchr::memchr(b'\n', &header[at..]).map_or(header.len(), |i| at + i + 1);
            if at >= header.len() || !matches!(header[at], b' ' | b'\t') {
                break;
            }
        }
        let line = &header[start..at];
        let name = match memchr::memchr(b':', line) {
            Some(colon) => trim_ws(&line[..colon]),
            None => &[][..],
        };
        Some((name, start..at))
    })
}

fn trim_ws(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// The length of the message's first header field (with its continuation
/// lines and line end): ringmail's own `Received:` field, which the session
/// put in front of the message as received.
pub fn first_field_len(message: &[u8]) -> usize {
    fields(message).next().map_or(0, |(_, r)| r.end)
}

/// The authserv-id of an Authentication-Results field value (RFC 8601
/// section 2.2: `[CFWS] authserv-id`, a token or a quoted string), with
/// comments and folding skipped, and a quoted string's quoted-pairs undone
/// (RFC 5322 section 3.2.4: `"mx\.test"` is `mx.test`). `None` when the
/// value starts with none.
pub fn authserv_id(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut i = 0;
    let mut depth = 0usize;
    // Leading CFWS: whitespace, line ends and (possibly nested) comments.
    while i < value.len() {
        match value[i] {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    let rest = value.get(i..)?;
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let close = memchr::memchr(b'"', quoted)?;
        if memchr::memchr(b'\\', &quoted[..close]).is_none() {
            return Some(Cow::Borrowed(&quoted[..close]));
        }
        // quoted-pair = "\" (VCHAR / WSP): the next byte stands for itself,
        // a quote included; the closing quote is the first unescaped one.
        let mut id = Vec::new();
        let mut bytes = quoted.iter();
        while let Some(&b) = bytes.next() {
            match b {
                b'"' => return Some(Cow::Owned(id)),
                b'\\' => id.push(*bytes.next()?),
                _ => id.push(b),
            }
        }
        return None;
    }
    let end = rest
        .iter()
        .position(|b| matches!(b, b';' | b'(' | b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(rest.len());
    (end > 0).then(|| Cow::Borrowed(&rest[..end]))
}

/// The byte ranges of the Authentication-Results fields in the header of
/// `message` that claim `authserv_id` (compared without case): forgeries
/// from outside our trust boundary, which RFC 8601 section 5 says to remove
/// before adding our own. Fields for other authserv-ids are kept.
pub fn forged_results(message: &[u8], authserv_id_ours: &str) -> Vec<Range<usize>> {
    let ours = authserv_id_ours.trim_end_matches('.').as_bytes();
    fields(message)
        .filter(|(name, range)| {
            name.eq_ignore_ascii_case(b"Authentication-Results") && {
                let field = &message[range.clone()];
                let colon = memchr::memchr(b':', field).unwrap_or(field.len());
                authserv_id(&field[(colon + 1).min(field.len())..]).is_some_and(|id| {
                    let id = id.strip_suffix(b".").unwrap_or(&id);
                    id.eq_ignore_ascii_case(ours)
                })
            }
        })
        .map(|(_, r)| r)
        .collect()
}

/// Remove `ranges` (sorted, disjoint, as [`forged_results`] returns them)
/// from `message` in place: no new buffer, the capacity stays.
pub fn remove_ranges(message: &mut Vec<u8>, ranges: &[Range<usize>]) {
    let mut write = 0;
    let mut read = 0;
    let len = message.len();
    for r in ranges {
        let (start, end) = (r.start.min(len), r.end.min(len));
        if start < read {
            continue;
        }
        message.copy_within(read..start, write);
        write += start - read;
        read = end;
    }
    message.copy_within(read..len, write);
    write += len - read;
    message.truncate(write);
}

/// `message` without the ranges, as a new buffer (for a body that lives in a
/// read-only mapping).
pub fn without_ranges(message: &[u8], ranges: &[Range<usize>]) -> Vec<u8> {
    let mut v = message.to_vec();
    remove_ranges(&mut v, ranges);
    v
}

/// The header fields of `message` named `name` (without case), in order,
/// followed by the empty line that ends a header: a message of only those
/// fields, no longer than the header.
pub fn only_fields(message: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for (_, r) in fields(message).filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
        v.extend_from_slice(&message[r.clone()]);
        if !v.ends_with(b"\n") {
            v.extend_from_slice(b"\r\n");
        }
    }
    v.extend_from_slice(b"\r\n");
    v
}

/// How many header fields of `message` are named `name` (without case).
pub fn count_fields(message: &[u8], name: &[u8]) -> usize {
    fields(message)
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .count()
}

/// The ranges of the fields named `name` after the first `keep` ones.
pub fn fields_after(message: &[u8], name: &[u8], keep: usize) -> Vec<Range<usize>> {
    fields(message)
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .skip(keep)
        .map(|(_, r)| r)
        .collect()
}

/// The `pct` tag of a DMARC record (RFC 7489 section 6.3: the percentage
/// of failing messages the policy applies to, 0-100, default 100). A value
/// that is no number in range is ignored (section 6.3: unknown or malformed
/// tags are ignored), giving the default.
pub fn dmarc_pct(record: &str) -> u8 {
    dmarc_tag(record, "pct")
        .and_then(|v| v.parse::<u8>().ok())
        .filter(|p| *p <= 100)
        .unwrap_or(100)
}

/// The value of tag `name` of a DMARC record (trimmed), if present.
fn dmarc_tag<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record
        .split(';')
        .filter_map(|tag| tag.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// The names whose `_dmarc` records the policy discovery of `domain` reads,
/// longest first, as mail-auth walks them (RFC 9989 section 4.10.1): the
/// domain itself, then from at most 7 labels down one label at a time to
/// the top-level name; at most 8 names. Empty under 2 labels.
pub fn dmarc_walk(domain: &str) -> Vec<&str> {
    let domain = domain.trim_end_matches('.');
    let labels: Vec<usize> = std::iter::once(0)
        .chain(memchr::memchr_iter(b'.', domain.as_bytes()).map(|i| i + 1))
        .collect();
    let total = labels.len();
    let mut names = Vec::new();
    if total < 2 || domain.is_empty() {
        return names;
    }
    let mut count = total;
    loop {
        names.push(&domain[labels[total - count]..]);
        if count == 1 {
            break;
        }
        count = if count >= 8 { 7 } else { count - 1 };
    }
    names
}

/// Of the DMARC records found along [`dmarc_walk`] (name and record text,
/// longest name first, the walk stopping after a record with `psd=y` or
/// `psd=n`), the one whose policy applies to `domain`, chosen as mail-auth
/// chooses it: the domain's own record, else the organizational domain's
/// (the first name with `psd=n`, or one label below the first with
/// `psd=y`, else the shortest name with a record), else the last found.
pub fn dmarc_selected<'a>(domain: &str, found: &'a [(&str, String)]) -> Option<&'a str> {
    let domain = domain.trim_end_matches('.');
    if let Some((_, r)) = found.iter().find(|(n, _)| *n == domain) {
        return Some(r);
    }
    let psd = |r: &str| dmarc_tag(r, "psd").map(str::to_ascii_lowercase);
    let org = found
        .iter()
        .find_map(|(name, r)| match psd(r).as_deref() {
            Some("n") => Some(name.to_string()),
            Some("y") if *name != domain => {
                let depth = name.split('.').count() + 1;
                let labels = domain.split('.').count();
                Some(
                    domain
                        .splitn(labels.saturating_sub(depth) + 1, '.')
                        .last()
                        .unwrap_or(domain)
                        .to_string(),
                )
            }
            _ => None,
        })
        .or_else(|| found.last().map(|(n, _)| n.to_string()));
    found
        .iter()
        .find(|(n, _)| Some(*n) == org.as_deref())
        .or_else(|| found.last())
        .map(|(_, r)| r.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from x (y)\r\n\tby mx.test; Sun, 6 Dec 2026 10:00:00 +0000\r\n\
Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@b\r\n\
authentication-results:  (comment (nested)) MX.TEST.;\r\n dkim=pass\r\n\
Authentication-Results: other.example; dkim=pass\r\n\
Authentication-Results: \"mx.test\"; none\r\n\
Authentication-Results: \"M\\X\\.test\"; none\r\n\
Authentication-Results: mx.test.evil; none\r\n\
Subject: hi\r\n\
\r\n\
Authentication-Results: mx.test; in the body, kept\r\n";

    #[test]
    fn forged_results_for_our_id_only_in_the_header() {
        let r = forged_results(MSG, "mx.test");
        assert_eq!(r.len(), 4, "{r:?}");
        let mut v = MSG.to_vec();
        remove_ranges(&mut v, &r);
        let s = String::from_utf8(v).unwrap();
        assert!(s.contains("Authentication-Results: other.example; dkim=pass\r\n"));
        assert!(s.contains("Authentication-Results: mx.test.evil; none\r\n"));
        assert!(s.contains("\r\n\r\nAuthentication-Results: mx.test; in the body, kept\r\n"));
        assert!(!s.contains("spf=pass"));
        assert!(!s.contains("nested"));
        assert!(!s.contains("\"mx.test\""));
        assert!(!s.contains("X\\.test"));
        assert!(s.starts_with("Received: from x (y)\r\n\tby mx.test;"));
        assert_eq!(without_ranges(MSG, &r), s.as_bytes());
    }

    #[test]
    fn first_field_and_counts() {
        assert_eq!(
            &MSG[..first_field_len(MSG)],
            b"Received: from x (y)\r\n\tby mx.test; Sun, 6 Dec 2026 10:00:00 +0000\r\n"
        );
        assert_eq!(count_fields(MSG, b"AUTHENTICATION-RESULTS"), 6);
        assert_eq!(fields_after(MSG, b"authentication-results", 4).len(), 2);
        assert_eq!(header_len(b"A: b\nC: d\n\nbody"), 10);
        assert_eq!(header_len(b"A: b\r\n"), 6);
        assert_eq!(first_field_len(b""), 0);
    }

    #[test]
    fn authserv_ids() {
        let id = |v: &[u8]| authserv_id(v).map(|c| c.into_owned());
        assert_eq!(id(b" mx.test; none"), Some(b"mx.test".to_vec()));
        assert_eq!(id(b" (a \\) b) mx 1; none"), Some(b"mx".to_vec()));
        assert_eq!(id(b" \"q\"; x"), Some(b"q".to_vec()));
        // RFC 5322 quoted-pairs are undone, an escaped quote included.
        assert_eq!(id(b" \"mx\\.test\"; x"), Some(b"mx.test".to_vec()));
        assert_eq!(id(b" \"\\m\\x.t\\\"\"; x"), Some(b"mx.t\"".to_vec()));
        assert_eq!(id(b" \"mx\\"), None);
        assert_eq!(authserv_id(b"   "), None);
        assert_eq!(authserv_id(b" (unclosed"), None);
        assert_eq!(authserv_id(b" \"unclosed"), None);
    }

    #[test]
    fn pct() {
        assert_eq!(dmarc_pct("v=DMARC1; p=reject"), 100);
        assert_eq!(dmarc_pct("v=DMARC1; p=reject; pct=0"), 0);
        assert_eq!(dmarc_pct("v=DMARC1;p=quarantine;PCT = 25 ;"), 25);
        assert_eq!(dmarc_pct("v=DMARC1; pct=101"), 100);
        assert_eq!(dmarc_pct("v=DMARC1; pct=-3"), 100);
    }

    #[test]
    fn dmarc_record_selection() {
        assert_eq!(
            dmarc_walk("a.b.example.org."),
            ["a.b.example.org", "b.example.org", "example.org", "org"]
        );
        assert!(dmarc_walk("localhost").is_empty());
        let long = dmarc_walk("1.2.3.4.5.6.7.8.9.example");
        assert_eq!(long.len(), 8);
        assert_eq!(long[1], "4.5.6.7.8.9.example");
        let r = |s: &str| s.to_string();
        // The From: domain's own record wins.
        let found = [
            ("x.example.org", r("v=DMARC1; p=reject; pct=10")),
            ("example.org", r("v=DMARC1; p=none; pct=90")),
        ];
        assert_eq!(
            dmarc_selected("x.example.org", &found),
            Some("v=DMARC1; p=reject; pct=10")
        );
        // Else the organizational domain's, not a nearer one's.
        let found = [
            ("b.example.org", r("v=DMARC1; p=reject; pct=10")),
            ("example.org", r("v=DMARC1; p=quarantine; pct=30")),
        ];
        assert_eq!(
            dmarc_selected("a.b.example.org", &found),
            Some("v=DMARC1; p=quarantine; pct=30")
        );
        // psd=n marks the organizational domain.
        let found = [("b.example.org", r("v=DMARC1; p=reject; pct=10; psd=n"))];
        assert_eq!(
            dmarc_selected("a.b.example.org", &found),
            Some("v=DMARC1; p=reject; pct=10; psd=n")
        );
        // psd=y: one label below; without a record there, the last found.
        let found = [("example.org", r("v=DMARC1; p=reject; pct=20; psd=y"))];
        assert_eq!(
            dmarc_selected("a.b.example.org", &found),
            Some("v=DMARC1; p=reject; pct=20; psd=y")
        );
        assert_eq!(dmarc_selected("a.example.org", &[]), None);
    }

    proptest::proptest! {
        /// Any bytes: no panic, ranges inside the message, sorted and
        /// disjoint, and removing them leaves every other byte in order.
        #[test]
        fn any_bytes(msg in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
                     id in "[a-z.]{0,8}") {
            let r = forged_results(&msg, &id);
            let mut last = 0;
            for x in &r {
                proptest::prop_assert!(x.start >= last && x.start < x.end && x.end <= msg.len());
                last = x.end;
            }
            let out = without_ranges(&msg, &r);
            proptest::prop_assert_eq!(out.len(), msg.len() - r.iter().map(|x| x.len()).sum::<usize>());
            let _ = first_field_len(&msg);
            let _ = authserv_id(&msg);
            let text = String::from_utf8_lossy(&msg);
            let walk = dmarc_walk(&text);
            proptest::prop_assert!(walk.len() <= 8);
            let found: Vec<(&str, String)> = walk.iter().map(|n| (*n, text.to_string())).collect();
            let _ = dmarc_selected(&text, &found);
        }
    }
}
