//! Transactions (KIP-98, DESIGN.md 7): the transaction coordinator, the markers it has written into
//! the partitions, and each partition's aborted-transaction index.
//!
//! The coordinator of transactional id `t` is the owner of partition `hash(t)` of the internal,
//! compacted topic `__transaction_state`, as a group's is of `__consumer_offsets`: every state change
//! of a transaction is a record there (durable before it is answered), and a new owner (a restart, a
//! move, a failover) rebuilds the state by reading the partition, then finishes the transactions
//! that were decided but not yet marked.
//!
//! A transaction goes `Empty → Ongoing` (AddPartitionsToTxn / AddOffsetsToTxn) `→ PrepareCommit |
//! PrepareAbort` (EndTxn, or its timeout, which also bumps the epoch to fence the producer) `→
//! CompleteCommit | CompleteAbort` once a marker is durable in every partition it wrote to
//! (`markers`). The decision is the Prepare record: whatever crashes after it, the transaction ends
//! that way. Markers go to partitions open here directly and to other brokers with WriteTxnMarkers.

pub mod index;
pub mod markers;
pub(crate) mod records;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use prost::Message;

use crate::group::{self, now_ms};
use crate::node::{Node, Partition};
use records::{TXN_RECORD, TxnPartition, TxnValue};

/// The internal topic holding transaction states.
pub const TXN_TOPIC: &str = "__transaction_state";

/// How long a request that ended a transaction waits for its markers before answering anyway (the
/// outcome is decided; the markers keep being retried).
const MARKERS_WAIT: Duration = Duration::from_secs(15);

/// Where a transaction is (Kafka's names, as DescribeTransactions and ListTransactions show them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Empty,
        Phase::Ongoing,
        Phase::PrepareCommit,
        Phase::PrepareAbort,
        Phase::CompleteCommit,
        Phase::CompleteAbort,
    ];

    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::Ongoing => "Ongoing",
            Phase::PrepareCommit => "PrepareCommit",
            Phase::PrepareAbort => "PrepareAbort",
            Phase::CompleteCommit => "CompleteCommit",
            Phase::CompleteAbort => "CompleteAbort",
        }
    }

    /// The state named `name` (Kafka's names).
    pub fn named(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }

    fn number(self) -> i32 {
        Phase::ALL
            .iter()
            .position(|p| *p == self)
            .map_or(0, |i| i as i32)
    }

    fn from_number(n: i32) -> Phase {
        usize::try_from(n)
            .ok()
            .and_then(|i| Phase::ALL.get(i).copied())
            .unwrap_or(Phase::Empty)
    }

    fn is_prepare(self) -> bool {
        matches!(self, Phase::PrepareCommit | Phase::PrepareAbort)
    }
}

/// A transactional id's producer and its current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub producer_id: i64,
    pub epoch: i16,
    /// The epoch before the coordinator bumped it (a timeout or a new producer fencing an open
    /// transaction), -1 if none: a producer still at that epoch may end its aborted transaction or
    /// initialise again (KIP-360).
    pub last_epoch: i16,
    pub timeout_ms: i32,
    pub phase: Phase,
    /// The partitions the transaction wrote to (its `__consumer_offsets` partition included).
    pub partitions: BTreeSet<(String, i32)>,
    /// When the open transaction started (-1 if none is open).
    pub started_ms: i64,
    pub updated_ms: i64,
}

impl Txn {
    fn value(&self) -> TxnValue {
        TxnValue {
            producer_id: self.producer_id,
            epoch: i32::from(self.epoch),
            last_epoch: i32::from(self.last_epoch),
            timeout_ms: self.timeout_ms,
            phase: self.phase.number(),
            partitions: self
                .partitions
                .iter()
                .map(|(topic, partition)| TxnPartition {
                    topic: topic.clone(),
                    partition: *partition,
                })
                .collect(),
            started_ms: self.started_ms,
            updated_ms: self.updated_ms,
        }
    }

