//! Export, import and backup of a running server, through the control
//! socket (`ringmail export|import|backup`; the file formats live in
//! [`crate::transfer`]).
//!
//! These requests can run for minutes, so each connection gets its own
//! thread (at most [`CONNECTIONS_MAX`] at once) instead of the control
//! thread; that thread talks to the shard owning the account through the
//! usual control channel, with a [`Request`] inside [`Command::Transfer`].
//!
//! Snapshot rule (export): the owner shard clones the account's index and
//! takes a handle on every body's segment mapping in one step, without an
//! await in between, so the export is the account exactly as it was at that
//! instant (later deliveries and expunges are not in it, a compaction that
//! moves bodies meanwhile cannot pull them away: the old mapping stays alive).
//! Bodies are then streamed in chunks of [`CHUNK`] bytes over a channel of
//! [`CHUNKS_QUEUED`] slots, so neither side ever holds the account whole.
//!
//! Import: the connection thread reads framed messages, checks each against
//! the target mailbox's digests (idempotency, see [`Opened`]) and hands
//! batches to the owner shard, which logs them through the normal durable
//! commit (one group commit per batch) before the thread answers.
//!
//! Backup: see [`backup`].
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::SinkExt;

use super::control::{Command, ControlRequest, ControlSender};
use super::shard::{unix_now, Shard};
use crate::session::imap::{DELIMITER, KEYWORDS_MAX};
use crate::storage::index::{self, special, LogPos};
use crate::storage::record::Op;
use crate::storage::{self, segment, Body};

/// Bytes per export chunk.
pub const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the owner shard and the connection thread.
const CHUNKS_QUEUED: usize = 4;
/// Transfer connections served at once.
pub const CONNECTIONS_MAX: usize = 4;
/// An import batch ends at this many messages or bytes (one group commit each).
const BATCH_MESSAGES_MAX: usize = 64;
const BATCH_BYTES_MAX: usize = 4 << 20;
/// Import answers held before they are written (with the batch so far):
/// messages found present or refused do not fill a batch, and must not
/// pile up answers without bound either.
const ANSWERS_MAX: usize = 256;
/// Bound on a frame header line (a message line carries its keywords).
const FRAME_LINE_MAX: u64 = 8 * 1024;
/// How long a transfer client may stay silent.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on a mailbox name in an import.
const MAILBOX_NAME_MAX: usize = 512;
/// How long a backup waits for a running compaction to finish.
const COMPACTION_WAIT_MAX: Duration = Duration::from_secs(600);

/// Limits the connection threads need, set by `runtime::serve` and by a
/// configuration reload (0: not set).
static MESSAGE_SIZE_MAX: AtomicUsize = AtomicUsize::new(0);
static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Backups running, and whether a compaction pass is (see [`CompactionGuard`]).
static BACKUPS: AtomicUsize = AtomicUsize::new(0);
static COMPACTING: AtomicBool = AtomicBool::new(false);

pub fn configure(message_size_max: usize) {
    MESSAGE_SIZE_MAX.store(message_size_max, Ordering::Relaxed);
}

fn message_size_max() -> usize {
    match MESSAGE_SIZE_MAX.load(Ordering::Relaxed) {
        0 => crate::limits::MESSAGE_SIZE_MAX,
        n => n,
    }
}

/// Held by a compaction pass; none starts while a backup runs (it would
/// delete segments the backup's checkpoints still need), and a backup waits
/// for a running one. Each side raises its own mark before reading the
/// other's (sequentially consistent), so at least one of them sees the other.
pub struct CompactionGuard(());

impl CompactionGuard {
    pub fn enter() -> Option<CompactionGuard> {
        if COMPACTING.swap(true, Ordering::SeqCst) {
            return None;
        }
        if BACKUPS.load(Ordering::SeqCst) > 0 {
            COMPACTING.store(false, Ordering::SeqCst);
            return None;
        }
        Some(CompactionGuard(()))
    }
}

impl Drop for CompactionGuard {
    fn drop(&mut self) {
        COMPACTING.store(false, Ordering::SeqCst);
    }
}

struct BackupMark;

