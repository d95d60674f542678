//! Known-answer tests for ENVELOPE, BODYSTRUCTURE and BODY[section], with
//! expected strings derived by hand from RFC 3501 sections 6.4.5, 7.4.2 and 9
//! (sizes counted on the fixture bytes; every fixture uses CRLF).

use std::borrow::Cow;

use proptest::prelude::*;

use super::*;
use crate::protocol::imap::{Partial, Section, SectionText};

const SIMPLE: &[u8] = include_bytes!("../../tests/fixtures/mime/simple.eml");
const NESTED: &[u8] = include_bytes!("../../tests/fixtures/mime/nested.eml");
const NO_CONTENT_TYPE: &[u8] = include_bytes!("../../tests/fixtures/mime/no-content-type.eml");
const BAD_BOUNDARY: &[u8] = include_bytes!("../../tests/fixtures/mime/bad-boundary.eml");

fn envelope(raw: &[u8]) -> String {
    let mut out = Vec::new();
    write_envelope(&Message::parse(raw), &mut out);
    String::from_utf8(out).unwrap()
}

fn body(raw: &[u8], extensible: bool) -> String {
    let mut out = Vec::new();
    write_bodystructure(&Message::parse(raw), extensible, &mut out);
    String::from_utf8(out).unwrap()
}

fn section(raw: &[u8], spec: &str) -> Option<Vec<u8>> {
    // Parse the specifier through the IMAP parser, as a FETCH would.
    let cmd = format!("t FETCH 1 BODY[{spec}]\r\n");
    let parsed = crate::protocol::imap::parse_command(cmd.as_bytes()).unwrap();
    let crate::protocol::imap::CommandBody::Fetch { attrs, .. } = parsed.body else {
        panic!()
    };
    let crate::protocol::imap::FetchAttr::BodySection { section, .. } = &attrs[0] else {
        panic!()
    };
    section_bytes(&Message::parse(raw), section).map(|c| c.into_owned())
}

#[test]
fn simple_text_message() {
    assert_eq!(SIMPLE.len(), 310);
    assert_eq!(
        body(SIMPLE, false),
        r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 55 1)"#
    );
    assert_eq!(
        body(SIMPLE, true),
        r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 55 1 NIL NIL NIL NIL)"#
    );
    let fred = r#"(("Fred Foobar" NIL "foobar" "Blurdybloop.COM"))"#;
    assert_eq!(
        envelope(SIMPLE),
        format!(
            r#"("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting" {fred} {fred} {fred} ((NIL NIL "mooch" "owatagu.siam.edu")) NIL NIL NIL "<B27397-0100000@Blurdybloop.COM>")"#
        )
    );
    assert_eq!(section(SIMPLE, "").as_deref(), Some(SIMPLE));
    assert_eq!(
        section(SIMPLE, "TEXT").unwrap(),
        b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    );
    assert_eq!(
        section(SIMPLE, "1").unwrap(),
        section(SIMPLE, "TEXT").unwrap()
    );
    assert_eq!(section(SIMPLE, "HEADER").unwrap().len(), 310 - 55);
    assert!(section(SIMPLE, "HEADER")
        .unwrap()
        .ends_with(b"US-ASCII\r\n\r\n"));
    assert_eq!(
        section(SIMPLE, "HEADER.FIELDS (subject TO)").unwrap(),
        b"Subject: afternoon meeting\r\nTo: mooch@owatagu.siam.edu\r\n\r\n"
    );
    assert_eq!(section(SIMPLE, "2"), None);
    assert_eq!(section(SIMPLE, "1.1"), None);
    assert_eq!(section(SIMPLE, "1.HEADER"), None);
}

