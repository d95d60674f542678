//! Segment files: preallocated, memory-mapped, append-only.
//!
//! Contract of the mapping: a segment is written by exactly one shard (its
//! writer), only at offsets at or beyond `write_pos`, either with one
//! `pwritev` into the file (default) or through a raw pointer into the
//! mapping (`append_through_map`); both land in the same page cache the
//! mapping shows. Readers only ever see bytes below `write_pos`, as `&[u8]`
//! slices of the mapping. Writing with pwritev avoids the page faults of a
//! first write into each mapped page and the TLB shootdowns that writeback
//! causes when it write-protects mapped dirty pages again. Bytes are readable as soon as they are written (same address
//! space) but callers only hand out locations after the group commit made
//! them durable. The file is fully allocated with fallocate before it is
//! mapped, so a full disk is an error at creation, never a SIGBUS on write.
//!
//! Every append writes (or stages) its bytes and advances `write_pos` in one
//! synchronous step, with no await in between: `zero_ahead` relies on it to
//! write zeros only where no record is or will be until the next append.
//!
//! A segment file is named by its id in hex: `run << 40 | writer << 32 | seq`,
//! so file names sort in log order within a writer.
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::{MmapOptions, MmapRaw};

pub const SEGMENT_MAGIC: &[u8; 8] = b"RMSEG001";
/// The version in [`SEGMENT_MAGIC`]'s last three digits.
pub const SEGMENT_VERSION: u32 = 1;

/// The version of a segment header `RMSEGnnn`, if it is one.
pub fn magic_version(header: &[u8]) -> Option<u32> {
    let digits = header.strip_prefix(b"RMSEG")?;
    if digits.len() != 3 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}
/// The segment header; records start right after it.
pub const SEGMENT_HEADER_LEN: usize = 64;

pub fn segment_id(run: u32, writer: u16, seq: u32) -> u64 {
    debug_assert!(run < (1 << 24));
    (u64::from(run) << 40) | (u64::from(writer) << 32) | u64::from(seq)
}

pub fn id_run(id: u64) -> u32 {
    (id >> 40) as u32
}
pub fn id_writer(id: u64) -> u16 {
    ((id >> 32) & 0xff) as u16
}
pub fn id_seq(id: u64) -> u32 {
    id as u32
}

pub fn file_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// One mapped segment.
pub struct Segment {
    id: u64,
    path: PathBuf,
    map: MmapRaw,
    /// The file handle used for fdatasync; `None` for segments opened read-only.
    file: Option<glommio::io::BufferedFile>,
    /// A second open of the same file for `zero_ahead` (with
    /// `zero_segments`), closed when the segment is retired.
    zero_file: RefCell<Option<Rc<glommio::io::BufferedFile>>>,
    /// End of the valid records (writer: next append position; reader: end found by scan).
    write_pos: Cell<usize>,
    /// Append by memcpy into the mapping instead of pwritev.
    through_map: bool,
    /// Records appended but not yet written to the file: the bytes just
    /// below `write_pos` (see `staged_at`). `flush` (and so `sync`) writes
    /// them with one pwritev, so a group commit of many small records costs
    /// one write system call instead of one per record. Nothing reads them
    /// before that: locations are handed out only after the sync.
    staged: RefCell<Vec<u8>>,
    /// A write failed: staged records of other commits may be lost, so every
    /// later append and sync of this segment fails too (its commits get a
    /// temporary failure, and the store moves to a new segment).
    failed: Cell<bool>,
    /// `zero_ahead` has zero-filled up to here (from wherever the write
    /// position was at the time). Records may already lie beyond it after
    /// a large append; zeroing then resumes at the write position.
    zeroed: Cell<usize>,
}

/// Records up to this size are staged; larger ones are written at once
/// (together with what is staged), never copied.
const STAGE_RECORD_MAX: usize = 64 * 1024;
/// Flush the staging buffer when it would grow beyond this.
const STAGE_CAP: usize = 256 * 1024;
/// `zero_ahead` writes zeros in chunks of this size.
pub const ZERO_CHUNK: usize = 1 << 20;
static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];

