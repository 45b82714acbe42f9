//! The group coordinator (DESIGN.md section 7): classic consumer groups and committed offsets.
//!
//! Each group is an actor ([`actor::Group`]). Committed offsets and group metadata (generation,
//! leader, members and their assignments) are records in the internal topic `__consumer_offsets`
//! (partition = hash of the group id, formats in [`records`]), appended like any produce and replayed
//! at start-up, so offsets and group state survive restarts and, later, move with the partition to
//! another broker. In `weir serve` this node owns every partition, so it coordinates every group.

pub mod actor;
pub mod consumer;
pub(crate) mod records;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};

use crate::batch;
use crate::node::{Node, Partition};
use actor::{Group, GroupView, Msg, Settings};
use records::{GROUP_RECORD, GroupKey, GroupValue, OFFSET_RECORD, OffsetKey, OffsetValue};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

type Offsets = HashMap<String, BTreeMap<(String, i32), Logged>>;

/// A committed offset and the position of its record in `__consumer_offsets`. Of two commits of
/// one partition the later record wins, in whichever order their appends finish (a client's
/// pipelined OffsetCommits become durable together, and their handlers wake in any order); the
/// log, replayed by the next owner, says the same.
#[derive(Debug, Clone)]
struct Logged {
    at: i64,
    committed: Committed,
}

/// Applies a commit (`Some`) or a deletion (`None`) recorded at `at`, unless the partition's
/// offset was already set by a later record.
fn apply_at(
    map: &mut BTreeMap<(String, i32), Logged>,
    tp: (String, i32),
    at: i64,
    committed: Option<Committed>,
) {
    if map.get(&tp).is_some_and(|known| known.at > at) {
        return;
    }
    match committed {
        Some(committed) => {
            map.insert(tp, Logged { at, committed });
        }
        None => {
            map.remove(&tp);
        }
    }
}

/// Offsets committed inside open transactions (TxnOffsetCommit), by producer id: they become
/// committed offsets when the transaction's commit marker reaches the group's partition, and are
/// dropped at an abort.
type Pending = HashMap<i64, Offsets>;

/// Groups and their offsets. See the [module documentation](self).
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, mpsc::Sender<Msg>>>,
    offsets: Mutex<Offsets>,
    pending: Mutex<Pending>,
    /// The `__consumer_offsets` partitions whose groups and offsets are loaded here: this node
    /// coordinates their groups. Until a partition is loaded its groups are never answered from
    /// memory (an empty answer a client would take for "nothing committed"): see
    /// [`Self::coordinates`].
    loaded: Mutex<HashSet<i32>>,
    /// Bumped whenever `loaded` changes: requests waiting for a load wake up.
    loads: watch::Sender<u64>,
    settings: Settings,
}

/// How long a group's request waits for this node to finish taking over the group's
/// `__consumer_offsets` partition (opening it and replaying it) before it is answered
/// COORDINATOR_LOAD_IN_PROGRESS. Clients wait `request.timeout.ms` (30 s or more) for an answer.
const LOAD_WAIT: Duration = Duration::from_secs(5);

/// When a request that arrives now stops waiting for loads ([`Coordinator::coordinates_until`]).
pub fn load_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + LOAD_WAIT
}

