//! Cluster metadata: brokers, topics, partitions → streams, streams → objects.
//!
//! Planned contents (DESIGN.md section 6; issues 3 and 7): the pure `apply(state, record)` state machine,
//! the create-only metadata log and snapshots in the object store, the gRPC service brokers call, and the
//! implementation of `weir_storage::StreamMetadata` that the storage layer commits objects through. Until
//! then the storage layer runs against its in-memory `MemoryMetadata`.
