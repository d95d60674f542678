//! Cluster mode: copying the mail of buckets a node gained (as their new
//! replica, or as their new primary through a drain) from the node that
//! holds it (`cluster::catchup::pulls` says which and from where).
//!
//! Each shard plans against every new map it sees (`plan`, from the
//! once-a-second tick) and one task per shard works through its list
//! (`work`): per source node, one connection to its internal listener,
//! STARTTLS with the node's published certificate pinned and ours
//! presented (the same checks as a hand-over), then
//!
//! ```text
//! XSYNC <map version> <bucket>,<bucket>,...
//! 250 2.0.0 Buckets follow
//! <the export stream of every account of those buckets>   (crate::transfer)
//! end
//! ```
//!
//! after which the source closes. The source first waits until its own map
//! is at least as new as the puller's, so every delivery it commits after
//! its snapshots is replicated to the puller already.
//!
//! The copy is additive and idempotent: a mailbox is created when missing
//! (UIDVALIDITY and UIDs kept where the mailbox is new, as an import
//! does), and a message the mailbox already holds is skipped. "Already
//! holds" compares the message without its leading trace fields, since
//! each node's copy of a delivery carries its own Received: and
//! Return-Path: (`transfer::Digests::Content`); the k-th copy in the source
//! is skipped if the target holds k. A failed copy is tried again
//! (`retry_pause`: every 2 s, then backing off to 16 s while it keeps
//! failing) while the node still holds the bucket. What a copy does
//! not do: remove what the source no longer has, or carry flag changes to
//! messages the target already holds (record-level replication would).
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use super::peer::{bytes, command, line, STEP_TIMEOUT};
use super::shard::{Shard, ShardMsg};
use super::transfer::{self, Digests, Incoming, Opened, Piece};
use crate::cluster::catchup::{pulls, Pull};
use crate::cluster::changes::{Change, Digest};
use crate::cluster::Placement;
use crate::storage;
use crate::transport::Conn;

/// The command a puller sends after STARTTLS.
const VERB: &[u8] = b"XSYNC ";
/// The command a bucket's primary sends its replica after a copy that
/// had waited for a returning node added older mail to the bucket:
/// `XPULL <map version> <primary> <bucket>,...`. The replica copied the
/// bucket from the primary before that mail was there, so it copies the
/// bucket again (the copy skips what it holds).
const PULL_VERB: &[u8] = b"XPULL ";
/// How long a source waits for its map to reach the puller's version.
const MAP_WAIT: Duration = Duration::from_secs(5);
/// How long a source waits for operations that routed with an older map
/// (`Shard::settled`); every one of them is bounded by the hand-over and
/// commit timeouts, and the puller asks again after a refusal.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// A source's answer while it waits for them: the same source is asked
/// again (it holds the newest state), not the next that held the bucket.
const STILL_RUNNING: &str = "Deliveries routed with an older bucket map are still running";
/// Bucket copies a node sends at once, over all its shards: each holds a
/// snapshot of an account at a time and a connection, and a member could
/// otherwise open any number.
pub const SENDS_MAX: usize = 4;
/// A source's answer when it sends [`SENDS_MAX`] copies already: the same
/// source is asked again after [`RETRY_AFTER`], like [`STILL_RUNNING`].
const TOO_MANY: &str = "Too many bucket copies are being sent; try again later";
/// A source's answer while its map is older than the puller's: asked
/// again, like [`STILL_RUNNING`] (it is catching up with etcd's watch).
const MAP_NOT_SEEN: &str = "This node has not seen that bucket map yet";
/// Before a failed copy is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Before a bucket whose primary was itself still copying it is copied
/// again.
const INCOMPLETE_AGAIN: Duration = Duration::from_secs(60);
/// Rounds that fail in a row before the pause grows ([`retry_pause`]).
const RETRIES_AT_FULL_SPEED: u32 = 3;
/// The longest pause between rounds that keep failing.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(16);

/// The pause before the next round, after `failed` rounds in a row had a
/// copy fail (not only ask for time): [`RETRY_AFTER`] for the first few,
/// then doubling up to [`RETRY_AFTER_MAX`], so a source that keeps failing
/// (a broken disk, a certificate that does not match) is not asked every
/// 2 s for ever.
fn retry_pause(failed: u32) -> Duration {
    let over = failed.saturating_sub(RETRIES_AT_FULL_SPEED).min(8);
    (RETRY_AFTER * 2u32.pow(over)).min(RETRY_AFTER_MAX)
}
/// A batch is stored at this many messages or bytes (one commit each).
const BATCH_MESSAGES_MAX: usize = 64;
const BATCH_BYTES_MAX: usize = 4 << 20;
/// (account, mailbox, message digest).
type Touched = (String, String, Digest);

/// (account, mailbox, message) pairs a shard tracks as touched by changes
/// during its bucket copies ([`State::touched`]).
const TOUCHED_MAX: usize = 100_000;
/// Keywords a mailbox frame may announce (the store keeps 64 per mailbox).
const KEYWORDS_MAX: usize = crate::session::imap::KEYWORDS_MAX;

/// A shard's catch-up state.
#[derive(Default)]
pub struct State {
    /// The map (and version) the last plan was made against.
    planned: RefCell<Option<(i64, Placement)>>,
    queue: RefCell<Vec<Pull>>,
    running: Cell<bool>,
    /// Buckets queued or being copied.
    copying: RefCell<HashSet<u32>>,
    /// Copies with no live source: every node that held the bucket is
    /// gone. Each waits for one of them to come back (checked by [`plan`]
    /// every tick) while this node holds the bucket; at most one per
    /// bucket.
    waiting: RefCell<Vec<Pull>>,
    /// Buckets whose copy waited and runs again: once it added mail, the
    /// bucket's replica is asked to copy it again ([`ask_replicas`]).
    resumed: RefCell<HashSet<u32>>,
    /// The waiting copies a previous run saved were read.
    loaded: Cell<bool>,
    /// Every copy not done yet (queued, running, between retries, or
    /// waiting), by bucket: kept in the data directory ([`State::save`]),
    /// since until it is done this node may lack older mail of the bucket.
    open: RefCell<BTreeMap<u32, Pull>>,
    /// Per bucket being copied: (account, mailbox, digest) of messages a
    /// change applied here touched during the copy (`changes::apply_here`).
    /// The copy leaves their flags alone and does not bring them back if
    /// they are gone (the change is newer than or equal to its snapshot).
    touched: RefCell<HashMap<u32, HashSet<Touched>>>,
    /// Buckets whose `touched` outgrew [`TOUCHED_MAX`]: their copy only
    /// adds (no flag setting, no expunges) this time.
    untracked: RefCell<HashSet<u32>>,
    /// Buckets whose changes overflowed `changes::Deferred` during their
    /// copy: copied once more afterwards (the copy brings their effect).
    again: RefCell<HashSet<u32>>,
    /// Per bucket, the accounts a copy that did not finish stored whole:
    /// a later copy of the bucket passes them over, so what was expunged
    /// here since does not come back.
    finished: RefCell<HashMap<u32, HashSet<String>>>,
}

