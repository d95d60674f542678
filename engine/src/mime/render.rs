//! IMAP renderings of message structure: ENVELOPE and BODY/BODYSTRUCTURE
//! (RFC 3501 sections 7.4.2 and 9) and BODY[section] data (section 6.4.5).
//!
//! Conventions (as in the RFC 3501 examples): media types, subtypes,
//! parameter names, dispositions and transfer encodings are upper-cased;
//! parameter values and header-derived strings are sent as written, encoded
//! words left encoded. Strings are quoted when 7-bit safe, literals
//! otherwise.

use std::borrow::Cow;

use super::address::{parse_address_list, Address};
use super::content::Param;
use super::header::{fields, select_fields, unfold};
use super::tree::{count_lines, resolve, Message, Part, PartKind};
use crate::protocol::imap::encode::{write_nstring, write_string};
use crate::protocol::imap::{Partial, Section, SectionText};

fn upper_string(out: &mut Vec<u8>, s: &[u8]) {
    write_string(out, &s.to_ascii_uppercase());
}

/// Write the ENVELOPE of `msg` (RFC 3501 section 7.4.2).
pub fn write_envelope(msg: &Message<'_>, out: &mut Vec<u8>) {
    write_envelope_of(msg.root.header, out);
}

/// Write the ENVELOPE built from a header section.
pub fn write_envelope_of(header: &[u8], out: &mut Vec<u8>) {
    let mut vals: [Option<&[u8]>; 10] = [None; 10];
    const NAMES: [&[u8]; 10] = [
        b"Date",
        b"Subject",
        b"From",
        b"Sender",
        b"Reply-To",
        b"To",
        b"Cc",
        b"Bcc",
        b"In-Reply-To",
        b"Message-ID",
    ];
    for f in fields(header) {
        if let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(f.name)) {
            vals[i].get_or_insert(f.value);
        }
    }
    let text = |out: &mut Vec<u8>, v: Option<&[u8]>| write_nstring(out, v.map(unfold).as_deref());
    let addrs = |v: Option<&[u8]>| v.map(parse_address_list).unwrap_or_default();
    out.push(b'(');
    text(out, vals[0]);
    out.push(b' ');
    text(out, vals[1]);
    let from = addrs(vals[2]);
    for (i, idx) in [2usize, 3, 4, 5, 6, 7].into_iter().enumerate() {
        out.push(b' ');
        // Sender and Reply-To default to From when absent or empty.
        let list = if i == 0 {
            from.clone()
        } else {
            addrs(vals[idx])
        };
        let list = if (idx == 3 || idx == 4) && list.is_empty() {
            from.clone()
        } else {
            list
        };
        write_addresses(out, &list);
    }
    out.push(b' ');
    text(out, vals[8]);
    out.push(b' ');
    text(out, vals[9]);
    out.push(b')');
}

fn write_addresses(out: &mut Vec<u8>, list: &[Address]) {
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        match a {
            Address::Mailbox {
                name,
                adl,
                mailbox,
                host,
            } => {
                write_nstring(out, name.as_deref());
                out.push(b' ');
                write_nstring(out, adl.as_deref());
                out.push(b' ');
                write_string(out, mailbox);
                out.push(b' ');
                write_string(out, host);
            }
            Address::GroupStart(name) => {
                out.extend_from_slice(b"NIL NIL ");
                write_string(out, name);
                out.extend_from_slice(b" NIL");
            }
            Address::GroupEnd => out.extend_from_slice(b"NIL NIL NIL NIL"),
        }
        out.push(b')');
    }
    out.push(b')');
}

/// Write BODYSTRUCTURE (`extensible = true`) or BODY (`false`) of `msg`.
pub fn write_bodystructure(msg: &Message<'_>, extensible: bool, out: &mut Vec<u8>) {
    write_body(&msg.root, extensible, out);
}

fn write_params(out: &mut Vec<u8>, params: &[Param<'_>]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        upper_string(out, &p.name);
        out.push(b' ');
        write_string(out, &p.value);
    }
    out.push(b')');
}

/// body-fld-dsp SP body-fld-lang SP body-fld-loc
fn write_ext_tail(out: &mut Vec<u8>, part: &Part<'_>) {
    match &part.disposition {
        None => out.extend_from_slice(b"NIL"),
        Some(d) => {
            out.push(b'(');
            upper_string(out, &d.kind);
            out.push(b' ');
            write_params(out, &d.params);
            out.push(b')');
        }
    }
    out.push(b' ');
    if part.language.is_empty() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, l) in part.language.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            write_string(out, l);
        }
        out.push(b')');
    }
    out.push(b' ');
    write_nstring(out, part.location.as_deref());
}

