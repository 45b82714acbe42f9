//! Reading data objects: ranged GETs of the tail (footer + index) and of blocks, with bounded caches
//! for parsed indexes and for blocks.
//!
//! A read asks for one stream from an offset on. The reader finds the blocks from the index, serves
//! those already in the block cache, and fetches the missing ones with **one** ranged GET covering
//! them all (a stream's blocks are adjacent in an object), up to `object_read_max_bytes`. Fetching
//! more than the caller asked for is the read-ahead that makes sequential catch-up cheap: the next read
//! finds its blocks in the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use weir_common::{ObjectId, Offset, StreamId};

use crate::format::{self, Footer, IndexEntry, ObjectIndex, StoredBatch};
use crate::metadata::ObjectDescriptor;
use crate::{StorageConfig, StorageError};

/// The key of a data object: a hash prefix first, so keys spread over the store's partitions.
pub fn object_key(id: ObjectId) -> Path {
    let hash = crc32c::crc32c(&id.get().to_be_bytes());
    Path::from(format!("data/{hash:08x}/{:020}.obj", id.get()))
}

/// The object id a data object key names, or `None` for any other key.
pub fn parse_object_key(key: &Path) -> Option<ObjectId> {
    let mut parts = key.parts();
    if parts.next()?.as_ref() != "data" {
        return None;
    }
    let _hash = parts.next()?;
    let name = parts.next()?;
    let id = name.as_ref().strip_suffix(".obj")?;
    if parts.next().is_some() || id.len() != 20 {
        return None;
    }
    id.parse().ok().map(ObjectId)
}

/// Counters of the read path.
#[derive(Debug, Default)]
pub(crate) struct ReadStats {
    pub(crate) block_hits: AtomicU64,
    pub(crate) block_misses: AtomicU64,
    pub(crate) get_requests: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    tail_read_bytes: u64,
    read_max_bytes: u64,
    indexes: moka::sync::Cache<ObjectId, Arc<ObjectIndex>>,
    blocks: moka::sync::Cache<(ObjectId, u64), Bytes>,
    pub(crate) stats: ReadStats,
}

impl ObjectReader {
    /// Bytes held in the block cache (moka's weighted size, after pending maintenance).
    pub(crate) fn block_cache_bytes(&self) -> u64 {
        self.blocks.run_pending_tasks();
        self.blocks.weighted_size()
    }

