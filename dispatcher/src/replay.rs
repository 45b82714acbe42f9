//! Replays and dead-letter redrives: operator jobs that deliver events again, with safety rails.
//!
//! - **Scope**: a replay names its endpoints (an allow-list: it never sends to others), and
//!   optionally a tenant, event types and either a time range (resolved to offsets with
//!   ListOffsets by timestamp) or an offset range per partition; a redrive picks dead letters by
//!   endpoint, error class and time of failure. The plan (start and end offset per partition) is
//!   fixed when the job is created, so a job is bounded whatever is produced meanwhile.
//! - **Rails**: a per-job rate limit (deliveries per second) on top of each endpoint's own; a dry
//!   run counts what a real run would send, per endpoint and partition, reading each record once;
//!   a job whose plan spans more events than `replay_approval_threshold` waits for a second
//!   operator's approval; pause, resume, cancel (deliveries of a cancelled job still queued are
//!   dropped before they are sent).
//! - **State** lives in the compacted `weir.dispatch.replays` topic under three keys per job (all
//!   in one partition, chosen from the id): `<id>` the definition and plan, written once;
//!   `<id>#approve`, `<id>#pause`, `<id>#cancel` operators' decisions, one key each (so two
//!   decisions made at once never overwrite each other), written by the API; `<id>#state` progress, written
//!   only by the instance running the job. Every instance reads all of it (the API answers
//!   alike everywhere); the instance that owns a job's partition in the `<group>.replays` consumer
//!   group runs it, so a job survives its runner (it resumes from the last checkpoint, at least
//!   once: webhook-ids repeat).
//! - Replayed deliveries keep the event's `webhook-id` (receivers deduplicate) unless the request
//!   says `keep_webhook_id: false`, and carry `webhook-replay-id`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::topics;
use crate::endpoint::glob;
use crate::engine::{Engine, Source, event_of};
use crate::progress::{OffsetStore, Progress};
use crate::task::{DeadLetter, ErrorClass, EventRef, now_ms};

/// Replay (events of source topics) or redrive (dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Replay,
    Redrive,
}

/// An offset range of one partition: `from` included, `to` excluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// What a replay or redrive request asks for (`POST /v1/replays`, `POST /v1/redrives`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobRequest {
    /// Replay: the endpoints it may send to (required). Redrive: only dead letters of these
    /// (empty: all).
    pub endpoint_ids: Vec<String>,
    /// Only events of this tenant.
    pub tenant: Option<String>,
    /// Only events of these types (`*` wildcards; empty: all).
    pub event_types: Vec<String>,
    /// RFC 3339. Replay: events appended from then; redrive: dead letters that failed from then.
    pub from_time: Option<String>,
    /// RFC 3339, excluded.
    pub to_time: Option<String>,
    /// Replay only, instead of a time range: offsets per partition.
    pub ranges: Vec<OffsetRange>,
    /// Redrive only: dead letters of this error class.
    pub error_class: Option<ErrorClass>,
    /// Deliveries per second of this job (default `dispatcher.replay_rate_per_s`).
    pub rate_limit_per_s: Option<u32>,
    /// Count only: what would be sent, per endpoint and partition.
    pub dry_run: bool,
    /// Keep the event's `webhook-id` (default; receivers deduplicate). False: a new one per job.
    pub keep_webhook_id: Option<bool>,
}

/// The part of a partition a job reads: `start` included, `end` excluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// A job as created (`<id>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobDef {
    pub id: String,
    pub kind: Kind,
    pub request: JobRequest,
    pub rate_limit_per_s: u32,
    pub created_by: String,
    pub created_at_ms: i64,
    pub plan: Vec<Planned>,
    /// Records in the plan: an upper bound of the events it sends (a dry run says exactly).
    pub planned_records: u64,
    pub needs_approval: bool,
}

/// One operator decision (`<id>#approve`, `<id>#pause`, `<id>#cancel`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Decision {
    pub by: String,
    pub at_ms: i64,
    /// `#pause` only: paused (true) or resumed.
    #[serde(default)]
    pub paused: bool,
}

