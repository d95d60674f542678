//! Storage: append-only segment logs, per-account indexes, checkpoints,
//! group commit. Knows nothing of SMTP, POP3 or IMAP, and never sees a socket.
//!
//! Each shard owns one [`Store`]: the accounts of the buckets it owns
//! (`bucket % shards == shard`) and one log of segments it alone writes.
//! A change is a [`record::Op`] appended to the log; [`Store::commit`]
//! returns once the record is durable (fdatasync) and applied to the index.
//! All commits waiting at the same moment share one fdatasync (group commit).
//!
//! On disk, under the data directory:
//! - `segments/<id>.seg`: logs of every writer of every run (see `segment.rs`);
//! - `index/b<bucket>.ckpt`: rkyv checkpoint of one bucket's accounts plus the
//!   log position it includes;
//! - `meta`: bucket count and the run counter (see [`Meta`]).
//!
//! Recovery, per shard, before it serves: load its buckets' checkpoints, then
//! scan every segment written after them in log order, applying records of its
//! buckets, stopping each segment at its first torn record. Because buckets,
//! not shards, own accounts, a restart with another `cores` value only moves
//! whole buckets between shards.
pub mod index;
pub mod record;
pub mod segment;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use futures::channel::oneshot;

use crate::util::fnv1a64;
use index::{Account, BucketCheckpoint, LogPos, DEFAULT_MAILBOXES};
use record::{Loc, Op};
use segment::Segment;

#[derive(Debug, thiserror::Error, Clone)]
pub enum StorageError {
    #[error("I/O error: {0}")]
    Io(String),
    #[error("no space left for the message")]
    Full,
    #[error("record of {0} bytes cannot fit in a segment")]
    TooLarge(usize),
    #[error("no such account {0}")]
    NoAccount(String),
    #[error("no such mailbox")]
    NoMailbox,
    /// Cluster mode: the account's replica cannot take the change now.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            StorageError::Full
        } else {
            StorageError::Io(e.to_string())
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Which bucket an account lives in. Stable forever for a data directory.
pub fn bucket_of(account: &str, buckets: u32) -> u32 {
    (fnv1a64(account.as_bytes()) % u64::from(buckets)) as u32
}

/// Which shard owns a bucket.
pub fn shard_of_bucket(bucket: u32, shards: usize) -> usize {
    bucket as usize % shards
}

/// Version of the data directory's on-disk format: the meta file, segment
/// and record layout, record kinds, checkpoint archives. Any change that an
/// older binary would misread (a new record kind, a new segment header)
/// raises it, and [`Meta::start_run`] then refuses to let an older binary
/// open the directory. Checkpoints carry their own version as well
/// (`CHECKPOINT_VERSION`): a newer binary still reads older checkpoints.
///
/// Format 1 is the layout of every data directory written before the meta
/// file recorded a format; such a meta file (no `format` line) is format 1.
/// Format 2: Message and Link records of kinds 14 and 13 (with the EMAILID).
pub const DATA_FORMAT: u32 = 2;

/// Persistent facts of a data directory, in `<data>/meta` as `key = value` lines.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub buckets: u32,
    pub run: u32,
    /// [`DATA_FORMAT`] of the binary that last started on the directory.
    pub format: u32,
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl Meta {
    /// Parse the meta file's text; unknown keys are ignored.
    fn parse(text: &str, path: &Path) -> std::io::Result<Meta> {
        let mut meta = Meta {
            buckets: 0,
            run: 0,
            format: 1,
        };
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v: u32 = v
                .trim()
                .parse()
                .map_err(|_| invalid(format!("{}: bad value for {}", path.display(), k.trim())))?;
            match k.trim() {
                "buckets" => meta.buckets = v,
                "run" => meta.run = v,
                "format" => meta.format = v,
                _ => {}
            }
        }
        Ok(meta)
    }

    /// Refuse a directory written by a newer format than this binary knows:
    /// reading it could skip or cut records it does not understand.
    fn check_format(&self, data_dir: &Path) -> std::io::Result<()> {
        if self.format > DATA_FORMAT {
            return Err(invalid(format!(
                "data directory {} has format {}, newer than this ringmail {} reads (format {}); \
                 run the newer ringmail again, or restore a backup made for this version",
                data_dir.display(),
                self.format,
                env!("CARGO_PKG_VERSION"),
                DATA_FORMAT
            )));
        }
        Ok(())
    }

    /// Read the meta file without starting a run (offline inspection).
    pub fn read(data_dir: &Path) -> std::io::Result<Meta> {
        let path = data_dir.join("meta");
        let meta = Meta::parse(&std::fs::read_to_string(&path)?, &path)?;
        meta.check_format(data_dir)?;
        if meta.buckets == 0 {
            return Err(invalid("meta file without buckets".into()));
        }
        Ok(meta)
    }

    /// Read the meta file (creating the data directory layout on first use),
    /// increment the run counter and write it back durably, with this
    /// binary's [`DATA_FORMAT`]. Blocking: called once at start-up before
    /// the executors start.
    pub fn start_run(data_dir: &Path, default_buckets: u32) -> std::io::Result<Meta> {
        let path = data_dir.join("meta");
        let mut meta = match std::fs::read_to_string(&path) {
            Ok(text) => Meta::parse(&text, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Meta {
                buckets: default_buckets,
                run: 0,
                format: DATA_FORMAT,
            },
            Err(e) => return Err(e),
        };
        // Before anything is created or written.
        meta.check_format(data_dir)?;
        std::fs::create_dir_all(data_dir.join("segments"))?;
        std::fs::create_dir_all(data_dir.join("index"))?;
        if meta.buckets == 0 {
            return Err(invalid("buckets must be > 0".into()));
        }
        if meta.format < DATA_FORMAT {
            // Format 1 to 2 needs no migration: old Link records and older
            // checkpoints are read as they are. One would run here, before
            // the format line is raised.
            tracing::info!(
                from = meta.format,
                to = DATA_FORMAT,
                "data directory format upgraded"
            );
            meta.format = DATA_FORMAT;
        }
        meta.run += 1;
        if meta.run >= 1 << 24 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "run counter exhausted",
            ));
        }
        let tmp = data_dir.join("meta.tmp");
        std::fs::write(
            &tmp,
            format!(
                "format = {}\nbuckets = {}\nrun = {}\n",
                meta.format, meta.buckets, meta.run
            ),
        )?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()?;
        Ok(meta)
    }
}

/// Which mailbox of an account a delivery goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Folder {
    #[default]
    Inbox,
    /// The mailbox with the \Junk special use (mail that failed DMARC under
    /// p=quarantine).
    Junk,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub shard: usize,
    pub shards: usize,
    pub meta: Meta,
    pub segment_size: usize,
    pub checkpoint_every_records: u64,
    pub zero_segments: bool,
    pub append_through_map: bool,
    /// Group commits call fdatasync on the executor thread while the recent
    /// average sync took at most this long (µs); 0: always through io_uring.
    pub sync_inline_max_us: u64,
}

/// How far ahead of the write position `zero_segments` keeps the active segment zeroed.
const ZERO_AHEAD: usize = 4 * segment::ZERO_CHUNK;
/// Free disk beyond a segment's size needed to prepare the next segment early.
const SPARE_HEADROOM: u64 = 16 * 1024 * 1024;

