//! Moving mail in and out of a running server: the client side of
//! `ringmail export`, `ringmail import` and `ringmail backup`, and the
//! Maildir and mbox formats. The server side is `runtime::transfer`; both
//! talk over `DATA/control.sock`.
//!
//! Export stream (server to client, after `export ACCOUNT`):
//!
//! ```text
//! account NAME
//! mailbox UIDVALIDITY UIDNEXT SPECIAL-USE KEYWORDS NAME
//! keyword NAME                                  (KEYWORDS lines, bit order)
//! message UID FLAGS KEYWORD-MASK DATE LEN
//! <LEN bytes: the message exactly as stored>
//! end
//! ```
//!
//! The stream is framed by lengths: `end` (or `error: ...` before any data)
//! is read only where a header line is due, so no body can imitate it, and
//! a stream that stops before `end` is an error.
//!
//! Stored messages normally have CRLF line ends (as IMAP serves them); the
//! files written have LF (as Maildir and mbox on Unix do), and import turns
//! bare LF back into CRLF. So a round trip gives back the stored bytes for a
//! message with CRLF line ends only, ending in CRLF. It does not for one
//! stored with a bare LF (it comes back as CRLF), with CR CR LF (comes back
//! as CRLF), or, through mbox, without a final line end (one is added).
//! Import's duplicate check ([`crate::runtime::transfer::digest`]) treats
//! those line ends as equal, so re-importing an export adds nothing.
pub mod maildir;
pub mod mbox;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::runtime::control::socket_path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Maildir,
    Mbox,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "maildir" => Some(Format::Maildir),
            "mbox" | "mboxrd" | "mboxo" => Some(Format::Mbox),
            _ => None,
        }
    }
}

/// `\r\n` to `\n` (a lone CR stays).
pub fn crlf_to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && data.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// Bare `\n` to `\r\n` (an existing `\r\n` stays).
pub fn lf_to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    for (i, b) in data.iter().enumerate() {
        if *b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(*b);
    }
    out
}

fn connect(data_dir: &Path) -> Result<UnixStream, String> {
    let path = socket_path(data_dir);
    UnixStream::connect(&path).map_err(|e| {
        format!(
            "{}: {e} (is the server running on this data directory?)",
            path.display()
        )
    })
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    r.by_ref()
        .take(64 * 1024)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if let Some(e) = line.strip_prefix("error: ") {
        return Err(e.trim_end().to_string());
    }
    if !line.ends_with('\n') {
        return Err("the server closed the connection early".into());
    }
    line.pop();
    Ok(line)
}

/// A mailbox as exported.
pub struct ExportBox {
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub keywords: Vec<String>,
}

pub struct ExportMessage {
    pub uid: u32,
    pub flags: u32,
    pub keywords: u64,
    pub internal_date: i64,
}