/// Operators' decisions about a job, as the API shows them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Control {
    pub approved_by: Option<String>,
    pub approved_at_ms: Option<i64>,
    pub paused: bool,
    pub cancelled: bool,
    pub cancelled_by: Option<String>,
    pub updated_at_ms: i64,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
}

/// A run's progress (`<id>#state`), checkpointed every second by the instance running it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub status: RunStatus,
    /// `topic/partition` -> the first record not done yet.
    pub next: BTreeMap<String, i64>,
    /// Records read.
    pub read: u64,
    /// Deliveries handed to endpoints (a dry run: that would be), endpoint -> `topic/partition`
    /// -> count.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Redrive: dead letters whose event could not be read any more (retention).
    pub missing: u64,
    pub error: Option<String>,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The dispatcher instance running it (the last to).
    #[serde(default)]
    pub runner: Option<String>,
}

impl RunState {
    fn new() -> RunState {
        RunState {
            status: RunStatus::Running,
            next: BTreeMap::new(),
            read: 0,
            counts: BTreeMap::new(),
            missing: 0,
            error: None,
            updated_at_ms: now_ms(),
            finished_at_ms: None,
            runner: None,
        }
    }

    fn count(&mut self, endpoint: &str, topic: &str, partition: i32) {
        *self
            .counts
            .entry(endpoint.to_owned())
            .or_default()
            .entry(format!("{topic}/{partition}"))
            .or_default() += 1;
    }

    /// Deliveries in all.
    pub fn sent(&self) -> u64 {
        self.counts.values().flat_map(|m| m.values()).sum()
    }
}

/// A dead letter's redrive (written to the dead-letter topic, so the letter is listed no more).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Redriven {
    /// The dead letter's position in `weir.dispatch.dlq`: [partition, offset].
    pub redriven: (i32, i64),
    pub job: String,
    pub at_ms: i64,
}

/// Every job, as read from the replays topic.
#[derive(Debug, Default)]
pub struct Jobs {
    defs: RwLock<HashMap<String, JobDef>>,
    /// `<id>#approve|pause|cancel` -> the decision.
    decisions: RwLock<HashMap<String, Decision>>,
    states: RwLock<HashMap<String, RunState>>,
    version: watch::Sender<u64>,
}

impl Jobs {
    /// Applies one record of the replays topic.
    pub fn apply(&self, m: &BorrowedMessage<'_>) {
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        let value = m.payload();
        fn put<T: serde::de::DeserializeOwned>(
            map: &RwLock<HashMap<String, T>>,
            id: &str,
            value: Option<&[u8]>,
        ) {
            let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
            match value.map(serde_json::from_slice::<T>) {
                Some(Ok(v)) => {
                    map.insert(id.to_owned(), v);
                }
                Some(Err(e)) => tracing::warn!(id, error = %e, "unreadable replay record"),
                None => {
                    map.remove(id);
                }
            }
        }
        if ["#approve", "#pause", "#cancel"]
            .iter()
            .any(|suffix| key.ends_with(suffix))
        {
            put(&self.decisions, key, value);
        } else if let Some(id) = key.strip_suffix("#state") {
            put(&self.states, id, value);
        } else {
            put(&self.defs, key, value);
        }
        self.version.send_modify(|v| *v += 1);
    }

    pub fn def(&self, id: &str) -> Option<JobDef> {
        read(&self.defs).get(id).cloned()
    }

    pub fn control(&self, id: &str) -> Control {
        let decisions = read(&self.decisions);
        let approve = decisions.get(&format!("{id}#approve"));
        let pause = decisions.get(&format!("{id}#pause"));
        let cancel = decisions.get(&format!("{id}#cancel"));
        Control {
            approved_by: approve.map(|d| d.by.clone()),
            approved_at_ms: approve.map(|d| d.at_ms),
            paused: pause.is_some_and(|d| d.paused),
            cancelled: cancel.is_some(),
            cancelled_by: cancel.map(|d| d.by.clone()),
            updated_at_ms: [approve, pause, cancel]
                .into_iter()
                .flatten()
                .map(|d| d.at_ms)
                .max()
                .unwrap_or(0),
        }
    }

    /// Whether a job was cancelled (its deliveries still queued are dropped).
    pub fn cancelled(&self, id: &str) -> bool {
        read(&self.decisions).contains_key(&format!("{id}#cancel"))
    }

