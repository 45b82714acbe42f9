//! The broker's state shared by every connection: the metadata, the storage, and the partitions it
//! serves. In `weir serve` this one node owns every partition; in a cluster, the partitions the
//! metadata assigns it (`cluster.rs` opens and closes them as assignments change).

use std::collections::BTreeMap;

use uuid::Uuid;
use weir_common::StreamId;
use weir_controller::{ControllerError, Topic};
use weir_storage::{Storage, StorageError, Stream};

use crate::config::ServeConfig;
use crate::metadata::Metadata;

tokio::task_local! {
    /// The advertised `(host, port)` of the listener the request being served came in through
    /// (set by the connection). In `weir serve` this node's address in answers is that one.
    pub static ADVERTISED: (String, i32);
}

/// This node's advertised address for the request being served.
fn advertised_here(config: &ServeConfig) -> (String, i32) {
    ADVERTISED
        .try_with(Clone::clone)
        .unwrap_or_else(|_| config.advertised())
}

/// One broker node.
#[derive(Debug)]
pub struct Node {
    /// Settings.
    pub config: ServeConfig,
    /// The metadata: the controller in process, or a replica of the cluster's.
    pub controller: Metadata,
    /// The partitions' storage.
    pub storage: Storage,
    /// Serialises stream opening and topic creation, so a partition is opened once.
    open_lock: tokio::sync::Mutex<()>,
    /// The cluster id reported to clients.
    pub cluster_id: String,
    /// Consumer groups and committed offsets.
    pub groups: crate::group::Coordinator,
    /// Idempotent producers: ids and per-partition sequence state.
    pub producers: crate::producers::Producers,
    /// Transactions this node coordinates.
    pub transactions: crate::txn::Coordinator,
    /// Who may do what (`authorizer`, `super_users`).
    pub authorizer: crate::security::acl::Authorizer,
    /// The password of this process's own clients (the embedded dispatcher) on its internal
    /// listener: random, never stored, never sent off this host.
    pub internal_secret: String,
    /// The bearer token of the admin API's security endpoints (`data_dir/admin.token`).
    pub admin_token: String,
    /// This node, for the tasks it starts (set once it is shared).
    me: std::sync::OnceLock<std::sync::Weak<Node>>,
    /// Bytes produced and fetched per partition since the last load report (for the balancer).
    traffic: std::sync::Mutex<(std::time::Instant, std::collections::HashMap<StreamId, u64>)>,
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
        controller: Metadata,
        storage: Storage,
        cluster_id: String,
    ) -> Self {
        let ms = std::time::Duration::from_millis;
        let settings = crate::group::actor::Settings {
            initial_delay: ms(config.group_initial_rebalance_delay_ms),
            consumer_session_timeout: ms(config.group_consumer_session_timeout_ms),
            consumer_heartbeat_interval: ms(config.group_consumer_heartbeat_interval_ms),
        };
        let mut super_users: std::collections::HashSet<String> =
            config.super_users.iter().cloned().collect();
        super_users.insert(crate::security::INTERNAL_PRINCIPAL.to_string());
        let authorizer = crate::security::acl::Authorizer {
            enabled: config.authorizer == crate::config::AuthorizerKind::Acl,
            super_users,
            allow_if_no_acl: config.allow_everyone_if_no_acl_found,
        };
        let mut secret = [0u8; 32];
        rand::fill(&mut secret[..]);
        let internal_secret = secret.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            authorizer,
            internal_secret,
            admin_token: String::new(),
            config,
            controller,
            storage,
            open_lock: tokio::sync::Mutex::new(()),
            cluster_id,
            groups: crate::group::Coordinator::new(settings),
            producers: crate::producers::Producers::default(),
            transactions: crate::txn::Coordinator::default(),
            me: std::sync::OnceLock::new(),
            traffic: std::sync::Mutex::new((std::time::Instant::now(), Default::default())),
        }
    }

    /// The node with its admin token (see [`crate::security::http::admin_token`]).
    pub fn with_admin_token(mut self, token: String) -> Self {
        self.admin_token = token;
        self
    }

    /// Shares the node: wraps it in an `Arc` that [`Node::me`] returns.
    pub fn shared(self) -> std::sync::Arc<Node> {
        let node = std::sync::Arc::new(self);
        let _ = node.me.set(std::sync::Arc::downgrade(&node));
        node
    }

    /// The shared node (see [`Node::shared`]), while it lives.
    pub fn me(&self) -> Option<std::sync::Arc<Node>> {
        self.me.get().and_then(std::sync::Weak::upgrade)
    }

    /// Counts bytes produced to or fetched from a partition.
    pub fn count_traffic(&self, stream: StreamId, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut traffic = self
            .traffic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *traffic.1.entry(stream).or_default() += bytes as u64;
    }

    /// Bytes per second through each partition open here since the last report (every open
    /// partition is listed, idle ones with 0).
    pub fn load_report(&self) -> Vec<(StreamId, u64)> {
        let (elapsed, counted) = {
            let mut traffic = self
                .traffic
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let elapsed = traffic.0.elapsed().as_secs_f64().max(0.001);
            traffic.0 = std::time::Instant::now();
            (elapsed, std::mem::take(&mut traffic.1))
        };
        self.storage
            .open_streams()
            .into_iter()
            .map(|s| {
                let bytes = counted.get(&s).copied().unwrap_or(0);
                (s, (bytes as f64 / elapsed) as u64)
            })
            .collect()
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

    /// The brokers clients may connect to, `(node id, host, port)`: this one alone in `weir serve`,
    /// the live registered brokers in a cluster.
    pub fn brokers(&self) -> Vec<(i32, String, i32)> {
        if !self.controller.is_cluster() {
            let (host, port) = advertised_here(&self.config);
            return vec![(self.config.node_id, host, port)];
        }
        self.controller.read(|s| {
            s.brokers
                .values()
                .filter(|b| !b.fenced)
                .filter_map(|b| {
                    Some((
                        i32::try_from(b.node_id).ok()?,
                        b.host.clone(),
                        i32::try_from(b.port).ok()?,
                    ))
                })
                .collect()
        })
    }

    /// The broker `(host, port)` of a node id, if it is registered (fenced or not).
    pub fn broker_address(&self, node_id: i32) -> Option<(String, i32)> {
        if !self.controller.is_cluster() {
            return (node_id == self.config.node_id).then(|| advertised_here(&self.config));
        }
        let id = u32::try_from(node_id).ok()?;
        self.controller.read(|s| {
            let b = s.brokers.get(&id)?;
            Some((b.host.clone(), i32::try_from(b.port).ok()?))
        })
    }

    /// The active controller's node id (this node in `weir serve`; -1 if none is known).
    pub fn controller_id(&self) -> i32 {
        if !self.controller.is_cluster() {
            return self.config.node_id;
        }
        self.controller
            .read(|s| s.controller.as_ref().map(|a| a.node_id))
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(-1)
    }

    /// The node coordinating a group: the leader of its `__consumer_offsets` partition.
    pub fn coordinator_of(&self, group: &str) -> Option<i32> {
        let topic = self.topic(crate::group::OFFSETS_TOPIC)?;
        let index = crate::group::partition_for(group, topic.partitions.len());
        let stream = *topic.partitions.get(usize::try_from(index).ok()?)?;
        self.leader_of(stream)
    }

    /// The node coordinating a transactional id: the leader of its `__transaction_state` partition.
    pub fn transaction_coordinator_of(&self, id: &str) -> Option<i32> {
        let topic = self.topic(crate::txn::TXN_TOPIC)?;
        let index = crate::group::partition_for(id, topic.partitions.len());
        let stream = *topic.partitions.get(usize::try_from(index).ok()?)?;
        self.leader_of(stream)
    }

    /// The Kafka error for a partition that is not open here: NOT_LEADER_OR_FOLLOWER if the topic has
    /// it (another broker leads it, or it is moving), else UNKNOWN_TOPIC_OR_PARTITION.
    pub fn not_here(&self, topic: &Topic, index: i32) -> i16 {
        use kafka_protocol::error::ResponseError;
        let exists = usize::try_from(index).is_ok_and(|i| i < topic.partitions.len());
        if exists {
            ResponseError::NotLeaderOrFollower.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        }
    }

    /// The node id that leads a partition's stream (the move target during a move), if any.
    pub fn leader_of(&self, stream: StreamId) -> Option<i32> {
        if !self.controller.is_cluster() {
            return Some(self.config.node_id);
        }
        self.controller
            .read(|s| s.streams.get(&stream).map(weir_controller::Stream::leader))
            .filter(|n| *n != 0)
            .and_then(|n| i32::try_from(n).ok())
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
        // In a cluster each partition's owner opens it (`cluster.rs`).
        let here = if self.controller.is_cluster() {
            &[][..]
        } else {
            &topic.partitions[..]
        };
        for stream in here {
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
        let here = if self.controller.is_cluster() {
            &[][..]
        } else {
            &topic.partitions[before..]
        };
        for stream in here {
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
        for stream in topic
            .partitions
            .iter()
            .filter(|s| self.storage.stream(**s).is_some())
        {
            if let Err(e) = self.storage.close_stream(*stream).await {
                tracing::warn!(topic = name, stream = %stream, error = %e, "closing a deleted partition");
            }
        }
        let topic = self.controller.delete_topic(name).await?;
        tracing::info!(topic = name, "topic deleted");
        Ok(topic)
    }
}
