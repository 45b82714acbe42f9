//! Starting and stopping a broker: storage, metadata, listeners. `weir serve` runs one node with the
//! controller in process; `weir broker` runs one broker of a cluster.
//!
//! Layout under `data_dir`: `wal/` (the file WAL) and, unless `object_store` names another store,
//! `objects/` (the local object store holding the metadata log and the data objects).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use weir_controller::{
    Controller, ControllerConfig, RecoverWal, Registration, RemoteController, Role, RoleConfig,
};
use weir_storage::{Components, Storage};
use weir_wal::{FileWal, ObjectWal, ObjectWalConfig, Wal};

use crate::config::{ServeConfig, WalKind};
use crate::connection;
use crate::metadata::Metadata;
use crate::node::Node;

/// A running broker.
#[derive(Debug)]
pub struct Server {
    node: Arc<Node>,
    kafka_addr: SocketAddr,
    kafka_addrs: Vec<SocketAddr>,
    plaintext_addr: SocketAddr,
    /// Whether in-process clients log in on an internal listener.
    internal_listener: bool,
    admin_addr: SocketAddr,
    rpc_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<JoinSet<()>>,
    admin: tokio::task::JoinHandle<()>,
    mounted: Arc<std::sync::OnceLock<Router>>,
    housekeeping: tokio::task::JoinHandle<()>,
    /// Cluster tasks: metadata, membership, controller role, partition assignments.
    cluster: Vec<tokio::task::JoinHandle<()>>,
    /// Stops the cluster tasks (after serving has stopped and storage is flushed).
    cluster_stop: Option<watch::Sender<bool>>,
}

/// The object store named by the settings, checked for create-only PUTs, metered.
async fn open_object_store(config: &ServeConfig) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let url = match &config.object_store {
        Some(url) => url.clone(),
        None => {
            let objects = std::path::absolute(config.data_dir.join("objects"))
                .context("cannot resolve the data directory")?;
            format!("file://{}", objects.display())
        }
    };
    // A local store syncs each object: the uploader trims the WAL once objects are committed,
    // so after a power loss they (and the metadata log) must be on disk, not in the page cache.
    // Credentials come from the environment, never from the URL, so it can be logged.
    let objects = weir_storage::open_store(&url)?;
    weir_storage::check_conditional_create(objects.as_ref(), &url).await?;
    tracing::info!(object_store = %url, "object store ready");
    Ok(Arc::new(weir_storage::MeteredStore::new(objects)))
}

/// The file WAL's directory: `cluster.wal_dir`, else `data_dir/wal`.
fn wal_dir(config: &ServeConfig) -> std::path::PathBuf {
    config
        .cluster
        .wal_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("wal"))
}

/// This broker's WAL and what it recovered.
async fn open_wal(
    config: &ServeConfig,
    store: &Arc<dyn ObjectStore>,
) -> anyhow::Result<(Arc<dyn Wal>, weir_wal::Recovery)> {
    Ok(match config.wal_kind {
        WalKind::File => {
            let dir = wal_dir(config);
            let (wal, recovery) = FileWal::open(&dir, config.wal.clone())
                .with_context(|| format!("cannot open the WAL in {}", dir.display()))?;
            (Arc::new(wal), recovery)
        }
        WalKind::Object => {
            let object_wal = ObjectWalConfig {
                broker_id: u32::try_from(config.node_id).context("node_id must be >= 0")?,
                ..config.object_wal.clone()
            };
            let (wal, recovery) = ObjectWal::open(store.clone(), object_wal)
                .await
                .context("cannot open the object WAL")?;
            (Arc::new(wal), recovery)
        }
    })
}

/// The name of the loopback-only PLAINTEXT listener a broker without any PLAINTEXT listener opens
/// for its in-process clients.
const LOOPBACK_LISTENER: &str = "LOOPBACK";

/// A Kafka listener, bound.
struct Bound {
    socket: TcpListener,
    listener: Arc<crate::connection::Listener>,
}

