//! Key compaction of `cleanup.policy=compact` topics (and `__consumer_offsets`): Kafka's log cleaner
//! over Weir's objects.
//!
//! A pass over a partition open here, run from the housekeeping loop (`retention.rs`):
//!
//! 1. The *cleanable* data is what objects hold, up to the last slice committed at least
//!    `min.compaction.lag.ms` ago; data still only in the WAL is never touched. The part since the
//!    previous pass is *dirty*; a pass runs once dirty bytes reach `min.cleanable.dirty.ratio` of the
//!    partition (all of it counts as dirty after a restart: the clean point is kept in memory).
//! 2. It reads the dirty part and maps each key (a 128-bit keyed hash, as Kafka keeps an MD5) to its
//!    latest offset, at most `key_compaction_max_keys` keys: a partition with more is cleaned up to
//!    where the map filled, and the rest in later passes.
//! 3. It rewrites the partition's objects from the log start to the end of the map
//!    ([`weir_storage::Storage::rewrite_stream`]), keeping a record unless a later record has its key;
//!    tombstones (null values) go too once they lie below the end of a pass that ran at least
//!    `delete.retention.ms` ago (Kafka's KIP-534: the clock starts when the cleaner first sees a
//!    tombstone, not at the producer's timestamp). Batches keep their offsets (see
//!    `batch/filter.rs`); runs of batches left empty shrink to one empty batch. The metadata swaps the
//!    objects only if nothing changed under them (retention, another compaction); otherwise the next
//!    pass tries again.
//!
//! A batch whose records cannot be read (damaged, or over the decompression cap) is kept unchanged
//! and its keys are left out of the map. Records without a key are kept (a compacted topic refuses
//! them at produce time). Transactional batches (records and markers) are kept as they are and their
//! keys stay out of the map: a record of an aborted (or still open) transaction must never remove the
//! committed record of its key, as an aborted TxnOffsetCommit would otherwise remove a group's
//! committed offset. Kafka's cleaner drops aborted records; here they stay until retention.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use weir_common::{Offset, StreamId};
use weir_storage::StoredBatch;

use crate::batch::filter::{self, RecordRef};
use crate::node::Node;
use crate::topic_config;

/// What the cleaner remembers of each partition, in memory.
#[derive(Debug, Default)]
pub(crate) struct Cleaner {
    cleaned: HashMap<StreamId, History>,
}

/// A partition's passes.
#[derive(Debug, Default, Clone)]
struct History {
    /// Where the last pass ended.
    end: Offset,
    /// Each recent pass's end and when it ran (ms), oldest first: tombstones below the end of a pass
    /// that ran `delete.retention.ms` ago may go.
    passes: Vec<(Offset, u64)>,
}

impl History {
    /// Tombstones below this offset have been seen by a pass at least `retention_ms` ago.
    fn tombstone_horizon(&self, now_ms: u64, retention_ms: u64) -> Offset {
        self.passes
            .iter()
            .rev()
            .find(|(_, at)| at.saturating_add(retention_ms) <= now_ms)
            .map_or(Offset(0), |(end, _)| *end)
    }

    fn record(&mut self, end: Offset, now_ms: u64, retention_ms: u64) {
        self.end = end;
        self.passes.push((end, now_ms));
        // Passes older than the newest one already past the retention add nothing.
        if let Some(i) = self
            .passes
            .iter()
            .rposition(|(_, at)| at.saturating_add(retention_ms) <= now_ms)
        {
            self.passes.drain(..i);
        }
    }
}

/// What a pass should do to one partition.
#[derive(Debug, Clone, Copy)]
struct Plan {
    stream: StreamId,
    /// Where the previous pass ended (or the log start).
    clean_end: Offset,
    /// Tombstones below this may be removed.
    tombstone_horizon: Offset,
    /// End of the cleanable data.
    cleanable_end: Offset,
    delete_retention_ms: u64,
}

/// What one pass over a partition did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cleaned {
    /// Distinct keys mapped.
    pub keys: usize,
    /// The pass cleaned offsets below this.
    pub end: Offset,
    /// The partition's bytes in the rewritten objects, before and after.
    pub bytes: (u64, u64),
}

