//! Records: the on-disk form of every change to a mailbox.
//!
//! A record is a 32-byte header followed by a payload, padded to 8 bytes:
//!
//! ```text
//! 0   magic    u32  "RMR1"
//! 4   crc32    u32  over bytes 8 .. 32+len (header tail and payload)
//! 8   len      u32  payload length
//! 12  kind     u8   [`Op`] discriminant
//! 13  reserved [u8; 3]
//! 16  bucket   u32  the account's bucket, so recovery skips foreign records cheaply
//! 20  reserved [u8; 12]
//! 32  payload
//! ```
//!
//! A record whose magic, length or checksum is wrong ends the log of its
//! segment: it is the torn tail of a write that never got its fdatasync, so
//! nothing acknowledged lies at or after it (appends are sequential and every
//! acknowledgement waits for a sync covering all earlier bytes).
//!
//! Message bodies are the last field of their payload, so a message is one
//! contiguous slice of the segment mapping and is served without copying.

pub const MAGIC: u32 = u32::from_le_bytes(*b"RMR1");
pub const HEADER_LEN: usize = 32;
pub const ALIGN: usize = 8;

/// Where a message body lives: segment id, byte offset of the body in the
/// segment, body length.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Loc {
    pub seg: u64,
    pub offset: u32,
    pub len: u32,
}

/// One change to an account's mail. `account` is the canonical address.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    /// A mailbox was created (also the implicit INBOX and special folders of a new account).
    CreateMailbox {
        account: &'a str,
        mailbox: u32,
        name: &'a str,
        uidvalidity: u32,
        special_use: u8,
    },
    DeleteMailbox {
        account: &'a str,
        mailbox: u32,
    },
    RenameMailbox {
        account: &'a str,
        mailbox: u32,
        name: &'a str,
    },
    Subscribe {
        account: &'a str,
        name: &'a str,
        on: bool,
    },
    /// A new message; `body` is the message exactly as served to clients.
    /// `email_id`: its EMAILID, given when the record is written (as UIDs
    /// are), so a record that is replayed but was never applied live (its
    /// sync failed) cannot shift the ids of later messages. Kind 14; the
    /// older kind 5 has none (0), and the message is numbered when applied.
    Message {
        account: &'a str,
        mailbox: u32,
        uid: u32,
        internal_date: i64,
        flags: u32,
        keywords: u64,
        modseq: u64,
        email_id: u64,
        body: &'a [u8],
    },
    /// A copy of an existing body into another mailbox (IMAP COPY/MOVE),
    /// sharing its bytes and its EMAILID (0 in records written before
    /// EMAILIDs, kind 6: the copy then gets one of its own). Kind 13.
    Link {
        account: &'a str,
        mailbox: u32,
        uid: u32,
        internal_date: i64,
        flags: u32,
        keywords: u64,
        modseq: u64,
        loc: Loc,
        email_id: u64,
    },
    /// New flags of a message.
    Flags {
        account: &'a str,
        mailbox: u32,
        uid: u32,
        flags: u32,
        keywords: u64,
        modseq: u64,
    },
    /// A keyword name was given a bit position in a mailbox.
    Keyword {
        account: &'a str,
        mailbox: u32,
        bit: u8,
        name: &'a str,
    },
    /// Messages removed from a mailbox.
    Expunge {
        account: &'a str,
        mailbox: u32,
        uids: Vec<u32>,
        modseq: u64,
    },
    /// Compaction moved a body: every entry of the account at `old` now points at this record's body.
    Relocate {
        account: &'a str,
        old: Loc,
        body: &'a [u8],
    },
    /// Relay queue: the envelope of the message `uid` in the queue account's
    /// INBOX (logged right after its Message record). Every recipient starts
    /// pending. `flags`: see `index::queue_flag`.
    Envelope {
        account: &'a str,
        uid: u32,
        arrival: i64,
        flags: u8,
        reverse_path: &'a str,
        recipients: Vec<&'a str>,
    },
    /// Relay queue: the delivery state of recipient `rcpt` (index into the
    /// envelope's list) of queued message `uid`. `state`: see `index::queue_state`.
    QueueState {
        account: &'a str,
        uid: u32,
        rcpt: u32,
        state: u8,
        attempts: u32,
        next_attempt: i64,
        last_reply: &'a str,
    },
}

