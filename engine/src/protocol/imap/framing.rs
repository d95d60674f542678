//! Command framing ("fragmentizer"): find where one complete IMAP command
//! ends in the bytes buffered so far, without copying and without rescanning.
//!
//! An IMAP command is one or more lines: every line that ends with a literal
//! announcement (`{n}`, `{n+}`) is followed by exactly `n` octets of literal
//! data and then the rest of the command (RFC 3501 section 4.3, RFC 7888).
//! The framer owns only that structure. It never interprets commands (that is
//! [`super::parse_command`]) and never performs I/O.
//!
//! Contract with the caller (the session layer):
//! * Keep the bytes of the current command at the front of one buffer and call
//!   [`Framer::feed`] with the whole buffer after every read. The framer
//!   remembers how far it has scanned, so each call costs only the new bytes.
//! * [`Frame::Command`]`(n)`: `buf[..n]` is a complete command; parse it, then
//!   drop those `n` bytes from the front. The framer is ready for the next one.
//! * [`Frame::Continue`]: a synchronizing literal was announced; send a
//!   continuation request (`+ Ready`, see [`super::encode::write_continuation`])
//!   before reading further, then call `feed` again when bytes arrive.
//! * [`Frame::Rejected`]: a limit was exceeded. Answer it (see
//!   [`Rejection::answer`]) using the tag in `buf[rejection.tag]`, then drop
//!   `rejection.consume` bytes. If the client still owes bytes of that command
//!   (a non-synchronizing literal, the rest of an over-long line), the framer
//!   will hand them back as [`Frame::Discard`] so the caller never buffers them.
//! * [`Frame::Discard`]`(n)`: drop `n` bytes from the front; they belong to a
//!   rejected command.
//!
//! Bare LF is accepted as a line terminator. `line_max` bounds the octets of
//! one line, excluding its CRLF; after a literal the line count restarts.

use std::ops::Range;

/// Size bounds for one command. Pick [`FramingLimits::NOT_AUTHENTICATED`]
/// until the client has logged in: an anonymous peer must not make the server
/// hold more than a few KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingLimits {
    /// Longest line, in octets without the line terminator.
    pub line_max: usize,
    /// Largest single literal.
    pub literal_max: usize,
    /// Largest whole command: lines, terminators and literals together.
    pub command_max: usize,
}

impl FramingLimits {
    /// Before authentication: enough for LOGIN/AUTHENTICATE with long
    /// credentials, and nothing more.
    pub const NOT_AUTHENTICATED: FramingLimits = FramingLimits {
        line_max: 2048,
        literal_max: 1024,
        command_max: 4096,
    };
    /// An ID command (RFC 2971) in any state: the largest the RFC allows,
    /// values as literals too, and nothing more (see
    /// [`crate::limits::IMAP_ID_COMMAND_MAX`]).
    pub const ID: FramingLimits = FramingLimits {
        line_max: crate::limits::IMAP_ID_COMMAND_MAX,
        literal_max: crate::limits::IMAP_ID_VALUE_MAX,
        command_max: crate::limits::IMAP_ID_COMMAND_MAX,
    };
    /// After authentication: APPEND of a maximal message plus its command line.
    pub const AUTHENTICATED: FramingLimits = FramingLimits {
        line_max: 64 * 1024,
        literal_max: crate::limits::MESSAGE_SIZE_MAX,
        command_max: crate::limits::MESSAGE_SIZE_MAX + 64 * 1024,
    };
}

/// What the framer found in the buffered bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// No complete command yet: keep the bytes and read more.
    NeedMore,
    /// `buf[..n]` is one complete command.
    Command(usize),
    /// The client announced a synchronizing literal of `len` octets and waits
    /// for a continuation request before sending it.
    Continue {
        /// The announced literal size.
        len: u64,
    },
    /// The command broke a limit; see [`Rejection`].
    Rejected(Rejection),
    /// Drop this many bytes from the front of the buffer (they belong to a
    /// command already rejected).
    Discard(usize),
    /// An APPEND announced a literal of at least the divert size (see
    /// [`Framer::set_divert`]): `buf[..head]` is the command up to and
    /// including the announcing line. The caller takes those bytes out,
    /// receives the `len` literal octets itself (after a continuation
    /// request if `sync`), and feeds the rest of the command as usual; the
    /// framer starts that rest as a fresh line.
    Divert {
        /// Bytes of the command before the literal data.
        head: usize,
        /// The announced literal size.
        len: u64,
        /// A synchronizing literal: the client waits for `+`.
        sync: bool,
    },
}

