//! The WAL contract.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::{CorruptReason, WalError, WalRecord};

/// A record's place in the WAL: its sequence number, counted from the WAL's creation.
///
/// Positions are assigned when a record is queued (in [`Wal::append`]), not when it becomes durable,
/// so a caller knows a record's position before awaiting it. That is what lets the uploader compute a
/// safe trim point: every record it has not uploaded, durable or still in flight, already has a
/// position.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WalPosition(pub u64);

impl fmt::Debug for WalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wal@{}", self.0)
    }
}

impl fmt::Display for WalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wal@{}", self.0)
    }
}

/// The write-ahead log.
///
/// Contract, for every implementation:
/// - [`append`](Wal::append) queues a record and returns at once with its position; positions
///   increase by one per record in call order.
/// - Records become durable **in position order**: when a [`PendingAppend`] resolves `Ok`, every record
///   with a lower position is durable as well. An implementation that cannot make a record durable
///   fails its future and every later one, and never acknowledges anything after a failure (a fenced
///   object WAL included).
/// - [`trim`](Wal::trim) declares that records below a position are no longer needed; the
///   implementation frees whole units (segments, objects) that hold only such records, and may keep
///   more. Recovery may therefore return records below the last trim point; the caller skips them by
///   stream offset.
/// - Recovery is done by each implementation's `open`, which returns a [`Recovery`] with every durable
///   record above the trim point, in position order.
#[async_trait]
pub trait Wal: Send + Sync + fmt::Debug {
    /// Queues `record`. The returned future resolves once the record is durable.
    fn append(&self, record: WalRecord) -> Result<PendingAppend, WalError>;

    /// The position the next appended record will get.
    fn next_position(&self) -> WalPosition;

    /// Frees storage holding only records below `before`.
    async fn trim(&self, before: WalPosition) -> Result<(), WalError>;

    /// Makes everything queued durable, then refuses further appends and releases the WAL's resources
    /// (threads, locks). Idempotent.
    async fn close(&self) -> Result<(), WalError>;

    /// Counters for benchmarks and metrics.
    fn stats(&self) -> WalStats;
}

/// A queued append: the record's position, and a future for its durability.
#[derive(Debug)]
pub struct PendingAppend {
    position: WalPosition,
    done: oneshot::Receiver<Result<(), WalError>>,
}

impl PendingAppend {
    /// Wraps a completion channel; for implementations of [`Wal`].
    pub fn new(position: WalPosition, done: oneshot::Receiver<Result<(), WalError>>) -> Self {
        Self { position, done }
    }

    /// The record's position.
    pub fn position(&self) -> WalPosition {
        self.position
    }
}

impl Future for PendingAppend {
    type Output = Result<WalPosition, WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let position = self.position;
        match Pin::new(&mut self.done).poll(cx) {
            Poll::Ready(Ok(Ok(()))) => Poll::Ready(Ok(position)),
            Poll::Ready(Ok(Err(e))) => Poll::Ready(Err(e)),
            // The writer went away without answering: it was closed or crashed.
            Poll::Ready(Err(_)) => Poll::Ready(Err(WalError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A record read back at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRecord {
    /// Where it was in the WAL.
    pub position: WalPosition,
    /// The record.
    pub record: WalRecord,
}

/// Where recovery stopped before the end of the written bytes: the last write was torn by a crash.
///
/// Nothing at or after this point was acknowledged (acknowledgement follows the sync that covers the
/// whole write), so discarding it loses nothing a client was promised. It is reported so operators see
/// it in the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset of the first unreadable record in that file.
    pub file_offset: u64,
    /// What was wrong with it.
    pub reason: CorruptReason,
}

/// What an implementation's `open` found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every readable record, in position order.
    pub records: Vec<RecoveredRecord>,
    /// Set when the last write was torn and its bytes were discarded.
    pub torn_tail: Option<TornTail>,
}

/// Counters kept by a WAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records made durable.
    pub records: u64,
    /// Encoded bytes made durable.
    pub bytes: u64,
    /// Syncs (file) or PUTs (object) issued: one per group commit.
    pub syncs: u64,
}
