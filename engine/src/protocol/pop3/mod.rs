//! POP3 wire formats: RFC 1939, RFC 2449 (CAPA), RFC 5034 (SASL AUTH, PLAIN
//! per RFC 4616), RFC 3206 (response codes).
//!
//! What this module owns:
//! - [`line`](mod@line): splitting buffered input into command lines, with the
//!   255-octet limit and resynchronisation after an overlong line;
//! - [`command`]: parsing one line into a borrowed [`Command`];
//! - [`stuff`]: zero-copy byte-stuffing of stored messages for RETR/TOP;
//! - [`reply`]: encoding status lines and every reply text;
//! - [`sasl`] and [`base64`]: decoding AUTH PLAIN responses.
//!
//! What it must never do: perform I/O, read the clock, keep per-connection
//! state beyond the splitter's "discarding" flag, allocate on the hot paths
//! (splitting, parsing, stuffing borrow from their input), or panic on any
//! input. Session rules (which command is valid when) live in
//! [`crate::session::pop3`].

pub mod base64;
pub mod command;
pub mod line;
pub mod reply;
pub mod sasl;
pub mod stuff;

pub use command::{parse_command, Command, ParseError};
pub use line::{LineSplitter, Scan};
pub use reply::RespCode;
pub use sasl::{decode_plain, PlainCredentials, PlainError, POP3_SASL_LINE_MAX};
pub use stuff::write_stuffed;

/// RFC 1939 section 7: a unique-id is 1 to 70 characters.
pub const UIDL_MAX: usize = 70;

/// RFC 1939 section 7: a unique-id is 1 to 70 characters in 0x21..=0x7E.
pub fn is_valid_uidl(uidl: &[u8]) -> bool {
    (1..=UIDL_MAX).contains(&uidl.len()) && uidl.iter().all(|b| (0x21..=0x7e).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidl_validity() {
        assert!(is_valid_uidl(b"QhdPYR:00WBw1Ph7x7"));
        assert!(is_valid_uidl(&[b'~'; 70]));
        assert!(!is_valid_uidl(&[b'a'; 71]));
        assert!(!is_valid_uidl(b""));
        assert!(!is_valid_uidl(b"a b"));
        assert!(!is_valid_uidl(b"a\r\n"));
        assert!(!is_valid_uidl("é".as_bytes()));
    }
}
