//! A broker's view of the controller in a cluster: a replica of the metadata state, kept current by
//! the active controller's Watch stream (or, when no controller answers, by reading the log from the
//! bucket), and gRPC calls for every change.
//!
//! Reads ([`RemoteController::read`], `describe_stream`, `find_objects`) are served by the replica,
//! never over the network. A change returns the log sequence that holds it and the call returns
//! only once the replica has applied it, so a broker always reads its own writes. Calls that fail
//! because the controller moved or is down are retried against the controller the log names, for up
//! to `call_timeout`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use object_store::ObjectStore;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use weir_common::{Epoch, ObjectId, Offset, StreamId};
use weir_storage::{MetadataError, NewObject, ObjectSlice, StreamDescriptor, StreamMetadata};

use crate::log::MetaLog;
use crate::rpc::pb::controller_client::ControllerClient;
use crate::rpc::{controller_error, is_retriable, metadata_error, object_to_pb, pb};
use crate::state::{State, Topic};
use crate::{ControllerError, Registration};

type Client = ControllerClient<Channel>;

/// What a broker reports in each heartbeat: bytes per second through each partition it serves.
pub type LoadReport = Arc<dyn Fn() -> Vec<(StreamId, u64)> + Send + Sync>;

/// See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct RemoteController {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    state: RwLock<State>,
    next_seq: tokio::sync::watch::Sender<u64>,
    client: tokio::sync::Mutex<Option<(String, Client)>>,
    /// When the active controller was last heard from (a log entry or a keep-alive).
    last_contact: Mutex<Option<Instant>>,
    /// This broker's registration and epoch, once registered.
    registered: Mutex<Option<(Registration, u64)>>,
    /// Set once the controller no longer counts this registration in: see
    /// [`RemoteController::keep_registered`].
    fenced: tokio::sync::watch::Sender<bool>,
    call_timeout: Duration,
}

