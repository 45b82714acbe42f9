//! The storage instance of one broker: its WAL, its open streams, the object reader and the uploader.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use object_store::ObjectStore;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use weir_common::{Offset, StreamId};
use weir_wal::{Recovery, Wal, WalRecord};

use crate::format::StoredBatch;
use crate::metadata::{MetadataError, StreamMetadata};
use crate::objects::ObjectReader;
use crate::stream::{Status, Stream, StreamShared, StreamState};
use crate::uploader::StreamUpload;
use crate::{StorageConfig, StorageError};

/// The outside world the storage layer runs on, injected (STYLE.md habit 2).
#[derive(Debug)]
pub struct Components {
    /// The broker's WAL, already opened.
    pub wal: Arc<dyn Wal>,
    /// What opening the WAL recovered; replayed into objects by [`Storage::open`].
    pub recovery: Recovery,
    /// Where data objects go.
    pub store: Arc<dyn ObjectStore>,
    /// The controller, or [`MemoryMetadata`](crate::MemoryMetadata).
    pub metadata: Arc<dyn StreamMetadata>,
}

/// Counters of a storage instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes appended and not yet committed in objects.
    pub unuploaded_bytes: u64,
    /// Bytes held in log caches.
    pub log_cache_bytes: u64,
    /// Uploads committed.
    pub uploads: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Bytes of objects written.
    pub object_bytes_written: u64,
    /// Ranged GETs issued by reads.
    pub get_requests: u64,
    /// Blocks served from the block cache.
    pub block_cache_hits: u64,
    /// Blocks fetched from the object store.
    pub block_cache_misses: u64,
    /// Bytes held in the block cache.
    pub block_cache_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct UploadStats {
    pub(crate) uploads: AtomicU64,
    pub(crate) objects: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: StorageConfig,
    pub(crate) wal: Arc<dyn Wal>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) metadata: Arc<dyn StreamMetadata>,
    pub(crate) reader: ObjectReader,
    pub(crate) streams: Mutex<HashMap<StreamId, Arc<StreamShared>>>,
    /// Permits are bytes that may still be appended before an upload must free some.
    unuploaded: Semaphore,
    /// Appends waiting for `unuploaded` permits.
    waiting_appends: AtomicUsize,
    pub(crate) upload_lock: tokio::sync::Mutex<()>,
    upload_kick: Notify,
    pub(crate) cached_bytes: AtomicU64,
    pub(crate) upload_stats: UploadStats,
}

/// Streams over a WAL and an object store. See the [crate documentation](crate).
#[derive(Debug)]
pub struct Storage {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    uploader: Option<JoinHandle<()>>,
}

impl Storage {
    /// Starts a storage instance: replays the WAL's recovered records into objects (so the WAL can be
    /// trimmed and every stream is readable from objects), then starts the background uploader.
    pub async fn open(
        components: Components,
        config: StorageConfig,
    ) -> Result<Storage, StorageError> {
        config.validate()?;
        let permits = usize::try_from(config.max_unuploaded_bytes).unwrap_or(usize::MAX);
        let inner = Arc::new(Inner {
            reader: ObjectReader::new(components.store.clone(), &config),
            wal: components.wal,
            store: components.store,
            metadata: components.metadata,
            streams: Mutex::new(HashMap::new()),
            unuploaded: Semaphore::new(permits),
            waiting_appends: AtomicUsize::new(0),
            upload_lock: tokio::sync::Mutex::new(()),
            upload_kick: Notify::new(),
            cached_bytes: AtomicU64::new(0),
            upload_stats: UploadStats::default(),
            config,
        });
        inner.replay(components.recovery).await?;
        let (shutdown, rx) = watch::channel(false);
        let uploader = tokio::spawn(run_uploader(inner.clone(), rx));
        Ok(Storage {
            inner,
            shutdown,
            uploader: Some(uploader),
        })
    }

    /// Creates a new, empty stream.
    pub async fn create_stream(&self) -> Result<StreamId, StorageError> {
        Ok(self.inner.metadata.create_stream().await?)
    }

