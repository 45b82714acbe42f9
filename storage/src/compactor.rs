//! Compaction (DESIGN.md 5): many small stream set objects, one per upload, are rewritten into fewer,
//! larger ones, so reads touch fewer objects and the store holds fewer keys. The same machinery
//! rewrites one stream's committed batches for key compaction (`cleanup.policy=compact`, done by the
//! broker, which knows the record format: [`crate::Storage::rewrite_stream`]).
//!
//! A pass picks the oldest small stream set objects (at most `stream_object_min_bytes` each) of the
//! streams open here, up to `compaction_max_bytes` in all (what a pass holds in memory, twice: read
//! and rewritten) and only once there are `compaction_min_objects` of them, reads each live
//! slice back (the same reads consumers do), writes the batches again grouped by stream (a stream
//! with at least `stream_object_min_bytes` gets a stream object, the rest share one stream set
//! object), and commits the swap through [`StreamMetadata::replace_objects`], which refuses it if any
//! replaced slice changed meanwhile. The replaced objects become unreferenced; garbage collection
//! deletes them after its grace period, so reads already under way finish.
//!
//! [`StreamMetadata::replace_objects`]: crate::StreamMetadata::replace_objects

use std::collections::{BTreeMap, BTreeSet};

use weir_common::{ObjectId, Offset, StreamId};

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
    /// Bytes the rewritten stream's batches held before and after a [`BatchRewrite`] (equal for
    /// plain compaction).
    pub stream_bytes: (u64, u64),
}

/// Rewrites a contiguous run of one stream's batches (in offset order) into batches covering exactly
/// the same offsets, e.g. with superseded records removed. `Err` stops the pass with that message.
pub type BatchRewrite<'a> =
    dyn FnMut(Vec<StoredBatch>) -> Result<Vec<StoredBatch>, String> + Send + 'a;

/// An object chosen for rewriting, with its live slices `(stream, start, end)`.
type Chosen = (ObjectDescriptor, Vec<(StreamId, Offset, Offset)>);

impl Inner {
    /// One compaction pass; does nothing when too few small objects exist.
    pub(crate) async fn compact(&self) -> Result<CompactionReport, StorageError> {
        // One pass at a time, and never concurrently with an upload (both allocate and commit).
        let _one_at_a_time = self.upload_lock.lock().await;
        let open: BTreeSet<StreamId> = self.streams_lock().keys().copied().collect();
        let mut chosen = Vec::new();
        let mut total = 0u64;
        for (object, slices) in self.live_objects(&open).await?.into_values() {
            let small = object.size <= self.config.stream_object_min_bytes;
            if object.kind != ObjectKind::StreamSet || !small {
                continue;
            }
            if total + object.size > self.config.compaction_max_bytes && !chosen.is_empty() {
                break;
            }
            total += object.size;
            chosen.push((object, slices));
        }
        if chosen.len() < self.config.compaction_min_objects.max(2) {
            return Ok(CompactionReport::default());
        }
        let report = self.rewrite_objects(&chosen, None).await?;
        metrics::counter!("weir_compactions_total").increment(1);
        metrics::counter!("weir_compaction_bytes_total").increment(report.bytes);
        tracing::debug!(?report, "compacted");
        Ok(report)
    }

