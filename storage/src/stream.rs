//! One open stream: its offsets, its log cache, and the handle through which it is appended to and
//! read.
//!
//! All mutable state of a stream sits behind one short-held mutex that is never held across an
//! `.await`. Offset assignment and queueing into the WAL happen together under it, so offsets follow
//! WAL order; the high watermark moves when the WAL confirms durability. Because the WAL makes records
//! durable in position order, the high watermark is simply the largest end offset confirmed so far.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;
use weir_common::{Epoch, Offset, StreamId};
use weir_wal::{WalPosition, WalRecord};

use crate::StorageError;
use crate::format::StoredBatch;
use crate::storage::Inner;

/// A batch in the log cache.
#[derive(Debug, Clone)]
pub(crate) struct CacheEntry {
    pub(crate) batch: StoredBatch,
    pub(crate) wal_position: WalPosition,
    pub(crate) uploaded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    Open,
    /// Closing: no more appends; in-flight ones finish and get uploaded.
    Closing,
    /// Another owner took the stream (a newer epoch): no more appends here.
    Fenced(String),
    /// The WAL failed: no more appends until a restart.
    Failed(String),
}

impl Status {
    /// Fenced or failed: appends are refused for good.
    pub(crate) fn is_stopped(&self) -> bool {
        matches!(self, Status::Fenced(_) | Status::Failed(_))
    }
}

#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) epoch: Epoch,
    pub(crate) start_offset: Offset,
    pub(crate) next_offset: Offset,
    /// The high watermark: everything below it is durable and readable.
    pub(crate) durable_end: Offset,
    /// Everything below it is committed in objects.
    pub(crate) uploaded_end: Offset,
    /// Contiguous batches ending at `next_offset`; uploaded ones at the front may be evicted.
    pub(crate) entries: VecDeque<CacheEntry>,
    pub(crate) status: Status,
}

impl StreamState {
    /// The first batch not yet uploaded, with its WAL position.
    pub(crate) fn first_unuploaded(&self) -> Option<&CacheEntry> {
        let i = self.entries.partition_point(|e| e.uploaded);
        self.entries.get(i)
    }

    /// Cached batches from the one holding `from` up to the high watermark, about `max_bytes` of them.
    fn cached(&self, from: Offset, max_bytes: usize) -> Option<Vec<StoredBatch>> {
        let front = self.entries.front()?;
        if from < front.batch.base_offset {
            return None;
        }
        let first = self
            .entries
            .partition_point(|e| e.batch.end_offset() <= from);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in self.entries.range(first..) {
            if entry.batch.end_offset() > self.durable_end
                || (bytes >= max_bytes && !out.is_empty())
            {
                break;
            }
            bytes += entry.batch.payload.len();
            out.push(entry.batch.clone());
        }
        Some(out)
    }
}

#[derive(Debug)]
pub(crate) struct StreamShared {
    pub(crate) id: StreamId,
    state: Mutex<StreamState>,
    high_watermark: watch::Sender<Offset>,
}