/// Which bound a rejected command broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitExceeded {
    /// A line longer than `line_max`.
    Line,
    /// A literal larger than `literal_max`.
    Literal,
    /// The command as a whole is larger than `command_max`.
    Command,
    /// A `~{n}` binary literal (RFC 3516) outside APPEND.
    BinaryLiteral,
}

/// A command rejected by the framer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Bytes to drop from the front of the buffer after answering.
    pub consume: usize,
    /// What was exceeded.
    pub reason: LimitExceeded,
    /// Where the command's tag is in the buffer (valid before dropping), if it
    /// could be found; answer with `*` otherwise.
    pub tag: Option<Range<usize>>,
    /// The command is an APPEND (possibly `UID`-less, any case): size
    /// problems are answered `NO [TOOBIG]` (RFC 7888 section 4 / RFC 4469).
    pub append: bool,
    /// Bytes the client will still send for this command (non-synchronizing
    /// literal data, or the rest of a line) that the framer will discard.
    pub discarding: bool,
}

impl Rejection {
    /// The response the caller should send: `(status, code, text)`.
    pub fn answer(&self) -> (super::Status, Option<super::Code<'static>>, &'static str) {
        use super::{Code, Status};
        match self.reason {
            LimitExceeded::Literal | LimitExceeded::Command if self.append => {
                (Status::No, Some(Code::TooBig), "Message too large")
            }
            LimitExceeded::Line => (Status::Bad, None, "Command line too long"),
            LimitExceeded::Literal => (Status::Bad, Some(Code::TooBig), "Literal too large"),
            LimitExceeded::Command => (Status::Bad, Some(Code::TooBig), "Command too large"),
            LimitExceeded::BinaryLiteral => (Status::Bad, None, "Binary literals only in APPEND"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Scanning a line that starts at `line_start`.
    Line,
    /// Inside literal data.
    Literal { remaining: u64 },
    /// Dropping the rest of a rejected line, watching for a trailing literal.
    DiscardLine { scan: LiteralScan },
    /// Dropping the data of a rejected non-synchronizing literal.
    DiscardLiteral { remaining: u64 },
}

/// Incremental recognizer of `{n}` / `{n+}` right before a line end, for lines
/// whose start has already been dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct LiteralScan {
    /// 0 nothing, 1 in digits after `{`, 2 after `+`, 3 after `}`, 4 after `}` CR.
    st: u8,
    n: u64,
    digits: u8,
    plus: bool,
}

impl LiteralScan {
    fn push(&mut self, b: u8) {
        match (self.st, b) {
            (_, b'{') => {
                *self = LiteralScan {
                    st: 1,
                    ..Default::default()
                }
            }
            (1, b'0'..=b'9') => {
                self.n = self
                    .n
                    .saturating_mul(10)
                    .saturating_add(u64::from(b - b'0'));
                self.digits = self.digits.saturating_add(1);
            }
            (1, b'+') if self.digits > 0 => {
                self.st = 2;
                self.plus = true;
            }
            (1 | 2, b'}') if self.digits > 0 => self.st = 3,
            (3, b'\r') => self.st = 4,
            _ => self.st = 0,
        }
    }

    /// At a line feed: `Some((len, non_synchronizing))` if the line ended with
    /// a literal announcement.
    fn at_eol(&self) -> Option<(u64, bool)> {
        matches!(self.st, 3 | 4).then_some((self.n, self.plus))
    }
}

/// A literal announcement found at the end of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Announce {
    len: u64,
    sync: bool,
    binary: bool,
}

/// Does `line` (without its terminator) end with `{n}`, `{n+}` or `~{n}`?
fn literal_suffix(line: &[u8]) -> Option<Announce> {
    let inner = line.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', inner)?;
    let mut digits = &inner[open + 1..];
    let sync = match digits.strip_suffix(b"+") {
        Some(d) => {
            digits = d;
            false
        }
        None => true,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    let binary = open > 0 && inner[open - 1] == b'~';
    Some(Announce { len, sync, binary })
}

/// Incremental command framer; one per connection. See the module docs.
#[derive(Clone, Debug)]
pub struct Framer {
    limits: FramingLimits,
    state: State,
    /// Bytes of the current command already examined.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// APPEND literals at least this large are diverted (0: never).
    divert_min: u64,
}

impl Framer {
    /// A framer at the start of a command.
    pub fn new(limits: FramingLimits) -> Self {
        Framer {
            limits,
            state: State::Line,
            pos: 0,
            line_start: 0,
            divert_min: 0,
        }
    }

    /// Hand APPEND literals of `min` octets or more to the caller as
    /// [`Frame::Divert`] instead of framing them in the buffer (0: never).
    pub fn set_divert(&mut self, min: usize) {
        self.divert_min = min as u64;
    }

    /// Change limits (e.g. after LOGIN). Takes effect for the data not yet
    /// scanned.
    pub fn set_limits(&mut self, limits: FramingLimits) {
        self.limits = limits;
    }

    /// Current limits.
    pub fn limits(&self) -> FramingLimits {
        self.limits
    }

    /// Forget any partial command (e.g. after STARTTLS, when the buffer is
    /// cleared).
    pub fn reset(&mut self) {
        self.state = State::Line;
        self.pos = 0;
        self.line_start = 0;
    }

    /// True between commands (nothing scanned and nothing to discard): the
    /// point where a caller may switch the connection to another mode.
    pub fn is_idle(&self) -> bool {
        self.state == State::Line && self.pos == 0
    }

    /// The bounds for the command at the front of `buf`: the configured
    /// ones, raised to [`FramingLimits::ID`] for an ID command (known as soon
    /// as `tag SP "ID" SP` has arrived), so a maximal ID fits before login.
    fn limits_for(&self, buf: &[u8]) -> FramingLimits {
        let id = FramingLimits::ID;
        if self.limits.line_max >= id.line_max && self.limits.command_max >= id.command_max {
            return self.limits;
        }
        let head = &buf[..buf.len().min(self.limits.line_max + 4)];
        let Some(sp) = memchr::memchr(b' ', head) else {
            return self.limits;
        };
        let is_id = sp > 0
            && head[..sp].iter().all(|&b| super::parse::is_tag_char(b))
            && head
                .get(sp + 1..sp + 4)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"ID "));
        if !is_id {
            return self.limits;
        }
        FramingLimits {
            line_max: self.limits.line_max.max(id.line_max),
            literal_max: self.limits.literal_max.max(id.literal_max),
            command_max: self.limits.command_max.max(id.command_max),
        }
    }