impl Cleaner {
    /// Cleans every compacted partition open here whose dirty part is large enough.
    /// Stops between partitions once `stop` is set.
    pub(crate) async fn run(
        &mut self,
        node: &Node,
        now_ms: u64,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) {
        for plan in self.plans(node, now_ms) {
            if *stop.borrow() {
                return;
            }
            match self.clean(node, plan, now_ms).await {
                Ok(done) if done.bytes.0 != done.bytes.1 => {
                    // Compressing again can make a batch a little larger than the producer's.
                    metrics::counter!("weir_key_compaction_bytes_removed_total")
                        .increment(done.bytes.0.saturating_sub(done.bytes.1));
                    tracing::info!(stream = %plan.stream, ?done, "partition key-compacted");
                }
                Ok(done) => tracing::debug!(stream = %plan.stream, ?done, "nothing to compact"),
                Err(e) => {
                    tracing::warn!(stream = %plan.stream, error = %e, "key compaction failed; retrying later");
                }
            }
        }
        // Forget partitions deleted or moved away.
        self.cleaned
            .retain(|stream, _| node.storage.stream(*stream).is_some());
    }

    /// The partitions due for a pass.
    fn plans(&self, node: &Node, now_ms: u64) -> Vec<Plan> {
        let candidates: Vec<(StreamId, f64, u64, u64)> = node.controller.read(|state| {
            let mut out = Vec::new();
            for topic in state.topics.values() {
                let config = |name| topic_config::effective(&topic.configs, name);
                let compacts = config("cleanup.policy")
                    .is_some_and(|p| p.split(',').any(|p| p.trim() == "compact"));
                if !compacts {
                    continue;
                }
                let number = |name| config(name).and_then(|v| v.parse::<f64>().ok());
                let ratio = number("min.cleanable.dirty.ratio").unwrap_or(0.5);
                let lag = number("min.compaction.lag.ms").unwrap_or(0.0).max(0.0) as u64;
                let tombstones = number("delete.retention.ms")
                    .unwrap_or(86_400_000.0)
                    .max(0.0) as u64;
                for stream in &topic.partitions {
                    out.push((*stream, ratio, lag, tombstones));
                }
            }
            out
        });
        let mut plans = Vec::new();
        for (stream, ratio, lag_ms, delete_retention_ms) in candidates {
            if node.storage.stream(stream).is_none() {
                continue; // open elsewhere
            }
            let history = self.cleaned.get(&stream).cloned().unwrap_or_default();
            let clean_end = history.end;
            let tombstone_horizon = history.tombstone_horizon(now_ms, delete_retention_ms);
            let plan = node.controller.read(|state| {
                let s = state.streams.get(&stream)?;
                let clean_end = clean_end.max(s.start);
                let (mut cleanable_end, mut total, mut dirty) = (None, 0u64, 0u64);
                for slice in s.slices.iter().filter(|sl| sl.end > s.start) {
                    if slice.committed_at_ms.saturating_add(lag_ms) > now_ms {
                        break;
                    }
                    // Slices committed before sizes were recorded count by offsets.
                    let bytes = if slice.bytes > 0 {
                        slice.bytes
                    } else {
                        slice.end.get() - slice.start.get()
                    };
                    total += bytes;
                    if slice.end > clean_end {
                        dirty += bytes;
                    }
                    cleanable_end = Some(slice.end);
                }
                let cleanable_end = cleanable_end.filter(|end| *end > clean_end)?;
                let due = total > 0 && dirty as f64 >= ratio * total as f64;
                due.then_some(Plan {
                    stream,
                    clean_end,
                    tombstone_horizon,
                    cleanable_end,
                    delete_retention_ms,
                })
            });
            plans.extend(plan);
        }
        plans
    }

