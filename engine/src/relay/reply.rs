//! SMTP replies as a client sees them (RFC 5321 section 4.2), with their
//! enhanced status codes (RFC 3463). Shared by the client and the DSN builder.
use std::fmt;

/// Longest reply line accepted (RFC 5321 says 512 octets; real servers run
/// longer, so allow some slack).
pub const REPLY_LINE_MAX: usize = 2048;
/// Most lines in one multi-line reply.
pub const REPLY_LINES_MAX: usize = 64;

/// One complete (possibly multi-line) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// Text of each line after `NNN-` / `NNN `, in order (may include an
    /// enhanced code at its start, as sent).
    pub lines: Vec<String>,
    /// True when made up by this client (timeout, connection lost, checks done
    /// before sending) rather than received from the server.
    pub local: bool,
}

impl Reply {
    /// A reply made up locally, for failures that have no server reply.
    /// `text` should start with an enhanced status code, e.g. `"4.4.2 timeout"`.
    pub fn local(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
            local: true,
        }
    }

    /// First digit of the code.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        self.class() == 4
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.class() == 5
    }

    /// The enhanced status code at the start of the first line, when present
    /// and of the same class as the reply code (`"5.1.1"`).
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?;
        let token = first.split_ascii_whitespace().next()?;
        let mut parts = token.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        let ok = parts.next().is_none()
            && matches!(class, "2" | "4" | "5")
            && u16::from(class.as_bytes()[0] - b'0') == self.class()
            && digits(subject, 3)
            && digits(detail, 3);
        ok.then_some(token)
    }

    /// The texts of all lines joined by a space: one line for logs and DSNs.
    pub fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `"550 5.1.1 no such user more text"`: code and [`Reply::text`].
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        if text.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, text)
        }
    }
}

/// A reply that cannot be parsed or exceeds the bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line")]
    Malformed,
    #[error("reply line too long")]
    LineTooLong,
    #[error("reply too long")]
    TooLong,
}

/// Parse one reply from the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((reply, used)))`: `used` bytes make up the reply. Lines end in CRLF
/// (a bare LF is tolerated). `max_bytes` bounds the whole reply.
pub fn parse_reply(buf: &[u8], max_bytes: usize) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let rest = &buf[pos..];
        let Some(nl) = memchr::memchr(b'\n', rest) else {
            if rest.len() > REPLY_LINE_MAX {
                return Err(ReplyError::LineTooLong);
            }
            if pos + rest.len() > max_bytes {
                return Err(ReplyError::TooLong);
            }
            return Ok(None);
        };
        if nl > REPLY_LINE_MAX {
            return Err(ReplyError::LineTooLong);
        }
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if pos > max_bytes {
            return Err(ReplyError::TooLong);
        }
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::Malformed);
        }
        let this =
            (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
        if !(200..=599).contains(&this) && !(100..200).contains(&this) {
            return Err(ReplyError::Malformed);
        }
        // A code changing mid-reply is a broken server; keep the first.
        let code = *code.get_or_insert(this);
        let (last, text) = match line.get(3) {
            None => (true, &[][..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(ReplyError::Malformed),
        };
        lines.push(String::from_utf8_lossy(text).into_owned());
        if last {
            return Ok(Some((
                Reply {
                    code,
                    lines,
                    local: false,
                },
                pos,
            )));
        }
        if lines.len() >= REPLY_LINES_MAX {
            return Err(ReplyError::TooLong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        let (r, n) = parse_reply(b"250 ok\r\nrest", 4096).unwrap().unwrap();
        assert_eq!(
            (r.code, r.lines.clone(), n),
            (250, vec!["ok".to_string()], 8)
        );
        let buf =
            b"250-mx.example greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n";
        let (r, n) = parse_reply(buf, 4096).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(
            r.lines,
            [
                "mx.example greets you",
                "PIPELINING",
                "SIZE 1000",
                "8BITMIME"
            ]
        );
        assert_eq!(parse_reply(b"250-a\r\n250 b", 4096).unwrap(), None);
        assert_eq!(parse_reply(b"250-a\r\n", 4096).unwrap(), None);
        let (r, _) = parse_reply(b"354\r\n", 4096).unwrap().unwrap();
        assert_eq!((r.code, r.text()), (354, String::new()));
        let (r, _) = parse_reply(b"221 bye\n", 4096).unwrap().unwrap();
        assert_eq!(r.code, 221);
    }

    #[test]
    fn enhanced_codes() {
        let (r, _) = parse_reply(b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n", 4096)
            .unwrap()
            .unwrap();
        assert_eq!(r.enhanced(), Some("5.1.1"));
        assert_eq!(r.to_string(), "550 5.1.1 no such user 5.1.1 really");
        assert!(r.is_permanent());
        let (r, _) = parse_reply(b"451 4.3.0 try later\r\n", 4096)
            .unwrap()
            .unwrap();
        assert_eq!(r.enhanced(), Some("4.3.0"));
        // Class mismatch and free text are not enhanced codes.
        let (r, _) = parse_reply(b"550 4.1.1 odd\r\n", 4096).unwrap().unwrap();
        assert_eq!(r.enhanced(), None);
        let (r, _) = parse_reply(b"550 mailbox unavailable\r\n", 4096)
            .unwrap()
            .unwrap();
        assert_eq!(r.enhanced(), None);
        assert_eq!(Reply::local(451, "4.4.2 timeout").enhanced(), Some("4.4.2"));
    }

    #[test]
    fn bounds_and_garbage() {
        assert_eq!(parse_reply(b"hello\r\n", 4096), Err(ReplyError::Malformed));
        assert_eq!(parse_reply(b"250xok\r\n", 4096), Err(ReplyError::Malformed));
        assert_eq!(
            parse_reply(b"999 what\r\n", 4096),
            Err(ReplyError::Malformed)
        );
        let long = vec![b'2'; REPLY_LINE_MAX + 10];
        assert_eq!(parse_reply(&long, 1 << 20), Err(ReplyError::LineTooLong));
        let many: Vec<u8> = (0..100).flat_map(|_| b"250-x\r\n".to_vec()).collect();
        assert_eq!(parse_reply(&many, 1 << 20), Err(ReplyError::TooLong));
        assert_eq!(parse_reply(&many, 100), Err(ReplyError::TooLong));
    }
}
