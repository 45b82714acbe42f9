//! The delivery engine (DESIGN.md 8).
//!
//! - **Intake**: one consumer (group `dispatcher.group_id`) reads every topic some endpoint takes
//!   events from. Each record becomes one task per matching endpoint, queued on that endpoint's
//!   [`Lane`].
//! - **Lanes** deliver with their own limits; a lane whose queue is full, or whose breaker is
//!   open, hands the task to a retry topic at once: a slow or dead endpoint never holds a partition
//!   or another endpoint.
//! - **Retries**: a failed attempt that may succeed later is written to the retry topic of its
//!   delay (`weir.dispatch.retry.<delay>s`; a delay between tiers goes to the tier below and waits
//!   there again). One consumer per tier (same group) reads it; a record not due yet pauses its
//!   partition until it is, while the consumer keeps polling (so the group never waits on it).
//! - **Dead letters**: exhausted and non-retryable tasks go to `weir.dispatch.dlq`; a 410
//!   disables the endpoint.
//! - **Offsets**: a record is done, and its offset committable ([`Progress`]), when all its tasks
//!   are delivered or durably in a retry or dead-letter topic (acknowledged by all replicas).
//! - Every attempt is a record of `weir.dispatch.attempts`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{OwnedSemaphorePermit, watch};

use crate::config::{DispatcherConfig, topics};
use crate::endpoint::{Endpoint, EndpointPatch, Ordering, StoredEndpoint};
use crate::http::{Http, Request, ce_header_value, new_traceparent};
use crate::lane::{Admit, Breaker, Job, Lane};
use crate::progress::{OffsetStore, Progress};
use crate::registry::{Live, Registry};
use crate::task::{
    AttemptRecord, DeadLetter, ErrorClass, EventRef, Outcome, TASK_HEADER, TaskState, now_ms,
};

/// Records in progress (read and not done) beyond which the intake stops reading for a moment.
const MAX_IN_PROGRESS: usize = 50_000;

/// Counters for the API and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub retries_scheduled: AtomicU64,
    pub deferred: AtomicU64,
    pub dead: AtomicU64,
}

/// Revokes partitions from a [`Progress`] when the group takes them away; keeps the consumer's
/// lag per partition from librdkafka's statistics.
#[derive(Debug, Default)]
pub struct GroupContext {
    progress: OnceLock<Arc<Progress>>,
    lag: Mutex<BTreeMap<String, i64>>,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = BTreeMap::new();
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                if *id >= 0 && p.desired && p.consumer_lag >= 0 {
                    lag.insert(format!("{name}/{id}"), p.consumer_lag);
                }
            }
        }
        *self.lag.lock().unwrap_or_else(PoisonError::into_inner) = lag;
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Revoke(list), Some(progress)) = (rebalance, self.progress.get()) {
            let revoked: Vec<(String, i32)> = list
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            progress.revoke(&revoked);
        }
    }
}

type GroupConsumer = StreamConsumer<GroupContext>;

struct Stored(Arc<GroupConsumer>);

impl OffsetStore for Stored {
    fn store(&self, topic: &str, partition: i32, next: i64) {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(topic, partition, Offset::Offset(next))
            .is_ok()
        {
            // Fails only for a partition no longer assigned here: its new owner reads it again.
            let _ = self.0.store_offsets(&tpl);
        }
    }
}

