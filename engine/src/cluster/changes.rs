//! Cluster mode: a primary's changes to an account's mailboxes, in a form
//! its replica can apply (`runtime::changes`).
//!
//! The two nodes number mailboxes and messages each on their own (a
//! delivery's copy gets the replica's UID), so a change cannot name a UID.
//! It names mailboxes by name and messages by the digest of their content
//! after the leading trace fields (`runtime::transfer::Digests::Content`),
//! which every node's copy of a message has in common. Flags are sent as
//! the message's whole new state (system flags and keyword names), so
//! applying a change twice changes nothing the second time.
//!
//! The text form, one change per line, names in xtext (RFC 3461 4),
//! digests in hex:
//!
//! ```text
//! create <mailbox> <special-use>
//! delete <mailbox>
//! rename <mailbox> <new name>
//! subscribe <mailbox> <0|1>
//! flags <mailbox> <digest> <flags> [<keyword> ...]
//! expunge <mailbox> <digest> [<digest> ...]
//! link <from mailbox> <to mailbox> <digest> <flags> [<keyword> ...]
//! ```
use crate::protocol::smtp::command::{xtext_decode, xtext_encode};

/// A message's identity across nodes.
pub type Digest = [u8; 16];

/// One change, as the replica applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The mailbox (and the superiors it needs) exists.
    Create {
        name: String,
        special_use: u8,
    },
    Delete {
        name: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Subscribe {
        name: String,
        on: bool,
    },
    /// The message's flags and keywords are now exactly these.
    Flags {
        mailbox: String,
        digest: Digest,
        flags: u32,
        keywords: Vec<String>,
    },
    /// One message per digest leaves the mailbox (a digest twice: two).
    Expunge {
        mailbox: String,
        digests: Vec<Digest>,
    },
    /// A copy (COPY, MOVE, RENAME of INBOX) of a message of `from` (on
    /// the primary: one mailbox that held it) into `to`, with these flags.
    Link {
        from: String,
        to: String,
        digest: Digest,
        flags: u32,
        keywords: Vec<String>,
    },
}

/// Most digests on one expunge line (a longer expunge is split).
pub const EXPUNGE_LINE_MAX: usize = 256;

fn hex(d: &Digest) -> String {
    let mut s = String::with_capacity(32);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn unhex(s: &str) -> Option<Digest> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut d = [0u8; 16];
    for (i, out) in d.iter_mut().enumerate() {
        *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(d)
}

/// Keyword names at the end of a line, each after a space, and the line end.
fn push_names(out: &mut String, names: &[String]) {
    for k in names {
        out.push(' ');
        out.push_str(&xtext_encode(k));
    }
    out.push('\n');
}

/// The text form of `changes`.
pub fn encode(changes: &[Change]) -> Vec<u8> {
    let mut out = String::new();
    for c in changes {
        match c {
            Change::Create { name, special_use } => {
                out.push_str(&format!("create {} {special_use}\n", xtext_encode(name)))
            }
            Change::Delete { name } => out.push_str(&format!("delete {}\n", xtext_encode(name))),
            Change::Rename { from, to } => out.push_str(&format!(
                "rename {} {}\n",
                xtext_encode(from),
                xtext_encode(to)
            )),
            Change::Subscribe { name, on } => out.push_str(&format!(
                "subscribe {} {}\n",
                xtext_encode(name),
                u8::from(*on)
            )),
            Change::Flags {
                mailbox,
                digest,
                flags,
                keywords,
            } => {
                out.push_str(&format!(
                    "flags {} {} {flags}",
                    xtext_encode(mailbox),
                    hex(digest)
                ));
                push_names(&mut out, keywords);
            }
            Change::Expunge { mailbox, digests } => {
                for part in digests.chunks(EXPUNGE_LINE_MAX) {
                    out.push_str(&format!("expunge {}", xtext_encode(mailbox)));
                    for d in part {
                        out.push(' ');
                        out.push_str(&hex(d));
                    }
                    out.push('\n');
                }
            }
            Change::Link {
                from,
                to,
                digest,
                flags,
                keywords,
            } => {
                out.push_str(&format!(
                    "link {} {} {} {flags}",
                    xtext_encode(from),
                    xtext_encode(to),
                    hex(digest)
                ));
                push_names(&mut out, keywords);
            }
        }
    }
    out.into_bytes()
}

/// A mailbox name field: xtext, not empty.
fn name(s: Option<&str>) -> Option<String> {
    xtext_decode(s?).filter(|n| !n.is_empty())
}

/// A text's identity: the sending shard's run (`epoch`, random when it
/// starts) and the text's number in that run, which grows. A replica
/// applies a text once: a send repeated after its 250 was lost is
/// answered without applying it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextId {
    pub epoch: u64,
    pub seq: u64,
}

/// The line that starts a text with its identity.
pub fn id_line(id: TextId) -> Vec<u8> {
    format!("id {} {}\n", id.epoch, id.seq).into_bytes()
}

/// Read the text form; None if any line is malformed (nothing is applied).
pub fn decode(text: &[u8]) -> Option<Vec<Change>> {
    decode_with_id(text).map(|(_, c)| c)
}

