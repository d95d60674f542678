//! Maildir++ as Dovecot lays it out: INBOX is the root's `cur/`, `new/`,
//! `tmp/`; a folder `A/B` is the directory `.A.B` beside them. A file name
//! ends in `:2,` and the info letters in ASCII order: the flags D (draft),
//! F (flagged), P (passed), R (replied), S (seen), T (trashed), then one
//! lowercase letter per keyword, `a` being keyword 0 of the folder's
//! `dovecot-keywords` (lines `0 name`). `dovecot-uidlist` (version 3) holds
//! UIDVALIDITY and the next UID in its header `3 V<validity> N<next>` and
//! one line `<uid> :<file name before ':2,'>` per message. A file's mtime is
//! the message's internal date.
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{crlf_to_lf, ExportBox, ExportMessage, Item, SourceBox};
use crate::storage::index::flag;

/// Flag letters, in the order they must appear.
const LETTERS: [(char, u32); 5] = [
    ('D', flag::DRAFT),
    ('F', flag::FLAGGED),
    ('R', flag::ANSWERED),
    ('S', flag::SEEN),
    ('T', flag::DELETED),
];
/// Keywords a file name can carry (a..z).
const KEYWORD_LETTERS: usize = 26;

/// A mailbox name as a Maildir++ folder suffix: `/` becomes `.`; a `.`
/// or `%` inside a name is written `%2E`/`%25` (Maildir++ has no escape of
/// its own for the separator).
pub fn folder_of(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '/' => out.push('.'),
            '.' => out.push_str("%2E"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`folder_of`].
pub fn name_of(folder: &str) -> String {
    folder
        .replace('.', "/")
        .replace("%2E", ".")
        .replace("%2e", ".")
        .replace("%25", "%")
}

fn dir_of(root: &Path, name: &str) -> PathBuf {
    if name.eq_ignore_ascii_case("INBOX") {
        root.to_path_buf()
    } else {
        root.join(format!(".{}", folder_of(name)))
    }
}

/// Writes one account's Maildir++ tree.
pub struct Writer {
    root: PathBuf,
    dir: PathBuf,
    uidlist: String,
    keywords: Vec<String>,
    uidvalidity: u32,
    uidnext: u32,
}

impl Writer {
    pub fn new(root: &Path) -> Writer {
        Writer {
            root: root.to_path_buf(),
            dir: root.to_path_buf(),
            uidlist: String::new(),
            keywords: Vec::new(),
            uidvalidity: 0,
            uidnext: 1,
        }
    }

    pub fn begin(&mut self, b: &ExportBox) -> std::io::Result<()> {
        self.dir = dir_of(&self.root, &b.name);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(self.dir.join(sub))?;
        }
        if self.dir != self.root {
            std::fs::File::create(self.dir.join("maildirfolder"))?;
        }
        self.uidlist.clear();
        self.keywords = b.keywords.clone();
        self.uidvalidity = b.uidvalidity;
        self.uidnext = b.uidnext;
        Ok(())
    }

    pub fn message(&mut self, m: &ExportMessage, body: &[u8]) -> std::io::Result<()> {
        let data = crlf_to_lf(body);
        let base = format!(
            "{}.M{}V{}.ringmail,S={}",
            m.internal_date,
            m.uid,
            self.uidvalidity,
            data.len()
        );
        let mut info = String::from(":2,");
        for (c, bit) in LETTERS {
            if m.flags & bit != 0 {
                info.push(c);
            }
        }
        for (i, k) in self.keywords.iter().enumerate().take(KEYWORD_LETTERS) {
            if !k.is_empty() && m.keywords & (1 << i) != 0 {
                info.push((b'a' + i as u8) as char);
            }
        }
        // Maildir delivery: write in tmp/, then rename into place.
        let tmp = self.dir.join("tmp").join(&base);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        let when = if m.internal_date >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(m.internal_date as u64)
        } else {
            SystemTime::UNIX_EPOCH
        };
        f.set_modified(when)?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join("cur").join(format!("{base}{info}")))?;
        self.uidlist.push_str(&format!("{} :{base}\n", m.uid));
        Ok(())
    }

    pub fn end(&mut self) -> std::io::Result<()> {
        let mut list = format!("3 V{} N{}\n", self.uidvalidity, self.uidnext);
        list.push_str(&self.uidlist);
        std::fs::write(self.dir.join("dovecot-uidlist"), list)?;
        let mut kw = String::new();
        for (i, k) in self.keywords.iter().enumerate().take(KEYWORD_LETTERS) {
            if !k.is_empty() {
                kw.push_str(&format!("{i} {k}\n"));
            }
        }
        if !kw.is_empty() {
            std::fs::write(self.dir.join("dovecot-keywords"), kw)?;
        }
        Ok(())
    }
}

