//! The controller role of a broker (DESIGN.md 6): the gRPC service, the election, and the active
//! controller's duties (fencing silent brokers, recovering their WALs, placing partitions).
//!
//! Every broker with the role serves the gRPC service; only the active one answers (the others say
//! NOT_CONTROLLER, and callers look the active one up in their metadata replica). A broker becomes
//! active by appending its `ControllerElected` record at the next log sequence: the bucket's
//! create-only PUT makes exactly one candidate win. It tries when the metadata names no controller,
//! or when it has not heard from the named one for the session timeout. An active controller checks
//! once a second that nobody appended after it (one HEAD request); when someone did, it rereads the
//! log and steps down if another broker was elected. A deposed controller can commit nothing: its
//! next append finds the sequence taken.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::Stream;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use tonic::{Request, Response, Status};
use weir_common::{Epoch, ObjectId, Offset, StreamId};
use weir_storage::StreamMetadata;

use crate::rpc::{controller_status, metadata_status, object_from_pb, pb};
use crate::{Controller, ControllerConfig, ControllerError, Registration};

/// Recovers a fenced broker's WAL into objects (node id, its WAL as registered); supplied by the
/// broker process, which has the storage machinery.
pub type RecoverWal =
    Arc<dyn Fn(u32, String) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Settings of the controller role.
#[derive(Clone)]
pub struct RoleConfig {
    /// This broker's node id.
    pub node_id: u32,
    /// Its gRPC endpoint as others reach it (`http://host:port`).
    pub rpc: String,
    /// A broker silent this long is fenced (and a controller silent this long is replaced).
    pub session_timeout: Duration,
    /// Settings of the controller when active.
    pub controller: ControllerConfig,
    /// How fenced brokers' WALs are recovered.
    pub recover: RecoverWal,
    /// How often the active controller collects garbage objects (`controller/src/gc.rs`).
    pub gc_interval: Duration,
    /// How long an object stays after nothing references it (reads under way finish).
    pub gc_grace_ms: u64,
    /// How often the balancer looks at the brokers' load (`None`: never).
    pub balance_interval: Option<Duration>,
}

impl std::fmt::Debug for RoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleConfig")
            .field("node_id", &self.node_id)
            .field("rpc", &self.rpc)
            .field("session_timeout", &self.session_timeout)
            .finish_non_exhaustive()
    }
}

/// A broker's controller role. See the [module documentation](self).
#[derive(Debug)]
pub struct Role {
    config: RoleConfig,
    store: Arc<dyn ObjectStore>,
    active: RwLock<Option<Arc<Controller>>>,
    /// When each broker was last heard from (only meaningful while active).
    heartbeats: Mutex<HashMap<u32, Instant>>,
    /// When garbage was last collected.
    last_gc: Mutex<Option<Instant>>,
    /// Fenced brokers whose WAL could not be recovered: they may register again (their restart
    /// recovers their own WAL), where the others wait for the recovery.
    unrecovered: Mutex<std::collections::HashSet<u32>>,
    /// Each stream's bytes per second, averaged over reports (the balancer's weights).
    loads: Mutex<crate::cluster::Loads>,
    /// When the balancer last looked.
    last_balance: Mutex<Option<Instant>>,
}

