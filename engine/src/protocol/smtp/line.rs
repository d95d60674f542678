//! Command line splitter.
//!
//! Owns: finding the end of one SMTP command line in the bytes buffered so far
//! and bounding its length (RFC 5321 section 4.5.3.1.4, our bound
//! [`SMTP_COMMAND_LINE_MAX`]). Commands may end with CRLF or, liberally, a bare
//! LF (RFC 5321 section 2.3.8 asks for CRLF; many clients are sloppy and a
//! command line carries no message data, so accepting LF here is harmless).
//!
//! Must never: apply this liberal rule to message data (see [`super::data`],
//! where only CRLF counts), copy or allocate, or return a line longer than the
//! bound.
use crate::limits::SMTP_COMMAND_LINE_MAX;

/// What [`LineSplitter::split`] found at the start of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split<'a> {
    /// A complete command line, without its CRLF / LF; `consumed` counts the
    /// terminator too.
    Line { line: &'a [u8], consumed: usize },
    /// No complete line yet: nothing consumed, call again with more bytes.
    NeedMore,
    /// The line is longer than the bound. `consumed` bytes were thrown away.
    /// `ended` is true once the terminating LF of the long line was consumed:
    /// that is when the session answers `500 5.5.6` (exactly once per long
    /// line) and is back in sync with the client.
    TooLong { consumed: usize, ended: bool },
}

/// Splits command lines; the only state it carries between reads is whether
/// it is discarding the rest of an over-long line.
#[derive(Debug, Clone, Default)]
pub struct LineSplitter {
    discarding: bool,
}

impl LineSplitter {
    /// A splitter at the start of a line.
    pub const fn new() -> Self {
        LineSplitter { discarding: false }
    }

    /// True while the rest of an over-long line is being thrown away.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Look for one command line at the start of `input`, bounded by
    /// [`SMTP_COMMAND_LINE_MAX`] octets including the terminator.
    pub fn split<'a>(&mut self, input: &'a [u8]) -> Split<'a> {
        self.split_bounded(input, SMTP_COMMAND_LINE_MAX)
    }

    /// [`Self::split`] with an explicit bound (`max` octets including the
    /// line terminator; at least 2).
    pub fn split_bounded<'a>(&mut self, input: &'a [u8], max: usize) -> Split<'a> {
        if self.discarding {
            return match memchr::memchr(b'\n', input) {
                Some(i) => {
                    self.discarding = false;
                    Split::TooLong {
                        consumed: i + 1,
                        ended: true,
                    }
                }
                None if input.is_empty() => Split::NeedMore,
                None => Split::TooLong {
                    consumed: input.len(),
                    ended: false,
                },
            };
        }
        let window = &input[..input.len().min(max)];
        if let Some(i) = memchr::memchr(b'\n', window) {
            let mut line = &input[..i];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            return Split::Line {
                line,
                consumed: i + 1,
            };
        }
        if input.len() < max {
            return Split::NeedMore;
        }
        // Over the bound: throw away up to and including the next LF.
        match memchr::memchr(b'\n', &input[max..]) {
            Some(i) => Split::TooLong {
                consumed: max + i + 1,
                ended: true,
            },
            None => {
                self.discarding = true;
                Split::TooLong {
                    consumed: input.len(),
                    ended: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_bare_lf() {
        let mut s = LineSplitter::new();
        assert_eq!(
            s.split(b"NOOP\r\nQUIT"),
            Split::Line {
                line: b"NOOP",
                consumed: 6
            }
        );
        assert_eq!(
            s.split(b"NOOP\nQUIT"),
            Split::Line {
                line: b"NOOP",
                consumed: 5
            }
        );
        assert_eq!(
            s.split(b"\r\n"),
            Split::Line {
                line: b"",
                consumed: 2
            }
        );
        assert_eq!(
            s.split(b"NO\rOP\r\n"),
            Split::Line {
                line: b"NO\rOP",
                consumed: 7
            }
        );
        assert_eq!(s.split(b"NOOP\r"), Split::NeedMore);
        assert_eq!(s.split(b""), Split::NeedMore);
    }

    #[test]
    fn bound_is_inclusive_of_terminator() {
        let mut s = LineSplitter::new();
        let ok = [b"x".repeat(8), b"\r\n".to_vec()].concat();
        assert_eq!(
            s.split_bounded(&ok, 10),
            Split::Line {
                line: &ok[..8],
                consumed: 10
            }
        );
        let long = [b"x".repeat(9), b"\r\nNOOP\r\n".to_vec()].concat();
        assert_eq!(
            s.split_bounded(&long, 10),
            Split::TooLong {
                consumed: 11,
                ended: true
            }
        );
        assert!(!s.is_discarding());
    }

    #[test]
    fn long_line_across_reads() {
        let mut s = LineSplitter::new();
        assert_eq!(
            s.split_bounded(b"0123456789ab", 10),
            Split::TooLong {
                consumed: 12,
                ended: false
            }
        );
        assert!(s.is_discarding());
        assert_eq!(s.split_bounded(b"", 10), Split::NeedMore);
        assert_eq!(
            s.split_bounded(b"cdef", 10),
            Split::TooLong {
                consumed: 4,
                ended: false
            }
        );
        assert_eq!(
            s.split_bounded(b"g\r\nQUIT\r\n", 10),
            Split::TooLong {
                consumed: 3,
                ended: true
            }
        );
        assert_eq!(
            s.split_bounded(b"QUIT\r\n", 10),
            Split::Line {
                line: b"QUIT",
                consumed: 6
            }
        );
    }

    #[test]
    fn short_partial_needs_more() {
        let mut s = LineSplitter::new();
        assert_eq!(s.split_bounded(b"012345678", 10), Split::NeedMore);
        assert_eq!(
            s.split_bounded(b"0123456789", 10),
            Split::TooLong {
                consumed: 10,
                ended: false
            }
        );
    }
}