    /// Rewrites the batches of `stream` that objects hold below `until` through `rewrite`, in groups
    /// of objects of up to `compaction_max_bytes`; a group whose batches `rewrite` leaves unchanged is
    /// not written again. Objects that also hold slices of streams not open here are left alone.
    pub(crate) async fn rewrite_stream(
        &self,
        stream: StreamId,
        until: Offset,
        rewrite: &mut BatchRewrite<'_>,
    ) -> Result<CompactionReport, StorageError> {
        let open: BTreeSet<StreamId> = self.streams_lock().keys().copied().collect();
        if !open.contains(&stream) {
            return Err(StorageError::Closed(format!(
                "rewrite: {stream} is not open here"
            )));
        }
        let mut objects: Vec<Chosen> = self
            .live_objects(&open)
            .await?
            .into_values()
            .filter(|(_, slices)| slices.iter().any(|s| s.0 == stream && s.1 < until))
            .collect();
        // In the stream's offset order, so runs handed to `rewrite` follow each other.
        objects
            .sort_by_key(|(_, slices)| slices.iter().filter(|s| s.0 == stream).map(|s| s.1).min());
        let mut report = CompactionReport::default();
        let mut group: Vec<Chosen> = Vec::new();
        let mut group_bytes = 0u64;
        let mut objects = objects.into_iter().peekable();
        while let Some(object) = objects.next() {
            group_bytes += object.0.size;
            group.push(object);
            let full = objects
                .peek()
                .is_none_or(|next| group_bytes + next.0.size > self.config.compaction_max_bytes);
            if !full {
                continue;
            }
            let _one_at_a_time = self.upload_lock.lock().await;
            let done = match self
                .rewrite_objects(&group, Some((stream, &mut *rewrite)))
                .await
            {
                Ok(done) => done,
                // Retention or another compaction changed these objects meanwhile: the next pass
                // sees them as they are now; the other groups go on.
                Err(StorageError::Metadata(crate::MetadataError::ReplacedObjectsChanged(
                    detail,
                ))) => {
                    tracing::debug!(%stream, detail, "rewrite of a group skipped: its objects changed");
                    group.clear();
                    group_bytes = 0;
                    continue;
                }
                Err(e) => return Err(e),
            };
            report.replaced += done.replaced;
            report.written += done.written;
            report.bytes += done.bytes;
            report.stream_bytes.0 += done.stream_bytes.0;
            report.stream_bytes.1 += done.stream_bytes.1;
            group.clear();
            group_bytes = 0;
        }
        Ok(report)
    }