impl Coordinator {
    /// A coordinator whose groups share these settings.
    pub fn new(settings: Settings) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashSet::new()),
            loads: watch::channel(0).0,
            settings,
        }
    }

    /// Whether the groups of `__consumer_offsets` partition `index` are loaded here.
    pub fn is_loaded(&self, index: i32) -> bool {
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&index)
    }

    /// Whether this node coordinates `group`: Ok once its `__consumer_offsets` partition is open
    /// and loaded here; NOT_COORDINATOR if this node's metadata names another coordinator (the
    /// old owner, from the moment it learns of a move). A partition on its way here (assigned,
    /// not yet open or still being replayed) is waited for, up to [`LOAD_WAIT`], then answered
    /// COORDINATOR_LOAD_IN_PROGRESS.
    ///
    /// Waiting, rather than answering at once as Kafka does, keeps a client's commits in order:
    /// clients retry a refused OffsetCommit on their own after a backoff while they send newer
    /// ones (librdkafka's asynchronous commits), so the older commit can land last and the
    /// group's committed offsets go backwards. A request that waits keeps its place, as the
    /// connection serves the next one only after it. (Commits the old owner refuses are still
    /// retried so, as with Kafka.)
    pub async fn coordinates(&self, node: &Node, group: &str) -> Result<(), i16> {
        self.coordinates_until(node, group, load_deadline()).await
    }

    /// [`Self::coordinates`], waiting for a load at most until `deadline` (one deadline for all
    /// the groups of a request).
    pub async fn coordinates_until(
        &self,
        node: &Node,
        group: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), i16> {
        let loading = ResponseError::CoordinatorLoadInProgress.code();
        let mut loads = self.loads.subscribe();
        let mut metadata = node.controller.subscribe();
        loop {
            match self.coordinates_now(node, group) {
                Err(code) if code == loading => {}
                decided => return decided,
            }
            tokio::select! {
                _ = loads.changed() => {}
                Ok(()) = metadata.changed() => {}
                () = tokio::time::sleep_until(deadline) => return Err(loading),
            }
        }
    }

    /// [`Self::coordinates`] without waiting: COORDINATOR_LOAD_IN_PROGRESS while the group's
    /// partition is assigned here but not loaded yet.
    fn coordinates_now(&self, node: &Node, group: &str) -> Result<(), i16> {
        let topic = node
            .topic(OFFSETS_TOPIC)
            .ok_or(ResponseError::CoordinatorNotAvailable.code())?;
        if node.coordinator_of(group) != Some(node.config.node_id) {
            return Err(ResponseError::NotCoordinator.code());
        }
        let index = partition_for(group, topic.partitions.len());
        if node.partition(&topic, index).is_some() && self.is_loaded(index) {
            Ok(())
        } else {
            Err(ResponseError::CoordinatorLoadInProgress.code())
        }
    }

    /// Records that partition `index` was loaded (`true`) or unloaded here, waking the requests
    /// waiting in [`Self::coordinates`].
    fn set_loaded(&self, index: i32, loaded: bool) {
        let mut set = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded {
            set.insert(index);
        } else {
            set.remove(&index);
        }
        drop(set);
        self.loads.send_modify(|n| *n += 1);
    }

    /// The settings groups share.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// The group's actor, started (empty) on first use; a Kafka error code if this node cannot
    /// coordinate it.
    pub async fn group(&self, node: &Node, id: &str) -> Result<mpsc::Sender<Msg>, i16> {
        self.coordinates(node, id).await?;
        self.group_from(node, id, None)
    }

    fn group_from(
        &self,
        node: &Node,
        id: &str,
        restored: Option<GroupValue>,
    ) -> Result<mpsc::Sender<Msg>, i16> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = groups.get(id).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let partition = log_partition(node, id)?;
        let (tx, rx) = mpsc::channel(256);
        let log = spawn_writer(id.to_string(), partition);
        let back = tx.downgrade();
        let group = match restored {
            Some(value) => Group::restore(id.to_string(), self.settings, log, back, value),
            None => Group::new(id.to_string(), self.settings, log, back),
        };
        tokio::spawn(group.run(rx));
        groups.insert(id.to_string(), tx.clone());
        Ok(tx)
    }

    /// Whether the group exists (has an actor or committed offsets).
    pub fn exists(&self, id: &str) -> bool {
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
            || self
                .offsets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(id)
    }

    /// Every known group id.
    pub fn group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for id in self
            .offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
        {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids.sort();
        ids
    }

    /// The group's state; `None` if it has no actor.
    pub async fn describe(&self, id: &str) -> Option<GroupView> {
        let tx = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()?;
        let (reply, rx) = oneshot::channel();
        tx.send(Msg::Describe(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Asks the group whether a commit of these partitions may proceed; a Kafka error code.
    pub async fn check_commit(
        &self,
        node: &Node,
        id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        partitions: Vec<(String, i32)>,
    ) -> i16 {
        let (reply, rx) = oneshot::channel();
        let msg = Msg::CheckCommit {
            generation,
            member_id: member_id.to_string(),
            instance_id: instance_id.map(str::to_string),
            partitions,
            reply,
        };
        let tx = match self.group(node, id).await {
            Ok(tx) => tx,
            Err(code) => return code,
        };
        if tx.send(msg).await.is_err() {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        rx.await
            .unwrap_or(ResponseError::CoordinatorNotAvailable.code())
    }

    /// Asks a KIP-848 group whether a member may fetch offsets (OffsetFetch v9); a Kafka error
    /// code. Groups that do not exist and classic groups accept.
    pub async fn check_fetch(&self, id: &str, member_id: Option<&str>, member_epoch: i32) -> i16 {
        let Some(tx) = self
            .groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
        else {
            return 0;
        };
        let (reply, rx) = oneshot::channel();
        let msg = Msg::CheckFetch {
            member_id: member_id.map(str::to_string),
            member_epoch,
            reply,
        };
        if tx.send(msg).await.is_err() {
            return ResponseError::CoordinatorNotAvailable.code();
        }
        rx.await
            .unwrap_or(ResponseError::CoordinatorNotAvailable.code())
    }

    /// A group's committed offsets.
    pub fn committed(&self, group: &str) -> BTreeMap<(String, i32), Committed> {
        self.offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .map(|map| {
                map.iter()
                    .map(|(tp, logged)| (tp.clone(), logged.committed.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Makes commits durable in `__consumer_offsets`, then visible to OffsetFetch.
    pub async fn commit(
        &self,
        node: &Node,
        group: &str,
        offsets: Vec<((String, i32), Committed)>,
    ) -> Result<(), i16> {
        let entries = offsets.into_iter().map(|(tp, c)| (tp, Some(c))).collect();
        self.write_offsets(node, group, entries, false).await
    }

    /// Deletes committed offsets (tombstones in `__consumer_offsets`).
    pub async fn delete_offsets(
        &self,
        node: &Node,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), i16> {
        let entries = partitions.into_iter().map(|tp| (tp, None)).collect();
        self.write_offsets(node, group, entries, false).await
    }

    /// Deletes a group with no members: its offsets, its metadata and its actor. Kafka's error
    /// code if it cannot.
    pub async fn delete_group(&self, node: &Node, group: &str) -> i16 {
        if !self.exists(group) {
            return ResponseError::GroupIdNotFound.code();
        }
        if self
            .describe(group)
            .await
            .is_some_and(|v| !v.members.is_empty())
        {
            return ResponseError::NonEmptyGroup.code();
        }
        let entries = self
            .committed(group)
            .into_keys()
            .map(|tp| (tp, None))
            .collect();
        if let Err(code) = self.write_offsets(node, group, entries, true).await {
            return code;
        }
        self.offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(group);
        // Dropping the only sender stops the group's task.
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(group);
        0
    }

    /// TxnOffsetCommit: writes the offsets as part of the producer's transaction (records of a
    /// transactional batch, KIP-98); they are committed when its commit marker reaches the group's
    /// partition (`end_transaction`).
    pub async fn commit_in_transaction(
        &self,
        node: &Node,
        group: &str,
        producer_id: i64,
        producer_epoch: i16,
        offsets: Vec<((String, i32), Committed)>,
    ) -> Result<(), i16> {
        self.coordinates(node, group).await?;
        let partition = log_partition(node, group)?;
        let now = now_ms();
        let records: Vec<(Bytes, Option<Bytes>)> = offsets
            .iter()
            .map(|((topic, p), c)| offset_record(group, topic, *p, Some(c), now))
            .collect();
        let (payload, count) = encode(records, Some((producer_id, producer_epoch)))?;
        // Under the partition's producer lock, which markers take too: a fenced producer (a
        // zombie) is refused, and the offsets are pending before any marker can end them.
        let mut state = crate::producers::locked(node, &partition)
            .await
            .map_err(|e| crate::txn::coordinator_code(crate::error::storage_code(&e)))?;
        if state
            .epoch_of(producer_id)
            .is_some_and(|known| producer_epoch < known)
        {
            return Err(ResponseError::ProducerFenced.code());
        }
        let epoch = partition.leader_epoch;
        let mut base = 0;
        let durable = partition
            .stream
            .enqueue(count, payload.len(), |b| {
                base = b.get();
                batch::assign_offsets(&payload, b.get(), epoch)
            })
            .await
            .map_err(|e| crate::txn::coordinator_code(crate::error::storage_code(&e)))?;
        state.begin_transaction(
            producer_id,
            producer_epoch,
            i64::try_from(base).unwrap_or(i64::MAX),
        );
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(producer_id)
            .or_default()
            .entry(group.to_string())
            .or_default()
            .extend(offsets.iter().zip(base..).map(|((tp, c), at)| {
                let at = i64::try_from(at).unwrap_or(i64::MAX);
                let committed = c.clone();
                (tp.clone(), Logged { at, committed })
            }));
        drop(state);
        if let Err(e) = durable.wait().await {
            // Not written: take them back (the producer retries or aborts).
            if let Some(groups) = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(&producer_id)
                && let Some(pending) = groups.get_mut(group)
            {
                for (tp, _) in &offsets {
                    pending.remove(tp);
                }
            }
            node.producers
                .partition(partition.stream.id())
                .lock()
                .await
                .invalidate();
            return Err(crate::txn::coordinator_code(crate::error::storage_code(&e)));
        }
        Ok(())
    }

    /// A transaction marker reached `__consumer_offsets` partition `index`: the producer's pending
    /// offsets for that partition's groups are committed, or dropped.
    pub fn end_transaction(&self, index: i32, partitions: usize, producer_id: i64, commit: bool) {
        let ended: Offsets = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(groups) = pending.get_mut(&producer_id) else {
                return;
            };
            let here: Vec<String> = groups
                .keys()
                .filter(|g| partition_for(g, partitions) == index)
                .cloned()
                .collect();
            let ended = here
                .into_iter()
                .filter_map(|g| groups.remove_entry(&g))
                .collect();
            if groups.is_empty() {
                pending.remove(&producer_id);
            }
            ended
        };
        if !commit {
            return;
        }
        let mut all = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        for (group, offsets) in ended {
            let map = all.entry(group).or_default();
            for (tp, logged) in offsets {
                apply_at(map, tp, logged.at, Some(logged.committed));
            }
        }
    }

    /// Whether an open transaction holds an offset of the group's partition (OffsetFetch with
    /// `require_stable` then answers UNSTABLE_OFFSET_COMMIT, KIP-447).
    pub fn unstable(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|groups| groups.get(group).is_some_and(|o| o.contains_key(&key)))
    }

    /// Appends offset records (a `None` deletes), and with `delete_group` the group's tombstone,
    /// in one batch; then updates what OffsetFetch sees.
    async fn write_offsets(
        &self,
        node: &Node,
        group: &str,
        entries: Vec<((String, i32), Option<Committed>)>,
        delete_group: bool,
    ) -> Result<(), i16> {
        if entries.is_empty() && !delete_group {
            return Ok(());
        }
        self.coordinates(node, group).await?;
        let partition = log_partition(node, group)?;
        let now = now_ms();
        let mut records: Vec<(Bytes, Option<Bytes>)> = entries
            .iter()
            .map(|((topic, p), c)| offset_record(group, topic, *p, c.as_ref(), now))
            .collect();
        if delete_group {
            records.push((group_key(group), None));
        }
        let base = append(&partition, records).await?;
        let mut all = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        let map = all.entry(group.to_string()).or_default();
        for ((tp, c), at) in entries.into_iter().zip(base..) {
            apply_at(map, tp, at, c);
        }
        if map.is_empty() {
            all.remove(group);
        }
        Ok(())
    }

    /// Rebuilds committed offsets and groups from the `__consumer_offsets` partitions open here (at
    /// start-up). Returns the number of offsets and of groups restored.
    pub async fn load(&self, node: &Node) -> Result<(usize, usize), weir_storage::StorageError> {
        let Some(topic) = node.topic(OFFSETS_TOPIC) else {
            return Ok((0, 0));
        };
        let mut total = (0, 0);
        for index in 0..topic.partitions.len() {
            let (offsets, groups) = self
                .load_partition(node, i32::try_from(index).unwrap_or(0))
                .await?;
            total = (total.0 + offsets, total.1 + groups);
        }
        Ok(total)
    }

    /// Rebuilds the offsets and groups of one `__consumer_offsets` partition, once it is open here
    /// (at start-up, or after it moved here): this broker coordinates those groups from now on.
    pub async fn load_partition(
        &self,
        node: &Node,
        index: i32,
    ) -> Result<(usize, usize), weir_storage::StorageError> {
        let Some(topic) = node.topic(OFFSETS_TOPIC) else {
            return Ok((0, 0));
        };
        let Some(partition) = node.partition(&topic, index) else {
            return Ok((0, 0));
        };
        self.set_loaded(index, false);
        let mut groups: HashMap<String, Option<GroupValue>> = HashMap::new();
        replay(&partition, OFFSETS_TOPIC, |record| {
            if record.control {
                // A transaction marker: key (version i16, type i16), 1 commits.
                let commit = record.key.as_ref().is_some_and(|k| k.get(3) == Some(&1));
                self.end_transaction(index, topic.partitions.len(), record.producer_id, commit);
            } else if record.transactional {
                self.apply_pending(record);
            } else {
                self.apply(record, &mut groups);
            }
        })
        .await?;
        let partitions = topic.partitions.len();
        let offsets = self
            .offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(group, _)| partition_for(group, partitions) == index)
            .map(|(_, committed)| committed.len())
            .sum();
        let mut restored = 0;
        for (id, value) in groups {
            let Some(value) = value else { continue };
            if let Err(code) = self.group_from(node, &id, Some(value)) {
                tracing::warn!(group = %id, code, "group not restored");
            } else {
                restored += 1;
            }
        }
        self.set_loaded(index, true);
        Ok((offsets, restored))
    }

    /// Forgets the groups of a `__consumer_offsets` partition that moved away: their actors stop
    /// and their offsets are dropped from memory (the new owner rebuilds them from the partition).
    pub fn unload_partition(&self, index: i32, partitions: usize) {
        self.set_loaded(index, false);
        self.groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|group, _| partition_for(group, partitions) != index);
        self.offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|group, _| partition_for(group, partitions) != index);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for groups in pending.values_mut() {
            groups.retain(|group, _| partition_for(group, partitions) != index);
        }
        pending.retain(|_, groups| !groups.is_empty());
    }

    /// An offset record of a transactional batch, pending until its transaction's marker.
    fn apply_pending(&self, record: &Record) {
        let Some(key) = &record.key else { return };
        if key.first() != Some(&OFFSET_RECORD) {
            return;
        }
        let Ok(key) = OffsetKey::decode(&key[1..]) else {
            return;
        };
        let Some(Ok(v)) = record.value.as_ref().map(|v| OffsetValue::decode(&v[..])) else {
            return;
        };
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(record.producer_id)
            .or_default()
            .entry(key.group)
            .or_default()
            .insert(
                (key.topic, key.partition),
                Logged {
                    at: record.offset,
                    committed: Committed {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata,
                    },
                },
            );
    }

    fn apply(&self, record: &Record, groups: &mut HashMap<String, Option<GroupValue>>) {
        let Some(key) = &record.key else { return };
        match key.first() {
            Some(&OFFSET_RECORD) => {
                let Ok(key) = OffsetKey::decode(&key[1..]) else {
                    return;
                };
                let mut all = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
                let map = all.entry(key.group.clone()).or_default();
                let committed = match record.value.as_ref().map(|v| OffsetValue::decode(&v[..])) {
                    Some(Ok(v)) => Some(Committed {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata,
                    }),
                    _ => None,
                };
                apply_at(map, (key.topic, key.partition), record.offset, committed);
                if map.is_empty() {
                    all.remove(&key.group);
                }
            }
            Some(&GROUP_RECORD) => {
                let Ok(key) = GroupKey::decode(&key[1..]) else {
                    return;
                };
                let value = record
                    .value
                    .as_ref()
                    .and_then(|v| GroupValue::decode(&v[..]).ok());
                groups.insert(key.group, value);
            }
            _ => {}
        }
    }
}

/// The `__consumer_offsets` partition of a group.
pub fn partition_for(group: &str, partitions: usize) -> i32 {
    let hash = crc32c::crc32c(group.as_bytes()) as usize;
    i32::try_from(hash % partitions.max(1)).unwrap_or(0)
}

/// The open `__consumer_offsets` partition holding the group's records.
fn log_partition(node: &Node, group: &str) -> Result<Partition, i16> {
    let topic = node
        .topic(OFFSETS_TOPIC)
        .ok_or(ResponseError::CoordinatorNotAvailable.code())?;
    let index = partition_for(group, topic.partitions.len());
    node.partition(&topic, index)
        .ok_or(ResponseError::NotCoordinator.code())
}

fn group_key(group: &str) -> Bytes {
    records::key(
        GROUP_RECORD,
        &GroupKey {
            group: group.to_string(),
        },
    )
}

/// What to do once a group record is durable (or could not be written).
pub(crate) type AfterWrite = Box<dyn FnOnce(Result<(), i16>) + Send>;

/// A group's metadata writes, in the order the group made them.
pub struct GroupLog {
    tx: mpsc::UnboundedSender<(GroupValue, Option<AfterWrite>)>,
}

impl std::fmt::Debug for GroupLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupLog").finish_non_exhaustive()
    }
}

impl GroupLog {
    /// Queues the group's state for appending; `after` runs once it is durable (or failed).
    /// False if the writer is gone.
    pub(crate) fn write(&self, value: GroupValue, after: Option<AfterWrite>) -> bool {
        self.tx.send((value, after)).is_ok()
    }
}

/// Starts the task appending a group's metadata records one after the other (so a later state
/// never lands before an earlier one); it stops when the group does.
fn spawn_writer(group: String, partition: Partition) -> GroupLog {
    let (tx, mut rx) = mpsc::unbounded_channel::<(GroupValue, Option<AfterWrite>)>();
    tokio::spawn(async move {
        while let Some((value, after)) = rx.recv().await {
            let record = (group_key(&group), Some(Bytes::from(value.encode_to_vec())));
            let result = append(&partition, vec![record]).await.map(|_| ());
            if let Err(code) = result {
                tracing::warn!(group = %group, code, "group metadata not stored");
            }
            if let Some(after) = after {
                after(result);
            }
        }
    });
    GroupLog { tx }
}

/// Reads every record of an internal partition (`__consumer_offsets`, `__transaction_state`) from
/// its log start to its high watermark, in order, as its new owner rebuilds its state. A batch
/// that cannot be decoded is skipped with a warning.
pub(crate) async fn replay(
    partition: &Partition,
    topic: &str,
    mut f: impl FnMut(&Record),
) -> Result<(), weir_storage::StorageError> {
    let stream = &partition.stream;
    let end = stream.high_watermark();
    let mut next = stream.start_offset();
    while next < end {
        let batches = stream.read(next, 1 << 20).await?;
        let Some(last) = batches.last() else { break };
        next = last.end_offset();
        for stored in batches {
            let mut payload = stored.payload.clone();
            let Ok(sets) = RecordBatchDecoder::decode_all(&mut payload) else {
                tracing::warn!(topic, offset = %stored.base_offset, "undecodable batch skipped");
                continue;
            };
            for record in sets.iter().flat_map(|s| &s.records) {
                f(record);
            }
        }
    }
    Ok(())
}

/// The record of a committed offset (a `None` deletes it).
fn offset_record(
    group: &str,
    topic: &str,
    partition: i32,
    committed: Option<&Committed>,
    now: i64,
) -> (Bytes, Option<Bytes>) {
    let key = records::key(
        OFFSET_RECORD,
        &OffsetKey {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
        },
    );
    let value = committed.map(|c| {
        Bytes::from(
            OffsetValue {
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
                commit_timestamp_ms: now,
            }
            .encode_to_vec(),
        )
    });
    (key, value)
}

/// Appends records to an internal partition (`__consumer_offsets`, `__transaction_state`) as one
/// batch; durable when it returns, with the offset of its first record.
pub(crate) async fn append(
    partition: &Partition,
    entries: Vec<(Bytes, Option<Bytes>)>,
) -> Result<i64, i16> {
    let (payload, count) = encode(entries, None)?;
    let epoch = partition.leader_epoch;
    let receipt = partition
        .stream
        .append_with(count, payload.len(), |base| {
            batch::assign_offsets(&payload, base.get(), epoch)
        })
        .await
        .map_err(|e| crate::error::storage_code(&e))?;
    Ok(i64::try_from(receipt.base_offset.get()).unwrap_or(i64::MAX))
}

/// One batch of internal records (a transactional one when `producer` is `(id, epoch)`) and its
/// record count.
fn encode(
    entries: Vec<(Bytes, Option<Bytes>)>,
    producer: Option<(i64, i16)>,
) -> Result<(Bytes, u32), i16> {
    let now = now_ms();
    let records: Vec<Record> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let mut record = internal_record(i, now, key, value);
            if let Some((id, epoch)) = producer {
                record.transactional = true;
                record.producer_id = id;
                record.producer_epoch = epoch;
            }
            record
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|_| ResponseError::UnknownServerError.code())?;
    let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
    Ok((buf.freeze(), count))
}

pub(crate) fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(0)
}

fn internal_record(i: usize, timestamp: i64, key: Bytes, value: Option<Bytes>) -> Record {
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: i64::try_from(i).unwrap_or(0),
        sequence: -1 + i32::try_from(i).unwrap_or(0),
        timestamp,
        key: Some(key),
        value,
        headers: Default::default(),
        delete_horizon: false,
    }
}
