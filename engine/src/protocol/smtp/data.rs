//! Message data receivers: DATA (dot-stuffed, RFC 5321 section 4.1.1.4 and
//! 4.5.2) and BDAT (counted chunks, RFC 3030).
//!
//! Owns: finding the end of message data, removing DATA's transparency dots,
//! and bounding how much body is kept. Each receiver holds only the few bytes
//! of state needed between reads, so any split of the input across `feed`
//! calls gives the same body and the same end point.
//!
//! Must never: end DATA on anything but `CRLF . CRLF` (SMTP smuggling: a
//! receiver that also accepts `LF . LF`, `CRLF . LF`, `LF . CRLF` or
//! `CR . CR` disagrees with other servers about where a message ends, and an
//! attacker can hide a second, forged transaction inside the first); alter a
//! bare CR or bare LF (they are ordinary bytes: only CRLF starts a line);
//! keep more than `size_max` body octets; or stop scanning early because the
//! body is too large (the session must find the end to answer 552 in sync).
use memchr::memmem;
use std::sync::LazyLock;

/// Searcher for `CRLF .`, the only spot inside DATA where anything happens;
/// built once instead of at every `feed`.
static LINE_DOT: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\r\n."));

/// Result of one `feed` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; the data is not finished.
    NeedMore,
    /// The data ended within the input; bytes after the consumed count belong
    /// to the next command.
    Done,
}

/// Where the DATA scanner is, relative to the last line start (a line starts
/// after CRLF, or at the very beginning of the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// Inside a line, last byte not CR.
    Text,
    /// Inside a line, last byte CR (already stored).
    Cr,
    /// Saw `.` at a line start (not stored: it is either the end marker or a
    /// transparency dot, removed either way).
    Dot,
    /// Saw `.` CR at a line start (CR not stored yet).
    DotCr,
}

/// Size accounting shared by both receivers: count every octet, store octets
/// only while the total stays within `size_max`.
#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    size: usize,
    overflow: bool,
    /// A NUL octet was among the stored ones (the session refuses the message).
    nul: bool,
}

impl Budget {
    fn push(&mut self, body: &mut Vec<u8>, bytes: &[u8], size_max: usize) {
        let room = size_max.saturating_sub(self.size);
        self.size = self.size.saturating_add(bytes.len());
        if self.overflow {
            return;
        }
        if !self.nul && memchr::memchr(0, bytes).is_some() {
            self.nul = true;
        }
        if bytes.len() > room {
            // Keep the prefix that fits so the stored bytes do not depend on
            // how the input was split; the session throws them away anyway.
            body.extend_from_slice(&bytes[..room]);
            self.overflow = true;
        } else {
            body.extend_from_slice(bytes);
        }
    }
}

/// DATA receiver: unstuffs and finds `CRLF . CRLF`.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    state: State,
    budget: Budget,
}

impl Default for DataReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl DataReceiver {
    /// A receiver at the start of message data (which counts as a line start:
    /// data consisting of `.` CRLF alone is an empty message).
    pub const fn new() -> Self {
        DataReceiver {
            state: State::LineStart,
            budget: Budget {
                size: 0,
                overflow: false,
                nul: false,
            },
        }
    }

    /// Start over for a new message.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// True if the message grew beyond `size_max` (the session answers 552).
    pub fn overflowed(&self) -> bool {
        self.budget.overflow
    }

    /// True if the stored octets contain a NUL (the session answers 550 5.6.0).
    pub fn has_nul(&self) -> bool {
        self.budget.nul
    }

    /// Unstuffed message octets seen so far, stored or not (saturating).
    pub fn size(&self) -> usize {
        self.budget.size
    }

