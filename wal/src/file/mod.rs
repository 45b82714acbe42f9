//! The file WAL: segmented, preallocated files with group commit.
//!
//! [`FileWal::append`] assigns the record its position and copies it into a shared queue buffer (the
//! checksum is computed before taking the lock). One writer thread swaps out **everything** queued,
//! writes it with one `pwrite` and makes it durable with one `fdatasync`, then completes all those
//! appends at once; while it syncs, the next group accumulates. This is the group commit of DESIGN.md
//! section 4; [`writer`] has the details.
//!
//! The writer is an OS thread, not a Tokio task, because `pwrite` and `fdatasync` block for hundreds of
//! microseconds or more; on Tokio's workers they would stall unrelated connections.
//!
//! Segments are prepared ahead on a helper thread and, by default, written with zeros
//! ([`Preallocate::Zero`]): syncing writes over already written blocks is the cheapest sync the file
//! system offers (see BENCHMARKS.md for the measurement).
//!
//! Recovery ([`FileWal::open`]) reads the segments in order and stops at the first record that is not
//! whole and intact. Damage in the last segment is a torn tail from a crash: it is reported, cut off,
//! and a fresh segment is started, so the garbage can never be read as records later. Damage in any
//! earlier segment cannot come from a crash (a segment is synced before the next one is created), so
//! the WAL refuses to open instead of dropping the records behind it.

mod segment;
pub mod writer;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{PendingAppend, Recovery, TornTail, Wal, WalError, WalPosition, WalRecord, WalStats};
use writer::{Shared, Writer};

/// Settings of the file WAL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FileWalConfig {
    /// Size of each segment file, preallocated at creation. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest encoded record accepted. Default 16 MiB; at most `segment_bytes` less the header.
    pub max_record_bytes: u64,
    /// How a new segment's space is prepared. Default `zero`.
    pub preallocate: Preallocate,
    /// After a group commit, how long the writer may wait for as many appends as it just completed
    /// before writing the next group. Zero (the default) writes whatever is queued at once; a few tens
    /// of microseconds lets appenders that wait for each append before the next share one sync
    /// instead of alternating between two, at the cost of that much latency.
    pub group_commit_wait_us: u64,
}

impl Default for FileWalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            preallocate: Preallocate::Zero,
            group_commit_wait_us: 0,
        }
    }
}

/// How a new segment's space is prepared (on a helper thread, before the segment is needed).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Preallocate {
    /// Nothing: the file grows as it is written (sparse).
    None,
    /// Space reserved with `fallocate`: no write can fail for lack of space, but the first write to
    /// each block makes the next `fdatasync` also journal an extent conversion.
    Reserve,
    /// Space reserved and written with zeros: the fastest syncs, for the price of writing each
    /// segment twice (zeros, then records).
    Zero,
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
        if self.group_commit_wait_us > 10_000 {
            return invalid(
                "group_commit_wait_us",
                format!(
                    "{} is above the maximum of 10000",
                    self.group_commit_wait_us
                ),
            );
        }
        Ok(())
    }
}

/// The file WAL. See the [module documentation](self).
#[derive(Debug)]
pub struct FileWal {
    dir: PathBuf,
    max_record_bytes: u64,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
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
        // A spare being prepared when the process stopped is incomplete: start it afresh.
        let spare = dir.join(segment::SPARE_NAME);
        if spare.exists() {
            fs::remove_file(&spare).map_err(|e| WalError::io("remove", &spare, e))?;
        }
        let (recovery, segments, next) = recover(dir, &config)?;
        if let Some(torn) = &recovery.torn_tail {
            tracing::warn!(
                path = %torn.path.display(),
                file_offset = torn.file_offset,
                reason = %torn.reason,
                "wal: torn tail discarded (the last write before a crash; never acknowledged)"
            );
        }
        let shared = Arc::new(Shared::new(next));
        let writer = Writer::start(dir, config.clone(), segments, next, lock, shared.clone())?;
        let handle = std::thread::Builder::new()
            .name("weir-wal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| WalError::io("spawn writer thread", dir, e))?;
        let wal = FileWal {
            dir: dir.to_path_buf(),
            max_record_bytes: config.max_record_bytes,
            shared,
            writer: Mutex::new(Some(handle)),
        };
        Ok((wal, recovery))
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
        let position = self.shared.append(&record, done_tx)?;
        Ok(PendingAppend::new(position, done_rx))
    }

    fn next_position(&self) -> WalPosition {
        self.shared.lock().next
    }

    async fn trim(&self, before: WalPosition) -> Result<(), WalError> {
        let (tx, rx) = oneshot::channel();
        self.shared.trim(before, tx)?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    async fn close(&self) -> Result<(), WalError> {
        // The writer drains what is queued, then stops.
        self.shared.close();
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
        let stats = &self.shared.stats;
        WalStats {
            records: stats.records.load(Ordering::Relaxed),
            bytes: stats.bytes.load(Ordering::Relaxed),
            syncs: stats.syncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FileWal {
    fn drop(&mut self) {
        // Stop the writer once it has drained the queue. Not joined: drop must not block.
        self.shared.close();
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