struct Bucket {
    accounts: HashMap<String, Account>,
    /// Log position included by the last checkpoint (loaded or written).
    applied: LogPos,
    since_checkpoint: u64,
    checkpoint_running: bool,
}

/// A mailbox in [`Store::summary`]: name, message count, bytes.
pub type MailboxSummary = (String, usize, u64);

/// What one shard knows about one segment (compaction input).
#[derive(Debug, Clone, Copy)]
pub struct SegmentUsage {
    pub id: u64,
    pub used: u64,
    pub live: u64,
    pub writing: bool,
}

/// Pick the segments worth compacting from every shard's reports: not being
/// written anywhere, and with less than `live_percent` of their bytes live.
pub fn compaction_victims(reports: &[Vec<SegmentUsage>], live_percent: u32) -> Vec<u64> {
    let mut by_id: HashMap<u64, (u64, u64, bool)> = HashMap::new();
    for r in reports {
        for u in r {
            let e = by_id.entry(u.id).or_insert((0, 0, false));
            e.0 = e.0.max(u.used);
            e.1 += u.live;
            e.2 |= u.writing;
        }
    }
    let mut v: Vec<u64> = by_id
        .into_iter()
        .filter(|(_, (used, live, writing))| {
            !writing && *live * 100 < *used * u64::from(live_percent)
        })
        .map(|(id, _)| id)
        .collect();
    v.sort_unstable();
    v
}

/// A message body: a slice of a segment mapping, kept alive by the `Rc`.
#[derive(Clone)]
pub struct Body {
    seg: Rc<Segment>,
    loc: Loc,
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Body {
    pub fn bytes(&self) -> &[u8] {
        self.seg
            .slice(self.loc.offset as usize, self.loc.len as usize)
    }
    pub fn loc(&self) -> Loc {
        self.loc
    }
}

pub struct Store {
    cfg: StoreConfig,
    seg_dir: PathBuf,
    idx_dir: PathBuf,
    segments: RefCell<HashMap<u64, Rc<Segment>>>,
    active: RefCell<Option<Rc<Segment>>>,
    /// The next segment, created ahead of need (see `prepare_spare`).
    spare: RefCell<Option<Rc<Segment>>>,
    preparing: Cell<bool>,
    /// The last spare was skipped for want of disk (warned once).
    spare_skipped: Cell<bool>,
    /// A `zero_ahead` task is running.
    zeroing: Cell<bool>,
    /// Moving average of the group commits' sync time, in nanoseconds.
    sync_avg_ns: Cell<u64>,
    next_seq: Cell<u32>,
    roll_lock: glommio::sync::Semaphore,
    /// Commits waiting in `ensure_room`: later ones wait behind them.
    room_waiters: Cell<usize>,
    buckets: RefCell<HashMap<u32, Bucket>>,
    /// Accounts whose creation records have not been made durable yet.
    creating: RefCell<HashSet<String>>,
    // Group commit.
    written_epoch: Cell<u64>,
    synced_epoch: Cell<u64>,
    dirty: RefCell<Vec<Rc<Segment>>>,
    /// Records written but not yet durable, in log order: (segment, record offset).
    pending: RefCell<Vec<(Rc<Segment>, usize)>>,
    waiters: RefCell<Vec<(u64, oneshot::Sender<Result<()>>)>>,
    doorbell: RefCell<Option<oneshot::Sender<()>>>,
    /// Position just after the last durable record of this shard's log.
    synced_pos: Cell<LogPos>,
    meta_buf: RefCell<Vec<u8>>,
    /// Sessions waiting for the next change to an account (IMAP IDLE and
    /// friends): fired when a change to that account is applied.
    watchers: RefCell<HashMap<String, Vec<oneshot::Sender<()>>>>,
    /// Where this shard publishes its accounts' storage use, once set.
    usage: RefCell<Option<std::sync::Arc<UsageTable>>>,
    pub stats: StoreStats,
}

/// Octets each account uses ([`Account::used_octets`]), written by the
/// account's owner shard whenever a change to its size is applied and read
/// by every shard: an SMTP session checks a recipient's quota at RCPT on
/// whatever core accepted it (RFC 9208 section 5.1).
/// Striped by account, so that shards writing different accounts rarely
/// meet on one lock.
#[derive(Debug)]
pub struct UsageTable {
    stripes: Vec<std::sync::RwLock<HashMap<String, u64>>>,
}

const USAGE_STRIPES: usize = 64;

impl Default for UsageTable {
    fn default() -> Self {
        UsageTable {
            stripes: (0..USAGE_STRIPES).map(|_| Default::default()).collect(),
        }
    }
}

impl UsageTable {
    fn stripe(&self, account: &str) -> &std::sync::RwLock<HashMap<String, u64>> {
        &self.stripes[(fnv1a64(account.as_bytes()) % USAGE_STRIPES as u64) as usize]
    }

    /// The account's published use (0 for an account never written to).
    pub fn get(&self, account: &str) -> u64 {
        let map = self
            .stripe(account)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        map.get(account).copied().unwrap_or(0)
    }

    fn set(&self, account: &str, octets: u64) {
        let mut map = self
            .stripe(account)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match map.get_mut(account) {
            Some(v) => *v = octets,
            None => {
                map.insert(account.to_string(), octets);
            }
        }
    }
}

pub struct StoreStats {
    pub syncs: Cell<u64>,
    pub records: Cell<u64>,
    pub checkpoints: Cell<u64>,
    /// Time spent in fdatasync, summed over rounds.
    pub sync_nanos: Cell<u64>,
    /// Rounds whose fdatasync ran on the executor thread.
    pub inline_syncs: Cell<u64>,
    /// Segments deleted by compaction.
    pub compacted_segments: Cell<u64>,
    /// One group commit's fdatasync time, seconds.
    pub sync_seconds: crate::metrics::Hist,
    /// Records made durable by one group commit.
    pub commit_batch: crate::metrics::Hist,
}

impl Default for StoreStats {
    fn default() -> Self {
        StoreStats {
            syncs: Cell::new(0),
            records: Cell::new(0),
            checkpoints: Cell::new(0),
            sync_nanos: Cell::new(0),
            inline_syncs: Cell::new(0),
            compacted_segments: Cell::new(0),
            sync_seconds: crate::metrics::Hist::new(&crate::metrics::LATENCY_BOUNDS),
            commit_batch: crate::metrics::Hist::new(&crate::metrics::BATCH_BOUNDS),
        }
    }
}

impl Store {
    /// Open this shard's part of the data directory and recover its buckets.
    /// Uses blocking file reads: call before the shard serves connections.
    pub fn open(cfg: StoreConfig) -> std::io::Result<Rc<Store>> {
        let seg_dir = cfg.data_dir.join("segments");
        let idx_dir = cfg.data_dir.join("index");
        let store = Rc::new(Store {
            seg_dir,
            idx_dir,
            segments: RefCell::default(),
            active: RefCell::default(),
            spare: RefCell::default(),
            preparing: Cell::new(false),
            spare_skipped: Cell::new(false),
            zeroing: Cell::new(false),
            sync_avg_ns: Cell::new(0),
            next_seq: Cell::new(0),
            roll_lock: glommio::sync::Semaphore::new(1),
            room_waiters: Cell::new(0),
            buckets: RefCell::default(),
            creating: RefCell::default(),
            written_epoch: Cell::new(0),
            synced_epoch: Cell::new(0),
            dirty: RefCell::default(),
            pending: RefCell::default(),
            waiters: RefCell::default(),
            doorbell: RefCell::default(),
            synced_pos: Cell::new(LogPos::default()),
            meta_buf: RefCell::new(Vec::with_capacity(256)),
            watchers: RefCell::default(),
            usage: RefCell::default(),
            stats: StoreStats::default(),
            cfg,
        });
        store.recover()?;
        Ok(store)
    }