impl StreamShared {
    pub(crate) fn new(id: StreamId, state: StreamState) -> Self {
        let (high_watermark, _) = watch::channel(state.durable_end);
        Self {
            id,
            state: Mutex::new(state),
            high_watermark,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stop(&self, status: Status) {
        let mut state = self.lock();
        if !state.status.is_stopped() {
            state.status = status;
        }
        drop(state);
        // Wake waiters so they see the failure.
        self.high_watermark.send_modify(|_| {});
    }

    fn fail(&self, reason: String) {
        self.stop(Status::Failed(reason));
    }

    /// Moves the high watermark to `end` (never back) and wakes readers waiting for data.
    fn mark_durable(&self, end: Offset) {
        let mut state = self.lock();
        if end > state.durable_end {
            state.durable_end = end;
        }
        drop(state);
        self.high_watermark.send_if_modified(|hw| {
            let moved = end > *hw;
            if moved {
                *hw = end;
            }
            moved
        });
    }

    pub(crate) fn mark_fenced(&self, detail: String) {
        tracing::error!(stream = %self.id, detail, "stream fenced; refusing further appends");
        self.stop(Status::Fenced(detail));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Offset> {
        self.high_watermark.subscribe()
    }
}

/// What an append returns once the batch is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    /// The offset given to the batch's first record.
    pub base_offset: Offset,
    /// The offset after the batch.
    pub end_offset: Offset,
    /// The epoch it was written under.
    pub epoch: Epoch,
}

/// An append that has its offsets and is queued in the WAL; [`Durable::wait`] returns once it is
/// durable. Dropping it does not cancel the append (the stream completes it either way).
#[derive(Debug)]
pub struct Durable {
    completion: tokio::task::JoinHandle<Result<weir_wal::WalPosition, weir_wal::WalError>>,
    receipt: AppendReceipt,
}

impl Durable {
    /// The offsets the batch got (not yet readable: they are once durable).
    pub fn receipt(&self) -> AppendReceipt {
        self.receipt
    }

    /// Waits until the batch is durable.
    pub async fn wait(self) -> Result<AppendReceipt, StorageError> {
        match self.completion.await {
            Ok(Ok(_)) => Ok(self.receipt),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(StorageError::Closed(format!(
                "append completion task failed: {e}"
            ))),
        }
    }
}

/// A handle to an open stream. Cheap to clone; every clone appends to and reads the same stream.
#[derive(Debug, Clone)]
pub struct Stream {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) inner: Arc<Inner>,
}

impl Stream {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.shared.id
    }

    /// The epoch this owner holds.
    pub fn epoch(&self) -> Epoch {
        self.shared.lock().epoch
    }

    /// The high watermark: the end of the durable, readable data.
    pub fn high_watermark(&self) -> Offset {
        self.shared.lock().durable_end
    }

    /// The log start offset.
    pub fn start_offset(&self) -> Offset {
        self.shared.lock().start_offset
    }

