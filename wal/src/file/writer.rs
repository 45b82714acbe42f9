//! The group commit behind a [`FileWal`](super::FileWal): appenders fill a shared buffer, one writer
//! thread drains it.
//!
//! An appender encodes its record's header and checksum on its own thread, then, under the queue's
//! mutex, takes the next position and copies the record into the shared buffer: no channel, no
//! allocation per record, no wake-up of the writer unless it is idle. The writer thread swaps the whole
//! buffer out, writes it with one `pwrite` (split at record boundaries where a segment fills), makes it
//! durable with one `fdatasync`, and completes every append in it. While it syncs, the next group
//! accumulates: the longer a sync takes, the more records the next one covers.
//!
//! Only the writer touches segment files. New segments come from a spare prepared (zero-filled,
//! synced) on a helper thread while the current one fills.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{FileWalConfig, Stats, segment};
use crate::{WalError, WalPosition, WalRecord, record};

pub(crate) type Done = oneshot::Sender<Result<(), WalError>>;

/// What appenders hand to the writer, under [`Shared::queue`].
#[derive(Debug, Default)]
pub(crate) struct Queue {
    /// Position of the next record appended.
    pub(crate) next: WalPosition,
    /// Encoded records waiting to be written.
    buf: Vec<u8>,
    /// End of each waiting record in `buf`.
    ends: Vec<usize>,
    waiters: Vec<Done>,
    trims: Vec<(WalPosition, Done)>,
    closed: bool,
    writer_idle: bool,
    /// The sleeping writer wants waking once this many appends wait (1, or more while it gathers).
    wake_at: usize,
    /// The first write or sync failure; after it nothing more is acknowledged.
    poisoned: Option<String>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.waiters.is_empty() && self.trims.is_empty()
    }
}

/// The state appenders and the writer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    pub(crate) stats: Stats,
}

impl Shared {
    pub(crate) fn new(next: WalPosition) -> Self {
        let shared = Shared::default();
        shared.lock().next = next;
        shared
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a record; returns its position.
    pub(crate) fn append(&self, record: &WalRecord, done: Done) -> Result<WalPosition, WalError> {
        let prefix = record::encode_prefix(record);
        let mut q = self.lock();
        if q.closed {
            return Err(WalError::Closed);
        }
        if let Some(cause) = &q.poisoned {
            return Err(WalError::Poisoned {
                cause: cause.clone(),
            });
        }
        let position = q.next;
        q.next = WalPosition(position.0 + 1);
        q.buf.extend_from_slice(&prefix);
        q.buf.extend_from_slice(&record.payload);
        let end = q.buf.len();
        q.ends.push(end);
        q.waiters.push(done);
        self.wake_writer(q);
        Ok(position)
    }

    pub(crate) fn trim(&self, before: WalPosition, done: Done) -> Result<(), WalError> {
        let mut q = self.lock();
        if q.closed {
            return Err(WalError::Closed);
        }
        q.trims.push((before, done));
        self.wake_writer(q);
        Ok(())
    }

    /// Refuses further appends; the writer drains what is queued and stops.
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        drop(q);
        self.wake.notify_one();
    }

    fn wake_writer(&self, mut q: MutexGuard<'_, Queue>) {
        // Waking costs a system call: only when the writer sleeps and wants it.
        let wanted = q.waiters.len() >= q.wake_at || !q.trims.is_empty() || q.closed;
        if q.writer_idle && wanted {
            q.writer_idle = false;
            drop(q);
            self.wake.notify_one();
        }
    }
}

/// An open segment file.
#[derive(Debug)]
struct SegmentFile {
    file: File,
    path: PathBuf,
}

/// Groups up to this size are completed by the writer itself, larger ones by the completer thread.
const INLINE_COMPLETIONS_MAX: usize = 4;

/// A group's appends and how they ended.
type Completion = (Vec<Done>, Result<(), WalError>);

/// One group taken from the queue.
#[derive(Default)]
struct Group {
    buf: Vec<u8>,
    ends: Vec<usize>,
    waiters: Vec<Done>,
    trims: Vec<(WalPosition, Done)>,
}

pub(crate) struct Writer {
    dir: PathBuf,
    config: FileWalConfig,
    shared: Arc<Shared>,
    /// Every live segment, oldest first; the last is the active one.
    segments: VecDeque<(WalPosition, PathBuf)>,
    active: SegmentFile,
    write_at: u64,
    /// Position of the next record written.
    next: WalPosition,
    spare: Option<JoinHandle<Result<File, WalError>>>,
    /// Held for the directory lock's lifetime.
    _lock: File,
}

