//! MIME structure of stored messages (RFC 5322, RFC 2045/2046/2047/2231),
//! bounded and zero-copy, for IMAP ENVELOPE, BODYSTRUCTURE, BODY[section]
//! and SEARCH.
//!
//! This module owns: splitting header and body, header fields and unfolding
//! ([`header`]), content header fields ([`content`]), the part tree with every
//! part's header and body as sub-slices of the message ([`tree`]), address
//! lists ([`address`]), the IMAP renderings ([`render`]) and decoding for
//! search ([`decode`]).
//!
//! It must never: fail or panic on any input (malformed messages get a
//! best-effort structure, by default text/plain in US-ASCII), copy message
//! bodies except where a decoded or rebuilt view is asked for (SEARCH text,
//! HEADER.FIELDS), or descend further than [`Limits`] allow: deeper or more
//! numerous parts become opaque application/octet-stream leaves. It knows
//! nothing of mailboxes, flags or sessions.
//!
//! ```
//! use ringmail::mime::{section_bytes, write_bodystructure, Message};
//! use ringmail::protocol::imap::{Section, SectionText};
//! let raw = b"Subject: hi\r\n\r\nHello\r\n";
//! let msg = Message::parse(raw);
//! let mut out = Vec::new();
//! write_bodystructure(&msg, false, &mut out);
//! assert_eq!(out, b"(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 7 1)");
//! let text = Section { part: vec![], text: Some(SectionText::Text) };
//! assert_eq!(section_bytes(&msg, &text).as_deref(), Some(&b"Hello\r\n"[..]));
//! ```

pub mod address;
pub mod content;
pub mod decode;
pub mod header;
pub mod render;
pub mod tree;

#[cfg(test)]
mod tests;

pub use address::{parse_address_list, Address};
pub use content::{ContentType, Disposition, Param};
pub use decode::{
    address_header_contains, base64_decode, body_contains, contains_ci, decode_header,
    decoded_text, header_contains, parse_rfc5322_date, qp_decode, sent_date, text_contains,
    to_utf8,
};
pub use header::{field_value, field_values, fields, split, unfold, Field};
pub use render::{
    binary_bytes, binary_part, partial, section_bytes, write_bodystructure, write_envelope,
    write_envelope_of, Cte, UnknownCte,
};
pub use tree::{count_lines, resolve, Limits, Message, Part, PartKind};
