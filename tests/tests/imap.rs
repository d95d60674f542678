//! IMAP4rev1 (RFC 3501) and its extensions against the real server, over
//! loopback with a raw client that checks exact bytes (`Imap` below), with
//! Python's imaplib (py/imap_*.py) and with mbsync (isync) when installed:
//!
//! - CAPABILITY before/after login, LOGIN, AUTHENTICATE PLAIN (SASL-IR and
//!   continuation, cancel), [AUTHENTICATIONFAILED], pre-login size bounds
//!   (huge literals and lines are refused without buffering them);
//! - two sessions on one mailbox: unsolicited FETCH/EXPUNGE/EXISTS/RECENT,
//!   no EXPUNGE during FETCH/STORE/SEARCH (RFC 3501 7.4.1), \Recent in
//!   exactly one session;
//! - IDLE (RFC 2177) sees SMTP deliveries within a second on both shards;
//! - APPEND (flags, date, LITERAL+, APPENDUID) survives kill -9;
//! - COPY/MOVE with UIDPLUS (COPYUID, TRYCREATE), RFC 6851 ordering;
//! - FETCH partial ranges, a 5 MiB body, \Seen with BODY[] vs BODY.PEEK[];
//! - ENVELOPE/BODYSTRUCTURE/BODY of a nested multipart, part sections;
//! - SEARCH over 10,000 messages (flags, UIDs, text, dates, OR/NOT, UTF-8,
//!   ESEARCH, SEARCHRES), checked against a model of what was appended;
//! - mailboxes: LIST/LSUB/LIST-EXTENDED/LIST-STATUS/SPECIAL-USE, CREATE,
//!   RENAME (INBOX too), DELETE, STATUS, NAMESPACE, ID, ENABLE, UNSELECT,
//!   CLOSE, EXAMINE;
//! - CONDSTORE (MODSEQ, CHANGEDSINCE, UNCHANGEDSINCE/[MODIFIED]);
//! - keywords persisted across kill -9, PERMANENTFLAGS \*;
//! - mbsync two-way sync with a local Maildir;
//! - malformed commands, pipelining, and the server surviving both.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmail_tests::*;

const ALICE: &str = "alice@example.test";
const ALICE_PW: &str = "alice-secret";
const BOB: &str = "bob@example.test";

// ---------------------------------------------------------------------------
// A raw IMAP client
// ---------------------------------------------------------------------------

/// One IMAP connection. Every read is bounded by [`IO_TIMEOUT`].
struct Imap {
    s: TcpStream,
    buf: Vec<u8>,
    next: u32,
    greeting: String,
}

/// The answer to one command: untagged responses (each with its literals
/// inline, CRLFs kept) and the tagged status line without tag and CRLF.
#[derive(Debug)]
struct Resp {
    untagged: Vec<Vec<u8>>,
    status: String,
}

impl Imap {
    #[track_caller]
    fn connect(addr: SocketAddr) -> Imap {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut c = Imap {
            s,
            buf: Vec::new(),
            next: 0,
            greeting: String::new(),
        };
        let g = c.line();
        assert!(g.starts_with("* OK"), "IMAP greeting: {g:?}");
        c.greeting = g;
        c
    }

    #[track_caller]
    fn login(addr: SocketAddr, user: &str, password: &str) -> Imap {
        let mut c = Imap::connect(addr);
        c.ok(&format!("LOGIN {} {}", quote(user), quote(password)));
        c
    }

    fn set_timeout(&self, t: Duration) {
        self.s.set_read_timeout(Some(t)).unwrap();
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed (pending {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn try_raw_line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            self.fill()?;
        }
    }

    #[track_caller]
    fn raw_line(&mut self) -> Vec<u8> {
        self.try_raw_line()
            .unwrap_or_else(|e| panic!("reading an IMAP line: {e}"))
    }

    /// A line as text without CRLF (which it must have).
    #[track_caller]
    fn line(&mut self) -> String {
        let l = self.raw_line();
        assert!(
            l.ends_with(b"\r\n"),
            "line without CRLF: {:?}",
            String::from_utf8_lossy(&l)
        );
        String::from_utf8_lossy(&l[..l.len() - 2]).into_owned()
    }

    fn try_take(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// One complete response: a line, plus the literals it announces and the
    /// lines that follow them.
    fn try_response(&mut self) -> std::io::Result<Vec<u8>> {
        let mut r = Vec::new();
        loop {
            let l = self.try_raw_line()?;
            if !l.ends_with(b"\r\n") {
                return Err(std::io::Error::other(format!(
                    "response line without CRLF: {:?}",
                    String::from_utf8_lossy(&l)
                )));
            }
            r.extend_from_slice(&l);
            match literal_len(&l) {
                Some(n) => {
                    let data = self.try_take(n)?;
                    r.extend_from_slice(&data);
                }
                None => return Ok(r),
            }
        }
    }

    #[track_caller]
    fn response(&mut self) -> Vec<u8> {
        self.try_response()
            .unwrap_or_else(|e| panic!("reading an IMAP response: {e}"))
    }

    fn tag(&mut self) -> String {
        self.next += 1;
        format!("t{}", self.next)
    }

    #[track_caller]
    fn send(&mut self, bytes: &[u8]) {
        self.s
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    /// Send `TAG cmd`, read everything up to the tagged response.
    #[track_caller]
    fn cmd(&mut self, cmd: &str) -> Resp {
        let t = self.tag();
        self.send(format!("{t} {cmd}\r\n").as_bytes());
        self.until(&t)
    }

    /// Like [`Imap::cmd`] with raw bytes after the tag (literals included).
    #[track_caller]
    fn cmd_bytes(&mut self, cmd: &[u8]) -> Resp {
        let t = self.tag();
        let mut b = format!("{t} ").into_bytes();
        b.extend_from_slice(cmd);
        b.extend_from_slice(b"\r\n");
        self.send(&b);
        self.until(&t)
    }

    /// Read responses until the one tagged `tag`.
    #[track_caller]
    fn until(&mut self, tag: &str) -> Resp {
        self.try_until(tag)
            .unwrap_or_else(|e| panic!("waiting for {tag}: {e}"))
    }

    fn try_until(&mut self, tag: &str) -> std::io::Result<Resp> {
        let mut untagged = Vec::new();
        let prefix = format!("{tag} ");
        loop {
            let r = self.try_response()?;
            if r.starts_with(b"* ") {
                untagged.push(r);
            } else if r.starts_with(prefix.as_bytes()) {
                let s = String::from_utf8_lossy(&r[prefix.len()..r.len() - 2]).into_owned();
                return Ok(Resp {
                    untagged,
                    status: s,
                });
            } else {
                return Err(std::io::Error::other(format!(
                    "unexpected response while waiting for {tag}: {:?} (after {:?})",
                    String::from_utf8_lossy(&r),
                    untagged
                        .iter()
                        .map(|u| String::from_utf8_lossy(u).into_owned())
                        .collect::<Vec<_>>()
                )));
            }
        }
    }

    /// The command must succeed (tagged OK).
    #[track_caller]
    fn ok(&mut self, cmd: &str) -> Resp {
        let r = self.cmd(cmd);
        assert!(r.status.starts_with("OK"), "{cmd:?} -> {r:#?}");
        r
    }

    /// SELECT a mailbox (must succeed).
    #[track_caller]
    fn select(&mut self, mailbox: &str) -> Resp {
        self.ok(&format!("SELECT {}", quote(mailbox)))
    }

    /// APPEND with a synchronizing literal (waits for the continuation).
    /// Returns the tagged response.
    #[track_caller]
    fn append_sync(&mut self, mailbox: &str, flags: &str, date: Option<&str>, msg: &[u8]) -> Resp {
        let t = self.tag();
        let mut line = format!("{t} APPEND {}", quote(mailbox));
        if !flags.is_empty() {
            line.push_str(&format!(" ({flags})"));
        }
        if let Some(d) = date {
            line.push_str(&format!(" \"{d}\""));
        }
        line.push_str(&format!(" {{{}}}\r\n", msg.len()));
        self.send(line.as_bytes());
        let cont = self.line();
        assert!(
            cont.starts_with('+'),
            "APPEND: expected continuation, got {cont:?}"
        );
        let mut data = msg.to_vec();
        data.extend_from_slice(b"\r\n");
        self.send(&data);
        self.until(&t)
    }

    /// APPEND with a LITERAL+ literal, in one write.
    #[track_caller]
    fn append(&mut self, mailbox: &str, flags: &str, date: Option<&str>, msg: &[u8]) -> Resp {
        let t = self.tag();
        self.send(&append_bytes(&t, mailbox, flags, date, msg));
        self.until(&t)
    }

    /// APPEND that must succeed; returns (UIDVALIDITY, UID) from APPENDUID.
    #[track_caller]
    fn append_ok(
        &mut self,
        mailbox: &str,
        flags: &str,
        date: Option<&str>,
        msg: &[u8],
    ) -> (u32, u32) {
        let r = self.append(mailbox, flags, date, msg);
        appenduid(&r.status)
    }

    /// FETCH (or UID FETCH) that must succeed, parsed.
    #[track_caller]
    fn fetch(&mut self, cmd: &str) -> Vec<Fetch> {
        let r = self.ok(cmd);
        r.fetches()
    }

    /// Nothing must arrive within `wait`.
    #[track_caller]
    fn assert_quiet(&mut self, wait: Duration, what: &str) {
        self.set_timeout(wait);
        let r = self.fill();
        self.set_timeout(IO_TIMEOUT);
        match r {
            Ok(()) => panic!(
                "{what}: unexpected data {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(self.buf.is_empty(), "{what}: buffered {:?}", self.buf);
    }

    /// True when the server closes the connection within `within`.
    fn closed_within(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        let mut chunk = [0u8; 4096];
        self.set_timeout(Duration::from_millis(200));
        while Instant::now() < end {
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        self.set_timeout(IO_TIMEOUT);
        false
    }
}

fn append_bytes(tag: &str, mailbox: &str, flags: &str, date: Option<&str>, msg: &[u8]) -> Vec<u8> {
    let mut line = format!("{tag} APPEND {}", quote(mailbox));
    if !flags.is_empty() {
        line.push_str(&format!(" ({flags})"));
    }
    if let Some(d) = date {
        line.push_str(&format!(" \"{d}\""));
    }
    line.push_str(&format!(" {{{}+}}\r\n", msg.len()));
    let mut b = line.into_bytes();
    b.extend_from_slice(msg);
    b.extend_from_slice(b"\r\n");
    b
}

/// `{n}` or `{n+}` at the end of a line (before CRLF).
fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n")?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|b| *b == b'{')?;
    let digits = &l[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An IMAP quoted string.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b.strip_suffix(b"\r\n").unwrap_or(b)).into_owned()
}

impl Resp {
    fn ok(&self) -> bool {
        self.status.starts_with("OK")
    }

    /// Untagged responses as text (lossy, no final CRLF).
    fn lines(&self) -> Vec<String> {
        self.untagged.iter().map(|u| text(u)).collect()
    }

    /// Untagged responses starting with `* prefix` (case-sensitive).
    fn with_prefix(&self, prefix: &str) -> Vec<String> {
        let p = format!("* {prefix}");
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with(&p))
            .collect()
    }

    /// Numbers of `* n EXPUNGE`, in order.
    fn expunges(&self) -> Vec<u32> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let w: Vec<&str> = l.split(' ').collect();
                (w.len() == 3 && w[2] == "EXPUNGE").then(|| w[1].parse().unwrap())
            })
            .collect()
    }

    /// `* n KEYWORD` (EXISTS, RECENT): the number of the last one.
    fn count(&self, keyword: &str) -> Option<u32> {
        self.lines().iter().rev().find_map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            (w.len() == 3 && w[2] == keyword).then(|| w[1].parse().unwrap())
        })
    }

    /// The numbers of the (single) `* SEARCH` response.
    #[track_caller]
    fn search(&self) -> Vec<u32> {
        let s = self.with_prefix("SEARCH");
        assert_eq!(s.len(), 1, "expected one SEARCH response: {self:#?}");
        s[0]["* SEARCH".len()..]
            .split_whitespace()
            .map(|n| n.parse().unwrap_or_else(|_| panic!("SEARCH item {n:?}")))
            .collect()
    }

    /// Parsed `* n FETCH (...)` responses.
    #[track_caller]
    fn fetches(&self) -> Vec<Fetch> {
        self.untagged
            .iter()
            .filter_map(|u| parse_fetch(u))
            .collect()
    }

    /// The response code of the tagged status, e.g. "APPENDUID 1 2".
    fn code(&self) -> Option<String> {
        code_of(&self.status)
    }
}

/// `[CODE ...]` of a status text ("OK [X y] text").
fn code_of(status: &str) -> Option<String> {
    let open = status.find('[')?;
    let close = status[open..].find(']')? + open;
    Some(status[open + 1..close].to_string())
}

#[track_caller]
fn appenduid(status: &str) -> (u32, u32) {
    assert!(status.starts_with("OK"), "APPEND failed: {status:?}");
    let code = code_of(status).unwrap_or_else(|| panic!("APPEND OK without APPENDUID: {status:?}"));
    let w: Vec<&str> = code.split(' ').collect();
    assert!(
        w.len() == 3 && w[0] == "APPENDUID",
        "APPENDUID code: {code:?}"
    );
    (w[1].parse().unwrap(), w[2].parse().unwrap())
}

/// Expand an IMAP sequence set of plain numbers ("1:3,7") in written order.
#[track_caller]
fn expand_set(set: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                if a <= b {
                    out.extend(a..=b);
                } else {
                    out.extend((b..=a).rev());
                }
            }
            None => out.push(
                part.parse()
                    .unwrap_or_else(|_| panic!("sequence set {set:?}")),
            ),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Parsing response data
// ---------------------------------------------------------------------------

/// A value in a response: atom (numbers, flags, BODY[...] names), string
/// (quoted or literal), NIL, or a parenthesized list.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Atom(String),
    Str(Vec<u8>),
    Nil,
    List(Vec<V>),
}

impl V {
    #[track_caller]
    fn bytes(&self) -> &[u8] {
        match self {
            V::Str(b) => b,
            other => panic!("expected a string, got {other:?}"),
        }
    }
    #[track_caller]
    fn list(&self) -> &[V] {
        match self {
            V::List(l) => l,
            other => panic!("expected a list, got {other:?}"),
        }
    }
    #[track_caller]
    fn num(&self) -> u64 {
        match self {
            V::Atom(a) => a.parse().unwrap_or_else(|_| panic!("not a number: {a:?}")),
            other => panic!("expected a number, got {other:?}"),
        }
    }
    /// Atoms of a list (flags).
    #[track_caller]
    fn atoms(&self) -> Vec<String> {
        self.list()
            .iter()
            .map(|v| match v {
                V::Atom(a) => a.clone(),
                other => panic!("expected an atom, got {other:?}"),
            })
            .collect()
    }
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
    fn value(&mut self) -> Result<V, String> {
        self.skip_sp();
        match self.peek().ok_or("unexpected end")? {
            b'(' => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_sp();
                    match self.peek() {
                        Some(b')') => {
                            self.i += 1;
                            return Ok(V::List(items));
                        }
                        None => return Err("unterminated list".into()),
                        _ => items.push(self.value()?),
                    }
                }
            }
            b'"' => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    match self.peek().ok_or("unterminated quoted string")? {
                        b'"' => {
                            self.i += 1;
                            return Ok(V::Str(s));
                        }
                        b'\\' => {
                            s.push(*self.b.get(self.i + 1).ok_or("bad escape")?);
                            self.i += 2;
                        }
                        b'\r' | b'\n' => return Err("CR/LF in a quoted string".into()),
                        c => {
                            s.push(c);
                            self.i += 1;
                        }
                    }
                }
            }
            b'{' => {
                let close = self.b[self.i..]
                    .iter()
                    .position(|c| *c == b'}')
                    .ok_or("bad literal")?
                    + self.i;
                let digits = std::str::from_utf8(&self.b[self.i + 1..close]).unwrap();
                let n: usize = digits
                    .trim_end_matches('+')
                    .parse()
                    .map_err(|_| format!("bad literal size {digits:?}"))?;
                if &self.b[close + 1..close + 3] != b"\r\n" {
                    return Err("literal announcement without CRLF".into());
                }
                let start = close + 3;
                let data = self
                    .b
                    .get(start..start + n)
                    .ok_or("short literal")?
                    .to_vec();
                self.i = start + n;
                Ok(V::Str(data))
            }
            _ => {
                let start = self.i;
                let mut depth = 0;
                while let Some(c) = self.peek() {
                    match c {
                        b'[' => depth += 1,
                        b']' => depth -= 1,
                        b' ' | b'(' | b')' | b'\r' | b'\n' if depth == 0 => break,
                        _ => {}
                    }
                    self.i += 1;
                }
                let a = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
                if a.is_empty() {
                    return Err(format!("empty atom at {}", self.i));
                }
                Ok(if a.eq_ignore_ascii_case("NIL") {
                    V::Nil
                } else {
                    V::Atom(a)
                })
            }
        }
    }
}