/// See the [module documentation](self).
pub struct Engine {
    pub config: DispatcherConfig,
    pub registry: Arc<Registry>,
    pub http: Http,
    pub producer: FutureProducer,
    pub counters: Counters,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    tiers: Vec<u64>,
    stop: watch::Receiver<bool>,
    progresses: Mutex<Vec<Arc<Progress>>>,
    /// Replay and redrive jobs (their deliveries are dropped once cancelled).
    pub jobs: Arc<crate::replay::Jobs>,
    /// Per-endpoint health and the counters over time, for the console.
    pub health: crate::stats::Health,
    /// This instance, in replay jobs' run state and the stats (random per start).
    pub instance: String,
    consumers: Mutex<Vec<Arc<GroupConsumer>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(
        config: DispatcherConfig,
        registry: Arc<Registry>,
        http: Http,
        producer: FutureProducer,
        stop: watch::Receiver<bool>,
    ) -> Arc<Engine> {
        let tiers = config.tiers();
        Arc::new(Engine {
            config,
            registry,
            http,
            producer,
            counters: Counters::default(),
            lanes: Mutex::new(HashMap::new()),
            tiers,
            stop,
            progresses: Mutex::new(Vec::new()),
            jobs: Arc::default(),
            health: crate::stats::Health::default(),
            instance: format!("dsp_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            consumers: Mutex::new(Vec::new()),
        })
    }

    fn group_consumer(&self) -> anyhow::Result<(Arc<GroupConsumer>, Arc<Progress>)> {
        let consumer: GroupConsumer = self
            .config
            .kafka_client()
            .set("group.id", &self.config.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "20")
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("statistics.interval.ms", "5000")
            .create_with_context(GroupContext::default())?;
        let consumer = Arc::new(consumer);
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(consumer.clone());
        let progress = Progress::new(Arc::new(Stored(consumer.clone())));
        let _ = consumer.context().progress.set(progress.clone());
        self.progresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(progress.clone());
        Ok((consumer, progress))
    }

    /// Stops storing offsets: what is in flight at shutdown is read again by the next owner.
    pub fn close(&self) {
        for p in self
            .progresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            p.close();
        }
    }

    /// Starts the intake and the retry consumers.
    pub fn start(self: &Arc<Self>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut tasks = Vec::new();
        let (consumer, progress) = self.group_consumer()?;
        tasks.push(tokio::spawn(self.clone().intake(consumer, progress)));
        for tier in self.tiers.clone() {
            let (consumer, progress) = self.group_consumer()?;
            tasks.push(tokio::spawn(self.clone().retries(tier, consumer, progress)));
        }
        Ok(tasks)
    }

    /// The topics some enabled endpoint takes events from.
    fn sources(&self) -> Vec<String> {
        let set: HashSet<String> = self
            .registry
            .all()
            .iter()
            .filter(|l| l.endpoint.enabled)
            .flat_map(|l| l.endpoint.source_topics.clone())
            .collect();
        let mut v: Vec<String> = set.into_iter().collect();
        v.sort();
        v
    }