    pub fn state(&self, id: &str) -> Option<RunState> {
        read(&self.states).get(id).cloned()
    }

    /// Every job id, newest first.
    pub fn ids(&self) -> Vec<String> {
        let defs = read(&self.defs);
        let mut all: Vec<(&i64, &String)> =
            defs.values().map(|d| (&d.created_at_ms, &d.id)).collect();
        all.sort_by(|a, b| b.cmp(a));
        all.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// What a job is doing, in one word.
    pub fn status(&self, id: &str) -> &'static str {
        let Some(def) = self.def(id) else {
            return "unknown";
        };
        let control = self.control(id);
        let state = self.state(id);
        match (control.cancelled, state.as_ref().map(|s| s.status)) {
            (true, _) => "cancelled",
            (_, Some(RunStatus::Completed)) => "completed",
            (_, Some(RunStatus::Failed)) => "failed",
            _ if def.needs_approval && control.approved_by.is_none() => "awaiting_approval",
            _ if control.paused => "paused",
            (_, Some(RunStatus::Running)) => "running",
            _ => "pending",
        }
    }

    /// Whether a job should be running now.
    fn runnable(&self, id: &str) -> bool {
        matches!(self.status(id), "running" | "pending")
    }

    /// The job as the API shows it.
    pub fn view(&self, id: &str) -> Option<serde_json::Value> {
        let def = self.def(id)?;
        let control = self.control(id);
        let state = self.state(id);
        let sent = state.as_ref().map_or(0, RunState::sent);
        let mut v = serde_json::to_value(&def).unwrap_or_default();
        v["status"] = self.status(id).into();
        v["control"] = serde_json::to_value(&control).unwrap_or_default();
        v["progress"] = serde_json::to_value(&state).unwrap_or_default();
        v["sent"] = sent.into();
        Some(v)
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// The replays topic's partition of a job (all its keys in one partition, so they are ordered).
pub fn slot(id: &str, partitions: i32) -> i32 {
    // FNV-1a: stable across versions and instances.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::try_from(h % u32::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Parses an RFC 3339 time into milliseconds since the epoch.
pub fn parse_time(field: &str, value: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{field}: not an RFC 3339 time ({e}): {value}"))
}

/// Whether an event is in a job's scope for `endpoint_id` (the endpoint's own filter aside).
fn in_scope(request: &JobRequest, event: &EventRef) -> bool {
    request
        .tenant
        .as_deref()
        .is_none_or(|t| event.tenant.as_deref() == Some(t))
        && (request.event_types.is_empty()
            || request
                .event_types
                .iter()
                .any(|p| glob(p, event.event_type.as_deref().unwrap_or(""))))
}

/// Runs the jobs of the replays partitions this instance owns.
pub struct Runner {
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
    client: ClientConfig,
    partitions: i32,
    /// Jobs running here -> their stop signal.
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Jobs this instance finished (their final state may not be read back yet).
    finished: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

impl Runner {
    pub fn new(engine: Arc<Engine>, jobs: Arc<Jobs>) -> Arc<Runner> {
        Arc::new(Runner {
            client: engine.config.kafka_client(),
            partitions: engine.config.topic_partitions,
            engine,
            jobs,
            running: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
        })
    }

    /// Joins the `<group>.replays` group (its partitions say which jobs run here) and starts and
    /// stops jobs as they and the assignment change, until `stop`.
    pub async fn supervise(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let consumer: StreamConsumer = match self
            .client
            .clone()
            .set(
                "group.id",
                format!("{}.replays", self.engine.config.group_id),
            )
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.partition.eof", "false")
            .create()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "replays: cannot create the group consumer");
                return;
            }
        };
        if let Err(e) = consumer.subscribe(&[topics::REPLAYS]) {
            tracing::error!(error = %e, "replays: cannot join the group");
            return;
        }
        let mut changes = self.jobs.watch();
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    for (_, s) in self.running.lock().unwrap_or_else(PoisonError::into_inner).drain() {
                        let _ = s.send(true);
                    }
                    return;
                }
                _ = changes.changed() => {}
                // Polling keeps the membership; the records themselves are read by the follower.
                _ = consumer.recv() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let owned: HashSet<i32> = consumer
                .assignment()
                .map(|a| a.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default();
            self.reconcile(&owned);
        }
    }