/// Parse one value from the start of `b` (test helper for whole lists).
fn parse_value(b: &[u8]) -> V {
    let mut p = P { b, i: 0 };
    p.value()
        .unwrap_or_else(|e| panic!("parsing {:?}: {e}", String::from_utf8_lossy(b)))
}

/// One `* n FETCH (...)` response.
#[derive(Debug, Clone)]
struct Fetch {
    seq: u32,
    items: Vec<(String, V)>,
}

impl Fetch {
    fn get(&self, name: &str) -> Option<&V> {
        self.items
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    #[track_caller]
    fn must(&self, name: &str) -> &V {
        self.get(name)
            .unwrap_or_else(|| panic!("FETCH {} lacks {name}: {self:?}", self.seq))
    }
    #[track_caller]
    fn uid(&self) -> u32 {
        self.must("UID").num() as u32
    }
    #[track_caller]
    fn flags(&self) -> Vec<String> {
        self.must("FLAGS").atoms()
    }
    #[track_caller]
    fn modseq(&self) -> u64 {
        let v = self.must("MODSEQ").list();
        assert_eq!(v.len(), 1, "MODSEQ is a one-element list: {v:?}");
        v[0].num()
    }
}

/// Parse `* n FETCH (...)`; None for other responses. Panics on syntax errors.
#[track_caller]
fn parse_fetch(u: &[u8]) -> Option<Fetch> {
    let rest = u.strip_prefix(b"* ")?;
    let sp = rest.iter().position(|b| *b == b' ')?;
    let seq: u32 = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
    let rest = rest[sp + 1..].strip_prefix(b"FETCH ")?;
    let mut p = P { b: rest, i: 0 };
    let v = p
        .value()
        .unwrap_or_else(|e| panic!("FETCH syntax ({e}): {:?}", String::from_utf8_lossy(u)));
    assert_eq!(
        &rest[p.i..],
        b"\r\n",
        "trailing bytes after FETCH: {:?}",
        String::from_utf8_lossy(u)
    );
    let list = v.list();
    assert!(list.len() % 2 == 0, "odd FETCH item list: {list:?}");
    let items = list
        .chunks(2)
        .map(|kv| match &kv[0] {
            V::Atom(k) => (k.to_ascii_uppercase(), kv[1].clone()),
            other => panic!("FETCH item name {other:?}"),
        })
        .collect();
    Some(Fetch { seq, items })
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn plain(user: &str, pw: &str) -> String {
    b64(format!("\0{user}\0{pw}").as_bytes())
}

/// Seconds since the epoch of an IMAP date-time "dd-Mon-yyyy hh:mm:ss +zzzz".
#[track_caller]
fn imap_date_secs(s: &str) -> i64 {
    let s = s.trim();
    let (date, rest) = s.split_once(' ').unwrap();
    let (time, zone) = rest.split_once(' ').unwrap();
    let d: Vec<&str> = date.trim().split('-').collect();
    let day: i64 = d[0].trim().parse().unwrap();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| *m == d[1])
        .unwrap_or_else(|| panic!("month in {s:?}")) as i64
        + 1;
    let year: i64 = d[2].parse().unwrap();
    let t: Vec<i64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let zh: i64 = zone[1..3].parse().unwrap();
    let zm: i64 = zone[3..5].parse().unwrap();
    days_from_civil(year, month, day) * 86400 + t[0] * 3600 + t[1] * 60 + t[2]
        - sign * (zh * 3600 + zm * 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn has_flag(flags: &[String], f: &str) -> bool {
    flags.iter().any(|x| x.eq_ignore_ascii_case(f))
}

/// A simple CRLF message.
fn simple_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@example.test>\r\nTo: <rcpt@example.test>\r\nSubject: {subject}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}@e2e.test>\r\n\r\n{body}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// Capability names of a `* CAPABILITY ...` line or `[CAPABILITY ...]` code.
fn caps_of(s: &str) -> Vec<String> {
    s.split_whitespace()
        .skip_while(|w| {
            !w.eq_ignore_ascii_case("CAPABILITY") && !w.eq_ignore_ascii_case("[CAPABILITY")
        })
        .skip(1)
        .map(|w| w.trim_end_matches(']').to_ascii_uppercase())
        .take_while(|w| !w.is_empty())
        .collect()
}

/// Extensions the server advertises once logged in (and the brief requires).
const AUTHED_CAPS: &[&str] = &[
    "IMAP4REV1",
    "IDLE",
    "UIDPLUS",
    "MOVE",
    "LITERAL+",
    "NAMESPACE",
    "ID",
    "ENABLE",
    "UNSELECT",
    "SPECIAL-USE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "CONDSTORE",
    "ESEARCH",
    "SEARCHRES",
    "SASL-IR",
];

// ---------------------------------------------------------------------------
// 1. Capability and login
// ---------------------------------------------------------------------------

#[test]
fn capability_and_login() {
    let server = Server::new();
    let mut c = Imap::connect(server.imap);
    // Greeting: "* OK [CAPABILITY IMAP4rev1 ...]" (RFC 3501 7.1.1, optional code).
    if c.greeting.contains("[CAPABILITY") {
        assert!(
            caps_of(&c.greeting).contains(&"IMAP4REV1".to_string()),
            "{}",
            c.greeting
        );
    }
    let r = c.ok("CAPABILITY");
    let lines = r.with_prefix("CAPABILITY ");
    assert_eq!(lines.len(), 1, "{r:#?}");
    let pre = caps_of(&lines[0]);
    for want in ["IMAP4REV1", "AUTH=PLAIN", "SASL-IR", "LITERAL+"] {
        assert!(
            pre.contains(&want.to_string()),
            "pre-login CAPABILITY lacks {want}: {pre:?}"
        );
    }
    // Plain-text LOGIN is allowed (no TLS configured), so no LOGINDISABLED.
    assert!(!pre.contains(&"LOGINDISABLED".to_string()), "{pre:?}");
    // NOOP is valid in every state; mailbox commands are not before login.
    c.ok("NOOP");
    for cmd in [
        "SELECT INBOX",
        "LIST \"\" \"*\"",
        "STATUS INBOX (MESSAGES)",
        "FETCH 1 FLAGS",
    ] {
        let r = c.cmd(cmd);
        assert!(
            r.status.starts_with("BAD") || r.status.starts_with("NO"),
            "{cmd} before login: {r:?}"
        );
    }

    // Wrong password: NO [AUTHENTICATIONFAILED] (RFC 5530), session continues.
    let r = c.cmd(&format!("LOGIN {ALICE} wrong-password"));
    assert!(r.status.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:?}");
    let r = c.cmd("LOGIN nobody@example.test whatever");
    assert!(
        r.status.starts_with("NO [AUTHENTICATIONFAILED]"),
        "unknown user: {r:?}"
    );

    // LOGIN with synchronizing literals for both arguments.
    let t = c.tag();
    c.send(format!("{t} LOGIN {{{}}}\r\n", ALICE.len()).as_bytes());
    assert!(
        c.line().starts_with('+'),
        "continuation for the user literal"
    );
    c.send(format!("{ALICE} {{{}}}\r\n", ALICE_PW.len()).as_bytes());
    assert!(
        c.line().starts_with('+'),
        "continuation for the password literal"
    );
    c.send(format!("{ALICE_PW}\r\n").as_bytes());
    let r = c.until(&t);
    assert!(r.ok(), "LOGIN with literals: {r:?}");
    if let Some(code) = r.code() {
        if code.starts_with("CAPABILITY") {
            let caps = caps_of(&format!("[{code}]"));
            for want in AUTHED_CAPS {
                assert!(
                    caps.contains(&want.to_string()),
                    "LOGIN OK [CAPABILITY] lacks {want}: {caps:?}"
                );
            }
        }
    }
    let r = c.ok("CAPABILITY");
    let caps = caps_of(&r.with_prefix("CAPABILITY ")[0]);
    for want in AUTHED_CAPS {
        assert!(
            caps.contains(&want.to_string()),
            "CAPABILITY after login lacks {want}: {caps:?}"
        );
    }
    // Once authenticated, LOGIN and AUTHENTICATE are invalid.
    let r = c.cmd(&format!("LOGIN {ALICE} {ALICE_PW}"));
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "second LOGIN: {r:?}"
    );
    c.ok("SELECT INBOX");
    // LOGOUT: untagged BYE, tagged OK, connection closed (RFC 3501 6.1.3).
    let r = c.ok("LOGOUT");
    assert!(r.with_prefix("BYE").len() == 1, "{r:?}");
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "no close after LOGOUT"
    );

    // AUTHENTICATE PLAIN with an initial response (SASL-IR, RFC 4959).
    let mut c = Imap::connect(server.imap);
    let r = c.cmd(&format!("AUTHENTICATE PLAIN {}", plain(ALICE, "nope")));
    assert!(r.status.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:?}");
    c.ok(&format!("AUTHENTICATE PLAIN {}", plain(ALICE, ALICE_PW)));
    c.ok("SELECT INBOX");
    c.ok("LOGOUT");

    // AUTHENTICATE PLAIN with a continuation; "+" SP [base64] (RFC 3501 7.5).
    let mut c = Imap::connect(server.imap);
    let t = c.tag();
    c.send(format!("{t} AUTHENTICATE PLAIN\r\n").as_bytes());
    let cont = c.line();
    assert!(cont == "+ " || cont == "+", "empty challenge: {cont:?}");
    // "*" cancels: tagged BAD (RFC 3501 6.2.2).
    c.send(b"*\r\n");
    let r = c.until(&t);
    assert!(r.status.starts_with("BAD"), "cancelled AUTHENTICATE: {r:?}");
    // Invalid base64: BAD, still not logged in.
    let t = c.tag();
    c.send(format!("{t} AUTHENTICATE PLAIN\r\n").as_bytes());
    assert!(c.line().starts_with('+'));
    c.send(b"!!!not base64!!!\r\n");
    let r = c.until(&t);
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "bad base64: {r:?}"
    );
    assert!(
        !c.cmd("SELECT INBOX").ok(),
        "not logged in after a failed AUTHENTICATE"
    );
    // An unknown mechanism: NO.
    let r = c.cmd("AUTHENTICATE X-UNKNOWN");
    assert!(
        r.status.starts_with("NO") || r.status.starts_with("BAD"),
        "{r:?}"
    );
    // And a good one, for bob, whose account may live on the other core.
    let t = c.tag();
    c.send(format!("{t} AUTHENTICATE PLAIN\r\n").as_bytes());
    assert!(c.line().starts_with('+'));
    c.send(format!("{}\r\n", plain(BOB, "bob-secret")).as_bytes());
    let r = c.until(&t);
    assert!(r.ok(), "AUTHENTICATE with continuation: {r:?}");
    let r = c.ok("STATUS INBOX (MESSAGES UIDNEXT)");
    assert_eq!(r.with_prefix("STATUS").len(), 1, "{r:?}");
    c.ok("LOGOUT");
}

/// Logging in moves the connection to the core owning the account; commands
/// pipelined right behind LOGIN must still be answered, in order, for
/// accounts on either core.
#[test]
fn pipelined_after_login_on_both_cores() {
    let accounts = accounts_on_all_shards("pipe", 8, 2, 1);
    let server = Server::options().accounts(&accounts).start();
    for shard in 0..2 {
        let acct = accounts.iter().find(|a| shard_of(a, 2) == shard).unwrap();
        let mut c = Imap::connect(server.imap);
        c.send(
            format!(
                "a LOGIN {acct} {PASSWORD}\r\nb SELECT INBOX\r\nc APPEND INBOX {{19+}}\r\nSubject: x\r\n\r\nhello\r\nd FETCH 1 (BODY.PEEK[TEXT] UID)\r\ne LOGOUT\r\n"
            )
            .as_bytes(),
        );
        for t in ["a", "b", "c", "d"] {
            let r = c.until(t);
            assert!(r.ok(), "shard {shard}: {t} -> {r:?}");
            if t == "d" {
                let f = r.fetches();
                assert_eq!(f.len(), 1, "{r:?}");
                assert_eq!(f[0].uid(), 1);
                assert_eq!(f[0].must("BODY[TEXT]").bytes(), b"hello");
            }
        }
        let r = c.until("e");
        assert!(r.ok(), "{r:?}");
        assert!(c.closed_within(Duration::from_secs(5)));
    }
}

/// Before login a client can make the server hold a few KiB at most: a huge
/// synchronizing literal is refused without a continuation, a huge
/// non-synchronizing one and an endless line are refused before they end.
#[test]
fn preauth_is_bounded() {
    let server = Server::new();

    // Synchronizing literal of 100 MB: answered right away, no "+".
    let mut c = Imap::connect(server.imap);
    c.send(b"a LOGIN {100000000}\r\n");
    let l = c.line();
    assert!(
        l.starts_with("a BAD") || l.starts_with("a NO"),
        "huge synchronizing literal before login: {l:?}"
    );
    // The session is still in step (or closed).
    match (|| -> std::io::Result<Resp> {
        c.s.write_all(b"b NOOP\r\n")?;
        c.try_until("b")
    })() {
        Ok(r) => assert!(r.ok(), "{r:?}"),
        Err(e) => eprintln!("connection closed after the refused literal ({e}), acceptable"),
    }

    // Non-synchronizing literal of 8 MiB: refused before the data is through.
    let mut c = Imap::connect(server.imap);
    c.send(b"a LOGIN alice {8388608+}\r\n");
    c.send(&vec![b'x'; 64 * 1024]);
    c.set_timeout(Duration::from_secs(5));
    let early = c.try_raw_line();
    c.set_timeout(IO_TIMEOUT);
    match early {
        Ok(l) => {
            let l = text(&l);
            assert!(l.starts_with("a BAD") || l.starts_with("a NO"), "{l:?}");
            // Send the rest; the server discards it and stays in step.
            let mut sent_all = true;
            let chunk = vec![b'x'; 256 * 1024];
            let mut left = 8_388_608 - 64 * 1024;
            while left > 0 {
                let n = left.min(chunk.len());
                if c.s.write_all(&chunk[..n]).is_err() {
                    sent_all = false;
                    break;
                }
                left -= n;
            }
            if sent_all && c.s.write_all(b" x\r\nb NOOP\r\n").is_ok() {
                match c.try_until("b") {
                    Ok(r) => assert!(r.ok(), "{r:?}"),
                    Err(e) => eprintln!("closed after the discarded literal ({e}), acceptable"),
                }
            }
        }
        Err(e) => {
            // Closing the connection is also fine, but it must be closed, not hanging.
            assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "no answer to an 8 MiB literal before login after 64 KiB: {e}"
            );
        }
    }

    // An endless line: refused long before 1 MiB.
    let mut c = Imap::connect(server.imap);
    c.send(b"a LOGIN ");
    let mut answered = None;
    for _ in 0..16 {
        if c.s.write_all(&[b'y'; 64 * 1024]).is_err() {
            break;
        }
        c.set_timeout(Duration::from_millis(100));
        if let Ok(l) = c.try_raw_line() {
            answered = Some(text(&l));
            break;
        }
    }
    c.set_timeout(IO_TIMEOUT);
    let l = answered.expect("no answer to a 1 MiB line before login");
    assert!(
        l.starts_with("a BAD") || l.starts_with("* BAD") || l.starts_with("* BYE"),
        "{l:?}"
    );

    // The server is fine: another client logs in and works.
    let mut c = Imap::login(server.imap, ALICE, ALICE_PW);
    c.select("INBOX");
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 2. Two sessions on one mailbox
// ---------------------------------------------------------------------------

fn deliver(server: &Server, to: &str, subject: &str) {
    let msg = simple_message(subject, &format!("body of {subject}"));
    smtp_send(server.smtp, "sender@example.test", &[to], &msg);
}