fn write_body(part: &Part<'_>, ext: bool, out: &mut Vec<u8>) {
    out.push(b'(');
    if let PartKind::Multipart(children) = &part.kind {
        // body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
        for c in children {
            write_body(c, ext, out);
        }
        out.push(b' ');
        upper_string(out, &part.content_type.subtype);
        if ext {
            out.push(b' ');
            write_params(out, &part.content_type.params);
            out.push(b' ');
            write_ext_tail(out, part);
        }
        out.push(b')');
        return;
    }
    let ct = &part.content_type;
    upper_string(out, &ct.mtype);
    out.push(b' ');
    upper_string(out, &ct.subtype);
    out.push(b' ');
    write_params(out, &ct.params);
    out.push(b' ');
    write_nstring(out, part.id.as_deref());
    out.push(b' ');
    write_nstring(out, part.description.as_deref());
    out.push(b' ');
    upper_string(out, &part.encoding);
    out.push(b' ');
    out.extend_from_slice(part.body.len().to_string().as_bytes());
    match &part.kind {
        PartKind::Message(inner) => {
            // body-type-msg: ... SP envelope SP body SP body-fld-lines
            out.push(b' ');
            write_envelope_of(inner.header, out);
            out.push(b' ');
            write_body(inner, ext, out);
            out.push(b' ');
            out.extend_from_slice(count_lines(part.body).to_string().as_bytes());
        }
        _ if ct.is_type(b"text") => {
            out.push(b' ');
            out.extend_from_slice(count_lines(part.body).to_string().as_bytes());
        }
        _ => {}
    }
    if ext {
        // body-ext-1part = body-fld-md5 SP body-fld-dsp SP body-fld-lang SP body-fld-loc
        out.push(b' ');
        write_nstring(out, part.md5.as_deref());
        out.push(b' ');
        write_ext_tail(out, part);
    }
    out.push(b')');
}

/// The data of BODY[section] (RFC 3501 section 6.4.5), without partial
/// slicing (see [`partial`]). `None` when the section does not exist.
///
/// HEADER, TEXT and HEADER.FIELDS after a part number apply to the message
/// encapsulated in a message/rfc822 part; MIME is the part's own header.
/// Everything but HEADER.FIELDS is a sub-slice of the message.
pub fn section_bytes<'a>(msg: &Message<'a>, section: &Section<'_>) -> Option<Cow<'a, [u8]>> {
    let (target, text) = if section.part.is_empty() {
        match &section.text {
            None => return Some(Cow::Borrowed(msg.raw)),
            Some(SectionText::Mime) => return None,
            Some(t) => (&msg.root, t),
        }
    } else {
        let part = resolve(&msg.root, &section.part)?;
        match &section.text {
            None => return Some(Cow::Borrowed(part.body)),
            Some(SectionText::Mime) => return Some(Cow::Borrowed(part.header)),
            Some(t) => (part.message()?, t),
        }
    };
    Some(match text {
        SectionText::Header => Cow::Borrowed(target.header),
        SectionText::Text => Cow::Borrowed(target.body),
        SectionText::HeaderFields { not, fields } => {
            Cow::Owned(select_fields(target.header, fields, *not))
        }
        SectionText::Mime => return None,
    })
}

/// A transfer encoding BINARY cannot undo (answered `NO [UNKNOWN-CTE]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCte;

/// A Content-Transfer-Encoding BINARY can undo (RFC 2045 section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cte {
    /// 7bit, 8bit, binary: the octets as they are.
    Identity,
    /// base64
    Base64,
    /// quoted-printable
    QuotedPrintable,
}

impl Cte {
    /// Undo the encoding of `body`.
    pub fn decode(self, body: &[u8]) -> Cow<'_, [u8]> {
        match self {
            Cte::Identity => Cow::Borrowed(body),
            Cte::Base64 => Cow::Owned(super::decode::base64_decode(body)),
            Cte::QuotedPrintable => Cow::Owned(super::decode::qp_decode(body, false)),
        }
    }
}

/// `BINARY[part]` (RFC 3516 section 4.1, RFC 9051 6.4.5): the encoded
/// content of a part and its encoding; with no part numbers the whole
/// message, as it is. None: no such part.
pub fn binary_part<'a>(
    msg: &Message<'a>,
    part: &[u32],
) -> Result<Option<(&'a [u8], Cte)>, UnknownCte> {
    if part.is_empty() {
        return Ok(Some((msg.raw, Cte::Identity)));
    }
    let Some(p) = resolve(&msg.root, part) else {
        return Ok(None);
    };
    let cte = match p.encoding.to_ascii_lowercase().as_slice() {
        b"7bit" | b"8bit" | b"binary" => Cte::Identity,
        b"base64" => Cte::Base64,
        b"quoted-printable" => Cte::QuotedPrintable,
        _ => return Err(UnknownCte),
    };
    Ok(Some((p.body, cte)))
}

/// The decoded content of [`binary_part`].
pub fn binary_bytes<'a>(
    msg: &Message<'a>,
    part: &[u32],
) -> Result<Option<Cow<'a, [u8]>>, UnknownCte> {
    Ok(binary_part(msg, part)?.map(|(body, cte)| cte.decode(body)))
}

/// Apply `<start.len>`: octets `start..start+len`, empty if `start` is past
/// the end (RFC 3501 section 6.4.5). The response names only the origin:
/// `BODY[...]<start>`.
pub fn partial(data: Cow<'_, [u8]>, p: Partial) -> Cow<'_, [u8]> {
    let len = data.len();
    let start = (p.start as usize).min(len);
    let end = start.saturating_add(p.len as usize).min(len);
    match data {
        Cow::Borrowed(b) => Cow::Borrowed(&b[start..end]),
        Cow::Owned(mut v) => {
            v.truncate(end);
            v.drain(..start);
            Cow::Owned(v)
        }
    }
}
