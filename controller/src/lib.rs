//! Cluster metadata: topics, partitions → streams, streams → objects (DESIGN.md section 6).
//!
//! - [`records`]: the metadata records, prost-encoded;
//! - [`state`]: the state machine, `State::apply(record)`, a pure function;
//! - [`log`]: the create-only metadata log and snapshots in the object store;
//! - [`Controller`]: validates requests, appends records, applies them; implements
//!   [`weir_storage::StreamMetadata`], so the storage layer commits objects through it.
//!
//! - [`cluster`](Controller::register_broker): membership, election, partition placement and moves;
//! - [`rpc`], [`service`], [`remote`]: the gRPC service of the controller role ([`Role`]) and a
//!   broker's replica of the metadata ([`RemoteController`]).
//!
//! In `weir serve` the controller runs in the broker's process and is called directly; in a
//! cluster (`weir broker`) brokers reach the active controller over gRPC.

mod cluster;
mod controller;
mod gc;
pub mod log;
pub mod records;
pub mod remote;
pub mod rpc;
pub mod service;
pub mod state;

pub use cluster::{Registration, plan_balance};
pub use controller::{Controller, ControllerConfig, validate_topic_name};
pub use gc::GcReport;
pub use remote::{LoadReport, RemoteController};
pub use service::{RecoverWal, Role, RoleConfig};
pub use state::{ActiveController, Broker, State, Stream, Topic};

use std::sync::Arc;

/// Everything that can go wrong in the controller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControllerError {
    /// An object store request failed.
    #[error("object store {op} {key}: {source}")]
    Store {
        /// The request.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The store's error.
        source: Arc<object_store::Error>,
    },
    /// A metadata object is damaged.
    #[error("metadata object {key}: {reason}")]
    Format {
        /// The object's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Another controller wrote the next log sequence: this one is no longer the leader.
    #[error(
        "lost controller leadership: metadata log sequence {seq} was written by another controller"
    )]
    LostLeadership {
        /// The sequence number found taken.
        seq: u64,
    },
    /// The topic exists already.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// No such topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// A topic name Kafka would refuse.
    #[error("invalid topic name {0:?}: 1-249 characters of [a-zA-Z0-9._-], not \".\" or \"..\"")]
    InvalidTopicName(String),
    /// A partition count that makes no sense.
    #[error("invalid partition count {0}")]
    InvalidPartitions(u32),
    /// No such broker, or it is fenced.
    #[error("unknown or fenced broker {0}")]
    UnknownBroker(u32),
    /// No such stream.
    #[error("unknown stream {0}")]
    UnknownStream(weir_common::StreamId),
    /// A request that cannot be carried out as asked.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// This broker is not the active controller (`Some(node)`: the one it knows of).
    #[error("not the active controller (the controller is {0:?})")]
    NotController(Option<u32>),
    /// The controller could not be reached.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

impl ControllerError {
    pub(crate) fn store(op: &'static str, key: &str, e: object_store::Error) -> Self {
        ControllerError::Store {
            op,
            key: key.to_string(),
            source: Arc::new(e),
        }
    }
}