impl State {
    /// `bucket` is no longer copied to this shard: what waited for it goes.
    fn done(&self, shard: &Shard, bucket: u32) {
        self.stop_copying(shard, bucket);
        if self.open.borrow_mut().remove(&bucket).is_some() {
            self.save(shard);
        }
    }

    /// `bucket` is not being copied now: its kept and touched changes go.
    fn stop_copying(&self, shard: &Shard, bucket: u32) {
        self.copying.borrow_mut().remove(&bucket);
        shard.deferred_changes.forget(bucket);
        self.forget_touched(bucket);
        self.publish(shard);
    }

    /// Tell the node's other shards which buckets this one is copying or
    /// waits to copy (`Shared::copies_open`, read by [`serve`]).
    fn publish(&self, shard: &Shard) {
        let open: HashSet<u32> = self
            .copying
            .borrow()
            .iter()
            .copied()
            .chain(self.waiting.borrow().iter().map(|w| w.bucket))
            .collect();
        if let Ok(mut m) = shard.shared.copies_open.lock() {
            m.insert(shard.id, open);
        }
    }

    /// Is `bucket` queued or being copied to this shard?
    pub fn is_copying(&self, bucket: u32) -> bool {
        self.copying.borrow().contains(&bucket)
    }

    /// A change applied here while `bucket` is copied touched these
    /// (mailbox, message) pairs of `account`.
    pub fn touched(
        &self,
        bucket: u32,
        account: &str,
        pairs: impl Iterator<Item = (String, Digest)>,
    ) {
        if self.untracked.borrow().contains(&bucket) {
            return;
        }
        let mut touched = self.touched.borrow_mut();
        let total: usize = touched.values().map(HashSet::len).sum();
        let set = touched.entry(bucket).or_default();
        for (mailbox, digest) in pairs {
            if total + set.len() >= TOUCHED_MAX {
                tracing::warn!(
                    bucket,
                    "cluster: too many changes during a bucket copy to track; this copy only adds mail"
                );
                touched.remove(&bucket);
                self.untracked.borrow_mut().insert(bucket);
                return;
            }
            set.insert((account.to_string(), mailbox, digest));
        }
    }

    fn was_touched(&self, bucket: u32, account: &str, mailbox: &str, digest: &Digest) -> bool {
        self.touched
            .borrow()
            .get(&bucket)
            .is_some_and(|s| s.contains(&(account.to_string(), mailbox.to_string(), *digest)))
    }

    /// The copy of `bucket` ended (done, or will start from nothing).
    fn forget_touched(&self, bucket: u32) {
        self.touched.borrow_mut().remove(&bucket);
        self.untracked.borrow_mut().remove(&bucket);
    }

    /// Changes for `bucket` were dropped during its copy: copy it again.
    pub fn copy_again(&self, bucket: u32) {
        self.again.borrow_mut().insert(bucket);
    }

    /// Park `job`: none of the nodes that held its bucket is live.
    fn wait(&self, shard: &Shard, job: Pull) {
        // Waiting before no longer copying, so the node never looks as if
        // it held the whole bucket (`publish`).
        {
            let mut waiting = self.waiting.borrow_mut();
            waiting.retain(|w| w.bucket != job.bucket);
            waiting.push(job.clone());
            shard.metrics.copies_waiting.set(waiting.len() as u64);
        }
        self.stop_copying(shard, job.bucket);
        let finished = self
            .finished
            .borrow()
            .get(&job.bucket)
            .map_or(0, HashSet::len);
        tracing::warn!(
            event = "copy_waiting",
            bucket = job.bucket,
            from = job.from,
            also = job.also.join(","),
            finished_accounts = finished,
            "cluster: no node that held this bucket is live; its copy waits for one to come back (until then this node may lack older mail of the bucket)"
        );
    }