/// Accounts with stored mail on the server.
pub fn accounts(data_dir: &Path) -> Result<Vec<String>, String> {
    let mut c = connect(data_dir)?;
    c.write_all(b"accounts\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    c.read_to_string(&mut text).map_err(|e| e.to_string())?;
    if let Some(e) = text.strip_prefix("error: ") {
        return Err(e.trim_end().into());
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// Export one account into `out/ACCOUNT` (a Maildir++ tree, or a directory
/// of mbox files). Returns (mailboxes, messages).
pub fn export(
    data_dir: &Path,
    account: &str,
    format: Format,
    out: &Path,
) -> Result<(usize, usize), String> {
    let mut c = connect(data_dir)?;
    c.write_all(format!("export {account}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    export_from(BufReader::with_capacity(256 * 1024, c), format, out)
}

/// Write the export stream read from `r` under `out`. The stream is
/// framed by lengths: a header line (or `end`, or `error: ...`) is looked
/// for only where one is due, never inside a body, and a stream that stops
/// before `end` (even at a frame boundary) is an error.
fn export_from(mut r: impl BufRead, format: Format, out: &Path) -> Result<(usize, usize), String> {
    let first = read_line(&mut r)?;
    let name = first
        .strip_prefix("account ")
        .ok_or_else(|| format!("unexpected answer {first:?}"))?;
    if name.contains('/') || name.starts_with('.') {
        return Err(format!("unsafe account name {name:?}"));
    }
    let root = out.join(name);
    // Into a new place only: an older export there would leave files
    // whose flags have changed since beside the new ones.
    if std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!("{} exists and is not empty", root.display()));
    }
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let io = |e: std::io::Error| e.to_string();
    let mut md = maildir::Writer::new(&root);
    let mut mb: Option<std::io::BufWriter<std::fs::File>> = None;
    let mut kw_names: Vec<String> = Vec::new();
    let (mut boxes, mut messages) = (0, 0);
    let mut open_box = false;
    loop {
        let line = read_line(&mut r)?;
        if line == "end" {
            break;
        }
        let (kind, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match kind {
            "mailbox" => {
                if open_box && format == Format::Maildir {
                    md.end().map_err(io)?;
                }
                if let Some(mut f) = mb.take() {
                    f.flush().map_err(io)?;
                }
                let w: Vec<&str> = rest.splitn(5, ' ').collect();
                let [v, n, _su, k, name] = w[..] else {
                    return Err(format!("bad mailbox line {line:?}"));
                };
                let num = |s: &str| s.parse::<u32>().map_err(|_| format!("bad line {line:?}"));
                let count = num(k)? as usize;
                kw_names.clear();
                for _ in 0..count.min(64) {
                    let l = read_line(&mut r)?;
                    kw_names.push(l.strip_prefix("keyword ").unwrap_or("").to_string());
                }
                let b = ExportBox {
                    name: name.to_string(),
                    uidvalidity: num(v)?,
                    uidnext: num(n)?,
                    keywords: kw_names.clone(),
                };
                match format {
                    Format::Maildir => md.begin(&b).map_err(io)?,
                    Format::Mbox => {
                        let file = if b.name.eq_ignore_ascii_case("INBOX") {
                            "INBOX".to_string()
                        } else {
                            maildir::folder_of(&b.name)
                        };
                        let path = root.join(file);
                        mb = Some(std::io::BufWriter::new(
                            std::fs::File::create(&path)
                                .map_err(|e| format!("{}: {e}", path.display()))?,
                        ));
                    }
                }
                open_box = true;
                boxes += 1;
            }
            "message" => {
                let n: Vec<i64> = rest
                    .split(' ')
                    .map(|w| w.parse::<i64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("bad message line {line:?}"))?;
                let [uid, flags, keywords, date, len] = n[..] else {
                    return Err(format!("bad message line {line:?}"));
                };
                let len = usize::try_from(len).map_err(|_| "bad length")?;
                if len > crate::limits::MESSAGE_SIZE_MAX.max(1 << 30) {
                    return Err(format!("message length {len} out of range"));
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body)
                    .map_err(|e| format!("the export stopped inside a message: {e}"))?;
                let m = ExportMessage {
                    uid: uid as u32,
                    flags: flags as u32,
                    keywords: keywords as u64,
                    internal_date: date,
                };
                match format {
                    Format::Maildir => md.message(&m, &body).map_err(io)?,
                    Format::Mbox => {
                        let f = mb.as_mut().ok_or("message before any mailbox")?;
                        let names: Vec<&str> = (0..kw_names.len().min(64))
                            .filter(|i| m.keywords & (1u64 << i) != 0)
                            .map(|i| kw_names[i].as_str())
                            .collect();
                        mbox::write_message(f, &body, date, m.flags, &names).map_err(io)?;
                    }
                }
                messages += 1;
            }
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    if open_box && format == Format::Maildir {
        md.end().map_err(io)?;
    }
    if let Some(mut f) = mb.take() {
        f.flush().map_err(io)?;
    }
    Ok((boxes, messages))
}

/// Where a message to import comes from.
pub enum Source {
    File(PathBuf),
    Memory(Vec<u8>),
    /// Could not be read; the text says why.
    Failed(String),
}

/// A message to import.
pub struct Item {
    /// For reports: the file (and place in it).
    pub label: String,
    pub uid: u32,
    pub flags: u32,
    pub keywords: Vec<String>,
    pub internal_date: i64,
    /// Size as stored in the source (before line-end conversion).
    pub size: u64,
    pub source: Source,
}

impl Item {
    fn failed(why: String) -> Item {
        Item {
            label: String::new(),
            uid: 0,
            flags: 0,
            keywords: Vec::new(),
            internal_date: 0,
            size: 0,
            source: Source::Failed(why),
        }
    }
}

/// A mailbox to import.
pub struct SourceBox {
    pub name: String,
    /// From a dovecot-uidlist; 0 if none.
    pub uidvalidity: u32,
    pub items: Vec<Item>,
}

/// Totals of an import.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub added: u64,
    pub present: u64,
    pub refused: u64,
    pub mailboxes_created: Vec<String>,
    pub uids_kept: Vec<String>,
    pub uids_new: Vec<String>,
}

enum Sent {
    Mailbox(String),
    Message(String),
}

/// Import `src` into `account` of the running server. Messages that
/// cannot be read or are too large are reported by name and skipped.
pub fn import(
    data_dir: &Path,
    format: Format,
    src: &Path,
    account: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<Summary, String> {
    let conn = connect(data_dir)?;
    let io = |e: std::io::Error| e.to_string();
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, conn.try_clone().map_err(io)?);
    w.write_all(format!("import {account}\n").as_bytes())
        .map_err(io)?;
    w.flush().map_err(io)?;
    let mut r = BufReader::new(conn);
    let ready = read_line(&mut r)?;
    let max: usize = ready
        .strip_prefix("ready ")
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("unexpected answer {ready:?}"))?;
    // Answers are read on a second thread, so that neither side can block
    // the other with a full socket buffer.
    let (tx, rx) = std::sync::mpsc::channel::<Sent>();
    let (ptx, prx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || -> Result<Summary, String> {
        let mut s = Summary::default();
        let mut pending: VecDeque<Sent> = VecDeque::new();
        loop {
            let line = read_line(&mut r)?;
            if line == "done" {
                return Ok(s);
            }
            let sent = match pending.pop_front() {
                Some(x) => x,
                None => rx.recv().map_err(|_| "answer without a request")?,
            };
            while let Ok(x) = rx.try_recv() {
                pending.push_back(x);
            }
            match sent {
                Sent::Mailbox(name) => {
                    if let Some(rest) = line.strip_prefix("refused ") {
                        let _ = ptx.send(format!("mailbox {name} refused: {rest}"));
                        continue;
                    }
                    if line.contains(" created ") {
                        s.mailboxes_created.push(name.clone());
                    }
                    if line.ends_with(" keep-uids") {
                        s.uids_kept.push(name);
                    } else {
                        s.uids_new.push(name);
                    }
                }
                Sent::Message(label) => {
                    if line.starts_with("added ") {
                        s.added += 1;
                    } else if line == "present" {
                        s.present += 1;
                    } else {
                        s.refused += 1;
                        let why = line.strip_prefix("refused ").unwrap_or(&line);
                        let _ = ptx.send(format!("refused {label}: {why}"));
                    }
                    let n = s.added + s.present + s.refused;
                    if n % 500 == 0 {
                        let _ = ptx.send(format!(
                            "progress: {n} messages ({} added, {} already present, {} refused)",
                            s.added, s.present, s.refused
                        ));
                    }
                }
            }
        }
    });
    let boxes: Vec<(String, u32, Box<dyn Iterator<Item = Item>>)> = match format {
        Format::Maildir => maildir::read_tree(src)?
            .into_iter()
            .map(|b| {
                let it: Box<dyn Iterator<Item = Item>> = Box::new(b.items.into_iter());
                (b.name, b.uidvalidity, it)
            })
            .collect(),
        Format::Mbox => mbox_sources(src, max)?,
    };
    let mut local_refused = 0u64;
    let mut result = Ok(());
    'outer: for (name, uidvalidity, items) in boxes {
        if name.chars().any(char::is_control) {
            local_refused += 1;
            progress(&format!(
                "refused mailbox {name:?}: control characters in its name"
            ));
            continue;
        }
        let line = format!("mailbox {uidvalidity} {name}\n");
        if w.write_all(line.as_bytes()).is_err() {
            break;
        }
        let _ = tx.send(Sent::Mailbox(name));
        for item in items {
            while let Ok(p) = prx.try_recv() {
                progress(&p);
            }
            let body = match load(&item, max) {
                Ok(b) => b,
                Err(why) => {
                    local_refused += 1;
                    progress(&format!("refused {why}"));
                    continue;
                }
            };
            let mut frame = format!(
                "message {} {} {} {}",
                item.uid,
                item.flags,
                item.internal_date,
                body.len()
            );
            for k in &item.keywords {
                if !k.is_empty() && k.bytes().all(|b| b > b' ' && b < 0x7f) {
                    frame.push(' ');
                    frame.push_str(k);
                }
            }
            frame.push('\n');
            if let Err(e) = w
                .write_all(frame.as_bytes())
                .and_then(|()| w.write_all(&body))
            {
                result = Err(e.to_string());
                break 'outer;
            }
            let _ = tx.send(Sent::Message(item.label));
        }
    }
    if result.is_ok() {
        result = w.write_all(b"end\n").and_then(|()| w.flush()).map_err(io);
    }
    drop(tx);
    let summary = reader.join().map_err(|_| "answer thread failed")?;
    while let Ok(p) = prx.try_recv() {
        progress(&p);
    }
    let mut s = summary?;
    result?;
    s.refused += local_refused;
    Ok(s)
}

/// The bytes to send for one item, or why not (named by file).
fn load(item: &Item, max: usize) -> Result<Vec<u8>, String> {
    let body = match &item.source {
        Source::Failed(why) => return Err(why.clone()),
        Source::Memory(b) => b.clone(),
        Source::File(path) => {
            // Checked before reading: a file over the limit is never loaded.
            if item.size > max as u64 {
                return Err(format!(
                    "{}: {} bytes, over message_size_max ({max})",
                    item.label, item.size
                ));
            }
            let mut data = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(max as u64 + 1).read_to_end(&mut data))
                .map_err(|e| format!("{}: {e}", item.label))?;
            lf_to_crlf(&data)
        }
    };
    if body.len() > max {
        return Err(format!(
            "{}: {} bytes, over message_size_max ({max})",
            item.label,
            body.len()
        ));
    }
    check_message(&body).map_err(|why| format!("{}: {why}", item.label))?;
    Ok(body)
}

/// The least a file must be to pass for a message: not empty, no NUL
/// (RFC 5322 2.3 allows none), a header section that starts with a field
/// (RFC 5322 2.2: name, colon).
fn check_message(body: &[u8]) -> Result<(), &'static str> {
    if body.is_empty() {
        return Err("empty file");
    }
    if memchr::memchr(0, body).is_some() {
        return Err("not a message (contains NUL octets)");
    }
    let first = body.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let colon = memchr::memchr(b':', first).ok_or("not a message (no header field first)")?;
    if colon == 0 || !first[..colon].iter().all(|b| (33..=126).contains(b)) {
        return Err("not a message (bad header field name)");
    }
    Ok(())
}

type Boxes = Vec<(String, u32, Box<dyn Iterator<Item = Item>>)>;

/// An mbox file is imported into INBOX; a directory of mbox files gives one
/// mailbox per file (named as `export` writes them).
fn mbox_sources(src: &Path, max: usize) -> Result<Boxes, String> {
    let mut out: Boxes = Vec::new();
    if src.is_file() {
        out.push(("INBOX".into(), 0, Box::new(mbox::Reader::open(src, max)?)));
        return Ok(out);
    }
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(src)
        .map_err(|e| format!("{}: {e}", src.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            (!n.starts_with('.')).then(|| (n, e.path()))
        })
        .collect();
    files.sort_by_key(|(n, _)| (!n.eq_ignore_ascii_case("INBOX"), n.clone()));
    for (n, path) in files {
        let name = if n.eq_ignore_ascii_case("INBOX") {
            "INBOX".to_string()
        } else {
            maildir::name_of(n.strip_suffix(".mbox").unwrap_or(&n))
        };
        out.push((name, 0, Box::new(mbox::Reader::open(&path, max)?)));
    }
    Ok(out)
}

/// `backup DIR` on the running server; returns its report.
pub fn backup(data_dir: &Path, dir: &Path) -> Result<String, String> {
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| e.to_string())?
            .join(dir)
    };
    let text = dir.to_str().ok_or("the backup path is not UTF-8")?;
    if text.contains(char::is_whitespace) {
        return Err("the backup path may not contain white space".into());
    }
    crate::runtime::control::request(data_dir, &format!("backup {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends() {
        assert_eq!(crlf_to_lf(b"a\r\nb\rc\r\n"), b"a\nb\rc\n");
        assert_eq!(lf_to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(
            lf_to_crlf(&crlf_to_lf(b"x\r\n\r\ny\r\n")),
            b"x\r\n\r\ny\r\n"
        );
    }

    /// An export stream of one message whose body looks like an error and
    /// an end marker, then `end`.
    fn stream() -> Vec<u8> {
        let body = b"Subject: x\r\n\r\nerror: error: \r\nend\n";
        let mut s = b"account a@b.test\nmailbox 7 3 0 0 INBOX\n".to_vec();
        s.extend(format!("message 2 0 0 1700000000 {}\n", body.len()).bytes());
        s.extend_from_slice(body);
        s.extend_from_slice(b"end\n");
        s
    }

    #[test]
    fn export_stream_framed_by_length_and_cut_detected() {
        let full = stream();
        let dir = tempfile::tempdir().unwrap();
        let got = export_from(&full[..], Format::Maildir, dir.path()).unwrap();
        assert_eq!(got, (1, 1));
        let out = tempfile::tempdir().unwrap();
        assert_eq!(
            export_from(&full[..], Format::Mbox, out.path()).unwrap(),
            (1, 1)
        );
        // Cut anywhere before the final `end` line: an error, never a
        // short export taken for a whole one.
        for cut in 0..full.len() {
            let dir = tempfile::tempdir().unwrap();
            assert!(
                export_from(&full[..cut], Format::Maildir, dir.path()).is_err(),
                "cut at {cut} accepted"
            );
        }
    }

    #[test]
    fn messages_checked() {
        assert!(check_message(b"Subject: x\r\n\r\nhi").is_ok());
        assert!(check_message(b"").is_err());
        assert!(check_message(b"\x00\x01garbage").is_err());
        assert!(check_message(b"no header here\n").is_err());
    }
}