impl<'a> Op<'a> {
    pub fn kind(&self) -> u8 {
        match self {
            Op::CreateMailbox { .. } => 1,
            Op::DeleteMailbox { .. } => 2,
            Op::RenameMailbox { .. } => 3,
            Op::Subscribe { .. } => 4,
            Op::Message { .. } => 14,
            Op::Link { .. } => 13,
            Op::Flags { .. } => 7,
            Op::Keyword { .. } => 8,
            Op::Expunge { .. } => 9,
            Op::Relocate { .. } => 10,
            Op::Envelope { .. } => 11,
            Op::QueueState { .. } => 12,
        }
    }

    /// The (account, mailbox, mod-sequence) of a record that is applied
    /// only once durable and holds HIGHESTMODSEQ back until then
    /// (`Mailbox::reported_modseq`).
    pub fn pending_modseq(&self) -> Option<(&'a str, u32, u64)> {
        match self {
            Op::Message {
                account,
                mailbox,
                modseq,
                ..
            }
            | Op::Link {
                account,
                mailbox,
                modseq,
                ..
            }
            | Op::Expunge {
                account,
                mailbox,
                modseq,
                ..
            } => Some((account, *mailbox, *modseq)),
            _ => None,
        }
    }

    pub fn account(&self) -> &'a str {
        match self {
            Op::CreateMailbox { account, .. }
            | Op::DeleteMailbox { account, .. }
            | Op::RenameMailbox { account, .. }
            | Op::Subscribe { account, .. }
            | Op::Message { account, .. }
            | Op::Link { account, .. }
            | Op::Flags { account, .. }
            | Op::Keyword { account, .. }
            | Op::Expunge { account, .. }
            | Op::Relocate { account, .. }
            | Op::Envelope { account, .. }
            | Op::QueueState { account, .. } => account,
        }
    }

    /// The body carried by this record, if any (always the payload's tail).
    pub fn body(&self) -> Option<&'a [u8]> {
        match self {
            Op::Message { body, .. } | Op::Relocate { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Encode the payload fields that precede the body into `out`.
    pub fn encode_meta(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.str(self.account());
        match self {
            Op::CreateMailbox {
                mailbox,
                name,
                uidvalidity,
                special_use,
                ..
            } => {
                w.u32(*mailbox);
                w.str(name);
                w.u32(*uidvalidity);
                w.0.push(*special_use);
            }
            Op::DeleteMailbox { mailbox, .. } => w.u32(*mailbox),
            Op::RenameMailbox { mailbox, name, .. } => {
                w.u32(*mailbox);
                w.str(name);
            }
            Op::Subscribe { name, on, .. } => {
                w.str(name);
                w.0.push(u8::from(*on));
            }
            Op::Message {
                mailbox,
                uid,
                internal_date,
                flags,
                keywords,
                modseq,
                email_id,
                body,
                ..
            } => {
                w.u32(*mailbox);
                w.u32(*uid);
                w.u64(*internal_date as u64);
                w.u32(*flags);
                w.u64(*keywords);
                w.u64(*modseq);
                w.u64(*email_id);
                // Last: `Store::write_message` patches it.
                w.u32(body.len() as u32);
            }
            Op::Link {
                mailbox,
                uid,
                internal_date,
                flags,
                keywords,
                modseq,
                loc,
                email_id,
                ..
            } => {
                w.u32(*mailbox);
                w.u32(*uid);
                w.u64(*internal_date as u64);
                w.u32(*flags);
                w.u64(*keywords);
                w.u64(*modseq);
                w.loc(loc);
                w.u64(*email_id);
            }
            Op::Flags {
                mailbox,
                uid,
                flags,
                keywords,
                modseq,
                ..
            } => {
                w.u32(*mailbox);
                w.u32(*uid);
                w.u32(*flags);
                w.u64(*keywords);
                w.u64(*modseq);
            }
            Op::Keyword {
                mailbox, bit, name, ..
            } => {
                w.u32(*mailbox);
                w.0.push(*bit);
                w.str(name);
            }
            Op::Expunge {
                mailbox,
                uids,
                modseq,
                ..
            } => {
                w.u32(*mailbox);
                w.u64(*modseq);
                w.u32(uids.len() as u32);
                for u in uids {
                    w.u32(*u);
                }
            }
            Op::Relocate { old, body, .. } => {
                w.loc(old);
                w.u32(body.len() as u32);
            }
            Op::Envelope {
                uid,
                arrival,
                flags,
                reverse_path,
                recipients,
                ..
            } => {
                w.u32(*uid);
                w.u64(*arrival as u64);
                w.0.push(*flags);
                w.str(reverse_path);
                w.u32(recipients.len() as u32);
                for r in recipients {
                    w.str(r);
                }
            }
            Op::QueueState {
                uid,
                rcpt,
                state,
                attempts,
                next_attempt,
                last_reply,
                ..
            } => {
                w.u32(*uid);
                w.u32(*rcpt);
                w.0.push(*state);
                w.u32(*attempts);
                w.u64(*next_attempt as u64);
                w.str(last_reply);
            }
        }
    }

    /// Decode a payload. `None` means the payload does not parse: treated like
    /// a checksum failure by callers.
    pub fn decode(kind: u8, payload: &'a [u8]) -> Option<Op<'a>> {
        let mut r = Reader(payload);
        let account = r.str()?;
        let op = match kind {
            1 => Op::CreateMailbox {
                account,
                mailbox: r.u32()?,
                name: r.str()?,
                uidvalidity: r.u32()?,
                special_use: r.u8()?,
            },
            2 => Op::DeleteMailbox {
                account,
                mailbox: r.u32()?,
            },
            3 => Op::RenameMailbox {
                account,
                mailbox: r.u32()?,
                name: r.str()?,
            },
            4 => Op::Subscribe {
                account,
                name: r.str()?,
                on: r.u8()? != 0,
            },
            5 | 14 => {
                let mailbox = r.u32()?;
                let uid = r.u32()?;
                let internal_date = r.u64()? as i64;
                let flags = r.u32()?;
                let keywords = r.u64()?;
                let modseq = r.u64()?;
                let email_id = if kind == 14 { r.u64()? } else { 0 };
                let len = r.u32()? as usize;
                Op::Message {
                    account,
                    mailbox,
                    uid,
                    internal_date,
                    flags,
                    keywords,
                    modseq,
                    email_id,
                    body: r.take(len)?,
                }
            }
            6 | 13 => Op::Link {
                account,
                mailbox: r.u32()?,
                uid: r.u32()?,
                internal_date: r.u64()? as i64,
                flags: r.u32()?,
                keywords: r.u64()?,
                modseq: r.u64()?,
                loc: r.loc()?,
                email_id: if kind == 13 { r.u64()? } else { 0 },
            },
            7 => Op::Flags {
                account,
                mailbox: r.u32()?,
                uid: r.u32()?,
                flags: r.u32()?,
                keywords: r.u64()?,
                modseq: r.u64()?,
            },
            8 => Op::Keyword {
                account,
                mailbox: r.u32()?,
                bit: r.u8()?,
                name: r.str()?,
            },
            9 => {
                let mailbox = r.u32()?;
                let modseq = r.u64()?;
                let n = r.u32()? as usize;
                if n > r.0.len() / 4 {
                    return None;
                }
                let mut uids = Vec::with_capacity(n);
                for _ in 0..n {
                    uids.push(r.u32()?);
                }
                Op::Expunge {
                    account,
                    mailbox,
                    uids,
                    modseq,
                }
            }
            10 => {
                let old = r.loc()?;
                let len = r.u32()? as usize;
                Op::Relocate {
                    account,
                    old,
                    body: r.take(len)?,
                }
            }
            11 => {
                let uid = r.u32()?;
                let arrival = r.u64()? as i64;
                let flags = r.u8()?;
                let reverse_path = r.str()?;
                let n = r.u32()? as usize;
                if n > r.0.len() / 2 {
                    return None;
                }
                let mut recipients = Vec::with_capacity(n);
                for _ in 0..n {
                    recipients.push(r.str()?);
                }
                Op::Envelope {
                    account,
                    uid,
                    arrival,
                    flags,
                    reverse_path,
                    recipients,
                }
            }
            12 => Op::QueueState {
                account,
                uid: r.u32()?,
                rcpt: r.u32()?,
                state: r.u8()?,
                attempts: r.u32()?,
                next_attempt: r.u64()? as i64,
                last_reply: r.str()?,
            },
            _ => return None,
        };
        if !r.0.is_empty() {
            return None;
        }
        Some(op)
    }
}

/// Total bytes a record with this payload length takes, padding included.
pub fn record_len(payload_len: usize) -> usize {
    (HEADER_LEN + payload_len).next_multiple_of(ALIGN)
}

/// Build the 32-byte header for a payload made of `parts` (concatenated).
pub fn header(kind_of: &Op<'_>, bucket: u32, parts: &[&[u8]]) -> [u8; HEADER_LEN] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    h[12] = kind_of.kind();
    h[16..20].copy_from_slice(&bucket.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[8..HEADER_LEN]);
    for p in parts {
        crc.update(p);
    }
    h[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// A record found while scanning a segment.
#[derive(Debug)]
pub struct Scanned<'a> {
    /// Offset of the record's header in the segment.
    pub offset: usize,
    pub bucket: u32,
    pub kind: u8,
    /// Offset of the payload in the segment.
    pub payload_offset: usize,
    pub payload: &'a [u8],
    /// Offset just past this record (next record's header).
    pub next: usize,
}

/// Read the record at `offset` of `data`, checking magic, bounds and checksum.
/// `None` marks the end of the valid log.
pub fn scan_at(data: &[u8], offset: usize) -> Option<Scanned<'_>> {
    let rec = frame_at(data, offset)?;
    let h = &data[offset..offset + HEADER_LEN];
    let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[8..HEADER_LEN]);
    hasher.update(rec.payload);
    (hasher.finalize() == crc).then_some(rec)
}

/// Read the record at `offset` checking magic and bounds only: for records
/// this process has just written (their checksum was computed from the same
/// bytes), where [`scan_at`] would only checksum them a second time.
pub fn frame_at(data: &[u8], offset: usize) -> Option<Scanned<'_>> {
    let h = data.get(offset..offset.checked_add(HEADER_LEN)?)?;
    if u32::from_le_bytes(h[0..4].try_into().ok()?) != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(h[8..12].try_into().ok()?) as usize;
    let payload_offset = offset + HEADER_LEN;
    let payload = data.get(payload_offset..payload_offset.checked_add(len)?)?;
    Some(Scanned {
        offset,
        bucket: u32::from_le_bytes(h[16..20].try_into().ok()?),
        kind: h[12],
        payload_offset,
        payload,
        next: offset + record_len(len),
    })
}