    pub fn shard(&self) -> usize {
        self.cfg.shard
    }

    /// Publish every account's storage use into `table` now and after every
    /// change from here on.
    pub fn publish_usage(&self, table: std::sync::Arc<UsageTable>) {
        for b in self.buckets.borrow().values() {
            for a in b.accounts.values() {
                table.set(&a.name, a.used_octets);
            }
        }
        *self.usage.borrow_mut() = Some(table);
    }

    /// Apply a record to an account and publish its storage use when the
    /// record changed it (eager DeleteMailbox as well as durable records).
    fn apply_and_publish(&self, a: &mut Account, op: &Op<'_>, body_loc: Option<Loc>) {
        let before = a.used_octets;
        a.apply(op, body_loc);
        if a.used_octets != before {
            if let Some(t) = self.usage.borrow().as_ref() {
                t.set(&a.name, a.used_octets);
            }
        }
    }

    /// Octets the account uses now (its applied changes).
    pub fn used_octets(&self, account: &str) -> u64 {
        self.with_account(account, |a| a.used_octets).unwrap_or(0)
    }

    pub fn bucket_of(&self, account: &str) -> u32 {
        bucket_of(account, self.cfg.meta.buckets)
    }

    pub fn owns(&self, account: &str) -> bool {
        shard_of_bucket(self.bucket_of(account), self.cfg.shards) == self.cfg.shard
    }

    fn my_buckets(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.cfg.meta.buckets)
            .filter(|b| shard_of_bucket(*b, self.cfg.shards) == self.cfg.shard)
    }

    fn recover(&self) -> std::io::Result<()> {
        let mut buckets = self.buckets.borrow_mut();
        for b in self.my_buckets() {
            let bucket = match load_checkpoint(&self.idx_dir, b)? {
                Some(c) => Bucket {
                    accounts: c
                        .accounts
                        .into_iter()
                        .map(|mut a| {
                            a.recount();
                            (a.name.clone(), a)
                        })
                        .collect(),
                    applied: c.applied,
                    since_checkpoint: 0,
                    checkpoint_running: false,
                },
                None => Bucket {
                    accounts: HashMap::new(),
                    applied: LogPos::default(),
                    since_checkpoint: 0,
                    checkpoint_running: false,
                },
            };
            buckets.insert(b, bucket);
        }
        let mut ids: Vec<u64> = std::fs::read_dir(&self.seg_dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| segment::parse_file_name(e.file_name().to_str()?))
            .collect();
        ids.sort_unstable();
        let mut segments = self.segments.borrow_mut();
        for id in ids {
            let seg = match Segment::open_read_only(&self.seg_dir.join(segment::file_name(id))) {
                Ok(s) => Rc::new(s),
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return Err(e),
                Err(e) => {
                    tracing::warn!(segment = id, error = %e, "skipping unreadable segment");
                    continue;
                }
            };
            // A segment wholly before every owned bucket's checkpoint only
            // serves bodies: map it, but don't read (and checksum) its records.
            if !buckets.values().any(|b| after(b.applied, id, usize::MAX)) {
                segments.insert(id, seg);
                continue;
            }
            let data = seg.all();
            let mut off = segment::SEGMENT_HEADER_LEN;
            while let Some(rec) = record::scan_at(data, off) {
                if let Some(bucket) = buckets.get_mut(&rec.bucket) {
                    if after(bucket.applied, id, off) {
                        match Op::decode(rec.kind, rec.payload) {
                            Some(op) => {
                                let body_loc =
                                    body_loc_of(&op, id, rec.payload_offset, rec.payload.len());
                                let account = op.account();
                                if !bucket.accounts.contains_key(account) {
                                    bucket
                                        .accounts
                                        .insert(account.into(), Account::new(account));
                                }
                                bucket
                                    .accounts
                                    .get_mut(account)
                                    .expect("inserted")
                                    .apply(&op, body_loc);
                                bucket.since_checkpoint += 1;
                            }
                            None => {
                                tracing::warn!(
                                    segment = id,
                                    offset = off,
                                    "undecodable record ends this segment"
                                );
                                break;
                            }
                        }
                    }
                }
                off = rec.next;
            }
            seg.set_end(off);
            segments.insert(id, seg);
        }
        // Everything of earlier runs is now applied: this run's log starts here.
        let start = LogPos {
            seg: segment::segment_id(self.cfg.meta.run, self.cfg.shard as u16, 0),
            offset: 0,
        };
        for bucket in buckets.values_mut() {
            bucket.applied = start;
        }
        self.synced_pos.set(start);
        Ok(())
    }

