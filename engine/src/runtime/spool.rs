//! Message data in flight: how much of it a shard holds, and where.
//!
//! A message being received (SMTP DATA/BDAT, IMAP APPEND literal) stays in
//! the session's RAM buffer up to `memory.spool_threshold` bytes; beyond, its
//! bytes go on into a spool file and the message is served to storage from a
//! read-only mapping of that file. Spool files are unnamed (O_TMPFILE in
//! DATA/spool/): the kernel frees one when its last descriptor and mapping
//! are gone, so an abandoned message costs nothing after its connection
//! ends, and a crash leaves no orphan behind.
//!
//! [`Budget`] is one shard's account of that data: RAM held in message
//! buffers (over `session_ram_max`, messages spool from their first byte),
//! spool bytes (over `spool_max`, a message is read to its end and refused
//! with a temporary failure), and spool bytes per client address for
//! unauthenticated senders (`spool_per_address_max`). Everything is
//! shard-local (`Cell`s): the shard is one thread and nothing is shared.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::BufferedFile;

use crate::config::Memory;

/// A complete message body: in RAM, or a mapping of its spool file.
#[derive(Debug)]
pub enum MessageBody {
    Heap(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl Deref for MessageBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            MessageBody::Heap(v) => v,
            MessageBody::Mapped(m) => m,
        }
    }
}

impl MessageBody {
    /// The RAM buffer, to be reused for the next message.
    pub fn into_heap(self) -> Option<Vec<u8>> {
        match self {
            MessageBody::Heap(v) => Some(v),
            MessageBody::Mapped(_) => None,
        }
    }
}

/// One shard's budget for message data in flight.
#[derive(Debug)]
pub struct Budget {
    dir: PathBuf,
    threshold: usize,
    ram_max: u64,
    spool_max: u64,
    per_address_max: u64,
    trim_after: u64,
    ram_used: Cell<u64>,
    spool_used: Cell<u64>,
    per_address: RefCell<HashMap<IpAddr, u64>>,
    /// Bytes released since the heap was last trimmed.
    freed: Cell<u64>,
    /// `freed` as the last [`Budget::tick`] saw it.
    freed_at_tick: Cell<u64>,
}

/// The machine's memory, from /proc/meminfo (`None` if unreadable).
fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

const MIB: u64 = 1024 * 1024;

/// Per-shard RAM and spool budgets, with the defaults of [`Memory`] resolved.
pub fn resolve(memory: &Memory, data_dir: &Path, cores: usize) -> (u64, u64) {
    let cores = cores.max(1) as u64;
    let ram = if memory.session_ram_max > 0 {
        memory.session_ram_max
    } else {
        let total = machine_memory().unwrap_or(4 * 1024 * MIB);
        (total / 8 / cores).clamp(64 * MIB, 1024 * MIB)
    };
    let spool = if memory.spool_max > 0 {
        memory.spool_max
    } else {
        let free = crate::util::free_space(data_dir).unwrap_or(4 * 1024 * MIB);
        (free / 4 / cores).min(16 * 1024 * MIB)
    };
    (ram, spool)
}

impl Budget {
    /// The budget of one shard; spool files go to `dir` (created if missing).
    pub fn new(memory: &Memory, dir: PathBuf, ram_max: u64, spool_max: u64) -> Budget {
        Budget {
            dir,
            threshold: memory.spool_threshold,
            ram_max,
            spool_max,
            per_address_max: memory.spool_per_address_max,
            trim_after: memory.trim_after_bytes,
            ram_used: Cell::new(0),
            spool_used: Cell::new(0),
            per_address: RefCell::new(HashMap::new()),
            freed: Cell::new(0),
            freed_at_tick: Cell::new(0),
        }
    }

    /// Spool bytes currently held on this shard.
    pub fn spool_used(&self) -> u64 {
        self.spool_used.get()
    }

    /// Message bytes a session keeps in RAM before the message spools
    /// (`memory.spool_threshold`).
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Whether `n` more spool bytes would fit the shard's budget now.
    pub fn spool_room(&self, n: u64) -> bool {
        self.spool_used.get().saturating_add(n) <= self.spool_max
    }

    /// Take `n` more bytes of RAM if the shard's budget has room.
    fn take_ram(&self, n: u64) -> bool {
        let used = self.ram_used.get();
        if used.saturating_add(n) > self.ram_max {
            return false;
        }
        self.ram_used.set(used + n);
        true
    }

    fn release_ram(&self, n: u64) {
        self.ram_used.set(self.ram_used.get().saturating_sub(n));
        self.freed(n);
    }