    /// Scan `input`, appending unstuffed message octets to `body` (never more
    /// than `size_max` of them in total), including the CRLF before the final
    /// dot. Returns the bytes consumed (the whole input unless the end marker
    /// was found, then up to and including its LF) and whether data ended.
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>, size_max: usize) -> (usize, Progress) {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Text => {
                    // Fast path: the next interesting spot is the next CRLF
                    // followed by a dot; everything before it is stored as-is.
                    let rest = &input[pos..];
                    match LINE_DOT.find(rest) {
                        Some(i) => {
                            self.budget.push(body, &rest[..i + 2], size_max);
                            pos += i + 3;
                            self.state = State::Dot;
                        }
                        None => {
                            self.budget.push(body, rest, size_max);
                            pos = input.len();
                            self.state = if rest.ends_with(b"\r\n") {
                                State::LineStart
                            } else if rest.ends_with(b"\r") {
                                State::Cr
                            } else {
                                State::Text
                            };
                        }
                    }
                }
                State::Cr => {
                    let b = input[pos];
                    pos += 1;
                    self.budget.push(body, &[b], size_max);
                    self.state = match b {
                        b'\n' => State::LineStart,
                        b'\r' => State::Cr,
                        _ => State::Text,
                    };
                }
                State::LineStart => {
                    if input[pos] == b'.' {
                        pos += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    // RFC 5321 section 4.5.2: a line starting with '.' loses
                    // that dot; the line `.` alone ends the data. Only CR can
                    // continue the end marker; the dot is dropped either way.
                    if input[pos] == b'\r' {
                        pos += 1;
                        self.state = State::DotCr;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if input[pos] == b'\n' {
                        // CRLF . CRLF: the end. Leave the state ready for reuse.
                        self.state = State::LineStart;
                        return (pos + 1, Progress::Done);
                    }
                    // `.` CR followed by anything else (including another CR):
                    // the held CR is an ordinary byte of a dot-stuffed line.
                    self.budget.push(body, b"\r", size_max);
                    self.state = State::Cr;
                }
            }
        }
        (pos, Progress::NeedMore)
    }
}

/// BDAT receiver: takes exactly the announced number of octets, as-is
/// (RFC 3030 section 2: no dot-stuffing, no end marker). The size budget
/// spans all chunks of one message.
#[derive(Debug, Clone, Default)]
pub struct BdatReader {
    remaining: u64,
    discard: bool,
    budget: Budget,
}

impl BdatReader {
    /// A reader with no chunk in progress and an empty message.
    pub const fn new() -> Self {
        BdatReader {
            remaining: 0,
            discard: false,
            budget: Budget {
                size: 0,
                overflow: false,
                nul: false,
            },
        }
    }

    /// Start a new message: forget the size of earlier chunks.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Announce the next chunk of `size` octets. With `discard`, the chunk is
    /// read and thrown away without counting toward the message size (the
    /// BDAT command was refused but its octets are on the wire anyway,
    /// RFC 3030 section 2).
    pub fn start_chunk(&mut self, size: u64, discard: bool) {
        self.remaining = size;
        self.discard = discard;
    }

    /// Octets of the current chunk still to read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// True if the message (all kept chunks together) grew beyond `size_max`.
    pub fn overflowed(&self) -> bool {
        self.budget.overflow
    }

    /// True if a kept chunk contained a NUL octet.
    pub fn has_nul(&self) -> bool {
        self.budget.nul
    }

    /// Message octets received over all kept chunks (saturating).
    pub fn size(&self) -> usize {
        self.budget.size
    }

