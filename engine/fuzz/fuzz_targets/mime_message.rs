//! Hostile messages through ringmail's header and MIME parsing, the code
//! behind IMAP FETCH ENVELOPE, BODYSTRUCTURE, BODY[section] and SEARCH.
//!
//! Invariants checked, beyond "no panic":
//! - `split` cuts the input in two: header followed by body is the input;
//! - every header field lies inside the header, in order, with a printable
//!   name and an unfolded value free of CR and LF;
//! - HEADER.FIELDS and HEADER.FIELDS.NOT select exactly the fields named
//!   (or not named), and re-parsing the subset finds those fields again;
//! - every part's header and body borrow from the message, the tree stays
//!   within the depth and part limits, and every part number resolves to
//!   the part it was found at;
//! - the ENVELOPE and BODYSTRUCTURE renderings are well-formed IMAP (quoted
//!   strings and literals complete, parentheses balanced);
//! - address lists have non-empty mailboxes and hosts, and group markers
//!   alternate start/end;
//! - RFC 2047: a value without encoded words decodes to its unfolded self,
//!   and a B-encoded word of UTF-8 text decodes back to that text;
//! - base64 decoding undoes ringmail's encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmail::mime::{self, address::Address, header, Limits, Message, Part, PartKind};
use ringmail::protocol::imap::{Partial, Section, SectionText};

/// Walk a rendered IMAP value: quoted strings must close, literals must be
/// `{n}\r\n` followed by n octets, parentheses must balance.
fn assert_imap_syntax(out: &[u8]) {
    let mut depth: i64 = 0;
    let mut i = 0;
    while i < out.len() {
        match out[i] {
            b'"' => {
                i += 1;
                loop {
                    match out.get(i) {
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(b'\r' | b'\n') => panic!("line end in a quoted string: {out:?}"),
                        Some(_) => i += 1,
                        None => panic!("unterminated quoted string: {out:?}"),
                    }
                }
            }
            b'{' => {
                let close = out[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .expect("literal length")
                    + i;
                let n: usize = std::str::from_utf8(&out[i + 1..close])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("literal length is a number");
                assert_eq!(&out[close + 1..close + 3], b"\r\n", "literal header");
                i = close + 2 + n;
                assert!(i < out.len() + 1, "literal runs past the output");
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                assert!(depth >= 0, "unbalanced ')': {out:?}");
            }
            b'\r' | b'\n' => panic!("bare line end outside a literal: {out:?}"),
            _ => {}
        }
        i += 1;
    }
    assert_eq!(depth, 0, "unbalanced '(': {out:?}");
}

fn within(msg: &Message<'_>, s: &[u8]) {
    assert!(
        msg.range_of(s).is_some(),
        "a part slice is not borrowed from the message"
    );
}

/// Check every part below `p`; returns the deepest nesting seen.
fn walk<'a>(
    msg: &Message<'a>,
    p: &Part<'a>,
    path: &mut Vec<u32>,
    depth: usize,
    parts: &mut usize,
    numbered: bool,
) -> usize {
    *parts += 1;
    within(msg, p.header);
    within(msg, p.body);
    if !path.is_empty() {
        let found = mime::resolve(&msg.root, path).expect("a part's own number resolves");
        if numbered {
            assert!(std::ptr::eq(found, p), "part number resolves elsewhere");
        }
        let section = Section {
            part: path.clone(),
            text: None,
        };
        let body = mime::section_bytes(msg, &section).expect("part body");
        within(msg, &body);
        if numbered {
            let mime_section = Section {
                part: path.clone(),
                text: Some(SectionText::Mime),
            };
            assert_eq!(
                mime::section_bytes(msg, &mime_section).as_deref(),
                Some(p.header)
            );
        }
    }
    let _ = mime::decode::decoded_text(p);
    let mut deepest = depth;
    match &p.kind {
        PartKind::Leaf => {}
        PartKind::Multipart(children) => {
            assert!(
                !children.is_empty(),
                "a multipart without parts is rendered as a leaf"
            );
            for (i, c) in children.iter().enumerate() {
                path.push(i as u32 + 1);
                deepest = deepest.max(walk(msg, c, path, depth + 1, parts, true));
                path.pop();
            }
        }
        PartKind::Message(inner) => {
            // In a message context (the root, or an encapsulated message),
            // a non-multipart body is part 1 (RFC 3501 6.4.5).
            if !numbered {
                path.push(1);
            }
            deepest = deepest.max(walk(msg, inner, path, depth + 1, parts, false));
            if !numbered {
                path.pop();
            }
        }
    }
    deepest
}

fn check_addresses(list: &[Address]) {
    let mut in_group = false;
    for a in list {
        match a {
            Address::Mailbox { mailbox, host, .. } => {
                assert!(!mailbox.is_empty() && !host.is_empty(), "{a:?}");
            }
            Address::GroupStart(_) => {
                assert!(!in_group, "nested group start");
                in_group = true;
            }
            Address::GroupEnd => {
                assert!(in_group, "group end without start");
                in_group = false;
            }
        }
    }
    assert!(!in_group, "group left open");
}