/// [`decode`], with the text's identity if its first line gives one.
pub fn decode_with_id(text: &[u8]) -> Option<(Option<TextId>, Vec<Change>)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut changes = Vec::new();
    let mut id = None;
    let mut lines = text.lines().peekable();
    if let Some(rest) = lines.peek().and_then(|l| l.strip_prefix("id ")) {
        let (epoch, seq) = rest.trim_end_matches('\r').split_once(' ')?;
        id = Some(TextId {
            epoch: epoch.parse().ok()?,
            seq: seq.parse().ok()?,
        });
        lines.next();
    }
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let mut f = line.split(' ');
        let change = match f.next()? {
            "create" => Change::Create {
                name: name(f.next())?,
                special_use: f.next()?.parse().ok()?,
            },
            "delete" => Change::Delete {
                name: name(f.next())?,
            },
            "rename" => Change::Rename {
                from: name(f.next())?,
                to: name(f.next())?,
            },
            "subscribe" => Change::Subscribe {
                name: name(f.next())?,
                on: match f.next()? {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                },
            },
            "flags" => Change::Flags {
                mailbox: name(f.next())?,
                digest: unhex(f.next()?)?,
                flags: f.next()?.parse().ok()?,
                keywords: f.by_ref().map(|k| name(Some(k))).collect::<Option<_>>()?,
            },
            "expunge" => {
                let mailbox = name(f.next())?;
                let digests = f.by_ref().map(unhex).collect::<Option<Vec<_>>>()?;
                if digests.is_empty() || digests.len() > EXPUNGE_LINE_MAX {
                    return None;
                }
                Change::Expunge { mailbox, digests }
            }
            "link" => Change::Link {
                from: name(f.next())?,
                to: name(f.next())?,
                digest: unhex(f.next()?)?,
                flags: f.next()?.parse().ok()?,
                keywords: f.by_ref().map(|k| name(Some(k))).collect::<Option<_>>()?,
            },
            _ => return None,
        };
        if f.next().is_some() {
            return None;
        }
        changes.push(change);
    }
    Some((id, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        [n; 16]
    }

    #[test]
    fn every_change_round_trips() {
        let all = vec![
            Change::Create {
                name: "Archive/2026 Q4".into(),
                special_use: 4,
            },
            Change::Delete {
                name: "Old+Stuff=x".into(),
            },
            Change::Rename {
                from: "A".into(),
                to: "B/\u{e9}t\u{e9}".into(),
            },
            Change::Subscribe {
                name: "B".into(),
                on: true,
            },
            Change::Subscribe {
                name: "B".into(),
                on: false,
            },
            Change::Flags {
                mailbox: "INBOX".into(),
                digest: d(0xab),
                flags: 5,
                keywords: vec!["$Label1".into(), "a,b".into()],
            },
            Change::Flags {
                mailbox: "INBOX".into(),
                digest: d(1),
                flags: 0,
                keywords: vec![],
            },
            Change::Expunge {
                mailbox: "Trash".into(),
                digests: vec![d(2), d(2), d(3)],
            },
            Change::Link {
                from: "INBOX".into(),
                to: "Sent Items".into(),
                digest: d(9),
                flags: 2,
                keywords: vec!["$Work".into()],
            },
            Change::Link {
                from: "INBOX".into(),
                to: "Archive".into(),
                digest: d(8),
                flags: 0,
                keywords: vec![],
            },
        ];
        assert_eq!(decode(&encode(&all)), Some(all));
    }

    #[test]
    fn a_long_expunge_is_split_and_read_back_whole() {
        let digests: Vec<Digest> = (0..2500u32).map(|i| [(i % 251) as u8; 16]).collect();
        let text = encode(&[Change::Expunge {
            mailbox: "INBOX".into(),
            digests: digests.clone(),
        }]);
        assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 10);
        let back = decode(&text).unwrap();
        let all: Vec<Digest> = back
            .into_iter()
            .flat_map(|c| match c {
                Change::Expunge { digests, .. } => digests,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(all, digests);
    }

    #[test]
    fn a_text_carries_its_identity_on_its_first_line() {
        let id = TextId { epoch: 7, seq: 42 };
        let mut text = id_line(id);
        text.extend(encode(&[Change::Delete { name: "A".into() }]));
        assert_eq!(
            decode_with_id(&text),
            Some((Some(id), vec![Change::Delete { name: "A".into() }]))
        );
        assert_eq!(decode_with_id(b"delete A\n").unwrap().0, None);
        assert_eq!(decode_with_id(b"id 7\ndelete A\n"), None);
        assert_eq!(decode_with_id(b"delete A\nid 7 42\n"), None, "only first");
    }

    #[test]
    fn malformed_lines_are_refused_whole() {
        for bad in [
            "flags INBOX zz 1\n",
            "flags INBOX 00 1\n",
            "create  0\n",
            "delete\n",
            "rename A\n",
            "subscribe A 2\n",
            "expunge INBOX\n",
            "link A B\n",
            "link A B 00000000000000000000000000000000\n",
            "delete A B\n",
            "frob A\n",
            "create A+ZZ 0\n",
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(decode(b"\xff\n"), None);
        assert_eq!(decode(b""), Some(vec![]));
    }
}