impl Segment {
    /// Create a new segment file of `size` bytes, fallocated, mapped
    /// read-write. With `zero`, its first chunk is zero-filled and synced
    /// (see `zero_ahead`).
    pub async fn create(
        dir: &Path,
        id: u64,
        size: usize,
        zero: bool,
        through_map: bool,
    ) -> std::io::Result<Segment> {
        let path = dir.join(file_name(id));
        let file = glommio::io::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .buffered_open(&path)
            .await
            .map_err(std::io::Error::from)?;
        match Self::init(dir, id, path.clone(), file, size, zero, through_map).await {
            Ok(seg) => Ok(seg),
            Err(e) => {
                // Leave no half-made segment behind for recovery to trip on.
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    async fn init(
        dir: &Path,
        id: u64,
        path: PathBuf,
        file: glommio::io::BufferedFile,
        size: usize,
        zero: bool,
        through_map: bool,
    ) -> std::io::Result<Segment> {
        // Allocate every block now: ENOSPC surfaces here, not as SIGBUS later.
        file.pre_allocate(size as u64, false)
            .await
            .map_err(std::io::Error::from)?;
        // Zeros go through a file description of their own: a writeback
        // error is reported once per description, so the zeroing task's
        // fdatasync must not be the one that consumes an error belonging
        // to a commit's records.
        let zero_file = if zero {
            Some(Rc::new(
                glommio::io::OpenOptions::new()
                    .write(true)
                    .buffered_open(&path)
                    .await
                    .map_err(std::io::Error::from)?,
            ))
        } else {
            None
        };
        let map = MmapOptions::new().len(size).map_raw(file.as_raw_fd())?;
        let seg = Segment {
            id,
            path,
            map,
            file: Some(file),
            zero_file: RefCell::new(zero_file),
            write_pos: Cell::new(SEGMENT_HEADER_LEN),
            through_map,
            staged: RefCell::new(Vec::new()),
            failed: Cell::new(false),
            zeroed: Cell::new(if zero { 0 } else { size }),
        };
        if zero {
            // The first chunk is zeroed (and its extents made durable) before
            // the first record; the store keeps zeroing ahead from there.
            seg.zero_ahead(ZERO_CHUNK).await?;
        }
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        header[..8].copy_from_slice(SEGMENT_MAGIC);
        header[8..16].copy_from_slice(&id.to_le_bytes());
        seg.write_at(0, &[&header])?;
        // The new directory entry must be durable before any record in the file counts.
        glommio::io::Directory::open(dir)
            .await
            .map_err(std::io::Error::from)?
            .sync()
            .await
            .map_err(std::io::Error::from)?;
        Ok(seg)
    }

    /// Map an existing segment read-only (recovery, other writers' segments).
    /// Blocking: used at start-up before the shard serves anything.
    pub fn open_read_only(path: &Path) -> std::io::Result<Segment> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len() as usize;
        if len < SEGMENT_HEADER_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "segment too short",
            ));
        }
        let map = MmapOptions::new().len(len).map_raw_read_only(&file)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let id = parse_file_name(name).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "bad segment name")
        })?;
        let seg = Segment {
            id,
            path: path.into(),
            map,
            file: None,
            zero_file: RefCell::new(None),
            write_pos: Cell::new(len),
            through_map: false,
            staged: RefCell::new(Vec::new()),
            failed: Cell::new(false),
            zeroed: Cell::new(len),
        };
        let header = &seg.all()[..8];
        if header != SEGMENT_MAGIC {
            // A segment of a newer layout must stop the start-up (its records
            // would be misread or skipped); anything else that is not our
            // magic is a file this binary never finished (or not ours).
            if let Some(v) = magic_version(header).filter(|v| *v > SEGMENT_VERSION) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    format!(
                        "{}: segment format {v} is newer than this ringmail reads (format {SEGMENT_VERSION})",
                        path.display()
                    ),
                ));
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad segment magic",
            ));
        }
        Ok(seg)
    }

    /// A write into this segment failed; it takes no more records.
    pub fn has_failed(&self) -> bool {
        self.failed.get()
    }

    pub fn is_writable(&self) -> bool {
        self.file.is_some()
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    pub fn write_pos(&self) -> usize {
        self.write_pos.get()
    }

    /// Mark the end of valid data (after a recovery scan).
    pub fn set_end(&self, end: usize) {
        assert!(end <= self.map.len());
        assert!(
            self.staged.borrow().is_empty(),
            "set_end with staged records"
        );
        self.write_pos.set(end);
    }

    pub fn room(&self) -> usize {
        self.map.len() - self.write_pos.get()
    }

    /// The whole mapping, for recovery scans of a segment nobody writes.
    pub fn all(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `map.len()` bytes for the lifetime of
        // `self`. Scans only happen on segments not being written (read-only
        // ones, or before the first append), so no write aliases this slice.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.map.len()) }
    }

    /// Bytes `[offset, offset+len)`, which must lie below `write_pos`.
    pub fn slice(&self, offset: usize, len: usize) -> &[u8] {
        let end = offset.checked_add(len).expect("slice overflow");
        assert!(end <= self.write_pos.get(), "read beyond written data");
        // SAFETY: in bounds of the mapping (write_pos <= len) and below
        // write_pos, which the writer never writes again.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) }
    }

    /// Append `parts` at the current write position, zero-padded to `total`
    /// bytes. Returns the offset written at. Caller checked `room()`.
    pub fn append(&self, parts: &[&[u8]], total: usize) -> std::io::Result<usize> {
        let at = self.write_pos.get();
        assert!(total <= self.room(), "append beyond segment");
        let len: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert!(len <= total);
        if self.failed.get() {
            return Err(std::io::Error::other(
                "an earlier write to this segment failed",
            ));
        }
        if self.through_map {
            self.write_at(at, parts)?;
            // Padding bytes are already zero: fallocated, or zero-filled
            // ahead, and never written since.
        } else if total <= STAGE_RECORD_MAX {
            if self.staged.borrow().len() + total > STAGE_CAP {
                self.flush()?;
            }
            let mut staged = self.staged.borrow_mut();
            for p in parts {
                staged.extend_from_slice(p);
            }
            // The padding goes out with the next records, so write it as zeros.
            let padded = staged.len() + (total - len);
            staged.resize(padded, 0);
        } else {
            // A large record: one pwritev with whatever is staged before it.
            let start = self.staged_at();
            let staged = std::mem::take(&mut *self.staged.borrow_mut());
            let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
            all.push(&staged);
            all.extend_from_slice(parts);
            if let Err(e) = self.write_at(start, &all) {
                self.failed.set(true);
                return Err(e);
            }
            let mut buf = staged;
            buf.clear();
            *self.staged.borrow_mut() = buf;
        }
        self.write_pos.set(at + total);
        Ok(at)
    }

    /// File offset of the first staged byte: staged records always end at
    /// `write_pos`.
    fn staged_at(&self) -> usize {
        self.write_pos.get() - self.staged.borrow().len()
    }

    /// Write the staged records into the file (page cache).
    pub fn flush(&self) -> std::io::Result<()> {
        let start = self.staged_at();
        let mut staged = self.staged.borrow_mut();
        if staged.is_empty() {
            return Ok(());
        }
        let r = self.write_at(start, &[&staged]);
        staged.clear();
        if r.is_err() {
            self.failed.set(true);
        }
        r.map(|_| ())
    }

    /// The store stopped appending here (a new active segment): write what
    /// is staged now and give the buffer back. A failure marks the segment
    /// failed, so the sync that covers it reports the error.
    pub fn retire(&self) {
        let _ = self.flush();
        *self.staged.borrow_mut() = Vec::new();
        // No more zeroing here (a running `zero_ahead` keeps its own handle).
        self.zero_file.borrow_mut().take();
    }

    fn write_at(&self, at: usize, parts: &[&[u8]]) -> std::io::Result<usize> {
        let file = self.file.as_ref().expect("write to a read-only segment");
        let len: usize = parts.iter().map(|p| p.len()).sum();
        assert!(at + len <= self.map.len(), "write beyond the segment");
        if self.through_map {
            let mut pos = at;
            for p in parts {
                // SAFETY: the range is inside the mapping and at or beyond write_pos,
                // so no `&[u8]` handed out by `slice` overlaps it; the mapping is
                // writable (created by `create`), and `p` cannot alias the mapping's
                // unwritten tail because nothing ever borrowed it.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        p.as_ptr(),
                        self.map.as_mut_ptr().add(pos),
                        p.len(),
                    )
                };
                pos += p.len();
            }
            return Ok(len);
        }
        // One pwritev into the page cache: a short syscall (no I/O happens
        // here; fdatasync does that), so it does not stall the executor.
        let mut iov: Vec<libc::iovec> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut done = 0usize;
        let mut first = 0usize;
        while done < len {
            // SAFETY: every iovec points into a live slice of `parts` (or its
            // tail, adjusted below); the fd is this segment's open file.
            let n = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    iov[first..].as_ptr(),
                    (iov.len() - first) as libc::c_int,
                    (at + done) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut n = n as usize;
            done += n;
            // A short write (rare on regular files): skip what was written.
            while first < iov.len() && n >= iov[first].iov_len {
                n -= iov[first].iov_len;
                first += 1;
            }
            if n > 0 {
                // SAFETY: advancing within the same slice, n < its remaining length.
                iov[first].iov_base =
                    unsafe { (iov[first].iov_base as *mut u8).add(n) } as *mut libc::c_void;
                iov[first].iov_len -= n;
            }
        }
        Ok(len)
    }

    /// Make everything written so far durable (fdatasync flushes the pages
    /// dirtied through the shared mapping). `inline`: call fdatasync on this
    /// thread, blocking the executor until the disk answers; otherwise hand
    /// it to io_uring, whose worker threads block instead.
    pub async fn sync(&self, inline: bool) -> std::io::Result<()> {
        self.flush()?;
        if self.failed.get() {
            return Err(std::io::Error::other(
                "an earlier write to this segment failed",
            ));
        }
        match &self.file {
            Some(f) if inline => loop {
                // SAFETY: fdatasync on the open descriptor of this segment.
                if unsafe { libc::fdatasync(f.as_raw_fd()) } == 0 {
                    return Ok(());
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            },
            Some(f) => f.fdatasync().await.map_err(std::io::Error::from),
            None => Ok(()),
        }
    }

    /// End of the part `zero_ahead` has zero-filled (records may lie beyond it).
    pub fn zeroed_to(&self) -> usize {
        self.zeroed.get()
    }

    /// Does `zero_ahead(ahead)` have work to do?
    pub fn wants_zeroing(&self, ahead: usize) -> bool {
        let pos = self.write_pos.get();
        self.zero_file.borrow().is_some()
            && !self.failed.get()
            && self.zeroed.get().max(pos) < (pos + ahead).min(self.map.len())
    }

    /// Zero-fill the file from the write position (or the end of what was
    /// zeroed before) up to `ahead` bytes past the write position, then
    /// fdatasync. fallocate leaves unwritten extents: the first commit that
    /// writes into one must also write the extent change (the inode, or a
    /// journal commit), one more disk round trip in the commit path. Done
    /// here, ahead of the records, a commit only writes its data.
    ///
    /// The zeros are written synchronously, without an await between reading
    /// `write_pos` and writing, so they can never land on a record: every
    /// append writes (or stages) its bytes and advances `write_pos` in one
    /// synchronous step, and staged bytes lie below `write_pos`. Later
    /// records overwrite the zeros in the page cache.
    ///
    /// Any error marks the segment failed, like a failed record write: the
    /// pages of this file can no longer be trusted, so its pending commits
    /// fail and the store moves to a new segment.
    pub async fn zero_ahead(&self, ahead: usize) -> std::io::Result<()> {
        let Some(file) = self.zero_file.borrow().clone() else {
            return Ok(());
        };
        let mut wrote = false;
        while self.wants_zeroing(ahead) {
            // wants_zeroing guarantees from < map.len(), so from < to.
            let from = self.zeroed.get().max(self.write_pos.get());
            let to = (from + ZERO_CHUNK).min(self.map.len());
            // SAFETY: ZEROS is a static buffer of at least `to - from` bytes;
            // the fd is an open description of this segment's file.
            let n = unsafe {
                libc::pwrite(
                    file.as_raw_fd(),
                    ZEROS.as_ptr().cast(),
                    to - from,
                    from as libc::off_t,
                )
            };
            if n <= 0 {
                let e = if n < 0 {
                    std::io::Error::last_os_error()
                } else {
                    std::io::Error::from(std::io::ErrorKind::WriteZero)
                };
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                self.failed.set(true);
                return Err(e);
            }
            self.zeroed.set(from + n as usize);
            wrote = true;
        }
        if wrote {
            if let Err(e) = file.fdatasync().await {
                self.failed.set(true);
                return Err(e.into());
            }
        }
        Ok(())
    }
}