struct Writer<'b>(&'b mut Vec<u8>);

impl Writer<'_> {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        debug_assert!(s.len() <= u16::MAX as usize);
        self.0.extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn loc(&mut self, l: &Loc) {
        self.u64(l.seg);
        self.u32(l.offset);
        self.u32(l.len);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn loc(&mut self) -> Option<Loc> {
        Some(Loc {
            seg: self.u64()?,
            offset: self.u32()?,
            len: self.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(op: &Op<'_>, bucket: u32) -> Vec<u8> {
        let mut meta = Vec::new();
        op.encode_meta(&mut meta);
        let body = op.body().unwrap_or(&[]);
        let h = header(op, bucket, &[&meta, body]);
        let mut out = h.to_vec();
        out.extend_from_slice(&meta);
        out.extend_from_slice(body);
        out.resize(record_len(meta.len() + body.len()), 0);
        out
    }

    #[test]
    fn every_op_round_trips_and_torn_records_end_the_log() {
        let ops = vec![
            Op::CreateMailbox {
                account: "a@x",
                mailbox: 1,
                name: "Sent",
                uidvalidity: 7,
                special_use: 2,
            },
            Op::DeleteMailbox {
                account: "a@x",
                mailbox: 1,
            },
            Op::RenameMailbox {
                account: "a@x",
                mailbox: 1,
                name: "Old",
            },
            Op::Subscribe {
                account: "a@x",
                name: "Old",
                on: true,
            },
            Op::Message {
                account: "a@x",
                mailbox: 0,
                uid: 9,
                internal_date: -5,
                flags: 3,
                keywords: 1 << 40,
                modseq: 11,
                email_id: 0,
                body: b"hello\r\n",
            },
            Op::Link {
                account: "a@x",
                mailbox: 2,
                uid: 1,
                internal_date: 5,
                flags: 0,
                keywords: 0,
                modseq: 12,
                loc: Loc {
                    seg: 1 << 40,
                    offset: 64,
                    len: 7,
                },
                email_id: 77,
            },
            Op::Flags {
                account: "a@x",
                mailbox: 0,
                uid: 9,
                flags: 1,
                keywords: 0,
                modseq: 13,
            },
            Op::Keyword {
                account: "a@x",
                mailbox: 0,
                bit: 3,
                name: "$Junk",
            },
            Op::Expunge {
                account: "a@x",
                mailbox: 0,
                uids: vec![1, 2, 9],
                modseq: 14,
            },
            Op::Envelope {
                account: "\u{1}queue-0",
                uid: 4,
                arrival: 1_700_000_000,
                flags: 3,
                reverse_path: "",
                recipients: vec!["a@b.test", "c@d.test"],
            },
            Op::QueueState {
                account: "\u{1}queue-0",
                uid: 4,
                rcpt: 1,
                state: 1,
                attempts: 2,
                next_attempt: 1_700_000_600,
                last_reply: "451 4.4.1 later",
            },
            Op::Relocate {
                account: "a@x",
                old: Loc {
                    seg: 2,
                    offset: 3,
                    len: 4,
                },
                body: b"abcd",
            },
        ];
        let mut log = Vec::new();
        for op in &ops {
            log.extend_from_slice(&encode(op, 42));
        }
        let mut off = 0;
        let mut back = Vec::new();
        while let Some(s) = scan_at(&log, off) {
            assert_eq!(s.bucket, 42);
            back.push(Op::decode(s.kind, s.payload).unwrap());
            off = s.next;
        }
        assert_eq!(back, ops);
        assert_eq!(off, log.len());
        // Flip any byte of the last record: the log ends before it.
        let last_start = log.len() - encode(ops.last().unwrap(), 42).len();
        for i in last_start..log.len() - 4 {
            let mut bad = log.clone();
            bad[i] ^= 0x55;
            let mut off = 0;
            let mut n = 0;
            while let Some(s) = scan_at(&bad, off) {
                off = s.next;
                n += 1;
            }
            // Header and payload are all covered (the 3 padding bytes are not visited).
            assert_eq!(n, ops.len() - 1, "byte {i}");
        }
        // Truncated tail.
        // Truncated inside the payload (the last 3 bytes are padding).
        assert!(scan_at(&log[..log.len() - 4], last_start).is_none());
        assert!(scan_at(&log[..log.len() - 3], last_start).is_some());
    }
}
