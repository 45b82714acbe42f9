//! The group coordinator (DESIGN.md section 7): classic consumer groups and committed offsets.
//!
//! Each group is an actor ([`actor::Group`]). Committed offsets are records in the internal topic
//! `__consumer_offsets` (partition = hash of the group id), appended like any produce and read back
//! at start-up, so they survive restarts and, later, move with the partition to another broker.
//! In `weir serve` this node owns every partition, so it coordinates every group.

pub mod actor;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::batch;
use crate::node::Node;
use actor::{Group, GroupView, Msg};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The key of an offset record in `__consumer_offsets` (prost; tags append-only).
#[derive(Clone, PartialEq, prost::Message)]
struct OffsetKey {
    #[prost(string, tag = "1")]
    group: String,
    #[prost(string, tag = "2")]
    topic: String,
    #[prost(int32, tag = "3")]
    partition: i32,
}

/// The value of an offset record; a null value deletes the offset.
#[derive(Clone, PartialEq, prost::Message)]
struct OffsetValue {
    #[prost(int64, tag = "1")]
    offset: i64,
    #[prost(int32, tag = "2")]
    leader_epoch: i32,
    #[prost(string, optional, tag = "3")]
    metadata: Option<String>,
    #[prost(int64, tag = "4")]
    commit_timestamp_ms: i64,
}

/// Record key prefix: what kind of record follows.
const OFFSET_RECORD: u8 = 0;

type Offsets = HashMap<String, BTreeMap<(String, i32), Committed>>;

/// Groups and their offsets. See the [module documentation](self).
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, mpsc::Sender<Msg>>>,
    offsets: Mutex<Offsets>,
    initial_delay: Duration,
}

impl Coordinator {
    /// A coordinator whose new groups wait `initial_delay` for more members before the first
    /// assignment (Kafka's `group.initial.rebalance.delay.ms`).
    pub fn new(initial_delay: Duration) -> Self {
        Self {
            groups: Mutex::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            initial_delay,
        }
    }

    /// The group's actor, started on first use.
    pub fn group(&self, id: &str) -> mpsc::Sender<Msg> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = groups.get(id).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(Group::new(id.to_string(), self.initial_delay).run(rx));
        groups.insert(id.to_string(), tx.clone());
        tx
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

    /// Asks the group whether a commit may proceed; a Kafka error code.
    pub async fn check_commit(&self, id: &str, generation: i32, member_id: &str) -> i16 {
        let (reply, rx) = oneshot::channel();
        let msg = Msg::CheckCommit {
            generation,
            member_id: member_id.to_string(),
            reply,
        };
        if self.group(id).send(msg).await.is_err() {
            return kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code();
        }
        rx.await
            .unwrap_or(kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code())
    }

    /// A group's committed offsets.
    pub fn committed(&self, group: &str) -> BTreeMap<(String, i32), Committed> {
        self.offsets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned()
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
        self.write(node, group, entries).await
    }

    /// Deletes committed offsets (tombstones in `__consumer_offsets`).
    pub async fn delete_offsets(
        &self,
        node: &Node,
        group: &str,
        partitions: Vec<(String, i32)>,
    ) -> Result<(), i16> {
        let entries = partitions.into_iter().map(|tp| (tp, None)).collect();
        self.write(node, group, entries).await
    }

    /// Deletes a group with no members: its offsets and its actor. Kafka's error code if it cannot.
    pub async fn delete_group(&self, node: &Node, group: &str) -> i16 {
        use kafka_protocol::error::ResponseError;
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
        let partitions: Vec<(String, i32)> = self.committed(group).into_keys().collect();
        if let Err(code) = self.delete_offsets(node, group, partitions).await {
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

    async fn write(
        &self,
        node: &Node,
        group: &str,
        entries: Vec<((String, i32), Option<Committed>)>,
    ) -> Result<(), i16> {
        if entries.is_empty() {
            return Ok(());
        }
        let topic = node
            .topic(OFFSETS_TOPIC)
            .ok_or(kafka_protocol::error::ResponseError::CoordinatorNotAvailable.code())?;
        let partition = partition_for(group, topic.partitions.len());
        let partition = node
            .partition(&topic, partition)
            .ok_or(kafka_protocol::error::ResponseError::NotCoordinator.code())?;
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
        )
        .unwrap_or(0);
        let records: Vec<Record> = entries
            .iter()
            .enumerate()
            .map(|(i, ((topic, p), c))| {
                let key = OffsetKey {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *p,
                };
                let value = c.as_ref().map(|c| {
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
                let mut k = vec![OFFSET_RECORD];
                k.extend_from_slice(&key.encode_to_vec());
                internal_record(i, now, Bytes::from(k), value)
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
        .map_err(|_| kafka_protocol::error::ResponseError::UnknownServerError.code())?;
        let payload = buf.freeze();
        let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
        let epoch = partition.leader_epoch;
        partition
            .stream
            .append_with(count, payload.len(), |base| {
                batch::assign_offsets(&payload, base.get(), epoch)
            })
            .await
            .map_err(|e| crate::error::storage_code(&e))?;
        let mut all = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        let map = all.entry(group.to_string()).or_default();
        for (tp, c) in entries {
            match c {
                Some(c) => map.insert(tp, c),
                None => map.remove(&tp),
            };
        }
        Ok(())
    }

    /// Rebuilds committed offsets from `__consumer_offsets` (at start-up).
    pub async fn load(&self, node: &Node) -> Result<usize, weir_storage::StorageError> {
        let Some(topic) = node.topic(OFFSETS_TOPIC) else {
            return Ok(0);
        };
        let mut loaded = 0;
        for index in 0..topic.partitions.len() {
            let Some(partition) = node.partition(&topic, i32::try_from(index).unwrap_or(0)) else {
                continue;
            };
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
                        tracing::warn!(offset = %stored.base_offset, "undecodable batch in __consumer_offsets skipped");
                        continue;
                    };
                    for record in sets.iter().flat_map(|s| &s.records) {
                        loaded += usize::from(self.apply(record));
                    }
                }
            }
        }
        Ok(loaded)
    }

    fn apply(&self, record: &Record) -> bool {
        let Some(key) = &record.key else { return false };
        if key.first() != Some(&OFFSET_RECORD) {
            return false;
        }
        let Ok(key) = OffsetKey::decode(&key[1..]) else {
            return false;
        };
        let mut all = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        let map = all.entry(key.group.clone()).or_default();
        match record.value.as_ref().map(|v| OffsetValue::decode(&v[..])) {
            Some(Ok(v)) => {
                map.insert(
                    (key.topic, key.partition),
                    Committed {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata,
                    },
                );
            }
            _ => {
                map.remove(&(key.topic, key.partition));
            }
        }
        true
    }
}

/// The `__consumer_offsets` partition of a group.
pub fn partition_for(group: &str, partitions: usize) -> i32 {
    let hash = crc32c::crc32c(group.as_bytes()) as usize;
    i32::try_from(hash % partitions.max(1)).unwrap_or(0)
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
