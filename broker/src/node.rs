//! The broker's state shared by every connection: the controller, the storage, and the partitions it
//! serves. In `weir serve` this one node owns every partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use weir_common::StreamId;
use weir_controller::{Controller, ControllerError, Topic};
use weir_storage::{Storage, StorageError, Stream};

use crate::config::ServeConfig;

/// One broker node.
#[derive(Debug)]
pub struct Node {
    /// Settings.
    pub config: ServeConfig,
    /// The metadata authority (in process).
    pub controller: Arc<Controller>,
    /// The partitions' storage.
    pub storage: Storage,
    /// Serialises stream opening and topic creation, so a partition is opened once.
    open_lock: tokio::sync::Mutex<()>,
    /// The cluster id reported to clients.
    pub cluster_id: String,
    /// Consumer groups and committed offsets.
    pub groups: crate::group::Coordinator,
}

/// A partition resolved for a request.
#[derive(Debug, Clone)]
pub struct Partition {
    /// The partition's stream, open here.
    pub stream: Stream,
    /// Its Kafka leader epoch.
    pub leader_epoch: i32,
}

impl Node {
    /// A node over an opened controller and storage.
    pub fn new(
        config: ServeConfig,
        controller: Arc<Controller>,
        storage: Storage,
        cluster_id: String,
    ) -> Self {
        let ms = std::time::Duration::from_millis;
        let settings = crate::group::actor::Settings {
            initial_delay: ms(config.group_initial_rebalance_delay_ms),
            consumer_session_timeout: ms(config.group_consumer_session_timeout_ms),
            consumer_heartbeat_interval: ms(config.group_consumer_heartbeat_interval_ms),
        };
        Self {
            config,
            controller,
            storage,
            open_lock: tokio::sync::Mutex::new(()),
            cluster_id,
            groups: crate::group::Coordinator::new(settings),
        }
    }

    /// Opens the streams of every topic (a single node owns them all).
    pub async fn open_all(&self) -> Result<(), StorageError> {
        let streams: Vec<StreamId> = self.controller.read(|s| {
            s.topics
                .values()
                .flat_map(|t| t.partitions.clone())
                .collect()
        });
        let _guard = self.open_lock.lock().await;
        for stream in streams {
            self.storage.open_stream(stream).await?;
        }
        Ok(())
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<Topic> {
        self.controller.read(|s| s.topics.get(name).cloned())
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Topic> {
        self.controller.read(|s| s.topic_by_id(id).cloned())
    }

    /// Every topic.
    pub fn topics(&self) -> Vec<Topic> {
        self.controller
            .read(|s| s.topics.values().cloned().collect())
    }

    /// The open partition `index` of `topic`, or `None` if it does not exist.
    pub fn partition(&self, topic: &Topic, index: i32) -> Option<Partition> {
        let stream_id = *topic.partitions.get(usize::try_from(index).ok()?)?;
        let stream = self.storage.stream(stream_id)?;
        let leader_epoch = i32::try_from(stream.epoch().get()).unwrap_or(i32::MAX);
        Some(Partition {
            stream,
            leader_epoch,
        })
    }

    /// The Kafka leader epoch of a stream, from metadata (also for partitions not open here).
    pub fn leader_epoch(&self, stream: StreamId) -> i32 {
        let epoch = self
            .controller
            .read(|s| s.streams.get(&stream).map(|st| st.epoch.get()))
            .unwrap_or(0);
        i32::try_from(epoch).unwrap_or(i32::MAX)
    }

    /// Creates a topic and opens its partitions.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<Topic, ControllerError> {
        let _guard = self.open_lock.lock().await;
        let topic = self
            .controller
            .create_topic(name, partitions, configs)
            .await?;
        for stream in &topic.partitions {
            if let Err(e) = self.storage.open_stream(*stream).await {
                tracing::error!(topic = name, stream = %stream, error = %e, "cannot open new partition");
            }
        }
        tracing::info!(topic = name, partitions, id = %topic.id, "topic created");
        Ok(topic)
    }

    /// Grows a topic to `total` partitions and opens the new ones.
    pub async fn add_partitions(&self, name: &str, total: u32) -> Result<Topic, ControllerError> {
        let _guard = self.open_lock.lock().await;
        let before = self.topic(name).map_or(0, |t| t.partitions.len());
        let topic = self.controller.add_partitions(name, total).await?;
        for stream in &topic.partitions[before..] {
            if let Err(e) = self.storage.open_stream(*stream).await {
                tracing::error!(topic = name, stream = %stream, error = %e, "cannot open new partition");
            }
        }
        tracing::info!(topic = name, partitions = total, "partitions added");
        Ok(topic)
    }

    /// Closes a topic's partitions (uploading their data) and deletes it.
    pub async fn delete_topic(&self, name: &str) -> Result<Topic, ControllerError> {
        let _guard = self.open_lock.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        for stream in &topic.partitions {
            if let Err(e) = self.storage.close_stream(*stream).await {
                tracing::warn!(topic = name, stream = %stream, error = %e, "closing a deleted partition");
            }
        }
        let topic = self.controller.delete_topic(name).await?;
        tracing::info!(topic = name, "topic deleted");
        Ok(topic)
    }
}
