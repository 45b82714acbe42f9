//! The metadata state machine: [`State::apply`] is a pure function of the state and one record.
//!
//! Records are validated before they are written to the log (in [`crate::Controller`]); `apply` only
//! replays them, so it never fails and does no I/O. Replaying the same records always yields the same
//! state, which is what makes the log (and a snapshot, [`State::to_records`]) the truth.

use std::collections::BTreeMap;

use uuid::Uuid;
use weir_common::{Epoch, ObjectId, Offset, StreamId};
use weir_storage::{ObjectDescriptor, ObjectKind, ObjectSlice, StreamDescriptor};

use crate::records::{
    AclBinding, BrokerDrained, BrokerFenced, BrokerRegistered, CommittedObject, CommittedRange,
    ControllerElected, Counters, Kind, ObjectIdFence, ObjectsCommitted, ObjectsCompacted, Record,
    ScramCredential, SecurityChanged, StreamAssigned, StreamCreated, StreamMoveRequested,
    StreamOpened, StreamTrimmed, TopicCreated,
};

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: Uuid,
    /// The stream of each partition, by partition index.
    pub partitions: Vec<StreamId>,
    /// Configs set explicitly (defaults are not stored).
    pub configs: BTreeMap<String, String>,
}

/// A stream as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stream {
    /// Current owner epoch.
    pub epoch: Epoch,
    /// Log start offset.
    pub start: Offset,
    /// End of the data committed in objects.
    pub end: Offset,
    /// Where the committed data lives, in offset order.
    pub slices: Vec<ObjectSlice>,
    /// Each epoch and the first offset written under it, oldest first (answers OffsetForLeaderEpoch).
    pub epochs: Vec<(Epoch, Offset)>,
    /// The broker that owns it (node id; 0: none yet).
    pub owner: u32,
    /// The broker it is moving to (0: not moving).
    pub target: u32,
}

impl Stream {
    /// The broker clients should talk to: the move's target while a move is under way (DESIGN.md 6:
    /// metadata always names a leader, the predicted one during a move), else the owner.
    pub fn leader(&self) -> u32 {
        if self.target != 0 {
            self.target
        } else {
            self.owner
        }
    }
}

/// A broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Broker {
    /// Its registration.
    pub node_id: u32,
    /// Its incarnation.
    pub epoch: u64,
    /// Advertised Kafka host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: u32,
    /// Controller gRPC endpoint.
    pub rpc: String,
    /// Admin HTTP address.
    pub admin: String,
    /// Whether it may become the controller.
    pub controller: bool,
    /// Its WAL (`object` or `file:DIR`).
    pub wal: String,
    /// Declared dead: it owns nothing and serves nothing until it registers again.
    pub fenced: bool,
    /// Drained (before a stop): nothing is placed or balanced onto it until it registers again.
    pub drained: bool,
}

/// The whole cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// Topics by name.
    pub topics: BTreeMap<String, Topic>,
    /// Streams by id.
    pub streams: BTreeMap<StreamId, Stream>,
    /// Committed objects by id.
    pub objects: BTreeMap<ObjectId, ObjectDescriptor>,
    /// Next stream id to hand out.
    pub next_stream_id: u64,
    /// Next Kafka producer id not handed out to a broker.
    pub next_producer_id: u64,
    /// Next object id not yet reserved.
    pub next_object_id: u64,
    /// Object ids below this can no longer be committed (the garbage collector's fence).
    pub object_fence: u64,
    /// Brokers by node id.
    pub brokers: BTreeMap<u32, Broker>,
    /// The active controller.
    pub controller: Option<ActiveController>,
    /// SCRAM credentials by user and mechanism code.
    pub scram: BTreeMap<(String, i32), ScramCredential>,
    /// ACLs, in a stable order.
    pub acls: std::collections::BTreeSet<AclBinding>,
}

/// The broker elected active controller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActiveController {
    /// Its node id.
    pub node_id: u32,
    /// Its term: elections only go up.
    pub term: u64,
    /// Its gRPC endpoint.
    pub rpc: String,
}

fn kind_of(code: u32) -> ObjectKind {
    if code == 1 {
        ObjectKind::Stream
    } else {
        ObjectKind::StreamSet
    }
}

