//! Weir's Kafka front end (DESIGN.md section 7) and the `weir` binary.
//!
//! - [`server`]: starts a broker, single-node (`weir serve`) or one of a cluster (`weir broker`): WAL,
//!   object store, metadata, storage, listeners; stops it gracefully;
//! - [`metadata`]: the controller in process, or a replica of a cluster's metadata;
//! - `cluster`: a cluster broker's partitions follow the metadata (opened, moved away, recovered);
//! - `connection`: framing, request decoding, ordered responses, one connection per task;
//! - `api`: one route table (which also answers ApiVersions) and one handler per Kafka API;
//! - [`batch`]: RecordBatch v2 validation and the offset/epoch rewrite;
//! - [`node`]: the state connections share: controller, storage, partitions;
//! - `error`: the one mapping from Weir errors to Kafka error codes;
//! - `metrics`: the Prometheus page of the admin listener;
//! - [`admin`]: the admin API's cluster endpoints;
//! - `retention`: retention, compaction and object garbage collection on a timer;
//! - `cleaner`: key compaction of `cleanup.policy=compact` topics.

pub mod admin;
mod api;
pub mod batch;
mod cleaner;
mod cluster;
pub mod config;
mod connection;
pub mod dispatch;
mod error;
pub mod group;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod producers;
mod retention;
pub mod security;
pub mod server;
pub mod tls;
pub mod topic_config;
pub mod txn;
pub mod wire;

pub use config::ServeConfig;
pub use server::Server;