/// Binds the Kafka listeners (`[[listeners]]`, or one PLAINTEXT listener on `listen`), and fills
/// in `advertised_listener` with the first one's advertised address (the bound one by default:
/// port 0 means any free port). Returns them and the first one's bound address.
async fn bind_kafka(config: &mut ServeConfig) -> anyhow::Result<(Vec<Bound>, SocketAddr)> {
    use crate::config::{ListenerConfig, SecurityProtocol};
    let specs = if config.listeners.is_empty() {
        vec![ListenerConfig {
            name: "PLAINTEXT".to_string(),
            address: config.listen,
            advertised: config.advertised_listener.clone(),
            security_protocol: SecurityProtocol::Plaintext,
        }]
    } else {
        config.listeners.clone()
    };
    let mut specs: Vec<(ListenerConfig, bool)> = specs.into_iter().map(|l| (l, false)).collect();
    let plaintext = specs
        .iter()
        .any(|(l, _)| l.security_protocol == SecurityProtocol::Plaintext);
    if !plaintext || config.authorizer == crate::config::AuthorizerKind::Acl {
        // In-process clients (the webhook dispatcher) need a listener they can use: one of their
        // own, on loopback only, where they log in with this process's secret (a super user).
        specs.push((
            ListenerConfig {
                name: LOOPBACK_LISTENER.to_string(),
                address: SocketAddr::from(([127, 0, 0, 1], 0)),
                advertised: None,
                security_protocol: SecurityProtocol::SaslPlaintext,
            },
            true,
        ));
    }
    let acceptor = if specs.iter().any(|(l, _)| l.security_protocol.is_tls()) {
        Some(crate::tls::acceptor(&config.tls)?)
    } else {
        None
    };
    let mut bound = Vec::with_capacity(specs.len());
    for (spec, internal) in specs {
        let socket = TcpListener::bind(spec.address).await.with_context(|| {
            format!("cannot listen on {} (listener {})", spec.address, spec.name)
        })?;
        let addr = socket.local_addr()?;
        let advertised = spec
            .advertised
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
            .unwrap_or_else(|| (addr.ip().to_string(), i32::from(addr.port())));
        tracing::info!(listener = %spec.name, %addr, protocol = ?spec.security_protocol, "Kafka listener bound");
        bound.push(Bound {
            socket,
            listener: Arc::new(crate::connection::Listener {
                name: spec.name,
                advertised,
                tls: acceptor.clone().filter(|_| spec.security_protocol.is_tls()),
                sasl: spec.security_protocol.is_sasl(),
                internal,
            }),
        });
    }
    let first = bound.first().context("no Kafka listener")?;
    let kafka_addr = first.socket.local_addr()?;
    let (host, port) = &first.listener.advertised;
    config.advertised_listener = Some(format!("{host}:{port}"));
    Ok((bound, kafka_addr))
}