    /// Take `n` spool bytes, charged to `address` when given.
    fn take_spool(&self, n: u64, address: Option<IpAddr>) -> bool {
        let used = self.spool_used.get();
        if used.saturating_add(n) > self.spool_max {
            return false;
        }
        if let Some(a) = address {
            let mut map = self.per_address.borrow_mut();
            let held = map.entry(a).or_insert(0);
            if held.saturating_add(n) > self.per_address_max {
                if *held == 0 {
                    map.remove(&a);
                }
                return false;
            }
            *held += n;
        }
        self.spool_used.set(used + n);
        true
    }

    fn release_spool(&self, n: u64, address: Option<IpAddr>) {
        self.spool_used.set(self.spool_used.get().saturating_sub(n));
        if let Some(a) = address {
            let mut map = self.per_address.borrow_mut();
            if let Some(held) = map.get_mut(&a) {
                *held = held.saturating_sub(n);
                if *held == 0 {
                    map.remove(&a);
                }
            }
        }
    }

    /// Count memory given back by a session; past `trim_after_bytes`, hand
    /// the allocator's free pages back to the system.
    pub fn freed(&self, n: u64) {
        if self.trim_after == 0 {
            return;
        }
        let f = self.freed.get().saturating_add(n);
        if f >= self.trim_after {
            self.freed.set(0);
            trim_heap();
        } else {
            self.freed.set(f);
        }
    }

    /// Called about once a second: memory released earlier and nothing
    /// released since the last tick (a burst has ended) is returned to the
    /// system now rather than when `trim_after_bytes` fills up, so the
    /// footprint after a burst comes back down. Under steady load the count
    /// keeps moving and only the `trim_after_bytes` trims run.
    pub fn tick(&self) {
        let f = self.freed.get();
        if self.trim_after > 0 && f > 0 && f == self.freed_at_tick.get() {
            self.freed.set(0);
            trim_heap();
        }
        self.freed_at_tick.set(self.freed.get());
    }

    async fn create_file(&self) -> std::io::Result<BufferedFile> {
        glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .tmpfile(true)
            .mode(0o600)
            .buffered_open(&self.dir)
            .await
            .map_err(std::io::Error::from)
    }
}

/// Return free heap memory of every malloc arena to the system. The trim
/// itself runs on one background thread (`ringmail-trim`): on a large,
/// fragmented heap it walks every arena under its lock and can take long,
/// and no shard may wait for it. A request while one is pending is merged.
pub fn trim_heap() {
    use std::sync::mpsc::{sync_channel, SyncSender};
    use std::sync::OnceLock;
    static TRIMMER: OnceLock<Option<SyncSender<()>>> = OnceLock::new();
    let tx = TRIMMER.get_or_init(|| {
        let (tx, rx) = sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("ringmail-trim".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // SAFETY: malloc_trim only walks the allocator's own free lists.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            })
            .ok()
            .map(|_| tx)
    });
    if let Some(tx) = tx {
        let _ = tx.try_send(());
    }
}

/// Tune glibc malloc for a long-running server, once at start-up: a fixed
/// mmap threshold (otherwise glibc raises it after the first large free, and
/// every later buffer of that size, such as argon2's 19 MiB, is carved from
/// an arena that never shrinks) and few arenas (one per executor thread is
/// plenty; blocking threads share them).
pub fn tune_malloc(cores: usize) {
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, (2 * cores.max(1) + 2) as libc::c_int);
    }
}

/// The error [`Spooler::finish`] gives when the message's last bytes do
/// not fit the budget (a temporary refusal, like [`Track::Refused`]).
#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spool budget exhausted")
    }
}

impl std::error::Error for OverBudget {}

/// Whether `e` is [`Spooler::finish`]'s over-budget refusal.
pub fn is_over_budget(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<OverBudget>())
}

/// Whether a spool error means the disk is full (ENOSPC, or the short
/// write a full disk gives).
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::WriteZero
        )
}

/// What became of the bytes of a message in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Held (in RAM or spooled); go on reading.
    Held,
    /// The budget has no room: refuse the message (temporary failure) and
    /// throw its further bytes away.
    Refused,
}

/// The spool state of one session's message in flight.
pub struct Spooler {
    budget: Rc<Budget>,
    /// Charged per address (unauthenticated senders), or to the shard only.
    address: Option<IpAddr>,
    file: Option<BufferedFile>,
    /// Bytes written to `file`.
    len: u64,
    /// RAM this message's buffer is charged with.
    ram: u64,
}

impl Spooler {
    pub fn new(budget: Rc<Budget>, address: Option<IpAddr>) -> Spooler {
        Spooler {
            budget,
            address,
            file: None,
            len: 0,
            ram: 0,
        }
    }

