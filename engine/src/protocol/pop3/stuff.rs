//! Zero-copy byte-stuffing of a stored message for RETR and TOP
//! (RFC 1939 section 3, multi-line responses).
//!
//! [`write_stuffed`] never copies the message: it hands the sink slices of
//! the message itself, interleaved with static `"."` slices where a line
//! starts with a dot, and finally a static terminator. The runtime can thus
//! send straight from a memory mapping (vectored writes).
//!
//! Line ends. RFC 1939 3: every line of a multi-line response ends with
//! CRLF. Stored mail normally has only CRLF, but SMTP keeps a bare LF inside
//! a message rather than letting it end anything (smuggling defence), so a
//! bare LF is sent as CRLF here: only the inserted `"\r\n"` is new bytes.
//! A line starts at byte 0 and after every LF, so every reader, whether it
//! splits on CRLF or on LF, sees the same lines and the same dot-stuffing.
//! A bare CR is treated the same way (sent as CRLF, a line starts after it),
//! so `CR . CR` never reaches a client that splits on CR.
//!
//! Termination. The response ends with `".\r\n"` at the start of a line: when
//! the (possibly TOP-truncated) message does not end with CRLF, `"\r\n"` is
//! inserted first. An empty message is sent as the terminator alone (no
//! lines), not as one empty line.

const DOT: &[u8] = b".";
const CRLF: &[u8] = b"\r\n";
const END: &[u8] = b".\r\n";
const CRLF_END: &[u8] = b"\r\n.\r\n";

/// Write `message` as a multi-line response body, dot-stuffed and
/// terminated. With `body_lines = Some(n)` (TOP), only the header, the blank
/// line after it and the first `n` body lines are sent; a message without a
/// blank line is all header and is sent whole.
///
/// `sink` is called with non-empty slices, in order; concatenated, they are
/// the exact bytes to send after the `+OK` line.
pub fn write_stuffed<'a>(
    message: &'a [u8],
    body_lines: Option<usize>,
    sink: &mut dyn FnMut(&'a [u8]),
) {
    let message = match body_lines {
        Some(n) => &message[..top_end(message, n)],
        None => message,
    };
    stuff_lines(message, None, sink);
}

/// The longest line SMTP allows, without its CRLF (RFC 5321 4.5.3.1.6).
pub const SMTP_LINE_MAX: usize = 998;

/// Dot-stuff `message` for a multi-line POP3 response or SMTP DATA (the
/// two use the same transparency, RFC 1939 3 and RFC 5321 4.5.2) and end it
/// with `.CRLF` at a line start. Every line end on the wire is CRLF: a bare
/// LF or a bare CR in the message is sent as CRLF, and a line starts after
/// it, so a dot there is stuffed too (no reader can see `CR . CR` or
/// `LF . LF` as an end). With `wrap = Some(n)`, a line longer than `n`
/// octets is broken after `n` octets by inserting CRLF SP (the relay does
/// this with `SMTP_LINE_MAX`, as Postfix does, so that the next hop gets
/// RFC-sized lines; the stored message keeps its lines whole).
///
/// Only the inserted pieces are not slices of `message`, and they are static.
pub fn stuff_lines<'a>(message: &'a [u8], wrap: Option<usize>, sink: &mut dyn FnMut(&'a [u8])) {
    if message.is_empty() {
        sink(END);
        return;
    }
    // `start`: first byte not yet handed to the sink; `line`: where the
    // current line starts.
    let mut start = 0;
    let mut line = 0;
    if message[0] == b'.' {
        sink(DOT);
    }
    for p in memchr::memchr2_iter(b'\r', b'\n', message) {
        let (content_end, bare) = match message[p] {
            b'\r' if message.get(p + 1) == Some(&b'\n') => continue,
            b'\n' if p > 0 && message[p - 1] == b'\r' => (p - 1, false),
            // A bare LF or bare CR.
            _ => (p, true),
        };
        let next = p + 1;
        if let Some(n) = wrap {
            wrap_long(message, &mut start, line, content_end, n, sink);
        }
        if bare {
            if start < p {
                sink(&message[start..p]);
            }
            sink(CRLF);
            start = next;
        }
        line = next;
        if message.get(next) == Some(&b'.') {
            if start < next {
                sink(&message[start..next]);
            }
            // The extra dot; the message's own dot starts the next slice.
            sink(DOT);
            start = next;
        }
    }
    if let Some(n) = wrap {
        wrap_long(message, &mut start, line, message.len(), n, sink);
    }
    if start < message.len() {
        sink(&message[start..]);
    }
    // A last LF or CR (a CR at the very end is bare) has already ended the last line.
    sink(if matches!(message.last(), Some(b'\n' | b'\r')) {
        END
    } else {
        CRLF_END
    });
}