#[test]
fn two_sessions_see_each_others_changes() {
    const U: &str = "shared@example.test";
    let server = Server::options().accounts(&[U]).start();
    for i in 1..=3 {
        deliver(&server, U, &format!("m{i}"));
    }
    let mut a = Imap::login(server.imap, U, PASSWORD);
    let mut b = Imap::login(server.imap, U, PASSWORD);
    let ra = a.select("INBOX");
    assert_eq!(ra.count("EXISTS"), Some(3), "{ra:?}");
    assert_eq!(
        ra.count("RECENT"),
        Some(3),
        "first session to select gets \\Recent: {ra:?}"
    );
    let rb = b.select("INBOX");
    assert_eq!(rb.count("EXISTS"), Some(3), "{rb:?}");
    assert_eq!(
        rb.count("RECENT"),
        Some(0),
        "\\Recent belongs to one session only: {rb:?}"
    );
    for f in a.fetch("FETCH 1:3 (FLAGS UID)") {
        assert!(has_flag(&f.flags(), "\\Recent"), "A: {f:?}");
    }
    for f in b.fetch("FETCH 1:3 (FLAGS UID)") {
        assert!(!has_flag(&f.flags(), "\\Recent"), "B: {f:?}");
    }

    // A sets a flag; B hears of it on NOOP.
    let r = a.ok("STORE 2 +FLAGS (\\Flagged)");
    let f = r.fetches();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].seq, 2);
    assert!(
        has_flag(&f[0].flags(), "\\Flagged") && has_flag(&f[0].flags(), "\\Recent"),
        "{f:?}"
    );
    let r = b.ok("NOOP");
    let f = r.fetches();
    assert_eq!(f.len(), 1, "B NOOP after A's STORE: {r:?}");
    assert_eq!(f[0].seq, 2);
    let mut fl = f[0].flags();
    fl.sort();
    assert_eq!(
        fl,
        vec!["\\Flagged".to_string()],
        "B sees the new flags, without \\Recent"
    );
    // Nothing more to tell: a second NOOP is quiet.
    let r = b.ok("NOOP");
    assert!(r.untagged.is_empty(), "repeated NOOP: {r:?}");

    // A expunges message 1.
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    let r = a.ok("EXPUNGE");
    assert_eq!(r.expunges(), vec![1], "{r:?}");
    // B: no EXPUNGE in answer to FETCH, STORE or SEARCH (RFC 3501 7.4.1);
    // sequence numbers keep B's old numbering meanwhile.
    let r = b.ok("FETCH 2:3 (UID FLAGS)");
    assert!(r.expunges().is_empty(), "EXPUNGE during FETCH: {r:?}");
    let f = r.fetches();
    assert_eq!(
        f.iter().map(|f| (f.seq, f.uid())).collect::<Vec<_>>(),
        vec![(2, 2), (3, 3)],
        "B's numbering must not change during FETCH: {r:?}"
    );
    let r = b.ok("STORE 3 +FLAGS (\\Answered)");
    assert!(r.expunges().is_empty(), "EXPUNGE during STORE: {r:?}");
    let f = r.fetches();
    assert!(
        f.iter()
            .any(|f| f.seq == 3 && has_flag(&f.flags(), "\\Answered")),
        "{r:?}"
    );
    let r = b.ok("SEARCH ALL");
    assert!(r.expunges().is_empty(), "EXPUNGE during SEARCH: {r:?}");
    let r = b.ok("SEARCH UNDELETED");
    assert!(r.expunges().is_empty(), "EXPUNGE during SEARCH: {r:?}");
    assert!(r.search().contains(&3), "{r:?}");
    // COPY/MOVE of the message expunged meanwhile: no EXPUNGE for COPY, and
    // either NO or OK, but never a COPYUID with empty sets.
    for cmd in ["COPY 1 Trash", "MOVE 1 Trash"] {
        let r = b.cmd(cmd);
        if cmd.starts_with("COPY") {
            assert!(r.expunges().is_empty(), "EXPUNGE during COPY: {r:?}");
        }
        assert!(r.ok() || r.status.starts_with("NO"), "{cmd}: {r:?}");
        for l in r.lines().iter().chain([&r.status]) {
            if l.contains("[COPYUID") {
                copyuid(l.trim_start_matches("* "));
            }
        }
        let t = b.ok("STATUS Trash (MESSAGES)");
        assert_eq!(
            get(&status_of(&t), "MESSAGES"),
            0,
            "{cmd} copied an expunged message: {r:?}"
        );
    }
    // Re-synchronize B's numbering before the checks below.
    let r = b.ok("UID FETCH 1:* (FLAGS)");
    assert_eq!(
        r.expunges(),
        vec![1],
        "UID FETCH announces the expunge: {r:?}"
    );
    let pos_exp = r
        .lines()
        .iter()
        .position(|l| l.ends_with(" EXPUNGE"))
        .unwrap();
    let pos_fetch = r
        .lines()
        .iter()
        .position(|l| l.contains(" FETCH "))
        .unwrap();
    assert!(
        pos_exp < pos_fetch,
        "EXPUNGE must precede FETCHes in the new numbering: {r:?}"
    );
    let f = r.fetches();
    assert_eq!(
        f.iter().map(|f| (f.seq, f.uid())).collect::<Vec<_>>(),
        vec![(1, 2), (2, 3)],
        "{r:?}"
    );
    // A sees B's \Answered.
    let r = a.ok("NOOP");
    let f = r.fetches();
    assert!(
        f.iter()
            .any(|f| f.seq == 2 && has_flag(&f.flags(), "\\Answered")),
        "{r:?}"
    );

    // Second expunge, by A; B gets it on NOOP.
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(a.ok("EXPUNGE").expunges(), vec![1]);
    let r = b.ok("NOOP");
    assert_eq!(r.expunges(), vec![1], "B NOOP after A's EXPUNGE: {r:?}");

    // A new delivery: both get EXISTS; exactly one of them gets it \Recent.
    deliver(&server, U, "m4");
    let ra = a.ok("NOOP");
    let rb = b.ok("NOOP");
    assert_eq!(ra.count("EXISTS"), Some(2), "{ra:?}");
    assert_eq!(rb.count("EXISTS"), Some(2), "{rb:?}");
    assert!(
        ra.count("RECENT").is_some() && rb.count("RECENT").is_some(),
        "RECENT with EXISTS: {ra:?} {rb:?}"
    );
    let recent_a = a.fetch("FETCH 2 (FLAGS UID)");
    let recent_b = b.fetch("FETCH 2 (FLAGS UID)");
    assert_eq!(recent_a[0].uid(), 4);
    assert_eq!(recent_b[0].uid(), 4);
    let n = [&recent_a[0], &recent_b[0]]
        .iter()
        .filter(|f| has_flag(&f.flags(), "\\Recent"))
        .count();
    assert_eq!(
        n, 1,
        "\\Recent in exactly one session: {recent_a:?} {recent_b:?}"
    );
    let in_a = has_flag(&recent_a[0].flags(), "\\Recent");
    assert_eq!(
        ra.count("RECENT"),
        Some(if in_a { 2 } else { 1 }),
        "A's RECENT count: {ra:?}"
    );
    assert_eq!(
        rb.count("RECENT"),
        Some(if in_a { 0 } else { 1 }),
        "B's RECENT count: {rb:?}"
    );
    // APPEND to the selected mailbox: EXISTS before the tagged OK (RFC 3501 6.3.11).
    let r = a.append("INBOX", "", None, &simple_message("m5", "appended"));
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.count("EXISTS"),
        Some(3),
        "APPEND to the selected mailbox: {r:?}"
    );
    // While B idles, A's flag change and expunge arrive unsolicited (RFC 2177).
    let r = b.ok("NOOP");
    assert_eq!(r.count("EXISTS"), Some(3), "{r:?}");
    b.send(b"bi IDLE\r\n");
    assert!(b.line().starts_with('+'));
    a.ok("STORE 3 +FLAGS (\\Seen)");
    let l = text(&b.response());
    let f = parse_fetch(format!("{l}\r\n").as_bytes())
        .unwrap_or_else(|| panic!("IDLE: expected FETCH, got {l:?}"));
    assert_eq!(f.seq, 3);
    assert!(has_flag(&f.flags(), "\\Seen"), "{f:?}");
    a.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    a.ok("EXPUNGE");
    loop {
        let l = text(&b.response());
        if l.starts_with("* 1 FETCH") {
            continue; // the \Deleted flag, if it arrived before the expunge
        }
        assert_eq!(l, "* 1 EXPUNGE", "IDLE after A's EXPUNGE");
        break;
    }
    b.send(b"DONE\r\n");
    assert!(b.until("bi").ok());
    // \Recent cannot be stored (RFC 3501 6.4.6).
    let r = b.cmd("STORE 1 +FLAGS (\\Recent)");
    if r.ok() {
        let f = b.fetch("FETCH 1 (FLAGS)");
        assert!(
            !has_flag(&f[0].flags(), "\\Recent"),
            "\\Recent was stored: {f:?}"
        );
    }
    a.ok("LOGOUT");
    b.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 3. IDLE
// ---------------------------------------------------------------------------

/// Read untagged responses until `* n EXISTS` arrives or `limit` passes.
fn wait_exists(c: &mut Imap, n: u32, limit: Duration) -> Option<(Duration, Vec<String>)> {
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < limit {
        c.set_timeout((limit - start.elapsed()).max(Duration::from_millis(1)));
        match c.try_response() {
            Ok(r) => {
                let l = text(&r);
                let hit = l == format!("* {n} EXISTS");
                seen.push(l);
                if hit {
                    let at = start.elapsed();
                    // RFC 3501 7.3.2: RECENT accompanies a size change.
                    c.set_timeout(Duration::from_millis(300));
                    if let Ok(r) = c.try_response() {
                        let l = text(&r);
                        assert!(
                            l.starts_with("* ") && l.ends_with(" RECENT"),
                            "after EXISTS: {l:?}"
                        );
                        seen.push(l);
                    }
                    c.set_timeout(IO_TIMEOUT);
                    return Some((at, seen));
                }
            }
            Err(_) => break,
        }
    }
    c.set_timeout(IO_TIMEOUT);
    eprintln!("no EXISTS {n}; saw {seen:?}");
    None
}

#[test]
fn idle_sees_deliveries_on_both_cores() {
    let accounts = accounts_on_all_shards("idle", 10, 2, 1);
    let server = Server::options().accounts(&accounts).start();
    let chosen: Vec<&String> = (0..2)
        .map(|s| accounts.iter().find(|a| shard_of(a, 2) == s).unwrap())
        .collect();
    let mut sessions: Vec<Imap> = chosen
        .iter()
        .map(|acct| {
            let mut c = Imap::login(server.imap, acct, PASSWORD);
            let r = c.select("INBOX");
            assert_eq!(r.count("EXISTS"), Some(0));
            c.send(b"idle1 IDLE\r\n");
            let cont = c.line();
            assert!(cont.starts_with('+'), "IDLE continuation: {cont:?}");
            c
        })
        .collect();
    // Several rounds, so at least one delivery crosses cores whichever core
    // accepts the SMTP connection, and IDLE keeps reporting after the first.
    for round in 1..=3u32 {
        for (k, acct) in chosen.iter().enumerate() {
            let (mut smtp, _) = smtp_connect(server.smtp);
            let msg = simple_message(&format!("idle {round} {k}"), "hello idler");
            let r = smtp_transaction(
                &mut smtp,
                "sender@example.test",
                &[acct],
                &msg,
                Transfer::Data,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            r.expect(250, None);
            let accepted = Instant::now();
            let got = wait_exists(&mut sessions[k], round, Duration::from_secs(5));
            let waited = accepted.elapsed();
            let (_, seen) = got.unwrap_or_else(|| panic!("IDLE on shard {k}: no EXISTS {round}"));
            eprintln!("IDLE shard {k} round {round}: EXISTS after {waited:?} ({seen:?})");
            assert!(
                waited < Duration::from_secs(1),
                "IDLE on shard {k} took {waited:?} to report delivery {round}"
            );
            smtp.cmd("QUIT").expect(221, None);
            // The other session, on another account, hears nothing.
            sessions[1 - k].assert_quiet(Duration::from_millis(100), "the other account's IDLE");
        }
    }
    for (k, c) in sessions.iter_mut().enumerate() {
        c.send(b"DONE\r\n");
        let r = c.until("idle1");
        assert!(r.ok(), "DONE -> {r:?}");
        // RECENT may follow EXISTS; nothing else.
        for l in r.lines() {
            assert!(l.ends_with(" RECENT"), "shard {k}: after DONE: {l:?}");
        }
        let r = c.ok("SEARCH SUBJECT idle");
        assert_eq!(r.search(), vec![1, 2, 3]);
        // IDLE again, and DONE right away.
        c.send(b"idle2 IDLE\r\n");
        assert!(c.line().starts_with('+'));
        c.send(b"DONE\r\n");
        assert!(c.until("idle2").ok());
        c.ok("LOGOUT");
    }
}

// ---------------------------------------------------------------------------
// 4. APPEND durability
// ---------------------------------------------------------------------------

#[test]
fn append_survives_kill9() {
    const U: &str = "appender@example.test";
    let mut server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let m1 = simple_message("first append", "line one\r\nline two");
    let mut m2 = simple_message("second append", "8-bit: gr\u{fc}\u{df}e");
    m2.extend_from_slice(b"no final newline");
    let m3 = {
        let mut v = b"Subject: binary-ish\r\n\r\n".to_vec();
        v.extend((0u8..=255).filter(|b| *b != 0 && *b != b'\r' && *b != b'\n'));
        v.extend_from_slice(b"\r\n.\r\n..leading dots\r\n");
        v
    };
    let m4 = simple_message("sent copy", "to the Sent folder");
    // With flags and a date (zone +0200), synchronizing literal.
    let r = c.append_sync(
        "INBOX",
        "\\Seen $Custom",
        Some("14-Jul-2021 09:08:07 +0200"),
        &m1,
    );
    let (v1, u1) = appenduid(&r.status);
    let before = now_secs();
    // No flags, no date, LITERAL+.
    let (v2, u2) = c.append_ok("INBOX", "", None, &m2);
    let after = now_secs();
    // Flags only; a negative zone and a day with a leading space.
    let (v3, u3) = c.append_ok(
        "inbox",
        "\\Flagged \\Draft \\Answered",
        Some(" 5-Mar-1999 23:59:59 -0800"),
        &m3,
    );
    let (vs, us) = c.append_ok("Sent", "\\Seen", None, &m4);
    assert_eq!((v1, v1), (v2, v3), "one UIDVALIDITY for INBOX");
    assert!(u1 < u2 && u2 < u3, "UIDs ascend: {u1} {u2} {u3}");
    assert_eq!(us, 1, "first UID in Sent");
    let r = c.ok("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)");
    assert_eq!(
        r.with_prefix("STATUS")[0],
        format!(
            "* STATUS INBOX (MESSAGES 3 UIDNEXT {} UIDVALIDITY {v1})",
            u3 + 1
        )
    );
    // Crash right after the tagged OKs.
    server.kill9();
    server.restart();

    let mut c = Imap::login(server.imap, U, PASSWORD);
    let r = c.select("INBOX");
    assert_eq!(r.count("EXISTS"), Some(3), "{r:?}");
    assert!(
        r.lines()
            .iter()
            .any(|l| l.starts_with(&format!("* OK [UIDVALIDITY {v1}]"))),
        "UIDVALIDITY changed: {r:?}"
    );
    let f = c.fetch("UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])");
    assert_eq!(f.len(), 3);
    let want = [
        (
            u1,
            &m1,
            vec!["\\Seen", "$Custom"],
            Some(imap_date_secs("14-Jul-2021 09:08:07 +0200")),
        ),
        (u2, &m2, vec![], None),
        (
            u3,
            &m3,
            vec!["\\Flagged", "\\Draft", "\\Answered"],
            Some(imap_date_secs("05-Mar-1999 23:59:59 -0800")),
        ),
    ];
    for (f, (uid, msg, flags, date)) in f.iter().zip(want) {
        assert_eq!(f.uid(), uid);
        assert_bytes_eq(
            f.must("BODY[]").bytes(),
            msg,
            &format!("UID {uid} after kill -9"),
        );
        assert_eq!(f.must("RFC822.SIZE").num(), msg.len() as u64);
        let mut got = f.flags();
        got.retain(|x| x != "\\Recent");
        got.sort();
        let mut flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        flags.sort();
        assert_eq!(got, flags, "UID {uid} flags");
        let d = String::from_utf8(f.must("INTERNALDATE").bytes().to_vec()).unwrap();
        let secs = imap_date_secs(&d);
        match date {
            Some(want) => assert_eq!(secs, want, "INTERNALDATE {d:?} of UID {uid}"),
            None => assert!(
                secs >= before - 2 && secs <= after + 2,
                "INTERNALDATE {d:?} of UID {uid} is not the append time"
            ),
        }
    }
    // Sent too.
    let f = c.fetch("FETCH 1 (BODY.PEEK[])");
    assert_eq!(f[0].must("BODY[]").bytes(), &m1[..]);
    c.ok("EXAMINE Sent");
    let f = c.fetch("UID FETCH 1:* (FLAGS BODY.PEEK[])");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].must("BODY[]").bytes(), &m4[..]);
    assert!(has_flag(&f[0].flags(), "\\Seen"));
    // UIDs keep ascending, UIDVALIDITY stays.
    let (v4, u4) = c.append_ok("INBOX", "", None, b"Subject: after crash\r\n\r\nx\r\n");
    assert_eq!(v4, v1);
    assert!(u4 > u3, "UID {u4} after restart must exceed {u3}");
    let (vs2, us2) = c.append_ok("Sent", "", None, b"Subject: after crash\r\n\r\ny\r\n");
    assert_eq!((vs2, us2), (vs, 2));
    // Bad dates and flags are refused with BAD and nothing is stored.
    let r = c.append(
        "INBOX",
        "",
        Some("31-Foo-2021 00:00:00 +0000"),
        b"Subject: x\r\n\r\nx\r\n",
    );
    assert!(r.status.starts_with("BAD"), "bad date: {r:?}");
    let r = c.append("NoSuchBox", "", None, b"Subject: x\r\n\r\nx\r\n");
    assert!(
        r.status.starts_with("NO [TRYCREATE]"),
        "APPEND to a missing mailbox: {r:?}"
    );
    let r = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(r.with_prefix("STATUS")[0], "* STATUS INBOX (MESSAGES 4)");
    c.ok("LOGOUT");
    server.terminate();
}