    async fn clean(&mut self, node: &Node, plan: Plan, now_ms: u64) -> anyhow::Result<Cleaned> {
        let handle = node
            .storage
            .stream(plan.stream)
            .ok_or_else(|| anyhow::anyhow!("{} is not open here", plan.stream))?;
        let hasher = KeyHasher::default();
        let max_keys = node.config.key_compaction_max_keys;
        // 1. The latest offset of each key in the dirty part, up to `max_keys` keys.
        let mut latest: HashMap<u128, i64> = HashMap::new();
        let mut map_end = plan.clean_end;
        let mut keys: Vec<(u128, i64)> = Vec::new();
        'read: while map_end < plan.cleanable_end {
            let batches = handle.read(map_end, 1 << 20).await?;
            if batches.is_empty() {
                break;
            }
            for batch in batches {
                if batch.base_offset >= plan.cleanable_end {
                    break 'read;
                }
                keys.clear();
                if crate::batch::is_transactional(&batch.payload) {
                    map_end = batch.end_offset();
                    continue;
                }
                let read = filter::for_each_record(&batch.payload, |r| {
                    if let Some(key) = r.key {
                        keys.push((hasher.hash(key), r.offset));
                    }
                });
                if let Err(e) = read {
                    // Kept as it is (see the module doc); its keys stay out of the map.
                    metrics::counter!("weir_key_compaction_unreadable_batches_total").increment(1);
                    tracing::warn!(stream = %plan.stream, offset = %batch.base_offset, error = %e,
                        "key compaction keeps a batch it cannot read");
                    keys.clear();
                }
                if latest.len() + keys.len() > max_keys && !latest.is_empty() {
                    break 'read;
                }
                latest.extend(keys.iter().copied());
                map_end = batch.end_offset();
            }
        }
        if map_end <= plan.clean_end {
            return Ok(Cleaned {
                end: map_end,
                ..Cleaned::default()
            });
        }

        // 2. Rewrite from the log start to the end of the map.
        let tombstone_horizon = i64::try_from(plan.tombstone_horizon.get()).unwrap_or(i64::MAX);
        let map_end_i64 = i64::try_from(map_end.get()).unwrap_or(i64::MAX);
        let keep = |r: RecordRef<'_>| {
            let Some(key) = r.key else { return true };
            if latest
                .get(&hasher.hash(key))
                .is_some_and(|newest| r.offset < *newest)
            {
                return false;
            }
            !(r.tombstone && r.offset < tombstone_horizon)
        };
        let mut rewrite = |run: Vec<StoredBatch>| -> Result<Vec<StoredBatch>, String> {
            let mut out: Vec<StoredBatch> = Vec::with_capacity(run.len());
            for batch in run {
                let base = i64::try_from(batch.base_offset.get()).unwrap_or(i64::MAX);
                let mut payload =
                    if base < map_end_i64 && !crate::batch::is_transactional(&batch.payload) {
                        // A batch it cannot read is kept as it is (see the module doc).
                        filter::retain_records(&batch.payload, keep)
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| batch.payload.clone())
                    } else {
                        batch.payload.clone()
                    };
                let empty = filter::is_empty(&payload);
                if empty {
                    let ts = filter::max_timestamp(&payload);
                    payload = filter::empty_batch(&payload, base, batch.count, ts);
                }
                // A run of empty batches becomes one.
                if empty
                    && let Some(prev) = out.last_mut()
                    && filter::is_empty(&prev.payload)
                    && let Some(count) = prev.count.checked_add(batch.count)
                    && i32::try_from(count).is_ok()
                {
                    let ts =
                        filter::max_timestamp(&prev.payload).max(filter::max_timestamp(&payload));
                    let prev_base = i64::try_from(prev.base_offset.get()).unwrap_or(i64::MAX);
                    prev.payload = filter::empty_batch(&prev.payload, prev_base, count, ts);
                    prev.count = count;
                    continue;
                }
                out.push(StoredBatch { payload, ..batch });
            }
            Ok(out)
        };
        let report = node
            .storage
            .rewrite_stream(plan.stream, map_end, &mut rewrite)
            .await?;
        self.cleaned.entry(plan.stream).or_default().record(
            map_end,
            now_ms,
            plan.delete_retention_ms,
        );
        Ok(Cleaned {
            keys: latest.len(),
            end: map_end,
            bytes: report.stream_bytes,
        })
    }
}

/// A 128-bit hash of record keys under secret random keys (two SipHash instances), so no producer
/// can craft keys that collide with another's and delete its records.
#[derive(Debug, Default)]
struct KeyHasher {
    high: RandomState,
    low: RandomState,
}

impl KeyHasher {
    fn hash(&self, key: &[u8]) -> u128 {
        (u128::from(self.high.hash_one(key)) << 64) | u128::from(self.low.hash_one(key))
    }
}