/// The message behind the RFC 3501 section 7.4.2 FETCH example, rebuilt so
/// that its parts have the sizes and line counts shown there.
fn rfc3501_example() -> Vec<u8> {
    let mut m = b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n\
From: Terry Gray <gray@cac.washington.edu>\r\n\
Subject: IMAP4rev1 WG mtg summary and minutes\r\n\
To: imap@cac.washington.edu\r\n\
cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>\r\n\
Message-Id: <B27397-0100000@cac.washington.edu>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: MULTIPART/MIXED; BOUNDARY=\"----=_NextPart\"\r\n\r\n"
        .to_vec();
    m.extend_from_slice(b"------=_NextPart\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n");
    // 23 lines, 1152 octets: 22 lines of 50 and a last one of 52 whose line
    // end belongs to the boundary.
    for _ in 0..22 {
        m.extend_from_slice(&[b'a'; 48]);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(&[b'a'; 52]);
    m.extend_from_slice(
        b"\r\n------=_NextPart\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff\r\n\
Content-ID: <960723163407.20117h@cac.washington.edu>\r\n\
Content-Description: Compiler diff\r\nContent-Transfer-Encoding: BASE64\r\n\r\n",
    );
    // 73 lines, 4554 octets.
    for _ in 0..72 {
        m.extend_from_slice(&[b'Q'; 60]);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(&[b'Q'; 90]);
    m.extend_from_slice(b"\r\n------=_NextPart--\r\n");
    m
}

#[test]
fn rfc3501_section_7_4_2_example() {
    let raw = rfc3501_example();
    assert_eq!(
        body(&raw, false),
        r#"(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73) "MIXED")"#
    );
    assert_eq!(
        envelope(&raw),
        r#"("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) ((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL "<B27397-0100000@cac.washington.edu>")"#
    );
    assert_eq!(
        body(&raw, true),
        r#"(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23 NIL NIL NIL NIL)("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") "<960723163407.20117h@cac.washington.edu>" "Compiler diff" "BASE64" 4554 73 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "----=_NextPart") NIL NIL NIL)"#
    );
}

const DAVE: &str = r#"(("Dave" NIL "dave" "example.com"))"#;

#[test]
fn nested_multipart_with_attachment_and_message() {
    let embedded_env =
        format!(r#"(NIL "original" {DAVE} {DAVE} {DAVE} NIL NIL NIL NIL "<orig@example.com>")"#);
    assert_eq!(
        body(NESTED, false),
        format!(
            r#"((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 18 1)("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 27 1) "ALTERNATIVE")("APPLICATION" "PDF" ("NAME" "plan.pdf") NIL NIL "BASE64" 12)("MESSAGE" "RFC822" NIL NIL "forwarded" "7BIT" 107 {embedded_env} ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 23 2) 6) "MIXED")"#
        )
    );
    assert_eq!(
        body(NESTED, true),
        format!(
            r#"((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 18 1 NIL NIL NIL NIL)("TEXT" "HTML" ("CHARSET" "utf-8") NIL NIL "7BIT" 27 1 NIL NIL NIL NIL) "ALTERNATIVE" ("BOUNDARY" "inner") NIL NIL NIL)("APPLICATION" "PDF" ("NAME" "plan.pdf") NIL NIL "BASE64" 12 NIL ("ATTACHMENT" ("FILENAME" "plan.pdf")) NIL NIL)("MESSAGE" "RFC822" NIL NIL "forwarded" "7BIT" 107 {embedded_env} ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 23 2 NIL NIL NIL NIL) 6 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "outer") NIL NIL NIL)"#
        )
    );
    let alice = r#"(("Alice" NIL "alice" "example.com"))"#;
    assert_eq!(
        envelope(NESTED),
        format!(
            r#"("Thu, 26 Nov 2026 15:43:52 +0000" "=?utf-8?q?Caf=C3=A9?= plans" {alice} {alice} {alice} (("Bob" NIL "bob" "example.org")("Carol, C." NIL "carol" "example.net")) NIL NIL NIL "<nested-1@example.com>")"#
        )
    );
}

#[test]
fn nested_sections() {
    let s = |spec| section(NESTED, spec);
    assert_eq!(s("1.1").unwrap(), b"Caf=C3=A9 at noon?");
    assert_eq!(s("1.2").unwrap(), b"<p>Caf&eacute; at noon?</p>");
    assert_eq!(
        s("1.2.MIME").unwrap(),
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    );
    assert_eq!(
        s("1.MIME").unwrap(),
        b"Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
    );
    assert!(s("1").unwrap().starts_with(b"--inner\r\n") && s("1").unwrap().ends_with(b"--inner--"));
    assert_eq!(s("2").unwrap(), b"JVBERi0xLjQK");
    let embedded: &[u8] = b"From: Dave <dave@example.com>\r\nSubject: original\r\nMessage-ID: <orig@example.com>\r\n\r\nOriginal body\r\nline two";
    assert_eq!(s("3").unwrap(), embedded);
    assert_eq!(s("3.HEADER").unwrap(), &embedded[..84]);
    assert_eq!(s("3.TEXT").unwrap(), b"Original body\r\nline two");
    assert_eq!(s("3.1").unwrap(), b"Original body\r\nline two");
    assert_eq!(s("3.1.MIME").unwrap(), &embedded[..84]);
    assert_eq!(
        s("3.HEADER.FIELDS (SUBJECT)").unwrap(),
        b"Subject: original\r\n\r\n"
    );
    assert_eq!(
        s("3.HEADER.FIELDS.NOT (SUBJECT FROM)").unwrap(),
        b"Message-ID: <orig@example.com>\r\n\r\n"
    );
    assert_eq!(
        s("HEADER.FIELDS (FROM X-NONE)").unwrap(),
        b"From: Alice <alice@example.com>\r\n\r\n"
    );
    for missing in ["4", "1.3", "1.1.1", "2.1", "2.HEADER", "1.TEXT", "3.2"] {
        assert_eq!(s(missing), None, "{missing}");
    }
    // FETCH BODY[1.2.MIME]<0.12> and a start past the end.
    let msg = Message::parse(NESTED);
    let html = resolve(&msg.root, &[1, 2]).unwrap();
    let r = msg.range_of(html.header).unwrap();
    assert_eq!(
        &NESTED[r.clone()],
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    );
    assert_eq!(msg.range_of(html.body), Some(r.end..r.end + 27));
    assert_eq!(msg.range_of(b"elsewhere"), None);
    let mime = Section {
        part: vec![1, 2],
        text: Some(SectionText::Mime),
    };
    let data = section_bytes(&msg, &mime).unwrap();
    assert!(matches!(data, Cow::Borrowed(_)), "served as a sub-slice");
    assert_eq!(
        &partial(data.clone(), Partial { start: 0, len: 12 })[..],
        b"Content-Type"
    );
    assert_eq!(
        &partial(
            data,
            Partial {
                start: 1000,
                len: 5
            }
        )[..],
        b""
    );
    let fields = Section {
        part: vec![],
        text: Some(SectionText::HeaderFields {
            not: false,
            fields: vec![Cow::Borrowed(b"to")],
        }),
    };
    let owned = section_bytes(&msg, &fields).unwrap();
    assert_eq!(&partial(owned, Partial { start: 4, len: 3 })[..], b"Bob");
}

#[test]
fn missing_content_type_and_group_syntax() {
    assert_eq!(
        body(NO_CONTENT_TYPE, true),
        r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 29 2 NIL NIL NIL NIL)"#
    );
    let who = r#"((NIL NIL "someone" "example.com"))"#;
    assert_eq!(
        envelope(NO_CONTENT_TYPE),
        format!(
            r#"(NIL "plain old mail" {who} {who} {who} ((NIL NIL "Undisclosed recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)"#
        )
    );
}

#[test]
fn malformed_boundaries() {
    // The declared boundary never occurs: the body is shown as plain text.
    assert_eq!(
        body(BAD_BOUNDARY, false),
        r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 57 5)"#
    );
    assert_eq!(
        section(BAD_BOUNDARY, "1").unwrap(),
        Message::parse(BAD_BOUNDARY).root.body
    );
    // Missing close delimiter: the last part runs to the end.
    let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\nContent-Type: text/html\r\n\r\ntwo\r\n";
    assert_eq!(
        body(raw, false),
        r#"(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3 1)("TEXT" "HTML" NIL NIL NIL "7BIT" 5 1) "MIXED")"#
    );
    assert_eq!(section(raw, "2").unwrap(), b"two\r\n");
    // No boundary parameter at all, and multipart/digest defaults.
    assert_eq!(
        body(b"Content-Type: multipart/mixed\r\n\r\nx", false),
        r#"("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1 1)"#
    );
    let digest = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: s\r\n\r\nb\r\n--d--";
    assert_eq!(
        body(digest, false),
        r#"(("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 15 (NIL "s" NIL NIL NIL NIL NIL NIL NIL NIL) ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1 1) 3) "DIGEST")"#
    );
    // An encoded message/rfc822 is opaque.
    let enc = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA==";
    assert_eq!(
        body(enc, false),
        r#"("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 16)"#
    );
}

#[test]
fn strings_needing_literals_and_escapes() {
    let raw =
        "Subject: Grüße \"quoted\" \\ back\r\nFrom: \"A \\\"B\\\"\" <a@b.c>\r\n\r\n".as_bytes();
    let env = envelope(raw);
    assert!(
        env.starts_with(
            "(NIL {23}\r\nGrüße \"quoted\" \\ back ((\"A \\\"B\\\"\" NIL \"a\" \"b.c\"))"
        ),
        "{env}"
    );
}

#[test]
fn search_helpers() {
    let msg = Message::parse(NESTED);
    assert!(body_contains(&msg, "café at NOON"));
    assert!(body_contains(&msg, "&eacute;"));
    assert!(!body_contains(&msg, "JVBERi"), "attachments are not text");
    assert!(body_contains(&msg, "LINE two"));
    assert!(
        body_contains(&msg, "orig@example"),
        "headers of attached messages are searched"
    );
    assert!(
        !body_contains(&msg, "Alice"),
        "the top-level header is not the body"
    );
    assert!(text_contains(&msg, "alice"));
    assert!(text_contains(&msg, "Café plans"));
    assert!(header_contains(msg.root.header, b"subject", "CAFÉ"));
    assert!(header_contains(msg.root.header, b"Message-ID", ""));
    assert!(!header_contains(msg.root.header, b"X-Missing", ""));
    assert_eq!(
        field_value(msg.root.header, b"message-id"),
        Some(&b" <nested-1@example.com>"[..])
    );
    assert_eq!(
        sent_date(msg.root.header),
        crate::protocol::imap::Date::new(2026, 11, 26)
    );
    let b64 = b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\nR3L832U=\r\n";
    let m = Message::parse(b64);
    assert_eq!(decoded_text(&m.root), "Grüße");
    assert!(body_contains(&m, "GRÜSSE") || body_contains(&m, "grüße"));
}

proptest! {
    #[test]
    fn arbitrary_messages_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&raw);
    }

    #[test]
    fn mutated_fixtures_never_panic(which in 0usize..4, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in any::<usize>()) {
        let mut raw = [SIMPLE, NESTED, NO_CONTENT_TYPE, BAD_BOUNDARY][which].to_vec();
        for (pos, byte) in edits {
            let n = raw.len();
            raw[pos % n] = byte;
        }
        let n = raw.len();
        raw.truncate(cut % (n + 1));
        exercise(&raw);
    }
}

