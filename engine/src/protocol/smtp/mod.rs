//! SMTP (RFC 5321) wire scanners and reply encoders.
//!
//! Owns the byte-level grammar of the server side of SMTP:
//! - [`line`]: splitting command lines, with the line length bound;
//! - [`command`]: parsing a command line into a borrowed [`Command`];
//! - [`data`]: the DATA terminator/unstuffer and the BDAT chunk reader;
//! - [`reply`]: encoding replies, and the single table of reply texts.
//!
//! Everything here is pure: it works on the caller's slices, keeps only the
//! few bytes of state needed between reads, and decides nothing about the
//! session (ordering of commands, who may receive mail, limits other than
//! those passed in). It must never perform I/O, read the clock, allocate per
//! command, or panic on any input: all of it faces the network.
pub mod command;
pub mod data;
pub mod line;
pub mod reply;

pub use command::{
    parse_command, BodyType, Command, MailParam, Param, ParamIter, Params, SyntaxError,
};
pub use data::{BdatReader, DataReceiver, Progress};
pub use line::{LineSplitter, Split};
pub use reply::{replies, Reply};
