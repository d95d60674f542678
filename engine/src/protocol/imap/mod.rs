//! IMAP4rev1 wire format (RFC 3501, with RFC 9051 grammar where compatible):
//! command framing, command parsing and response encoding.
//!
//! This module owns:
//! * [`framing`]: where a command ends in the bytes received so far, literal
//!   continuations (`{n}` / `{n+}`, RFC 7888), and size limits with
//!   resynchronization after an oversized command.
//! * [`parse`]: one framed command to a [`Command`] borrowing from the input.
//! * [`encode`]: status responses with response codes, untagged data, FETCH
//!   responses, and the string forms (atom / quoted / literal) they need.
//! * [`seqset`] and [`date`]: sequence sets and IMAP dates.
//! * [`mutf7`]: modified UTF-7 mailbox names, for IMAP4rev2's UTF-8 names.
//!
//! It must never: perform I/O, read the clock, look at mailbox state, decide
//! which commands are allowed in which session state, or allocate in
//! proportion to anything but the command it was given. The session layer
//! (built on this API) owns all of that. Message structure (ENVELOPE,
//! BODYSTRUCTURE, BODY[section]) lives in [`crate::mime`].
//!
//! Supported commands: CAPABILITY, NOOP, LOGOUT, STARTTLS, AUTHENTICATE
//! (SASL-IR, RFC 4959), LOGIN, SELECT/EXAMINE (CONDSTORE), CREATE (USE,
//! RFC 6154), DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (RFC 5258/5819),
//! LSUB, STATUS, APPEND, CHECK, CLOSE, UNSELECT, EXPUNGE, UID EXPUNGE, SEARCH
//! (ESEARCH RETURN, MODSEQ), FETCH (CHANGEDSINCE), STORE (UNCHANGEDSINCE),
//! COPY, MOVE (RFC 6851), IDLE, NAMESPACE, ID, ENABLE.

pub mod command;
pub mod date;
pub mod encode;
pub mod framing;
pub mod mutf7;
pub mod parse;
pub mod seqset;

#[cfg(test)]
mod tests;

pub use command::*;
pub use date::{write_date_time, Date, DateTime};
pub use encode::{Code, Status};
pub use framing::{rejoin_diverted, Frame, Framer, FramingLimits, LimitExceeded, Rejection};
pub use parse::{
    is_idle_done, parse_command, parse_sasl_response, ParseError, SaslResponse, MAX_DEPTH,
};
pub use seqset::{SeqNum, SeqRange, SequenceArg, SequenceSet};
