// Shared by the imap_*.rs test files (`include!`d, so each test binary
// gets its own copy): a raw IMAP client that checks exact bytes, response
// parsing, fixtures and small helpers.
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

    /// The command must be refused as malformed (tagged BAD).
    #[track_caller]
    fn bad(&mut self, cmd: &str) -> Resp {
        let r = self.cmd(cmd);
        assert!(r.status.starts_with("BAD"), "{cmd:?} should be BAD: {r:#?}");
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

    /// The value of `item` (any case) in the (single) `* STATUS` response.
    #[track_caller]
    fn status_item(&self, item: &str) -> u64 {
        let n = self.with_prefix("STATUS ").len();
        assert_eq!(n, 1, "expected one STATUS response: {self:#?}");
        status_of(self)
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(item))
            .unwrap_or_else(|| panic!("{item} missing in STATUS: {self:#?}"))
            .1
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
            // A literal8 (RFC 3516) reads like a literal.
            b'~' if self.b.get(self.i + 1) == Some(&b'{') => {
                self.i += 1;
                self.value()
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

fn deliver(server: &Server, to: &str, subject: &str) {
    let msg = simple_message(subject, &format!("body of {subject}"));
    smtp_send(server.smtp, "sender@example.test", &[to], &msg);
}

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

const MULTIPART: &str = "From: a@example.test\r\nTo: b@example.test\r\nSubject: two parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\npreamble\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nThe first part, which is long enough to cut.\r\n\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--XYZ--\r\n";

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
    let mut cmd = std::process::Command::new("mbsync");
    cmd.arg("-c").arg(cfg).arg("-a").env("HOME", home);
    run_tool(cmd, "mbsync")
}