/// The mailboxes of a Maildir++ tree (or one plain Maildir), INBOX first.
pub fn read_tree(root: &Path) -> Result<Vec<SourceBox>, String> {
    let is_maildir = |d: &Path| d.join("cur").is_dir() || d.join("new").is_dir();
    let mut out = Vec::new();
    if is_maildir(root) {
        out.push(read_box(root, "INBOX")?);
    }
    let mut folders: Vec<(String, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let f = n.strip_prefix('.')?;
            (!f.is_empty() && f != "." && is_maildir(&e.path())).then(|| (name_of(f), e.path()))
        })
        .collect();
    folders.sort();
    for (name, dir) in folders {
        out.push(read_box(&dir, &name)?);
    }
    if out.is_empty() {
        return Err(format!(
            "{}: no Maildir here (no cur/ or new/)",
            root.display()
        ));
    }
    Ok(out)
}

fn read_box(dir: &Path, name: &str) -> Result<SourceBox, String> {
    // dovecot-keywords: "<index> <name>" lines.
    let mut letters: HashMap<char, String> = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("dovecot-keywords")) {
        for line in text.lines() {
            if let Some((i, k)) = line.split_once(' ') {
                if let Ok(i) = i.trim().parse::<u8>() {
                    if usize::from(i) < KEYWORD_LETTERS && !k.trim().is_empty() {
                        letters.insert((b'a' + i) as char, k.trim().to_string());
                    }
                }
            }
        }
    }
    // dovecot-uidlist: version 3 "3 V<validity> N<next> ..." then
    // "<uid> [fields] :<name>"; version 1 "1 <validity> <next>" then "<uid> <name>".
    let mut uidvalidity = 0;
    let mut uids: HashMap<String, u32> = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("dovecot-uidlist")) {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or("");
        let mut h = header.split_ascii_whitespace();
        let version = h.next().unwrap_or("");
        if version == "1" {
            uidvalidity = h.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else {
            for f in h {
                if let Some(v) = f.strip_prefix('V') {
                    uidvalidity = v.parse().unwrap_or(0);
                }
            }
        }
        for line in lines {
            let (uid, file) = if version == "1" {
                match line.split_once(' ') {
                    Some((u, f)) => (u, f),
                    None => continue,
                }
            } else {
                match (line.split_once(' '), line.split_once(" :")) {
                    (Some((u, _)), Some((_, f))) => (u, f),
                    _ => continue,
                }
            };
            if let Ok(uid) = uid.parse::<u32>() {
                uids.insert(base_of(file.trim()).to_string(), uid);
            }
        }
    }
    let mut items = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let Some(file) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if file.starts_with('.') {
                continue;
            }
            let path = e.path();
            let meta = e.metadata().ok();
            let date = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            let mut flags = 0;
            let mut keywords = Vec::new();
            if let Some((_, info)) = file.split_once(":2,") {
                for c in info.chars() {
                    if let Some((_, bit)) = LETTERS.iter().find(|(l, _)| *l == c) {
                        flags |= bit;
                    } else if let Some(k) = letters.get(&c) {
                        keywords.push(k.clone());
                    }
                }
            }
            items.push(Item {
                label: path.display().to_string(),
                uid: uids.get(base_of(&file)).copied().unwrap_or(0),
                flags,
                keywords,
                internal_date: date,
                size: meta.map_or(0, |m| m.len()),
                source: super::Source::File(path),
            });
        }
    }
    // UIDs from the uidlist first, in order; the others by date and name.
    items.sort_by(|a, b| {
        (a.uid == 0, a.uid, a.internal_date, &a.label).cmp(&(
            b.uid == 0,
            b.uid,
            b.internal_date,
            &b.label,
        ))
    });
    Ok(SourceBox {
        name: name.to_string(),
        uidvalidity,
        items,
    })
}

/// A Maildir file name without its info part.
fn base_of(file: &str) -> &str {
    file.split(':').next().unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_round_trip() {
        for n in ["Work", "Work/2024", "a.b/c%d", "Archive/x.y.z"] {
            assert_eq!(name_of(&folder_of(n)), n);
        }
        assert_eq!(folder_of("Work/Sub"), "Work.Sub");
    }
}
