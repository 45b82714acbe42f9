//! The file WAL: segmented, preallocated files with group commit.
//!
//! One writer thread owns the segment files. [`FileWal::append`] assigns the record its position and
//! queues it; the writer takes **everything** queued, encodes it into one buffer, writes it with one
//! `pwrite` and makes it durable with one `fdatasync`, then completes all those appends at once. While
//! it syncs, new appends queue up for the next round: the busier the WAL, the more records share a
//! sync. This is the group commit of DESIGN.md section 4.
//!
//! A dedicated OS thread (not a Tokio task) does the writing because `pwrite` and `fdatasync` block for
//! milliseconds; on Tokio's workers they would stall unrelated connections.
//!
//! Recovery ([`FileWal::open`]) reads the segments in order and stops at the first record that is not
//! whole and intact. Damage in the last segment is a torn tail from a crash: it is reported, cut off,
//! and a fresh segment is started, so the garbage can never be read as records later. Damage in any
//! earlier segment cannot come from a crash (a segment is synced before the next one is created), so
//! the WAL refuses to open instead of dropping the records behind it.

mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{PendingAppend, Recovery, TornTail, Wal, WalError, WalPosition, WalRecord, WalStats};
use writer::{Command, Writer};

/// Settings of the file WAL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FileWalConfig {
    /// Size of each segment file, preallocated at creation. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest encoded record accepted. Default 16 MiB; at most `segment_bytes` less the header.
    pub max_record_bytes: u64,
    /// Most bytes one group commit writes before syncing. Default 8 MiB.
    pub max_batch_bytes: u64,
    /// Reserve segment space with `fallocate` at creation. Default true.
    pub preallocate: bool,
}

impl Default for FileWalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            max_batch_bytes: 8 << 20,
            preallocate: true,
        }
    }
}

impl FileWalConfig {
    fn validate(&self) -> Result<(), WalError> {
        let invalid = |key, detail: String| Err(WalError::InvalidConfig { key, detail });
        if self.segment_bytes < 4096 {
            return invalid(
                "segment_bytes",
                format!("{} is below the minimum of 4096", self.segment_bytes),
            );
        }
        let room = self.segment_bytes - segment::HEADER_LEN;
        if self.max_record_bytes < 64 || self.max_record_bytes > room {
            return invalid(
                "max_record_bytes",
                format!(
                    "{} must lie between 64 and segment_bytes less the header ({room})",
                    self.max_record_bytes
                ),
            );
        }
        if self.max_batch_bytes == 0 {
            return invalid("max_batch_bytes", "must be positive".into());
        }
        Ok(())
    }
}

/// The file WAL. See the [module documentation](self).
#[derive(Debug)]
pub struct FileWal {
    dir: PathBuf,
    max_record_bytes: u64,
    /// Next position and the queue, under one lock so positions follow queue order.
    queue: Mutex<Queue>,
    stats: Arc<Stats>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Queue {
    next: WalPosition,
    tx: Option<mpsc::Sender<Command>>,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) records: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) syncs: AtomicU64,
}

const LOCK_FILE: &str = "LOCK";

impl FileWal {
    /// Opens (creating if needed) the WAL in `dir`, recovers what it holds, and starts the writer.
    ///
    /// Appends go to a fresh segment, never after recovered data: whatever followed the last good
    /// record is cut off first.
    pub fn open(dir: &Path, config: FileWalConfig) -> Result<(FileWal, Recovery), WalError> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(|e| WalError::io("create_dir", dir, e))?;
        let lock = lock_dir(dir)?;
        let (recovery, segments, next) = recover(dir, &config)?;
        if let Some(torn) = &recovery.torn_tail {
            tracing::warn!(
                path = %torn.path.display(),
                file_offset = torn.file_offset,
                reason = %torn.reason,
                "wal: torn tail discarded (the last write before a crash; never acknowledged)"
            );
        }
        let stats = Arc::new(Stats::default());
        let writer = Writer::start(dir, config.clone(), segments, next, lock, stats.clone())?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("weir-wal-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| WalError::io("spawn writer thread", dir, e))?;
        let wal = FileWal {
            dir: dir.to_path_buf(),
            max_record_bytes: config.max_record_bytes,
            queue: Mutex::new(Queue { next, tx: Some(tx) }),
            stats,
            writer: Mutex::new(Some(handle)),
        };
        Ok((wal, recovery))
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, command: Command) -> Result<(), WalError> {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = queue.tx.as_ref().ok_or(WalError::Closed)?;
        tx.send(command).map_err(|_| WalError::Closed)
    }
}

