//! Command line splitter.
//!
//! RFC 1939 section 3 and RFC 2449 section 4: a command line is terminated by
//! CRLF and is at most 255 octets including the CRLF
//! ([`POP3_COMMAND_LINE_MAX`](crate::limits::POP3_COMMAND_LINE_MAX)). We also
//! accept a bare LF as the terminator (lenient reading; some scripts send it),
//! and count the terminator bytes actually present against the limit.
//!
//! An overlong line is not an error that loses sync: the splitter discards
//! bytes up to and including the next LF, then reports [`Scan::TooLong`]
//! exactly once so the caller answers `-ERR line too long` for that line and
//! carries on with the next one. While discarding, the caller's buffer never
//! needs to hold more than `max` bytes.

use memchr::memchr;

/// Outcome of one [`LineSplitter::next`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A complete line, without its CRLF (or bare LF). `consumed` counts the
    /// line and its terminator.
    Line { line: &'a [u8], consumed: usize },
    /// No complete line yet. The caller drops the first `consumed` bytes
    /// (non-zero only while an overlong line is being discarded) and reads
    /// more input.
    NeedMore { consumed: usize },
    /// An overlong line ended within the first `consumed` bytes, which the
    /// caller drops; it answers `-ERR line too long` once.
    TooLong { consumed: usize },
}

/// Splits buffered input into lines. Its only state is whether it is in the
/// middle of discarding an overlong line.
#[derive(Debug, Default, Clone)]
pub struct LineSplitter {
    discarding: bool,
}

impl LineSplitter {
    pub const fn new() -> Self {
        Self { discarding: false }
    }

    /// True while the rest of an overlong line is being skipped.
    pub const fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Scan `buf` for the next line, allowing at most `max` octets including
    /// the terminator. `max` must be at least 2 to be useful; 0 or 1 simply
    /// make every line too long.
    pub fn next<'a>(&mut self, buf: &'a [u8], max: usize) -> Scan<'a> {
        let lf = memchr(b'\n', buf);
        if self.discarding {
            return match lf {
                Some(i) => {
                    self.discarding = false;
                    Scan::TooLong { consumed: i + 1 }
                }
                None => Scan::NeedMore {
                    consumed: buf.len(),
                },
            };
        }
        match lf {
            Some(i) if i < max => {
                // i + 1 octets with the LF: within the limit.
                let line = &buf[..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Scan::Line {
                    line,
                    consumed: i + 1,
                }
            }
            Some(i) => Scan::TooLong { consumed: i + 1 },
            // Without an LF, `max` octets already exceed the limit: even a
            // bare LF next would make the line `max + 1` long.
            None if buf.len() >= max => {
                self.discarding = true;
                Scan::NeedMore {
                    consumed: buf.len(),
                }
            }
            None => Scan::NeedMore { consumed: 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::POP3_COMMAND_LINE_MAX as MAX;

    #[test]
    fn crlf_and_bare_lf() {
        let mut s = LineSplitter::new();
        assert_eq!(
            s.next(b"STAT\r\nNOOP", MAX),
            Scan::Line {
                line: b"STAT",
                consumed: 6
            }
        );
        assert_eq!(
            s.next(b"NOOP\n", MAX),
            Scan::Line {
                line: b"NOOP",
                consumed: 5
            }
        );
        assert_eq!(s.next(b"NOOP", MAX), Scan::NeedMore { consumed: 0 });
        assert_eq!(s.next(b"NOOP\r", MAX), Scan::NeedMore { consumed: 0 });
        assert_eq!(
            s.next(b"\r\n", MAX),
            Scan::Line {
                line: b"",
                consumed: 2
            }
        );
        // Only one CR belongs to the terminator.
        assert_eq!(
            s.next(b"A\r\r\n", MAX),
            Scan::Line {
                line: b"A\r",
                consumed: 4
            }
        );
    }

    #[test]
    fn limit_is_inclusive_of_crlf() {
        let mut s = LineSplitter::new();
        let mut ok = vec![b'a'; MAX - 2];
        ok.extend_from_slice(b"\r\n");
        assert!(matches!(s.next(&ok, MAX), Scan::Line { consumed, .. } if consumed == MAX));
        let mut long = vec![b'a'; MAX - 1];
        long.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(s.next(&long, MAX), Scan::TooLong { consumed: MAX + 1 });
        assert!(!s.is_discarding());
        assert_eq!(
            s.next(&long[MAX + 1..], MAX),
            Scan::Line {
                line: b"NOOP",
                consumed: 6
            }
        );
    }

    #[test]
    fn overlong_line_in_pieces_is_discarded_then_reported_once() {
        let mut s = LineSplitter::new();
        let partial = vec![b'x'; MAX - 1];
        assert_eq!(s.next(&partial, MAX), Scan::NeedMore { consumed: 0 });
        let full = vec![b'x'; MAX];
        assert_eq!(s.next(&full, MAX), Scan::NeedMore { consumed: MAX });
        assert!(s.is_discarding());
        assert_eq!(s.next(b"yyyy", MAX), Scan::NeedMore { consumed: 4 });
        assert_eq!(
            s.next(b"zz\r\nQUIT\r\n", MAX),
            Scan::TooLong { consumed: 4 }
        );
        assert_eq!(
            s.next(b"QUIT\r\n", MAX),
            Scan::Line {
                line: b"QUIT",
                consumed: 6
            }
        );
    }
}