fn exercise(raw: &[u8]) {
    let msg = Message::parse(raw);
    let mut out = Vec::new();
    write_envelope(&msg, &mut out);
    write_bodystructure(&msg, true, &mut out);
    write_bodystructure(&msg, false, &mut out);
    for part in [vec![], vec![1], vec![2], vec![1, 1], vec![3, 1]] {
        for text in [
            None,
            Some(SectionText::Header),
            Some(SectionText::Text),
            Some(SectionText::Mime),
        ] {
            let s = Section {
                part: part.clone(),
                text,
            };
            if let Some(d) = section_bytes(&msg, &s) {
                assert!(d.len() <= raw.len() + 2);
            }
        }
    }
    let _ = body_contains(&msg, "x");
    let _ = text_contains(&msg, "é");
}

/// Header-like bytes: field names, folding, encoded words, address syntax.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"From: "[..]),
        Just(&b"To:"[..]),
        Just(&b"Subject: "[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r\n "[..]),
        Just(&b"\t"[..]),
        Just(&b"=?utf-8?B?w6k=?="[..]),
        Just(&b"=?iso-8859-1?Q?a_b=E9?="[..]),
        Just(&b"<a@b.test>"[..]),
        Just(&b"\"q,\\\" n\""[..]),
        Just(&b"g: x@y;"[..]),
        Just(&b"(c (d))"[..]),
        Just(&b", "[..]),
        Just(&b"no colon"[..]),
        Just(&b"\xc3\xa9\xff"[..]),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

proptest! {
    // The properties the mime_message fuzz target checks, on a bounded
    // number of header-shaped inputs in the normal suite.
    #[test]
    fn header_split_fields_and_selection(raw in header_bytes()) {
        let (h, b) = crate::mime::header::split(&raw);
        prop_assert_eq!([h, b].concat(), raw.clone());
        let names: Vec<Vec<u8>> = fields(h).map(|f| f.name.to_ascii_lowercase()).collect();
        for f in fields(h) {
            let u = f.unfolded();
            prop_assert!(!u.contains(&b'\r') && !u.contains(&b'\n'));
            if !f.value.windows(2).any(|w| w == b"=?") {
                prop_assert_eq!(decode_header(f.value), String::from_utf8_lossy(&u).into_owned());
            }
            let mut in_group = false;
            for a in parse_address_list(&u) {
                match a {
                    Address::Mailbox { mailbox, host, .. } => {
                        prop_assert!(!mailbox.is_empty() && !host.is_empty())
                    }
                    Address::GroupStart(_) => { prop_assert!(!in_group); in_group = true }
                    Address::GroupEnd => { prop_assert!(in_group); in_group = false }
                }
            }
            prop_assert!(!in_group);
        }
        for not in [false, true] {
            let subset = crate::mime::header::select_fields(h, &["from"], not);
            let got: Vec<Vec<u8>> = fields(&subset).map(|f| f.name.to_ascii_lowercase()).collect();
            let want: Vec<Vec<u8>> = names.iter().filter(|n| (n.as_slice() == b"from") != not).cloned().collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn encoded_word_and_base64_round_trip(text in ".{0,40}", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let word = format!("=?utf-8?B?{}?=", crate::util::base64_encode(text.as_bytes()));
        prop_assert_eq!(decode_header(word.as_bytes()), text);
        prop_assert_eq!(base64_decode(crate::util::base64_encode(&bytes).as_bytes()), bytes);
    }
}

#[test]
fn quoted_printable_rules() {
    use super::decode::qp_decode;
    // RFC 2045 6.7: soft breaks, also after transport padding; padding at
    // the end of a line is deleted, inner whitespace kept.
    assert_eq!(
        qp_decode(b"Gr=C3=BC=C3=9Fe, a =  \r\nline\r\n", false),
        "Grüße, a line\r\n".as_bytes()
    );
    assert_eq!(qp_decode(b"a b \t\r\nc  \nd=\ne", false), b"a b\r\nc\nde");
    assert_eq!(qp_decode(b"trailing  ", false), b"trailing");
    assert_eq!(qp_decode(b"x=", false), b"x=");
    assert_eq!(qp_decode(b"=ZZ =4", false), b"=ZZ =4");
    // The RFC 2047 Q form keeps its spaces and turns `_` into one.
    assert_eq!(qp_decode(b"a_b =3D ", true), b"a b = ");
}