    /// Takes ownership of a stream (bumping its epoch) and opens it for appends and reads. Opening a
    /// stream already open here returns the open handle.
    pub async fn open_stream(&self, id: StreamId) -> Result<Stream, StorageError> {
        if let Some(stream) = self.stream(id) {
            return Ok(stream);
        }
        let d = self.inner.metadata.open_stream(id).await?;
        let shared = Arc::new(StreamShared::new(
            id,
            StreamState {
                epoch: d.epoch,
                start_offset: d.start_offset,
                next_offset: d.end_offset,
                durable_end: d.end_offset,
                uploaded_end: d.end_offset,
                entries: Default::default(),
                status: Status::Open,
            },
        ));
        tracing::info!(stream = %id, epoch = %d.epoch, end = %d.end_offset, "stream opened");
        self.inner.streams_lock().insert(id, shared.clone());
        Ok(Stream {
            shared,
            inner: self.inner.clone(),
        })
    }

    /// The object store the streams' data lives in (for what a user of the streams keeps next to
    /// them, such as the broker's aborted-transaction index).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.store.clone()
    }

    /// The handle of a stream open here.
    pub fn stream(&self, id: StreamId) -> Option<Stream> {
        let shared = self.inner.streams_lock().get(&id).cloned()?;
        Some(Stream {
            shared,
            inner: self.inner.clone(),
        })
    }

    /// Stops appends to the stream, waits for those in flight, uploads its data and gives up
    /// ownership. Afterwards every acknowledged record is in objects, so another owner can open it.
    pub async fn close_stream(&self, id: StreamId) -> Result<(), StorageError> {
        let shared = self
            .inner
            .streams_lock()
            .get(&id)
            .cloned()
            .ok_or(StorageError::StreamNotOpen(id))?;
        let epoch = {
            let mut state = shared.lock();
            if state.status == Status::Open {
                state.status = Status::Closing;
            }
            state.epoch
        };
        let mut hw = shared.subscribe();
        loop {
            let done = {
                let state = shared.lock();
                state.durable_end >= state.next_offset || state.status.is_stopped()
            };
            if done {
                break;
            }
            if hw.changed().await.is_err() {
                break;
            }
        }
        self.inner.upload().await?;
        self.inner.metadata.close_stream(id, epoch).await?;
        if let Some(shared) = self.inner.streams_lock().remove(&id) {
            let state = shared.lock();
            let cached: u64 = state
                .entries
                .iter()
                .map(|e| e.batch.payload.len() as u64)
                .sum();
            self.inner.cached_bytes.fetch_sub(cached, Ordering::Relaxed);
        }
        tracing::info!(stream = %id, epoch = %epoch, "stream closed");
        Ok(())
    }

    /// The streams open here.
    pub fn open_streams(&self) -> Vec<StreamId> {
        self.inner.streams_lock().keys().copied().collect()
    }

    /// Drops a stream another owner has taken (its epoch was bumped): nothing more is appended or
    /// uploaded here. What this broker acknowledged and did not upload is in its WAL, which the new
    /// owner's side recovered before taking over (DESIGN.md 6, failover).
    pub fn abandon_stream(&self, id: StreamId) {
        if let Some(shared) = self.inner.streams_lock().remove(&id) {
            let mut state = shared.lock();
            let cached: u64 = state
                .entries
                .iter()
                .map(|e| e.batch.payload.len() as u64)
                .sum();
            let unuploaded: u64 = state
                .entries
                .iter()
                .filter(|e| !e.uploaded)
                .map(|e| e.batch.payload.len() as u64)
                .sum();
            state.entries.clear();
            state.status =
                crate::stream::Status::Fenced("abandoned: another broker owns it".into());
            self.inner.cached_bytes.fetch_sub(cached, Ordering::Relaxed);
            self.inner.release_unuploaded(unuploaded);
            tracing::warn!(stream = %id, "stream abandoned: another broker owns it now");
        }
    }

    /// One compaction pass (see `compactor.rs`): rewrites small stream set objects into fewer ones.
    pub async fn compact(&self) -> Result<crate::CompactionReport, StorageError> {
        self.inner.compact().await
    }

    /// Rewrites the batches of an open stream that objects hold below `until` through `rewrite` (key
    /// compaction: see `compactor.rs`); the new objects replace the old through the metadata.
    pub async fn rewrite_stream(
        &self,
        stream: StreamId,
        until: Offset,
        rewrite: &mut crate::BatchRewrite<'_>,
    ) -> Result<crate::CompactionReport, StorageError> {
        self.inner.rewrite_stream(stream, until, rewrite).await
    }

    /// Uploads everything durable now and trims the WAL.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.inner.upload().await
    }

    /// Counters.
    pub fn stats(&self) -> StorageStats {
        let inner = &self.inner;
        let r = &inner.reader.stats;
        let u = &inner.upload_stats;
        StorageStats {
            unuploaded_bytes: inner.unuploaded_bytes(),
            log_cache_bytes: inner.cached_bytes.load(Ordering::Relaxed),
            uploads: u.uploads.load(Ordering::Relaxed),
            objects_written: u.objects.load(Ordering::Relaxed),
            object_bytes_written: u.bytes.load(Ordering::Relaxed),
            get_requests: r.get_requests.load(Ordering::Relaxed),
            block_cache_hits: r.block_hits.load(Ordering::Relaxed),
            block_cache_misses: r.block_misses.load(Ordering::Relaxed),
            block_cache_bytes: inner.reader.block_cache_bytes(),
        }
    }

    /// Graceful stop: uploads everything, then closes the WAL.
    pub async fn shutdown(mut self) -> Result<(), StorageError> {
        self.stop_uploader().await;
        self.inner.upload().await?;
        self.inner.wal.close().await?;
        Ok(())
    }

    /// Stops without uploading, as a crash right after the last acknowledgement would: what was
    /// acknowledged is in the WAL and comes back at the next [`open`](Storage::open). For tests and
    /// for fast restarts.
    pub async fn abandon(mut self) -> Result<(), StorageError> {
        self.stop_uploader().await;
        self.inner.wal.close().await?;
        Ok(())
    }

    async fn stop_uploader(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.uploader.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The first wait after a failed upload; it doubles with each failure in a row, up to
/// [`UPLOAD_RETRY_MAX`], with jitter so that brokers sharing a struggling store do not retry in step.
const UPLOAD_RETRY_MIN: Duration = Duration::from_millis(100);
const UPLOAD_RETRY_MAX: Duration = Duration::from_secs(10);

async fn run_uploader(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_millis(inner.config.upload_interval_ms);
    let mut retry = UPLOAD_RETRY_MIN;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = inner.upload_kick.notified() => {}
            () = tokio::time::sleep(interval) => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if inner.unuploaded_bytes() == 0 {
            continue;
        }
        match inner.upload().await {
            Ok(()) => retry = UPLOAD_RETRY_MIN,
            Err(e) => {
                metrics::counter!("weir_upload_failures_total").increment(1);
                let wait = jittered(retry);
                tracing::warn!(error = %e, retry_in = ?wait, "upload failed; retrying");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                retry = (retry * 2).min(UPLOAD_RETRY_MAX);
            }
        }
    }
}

