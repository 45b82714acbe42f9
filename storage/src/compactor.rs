//! Compaction (DESIGN.md 5): many small stream set objects, one per upload, are rewritten into fewer,
//! larger ones, so reads touch fewer objects and the store holds fewer keys.
//!
//! A pass picks the oldest small stream set objects (at most `stream_object_min_bytes` each) of the
//! streams open here, up to `compaction_max_bytes` in all (what a pass holds in memory, twice: read
//! and rewritten) and only once there are `compaction_min_objects` of them, reads each live
//! slice back (the same reads consumers do), writes the batches again grouped by stream (a stream
//! with at least `stream_object_min_bytes` gets a stream object, the rest share one stream set
//! object), and commits the swap through [`StreamMetadata::replace_objects`], which refuses it if any
//! replaced slice changed meanwhile. The replaced objects become unreferenced; garbage collection
//! deletes them after its grace period, so reads already under way finish.

use std::collections::{BTreeMap, BTreeSet};

use weir_common::{ObjectId, StreamId};

use crate::StorageError;
use crate::format::StoredBatch;
use crate::metadata::{ObjectDescriptor, ObjectKind};
use crate::storage::Inner;
use crate::uploader::StreamUpload;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// Objects replaced.
    pub replaced: usize,
    /// Objects written in their place.
    pub written: usize,
    /// Bytes read and written again.
    pub bytes: u64,
}

impl Inner {
    /// One compaction pass; does nothing when too few small objects exist.
    pub(crate) async fn compact(&self) -> Result<CompactionReport, StorageError> {
        // One pass at a time, and never concurrently with an upload (both allocate and commit).
        let _one_at_a_time = self.upload_lock.lock().await;
        let chosen = self.compaction_candidates().await?;
        if chosen.len() < self.config.compaction_min_objects.max(2) {
            return Ok(CompactionReport::default());
        }
        let mut by_stream: BTreeMap<StreamId, Vec<StoredBatch>> = BTreeMap::new();
        let mut bytes = 0u64;
        for (object, slices) in &chosen {
            for (stream, start, end) in slices {
                let mut from = *start;
                while from < *end {
                    let batches = self.reader.read(object, *stream, from, usize::MAX).await?;
                    let batches: Vec<_> = batches
                        .into_iter()
                        .take_while(|b| b.base_offset < *end)
                        .collect();
                    let Some(last) = batches.last() else {
                        return Err(StorageError::Closed(format!(
                            "compaction: {} holds nothing of {stream} from {from}",
                            object.id
                        )));
                    };
                    from = last.end_offset();
                    bytes += batches.iter().map(|b| b.payload.len() as u64).sum::<u64>();
                    by_stream.entry(*stream).or_default().extend(batches);
                }
            }
        }
        let mut uploads = Vec::new();
        for (stream, mut batches) in by_stream {
            batches.sort_by_key(|b| b.base_offset);
            let epoch = self
                .streams_lock()
                .get(&stream)
                .map(|s| s.lock().epoch)
                .ok_or_else(|| StorageError::Closed(format!("compaction: {stream} closed")))?;
            // One upload per contiguous run: a stream's slices in the chosen objects may have gaps
            // (data of the gaps lives in stream objects).
            let mut run: Vec<StoredBatch> = Vec::new();
            for batch in batches {
                if run
                    .last()
                    .is_some_and(|b| b.end_offset() != batch.base_offset)
                {
                    uploads.push(StreamUpload::new(stream, epoch, std::mem::take(&mut run)));
                }
                run.push(batch);
            }
            if !run.is_empty() {
                uploads.push(StreamUpload::new(stream, epoch, run));
            }
        }
        let added = self.write_objects(uploads).await?;
        let removed: Vec<ObjectId> = chosen.iter().map(|(o, _)| o.id).collect();
        let report = CompactionReport {
            replaced: removed.len(),
            written: added.len(),
            bytes,
        };
        self.metadata.replace_objects(removed, added).await?;
        metrics::counter!("weir_compactions_total").increment(1);
        metrics::counter!("weir_compaction_bytes_total").increment(bytes);
        tracing::debug!(?report, "compacted");
        Ok(report)
    }

    /// The oldest stream set objects all of whose live slices belong to streams open here, with those
    /// slices, up to `compaction_max_bytes`.
    async fn compaction_candidates(
        &self,
    ) -> Result<
        Vec<(
            ObjectDescriptor,
            Vec<(StreamId, weir_common::Offset, weir_common::Offset)>,
        )>,
        StorageError,
    > {
        let open: BTreeSet<StreamId> = self.streams_lock().keys().copied().collect();
        let mut objects: BTreeMap<ObjectId, (ObjectDescriptor, Vec<_>)> = BTreeMap::new();
        for stream in &open {
            let start = self.metadata.describe_stream(*stream).await?.start_offset;
            for slice in self
                .metadata
                .find_objects(*stream, start, usize::MAX)
                .await?
            {
                let small = slice.object.size <= self.config.stream_object_min_bytes;
                if slice.object.kind == ObjectKind::StreamSet && small && slice.end > start {
                    objects
                        .entry(slice.object.id)
                        .or_insert_with(|| (slice.object, Vec::new()))
                        .1
                        .push((*stream, slice.start, slice.end));
                }
            }
        }
        let mut chosen = Vec::new();
        let mut total = 0u64;
        for (_, (object, slices)) in objects {
            if total + object.size > self.config.compaction_max_bytes && !chosen.is_empty() {
                break;
            }
            total += object.size;
            chosen.push((object, slices));
        }
        Ok(chosen)
    }
}
