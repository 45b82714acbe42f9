//! The writer thread: the only code that touches segment files after recovery.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::{FileWalConfig, Stats, segment};
use crate::record;
use crate::{WalError, WalPosition, WalRecord};

pub(crate) type Done = oneshot::Sender<Result<(), WalError>>;

pub(crate) enum Command {
    Append { record: WalRecord, done: Done },
    Trim { before: WalPosition, done: Done },
}

#[derive(Debug)]
struct Active {
    file: File,
    path: PathBuf,
    write_at: u64,
}

pub(crate) struct Writer {
    dir: PathBuf,
    config: FileWalConfig,
    /// Every live segment, oldest first; the last is the active one.
    segments: VecDeque<(WalPosition, PathBuf)>,
    active: Active,
    /// Position of the next record written.
    next: WalPosition,
    buf: Vec<u8>,
    /// Set by the first failed write or sync; every later append fails with it.
    poisoned: Option<String>,
    stats: Arc<Stats>,
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
        stats: Arc<Stats>,
    ) -> Result<Writer, WalError> {
        let mut segments: VecDeque<_> = recovered.into();
        // An empty last segment at `next` (a restart right after a roll) is replaced by a new one.
        if let Some((first, path)) = segments.back()
            && *first == next
        {
            std::fs::remove_file(path).map_err(|e| WalError::io("remove", path, e))?;
            segments.pop_back();
        }
        let (file, path) = segment::create(dir, next, config.segment_bytes, config.preallocate)?;
        segments.push_back((next, path.clone()));
        Ok(Writer {
            dir: dir.to_path_buf(),
            active: Active {
                file,
                path,
                write_at: segment::HEADER_LEN,
            },
            buf: Vec::with_capacity(usize::try_from(config.max_batch_bytes).unwrap_or(8 << 20)),
            config,
            segments,
            next,
            poisoned: None,
            stats,
            _lock: lock,
        })
    }

    /// Serves commands until every sender is gone and the queue is drained.
    pub(crate) fn run(mut self, rx: &mpsc::Receiver<Command>) {
        let mut appends: Vec<(WalRecord, Done)> = Vec::new();
        let mut trims: Vec<(WalPosition, Done)> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut bytes = 0u64;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { record, done } => {
                        bytes += record.encoded_len() as u64;
                        appends.push((record, done));
                    }
                    Command::Trim { before, done } => trims.push((before, done)),
                }
                if bytes < self.config.max_batch_bytes {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit(&mut appends);
            }
            for (before, done) in trims.drain(..) {
                let _ = done.send(self.trim(before));
            }
        }
        tracing::debug!(dir = %self.dir.display(), next = %self.next, "wal writer stopped");
    }

    /// Writes and syncs one group of appends, then completes them all.
    fn commit(&mut self, appends: &mut Vec<(WalRecord, Done)>) {
        let result = match &self.poisoned {
            Some(cause) => Err(WalError::Poisoned {
                cause: cause.clone(),
            }),
            None => self.write_and_sync(appends),
        };
        if let Err(e) = &result
            && self.poisoned.is_none()
        {
            tracing::error!(error = %e, "wal write failed; refusing all further appends");
            self.poisoned = Some(e.to_string());
        }
        for (_, done) in appends.drain(..) {
            // A waiter that went away no longer cares.
            let _ = done.send(result.clone());
        }
    }

    fn write_and_sync(&mut self, appends: &[(WalRecord, Done)]) -> Result<(), WalError> {
        self.buf.clear();
        let mut total = 0u64;
        for (record, _) in appends {
            let len = record.encoded_len() as u64;
            if self.active.write_at + self.buf.len() as u64 + len > self.config.segment_bytes {
                self.flush_buf()?;
                self.sync()?;
                self.roll()?;
            }
            record::encode(record, &mut self.buf);
            self.next = WalPosition(self.next.0 + 1);
            total += len;
        }
        self.flush_buf()?;
        self.sync()?;
        self.stats
            .records
            .fetch_add(appends.len() as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(total, Ordering::Relaxed);
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), WalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let active = &mut self.active;
        active
            .file
            .write_all_at(&self.buf, active.write_at)
            .map_err(|e| WalError::io("write", &active.path, e))?;
        active.write_at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn sync(&self) -> Result<(), WalError> {
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.active
            .file
            .sync_data()
            .map_err(|e| WalError::io("fdatasync", &self.active.path, e))
    }

    /// Starts a new segment at the next position. The old one is already synced.
    fn roll(&mut self) -> Result<(), WalError> {
        let (file, path) = segment::create(
            &self.dir,
            self.next,
            self.config.segment_bytes,
            self.config.preallocate,
        )?;
        self.segments.push_back((self.next, path.clone()));
        self.active = Active {
            file,
            path,
            write_at: segment::HEADER_LEN,
        };
        Ok(())
    }

    /// Deletes the closed segments whose records all lie below `before`.
    fn trim(&mut self, before: WalPosition) -> Result<(), WalError> {
        let mut removed = 0;
        while self.segments.len() > 1 && self.segments[1].0 <= before {
            if let Some((_, path)) = self.segments.pop_front() {
                std::fs::remove_file(&path).map_err(|e| WalError::io("remove", &path, e))?;
                removed += 1;
            }
        }
        if removed > 0 {
            segment::sync_dir(&self.dir)?;
            tracing::debug!(removed, before = %before, "wal segments trimmed");
        }
        Ok(())
    }
}