    fn finish(&mut self, n: usize) -> Frame {
        self.reset();
        Frame::Command(n)
    }

    /// Examine `buf` (the buffered bytes, starting with the current command).
    pub fn feed(&mut self, buf: &[u8]) -> Frame {
        if self.pos > buf.len() || self.line_start > self.pos {
            // The caller dropped bytes it had not been told to drop: start over.
            self.pos = 0;
            self.line_start = 0;
            if matches!(self.state, State::Line | State::Literal { .. }) {
                self.state = State::Line;
            }
        }
        let mut discarded = 0usize;
        loop {
            match self.state {
                State::Line => {
                    if discarded > 0 {
                        // A rejected command just ended inside this buffer.
                        return Frame::Discard(discarded);
                    }
                    let limits = self.limits_for(buf);
                    let rest = &buf[self.pos..];
                    match memchr::memchr(b'\n', rest) {
                        Some(i) => {
                            let lf = self.pos + i;
                            let line = &buf[self.line_start..lf];
                            let line = line.strip_suffix(b"\r").unwrap_or(line);
                            let announce = literal_suffix(line);
                            if line.len() > limits.line_max {
                                return self.reject(buf, lf + 1, LimitExceeded::Line, announce);
                            }
                            if lf + 1 > limits.command_max {
                                return self.reject(buf, lf + 1, LimitExceeded::Command, announce);
                            }
                            let Some(a) = announce else {
                                return self.finish(lf + 1);
                            };
                            // RFC 3516: a literal8 is the message of an
                            // APPEND, nowhere else.
                            if a.binary && !command_prefix(buf).1 {
                                return self.reject(
                                    buf,
                                    lf + 1,
                                    LimitExceeded::BinaryLiteral,
                                    announce,
                                );
                            }
                            if a.len > limits.literal_max as u64 {
                                return self.reject(buf, lf + 1, LimitExceeded::Literal, announce);
                            }
                            if (lf as u64 + 1).saturating_add(a.len) > limits.command_max as u64 {
                                return self.reject(buf, lf + 1, LimitExceeded::Command, announce);
                            }
                            if self.divert_min > 0
                                && a.len >= self.divert_min
                                && command_prefix(buf).1
                            {
                                self.reset();
                                return Frame::Divert {
                                    head: lf + 1,
                                    len: a.len,
                                    sync: a.sync,
                                };
                            }
                            self.pos = lf + 1;
                            self.line_start = self.pos;
                            self.state = State::Literal { remaining: a.len };
                            if a.sync {
                                return Frame::Continue { len: a.len };
                            }
                        }
                        None => {
                            let line_len = buf.len() - self.line_start;
                            // A CR may be the first half of the terminator.
                            let line_len = if buf.last() == Some(&b'\r') {
                                line_len.saturating_sub(1)
                            } else {
                                line_len
                            };
                            if line_len > limits.line_max {
                                return self.reject_partial_line(buf, LimitExceeded::Line);
                            }
                            if buf.len() > limits.command_max {
                                return self.reject_partial_line(buf, LimitExceeded::Command);
                            }
                            self.pos = buf.len();
                            return Frame::NeedMore;
                        }
                    }
                }
                State::Literal { remaining } => {
                    let avail = (buf.len() - self.pos) as u64;
                    if avail >= remaining {
                        self.pos += remaining as usize;
                        self.line_start = self.pos;
                        self.state = State::Line;
                    } else {
                        self.pos = buf.len();
                        self.state = State::Literal {
                            remaining: remaining - avail,
                        };
                        return Frame::NeedMore;
                    }
                }
                State::DiscardLiteral { remaining } => {
                    let avail = (buf.len() - discarded) as u64;
                    if avail >= remaining {
                        discarded += remaining as usize;
                        self.state = State::DiscardLine {
                            scan: LiteralScan::default(),
                        };
                    } else {
                        self.state = State::DiscardLiteral {
                            remaining: remaining - avail,
                        };
                        return self.discard(buf.len());
                    }
                }
                State::DiscardLine { mut scan } => {
                    let rest = &buf[discarded..];
                    match memchr::memchr(b'\n', rest) {
                        Some(i) => {
                            rest[..i].iter().for_each(|&b| scan.push(b));
                            discarded += i + 1;
                            self.state = match scan.at_eol() {
                                // The client sends this literal without waiting.
                                Some((len, true)) => State::DiscardLiteral { remaining: len },
                                // A synchronizing literal: the client waits for a
                                // continuation it will not get (it already has
                                // our tagged answer), so the command is over.
                                Some((_, false)) | None => State::Line,
                            };
                            if self.state == State::Line {
                                self.pos = 0;
                                self.line_start = 0;
                            }
                        }
                        None => {
                            rest.iter().for_each(|&b| scan.push(b));
                            self.state = State::DiscardLine { scan };
                            return self.discard(buf.len());
                        }
                    }
                }
            }
        }
    }