    /// Write the copies not done yet to the data directory, so a restart
    /// does not forget that this node may lack older mail of those buckets
    /// (it copies them again, or waits for a source, and tells pullers it
    /// may lack some meanwhile). Errors are logged.
    fn save(&self, shard: &Shard) {
        let path = waiting_file(shard);
        let open = self.open.borrow();
        let mut text: String = open
            .values()
            .map(|w| format!("{} {} {}\n", w.bucket, w.from, w.also.join(",")))
            .collect();
        // And the accounts an interrupted copy stored whole.
        for (bucket, accounts) in self.finished.borrow().iter() {
            if open.contains_key(bucket) {
                for a in accounts {
                    text.push_str(&format!("whole {bucket} {a}\n"));
                }
            }
        }
        drop(open);
        let r = (|| -> std::io::Result<()> {
            if text.is_empty() {
                return match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = std::path::PathBuf::from(tmp);
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "cluster: the waiting bucket copies could not be saved");
        }
    }

    /// The copies of this shard's buckets a previous run left not done
    /// (in any shard's file: the core count may have changed): they wait
    /// for a source ([`State::wake`] starts them once one is live).
    fn load(&self, shard: &Shard) {
        let dir = &shard.shared.config.data_dir;
        let mut text = String::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(WAITING_FILE) && !name.ends_with(".tmp") {
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        let cores = shard.shared.cores;
        let mut waiting = self.waiting.borrow_mut();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("whole ") {
                if let Some((Ok(bucket), account)) =
                    rest.split_once(' ').map(|(b, a)| (b.parse::<u32>(), a))
                {
                    if storage::shard_of_bucket(bucket, cores) == shard.id
                        && shard.bucket(account) == bucket
                    {
                        self.finished
                            .borrow_mut()
                            .entry(bucket)
                            .or_default()
                            .insert(account.to_string());
                    }
                }
                continue;
            }
            let mut w = l.split(' ');
            let (Some(Ok(bucket)), Some(from)) = (w.next().map(str::parse::<u32>), w.next()) else {
                continue;
            };
            if bucket >= shard.shared.meta.buckets
                || storage::shard_of_bucket(bucket, cores) != shard.id
                || waiting.iter().any(|x| x.bucket == bucket)
            {
                continue;
            }
            let also = w
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            let job = Pull {
                bucket,
                from: from.to_string(),
                also,
            };
            self.open.borrow_mut().insert(bucket, job.clone());
            waiting.push(job);
        }
        if !waiting.is_empty() {
            tracing::warn!(
                event = "copy_waiting",
                buckets = waiting.len(),
                "cluster: bucket copies a previous run did not finish wait for a source again (this node may lack older mail of those buckets)"
            );
        }
        shard.metrics.copies_waiting.set(waiting.len() as u64);
        drop(waiting);
        self.publish(shard);
    }

    /// Take the waiting copies that can run now (a node that held the
    /// bucket is live again, `live`) and drop those of buckets this node
    /// no longer holds (`holds`).
    fn wake(
        &self,
        shard: &Shard,
        holds: impl Fn(u32) -> bool,
        live: impl Fn(&str) -> bool,
    ) -> Vec<Pull> {
        let mut waiting = self.waiting.borrow_mut();
        if waiting.is_empty() {
            return Vec::new();
        }
        let mut ready = Vec::new();
        let before = waiting.len();
        waiting.retain(|w| {
            if !holds(w.bucket) {
                self.finished.borrow_mut().remove(&w.bucket);
                self.open.borrow_mut().remove(&w.bucket);
                return false;
            }
            let now = std::iter::once(&w.from).chain(&w.also).any(|n| live(n));
            if now {
                self.resumed.borrow_mut().insert(w.bucket);
                // Copying again before it stops waiting (`publish`).
                self.copying.borrow_mut().insert(w.bucket);
                ready.push(w.clone());
            }
            !now
        });
        let changed = waiting.len() != before;
        shard.metrics.copies_waiting.set(waiting.len() as u64);
        drop(waiting);
        self.publish(shard);
        if changed {
            self.save(shard);
        }
        ready
    }

    /// A new plan copies `bucket` from the start: what is parked or was
    /// stored of it before does not count.
    fn restart(&self, shard: &Shard, bucket: u32) {
        self.finished.borrow_mut().remove(&bucket);
        self.resumed.borrow_mut().remove(&bucket);
        self.forget_touched(bucket);
        let mut waiting = self.waiting.borrow_mut();
        waiting.retain(|w| w.bucket != bucket);
        shard.metrics.copies_waiting.set(waiting.len() as u64);
    }
}

/// Plan against the map this node sees now, if it is new: queue the
/// buckets this shard gained, and start the shard's worker.
pub fn plan(shard: &Rc<Shard>) {
    let Some(m) = shard.mapped() else {
        return;
    };
    let Some((map, version)) = m.view.placement.as_ref() else {
        return;
    };
    let live = |id: &str| id != m.me && m.view.members.contains_key(id);
    let holds = |b: u32| map.primary_of(b) == Some(m.me) || map.replica_of(b) == Some(m.me);
    let woken = shard.catchup.wake(shard, holds, live);
    if !woken.is_empty() {
        tracing::info!(
            buckets = woken.len(),
            "cluster: a node that held buckets whose copy waited is live again; copying them"
        );
        enqueue(shard, woken);
    }
    if !shard.catchup.loaded.replace(true) {
        shard.catchup.load(shard);
    }
    let mut planned = shard.catchup.planned.borrow_mut();
    if planned.as_ref().is_some_and(|(v, _)| v == version) {
        return;
    }
    let cores = shard.shared.cores;
    let new = pulls(
        planned.as_ref().map(|(_, p)| p),
        map,
        m.me,
        |id| m.view.members.contains_key(id),
        |b| storage::shard_of_bucket(b, cores) == shard.id,
    );
    *planned = Some((*version, map.clone()));
    drop(planned);
    if new.is_empty() {
        if !shard.catchup.running.get() {
            // Nothing (more) to copy for this map.
            shard.shared.copied.set(shard.id, *version);
        }
        return;
    }
    tracing::info!(
        buckets = new.len(),
        version,
        "cluster: copying the buckets this node gained from their nodes"
    );
    for n in &new {
        shard.catchup.restart(shard, n.bucket);
    }
    enqueue(shard, new);
}

/// The bucket's primary asked this node, its replica, to copy `jobs`
/// again (`XPULL`; on the buckets' shard).
pub fn requested(shard: &Rc<Shard>, jobs: Vec<Pull>) {
    tracing::info!(
        event = "copy_requested",
        buckets = jobs.len(),
        from = jobs.first().map_or("", |j| j.from.as_str()),
        "cluster: the primary of buckets this node is replica for took older mail it lacked; copying them again"
    );
    for j in &jobs {
        shard.catchup.restart(shard, j.bucket);
    }
    enqueue(shard, jobs);
}

/// Where a shard keeps its waiting copies across restarts.
fn waiting_file(shard: &Shard) -> std::path::PathBuf {
    shard
        .shared
        .config
        .data_dir
        .join(format!("{WAITING_FILE}{}", shard.id))
}

const WAITING_FILE: &str = "cluster-copies-waiting.";

/// Queue `jobs` (replacing queued ones of the same buckets) and start the
/// shard's worker unless it runs.
fn enqueue(shard: &Rc<Shard>, jobs: Vec<Pull>) {
    {
        let mut queue = shard.catchup.queue.borrow_mut();
        queue.retain(|q| !jobs.iter().any(|n| n.bucket == q.bucket));
        shard
            .catchup
            .copying
            .borrow_mut()
            .extend(jobs.iter().map(|n| n.bucket));
        let mut open = shard.catchup.open.borrow_mut();
        for j in &jobs {
            open.insert(j.bucket, j.clone());
        }
        queue.extend(jobs);
    }
    shard.catchup.publish(shard);
    shard.catchup.save(shard);
    if !shard.catchup.running.replace(true) {
        glommio::spawn_local(work(shard.clone())).detach();
    }
}

/// Copy the queued buckets, one connection per source node, until the
/// queue is empty (failures are queued again after [`retry_pause`]).
async fn work(shard: Rc<Shard>) {
    let mut copied = Copied::default();
    // Rounds in a row in which a copy failed (not only asked for time).
    let mut failed_rounds = 0u32;
    loop {
        if shard.stopping() {
            shard.catchup.running.set(false);
            return;
        }
        let jobs = std::mem::take(&mut *shard.catchup.queue.borrow_mut());
        if jobs.is_empty() {
            break;
        }
        let Some(m) = shard.mapped() else {
            shard.catchup.running.set(false);
            return;
        };
        let version = m.view.placement.as_ref().map_or(0, |(_, v)| *v);
        // Per source, the buckets this node still holds.
        let mut by_source: BTreeMap<String, Vec<Pull>> = BTreeMap::new();
        let mut parked = false;
        for job in jobs {
            let map = m.map();
            if map.primary_of(job.bucket) != Some(m.me) && map.replica_of(job.bucket) != Some(m.me)
            {
                shard.catchup.done(&shard, job.bucket);
                continue;
            }
            let live = |id: &str| id != m.me && m.view.members.contains_key(id);
            // The planned source, else another node that held the bucket,
            // else its primary now.
            let from = std::iter::once(job.from.as_str())
                .chain(job.also.iter().map(String::as_str))
                .chain(map.primary_of(job.bucket))
                .find(|f| live(f))
                .map(str::to_string);
            match from {
                Some(from) => by_source.entry(from).or_default().push(job),
                None => {
                    shard.catchup.wait(&shard, job);
                    parked = true;
                }
            }
        }
        if parked {
            // With the accounts the cut copy stored whole.
            shard.catchup.save(&shard);
        }
        let sources: Vec<_> = by_source
            .into_iter()
            .filter_map(|(id, buckets)| {
                let record = m.view.members.get(&id)?.clone();
                Some((record, buckets))
            })
            .collect();
        drop(m);
        let mut again = Vec::new();
        let mut failed = false;
        for (from, jobs) in sources {
            let buckets: Vec<u32> = jobs.iter().map(|j| j.bucket).collect();
            match pull(&shard, &from, &buckets, version).await {
                Ok(c) => {
                    shard.metrics.bucket_copy(0);
                    tracing::info!(
                        event = "bucket_copied",
                        from = from.id,
                        buckets = buckets.len(),
                        accounts = c.accounts,
                        added = c.added,
                        present = c.present,
                        passed_over = c.passed_over,
                        expunged = c.expunged,
                        "cluster: buckets copied"
                    );
                    copied.add(&c);
                    for b in &buckets {
                        shard.catchup.finished.borrow_mut().remove(b);
                    }
                    let resumed: Vec<u32> = buckets
                        .iter()
                        .copied()
                        .filter(|b| shard.catchup.resumed.borrow_mut().remove(b))
                        .collect();
                    if c.added > 0 && !resumed.is_empty() {
                        ask_replicas(&shard, &resumed).await;
                    }
                    // Buckets whose kept changes overflowed: copied
                    // again (the copy brings the state they made).
                    // And those whose primary is itself still copying
                    // them: asked again after a pause, until it holds
                    // them whole (this node stays a partial holder).
                    let overflowed: Vec<Pull> = jobs
                        .iter()
                        .filter(|j| shard.catchup.again.borrow_mut().remove(&j.bucket))
                        .cloned()
                        .collect();
                    let incomplete: Vec<Pull> = jobs
                        .iter()
                        .filter(|j| c.incomplete.contains(&j.bucket))
                        .cloned()
                        .collect();
                    if !incomplete.is_empty() {
                        tracing::info!(
                            from = from.id,
                            buckets = incomplete.len(),
                            "cluster: the primary of buckets copied here is itself still copying them; they are copied again in a minute"
                        );
                        let s = shard.clone();
                        glommio::spawn_local(async move {
                            let stop = s.on_stop();
                            let pause = glommio::timer::sleep(INCOMPLETE_AGAIN);
                            futures::pin_mut!(pause);
                            if let futures::future::Either::Left(_) =
                                futures::future::select(pause, stop).await
                            {
                                enqueue(&s, incomplete);
                            }
                        })
                        .detach();
                    }
                    for j in &overflowed {
                        shard.deferred_changes.forget(j.bucket);
                    }
                    shard.catchup.queue.borrow_mut().extend(overflowed);
                    // Changes that came while the copy ran (the bucket
                    // counts as copying until they are applied, so what
                    // comes meanwhile queues behind them), unless it is
                    // queued for another copy.
                    super::changes::replay(&shard, &buckets).await;
                    let queued: Vec<u32> = shard
                        .catchup
                        .queue
                        .borrow()
                        .iter()
                        .map(|q| q.bucket)
                        .collect();
                    for b in buckets
                        .iter()
                        .filter(|b| !queued.contains(b) && !c.incomplete.contains(b))
                    {
                        shard.catchup.copying.borrow_mut().remove(b);
                        shard.catchup.forget_touched(*b);
                        shard.catchup.open.borrow_mut().remove(b);
                    }
                    shard.catchup.publish(&shard);
                    shard.catchup.save(&shard);
                }
                Err(why) => {
                    // Next time, another node that held the bucket first
                    // (unless this one only asked for time).
                    let busy = why.contains(STILL_RUNNING)
                        || why.contains(TOO_MANY)
                        || why.contains(MAP_NOT_SEEN);
                    failed |= !busy;
                    shard.metrics.bucket_copy(if busy { 2 } else { 1 });
                    tracing::warn!(
                        from = from.id,
                        buckets = buckets.len(),
                        why,
                        "cluster: copying buckets failed; trying again"
                    );
                    again.extend(jobs.into_iter().map(|mut job| {
                        if !busy && !job.also.is_empty() {
                            let next = job.also.remove(0);
                            job.also.push(std::mem::replace(&mut job.from, next));
                        }
                        job
                    }));
                }
            }
        }
        failed_rounds = if failed { failed_rounds + 1 } else { 0 };
        if !again.is_empty() {
            shard.catchup.queue.borrow_mut().extend(again);
            let stop = shard.on_stop();
            let pause = glommio::timer::sleep(retry_pause(failed_rounds));
            futures::pin_mut!(pause);
            let _ = futures::future::select(pause, stop).await;
        }
    }
    shard.catchup.running.set(false);
    if shard.catchup.queue.borrow().is_empty() {
        if let Some((version, _)) = &*shard.catchup.planned.borrow() {
            shard.shared.copied.set(shard.id, *version);
        }
        tracing::info!(
            event = "caught_up",
            accounts = copied.accounts,
            added = copied.added,
            present = copied.present,
            "cluster: every bucket this shard gained is copied"
        );
    }
}

/// What a copy did.
#[derive(Default)]
struct Copied {
    accounts: usize,
    added: usize,
    present: usize,
    /// Accounts an earlier copy that was cut short had stored whole.
    passed_over: usize,
    /// Messages held here from before the copy that the bucket's primary
    /// no longer has: expunged here.
    expunged: usize,
    /// Buckets this node is replica of whose primary said it may lack
    /// older mail of them (itself copying them): copied again later.
    incomplete: Vec<u32>,
}

impl Copied {
    fn add(&mut self, o: &Copied) {
        self.accounts += o.accounts;
        self.added += o.added;
        self.present += o.present;
        self.passed_over += o.passed_over;
        self.expunged += o.expunged;
    }
}

// ------------------------------------------------------------ puller side

/// A copy that had waited for a returning node added older mail to
/// `buckets`: where this node is their primary, their replica copied them
/// from here before that mail was here, so each replica is asked to copy
/// them again (`XPULL`). A replica that cannot be asked now copies its
/// buckets again when it next starts.
async fn ask_replicas(shard: &Rc<Shard>, buckets: &[u32]) {
    let Some(m) = shard.mapped() else {
        return;
    };
    let version = m.view.placement.as_ref().map_or(0, |(_, v)| *v);
    let map = m.map();
    let mut by_replica: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for &b in buckets {
        if map.primary_of(b) == Some(m.me) {
            if let Some(r) = map.replica_of(b).filter(|r| *r != m.me) {
                by_replica.entry(r).or_default().push(b);
            }
        }
    }
    let me = m.me.to_string();
    let mut asks = Vec::new();
    for (id, list) in by_replica {
        match m.view.members.get(id) {
            Some(record) => asks.push((record.clone(), list)),
            None => tracing::warn!(
                event = "replica_not_asked",
                replica = id,
                buckets = list.len(),
                "cluster: the replica of buckets that took older mail is not live; it copies them again when it starts"
            ),
        }
    }
    drop(m);
    for (to, list) in asks {
        let line: Vec<String> = list.iter().map(u32::to_string).collect();
        let line = format!("XPULL {version} {me} {}\r\n", line.join(","));
        let asked = async {
            let mut peer = connect_to(shard, &to).await?;
            command(&mut peer.conn, &line, 250).await
        }
        .await;
        match asked {
            Ok(()) => tracing::info!(
                event = "replica_asked",
                replica = to.id,
                buckets = list.len(),
                "cluster: the replica of buckets that took older mail copies them again"
            ),
            Err(why) => tracing::warn!(
                event = "replica_not_asked",
                replica = to.id,
                buckets = list.len(),
                why,
                "cluster: the replica of buckets that took older mail could not be asked to copy them again; it does when it next starts"
            ),
        }
    }
}

/// A session with `node`'s internal listener (its certificates pinned).
async fn connect_to(
    shard: &Shard,
    node: &crate::cluster::NodeRecord,
) -> Result<super::peer::Peer, String> {
    let to: SocketAddr = node
        .internal_addr()
        .ok_or_else(|| format!("{}: no internal address", node.id))?;
    super::peer::connect(shard, to, node.tls_sha256.clone()).await
}

/// Copy `buckets` from the node `from`.
async fn pull(
    shard: &Rc<Shard>,
    from: &crate::cluster::NodeRecord,
    buckets: &[u32],
    version: i64,
) -> Result<Copied, String> {
    // Before the request: what this node holds of the buckets the source
    // is primary of (and this node replica), which the copy brings to the
    // source's state; what is stored from now on is never taken away.
    // A message handed over by a third node may have reached this node and
    // not yet the primary: it is acknowledged only if the primary stores
    // it within the hand-over timeout, so what arrived within that (and
    // a margin) before the copy is never expunged by it.
    let margin = shard
        .config()
        .cluster
        .as_ref()
        .map_or(30_000, |c| c.peer_timeout_ms)
        / 1000
        + SYNC_MARGIN_SECS;
    let mut sync = Sync {
        expunge_before: crate::util::unix_now() - i64::try_from(margin).unwrap_or(i64::MAX / 2),
        ..Default::default()
    };
    if let Some(m) = shard.mapped() {
        let map = m.map();
        sync.buckets = buckets
            .iter()
            .copied()
            .filter(|&b| {
                map.primary_of(b) == Some(from.id.as_str()) && map.replica_of(b) == Some(m.me)
            })
            .collect();
    }
    let listed: Vec<u32> = sync.buckets.iter().copied().collect();
    for account in shard.store.accounts_in_buckets(&listed) {
        let _ = shard.store.with_account(&account, |a| {
            for m in &a.mailboxes {
                sync.uidnext.insert((account.clone(), m.id), m.uidnext);
            }
        });
    }
    let mut peer = connect_to(shard, from).await?;
    let conn = &mut peer.conn;
    let list: Vec<String> = buckets.iter().map(u32::to_string).collect();
    conn.write_all(format!("XSYNC {version} {}\r\n", list.join(",")).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let (code, text) = super::peer::reply(conn).await?;
    if code != 250 {
        return Err(text);
    }
    // Buckets the source is itself still copying (or waits to copy): it
    // may lack older mail of them, so nothing is expunged here for them.
    sync.partial = named_in(&text, "partial");
    // The source's own map says it is not the primary: nothing it lacks
    // is taken for gone.
    for b in named_in(&text, "not primary") {
        sync.buckets.remove(&b);
    }
    let mut copied = apply(shard, conn, buckets, &sync).await?;
    copied.incomplete = sync
        .buckets
        .iter()
        .copied()
        .filter(|b| sync.partial.contains(b))
        .collect();
    Ok(copied)
}

/// What a copy from a bucket's primary brings this node (its replica) to:
/// the primary's state of each mailbox it sends ([`sync_mailbox`]).
#[derive(Default)]
struct Sync {
    /// Buckets the source is primary of and this node replica for.
    buckets: HashSet<u32>,
    /// (account, mailbox id) -> UIDNEXT before the request: messages with
    /// a lower UID were here before the copy.
    uidnext: HashMap<(String, u32), u32>,
    /// Buckets the source says it may lack older mail of.
    partial: HashSet<u32>,
    /// Only messages dated before this (Unix seconds) may be expunged.
    expunge_before: i64,
}

/// Seconds past the hand-over timeout within which a message that arrived
/// before a copy is not expunged by it ([`pull`]).
const SYNC_MARGIN_SECS: u64 = 5;

/// The buckets a source's `250` names under `label`:
/// `... (partial: 3,7) (not primary: 5)`.
fn named_in(text: &str, label: &str) -> HashSet<u32> {
    text.split_once(&format!("({label}: "))
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(list, _)| {
            list.split(',')
                .filter_map(|b| b.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A mailbox of the copy being brought to the source's state.
struct MailboxSync {
    /// Messages with a UID below this were here before the copy.
    uidnext: u32,
    /// Expunge what the source lacks (not for a partial source).
    expunge: bool,
    expunge_before: i64,
    /// The source's flag state of each message this node held already.
    flags: Vec<Change>,
}

/// The end of a mailbox in the stream: set the flags of what was here
/// already to the source's, and expunge what was here before the copy and
/// the source no longer has (by digest and count).
async fn sync_mailbox(
    shard: &Rc<Shard>,
    account: &str,
    t: &mut Target,
    copied: &mut Copied,
) -> Result<(), String> {
    let Some(sync) = t.sync.as_mut() else {
        return Ok(());
    };
    let mut changes = std::mem::take(&mut sync.flags);
    if sync.expunge {
        let mut old: HashMap<[u8; 16], u32> = HashMap::new();
        for (uid, d, date) in &t.opened.by_uid {
            if *uid < sync.uidnext && *date < sync.expunge_before {
                *old.entry(*d).or_insert(0) += 1;
            }
        }
        let mut gone = Vec::new();
        for (d, n) in old {
            let kept = t.seen.get(&d).copied().unwrap_or(0);
            for _ in kept..n {
                gone.push(d);
            }
        }
        if !gone.is_empty() {
            copied.expunged += gone.len();
            changes.push(Change::Expunge {
                mailbox: t.name.clone(),
                digests: gone,
            });
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    super::changes::sync_mailbox(shard, account, changes).await
}

/// The mailbox being copied into.
struct Target {
    opened: Opened,
    /// Copies of each digest seen in the source so far.
    seen: HashMap<[u8; 16], u32>,
    /// The source mailbox's keywords, by bit.
    keywords: Vec<String>,
    /// The mailbox's name as the source sent it.
    name: String,
    /// A copy from the bucket's primary: the mailbox's state to match.
    sync: Option<MailboxSync>,
}

/// Read the export stream and store what this node lacks; for buckets in
/// `sync`, also bring what it held before to the source's state.
async fn apply(
    shard: &Rc<Shard>,
    conn: &mut Conn,
    buckets: &[u32],
    sync: &Sync,
) -> Result<Copied, String> {
    let max = shard.config().limits.message_size_max + super::smtp::INTERNAL_HEADROOM;
    let mut copied = Copied::default();
    // The account being copied (None: its frames are read and dropped).
    let mut account: Option<String> = None;
    let mut target: Option<Target> = None;
    let mut batch: Vec<Incoming> = Vec::new();
    let mut batch_bytes = 0;
    // Every mailbox of `account` could be opened (so, once its last batch
    // is stored, the account is here whole).
    let mut whole = false;
    loop {
        let l = line(conn).await?;
        let (verb, rest) = l.split_once(' ').unwrap_or((l.as_str(), ""));
        let boundary = matches!(verb, "account" | "mailbox" | "end");
        if boundary || batch.len() >= BATCH_MESSAGES_MAX || batch_bytes >= BATCH_BYTES_MAX {
            store(shard, &account, &target, &mut batch).await?;
            batch_bytes = 0;
        }
        if boundary {
            if let (Some(a), Some(t)) = (&account, target.as_mut()) {
                sync_mailbox(shard, a, t, &mut copied).await?;
            }
        }
        if matches!(verb, "account" | "end") && whole {
            // A copy cut short later need not bring this account again.
            if let Some(a) = account.take() {
                let bucket = shard.bucket(&a);
                shard
                    .catchup
                    .finished
                    .borrow_mut()
                    .entry(bucket)
                    .or_default()
                    .insert(a);
            }
        }
        match verb {
            "end" => return Ok(copied),
            "account" => {
                target = None;
                account = None;
                whole = false;
                let pause = shard
                    .config()
                    .cluster
                    .as_ref()
                    .map_or(0, |c| c.copy_pause_ms);
                if pause > 0 {
                    glommio::timer::sleep(Duration::from_millis(pause)).await;
                }
                let Ok(name) = crate::accounts::canonical(rest) else {
                    return Err(format!("bad account frame {l:?}"));
                };
                if !buckets.contains(&shard.bucket(&name)) || !shard.store.owns(&name) {
                    return Err(format!("the source sent {name}, not of the buckets asked"));
                }
                if !shard.directory().contains(&name) {
                    tracing::warn!(
                        account = name,
                        "cluster: an account of a copied bucket is not in this node's account file; skipped"
                    );
                    continue;
                }
                let bucket = shard.bucket(&name);
                let done_before = shard
                    .catchup
                    .finished
                    .borrow()
                    .get(&bucket)
                    .is_some_and(|f| f.contains(&name));
                if done_before {
                    // Stored whole by an earlier copy that was cut short:
                    // what changed here since (an expunge) stands.
                    copied.passed_over += 1;
                    continue;
                }
                copied.accounts += 1;
                account = Some(name);
                whole = true;
            }
            "mailbox" => {
                let mut w = rest.splitn(5, ' ');
                let mut num = || w.next().and_then(|n| n.parse::<u32>().ok());
                let (Some(uidvalidity), Some(_uidnext), Some(special), Some(keywords)) =
                    (num(), num(), num(), num())
                else {
                    return Err(format!("bad mailbox frame {l:?}"));
                };
                let name = w.next().unwrap_or_default().to_string();
                let keywords = keywords as usize;
                if keywords > KEYWORDS_MAX {
                    return Err(format!("bad mailbox frame {l:?}"));
                }
                let mut names = Vec::with_capacity(keywords);
                for _ in 0..keywords {
                    let k = line(conn).await?;
                    let k = k.strip_prefix("keyword ").ok_or("bad keyword frame")?;
                    names.push(k.to_string());
                }
                target = None;
                if let Some(a) = &account {
                    let special = u8::try_from(special).unwrap_or(0);
                    match transfer::open(shard, a, &name, uidvalidity, special, Digests::Content)
                        .await
                    {
                        Ok(opened) => {
                            let bucket = shard.bucket(a);
                            let tracked = !shard.catchup.untracked.borrow().contains(&bucket);
                            let sync =
                                (tracked && sync.buckets.contains(&bucket)).then(|| MailboxSync {
                                    expunge_before: sync.expunge_before,
                                    uidnext: sync
                                        .uidnext
                                        .get(&(a.clone(), opened.id))
                                        .copied()
                                        .unwrap_or(0),
                                    expunge: !sync.partial.contains(&bucket),
                                    flags: Vec::new(),
                                });
                            target = Some(Target {
                                opened,
                                seen: HashMap::new(),
                                keywords: names,
                                name: name.clone(),
                                sync,
                            })
                        }
                        Err(e) => {
                            whole = false;
                            tracing::warn!(account = a, mailbox = name, error = e, "cluster: a mailbox of a copied bucket could not be opened; skipped")
                        }
                    }
                }
            }
            "message" => {
                let nums: Vec<i64> = rest
                    .split(' ')
                    .map(|n| n.parse().map_err(|_| format!("bad message frame {l:?}")))
                    .collect::<Result<_, _>>()?;
                let [uid, flags, mask, date, len] = nums[..] else {
                    return Err(format!("bad message frame {l:?}"));
                };
                let len = usize::try_from(len).map_err(|_| "bad message length")?;
                if len > max {
                    return Err(format!("a message of {len} bytes is over the size limit"));
                }
                let body = bytes(conn, len).await?;
                let Some(t) = target.as_mut() else {
                    continue;
                };
                let d = Digests::Content.of(&body);
                let k = t.seen.entry(d).or_insert(0);
                *k += 1;
                let keywords: Vec<String> = t
                    .keywords
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| (mask as u64) >> bit & 1 == 1)
                    .map(|(_, k)| k.clone())
                    .collect();
                // A change applied here during the copy touched it: that
                // is newer than (or as new as) the snapshot, so its flags
                // stay and, if it is gone, it stays gone.
                let touched = account
                    .as_deref()
                    .is_some_and(|a| shard.catchup.was_touched(shard.bucket(a), a, &t.name, &d));
                if *k <= t.opened.digests.get(&d).copied().unwrap_or(0) || touched {
                    copied.present += 1;
                    if touched {
                        continue;
                    }
                    if let Some(sync) = t.sync.as_mut() {
                        sync.flags.push(Change::Flags {
                            mailbox: t.name.clone(),
                            digest: d,
                            flags: u32::try_from(flags).unwrap_or(0),
                            keywords,
                        });
                    }
                    continue;
                }
                copied.added += 1;
                batch_bytes += body.len();
                batch.push(Incoming {
                    uid: u32::try_from(uid).unwrap_or(0),
                    flags: u32::try_from(flags).unwrap_or(0),
                    keywords,
                    internal_date: date,
                    body,
                });
            }
            _ => return Err(format!("bad frame {l:?}")),
        }
    }
}

/// Store a batch into the current mailbox (one durable commit).
async fn store(
    shard: &Rc<Shard>,
    account: &Option<String>,
    target: &Option<Target>,
    batch: &mut Vec<Incoming>,
) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let (Some(a), Some(t)) = (account, target) else {
        batch.clear();
        return Ok(());
    };
    let messages = std::mem::take(batch);
    transfer::append(shard, a, t.opened.id, t.opened.fresh, messages)
        .await
        .map(|_| ())
}

// ------------------------------------------------------------ source side

/// Is the start of `pending` a copy request (sent by a member after
/// STARTTLS with its certificate)?
pub fn is_request(pending: &[u8]) -> bool {
    starts(pending, VERB) || starts(pending, PULL_VERB)
}

fn starts(pending: &[u8], verb: &[u8]) -> bool {
    pending.len() >= verb.len() && pending[..verb.len()].eq_ignore_ascii_case(verb)
}

/// `<version> <primary> <bucket>,...` (after `XPULL `).
fn parse_pull(text: &str, buckets: u32) -> Option<(i64, String, Vec<u32>)> {
    let mut w = text.splitn(3, ' ');
    let (version, node, list) = (w.next()?, w.next()?, w.next()?);
    if node.is_empty() || list.contains(' ') {
        return None;
    }
    let (version, list) = parse_request(&format!("{version} {list}"), buckets)?;
    Some((version, node.to_string(), list))
}

/// `<version> <bucket>,<bucket>,...` (after the verb): the map version
/// and the buckets, sorted, once each, every one below `buckets`.
fn parse_request(text: &str, buckets: u32) -> Option<(i64, Vec<u32>)> {
    let (version, list) = text.split_once(' ')?;
    let version: i64 = version.parse().ok()?;
    let mut list: Vec<u32> = list
        .split(',')
        .map(|b| b.parse().ok().filter(|b| *b < buckets))
        .collect::<Option<_>>()?;
    list.sort_unstable();
    list.dedup();
    Some((version, list))
}

/// Serve a copy request: the line is at the start of `conn`'s input.
/// The connection ends afterwards.
pub async fn serve(shard: &Rc<Shard>, conn: &mut Conn) {
    let Some(i) = memchr::memchr(b'\n', conn.pending()) else {
        return;
    };
    let pull = starts(conn.pending(), PULL_VERB);
    let verb = if pull { PULL_VERB.len() } else { VERB.len() };
    let text = String::from_utf8_lossy(&conn.pending()[verb..i])
        .trim()
        .to_string();
    conn.consume(i + 1);
    let _ = conn.stream.set_write_timeout(Some(STEP_TIMEOUT));
    if pull {
        return serve_pull(shard, conn, &text).await;
    }
    let Some((version, list)) = parse_request(&text, shard.shared.meta.buckets) else {
        let _ = conn
            .write_all(b"501 5.5.4 Syntax: XSYNC <version> <bucket>,...\r\n")
            .await;
        return;
    };
    let Some(_sending) = Sending::take(&shard.shared.bucket_sends) else {
        tracing::info!(peer = %conn.peer(), max = SENDS_MAX, "cluster: a bucket copy refused: too many are being sent");
        refuse(conn, "451 4.3.2", TOO_MANY).await;
        return;
    };
    // Our map must be as new as the puller's: from then on, what we commit
    // for these buckets is replicated to it.
    if !shard.map_at_least(version, MAP_WAIT).await {
        refuse(conn, "451 4.4.0", MAP_NOT_SEEN).await;
        return;
    }
    // And what routed with an older map (its copy went to the old
    // replica, maybe not to the puller) must be committed here before the
    // snapshot, so the copy carries it.
    // So must what was registered here before this request, whatever its
    // map: it may have sent its copy to the puller, which then holds it
    // from before the copy and would drop it if the snapshot lacked it.
    if !shard.settled(version, SETTLE_WAIT).await || !shard.quiesced(SETTLE_WAIT).await {
        refuse(conn, "451 4.4.0", STILL_RUNNING).await;
        return;
    }
    // Buckets this node is itself copying or waits to copy (`partial`): it
    // may lack older mail of them, so the puller must not drop what it
    // holds of them. And those it is not the primary of (`not primary`;
    // its map is the puller's or newer): only a primary's copy may make
    // the puller drop anything.
    let primary_of: HashSet<u32> = shard.mapped().map_or_else(HashSet::new, |m| {
        list.iter()
            .copied()
            .filter(|&b| m.map().primary_of(b) == Some(m.me))
            .collect()
    });
    let partial: Vec<u32> = match shard.shared.copies_open.lock() {
        Ok(m) => list
            .iter()
            .copied()
            .filter(|b| m.values().any(|open| open.contains(b)))
            .collect(),
        Err(_) => list.clone(),
    };
    let not_primary: Vec<u32> = list
        .iter()
        .copied()
        .filter(|b| !primary_of.contains(b))
        .collect();
    let mut ready = "250 2.0.0 Buckets follow".to_string();
    for (label, set) in [("partial", &partial), ("not primary", &not_primary)] {
        if !set.is_empty() {
            let names: Vec<String> = set.iter().map(u32::to_string).collect();
            ready.push_str(&format!(" ({label}: {})", names.join(",")));
        }
    }
    ready.push_str("\r\n");
    if conn.write_all(ready.as_bytes()).await.is_err() {
        return;
    }
    match stream(shard, conn, list).await {
        Ok(accounts) => {
            let _ = conn.write_all(b"end\n").await;
            tracing::info!(
                event = "buckets_sent",
                peer = %conn.peer(),
                accounts,
                "cluster: buckets sent to a node that gained them"
            );
        }
        // Cut short: close without `end`, so the puller sees it.
        Err(why) => tracing::warn!(peer = %conn.peer(), why, "cluster: sending buckets failed"),
    }
}

/// Answer `code` and `text` (a refusal; the connection ends after it).
async fn refuse(conn: &mut Conn, code: &str, text: &str) {
    let _ = conn
        .write_all(format!("{code} {text}\r\n").as_bytes())
        .await;
}

/// Serve `XPULL`: queue a copy of each named bucket this node is replica
/// for and the requester primary of, on the bucket's shard, and answer at
/// once (the copy runs in the background).
async fn serve_pull(shard: &Rc<Shard>, conn: &mut Conn, text: &str) {
    let Some((version, from, list)) = parse_pull(text, shard.shared.meta.buckets) else {
        let _ = conn
            .write_all(b"501 5.5.4 Syntax: XPULL <version> <node> <bucket>,...\r\n")
            .await;
        return;
    };
    if !shard.map_at_least(version, MAP_WAIT).await {
        refuse(conn, "451 4.4.0", MAP_NOT_SEEN).await;
        return;
    }
    let mut by_owner: BTreeMap<usize, Vec<Pull>> = BTreeMap::new();
    if let Some(m) = shard.mapped() {
        let map = m.map();
        for b in list {
            if map.replica_of(b) == Some(m.me) && map.primary_of(b) == Some(from.as_str()) {
                by_owner
                    .entry(storage::shard_of_bucket(b, shard.shared.cores))
                    .or_default()
                    .push(Pull {
                        bucket: b,
                        from: from.clone(),
                        also: Vec::new(),
                    });
            }
        }
    }
    let count: usize = by_owner.values().map(Vec::len).sum();
    for (owner, jobs) in by_owner {
        if owner == shard.id {
            requested(shard, jobs);
        } else if shard
            .senders
            .send_to(owner, ShardMsg::Pull(jobs))
            .await
            .is_err()
        {
            let _ = conn.write_all(b"451 4.3.0 A shard is gone\r\n").await;
            return;
        }
    }
    let _ = conn
        .write_all(format!("250 2.0.0 {count} bucket(s) will be copied again\r\n").as_bytes())
        .await;
}

/// One of the node's [`SENDS_MAX`] bucket copies being sent; given back
/// when dropped.
struct Sending<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Sending<'a> {
    fn take(count: &'a std::sync::atomic::AtomicUsize) -> Option<Sending<'a>> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < SENDS_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| Sending(count))
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Write the export of every account of `buckets`, per owner shard.
async fn stream(shard: &Rc<Shard>, conn: &mut Conn, buckets: Vec<u32>) -> Result<usize, String> {
    let mut by_owner: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for b in buckets {
        by_owner
            .entry(storage::shard_of_bucket(b, shard.shared.cores))
            .or_default()
            .push(b);
    }
    let mut sent = 0;
    for (owner, buckets) in by_owner {
        let accounts = if owner == shard.id {
            shard.store.accounts_in_buckets(&buckets)
        } else {
            let (reply, rx) = oneshot::channel();
            let msg = ShardMsg::BucketAccounts { buckets, reply };
            shard
                .senders
                .send_to(owner, msg)
                .await
                .map_err(|_| "a shard is gone")?;
            rx.await.map_err(|_| "a shard did not answer")?
        };
        for account in accounts {
            let (out, mut rx) = mpsc::channel(4);
            if owner == shard.id {
                let (s, a) = (shard.clone(), account.clone());
                glommio::spawn_local(async move { transfer::export(&s, &a, out).await }).detach();
            } else {
                let msg = ShardMsg::Export {
                    account: account.clone(),
                    out,
                };
                shard
                    .senders
                    .send_to(owner, msg)
                    .await
                    .map_err(|_| "a shard is gone")?;
            }
            loop {
                match rx.next().await {
                    Some(Piece::Data(chunk)) => {
                        conn.write_all(&chunk).await.map_err(|e| e.to_string())?
                    }
                    // Before any data: the account went away meanwhile.
                    Some(Piece::Error(_)) => break,
                    Some(Piece::End) => {
                        sent += 1;
                        break;
                    }
                    None => return Err(format!("the export of {account} stopped")),
                }
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failing rounds are retried every 2 s at first, then less often, up
    /// to 16 s; a round that only asked for time does not count.
    #[test]
    fn failed_copies_back_off() {
        let s = |n| retry_pause(n).as_secs();
        assert_eq!([s(0), s(1), s(2), s(3)], [2, 2, 2, 2]);
        assert_eq!([s(4), s(5), s(6), s(7), s(100)], [4, 8, 16, 16, 16]);
    }

    /// At most SENDS_MAX copies are sent at once; one that ends frees its
    /// place.
    #[test]
    fn bucket_copies_sent_at_once_are_capped() {
        let count = std::sync::atomic::AtomicUsize::new(0);
        let mut held: Vec<_> = (0..SENDS_MAX)
            .map(|_| Sending::take(&count).expect("below the cap"))
            .collect();
        assert!(Sending::take(&count).is_none());
        held.pop();
        let again = Sending::take(&count);
        assert!(again.is_some());
        assert!(Sending::take(&count).is_none());
        drop(again);
        assert_eq!(
            count.load(std::sync::atomic::Ordering::Relaxed),
            SENDS_MAX - 1
        );
        drop(held);
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn requests_are_checked() {
        assert!(is_request(b"XSYNC 4 1,2\r\n"));
        assert!(is_request(b"xsync 4"));
        assert!(!is_request(b"XSYN"));
        assert!(!is_request(b"MAIL FROM:<>"));
        assert_eq!(parse_request("7 3,1,3", 16), Some((7, vec![1, 3])));
        assert!(is_request(b"XPULL 4 n1 1\r\n"));
        let reply = "250 2.0.0 Buckets follow (partial: 7,3) (not primary: 5)";
        assert_eq!(named_in(reply, "partial"), HashSet::from([3, 7]));
        assert_eq!(named_in(reply, "not primary"), HashSet::from([5]));
        assert!(named_in("250 2.0.0 Buckets follow", "partial").is_empty());
        assert_eq!(
            parse_pull("7 n3 3,1", 16),
            Some((7, "n3".to_string(), vec![1, 3]))
        );
        for bad in ["7 n3", "7  1", "x n3 1", "7 n3 1 2", "7 n3 16"] {
            assert_eq!(parse_pull(bad, 16), None, "{bad}");
        }
        for bad in ["7", "x 1", "7 ", "7 1,,2", "7 16", "7 -1", "7 1 2"] {
            assert_eq!(parse_request(bad, 16), None, "{bad}");
        }
    }
}