    fn reconcile(self: &Arc<Self>, owned: &HashSet<i32>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        // Runs that should stop are told to; each stays listed until its task ends, so no second
        // run of the same job starts while one is still winding down.
        for (id, stop) in running.iter() {
            if !owned.contains(&slot(id, self.partitions)) || !self.jobs.runnable(id) {
                let _ = stop.send(true);
            }
        }
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for id in self.jobs.ids() {
            if running.contains_key(&id)
                || finished.contains(&id)
                || !owned.contains(&slot(&id, self.partitions))
                || !self.jobs.runnable(&id)
            {
                continue;
            }
            let Some(def) = self.jobs.def(&id) else {
                continue;
            };
            let (tx, rx) = watch::channel(false);
            running.insert(id.clone(), tx);
            let runner = self.clone();
            tokio::spawn(async move {
                let mut state = runner.jobs.state(&id).unwrap_or_else(RunState::new);
                state.runner = Some(runner.engine.instance.clone());
                tracing::info!(job = %id, kind = ?def.kind, dry_run = def.request.dry_run, "replay job starting");
                let result = match def.kind {
                    Kind::Replay => runner.replay(&def, state, rx).await,
                    Kind::Redrive => runner.redrive(&def, state, rx).await,
                };
                if let Err(e) = result {
                    tracing::warn!(job = %id, error = %e, "replay job failed");
                    let mut state = runner.jobs.state(&id).unwrap_or_else(RunState::new);
                    state.status = RunStatus::Failed;
                    state.error = Some(e.to_string());
                    state.finished_at_ms = Some(now_ms());
                    runner.save(&id, &state).await;
                }
                runner
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        }
    }

    /// Writes a run's state (a finished job's state is final: written once, never again).
    async fn save(&self, id: &str, state: &RunState) {
        {
            let mut finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
            if finished.contains(id) {
                return;
            }
            if state.status != RunStatus::Running {
                finished.insert(id.to_owned());
            }
        }
        let mut state = state.clone();
        state.updated_at_ms = now_ms();
        let payload = serde_json::to_vec(&state).unwrap_or_default();
        let key = format!("{id}#state");
        let record = FutureRecord::to(topics::REPLAYS)
            .partition(slot(id, self.partitions))
            .key(&key)
            .payload(&payload);
        if let Err((e, _)) = self
            .engine
            .producer
            .send(record, Duration::from_secs(10))
            .await
        {
            tracing::warn!(job = id, error = %e, "cannot checkpoint a replay job");
        }
    }

    fn limiter(def: &JobDef) -> DefaultDirectRateLimiter {
        let rate = NonZeroU32::new(def.rate_limit_per_s).unwrap_or(NonZeroU32::MIN);
        RateLimiter::direct(Quota::per_second(rate).allow_burst(NonZeroU32::MIN))
    }

    /// A replay: reads the plan's partitions from their checkpoints and hands each matching
    /// event to each allowed endpoint that wants it.
    async fn replay(
        &self,
        def: &JobDef,
        mut state: RunState,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let dry = def.request.dry_run;
        let checkpoints = Arc::new(Checkpoints::default());
        let progress = Progress::new(checkpoints.clone());
        let consumer = reader(&self.client)?;
        let mut ends = assign(&consumer, &def.plan, |p| {
            let name = format!("{}/{}", p.topic, p.partition);
            let from = state
                .next
                .get(&name)
                .copied()
                .unwrap_or(p.start)
                .max(p.start);
            state.next.insert(name, from);
            from
        })?;
        let limiter = Self::limiter(def);
        let keep_id = def.request.keep_webhook_id.unwrap_or(true);
        let mut last_save = tokio::time::Instant::now();
        while !ends.is_empty() && !stopped(&stop) {
            let message = tokio::select! {
                _ = stop.changed() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => None,
                m = consumer.recv() => Some(m),
            };
            if let Some(Ok(m)) = message {
                let tp = (m.topic().to_owned(), m.partition());
                let Some(end) = ends.get(&tp).copied() else {
                    continue;
                };
                if m.offset() < end {
                    state.read += 1;
                    let event = event_of(&m);
                    let token = progress.take(m.topic(), m.partition(), m.offset());
                    let targets: Vec<_> = if in_scope(&def.request, &event) {
                        def.request
                            .endpoint_ids
                            .iter()
                            .filter_map(|id| self.engine.registry.get(id))
                            .filter(|live| {
                                live.endpoint.wants(
                                    &event.topic,
                                    event.tenant.as_deref(),
                                    event.event_type.as_deref(),
                                )
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    // Copied only when something is sent.
                    let source = (!dry && !targets.is_empty()).then(|| Source::of(&m));
                    drop(m);
                    for live in targets {
                        let id = &live.endpoint.id;
                        let Some(source) = &source else {
                            state.count(id, &event.topic, event.partition); // a dry run
                            continue;
                        };
                        tokio::select! {
                            _ = stop.changed() => {
                                // Not sent to every endpoint: the checkpoint stays before it.
                                token.abandon();
                                break;
                            }
                            () = limiter.until_ready() => {}
                        }
                        state.count(id, &event.topic, event.partition);
                        let mut event = event.clone();
                        if !keep_id {
                            event.id = format!("{}.{}", event.id, def.id);
                        }
                        let job = source.job(event, id, token.clone(), Some(def.id.clone()));
                        self.engine.submit_from_intake(&live.endpoint, job).await;
                    }
                    drop(token);
                }
                if read_past(&tp, end, &consumer) {
                    ends.remove(&tp);
                    // Stop fetching what lies beyond the plan.
                    let mut done = TopicPartitionList::new();
                    done.add_partition(&tp.0, tp.1);
                    let _ = consumer.pause(&done);
                }
            } else if let Some(Err(e)) = message {
                tracing::debug!(job = %def.id, error = %e, "replay read");
            } else {
                // Idle: a partition whose last records are gone (compaction) is done when the
                // consumer is past its end.
                ends.retain(|tp, end| !read_past(tp, *end, &consumer));
            }
            if last_save.elapsed() >= Duration::from_secs(1) {
                merge(&mut state, &checkpoints);
                self.save(&def.id, &state).await;
                last_save = tokio::time::Instant::now();
            }
        }
        if stopped(&stop) {
            merge(&mut state, &checkpoints);
            self.save(&def.id, &state).await;
            return Ok(());
        }
        // Everything is read: done once every task is delivered or handed to a retry topic.
        while progress.in_progress() > 0 {
            tokio::select! {
                _ = stop.changed() => break,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        merge(&mut state, &checkpoints);
        if !stopped(&stop) {
            state.status = RunStatus::Completed;
            state.finished_at_ms = Some(now_ms());
            tracing::info!(job = %def.id, read = state.read, sent = state.sent(), dry_run = dry, "replay job completed");
        }
        self.save(&def.id, &state).await;
        Ok(())
    }

    /// A redrive: reads the dead letters of the plan, drops those redriven already, and delivers
    /// the rest again (each event read by reference); a dead letter is marked redriven once its
    /// new task is delivered or handed to a retry topic.
    async fn redrive(
        &self,
        def: &JobDef,
        mut state: RunState,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let dry = def.request.dry_run;
        let from_ms = def
            .request
            .from_time
            .as_deref()
            .map(|t| parse_time("from_time", t))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let to_ms = def
            .request
            .to_time
            .as_deref()
            .map(|t| parse_time("to_time", t))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        // 1. The dead letters in scope, less those already redriven.
        let consumer = reader(&self.client)?;
        let mut ends = assign(&consumer, &def.plan, |p| p.start)?;
        let mut letters: BTreeMap<(i32, i64), DeadLetter> = BTreeMap::new();
        let mut redriven: HashSet<(i32, i64)> = HashSet::new();
        while !ends.is_empty() {
            let message = tokio::select! {
                _ = stop.changed() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(500)) => None,
                m = consumer.recv() => Some(m),
            };
            let Some(Ok(m)) = message else {
                ends.retain(|tp, end| !read_past(tp, *end, &consumer));
                continue;
            };
            let tp = (m.topic().to_owned(), m.partition());
            let Some(end) = ends.get(&tp).copied() else {
                continue;
            };
            if m.offset() < end {
                let payload = m.payload().unwrap_or_default();
                if let Ok(letter) = serde_json::from_slice::<DeadLetter>(payload) {
                    state.read += 1;
                    let wanted = (def.request.endpoint_ids.is_empty()
                        || def.request.endpoint_ids.contains(&letter.endpoint_id))
                        && def
                            .request
                            .error_class
                            .is_none_or(|c| letter.error_class == Some(c))
                        && from_ms.is_none_or(|t| letter.last_attempt_ms >= t)
                        && to_ms.is_none_or(|t| letter.last_attempt_ms < t)
                        && in_scope(&def.request, &letter.event);
                    if wanted {
                        letters.insert((m.partition(), m.offset()), letter);
                    }
                } else if let Ok(marker) = serde_json::from_slice::<Redriven>(payload) {
                    redriven.insert(marker.redriven);
                }
            }
            if read_past(&tp, end, &consumer) {
                ends.remove(&tp);
            }
        }
        drop(consumer);
        letters.retain(|at, _| !redriven.contains(at));
        if dry {
            for letter in letters.values() {
                state.count(
                    &letter.endpoint_id,
                    &letter.event.topic,
                    letter.event.partition,
                );
            }
            state.status = RunStatus::Completed;
            state.finished_at_ms = Some(now_ms());
            self.save(&def.id, &state).await;
            return Ok(());
        }
        // 2. Each letter's event, delivered again; markers as their tasks are done.
        let (marks, mut marked) = tokio::sync::mpsc::unbounded_channel::<(i32, i64)>();
        let pending = Arc::new(Pending {
            letters: Mutex::new(letters.keys().copied().collect()),
            marks,
        });
        let progress = Progress::new(pending.clone());
        let fetcher = reader(&self.client)?;
        let limiter = Self::limiter(def);
        let writer = {
            let engine = self.engine.clone();
            let job = def.id.clone();
            tokio::spawn(async move {
                while let Some(at) = marked.recv().await {
                    let marker = Redriven {
                        redriven: at,
                        job: job.clone(),
                        at_ms: now_ms(),
                    };
                    let payload = serde_json::to_vec(&marker).unwrap_or_default();
                    let record = FutureRecord::<str, [u8]>::to(topics::DLQ)
                        .partition(at.0)
                        .payload(&payload);
                    let _ = engine.producer.send(record, Duration::from_secs(10)).await;
                }
            })
        };
        for ((partition, offset), letter) in letters {
            if stopped(&stop) {
                break;
            }
            let token = progress.take(topics::DLQ, partition, offset);
            // A letter that cannot be redriven stays in the dead letters.
            let skip = || {
                pending
                    .letters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&(partition, offset));
            };
            let Some(live) = self.engine.registry.get(&letter.endpoint_id) else {
                skip(); // the endpoint is gone: nothing to deliver to
                continue;
            };
            let Some(source) = fetch(&fetcher, &letter.event).await else {
                state.missing += 1;
                skip();
                continue;
            };
            tokio::select! {
                _ = stop.changed() => {
                    token.abandon(); // not sent: the letter stays
                    break;
                }
                () = limiter.until_ready() => {}
            }
            state.count(
                &letter.endpoint_id,
                &letter.event.topic,
                letter.event.partition,
            );
            let job = source.job(
                letter.event.clone(),
                &letter.endpoint_id,
                token,
                Some(def.id.clone()),
            );
            self.engine.submit_from_intake(&live.endpoint, job).await;
            self.save_every_second(def, &mut state).await;
        }
        while progress.in_progress() > 0 && !stopped(&stop) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(progress);
        drop(pending);
        let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
        if !stopped(&stop) {
            state.status = RunStatus::Completed;
            state.finished_at_ms = Some(now_ms());
        }
        self.save(&def.id, &state).await;
        Ok(())
    }

    async fn save_every_second(&self, def: &JobDef, state: &mut RunState) {
        if now_ms() - state.updated_at_ms >= 1000 {
            state.updated_at_ms = now_ms();
            self.save(&def.id, state).await;
        }
    }
}

/// Whether a run was told to stop (or its supervisor is gone).
fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Whether a job's reader is done with a partition: it has read up to `end`.
fn read_past(tp: &(String, i32), end: i64, consumer: &StreamConsumer) -> bool {
    consumer
        .position()
        .ok()
        .and_then(|list| {
            list.find_partition(&tp.0, tp.1)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
        })
        .is_some_and(|o| o >= end)
}

/// Assigns the plan's partitions to `consumer`, each from `from(partition)`; the partitions left to
/// read, with their end.
fn assign(
    consumer: &StreamConsumer,
    plan: &[Planned],
    mut from: impl FnMut(&Planned) -> i64,
) -> anyhow::Result<HashMap<(String, i32), i64>> {
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in plan {
        let start = from(p);
        if start < p.end {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(start))?;
            ends.insert((p.topic.clone(), p.partition), p.end);
        }
    }
    if !ends.is_empty() {
        consumer.assign(&tpl)?;
    }
    Ok(ends)
}

/// A consumer that reads assigned partitions (no group, nothing committed).
fn reader(base: &ClientConfig) -> anyhow::Result<StreamConsumer> {
    Ok(base
        .clone()
        .set(
            "group.id",
            format!("weir-dispatcher-replay-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()?)
}

/// Reads the record at `topic`/`partition`/`offset` (`None`: there is none).
pub(crate) async fn read_one(
    base: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<Source> {
    let consumer = reader(base).ok()?;
    let event = EventRef {
        topic: topic.to_owned(),
        partition,
        offset,
        id: String::new(),
        event_type: None,
        tenant: None,
        timestamp_ms: 0,
    };
    fetch(&consumer, &event).await
}

/// Reads one event by reference (`None`: it is gone).
async fn fetch(consumer: &StreamConsumer, event: &EventRef) -> Option<Source> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&event.topic, event.partition, Offset::Offset(event.offset))
        .ok()?;
    consumer.assign(&tpl).ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .ok()?;
        match m {
            Ok(m) if m.offset() == event.offset => return Some(Source::of(&m)),
            Ok(m) if m.offset() > event.offset => return None,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "redrive: reading an event");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A replay's checkpoints: per partition, the first record not done.
#[derive(Debug, Default)]
struct Checkpoints(Mutex<HashMap<String, i64>>);

impl OffsetStore for Checkpoints {
    fn store(&self, topic: &str, partition: i32, next: i64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(format!("{topic}/{partition}"), next);
    }
}

fn merge(state: &mut RunState, checkpoints: &Checkpoints) {
    for (name, next) in checkpoints
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        let entry = state.next.entry(name.clone()).or_insert(*next);
        *entry = (*entry).max(*next);
    }
}

/// A redrive's dead letters not yet done; each is marked once its task is.
struct Pending {
    letters: Mutex<std::collections::BTreeSet<(i32, i64)>>,
    marks: tokio::sync::mpsc::UnboundedSender<(i32, i64)>,
}

impl OffsetStore for Pending {
    fn store(&self, _topic: &str, partition: i32, next: i64) {
        let mut letters = self.letters.lock().unwrap_or_else(PoisonError::into_inner);
        let done: Vec<(i32, i64)> = letters
            .range((partition, i64::MIN)..(partition, next))
            .copied()
            .collect();
        for at in done {
            letters.remove(&at);
            let _ = self.marks.send(at);
        }
    }
}

/// Resolves a request into a plan: the partitions to read and their offset ranges.
pub async fn plan(
    engine: &Engine,
    kind: Kind,
    request: &JobRequest,
) -> Result<(Vec<Planned>, u64), String> {
    let client = engine.config.kafka_client();
    let request = request.clone();
    let topics_of: Vec<String> = match kind {
        Kind::Redrive => vec![topics::DLQ.to_owned()],
        Kind::Replay => {
            let mut set: Vec<String> = request
                .endpoint_ids
                .iter()
                .filter_map(|id| engine.registry.get(id))
                .flat_map(|l| l.endpoint.source_topics.clone())
                .collect();
            set.sort();
            set.dedup();
            set
        }
    };
    tokio::task::spawn_blocking(move || -> Result<(Vec<Planned>, u64), String> {
        let consumer: rdkafka::consumer::BaseConsumer = client
            .clone()
            .set("group.id", "weir-dispatcher-planner")
            .create()
            .map_err(|e| e.to_string())?;
        let timeout = Duration::from_secs(10);
        let mut plan = Vec::new();
        if kind == Kind::Replay && !request.ranges.is_empty() {
            for r in &request.ranges {
                if !topics_of.contains(&r.topic) {
                    return Err(format!(
                        "ranges: {} is not a source topic of the job's endpoints",
                        r.topic
                    ));
                }
                let (low, high) = consumer
                    .fetch_watermarks(&r.topic, r.partition, timeout)
                    .map_err(|e| format!("ranges: {}/{}: {e}", r.topic, r.partition))?;
                if r.from > r.to {
                    return Err(format!("ranges: {}/{}: from > to", r.topic, r.partition));
                }
                plan.push(Planned {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    start: r.from.clamp(low, high),
                    end: r.to.clamp(low, high),
                });
            }
        } else {
            let from_ms = request
                .from_time
                .as_deref()
                .filter(|_| kind == Kind::Replay)
                .map(|t| parse_time("from_time", t))
                .transpose()?;
            let to_ms = request
                .to_time
                .as_deref()
                .filter(|_| kind == Kind::Replay)
                .map(|t| parse_time("to_time", t))
                .transpose()?;
            for topic in &topics_of {
                let metadata = consumer
                    .fetch_metadata(Some(topic), timeout)
                    .map_err(|e| format!("{topic}: {e}"))?;
                let partitions: Vec<i32> = metadata
                    .topics()
                    .iter()
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                for partition in partitions {
                    let (low, high) = consumer
                        .fetch_watermarks(topic, partition, timeout)
                        .map_err(|e| format!("{topic}/{partition}: {e}"))?;
                    let at = |ms: Option<i64>, default: i64| -> Result<i64, String> {
                        let Some(ms) = ms else { return Ok(default) };
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
                            .map_err(|e| e.to_string())?;
                        let found = consumer
                            .offsets_for_times(tpl, timeout)
                            .map_err(|e| format!("{topic}/{partition}: {e}"))?;
                        Ok(found
                            .find_partition(topic, partition)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None, // nothing at or after the time
                            })
                            .unwrap_or(high))
                    };
                    let start = at(from_ms, low)?.clamp(low, high);
                    let end = at(to_ms, high)?.clamp(start, high);
                    plan.push(Planned {
                        topic: topic.clone(),
                        partition,
                        start,
                        end,
                    });
                }
            }
        }
        let records = plan
            .iter()
            .map(|p| u64::try_from(p.end - p.start).unwrap_or(0))
            .sum();
        Ok((plan, records))
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_keeps_to_one_partition() {
        for id in ["rp_1", "rp_2", "rp_abcdef"] {
            let s = slot(id, 6);
            assert!((0..6).contains(&s));
            assert_eq!(s, slot(id, 6));
        }
        assert_eq!(slot("anything", 1), 0);
    }

    #[test]
    fn times_are_rfc3339_with_offsets() {
        assert_eq!(parse_time("from_time", "1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(
            parse_time("from_time", "1970-01-01T01:00:01+01:00"),
            Ok(1000)
        );
        assert!(
            parse_time("from_time", "yesterday")
                .unwrap_err()
                .contains("from_time")
        );
    }

    #[test]
    fn scope_filters_tenant_and_types() {
        let event = EventRef {
            topic: "t".into(),
            partition: 0,
            offset: 1,
            id: "e".into(),
            event_type: Some("order.paid".into()),
            tenant: Some("acme".into()),
            timestamp_ms: 0,
        };
        let mut r = JobRequest::default();
        assert!(in_scope(&r, &event));
        r.event_types = vec!["order.*".into()];
        assert!(in_scope(&r, &event));
        r.tenant = Some("other".into());
        assert!(!in_scope(&r, &event));
        r.tenant = Some("acme".into());
        r.event_types = vec!["invoice.*".into()];
        assert!(!in_scope(&r, &event));
    }
}