    fn discard(&mut self, n: usize) -> Frame {
        self.pos = 0;
        self.line_start = 0;
        if n == 0 {
            Frame::NeedMore
        } else {
            Frame::Discard(n)
        }
    }

    /// Reject at a complete line ending at `end` (just past its LF).
    fn reject(
        &mut self,
        buf: &[u8],
        end: usize,
        reason: LimitExceeded,
        announce: Option<Announce>,
    ) -> Frame {
        let (tag, append) = command_prefix(buf);
        self.pos = 0;
        self.line_start = 0;
        let mut discarding = false;
        self.state = match announce {
            Some(a) if !a.sync => {
                discarding = true;
                State::DiscardLiteral { remaining: a.len }
            }
            _ => State::Line,
        };
        Frame::Rejected(Rejection {
            consume: end,
            reason,
            tag,
            append,
            discarding,
        })
    }

    /// Reject while the current line is still incomplete: drop everything and
    /// keep discarding up to the end of the line.
    fn reject_partial_line(&mut self, buf: &[u8], reason: LimitExceeded) -> Frame {
        let (tag, append) = command_prefix(buf);
        let mut scan = LiteralScan::default();
        buf[self.line_start..].iter().for_each(|&b| scan.push(b));
        self.pos = 0;
        self.line_start = 0;
        self.state = State::DiscardLine { scan };
        Frame::Rejected(Rejection {
            consume: buf.len(),
            reason,
            tag,
            append,
            discarding: true,
        })
    }
}