    async fn intake(self: Arc<Self>, consumer: Arc<GroupConsumer>, progress: Arc<Progress>) {
        let mut stop = self.stop.clone();
        let mut changes = self.registry.watch();
        let mut subscribed: Vec<String> = Vec::new();
        // The endpoints' version the subscription was made for (recomputed only on a change,
        // not per record).
        let mut made_for = None;
        loop {
            let version = *changes.borrow_and_update();
            let wanted = if made_for == Some(version) {
                subscribed.clone()
            } else {
                self.sources()
            };
            if wanted == subscribed {
                made_for = Some(version);
            } else {
                let result = if wanted.is_empty() {
                    consumer.unsubscribe();
                    Ok(())
                } else {
                    let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
                    consumer.subscribe(&names)
                };
                match result {
                    Ok(()) => {
                        tracing::info!(topics = ?wanted, "dispatcher reading");
                        subscribed = wanted;
                        made_for = Some(version);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe; retrying"),
                }
            }
            while progress.in_progress() > MAX_IN_PROGRESS && !*stop.borrow() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = changes.changed() => {}
                message = consumer.recv(), if !subscribed.is_empty() => match message {
                    Ok(m) => {
                        let jobs = self.take(&m, &progress);
                        drop(m);
                        for (endpoint, job) in jobs {
                            self.submit_from_intake(&endpoint, job).await;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "intake");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = tokio::time::sleep(Duration::from_secs(1)), if subscribed.is_empty() => {}
            }
        }
    }

    /// One source record: a task for every endpoint that wants it.
    fn take(
        self: &Arc<Self>,
        m: &BorrowedMessage<'_>,
        progress: &Arc<Progress>,
    ) -> Vec<(Endpoint, Job)> {
        let event = event_of(m);
        let token = progress.take(m.topic(), m.partition(), m.offset());
        let targets: Vec<Arc<Live>> = self
            .registry
            .all()
            .into_iter()
            .filter(|l| {
                l.endpoint.wants(
                    &event.topic,
                    event.tenant.as_deref(),
                    event.event_type.as_deref(),
                )
            })
            .collect();
        if targets.is_empty() {
            return Vec::new();
        }
        let record = Source::of(m);
        targets
            .into_iter()
            .map(|live| {
                let job = record.job(event.clone(), &live.endpoint.id, token.clone(), None);
                (live.endpoint.clone(), job)
            })
            .collect()
    }

    /// Hands a new task to its lane: a healthy lane with a full queue is waited for (a while),
    /// an unwell one is not (the task goes to a retry topic; the partition goes on).
    pub(crate) async fn submit_from_intake(self: &Arc<Self>, endpoint: &Endpoint, job: Job) {
        let lane = self.lane(endpoint);
        let job = match lane.offer(job) {
            Ok(()) => return,
            Err(job) if lane.healthy() => {
                match lane.offer_within(*job, Duration::from_secs(1)).await {
                    Ok(()) => return,
                    Err(job) => job,
                }
            }
            Err(job) => job,
        };
        self.defer_busy(*job);
    }

    /// The lane of an endpoint, made (or remade after a change of its limits) on demand.
    fn lane(self: &Arc<Self>, endpoint: &Endpoint) -> Arc<Lane> {
        let shape = (
            endpoint.max_in_flight,
            endpoint.rate_limit_per_s,
            endpoint.ordering,
        );
        let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lane) = lanes.get(&endpoint.id).filter(|l| l.shape == shape) {
            return lane.clone();
        }
        let (lane, mut rx) = Lane::new(
            &endpoint.id,
            endpoint.max_in_flight,
            endpoint.rate_limit_per_s,
            endpoint.ordering,
            self.config.queue_per_endpoint,
            Breaker::new(
                self.config.breaker_failures,
                Duration::from_millis(self.config.breaker_cooldown_ms),
            ),
        );
        lanes.insert(endpoint.id.clone(), lane.clone());
        let engine = self.clone();
        let worker = lane.clone();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                if let Some(job) = worker.claim_key(job) {
                    engine.clone().go(worker.clone(), job).await;
                }
            }
        });
        lane
    }

    /// Hands a task to its endpoint's lane, or to a retry topic when the lane is full.
    pub fn submit(self: &Arc<Self>, endpoint: &Endpoint, job: Job) {
        let lane = self.lane(endpoint);
        if let Err(job) = lane.offer(job) {
            self.defer_busy(*job);
        }
    }

    /// A task its lane cannot take now: to the first retry tier, in the background.
    fn defer_busy(self: &Arc<Self>, job: Job) {
        self.counters.deferred.fetch_add(1, AtomicOrdering::Relaxed);
        metrics::counter!("weir_dispatch_deferred_total", "endpoint" => job.state.endpoint_id.clone())
            .increment(1);
        let engine = self.clone();
        tokio::spawn(async move {
            let due = now_ms() + tier_ms(engine.tiers[0]);
            engine.defer(job, due).await;
        });
    }

    /// Takes a lane's next job: waits for a free slot and the rate limit, asks the breaker, then
    /// sends in the background.
    fn go(self: Arc<Self>, lane: Arc<Lane>, job: Job) -> BoxFuture<'static, ()> {
        Box::pin(self.go_now(lane, job))
    }

    async fn go_now(self: Arc<Self>, lane: Arc<Lane>, job: Job) {
        let Ok(permit) = lane.in_flight.clone().acquire_owned().await else {
            return;
        };
        if let Some(limiter) = &lane.limiter {
            limiter.until_ready().await;
        }
        let admit = lane
            .breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(Instant::now());
        match admit {
            Admit::Yes => {
                tokio::spawn(self.attempt(lane, job, permit));
            }
            Admit::No(until) => {
                drop(permit);
                self.counters.deferred.fetch_add(1, AtomicOrdering::Relaxed);
                let wait = until.saturating_duration_since(Instant::now());
                if lane.ordering == Ordering::Key && job.key.is_some() {
                    // In order: the key waits here for the breaker, not in a retry topic.
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        self.go(lane, job).await;
                    });
                } else {
                    let due = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(0);
                    tokio::spawn(async move {
                        let key = job.key.clone();
                        self.defer(job, due).await;
                        self.release(&lane, key.as_ref());
                    });
                }
            }
        }
    }

    /// Whether a task belongs to a cancelled replay or redrive.
    fn cancelled(&self, job: &Job) -> bool {
        job.state
            .replay_id
            .as_deref()
            .is_some_and(|id| self.jobs.cancelled(id))
    }

    /// Drops a task of a cancelled job. A redrive's task goes back to the dead letters (its first
    /// letter is marked redriven already), so a cancelled redrive loses no dead letter.
    async fn drop_cancelled(self: &Arc<Self>, job: Job) {
        let redrive = job
            .state
            .replay_id
            .as_deref()
            .and_then(|id| self.jobs.def(id))
            .is_some_and(|d| d.kind == crate::replay::Kind::Redrive);
        if redrive {
            let made = job.state.attempt.saturating_sub(1);
            self.dead(job, "redrive_cancelled", made).await;
        }
    }

    /// Lets the next job of the same key go (`ordering: key`).
    fn release(self: &Arc<Self>, lane: &Arc<Lane>, key: Option<&Bytes>) {
        if let Some(next) = lane.release_key(key) {
            let engine = self.clone();
            let lane = lane.clone();
            tokio::spawn(async move { engine.go(lane, next).await });
        }
    }

    /// One attempt and what follows from it.
    async fn attempt(self: Arc<Self>, lane: Arc<Lane>, mut job: Job, permit: OwnedSemaphorePermit) {
        let live = self.registry.get(&job.state.endpoint_id);
        let Some(live) = live.filter(|_| !self.cancelled(&job)) else {
            // Deleted meanwhile, or its replay cancelled: nothing to deliver.
            drop(permit);
            let key = job.key.clone();
            if self.cancelled(&job) {
                self.drop_cancelled(job).await;
            }
            self.release(&lane, key.as_ref());
            return;
        };
        let now = now_ms();
        let request = self.request(&live, &job, now);
        let answer = self.http.send(request).await;
        drop(permit);
        lane.observe(answer.latency);
        let failed = answer.error.is_some();
        self.health
            .record(&job.state.endpoint_id, !failed, answer.latency);
        crate::stats::attempt(&lane, &job.state, answer.error, answer.latency);
        lane.breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(
                matches!(
                    answer.error,
                    Some(
                        ErrorClass::Timeout
                            | ErrorClass::Connect
                            | ErrorClass::Tls
                            | ErrorClass::Server
                            | ErrorClass::Throttled
                    )
                ),
                Instant::now(),
            );
        let state = &mut job.state;
        state.first_attempt_ms.get_or_insert(now);
        state.last_status = answer.status;
        state.last_error = answer.error;
        let mut record = AttemptRecord {
            event: state.event.clone(),
            endpoint_id: state.endpoint_id.clone(),
            attempt: state.attempt,
            status: answer.status,
            error_class: answer.error,
            latency_ms: u64::try_from(answer.latency.as_millis()).unwrap_or(u64::MAX),
            at_ms: now,
            outcome: Outcome::Delivered,
            next_attempt_ms: None,
            replay_id: state.replay_id.clone(),
        };
        if !failed {
            self.counters
                .delivered
                .fetch_add(1, AtomicOrdering::Relaxed);
            self.write_json(topics::ATTEMPTS, &record.endpoint_id, &record)
                .await;
            self.release(&lane, job.key.as_ref());
            return;
        }
        self.counters
            .failed_attempts
            .fetch_add(1, AtomicOrdering::Relaxed);
        let class = answer.error.unwrap_or(ErrorClass::Server);
        tracing::debug!(endpoint = %record.endpoint_id, attempt = record.attempt, status = ?answer.status, class = class.as_str(), detail = %answer.detail, "attempt failed");
        let schedule = &live.endpoint.retry_schedule_s;
        let retry_in = schedule
            .get(usize::try_from(state.attempt.saturating_sub(1)).unwrap_or(usize::MAX))
            .copied()
            .filter(|_| class.retryable(answer.status));
        match retry_in {
            Some(seconds) => {
                let delay = jittered(Duration::from_secs(seconds));
                // Retry-After is honoured: never sooner than the endpoint asked (within a day).
                let delay = answer.retry_after.map_or(delay, |asked| {
                    delay.max(asked.min(Duration::from_secs(86_400)))
                });
                let due = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                record.outcome = Outcome::Retrying;
                record.next_attempt_ms = Some(due);
                state.attempt += 1;
                self.counters
                    .retries_scheduled
                    .fetch_add(1, AtomicOrdering::Relaxed);
                self.write_json(topics::ATTEMPTS, &record.endpoint_id, &record)
                    .await;
                if lane.ordering == Ordering::Key && job.key.is_some() {
                    // In order: the key's next events wait behind this retry.
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        self.go(lane, job).await;
                    });
                } else {
                    let key = job.key.clone();
                    self.defer(job, due).await;
                    self.release(&lane, key.as_ref());
                }
            }
            None => {
                record.outcome = Outcome::Dead;
                self.write_json(topics::ATTEMPTS, &record.endpoint_id, &record)
                    .await;
                let reason = if class == ErrorClass::Gone {
                    self.disable(&live.endpoint, "HTTP 410 Gone").await;
                    "endpoint_gone"
                } else if class.retryable(answer.status) {
                    "exhausted"
                } else {
                    "not_retryable"
                };
                let key = job.key.clone();
                let made = job.state.attempt;
                self.dead(job, reason, made).await;
                self.release(&lane, key.as_ref());
            }
        }
    }

    /// The request of one attempt.
    fn request<'a>(&self, live: &'a Live, job: &Job, now: i64) -> Request<'a> {
        let id = &job.state.event.id;
        let timestamp = now / 1000;
        let signature: Vec<String> = live
            .signing_secrets(now)
            .map(|s| crate::crypto::sign(s, id, timestamp, &job.payload))
            .collect();
        let mut headers = vec![
            ("webhook-id".to_owned(), id.clone()),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
            ("webhook-signature".to_owned(), signature.join(" ")),
        ];
        let mut content_type = None;
        let mut traceparent = None;
        for (name, value) in &job.headers {
            if name == "content-type" {
                content_type = Some(String::from_utf8_lossy(value).into_owned());
            } else if name == "traceparent" {
                traceparent = Some(String::from_utf8_lossy(value).into_owned());
            } else if name == "ce_datacontenttype" {
                content_type.get_or_insert_with(|| String::from_utf8_lossy(value).into_owned());
            } else if let Some(attribute) = name.strip_prefix("ce_") {
                headers.push((format!("ce-{attribute}"), ce_header_value(value)));
            }
        }
        headers.push((
            "content-type".to_owned(),
            content_type.unwrap_or_else(|| "application/json".to_owned()),
        ));
        headers.push((
            "traceparent".to_owned(),
            traceparent.unwrap_or_else(new_traceparent),
        ));
        if let Some(replay) = &job.state.replay_id {
            headers.push(("webhook-replay-id".to_owned(), replay.clone()));
        }
        for (name, value) in &live.endpoint.headers {
            headers.push((name.clone(), value.clone()));
        }
        Request {
            url: &live.endpoint.url,
            timeout: Duration::from_millis(live.endpoint.timeout_ms),
            headers,
            body: job.payload.clone(),
        }
    }

    /// Writes a task to the retry topic for `due_ms`; the record it came from is done once the
    /// retry record is acknowledged. A task past its endpoint's whole schedule (plus a day) goes to
    /// the dead letters instead.
    async fn defer(self: &Arc<Self>, mut job: Job, due_ms: i64) {
        let now = now_ms();
        let horizon_ms = self
            .registry
            .get(&job.state.endpoint_id)
            .map_or(0, |l| deadline_ms(&l.endpoint));
        if now - job.state.first_seen_ms > horizon_ms {
            let made = job.state.attempt - 1;
            self.dead(job, "expired", made).await;
            return;
        }
        let delay_ms = (due_ms - now).max(0);
        let tier = tier_for(&self.tiers, delay_ms);
        job.state.due_ms = due_ms;
        job.state.enqueued_ms = now;
        let state = serde_json::to_vec(&job.state).unwrap_or_default();
        let mut headers = OwnedHeaders::new_with_capacity(job.headers.len() + 1);
        for (k, v) in &job.headers {
            if k != TASK_HEADER {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_ref()),
                });
            }
        }
        headers = headers.insert(Header {
            key: TASK_HEADER,
            value: Some(&state),
        });
        let topic = topics::retry(tier);
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                .payload(job.payload.as_ref())
                .headers(headers.clone());
            if let Some(key) = &job.key {
                record = record.key(key.as_ref());
            }
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => break,
                Err((e, _)) => {
                    if *self.stop.borrow() {
                        std::mem::forget(job.token); // not done: read again after a restart
                        return;
                    }
                    tracing::warn!(topic = %topic, error = %e, "cannot write a retry; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Writes a task to the dead letters (after `attempts` attempts); the record it came from is
    /// done once acknowledged.
    async fn dead(self: &Arc<Self>, job: Job, reason: &str, attempts: u32) {
        self.counters.dead.fetch_add(1, AtomicOrdering::Relaxed);
        metrics::counter!(
            "weir_dispatch_dead_letters_total",
            "endpoint" => job.state.endpoint_id.clone(),
            "reason" => reason.to_owned()
        )
        .increment(1);
        let letter = DeadLetter {
            event: job.state.event.clone(),
            endpoint_id: job.state.endpoint_id.clone(),
            attempts,
            last_status: job.state.last_status,
            error_class: job.state.last_error,
            first_attempt_ms: job.state.first_attempt_ms,
            last_attempt_ms: now_ms(),
            reason: reason.to_owned(),
        };
        self.write_json(topics::DLQ, &letter.endpoint_id, &letter)
            .await;
        drop(job);
    }

    /// Writes a JSON record (acks=all), retrying until it is acknowledged or the engine stops.
    pub async fn write_json<T: serde::Serialize>(&self, topic: &str, key: &str, value: &T) {
        let payload = serde_json::to_vec(value).unwrap_or_default();
        loop {
            let record = FutureRecord::to(topic).key(key).payload(&payload);
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => return,
                Err((e, _)) => {
                    if *self.stop.borrow() {
                        return;
                    }
                    tracing::warn!(topic, error = %e, "cannot write a dispatcher record; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Disables an endpoint (after a 410), recording why.
    async fn disable(&self, endpoint: &Endpoint, why: &str) {
        let Some(live) = self.registry.get(&endpoint.id) else {
            return;
        };
        if !live.endpoint.enabled {
            return;
        }
        let mut stored = live.stored.clone();
        stored.endpoint = live.endpoint.patched(
            EndpointPatch {
                enabled: Some(false),
                ..EndpointPatch::default()
            },
            now_ms(),
        );
        stored.endpoint.disabled_reason = Some(why.to_owned());
        tracing::warn!(endpoint = %endpoint.id, why, "endpoint disabled");
        self.put_endpoint(&stored).await;
    }

    /// Writes an endpoint to the config topic (the registry picks it up from there).
    pub async fn put_endpoint(&self, stored: &StoredEndpoint) -> Option<(i32, i64)> {
        let payload = serde_json::to_vec(stored).ok()?;
        let record = FutureRecord::to(topics::CONFIG)
            .key(stored.endpoint.id.as_str())
            .payload(&payload);
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .ok()
            .map(|d| (d.partition, d.offset))
    }

    /// Deletes an endpoint (a tombstone in the config topic).
    pub async fn delete_endpoint(&self, id: &str) -> Option<(i32, i64)> {
        let record = FutureRecord::<str, [u8]>::to(topics::CONFIG).key(id);
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .ok()
            .map(|d| (d.partition, d.offset))
    }

    /// Reads a retry tier: each record, once due, goes back to its endpoint's lane.
    async fn retries(
        self: Arc<Self>,
        tier: u64,
        consumer: Arc<GroupConsumer>,
        progress: Arc<Progress>,
    ) {
        let topic = topics::retry(tier);
        let mut stop = self.stop.clone();
        let mut changes = self.registry.watch();
        // Joins the group only once there is an endpoint (an idle dispatcher stays out of it).
        let mut subscribed = false;
        // Partitions paused on a record not due yet: partition -> the records read from it and
        // not handled yet, the first one not due (what librdkafka had fetched before the pause
        // waits behind it, in order; no seek needed).
        let mut parked: BTreeMap<i32, VecDeque<Parked>> = BTreeMap::new();
        let ready_at = |record: &Parked| {
            record
                .job
                .state
                .due_ms
                .min(record.job.state.enqueued_ms + tier_ms(tier))
        };
        let mut wanted = false;
        let mut seen = None;
        loop {
            let version = *changes.borrow_and_update();
            if seen != Some(version) {
                wanted = !self.registry.all().is_empty();
                seen = Some(version);
            }
            if wanted && !subscribed {
                match consumer.subscribe(&[&topic]) {
                    Ok(()) => subscribed = true,
                    Err(e) => {
                        tracing::warn!(topic = %topic, error = %e, "cannot subscribe; retrying")
                    }
                }
            } else if !wanted && subscribed && parked.is_empty() {
                consumer.unsubscribe();
                subscribed = false;
            }
            if !parked.is_empty() {
                // Partitions the group took away: their next owner reads those records again.
                if let Ok(assigned) = consumer.assignment() {
                    let mine: HashSet<i32> =
                        assigned.elements().iter().map(|e| e.partition()).collect();
                    parked.retain(|p, _| mine.contains(p));
                }
            }
            let next_ready = parked
                .values()
                .filter_map(|q| q.front().map(ready_at))
                .min();
            let wait = next_ready.map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(u64::try_from((at - now_ms()).max(0)).unwrap_or(0))
            });
            tokio::select! {
                _ = stop.changed() => return,
                _ = changes.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)), if !subscribed => {}
                () = tokio::time::sleep(wait), if next_ready.is_some() => {
                    let partitions: Vec<i32> = parked.keys().copied().collect();
                    for partition in partitions {
                        let Some(queue) = parked.get_mut(&partition) else { continue };
                        while queue.front().is_some_and(|r| ready_at(r) <= now_ms()) {
                            if let Some(record) = queue.pop_front() {
                                self.retry_due(record).await;
                            }
                        }
                        if queue.is_empty() {
                            parked.remove(&partition);
                            let mut tpl = TopicPartitionList::new();
                            let _ = tpl.add_partition(&topic, partition);
                            let _ = consumer.resume(&tpl);
                        }
                    }
                }
                message = consumer.recv(), if subscribed => match message {
                    Ok(m) => {
                        let Some(record) = Parked::from(&m, &progress) else {
                            tracing::warn!(topic = %topic, offset = m.offset(), "retry record without a task; skipped");
                            drop(progress.take(m.topic(), m.partition(), m.offset()));
                            continue;
                        };
                        if let Some(queue) = parked.get_mut(&m.partition()) {
                            queue.push_back(record); // behind the record not due yet
                        } else if ready_at(&record) <= now_ms() {
                            self.retry_due(record).await;
                        } else {
                            let mut tpl = TopicPartitionList::new();
                            let _ = tpl.add_partition(&topic, m.partition());
                            let _ = consumer.pause(&tpl);
                            parked.insert(m.partition(), VecDeque::from([record]));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "retry tier");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    /// A retry record whose tier delay is over: due, it goes to its lane; not yet (a delay beyond
    /// this tier), it goes on to the tier of what remains.
    async fn retry_due(self: &Arc<Self>, record: Parked) {
        let job = record.job;
        let Some(live) = self.registry.get(&job.state.endpoint_id) else {
            return; // the endpoint was deleted: its retries end with it
        };
        if self.cancelled(&job) {
            self.drop_cancelled(job).await;
            return;
        }
        if job.state.due_ms > now_ms() + 50 {
            let due = job.state.due_ms;
            self.defer(job, due).await;
        } else if !live.endpoint.enabled {
            let made = job.state.attempt - 1;
            self.dead(job, "endpoint_disabled", made).await;
        } else {
            self.submit(&live.endpoint, job);
        }
    }

    /// The dispatcher's consumer lag (records not read yet), per `topic/partition` read here:
    /// the source topics and the retry tiers.
    pub fn lag(&self) -> BTreeMap<String, i64> {
        let mut all = BTreeMap::new();
        for c in self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            all.extend(
                c.context()
                    .lag
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            );
        }
        all
    }

    /// Each lane's state, for the API.
    pub fn lanes(&self) -> Vec<(String, usize, usize, &'static str)> {
        self.lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|l| {
                (
                    l.endpoint_id.clone(),
                    l.queued(),
                    l.shape.0 as usize - l.in_flight.available_permits(),
                    l.breaker_state(),
                )
            })
            .collect()
    }
}

/// A retry record read back.
#[derive(Debug)]
struct Parked {
    job: Job,
}

impl Parked {
    fn from(m: &BorrowedMessage<'_>, progress: &Arc<Progress>) -> Option<Parked> {
        let headers = m.headers()?;
        let state: TaskState = headers
            .iter()
            .find(|h| h.key == TASK_HEADER)
            .and_then(|h| h.value)
            .and_then(|v| serde_json::from_slice(v).ok())?;
        let headers = headers
            .iter()
            .filter(|h| h.key != TASK_HEADER)
            .map(|h| {
                (
                    h.key.to_owned(),
                    Bytes::copy_from_slice(h.value.unwrap_or_default()),
                )
            })
            .collect();
        Some(Parked {
            job: Job {
                state,
                key: m.key().map(Bytes::copy_from_slice),
                payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                headers,
                token: progress.take(m.topic(), m.partition(), m.offset()),
            },
        })
    }
}

/// What identifies an event, from its record's headers (`ce_id`, `ce_type`, `tenant`).
pub(crate) fn event_of(m: &BorrowedMessage<'_>) -> EventRef {
    let header = |name: &str| -> Option<String> {
        m.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    EventRef {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        id: header("ce_id")
            .unwrap_or_else(|| EventRef::derived_id(m.topic(), m.partition(), m.offset())),
        event_type: header("ce_type"),
        tenant: header("tenant"),
        timestamp_ms: m.timestamp().to_millis().unwrap_or_else(now_ms),
    }
}

/// A source record's key, payload and headers, copied once and shared by its tasks.
pub(crate) struct Source {
    key: Option<Bytes>,
    payload: Bytes,
    headers: Vec<(String, Bytes)>,
}

impl Source {
    /// For the API: the payload as text when it is UTF-8, else base64; headers likewise.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        use base64::Engine as _;
        let text = |b: &Bytes| match std::str::from_utf8(b) {
            Ok(t) => serde_json::json!(t),
            Err(_) => serde_json::json!({
                "base64": base64::engine::general_purpose::STANDARD.encode(b)
            }),
        };
        serde_json::json!({
            "key": self.key.as_ref().map(text),
            "headers": self.headers.iter().map(|(k, v)| serde_json::json!([k, text(v)])).collect::<Vec<_>>(),
            "payload": text(&self.payload),
        })
    }

    pub(crate) fn of(m: &BorrowedMessage<'_>) -> Source {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            Bytes::copy_from_slice(x.value.unwrap_or_default()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Source {
            key: m.key().map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            headers,
        }
    }

    /// The first attempt's task for `endpoint_id` (`replay_id`: the replay or redrive job it
    /// belongs to).
    pub(crate) fn job(
        &self,
        event: EventRef,
        endpoint_id: &str,
        token: Arc<crate::progress::Token>,
        replay_id: Option<String>,
    ) -> Job {
        let now = now_ms();
        Job {
            state: TaskState {
                event,
                endpoint_id: endpoint_id.to_owned(),
                attempt: 1,
                first_seen_ms: now,
                first_attempt_ms: None,
                due_ms: now,
                enqueued_ms: now,
                last_status: None,
                last_error: None,
                replay_id,
            },
            key: self.key.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            token,
        }
    }
}

fn tier_ms(tier_s: u64) -> i64 {
    i64::try_from(tier_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// The retry tier for a delay: the longest not longer than it (the shortest for a shorter delay).
fn tier_for(tiers: &[u64], delay_ms: i64) -> u64 {
    tiers
        .iter()
        .copied()
        .filter(|t| tier_ms(*t) <= delay_ms)
        .max()
        .unwrap_or(tiers[0])
}

/// How long after first seeing an event its task may still be retried or deferred: the endpoint's
/// whole schedule, then a day.
fn deadline_ms(endpoint: &Endpoint) -> i64 {
    let schedule: u64 = endpoint.retry_schedule_s.iter().sum();
    tier_ms(schedule.saturating_add(86_400))
}

/// `delay` ± 20%.
fn jittered(delay: Duration) -> Duration {
    let mut byte = [0u8; 2];
    rand::fill(&mut byte);
    let unit = f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX); // 0..=1
    delay.mul_f64(0.8 + 0.4 * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_take_the_longest_delay_that_fits() {
        let tiers = [5, 300, 1800];
        assert_eq!(tier_for(&tiers, 0), 5);
        assert_eq!(tier_for(&tiers, 4_000), 5);
        assert_eq!(tier_for(&tiers, 5_000), 5);
        assert_eq!(tier_for(&tiers, 299_000), 5);
        assert_eq!(tier_for(&tiers, 300_000), 300);
        assert_eq!(tier_for(&tiers, 7_200_000), 1800);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
        }
    }
}