    pub(crate) fn new(store: Arc<dyn ObjectStore>, config: &StorageConfig) -> Self {
        let weight = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            store,
            tail_read_bytes: config.tail_read_bytes.max(format::FOOTER_LEN as u64),
            read_max_bytes: config.object_read_max_bytes,
            indexes: moka::sync::Cache::builder()
                .max_capacity(config.index_cache_max_bytes)
                .weigher(move |_, v: &Arc<ObjectIndex>| weight(v.weight()))
                .build(),
            // LRU, not moka's default TinyLFU: read-ahead inserts blocks that are read once, soon;
            // TinyLFU refuses to admit such never-seen keys while the cache is full of older ones,
            // so every block was fetched twice (1.9 GB of GETs to read back 1 GB, measured).
            blocks: moka::sync::Cache::builder()
                .max_capacity(config.block_cache_max_bytes)
                .weigher(move |_, v: &Bytes| weight(v.len()))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            stats: ReadStats::default(),
        }
    }

    async fn get_range(
        &self,
        key: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StorageError> {
        self.stats.get_requests.fetch_add(1, Ordering::Relaxed);
        self.store
            .get_range(key, range)
            .await
            .map_err(|e| StorageError::store("get range", key, e))
    }

    /// The object's index, from the cache or with one or two ranged GETs.
    pub(crate) async fn index(
        &self,
        object: &ObjectDescriptor,
    ) -> Result<Arc<ObjectIndex>, StorageError> {
        if let Some(index) = self.indexes.get(&object.id) {
            return Ok(index);
        }
        let key = object_key(object.id);
        let format_err = |reason| StorageError::Format {
            key: key.to_string(),
            reason,
        };
        let size = object.size;
        let tail_start = size.saturating_sub(self.tail_read_bytes);
        let tail = self.get_range(&key, tail_start..size).await?;
        let footer = Footer::decode(&tail, size).map_err(format_err)?;
        let index_end = size - format::FOOTER_LEN as u64;
        let index_bytes = if footer.index_position >= tail_start {
            let from = usize::try_from(footer.index_position - tail_start).unwrap_or(usize::MAX);
            tail.slice(from..tail.len() - format::FOOTER_LEN)
        } else {
            self.get_range(&key, footer.index_position..index_end)
                .await?
        };
        let index = Arc::new(ObjectIndex::decode(&index_bytes, &footer).map_err(format_err)?);
        self.indexes.insert(object.id, index.clone());
        Ok(index)
    }

    /// Whole batches of `stream` from the block holding `from` on, about `max_bytes` of them (at least
    /// one block).
    pub(crate) async fn read(
        &self,
        object: &ObjectDescriptor,
        stream: StreamId,
        from: Offset,
        max_bytes: usize,
    ) -> Result<Vec<StoredBatch>, StorageError> {
        let index = self.index(object).await?;
        let candidates = index.blocks_from(stream, from);
        let mut wanted = 0usize;
        let mut fetch_bytes = 0u64;
        let mut chosen: Vec<IndexEntry> = Vec::new();
        for entry in candidates {
            // Take blocks up to max_bytes for the caller, then read ahead up to read_max_bytes.
            let more_for_caller = wanted < max_bytes;
            let read_ahead = fetch_bytes + u64::from(entry.size) <= self.read_max_bytes;
            if !chosen.is_empty() && !more_for_caller && !read_ahead {
                break;
            }
            wanted += entry.size as usize;
            fetch_bytes += u64::from(entry.size);
            chosen.push(*entry);
        }
        let blocks = self.blocks(object.id, &chosen).await?;
        let key = object_key(object.id);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (entry, block) in chosen.iter().zip(blocks) {
            if bytes >= max_bytes && !out.is_empty() {
                break;
            }
            let batches =
                format::decode_block(&block, entry).map_err(|reason| StorageError::Format {
                    key: key.to_string(),
                    reason,
                })?;
            for batch in batches.into_iter().filter(|b| b.end_offset() > from) {
                bytes += batch.payload.len();
                out.push(batch);
            }
        }
        Ok(out)
    }

    /// The blocks' bytes, cached ones from the cache, the others with one ranged GET.
    async fn blocks(
        &self,
        id: ObjectId,
        entries: &[IndexEntry],
    ) -> Result<Vec<Bytes>, StorageError> {
        let mut found: Vec<Option<Bytes>> = entries
            .iter()
            .map(|e| self.blocks.get(&(id, e.position)))
            .collect();
        let hits = found.iter().filter(|b| b.is_some()).count() as u64;
        self.stats.block_hits.fetch_add(hits, Ordering::Relaxed);
        self.stats
            .block_misses
            .fetch_add(entries.len() as u64 - hits, Ordering::Relaxed);
        let missing: Vec<usize> = (0..entries.len()).filter(|i| found[*i].is_none()).collect();
        if let (Some(&first), Some(&last)) = (missing.first(), missing.last()) {
            let start = entries[first].position;
            let end = entries[last].position + u64::from(entries[last].size);
            let bytes = self.get_range(&object_key(id), start..end).await?;
            for i in missing {
                let from = usize::try_from(entries[i].position - start).unwrap_or(usize::MAX);
                let to = from + entries[i].size as usize;
                if to > bytes.len() {
                    return Err(StorageError::Format {
                        key: object_key(id).to_string(),
                        reason: format::FormatError::Truncated("ranged GET returned fewer bytes"),
                    });
                }
                // A block read together with others gets its own allocation before it is
                // cached: a slice would keep the whole multi-block buffer alive for as long as
                // any one of its blocks stays cached, so the cache's weight would understate
                // its memory by up to `object_read_max_bytes / block_max_bytes` times.
                let block = if bytes.len() == to - from {
                    bytes.clone()
                } else {
                    Bytes::copy_from_slice(&bytes[from..to])
                };
                self.blocks.insert((id, entries[i].position), block.clone());
                found[i] = Some(block);
            }
        }
        Ok(found.into_iter().flatten().collect())
    }
}