/// A diverted command put back together for the parser: `head` (as
/// [`Frame::Divert`] gave it) with its literal announcement turned into an
/// empty literal (`{0}`), followed by `tail` (the rest of the command). The
/// caller substitutes the literal it received for the empty one.
pub fn rejoin_diverted(head: &[u8], tail: &[u8]) -> Vec<u8> {
    let line = head.strip_suffix(b"\n").unwrap_or(head);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let open = memchr::memrchr(b'{', line).unwrap_or(line.len());
    let mut out = Vec::with_capacity(open + 5 + tail.len());
    out.extend_from_slice(&line[..open]);
    out.extend_from_slice(b"{0}\r\n");
    out.extend_from_slice(tail);
    out
}

/// Tag range and whether the command is APPEND, from the first line.
fn command_prefix(buf: &[u8]) -> (Option<Range<usize>>, bool) {
    let first = &buf[..memchr::memchr(b'\n', buf).unwrap_or(buf.len())];
    let Some(sp) = memchr::memchr(b' ', first) else {
        return (None, false);
    };
    let tag_ok = sp > 0 && first[..sp].iter().all(|&b| super::parse::is_tag_char(b));
    let rest = &first[sp + 1..];
    let name = &rest[..memchr::memchr(b' ', rest).unwrap_or(rest.len())];
    let name = name.strip_suffix(b"\r").unwrap_or(name);
    (
        tag_ok.then_some(0..sp),
        name.eq_ignore_ascii_case(b"APPEND"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: FramingLimits = FramingLimits {
        line_max: 40,
        literal_max: 20,
        command_max: 100,
    };

    /// Feed `input` in chunks as a client would, answering continuations, and
    /// return every event with the bytes it covered.
    fn run(limits: FramingLimits, input: &[u8], cuts: &[usize]) -> Vec<(Frame, Vec<u8>)> {
        let mut framer = Framer::new(limits);
        let mut buf: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        let mut fed = 0;
        let mut points: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
        points.push(input.len());
        points.sort_unstable();
        for p in points {
            buf.extend_from_slice(&input[fed..p]);
            fed = p;
            loop {
                match framer.feed(&buf) {
                    Frame::NeedMore => break,
                    Frame::Command(n) => {
                        events.push((Frame::Command(n), buf[..n].to_vec()));
                        buf.drain(..n);
                    }
                    Frame::Discard(n) => {
                        events.push((Frame::Discard(n), buf[..n].to_vec()));
                        buf.drain(..n);
                    }
                    Frame::Rejected(r) => {
                        events.push((Frame::Rejected(r.clone()), buf[..r.consume].to_vec()));
                        buf.drain(..r.consume);
                    }
                    // The test client sends literal data without waiting.
                    ev @ Frame::Continue { .. } => events.push((ev, Vec::new())),
                    ev @ Frame::Divert { .. } => panic!("no divert configured: {ev:?}"),
                }
            }
        }
        events
    }

    /// Same events, but consecutive discards merged (their split depends on
    /// the read boundaries, which is fine).
    fn normalize(events: Vec<(Frame, Vec<u8>)>) -> Vec<(Frame, Vec<u8>)> {
        let mut out: Vec<(Frame, Vec<u8>)> = Vec::new();
        for (f, bytes) in events {
            if let (Frame::Discard(n), Some((Frame::Discard(m), prev))) = (&f, out.last_mut()) {
                *m += n;
                prev.extend_from_slice(&bytes);
                continue;
            }
            out.push((f, bytes));
        }
        out
    }

    /// An APPEND literal at or over the divert size comes out as `Divert`,
    /// at every split of the input; the caller takes the literal bytes and
    /// the framer frames the rest of the command and what follows.
    #[test]
    fn append_literals_divert_at_every_boundary() {
        let input: &[u8] = b"a APPEND INBOX (\\Seen) {12+}\r\nhello world!\r\nb LOGIN {3}\r\nxyz pw\r\nc APPEND INBOX {4}\r\nabcd\r\n";
        for cut in 0..=input.len() {
            let mut f = Framer::new(SMALL);
            f.set_divert(5);
            let mut buf: Vec<u8> = Vec::new();
            let mut events: Vec<(String, Vec<u8>)> = Vec::new();
            let mut literal: Option<u64> = None;
            for piece in [&input[..cut], &input[cut..]] {
                buf.extend_from_slice(piece);
                loop {
                    if let Some(rest) = literal {
                        let n = rest.min(buf.len() as u64) as usize;
                        events.last_mut().unwrap().1.extend(buf.drain(..n));
                        literal = (rest > n as u64).then_some(rest - n as u64);
                        if literal.is_some() {
                            break;
                        }
                        continue;
                    }
                    match f.feed(&buf) {
                        Frame::NeedMore => break,
                        Frame::Command(n) => {
                            events.push(("command".into(), buf.drain(..n).collect()))
                        }
                        Frame::Continue { .. } => {}
                        Frame::Divert { head, len, sync } => {
                            events.push((format!("head sync={sync}"), buf.drain(..head).collect()));
                            events.push(("literal".into(), Vec::new()));
                            literal = Some(len);
                        }
                        other => panic!("cut {cut}: {other:?}"),
                    }
                }
            }
            let want: Vec<(String, Vec<u8>)> = vec![
                (
                    "head sync=false".into(),
                    b"a APPEND INBOX (\\Seen) {12+}\r\n".to_vec(),
                ),
                ("literal".into(), b"hello world!".to_vec()),
                ("command".into(), b"\r\n".to_vec()),
                // Not an APPEND: framed whole.
                ("command".into(), b"b LOGIN {3}\r\nxyz pw\r\n".to_vec()),
                // Under the divert size: framed whole.
                ("command".into(), b"c APPEND INBOX {4}\r\nabcd\r\n".to_vec()),
            ];
            assert_eq!(events, want, "cut {cut}");
        }
        assert_eq!(
            rejoin_diverted(b"a APPEND INBOX (\\Seen) {12+}\r\n", b"\r\n"),
            b"a APPEND INBOX (\\Seen) {0}\r\n\r\n"
        );
        assert_eq!(
            rejoin_diverted(b"a APPEND x {5}\n", b"\n"),
            b"a APPEND x {0}\r\n\n"
        );
    }

    #[test]
    fn simple_lines() {
        let ev = run(SMALL, b"a1 NOOP\r\na2 LOGOUT\nx", &[]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].1, b"a1 NOOP\r\n");
        assert_eq!(ev[1].1, b"a2 LOGOUT\n");
    }

    #[test]
    fn synchronizing_literal_asks_for_continuation() {
        let mut f = Framer::new(SMALL);
        let mut buf = b"a LOGIN {4}\r\n".to_vec();
        assert_eq!(f.feed(&buf), Frame::Continue { len: 4 });
        // Feeding again without new bytes does not repeat the request.
        assert_eq!(f.feed(&buf), Frame::NeedMore);
        buf.extend_from_slice(b"fred {2+}\r\npw\r\n");
        assert_eq!(f.feed(&buf), Frame::Command(buf.len()));
        assert!(f.is_idle());
    }

    #[test]
    fn literal_containing_newlines_and_braces() {
        let input = b"a APPEND x {9+}\r\n{3}\r\nab\r\n\r\nb NOOP\r\n";
        let ev = run(SMALL, input, &[]);
        assert_eq!(ev[0].1, b"a APPEND x {9+}\r\n{3}\r\nab\r\n\r\n");
        assert_eq!(ev[1].1, b"b NOOP\r\n");
    }

    #[test]
    fn over_long_line_is_discarded_to_its_end() {
        let mut input = b"t1 ".to_vec();
        input.extend_from_slice(&[b'x'; 100]);
        input.extend_from_slice(b"\r\nt2 NOOP\r\n");
        let ev = normalize(run(SMALL, &input, &[10, 50, 60]));
        let Frame::Rejected(r) = &ev[0].0 else {
            panic!("{ev:?}")
        };
        assert_eq!(r.reason, LimitExceeded::Line);
        assert_eq!(r.tag, Some(0..2));
        assert!(r.discarding);
        assert!(matches!(ev[1].0, Frame::Discard(_)));
        assert_eq!(ev[2].1, b"t2 NOOP\r\n");
        assert_eq!(ev.len(), 3);
    }

    #[test]
    fn oversized_non_synchronizing_literal_is_skipped() {
        // RFC 7888 section 4: the data arrives anyway and must be discarded,
        // including further literals of the same command.
        let input =
            b"A APPEND box {30+}\r\n012345678901234567890123456789 {3+}\r\nabc\r\nB NOOP\r\n";
        for cut in 0..input.len() {
            let ev = normalize(run(SMALL, input, &[cut]));
            let Frame::Rejected(r) = &ev[0].0 else {
                panic!()
            };
            assert_eq!(r.reason, LimitExceeded::Literal);
            assert!(r.append && r.discarding);
            assert_eq!(r.answer().0, crate::protocol::imap::Status::No);
            let discarded: Vec<u8> = ev[1].1.clone();
            assert_eq!(discarded, &input[20..input.len() - 8]);
            assert_eq!(ev[2].1, b"B NOOP\r\n");
        }
    }

    #[test]
    fn oversized_synchronizing_literal_ends_the_command() {
        let input = b"A LOGIN {500}\r\nB NOOP\r\n";
        let ev = run(SMALL, input, &[]);
        let Frame::Rejected(r) = &ev[0].0 else {
            panic!()
        };
        assert!(!r.discarding && !r.append);
        assert_eq!(r.consume, 15);
        assert_eq!(ev[1].1, b"B NOOP\r\n");
        // Command total over the limit even though each literal fits.
        let input = b"A X {20}\r\n01234567890123456789 {20}\r\n01234567890123456789 {20}\r\n01234567890123456789 {20}\r\n";
        let ev = run(SMALL, input, &[]);
        assert!(matches!(
            &ev[..],
            [
                (Frame::Continue { .. }, _),
                (Frame::Continue { .. }, _),
                (Frame::Continue { .. }, _),
                ..
            ]
        ));
        let Frame::Rejected(r) = &ev.last().unwrap().0 else {
            panic!("{ev:?}")
        };
        assert_eq!(r.reason, LimitExceeded::Command);
    }

    #[test]
    fn binary_literal_only_in_append() {
        let ev = run(SMALL, b"A APPEND x ~{3+}\r\na\0c\r\nB NOOP\r\n", &[]);
        assert_eq!(ev[0].1, b"A APPEND x ~{3+}\r\na\0c\r\n");
        assert_eq!(ev.last().unwrap().1, b"B NOOP\r\n");
        let ev = run(SMALL, b"A LOGIN ~{3+}\r\nabc x\r\nB NOOP\r\n", &[]);
        let Frame::Rejected(r) = &ev[0].0 else {
            panic!("{ev:?}")
        };
        assert_eq!(r.reason, LimitExceeded::BinaryLiteral);
        assert_eq!(ev.last().unwrap().1, b"B NOOP\r\n");
    }

    #[test]
    fn not_authenticated_limit_is_small() {
        let mut f = Framer::new(FramingLimits::NOT_AUTHENTICATED);
        let huge = format!("a LOGIN {{{}+}}\r\n", 1 << 20);
        let Frame::Rejected(r) = f.feed(huge.as_bytes()) else {
            panic!()
        };
        assert!(r.discarding);
        // The megabyte that follows is discarded in chunks, never buffered.
        let chunk = vec![b'z'; 64 * 1024];
        let mut left = 1usize << 20;
        while left > 0 {
            let n = left.min(chunk.len());
            assert_eq!(f.feed(&chunk[..n]), Frame::Discard(n));
            left -= n;
        }
        assert_eq!(f.feed(b"\r\nb NOOP\r\n"), Frame::Discard(2));
        assert_eq!(f.feed(b"b NOOP\r\n"), Frame::Command(8));
    }

    /// `tag ID (...)` with `pairs` pairs, each field and value given by `f`.
    fn id_command(tag: &str, pairs: usize, f: impl Fn(usize) -> (String, String)) -> Vec<u8> {
        let list: Vec<String> = (0..pairs)
            .map(|i| {
                let (k, v) = f(i);
                format!("{k} {v}")
            })
            .collect();
        format!("{tag} ID ({})\r\n", list.join(" ")).into_bytes()
    }

    #[test]
    fn a_maximal_id_fits_before_login_and_nothing_larger() {
        use crate::protocol::imap::{parse_command, CommandBody};
        // RFC 2971 3.3 maxima, every octet escaped: the longest way to write it.
        let field = |_: usize| format!("\"{}\"", "\\\\".repeat(30));
        let value = format!("\"{}\"", "\\\"".repeat(1024));
        let tag = "t".repeat(1024);
        let max = id_command(&tag, 30, |i| (field(i), value.clone()));
        assert!(max.len() <= FramingLimits::ID.command_max, "{}", max.len());
        let mut f = Framer::new(FramingLimits::NOT_AUTHENTICATED);
        for cut in [0, 3, 1030, 1031, 2000, max.len() - 1] {
            f.reset();
            assert_eq!(f.feed(&max[..cut]), Frame::NeedMore, "cut {cut}");
        }
        assert_eq!(f.feed(&max), Frame::Command(max.len()));
        let cmd = parse_command(&max).unwrap();
        let CommandBody::Id(Some(params)) = cmd.body else {
            panic!()
        };
        assert_eq!(params.len(), 30);
        assert!(params
            .iter()
            .all(|(k, v)| k.len() == 30 && v.as_ref().unwrap().len() == 1024));
        // Values as literals (synchronizing or not) fit as well.
        let lit = id_command("a", 30, |i| {
            (
                format!("\"field{i}\""),
                format!("{{1024+}}\r\n{}", "v".repeat(1024)),
            )
        });
        let mut f = Framer::new(FramingLimits::NOT_AUTHENTICATED);
        assert_eq!(f.feed(&lit), Frame::Command(lit.len()));
        assert!(
            matches!(parse_command(&lit).unwrap().body, CommandBody::Id(Some(p)) if p.len() == 30)
        );
        // One pair more does not frame; any other command that long is refused at 4 KiB.
        let over = id_command(&tag, 31, |i| (field(i % 30), value.clone()));
        let mut f = Framer::new(FramingLimits::NOT_AUTHENTICATED);
        assert!(matches!(
            f.feed(&over),
            Frame::Rejected(Rejection {
                reason: LimitExceeded::Line,
                ..
            })
        ));
        let mut login = b"a LOGIN ".to_vec();
        login.extend_from_slice(&max[8..]);
        let mut f = Framer::new(FramingLimits::NOT_AUTHENTICATED);
        assert!(matches!(f.feed(&login), Frame::Rejected(_)));
        // "ID" must be the whole command name.
        let mut f = Framer::new(FramingLimits::NOT_AUTHENTICATED);
        let idx = [b"a IDX ".to_vec(), vec![b'x'; 5000], b"\r\n".to_vec()].concat();
        assert!(matches!(f.feed(&idx), Frame::Rejected(_)));
        // A literal larger than a value is refused.
        let mut f = Framer::new(FramingLimits::NOT_AUTHENTICATED);
        assert!(matches!(
            f.feed(b"a ID (\"k\" {1025}\r\n"),
            Frame::Rejected(Rejection {
                reason: LimitExceeded::Literal,
                ..
            })
        ));
    }

    fn command_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            "[a-zA-Z0-9 ()\\[\\]\"%*.]{0,12}".prop_map(|s| s.into_bytes()),
            (proptest::collection::vec(any::<u8>(), 0..12), any::<bool>()).prop_map(
                |(data, sync)| {
                    let mut v = format!("{{{}{}}}\r\n", data.len(), if sync { "" } else { "+" })
                        .into_bytes();
                    v.extend_from_slice(&data);
                    v
                }
            ),
        ];
        proptest::collection::vec(piece, 1..5).prop_map(|pieces| {
            let mut v = b"tag CMD ".to_vec();
            for p in pieces {
                v.extend_from_slice(&p);
            }
            v.extend_from_slice(b"\r\n");
            v
        })
    }

    proptest! {
        #[test]
        fn every_split_frames_identically(cmds in proptest::collection::vec(command_strategy(), 1..3)) {
            let input: Vec<u8> = cmds.concat();
            let big = FramingLimits { line_max: 1000, literal_max: 1000, command_max: 10_000 };
            let whole = normalize(run(big, &input, &[]));
            let commands: Vec<&Vec<u8>> = whole.iter().filter(|(f, _)| matches!(f, Frame::Command(_))).map(|(_, b)| b).collect();
            prop_assert_eq!(commands, cmds.iter().collect::<Vec<_>>());
            for cut in 0..input.len() {
                prop_assert_eq!(&normalize(run(big, &input, &[cut])), &whole);
            }
            // Byte-at-a-time, with limits small enough to trigger rejections.
            let every: Vec<usize> = (0..input.len()).collect();
            // Where a rejection is noticed depends on the reads, but which
            // commands get through afterwards must not.
            let tight = FramingLimits { line_max: 12, literal_max: 6, command_max: 40 };
            let passed = |ev: Vec<(Frame, Vec<u8>)>| -> Vec<Vec<u8>> {
                ev.into_iter().filter(|(f, _)| matches!(f, Frame::Command(_))).map(|(_, b)| b).collect()
            };
            prop_assert_eq!(passed(run(tight, &input, &every)), passed(run(tight, &input, &[])));
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let tight = FramingLimits { line_max: 16, literal_max: 8, command_max: 64 };
            for (f, bytes) in run(tight, &input, &[cut]) {
                if let Frame::Command(n) = f {
                    prop_assert_eq!(n, bytes.len());
                    prop_assert_eq!(bytes.last(), Some(&b'\n'));
                    prop_assert!(n <= tight.command_max);
                }
            }
        }
    }
}
