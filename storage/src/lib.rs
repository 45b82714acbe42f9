//! Streams over a write-ahead log and an object store: Weir's storage layer.
//!
//! A *stream* is the storage of one Kafka partition: an append-only sequence of batches addressed by
//! offset. This crate keeps every stream of a broker in three places, each with one job:
//!
//! 1. the broker's **WAL** ([`weir_wal`]), which makes an append durable within one group commit;
//! 2. the **log cache**, in memory, from which tail reads are served;
//! 3. **data objects** in the object store, written in bulk by the uploader, which then
//!    trims the WAL. Older data is read back with ranged GETs through a bounded block cache.
//!
//! Object metadata (which object holds which offsets of which stream, stream epochs) is committed
//! through the [`StreamMetadata`] trait, implemented by the controller, or by [`MemoryMetadata`] in
//! tests. Storage depends on the trait, never on the controller.
//!
//! Crash safety: an append is acknowledged only once the WAL has it. After a crash,
//! [`Storage::open`] uploads whatever the WAL holds beyond the committed objects before serving; if the
//! WAL is lost after an upload, the objects alone still hold every record they committed.

mod compactor;
mod config;
mod error;
pub mod format;
mod local;
mod metadata;
mod metered;
mod objects;
mod storage;
mod store_url;
mod stream;
mod uploader;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod faulty;

pub use compactor::{BatchRewrite, CompactionReport};
pub use config::StorageConfig;
pub use error::StorageError;
pub use format::{FormatError, StoredBatch};
pub use local::LocalStore;
pub use metadata::{
    MemoryMetadata, MetadataError, NewObject, ObjectDescriptor, ObjectKind, ObjectSlice,
    StreamDescriptor, StreamMetadata, StreamRange, check_close, check_commit, check_replace,
    slices_from, streams_of_objects,
};
pub use metered::MeteredStore;
pub use objects::{object_key, parse_object_key};
pub use storage::{Components, Storage, StorageStats};
pub use store_url::{StoreUrlError, check_conditional_create, open_store, open_store_with_env};
pub use stream::{AppendReceipt, Durable, Stream};