    /// Charge per address from now on (`Some`) or not (the client
    /// authenticated). Only between messages.
    pub fn set_address(&mut self, address: Option<IpAddr>) {
        if self.file.is_none() && self.len == 0 {
            self.address = address;
        }
    }

    /// Account for the message buffer `buf` (holding every byte received
    /// since the last call that moved bytes out). Moves its content to the
    /// spool file when it passed the threshold or when the shard's RAM
    /// budget is spent; `buf` is then emptied. A spooling message thus
    /// writes in pieces of about the threshold.
    pub async fn track(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Track> {
        let held = buf.capacity() as u64;
        if buf.len() <= self.budget.threshold {
            if held > self.ram {
                if self.budget.take_ram(held - self.ram) {
                    self.ram = held;
                    return Ok(Track::Held);
                }
            } else {
                self.budget.release_ram(self.ram - held);
                self.ram = held;
                return Ok(Track::Held);
            }
        }
        if buf.is_empty() {
            return Ok(Track::Held);
        }
        // The buffer goes to the kernel; the next bytes start a fresh one.
        let data = std::mem::take(buf);
        self.budget.release_ram(self.ram);
        self.ram = 0;
        Ok(if self.spill(data).await? {
            Track::Held
        } else {
            Track::Refused
        })
    }

    /// Append `data` to the spool file, created on first use. `Ok(false)`:
    /// the budget has no room, and the message in flight is dropped.
    async fn spill(&mut self, data: Vec<u8>) -> std::io::Result<bool> {
        let n = data.len() as u64;
        if !self.budget.take_spool(n, self.address) {
            self.reset();
            return Ok(false);
        }
        if self.file.is_none() {
            match self.budget.create_file().await {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.budget.release_spool(n, self.address);
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.write(data).await {
            self.budget.release_spool(n, self.address);
            self.reset();
            return Err(e);
        }
        self.len += n;
        Ok(true)
    }

    async fn write(&mut self, data: Vec<u8>) -> std::io::Result<()> {
        let file = self.file.as_ref().expect("spool file");
        let total = data.len();
        let w = file
            .write_at(data, self.len)
            .await
            .map_err(std::io::Error::from)?;
        if w != total {
            // A buffered write to a regular file is short only when the
            // disk is full: treat it as the failure it is.
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "short spool write",
            ));
        }
        Ok(())
    }

    /// The complete message: `tail` (the bytes received since the last
    /// [`Spooler::track`]) alone in RAM, or appended to the spool file,
    /// which is then mapped. The spooler is ready for the next message.
    /// The spool budget stops counting the file here: from now on it is a
    /// message being stored, held only until its delivery returns.
    pub async fn finish(&mut self, tail: Vec<u8>) -> std::io::Result<MessageBody> {
        self.budget.release_ram(self.ram);
        self.ram = 0;
        if self.file.is_none() {
            return Ok(MessageBody::Heap(tail));
        }
        if !tail.is_empty() && !self.spill(tail).await? {
            return Err(std::io::Error::other(OverBudget));
        }
        let file = self.file.take().expect("spool file");
        let len = self.len;
        // SAFETY: the file is unnamed and written only through this spooler,
        // which stops writing to it here; the mapping is read-only.
        let map = unsafe { memmap2::MmapOptions::new().len(len as usize).map(&file) };
        self.release_spool();
        let _ = file.close().await;
        Ok(MessageBody::Mapped(map?))
    }

    fn release_spool(&mut self) {
        self.budget.release_spool(self.len, self.address);
        self.len = 0;
    }

    /// Drop the message in flight (aborted, refused, or the connection ends).
    pub fn reset(&mut self) {
        self.release_spool();
        self.budget.release_ram(self.ram);
        self.ram = 0;
        // Dropping the descriptor frees the unnamed file.
        self.file = None;
    }
}

impl Drop for Spooler {
    fn drop(&mut self) {
        self.reset();
    }
}

/// Create DATA/spool/ (spool files are unnamed; nothing in it survives).
pub fn prepare_dir(data_dir: &Path) -> std::io::Result<PathBuf> {
    let dir = data_dir.join("spool");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(threshold: usize, per_address: u64) -> Memory {
        Memory {
            spool_threshold: threshold,
            spool_per_address_max: per_address,
            ..Memory::default()
        }
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { f().await })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn budgets_take_and_release() {
        let b = Budget::new(&memory(16, 100), PathBuf::from("/nonexistent"), 64, 300);
        assert!(b.take_ram(40));
        assert!(!b.take_ram(30), "over the RAM budget");
        b.release_ram(40);
        assert!(b.take_ram(64));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(b.take_spool(100, Some(a)));
        assert!(!b.take_spool(1, Some(a)), "over the address's budget");
        assert!(b.take_spool(100, Some(other)));
        assert!(b.take_spool(100, None));
        assert!(!b.spool_room(1));
        assert!(!b.take_spool(1, None), "over the shard's budget");
        b.release_spool(100, Some(a));
        assert!(
            b.per_address.borrow().get(&a).is_none(),
            "an address at zero is forgotten"
        );
        assert!(b.take_spool(50, Some(a)));
        assert_eq!(b.spool_used(), 250);
        // Releasing more than was taken never wraps.
        b.release_spool(1000, Some(a));
        assert_eq!(b.spool_used(), 0);
    }

    #[test]
    fn tick_trims_only_after_a_quiet_second() {
        let b = Budget::new(&memory(16, 100), PathBuf::from("/nonexistent"), 64, 300);
        b.freed(10);
        b.tick();
        assert_eq!(
            b.freed.get(),
            10,
            "memory was freed since the last tick: wait"
        );
        b.tick();
        assert_eq!(b.freed.get(), 0, "nothing freed since: trimmed");
        let off = Budget::new(
            &Memory {
                trim_after_bytes: 0,
                ..memory(16, 100)
            },
            PathBuf::from("/nonexistent"),
            64,
            300,
        );
        off.freed(10);
        off.tick();
        off.tick();
        assert_eq!(off.freed.get(), 0, "trimming off: nothing counted");
    }

    /// A message under the threshold stays in RAM; a larger one moves to
    /// an unnamed spool file in pieces and comes back whole as a mapping;
    /// the budget is charged while it arrives and released at the end.
    #[test]
    fn spooler_keeps_small_messages_in_ram_and_spools_large_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let budget = Rc::new(Budget::new(
                &memory(1024, 1 << 20),
                path.clone(),
                1 << 20,
                1 << 20,
            ));
            let mut s = Spooler::new(budget.clone(), None);
            let mut buf = b"small".to_vec();
            assert_eq!(s.track(&mut buf).await.unwrap(), Track::Held);
            let body = s.finish(buf).await.unwrap();
            assert!(matches!(body, MessageBody::Heap(_)));
            assert_eq!(&*body, b"small");

            let mut want = Vec::new();
            let mut buf = Vec::new();
            for i in 0..40u8 {
                let piece = vec![b'a' + i % 26; 100];
                want.extend_from_slice(&piece);
                buf.extend_from_slice(&piece);
                assert_eq!(s.track(&mut buf).await.unwrap(), Track::Held);
            }
            assert!(budget.spool_used() > 0, "the spooled part is charged");
            assert!(
                std::fs::read_dir(&path).unwrap().next().is_none(),
                "spool files have no name"
            );
            let body = s.finish(buf).await.unwrap();
            assert!(matches!(body, MessageBody::Mapped(_)));
            assert_eq!(&*body, &want[..]);
            assert_eq!(
                budget.spool_used(),
                0,
                "released once the message is complete"
            );
        });
    }

    /// Over the per-address budget the message is refused and everything
    /// it held is released; a reset does the same for an abandoned one.
    #[test]
    fn spooler_refuses_over_budget_and_releases_on_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let a: IpAddr = "192.0.2.7".parse().unwrap();
            let budget = Rc::new(Budget::new(&memory(64, 1000), path, 1 << 20, 1 << 20));
            let mut s = Spooler::new(budget.clone(), Some(a));
            let mut refused = false;
            for _ in 0..20 {
                let mut buf = vec![b'x'; 100];
                if s.track(&mut buf).await.unwrap() == Track::Refused {
                    refused = true;
                    break;
                }
            }
            assert!(refused, "1,000 bytes per address, 2,000 sent");
            assert_eq!(budget.spool_used(), 0);
            let mut buf = vec![b'y'; 500];
            assert_eq!(s.track(&mut buf).await.unwrap(), Track::Held);
            assert_eq!(budget.spool_used(), 500);
            s.reset();
            assert_eq!(budget.spool_used(), 0);
            assert_eq!(budget.ram_used.get(), 0);
            // The last bytes over the budget: finish refuses, releasing all.
            let mut buf = vec![b'z'; 900];
            assert_eq!(s.track(&mut buf).await.unwrap(), Track::Held);
            let e = s.finish(vec![b'z'; 200]).await.unwrap_err();
            assert!(is_over_budget(&e), "{e}");
            assert!(!is_disk_full(&e));
            assert_eq!(budget.spool_used(), 0);
        });
    }
}
