//! mbox files. Written as mboxrd: each message starts with a line
//! `From SENDER DATE` (DATE in asctime form, UTC), every body line matching
//! `>*From ` gets one more `>`, and an empty line follows the message.
//! Read as mboxrd, which also reads mboxo: a line `From ` starts a message,
//! and one `>` is taken off every line matching `>+From ` (an mboxo writer
//! only quoted `From `, so its files come back right except for lines that
//! started with `>From ` already, which mboxo itself cannot tell apart).
//! Flags travel the way mutt and Dovecot write them: `Status: RO` for a
//! seen message, `X-Status:` with A (answered), F (flagged), T (draft), D
//! (deleted), and `X-Keywords:` with the keywords, space-separated. The
//! export puts these lines first in a message's header, and only the ones
//! that say something, so a message without flags comes out byte for byte.
//! The import reads them and takes them out of the message (they describe
//! the mailbox entry, not the message), so an export imported again gives
//! the same bytes.
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use super::{lf_to_crlf, Item, Source};
use crate::storage::index::flag;

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `Sun Dec  6 16:21:39 2026` (asctime, UTC).
pub fn asctime(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        y
    )
}

/// Parse the asctime date at the end of a `From ` line (`Www Mmm dd hh:mm:ss yyyy`).
pub fn parse_asctime(s: &str) -> Option<i64> {
    let w: Vec<&str> = s.split_ascii_whitespace().collect();
    // The last five words: weekday, month, day, time, year.
    let n = w.len();
    if n < 5 {
        return None;
    }
    let (mon, day, time, year) = (w[n - 4], w[n - 3], w[n - 2], w[n - 1]);
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(mon))? as u32 + 1;
    let d: u32 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|x| x.parse::<i64>());
    let (h, mi, se) = (
        hms.next()?.ok()?,
        hms.next()?.ok()?,
        hms.next().unwrap_or(Ok(0)).ok()?,
    );
    Some(days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// The sender for the `From ` line: the message's Return-Path, else MAILER-DAEMON.
fn sender_of(body: &[u8]) -> String {
    let end = memchr::memmem::find(body, b"\r\n\r\n").unwrap_or(body.len());
    for line in body[..end].split(|b| *b == b'\n') {
        if line.len() > 12 && line[..12].eq_ignore_ascii_case(b"return-path:") {
            let v = String::from_utf8_lossy(&line[12..]);
            let v = v
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .trim();
            if !v.is_empty() && !v.contains(char::is_whitespace) {
                return v.to_string();
            }
        }
    }
    "MAILER-DAEMON".into()
}

/// Append one message to an mbox file (mboxrd quoting, LF line ends), its
/// flags and keywords in status lines first.
pub fn write_message(
    out: &mut impl Write,
    body: &[u8],
    internal_date: i64,
    flags: u32,
    keywords: &[&str],
) -> std::io::Result<()> {
    writeln!(out, "From {} {}", sender_of(body), asctime(internal_date))?;
    // A message that carries such a field itself gets all three of ours in
    // front of it, so the import's first-of-each-name rule reads ours.
    // Only the header is looked at (in the CRLF form the import sees), not
    // a copy of the whole message.
    let head_end = [&b"\n\n"[..], b"\n\r\n"]
        .iter()
        .filter_map(|sep| memchr::memmem::find(body, sep).map(|i| i + 1))
        .min()
        .unwrap_or(body.len());
    let head = if body.starts_with(b"\n") {
        &[][..]
    } else {
        &body[..head_end]
    };
    let crlf = super::lf_to_crlf(head);
    let own = header_fields(&crlf)
        .iter()
        .any(|(_, name)| STATUS_FIELDS.contains(&name.as_str()));
    if flags & flag::SEEN != 0 {
        out.write_all(b"Status: RO\n")?;
    } else if own {
        out.write_all(b"Status: O\n")?;
    }
    let x: String = X_STATUS
        .iter()
        .filter(|(_, bit)| flags & bit != 0)
        .map(|(c, _)| *c)
        .collect();
    if !x.is_empty() || own {
        writeln!(out, "X-Status: {x}")?;
    }
    // A keyword is an IMAP atom (no spaces), so space separates them.
    let kw: Vec<&str> = keywords
        .iter()
        .copied()
        .filter(|k| !k.is_empty() && !k.contains(char::is_whitespace))
        .collect();
    if !kw.is_empty() || own {
        writeln!(out, "X-Keywords: {}", kw.join(" "))?;
    }
    let data = super::crlf_to_lf(body);
    for line in data.split_inclusive(|b| *b == b'\n') {
        let quotes = line.iter().take_while(|b| **b == b'>').count();
        if line[quotes..].starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(line)?;
    }
    if !data.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

/// Reads the messages of one mbox file, one at a time; a message over
/// `max` bytes is skipped as it is read (never held whole).
pub struct Reader {
    input: BufReader<std::fs::File>,
    label: String,
    max: usize,
    /// The `From ` line of the next message, once read.
    next_from: Option<(String, u64)>,
    line_no: u64,
    count: u64,
    done: bool,
}

impl Reader {
    pub fn open(path: &Path, max: usize) -> Result<Reader, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Reader {
            input: BufReader::new(f),
            label: path.display().to_string(),
            max,
            next_from: None,
            line_no: 0,
            count: 0,
            done: false,
        })
    }

    /// One line, at most `limit` bytes of it kept (the rest read and dropped).
    fn line(&mut self, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<bool> {
        buf.clear();
        let mut any = false;
        loop {
            let avail = self.input.fill_buf()?;
            if avail.is_empty() {
                return Ok(any);
            }
            any = true;
            let (take, end) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            let room = limit.saturating_sub(buf.len());
            buf.extend_from_slice(&avail[..take.min(room)]);
            self.input.consume(take);
            if end {
                self.line_no += 1;
                return Ok(true);
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        if self.done {
            return None;
        }
        let mut line = Vec::new();
        // Find the first `From ` line.
        while self.next_from.is_none() {
            match self.line(&mut line, 4096) {
                Ok(true) if line.starts_with(b"From ") => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    self.next_from = Some((text, self.line_no));
                }
                Ok(true) => continue,
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Item::failed(format!("{}: {e}", self.label)));
                }
            }
        }
        let (from, at) = self.next_from.take().expect("set above");
        self.count += 1;
        let label = format!("{}: message {} (line {at})", self.label, self.count);
        let mut body = Vec::new();
        let mut over = false;
        let mut failed = None;
        loop {
            match self.line(&mut line, self.max + 2) {
                Ok(true) if line.starts_with(b"From ") => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    self.next_from = Some((text, self.line_no));
                    break;
                }
                Ok(true) => {
                    let quotes = line.iter().take_while(|b| **b == b'>').count();
                    let start = usize::from(quotes > 0 && line[quotes..].starts_with(b"From "));
                    if !over && body.len() + line.len() <= self.max + 2 {
                        body.extend_from_slice(&line[start..]);
                    } else {
                        over = true;
                        body = Vec::new();
                    }
                }
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Err(e) => {
                    failed = Some(format!("{label}: {e}"));
                    self.done = true;
                    break;
                }
            }
        }
        if let Some(e) = failed {
            return Some(Item::failed(e));
        }
        if over {
            return Some(Item::failed(format!(
                "{label}: over message_size_max ({} bytes)",
                self.max
            )));
        }
        // The empty line before the next `From ` belongs to the format.
        if body.ends_with(b"\r\n\r\n") {
            body.truncate(body.len() - 2);
        } else if body.ends_with(b"\n\n") {
            body.truncate(body.len() - 1);
        }
        let body = lf_to_crlf(&body);
        let date = from.split_once(' ').and_then(|(_, rest)| {
            rest.trim()
                .split_once(' ')
                .and_then(|(_, d)| parse_asctime(d))
        });
        let (flags, keywords, body) = status_of(body);
        Some(Item {
            label,
            uid: 0,
            flags,
            keywords,
            internal_date: date.unwrap_or_else(crate::util::unix_now),
            size: body.len() as u64,
            source: Source::Memory(body),
        })
    }
}