// ---------------------------------------------------------------------------
// 5. COPY and MOVE with UIDPLUS
// ---------------------------------------------------------------------------

/// Parse `COPYUID validity src dst` from a status text; check the sets are
/// plain sequence sets and expand them.
#[track_caller]
fn copyuid(status: &str) -> (u32, Vec<u32>, Vec<u32>) {
    let code = code_of(status).unwrap_or_else(|| panic!("no response code in {status:?}"));
    let w: Vec<&str> = code.split(' ').collect();
    assert!(w.len() == 4 && w[0] == "COPYUID", "COPYUID code: {code:?}");
    for set in &w[2..] {
        assert!(
            !set.is_empty()
                && set
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b':' || b == b','),
            "COPYUID set {set:?}"
        );
    }
    (w[1].parse().unwrap(), expand_set(w[2]), expand_set(w[3]))
}

#[test]
fn copy_and_move_with_uidplus() {
    const U: &str = "copier@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.ok("CREATE Dest");
    let flags = [
        "",
        "\\Seen",
        "\\Flagged $Work",
        "\\Answered",
        "\\Seen $Home",
    ];
    let msgs: Vec<Vec<u8>> = (1..=5)
        .map(|i| simple_message(&format!("copy {i}"), &format!("body {i}")))
        .collect();
    for (m, f) in msgs.iter().zip(flags) {
        c.append_ok("INBOX", f, None, m);
    }
    let r = c.ok("STATUS Dest (UIDVALIDITY UIDNEXT)");
    let st = r.with_prefix("STATUS")[0].clone();
    let vd: u32 = st
        .split("UIDVALIDITY ")
        .nth(1)
        .unwrap()
        .split([' ', ')'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    c.select("INBOX");

    // COPY by sequence numbers.
    let r = c.ok("COPY 2:4 Dest");
    assert_eq!(
        copyuid(&r.status),
        (vd, vec![2, 3, 4], vec![1, 2, 3]),
        "{r:?}"
    );
    // UID COPY with a list; destination UIDs pair up in order.
    let r = c.ok("UID COPY 5,1 Dest");
    let (v, src, dst) = copyuid(&r.status);
    assert_eq!(v, vd);
    let mut pairs: Vec<(u32, u32)> = src.into_iter().zip(dst).collect();
    pairs.sort();
    assert_eq!(pairs.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 5]);
    let mut d: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    d.sort();
    assert_eq!(d, vec![4, 5], "{r:?}");
    // COPY leaves the source alone.
    let r = c.ok("NOOP");
    assert!(r.expunges().is_empty(), "{r:?}");
    // UID COPY of UIDs that don't exist copies nothing, successfully.
    let r = c.ok("UID COPY 100:200 Dest");
    assert!(
        !r.status.contains("COPYUID"),
        "nothing copied, no COPYUID: {r:?}"
    );

    // The copies carry flags (keywords included) and bodies.
    let mut d = Imap::login(server.imap, U, PASSWORD);
    let r = d.ok("EXAMINE Dest");
    assert_eq!(r.count("EXISTS"), Some(5));
    let f = d.fetch("UID FETCH 1:* (FLAGS BODY.PEEK[])");
    let by_uid: Vec<(u32, Vec<String>, Vec<u8>)> = f
        .iter()
        .map(|f| {
            let mut fl = f.flags();
            fl.retain(|x| x != "\\Recent");
            fl.sort();
            (f.uid(), fl, f.must("BODY[]").bytes().to_vec())
        })
        .collect();
    let src_of_dest = |u: u32| -> usize {
        match u {
            1..=3 => u as usize + 1, // from source UIDs 2..4
            _ => pairs.iter().find(|p| p.1 == u).unwrap().0 as usize,
        }
    };
    for (uid, fl, body) in &by_uid {
        let s = src_of_dest(*uid);
        let mut want: Vec<String> = flags[s - 1]
            .split_whitespace()
            .map(str::to_string)
            .collect();
        want.sort();
        assert_eq!(fl, &want, "flags of Dest UID {uid} (from INBOX UID {s})");
        assert_eq!(body, &msgs[s - 1], "body of Dest UID {uid}");
    }

    // MOVE: untagged OK [COPYUID] before the EXPUNGEs (RFC 6851 4.3).
    let r = c.ok("MOVE 1:2 Dest");
    let lines = r.lines();
    let ok_pos = lines
        .iter()
        .position(|l| l.starts_with("* OK [COPYUID "))
        .unwrap_or_else(|| panic!("MOVE without untagged COPYUID: {r:?}"));
    let (v, src, dst) = copyuid(&lines[ok_pos]);
    assert_eq!((v, src, dst), (vd, vec![1, 2], vec![6, 7]), "{r:?}");
    let exp = r.expunges();
    assert_eq!(exp.len(), 2, "{r:?}");
    assert!(
        exp == vec![1, 1] || exp == vec![2, 1],
        "EXPUNGEs of seqs 1 and 2: {exp:?}"
    );
    let first_exp = lines.iter().position(|l| l.ends_with(" EXPUNGE")).unwrap();
    assert!(
        ok_pos < first_exp,
        "COPYUID must come before EXPUNGE: {r:?}"
    );
    assert!(
        !r.status.contains("COPYUID"),
        "COPYUID in the tagged OK of MOVE too: {r:?}"
    );
    // UID MOVE of the last message.
    let r = c.ok("UID MOVE 5 Dest");
    let ok = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* OK [COPYUID "))
        .expect("COPYUID");
    assert_eq!(copyuid(&ok), (vd, vec![5], vec![8]));
    assert_eq!(r.expunges(), vec![3], "{r:?}");
    let f = c.fetch("FETCH 1:* (UID)");
    assert_eq!(f.iter().map(|f| f.uid()).collect::<Vec<_>>(), vec![3, 4]);
    // The other session hears about the arrivals.
    let r = d.ok("NOOP");
    assert_eq!(r.count("EXISTS"), Some(8), "{r:?}");
    let f = d.fetch("UID FETCH 6:8 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    let subj: Vec<String> = f
        .iter()
        .map(|f| {
            String::from_utf8_lossy(f.must("BODY[HEADER.FIELDS (SUBJECT)]").bytes()).into_owned()
        })
        .collect();
    assert_eq!(
        subj,
        vec![
            "Subject: copy 1\r\n\r\n",
            "Subject: copy 2\r\n\r\n",
            "Subject: copy 5\r\n\r\n"
        ]
    );
    assert!(
        has_flag(&f[1].flags(), "\\Seen") && has_flag(&f[2].flags(), "$Home"),
        "{f:?}"
    );

    // Missing destination: NO [TRYCREATE] (RFC 3501 6.4.7), nothing changes.
    for cmd in [
        "COPY 1 Nowhere",
        "MOVE 1 Nowhere",
        "UID COPY 3 Nowhere",
        "UID MOVE 3 Nowhere",
    ] {
        let r = c.cmd(cmd);
        assert!(r.status.starts_with("NO [TRYCREATE]"), "{cmd}: {r:?}");
        assert!(r.expunges().is_empty(), "{cmd}: {r:?}");
    }
    // Sequence numbers that don't exist: not OK.
    let r = c.cmd("COPY 7 Dest");
    assert!(!r.ok(), "COPY of a missing sequence number: {r:?}");
    // COPY to the same mailbox duplicates.
    let r = c.ok("COPY 1 INBOX");
    let (_, s, d2) = copyuid(&r.status);
    assert_eq!((s, d2), (vec![3], vec![6]));
    let r = c.ok("NOOP");
    assert_eq!(r.count("EXISTS"), Some(3), "{r:?}");
    // EXAMINE: MOVE refused, COPY allowed (it does not change the source).
    c.ok("EXAMINE INBOX");
    let r = c.cmd("MOVE 1 Dest");
    assert!(
        r.status.starts_with("NO"),
        "MOVE from a read-only mailbox: {r:?}"
    );
    c.ok("COPY 1 Dest");
    c.ok("LOGOUT");
    d.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 6. FETCH: partial ranges, a large body, \Seen
// ---------------------------------------------------------------------------

const MULTIPART: &str = "From: a@example.test\r\nTo: b@example.test\r\nSubject: two parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\npreamble\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nThe first part, which is long enough to cut.\r\n\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--XYZ--\r\n";

#[test]
fn fetch_partial_large_and_seen() {
    const U: &str = "fetcher@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let body: String = (0..40)
        .map(|i| format!("line {i:02} of the text\r\n"))
        .collect();
    let m1 = simple_message("partial", body.trim_end());
    c.append_ok("INBOX", "", None, &m1);
    c.append_ok("INBOX", "", None, MULTIPART.as_bytes());
    // ~5 MiB, varied bytes in 76-column lines.
    let mut big = b"From: big@example.test\r\nSubject: big\r\n\r\n".to_vec();
    let mut x: u32 = 12345;
    while big.len() < 5 * 1024 * 1024 {
        for _ in 0..76 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            big.push(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(x >> 16) as usize % 64],
            );
        }
        big.extend_from_slice(b"\r\n");
    }
    c.append_ok("INBOX", "", None, &big);
    c.select("INBOX");
    let header_len = m1.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let text1 = &m1[header_len..];

    let f = c.fetch("FETCH 1 (BODY.PEEK[]<0.100> BODY.PEEK[TEXT]<10.20> RFC822.SIZE)");
    assert_eq!(f[0].must("BODY[]<0>").bytes(), &m1[..100]);
    assert_eq!(f[0].must("BODY[TEXT]<10>").bytes(), &text1[10..30]);
    assert_eq!(f[0].must("RFC822.SIZE").num(), m1.len() as u64);
    assert!(
        f[0].get("FLAGS").is_none(),
        "PEEK must not change flags: {f:?}"
    );
    // Ranges reaching past the end are cut; starting past the end gives "".
    let n = m1.len();
    let f = c.fetch(&format!(
        "FETCH 1 (BODY.PEEK[]<{}.100> BODY.PEEK[TEXT]<{}.5> BODY.PEEK[HEADER]<0.10>)",
        n - 7,
        n + 10
    ));
    assert_eq!(
        f[0].must(&format!("BODY[]<{}>", n - 7)).bytes(),
        &m1[n - 7..]
    );
    assert_eq!(f[0].must(&format!("BODY[TEXT]<{}>", n + 10)).bytes(), b"");
    assert_eq!(f[0].must("BODY[HEADER]<0>").bytes(), &m1[..10]);

    // Parts of a multipart, with ranges.
    let m2 = MULTIPART.as_bytes();
    let part1 = b"The first part, which is long enough to cut.\r\n";
    let f = c.fetch("FETCH 2 (BODY.PEEK[1] BODY.PEEK[1]<4.5> BODY.PEEK[2] BODY.PEEK[2]<100.5> BODY.PEEK[3] RFC822.SIZE BODY.PEEK[])");
    assert_eq!(f[0].must("BODY[1]").bytes(), part1);
    assert_eq!(f[0].must("BODY[1]<4>").bytes(), b"first");
    assert_eq!(f[0].must("BODY[2]").bytes(), b"second");
    assert_eq!(f[0].must("BODY[2]<100>").bytes(), b"");
    // A part that doesn't exist: empty (or NIL).
    let p3 = f[0].must("BODY[3]");
    assert!(matches!(p3, V::Nil) || p3.bytes().is_empty(), "{p3:?}");
    assert_eq!(f[0].must("BODY[]").bytes(), m2);
    assert_eq!(f[0].must("RFC822.SIZE").num(), m2.len() as u64);

    // 5 MiB byte-exact, whole and in a window, RFC822.SIZE = literal length.
    let t = Instant::now();
    let f = c.fetch("FETCH 3 (RFC822.SIZE BODY.PEEK[] BODY.PEEK[]<1000000.2000000>)");
    eprintln!(
        "FETCH of a {} byte message took {:?}",
        big.len(),
        t.elapsed()
    );
    assert_bytes_eq(f[0].must("BODY[]").bytes(), &big, "5 MiB BODY[]");
    assert_eq!(f[0].must("RFC822.SIZE").num(), big.len() as u64);
    assert_bytes_eq(
        f[0].must("BODY[]<1000000>").bytes(),
        &big[1_000_000..3_000_000],
        "window",
    );
    // Macros (RFC 3501 6.4.5): ALL = FLAGS INTERNALDATE RFC822.SIZE ENVELOPE;
    // FAST without ENVELOPE; FULL adds BODY.
    let f = c.fetch("FETCH 1 ALL");
    let mut k: Vec<&str> = f[0].items.iter().map(|i| i.0.as_str()).collect();
    k.sort();
    assert_eq!(k, vec!["ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE"]);
    let f = c.fetch("FETCH 1 FAST");
    let mut k: Vec<&str> = f[0].items.iter().map(|i| i.0.as_str()).collect();
    k.sort();
    assert_eq!(k, vec!["FLAGS", "INTERNALDATE", "RFC822.SIZE"]);
    let f = c.fetch("FETCH 2 FULL");
    let mut k: Vec<&str> = f[0].items.iter().map(|i| i.0.as_str()).collect();
    k.sort();
    assert_eq!(
        k,
        vec!["BODY", "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    );
    // HEADER.FIELDS naming no present field: just the blank line.
    let f = c.fetch("FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-Missing)])");
    assert_eq!(
        f[0].must("BODY[HEADER.FIELDS (X-MISSING)]").bytes(),
        b"\r\n"
    );
    // RFC822.HEADER / RFC822.TEXT.
    let f = c.fetch("FETCH 1 (RFC822.HEADER)");
    assert_eq!(f[0].must("RFC822.HEADER").bytes(), &m1[..header_len]);
    assert!(f[0].get("FLAGS").is_none());

    // Nothing is \Seen yet.
    let r = c.ok("SEARCH SEEN");
    assert!(r.search().is_empty(), "{r:?}");
    // BODY[] (not PEEK) sets \Seen, and the FETCH reports it (RFC 3501 6.4.5).
    let f = c.fetch("FETCH 1 (BODY[]<0.10>)");
    assert_eq!(f[0].must("BODY[]<0>").bytes(), &m1[..10]);
    let fl = f[0]
        .get("FLAGS")
        .unwrap_or_else(|| panic!("\\Seen set but FLAGS not sent: {f:?}"));
    assert!(fl.atoms().iter().any(|x| x == "\\Seen"), "{f:?}");
    // Already \Seen: no FLAGS needed any more, and they stay.
    let f = c.fetch("FETCH 1 (BODY[TEXT])");
    assert_eq!(f[0].must("BODY[TEXT]").bytes(), text1);
    // RFC822.TEXT and RFC822 also set \Seen.
    let f = c.fetch("FETCH 2 (RFC822.TEXT)");
    assert_eq!(
        f[0].must("RFC822.TEXT").bytes(),
        &m2[m2.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..]
    );
    assert!(has_flag(&f[0].flags(), "\\Seen"), "{f:?}");
    let r = c.ok("SEARCH SEEN");
    assert_eq!(r.search(), vec![1, 2]);
    // In a read-only (EXAMINE) session BODY[] does not set \Seen.
    c.ok("EXAMINE INBOX");
    let f = c.fetch("FETCH 3 (BODY[]<0.4> FLAGS)");
    assert!(!has_flag(&f[0].flags(), "\\Seen"), "{f:?}");
    c.select("INBOX");
    let f = c.fetch("FETCH 3 (FLAGS)");
    assert!(
        !has_flag(&f[0].flags(), "\\Seen"),
        "EXAMINE set \\Seen: {f:?}"
    );
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 7. ENVELOPE, BODYSTRUCTURE, BODY and part sections of a nested multipart
// ---------------------------------------------------------------------------

const INNER: &str = "From: Carol <carol@example.test>\r\nTo: alice@example.test\r\nSubject: Inner message\r\nDate: Tue, 24 Nov 2026 09:00:00 +0100\r\nMessage-ID: <inner@e2e.test>\r\n\r\nInner body line 1\r\nInner body line 2\r\n";
const PART2_MIME: &str = "Content-Type: application/pdf; name=\"doc.pdf\"\r\nContent-Disposition: attachment; filename=\"doc.pdf\"\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <pdf1@e2e.test>\r\nContent-Description: A document\r\n\r\n";
const ALT_BODY: &str = "--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHello plain\r\n\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello html</p>\r\n\r\n--alt--";

fn nested_message() -> String {
    format!(
        "From: \"Alice Example\" <alice@example.test>\r\n\
         To: Bob <bob@example.test>, carol@example.test\r\n\
         Subject: Nested test\r\n\
         Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <nested-1@e2e.test>\r\n\
         In-Reply-To: <parent@e2e.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
         \r\n\
         This is a preamble.\r\n\
         --outer\r\n\
         Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
         \r\n\
         {ALT_BODY}\r\n\
         --outer\r\n\
         {PART2_MIME}\
         JVBERi0xLjQK\r\n\
         \r\n\
         --outer\r\n\
         Content-Type: message/rfc822\r\n\
         \r\n\
         {INNER}\r\n\
         --outer--\r\n\
         epilogue\r\n"
    )
}

#[test]
fn envelope_and_bodystructure_of_nested_multipart() {
    const U: &str = "structure@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let msg = nested_message();
    c.append_ok("INBOX", "", None, msg.as_bytes());
    c.select("INBOX");

    // RFC 3501 7.4.2. Part bodies end before the CRLF that precedes the next
    // boundary (RFC 2046 5.1.1); body sizes are octets of the encoded body,
    // lines count the text lines. Media types and parameter names are
    // upper-cased as in the RFC examples; values are as written. A missing
    // charset is US-ASCII and a missing encoding 7BIT. Sender and Reply-To
    // default to From.
    let inner_env = "(\"Tue, 24 Nov 2026 09:00:00 +0100\" \"Inner message\" ((\"Carol\" NIL \"carol\" \"example.test\")) ((\"Carol\" NIL \"carol\" \"example.test\")) ((\"Carol\" NIL \"carol\" \"example.test\")) ((NIL NIL \"alice\" \"example.test\")) NIL NIL NIL \"<inner@e2e.test>\")";
    let outer_env = "(\"Wed, 25 Nov 2026 10:00:00 +0000\" \"Nested test\" ((\"Alice Example\" NIL \"alice\" \"example.test\")) ((\"Alice Example\" NIL \"alice\" \"example.test\")) ((\"Alice Example\" NIL \"alice\" \"example.test\")) ((\"Bob\" NIL \"bob\" \"example.test\")(NIL NIL \"carol\" \"example.test\")) NIL NIL \"<parent@e2e.test>\" \"<nested-1@e2e.test>\")";
    let inner_len = INNER.len();
    let inner_lines = INNER.matches("\r\n").count();
    assert_eq!(inner_lines, 8);
    let bodystructure = format!(
        "(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 13 1 NIL NIL NIL NIL)\
         (\"TEXT\" \"HTML\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 19 1 NIL NIL NIL NIL) \
         \"ALTERNATIVE\" (\"BOUNDARY\" \"alt\") NIL NIL NIL)\
         (\"APPLICATION\" \"PDF\" (\"NAME\" \"doc.pdf\") \"<pdf1@e2e.test>\" \"A document\" \"BASE64\" 14 NIL (\"ATTACHMENT\" (\"FILENAME\" \"doc.pdf\")) NIL NIL)\
         (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" {inner_len} {inner_env} \
         (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 38 2 NIL NIL NIL NIL) {inner_lines} NIL NIL NIL NIL) \
         \"MIXED\" (\"BOUNDARY\" \"outer\") NIL NIL NIL)"
    );
    let body = format!(
        "(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 13 1)\
         (\"TEXT\" \"HTML\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 19 1) \"ALTERNATIVE\")\
         (\"APPLICATION\" \"PDF\" (\"NAME\" \"doc.pdf\") \"<pdf1@e2e.test>\" \"A document\" \"BASE64\" 14)\
         (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" {inner_len} {inner_env} \
         (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 38 2) {inner_lines}) \"MIXED\")"
    );
    let r = c.ok("FETCH 1 (ENVELOPE)");
    assert_eq!(r.lines(), vec![format!("* 1 FETCH (ENVELOPE {outer_env})")]);
    let r = c.ok("FETCH 1 (BODYSTRUCTURE)");
    assert_eq!(
        r.lines(),
        vec![format!("* 1 FETCH (BODYSTRUCTURE {bodystructure})")]
    );
    let r = c.ok("FETCH 1 (BODY)");
    assert_eq!(r.lines(), vec![format!("* 1 FETCH (BODY {body})")]);
    // The strings also parse as IMAP data.
    parse_value(bodystructure.as_bytes());
    parse_value(outer_env.as_bytes());

    // Sections (RFC 3501 6.4.5).
    let f = c.fetch(
        "FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.1] BODY.PEEK[1.2] BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[2.MIME] \
         BODY.PEEK[3] BODY.PEEK[3.HEADER] BODY.PEEK[3.TEXT] BODY.PEEK[3.1] BODY.PEEK[3.MIME] \
         BODY.PEEK[3.HEADER.FIELDS (Subject From)] BODY.PEEK[HEADER.FIELDS.NOT (To From Date Message-ID In-Reply-To MIME-Version)])",
    );
    let f = &f[0];
    let s = |k: &str| String::from_utf8_lossy(f.must(k).bytes()).into_owned();
    assert_eq!(s("BODY[1]"), ALT_BODY);
    assert_eq!(s("BODY[1.1]"), "Hello plain\r\n");
    assert_eq!(s("BODY[1.2]"), "<p>Hello html</p>\r\n");
    assert_eq!(
        s("BODY[1.MIME]"),
        "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
    );
    assert_eq!(s("BODY[2]"), "JVBERi0xLjQK\r\n");
    assert_eq!(s("BODY[2.MIME]"), PART2_MIME);
    assert_eq!(s("BODY[3]"), INNER);
    let inner_header_len = INNER.find("\r\n\r\n").unwrap() + 4;
    assert_eq!(s("BODY[3.HEADER]"), &INNER[..inner_header_len]);
    assert_eq!(s("BODY[3.TEXT]"), &INNER[inner_header_len..]);
    assert_eq!(s("BODY[3.1]"), &INNER[inner_header_len..]);
    assert_eq!(s("BODY[3.MIME]"), "Content-Type: message/rfc822\r\n\r\n");
    assert_eq!(
        s("BODY[3.HEADER.FIELDS (SUBJECT FROM)]"),
        "From: Carol <carol@example.test>\r\nSubject: Inner message\r\n\r\n"
    );
    assert_eq!(
        s("BODY[HEADER.FIELDS.NOT (TO FROM DATE MESSAGE-ID IN-REPLY-TO MIME-VERSION)]"),
        "Subject: Nested test\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    );
    // Groups, a display name with a comma, an encoded word left encoded,
    // Reply-To differing from From, and absent fields as NIL (RFC 3501 7.4.2).
    let groups = "From: \"Doe, John\" <john.doe@example.test>\r\n\
                  To: Friends: ann@example.test, \"Bo B\" <bo@example.test>;, solo@example.test\r\n\
                  Cc: undisclosed-recipients:;\r\n\
                  Subject: =?UTF-8?B?SGVsbG8=?=\r\n\
                  Reply-To: <replies@example.test>\r\n\
                  \r\n\
                  body\r\n";
    c.append_ok("INBOX", "", None, groups.as_bytes());
    c.ok("NOOP");
    let r = c.ok("FETCH 2 (ENVELOPE)");
    assert_eq!(
        r.lines(),
        vec!["* 2 FETCH (ENVELOPE (NIL \"=?UTF-8?B?SGVsbG8=?=\" ((\"Doe, John\" NIL \"john.doe\" \"example.test\")) ((\"Doe, John\" NIL \"john.doe\" \"example.test\")) ((NIL NIL \"replies\" \"example.test\")) ((NIL NIL \"Friends\" NIL)(NIL NIL \"ann\" \"example.test\")(\"Bo B\" NIL \"bo\" \"example.test\")(NIL NIL NIL NIL)(NIL NIL \"solo\" \"example.test\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL))".to_string()]
    );
    let r = c.ok("FETCH 2 (BODYSTRUCTURE)");
    assert_eq!(
        r.lines(),
        vec!["* 2 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 6 1 NIL NIL NIL NIL))".to_string()]
    );
    // The whole message is still byte-exact, and nothing got \Seen.
    let f = c.fetch("FETCH 1 (BODY.PEEK[] FLAGS)");
    assert_eq!(f[0].must("BODY[]").bytes(), msg.as_bytes());
    assert!(!has_flag(&f[0].flags(), "\\Seen"));
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 8. SEARCH over 10,000 messages
// ---------------------------------------------------------------------------

const WORDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

/// What message `i` of the search corpus is, and how it was appended.
struct Model {
    i: usize,
    uid: u32,
    seen: bool,
    flagged: bool,
    answered: bool,
    label1: bool,
    deleted: bool,
    from: String,
    subject: String,
    body: String,
    sent_day: u32,
    internal_day: u32,
    size: usize,
}

fn corpus_message(i: usize) -> (Vec<u8>, String, &'static str, u32) {
    let subject_raw = if i % 1000 == 7 {
        format!("=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= report {i}")
    } else {
        format!("Report {i} {}", WORDS[i % 4])
    };
    let mut body = format!("This is message {i}.\r\ntok-{}-end\r\n", i % 100);
    if i % 500 == 3 {
        body.push_str("Gr\u{fc}\u{df}e aus K\u{f6}ln\r\n");
    }
    let sent_day = 1 + (i % 28) as u32;
    let internal_day = 1 + ((i * 5) % 28) as u32;
    let msg = format!(
        "From: Sender {k} <sender{k}@example.test>\r\nTo: <searcher@example.test>\r\nSubject: {subject_raw}\r\nDate: {sent_day} Jan 2020 12:00:00 +0000\r\nMessage-ID: <search-{i}@e2e.test>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}",
        k = i % 7
    );
    let flags: Vec<&str> = [
        (i % 3 == 0, "\\Seen"),
        (i % 5 == 0, "\\Flagged"),
        (i % 13 == 0, "\\Answered"),
        (i % 11 == 0, "$Label1"),
        (i % 97 == 0, "\\Deleted"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, f)| *f)
    .collect();
    let flags: &'static str = Box::leak(flags.join(" ").into_boxed_str());
    let date = format!("{internal_day:02}-Feb-2020 12:00:00 +0000");
    (msg.into_bytes(), date, flags, sent_day)
}

/// `* ESEARCH (TAG "t") [UID] NAME value ...` as (uid, pairs).
#[track_caller]
fn esearch(r: &Resp, tag: &str) -> (bool, Vec<(String, String)>) {
    let l = r.with_prefix("ESEARCH");
    assert_eq!(l.len(), 1, "one ESEARCH response: {r:?}");
    let head = format!("* ESEARCH (TAG \"{tag}\")");
    let rest = l[0]
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("ESEARCH correlator: {:?}", l[0]));
    let mut w: Vec<&str> = rest.split_whitespace().collect();
    let uid = w.first() == Some(&"UID");
    if uid {
        w.remove(0);
    }
    assert!(w.len() % 2 == 0, "{:?}", l[0]);
    (
        uid,
        w.chunks(2)
            .map(|p| (p[0].to_string(), p[1].to_string()))
            .collect(),
    )
}

#[test]
fn search_ten_thousand_messages() {
    const U: &str = "searcher@example.test";
    const N: usize = 10_000;
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let t0 = Instant::now();
    let mut model: Vec<Model> = Vec::with_capacity(N);
    let batch = 250;
    for start in (0..N).step_by(batch) {
        let mut out = Vec::new();
        let mut tags = Vec::new();
        for i in start..(start + batch).min(N) {
            let (msg, date, flags, sent_day) = corpus_message(i);
            let tag = format!("ap{i}");
            out.extend_from_slice(&append_bytes(&tag, "INBOX", flags, Some(&date), &msg));
            let body = String::from_utf8_lossy(
                &msg[msg.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..],
            )
            .into_owned();
            let subject = if i % 1000 == 7 {
                format!("Gr\u{fc}\u{df}e report {i}")
            } else {
                format!("Report {i} {}", WORDS[i % 4])
            };
            model.push(Model {
                i,
                uid: 0,
                seen: flags.contains("\\Seen"),
                flagged: flags.contains("\\Flagged"),
                answered: flags.contains("\\Answered"),
                label1: flags.contains("$Label1"),
                deleted: flags.contains("\\Deleted"),
                from: format!("Sender {k} <sender{k}@example.test>", k = i % 7),
                subject,
                body,
                sent_day,
                internal_day: 1 + ((i * 5) % 28) as u32,
                size: msg.len(),
            });
            tags.push(tag);
        }
        c.send(&out);
        for (k, tag) in tags.iter().enumerate() {
            let r = c.until(tag);
            let (_, uid) = appenduid(&r.status);
            model[start + k].uid = uid;
        }
    }
    let append_time = t0.elapsed();
    eprintln!("APPEND of {N} messages (LITERAL+, pipelined by {batch}) took {append_time:?}");
    for w in model.windows(2) {
        assert!(w[0].uid < w[1].uid, "UIDs ascend in append order");
    }
    let r = c.select("INBOX");
    assert_eq!(r.count("EXISTS"), Some(N as u32));
    // Expunge the \Deleted ones so sequence numbers and UIDs differ, then
    // mark a few others \Deleted.
    let r = c.ok("EXPUNGE");
    let gone = model.iter().filter(|m| m.deleted).count();
    assert_eq!(r.expunges().len(), gone);
    model.retain(|m| !m.deleted);
    let mark: Vec<String> = model
        .iter()
        .filter(|m| m.i % 89 == 0)
        .map(|m| m.uid.to_string())
        .collect();
    c.ok(&format!(
        "UID STORE {} +FLAGS.SILENT (\\Deleted)",
        mark.join(",")
    ));
    for m in model.iter_mut() {
        m.deleted = m.i % 89 == 0;
    }
    let seqs = |f: &dyn Fn(&Model) -> bool| -> Vec<u32> {
        model
            .iter()
            .enumerate()
            .filter(|(_, m)| f(m))
            .map(|(k, _)| k as u32 + 1)
            .collect()
    };
    let uids = |f: &dyn Fn(&Model) -> bool| -> Vec<u32> {
        model.iter().filter(|m| f(m)).map(|m| m.uid).collect()
    };
    let ci = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());

    let check = |c: &mut Imap, cmd: &str, want: Vec<u32>| {
        let t = Instant::now();
        let r = c.ok(cmd);
        let el = t.elapsed();
        let mut got = r.search();
        got.sort_unstable();
        assert_eq!(
            got.len(),
            want.len(),
            "{cmd}: {} hits, want {}",
            got.len(),
            want.len()
        );
        assert_eq!(got, want, "{cmd}");
        eprintln!("{cmd:?}: {} hits in {el:?}", want.len());
    };
    check(&mut c, "SEARCH SEEN", seqs(&|m| m.seen));
    check(
        &mut c,
        "SEARCH UNSEEN FLAGGED",
        seqs(&|m| !m.seen && m.flagged),
    );
    check(&mut c, "SEARCH KEYWORD $Label1", seqs(&|m| m.label1));
    check(
        &mut c,
        "SEARCH UNKEYWORD $Label1 ANSWERED",
        seqs(&|m| !m.label1 && m.answered),
    );
    check(&mut c, "SEARCH DELETED", seqs(&|m| m.deleted));
    check(
        &mut c,
        "SEARCH UNDELETED UNANSWERED UNFLAGGED",
        seqs(&|m| !m.deleted && !m.answered && !m.flagged),
    );
    check(&mut c, "SEARCH KEYWORD $NeverUsed", vec![]);
    check(
        &mut c,
        "UID SEARCH UID 100:200",
        uids(&|m| (100..=200).contains(&m.uid)),
    );
    check(&mut c, "UID SEARCH UID 9990:*", uids(&|m| m.uid >= 9990));
    check(
        &mut c,
        "SEARCH 50:60,9000:*",
        seqs(&|_| true)
            .into_iter()
            .filter(|s| (50..=60).contains(s) || *s >= 9000)
            .collect(),
    );
    check(&mut c, "UID SEARCH 1:5", uids(&|_| true)[..5].to_vec());
    check(
        &mut c,
        "SEARCH FROM sender3",
        seqs(&|m| m.from.contains("sender3")),
    );
    check(
        &mut c,
        "SEARCH FROM \"SENDER 4\"",
        seqs(&|m| ci(&m.from, "sender 4")),
    );
    check(
        &mut c,
        "SEARCH SUBJECT \"report 123\"",
        seqs(&|m| ci(&m.subject, "report 123")),
    );
    check(
        &mut c,
        "SEARCH HEADER Message-ID <search-4321@",
        seqs(&|m| m.i == 4321),
    );
    let t = Instant::now();
    check(
        &mut c,
        "SEARCH BODY tok-42-end",
        seqs(&|m| m.body.contains("tok-42-end")),
    );
    eprintln!(
        "SEARCH BODY over {} messages: {:?}",
        model.len(),
        t.elapsed()
    );
    check(
        &mut c,
        "SEARCH BODY \"message 4321.\"",
        seqs(&|m| m.i == 4321),
    );
    check(
        &mut c,
        "SEARCH TEXT sender6 BODY tok-1-end",
        seqs(&|m| m.i % 7 == 6 && m.body.contains("tok-1-end")),
    );
    check(
        &mut c,
        "SEARCH SINCE 10-Feb-2020 BEFORE 15-Feb-2020",
        seqs(&|m| (10..15).contains(&m.internal_day)),
    );
    check(
        &mut c,
        "SEARCH ON 3-Feb-2020",
        seqs(&|m| m.internal_day == 3),
    );
    check(
        &mut c,
        "SEARCH SENTON 5-Jan-2020",
        seqs(&|m| m.sent_day == 5),
    );
    check(
        &mut c,
        "SEARCH SENTSINCE 27-Jan-2020",
        seqs(&|m| m.sent_day >= 27),
    );
    check(
        &mut c,
        "SEARCH SENTBEFORE 2-Jan-2020 SEEN",
        seqs(&|m| m.sent_day < 2 && m.seen),
    );
    check(
        &mut c,
        "SEARCH OR FLAGGED NOT SEEN",
        seqs(&|m| m.flagged || !m.seen),
    );
    check(
        &mut c,
        "SEARCH NOT (OR SEEN FLAGGED)",
        seqs(&|m| !(m.seen || m.flagged)),
    );
    check(
        &mut c,
        "SEARCH OR (FROM sender1 SEEN) (SUBJECT alpha NOT KEYWORD $Label1)",
        seqs(&|m| {
            (m.from.contains("sender1") && m.seen) || (m.subject.contains("alpha") && !m.label1)
        }),
    );
    check(
        &mut c,
        "SEARCH OR OR ANSWERED DELETED OR FLAGGED KEYWORD $Label1",
        seqs(&|m| m.answered || m.deleted || m.flagged || m.label1),
    );
    let median = {
        let mut s: Vec<usize> = model.iter().map(|m| m.size).collect();
        s.sort_unstable();
        s[s.len() / 2]
    };
    check(
        &mut c,
        &format!("SEARCH LARGER {median}"),
        seqs(&|m| m.size > median),
    );
    check(
        &mut c,
        &format!("SEARCH SMALLER {median}"),
        seqs(&|m| m.size < median),
    );
    // Non-ASCII: CHARSET UTF-8 with literals (8-bit data can't be quoted).
    let grusse = "Gr\u{fc}\u{df}e";
    let r = c.cmd_bytes(
        format!(
            "SEARCH CHARSET UTF-8 SUBJECT {{{}+}}\r\n{grusse}",
            grusse.len()
        )
        .as_bytes(),
    );
    assert!(r.ok(), "{r:?}");
    let mut got = r.search();
    got.sort_unstable();
    assert_eq!(
        got,
        seqs(&|m| m.subject.contains(grusse)),
        "SUBJECT Grüße (encoded word)"
    );
    assert!(!got.is_empty());
    let koeln = "K\u{f6}ln";
    let r = c
        .cmd_bytes(format!("SEARCH CHARSET UTF-8 BODY {{{}+}}\r\n{koeln}", koeln.len()).as_bytes());
    assert!(r.ok(), "{r:?}");
    let mut got = r.search();
    got.sort_unstable();
    assert_eq!(got, seqs(&|m| m.body.contains(koeln)), "BODY Köln (8-bit)");
    assert!(!got.is_empty());
    let r = c.cmd("SEARCH CHARSET X-UNKNOWN-CHARSET SUBJECT x");
    assert!(r.status.starts_with("NO [BADCHARSET"), "{r:?}");

    // ESEARCH (RFC 4731).
    let want = seqs(&|m| m.flagged);
    let r = c.ok("SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED");
    let tag = format!("t{}", c.next);
    let (uid, items) = esearch(&r, &tag);
    assert!(!uid);
    let get = |k: &str| items.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("MIN"), Some(want[0].to_string()));
    assert_eq!(get("MAX"), Some(want.last().unwrap().to_string()));
    assert_eq!(get("COUNT"), Some(want.len().to_string()));
    assert_eq!(expand_set(&get("ALL").unwrap()), want);
    let want = uids(&|m| m.seen && m.label1);
    let r = c.ok("UID SEARCH RETURN (COUNT MIN) SEEN KEYWORD $Label1");
    let (uid, items) = esearch(&r, &format!("t{}", c.next));
    assert!(uid, "UID SEARCH ESEARCH carries UID: {r:?}");
    assert!(
        items.contains(&("MIN".to_string(), want[0].to_string())),
        "{r:?}"
    );
    assert!(
        items.contains(&("COUNT".to_string(), want.len().to_string())),
        "{r:?}"
    );
    assert_eq!(items.len(), 2, "{r:?}");
    // RETURN () means ALL.
    let want = seqs(&|m| m.subject.contains("gamma"));
    let r = c.ok("SEARCH RETURN () SUBJECT gamma");
    let (_, items) = esearch(&r, &format!("t{}", c.next));
    assert_eq!(items.len(), 1, "{r:?}");
    assert_eq!(items[0].0, "ALL");
    assert_eq!(expand_set(&items[0].1), want);
    // No match: MIN/MAX/ALL are omitted, COUNT is 0.
    let r = c.ok("SEARCH RETURN (MIN MAX COUNT ALL) UID 20000:30000");
    let (_, items) = esearch(&r, &format!("t{}", c.next));
    assert_eq!(items, vec![("COUNT".to_string(), "0".to_string())], "{r:?}");
    assert!(
        r.with_prefix("SEARCH").is_empty(),
        "SEARCH and ESEARCH both sent: {r:?}"
    );

    // SEARCHRES (RFC 5182): SAVE, then $ in FETCH, SEARCH and STORE.
    let want = uids(&|m| m.from.contains("sender5") && m.subject.contains("beta"));
    let r = c.ok("UID SEARCH RETURN (SAVE) FROM sender5 SUBJECT beta");
    assert!(
        r.with_prefix("ESEARCH").is_empty() && r.with_prefix("SEARCH").is_empty(),
        "SAVE alone returns nothing: {r:?}"
    );
    let f = c.fetch("UID FETCH $ (UID)");
    let mut got: Vec<u32> = f.iter().map(|f| f.uid()).collect();
    got.sort_unstable();
    assert_eq!(got, want);
    let r = c.ok("UID SEARCH $ SEEN");
    let mut got = r.search();
    got.sort_unstable();
    assert_eq!(
        got,
        uids(&|m| m.from.contains("sender5") && m.subject.contains("beta") && m.seen)
    );
    let r = c.ok("SEARCH RETURN (SAVE MIN) SUBJECT delta FLAGGED");
    let want_seq = seqs(&|m| m.subject.contains("delta") && m.flagged);
    let (_, items) = esearch(&r, &format!("t{}", c.next));
    assert_eq!(items, vec![("MIN".to_string(), want_seq[0].to_string())]);
    let f = c.fetch("FETCH $ (UID)");
    let mut got: Vec<u32> = f.iter().map(|f| f.uid()).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        uids(&|m| m.subject.contains("delta") && m.flagged),
        "$ after a sequence-number SEARCH SAVE"
    );
    // Non-UID STORE on $ touches exactly the saved messages.
    c.ok("STORE $ +FLAGS.SILENT ($Saved)");
    let r = c.ok("UID SEARCH KEYWORD $Saved");
    let mut got = r.search();
    got.sort_unstable();
    assert_eq!(
        got,
        uids(&|m| m.subject.contains("delta") && m.flagged),
        "STORE $"
    );
    // An empty saved result: $ names no message; commands on it succeed and do nothing.
    c.ok("SEARCH RETURN (SAVE) UID 20000:30000");
    for cmd in [
        "FETCH $ (UID)",
        "UID FETCH $ (UID)",
        "STORE $ +FLAGS (\\Seen)",
        "COPY $ INBOX",
    ] {
        let r = c.ok(cmd);
        assert!(r.fetches().is_empty(), "{cmd} on an empty $: {r:?}");
    }
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 9. Mailboxes
// ---------------------------------------------------------------------------

/// `* LIST (attrs) "/" name` (or LSUB) responses as (name, sorted attrs).
#[track_caller]
fn list_of(r: &Resp, kind: &str) -> Vec<(String, Vec<String>)> {
    let p = format!("* {kind} ");
    r.untagged
        .iter()
        .filter(|u| u.starts_with(p.as_bytes()))
        .map(|u| {
            let mut ps = P {
                b: &u[p.len()..],
                i: 0,
            };
            let attrs = ps.value().unwrap();
            let delim = ps.value().unwrap();
            let name = ps.value().unwrap();
            assert_eq!(delim, V::Str(b"/".to_vec()), "delimiter in {:?}", text(u));
            let name = match name {
                V::Atom(a) => a,
                V::Str(s) => String::from_utf8(s).unwrap(),
                other => panic!("mailbox name {other:?}"),
            };
            let mut a = attrs.atoms();
            a.sort();
            (name, a)
        })
        .collect()
}

fn names(l: &[(String, Vec<String>)]) -> Vec<String> {
    l.iter().map(|e| e.0.clone()).collect()
}

fn attrs_of<'a>(l: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
    &l.iter()
        .find(|e| e.0 == name)
        .unwrap_or_else(|| panic!("{name} not listed: {l:?}"))
        .1
}

/// `* STATUS name (K v ...)` as a map.
#[track_caller]
fn status_of(r: &Resp) -> Vec<(String, u64)> {
    let l = &r
        .untagged
        .iter()
        .find(|u| u.starts_with(b"* STATUS "))
        .expect("STATUS response")[9..];
    let mut p = P { b: l, i: 0 };
    let _name = p.value().unwrap();
    let list = p.value().unwrap();
    list.list()
        .chunks(2)
        .map(|kv| match &kv[0] {
            V::Atom(k) => (k.clone(), kv[1].num()),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn get(st: &[(String, u64)], k: &str) -> u64 {
    st.iter()
        .find(|(n, _)| n == k)
        .unwrap_or_else(|| panic!("{k} missing in {st:?}"))
        .1
}

#[test]
fn mailbox_management() {
    const U: &str = "folders@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    let defaults = ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"];

    // The empty pattern asks for the delimiter.
    let r = c.ok("LIST \"\" \"\"");
    assert_eq!(
        r.lines(),
        vec!["* LIST (\\Noselect) \"/\" \"\"".to_string()]
    );
    let r = c.ok("LIST \"\" \"*\"");
    let l = list_of(&r, "LIST");
    let mut n = names(&l);
    n.sort();
    let mut want: Vec<String> = defaults.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(n, want, "{r:?}");
    for (name, use_) in [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ] {
        assert!(
            attrs_of(&l, name).contains(&use_.to_string()),
            "{name}: {l:?}"
        );
        assert!(
            attrs_of(&l, name).contains(&"\\HasNoChildren".to_string()),
            "{name}: {l:?}"
        );
    }
    // LIST (SPECIAL-USE): only the special-use mailboxes (RFC 6154 5.1).
    let r = c.ok("LIST (SPECIAL-USE) \"\" \"*\"");
    let mut n = names(&list_of(&r, "LIST"));
    n.sort();
    assert_eq!(n, vec!["Archive", "Drafts", "Junk", "Sent", "Trash"]);

    // CREATE with hierarchy: superiors are created too (RFC 3501 6.3.3).
    c.ok("CREATE Projects/2026/Q1");
    c.ok("CREATE \"My Folder\"");
    c.ok("CREATE New/"); // a trailing delimiter is not part of the name
    let r = c.ok("LIST \"\" \"*\"");
    let l = list_of(&r, "LIST");
    for name in [
        "Projects",
        "Projects/2026",
        "Projects/2026/Q1",
        "My Folder",
        "New",
    ] {
        assert!(
            names(&l).contains(&name.to_string()),
            "{name} missing: {l:?}"
        );
    }
    assert!(!names(&l).contains(&"New/".to_string()));
    assert!(
        attrs_of(&l, "Projects").contains(&"\\HasChildren".to_string()),
        "{l:?}"
    );
    assert!(
        attrs_of(&l, "Projects/2026").contains(&"\\HasChildren".to_string()),
        "{l:?}"
    );
    assert!(
        attrs_of(&l, "Projects/2026/Q1").contains(&"\\HasNoChildren".to_string()),
        "{l:?}"
    );
    assert!(
        !attrs_of(&l, "Projects").contains(&"\\Noselect".to_string()),
        "created superiors are real mailboxes"
    );
    c.ok("EXAMINE Projects");
    for (cmd, code) in [
        ("CREATE Projects", "ALREADYEXISTS"),
        ("CREATE Projects/", "ALREADYEXISTS"),
        ("CREATE INBOX", "ALREADYEXISTS"),
        ("CREATE inbox", "ALREADYEXISTS"),
    ] {
        let r = c.cmd(cmd);
        assert!(r.status.starts_with("NO"), "{cmd}: {r:?}");
        if r.status.starts_with("NO [") {
            assert_eq!(r.code().as_deref(), Some(code), "{cmd}: {r:?}");
        }
    }
    // "%" does not cross the delimiter.
    let r = c.ok("LIST \"\" \"%\"");
    let mut n = names(&list_of(&r, "LIST"));
    n.sort();
    let mut want: Vec<String> = defaults
        .iter()
        .map(|s| s.to_string())
        .chain(["Projects", "My Folder", "New"].map(String::from))
        .collect();
    want.sort();
    assert_eq!(n, want, "{r:?}");
    let r = c.ok("LIST \"\" \"Projects/%\"");
    assert_eq!(names(&list_of(&r, "LIST")), vec!["Projects/2026"]);
    let r = c.ok("LIST \"Projects/\" \"%\"");
    assert_eq!(
        names(&list_of(&r, "LIST")),
        vec!["Projects/2026"],
        "reference + pattern"
    );
    let r = c.ok("LIST \"\" \"inbox\"");
    assert_eq!(
        names(&list_of(&r, "LIST")),
        vec!["INBOX"],
        "INBOX is case-insensitive"
    );

    // Some mail to count.
    c.append_ok(
        "Projects/2026/Q1",
        "\\Seen",
        None,
        &simple_message("q1", "q1"),
    );
    c.append_ok("INBOX", "", None, &simple_message("in1", "in1"));
    c.append_ok("INBOX", "\\Seen", None, &simple_message("in2", "in2"));
    c.append_ok("Trash", "", None, &simple_message("t1", "t1"));

    // LIST-STATUS (RFC 5819) with SPECIAL-USE returned (RFC 6154).
    let r = c.ok("LIST \"\" \"*\" RETURN (SPECIAL-USE STATUS (MESSAGES UNSEEN))");
    let l = list_of(&r, "LIST");
    assert!(attrs_of(&l, "Trash").contains(&"\\Trash".to_string()));
    let statuses: Vec<String> = r.with_prefix("STATUS");
    assert!(
        statuses.contains(&"* STATUS INBOX (MESSAGES 2 UNSEEN 1)".to_string()),
        "{r:?}"
    );
    assert!(
        statuses.contains(&"* STATUS Trash (MESSAGES 1 UNSEEN 1)".to_string()),
        "{r:?}"
    );
    assert!(
        statuses.contains(&"* STATUS Projects/2026/Q1 (MESSAGES 1 UNSEEN 0)".to_string()),
        "{r:?}"
    );
    assert!(
        statuses.contains(&"* STATUS \"My Folder\" (MESSAGES 0 UNSEEN 0)".to_string()),
        "{r:?}"
    );
    assert_eq!(
        statuses.len(),
        l.len(),
        "one STATUS per selectable mailbox: {r:?}"
    );
    // Each STATUS follows its LIST.
    let lines = r.lines();
    for (k, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("* STATUS ") {
            let name = rest.rsplit_once(" (").unwrap().0.trim_matches('"');
            assert!(
                k > 0
                    && (lines[k - 1].ends_with(&format!(" {name}"))
                        || lines[k - 1].ends_with(&format!(" \"{name}\""))),
                "STATUS {name} not right after its LIST: {lines:?}"
            );
        }
    }

    // STATUS with everything.
    let r = c.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)");
    let st = status_of(&r);
    assert_eq!(
        st.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        vec![
            "MESSAGES",
            "RECENT",
            "UIDNEXT",
            "UIDVALIDITY",
            "UNSEEN",
            "HIGHESTMODSEQ"
        ]
    );
    assert_eq!(get(&st, "MESSAGES"), 2);
    // Nobody has selected INBOX yet: both appended messages are \Recent
    // (RFC 3501 6.3.11 and 2.3.2: APPEND'ed messages are recent for the next session).
    assert_eq!(
        get(&st, "RECENT"),
        2,
        "STATUS RECENT of never-selected new mail: {r:?}"
    );
    assert_eq!(get(&st, "UIDNEXT"), 3);
    assert_eq!(get(&st, "UNSEEN"), 1);
    let validity = get(&st, "UIDVALIDITY");
    let hms = get(&st, "HIGHESTMODSEQ");
    assert!(validity > 0 && hms > 0);
    let r = c.select("INBOX");
    assert_eq!(r.count("RECENT"), Some(2), "{r:?}");
    // Now they are \Recent in this session only.
    let r = c.ok("STATUS INBOX (RECENT)");
    assert_eq!(
        get(&status_of(&r), "RECENT"),
        2,
        "\\Recent in the selecting session: {r:?}"
    );
    let mut other = Imap::login(server.imap, U, PASSWORD);
    let r = other.ok("STATUS INBOX (RECENT MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "RECENT"),
        0,
        "claimed by the other session: {r:?}"
    );
    other.ok("LOGOUT");
    let r = c.cmd("STATUS Nowhere (MESSAGES)");
    assert!(r.status.starts_with("NO"), "{r:?}");

    // SELECT response (RFC 3501 6.3.1): FLAGS, PERMANENTFLAGS with \*, UIDVALIDITY, UIDNEXT, READ-WRITE.
    let r = c.select("INBOX");
    assert!(r.status.starts_with("OK [READ-WRITE]"), "{r:?}");
    let lines = r.lines();
    assert!(lines.iter().any(|l| l.starts_with("* FLAGS (")), "{r:?}");
    let perm = lines
        .iter()
        .find(|l| l.starts_with("* OK [PERMANENTFLAGS ("))
        .unwrap_or_else(|| panic!("{r:?}"));
    assert!(
        perm.contains("\\*") && perm.contains("\\Seen") && perm.contains("\\Deleted"),
        "{perm}"
    );
    assert!(
        lines.contains(&format!("* OK [UIDVALIDITY {validity}] UIDs valid"))
            || lines
                .iter()
                .any(|l| l.starts_with(&format!("* OK [UIDVALIDITY {validity}]"))),
        "{r:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("* OK [UIDNEXT 3]")),
        "{r:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("* OK [UNSEEN 1]")),
        "first unseen is 1: {r:?}"
    );

    // SUBSCRIBE / LSUB / LIST (SUBSCRIBED).
    c.ok("SUBSCRIBE Projects/2026");
    c.ok("SUBSCRIBE INBOX");
    let r = c.ok("LSUB \"\" \"*\"");
    let mut n = names(&list_of(&r, "LSUB"));
    n.sort();
    assert_eq!(n, vec!["INBOX", "Projects/2026"], "{r:?}");
    let r = c.ok("LSUB \"\" \"Proj*\"");
    assert_eq!(names(&list_of(&r, "LSUB")), vec!["Projects/2026"]);
    let r = c.ok("LIST (SUBSCRIBED) \"\" \"*\"");
    let l = list_of(&r, "LIST");
    let mut n = names(&l);
    n.sort();
    assert_eq!(n, vec!["INBOX", "Projects/2026"], "{r:?}");
    assert!(
        attrs_of(&l, "Projects/2026").contains(&"\\Subscribed".to_string()),
        "{l:?}"
    );
    let r = c.ok("LIST \"\" \"*\" RETURN (SUBSCRIBED)");
    let l = list_of(&r, "LIST");
    assert!(
        attrs_of(&l, "INBOX").contains(&"\\Subscribed".to_string()),
        "{l:?}"
    );
    assert!(
        !attrs_of(&l, "Sent").contains(&"\\Subscribed".to_string()),
        "{l:?}"
    );
    // RFC 3501 6.3.9: with "%", a subscribed "Projects/2026" whose parent is
    // not subscribed makes LSUB return "Projects", flagged \Noselect.
    let r = c.ok("LSUB \"\" \"%\"");
    let l = list_of(&r, "LSUB");
    let mut n = names(&l);
    n.sort();
    assert_eq!(
        n,
        vec!["INBOX", "Projects"],
        "LSUB % with a subscribed child only: {r:?}"
    );
    assert!(
        attrs_of(&l, "Projects").contains(&"\\Noselect".to_string()),
        "{r:?}"
    );
    c.ok("UNSUBSCRIBE Projects/2026");
    let r = c.ok("LSUB \"\" \"*\"");
    assert_eq!(names(&list_of(&r, "LSUB")), vec!["INBOX"]);
    // A subscription to a name that doesn't exist (allowed, RFC 3501 6.3.6) is
    // listed by LSUB (\Noselect) and LIST (SUBSCRIBED) (\NonExistent, RFC 5258 3.1).
    let r = c.cmd("SUBSCRIBE Ghost");
    if r.ok() {
        let r = c.ok("LSUB \"\" \"Ghost\"");
        let l = list_of(&r, "LSUB");
        assert_eq!(names(&l), vec!["Ghost"], "{r:?}");
        assert!(
            attrs_of(&l, "Ghost").contains(&"\\Noselect".to_string()),
            "{r:?}"
        );
        let r = c.ok("LIST (SUBSCRIBED) \"\" \"*\"");
        let l = list_of(&r, "LIST");
        let mut n = names(&l);
        n.sort();
        assert_eq!(
            n,
            vec!["Ghost", "INBOX"],
            "LIST (SUBSCRIBED) lists subscriptions, existing or not: {r:?}"
        );
        let a = attrs_of(&l, "Ghost");
        assert!(
            a.contains(&"\\NonExistent".to_string()) && a.contains(&"\\Subscribed".to_string()),
            "{r:?}"
        );
        c.ok("UNSUBSCRIBE Ghost");
    }

    // RENAME: inferiors follow, messages too.
    c.ok("RENAME Projects Work");
    let r = c.ok("LIST \"\" \"*\"");
    let n = names(&list_of(&r, "LIST"));
    for name in ["Work", "Work/2026", "Work/2026/Q1"] {
        assert!(n.contains(&name.to_string()), "{name} after RENAME: {n:?}");
    }
    assert!(!n.iter().any(|x| x.starts_with("Projects")), "{n:?}");
    let r = c.ok("STATUS Work/2026/Q1 (MESSAGES)");
    assert_eq!(get(&status_of(&r), "MESSAGES"), 1);
    for (cmd, what) in [
        ("RENAME Nowhere Else", "missing source"),
        ("RENAME Sent Drafts", "existing target"),
        ("RENAME Sent INBOX", "INBOX target"),
    ] {
        let r = c.cmd(cmd);
        assert!(r.status.starts_with("NO"), "{what}: {r:?}");
    }
    // RENAME INBOX moves its messages to the new name and leaves INBOX empty (RFC 3501 6.3.5).
    let before = c.fetch("FETCH 1:* (BODY.PEEK[] FLAGS)");
    c.ok("UNSELECT");
    c.ok("RENAME INBOX Old-Inbox");
    let r = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "MESSAGES"),
        0,
        "INBOX after RENAME INBOX"
    );
    let r = c.ok("STATUS Old-Inbox (MESSAGES UNSEEN)");
    assert_eq!(get(&status_of(&r), "MESSAGES"), 2);
    assert_eq!(get(&status_of(&r), "UNSEEN"), 1);
    c.select("Old-Inbox");
    let after = c.fetch("FETCH 1:* (BODY.PEEK[])");
    assert_eq!(after.len(), 2);
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a.must("BODY[]"), b.must("BODY[]"));
    }
    let r = c.select("INBOX");
    assert_eq!(r.count("EXISTS"), Some(0));
    c.append_ok("INBOX", "", None, &simple_message("new in inbox", "x"));

    // DELETE.
    c.ok("DELETE Work/2026/Q1");
    let r = c.cmd("DELETE Work/2026/Q1");
    assert!(r.status.starts_with("NO"), "second DELETE: {r:?}");
    let r = c.cmd("DELETE INBOX");
    assert!(r.status.starts_with("NO"), "DELETE INBOX: {r:?}");
    c.ok("DELETE \"My Folder\"");
    let r = c.ok("LIST \"\" \"*\"");
    let n = names(&list_of(&r, "LIST"));
    assert!(
        !n.contains(&"Work/2026/Q1".to_string()) && !n.contains(&"My Folder".to_string()),
        "{n:?}"
    );
    // A new mailbox of a deleted name gets a new UIDVALIDITY and starts at UID 1.
    let r = c.ok("STATUS Trash (UIDVALIDITY)");
    let old_validity = get(&status_of(&r), "UIDVALIDITY");
    c.ok("DELETE Trash");
    c.ok("CREATE Trash");
    let r = c.ok("STATUS Trash (UIDVALIDITY UIDNEXT MESSAGES)");
    let st = status_of(&r);
    assert_ne!(
        get(&st, "UIDVALIDITY"),
        old_validity,
        "UIDVALIDITY reused for a recreated mailbox"
    );
    assert_eq!((get(&st, "UIDNEXT"), get(&st, "MESSAGES")), (1, 0));

    // NAMESPACE, ID, ENABLE.
    let r = c.ok("NAMESPACE");
    assert_eq!(
        r.lines(),
        vec!["* NAMESPACE ((\"\" \"/\")) NIL NIL".to_string()]
    );
    let r = c.ok("ID (\"name\" \"e2e\" \"version\" \"1\")");
    let id = r.with_prefix("ID ");
    assert_eq!(id.len(), 1, "{r:?}");
    let v = parse_value(&id[0].as_bytes()["* ID ".len()..]);
    assert!(matches!(v, V::Nil) || v.list().len() % 2 == 0, "{v:?}");
    c.ok("ID NIL");
    // STATUS ... HIGHESTMODSEQ above already enabled CONDSTORE (RFC 7162
    // 3.1); ENABLED lists only what this command enabled (RFC 5161 3.1).
    let r = c.ok("ENABLE CONDSTORE");
    assert_eq!(r.lines(), vec!["* ENABLED".to_string()]);
    let r = c.ok("ENABLE X-UNKNOWN-EXTENSION");
    assert!(r.lines().iter().all(|l| !l.contains("X-UNKNOWN")), "{r:?}");

    // UNSELECT does not expunge; CLOSE does, silently.
    c.select("Old-Inbox");
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    let r = c.ok("UNSELECT");
    assert!(r.untagged.is_empty(), "{r:?}");
    let r = c.cmd("FETCH 1 FLAGS");
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "FETCH after UNSELECT: {r:?}"
    );
    let r = c.ok("STATUS Old-Inbox (MESSAGES)");
    assert_eq!(get(&status_of(&r), "MESSAGES"), 2, "UNSELECT expunged");
    // EXAMINE is read-only: STORE, EXPUNGE refused; CLOSE doesn't expunge.
    let r = c.ok("EXAMINE Old-Inbox");
    assert!(r.status.starts_with("OK [READ-ONLY]"), "{r:?}");
    let r = c.cmd("STORE 1 +FLAGS (\\Seen)");
    assert!(r.status.starts_with("NO"), "STORE in EXAMINE: {r:?}");
    let r = c.cmd("EXPUNGE");
    assert!(r.status.starts_with("NO"), "EXPUNGE in EXAMINE: {r:?}");
    c.ok("CLOSE");
    let r = c.ok("STATUS Old-Inbox (MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "MESSAGES"),
        2,
        "CLOSE after EXAMINE expunged"
    );
    c.select("Old-Inbox");
    let r = c.ok("CLOSE");
    assert!(r.untagged.is_empty(), "CLOSE must not send EXPUNGE: {r:?}");
    let r = c.ok("STATUS Old-Inbox (MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "MESSAGES"),
        1,
        "CLOSE expunges \\Deleted"
    );
    let r = c.cmd("CLOSE");
    assert!(!r.ok(), "CLOSE with nothing selected: {r:?}");
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 10. CONDSTORE (RFC 7162)
// ---------------------------------------------------------------------------

