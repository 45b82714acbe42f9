//! The storage layer's one error type.

use std::sync::Arc;

use weir_common::{Epoch, Offset, StreamId};
use weir_wal::WalError;

use crate::format::FormatError;
use crate::metadata::MetadataError;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// An object store request failed.
    #[error("object store {op} {key}: {source}")]
    ObjectStore {
        /// The request: "put", "get range", ...
        op: &'static str,
        /// The object's key.
        key: String,
        /// The store's error.
        source: Arc<object_store::Error>,
    },
    /// A metadata request failed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// An object's bytes are damaged or not a Weir data object.
    #[error("object {key}: {reason}")]
    Format {
        /// The object's key.
        key: String,
        /// What is wrong.
        reason: FormatError,
    },
    /// A read outside the stream's readable range.
    #[error("{stream}: offset {offset} is outside the readable range [{start}, {end})")]
    OffsetOutOfRange {
        /// The stream.
        stream: StreamId,
        /// The offset asked for.
        offset: Offset,
        /// The log start offset.
        start: Offset,
        /// The high watermark.
        end: Offset,
    },
    /// The stream is not open on this storage instance.
    #[error("{0} is not open here")]
    StreamNotOpen(StreamId),
    /// The stream was opened by a newer owner; this one may not write it.
    #[error("{stream} fenced at {epoch}: {detail}")]
    Fenced {
        /// The stream.
        stream: StreamId,
        /// The epoch this instance held.
        epoch: Epoch,
        /// What happened.
        detail: String,
    },
    /// The stream's WAL failed; it accepts nothing more until a restart.
    #[error("{stream} stopped after a wal failure: {detail}")]
    StreamFailed {
        /// The stream.
        stream: StreamId,
        /// The failure.
        detail: String,
    },
    /// An append larger than the storage can ever buffer.
    #[error("append of {size} bytes exceeds the maximum of {max} bytes")]
    AppendTooLarge {
        /// Payload size.
        size: u64,
        /// The limit (`max_unuploaded_bytes`).
        max: u64,
    },
    /// The WAL holds records of a stream that do not continue its committed data: acknowledged
    /// records are missing. Recovery stops rather than open with a hole.
    #[error("{stream}: wal record at offset {found} where {expected} was due (records missing)")]
    WalGap {
        /// The stream.
        stream: StreamId,
        /// The offset the stream's data ended at.
        expected: Offset,
        /// The offset of the WAL record found.
        found: Offset,
    },
    /// An append that makes no sense (no offsets, or a payload of the wrong size).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The stream is closing or the storage is shutting down.
    #[error("{0}")]
    Closed(String),
    /// A rewrite of a stream's batches (key compaction) failed or broke the offsets.
    #[error("rewrite of stream batches failed: {0}")]
    Rewrite(String),
    /// A setting is out of range.
    #[error("invalid storage setting {key}: {detail}")]
    InvalidConfig {
        /// The setting.
        key: &'static str,
        /// Why.
        detail: String,
    },
}

impl StorageError {
    pub(crate) fn store(
        op: &'static str,
        key: &object_store::path::Path,
        e: object_store::Error,
    ) -> Self {
        StorageError::ObjectStore {
            op,
            key: key.to_string(),
            source: Arc::new(e),
        }
    }
}