    fn from_value(v: TxnValue) -> Txn {
        Txn {
            producer_id: v.producer_id,
            epoch: i16::try_from(v.epoch).unwrap_or(i16::MAX),
            last_epoch: i16::try_from(v.last_epoch).unwrap_or(-1),
            timeout_ms: v.timeout_ms,
            phase: Phase::from_number(v.phase),
            partitions: v
                .partitions
                .into_iter()
                .map(|p| (p.topic, p.partition))
                .collect(),
            started_ms: v.started_ms,
            updated_ms: v.updated_ms,
        }
    }

    /// Checks that a request comes from this transactional id's current producer.
    fn check(&self, producer_id: i64, epoch: i16, version: i16) -> Result<(), i16> {
        if producer_id != self.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping.code());
        }
        if epoch != self.epoch {
            return Err(fenced(version));
        }
        Ok(())
    }
}

/// What a coordinator answers when its log cannot take a write, as Kafka: clients retry these,
/// finding the coordinator again where it moved (a storage error code would be fatal to them).
pub(crate) fn coordinator_code(append_error: i16) -> i16 {
    if append_error == ResponseError::NotLeaderOrFollower.code()
        || append_error == ResponseError::KafkaStorageError.code()
    {
        ResponseError::NotCoordinator.code()
    } else if append_error == ResponseError::MessageTooLarge.code()
        || append_error == ResponseError::RecordListTooLarge.code()
    {
        ResponseError::UnknownServerError.code()
    } else {
        ResponseError::CoordinatorNotAvailable.code()
    }
}

/// The error for a producer whose epoch is not the current one: PRODUCER_FENCED from the request
/// versions that know it (2+), INVALID_PRODUCER_EPOCH before.
fn fenced(version: i16) -> i16 {
    if version >= 2 {
        ResponseError::ProducerFenced.code()
    } else {
        ResponseError::InvalidProducerEpoch.code()
    }
}

type Entry = Arc<tokio::sync::Mutex<Option<Txn>>>;

/// The transactions this node coordinates. See the [module documentation](self).
#[derive(Debug, Default)]
pub struct Coordinator {
    txns: Mutex<HashMap<String, Entry>>,
    /// Transactional ids whose decided transaction a task is finishing (one at a time per id).
    finishing: Mutex<HashSet<String>>,
    /// The `__transaction_state` partitions whose transactions are loaded here.
    loaded: Mutex<HashSet<i32>>,
}

/// The `__transaction_state` partition of a transactional id.
fn log_partition(node: &Node, id: &str) -> Result<(Partition, i32), i16> {
    let topic = node
        .topic(TXN_TOPIC)
        .ok_or(ResponseError::CoordinatorNotAvailable.code())?;
    let index = group::partition_for(id, topic.partitions.len());
    let partition = node
        .partition(&topic, index)
        .ok_or(ResponseError::NotCoordinator.code())?;
    Ok((partition, index))
}

fn key(id: &str) -> Bytes {
    let mut key = Vec::with_capacity(id.len() + 1);
    key.push(TXN_RECORD);
    key.extend_from_slice(id.as_bytes());
    Bytes::from(key)
}

