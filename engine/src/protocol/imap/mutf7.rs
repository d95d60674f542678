//! Modified UTF-7 mailbox names (RFC 3501 section 5.1.3).
//!
//! IMAP4rev1 clients name mailboxes in modified UTF-7; a client that enabled
//! IMAP4rev2 names them in UTF-8 (RFC 9051 section 5.1). The store keeps the
//! modified UTF-7 form, which is plain ASCII and what every IMAP4rev1 client
//! already created, so no stored name changes; a rev2 session converts at
//! its edge with [`encode`] (UTF-8 in) and [`decode`] (UTF-8 out).
//!
//! The form is: printable US-ASCII (0x20-0x7e) stands for itself except `&`,
//! which is `&-`; any other run of characters is `&`, their UTF-16 code
//! units in big-endian order in base64 with `,` for `/` and no padding, then
//! `-`. [`decode`] accepts only the one canonical spelling of a name (the one
//! [`encode`] gives), so a name and its decoded form map one to one.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Modified base64: `,` in place of `/`.
fn value(b: u8) -> Option<u32> {
    match b {
        b',' => Some(63),
        b'/' => None,
        _ => crate::util::base64_value(b).map(u32::from),
    }
}

/// Is `c` written as itself?
fn direct(c: char) -> bool {
    (' '..='~').contains(&c)
}

fn flush(out: &mut String, units: &mut Vec<u16>) {
    if units.is_empty() {
        return;
    }
    out.push('&');
    let (mut acc, mut bits) = (0u32, 0u32);
    for u in units.drain(..) {
        acc = (acc << 16) | u32::from(u);
        bits += 16;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out.push('-');
}

/// The modified UTF-7 form of a UTF-8 name.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let mut units: Vec<u16> = Vec::new();
    for c in name.chars() {
        if direct(c) {
            flush(&mut out, &mut units);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut buf = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut out, &mut units);
    out
}

/// The UTF-8 name a modified UTF-7 name stands for; `None` when `name` is
/// not the canonical modified UTF-7 spelling of any name (8-bit octets, a
/// shift without its `-`, bad base64, an unpaired surrogate, printable ASCII
/// shifted, two adjacent shifts, or stray bits).
pub fn decode(name: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if b != b'&' {
            if !direct(b as char) {
                return None;
            }
            out.push(b as char);
            i += 1;
            continue;
        }
        let end = i + 1 + name[i + 1..].iter().position(|&b| b == b'-')?;
        let run = &name[i + 1..end];
        i = end + 1;
        if run.is_empty() {
            out.push('&');
            continue;
        }
        let (mut acc, mut bits) = (0u32, 0u32);
        let mut units = Vec::with_capacity(run.len() * 6 / 16);
        for &b in run {
            acc = (acc << 6) | value(b)?;
            bits += 6;
            if bits >= 16 {
                bits -= 16;
                units.push((acc >> bits) as u16);
                acc &= (1 << bits) - 1;
            }
        }
        if bits >= 6 || acc != 0 {
            return None;
        }
        for c in char::decode_utf16(units) {
            out.push(c.ok()?);
        }
    }
    // The canonical check: shifted ASCII, adjacent shifts and the like
    // decode to a name whose encoding differs.
    (encode(&out).as_bytes() == name).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_3501_examples() {
        // RFC 3501 section 5.1.3.
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-").as_deref(),
            Some("~peter/mail/台北/日本語")
        );
        assert_eq!(encode("R&D"), "R&-D");
        assert_eq!(decode(b"R&-D").as_deref(), Some("R&D"));
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode("😀"), "&2D3eAA-");
        assert_eq!(decode(b"&2D3eAA-").as_deref(), Some("😀"));
        assert_eq!(decode(b"INBOX").as_deref(), Some("INBOX"));
    }

    #[test]
    fn rejects_non_canonical_and_broken_forms() {
        for bad in [
            &b"&U,BTFw"[..],       // no closing '-'
            b"&Jjo!-",             // not base64
            b"&AGE-",              // shifted "a"
            b"&U,A-&U,A-",         // two adjacent shifts
            b"&U,BTF2-",           // stray bits
            b"&2D0-",              // unpaired surrogate
            "Entwürfe".as_bytes(), // 8-bit
            b"a\x01b",
            b"&",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC{0,24}") {
            let e = encode(&s);
            prop_assert!(e.is_ascii());
            prop_assert_eq!(decode(e.as_bytes()), Some(s));
        }

        #[test]
        fn decode_is_canonical(b in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Some(s) = decode(&b) {
                let e = encode(&s);
                prop_assert_eq!(e.as_bytes(), &b[..]);
            }
        }
    }
}