    /// Advances the log start offset to `offset` (Kafka's DeleteRecords): records below it are no
    /// longer readable, now and after a restart. `offset` may be at most the high watermark;
    /// the start offset never moves back. Returns the start offset after the call.
    pub async fn delete_records(&self, offset: Offset) -> Result<Offset, StorageError> {
        let (start, end, epoch) = {
            let state = self.shared.lock();
            (state.start_offset, state.durable_end, state.epoch)
        };
        if offset > end {
            return Err(StorageError::OffsetOutOfRange {
                stream: self.id(),
                offset,
                start,
                end,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        self.inner
            .metadata
            .trim_stream(self.id(), epoch, offset)
            .await?;
        let mut state = self.shared.lock();
        state.start_offset = state.start_offset.max(offset);
        Ok(state.start_offset)
    }

    /// The offset the next append will get.
    pub fn next_offset(&self) -> Offset {
        self.shared.lock().next_offset
    }

    /// A receiver that changes whenever the high watermark moves, for long polls.
    pub fn subscribe(&self) -> watch::Receiver<Offset> {
        self.shared.subscribe()
    }

    /// Appends `payload`, covering `count` offsets, and returns once it is durable.
    pub async fn append(&self, count: u32, payload: Bytes) -> Result<AppendReceipt, StorageError> {
        let len = payload.len();
        self.append_with(count, len, move |_| payload).await
    }

    /// Appends the payload that `build` makes once it knows the batch's base offset (the broker
    /// writes the offset into the Kafka batch header there). `build` runs under the stream's lock: it
    /// must be quick and must return exactly `len` bytes.
    ///
    /// Waits first while too many bytes are not yet uploaded (backpressure), then until durable.
    pub async fn append_with(
        &self,
        count: u32,
        len: usize,
        build: impl FnOnce(Offset) -> Bytes,
    ) -> Result<AppendReceipt, StorageError> {
        self.enqueue(count, len, build).await?.wait().await
    }

    /// The first half of [`append_with`](Self::append_with): waits out backpressure, gives the
    /// batch its offsets and queues it in the WAL, then returns without waiting for durability.
    /// Appends enqueued one after the other get increasing offsets and become durable in that
    /// order, so a caller may enqueue the next batch (of a pipelined request) right away.
    pub async fn enqueue(
        &self,
        count: u32,
        len: usize,
        build: impl FnOnce(Offset) -> Bytes,
    ) -> Result<Durable, StorageError> {
        if count == 0 {
            return Err(StorageError::InvalidAppend(
                "a batch covers at least one offset".into(),
            ));
        }
        let inner = &self.inner;
        inner.reserve_unuploaded(len as u64).await?;
        let queued = self.queue(count, len, build);
        let (pending, receipt) = match queued {
            Ok(queued) => queued,
            Err(e) => {
                inner.release_unuploaded(len as u64);
                return Err(e);
            }
        };
        // The stream, not the caller, owns what happens on durability: if the caller's future is
        // dropped (a connection closed mid-request), the high watermark must still move, or the
        // record would stay invisible, un-uploaded, and `close_stream` would wait for it forever.
        let (shared, inner) = (self.shared.clone(), self.inner.clone());
        let queued_at = std::time::Instant::now();
        let completion = tokio::spawn(async move {
            let outcome = pending.await;
            match &outcome {
                Ok(_) => {
                    metrics::histogram!("weir_wal_append_seconds")
                        .record(queued_at.elapsed().as_secs_f64());
                    shared.mark_durable(receipt.end_offset);
                    inner.on_durable();
                }
                Err(e) => shared.fail(format!("wal append failed: {e}")),
            }
            outcome
        });
        Ok(Durable {
            completion,
            receipt,
        })
    }

    fn queue(
        &self,
        count: u32,
        len: usize,
        build: impl FnOnce(Offset) -> Bytes,
    ) -> Result<(weir_wal::PendingAppend, AppendReceipt), StorageError> {
        let mut state = self.shared.lock();
        match &state.status {
            Status::Open => {}
            Status::Closing => {
                return Err(StorageError::Closed(format!("{} is closing", self.id())));
            }
            Status::Fenced(reason) => {
                return Err(StorageError::Fenced {
                    stream: self.id(),
                    epoch: state.epoch,
                    detail: reason.clone(),
                });
            }
            Status::Failed(reason) => {
                return Err(StorageError::StreamFailed {
                    stream: self.id(),
                    detail: reason.clone(),
                });
            }
        }
        let base_offset = state.next_offset;
        let payload = build(base_offset);
        if payload.len() != len {
            return Err(StorageError::InvalidAppend(format!(
                "payload has {} bytes, {len} were announced",
                payload.len()
            )));
        }
        let batch = StoredBatch {
            base_offset,
            count,
            payload,
        };
        let pending = self.inner.wal.append(WalRecord {
            stream_id: self.id(),
            epoch: state.epoch,
            base_offset,
            count,
            payload: batch.payload.clone(),
        })?;
        let end_offset = batch.end_offset();
        state.entries.push_back(CacheEntry {
            batch,
            wal_position: pending.position(),
            uploaded: false,
        });
        state.next_offset = end_offset;
        self.inner
            .cached_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        self.inner.evict_uploaded(&mut state);
        let receipt = AppendReceipt {
            base_offset,
            end_offset,
            epoch: state.epoch,
        };
        Ok((pending, receipt))
    }

    /// Whole batches from the one holding `from` on, about `max_bytes` of them (at least one batch if
    /// any is readable), below the high watermark. Empty at the high watermark.
    pub async fn read(
        &self,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<StoredBatch>, StorageError> {
        let mut out: Vec<StoredBatch> = Vec::new();
        let mut bytes = 0usize;
        let mut next = from;
        loop {
            let (start, end, cached) = {
                let state = self.shared.lock();
                let cached = state.cached(next, max_bytes.saturating_sub(bytes));
                (state.start_offset, state.durable_end, cached)
            };
            if next < start || next > end {
                return Err(StorageError::OffsetOutOfRange {
                    stream: self.id(),
                    offset: next,
                    start,
                    end,
                });
            }
            if next == end || (bytes >= max_bytes && !out.is_empty()) {
                return Ok(out);
            }
            let batches = match cached {
                Some(batches) => batches,
                None => {
                    self.inner
                        .read_objects(self.id(), next, max_bytes.saturating_sub(bytes))
                        .await?
                }
            };
            let Some(last) = batches.last() else {
                return Ok(out);
            };
            next = last.end_offset();
            bytes += batches.iter().map(|b| b.payload.len()).sum::<usize>();
            out.extend(batches);
        }
    }
}