#[track_caller]
fn highestmodseq(r: &Resp) -> u64 {
    let l = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* OK [HIGHESTMODSEQ "))
        .unwrap_or_else(|| panic!("no HIGHESTMODSEQ: {r:?}"));
    l["* OK [HIGHESTMODSEQ ".len()..]
        .split(']')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn condstore() {
    const U: &str = "modseq@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    for i in 1..=4 {
        c.append_ok("INBOX", "", None, &simple_message(&format!("c{i}"), "x"));
    }
    let r = c.ok("SELECT INBOX (CONDSTORE)");
    let h0 = highestmodseq(&r);
    let st = status_of(&c.ok("STATUS INBOX (HIGHESTMODSEQ)"));
    assert_eq!(get(&st, "HIGHESTMODSEQ"), h0, "STATUS and SELECT agree");
    let f = c.fetch("FETCH 1:* (MODSEQ UID)");
    assert_eq!(f.len(), 4);
    let ms: Vec<u64> = f.iter().map(|f| f.modseq()).collect();
    assert!(ms.iter().all(|m| *m > 0 && *m <= h0), "{ms:?} vs {h0}");
    assert_eq!(
        *ms.iter().max().unwrap(),
        h0,
        "HIGHESTMODSEQ is the largest MODSEQ"
    );

    // STORE reports the new MODSEQ; HIGHESTMODSEQ grows.
    let r = c.ok("STORE 2 +FLAGS (\\Seen)");
    let f = r.fetches();
    assert_eq!(f.len(), 1);
    let m2 = f[0].modseq();
    assert!(m2 > h0, "MODSEQ {m2} after STORE must exceed {h0}");
    let h1 = get(
        &status_of(&c.ok("STATUS INBOX (HIGHESTMODSEQ)")),
        "HIGHESTMODSEQ",
    );
    assert_eq!(h1, m2);
    // A no-op STORE changes nothing.
    let r = c.ok("STORE 2 +FLAGS (\\Seen)");
    for f in r.fetches() {
        assert_eq!(f.modseq(), m2, "unchanged flags, unchanged MODSEQ");
    }
    // CHANGEDSINCE: only what changed after h0.
    let f = c.fetch(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {h0})"));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].seq, f[0].modseq()),
        (2, m2),
        "CHANGEDSINCE includes MODSEQ"
    );
    let f = c.fetch(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m2})"));
    assert!(f.is_empty(), "nothing changed since {m2}: {f:?}");
    // SEARCH MODSEQ (RFC 7162 3.1.5): results plus the highest MODSEQ among them.
    let r = c.ok(&format!("SEARCH MODSEQ {}", h0 + 1));
    let l = r.with_prefix("SEARCH");
    assert_eq!(l, vec![format!("* SEARCH 2 (MODSEQ {m2})")], "{r:?}");

    // UNCHANGEDSINCE: message 2 changed after h0, so it is not modified and
    // is reported in [MODIFIED]; message 3 is stored.
    let r = c.ok(&format!(
        "STORE 2:3 (UNCHANGEDSINCE {h0}) +FLAGS (\\Flagged)"
    ));
    assert_eq!(r.code().as_deref(), Some("MODIFIED 2"), "{r:?}");
    let f = r.fetches();
    assert!(
        f.iter()
            .any(|f| f.seq == 3 && has_flag(&f.flags(), "\\Flagged")),
        "{r:?}"
    );
    let f = c.fetch("FETCH 2:3 (FLAGS MODSEQ)");
    assert!(
        !has_flag(&f[0].flags(), "\\Flagged"),
        "message 2 must be untouched: {f:?}"
    );
    assert!(has_flag(&f[1].flags(), "\\Flagged"));
    let m3 = f[1].modseq();
    assert!(m3 > m2);
    // UID STORE UNCHANGEDSINCE reports UIDs.
    let r = c.ok(&format!(
        "UID STORE 1:4 (UNCHANGEDSINCE {m2}) -FLAGS (\\Seen)"
    ));
    assert_eq!(r.code().as_deref(), Some("MODIFIED 3"), "{r:?}");
    // UNCHANGEDSINCE 0 fails for every message (RFC 7162 3.1.3).
    let r = c.ok("STORE 1 (UNCHANGEDSINCE 0) +FLAGS (\\Answered)");
    assert_eq!(r.code().as_deref(), Some("MODIFIED 1"), "{r:?}");

    // Another session's change arrives with MODSEQ (RFC 7162 3.2: CONDSTORE enabled).
    let mut b = Imap::login(server.imap, U, PASSWORD);
    b.select("INBOX");
    let r = b.ok("STORE 4 +FLAGS (\\Draft)");
    let mb = r.fetches()[0].get("MODSEQ").map(|v| v.list()[0].num());
    assert!(
        mb.is_none(),
        "MODSEQ without CONDSTORE enabled in session B: {r:?}"
    );
    let r = c.ok("NOOP");
    let f = r.fetches();
    assert_eq!(f.len(), 1, "{r:?}");
    assert_eq!(f[0].seq, 4);
    assert!(has_flag(&f[0].flags(), "\\Draft"));
    let m4 = f[0].modseq();
    assert!(m4 > m3);
    // EXPUNGE raises HIGHESTMODSEQ as well.
    let h_before = get(
        &status_of(&c.ok("STATUS INBOX (HIGHESTMODSEQ)")),
        "HIGHESTMODSEQ",
    );
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    let h_after = get(
        &status_of(&c.ok("STATUS INBOX (HIGHESTMODSEQ)")),
        "HIGHESTMODSEQ",
    );
    assert!(
        h_after > h_before,
        "HIGHESTMODSEQ after EXPUNGE: {h_before} -> {h_after}"
    );
    let r = c.ok("SELECT INBOX");
    assert_eq!(highestmodseq(&r), h_after);
    b.ok("LOGOUT");
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 11. Keywords persist
// ---------------------------------------------------------------------------