fn code_of(kind: ObjectKind) -> u32 {
    match kind {
        ObjectKind::StreamSet => 0,
        ObjectKind::Stream => 1,
    }
}

impl State {
    /// Applies one validated record.
    pub fn apply(&mut self, record: &Record) {
        let Some(kind) = &record.kind else { return };
        match kind {
            Kind::TopicCreated(t) => {
                let id = Uuid::from_slice(&t.id).unwrap_or_default();
                let partitions: Vec<StreamId> =
                    t.partition_streams.iter().map(|s| StreamId(*s)).collect();
                for stream in &partitions {
                    self.streams.entry(*stream).or_default();
                    self.next_stream_id = self.next_stream_id.max(stream.get() + 1);
                }
                let topic = Topic {
                    name: t.name.clone(),
                    id,
                    partitions,
                    configs: t.configs.clone(),
                };
                self.topics.insert(t.name.clone(), topic);
            }
            Kind::TopicDeleted(t) => {
                if let Some(topic) = self.topics.remove(&t.name) {
                    for stream in topic.partitions {
                        self.streams.remove(&stream);
                    }
                }
            }
            Kind::StreamCreated(s) => {
                let stream = self.streams.entry(StreamId(s.stream)).or_default();
                stream.end = stream.end.max(Offset(s.end_offset));
                self.next_stream_id = self.next_stream_id.max(s.stream + 1);
            }
            Kind::StreamOpened(s) => {
                let (epoch, start) = (Epoch(s.epoch), Offset(s.start_offset));
                // Epochs only grow (the controller bumps them); an older one changes nothing.
                if let Some(stream) = self.streams.get_mut(&StreamId(s.stream))
                    && (epoch > stream.epoch || stream.epochs.is_empty())
                {
                    stream.epoch = epoch;
                    // An epoch under which nothing was written is superseded by the next one.
                    while stream.epochs.last().is_some_and(|(_, at)| *at >= start) {
                        stream.epochs.pop();
                    }
                    stream.epochs.push((epoch, start));
                }
            }
            Kind::ObjectsCommitted(c) => self.apply_commit(c),
            Kind::ObjectsCompacted(c) => {
                for stream in self.streams.values_mut() {
                    stream
                        .slices
                        .retain(|s| !c.removed.contains(&s.object.id.get()));
                }
                // The replaced objects stay in `objects`, unreferenced, until garbage collection.
                self.apply_commit(&ObjectsCommitted {
                    objects: c.added.clone(),
                });
            }
            Kind::TopicConfigsSet(t) => {
                if let Some(topic) = self.topics.get_mut(&t.name) {
                    topic.configs = t.configs.clone();
                }
            }
            Kind::PartitionsAdded(p) => {
                if let Some(topic) = self.topics.get_mut(&p.name) {
                    for stream in &p.partition_streams {
                        topic.partitions.push(StreamId(*stream));
                        self.streams.entry(StreamId(*stream)).or_default();
                        self.next_stream_id = self.next_stream_id.max(stream + 1);
                    }
                }
            }
            Kind::StreamTrimmed(t) => {
                if let Some(stream) = self.streams.get_mut(&StreamId(t.stream)) {
                    stream.start = stream.start.max(Offset(t.start_offset));
                    // Slices wholly below the log start are no longer needed; an object none needs
                    // is garbage (see `unreferenced_objects`).
                    let start = stream.start;
                    stream.slices.retain(|s| s.end > start);
                }
            }
            Kind::ObjectsDeleted(d) => {
                // Only unreferenced objects are ever dropped; an id some slice still names is kept,
                // so a wrong record cannot make committed data unreadable.
                let referenced = self.referenced_objects();
                for id in &d.ids {
                    if !referenced.contains(&ObjectId(*id)) {
                        self.objects.remove(&ObjectId(*id));
                    }
                }
            }
            Kind::ObjectIdFence(f) => self.object_fence = self.object_fence.max(f.below),
            Kind::BrokerRegistered(b) => {
                let newer = self
                    .brokers
                    .get(&b.node_id)
                    .is_none_or(|old| b.epoch >= old.epoch);
                if newer {
                    self.brokers.insert(
                        b.node_id,
                        Broker {
                            node_id: b.node_id,
                            epoch: b.epoch,
                            host: b.host.clone(),
                            port: b.port,
                            rpc: b.rpc.clone(),
                            admin: b.admin.clone(),
                            controller: b.controller,
                            wal: b.wal.clone(),
                            fenced: false,
                            drained: false,
                        },
                    );
                }
            }
            Kind::BrokerFenced(f) => {
                if let Some(broker) = self.brokers.get_mut(&f.node_id)
                    && broker.epoch == f.epoch
                {
                    broker.fenced = true;
                }
            }
            Kind::BrokerDrained(d) => {
                if let Some(broker) = self.brokers.get_mut(&d.node_id)
                    && broker.epoch == d.epoch
                {
                    broker.drained = true;
                }
            }
            Kind::ControllerElected(c) => {
                if self.controller.as_ref().is_none_or(|a| c.term > a.term) {
                    self.controller = Some(ActiveController {
                        node_id: c.node_id,
                        term: c.term,
                        rpc: c.rpc.clone(),
                    });
                }
            }
            Kind::StreamAssigned(a) => {
                if let Some(stream) = self.streams.get_mut(&StreamId(a.stream)) {
                    stream.owner = a.owner;
                    stream.target = 0;
                }
            }
            Kind::StreamMoveRequested(m) => {
                if let Some(stream) = self.streams.get_mut(&StreamId(m.stream)) {
                    stream.target = m.target;
                }
            }
            Kind::Counters(c) => {
                self.next_stream_id = self.next_stream_id.max(c.next_stream_id);
                self.next_object_id = self.next_object_id.max(c.next_object_id);
                self.next_producer_id = self.next_producer_id.max(c.next_producer_id);
            }
            Kind::SecurityChanged(c) => {
                for credential in &c.credentials_set {
                    self.scram.insert(
                        (credential.user.clone(), credential.mechanism),
                        credential.clone(),
                    );
                }
                for key in &c.credentials_deleted {
                    self.scram.remove(&(key.user.clone(), key.mechanism));
                }
                self.acls.extend(c.acls_added.iter().cloned());
                for acl in &c.acls_removed {
                    self.acls.remove(acl);
                }
            }
        }
    }

