//! SMTP reply parsing (RFC 5321 section 4.2).
//!
//! A reply is one or more lines `ddd-text` followed by a last line `ddd text`
//! (or just `ddd`). All lines of one reply must carry the same code.

use std::io;

use crate::conn::{protocol_error, Conn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: u16,
    pub last: bool,
    pub text: &'a [u8],
}

/// Parse one reply line (without CRLF).
pub fn parse_reply_line(line: &[u8]) -> Result<ReplyLine<'_>, String> {
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "bad reply line: {:?}",
            String::from_utf8_lossy(line)
        ));
    }
    let code =
        (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
    if !(200..=599).contains(&code) {
        return Err(format!("reply code out of range: {code}"));
    }
    match line.get(3) {
        None => Ok(ReplyLine {
            code,
            last: true,
            text: &[],
        }),
        Some(b' ') => Ok(ReplyLine {
            code,
            last: true,
            text: &line[4..],
        }),
        Some(b'-') => Ok(ReplyLine {
            code,
            last: false,
            text: &line[4..],
        }),
        Some(_) => Err(format!(
            "bad reply separator: {:?}",
            String::from_utf8_lossy(line)
        )),
    }
}

/// Accumulates the lines of a (possibly multi-line) reply.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
}

impl ReplyParser {
    /// Feed one line; returns `Some(code)` when the reply is complete.
    pub fn feed(&mut self, line: &[u8]) -> Result<Option<u16>, String> {
        let rl = parse_reply_line(line)?;
        if let Some(c) = self.code {
            if c != rl.code {
                return Err(format!("multi-line reply changed code {c} -> {}", rl.code));
            }
        }
        self.code = Some(rl.code);
        if rl.last {
            self.code = None;
            Ok(Some(rl.code))
        } else {
            Ok(None)
        }
    }
}

/// Read one full reply; when `text` is given the text of every line is
/// pushed to it (used for EHLO capabilities).
pub async fn read_reply(conn: &mut Conn, mut text: Option<&mut Vec<String>>) -> io::Result<u16> {
    let mut p = ReplyParser::default();
    for _ in 0..10_000 {
        let line = conn.read_line().await?;
        if let Some(t) = text.as_deref_mut() {
            if line.len() > 4 {
                t.push(String::from_utf8_lossy(&line[4..]).into_owned());
            }
        }
        if let Some(code) = p.feed(line).map_err(protocol_error)? {
            return Ok(code);
        }
    }
    Err(protocol_error("reply with too many lines"))
}

/// Capabilities advertised in the EHLO reply that the load generator uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Caps {
    pub pipelining: bool,
    pub chunking: bool,
    pub size: bool,
    pub eightbit: bool,
    pub starttls: bool,
}

impl Caps {
    /// Parse from EHLO text lines (the first line is the greeting domain).
    pub fn from_ehlo(lines: &[String]) -> Caps {
        let mut c = Caps::default();
        for l in lines.iter().skip(1) {
            let kw = l
                .split_ascii_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            match kw.as_str() {
                "PIPELINING" => c.pipelining = true,
                "CHUNKING" => c.chunking = true,
                "SIZE" => c.size = true,
                "8BITMIME" => c.eightbit = true,
                "STARTTLS" => c.starttls = true,
                _ => {}
            }
        }
        c
    }
}

/// Reply class helpers.
pub fn is_positive(code: u16) -> bool {
    (200..300).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        let r = parse_reply_line(b"250 2.1.0 Ok").unwrap();
        assert_eq!(
            r,
            ReplyLine {
                code: 250,
                last: true,
                text: b"2.1.0 Ok"
            }
        );
        let r = parse_reply_line(b"354").unwrap();
        assert!(r.last);
        assert_eq!(r.code, 354);
        assert!(r.text.is_empty());
    }

    #[test]
    fn continuation_and_errors() {
        let r = parse_reply_line(b"250-PIPELINING").unwrap();
        assert!(!r.last);
        assert_eq!(r.text, b"PIPELINING");
        assert!(parse_reply_line(b"25").is_err());
        assert!(parse_reply_line(b"abc def").is_err());
        assert!(parse_reply_line(b"250xfoo").is_err());
        assert!(parse_reply_line(b"999 nope").is_err());
        assert!(parse_reply_line(b"").is_err());
        assert_eq!(parse_reply_line(b"452 4.5.3 Too many").unwrap().code, 452);
        assert_eq!(parse_reply_line(b"554 5.7.1 no").unwrap().code, 554);
    }

    #[test]
    fn multi_line_parser() {
        let mut p = ReplyParser::default();
        assert_eq!(p.feed(b"250-mail.example").unwrap(), None);
        assert_eq!(p.feed(b"250-PIPELINING").unwrap(), None);
        assert_eq!(p.feed(b"250 CHUNKING").unwrap(), Some(250));
        // parser resets after a complete reply
        assert_eq!(p.feed(b"421 bye").unwrap(), Some(421));
        // code change inside a reply is a protocol error
        assert_eq!(p.feed(b"250-a").unwrap(), None);
        assert!(p.feed(b"251 b").is_err());
    }

    #[test]
    fn caps() {
        let lines: Vec<String> = [
            "mx.example Hello",
            "PIPELINING",
            "SIZE 10240000",
            "chunking",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "STARTTLS",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = Caps::from_ehlo(&lines);
        assert!(c.pipelining && c.chunking && c.size && c.eightbit && c.starttls);
        // the greeting line is not a capability
        let c = Caps::from_ehlo(&["PIPELINING".to_string()]);
        assert!(!c.pipelining);
    }
}