impl RemoteController {
    /// Loads the metadata from the bucket; [`follow`](Self::follow) keeps it current.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        call_timeout: Duration,
    ) -> Result<RemoteController, ControllerError> {
        // Opened only to read: this replica never appends.
        let (log, state) = MetaLog::open(store.clone(), u64::MAX).await?;
        let (next_seq, _) = tokio::sync::watch::channel(log.next_seq());
        Ok(RemoteController {
            inner: Arc::new(Inner {
                store,
                state: RwLock::new(state),
                next_seq,
                client: tokio::sync::Mutex::new(None),
                last_contact: Mutex::new(None),
                registered: Mutex::new(None),
                fenced: tokio::sync::watch::channel(false).0,
                call_timeout,
            }),
        })
    }

    /// Runs `f` on the replica.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// The replica holds every log object below this sequence.
    pub fn next_seq(&self) -> u64 {
        *self.inner.next_seq.borrow()
    }

    /// Wakes whenever the replica applies a log object.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.next_seq.subscribe()
    }

    /// How long since the active controller was last heard from (`None`: never).
    pub fn controller_silence(&self) -> Option<Duration> {
        self.inner
            .last_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|t| t.elapsed())
    }

    /// This broker's epoch, once registered.
    pub fn broker_epoch(&self) -> Option<u64> {
        self.inner
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, e)| *e)
    }

    /// Applies log object `seq` if it is the next one; `false` if it is not (a gap).
    fn apply(&self, seq: u64, bytes: &[u8]) -> Result<bool, ControllerError> {
        let next = self.next_seq();
        if seq < next {
            return Ok(true); // had it already
        }
        if seq > next {
            return Ok(false);
        }
        let records = crate::log::decode(bytes, &crate::log::log_key(seq))?;
        {
            let mut state = self
                .inner
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for r in &records {
                state.apply(r);
            }
        }
        self.inner.next_seq.send_replace(seq + 1);
        Ok(true)
    }

    /// Reads log objects from the bucket until the next one does not exist yet.
    pub async fn catch_up(&self) -> Result<(), ControllerError> {
        loop {
            let seq = self.next_seq();
            match crate::log::read_log_object(&self.inner.store, seq).await? {
                Some(bytes) => {
                    self.apply(seq, &bytes)?;
                }
                None => return Ok(()),
            }
        }
    }

    fn heard_from_controller(&self) {
        *self
            .inner
            .last_contact
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// A client of the controller the replica names.
    async fn client(&self) -> Result<Client, ControllerError> {
        let rpc = self
            .read(|s| s.controller.as_ref().map(|a| a.rpc.clone()))
            .ok_or(ControllerError::NotController(None))?;
        let mut cached = self.inner.client.lock().await;
        if let Some((endpoint, client)) = cached.as_ref()
            && *endpoint == rpc
        {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(rpc.clone())
            .map_err(|e| ControllerError::Unavailable(format!("controller endpoint {rpc}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        // Lazy: connects on first use, reconnects after failures.
        let client = ControllerClient::new(endpoint.connect_lazy());
        *cached = Some((rpc, client.clone()));
        Ok(client)
    }

    /// Calls the active controller, retrying (after rereading the log, which names the current
    /// controller) while it fails for want of a controller, for up to `call_timeout`.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.inner.call_timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let result = match self.client().await {
                Ok(client) => f(client).await,
                Err(e) => Err(crate::rpc::controller_status(&e)),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(s) if is_retriable(&s) && Instant::now() < deadline => {
                    tracing::debug!(status = %s, "controller call failed; retrying");
                    if let Err(e) = self.catch_up().await {
                        tracing::debug!(error = %e, "rereading the metadata log failed");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(s) => return Err(s),
            }
        }
    }

    /// Waits until the replica has applied everything below `seq`.
    async fn caught_up_to(&self, seq: u64) -> Result<(), ControllerError> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + self.inner.call_timeout;
        loop {
            if self.next_seq() >= seq {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    // The watch may be down: read the log directly before giving up.
                    self.catch_up().await?;
                    if self.next_seq() >= seq {
                        return Ok(());
                    }
                    return Err(ControllerError::Unavailable(format!(
                        "metadata replica did not reach log sequence {seq}"
                    )));
                }
            }
        }
    }

    /// Follows the active controller's Watch stream, falling back to the bucket, until `stop`.
    pub async fn follow(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let pause = Duration::from_millis(200);
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.follow_once(&mut stop).await {
                tracing::debug!(error = %e, "metadata watch interrupted");
            }
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "reading the metadata log failed");
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn follow_once(
        &self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ControllerError> {
        let mut client = self.client().await?;
        let from_seq = self.next_seq();
        let mut entries = client
            .watch(pb::WatchRequest { from_seq })
            .await
            .map_err(|s| controller_error(&s))?
            .into_inner();
        loop {
            let next = tokio::select! {
                _ = stop.changed() => return Ok(()),
                next = tokio::time::timeout(Duration::from_secs(5), entries.message()) => next,
            };
            match next {
                Ok(Ok(Some(entry))) => {
                    self.heard_from_controller();
                    if !entry.batch.is_empty() && !self.apply(entry.seq, &entry.batch)? {
                        // A gap: fill it from the bucket, then carry on.
                        self.catch_up().await?;
                        self.apply(entry.seq, &entry.batch)?;
                    }
                }
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(s)) => return Err(controller_error(&s)),
                Err(_) => {
                    return Err(ControllerError::Unavailable(
                        "no word from the controller for 5 s".into(),
                    ));
                }
            }
        }
    }

    /// Registers this broker with the controller, then heartbeats every `interval` until `stop`, or
    /// until the controller no longer counts this registration in: the broker was fenced (silent
    /// for longer than the session timeout: a long pause, a partition from the controller) or
    /// another process registered its node id. Its partitions are then given to other brokers
    /// once its WAL is recovered, which fences that WAL for good, so this incarnation could never
    /// acknowledge a write again: it does not register again but reports it ([`Self::fenced`]),
    /// and the process stops; restarted, it opens its WAL anew and rejoins (the controller lets it
    /// register once the recovery is done).
    pub async fn keep_registered(
        self,
        registration: Registration,
        interval: Duration,
        load: LoadReport,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let epoch = self.broker_epoch();
            let result = match epoch {
                None => self.register(registration.clone()).await.map(|_| ()),
                Some(epoch) => self.heartbeat(registration.node_id, epoch, load()).await,
            };
            match result {
                Ok(()) => self.heard_from_controller(),
                Err(ControllerError::UnknownBroker(_)) if epoch.is_some() => {
                    tracing::error!(
                        node = registration.node_id,
                        "fenced: the controller no longer counts this broker in (silent for longer \
                         than the session timeout, or its node id registered again); its \
                         partitions and WAL are taken over by other brokers"
                    );
                    self.inner.fenced.send_replace(true);
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Resolves once this broker is fenced ([`Self::keep_registered`]).
    pub async fn fenced(&self) {
        let mut fenced = self.inner.fenced.subscribe();
        let _ = fenced.wait_for(|f| *f).await;
    }

    /// Registers this broker; returns its epoch.
    pub async fn register(&self, r: Registration) -> Result<u64, ControllerError> {
        let request = pb::RegisterRequest {
            node_id: r.node_id,
            host: r.host.clone(),
            port: r.port,
            rpc: r.rpc.clone(),
            admin: r.admin.clone(),
            controller: r.controller,
            wal: r.wal.clone(),
        };
        let reply = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.register(request).await }
            })
            .await
            .map_err(|s| controller_error(&s))?
            .into_inner();
        self.caught_up_to(reply.seq).await?;
        *self
            .inner
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((r, reply.epoch));
        Ok(reply.epoch)
    }

    async fn heartbeat(
        &self,
        node_id: u32,
        epoch: u64,
        loads: Vec<(StreamId, u64)>,
    ) -> Result<(), ControllerError> {
        // One attempt: the next heartbeat is the retry.
        let mut client = self.client().await?;
        let loads = loads
            .into_iter()
            .map(|(stream, bytes_per_s)| pb::PartitionLoad {
                stream: stream.get(),
                bytes_per_s,
            })
            .collect();
        client
            .heartbeat(pb::HeartbeatRequest {
                node_id,
                epoch,
                loads,
            })
            .await
            .map_err(|s| controller_error(&s))?;
        Ok(())
    }

    async fn change<F, Fut>(&self, f: F) -> Result<(), ControllerError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<u64, Status>>,
    {
        let seq = self.call(f).await.map_err(|s| controller_error(&s))?;
        self.caught_up_to(seq).await
    }

    fn topic(&self, name: &str) -> Result<Topic, ControllerError> {
        self.read(|s| s.topics.get(name).cloned())
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))
    }

    /// Creates a topic (see [`crate::Controller::create_topic`]).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<Topic, ControllerError> {
        let request = pb::CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            configs: configs.into_iter().collect(),
        };
        self.change(|mut c| {
            let request = request.clone();
            async move { Ok(c.create_topic(request).await?.into_inner().seq) }
        })
        .await?;
        self.topic(name)
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<Topic, ControllerError> {
        let topic = self.topic(name)?;
        let request = pb::TopicName {
            name: name.to_owned(),
        };
        self.change(|mut c| {
            let request = request.clone();
            async move { Ok(c.delete_topic(request).await?.into_inner().seq) }
        })
        .await?;
        Ok(topic)
    }

    /// Replaces a topic's explicit configs.
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<Topic, ControllerError> {
        let request = pb::SetTopicConfigsRequest {
            name: name.to_owned(),
            configs: configs.into_iter().collect(),
        };
        self.change(|mut c| {
            let request = request.clone();
            async move { Ok(c.set_topic_configs(request).await?.into_inner().seq) }
        })
        .await?;
        self.topic(name)
    }

    /// Grows a topic to `total` partitions.
    pub async fn add_partitions(&self, name: &str, total: u32) -> Result<Topic, ControllerError> {
        let request = pb::AddPartitionsRequest {
            name: name.to_owned(),
            total,
        };
        self.change(|mut c| {
            let request = request.clone();
            async move { Ok(c.add_partitions(request).await?.into_inner().seq) }
        })
        .await?;
        self.topic(name)
    }

    /// Starts moving a stream to `broker`.
    pub async fn reassign(&self, stream: StreamId, broker: u32) -> Result<(), ControllerError> {
        let request = pb::ReassignRequest {
            stream: stream.get(),
            broker,
        };
        self.change(|mut c| async move { Ok(c.reassign(request).await?.into_inner().seq) })
            .await
    }

    /// A block of `count` Kafka producer ids: the first.
    pub async fn allocate_producer_ids(&self, count: u32) -> Result<u64, ControllerError> {
        let reply = self
            .call(
                |mut c| async move { c.allocate_producer_ids(pb::AllocateRequest { count }).await },
            )
            .await
            .map_err(|s| controller_error(&s))?;
        Ok(reply.into_inner().first)
    }

    /// Moves every stream off `broker`.
    pub async fn drain(&self, broker: u32) -> Result<(), ControllerError> {
        let request = pb::DrainRequest { broker };
        self.change(|mut c| async move { Ok(c.drain(request).await?.into_inner().seq) })
            .await
    }

    /// Changes SCRAM credentials and ACLs.
    pub async fn change_security(
        &self,
        change: crate::records::SecurityChanged,
    ) -> Result<(), ControllerError> {
        let request = pb::SecurityChange {
            record: prost::Message::encode_to_vec(&change),
        };
        self.change(|mut c| {
            let request = request.clone();
            async move { Ok(c.change_security(request).await?.into_inner().seq) }
        })
        .await
    }

    /// Reports a moving stream closed here at `epoch`.
    pub async fn move_done(&self, stream: StreamId, epoch: Epoch) -> Result<(), ControllerError> {
        let request = pb::StreamEpoch {
            stream: stream.get(),
            epoch: epoch.get(),
        };
        self.change(|mut c| async move { Ok(c.move_done(request).await?.into_inner().seq) })
            .await
    }

    async fn meta_change<F, Fut>(&self, f: F) -> Result<(), MetadataError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<u64, Status>>,
    {
        let seq = self.call(f).await.map_err(|s| metadata_error(&s))?;
        self.caught_up_to(seq)
            .await
            .map_err(|e| MetadataError::Unavailable(e.to_string()))
    }

    fn descriptor(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError> {
        self.read(|s| s.describe(stream))
            .ok_or(MetadataError::UnknownStream(stream))
    }
}