impl BackupMark {
    fn enter() -> Result<BackupMark, String> {
        BACKUPS.fetch_add(1, Ordering::SeqCst);
        let mark = BackupMark;
        let start = std::time::Instant::now();
        while COMPACTING.load(Ordering::SeqCst) {
            if start.elapsed() > COMPACTION_WAIT_MAX {
                return Err("a compaction pass did not finish".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(mark)
    }
}

impl Drop for BackupMark {
    fn drop(&mut self) {
        BACKUPS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A message to import, as the owner shard receives it.
pub struct Incoming {
    /// The source's UID, kept if the mailbox was new (0: none).
    pub uid: u32,
    pub flags: u32,
    pub keywords: Vec<String>,
    pub internal_date: i64,
    pub body: Vec<u8>,
}

/// A mailbox opened for import.
pub struct Opened {
    pub id: u32,
    pub created: bool,
    /// Empty and never used (UIDNEXT 1): the source's UIDs can be kept.
    pub fresh: bool,
    /// How many stored messages have each body digest ([`digest`]).
    pub digests: HashMap<[u8; 16], u32>,
    /// Each stored message's UID, digest and internal date, in UID order.
    pub by_uid: Vec<(u32, [u8; 16], i64)>,
}

/// Work for the shard owning an account.
pub enum Work {
    /// Names of every mail account with stored state on this shard.
    Accounts(oneshot::Sender<Vec<String>>),
    Export {
        account: String,
        out: mpsc::Sender<Piece>,
    },
    Open {
        account: String,
        name: String,
        uidvalidity: u32,
        reply: oneshot::Sender<Result<Opened, String>>,
    },
    Append {
        account: String,
        mailbox: u32,
        keep_uids: bool,
        messages: Vec<Incoming>,
        /// The UID each message got, in order.
        reply: oneshot::Sender<Result<Vec<u32>, String>>,
    },
    /// The position just after this shard's last durable record.
    Cut(oneshot::Sender<LogPos>),
}

/// What the owner shard sends an export's connection thread. The end and
/// errors travel beside the data, never inside it: no message body can
/// pass for either, and a stream that stops without [`Piece::End`] is known
/// to be cut short.
pub enum Piece {
    Data(Vec<u8>),
    Error(String),
    End,
}

/// [`Work`] inside a [`Command`] (which must be `Clone` and comparable):
/// a slot the shard takes the work out of.
#[derive(Clone)]
pub struct Request(Arc<Mutex<Option<Work>>>);

impl Request {
    fn new(w: Work) -> Self {
        Request(Arc::new(Mutex::new(Some(w))))
    }
    fn take(&self) -> Option<Work> {
        self.0.lock().ok().and_then(|mut w| w.take())
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("transfer request")
    }
}

impl PartialEq for Request {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Request {}

/// First 128 bits of the SHA-256 of a message body with its line ends
/// made uniform ([`Digester`]): how an import recognises a message the
/// mailbox already holds.
pub fn digest(body: &[u8]) -> [u8; 16] {
    let mut d = Digester::new();
    d.update(body);
    d.finish()
}

/// Which part of a stored message [`open`] digests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Digests {
    /// The whole message ([`digest`]): an import recognises what it
    /// imported before.
    Whole,
    /// The message after its leading trace fields
    /// (`cluster::duplicates::content_start`): a cluster node's copy of a
    /// delivery and the primary's differ only there.
    Content,
    /// None at all (the caller stores without looking for what is there).
    Skip,
}

impl Digests {
    pub fn of(self, body: &[u8]) -> [u8; 16] {
        digest(&body[self.start(body)..])
    }

    fn start(self, body: &[u8]) -> usize {
        match self {
            Digests::Whole | Digests::Skip => 0,
            Digests::Content => crate::cluster::duplicates::content_start(body),
        }
    }
}

/// Bytes hashed between two yields to the shard's executor.
pub(super) const DIGEST_STEP: usize = 64 * 1024;

/// An incremental [`digest`], fed in pieces of any size. It hashes the
/// body with every run of CRs just before an LF removed (CRLF, a bare LF
/// and CR CR LF all count as one line end) and without trailing CRs and
/// LFs, because that is what an export to Maildir or mbox and an import
/// back change (transfer/mod.rs): a re-import of an export must find
/// every message present. Bare CRs inside a line are kept.
pub struct Digester {
    ctx: ring::digest::Context,
    /// LFs, then CRs after the last LF, held until a byte that is neither
    /// (then they are hashed, the CRs only if no LF followed them).
    lfs: usize,
    crs: usize,
}

impl Digester {
    pub fn new() -> Self {
        Digester {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            lfs: 0,
            crs: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        let mut start = 0;
        for (i, b) in data.iter().enumerate() {
            match b {
                b'\r' | b'\n' => {
                    if start < i {
                        self.release();
                        self.ctx.update(&data[start..i]);
                    }
                    start = i + 1;
                    if *b == b'\r' {
                        self.crs += 1;
                    } else {
                        self.crs = 0;
                        self.lfs += 1;
                    }
                }
                _ => {}
            }
        }
        if start < data.len() {
            self.release();
            self.ctx.update(&data[start..]);
        }
    }

    /// Hash the held line ends (a byte of text follows them).
    fn release(&mut self) {
        const LFS: [u8; 64] = [b'\n'; 64];
        const CRS: [u8; 64] = [b'\r'; 64];
        for (n, fill) in [(&mut self.lfs, &LFS), (&mut self.crs, &CRS)] {
            while *n > 0 {
                let k = (*n).min(fill.len());
                self.ctx.update(&fill[..k]);
                *n -= k;
            }
        }
    }

    pub fn finish(self) -> [u8; 16] {
        let d = self.ctx.finish();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d.as_ref()[..16]);
        out
    }
}

impl Default for Digester {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------- shard side

/// Serve one transfer request on a shard (called from the control task).
pub async fn handle(shard: Rc<Shard>, req: Request) -> String {
    let Some(work) = req.take() else {
        return String::new();
    };
    match work {
        Work::Accounts(reply) => {
            let names = shard
                .store
                .summary()
                .into_iter()
                .map(|(a, _)| a)
                .filter(|a| !a.starts_with(crate::relay::queue::QUEUE_PREFIX))
                .collect();
            let _ = reply.send(names);
        }
        Work::Export { account, out } => export(&shard, &account, out).await,
        Work::Open {
            account,
            name,
            uidvalidity,
            reply,
        } => {
            let opened = open(
                &shard,
                &account,
                &name,
                uidvalidity,
                special::NONE,
                Digests::Whole,
            )
            .await;
            let _ = reply.send(opened);
        }
        Work::Append {
            account,
            mailbox,
            keep_uids,
            messages,
            reply,
        } => {
            let _ = reply.send(append(&shard, &account, mailbox, keep_uids, messages).await);
        }
        Work::Cut(reply) => {
            let _ = reply.send(shard.store.durable_pos());
        }
    }
    String::new()
}

/// Stream `account` in the export format (see `crate::transfer`) into
/// `out`, from one snapshot, ending with [`Piece::End`].
pub async fn export(shard: &Rc<Shard>, account: &str, mut out: mpsc::Sender<Piece>) {
    // The snapshot: index and body mappings together, no await in between.
    let snapshot: Option<Vec<(index::Mailbox, Vec<Option<Body>>)>> =
        shard.store.with_account(account, |a| {
            let mut boxes: Vec<_> = a
                .mailboxes
                .iter()
                .map(|m| {
                    let bodies = m.messages.iter().map(|e| shard.store.body(e.loc)).collect();
                    (m.clone(), bodies)
                })
                .collect();
            // INBOX first, then by name (a parent before its children).
            boxes.sort_by(|a, b| {
                (a.0.id != index::INBOX, &a.0.name).cmp(&(b.0.id != index::INBOX, &b.0.name))
            });
            boxes
        });
    if snapshot.is_none() && !shard.directory().contains(account) {
        let _ = out
            .send(Piece::Error(format!("no account {account}")))
            .await;
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 1024);
    buf.extend_from_slice(format!("account {account}\n").as_bytes());
    for (m, bodies) in snapshot.unwrap_or_default() {
        buf.extend_from_slice(
            format!(
                "mailbox {} {} {} {} {}\n",
                m.uidvalidity,
                m.uidnext,
                m.special_use,
                m.keywords.len(),
                m.name
            )
            .as_bytes(),
        );
        for k in &m.keywords {
            buf.extend_from_slice(format!("keyword {k}\n").as_bytes());
        }
        for (e, body) in m.messages.iter().zip(bodies) {
            let Some(body) = body else {
                tracing::warn!(
                    account,
                    mailbox = m.name,
                    uid = e.uid,
                    "export: body missing"
                );
                continue;
            };
            let bytes = body.bytes();
            buf.extend_from_slice(
                format!(
                    "message {} {} {} {} {}\n",
                    e.uid,
                    e.flags,
                    e.keywords,
                    e.internal_date,
                    bytes.len()
                )
                .as_bytes(),
            );
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = rest.len().min(CHUNK.saturating_sub(buf.len()).max(1));
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if buf.len() >= CHUNK {
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 1024));
                    if out.send(Piece::Data(full)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
        }
    }
    if out.send(Piece::Data(buf)).await.is_ok() {
        let _ = out.send(Piece::End).await;
    }
}

/// The stored form of a folder name an import may create: the IMAP rules
/// of `CREATE`. A name that is not modified UTF-7 already (a store that
/// keeps UTF-8 names) is encoded.
fn import_name(name: &str) -> Option<String> {
    let stored = match crate::protocol::imap::mutf7::decode(name.as_bytes()) {
        Some(_) => name.to_string(),
        None => crate::protocol::imap::mutf7::encode(name),
    };
    crate::session::mailboxes::new_name(&stored).filter(|n| n.len() <= MAILBOX_NAME_MAX)
}

/// Open (or create, with `special_use` and the superior names first) the
/// mailbox `name` of `account` for [`append`], with the digests of what it
/// holds.
pub async fn open(
    shard: &Rc<Shard>,
    account: &str,
    name: &str,
    uidvalidity: u32,
    special_use: u8,
    kind: Digests,
) -> Result<Opened, String> {
    let store = &shard.store;
    if !store.owns(account) {
        return Err("account routed to the wrong shard".into());
    }
    if !shard.directory().contains(account) {
        return Err(format!(
            "no account {account} (add it first: ringmail account add)"
        ));
    }
    let name = if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    };
    let Some(name) = import_name(name) else {
        return Err(format!("invalid mailbox name {name:?}"));
    };
    let name = name.as_str();
    store
        .ensure_account(account)
        .await
        .map_err(|e| e.to_string())?;
    let existing = store
        .with_account(account, |a| a.mailbox_by_name(name).map(|m| m.id))
        .flatten();
    let (id, created) = match existing {
        Some(id) => (id, false),
        None => {
            // RFC 3501 6.3.3: the superior names first.
            let mut missing = Vec::new();
            let mut prefix = String::new();
            for (i, part) in name.split(DELIMITER as char).enumerate() {
                if i > 0 {
                    prefix.push(DELIMITER as char);
                }
                prefix.push_str(part);
                let exists = store
                    .with_account(account, |a| a.mailbox_by_name(&prefix).is_some())
                    .unwrap_or(false);
                if !exists {
                    missing.push(prefix.clone());
                }
            }
            let now = unix_now();
            let ids = store
                .with_account_counters(account, |a| {
                    let floor = a
                        .mailboxes
                        .iter()
                        .map(|m| m.uidvalidity)
                        .fold(a.uidvalidity_max, u32::max);
                    let mut v = a.reserve_uidvalidity(now, missing.len());
                    // The target keeps the source's UIDVALIDITY when that
                    // is above every value this account ever used
                    // (RFC 3501 2.3.1.1 still holds).
                    if let Some(last) = v.last_mut() {
                        if uidvalidity > floor && uidvalidity > *last {
                            *last = uidvalidity;
                            a.uidvalidity_max = a.uidvalidity_max.max(uidvalidity);
                        }
                    }
                    v.into_iter()
                        .map(|validity| {
                            let id = a.next_mailbox_id;
                            a.next_mailbox_id += 1;
                            (id, validity)
                        })
                        .collect::<Vec<_>>()
                })
                .map_err(|e| e.to_string())?;
            let ops: Vec<Op<'_>> = missing
                .iter()
                .zip(&ids)
                .map(|(n, (id, v))| Op::CreateMailbox {
                    account,
                    mailbox: *id,
                    name: n,
                    uidvalidity: *v,
                    // The attribute goes to the mailbox itself, not to
                    // the superiors created for it.
                    special_use: if n == name {
                        special_use
                    } else {
                        special::NONE
                    },
                })
                .collect();
            store.commit(&ops).await.map_err(|e| e.to_string())?;
            (ids.last().map(|x| x.0).ok_or("no mailbox created")?, true)
        }
    };
    // Digests of the stored bodies: a snapshot of the handles, then hashing
    // in steps of DIGEST_STEP bytes with a yield between them, so neither a
    // big mailbox nor a big message stalls the shard.
    let (fresh, bodies) = store
        .with_account(account, |a| {
            a.mailbox(id).map(|m| {
                (
                    m.messages.is_empty() && m.uidnext == 1,
                    m.messages
                        .iter()
                        .filter(|_| kind != Digests::Skip)
                        .filter_map(|e| Some((e.uid, e.internal_date, store.body(e.loc)?)))
                        .collect::<Vec<_>>(),
                )
            })
        })
        .flatten()
        .ok_or("mailbox vanished")?;
    let mut digests = HashMap::new();
    let mut by_uid = Vec::with_capacity(bodies.len());
    for (uid, date, b) in bodies {
        let mut d = Digester::new();
        let bytes = b.bytes();
        for step in bytes[kind.start(bytes)..].chunks(DIGEST_STEP) {
            d.update(step);
            glommio::yield_if_needed().await;
        }
        let d = d.finish();
        *digests.entry(d).or_insert(0) += 1;
        by_uid.push((uid, d, date));
    }
    Ok(Opened {
        id,
        created,
        fresh,
        digests,
        by_uid,
    })
}

/// Store `messages` in `mailbox` of `account` in one durable commit; the
/// UID each got. `keep_uids`: keep each source UID that still ascends.
pub async fn append(
    shard: &Rc<Shard>,
    account: &str,
    mailbox: u32,
    keep_uids: bool,
    messages: Vec<Incoming>,
) -> Result<Vec<u32>, String> {
    let store = &shard.store;
    let planned = store
        .with_account_counters(account, |a| {
            let first_id = a.next_email_id;
            a.next_email_id += messages.len() as u64;
            let m = a.mailbox_mut(mailbox).ok_or("mailbox vanished")?;
            // UIDs first, without touching the mailbox: a batch that runs
            // out of UIDs changes nothing.
            let mut next = m.uidnext;
            let mut uids = Vec::with_capacity(messages.len());
            for msg in &messages {
                let uid = kept_uid(keep_uids, msg.uid, next).unwrap_or(next);
                // RFC 3501 2.3.1.1: UIDs ascend and are 32-bit; a mailbox
                // whose UIDNEXT cannot go higher takes no more messages.
                next = uid
                    .checked_add(1)
                    .ok_or("the mailbox has no UIDs left (UIDNEXT at 4294967295)")?;
                uids.push(uid);
            }
            let mut new_keywords: Vec<(u8, String)> = Vec::new();
            let mut plan = Vec::with_capacity(messages.len());
            for (msg, uid) in messages.iter().zip(uids) {
                let mut mask = 0u64;
                for k in &msg.keywords {
                    let bit = match m.keywords.iter().position(|n| n.eq_ignore_ascii_case(k)) {
                        Some(b) => b,
                        None if m.keywords.len() < KEYWORDS_MAX => {
                            m.keywords.push(k.clone());
                            new_keywords.push(((m.keywords.len() - 1) as u8, k.clone()));
                            m.keywords.len() - 1
                        }
                        // No bit left: the keyword is dropped (the summary says so).
                        None => continue,
                    };
                    mask |= 1 << bit;
                }
                m.uidnext = uid + 1; // cannot wrap: checked above
                let email_id = first_id + plan.len() as u64;
                plan.push((uid, mask, m.allocate_pending_modseq(), email_id));
            }
            Ok::<_, &str>((new_keywords, plan))
        })
        .map_err(|e| e.to_string())?;
    let (new_keywords, plan) = planned.map_err(str::to_string)?;
    let mut ops: Vec<Op<'_>> = new_keywords
        .iter()
        .map(|(bit, name)| Op::Keyword {
            account,
            mailbox,
            bit: *bit,
            name,
        })
        .collect();
    for (msg, (uid, mask, modseq, email_id)) in messages.iter().zip(&plan) {
        ops.push(Op::Message {
            account,
            mailbox,
            uid: *uid,
            internal_date: msg.internal_date,
            flags: msg.flags & 0x1f,
            keywords: *mask,
            modseq: *modseq,
            email_id: *email_id,
            body: &msg.body,
        });
    }
    store.commit(&ops).await.map_err(|e| e.to_string())?;
    Ok(plan.into_iter().map(|p| p.0).collect())
}

/// The source's UID if it may be kept: a fresh mailbox, a valid UID
/// (1..4294967294: 4294967295 would leave no UIDNEXT, RFC 3501 2.3.1.1)
/// and above every UID given so far, so kept UIDs strictly ascend whatever
/// order the source lists them in. `None`: take `next`.
fn kept_uid(keep_uids: bool, uid: u32, next: u32) -> Option<u32> {
    (keep_uids && uid != 0 && uid != u32::MAX && uid >= next).then_some(uid)
}

// ------------------------------------------------------- connection threads

/// Does this request line belong here?
pub fn is_transfer(line: &str) -> bool {
    matches!(
        line.split_ascii_whitespace()
            .next()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("export" | "import" | "backup" | "accounts")
    )
}

/// Serve a transfer connection on its own thread.
pub fn spawn(conn: UnixStream, reader: BufReader<UnixStream>, line: String, ctx: Context) {
    if CONNECTIONS.fetch_add(1, Ordering::SeqCst) >= CONNECTIONS_MAX {
        CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
        let mut conn = conn;
        let _ = conn.write_all(b"error: too many transfers running; try again later\n");
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("ringmail-transfer".into())
        .spawn(move || {
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
            let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
            if let Err(e) = serve(&mut conn, reader, line.trim(), &ctx) {
                let _ = conn.write_all(format!("error: {e}\n").as_bytes());
            }
            CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a connection thread needs of the server.
#[derive(Clone)]
pub struct Context {
    pub data_dir: PathBuf,
    pub shards: Vec<ControlSender>,
}

impl Context {
    fn send(&self, shard: usize, work: Work) -> Result<(), String> {
        let (tx, _rx) = oneshot::channel();
        self.shards
            .get(shard)
            .ok_or("no such shard")?
            .unbounded_send(ControlRequest {
                command: Command::Transfer(Request::new(work)),
                reply: tx,
            })
            .map_err(|_| "the server is shutting down".to_string())
    }

    fn owner(&self, account: &str) -> Result<usize, String> {
        let meta = storage::Meta::read(&self.data_dir).map_err(|e| e.to_string())?;
        Ok(storage::shard_of_bucket(
            storage::bucket_of(account, meta.buckets),
            self.shards.len(),
        ))
    }
}

fn wait<T>(rx: oneshot::Receiver<T>) -> Result<T, String> {
    futures::executor::block_on(rx).map_err(|_| "a shard did not answer (shutting down?)".into())
}

fn serve(
    conn: &mut UnixStream,
    reader: BufReader<UnixStream>,
    line: &str,
    ctx: &Context,
) -> Result<(), String> {
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().unwrap_or("").to_ascii_lowercase();
    let arg = words.next();
    if words.next().is_some() {
        return Err("too many arguments".into());
    }
    let io = |e: std::io::Error| e.to_string();
    match (verb.as_str(), arg) {
        ("accounts", None) => {
            let mut all = Vec::new();
            for s in 0..ctx.shards.len() {
                let (tx, rx) = oneshot::channel();
                ctx.send(s, Work::Accounts(tx))?;
                all.extend(wait(rx)?);
            }
            all.sort();
            let mut out = String::new();
            for a in all {
                out.push_str(&a);
                out.push('\n');
            }
            conn.write_all(out.as_bytes()).map_err(io)
        }
        ("export", Some(account)) => {
            let account = crate::accounts::canonical(account).map_err(|e| e.to_string())?;
            let owner = ctx.owner(&account)?;
            let (tx, rx) = mpsc::channel(CHUNKS_QUEUED);
            ctx.send(
                owner,
                Work::Export {
                    account: account.clone(),
                    out: tx,
                },
            )?;
            // The `end` line is written only on [`Piece::End`]; on the
            // socket it stands where a frame header is due, which the
            // client reads by length, so no body can imitate it.
            for piece in futures::executor::block_on_stream(rx) {
                match piece {
                    Piece::Data(chunk) => conn.write_all(&chunk).map_err(io)?,
                    Piece::Error(e) => return Err(e),
                    Piece::End => return conn.write_all(b"end\n").map_err(io),
                }
            }
            // Cut short: shut the socket without `end` (an error line here
            // could fall inside a body); the client reports the stream cut.
            let _ = conn.shutdown(std::net::Shutdown::Both);
            Err("the export stopped early".into())
        }
        ("import", Some(account)) => {
            let account = crate::accounts::canonical(account).map_err(|e| e.to_string())?;
            import(conn, reader, &account, ctx)
        }
        ("backup", Some(dir)) => backup(conn, Path::new(dir), ctx),
        _ => Err(format!("bad request {line:?}")),
    }
}

/// Read one frame header line (bounded).
fn frame_line(reader: &mut BufReader<UnixStream>) -> Result<Option<String>, String> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(FRAME_LINE_MAX)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err("frame line too long or cut".into());
    }
    line.pop();
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| "frame line is not UTF-8".into())
}

struct Batch {
    messages: Vec<Incoming>,
    bytes: usize,
}

/// The import protocol, client to server (after `import ACCOUNT`; the
/// server first answers `ready MESSAGE_SIZE_MAX`):
///
/// ```text
/// mailbox UIDVALIDITY NAME                 -> mailbox NAME created|existing keep-uids|new-uids
/// message UID FLAGS DATE LEN [KEYWORD...]  -> added UID | present | refused REASON
/// <LEN bytes>
/// end                                      -> done
/// ```
///
/// Answers come in order; those of messages after their batch is durable.
fn import(
    conn: &mut UnixStream,
    mut reader: BufReader<UnixStream>,
    account: &str,
    ctx: &Context,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let owner = ctx.owner(account)?;
    let max = message_size_max();
    let mut out = std::io::BufWriter::new(conn.try_clone().map_err(io)?);
    writeln!(out, "ready {max}").map_err(io)?;
    out.flush().map_err(io)?;
    let mut current: Option<(Opened, HashMap<[u8; 16], u32>)> = None;
    let mut batch = Batch {
        messages: Vec::new(),
        bytes: 0,
    };
    // Answers waiting for the batch: None = "added" (the UID comes from
    // the batch), Some(text) = already decided.
    let mut answers: Vec<Option<String>> = Vec::new();
    let flush = |batch: &mut Batch,
                 answers: &mut Vec<Option<String>>,
                 current: &Option<(Opened, HashMap<[u8; 16], u32>)>,
                 out: &mut std::io::BufWriter<UnixStream>|
     -> Result<(), String> {
        let mut uids = Vec::new().into_iter();
        if !batch.messages.is_empty() {
            let opened = &current.as_ref().expect("a batch has a mailbox").0;
            let (tx, rx) = oneshot::channel();
            ctx.send(
                owner,
                Work::Append {
                    account: account.to_string(),
                    mailbox: opened.id,
                    keep_uids: opened.fresh,
                    messages: std::mem::take(&mut batch.messages),
                    reply: tx,
                },
            )?;
            batch.bytes = 0;
            uids = wait(rx)??.into_iter();
        }
        for a in answers.drain(..) {
            match a {
                Some(text) => writeln!(out, "{text}"),
                None => writeln!(out, "added {}", uids.next().unwrap_or(0)),
            }
            .map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())
    };
    loop {
        if answers.len() >= ANSWERS_MAX {
            flush(&mut batch, &mut answers, &current, &mut out)?;
        }
        let Some(line) = frame_line(&mut reader)? else {
            return Err("the client went away before `end`".into());
        };
        let mut words = line.split(' ');
        match words.next() {
            Some("mailbox") => {
                flush(&mut batch, &mut answers, &current, &mut out)?;
                let uidvalidity: u32 = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .ok_or("bad mailbox frame")?;
                let name = words.collect::<Vec<_>>().join(" ");
                let (tx, rx) = oneshot::channel();
                ctx.send(
                    owner,
                    Work::Open {
                        account: account.to_string(),
                        name: name.clone(),
                        uidvalidity,
                        reply: tx,
                    },
                )?;
                match wait(rx)? {
                    Ok(opened) => {
                        writeln!(
                            out,
                            "mailbox {name} {} {}",
                            if opened.created {
                                "created"
                            } else {
                                "existing"
                            },
                            if opened.fresh {
                                "keep-uids"
                            } else {
                                "new-uids"
                            }
                        )
                        .map_err(io)?;
                        current = Some((opened, HashMap::new()));
                    }
                    Err(e) => {
                        writeln!(out, "refused {e}").map_err(io)?;
                        current = None;
                    }
                }
                out.flush().map_err(io)?;
            }
            Some("message") => {
                let nums: Vec<i64> = words
                    .by_ref()
                    .take(4)
                    .map(|w| w.parse().map_err(|_| "bad message frame"))
                    .collect::<Result<_, _>>()?;
                let [uid, flags, date, len] = nums[..] else {
                    return Err("bad message frame".into());
                };
                let keywords: Vec<String> = words
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect();
                let len = usize::try_from(len).map_err(|_| "bad message length")?;
                if len > max {
                    // Not loaded: skipped on the wire.
                    std::io::copy(&mut reader.by_ref().take(len as u64), &mut std::io::sink())
                        .map_err(io)?;
                    answers.push(Some(format!(
                        "refused message of {len} bytes is over message_size_max ({max})"
                    )));
                    continue;
                }
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).map_err(io)?;
                let Some((opened, seen)) = current.as_mut() else {
                    answers.push(Some("refused no mailbox open".into()));
                    continue;
                };
                if memchr::memchr(0, &body).is_some() {
                    answers.push(Some("refused message contains NUL octets".into()));
                    continue;
                }
                // Idempotency: the k-th copy of a body in the source is
                // skipped if the mailbox holds at least k copies already.
                let d = digest(&body);
                let k = seen.entry(d).or_insert(0);
                *k += 1;
                if *k <= opened.digests.get(&d).copied().unwrap_or(0) {
                    answers.push(Some("present".into()));
                    continue;
                }
                batch.bytes += body.len();
                batch.messages.push(Incoming {
                    uid: u32::try_from(uid).unwrap_or(0),
                    flags: u32::try_from(flags).unwrap_or(0),
                    keywords,
                    internal_date: date,
                    body,
                });
                answers.push(None);
                if batch.messages.len() >= BATCH_MESSAGES_MAX || batch.bytes >= BATCH_BYTES_MAX {
                    flush(&mut batch, &mut answers, &current, &mut out)?;
                }
            }
            Some("end") => {
                flush(&mut batch, &mut answers, &current, &mut out)?;
                writeln!(out, "done").map_err(io)?;
                return out.flush().map_err(io);
            }
            _ => return Err(format!("bad frame {line:?}")),
        }
    }
}

/// `backup DIR`: a copy of the data directory that a server can start on,
/// holding everything durable when the backup began, while this one keeps
/// serving. The order is what makes it consistent:
///
/// 1. no compaction pass may run (one running is waited for), so no segment
///    file disappears and no body moves while we copy;
/// 2. checkpoints are copied first: each one includes the log only up to a
///    position that was durable when it was written;
/// 3. then every shard names its cut, the end of its last durable record
///    (every acknowledged message lies before it). Segments of earlier runs
///    and this run's sealed ones are hard-linked (copied across file
///    systems): they never change again. The segment holding a shard's cut
///    is copied up to the cut, the rest left zero (recovery stops at the
///    first zero record header), and later segments of that shard are left
///    out: they hold only records that were not yet durable;
/// 4. the meta file (with its format line), the account file, tls/ and
///    dkim/ are copied.
///
/// A server started on the copy replays each shard's log past the
/// checkpoints and serves everything up to the cuts.
fn backup(conn: &mut UnixStream, dir: &Path, ctx: &Context) -> Result<(), String> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    if !dir.is_absolute() {
        return Err("the backup directory must be an absolute path".into());
    }
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(format!("{} exists and is not empty", dir.display()));
    }
    let _mark = BackupMark::enter()?;
    let started = std::time::Instant::now();
    let src = &ctx.data_dir;
    // The copy holds mail and password hashes: directories 0700, files 0600
    // (the umask would leave them readable by others). An existing empty
    // directory is narrowed as well.
    for d in [dir.to_path_buf(), dir.join("segments"), dir.join("index")] {
        private_dir(&d)?;
    }
    // 2. checkpoints.
    let mut checkpoints = 0;
    for e in std::fs::read_dir(src.join("index")).map_err(io(src))? {
        let e = e.map_err(io(src))?;
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if !n.ends_with(".ckpt") {
            continue;
        }
        // Read whole: a checkpoint replaced meanwhile (by rename) still
        // reads as one version.
        match std::fs::read(e.path()) {
            Ok(bytes) => {
                write_durable(&dir.join("index").join(n), &bytes)?;
                checkpoints += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(format!("{}: {err}", e.path().display())),
        }
    }
    // 3. cuts, then segments.
    let mut cuts = Vec::new();
    for s in 0..ctx.shards.len() {
        let (tx, rx) = oneshot::channel();
        ctx.send(s, Work::Cut(tx))?;
        cuts.push(wait(rx)?);
    }
    let meta = storage::Meta::read(src).map_err(|e| e.to_string())?;
    writeln!(conn, "cut taken after {} ms", started.elapsed().as_millis())
        .map_err(|e| e.to_string())?;
    let (mut linked, mut copied, mut partial) = (0, 0, 0);
    let seg_dir = src.join("segments");
    for e in std::fs::read_dir(&seg_dir).map_err(io(&seg_dir))? {
        let e = e.map_err(io(&seg_dir))?;
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(segment::parse_file_name) else {
            continue;
        };
        let to = dir.join("segments").join(&name);
        let writer = usize::from(segment::id_writer(id));
        let cut = (segment::id_run(id) == meta.run)
            .then(|| cuts.get(writer))
            .flatten();
        match cut {
            Some(cut) if id > cut.seg => continue,
            Some(cut) if id == cut.seg => {
                if (cut.offset as usize) > segment::SEGMENT_HEADER_LEN {
                    copy_prefix(&e.path(), &to, cut.offset as u64)?;
                    partial += 1;
                }
            }
            _ => match std::fs::hard_link(e.path(), &to) {
                Ok(()) => linked += 1,
                // Another file system: a private copy.
                Err(_) => {
                    let len = e.metadata().map_err(io(&e.path()))?.len();
                    copy_prefix(&e.path(), &to, len)?;
                    copied += 1;
                }
            },
        }
    }
    // 4. the rest.
    for f in ["meta", crate::accounts::ACCOUNT_FILE] {
        match std::fs::read(src.join(f)) {
            Ok(bytes) => write_durable(&dir.join(f), &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{f}: {e}")),
        }
    }
    for d in ["tls", "dkim"] {
        copy_tree(&src.join(d), &dir.join(d), 0)?;
    }
    for d in [dir.join("segments"), dir.join("index"), dir.to_path_buf()] {
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io(&d))?;
    }
    writeln!(
        conn,
        "backup of {} done in {} ms: {linked} segments linked, {copied} copied, {partial} cut at the last durable record, {checkpoints} checkpoints",
        src.display(),
        started.elapsed().as_millis()
    )
    .map_err(|e| e.to_string())
}

/// Create a directory (and its parents) readable by the owner only.
fn private_dir(d: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e: std::io::Error| format!("{}: {e}", d.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
        .map_err(err)?;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// A new file of the backup, readable by the owner only.
fn private_file(to: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
}

fn write_durable(to: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = private_file(to).map_err(|e| format!("{}: {e}", to.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", to.display()))
}

/// Copy the first `len` bytes of a segment; the copy keeps the original
/// length, its tail a hole that reads as zeros.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", from.display());
    let src = std::fs::File::open(from).map_err(err)?;
    let full = src.metadata().map_err(err)?.len();
    let mut dst = private_file(to).map_err(|e| format!("{}: {e}", to.display()))?;
    std::io::copy(&mut (&src).take(len), &mut dst).map_err(err)?;
    dst.set_len(full).map_err(err)?;
    dst.sync_all().map_err(err)
}

/// Copy a small directory tree (tls/, dkim/): private keys, so the copy is
/// owner-only (directories 0700, files 0600) whatever the source's modes.
fn copy_tree(from: &Path, to: &Path, depth: u32) -> Result<(), String> {
    if depth > 4 || !from.is_dir() {
        return Ok(());
    }
    let err = |p: &Path| {
        let p = p.display().to_string();
        move |e: std::io::Error| format!("{p}: {e}")
    };
    private_dir(to)?;
    for e in std::fs::read_dir(from).map_err(err(from))? {
        let e = e.map_err(err(from))?;
        let t = e.file_type().map_err(err(from))?;
        let dest = to.join(e.file_name());
        if t.is_dir() {
            copy_tree(&e.path(), &dest, depth + 1)?;
        } else if t.is_file() {
            let mut src = std::fs::File::open(e.path()).map_err(err(&e.path()))?;
            let mut dst = private_file(&dest).map_err(err(&dest))?;
            std::io::copy(&mut src, &mut dst)
                .and_then(|_| dst.sync_all())
                .map_err(err(&dest))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_and_compaction_exclude_each_other() {
        let mark = BackupMark::enter().unwrap();
        assert!(
            CompactionGuard::enter().is_none(),
            "no compaction during a backup"
        );
        drop(mark);
        let guard = CompactionGuard::enter().expect("compaction once the backup ended");
        assert!(
            CompactionGuard::enter().is_none(),
            "one compaction pass at a time"
        );
        let waiter = std::thread::spawn(|| {
            let t = std::time::Instant::now();
            let _m = BackupMark::enter().unwrap();
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(guard);
        assert!(
            waiter.join().unwrap() >= Duration::from_millis(80),
            "the backup waited"
        );
    }

    #[test]
    fn kept_uids_are_valid_and_ascend() {
        assert_eq!(kept_uid(true, 5, 1), Some(5));
        assert_eq!(kept_uid(false, 5, 1), None);
        assert_eq!(kept_uid(true, 0, 1), None);
        assert_eq!(kept_uid(true, u32::MAX, 1), None);
        assert_eq!(kept_uid(true, u32::MAX - 1, 1), Some(u32::MAX - 1));
        // Out of order: a lower UID than one already given is renumbered.
        assert_eq!(kept_uid(true, 3, 6), None);
        assert_eq!(kept_uid(true, 6, 6), Some(6));
    }

    #[test]
    fn digests_tell_bodies_apart() {
        assert_eq!(digest(b"a"), digest(b"a"));
        assert_ne!(digest(b"a"), digest(b"b"));
        // Line ends as an export and import change them count as one.
        let stored = b"S: x\r\n\r\na\nb\r\r\nc\rd\r\n";
        let back = b"S: x\r\n\r\na\r\nb\r\nc\rd\r\n\r\n";
        assert_eq!(digest(stored), digest(back));
        assert_ne!(digest(b"a\rb"), digest(b"a\nb"), "a bare CR is text");
        assert_ne!(digest(b"a\n\nb"), digest(b"a\nb"), "blank lines count");
        assert_ne!(digest(b"ab"), digest(b"a\nb"));
        // Fed in pieces of any size: the same digest.
        for step in [1, 2, 3, 7] {
            let mut d = Digester::new();
            for p in stored.chunks(step) {
                d.update(p);
            }
            assert_eq!(d.finish(), digest(stored), "step {step}");
        }
        assert!(is_transfer("export a@b.test") && is_transfer("BACKUP /x"));
        assert!(!is_transfer("list") && !is_transfer("bans"));
    }
}
