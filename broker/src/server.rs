//! Starting and stopping a single-node broker: storage, controller, listeners.
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
use axum::routing::get;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use weir_controller::{Controller, ControllerConfig};
use weir_storage::{Components, Storage};
use weir_wal::{FileWal, ObjectWal, ObjectWalConfig, Wal};

use crate::config::{ServeConfig, WalKind};
use crate::connection;
use crate::node::Node;

/// A running broker.
#[derive(Debug)]
pub struct Server {
    node: Arc<Node>,
    kafka_addr: SocketAddr,
    admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<JoinSet<()>>,
    admin: tokio::task::JoinHandle<()>,
    housekeeping: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the data directory, recovers, and starts serving.
    pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
        config.validate()?;
        crate::metrics::install();
        let wal_dir = config.data_dir.join("wal");
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
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
        let store: Arc<dyn ObjectStore> = Arc::new(weir_storage::MeteredStore::new(objects));
        let cluster_id = cluster_id(&store).await?;
        let controller =
            Arc::new(Controller::open(store.clone(), ControllerConfig::default()).await?);
        let (wal, recovery): (Arc<dyn Wal>, _) = match config.wal_kind {
            WalKind::File => {
                let (wal, recovery) = FileWal::open(&wal_dir, config.wal.clone())
                    .with_context(|| format!("cannot open the WAL in {}", wal_dir.display()))?;
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
        };
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
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let kafka_addr = listener.local_addr()?;
        let mut config = config;
        if config.advertised_listener.is_none() {
            // The bound address, not the configured one: port 0 means "any free port".
            config.advertised_listener = Some(kafka_addr.to_string());
        }
        let node = Arc::new(Node::new(config.clone(), controller, storage, cluster_id));
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

        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
        let admin_addr = admin_listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let ready = Arc::new(AtomicBool::new(true));
        let admin = tokio::spawn(serve_admin(
            admin_listener,
            AdminState {
                ready,
                node: node.clone(),
            },
            stopped.clone(),
        ));
        let housekeeping = tokio::spawn(crate::retention::run(node.clone(), stopped.clone()));
        let accept = tokio::spawn(accept_loop(listener, node.clone(), stopped));
        tracing::info!(%kafka_addr, %admin_addr, data_dir = %config.data_dir.display(), "weir serving");
        Ok(Server {
            node,
            kafka_addr,
            admin_addr,
            stop,
            accept,
            admin,
            housekeeping,
        })
    }

    /// Where the Kafka listener is bound.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }

    /// Where the admin HTTP listener is bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The node, for tests and embedding.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Graceful stop: no new connections, open ones closed, everything acknowledged uploaded.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        if let Ok(mut connections) = self.accept.await {
            connections.shutdown().await;
        }
        let _ = self.admin.await;
        let _ = self.housekeeping.await;
        self.node.storage.flush().await?;
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
    listener: TcpListener,
    node: Arc<Node>,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let limit = Arc::new(Semaphore::new(
        usize::try_from(node.config.max_connections).unwrap_or(10_000),
    ));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return connections,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing");
                    continue;
                };
                let node = node.clone();
                connections.spawn(async move {
                    connection::serve(node, socket, peer).await;
                    drop(permit);
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        }
    }
}

/// What the admin listener's handlers share.
#[derive(Debug, Clone)]
struct AdminState {
    ready: Arc<AtomicBool>,
    node: Arc<Node>,
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
    let app = Router::new()
        .route("/health/ready", get(ready))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/metrics", get(metrics_page))
        .with_state(state);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}