#[async_trait]
impl StreamMetadata for RemoteController {
    async fn create_stream(&self) -> Result<StreamId, MetadataError> {
        let reply = self
            .call(|mut c| async move { c.create_stream(pb::Empty {}).await })
            .await
            .map_err(|s| metadata_error(&s))?
            .into_inner();
        self.caught_up_to(reply.seq)
            .await
            .map_err(|e| MetadataError::Unavailable(e.to_string()))?;
        Ok(StreamId(reply.stream))
    }

    async fn open_stream(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError> {
        let request = pb::StreamRef {
            stream: stream.get(),
        };
        self.meta_change(|mut c| async move { Ok(c.open_stream(request).await?.into_inner().seq) })
            .await?;
        self.descriptor(stream)
    }

    async fn close_stream(&self, stream: StreamId, epoch: Epoch) -> Result<(), MetadataError> {
        // Checked against the replica: closing writes nothing.
        weir_storage::check_close(&self.descriptor(stream)?, epoch)
    }

    async fn trim_stream(
        &self,
        stream: StreamId,
        epoch: Epoch,
        start: Offset,
    ) -> Result<(), MetadataError> {
        let request = pb::TrimRequest {
            stream: stream.get(),
            epoch: epoch.get(),
            start: start.get(),
        };
        self.meta_change(|mut c| async move { Ok(c.trim_stream(request).await?.into_inner().seq) })
            .await
    }

    async fn describe_stream(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError> {
        self.descriptor(stream)
    }

    async fn allocate_object_ids(&self, count: u32) -> Result<ObjectId, MetadataError> {
        let reply = self
            .call(|mut c| async move { c.allocate_object_ids(pb::AllocateRequest { count }).await })
            .await
            .map_err(|s| metadata_error(&s))?;
        Ok(ObjectId(reply.into_inner().first))
    }

    async fn commit_objects(&self, objects: Vec<NewObject>) -> Result<(), MetadataError> {
        let request = pb::CommitRequest {
            objects: objects.iter().map(object_to_pb).collect(),
        };
        self.meta_change(|mut c| {
            let request = request.clone();
            async move { Ok(c.commit_objects(request).await?.into_inner().seq) }
        })
        .await
    }

    async fn replace_objects(
        &self,
        removed: Vec<ObjectId>,
        added: Vec<NewObject>,
    ) -> Result<(), MetadataError> {
        let request = pb::ReplaceRequest {
            removed: removed.iter().map(|id| id.get()).collect(),
            added: added.iter().map(object_to_pb).collect(),
        };
        self.meta_change(|mut c| {
            let request = request.clone();
            async move { Ok(c.replace_objects(request).await?.into_inner().seq) }
        })
        .await
    }

    async fn find_objects(
        &self,
        stream: StreamId,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<ObjectSlice>, MetadataError> {
        self.read(|s| s.find_slices(stream, from, limit))
    }

    async fn object_streams(
        &self,
        objects: &[ObjectId],
    ) -> Result<BTreeMap<ObjectId, std::collections::BTreeSet<StreamId>>, MetadataError> {
        Ok(self.read(|s| s.object_streams(objects)))
    }
}