    /// Reads every live slice of `chosen`, passes the batches of the target stream through its
    /// rewrite, writes the result as new objects and swaps them in through the metadata. Writes
    /// nothing when a rewrite changed nothing.
    async fn rewrite_objects(
        &self,
        chosen: &[Chosen],
        mut target: Option<(StreamId, &mut BatchRewrite<'_>)>,
    ) -> Result<CompactionReport, StorageError> {
        let mut by_stream: BTreeMap<StreamId, Vec<StoredBatch>> = BTreeMap::new();
        let mut bytes = 0u64;
        for (object, slices) in chosen {
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
        let mut stream_bytes = (0, 0);
        let mut rewritten_end = None;
        let mut changed = target.is_none();
        let mut uploads = Vec::new();
        for (stream, mut batches) in by_stream {
            batches.sort_by_key(|b| b.base_offset);
            let epoch = self
                .streams_lock()
                .get(&stream)
                .map(|s| s.lock().epoch)
                .ok_or_else(|| StorageError::Closed(format!("compaction: {stream} closed")))?;
            // One upload per contiguous run: a stream's slices in the chosen objects may have gaps
            // (data of the gaps lives in other objects).
            for run in contiguous_runs(batches) {
                let run = match &mut target {
                    Some((rewritten, rewrite)) if *rewritten == stream => {
                        stream_bytes.0 += payload_bytes(&run);
                        rewritten_end = run.last().map(StoredBatch::end_offset).max(rewritten_end);
                        let (new, run_changed) = rewrite_run(stream, run, &mut **rewrite)?;
                        stream_bytes.1 += payload_bytes(&new);
                        changed |= run_changed;
                        new
                    }
                    _ => run,
                };
                uploads.push(StreamUpload::new(stream, epoch, run));
            }
        }
        if !changed {
            return Ok(CompactionReport {
                stream_bytes,
                ..CompactionReport::default()
            });
        }
        let added = self.write_objects(uploads).await?;
        let removed: Vec<ObjectId> = chosen.iter().map(|(o, _)| o.id).collect();
        let report = CompactionReport {
            replaced: removed.len(),
            written: added.len(),
            bytes,
            stream_bytes,
        };
        self.metadata.replace_objects(removed, added).await?;
        if let (Some((stream, _)), Some(end)) = (target, rewritten_end) {
            self.evict_rewritten(stream, end);
        }
        Ok(report)
    }

    /// Drops the log cache's copies of a stream's batches below `end` that were just rewritten, so
    /// reads see the rewritten ones.
    fn evict_rewritten(&self, stream: StreamId, end: Offset) {
        let Some(shared) = self.streams_lock().get(&stream).cloned() else {
            return;
        };
        let mut state = shared.lock();
        while let Some(entry) = state.entries.front() {
            if !entry.uploaded || entry.batch.end_offset() > end {
                break;
            }
            let len = entry.batch.payload.len() as u64;
            state.entries.pop_front();
            self.cached_bytes
                .fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Every object holding a live slice of a stream in `open` and none of another stream, with
    /// those slices, oldest first. (An object also holding slices of a stream served elsewhere cannot
    /// be rewritten here: this broker must not write that stream's data.)
    async fn live_objects(
        &self,
        open: &BTreeSet<StreamId>,
    ) -> Result<BTreeMap<ObjectId, Chosen>, StorageError> {
        let mut objects: BTreeMap<ObjectId, Chosen> = BTreeMap::new();
        for stream in open {
            let start = self.metadata.describe_stream(*stream).await?.start_offset;
            for slice in self
                .metadata
                .find_objects(*stream, start, usize::MAX)
                .await?
            {
                if slice.end > start {
                    objects
                        .entry(slice.object.id)
                        .or_insert_with(|| (slice.object, Vec::new()))
                        .1
                        .push((*stream, slice.start, slice.end));
                }
            }
        }
        let ids: Vec<ObjectId> = objects.keys().copied().collect();
        let streams = self.metadata.object_streams(&ids).await?;
        objects.retain(|id, _| {
            streams
                .get(id)
                .is_some_and(|streams| streams.iter().all(|s| open.contains(s)))
        });
        Ok(objects)
    }
}

fn payload_bytes(batches: &[StoredBatch]) -> u64 {
    batches.iter().map(|b| b.payload.len() as u64).sum()
}

/// Splits offset-ordered batches where one does not begin at the previous one's end.
fn contiguous_runs(batches: Vec<StoredBatch>) -> Vec<Vec<StoredBatch>> {
    let mut runs: Vec<Vec<StoredBatch>> = Vec::new();
    for batch in batches {
        match runs.last_mut() {
            Some(run)
                if run
                    .last()
                    .is_some_and(|b| b.end_offset() == batch.base_offset) =>
            {
                run.push(batch);
            }
            _ => runs.push(vec![batch]),
        }
    }
    runs
}

/// Passes one run through `rewrite` and checks the result covers the same offsets, contiguously;
/// also says whether anything changed.
fn rewrite_run(
    stream: StreamId,
    run: Vec<StoredBatch>,
    rewrite: &mut BatchRewrite<'_>,
) -> Result<(Vec<StoredBatch>, bool), StorageError> {
    let (start, end) = match (run.first(), run.last()) {
        (Some(first), Some(last)) => (first.base_offset, last.end_offset()),
        _ => return Ok((run, false)),
    };
    let before = run.clone();
    let new = rewrite(run).map_err(|e| StorageError::Rewrite(format!("{stream}: {e}")))?;
    let contiguous = new
        .windows(2)
        .all(|w| w[0].end_offset() == w[1].base_offset);
    let covers = new.first().map(|b| b.base_offset) == Some(start)
        && new.last().map(StoredBatch::end_offset) == Some(end);
    if !contiguous || !covers || new.iter().any(|b| b.count == 0) {
        return Err(StorageError::Rewrite(format!(
            "{stream}: a rewrite of {start}..{end} returned batches covering other offsets"
        )));
    }
    let changed = before.len() != new.len()
        || before
            .iter()
            .zip(&new)
            .any(|(a, b)| a.base_offset != b.base_offset || a.payload != b.payload);
    Ok((new, changed))
}