/// `X-Status:` letters.
const X_STATUS: [(char, u32); 4] = [
    ('A', flag::ANSWERED),
    ('F', flag::FLAGGED),
    ('T', flag::DRAFT),
    ('D', flag::DELETED),
];

/// The header fields that carry flags in an mbox, lowercase.
const STATUS_FIELDS: [&str; 3] = ["status", "x-status", "x-keywords"];

/// The header of `body` (CRLF line ends) as fields: each field's byte range
/// (with its continuation lines) and its lowercase name. A message whose
/// first line is empty has an empty header.
fn header_fields(body: &[u8]) -> Vec<(std::ops::Range<usize>, String)> {
    let end = if body.starts_with(b"\r\n") {
        0
    } else {
        memchr::memmem::find(body, b"\r\n\r\n").map_or(body.len(), |i| i + 2)
    };
    let mut fields: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut at = 0;
    for line in body[..end].split_inclusive(|b| *b == b'\n') {
        let range = at..at + line.len();
        at += line.len();
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // A continuation line (RFC 5322 2.2.3) belongs to the field above.
            if let Some(last) = fields.last_mut() {
                last.0.end = range.end;
            }
            continue;
        }
        let name = line
            .iter()
            .position(|b| *b == b':')
            .map(|i| {
                String::from_utf8_lossy(&line[..i])
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        fields.push((range, name));
    }
    fields
}

/// Flags from `Status:` (R: seen) and `X-Status:` (A answered, F flagged,
/// T draft, D deleted), keywords from `X-Keywords:` (separated by white
/// space; a comma ending a keyword is dropped), as mutt and Dovecot write
/// them; and the message without those fields. Only the first field of
/// each name counts and is taken out: our export writes its own first
/// whenever the message carries such a field itself, and the message's own
/// fields stay in it, uninterpreted.
fn status_of(body: Vec<u8>) -> (u32, Vec<String>, Vec<u8>) {
    let mut flags = 0;
    let mut keywords = Vec::new();
    let mut taken: Vec<std::ops::Range<usize>> = Vec::new();
    let mut seen = [false; 3];
    for (range, name) in header_fields(&body) {
        let Some(k) = STATUS_FIELDS.iter().position(|f| *f == name) else {
            continue;
        };
        if std::mem::replace(&mut seen[k], true) {
            continue;
        }
        let text = String::from_utf8_lossy(&body[range.clone()]).into_owned();
        let value = text.split_once(':').map_or("", |(_, v)| v).trim();
        match k {
            0 => {
                if value.contains('R') {
                    flags |= flag::SEEN;
                }
            }
            1 => {
                for (c, bit) in X_STATUS {
                    if value.contains(c) {
                        flags |= bit;
                    }
                }
            }
            _ => keywords.extend(
                value
                    .split_ascii_whitespace()
                    .map(|k| k.trim_end_matches(','))
                    .filter(|k| !k.is_empty())
                    .map(str::to_string),
            ),
        }
        taken.push(range);
    }
    if taken.is_empty() {
        return (flags, keywords, body);
    }
    taken.sort_by_key(|r| r.start);
    let mut kept = Vec::with_capacity(body.len());
    let mut from = 0;
    for r in taken {
        kept.extend_from_slice(&body[from..r.start]);
        from = r.end;
    }
    kept.extend_from_slice(&body[from..]);
    (flags, keywords, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_796_574_099), "Sun Dec  6 16:21:39 2026");
        assert_eq!(
            parse_asctime("Sun Dec  6 16:21:39 2026"),
            Some(1_796_574_099)
        );
        assert_eq!(parse_asctime("Thu Jan  1 00:00:00 1970"), Some(0));
    }

    #[test]
    fn reader_unquotes_and_skips_oversized_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let big = "y".repeat(5000);
        std::fs::write(
            &path,
            format!(
                "From a@b.test Thu Jan  1 00:00:00 1970\nSubject: one\nStatus: RO\nX-Keywords: $Work, other\n\n>From x\n>>From y\n\n\
                 From c@d.test Fri Jan  2 00:00:00 1970\nSubject: big\n\n{big}\n\n\
                 From e@f.test Sat Jan  3 00:00:01 1970\nSubject: three\n\nlast\n"
            ),
        )
        .unwrap();
        let items: Vec<Item> = Reader::open(&path, 1000).unwrap().collect();
        assert_eq!(items.len(), 3);
        match &items[0].source {
            Source::Memory(b) => assert_eq!(b, b"Subject: one\r\n\r\nFrom x\r\n>From y\r\n"),
            _ => panic!("first message not read"),
        }
        assert_eq!(items[0].flags, flag::SEEN);
        assert_eq!(items[0].keywords, ["$Work", "other"]);
        assert_eq!(items[0].internal_date, 0);
        match &items[1].source {
            Source::Failed(why) => assert!(
                why.contains("message 2 (line 9)") && why.contains("over"),
                "{why}"
            ),
            _ => panic!("the oversized message must be refused"),
        }
        match &items[2].source {
            Source::Memory(b) => assert_eq!(b, b"Subject: three\r\n\r\nlast\r\n"),
            _ => panic!("third message not read"),
        }
        assert_eq!(items[2].internal_date, 2 * 86400 + 1);
    }

    #[test]
    fn quoting() {
        let mut out = Vec::new();
        write_message(
            &mut out,
            b"Return-Path: <a@b.test>\r\nS: x\r\n\r\nFrom here\r\n>From there\r\n",
            0,
            0,
            &[],
        )
        .unwrap();
        assert_eq!(
            out,
            b"From a@b.test Thu Jan  1 00:00:00 1970\nReturn-Path: <a@b.test>\nS: x\n\n>From here\n>>From there\n\n"
        );
    }

    #[test]
    fn flags_travel_in_status_lines_and_leave_the_bytes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let bodies: [&[u8]; 6] = [
            // A sender's own status fields: kept as they are, not read.
            b"Subject: a\r\nStatus: RO\r\nX-Status: D\r\n\r\nStatus: in the body stays\r\n",
            b"Subject: b\r\n\r\nplain\r\n",
            b"Subject: c\r\n",
            // An empty header: nothing in the body is a field.
            b"\r\nHello\r\nX-Status: D\r\nStatus: R\r\n",
            // A folded field of the sender's.
            b"Subject: d\r\nX-Keywords: one\r\n two\r\n\r\nx\r\n",
            b"Subject: e\r\n\r\ny\r\n",
        ];
        let cases = [
            (0, vec![]),
            (0, vec![]),
            (flag::ANSWERED | flag::DRAFT, vec![]),
            (0, vec![]),
            (flag::SEEN, vec!["k1"]),
            (
                flag::SEEN | flag::FLAGGED | flag::DELETED,
                vec!["$Label1", "work", "a,b"],
            ),
        ];
        let mut out = Vec::new();
        for (body, (flags, kw)) in bodies.iter().zip(&cases) {
            write_message(&mut out, body, 86_400, *flags, kw).unwrap();
        }
        let text = String::from_utf8_lossy(&out).to_string();
        assert!(
            text.contains("Status: O\nX-Status: \nX-Keywords: \nSubject: a\n"),
            "ours first when the message has its own: {text}"
        );
        assert!(
            text.contains("\nSubject: b\n\nplain\n"),
            "no lines without flags: {text}"
        );
        assert!(
            text.contains("Status: RO\nX-Status: FD\nX-Keywords: $Label1 work a,b\nSubject: e\n"),
            "{text}"
        );
        std::fs::write(&path, &out).unwrap();
        let items: Vec<Item> = Reader::open(&path, 1000).unwrap().collect();
        assert_eq!(items.len(), bodies.len());
        for ((item, (flags, kw)), body) in items.iter().zip(&cases).zip(bodies) {
            match &item.source {
                Source::Memory(b) => assert_eq!(
                    String::from_utf8_lossy(b),
                    String::from_utf8_lossy(body),
                    "byte for byte"
                ),
                _ => panic!("not read"),
            }
            assert_eq!(item.flags, *flags, "{}", String::from_utf8_lossy(body));
            assert_eq!(&item.keywords, kw);
            assert_eq!(item.internal_date, 86_400);
        }
    }

    #[test]
    fn foreign_status_fields_first_of_each_name() {
        let (flags, kw, body) = status_of(
            b"Subject: s\r\nStatus: RO\r\nX-Keywords: $Work, other\r\n  more\r\nStatus: D\r\n\r\nb\r\n"
                .to_vec(),
        );
        assert_eq!(flags, flag::SEEN);
        assert_eq!(kw, ["$Work", "other", "more"]);
        assert_eq!(body, b"Subject: s\r\nStatus: D\r\n\r\nb\r\n");
    }
}