impl Role {
    /// A standby controller role over the metadata in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, config: RoleConfig) -> Arc<Role> {
        // Loads averaged over two balancer rounds: steady enough not to chase noise, recent
        // enough to follow a shift in traffic within a few rounds.
        let horizon = config.balance_interval.unwrap_or_default() * 2;
        Arc::new(Role {
            config,
            store,
            active: RwLock::new(None),
            heartbeats: Mutex::new(HashMap::new()),
            last_gc: Mutex::new(None),
            unrecovered: Mutex::new(std::collections::HashSet::new()),
            loads: Mutex::new(crate::cluster::Loads::new(horizon)),
            last_balance: Mutex::new(None),
        })
    }

    /// The active controller, if this broker is it.
    pub fn active(&self) -> Option<Arc<Controller>> {
        self.active
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn is_active(&self, c: &Arc<Controller>) -> bool {
        self.active().is_some_and(|a| Arc::ptr_eq(&a, c))
    }

    /// Stops being the active controller (when this broker stops): watchers are told to go to
    /// another, which is elected once this one has been silent for the session timeout.
    pub fn resign(&self) {
        self.step_down("this broker is stopping");
    }

    fn step_down(&self, why: &str) {
        let was = self
            .active
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if was.is_some() {
            tracing::warn!(
                node = self.config.node_id,
                why,
                "no longer the active controller"
            );
        }
    }

    /// The gRPC service to serve.
    pub fn service(self: &Arc<Self>) -> pb::controller_server::ControllerServer<Service> {
        pb::controller_server::ControllerServer::new(Service { role: self.clone() })
    }

    /// Tries to become the active controller in place of the one elected at term `replacing`
    /// (`None`: no controller was known); `Ok(true)` if this broker won the election. Gives up if
    /// the log shows another election since: that controller is new, not silent.
    pub async fn try_elect(&self, replacing: Option<u64>) -> Result<bool, ControllerError> {
        if self.active().is_some() {
            return Ok(true);
        }
        let controller =
            Controller::open(self.store.clone(), self.config.controller.clone()).await?;
        let current = controller.read(|s| s.controller.as_ref().map(|a| (a.node_id, a.term)));
        if let Some((node, term)) = current
            && node != self.config.node_id
            && Some(term) != replacing
        {
            return Ok(false);
        }
        match controller
            .elect(self.config.node_id, &self.config.rpc)
            .await
        {
            Ok(term) => {
                let now = Instant::now();
                let live = controller.read(|s| s.live_brokers());
                *self
                    .heartbeats
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    live.into_iter().map(|b| (b, now)).collect();
                *self.active.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::new(controller));
                tracing::info!(
                    node = self.config.node_id,
                    term,
                    "elected active controller"
                );
                Ok(true)
            }
            Err(ControllerError::LostLeadership { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The active controller's duties, every `tick`: step down if another broker was elected, fence
    /// brokers silent for the session timeout and recover their WALs, give streams without a live
    /// owner one. Returns when `stop` is set.
    pub async fn supervise(
        self: Arc<Self>,
        tick: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let asleep = Instant::now();
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(tick) => {}
            }
            // A controller that stalled (paused, starved of CPU) was not listening: the silence
            // it would measure is its own, so every broker's session starts over instead of every
            // broker being fenced.
            if asleep.elapsed() > tick + self.config.session_timeout / 2 {
                tracing::warn!("the controller stalled: every broker's session starts over");
                self.heartbeats
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            }
            let Some(c) = self.active() else { continue };
            if let Err(e) = self.duties(&c).await {
                tracing::warn!(error = %e, "controller duties failed; retrying");
            }
        }
    }

    async fn duties(&self, c: &Arc<Controller>) -> Result<(), ControllerError> {
        c.refresh_if_superseded().await?;
        let me = self.config.node_id;
        if c.read(|s| s.controller.as_ref().map(|a| a.node_id)) != Some(me) {
            self.step_down("another broker was elected");
            return Ok(());
        }
        // Fence the silent.
        let live: Vec<(u32, u64)> = c.read(|s| {
            s.brokers
                .values()
                .filter(|b| !b.fenced)
                .map(|b| (b.node_id, b.epoch))
                .collect()
        });
        let silent: Vec<(u32, u64)> = {
            let now = Instant::now();
            let mut beats = self
                .heartbeats
                .lock()
                .unwrap_or_else(PoisonError::into_inner);

            live.iter()
                .copied()
                .filter(|(node, _)| {
                    let last = *beats.entry(*node).or_insert(now);
                    now.duration_since(last) > self.config.session_timeout
                })
                .collect()
        };
        for (node, epoch) in silent {
            tracing::warn!(node, epoch, "broker missed its heartbeats: fencing it");
            c.fence_broker(node, epoch).await?;
        }
        // Recover the WALs of fenced brokers that still own streams, then place their streams.
        let orphaned: Vec<(u32, String)> = c.read(|s| {
            s.brokers
                .values()
                .filter(|b| b.fenced && s.streams.values().any(|st| st.owner == b.node_id))
                .map(|b| (b.node_id, b.wal.clone()))
                .collect()
        });
        for (node, wal) in orphaned {
            tracing::info!(node, wal, "recovering a fenced broker's WAL");
            let recovered = (self.config.recover)(node, wal.clone()).await;
            {
                let mut unrecovered = self
                    .unrecovered
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if recovered.is_ok() {
                    unrecovered.remove(&node);
                } else {
                    unrecovered.insert(node);
                }
            }
            match recovered {
                Ok(()) => {
                    let moved = c.reassign_from_fenced(node).await?;
                    tracing::info!(node, moved, "fenced broker's partitions reassigned");
                }
                Err(e) => {
                    tracing::error!(node, wal, error = %e,
                        "cannot recover a fenced broker's WAL; its partitions stay unavailable");
                }
            }
        }
        c.assign_unowned().await?;
        self.balance(c).await?;
        let gc_due = {
            let mut last = self.last_gc.lock().unwrap_or_else(PoisonError::into_inner);
            let due = last.is_none_or(|t| t.elapsed() >= self.config.gc_interval);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if gc_due {
            let report = c.collect_garbage(self.config.gc_grace_ms).await?;
            if report.deleted_dropped + report.deleted_unnamed > 0 {
                tracing::info!(?report, "objects deleted");
            }
        }
        Ok(())
    }

    /// Moves partitions from the most to the least loaded brokers while the most loaded is more
    /// than 10% above the average (load: bytes per second in and out, plus a floor per partition so
    /// idle partitions spread too). A few moves per look, and none while moves are under way.
    async fn balance(&self, c: &Arc<Controller>) -> Result<(), ControllerError> {
        let Some(interval) = self.config.balance_interval else {
            return Ok(());
        };
        {
            let mut last = self
                .last_balance
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < interval) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let loads = self
            .loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot();
        // Only brokers heard from within half the session timeout take part.
        let healthy: HashMap<u32, Instant> = self
            .heartbeats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let recent = self.config.session_timeout / 2;
        let moves = c.read(|s| {
            crate::cluster::plan_balance(s, &loads, |b| {
                healthy.get(&b).is_some_and(|t| t.elapsed() <= recent)
            })
        });
        for (stream, target) in moves {
            tracing::info!(%stream, target, "balancing: moving a partition");
            c.reassign(stream, target).await?;
        }
        Ok(())
    }

    fn heard_from(&self, node: u32) {
        self.heartbeats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, Instant::now());
    }
}

/// The gRPC service of a [`Role`].
#[derive(Debug, Clone)]
pub struct Service {
    role: Arc<Role>,
}

impl Service {
    fn controller(&self) -> Result<Arc<Controller>, Status> {
        self.role
            .active()
            .ok_or_else(|| controller_status(&ControllerError::NotController(None)))
    }
}

fn cerr(e: &ControllerError) -> Status {
    controller_status(e)
}

/// The stream of log entries a watcher gets.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

struct Watching {
    role: Arc<Role>,
    controller: Arc<Controller>,
    next: u64,
    changes: tokio::sync::watch::Receiver<u64>,
    done: bool,
}

#[tonic::async_trait]
impl pb::controller_server::Controller for Service {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        let node = r.node_id;
        // A fenced incarnation's WAL is recovered before its node id may register again: the
        // recovery fences every writer of that WAL, the new incarnation's too. Unless it cannot
        // be recovered from here: the restart recovers it.
        let recovering = c.read(|s| {
            s.brokers.get(&node).is_some_and(|b| b.fenced)
                && s.streams.values().any(|st| st.owner == node)
        });
        let unrecovered = self
            .role
            .unrecovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&node);
        if recovering && !unrecovered {
            return Err(cerr(&ControllerError::Unavailable(format!(
                "broker {node}'s previous incarnation is being recovered; register again shortly"
            ))));
        }
        let epoch = c
            .register_broker(Registration {
                node_id: r.node_id,
                host: r.host,
                port: r.port,
                rpc: r.rpc,
                admin: r.admin,
                controller: r.controller,
                wal: r.wal,
            })
            .await
            .map_err(|e| cerr(&e))?;
        self.role.heard_from(node);
        tracing::info!(node, epoch, "broker registered");
        Ok(Response::new(pb::RegisterReply {
            epoch,
            seq: c.next_seq(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        let known = c.read(|s| {
            s.brokers
                .get(&r.node_id)
                .is_some_and(|b| b.epoch == r.epoch && !b.fenced)
        });
        if !known {
            return Err(cerr(&ControllerError::UnknownBroker(r.node_id)));
        }
        self.role.heard_from(r.node_id);
        {
            let mut loads = self
                .role
                .loads
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            for l in &r.loads {
                loads.record(StreamId(l.stream), l.bytes_per_s, now);
            }
        }
        let (controller, term) = c.read(|s| {
            s.controller
                .as_ref()
                .map_or((0, 0), |a| (a.node_id, a.term))
        });
        Ok(Response::new(pb::HeartbeatReply { controller, term }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let controller = self.controller()?;
        let state = Watching {
            role: self.role.clone(),
            changes: controller.subscribe(),
            controller,
            next: request.into_inner().from_seq,
            done: false,
        };
        let stream = futures::stream::unfold(state, |mut w| async move {
            if w.done {
                return None;
            }
            loop {
                if !w.role.is_active(&w.controller) {
                    w.done = true;
                    return Some((Err(cerr(&ControllerError::NotController(None))), w));
                }
                let term = w
                    .controller
                    .read(|s| s.controller.as_ref().map_or(0, |a| a.term));
                let head = *w.changes.borrow_and_update();
                if w.next < head {
                    let seq = w.next;
                    let batch = match w.controller.recent_batch(seq) {
                        Some(b) => Ok(Some(b)),
                        None => crate::log::read_log_object(&w.controller.store(), seq).await,
                    };
                    return match batch {
                        Ok(Some(batch)) => {
                            w.next += 1;
                            Some((
                                Ok(pb::LogEntry {
                                    seq,
                                    batch: batch.to_vec(),
                                    term,
                                }),
                                w,
                            ))
                        }
                        Ok(None) | Err(_) => {
                            w.done = true;
                            let e = ControllerError::Unavailable(format!(
                                "log object {seq} unreadable"
                            ));
                            Some((Err(cerr(&e)), w))
                        }
                    };
                }
                match tokio::time::timeout(Duration::from_secs(1), w.changes.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    // A keep-alive: the watcher knows the controller is there.
                    Err(_) => {
                        let next = w.next;
                        return Some((
                            Ok(pb::LogEntry {
                                seq: next,
                                batch: Vec::new(),
                                term,
                            }),
                            w,
                        ));
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicReply>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        c.create_topic(&r.name, r.partitions, r.configs.into_iter().collect())
            .await
            .map_err(|e| cerr(&e))?;
        Ok(Response::new(pb::TopicReply { seq: c.next_seq() }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::TopicName>,
    ) -> Result<Response<pb::TopicReply>, Status> {
        let c = self.controller()?;
        c.delete_topic(&request.into_inner().name)
            .await
            .map_err(|e| cerr(&e))?;
        Ok(Response::new(pb::TopicReply { seq: c.next_seq() }))
    }

    async fn set_topic_configs(
        &self,
        request: Request<pb::SetTopicConfigsRequest>,
    ) -> Result<Response<pb::TopicReply>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        c.set_topic_configs(&r.name, r.configs.into_iter().collect())
            .await
            .map_err(|e| cerr(&e))?;
        Ok(Response::new(pb::TopicReply { seq: c.next_seq() }))
    }

    async fn add_partitions(
        &self,
        request: Request<pb::AddPartitionsRequest>,
    ) -> Result<Response<pb::TopicReply>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        c.add_partitions(&r.name, r.total)
            .await
            .map_err(|e| cerr(&e))?;
        Ok(Response::new(pb::TopicReply { seq: c.next_seq() }))
    }

    async fn create_stream(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::StreamReply>, Status> {
        let c = self.controller()?;
        let id = c.create_stream().await.map_err(|e| metadata_status(&e))?;
        Ok(Response::new(pb::StreamReply {
            stream: id.get(),
            seq: c.next_seq(),
            ..pb::StreamReply::default()
        }))
    }

    async fn open_stream(
        &self,
        request: Request<pb::StreamRef>,
    ) -> Result<Response<pb::StreamReply>, Status> {
        let c = self.controller()?;
        let d = c
            .open_stream(StreamId(request.into_inner().stream))
            .await
            .map_err(|e| metadata_status(&e))?;
        Ok(Response::new(pb::StreamReply {
            stream: d.id.get(),
            epoch: d.epoch.get(),
            start_offset: d.start_offset.get(),
            end_offset: d.end_offset.get(),
            seq: c.next_seq(),
        }))
    }

    async fn close_stream(
        &self,
        request: Request<pb::StreamEpoch>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        c.close_stream(StreamId(r.stream), Epoch(r.epoch))
            .await
            .map_err(|e| metadata_status(&e))?;
        Ok(Response::new(pb::Done { seq: c.next_seq() }))
    }

    async fn trim_stream(
        &self,
        request: Request<pb::TrimRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        c.trim_stream(StreamId(r.stream), Epoch(r.epoch), Offset(r.start))
            .await
            .map_err(|e| metadata_status(&e))?;
        Ok(Response::new(pb::Done { seq: c.next_seq() }))
    }

    async fn allocate_object_ids(
        &self,
        request: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateReply>, Status> {
        let c = self.controller()?;
        let first = c
            .allocate_object_ids(request.into_inner().count)
            .await
            .map_err(|e| metadata_status(&e))?;
        Ok(Response::new(pb::AllocateReply { first: first.get() }))
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<pb::AllocateRequest>,
    ) -> Result<Response<pb::AllocateReply>, Status> {
        let c = self.controller()?;
        let first = c
            .allocate_producer_ids(request.into_inner().count)
            .await
            .map_err(|e| crate::rpc::controller_status(&e))?;
        Ok(Response::new(pb::AllocateReply { first }))
    }

    async fn commit_objects(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = self.controller()?;
        let objects = request
            .into_inner()
            .objects
            .iter()
            .map(object_from_pb)
            .collect();
        c.commit_objects(objects)
            .await
            .map_err(|e| metadata_status(&e))?;
        Ok(Response::new(pb::Done { seq: c.next_seq() }))
    }

    async fn replace_objects(
        &self,
        request: Request<pb::ReplaceRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        let removed = r.removed.into_iter().map(ObjectId).collect();
        let added = r.added.iter().map(object_from_pb).collect();
        c.replace_objects(removed, added)
            .await
            .map_err(|e| metadata_status(&e))?;
        Ok(Response::new(pb::Done { seq: c.next_seq() }))
    }

    async fn reassign(
        &self,
        request: Request<pb::ReassignRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        c.reassign(StreamId(r.stream), r.broker)
            .await
            .map_err(|e| cerr(&e))?;
        Ok(Response::new(pb::Done { seq: c.next_seq() }))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = self.controller()?;
        c.drain(request.into_inner().broker)
            .await
            .map_err(|e| cerr(&e))?;
        Ok(Response::new(pb::Done { seq: c.next_seq() }))
    }

    async fn move_done(
        &self,
        request: Request<pb::StreamEpoch>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = self.controller()?;
        let r = request.into_inner();
        c.move_done(StreamId(r.stream), Epoch(r.epoch))
            .await
            .map_err(|e| cerr(&e))?;
        Ok(Response::new(pb::Done { seq: c.next_seq() }))
    }

    async fn change_security(
        &self,
        request: Request<pb::SecurityChange>,
    ) -> Result<Response<pb::Done>, Status> {
        let c = self.controller()?;
        let change = <crate::records::SecurityChanged as prost::Message>::decode(
            &request.into_inner().record[..],
        )
        .map_err(|e| Status::invalid_argument(format!("undecodable security change: {e}")))?;
        c.change_security(change).await.map_err(|e| cerr(&e))?;
        Ok(Response::new(pb::Done { seq: c.next_seq() }))
    }
}
