//! The broker's handle on cluster metadata: the controller itself in `weir serve` (in process, no
//! network), or a replica following the active controller over gRPC in a cluster (`weir broker`).
//! Reads never leave the process either way.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_common::{Epoch, StreamId};
use weir_controller::{Controller, ControllerError, GcReport, RemoteController, State, Topic};
use weir_storage::StreamMetadata;

/// See the [module documentation](self).
#[derive(Debug, Clone)]
pub enum Metadata {
    /// `weir serve`: this process is the controller.
    Local(Arc<Controller>),
    /// A cluster broker: a replica of the active controller's metadata.
    Remote(RemoteController),
}

impl Metadata {
    /// Runs `f` on the current state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        match self {
            Metadata::Local(c) => c.read(f),
            Metadata::Remote(r) => r.read(f),
        }
    }

    /// Wakes whenever the state changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Metadata::Local(c) => c.subscribe(),
            Metadata::Remote(r) => r.subscribe(),
        }
    }

    /// Resolves once this cluster broker is fenced, for good (its WAL and partitions were taken
    /// over); never in `weir serve`.
    pub async fn fenced(&self) {
        match self {
            Metadata::Local(_) => std::future::pending().await,
            Metadata::Remote(r) => r.fenced().await,
        }
    }

    /// The storage layer's view of the metadata.
    pub fn for_storage(&self) -> Arc<dyn StreamMetadata> {
        match self {
            Metadata::Local(c) => c.clone(),
            Metadata::Remote(r) => Arc::new(r.clone()),
        }
    }

    /// Whether this broker is one of several (metadata from a remote controller).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Metadata::Remote(_))
    }

    /// Creates a topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<Topic, ControllerError> {
        match self {
            Metadata::Local(c) => c.create_topic(name, partitions, configs).await,
            Metadata::Remote(r) => r.create_topic(name, partitions, configs).await,
        }
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<Topic, ControllerError> {
        match self {
            Metadata::Local(c) => c.delete_topic(name).await,
            Metadata::Remote(r) => r.delete_topic(name).await,
        }
    }

    /// Replaces a topic's explicit configs.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<Topic, ControllerError> {
        match self {
            Metadata::Local(c) => c.set_topic_configs(name, configs).await,
            Metadata::Remote(r) => r.set_topic_configs(name, configs).await,
        }
    }

    /// Grows a topic.
    pub async fn add_partitions(&self, name: &str, total: u32) -> Result<Topic, ControllerError> {
        match self {
            Metadata::Local(c) => c.add_partitions(name, total).await,
            Metadata::Remote(r) => r.add_partitions(name, total).await,
        }
    }

    /// Starts moving a partition's stream to `broker`.
    pub async fn reassign(&self, stream: StreamId, broker: u32) -> Result<(), ControllerError> {
        match self {
            Metadata::Local(c) => c.reassign(stream, broker).await,
            Metadata::Remote(r) => r.reassign(stream, broker).await,
        }
    }

    /// A block of `count` Kafka producer ids: the first.
    pub async fn allocate_producer_ids(&self, count: u32) -> Result<u64, ControllerError> {
        match self {
            Metadata::Local(c) => c.allocate_producer_ids(count).await,
            Metadata::Remote(r) => r.allocate_producer_ids(count).await,
        }
    }

    /// Moves every partition off `broker`.
    pub async fn drain(&self, broker: u32) -> Result<(), ControllerError> {
        match self {
            Metadata::Local(c) => c.drain(broker).await.map(|_| ()),
            Metadata::Remote(r) => r.drain(broker).await,
        }
    }

    /// Changes SCRAM credentials and ACLs.
    pub async fn change_security(
        &self,
        change: weir_controller::records::SecurityChanged,
    ) -> Result<(), ControllerError> {
        match self {
            Metadata::Local(c) => c.change_security(change).await,
            Metadata::Remote(r) => r.change_security(change).await,
        }
    }

    /// Reports a moving stream closed here at `epoch`.
    pub async fn move_done(&self, stream: StreamId, epoch: Epoch) -> Result<(), ControllerError> {
        match self {
            Metadata::Local(c) => c.move_done(stream, epoch).await,
            Metadata::Remote(r) => r.move_done(stream, epoch).await,
        }
    }

    /// A garbage collection pass, where this process is the controller (in a cluster the active
    /// controller runs its own: `None`).
    pub async fn collect_garbage(
        &self,
        grace_ms: u64,
    ) -> Result<Option<GcReport>, ControllerError> {
        match self {
            Metadata::Local(c) => c.collect_garbage(grace_ms).await.map(Some),
            Metadata::Remote(_) => Ok(None),
        }
    }
}