/// `base` plus up to half of it again, from the clock's low bits (no need for a random generator).
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or_default();
    let half = u64::try_from(base.as_micros() / 2)
        .unwrap_or(u64::MAX)
        .max(1);
    base + Duration::from_micros(nanos % half)
}

impl Inner {
    pub(crate) fn streams_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<StreamId, Arc<StreamShared>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn unuploaded_bytes(&self) -> u64 {
        self.config.max_unuploaded_bytes - self.unuploaded.available_permits() as u64
    }

    pub(crate) async fn reserve_unuploaded(&self, bytes: u64) -> Result<(), StorageError> {
        let max = self.config.max_unuploaded_bytes;
        let n = u32::try_from(bytes).ok().filter(|_| bytes <= max);
        let Some(n) = n else {
            return Err(StorageError::AppendTooLarge { size: bytes, max });
        };
        if let Ok(permit) = self.unuploaded.try_acquire_many(n) {
            permit.forget();
            return Ok(());
        }
        // Make room: an upload frees what is durable. `on_durable` kicks again while anyone waits, so
        // data that becomes durable after this kick is uploaded too.
        self.waiting_appends.fetch_add(1, Ordering::SeqCst);
        self.upload_kick.notify_one();
        let acquired = self.unuploaded.acquire_many(n).await;
        self.waiting_appends.fetch_sub(1, Ordering::SeqCst);
        acquired
            .map_err(|_| StorageError::Closed("storage is shutting down".into()))?
            .forget();
        Ok(())
    }