    fn apply_commit(&mut self, commit: &ObjectsCommitted) {
        for object in &commit.objects {
            let descriptor = ObjectDescriptor {
                id: ObjectId(object.id),
                size: object.size,
                kind: kind_of(object.kind),
            };
            self.next_object_id = self.next_object_id.max(object.id + 1);
            for range in &object.ranges {
                let Some(stream) = self.streams.get_mut(&StreamId(range.stream)) else {
                    continue; // deleted since
                };
                let slice = ObjectSlice {
                    object: descriptor,
                    start: Offset(range.start),
                    end: Offset(range.end),
                    bytes: range.bytes,
                    committed_at_ms: object.committed_at_ms,
                };
                if slice.end <= stream.start {
                    continue; // trimmed away before this commit was applied
                }
                // Ordered by start, then object id: overlapping slices never pass the commit checks,
                // but the order must not depend on the order records were applied in (snapshots
                // list objects by id).
                let at = stream
                    .slices
                    .partition_point(|s| (s.start, s.object.id) < (slice.start, slice.object.id));
                stream.slices.insert(at, slice);
                stream.end = stream.end.max(slice.end);
            }
            // Tracked even when no live stream references it: it exists in the store until garbage
            // collection deletes it.
            self.objects.insert(descriptor.id, descriptor);
        }
    }

