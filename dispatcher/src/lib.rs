//! Weir's webhook dispatcher (DESIGN.md section 8): a Kafka client (librdkafka) that delivers the
//! events of topics to HTTP endpoints, with retries, dead letters and per-endpoint isolation. It
//! keeps no state of its own: endpoints, retries, attempts, dead letters and the audit trail are
//! topics (`weir.dispatch.*`), so it runs against Weir or any Kafka, inside `weir serve` or alone
//! (`weir dispatcher`), and several instances share the work as one consumer group.
//!
//! - [`endpoint`]: what an endpoint is; [`registry`]: the endpoints in force, read from
//!   `weir.dispatch.config`.
//! - [`engine`]: intake, lanes, retries, dead letters, offsets ([`progress`]).
//! - [`http`]: requests, the SSRF guard, error classes; [`crypto`]: secrets and signatures.
//! - [`api`]: the admin REST API; [`index`]: recent attempts and dead letters for it.

pub mod api;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod endpoint;
pub mod engine;
pub mod http;
pub mod index;
pub mod lane;
pub mod progress;
pub mod registry;
pub mod replay;
pub mod stats;
pub mod tail;
pub mod task;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

pub use config::DispatcherConfig;

use crate::config::topics;
use crate::crypto::SecretKey;
use crate::engine::Engine;
use crate::index::{Index, Recent};
use crate::registry::Registry;
use crate::tail::Position;

/// What the API handlers share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: DispatcherConfig,
    pub(crate) engine: Arc<Engine>,
    pub(crate) index: Arc<Index>,
    pub(crate) config_position: Arc<Position>,
    pub(crate) replays_position: Arc<Position>,
    pub(crate) audit: Arc<index::Log>,
    pub(crate) tokens: auth::Tokens,
}

/// Audit records the API keeps in memory (all stay in `weir.dispatch.audit`).
const AUDIT_KEPT: usize = 10_000;

/// A running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Dispatcher {
    /// Creates the dispatcher's topics if missing, reads the endpoints, and starts delivering.
    pub async fn start(config: DispatcherConfig) -> anyhow::Result<Dispatcher> {
        config.validate()?;
        let key = SecretKey::from_base64(config.secret_key.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "dispatcher.secret_key is not set: 32 random bytes, base64 (it encrypts endpoint \
                 secrets at rest); e.g. WEIR_DISPATCHER__SECRET_KEY=$(head -c32 /dev/urandom | base64)"
            )
        })?)
        .map_err(|e| anyhow::anyhow!("invalid setting dispatcher.secret_key: {e}"))?;
        create_topics(&config).await?;
        let producer: FutureProducer = config
            .kafka_client()
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "30000")
            .create()?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let registry = Registry::new(key);
        let apply = registry.clone();
        let (config_position, ends, task) = tail::follow(
            &config.kafka_client(),
            topics::CONFIG,
            move |m| apply.apply(m),
            stop_rx.clone(),
        )
        .await?;
        tasks.push(task);
        anyhow::ensure!(
            config_position
                .wait_for_all(&ends, Duration::from_secs(60))
                .await,
            "could not read {} within 60 s",
            topics::CONFIG
        );
        let index = Arc::new(Index {
            attempts: Recent::new(config.index_per_endpoint),
            dlq: Recent::new(config.index_per_endpoint),
        });
        for topic in [topics::ATTEMPTS, topics::DLQ] {
            let index = index.clone();
            let (_, _, task) = tail::follow(
                &config.kafka_client(),
                topic,
                move |m| {
                    if topic == topics::ATTEMPTS {
                        index.attempts.apply(m);
                    } else if let Some(marker) = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<replay::Redriven>(p).ok())
                    {
                        index.dlq.remove(m.partition(), marker.redriven);
                    } else {
                        index.dlq.apply(m);
                    }
                },
                stop_rx.clone(),
            )
            .await?;
            tasks.push(task);
        }
        let http = http::Http::new(
            http::Guard::new(config.allow_cidrs.clone().unwrap_or_default())
                .with_own_ports(config.own_ports.clone()),
        )?;
        let engine = Engine::new(config.clone(), registry, http, producer, stop_rx.clone());
        let jobs = engine.jobs.clone();
        let (replays_position, ends, task) = tail::follow(
            &config.kafka_client(),
            topics::REPLAYS,
            move |m| jobs.apply(m),
            stop_rx.clone(),
        )
        .await?;
        tasks.push(task);
        anyhow::ensure!(
            replays_position
                .wait_for_all(&ends, Duration::from_secs(60))
                .await,
            "could not read {} within 60 s",
            topics::REPLAYS
        );
        let audit = Arc::new(index::Log::new(AUDIT_KEPT));
        let apply = audit.clone();
        let (_, _, task) = tail::follow(
            &config.kafka_client(),
            topics::AUDIT,
            move |m| apply.apply(m),
            stop_rx.clone(),
        )
        .await?;
        tasks.push(task);
        tasks.extend(engine.start()?);
        let runner = replay::Runner::new(engine.clone(), engine.jobs.clone());
        tasks.push(tokio::spawn(runner.supervise(stop_rx.clone())));
        tasks.push(tokio::spawn(stats::Health::sample(
            engine.clone(),
            stop_rx.clone(),
        )));
        if config.tokens.is_empty() {
            tracing::warn!(
                "dispatcher API in development mode (no dispatcher.tokens): it answers loopback \
                 clients only and lets them do everything"
            );
        }
        tracing::info!(
            bootstrap = %config.bootstrap,
            group = %config.group_id,
            endpoints = engine.registry.all().len(),
            "dispatcher started"
        );
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                tokens: auth::Tokens::new(&config.tokens),
                config,
                engine,
                index,
                config_position,
                replays_position,
                audit,
            }),
            stop,
            tasks,
        })
    }

    /// The admin API's routes (`/v1/endpoints`, `/v1/attempts`, `/v1/dlq`).
    pub fn router(&self) -> axum::Router {
        api::router(self.inner.clone())
    }

    /// Deliveries so far: (delivered, failed attempts, dead letters).
    pub fn counts(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.inner.engine.counters;
        (
            c.delivered.load(Relaxed),
            c.failed_attempts.load(Relaxed),
            c.dead.load(Relaxed),
        )
    }

    /// Stops: offsets of work not done are not committed (the next owner does it again).
    pub async fn shutdown(self) {
        self.inner.engine.close();
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let _ = self.inner.engine.producer.flush(Duration::from_secs(5));
    }
}

/// Creates the dispatcher's topics (those that exist are left alone).
async fn create_topics(config: &DispatcherConfig) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.kafka_client().create()?;
    let replication = || TopicReplication::Fixed(-1); // the cluster's default
    let retries: Vec<String> = config.tiers().into_iter().map(topics::retry).collect();
    let mut wanted = vec![
        NewTopic::new(topics::CONFIG, config.topic_partitions, replication())
            .set("cleanup.policy", "compact"),
        NewTopic::new(topics::ATTEMPTS, config.topic_partitions, replication()),
        NewTopic::new(topics::DLQ, config.topic_partitions, replication()),
        NewTopic::new(topics::AUDIT, 1, replication()),
        NewTopic::new(topics::REPLAYS, config.topic_partitions, replication())
            .set("cleanup.policy", "compact"),
    ];
    for name in &retries {
        wanted.push(NewTopic::new(name, config.topic_partitions, replication()));
    }
    let results = admin
        .create_topics(
            &wanted,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}
