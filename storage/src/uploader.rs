//! The uploader: turns durable, not yet uploaded log cache data into data objects, commits them
//! through [`StreamMetadata`](crate::StreamMetadata) in one request, and trims the WAL.
//!
//! One upload at a time (a mutex), triggered by size, by interval, or on demand (stream close, flush,
//! shutdown). Each upload writes one stream set object with the small slices of all streams, plus one
//! stream object per stream with at least `stream_object_min_bytes` in this upload (DESIGN.md 5).
//!
//! The WAL trim point is computed *after* the commit, as the lowest WAL position of any record not yet
//! uploaded, capped by the WAL's next position read *before* looking at the streams: a record appended
//! concurrently gets a position at or above that cap, so it can never be trimmed away.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use object_store::{PutMode, PutOptions, PutPayload};
use weir_common::{Epoch, ObjectId, StreamId};

use crate::StorageError;
use crate::format::{ObjectBuilder, StoredBatch};
use crate::metadata::{MetadataError, NewObject, ObjectDescriptor, ObjectKind, StreamRange};
use crate::objects::object_key;
use crate::storage::Inner;
use crate::stream::StreamState;

/// One stream's contiguous batches for one upload.
#[derive(Debug)]
pub(crate) struct StreamUpload {
    stream: StreamId,
    epoch: Epoch,
    pub(crate) batches: Vec<StoredBatch>,
    bytes: u64,
}

impl StreamUpload {
    pub(crate) fn new(stream: StreamId, epoch: Epoch, batches: Vec<StoredBatch>) -> Self {
        let bytes = batches.iter().map(|b| b.payload.len() as u64).sum();
        Self {
            stream,
            epoch,
            batches,
            bytes,
        }
    }

    fn range(&self) -> Option<StreamRange> {
        Some(StreamRange {
            stream_id: self.stream,
            epoch: self.epoch,
            start: self.batches.first()?.base_offset,
            end: self.batches.last()?.end_offset(),
            bytes: self.bytes,
        })
    }
}

impl Inner {
    /// Uploads everything durable, marks it uploaded, trims the WAL and evicts log cache.
    pub(crate) async fn upload(&self) -> Result<(), StorageError> {
        let _one_at_a_time = self.upload_lock.lock().await;
        // A second round when a stream's range turned out to be committed already (see
        // `write_and_commit`): the data after it still has to go.
        for _ in 0..2 {
            let uploads = self.snapshot();
            if uploads.is_empty() {
                break;
            }
            let before = self.unuploaded_bytes();
            let committed = self.write_and_commit(uploads).await?;
            self.mark_uploaded(&committed);
            if self.unuploaded_bytes() == 0 || self.unuploaded_bytes() == before {
                break;
            }
        }
        self.trim_wal().await?;
        self.evict_log_cache();
        Ok(())
    }

    /// The durable, not yet uploaded batches of every open stream, by stream id.
    fn snapshot(&self) -> Vec<StreamUpload> {
        let streams: Vec<_> = self.streams_lock().values().cloned().collect();
        let mut uploads: Vec<StreamUpload> = streams
            .iter()
            .filter_map(|shared| {
                let state = shared.lock();
                if state.status.is_stopped() {
                    return None;
                }
                let first = state.entries.partition_point(|e| e.uploaded);
                let batches: Vec<_> = state
                    .entries
                    .range(first..)
                    .take_while(|e| e.batch.end_offset() <= state.durable_end)
                    .map(|e| e.batch.clone())
                    .collect();
                (!batches.is_empty()).then(|| StreamUpload::new(shared.id, state.epoch, batches))
            })
            .collect();
        uploads.sort_by_key(|u| u.stream);
        uploads
    }