    /// Records that rebuild this state from an empty one: the body of a snapshot.
    pub fn to_records(&self) -> Vec<Record> {
        let mut records = vec![Record::from(Kind::Counters(Counters {
            next_stream_id: self.next_stream_id,
            next_object_id: self.next_object_id,
            next_producer_id: self.next_producer_id,
        }))];
        if self.object_fence > 0 {
            records.push(
                Kind::ObjectIdFence(ObjectIdFence {
                    below: self.object_fence,
                })
                .into(),
            );
        }
        for b in self.brokers.values() {
            records.push(
                Kind::BrokerRegistered(BrokerRegistered {
                    node_id: b.node_id,
                    epoch: b.epoch,
                    host: b.host.clone(),
                    port: b.port,
                    rpc: b.rpc.clone(),
                    admin: b.admin.clone(),
                    controller: b.controller,
                    wal: b.wal.clone(),
                })
                .into(),
            );
            if b.fenced {
                records.push(
                    Kind::BrokerFenced(BrokerFenced {
                        node_id: b.node_id,
                        epoch: b.epoch,
                    })
                    .into(),
                );
            }
            if b.drained {
                records.push(
                    Kind::BrokerDrained(BrokerDrained {
                        node_id: b.node_id,
                        epoch: b.epoch,
                    })
                    .into(),
                );
            }
        }
        if let Some(a) = &self.controller {
            records.push(
                Kind::ControllerElected(ControllerElected {
                    node_id: a.node_id,
                    term: a.term,
                    rpc: a.rpc.clone(),
                })
                .into(),
            );
        }
        for topic in self.topics.values() {
            records.push(
                Kind::TopicCreated(TopicCreated {
                    name: topic.name.clone(),
                    id: topic.id.as_bytes().to_vec(),
                    partition_streams: topic.partitions.iter().map(|s| s.get()).collect(),
                    configs: topic.configs.clone(),
                })
                .into(),
            );
        }
        let mut ranges: BTreeMap<ObjectId, Vec<CommittedRange>> = BTreeMap::new();
        let mut committed_at: BTreeMap<ObjectId, u64> = BTreeMap::new();
        for (id, stream) in &self.streams {
            records.push(
                Kind::StreamCreated(StreamCreated {
                    stream: id.get(),
                    end_offset: stream.end.get(),
                })
                .into(),
            );
            for (epoch, start) in &stream.epochs {
                records.push(
                    Kind::StreamOpened(StreamOpened {
                        stream: id.get(),
                        epoch: epoch.get(),
                        start_offset: start.get(),
                    })
                    .into(),
                );
            }
            if stream.owner != 0 {
                records.push(
                    Kind::StreamAssigned(StreamAssigned {
                        stream: id.get(),
                        owner: stream.owner,
                    })
                    .into(),
                );
            }
            if stream.target != 0 {
                records.push(
                    Kind::StreamMoveRequested(StreamMoveRequested {
                        stream: id.get(),
                        target: stream.target,
                    })
                    .into(),
                );
            }
            if stream.start > Offset(0) {
                records.push(
                    Kind::StreamTrimmed(StreamTrimmed {
                        stream: id.get(),
                        start_offset: stream.start.get(),
                    })
                    .into(),
                );
            }

            for slice in &stream.slices {
                ranges
                    .entry(slice.object.id)
                    .or_default()
                    .push(CommittedRange {
                        stream: id.get(),
                        epoch: stream.epoch.get(),
                        start: slice.start.get(),
                        end: slice.end.get(),
                        bytes: slice.bytes,
                    });
                committed_at.insert(slice.object.id, slice.committed_at_ms);
            }
        }
        let objects = self
            .objects
            .values()
            .map(|o| CommittedObject {
                id: o.id.get(),
                size: o.size,
                kind: code_of(o.kind),
                ranges: ranges.remove(&o.id).unwrap_or_default(),
                committed_at_ms: committed_at.get(&o.id).copied().unwrap_or_default(),
            })
            .collect();
        records.push(Kind::ObjectsCommitted(ObjectsCommitted { objects }).into());
        if !self.scram.is_empty() || !self.acls.is_empty() {
            records.push(
                Kind::SecurityChanged(SecurityChanged {
                    credentials_set: self.scram.values().cloned().collect(),
                    credentials_deleted: Vec::new(),
                    acls_added: self.acls.iter().cloned().collect(),
                    acls_removed: Vec::new(),
                })
                .into(),
            );
        }
        records
    }

    /// A stream's descriptor.
    pub fn describe(&self, id: StreamId) -> Option<StreamDescriptor> {
        self.streams.get(&id).map(|s| StreamDescriptor {
            id,
            epoch: s.epoch,
            start_offset: s.start,
            end_offset: s.end,
        })
    }

    /// For OffsetForLeaderEpoch: the largest epoch at or below `epoch` and the offset where it ended
    /// (the start of the next epoch, or `None` for the current one, which ends at the log end).
    /// `None` when the stream has no epoch at or below `epoch`.
    pub fn epoch_end(&self, stream: StreamId, epoch: Epoch) -> Option<(Epoch, Option<Offset>)> {
        let history = &self.streams.get(&stream)?.epochs;
        let i = history.partition_point(|(e, _)| *e <= epoch);
        let (found, _) = *history.get(i.checked_sub(1)?)?;
        Some((found, history.get(i).map(|(_, start)| *start)))
    }