impl Server {
    /// Opens the data directory, recovers, and starts serving (`weir serve`: one node, the
    /// controller in process).
    pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
        config.validate()?;
        crate::metrics::install();
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let store = open_object_store(&config).await?;
        let cluster_id = cluster_id(&store).await?;
        let controller =
            Arc::new(Controller::open(store.clone(), ControllerConfig::default()).await?);
        let (wal, recovery) = open_wal(&config, &store).await?;
        let storage = Storage::open(
            Components {
                wal,
                recovery,
                store,
                metadata: controller.clone(),
            },
            config.storage.clone(),
        )
        .await?;
        let mut config = config;
        let (listener, kafka_addr) = bind_kafka(&mut config).await?;
        // The one broker: registered, owning every partition (partitions made before brokers
        // were recorded get it as owner too).
        let (host, port) = config.advertised();
        controller
            .register_broker(Registration {
                node_id: u32::try_from(config.node_id).context("node_id must be >= 1")?,
                host,
                port: u32::try_from(port).unwrap_or(0),
                rpc: String::new(),
                admin: config.admin_listen.to_string(),
                controller: true,
                wal: "file".into(),
            })
            .await?;
        controller.assign_unowned().await?;
        let node = Node::new(
            config.clone(),
            Metadata::Local(controller),
            storage,
            cluster_id,
        )
        .with_admin_token(crate::security::http::admin_token(&config.data_dir)?)
        .shared();
        node.open_all().await?;
        if node.topic(crate::group::OFFSETS_TOPIC).is_none() {
            // Compacted, as on Kafka: retention by time must never drop committed offsets.
            let configs = [("cleanup.policy".to_owned(), "compact".to_owned())].into();
            node.create_topic(
                crate::group::OFFSETS_TOPIC,
                node.config.offsets_topic_partitions,
                configs,
            )
            .await?;
        }
        let (offsets, groups) = node.groups.load(&node).await?;
        tracing::info!(offsets, groups, "committed offsets and groups loaded");
        let transactions = node.transactions.load(&node).await?;
        tracing::info!(transactions, "transaction states loaded");
        Self::serve(node, listener, kafka_addr, None, Vec::new(), None).await
    }

    /// Starts one broker of a cluster (`weir broker`): the metadata comes from the active controller
    /// (this broker may become it), partitions open here as the controller assigns them.
    pub async fn start_cluster(config: ServeConfig) -> anyhow::Result<Server> {
        config.validate()?;
        crate::metrics::install();
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let node_id = u32::try_from(config.node_id)
            .ok()
            .filter(|n| *n > 0)
            .context("node_id must be at least 1")?;
        let store = open_object_store(&config).await?;
        let cluster_id = cluster_id(&store).await?;
        let session = Duration::from_millis(config.cluster.session_timeout_ms.max(100));
        // Cluster tasks stop after serving has stopped and storage is flushed (a flush needs the
        // controller, which may be this very broker).
        let (cluster_stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();

        let remote = RemoteController::open(store.clone(), Duration::from_secs(30)).await?;
        tasks.push(tokio::spawn(remote.clone().follow(stopped.clone())));

        let rpc_listener = TcpListener::bind(config.cluster.rpc_listen)
            .await
            .with_context(|| format!("cannot listen on {} (rpc)", config.cluster.rpc_listen))?;
        let rpc_addr = rpc_listener.local_addr()?;
        let rpc = format!(
            "http://{}",
            config
                .cluster
                .advertised_rpc
                .clone()
                .unwrap_or_else(|| rpc_addr.to_string())
        );
        let wal_name = match config.wal_kind {
            WalKind::Object => "object".to_owned(),
            WalKind::File => format!(
                "file:{}",
                std::path::absolute(wal_dir(&config))
                    .context("cannot resolve the WAL directory")?
                    .display()
            ),
        };
        if config.cluster.controller {
            let recover = recover_wal_fn(store.clone(), remote.clone(), &config);
            let role = Role::new(
                store.clone(),
                RoleConfig {
                    node_id,
                    rpc: rpc.clone(),
                    session_timeout: session,
                    controller: ControllerConfig::default(),
                    recover,
                    gc_interval: Duration::from_millis(config.retention_check_interval_ms.max(1)),
                    gc_grace_ms: config.object_delete_grace_ms,
                    balance_interval: (config.cluster.balance_interval_ms > 0)
                        .then(|| Duration::from_millis(config.cluster.balance_interval_ms)),
                },
            );
            let service = role.service();
            let mut shutdown = stopped.clone();
            let resigning = role.clone();
            tasks.push(tokio::spawn(async move {
                let served = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(rpc_listener),
                        async move {
                            let _ = shutdown.changed().await;
                            // Ends the watchers' streams, which a graceful stop waits for.
                            resigning.resign();
                        },
                    )
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "controller rpc listener failed");
                }
            }));
            tasks.push(tokio::spawn(
                role.clone()
                    .supervise(Duration::from_millis(500), stopped.clone()),
            ));
            tasks.push(tokio::spawn(campaign(
                role,
                remote.clone(),
                session,
                stopped.clone(),
            )));
        } else {
            drop(rpc_listener);
        }

        let mut config = config;
        let (listener, kafka_addr) = bind_kafka(&mut config).await?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
        let (host, port) = config.advertised();
        let registration = Registration {
            node_id,
            host,
            port: u32::try_from(port).unwrap_or(0),
            rpc,
            admin: admin_listener.local_addr()?.to_string(),
            controller: config.cluster.controller,
            wal: wal_name,
        };
        // Heartbeats carry the partitions' traffic once the node exists.
        let node_cell: Arc<std::sync::OnceLock<std::sync::Weak<Node>>> = Arc::default();
        let reporter = node_cell.clone();
        let load: weir_controller::LoadReport = Arc::new(move || {
            reporter
                .get()
                .and_then(std::sync::Weak::upgrade)
                .map(|node| node.load_report())
                .unwrap_or_default()
        });
        tasks.push(tokio::spawn(remote.clone().keep_registered(
            registration,
            Duration::from_millis(config.cluster.heartbeat_interval_ms.max(10)),
            load,
            stopped.clone(),
        )));
        // Nothing can be served before the controller knows this broker.
        let since = std::time::Instant::now();
        while remote.broker_epoch().is_none() {
            if since.elapsed() > Duration::from_secs(5) {
                tracing::info!("waiting for a controller to register with");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (wal, recovery) = open_wal(&config, &store).await?;
        let storage = Storage::open(
            Components {
                wal,
                recovery,
                store,
                metadata: Arc::new(remote.clone()),
            },
            config.storage.clone(),
        )
        .await?;
        let node = Node::new(
            config.clone(),
            Metadata::Remote(remote),
            storage,
            cluster_id,
        )
        .with_admin_token(crate::security::http::admin_token(&config.data_dir)?)
        .shared();
        let _ = node_cell.set(Arc::downgrade(&node));
        if node.topic(crate::group::OFFSETS_TOPIC).is_none() {
            let configs = [("cleanup.policy".to_owned(), "compact".to_owned())].into();
            let created = node
                .controller
                .create_topic(
                    crate::group::OFFSETS_TOPIC,
                    node.config.offsets_topic_partitions,
                    configs,
                )
                .await;
            match created {
                Ok(_) | Err(weir_controller::ControllerError::TopicExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        crate::cluster::reconcile(&node).await;
        tasks.push(tokio::spawn(crate::cluster::follow_assignments(
            node.clone(),
            stopped.clone(),
        )));
        Self::serve(
            node,
            listener,
            kafka_addr,
            Some(rpc_addr),
            tasks,
            Some((cluster_stop, admin_listener)),
        )
        .await
    }

    /// Starts the admin listener, housekeeping and the Kafka accept loop.
    async fn serve(
        node: Arc<Node>,
        listener: Vec<Bound>,
        kafka_addr: SocketAddr,
        rpc_addr: Option<SocketAddr>,
        cluster: Vec<tokio::task::JoinHandle<()>>,
        started: Option<(watch::Sender<bool>, TcpListener)>,
    ) -> anyhow::Result<Server> {
        let config = &node.config;
        let (cluster_stop, admin_listener) = match started {
            Some((stop, admin)) => (Some(stop), admin),
            None => {
                let admin = TcpListener::bind(config.admin_listen)
                    .await
                    .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
                (None, admin)
            }
        };
        let (stop, stopped) = watch::channel(false);
        let admin_addr = admin_listener.local_addr()?;
        let ready = Arc::new(AtomicBool::new(true));
        let mounted = Arc::new(std::sync::OnceLock::new());
        let admin = tokio::spawn(serve_admin(
            admin_listener,
            AdminState {
                ready,
                node: node.clone(),
                mounted: mounted.clone(),
            },
            stopped.clone(),
        ));
        let housekeeping = tokio::spawn(crate::retention::run(node.clone(), stopped.clone()));
        tokio::spawn(crate::txn::expire_loop(
            Arc::downgrade(&node),
            stopped.clone(),
        ));
        let kafka_addrs = listener
            .iter()
            .filter_map(|b| b.socket.local_addr().ok())
            .collect();
        // In-process clients use the internal listener if there is one, else a PLAINTEXT one.
        let plaintext_addr = listener
            .iter()
            .find(|b| b.listener.internal)
            .or_else(|| {
                listener
                    .iter()
                    .find(|b| b.listener.tls.is_none() && !b.listener.sasl)
            })
            .and_then(|b| b.socket.local_addr().ok())
            .unwrap_or(kafka_addr);
        let internal_listener = listener.iter().any(|b| b.listener.internal);
        let accept = tokio::spawn(accept_loop(listener, node.clone(), stopped));
        tracing::info!(%kafka_addr, %admin_addr, ?rpc_addr, data_dir = %config.data_dir.display(), "weir serving");
        Ok(Server {
            node,
            kafka_addr,
            kafka_addrs,
            plaintext_addr,
            internal_listener,
            admin_addr,
            rpc_addr,
            stop,
            accept,
            admin,
            mounted,
            housekeeping,
            cluster,
            cluster_stop,
        })
    }

    /// Moves every partition off this broker and waits (up to 30 s) until the others own them.
    async fn hand_over(&self) {
        let Ok(me) = u32::try_from(self.node.config.node_id) else {
            return;
        };
        if let Err(e) = self.node.controller.drain(me).await {
            tracing::warn!(error = %e, "cannot hand partitions over before stopping");
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let held = self.node.controller.read(|s| {
                s.streams
                    .values()
                    .filter(|st| st.owner == me || st.target == me)
                    .count()
            });
            if held == 0 {
                tracing::info!("every partition handed over");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!("partitions still here after 30 s; stopping anyway");
    }

    /// Where the Kafka listener is bound.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }

    /// Where every Kafka listener is bound, in `[[listeners]]` order (and last the loopback one
    /// opened for in-process clients when no listener is PLAINTEXT).
    pub fn kafka_addrs(&self) -> Vec<SocketAddr> {
        self.kafka_addrs.clone()
    }

    /// Where in-process Kafka clients (the webhook dispatcher) connect: the first PLAINTEXT
    /// listener.
    pub fn plaintext_kafka_addr(&self) -> SocketAddr {
        self.plaintext_addr
    }

    /// The librdkafka properties in-process clients need on [`plaintext_kafka_addr`]
    /// (Self::plaintext_kafka_addr): a login on the internal listener, if there is one.
    pub fn in_process_client_properties(&self) -> Vec<(String, String)> {
        if !self.internal_listener {
            return Vec::new();
        }
        [
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", crate::security::INTERNAL_USER),
            ("sasl.password", self.node.internal_secret.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Where the admin HTTP listener is bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Adds routes to the admin listener (once; the dispatcher's API). False if some were
    /// mounted already.
    pub fn mount_admin(&self, router: Router) -> bool {
        self.mounted.set(router).is_ok()
    }

    /// Where the cluster gRPC listener is bound (`weir broker` only).
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        self.rpc_addr
    }

    /// The node, for tests and embedding.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Graceful stop: a cluster broker first hands its partitions to the others (a drain: no data
    /// moves, each takes about a second), then no new connections, open ones closed, everything
    /// acknowledged uploaded.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if self.node.controller.is_cluster() {
            self.hand_over().await;
        }
        let _ = self.stop.send(true);
        if let Ok(mut connections) = self.accept.await {
            connections.shutdown().await;
        }
        let _ = self.admin.await;
        let _ = self.housekeeping.await;
        self.node.storage.flush().await?;
        if let Some(stop) = &self.cluster_stop {
            let _ = stop.send(true);
        }
        for task in self.cluster {
            let _ = task.await;
        }
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.storage.shutdown().await?,
            Err(_) => tracing::warn!("node still shared at shutdown; data was flushed"),
        }
        tracing::info!("weir stopped");
        Ok(())
    }
}

/// The cluster id, created once and kept in the store.
async fn cluster_id(store: &Arc<dyn ObjectStore>) -> anyhow::Result<String> {
    let path = ObjectPath::from("meta/cluster-id");
    let fresh = uuid::Uuid::new_v4().simple().to_string();
    let opts = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(&path, PutPayload::from(fresh.clone().into_bytes()), opts)
        .await
    {
        Ok(_) => Ok(fresh),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let bytes = store.get(&path).await?.bytes().await?;
            Ok(String::from_utf8_lossy(&bytes).trim().to_string())
        }
        Err(e) => Err(e.into()),
    }
}

async fn accept_loop(
    listeners: Vec<Bound>,
    node: Arc<Node>,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let limit = Arc::new(Semaphore::new(
        usize::try_from(node.config.max_connections).unwrap_or(10_000),
    ));
    // Each listener accepts on its own task; connections are served from one set.
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(64);
    for bound in listeners {
        let tx = accepted_tx.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    got = bound.socket.accept() => match got {
                        Ok((socket, peer)) => {
                            if tx.send((socket, peer, bound.listener.clone())).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(listener = %bound.listener.name, error = %e, "accept failed"),
                    },
                }
            }
        });
    }
    drop(accepted_tx);
    let per_ip = PerIp::new(node.config.max_connections_per_ip);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return connections,
            got = accepted.recv() => {
                let Some((socket, peer, listener)) = got else { return connections };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing");
                    continue;
                };
                let Some(ip_slot) = per_ip.take(peer.ip()) else {
                    tracing::warn!(%peer, limit = node.config.max_connections_per_ip, "max_connections_per_ip reached; refusing");
                    continue;
                };
                let node = node.clone();
                connections.spawn(async move {
                    serve_connection(node, socket, peer, listener).await;
                    drop(ip_slot);
                    drop(permit);
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        }
    }
}

/// Connections open per client IP address, bounded by `max_connections_per_ip`.
#[derive(Debug, Clone)]
struct PerIp {
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>>,
    max: u32,
}

/// One connection's place in [`PerIp`], given back when dropped.
struct IpSlot {
    counts: PerIp,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn new(max: u32) -> PerIp {
        PerIp {
            open: Arc::default(),
            max,
        }
    }

    /// A place for one more connection from `ip`, if it has fewer than the maximum open.
    fn take(&self, ip: std::net::IpAddr) -> Option<IpSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .counts
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one accepted connection: over TLS on an SSL listener (a client that does not complete
/// the handshake, a plaintext one say, is dropped), as it is otherwise.
async fn serve_connection(
    node: Arc<Node>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    listener: Arc<crate::connection::Listener>,
) {
    let _ = socket.set_nodelay(true);
    let Some(acceptor) = listener.tls.clone() else {
        return connection::serve(node, socket, peer, listener, None).await;
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(tls)) => {
            // A verified client certificate names the client (Kafka's default principal).
            let principal = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::security::certificate_principal(cert));
            connection::serve(node, tls, peer, listener, principal).await;
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, listener = %listener.name, error = %e, "TLS handshake failed; connection closed");
        }
        Err(_) => {
            tracing::info!(%peer, listener = %listener.name, "TLS handshake timed out; connection closed");
        }
    }
}