    /// Writes the objects and commits them; returns what was committed. Streams found fenced are
    /// left out of the commit (their slices stay in the object, unreferenced) and marked failed.
    pub(crate) async fn write_and_commit(
        &self,
        uploads: Vec<StreamUpload>,
    ) -> Result<Vec<NewObject>, StorageError> {
        let started = std::time::Instant::now();
        let mut objects = self.write_objects(uploads).await?;
        while !objects.is_empty() {
            match self.metadata.commit_objects(objects.clone()).await {
                Ok(()) => break,
                Err(MetadataError::Fenced {
                    stream,
                    epoch,
                    current,
                }) => {
                    let detail = format!("upload at {epoch} refused: the stream is at {current}");
                    self.drop_stream(&mut objects, stream, detail);
                }
                Err(MetadataError::UnknownStream(stream)) => {
                    self.drop_stream(&mut objects, stream, "the stream was deleted".into());
                }
                // The stream's committed data already reaches into this range: an earlier commit of
                // it landed though its answer was lost. What it covered is uploaded; the rest goes
                // with the next upload (this commit leaves the stream out).
                Err(MetadataError::NotContiguous {
                    stream,
                    expected,
                    found,
                }) if expected > found => {
                    tracing::warn!(%stream, %expected, %found, "upload already committed; skipping it");
                    self.mark_uploaded_until(stream, expected);
                    for object in objects.iter_mut() {
                        object.ranges.retain(|r| r.stream_id != stream);
                    }
                    objects.retain(|o| !o.ranges.is_empty());
                }
                Err(e) => return Err(e.into()),
            }
        }
        let stats = &self.upload_stats;
        stats.uploads.fetch_add(1, Ordering::Relaxed);
        stats
            .objects
            .fetch_add(objects.len() as u64, Ordering::Relaxed);
        let bytes: u64 = objects.iter().map(|o| o.object.size).sum();
        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        metrics::counter!("weir_uploads_total").increment(1);
        metrics::counter!("weir_upload_bytes_total").increment(bytes);
        metrics::histogram!("weir_upload_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(objects = objects.len(), bytes, "upload committed");
        Ok(objects)
    }

    /// Writes the uploads as objects, not yet committed: one stream object per upload of at least
    /// `stream_object_min_bytes`, one stream set object for the rest. Uploads must be in (stream,
    /// offset) order.
    pub(crate) async fn write_objects(
        &self,
        uploads: Vec<StreamUpload>,
    ) -> Result<Vec<NewObject>, StorageError> {
        let (big, small): (Vec<_>, Vec<_>) = uploads
            .into_iter()
            .partition(|u| u.bytes >= self.config.stream_object_min_bytes);
        let mut groups: Vec<(ObjectKind, Vec<StreamUpload>)> = big
            .into_iter()
            .map(|u| (ObjectKind::Stream, vec![u]))
            .collect();
        if !small.is_empty() {
            groups.push((ObjectKind::StreamSet, small));
        }
        let count = u32::try_from(groups.len()).unwrap_or(u32::MAX);
        let first = self.metadata.allocate_object_ids(count).await?;
        let puts = groups.into_iter().enumerate().map(|(i, (kind, group))| {
            self.write_object(ObjectId(first.get() + i as u64), kind, group)
        });
        futures::future::try_join_all(puts).await
    }

    /// Leaves a stream the metadata refused out of the commit and stops its appends.
    fn drop_stream(&self, objects: &mut Vec<NewObject>, stream: StreamId, detail: String) {
        if let Some(shared) = self.streams_lock().get(&stream) {
            shared.mark_fenced(detail);
        } else {
            tracing::error!(stream = %stream, detail, "recovered records not committed");
        }
        for object in objects.iter_mut() {
            object.ranges.retain(|r| r.stream_id != stream);
        }
        objects.retain(|o| !o.ranges.is_empty());
    }

    async fn write_object(
        &self,
        id: ObjectId,
        kind: ObjectKind,
        group: Vec<StreamUpload>,
    ) -> Result<NewObject, StorageError> {
        let block_max = usize::try_from(self.config.block_max_bytes).unwrap_or(usize::MAX);
        let ranges: Vec<StreamRange> = group.iter().filter_map(StreamUpload::range).collect();
        // Copying a large upload into one buffer takes milliseconds: keep it off the async workers.
        let bytes: Bytes = tokio::task::spawn_blocking(move || {
            let mut builder = ObjectBuilder::new(block_max);
            for upload in &group {
                for batch in &upload.batches {
                    builder.add(upload.stream, batch);
                }
            }
            builder.finish()
        })
        .await
        .map_err(|e| StorageError::Closed(format!("object builder task failed: {e}")))?;
        let key = object_key(id);
        let size = bytes.len() as u64;
        // Create-only: an id is never reused, and a retried PUT must not overwrite another writer.
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&key, PutPayload::from_bytes(bytes), opts)
            .await
            .map_err(|e| StorageError::store("put", &key, e))?;
        Ok(NewObject {
            object: ObjectDescriptor { id, size, kind },
            ranges,
        })
    }

    /// Marks committed ranges uploaded and releases their backpressure bytes.
    fn mark_uploaded(&self, objects: &[NewObject]) {
        for range in objects.iter().flat_map(|o| &o.ranges) {
            self.mark_uploaded_until(range.stream_id, range.end);
        }
    }

    /// Marks a stream's cached batches below `end` uploaded and releases their backpressure bytes.
    fn mark_uploaded_until(&self, stream: StreamId, end: weir_common::Offset) {
        let Some(shared) = self.streams_lock().get(&stream).cloned() else {
            return;
        };
        let mut released = 0u64;
        {
            let mut state = shared.lock();
            for entry in state.entries.iter_mut() {
                if entry.batch.end_offset() > end {
                    break;
                }
                if !entry.uploaded {
                    entry.uploaded = true;
                    released += entry.batch.payload.len() as u64;
                }
            }
            if end > state.uploaded_end {
                state.uploaded_end = end;
            }
        }
        self.release_unuploaded(released);
    }

    /// Frees WAL space below the first record not yet uploaded.
    async fn trim_wal(&self) -> Result<(), StorageError> {
        let mut before = self.wal.next_position();
        let streams: Vec<_> = self.streams_lock().values().cloned().collect();
        for shared in streams {
            let state = shared.lock();
            // Failed streams count too: their acknowledged, not yet uploaded batches are only in the
            // WAL, which must keep them until a restart replays them into objects.
            if let Some(entry) = state.first_unuploaded()
                && entry.wal_position < before
            {
                before = entry.wal_position;
            }
        }
        self.wal.trim(before).await?;
        Ok(())
    }

    /// Drops uploaded batches from the front of log caches while over budget.
    fn evict_log_cache(&self) {
        let budget = self.config.log_cache_max_bytes;
        if self.cached_bytes.load(Ordering::Relaxed) <= budget {
            return;
        }
        let streams: Vec<_> = self.streams_lock().values().cloned().collect();
        for shared in streams {
            self.evict_uploaded(&mut shared.lock());
        }
    }

    /// Drops one stream's uploaded batches from the front of its log cache while the cache is over
    /// budget. Called after each upload for every stream, and on each append for the appended stream,
    /// so the cache does not grow by an upload's worth between uploads.
    pub(crate) fn evict_uploaded(&self, state: &mut StreamState) {
        let budget = self.config.log_cache_max_bytes;
        while self.cached_bytes.load(Ordering::Relaxed) > budget {
            match state.entries.front() {
                Some(e) if e.uploaded => {
                    let len = e.batch.payload.len() as u64;
                    state.entries.pop_front();
                    self.cached_bytes.fetch_sub(len, Ordering::Relaxed);
                }
                _ => break,
            }
        }
    }
}
