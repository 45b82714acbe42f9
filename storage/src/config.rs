//! Settings of the storage layer: a documented serde struct, every limit with its unit in its name.

use serde::{Deserialize, Serialize};

use crate::StorageError;

/// Settings of the storage layer. Defaults follow DESIGN.md section 5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Upload once this many durable bytes wait for upload. Default 64 MiB.
    pub upload_max_bytes: u64,
    /// Upload at least this often while anything waits. Default 10 s.
    pub upload_interval_ms: u64,
    /// A stream with at least this many bytes in one upload gets its own stream object; smaller ones
    /// share the stream set object. Default 8 MiB.
    pub stream_object_min_bytes: u64,
    /// Target size of a data block in an object (blocks are cut at batch boundaries). Default 512 KiB.
    pub block_max_bytes: u64,
    /// Appends wait (backpressure) while this many bytes are not yet uploaded. Default 256 MiB; must be
    /// at least `upload_max_bytes`.
    pub max_unuploaded_bytes: u64,
    /// Bytes the log cache holds: data not yet uploaded (always kept, bounded by
    /// `max_unuploaded_bytes`) plus uploaded data kept for tail reads, evicted oldest first (on append
    /// and after each upload) while the cache is over this. Default 256 MiB.
    pub log_cache_max_bytes: u64,
    /// Bytes of object blocks kept in the block cache for catch-up reads. Default 128 MiB.
    pub block_cache_max_bytes: u64,
    /// Bytes of parsed object indexes kept in memory. Default 16 MiB.
    pub index_cache_max_bytes: u64,
    /// Size of the first ranged GET of an object's tail, meant to take the footer and the whole index
    /// in one request. Default 64 KiB.
    pub tail_read_bytes: u64,
    /// Most bytes one read from objects fetches ahead in one ranged GET. Default 4 MiB.
    pub object_read_max_bytes: u64,
    /// Compaction starts once this many stream set objects of open streams exist. Default 8.
    pub compaction_min_objects: usize,
    /// Most bytes of objects one compaction pass rewrites (it holds them in memory). Default 64 MiB.
    pub compaction_max_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            upload_max_bytes: 64 << 20,
            upload_interval_ms: 10_000,
            stream_object_min_bytes: 8 << 20,
            block_max_bytes: 512 << 10,
            max_unuploaded_bytes: 256 << 20,
            log_cache_max_bytes: 256 << 20,
            block_cache_max_bytes: 128 << 20,
            index_cache_max_bytes: 16 << 20,
            tail_read_bytes: 64 << 10,
            object_read_max_bytes: 4 << 20,
            compaction_min_objects: 8,
            compaction_max_bytes: 64 << 20,
        }
    }
}

impl StorageConfig {
    /// Checks the settings against each other; the error names the offending key.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid = |key, detail: String| Err(StorageError::InvalidConfig { key, detail });
        for (key, value) in [
            ("upload_max_bytes", self.upload_max_bytes),
            ("upload_interval_ms", self.upload_interval_ms),
            ("block_max_bytes", self.block_max_bytes),
            ("max_unuploaded_bytes", self.max_unuploaded_bytes),
            ("tail_read_bytes", self.tail_read_bytes),
            ("object_read_max_bytes", self.object_read_max_bytes),
        ] {
            if value == 0 {
                return invalid(key, "must be positive".into());
            }
        }
        if self.max_unuploaded_bytes < self.upload_max_bytes {
            return invalid(
                "max_unuploaded_bytes",
                format!(
                    "{} is below upload_max_bytes ({}): appends would stall before an upload starts",
                    self.max_unuploaded_bytes, self.upload_max_bytes
                ),
            );
        }
        if self.max_unuploaded_bytes > u64::from(u32::MAX) * 16 {
            return invalid("max_unuploaded_bytes", "must be below 64 GiB".into());
        }
        Ok(())
    }
}