/// What the admin listener's handlers share.
#[derive(Debug, Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
    node: Arc<Node>,
    /// Routes mounted after start (the dispatcher's API).
    mounted: Arc<std::sync::OnceLock<Router>>,
}

/// Serves what [`Server::mount_admin`] mounted, else 404.
async fn mounted(
    State(state): State<AdminState>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    match state.mounted.get() {
        Some(router) => match router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Prometheus text format.
async fn metrics_page(
    State(state): State<AdminState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state.node),
    )
}

async fn serve_admin(listener: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    let cluster = Router::new()
        .route("/v1/cluster", get(crate::admin::get_cluster))
        .route("/v1/cluster/reassign", post(crate::admin::reassign))
        .route("/v1/cluster/drain", post(crate::admin::drain))
        .with_state(state.node.clone());
    let security = {
        use crate::security::http::*;
        Router::new()
            .route("/v1/security/scram", get(list_scram).post(set_scram))
            .route(
                "/v1/security/scram/{user}/{mechanism}",
                axum::routing::delete(delete_scram),
            )
            .route(
                "/v1/security/acls",
                get(list_acls).post(add_acl).delete(remove_acl),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                state.node.clone(),
                admitted,
            ))
            .with_state(state.node.clone())
    };
    let app = Router::new()
        .route("/health/ready", get(ready))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/metrics", get(metrics_page))
        .fallback(mounted)
        .with_state(state)
        .merge(cluster)
        .merge(security);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    // The peer's address reaches handlers (the dispatcher's API answers only loopback clients
    // when it has no tokens).
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