impl Writer {
    /// Starts a fresh segment at `next` after the recovered ones.
    pub(crate) fn start(
        dir: &Path,
        config: FileWalConfig,
        recovered: Vec<(WalPosition, PathBuf)>,
        next: WalPosition,
        lock: File,
        shared: Arc<Shared>,
    ) -> Result<Writer, WalError> {
        let mut segments: VecDeque<_> = recovered.into();
        // An empty last segment at `next` (a restart right after a roll) is replaced by a new one.
        if let Some((first, path)) = segments.back()
            && *first == next
        {
            std::fs::remove_file(path).map_err(|e| WalError::io("remove", path, e))?;
            segments.pop_back();
        }
        let spare = segment::prepare_spare(dir, config.segment_bytes, config.preallocate)?;
        let path = segment::install_spare(dir, &spare, next)?;
        segments.push_back((next, path.clone()));
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            active: SegmentFile { file: spare, path },
            write_at: segment::HEADER_LEN,
            config,
            shared,
            segments,
            next,
            spare: None,
            _lock: lock,
        };
        writer.prepare_next_spare();
        Ok(writer)
    }

    /// Serves the queue until it is closed and drained.
    pub(crate) fn run(mut self) {
        // Completing an append wakes its task, which costs the waking thread microseconds; for a
        // group of dozens that would hold up the next write. A completer thread does it instead,
        // in group order, while the writer moves on.
        let (completions, rx) = std::sync::mpsc::channel::<Completion>();
        let completer = std::thread::Builder::new()
            .name("weir-wal-complete".into())
            .spawn(move || {
                for (waiters, result) in rx {
                    for done in waiters {
                        // A waiter that went away no longer cares.
                        let _ = done.send(result.clone());
                    }
                }
            });
        let completer = match completer {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "no wal completer thread; completing inline");
                None
            }
        };
        // Deleting trimmed segments (unlinking 64 MiB files, syncing the directory) takes
        // milliseconds: a trimmer thread does it, oldest first, while the writer goes on writing.
        let (trims, trim_rx) = std::sync::mpsc::channel::<(Vec<PathBuf>, Done)>();
        let dir = self.dir.clone();
        let trimmer = std::thread::Builder::new()
            .name("weir-wal-trim".into())
            .spawn(move || {
                for (paths, done) in trim_rx {
                    let _ = done.send(remove_segments(&dir, &paths));
                }
            });
        let trimmer = match trimmer {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "no wal trimmer thread; trimming inline");
                None
            }
        };
        let mut group = Group::default();
        let mut previous = 0;
        while self.take(&mut group, previous) {
            previous = group.waiters.len();
            if !group.waiters.is_empty() {
                let result = self.commit(&group);
                let waiters = std::mem::take(&mut group.waiters);
                match &completer {
                    // A handful of appends are completed at once here: handing them over would add
                    // a thread hop to exactly the lightly loaded appends that care about latency.
                    Some(_) if waiters.len() > INLINE_COMPLETIONS_MAX => {
                        // The completer lives until `completions` is dropped below.
                        let _ = completions.send((waiters, result));
                    }
                    _ => waiters.into_iter().for_each(|done| {
                        let _ = done.send(result.clone());
                    }),
                }
            }
            for (before, done) in group.trims.drain(..) {
                let paths = self.trim(before);
                if trimmer.is_some() {
                    // The trimmer lives until `trims` is dropped below.
                    let _ = trims.send((paths, done));
                } else {
                    let _ = done.send(remove_segments(&self.dir, &paths));
                }
            }
        }
        drop(trims);
        if let Some(trimmer) = trimmer {
            let _ = trimmer.join();
        }
        drop(completions);
        if let Some(completer) = completer {
            let _ = completer.join();
        }
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
        tracing::debug!(dir = %self.dir.display(), next = %self.next, "wal writer stopped");
    }

    /// Waits for work and swaps it into `group` (whose buffers are reused). False once closed and
    /// drained. `previous` is the size of the group just completed: with `group_commit_wait_us` set,
    /// the writer waits that long at most for as many appends to gather, since the appenders it just
    /// completed are likely to append again at once.
    fn take(&self, group: &mut Group, previous: usize) -> bool {
        group.buf.clear();
        group.ends.clear();
        let mut q = self.shared.lock();
        q.wake_at = 1;
        while q.is_empty() && !q.closed {
            q.writer_idle = true;
            q = self
                .shared
                .wake
                .wait(q)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let wait = std::time::Duration::from_micros(self.config.group_commit_wait_us);
        if !wait.is_zero() && q.waiters.len() < previous && q.trims.is_empty() {
            let deadline = std::time::Instant::now() + wait;
            q.wake_at = previous;
            while q.waiters.len() < previous && !q.closed {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                q.writer_idle = true;
                q = self
                    .shared
                    .wake
                    .wait_timeout(q, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            q.wake_at = 1;
        }
        q.writer_idle = false;
        if q.is_empty() {
            return false;
        }
        std::mem::swap(&mut q.buf, &mut group.buf);
        std::mem::swap(&mut q.ends, &mut group.ends);
        std::mem::swap(&mut q.waiters, &mut group.waiters);
        std::mem::swap(&mut q.trims, &mut group.trims);
        true
    }

    /// Writes and syncs one group.
    fn commit(&mut self, group: &Group) -> Result<(), WalError> {
        let poisoned = self.shared.lock().poisoned.clone();
        let result = match poisoned {
            Some(cause) => Err(WalError::Poisoned { cause }),
            None => self.write_and_sync(group),
        };
        let stats = &self.shared.stats;
        match &result {
            Ok(()) => {
                metrics::histogram!("weir_wal_group_commit_records")
                    .record(group.waiters.len() as f64);
                metrics::histogram!("weir_wal_group_commit_bytes").record(group.buf.len() as f64);
                stats
                    .records
                    .fetch_add(group.waiters.len() as u64, Ordering::Relaxed);
                stats
                    .bytes
                    .fetch_add(group.buf.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                let mut q = self.shared.lock();
                if q.poisoned.is_none() {
                    tracing::error!(error = %e, "wal write failed; refusing all further appends");
                    q.poisoned = Some(e.to_string());
                }
            }
        }
        result
    }

    fn write_and_sync(&mut self, group: &Group) -> Result<(), WalError> {
        let mut from = 0usize;
        let mut record = 0usize;
        while record < group.ends.len() {
            // The records that still fit in the active segment.
            let room = self.config.segment_bytes - self.write_at;
            let fit = group.ends[record..].partition_point(|end| (end - from) as u64 <= room);
            if fit == 0 {
                if self.write_at == segment::HEADER_LEN {
                    // Cannot happen: the configuration bounds records below a segment's capacity.
                    return Err(WalError::RecordTooLarge {
                        size: (group.ends[record] - from) as u64,
                        max: room,
                    });
                }
                self.sync()?;
                self.roll()?;
                continue;
            }
            let to = group.ends[record + fit - 1];
            self.active
                .file
                .write_all_at(&group.buf[from..to], self.write_at)
                .map_err(|e| WalError::io("write", &self.active.path, e))?;
            self.write_at += (to - from) as u64;
            self.next = WalPosition(self.next.0 + fit as u64);
            record += fit;
            from = to;
        }
        self.sync()
    }

    fn sync(&self) -> Result<(), WalError> {
        self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = self
            .active
            .file
            .sync_data()
            .map_err(|e| WalError::io("fdatasync", &self.active.path, e));
        metrics::histogram!("weir_wal_fsync_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    fn prepare_next_spare(&mut self) {
        let dir = self.dir.clone();
        let (size, preallocate) = (self.config.segment_bytes, self.config.preallocate);
        let spawned = std::thread::Builder::new()
            .name("weir-wal-spare".into())
            .spawn(move || segment::prepare_spare(&dir, size, preallocate));
        match spawned {
            Ok(handle) => self.spare = Some(handle),
            Err(e) => tracing::warn!(error = %e, "cannot prepare the next wal segment in advance"),
        }
    }

    /// Starts a new segment at the next position, from the prepared spare. The old one is synced.
    fn roll(&mut self) -> Result<(), WalError> {
        let spare = match self.spare.take().map(JoinHandle::join) {
            Some(Ok(prepared)) => prepared?,
            // No spare (spawn failed) or its thread panicked: prepare one here.
            _ => segment::prepare_spare(
                &self.dir,
                self.config.segment_bytes,
                self.config.preallocate,
            )?,
        };
        let path = segment::install_spare(&self.dir, &spare, self.next)?;
        self.segments.push_back((self.next, path.clone()));
        self.active = SegmentFile { file: spare, path };
        self.write_at = segment::HEADER_LEN;
        self.prepare_next_spare();
        Ok(())
    }

    /// Drops the closed segments whose records all lie below `before` from the live ones and
    /// returns their files, oldest first, for [`remove_segments`].
    fn trim(&mut self, before: WalPosition) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        while self.segments.len() > 1 && self.segments[1].0 <= before {
            if let Some((_, path)) = self.segments.pop_front() {
                paths.push(path);
            }
        }
        if !paths.is_empty() {
            tracing::debug!(removed = paths.len(), before = %before, "wal segments trimmed");
        }
        paths
    }
}

/// Deletes trimmed segment files, oldest first (a crash midway leaves a contiguous suffix of
/// segments, which recovery reads as usual), then makes the deletions durable.
fn remove_segments(dir: &Path, paths: &[PathBuf]) -> Result<(), WalError> {
    for path in paths {
        std::fs::remove_file(path).map_err(|e| WalError::io("remove", path, e))?;
    }
    if !paths.is_empty() {
        segment::sync_dir(dir)?;
    }
    Ok(())
}