    /// Every account this shard holds, with its mailboxes' message counts and sizes.
    pub fn summary(&self) -> Vec<(String, Vec<MailboxSummary>)> {
        let mut out: Vec<_> = self
            .buckets
            .borrow()
            .values()
            .flat_map(|b| b.accounts.values())
            .map(|a| {
                (
                    a.name.clone(),
                    a.mailboxes
                        .iter()
                        .map(|m| (m.name.clone(), m.messages.len(), m.size_octets()))
                        .collect(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Messages of mail accounts (not relay queues) whose internal date is
    /// within `since..=until`, every copy (each mailbox's), the newest
    /// `max`, newest first: the accounts' names, and per message (index
    /// into the names, internal date, body location). Each name is cloned
    /// once, and at most `max` entries are kept sorted.
    pub fn messages_between(
        &self,
        since: i64,
        until: i64,
        max: usize,
    ) -> (Vec<String>, Vec<(u32, i64, Loc)>) {
        // Keep the newest `max` (unordered).
        let keep_newest = |v: &mut Vec<(u32, i64, Loc)>| {
            if v.len() > max {
                if max > 0 {
                    v.select_nth_unstable_by_key(max - 1, |m| std::cmp::Reverse(m.1));
                }
                v.truncate(max);
            }
        };
        let buckets = self.buckets.borrow();
        let mut names = Vec::new();
        let mut v: Vec<(u32, i64, Loc)> = Vec::new();
        for a in buckets.values().flat_map(|b| b.accounts.values()) {
            if a.name.starts_with(crate::relay::queue::QUEUE_PREFIX) {
                continue;
            }
            let before = v.len();
            let index = names.len() as u32;
            for m in a.mailboxes.iter().flat_map(|mb| mb.messages.iter()) {
                if (since..=until).contains(&m.internal_date) {
                    v.push((index, m.internal_date, m.loc));
                }
            }
            if v.len() > before {
                names.push(a.name.clone());
            }
            // Bounded while it grows: cut back to `max` at twice that.
            if max > 0 && v.len() >= 2 * max {
                keep_newest(&mut v);
            }
        }
        keep_newest(&mut v);
        v.sort_unstable_by_key(|m| std::cmp::Reverse(m.1));
        (names, v)
    }

    /// The mail accounts (not relay queues) of these buckets that have
    /// stored state on this shard.
    pub fn accounts_in_buckets(&self, buckets: &[u32]) -> Vec<String> {
        let all = self.buckets.borrow();
        let mut v: Vec<String> = buckets
            .iter()
            .filter_map(|b| all.get(b))
            .flat_map(|b| b.accounts.keys())
            .filter(|a| !a.starts_with(crate::relay::queue::QUEUE_PREFIX))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Accounts of this shard whose names start with `prefix` (relay queue
    /// accounts), sorted.
    pub fn accounts_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .buckets
            .borrow()
            .values()
            .flat_map(|b| b.accounts.keys())
            .filter(|a| a.starts_with(prefix))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Number of accounts this shard holds.
    pub fn account_count(&self) -> usize {
        self.buckets
            .borrow()
            .values()
            .map(|b| b.accounts.len())
            .sum()
    }

    /// Run `f` on an account's index, if the account has any mail state.
    pub fn with_account<R>(&self, account: &str, f: impl FnOnce(&Account) -> R) -> Option<R> {
        let b = self.bucket_of(account);
        let buckets = self.buckets.borrow();
        buckets.get(&b)?.accounts.get(account).map(f)
    }

    /// Mutable access for eager counters (UIDs, modseqs). Creates the account
    /// with its default mailboxes if needed, pushing the creation ops to `ops_out`.
    fn with_account_mut<R>(
        &self,
        account: &str,
        now: i64,
        creation: &mut Vec<(String, u32, u32, u8)>,
        f: impl FnOnce(&mut Account) -> R,
    ) -> R {
        let b = self.bucket_of(account);
        assert!(
            self.owns(account),
            "account {account} routed to the wrong shard"
        );
        let mut buckets = self.buckets.borrow_mut();
        let bucket = buckets.get_mut(&b).expect("owned bucket exists");
        let acc = bucket
            .accounts
            .entry(account.to_string())
            .or_insert_with(|| {
                let mut a = Account::new(account);
                let uidvalidity = now.clamp(1, u32::MAX as i64) as u32;
                for (id, name, su) in DEFAULT_MAILBOXES {
                    a.apply(
                        &Op::CreateMailbox {
                            account,
                            mailbox: id,
                            name,
                            uidvalidity,
                            special_use: su,
                        },
                        None,
                    );
                }
                self.creating.borrow_mut().insert(account.to_string());
                a
            });
        if self.creating.borrow().contains(account) {
            for m in &acc.mailboxes {
                creation.push((m.name.clone(), m.id, m.uidvalidity, m.special_use));
            }
        }
        f(acc)
    }

    /// Deliver one message to the INBOX of each account (all owned by this
    /// shard). The message is `prefix` followed by `body`. Returns the UIDs
    /// once every copy is durable.
    pub async fn deliver(
        &self,
        accounts: &[String],
        prefix: &[u8],
        body: &[u8],
        internal_date: i64,
    ) -> Result<Vec<u32>> {
        self.deliver_to(accounts, Folder::Inbox, prefix, body, internal_date)
            .await
    }

    /// [`Store::deliver`] into `folder` of each account: for
    /// [`Folder::Junk`], the account's first mailbox with the \Junk
    /// special use (RFC 6154), or its INBOX when it has none (deleted by the
    /// user). The same Message record and group commit as INBOX delivery.
    pub async fn deliver_to(
        &self,
        accounts: &[String],
        folder: Folder,
        prefix: &[u8],
        body: &[u8],
        internal_date: i64,
    ) -> Result<Vec<u32>> {
        let size = prefix.len() + body.len();
        if size + crate::limits::RECORD_OVERHEAD_MAX
            > self.cfg.segment_size - segment::SEGMENT_HEADER_LEN
        {
            return Err(StorageError::TooLarge(size));
        }
        // Reserve room for all copies first, so the writes below happen
        // without an await between them (a commit is atomic within the shard).
        let need: usize = accounts.len() * (size + crate::limits::RECORD_OVERHEAD_MAX) + 64 * 1024;
        self.ensure_room(need.min(self.cfg.segment_size - segment::SEGMENT_HEADER_LEN))
            .await?;
        let mut uids = Vec::with_capacity(accounts.len());
        let mut allocated: Vec<(&str, u32, u64)> = Vec::with_capacity(accounts.len());
        let written: Result<()> = async {
            let mut epoch_ops = 0;
            for account in accounts {
                if self.active_room() < size + crate::limits::RECORD_OVERHEAD_MAX {
                    // A multi-recipient message larger than one segment's room: commit
                    // what we have, roll, continue.
                    self.ensure_room(size + crate::limits::RECORD_OVERHEAD_MAX)
                        .await?;
                }
                let mut creation = Vec::new();
                let (mailbox, uid, modseq, email_id) =
                    self.with_account_mut(account, internal_date, &mut creation, |a| {
                        let id = match folder {
                            Folder::Inbox => index::INBOX,
                            Folder::Junk => a
                                .mailboxes
                                .iter()
                                .find(|m| m.special_use == index::special::JUNK)
                                .map_or(index::INBOX, |m| m.id),
                        };
                        let target = a.mailbox_mut(id).expect("every account has an INBOX");
                        let uid = target.uidnext;
                        target.uidnext += 1;
                        let modseq = target.allocate_pending_modseq();
                        (id, uid, modseq, a.allocate_email_id())
                    });
                allocated.push((account, mailbox, modseq));
                self.write_creation(account, &creation)?;
                let op = Op::Message {
                    account,
                    mailbox,
                    uid,
                    internal_date,
                    flags: 0,
                    keywords: 0,
                    modseq,
                    email_id,
                    body: &[],
                };
                self.write_message(&op, prefix, body)?;
                uids.push(uid);
                epoch_ops += 1;
            }
            debug_assert!(epoch_ops > 0 || accounts.is_empty());
            self.wait_durable().await
        }
        .await;
        if let Err(e) = written {
            self.forget_pending(allocated.iter().copied());
            return Err(e);
        }
        let mut creating = self.creating.borrow_mut();
        for a in accounts {
            creating.remove(a);
        }
        Ok(uids)
    }

    /// Write the CreateMailbox records of an account's default mailboxes
    /// (as `with_account_mut` listed them when it created the account).
    fn write_creation(&self, account: &str, creation: &[(String, u32, u32, u8)]) -> Result<()> {
        for (name, id, uidvalidity, su) in creation {
            self.write_op(
                &Op::CreateMailbox {
                    account,
                    mailbox: *id,
                    name,
                    uidvalidity: *uidvalidity,
                    special_use: *su,
                },
                &[],
            )?;
        }
        Ok(())
    }

    /// Log arbitrary ops (IMAP/POP3 changes) and wait until they are durable
    /// and applied. Ops that only change existing state (flags, mailbox names)
    /// are applied at once, so the next command computes from them; ops that
    /// add or remove messages become visible when durable.
    pub async fn commit(&self, ops: &[Op<'_>]) -> Result<()> {
        let r = self.commit_inner(ops).await;
        if r.is_err() {
            self.forget_pending(ops.iter().filter_map(Op::pending_modseq));
        }
        r
    }

    /// Records that will not be committed after all (cluster mode: the
    /// replica did not take them): as after a failed commit.
    pub fn abandon(&self, ops: &[Op<'_>]) {
        self.forget_pending(ops.iter().filter_map(Op::pending_modseq));
    }

    /// A commit failed: its records' mod-sequences no longer hold
    /// HIGHESTMODSEQ back (`Mailbox::reported_modseq`), or a client that
    /// watches HIGHESTMODSEQ for changes would wait for them forever.
    fn forget_pending<'a>(&self, pending: impl Iterator<Item = (&'a str, u32, u64)>) {
        let mut buckets = self.buckets.borrow_mut();
        for (account, mailbox, modseq) in pending {
            let b = self.bucket_of(account);
            if let Some(m) = buckets
                .get_mut(&b)
                .and_then(|bk| bk.accounts.get_mut(account))
                .and_then(|a| a.mailbox_mut(mailbox))
            {
                m.applied_modseq(modseq);
            }
        }
    }

    async fn commit_inner(&self, ops: &[Op<'_>]) -> Result<()> {
        let need: usize = ops
            .iter()
            .map(|o| o.body().map_or(0, |b| b.len()) + crate::limits::RECORD_OVERHEAD_MAX)
            .sum();
        self.ensure_room(need.min(self.cfg.segment_size - segment::SEGMENT_HEADER_LEN))
            .await?;
        for op in ops {
            if self.active_room()
                < op.body().map_or(0, |b| b.len()) + crate::limits::RECORD_OVERHEAD_MAX
            {
                return Err(StorageError::TooLarge(need));
            }
            match op {
                Op::Message { body, .. } => {
                    let body: &[u8] = body;
                    self.write_message(op, &[], body)?;
                }
                _ => {
                    self.write_op(op, op.body().unwrap_or(&[]))?;
                    if is_eager(op) {
                        let account = op.account();
                        let b = self.bucket_of(account);
                        let mut buckets = self.buckets.borrow_mut();
                        let bucket = buckets.get_mut(&b).expect("owned bucket");
                        let a = bucket
                            .accounts
                            .entry(account.into())
                            .or_insert_with(|| Account::new(account));
                        self.apply_and_publish(a, op, None);
                        drop(buckets);
                        self.notify(account);
                    }
                }
            }
        }
        self.wait_durable().await
    }

    /// Remove messages from a mailbox (POP3 UPDATE, IMAP EXPUNGE); returns once durable.
    pub async fn expunge(&self, account: &str, mailbox: u32, mut uids: Vec<u32>) -> Result<()> {
        uids.sort_unstable();
        uids.dedup();
        if uids.is_empty() {
            return Ok(());
        }
        let modseq = self.next_modseq(account, mailbox)?;
        self.commit(&[Op::Expunge {
            account,
            mailbox,
            uids,
            modseq,
        }])
        .await
    }

    /// Allocate the next modification sequence number of a mailbox (RFC 7162).
    pub fn next_modseq(&self, account: &str, mailbox: u32) -> Result<u64> {
        self.with_account_counters(account, |a| {
            let m = a.mailbox_mut(mailbox).ok_or(StorageError::NoMailbox)?;
            Ok(m.allocate_pending_modseq())
        })?
    }

    /// Usage of every segment this shard knows: bytes written, live body
    /// bytes referenced by this shard's accounts, and whether it is being written.
    /// Messages in every mailbox of this shard's accounts (walks the index).
    pub fn message_count(&self) -> u64 {
        self.buckets
            .borrow()
            .values()
            .flat_map(|b| b.accounts.values())
            .flat_map(|a| a.mailboxes.iter())
            .map(|m| m.messages.len() as u64)
            .sum()
    }

    /// Bytes written into this shard's segments (cheap: no walk of the index).
    pub fn segment_bytes(&self) -> u64 {
        self.segments
            .borrow()
            .values()
            .map(|s| s.write_pos() as u64)
            .sum()
    }

    /// The buckets this shard holds, in ascending order.
    pub fn bucket_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.buckets.borrow().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Live body bytes (each body once, however many mailboxes hold it) and
    /// messages of one bucket's accounts; (0, 0) for a bucket not held. The
    /// metrics walk a few buckets per second with it instead of the whole
    /// index at once (a walk of 100,000 messages takes several ms).
    pub fn bucket_live_and_messages(&self, bucket: u32) -> (u64, u64) {
        let buckets = self.buckets.borrow();
        let Some(b) = buckets.get(&bucket) else {
            return (0, 0);
        };
        let mut live = HashMap::new();
        let mut messages = 0u64;
        for a in b.accounts.values() {
            a.live_bytes(&mut live);
            messages += a
                .mailboxes
                .iter()
                .map(|m| m.messages.len() as u64)
                .sum::<u64>();
        }
        (live.values().sum(), messages)
    }

    pub fn segment_usage(&self) -> Vec<SegmentUsage> {
        let mut live = HashMap::new();
        for bucket in self.buckets.borrow().values() {
            for a in bucket.accounts.values() {
                a.live_bytes(&mut live);
            }
        }
        let active = self.active.borrow().as_ref().map(|s| s.id());
        self.segments
            .borrow()
            .values()
            .map(|seg| SegmentUsage {
                id: seg.id(),
                used: seg.write_pos() as u64,
                live: live.get(&seg.id()).copied().unwrap_or(0),
                writing: Some(seg.id()) == active,
            })
            .collect()
    }

    /// Copy every live body of this shard's accounts out of `victims` into the
    /// active segment (Relocate records), then checkpoint, so that neither the
    /// index nor a future recovery needs the victims. Then stop mapping them here.
    pub async fn evacuate(&self, victims: &HashSet<u64>) -> Result<()> {
        for _round in 0..3 {
            let mut moves: Vec<(String, Loc)> = Vec::new();
            for bucket in self.buckets.borrow().values() {
                for a in bucket.accounts.values() {
                    let mut seen = HashSet::new();
                    for m in &a.mailboxes {
                        for e in &m.messages {
                            if victims.contains(&e.loc.seg) && seen.insert(e.loc) {
                                moves.push((a.name.clone(), e.loc));
                            }
                        }
                    }
                }
            }
            if moves.is_empty() {
                self.checkpoint_all().await?;
                let mut segs = self.segments.borrow_mut();
                for v in victims {
                    segs.remove(v);
                }
                return Ok(());
            }
            for (account, old) in moves {
                let Some(body) = self.body(old) else { continue };
                self.commit(&[Op::Relocate {
                    account: &account,
                    old,
                    body: body.bytes(),
                }])
                .await?;
            }
        }
        Err(StorageError::Io(
            "segment still referenced after evacuation".into(),
        ))
    }

    /// A message body by location.
    pub fn body(&self, loc: Loc) -> Option<Body> {
        let seg = self.segments.borrow().get(&loc.seg)?.clone();
        if (loc.offset as usize + loc.len as usize) > seg.write_pos() {
            return None;
        }
        Some(Body { seg, loc })
    }

    fn active_room(&self) -> usize {
        self.active.borrow().as_ref().map_or(0, |s| s.room())
    }

    /// Make sure the active segment has `need` bytes of room, rolling to a new
    /// segment if not.
    async fn ensure_room(&self, need: usize) -> Result<()> {
        // Records are written in the order their commits began, even while
        // one waits for a new segment: UIDs and mod-sequences are taken
        // before the commit, and a smaller record that still fits must not
        // be written (and become durable, and be applied) before a larger
        // one taken earlier, or a session that saw UID n+1 never reports
        // UID n (RFC 3501 2.3.1.1: UIDs ascend in the order messages are
        // added). So while anyone waits here, everyone queues.
        if self.active_room() >= need && self.room_waiters.get() == 0 {
            return Ok(());
        }
        self.room_waiters.set(self.room_waiters.get() + 1);
        let r = self.ensure_room_in_turn(need).await;
        self.room_waiters.set(self.room_waiters.get() - 1);
        r
    }

    /// `ensure_room` in the roll lock's FIFO order.
    async fn ensure_room_in_turn(&self, need: usize) -> Result<()> {
        // Holding the roll lock also waits for a spare being prepared: segment
        // numbers must follow the order in which segments become active.
        let _guard = self
            .roll_lock
            .acquire_permit(1)
            .await
            .map_err(|e| StorageError::Io(e.to_string()))?;
        if self.active_room() >= need {
            return Ok(());
        }
        // Take the spare first: no RefCell borrow may live across the await.
        let spare = self.spare.borrow_mut().take();
        let seg = match spare {
            Some(spare) if spare.room() >= need => spare,
            _ => self.create_segment().await?,
        };
        self.segments.borrow_mut().insert(seg.id(), seg.clone());
        self.set_active(Some(seg));
        Ok(())
    }

    /// Make `seg` the segment appends go to (`None`: roll on the next
    /// append); the previous one writes out what it staged.
    fn set_active(&self, seg: Option<Rc<Segment>>) {
        let old = std::mem::replace(&mut *self.active.borrow_mut(), seg);
        if let Some(old) = old {
            old.retire();
        }
    }

    /// Create the next segment of this shard's log. Caller holds the roll lock.
    /// A failed attempt still uses up its number (gaps are harmless: only
    /// the order of segment numbers matters).
    async fn create_segment(&self) -> Result<Rc<Segment>> {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let id = segment::segment_id(self.cfg.meta.run, self.cfg.shard as u16, seq);
        Ok(Rc::new(
            Segment::create(
                &self.seg_dir,
                id,
                self.cfg.segment_size,
                self.cfg.zero_segments,
                self.cfg.append_through_map,
            )
            .await?,
        ))
    }

    /// Once the active segment is half full, create (and zero, if configured)
    /// the next one in the background, so rolling over never makes a
    /// delivery wait for a 64 MiB allocation.
    fn prepare_spare(self: &Rc<Self>) {
        let half_full = self
            .active
            .borrow()
            .as_ref()
            .is_some_and(|a| a.room() < self.cfg.segment_size / 2);
        if !half_full || self.preparing.get() || self.spare.borrow().is_some() {
            return;
        }
        // Not without room for it and some to spare: on a nearly full disk
        // the attempt would fill it for a moment and make other writes
        // (spool files, the active segment's zero fill) fail with ENOSPC.
        // The roll-over then tries again, and a full disk answers 452.
        let need = self.cfg.segment_size as u64 + SPARE_HEADROOM;
        if crate::util::free_space(&self.seg_dir).is_some_and(|free| free < need) {
            if !self.spare_skipped.replace(true) {
                tracing::warn!(
                    need,
                    "not preparing the next segment: the disk is nearly full"
                );
            }
            return;
        }
        self.spare_skipped.set(false);
        self.preparing.set(true);
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Ok(_guard) = me.roll_lock.acquire_permit(1).await {
                match me.create_segment().await {
                    Ok(seg) => *me.spare.borrow_mut() = Some(seg),
                    Err(e) => tracing::warn!(error = %e, "preparing the next segment failed"),
                }
            }
            me.preparing.set(false);
        })
        .detach();
    }

    /// With `zero_segments`, keep the active segment zero-filled ahead of
    /// its write position (`Segment::zero_ahead`), one task at a time.
    fn zero_ahead(self: &Rc<Self>) {
        if !self.cfg.zero_segments || self.zeroing.get() {
            return;
        }
        let Some(seg) = self.active.borrow().clone() else {
            return;
        };
        if !seg.wants_zeroing(ZERO_AHEAD) {
            return;
        }
        self.zeroing.set(true);
        let me = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = seg.zero_ahead(ZERO_AHEAD).await {
                tracing::warn!(segment = seg.id(), error = %e, "zero-filling ahead of the log failed");
            }
            me.zeroing.set(false);
        })
        .detach();
    }

    fn write_op(&self, op: &Op<'_>, body: &[u8]) -> Result<()> {
        let mut meta = self.meta_buf.borrow_mut();
        meta.clear();
        op.encode_meta(&mut meta);
        self.write_parts(op, &[&meta, body])
    }

    /// A Message record whose body is `prefix ++ body` (the op's own body is ignored).
    fn write_message(&self, op: &Op<'_>, prefix: &[u8], body: &[u8]) -> Result<()> {
        let Op::Message {
            account,
            mailbox,
            uid,
            internal_date,
            flags,
            keywords,
            modseq,
            email_id,
            ..
        } = *op
        else {
            unreachable!("write_message takes Message ops")
        };
        let len = prefix.len() + body.len();
        let mut meta = self.meta_buf.borrow_mut();
        meta.clear();
        // Encode metadata with a placeholder body of the right length.
        let shadow = Op::Message {
            account,
            mailbox,
            uid,
            internal_date,
            flags,
            keywords,
            modseq,
            email_id,
            body: &[],
        };
        shadow.encode_meta(&mut meta);
        let n = meta.len();
        meta[n - 4..].copy_from_slice(&(len as u32).to_le_bytes());
        self.write_parts(op, &[&meta, prefix, body])
    }

    fn write_parts(&self, op: &Op<'_>, parts: &[&[u8]]) -> Result<()> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        let total = record::record_len(payload_len);
        let active = self
            .active
            .borrow()
            .clone()
            .ok_or(StorageError::Io("no active segment".into()))?;
        if active.room() < total {
            return Err(StorageError::TooLarge(total));
        }
        let bucket = self.bucket_of(op.account());
        let header = record::header(op, bucket, parts);
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&header);
        all.extend_from_slice(parts);
        let at = match active.append(&all, total) {
            Ok(at) => at,
            Err(e) => {
                if active.has_failed() {
                    // Retire it: the next commit rolls to a new segment, and
                    // the next sync fails every commit staged in this one.
                    self.set_active(None);
                }
                return Err(e.into());
            }
        };
        self.stats.records.set(self.stats.records.get() + 1);
        self.pending.borrow_mut().push((active.clone(), at));
        let mut dirty = self.dirty.borrow_mut();
        if !dirty.iter().any(|s| Rc::ptr_eq(s, &active)) {
            dirty.push(active);
        }
        self.written_epoch.set(self.written_epoch.get() + 1);
        Ok(())
    }

    /// Wait until everything this task wrote is durable and applied.
    async fn wait_durable(&self) -> Result<()> {
        let epoch = self.written_epoch.get();
        if self.synced_epoch.get() >= epoch {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push((epoch, tx));
        if let Some(bell) = self.doorbell.borrow_mut().take() {
            let _ = bell.send(());
        }
        rx.await
            .unwrap_or_else(|_| Err(StorageError::Io("store shut down".into())))
    }

    /// The group-commit loop: one task per shard. Each round syncs every
    /// segment dirtied since the last round with one fdatasync each (usually
    /// just the active one), then applies the records and wakes the waiters.
    pub async fn run_syncer(self: Rc<Self>) {
        loop {
            if self.synced_epoch.get() >= self.written_epoch.get()
                || self.waiters.borrow().is_empty()
            {
                let (tx, rx) = oneshot::channel();
                *self.doorbell.borrow_mut() = Some(tx);
                if rx.await.is_err() {
                    return;
                }
                continue;
            }
            self.sync_round().await;
            self.prepare_spare();
            self.zero_ahead();
        }
    }

    /// One group commit: make everything written so far durable.
    pub async fn sync_round(&self) {
        let target = self.written_epoch.get();
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let mut result = Ok(());
        // A fast disk answers an fdatasync in well under a millisecond: then
        // blocking the executor for it costs less than handing it to an
        // io_uring worker thread and parking until the completion (two
        // thread wake-ups on a busy machine), and the events that arrive
        // meanwhile are handled in one batch afterwards. A slow disk (the
        // average above the limit) would stall every session of the shard
        // for that long, so its syncs go through io_uring.
        let inline = self.cfg.sync_inline_max_us > 0
            && self.sync_avg_ns.get() <= self.cfg.sync_inline_max_us.saturating_mul(1000);
        let started = std::time::Instant::now();
        for seg in &dirty {
            if let Err(e) = seg.sync(inline).await {
                tracing::error!(segment = seg.id(), error = %e, "fdatasync failed");
                result = Err(StorageError::from(e));
            }
        }
        let took = started.elapsed().as_nanos() as u64;
        // Exponential moving average over about the last 8 rounds.
        let avg = self.sync_avg_ns.get();
        self.sync_avg_ns.set(avg - avg / 8 + took / 8);
        self.stats.syncs.set(self.stats.syncs.get() + 1);
        self.stats
            .inline_syncs
            .set(self.stats.inline_syncs.get() + u64::from(inline));
        self.stats
            .sync_nanos
            .set(self.stats.sync_nanos.get() + took);
        self.stats.sync_seconds.observe(took as f64 / 1e9);
        self.stats.commit_batch.observe(pending.len() as f64);
        if result.is_ok() {
            self.apply_pending(&pending);
        } else {
            // Pages we cannot prove durable: stop writing into this segment.
            self.set_active(None);
        }
        self.synced_epoch.set(target);
        let mut waiters = self.waiters.borrow_mut();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= target {
                let (_, tx) = waiters.swap_remove(i);
                let _ = tx.send(result.clone());
            } else {
                i += 1;
            }
        }
        drop(waiters);
        self.maybe_checkpoint();
    }

    fn apply_pending(&self, pending: &[(Rc<Segment>, usize)]) {
        let mut buckets = self.buckets.borrow_mut();
        for (seg, at) in pending {
            let rec = record::frame_at(seg.slice(0, seg.write_pos()), *at)
                .expect("record we just wrote frames");
            let op = Op::decode(rec.kind, rec.payload).expect("record we just wrote decodes");
            let bucket = buckets.get_mut(&rec.bucket).expect("owned bucket");
            bucket.since_checkpoint += 1;
            self.synced_pos.set(LogPos {
                seg: seg.id(),
                offset: rec.next as u32,
            });
            if is_eager(&op) {
                continue;
            }
            let body_loc = body_loc_of(&op, seg.id(), rec.payload_offset, rec.payload.len());
            if let Some(a) = bucket.accounts.get_mut(op.account()) {
                self.apply_and_publish(a, &op, body_loc);
            }
            self.notify(op.account());
        }
    }

    /// The position just after this shard's last durable record: every
    /// acknowledged change lies before it (a backup's cut).
    pub fn durable_pos(&self) -> LogPos {
        self.synced_pos.get()
    }

    /// Resolves after the next change to `account` becomes visible.
    pub fn watch(&self, account: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.watchers.borrow_mut();
        let list = w.entry(account.to_string()).or_default();
        list.retain(|s| !s.is_canceled());
        list.push(tx);
        rx
    }

    fn notify(&self, account: &str) {
        if let Some(list) = self.watchers.borrow_mut().remove(account) {
            for tx in list {
                let _ = tx.send(());
            }
        }
    }

    /// Make sure an account exists with its default mailboxes, durably.
    pub async fn ensure_account(&self, account: &str) -> Result<()> {
        let mut creation = Vec::new();
        self.with_account_mut(account, crate::util::unix_now(), &mut creation, |_| ());
        if creation.is_empty() {
            return Ok(());
        }
        let need = creation.len() * 512;
        self.ensure_room(need).await?;
        self.write_creation(account, &creation)?;
        self.wait_durable().await?;
        self.creating.borrow_mut().remove(account);
        Ok(())
    }

    /// Run `f` on an existing account's index mutably: for counters that
    /// advance when a record is written (UIDs, modseqs, mailbox ids, keyword bits).
    pub fn with_account_counters<R>(
        &self,
        account: &str,
        f: impl FnOnce(&mut Account) -> R,
    ) -> Result<R> {
        let b = self.bucket_of(account);
        let mut buckets = self.buckets.borrow_mut();
        let acc = buckets
            .get_mut(&b)
            .and_then(|bk| bk.accounts.get_mut(account))
            .ok_or_else(|| StorageError::NoAccount(account.into()))?;
        Ok(f(acc))
    }

    fn maybe_checkpoint(&self) {
        let every = self.cfg.checkpoint_every_records;
        let due: Vec<u32> = self
            .buckets
            .borrow()
            .iter()
            .filter(|(_, b)| b.since_checkpoint >= every && !b.checkpoint_running)
            .map(|(k, _)| *k)
            .collect();
        for b in due {
            if let Some((bytes, pos)) = self.checkpoint_bytes(b) {
                let dir = self.idx_dir.clone();
                glommio::spawn_local(write_checkpoint_task(dir, b, bytes)).detach();
                let mut buckets = self.buckets.borrow_mut();
                let bucket = buckets.get_mut(&b).expect("bucket");
                bucket.applied = pos;
                bucket.since_checkpoint = 0;
                self.stats.checkpoints.set(self.stats.checkpoints.get() + 1);
            }
        }
    }

    /// Serialize a bucket's accounts with the position they include.
    fn checkpoint_bytes(&self, b: u32) -> Option<(Vec<u8>, LogPos)> {
        let buckets = self.buckets.borrow();
        let bucket = buckets.get(&b)?;
        // Everything durable is applied; pending (unsynced) records lie after synced_pos.
        let pos = self.synced_pos.get();
        let mut accounts: Vec<Account> = bucket.accounts.values().cloned().collect();
        accounts.sort_by(|a, b| a.name.cmp(&b.name));
        let c = BucketCheckpoint {
            version: CHECKPOINT_VERSION,
            bucket: b,
            applied: pos,
            accounts,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&c).ok()?;
        Some((bytes.into_vec(), pos))
    }

    /// Checkpoint every bucket that changed since its last checkpoint and wait
    /// for the files to be durable (clean shutdown).
    pub async fn checkpoint_all(&self) -> Result<()> {
        // Only the syncer task runs sync rounds (two concurrent rounds could
        // acknowledge records before their own fdatasync): wait for it.
        self.wait_durable().await?;
        let due: Vec<u32> = self
            .buckets
            .borrow()
            .iter()
            .filter(|(_, b)| b.since_checkpoint > 0)
            .map(|(k, _)| *k)
            .collect();
        for b in due {
            if let Some((bytes, pos)) = self.checkpoint_bytes(b) {
                write_checkpoint(&self.idx_dir, b, &bytes).await?;
                let mut buckets = self.buckets.borrow_mut();
                let bucket = buckets.get_mut(&b).expect("bucket");
                bucket.applied = pos;
                bucket.since_checkpoint = 0;
            }
        }
        Ok(())
    }
}

/// Version 2 added `Account::queue` (relay queues), version 3
/// `Account::uidvalidity_max`, version 4 each mailbox's expunged UIDs
/// (`Mailbox::vanished`, QRESYNC). Versions 1 to 3 are still read
/// (`index::v1`, `index::v2`, `index::v3`); any other version is refused at
/// start, loudly, rather than replaying from segments that compaction may
/// have deleted. So a binary older than version 4 cannot start on a data
/// directory a newer one has checkpointed: downgrade with `ringmail export`
/// and `import`.
const CHECKPOINT_VERSION: u32 = 5;
const CHECKPOINT_MAGIC: &[u8; 4] = b"RMCK";
/// Header before the rkyv bytes: magic, version, length, crc32. 16 bytes keeps
/// the archive 16-byte aligned inside a page-aligned mapping.
const CHECKPOINT_HEADER: usize = 16;

fn checkpoint_path(dir: &Path, bucket: u32) -> PathBuf {
    dir.join(format!("b{bucket:05}.ckpt"))
}

async fn write_checkpoint_task(dir: PathBuf, bucket: u32, bytes: Vec<u8>) {
    if let Err(e) = write_checkpoint(&dir, bucket, &bytes).await {
        tracing::error!(bucket, error = %e, "checkpoint failed");
    }
}

/// Write a checkpoint durably: temporary file, fdatasync, rename, directory sync.
async fn write_checkpoint(dir: &Path, bucket: u32, archive: &[u8]) -> Result<()> {
    let mut data = Vec::with_capacity(CHECKPOINT_HEADER + archive.len());
    data.extend_from_slice(CHECKPOINT_MAGIC);
    data.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    data.extend_from_slice(&(archive.len() as u32).to_le_bytes());
    data.extend_from_slice(&crc32fast::hash(archive).to_le_bytes());
    data.extend_from_slice(archive);
    let tmp = dir.join(format!("b{bucket:05}.ckpt.tmp.{}", rand::random::<u32>()));
    let io = |e: glommio::GlommioError<()>| StorageError::from(std::io::Error::from(e));
    let mut f = glommio::io::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(&tmp)
        .await
        .map_err(io)?;
    f.write_at(data, 0).await.map_err(io)?;
    f.fdatasync().await.map_err(io)?;
    f.rename(checkpoint_path(dir, bucket)).await.map_err(io)?;
    f.close().await.map_err(io)?;
    glommio::io::Directory::open(dir)
        .await
        .map_err(io)?
        .sync()
        .await
        .map_err(io)?;
    Ok(())
}

/// Load a bucket checkpoint through a read-only mapping, checking its checksum
/// and validating the archive before any field is read.
fn load_checkpoint(dir: &Path, bucket: u32) -> std::io::Result<Option<BucketCheckpoint>> {
    let path = checkpoint_path(dir, bucket);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |m: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    // SAFETY: checkpoint files are written once under a temporary name and
    // renamed into place; nothing modifies them while mapped.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    if map.len() < CHECKPOINT_HEADER || &map[0..4] != CHECKPOINT_MAGIC {
        return Err(bad("not a checkpoint"));
    }
    let len = u32::from_le_bytes(map[8..12].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(map[12..16].try_into().unwrap());
    let archive = map
        .get(CHECKPOINT_HEADER..CHECKPOINT_HEADER + len)
        .ok_or_else(|| bad("truncated"))?;
    if crc32fast::hash(archive) != crc {
        return Err(bad("checksum mismatch"));
    }
    let version = u32::from_le_bytes(map[4..8].try_into().unwrap());
    let c: BucketCheckpoint = match version {
        CHECKPOINT_VERSION => {
            let archived = rkyv::access::<index::ArchivedBucketCheckpoint, rkyv::rancor::Error>(archive)
                .map_err(|e| bad(&format!("invalid archive: {e}")))?;
            rkyv::deserialize::<_, rkyv::rancor::Error>(archived).map_err(|e| bad(&format!("{e}")))?
        }
        4 => {
            let archived = rkyv::access::<index::v4::ArchivedBucketCheckpoint, rkyv::rancor::Error>(archive)
                .map_err(|e| bad(&format!("invalid archive: {e}")))?;
            let old: index::v4::BucketCheckpoint =
                rkyv::deserialize::<_, rkyv::rancor::Error>(archived).map_err(|e| bad(&format!("{e}")))?;
            old.into()
        }
        3 => {
            let archived = rkyv::access::<index::v3::ArchivedBucketCheckpoint, rkyv::rancor::Error>(archive)
                .map_err(|e| bad(&format!("invalid archive: {e}")))?;
            let old: index::v3::BucketCheckpoint =
                rkyv::deserialize::<_, rkyv::rancor::Error>(archived).map_err(|e| bad(&format!("{e}")))?;
            old.into()
        }
        2 => {
            let archived = rkyv::access::<index::v2::ArchivedBucketCheckpoint, rkyv::rancor::Error>(archive)
                .map_err(|e| bad(&format!("invalid archive: {e}")))?;
            let old: index::v2::BucketCheckpoint =
                rkyv::deserialize::<_, rkyv::rancor::Error>(archived).map_err(|e| bad(&format!("{e}")))?;
            old.into()
        }
        1 => {
            let archived = rkyv::access::<index::v1::ArchivedBucketCheckpoint, rkyv::rancor::Error>(archive)
                .map_err(|e| bad(&format!("invalid archive: {e}")))?;
            let old: index::v1::BucketCheckpoint =
                rkyv::deserialize::<_, rkyv::rancor::Error>(archived).map_err(|e| bad(&format!("{e}")))?;
            old.into()
        }
        v => return Err(bad(&format!("checkpoint format {v} is not supported by this version (expected {CHECKPOINT_VERSION})"))),
    };
    if c.bucket != bucket {
        return Err(bad("checkpoint of another bucket"));
    }
    Ok(Some(c))
}

/// Ops applied to the index as soon as they are written (see [`Store::commit`]).
/// Records applied when written, before they are durable (they only
/// change existing state); the others are applied once durable.
pub fn is_eager(op: &Op<'_>) -> bool {
    matches!(
        op,
        Op::CreateMailbox { .. }
            | Op::DeleteMailbox { .. }
            | Op::RenameMailbox { .. }
            | Op::Subscribe { .. }
            | Op::Flags { .. }
            | Op::Keyword { .. }
    )
}

/// Where the body of a Message/Relocate record sits: the payload's tail.
fn body_loc_of(op: &Op<'_>, seg: u64, payload_offset: usize, payload_len: usize) -> Option<Loc> {
    let body = op.body()?;
    Some(Loc {
        seg,
        offset: (payload_offset + payload_len - body.len()) as u32,
        len: body.len() as u32,
    })
}

/// Is the record at (`seg`, `offset`) after the checkpoint position `applied`?
/// Within one run a bucket has a single writer, so positions of one run
/// compare within that writer's log; a later run always comes after.
fn after(applied: LogPos, seg: u64, offset: usize) -> bool {
    if applied.seg == 0 {
        return true;
    }
    let (run, prun) = (segment::id_run(seg), segment::id_run(applied.seg));
    if run != prun {
        return run > prun;
    }
    if segment::id_writer(seg) != segment::id_writer(applied.seg) {
        // Another writer of the same run never holds this bucket's records.
        return false;
    }
    (seg, offset as u64) >= (applied.seg, u64::from(applied.offset))
}

#[cfg(test)]
mod tests;