#[async_trait]
impl Wal for FileWal {
    fn append(&self, record: WalRecord) -> Result<PendingAppend, WalError> {
        let size = record.encoded_len() as u64;
        if size > self.max_record_bytes {
            return Err(WalError::RecordTooLarge {
                size,
                max: self.max_record_bytes,
            });
        }
        let (done_tx, done_rx) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let position = queue.next;
        let tx = queue.tx.as_ref().ok_or(WalError::Closed)?;
        tx.send(Command::Append {
            record,
            done: done_tx,
        })
        .map_err(|_| WalError::Closed)?;
        queue.next = WalPosition(position.0 + 1);
        Ok(PendingAppend::new(position, done_rx))
    }

    fn next_position(&self) -> WalPosition {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next
    }

    async fn trim(&self, before: WalPosition) -> Result<(), WalError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Trim { before, done: tx })?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    async fn close(&self) -> Result<(), WalError> {
        let tx = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tx
            .take();
        // Dropping the sender lets the writer drain what is queued and stop.
        drop(tx);
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| WalError::Poisoned {
                    cause: format!("joining the writer thread: {e}"),
                })?
                .map_err(|_| WalError::Poisoned {
                    cause: "the writer thread panicked".into(),
                })?;
        }
        Ok(())
    }

    fn stats(&self) -> WalStats {
        WalStats {
            records: self.stats.records.load(Ordering::Relaxed),
            bytes: self.stats.bytes.load(Ordering::Relaxed),
            syncs: self.stats.syncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FileWal {
    fn drop(&mut self) {
        // Stop the writer; it finishes the round in flight. Not joined: drop must not block.
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tx
            .take();
    }
}

/// Takes an exclusive lock on `dir/LOCK` for as long as the returned file lives.
fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WalError::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(WalError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(WalError::io("lock", &path, e)),
    }
}

/// What recovery hands to the writer.
type Segments = Vec<(WalPosition, PathBuf)>;

/// Reads every segment; returns the records, the surviving segment list and the next position.
fn recover(
    dir: &Path,
    config: &FileWalConfig,
) -> Result<(Recovery, Segments, WalPosition), WalError> {
    let mut segments = segment::list(dir)?;
    let mut recovery = Recovery::default();
    let mut expected: Option<WalPosition> = None;
    let max_record = usize::try_from(config.max_record_bytes).unwrap_or(usize::MAX);
    let count = segments.len();
    for (i, (first, path)) in segments.iter().enumerate() {
        if let Some(expected) = expected
            && expected != *first
        {
            return Err(WalError::Corrupt {
                path: path.clone(),
                file_offset: 0,
                reason: crate::CorruptReason::PositionGap {
                    expected: expected.0,
                    found: first.0,
                },
            });
        }
        let scan = segment::scan(path, *first, max_record)?;
        let is_last = i + 1 == count;
        if let Some((file_offset, reason)) = scan.damage.clone() {
            if !is_last {
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    file_offset,
                    reason,
                });
            }
            recovery.torn_tail = Some(TornTail {
                path: path.clone(),
                file_offset,
                reason,
            });
        }
        expected = Some(scan.next_position(*first));
        if is_last && scan.valid_end == 0 {
            // The header never made it to disk, so the segment holds nothing: remove it.
            fs::remove_file(path).map_err(|e| WalError::io("remove", path, e))?;
            segment::sync_dir(dir)?;
            segments.pop();
            break;
        }
        if is_last {
            // Cut whatever follows the good records, so new data never sits next to old garbage.
            segment::truncate(path, scan.valid_end)?;
        }
        recovery.records.extend(scan.records);
    }
    let next = expected.unwrap_or_default();
    Ok((recovery, segments, next))
}