impl Coordinator {
    /// Whether this node coordinates transactional id `id` now: Ok, NOT_COORDINATOR or
    /// COORDINATOR_LOAD_IN_PROGRESS.
    pub fn coordinates(&self, node: &Node, id: &str) -> Result<(), i16> {
        let (_, index) = log_partition(node, id)?;
        if self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&index)
        {
            Ok(())
        } else {
            Err(ResponseError::CoordinatorLoadInProgress.code())
        }
    }

    /// Creates `__transaction_state` on first use (as Kafka: a cluster without transactional
    /// producers never has it). Once created here its partitions are loaded (empty); in a cluster
    /// their owners open and load them as the controller assigns them.
    pub async fn ensure_topic(&self, node: &Node) -> Result<(), i16> {
        if node.topic(TXN_TOPIC).is_some() {
            return Ok(());
        }
        // Compacted, as on Kafka: retention by time must never drop a transaction's state.
        let configs = [("cleanup.policy".to_owned(), "compact".to_owned())].into();
        let partitions = node.config.transaction_state_partitions;
        let created = if node.controller.is_cluster() {
            node.controller
                .create_topic(TXN_TOPIC, partitions, configs)
                .await
                .map(|_| ())
        } else {
            node.create_topic(TXN_TOPIC, partitions, configs)
                .await
                .map(|_| ())
        };
        match created {
            Ok(()) => {
                tracing::info!(partitions, "{TXN_TOPIC} created");
                if !node.controller.is_cluster() {
                    self.load(node)
                        .await
                        .map_err(|e| crate::error::storage_code(&e))?;
                }
                Ok(())
            }
            Err(weir_controller::ControllerError::TopicExists(_)) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create {TXN_TOPIC}");
                Err(ResponseError::CoordinatorNotAvailable.code())
            }
        }
    }

    /// Whether the transactions of `__transaction_state` partition `index` are loaded here.
    pub fn is_loaded(&self, index: i32) -> bool {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&index)
    }

    fn entry(&self, id: &str) -> Entry {
        self.txns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn existing(&self, id: &str) -> Option<Entry> {
        self.txns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Makes a transaction's new state durable in `__transaction_state`.
    async fn write(&self, node: &Node, id: &str, txn: &Txn) -> Result<(), i16> {
        self.coordinates(node, id)?;
        let (partition, _) = log_partition(node, id)?;
        let value = Bytes::from(txn.value().encode_to_vec());
        group::append(&partition, vec![(key(id), Some(value))])
            .await
            .map(|_| ())
            .map_err(coordinator_code)
    }

    /// Writes the tombstone of an expired transactional id.
    async fn forget(&self, node: &Node, id: &str) -> Result<(), i16> {
        self.coordinates(node, id)?;
        let (partition, _) = log_partition(node, id)?;
        group::append(&partition, vec![(key(id), None)])
            .await
            .map(|_| ())
            .map_err(coordinator_code)
    }

    /// InitProducerId with a transactional id: the id's producer id (a new one the first time) at a
    /// new epoch, which fences every earlier producer of the id. An open transaction is aborted
    /// first. `claimed`: the producer id and epoch a producer re-initialising states (KIP-360).
    pub async fn init_producer(
        &self,
        node: &Node,
        id: &str,
        timeout_ms: i32,
        claimed: Option<(i64, i16)>,
        version: i16,
    ) -> Result<(i64, i16), i16> {
        self.coordinates(node, id)?;
        let max = i32::try_from(node.config.transaction_max_timeout_ms).unwrap_or(i32::MAX);
        if timeout_ms <= 0 || timeout_ms > max {
            return Err(ResponseError::InvalidTransactionTimeout.code());
        }
        let entry = self.entry(id);
        for _ in 0..2 {
            let mut guard = entry.lock().await;
            let now = now_ms();
            let next = match guard.as_ref() {
                None => {
                    let producer_id =
                        node.producers
                            .next_id(&node.controller)
                            .await
                            .map_err(|e| {
                                tracing::warn!(error = %e, "cannot allocate producer ids");
                                ResponseError::CoordinatorNotAvailable.code()
                            })?;
                    Txn {
                        producer_id,
                        epoch: 0,
                        last_epoch: -1,
                        timeout_ms,
                        phase: Phase::Empty,
                        partitions: BTreeSet::new(),
                        started_ms: -1,
                        updated_ms: now,
                    }
                }
                Some(txn) => {
                    if let Some((producer_id, epoch)) = claimed
                        && (producer_id != txn.producer_id
                            || (epoch != txn.epoch && epoch != txn.last_epoch))
                    {
                        return Err(fenced(version.max(2)));
                    }
                    match txn.phase {
                        Phase::PrepareCommit | Phase::PrepareAbort => {
                            return Err(ResponseError::ConcurrentTransactions.code());
                        }
                        Phase::Ongoing => {
                            // Fence the old producer and abort what it left open; then start again.
                            let aborting = self.bump(txn, Phase::PrepareAbort, now);
                            self.write(node, id, &aborting).await?;
                            *guard = Some(aborting.clone());
                            drop(guard);
                            self.finish_within(node, id, aborting).await;
                            continue;
                        }
                        Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort => {
                            let mut next = self.bump(txn, Phase::Empty, now);
                            // Only the coordinator's own fencing (a timeout, an abort of what a
                            // producer left open) leaves the old epoch usable; after a new
                            // producer's start an older one is fenced for good.
                            next.last_epoch = -1;
                            next.timeout_ms = timeout_ms;
                            next.started_ms = -1;
                            next.partitions.clear();
                            if next.epoch == i16::MAX {
                                // Epochs are spent: a new producer id (as Kafka).
                                next.producer_id =
                                    node.producers.next_id(&node.controller).await.map_err(
                                        |_| ResponseError::CoordinatorNotAvailable.code(),
                                    )?;
                                next.epoch = 0;
                                next.last_epoch = -1;
                            }
                            next
                        }
                    }
                }
            };
            self.write(node, id, &next).await?;
            let answer = (next.producer_id, next.epoch);
            *guard = Some(next);
            return Ok(answer);
        }
        Err(ResponseError::ConcurrentTransactions.code())
    }

    /// The transaction at the next epoch, in `phase`.
    fn bump(&self, txn: &Txn, phase: Phase, now: i64) -> Txn {
        let mut next = txn.clone();
        next.last_epoch = txn.epoch;
        next.epoch = txn.epoch.saturating_add(1);
        next.phase = phase;
        next.updated_ms = now;
        next
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's `__consumer_offsets` partition):
    /// the transaction is open and will be marked in these partitions.
    pub async fn add_partitions(
        &self,
        node: &Node,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        version: i16,
    ) -> Result<(), i16> {
        self.coordinates(node, id)?;
        let entry = self
            .existing(id)
            .ok_or(ResponseError::InvalidProducerIdMapping.code())?;
        let mut guard = entry.lock().await;
        let txn = guard
            .as_ref()
            .ok_or(ResponseError::InvalidProducerIdMapping.code())?;
        txn.check(producer_id, epoch, version)?;
        if txn.phase.is_prepare() {
            return Err(ResponseError::ConcurrentTransactions.code());
        }
        if txn.phase == Phase::Ongoing && partitions.iter().all(|p| txn.partitions.contains(p)) {
            return Ok(());
        }
        let mut next = txn.clone();
        let now = now_ms();
        if next.phase != Phase::Ongoing {
            next.phase = Phase::Ongoing;
            next.partitions.clear();
            next.started_ms = now;
        }
        next.partitions.extend(partitions.iter().cloned());
        next.updated_ms = now;
        self.write(node, id, &next).await?;
        *guard = Some(next);
        Ok(())
    }

    /// EndTxn: decides the transaction (durably), then marks it in its partitions.
    pub async fn end(
        &self,
        node: &Node,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        version: i16,
    ) -> Result<(), i16> {
        self.coordinates(node, id)?;
        let entry = self
            .existing(id)
            .ok_or(ResponseError::InvalidProducerIdMapping.code())?;
        let mut guard = entry.lock().await;
        let txn = guard
            .as_ref()
            .ok_or(ResponseError::InvalidProducerIdMapping.code())?;
        if producer_id != txn.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping.code());
        }
        let aborted = matches!(txn.phase, Phase::PrepareAbort | Phase::CompleteAbort);
        if epoch != txn.epoch {
            // The producer of a transaction the coordinator aborted (it timed out) may still abort
            // it: that is what it asks for.
            return if epoch == txn.last_epoch && !commit && aborted {
                Ok(())
            } else {
                Err(fenced(version))
            };
        }
        match (txn.phase, commit) {
            (Phase::Ongoing, _) => {}
            (Phase::PrepareCommit, true) | (Phase::PrepareAbort, false) => {
                return Err(ResponseError::ConcurrentTransactions.code());
            }
            // A retry whose answer was lost.
            (Phase::CompleteCommit, true) | (Phase::CompleteAbort, false) => return Ok(()),
            _ => return Err(ResponseError::InvalidTxnState.code()),
        }
        let mut decided = txn.clone();
        decided.phase = if commit {
            Phase::PrepareCommit
        } else {
            Phase::PrepareAbort
        };
        decided.updated_ms = now_ms();
        self.write(node, id, &decided).await?;
        *guard = Some(decided.clone());
        drop(guard);
        self.finish_within(node, id, decided).await;
        Ok(())
    }

    /// Finishes a decided transaction in the background, waiting at most [`MARKERS_WAIT`] for it.
    async fn finish_within(&self, node: &Node, id: &str, decided: Txn) {
        let Some(node) = node.me() else { return };
        let id = id.to_string();
        let task = tokio::spawn(async move {
            let coordinator = &node.transactions;
            coordinator.finish(&node, &id, decided).await;
        });
        if tokio::time::timeout(MARKERS_WAIT, task).await.is_err() {
            tracing::warn!("transaction markers still being written; answering with the decision");
        }
    }

    /// Writes a decided transaction's markers into every partition it wrote to (retrying until
    /// each is durable, while this node coordinates it), then records it complete.
    async fn finish(&self, node: &Node, id: &str, decided: Txn) {
        if !self
            .finishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string())
        {
            return; // another task is on it
        }
        self.finish_once(node, id, &decided).await;
        self.finishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Whether the id's transaction is still `decided` (not finished or replaced meanwhile).
    async fn still(&self, id: &str, decided: &Txn) -> bool {
        let Some(entry) = self.existing(id) else {
            return false;
        };
        let guard = entry.lock().await;
        guard.as_ref().is_some_and(|t| {
            t.producer_id == decided.producer_id
                && t.epoch == decided.epoch
                && t.phase == decided.phase
        })
    }

    async fn finish_once(&self, node: &Node, id: &str, decided: &Txn) {
        let commit = decided.phase == Phase::PrepareCommit;
        let coordinator_epoch = log_partition(node, id).map_or(-1, |(p, _)| p.leader_epoch);
        let mut remaining = decided.partitions.clone();
        let mut delay = Duration::from_millis(50);
        loop {
            let marker = markers::Marker {
                producer_id: decided.producer_id,
                epoch: decided.epoch,
                commit,
                coordinator_epoch,
            };
            for ((topic, index), result) in markers::write_all(node, &remaining, marker).await {
                let done = match result {
                    Ok(()) => true,
                    // Deleted since: nothing to mark.
                    Err(c) if c == ResponseError::UnknownTopicOrPartition.code() => true,
                    // The partition knows the producer at a later epoch: ended there already.
                    Err(c) if c == ResponseError::InvalidProducerEpoch.code() => true,
                    Err(code) => {
                        tracing::debug!(
                            transactional_id = id,
                            topic,
                            partition = index,
                            code,
                            "transaction marker not written yet; retrying"
                        );
                        false
                    }
                };
                if done {
                    remaining.remove(&(topic, index));
                }
            }
            if remaining.is_empty() {
                break;
            }
            if self.coordinates(node, id).is_err() || !self.still(id, decided).await {
                return; // the new coordinator finishes it, or it is done
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
        let Some(entry) = self.existing(id) else {
            return;
        };
        let mut guard = entry.lock().await;
        let Some(txn) = guard.as_ref() else { return };
        if txn.producer_id != decided.producer_id
            || txn.epoch != decided.epoch
            || txn.phase != decided.phase
        {
            return;
        }
        let mut done = txn.clone();
        done.phase = if commit {
            Phase::CompleteCommit
        } else {
            Phase::CompleteAbort
        };
        done.partitions.clear();
        done.started_ms = -1;
        done.updated_ms = now_ms();
        match self.write(node, id, &done).await {
            Ok(()) => {
                tracing::debug!(
                    transactional_id = id,
                    phase = done.phase.name(),
                    "transaction complete"
                );
                *guard = Some(done);
            }
            Err(code) => {
                // Still decided: the expiry check finishes it again.
                tracing::warn!(
                    transactional_id = id,
                    code,
                    "transaction completion not recorded"
                );
            }
        }
    }

    /// Aborts the open transactions that outlived their timeout, at a bumped epoch so their
    /// producer is fenced (as Kafka), finishes decided ones nobody is finishing, and forgets ids
    /// unused for `transactional_id_expiration_ms`. Called every second.
    pub async fn expire(&self, node: &Node) {
        let entries: Vec<(String, Entry)> = self
            .txns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        let now = now_ms();
        for (id, entry) in entries {
            if self.coordinates(node, &id).is_err() {
                continue;
            }
            let Ok(mut guard) = entry.try_lock() else {
                continue;
            };
            let Some(txn) = guard.as_ref() else { continue };
            if txn.phase.is_prepare() && now - txn.updated_ms > 2_000 {
                // Decided, and no task finishing it (its completion record failed, say): again.
                let decided = txn.clone();
                drop(guard);
                if let Some(node) = node.me() {
                    tokio::spawn(async move {
                        node.transactions.finish(&node, &id, decided).await;
                    });
                }
                continue;
            }
            let idle = matches!(
                txn.phase,
                Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort
            );
            let expiration =
                i64::try_from(node.config.transactional_id_expiration_ms).unwrap_or(i64::MAX);
            if idle && now.saturating_sub(txn.updated_ms) > expiration {
                // Forgotten, as Kafka: a tombstone, then its next producer starts afresh.
                if let Err(code) = self.forget(node, &id).await {
                    tracing::warn!(transactional_id = %id, code, "expired transactional id not removed yet");
                    continue;
                }
                *guard = None;
                drop(guard);
                self.txns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                tracing::info!(transactional_id = %id, "transactional id expired");
                continue;
            }
            if txn.phase != Phase::Ongoing
                || now - txn.started_ms <= i64::from(txn.timeout_ms)
                || txn.epoch == i16::MAX
            {
                continue;
            }
            let aborting = self.bump(txn, Phase::PrepareAbort, now);
            tracing::info!(transactional_id = %id, producer_id = txn.producer_id, timeout_ms = txn.timeout_ms, "transaction timed out; aborting it");
            if let Err(code) = self.write(node, &id, &aborting).await {
                tracing::warn!(transactional_id = %id, code, "timed-out transaction not aborted yet");
                continue;
            }
            *guard = Some(aborting.clone());
            drop(guard);
            if let Some(node) = node.me() {
                tokio::spawn(async move {
                    node.transactions.finish(&node, &id, aborting).await;
                });
            }
        }
    }

    /// A transactional id's state (DescribeTransactions): Err TRANSACTIONAL_ID_NOT_FOUND or the
    /// coordinator error.
    pub async fn describe(&self, node: &Node, id: &str) -> Result<Txn, i16> {
        self.coordinates(node, id)?;
        let entry = self
            .existing(id)
            .ok_or(ResponseError::TransactionalIdNotFound.code())?;
        let txn = entry.lock().await.clone();
        txn.ok_or(ResponseError::TransactionalIdNotFound.code())
    }

    /// Every transactional id coordinated here with its state.
    pub async fn list(&self) -> Vec<(String, Txn)> {
        let entries: Vec<(String, Entry)> = self
            .txns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        let mut out = Vec::with_capacity(entries.len());
        for (id, entry) in entries {
            if let Some(txn) = entry.lock().await.clone() {
                out.push((id, txn));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Rebuilds the transactions of every `__transaction_state` partition open here (start-up).
    pub async fn load(&self, node: &Node) -> Result<usize, weir_storage::StorageError> {
        let Some(topic) = node.topic(TXN_TOPIC) else {
            return Ok(0);
        };
        let mut total = 0;
        for index in 0..topic.partitions.len() {
            total += self
                .load_partition(node, i32::try_from(index).unwrap_or(0))
                .await?;
        }
        Ok(total)
    }

    /// Rebuilds the transactions of one `__transaction_state` partition once it is open here; this
    /// node coordinates them from now on, and finishes those that were decided.
    pub async fn load_partition(
        &self,
        node: &Node,
        index: i32,
    ) -> Result<usize, weir_storage::StorageError> {
        let Some(topic) = node.topic(TXN_TOPIC) else {
            return Ok(0);
        };
        let Some(partition) = node.partition(&topic, index) else {
            return Ok(0);
        };
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&index);
        let mut found: BTreeMap<String, Option<Txn>> = BTreeMap::new();
        group::replay(&partition, TXN_TOPIC, |record| {
            let Some(key) = &record.key else { return };
            if key.first() != Some(&TXN_RECORD) {
                return;
            }
            let Ok(id) = std::str::from_utf8(&key[1..]) else {
                return;
            };
            let txn = record
                .value
                .as_ref()
                .and_then(|v| TxnValue::decode(&v[..]).ok())
                .map(Txn::from_value);
            found.insert(id.to_string(), txn);
        })
        .await?;
        let mut decided = Vec::new();
        {
            let mut txns = self.txns.lock().unwrap_or_else(PoisonError::into_inner);
            let partitions = topic.partitions.len();
            txns.retain(|id, _| group::partition_for(id, partitions) != index);
            for (id, txn) in &found {
                let Some(txn) = txn else { continue };
                if txn.phase.is_prepare() {
                    decided.push((id.clone(), txn.clone()));
                }
                txns.insert(
                    id.clone(),
                    Arc::new(tokio::sync::Mutex::new(Some(txn.clone()))),
                );
            }
        }
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(index);
        if let Some(me) = node.me() {
            for (id, txn) in decided {
                tracing::info!(transactional_id = %id, phase = txn.phase.name(), "finishing a decided transaction");
                let me = me.clone();
                tokio::spawn(async move {
                    me.transactions.finish(&me, &id, txn).await;
                });
            }
        }
        Ok(found.values().filter(|t| t.is_some()).count())
    }

    /// Forgets the transactions of a `__transaction_state` partition that moved away.
    pub fn unload_partition(&self, index: i32, partitions: usize) {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&index);
        self.txns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| group::partition_for(id, partitions) != index);
    }
}

/// Every second until `stop`: checks the timeouts of the transactions coordinated here, and keeps
/// the checkpoints of long-open transactions in the partitions open here.
pub(crate) async fn expire_loop(
    node: std::sync::Weak<Node>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(node) = node.upgrade() else { return };
        node.transactions.expire(&node).await;
        crate::producers::keep_checkpoints(&node).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_records() {
        let txn = Txn {
            producer_id: 42,
            epoch: 3,
            last_epoch: 2,
            timeout_ms: 60_000,
            phase: Phase::PrepareAbort,
            partitions: [("a".to_string(), 1), ("__consumer_offsets".to_string(), 7)].into(),
            started_ms: 1000,
            updated_ms: 2000,
        };
        let bytes = txn.value().encode_to_vec();
        assert_eq!(Txn::from_value(TxnValue::decode(&bytes[..]).unwrap()), txn);
        for phase in Phase::ALL {
            assert_eq!(Phase::named(phase.name()), Some(phase));
            assert_eq!(Phase::from_number(phase.number()), phase);
        }
    }

    #[test]
    fn only_the_current_producer_passes() {
        let txn = Txn {
            producer_id: 5,
            epoch: 2,
            last_epoch: -1,
            timeout_ms: 1,
            phase: Phase::Ongoing,
            partitions: BTreeSet::new(),
            started_ms: 0,
            updated_ms: 0,
        };
        assert_eq!(txn.check(5, 2, 3), Ok(()));
        assert_eq!(
            txn.check(6, 2, 3),
            Err(ResponseError::InvalidProducerIdMapping.code())
        );
        assert_eq!(
            txn.check(5, 1, 3),
            Err(ResponseError::ProducerFenced.code())
        );
        assert_eq!(
            txn.check(5, 1, 1),
            Err(ResponseError::InvalidProducerEpoch.code())
        );
    }
}