/// Break the line `message[line..end]` after every `n` octets with CRLF SP
/// (each continuation line holds the SP and `n - 1` octets).
fn wrap_long<'a>(
    message: &'a [u8],
    start: &mut usize,
    line: usize,
    end: usize,
    n: usize,
    sink: &mut dyn FnMut(&'a [u8]),
) {
    const BREAK: &[u8] = b"\r\n ";
    let n = n.max(2);
    let mut cut = line + n;
    while cut < end {
        sink(&message[*start..cut]);
        sink(BREAK);
        *start = cut;
        cut += n - 1;
    }
}

/// Length of the TOP prefix of `message`: lines up to and including the first
/// empty line, then `n` more lines. A line ends after CRLF, a bare LF or a
/// bare CR (the line ends [`stuff_lines`] sends as CRLF); an unterminated
/// last line counts as a line.
fn top_end(message: &[u8], n: usize) -> usize {
    let mut start = 0;
    let mut in_header = true;
    let mut remaining = n;
    loop {
        if !in_header && remaining == 0 {
            return start;
        }
        let Some(off) = memchr::memchr2(b'\r', b'\n', &message[start..]) else {
            return message.len();
        };
        let p = start + off;
        let crlf = message[p] == b'\r' && message.get(p + 1) == Some(&b'\n');
        if in_header {
            in_header = off != 0;
        } else {
            remaining -= 1;
        }
        start = p + if crlf { 2 } else { 1 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stuffed(message: &[u8], body_lines: Option<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        write_stuffed(message, body_lines, &mut |s: &[u8]| {
            assert!(!s.is_empty(), "sink got an empty slice");
            out.extend_from_slice(s);
        });
        out
    }

    /// A naive client: read LF-terminated lines, stop at the line ".\r\n",
    /// drop the first dot of any other line that starts with one. Panics
    /// (fails the test) when the terminator is missing or not last.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut lines = wire.split_inclusive(|&b| b == b'\n');
        for line in lines.by_ref() {
            if line == b".\r\n" {
                assert!(lines.next().is_none(), "bytes after the terminator");
                return body;
            }
            assert!(line != b".\n" && line != b".", "a lone dot line: {wire:?}");
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        panic!("no terminator in {wire:?}");
    }

    /// What the client should get back: the message with a CRLF if missing.
    /// Bare LFs become CRLF, and a final CRLF is added if missing.
    fn expected(message: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(message.len() + 2);
        for (i, &b) in message.iter().enumerate() {
            match b {
                b'\n' if i == 0 || message[i - 1] != b'\r' => m.extend_from_slice(b"\r\n"),
                b'\r' if message.get(i + 1) != Some(&b'\n') => m.extend_from_slice(b"\r\n"),
                _ => m.push(b),
            }
        }
        if !m.is_empty() && !m.ends_with(b"\r\n") {
            m.extend_from_slice(b"\r\n");
        }
        m
    }

    /// The lines of `message`, each with its end: CRLF, bare LF or bare CR.
    fn lines_any_end(message: &[u8]) -> Vec<&[u8]> {
        let mut lines = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < message.len() {
            let end = match message[i] {
                b'\r' if message.get(i + 1) == Some(&b'\n') => Some(i + 2),
                b'\r' | b'\n' => Some(i + 1),
                _ => None,
            };
            match end {
                Some(e) => {
                    lines.push(&message[start..e]);
                    start = e;
                    i = e;
                }
                None => i += 1,
            }
        }
        if start < message.len() {
            lines.push(&message[start..]);
        }
        lines
    }

    /// Reference TOP: header lines through the first blank one, then n more.
    fn expected_top(message: &[u8], n: usize) -> Vec<u8> {
        let lines = lines_any_end(message);
        let blank = lines
            .iter()
            .position(|l| *l == b"\n" || *l == b"\r\n" || *l == b"\r");
        let take = match blank {
            Some(i) => (i + 1 + n).min(lines.len()),
            None => lines.len(),
        };
        expected(&lines[..take].concat())
    }

    #[test]
    fn known_answers() {
        assert_eq!(stuffed(b"", None), b".\r\n");
        assert_eq!(stuffed(b"a\r\n", None), b"a\r\n.\r\n");
        assert_eq!(stuffed(b"a", None), b"a\r\n.\r\n");
        assert_eq!(stuffed(b".\r\n", None), b"..\r\n.\r\n");
        assert_eq!(
            stuffed(b"a\r\n.\r\n.b\r\n", None),
            b"a\r\n..\r\n..b\r\n.\r\n"
        );
        assert_eq!(stuffed(b"a\n.\nb", None), b"a\r\n..\r\nb\r\n.\r\n");
        // A bare CR ends a line as a bare LF does: the dot after it is stuffed.
        assert_eq!(stuffed(b"a\r.b\r\n", None), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuffed(b"a\r.\r", None), b"a\r\n..\r\n.\r\n");
        assert_eq!(stuffed(b"a\r\r\n", None), b"a\r\n\r\n.\r\n");
        assert_eq!(stuffed(b"a\n", None), b"a\r\n.\r\n");
        assert_eq!(stuffed(b"\n\n", None), b"\r\n\r\n.\r\n");
    }

    fn wrapped(message: &[u8], n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        stuff_lines(message, Some(n), &mut |s: &[u8]| {
            assert!(!s.is_empty(), "sink got an empty slice");
            out.extend_from_slice(s);
        });
        out
    }

    #[test]
    fn long_lines_are_wrapped_with_crlf_space() {
        assert_eq!(
            wrapped(b"abcdefghij\r\n", 4),
            b"abcd\r\n efg\r\n hij\r\n.\r\n"
        );
        assert_eq!(wrapped(b"abcd\r\nab", 4), b"abcd\r\nab\r\n.\r\n");
        assert_eq!(wrapped(b"abcde", 4), b"abcd\r\n e\r\n.\r\n");
        // The limit counts the line as stored (the stuffing dot is removed again).
        assert_eq!(wrapped(b".abcde\nxy", 4), b"..abc\r\n de\r\nxy\r\n.\r\n");
        let long = vec![b'x'; 10 * 1024 * 1024];
        let wire = wrapped(&long, SMTP_LINE_MAX);
        assert!(wire
            .split(|&b| b == b'\n')
            .all(|l| l.len() <= SMTP_LINE_MAX + 1));
    }

    #[test]
    fn slices_borrow_from_the_message() {
        let msg = b"Subject: x\r\n\r\n.body\r\nmore\r\n".to_vec();
        let range = msg.as_ptr_range();
        let mut own = 0;
        write_stuffed(&msg, None, &mut |s: &[u8]| {
            if range.contains(&s.as_ptr()) {
                own += s.len();
            } else {
                assert!(s == DOT || s == END || s == CRLF_END || s == CRLF);
            }
        });
        assert_eq!(own, msg.len());
    }

    #[test]
    fn top_known_answers() {
        let msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        assert_eq!(stuffed(msg, Some(0)), b"A: 1\r\nB: 2\r\n\r\n.\r\n");
        assert_eq!(stuffed(msg, Some(1)), b"A: 1\r\nB: 2\r\n\r\nl1\r\n.\r\n");
        assert_eq!(
            stuffed(msg, Some(2)),
            b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n"
        );
        assert_eq!(stuffed(msg, Some(99)), stuffed(msg, None));
        // No blank line: the whole message is header.
        assert_eq!(stuffed(b"A: 1\r\nB: 2", Some(0)), b"A: 1\r\nB: 2\r\n.\r\n");
        // Bare LF blank line.
        assert_eq!(
            stuffed(b"A: 1\n\nx\ny\n", Some(1)),
            b"A: 1\r\n\r\nx\r\n.\r\n"
        );
        // A bare CR ends a line for TOP too, as it does on the wire.
        assert_eq!(
            stuffed(b"A: 1\r\n\r\nx\ry\r\nz\r\n", Some(1)),
            b"A: 1\r\n\r\nx\r\n.\r\n"
        );
        assert_eq!(stuffed(b"A: 1\r\rx\ry", Some(1)), b"A: 1\r\n\r\nx\r\n.\r\n");
        assert_eq!(stuffed(b"", Some(3)), b".\r\n");
    }

    fn message_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                4 => Just(b'.'),
                4 => Just(b'\r'),
                4 => Just(b'\n'),
                2 => Just(b'a'),
                1 => Just(b':'),
                1 => any::<u8>(),
            ],
            0..200,
        )
    }

    proptest! {
        #[test]
        fn unstuffing_gives_back_the_message(msg in message_strategy()) {
            prop_assert_eq!(unstuff(&stuffed(&msg, None)), expected(&msg));
        }

        #[test]
        fn top_gives_header_blank_line_and_n_lines(msg in message_strategy(), n in 0usize..8) {
            prop_assert_eq!(unstuff(&stuffed(&msg, Some(n))), expected_top(&msg, n));
        }

        #[test]
        fn wire_has_no_early_terminator(msg in message_strategy()) {
            let wire = stuffed(&msg, None);
            prop_assert!(wire.ends_with(b".\r\n"));
            // The only ".\r\n" at a line start is the final one.
            let early = memchr::memmem::find_iter(&wire, b"\n.\r\n").any(|i| i + 4 != wire.len());
            prop_assert!(!early);
            prop_assert!(!wire.starts_with(b".\r\n") || wire.len() == 3);
        }
    }
}