    /// Committed objects that no stream references any more (trimmed by retention or DeleteRecords,
    /// or their streams deleted): to be deleted.
    pub fn unreferenced_objects(&self) -> Vec<ObjectDescriptor> {
        let referenced = self.referenced_objects();
        self.objects
            .values()
            .filter(|o| !referenced.contains(&o.id))
            .copied()
            .collect()
    }

    fn referenced_objects(&self) -> std::collections::BTreeSet<ObjectId> {
        self.streams
            .values()
            .flat_map(|s| s.slices.iter().map(|slice| slice.object.id))
            .collect()
    }

    /// Where retention moves a stream's log start: past the oldest committed slices that are older
    /// than `retention_ms` (by commit time) or that the stream can lose and still keep at least
    /// `retention_bytes`, as Kafka deletes whole segments. `None` when nothing is due.
    pub fn retention_start(
        &self,
        stream: StreamId,
        now_ms: u64,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Option<Offset> {
        let stream = self.streams.get(&stream)?;
        let mut kept: u64 = stream.slices.iter().map(|s| s.bytes).sum();
        let mut start = None;
        for slice in &stream.slices {
            let expired = retention_ms.is_some_and(|ms| {
                slice.committed_at_ms > 0 && slice.committed_at_ms + ms <= now_ms
            });
            let over_size = retention_bytes.is_some_and(|max| kept - slice.bytes >= max);
            if !(expired || over_size) {
                break;
            }
            kept -= slice.bytes;
            start = Some(slice.end);
        }
        start.filter(|s| *s > stream.start)
    }

    /// [`weir_storage::StreamMetadata::find_objects`] over this state: up to `limit` slices of
    /// `stream` from the one holding `from`.
    pub fn find_slices(
        &self,
        stream: StreamId,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<ObjectSlice>, weir_storage::MetadataError> {
        let st = self
            .streams
            .get(&stream)
            .ok_or(weir_storage::MetadataError::UnknownStream(stream))?;
        Ok(weir_storage::slices_from(&st.slices, from, limit))
    }

    /// [`weir_storage::StreamMetadata::object_streams`] over this state.
    pub fn object_streams(
        &self,
        objects: &[ObjectId],
    ) -> BTreeMap<ObjectId, std::collections::BTreeSet<StreamId>> {
        weir_storage::streams_of_objects(
            objects,
            self.streams
                .iter()
                .map(|(id, st)| (*id, st.start, st.slices.as_slice())),
        )
    }

    /// The topic with this id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<&Topic> {
        self.topics.values().find(|t| t.id == id)
    }
}

/// Builds the record of an object commit.
pub(crate) fn commit_record(objects: &[weir_storage::NewObject], committed_at_ms: u64) -> Record {
    Kind::ObjectsCommitted(ObjectsCommitted {
        objects: committed_objects(objects, committed_at_ms),
    })
    .into()
}

/// The record of a compaction. The new objects' slices take the newest commit time of the objects
/// they replace, as a Kafka segment goes by its newest record: retention by time never removes data
/// earlier because it was compacted (older parts may stay a little longer).
pub(crate) fn compaction_record(
    removed: &[ObjectId],
    added: &[weir_storage::NewObject],
    committed_at_ms: u64,
) -> Record {
    Kind::ObjectsCompacted(ObjectsCompacted {
        removed: removed.iter().map(|id| id.get()).collect(),
        added: committed_objects(added, committed_at_ms),
    })
    .into()
}

fn committed_objects(
    objects: &[weir_storage::NewObject],
    committed_at_ms: u64,
) -> Vec<CommittedObject> {
    objects
        .iter()
        .map(|o| CommittedObject {
            id: o.object.id.get(),
            size: o.object.size,
            kind: code_of(o.object.kind),
            ranges: o
                .ranges
                .iter()
                .map(|r| CommittedRange {
                    stream: r.stream_id.get(),
                    epoch: r.epoch.get(),
                    start: r.start.get(),
                    end: r.end.get(),
                    bytes: r.bytes,
                })
                .collect(),
            committed_at_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests;