/// The controller role's campaign: try to become the active controller when the metadata names
/// none, or names one not heard from for the session timeout. The election itself (the create-only
/// log append) makes sure only one candidate wins.
async fn campaign(
    role: Arc<Role>,
    remote: RemoteController,
    session: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        if role.active().is_some() {
            continue;
        }
        let known = remote.read(|s| s.controller.clone());
        let replacing = match &known {
            None => None,
            Some(a) => {
                let silent = remote
                    .controller_silence()
                    .map_or(started.elapsed() > session, |d| d > session);
                if !silent {
                    continue;
                }
                Some(a.term)
            }
        };
        match role.try_elect(replacing).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("another broker became the controller"),
            Err(e) => tracing::warn!(error = %e, "controller election failed; retrying"),
        }
    }
}

/// How the active controller recovers a fenced broker's WAL: opens it (the object WAL from the
/// bucket, fencing the dead writer's epoch; a file WAL only if its directory is reachable from
/// here), and lets the storage layer replay it: what the objects lack is uploaded and committed
/// under the dead broker's epochs, which nobody has bumped yet.
fn recover_wal_fn(
    store: Arc<dyn ObjectStore>,
    remote: RemoteController,
    config: &ServeConfig,
) -> RecoverWal {
    let storage_config = config.storage.clone();
    let object_wal = config.object_wal.clone();
    let file_wal = config.wal.clone();
    Arc::new(move |node: u32, wal: String| {
        let store = store.clone();
        let remote = remote.clone();
        let storage_config = storage_config.clone();
        let object_wal = object_wal.clone();
        let file_wal = file_wal.clone();
        Box::pin(async move {
            let (wal, recovery): (Arc<dyn Wal>, _) = if wal == "object" {
                let config = ObjectWalConfig {
                    broker_id: node,
                    ..object_wal
                };
                let (wal, recovery) = ObjectWal::open(store.clone(), config)
                    .await
                    .map_err(|e| format!("object WAL of broker {node}: {e}"))?;
                (Arc::new(wal), recovery)
            } else if let Some(dir) = wal.strip_prefix("file:") {
                if !std::path::Path::new(dir).is_dir() {
                    return Err(format!(
                        "file WAL {dir} of broker {node} is not reachable here"
                    ));
                }
                let (wal, recovery) = FileWal::open(std::path::Path::new(dir), file_wal)
                    .map_err(|e| format!("file WAL {dir} of broker {node}: {e}"))?;
                (Arc::new(wal), recovery)
            } else {
                return Err(format!("broker {node} has an unknown WAL {wal:?}"));
            };
            let records = recovery.records.len();
            let storage = Storage::open(
                Components {
                    wal,
                    recovery,
                    store,
                    metadata: Arc::new(remote),
                },
                storage_config,
            )
            .await
            .map_err(|e| format!("replaying the WAL of broker {node}: {e}"))?;
            storage
                .shutdown()
                .await
                .map_err(|e| format!("closing the recovered WAL of broker {node}: {e}"))?;
            tracing::info!(node, records, "fenced broker's WAL recovered into objects");
            Ok(())
        })
    })
}