    pub(crate) fn release_unuploaded(&self, bytes: u64) {
        self.unuploaded
            .add_permits(usize::try_from(bytes).unwrap_or(usize::MAX));
    }

    /// Called when an append became durable: uploads take only durable data, so this is when an upload
    /// can make progress.
    pub(crate) fn on_durable(&self) {
        if self.unuploaded_bytes() >= self.config.upload_max_bytes
            || self.waiting_appends.load(Ordering::SeqCst) > 0
        {
            self.upload_kick.notify_one();
        }
    }

    /// Reads committed data of `stream` from objects.
    pub(crate) async fn read_objects(
        &self,
        stream: StreamId,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<StoredBatch>, StorageError> {
        let slices = self.metadata.find_objects(stream, from, 1).await?;
        let Some(slice) = slices.first() else {
            return Ok(Vec::new());
        };
        if slice.start > from {
            // Objects start above `from`: the data below was deleted (retention) after the check.
            return Err(StorageError::OffsetOutOfRange {
                stream,
                offset: from,
                start: slice.start,
                end: slice.end,
            });
        }
        let mut batches = self
            .reader
            .read(&slice.object, stream, from, max_bytes)
            .await?;
        // An object may hold several runs of a stream (compaction merges objects around a gap
        // whose data lives elsewhere): only this slice's run is read from it.
        batches.retain(|b| b.base_offset < slice.end);
        Ok(batches)
    }

    /// Uploads the WAL's recovered records that objects do not hold yet, then trims the WAL.
    async fn replay(&self, recovery: Recovery) -> Result<(), StorageError> {
        let total = recovery.records.len();
        let mut by_stream: BTreeMap<StreamId, Vec<WalRecord>> = BTreeMap::new();
        for r in recovery.records {
            by_stream
                .entry(r.record.stream_id)
                .or_default()
                .push(r.record);
        }
        let mut uploads = Vec::new();
        for (stream, records) in by_stream {
            if let Some(upload) = self.replay_stream(stream, records).await? {
                uploads.push(upload);
            }
        }
        let replayed: usize = uploads.iter().map(|u| u.batches.len()).sum();
        if !uploads.is_empty() {
            self.write_and_commit(uploads).await?;
        }
        self.wal.trim(self.wal.next_position()).await?;
        tracing::info!(wal_records = total, replayed, "storage recovered");
        Ok(())
    }

    /// The records of one stream that continue its committed data.
    async fn replay_stream(
        &self,
        stream: StreamId,
        records: Vec<WalRecord>,
    ) -> Result<Option<StreamUpload>, StorageError> {
        let d = match self.metadata.describe_stream(stream).await {
            Ok(d) => d,
            Err(MetadataError::UnknownStream(_)) => {
                tracing::warn!(stream = %stream, records = records.len(), "wal records of a deleted stream skipped");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let mut expected = d.end_offset;
        let mut batches = Vec::new();
        for r in records {
            if r.end_offset() <= expected {
                continue; // already in objects
            }
            if r.epoch != d.epoch {
                tracing::warn!(stream = %stream, record_epoch = %r.epoch, current = %d.epoch,
                    offset = %r.base_offset, "wal record of another epoch skipped (fenced writer)");
                continue;
            }
            if r.base_offset != expected {
                return Err(StorageError::WalGap {
                    stream,
                    expected,
                    found: r.base_offset,
                });
            }
            expected = r.end_offset();
            batches.push(StoredBatch {
                base_offset: r.base_offset,
                count: r.count,
                payload: r.payload,
            });
        }
        Ok((!batches.is_empty()).then(|| StreamUpload::new(stream, d.epoch, batches)))
    }
}