#[test]
fn keywords_persist_across_restart() {
    const U: &str = "keywords@example.test";
    let mut server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.append_ok("INBOX", "", None, &simple_message("k1", "x"));
    c.append_ok("INBOX", "", None, &simple_message("k2", "y"));
    let r = c.select("INBOX");
    let perm = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* OK [PERMANENTFLAGS ("))
        .expect("PERMANENTFLAGS");
    assert!(perm.contains("\\*"), "new keywords allowed: {perm}");
    let r = c.ok("STORE 1 +FLAGS ($Label1 custom)");
    // New keywords are announced in FLAGS (and PERMANENTFLAGS) first.
    let flags_line = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* FLAGS ("))
        .unwrap_or_else(|| panic!("no FLAGS update: {r:?}"));
    assert!(
        flags_line.contains("$Label1") && flags_line.contains("custom"),
        "{flags_line}"
    );
    let f = r.fetches();
    assert!(
        has_flag(&f[0].flags(), "$Label1") && has_flag(&f[0].flags(), "custom"),
        "{f:?}"
    );
    c.ok("STORE 2 +FLAGS (\\Flagged other-kw)");
    c.ok("STORE 2 -FLAGS (other-kw)");
    server.kill9();
    server.restart();

    let mut c = Imap::login(server.imap, U, PASSWORD);
    let r = c.select("INBOX");
    let flags_line = r
        .lines()
        .into_iter()
        .find(|l| l.starts_with("* FLAGS ("))
        .unwrap();
    assert!(
        flags_line.contains("$Label1") && flags_line.contains("custom"),
        "{flags_line}"
    );
    let f = c.fetch("FETCH 1:2 (FLAGS)");
    let mut f1 = f[0].flags();
    f1.retain(|x| x != "\\Recent");
    f1.sort();
    assert_eq!(f1, vec!["$Label1", "custom"]);
    let mut f2 = f[1].flags();
    f2.retain(|x| x != "\\Recent");
    assert_eq!(f2, vec!["\\Flagged"], "removed keyword stays removed");
    // Keywords are case-insensitive for SEARCH and STORE.
    let r = c.ok("SEARCH KEYWORD CUSTOM");
    assert_eq!(r.search(), vec![1]);
    c.ok("STORE 1 -FLAGS (Custom)");
    let r = c.ok("SEARCH KEYWORD custom");
    assert!(r.search().is_empty());
    c.ok("STORE 2 FLAGS ($Label1)");
    server.terminate();
    server.restart();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.select("INBOX");
    let r = c.ok("SEARCH KEYWORD $Label1");
    assert_eq!(r.search(), vec![1, 2]);
    let f = c.fetch("FETCH 2 (FLAGS)");
    assert!(
        !has_flag(&f[0].flags(), "\\Flagged"),
        "FLAGS replaces: {f:?}"
    );
    c.ok("LOGOUT");
}

// ---------------------------------------------------------------------------
// 12. mbsync (isync) two-way sync
// ---------------------------------------------------------------------------

/// A message as mbsync keeps it, compared in wire form: mbsync stores LF
/// line ends locally and adds an `X-TUID:` header to messages it transfers
/// (its own bookkeeping); undo both.
fn unmbsync(b: &[u8]) -> Vec<u8> {
    let crlf = normalize_line_ends(b);
    let mut out = Vec::with_capacity(crlf.len());
    let mut in_header = true;
    for line in crlf.split_inclusive(|c| *c == b'\n') {
        if in_header && line.starts_with(b"X-TUID: ") {
            continue;
        }
        if line == b"\r\n" {
            in_header = false;
        }
        out.extend_from_slice(line);
    }
    out
}

/// Every file in a Maildir folder's cur/ and new/.
fn maildir_files(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(rd) = std::fs::read_dir(folder.join(sub)) {
            for e in rd.flatten() {
                v.push(e.path());
            }
        }
    }
    v.sort();
    v
}

fn run_mbsync(cfg: &std::path::Path, home: &std::path::Path) -> String {
    let child = std::process::Command::new("mbsync")
        .arg("-c")
        .arg(cfg)
        .arg("-a")
        .env("HOME", home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning mbsync");
    let out = wait_output(child, Duration::from_secs(60));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "mbsync failed ({}):\n{log}",
        out.status
    );
    log
}

#[test]
fn mbsync_two_way() {
    if !on_path("mbsync") {
        eprintln!("NOTE: mbsync (isync) is not installed; skipping the mbsync test");
        return;
    }
    const U: &str = "syncer@example.test";
    let server = Server::options().accounts(&[U]).start();
    let local = server.root().join("maildir");
    std::fs::create_dir_all(&local).unwrap();
    let cfg = server.root().join("mbsyncrc");
    std::fs::write(
        &cfg,
        format!(
            "IMAPAccount ringmail\nHost 127.0.0.1\nPort {port}\nUser {U}\nPass {PASSWORD}\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount ringmail\n\n\
             MaildirStore local\nPath {dir}/\nInbox {dir}/INBOX\nSubFolders Verbatim\n\n\
             Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n",
            port = server.imap.port(),
            dir = local.display()
        ),
    )
    .unwrap();

    // (a) Mail delivered over SMTP reaches the local Maildir.
    let m1 = simple_message("mbsync one", "first synced message");
    let m2 = simple_message("mbsync two", "second synced message");
    smtp_send(server.smtp, "sender@example.test", &[U], &m1);
    smtp_send(server.smtp, "sender@example.test", &[U], &m2);
    let log = run_mbsync(&cfg, server.root());
    let inbox = local.join("INBOX");
    let files = maildir_files(&inbox);
    assert_eq!(
        files.len(),
        2,
        "local INBOX after the first sync: {files:?}\n{log}"
    );
    let mut got: Vec<Vec<u8>> = files
        .iter()
        .map(|p| {
            strip_trace(&unmbsync(&std::fs::read(p).unwrap()))
                .1
                .to_vec()
        })
        .collect();
    got.sort();
    let mut want = vec![m1.clone(), m2.clone()];
    want.sort();
    assert_eq!(
        got, want,
        "synced messages are byte-identical (after the trace headers)"
    );
    // The server's folders were created locally too.
    for f in ["Sent", "Drafts", "Trash", "Junk", "Archive"] {
        assert!(
            local.join(f).join("cur").is_dir(),
            "local {f} missing\n{log}"
        );
    }

    // (b) A message added locally (Sent/cur) is uploaded.
    let sent = simple_message("written locally", "composed offline");
    let host = "e2e";
    std::fs::write(
        local
            .join("Sent/cur")
            .join(format!("1700000000.R1.{host},U=0:2,S")),
        &sent,
    )
    .unwrap();
    // (c) A local flag change: Flagged + Seen on one INBOX message.
    let target = files
        .iter()
        .find(|p| strip_trace(&unmbsync(&std::fs::read(p).unwrap())).1 == &m1[..])
        .unwrap()
        .clone();
    let fname = target.file_name().unwrap().to_string_lossy().into_owned();
    let base = fname.split(":2,").next().unwrap().to_string();
    std::fs::rename(&target, inbox.join("cur").join(format!("{base}:2,FS"))).unwrap();
    let log = run_mbsync(&cfg, server.root());

    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.ok("EXAMINE Sent");
    let f = c.fetch("FETCH 1:* (FLAGS BODY.PEEK[])");
    assert_eq!(f.len(), 1, "server Sent after upload\n{log}");
    assert_eq!(unmbsync(f[0].must("BODY[]").bytes()), sent);
    assert!(has_flag(&f[0].flags(), "\\Seen"), "{f:?}");
    c.select("INBOX");
    let f = c.fetch("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert_eq!(f.len(), 2);
    for x in &f {
        let subj =
            String::from_utf8_lossy(x.must("BODY[HEADER.FIELDS (SUBJECT)]").bytes()).into_owned();
        let fl = x.flags();
        if subj.contains("mbsync one") {
            assert!(
                has_flag(&fl, "\\Flagged") && has_flag(&fl, "\\Seen"),
                "flags after local change: {fl:?}\n{log}"
            );
        } else {
            assert!(!has_flag(&fl, "\\Flagged"), "{fl:?}");
        }
    }

    // (d) A message deleted on the server disappears locally.
    let two = f
        .iter()
        .find(|x| {
            String::from_utf8_lossy(x.must("BODY[HEADER.FIELDS (SUBJECT)]").bytes())
                .contains("mbsync two")
        })
        .unwrap()
        .seq;
    c.ok(&format!("STORE {two} +FLAGS.SILENT (\\Deleted)"));
    c.ok("EXPUNGE");
    c.ok("LOGOUT");
    let log = run_mbsync(&cfg, server.root());
    let files = maildir_files(&inbox);
    assert_eq!(
        files.len(),
        1,
        "local INBOX after the server-side delete: {files:?}\n{log}"
    );
    assert_eq!(
        strip_trace(&unmbsync(&std::fs::read(&files[0]).unwrap())).1,
        &m1[..]
    );
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(":2,FS"), "local flags kept: {name}");
    // A further sync changes nothing.
    run_mbsync(&cfg, server.root());
    assert_eq!(maildir_files(&inbox).len(), 1);
    assert_eq!(maildir_files(&local.join("Sent")).len(), 1);
}

// ---------------------------------------------------------------------------
// 13. Malformed commands, pipelining, robustness
// ---------------------------------------------------------------------------

#[test]
fn malformed_commands_and_pipelining() {
    const U: &str = "robust@example.test";
    let server = Server::options().accounts(&[U]).start();
    let mut c = Imap::login(server.imap, U, PASSWORD);
    c.append_ok("INBOX", "", None, &simple_message("r1", "x"));
    c.append_ok("INBOX", "", None, &simple_message("r2", "y"));
    c.select("INBOX");
    let bad = |c: &mut Imap, raw: &[u8], tag: &str| {
        c.send(raw);
        let r = c.until(tag);
        assert!(
            r.status.starts_with("BAD"),
            "{:?} -> {r:?}",
            String::from_utf8_lossy(raw)
        );
        // In step: a NOOP right after is answered.
        let r = c.ok("NOOP");
        assert!(r.ok());
    };
    bad(&mut c, b"g1 hello world\r\n", "g1");
    bad(&mut c, b"g2 FETCH (1\r\n", "g2");
    bad(&mut c, b"g3 FETCH 1 (FLAGS\r\n", "g3");
    bad(&mut c, b"g4 FETCH 1:x FLAGS\r\n", "g4");
    bad(&mut c, b"g5 FETCH 0 FLAGS\r\n", "g5");
    bad(&mut c, b"g6 FETCH 1 BODY[\r\n", "g6");
    bad(&mut c, b"g7 UID FROB 1\r\n", "g7");
    bad(&mut c, b"g8 SELECT\r\n", "g8");
    bad(&mut c, b"g9 STORE 1 +FLAGS\r\n", "g9");
    bad(&mut c, b"g10 SEARCH FROM\r\n", "g10");
    bad(&mut c, b"g11 SEARCH ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((ALL))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))\r\n", "g11");
    bad(&mut c, b"g12 FETCH 1 \x00\xff\r\n", "g12");
    bad(&mut c, b"g13 STORE 1 +FLAGS (\\Seen\r\n", "g13");
    bad(
        &mut c,
        b"g14 APPEND INBOX (\\Seen) \"99-Xyz-2020 00:00:00 +0000\" {1+}\r\nx\r\n",
        "g14",
    );
    // Sequence numbers past the end are not OK.
    let r = c.cmd("FETCH 3 FLAGS");
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "{r:?}"
    );
    let r = c.cmd("STORE 1:5 +FLAGS (\\Seen)");
    assert!(!r.ok(), "{r:?}");
    // A line without a tag or with nothing on it.
    c.send(b"\r\n");
    let l = c.line();
    assert!(
        l.starts_with("* BAD") || l.starts_with("BAD"),
        "empty line: {l:?}"
    );
    c.ok("NOOP");

    // Literals of the wrong size: the literal swallows what follows, the
    // remains form a bad command line, and the session is in step again.
    c.send(b"w1 APPEND INBOX {3+}\r\nhello\r\n");
    let r = c.until("w1");
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "{r:?}"
    );
    c.ok("NOOP");
    c.send(b"w2 APPEND INBOX {10+}\r\nshort\r\nw3 NOOP\r\n");
    let r = c.until("w2");
    assert!(
        r.status.starts_with("BAD") || r.status.starts_with("NO"),
        "{r:?}"
    );
    c.ok("NOOP");
    let r = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(
        get(&status_of(&r), "MESSAGES"),
        2,
        "no message was stored by a broken APPEND"
    );
    // Over-long line after login.
    let mut long = b"w4 SEARCH SUBJECT ".to_vec();
    long.extend(vec![b'z'; 200 * 1024]);
    long.extend_from_slice(b"\r\n");
    c.send(&long);
    let r = c.until("w4");
    assert!(r.status.starts_with("BAD"), "{r:?}");
    c.ok("NOOP");

    // Pipelining: several tagged commands in one write, answered in order.
    c.send(b"p1 NOOP\r\np2 FETCH 1 (UID)\r\np3 STORE 1 +FLAGS (\\Seen)\r\np4 SEARCH SEEN\r\np5 UID FETCH 1:* (FLAGS)\r\np6 LOGOUT\r\n");
    let mut order = Vec::new();
    loop {
        let r = c.response();
        let l = text(&r);
        if let Some(t) = l.split(' ').next().filter(|t| t.starts_with('p')) {
            assert!(l[t.len()..].starts_with(" OK"), "{l}");
            order.push(t.to_string());
            if t == "p6" {
                break;
            }
        } else if l.starts_with("* SEARCH") {
            assert_eq!(l, "* SEARCH 1");
        }
    }
    assert_eq!(order, ["p1", "p2", "p3", "p4", "p5", "p6"]);
    assert!(c.closed_within(Duration::from_secs(5)));

    // Garbage from a not-logged-in client, including binary.
    let mut g = Imap::connect(server.imap);
    g.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n");
    let _ = g.line();
    g.send(b"x1 NOOP\r\n");
    assert!(g.until("x1").ok());

    // The server is alive and serving.
    assert!(server.is_running());
    let mut d = Imap::login(server.imap, U, PASSWORD);
    let r = d.select("INBOX");
    assert_eq!(r.count("EXISTS"), Some(2));
    d.ok("LOGOUT");
    let _ = fetch_all(server.pop3, U, PASSWORD);
}

// ---------------------------------------------------------------------------
// Python's imaplib as a client
// ---------------------------------------------------------------------------

#[test]
fn imaplib_full_session() {
    const U: &str = "pyclient@example.test";
    let server = Server::options().accounts(&[U]).start();
    run_python(
        "imap_session.py",
        &[
            "127.0.0.1".into(),
            server.smtp.port().to_string(),
            server.imap.port().to_string(),
            U.into(),
            PASSWORD.into(),
        ],
    );
}