    /// Take up to the rest of the current chunk from `input`, appending it to
    /// `body` unless discarding or over `size_max`. `Done` once the chunk is
    /// complete (immediately for a zero-size chunk).
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>, size_max: usize) -> (usize, Progress) {
        let n = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        if !self.discard {
            self.budget.push(body, &input[..n], size_max);
        }
        self.remaining -= n as u64;
        let progress = if self.remaining == 0 {
            Progress::Done
        } else {
            Progress::NeedMore
        };
        (n, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Byte-at-a-time reference: the RFC 5321 section 4.5.2 rules spelled out
    /// as plainly as possible. Returns (body, consumed) or None if no end.
    fn reference(input: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut body = Vec::new();
        let mut i = 0;
        // Each iteration handles one line, which starts at i (after CRLF or at 0).
        loop {
            // Find the end of this line: the next CRLF.
            let mut j = i;
            let eol = loop {
                if j + 1 >= input.len() {
                    break None;
                }
                if input[j] == b'\r' && input[j + 1] == b'\n' {
                    break Some(j);
                }
                j += 1;
            };
            let eol = eol?;
            let line = &input[i..eol];
            if line == b"." {
                return Some((body, eol + 2));
            }
            let line = line.strip_prefix(b".").unwrap_or(line);
            body.extend_from_slice(line);
            body.extend_from_slice(b"\r\n");
            i = eol + 2;
        }
    }

    fn feed_split(input: &[u8], cuts: &[usize], size_max: usize) -> (Vec<u8>, Option<usize>, bool) {
        let mut r = DataReceiver::new();
        let mut body = Vec::new();
        let mut start = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
        bounds.sort_unstable();
        bounds.push(input.len());
        for end in bounds {
            if end < start {
                continue;
            }
            let (used, progress) = r.feed(&input[start..end], &mut body, size_max);
            if progress == Progress::Done {
                return (body, Some(start + used), r.overflowed());
            }
            assert_eq!(used, end - start);
            start = end;
        }
        (body, None, r.overflowed())
    }

    fn run(input: &[u8]) -> (Vec<u8>, Option<usize>) {
        let (body, end, _) = feed_split(input, &[], usize::MAX);
        (body, end)
    }

    #[test]
    fn known_answers() {
        assert_eq!(run(b".\r\n"), (b"".to_vec(), Some(3)));
        assert_eq!(run(b"a\r\n.\r\nNOOP\r\n"), (b"a\r\n".to_vec(), Some(6)));
        assert_eq!(run(b"..x\r\n.\r\n"), (b".x\r\n".to_vec(), Some(8)));
        assert_eq!(run(b"a\r\n..\r\n.\r\n"), (b"a\r\n.\r\n".to_vec(), Some(10)));
        assert_eq!(run(b"a\r\n.b\r\n.\r\n"), (b"a\r\nb\r\n".to_vec(), Some(10)));
        assert_eq!(
            run(b"a\r\n.\r\r\n.\r\n"),
            (b"a\r\n\r\r\n".to_vec(), Some(10))
        );
        assert_eq!(
            run(b"a\r\n.\rb\r\n.\r\n"),
            (b"a\r\n\rb\r\n".to_vec(), Some(11))
        );
        // Bare LF does not start a line: the dot after it is kept.
        assert_eq!(run(b"a\n.b\r\n.\r\n"), (b"a\n.b\r\n".to_vec(), Some(9)));
    }

    #[test]
    fn smuggling_markers_never_end_data() {
        for body in [
            &b"a\n.\nMAIL FROM:<x@y>\n"[..],
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\rMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\r.\r\n",
            b".\n",
            b"\n.\n",
            b"\n.\r\n",
        ] {
            assert_eq!(run(body).1, None, "{body:?}");
            let (kept, _) = run(&[body, b"\r\n.\r\n"].concat());
            assert_eq!(
                reference(&[body, b"\r\n.\r\n"].concat()).unwrap().0,
                kept,
                "{body:?}"
            );
        }
        // The bytes are kept as sent, apart from dots after CRLF.
        assert_eq!(run(b"a\r\n.\nb\r\n.\r\n").0, b"a\r\n\nb\r\n".to_vec());
        assert_eq!(run(b"a\n.\r\nb\r\n.\r\n").0, b"a\n.\r\nb\r\n".to_vec());
    }

    #[test]
    fn overflow_keeps_scanning_to_the_end() {
        let input = b"0123456789\r\n..abc\r\n.\r\nQUIT\r\n";
        let (body, end, overflow) = feed_split(input, &[3, 11, 13], 8);
        assert_eq!(end, Some(input.len() - 6));
        assert!(overflow);
        assert_eq!(body, b"01234567".to_vec());
        let (body, _, overflow) = feed_split(input, &[], 18);
        assert!(!overflow);
        assert_eq!(body, b"0123456789\r\n.abc\r\n".to_vec());
        let (_, _, overflow) = feed_split(input, &[], 17);
        assert!(overflow);
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let input = b"Subject: x\r\n\r\n..dot\r\n.\r\r\n\n.\n\r\n.x\r\n.\r\nRSET\r\n";
        let whole = run(input);
        assert_eq!(
            whole,
            (
                b"Subject: x\r\n\r\n.dot\r\n\r\r\n\n.\n\r\nx\r\n".to_vec(),
                Some(input.len() - 6)
            )
        );
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let (body, end, _) = feed_split(input, &[a, b], usize::MAX);
                assert_eq!((body, end), whole, "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn bdat_counts_exact_octets() {
        let mut r = BdatReader::new();
        let mut body = Vec::new();
        r.start_chunk(5, false);
        assert_eq!(r.feed(b"ab", &mut body, 100), (2, Progress::NeedMore));
        assert_eq!(
            r.feed(b"c\r\n.\r\nBDAT", &mut body, 100),
            (3, Progress::Done)
        );
        assert_eq!(body, b"abc\r\n".to_vec());
        r.start_chunk(0, false);
        assert_eq!(r.feed(b"", &mut body, 100), (0, Progress::Done));
        r.start_chunk(4, true);
        assert_eq!(r.feed(b"wxyzQ", &mut body, 100), (4, Progress::Done));
        assert_eq!(body, b"abc\r\n".to_vec(), "discarded chunk not stored");
        assert_eq!(r.size(), 5);
        r.start_chunk(10, false);
        assert_eq!(r.feed(b"0123456789", &mut body, 8), (10, Progress::Done));
        assert!(r.overflowed());
        assert_eq!(body, b"abc\r\n012".to_vec());
        r.reset();
        assert!(!r.overflowed());
        assert_eq!(r.size(), 0);
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                4 => Just(b'\r'),
                4 => Just(b'\n'),
                4 => Just(b'.'),
                2 => Just(b'a'),
                1 => any::<u8>(),
            ],
            0..200,
        )
    }

    proptest! {
        #[test]
        fn agrees_with_reference(body in body_strategy(), cuts in proptest::collection::vec(0usize..260, 0..6)) {
            let input = [&body[..], b"\r\n.\r\nTAIL"].concat();
            let expected = reference(&input).unwrap();
            let (got, end, overflow) = feed_split(&input, &cuts, usize::MAX);
            prop_assert!(!overflow);
            prop_assert_eq!(got, expected.0);
            prop_assert_eq!(end, Some(expected.1));
        }

        #[test]
        fn random_bodies_without_marker(body in body_strategy(), cuts in proptest::collection::vec(0usize..200, 0..6)) {
            let (got, end, _) = feed_split(&body, &cuts, usize::MAX);
            match reference(&body) {
                Some((b, e)) => { prop_assert_eq!(got, b); prop_assert_eq!(end, Some(e)); }
                None => prop_assert_eq!(end, None),
            }
        }

        #[test]
        fn overflow_is_split_independent(body in body_strategy(), cuts in proptest::collection::vec(0usize..260, 0..6), max in 0usize..120) {
            let input = [&body[..], b"\r\n.\r\n"].concat();
            let whole = feed_split(&input, &[], max);
            prop_assert_eq!(feed_split(&input, &cuts, max), whole.clone());
            let (full, _) = reference(&input).unwrap();
            prop_assert_eq!(whole.2, full.len() > max);
            prop_assert_eq!(&whole.0[..], &full[..full.len().min(max)]);
        }

        #[test]
        fn bdat_split_independent(data in proptest::collection::vec(any::<u8>(), 0..100), cuts in proptest::collection::vec(0usize..120, 0..5)) {
            let mut r = BdatReader::new();
            r.start_chunk(data.len() as u64, false);
            let mut body = Vec::new();
            let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
            bounds.sort_unstable();
            bounds.push(data.len());
            let mut start = 0;
            let mut done = data.is_empty();
            for end in bounds {
                let (used, p) = r.feed(&data[start..end], &mut body, usize::MAX);
                prop_assert_eq!(used, end - start);
                start = end;
                done = p == Progress::Done;
            }
            prop_assert!(done);
            prop_assert_eq!(body, data);
        }
    }
}