fn check_header(raw_header: &[u8]) {
    let base = raw_header.as_ptr() as usize;
    let mut next = 0usize;
    let mut names: Vec<&[u8]> = Vec::new();
    for f in header::fields(raw_header) {
        let start = f.raw.as_ptr() as usize - base;
        assert!(
            start >= next && start + f.raw.len() <= raw_header.len(),
            "field out of order"
        );
        next = start + f.raw.len();
        assert!(!f.name.is_empty() && f.name.iter().all(|&b| (33..=126).contains(&b)));
        assert!(!f.value.ends_with(b"\n"));
        let unfolded = f.unfolded();
        assert!(!unfolded.contains(&b'\r') && !unfolded.contains(&b'\n'));
        names.push(f.name);
        // RFC 2047: text without encoded words is its own decoding.
        let decoded = mime::decode_header(f.value);
        if !f.value.windows(2).any(|w| w == b"=?") {
            assert_eq!(decoded, String::from_utf8_lossy(&unfolded));
        }
        if f.name.eq_ignore_ascii_case(b"Date") {
            if let Some(dt) = mime::parse_rfc5322_date(f.value) {
                assert!((1..=12).contains(&dt.date.month) && (1..=31).contains(&dt.date.day));
                assert!(dt.hour < 24 && dt.minute < 60 && dt.second <= 60);
                assert!(dt.zone_minutes.abs() < 100 * 60);
            }
        }
        if [&b"From"[..], b"Sender", b"Reply-To", b"To", b"Cc", b"Bcc"]
            .iter()
            .any(|n| f.name.eq_ignore_ascii_case(n))
        {
            check_addresses(&mime::parse_address_list(&unfolded));
        }
    }
    // HEADER.FIELDS / HEADER.FIELDS.NOT with the first field's name (if any)
    // and a name that never occurs.
    let pick: Vec<&[u8]> = names
        .iter()
        .take(1)
        .copied()
        .chain([&b"X-Never-Here"[..]])
        .collect();
    for not in [false, true] {
        let subset = header::select_fields(raw_header, &pick, not);
        assert!(subset.ends_with(b"\r\n"));
        let got: Vec<Vec<u8>> = header::fields(&subset)
            .map(|f| f.name.to_ascii_lowercase())
            .collect();
        let want: Vec<Vec<u8>> = names
            .iter()
            .filter(|n| pick.iter().any(|p| p.eq_ignore_ascii_case(n)) != not)
            .map(|n| n.to_ascii_lowercase())
            .collect();
        assert_eq!(
            got,
            want,
            "HEADER.FIELDS{} selects other fields",
            if not { ".NOT" } else { "" }
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: limits for a second, tightly bounded parse.
    let Some((&knob, input)) = data.split_first() else {
        return;
    };

    let (h, b) = header::split(input);
    assert_eq!(h.len() + b.len(), input.len());
    assert!(input.starts_with(h) && input.ends_with(b));
    check_header(h);

    for limits in [
        Limits::default(),
        Limits {
            max_depth: usize::from(knob % 4),
            max_parts: usize::from(knob / 4 % 8) + 1,
        },
    ] {
        let msg = Message::parse_with(input, limits);
        let mut parts = 0;
        let depth = walk(&msg, &msg.root, &mut Vec::new(), 0, &mut parts, false);
        assert!(depth <= limits.max_depth, "depth {depth} over {limits:?}");
        assert!(
            parts <= limits.max_parts.max(1),
            "{parts} parts over {limits:?}"
        );

        let mut out = Vec::new();
        mime::write_envelope(&msg, &mut out);
        assert_imap_syntax(&out);
        for extensible in [false, true] {
            out.clear();
            mime::write_bodystructure(&msg, extensible, &mut out);
            assert_imap_syntax(&out);
        }
        for text in [None, Some(SectionText::Header), Some(SectionText::Text)] {
            let whole = mime::section_bytes(&msg, &Section { part: vec![], text })
                .expect("top-level sections exist");
            within(&msg, &whole);
            let len = whole.len();
            let p = Partial {
                start: u32::from(knob),
                len: 7,
            };
            let cut = mime::partial(whole, p);
            assert!(cut.len() <= 7 && cut.len() <= len.saturating_sub(usize::from(knob)));
        }
    }

    // Encoded-word and base64 round trips over the input taken as text.
    let text = String::from_utf8_lossy(input);
    let encoded = ringmail::util::base64_encode(input);
    assert_eq!(mime::base64_decode(encoded.as_bytes()), input);
    let word = format!(
        "=?utf-8?B?{}?=",
        ringmail::util::base64_encode(text.as_bytes())
    );
    assert_eq!(mime::decode_header(word.as_bytes()), text);
    let _ = mime::qp_decode(input, knob & 1 == 1);
});
