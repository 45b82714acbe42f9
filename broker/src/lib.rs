//! Weir's Kafka front end (DESIGN.md section 7) and the `weir` binary.
//!
//! - [`server`]: starts a single-node broker (`weir serve`): WAL, object store, controller, storage,
//!   listeners; stops it gracefully;
//! - `connection`: framing, request decoding, ordered responses, one connection per task;
//! - `api`: one route table (which also answers ApiVersions) and one handler per Kafka API;
//! - [`batch`]: RecordBatch v2 validation and the offset/epoch rewrite;
//! - [`node`]: the state connections share: controller, storage, partitions;
//! - `error`: the one mapping from Weir errors to Kafka error codes;
//! - `metrics`: the Prometheus page of the admin listener;
//! - `retention`: retention, compaction and object garbage collection on a timer.

mod api;
pub mod batch;
mod cleaner;
pub mod config;
mod connection;
mod error;
pub mod group;
mod metrics;
pub mod node;
mod retention;
pub mod server;
pub mod topic_config;

pub use config::ServeConfig;
pub use server::Server;
