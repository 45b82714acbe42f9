//! Metadata records: what the metadata log holds, prost-encoded (no `.proto` file: the messages are
//! declared here with prost's derive, so no `protoc` is needed). Field tags are append-only: never
//! reuse or renumber one.

use std::collections::BTreeMap;

/// One change to the cluster metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// What changed.
    #[prost(
        oneof = "Kind",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19"
    )]
    pub kind: Option<Kind>,
}

/// The kinds of change.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// A topic and its partition streams were created.
    #[prost(message, tag = "1")]
    TopicCreated(TopicCreated),
    /// A topic was deleted.
    #[prost(message, tag = "2")]
    TopicDeleted(TopicDeleted),
    /// A stream was created on its own (not as a topic partition).
    #[prost(message, tag = "3")]
    StreamCreated(StreamCreated),
    /// A stream got a new owner epoch.
    #[prost(message, tag = "4")]
    StreamOpened(StreamOpened),
    /// Objects were uploaded and hold these stream ranges.
    #[prost(message, tag = "5")]
    ObjectsCommitted(ObjectsCommitted),
    /// Id counters moved (object ids reserved in blocks).
    #[prost(message, tag = "6")]
    Counters(Counters),
    /// A topic's explicit configs were replaced.
    #[prost(message, tag = "7")]
    TopicConfigsSet(TopicConfigsSet),
    /// Partitions were added to a topic.
    #[prost(message, tag = "8")]
    PartitionsAdded(PartitionsAdded),
    /// A stream's log start offset advanced.
    #[prost(message, tag = "9")]
    StreamTrimmed(StreamTrimmed),
    /// Objects no stream needs any more were dropped; their keys are deleted after this record.
    #[prost(message, tag = "10")]
    ObjectsDeleted(ObjectsDeleted),
    /// Object ids below a mark can no longer be committed (garbage collection deletes the uncommitted
    /// objects below it).
    #[prost(message, tag = "11")]
    ObjectIdFence(ObjectIdFence),
    /// Compaction: objects replaced by others holding the same data.
    #[prost(message, tag = "12")]
    ObjectsCompacted(ObjectsCompacted),
    /// A broker joined (or rejoined, with a new incarnation) the cluster.
    #[prost(message, tag = "13")]
    BrokerRegistered(BrokerRegistered),
    /// A broker was declared dead (missed heartbeats, or stopped): it owns nothing any more.
    #[prost(message, tag = "14")]
    BrokerFenced(BrokerFenced),
    /// A broker became the active controller.
    #[prost(message, tag = "15")]
    ControllerElected(ControllerElected),
    /// A partition's stream got an owner (at creation, at the end of a move, after a failover).
    #[prost(message, tag = "16")]
    StreamAssigned(StreamAssigned),
    /// A partition's stream is to move to another broker (0: the move is cancelled).
    #[prost(message, tag = "17")]
    StreamMoveRequested(StreamMoveRequested),
    /// A broker is being drained: nothing is placed or balanced onto it until it registers again.
    #[prost(message, tag = "18")]
    BrokerDrained(BrokerDrained),
    /// Users' SCRAM credentials or ACLs changed.
    #[prost(message, tag = "19")]
    SecurityChanged(SecurityChanged),
}

/// Changes to who may log in and what they may do, applied in this order: credentials set,
/// credentials deleted, ACLs added, ACLs removed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecurityChanged {
    /// SCRAM credentials created or replaced (one per user and mechanism).
    #[prost(message, repeated, tag = "1")]
    pub credentials_set: Vec<ScramCredential>,
    /// SCRAM credentials removed.
    #[prost(message, repeated, tag = "2")]
    pub credentials_deleted: Vec<ScramCredentialKey>,
    /// ACLs added (one already present is not added twice).
    #[prost(message, repeated, tag = "3")]
    pub acls_added: Vec<AclBinding>,
    /// ACLs removed (exact bindings).
    #[prost(message, repeated, tag = "4")]
    pub acls_removed: Vec<AclBinding>,
}

/// What the server keeps of a user's password for one SCRAM mechanism (RFC 5802): never the
/// password, nor anything a client could log in with.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ScramCredential {
    /// The user name.
    #[prost(string, tag = "1")]
    pub user: String,
    /// Kafka's mechanism code: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
    #[prost(int32, tag = "2")]
    pub mechanism: i32,
    /// The salt.
    #[prost(bytes = "vec", tag = "3")]
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    #[prost(uint32, tag = "4")]
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")).
    #[prost(bytes = "vec", tag = "5")]
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    #[prost(bytes = "vec", tag = "6")]
    pub server_key: Vec<u8>,
}

/// A user's credential for one mechanism.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ScramCredentialKey {
    /// The user name.
    #[prost(string, tag = "1")]
    pub user: String,
    /// Kafka's mechanism code.
    #[prost(int32, tag = "2")]
    pub mechanism: i32,
}

/// One ACL, in Kafka's model and codes (`AclBinding`): resource type, name and pattern type,
/// principal, host, operation, permission.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct AclBinding {
    /// 2 topic, 3 group, 4 cluster, 5 transactional id, ...
    #[prost(int32, tag = "1")]
    pub resource_type: i32,
    /// The resource's name (or prefix); `*` is every resource of the type.
    #[prost(string, tag = "2")]
    pub resource_name: String,
    /// 3 literal, 4 prefixed.
    #[prost(int32, tag = "3")]
    pub pattern_type: i32,
    /// `User:alice`, or `User:*`.
    #[prost(string, tag = "4")]
    pub principal: String,
    /// A client IP address, or `*`.
    #[prost(string, tag = "5")]
    pub host: String,
    /// 2 all, 3 read, 4 write, 5 create, 6 delete, 7 alter, 8 describe, ...
    #[prost(int32, tag = "6")]
    pub operation: i32,
    /// 2 deny, 3 allow.
    #[prost(int32, tag = "7")]
    pub permission: i32,
}

/// A broker drained of its partitions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BrokerDrained {
    /// Its node id.
    #[prost(uint32, tag = "1")]
    pub node_id: u32,
    /// The incarnation drained.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
}

/// A broker's registration.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BrokerRegistered {
    /// Its node id (`--node-id`).
    #[prost(uint32, tag = "1")]
    pub node_id: u32,
    /// This incarnation: registrations of the same node id get increasing epochs.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// Advertised Kafka host.
    #[prost(string, tag = "3")]
    pub host: String,
    /// Advertised Kafka port.
    #[prost(uint32, tag = "4")]
    pub port: u32,
    /// Its controller gRPC endpoint (`http://host:port`).
    #[prost(string, tag = "5")]
    pub rpc: String,
    /// Its admin HTTP address.
    #[prost(string, tag = "6")]
    pub admin: String,
    /// Whether it may become the controller.
    #[prost(bool, tag = "7")]
    pub controller: bool,
    /// Its WAL (`object`, or `file:DIR`): where a survivor recovers it from.
    #[prost(string, tag = "8")]
    pub wal: String,
}

/// A broker declared dead.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BrokerFenced {
    /// Its node id.
    #[prost(uint32, tag = "1")]
    pub node_id: u32,
    /// The incarnation fenced (a newer registration is not affected).
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
}

/// The active controller.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControllerElected {
    /// Its node id.
    #[prost(uint32, tag = "1")]
    pub node_id: u32,
    /// Its term: one more than the previous controller's.
    #[prost(uint64, tag = "2")]
    pub term: u64,
    /// Its gRPC endpoint (`http://host:port`).
    #[prost(string, tag = "3")]
    pub rpc: String,
}

/// A stream's owner.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAssigned {
    /// The stream.
    #[prost(uint64, tag = "1")]
    pub stream: u64,
    /// The owning broker's node id (0: none).
    #[prost(uint32, tag = "2")]
    pub owner: u32,
}

/// A stream's move to another broker.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamMoveRequested {
    /// The stream.
    #[prost(uint64, tag = "1")]
    pub stream: u64,
    /// The broker it moves to (0: cancel).
    #[prost(uint32, tag = "2")]
    pub target: u32,
}

/// Objects whose slices moved to new objects (the old ones become garbage).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectsCompacted {
    /// The replaced objects' ids.
    #[prost(uint64, repeated, tag = "1")]
    pub removed: Vec<u64>,
    /// The new objects and the ranges they hold.
    #[prost(message, repeated, tag = "2")]
    pub added: Vec<CommittedObject>,
}

/// Objects dropped from the metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectsDeleted {
    /// Their ids.
    #[prost(uint64, repeated, tag = "1")]
    pub ids: Vec<u64>,
}

/// The garbage collector's fence: ids below it are committed already or never will be.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectIdFence {
    /// The first id still committable.
    #[prost(uint64, tag = "1")]
    pub below: u64,
}

/// A stream's new log start offset (it only grows).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamTrimmed {
    /// The stream.
    #[prost(uint64, tag = "1")]
    pub stream: u64,
    /// Nothing below this offset is readable.
    #[prost(uint64, tag = "2")]
    pub start_offset: u64,
}

/// A topic's explicit configs, replaced as a whole.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopicConfigsSet {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The new explicit configs (defaults are not stored).
    #[prost(btree_map = "string, string", tag = "2")]
    pub configs: BTreeMap<String, String>,
}

/// Partitions added to a topic.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PartitionsAdded {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Stream ids of the new partitions, in partition order after the existing ones.
    #[prost(uint64, repeated, tag = "2")]
    pub partition_streams: Vec<u64>,
}

/// A topic was created.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopicCreated {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Topic id (UUID, 16 bytes).
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    /// Stream id of each partition, by partition index.
    #[prost(uint64, repeated, tag = "3")]
    pub partition_streams: Vec<u64>,
    /// Topic configs set explicitly.
    #[prost(btree_map = "string, string", tag = "4")]
    pub configs: BTreeMap<String, String>,
}

/// A topic was deleted.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopicDeleted {
    /// Topic name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// A stream was created.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamCreated {
    /// Its id.
    #[prost(uint64, tag = "1")]
    pub stream: u64,
    /// In snapshots: the stream's committed end, which its slices no longer show once retention has
    /// dropped them all. 0 in the log.
    #[prost(uint64, tag = "2")]
    pub end_offset: u64,
}

/// A stream was opened by a new owner.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamOpened {
    /// The stream.
    #[prost(uint64, tag = "1")]
    pub stream: u64,
    /// Its new epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// The stream's end offset when the epoch began: the first offset written under it.
    #[prost(uint64, tag = "3")]
    pub start_offset: u64,
}

/// Objects and the stream ranges they hold.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectsCommitted {
    /// The objects.
    #[prost(message, repeated, tag = "1")]
    pub objects: Vec<CommittedObject>,
}

/// One committed object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommittedObject {
    /// Object id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Size in bytes.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// 0 = stream set object, 1 = stream object.
    #[prost(uint32, tag = "3")]
    pub kind: u32,
    /// The stream ranges it holds.
    #[prost(message, repeated, tag = "4")]
    pub ranges: Vec<CommittedRange>,
    /// When the controller committed it, in milliseconds since the Unix epoch (0: not recorded).
    #[prost(uint64, tag = "5")]
    pub committed_at_ms: u64,
}

/// A stream range inside a committed object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommittedRange {
    /// The stream.
    #[prost(uint64, tag = "1")]
    pub stream: u64,
    /// The writer's epoch.
    #[prost(uint64, tag = "2")]
    pub epoch: u64,
    /// First offset.
    #[prost(uint64, tag = "3")]
    pub start: u64,
    /// Offset after the last.
    #[prost(uint64, tag = "4")]
    pub end: u64,
    /// Bytes of the range's batches in the object (0: not recorded).
    #[prost(uint64, tag = "5")]
    pub bytes: u64,
}

/// Id counters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counters {
    /// Next stream id to hand out.
    #[prost(uint64, tag = "1")]
    pub next_stream_id: u64,
    /// Next object id not yet reserved.
    #[prost(uint64, tag = "2")]
    pub next_object_id: u64,
    /// Next Kafka producer id not yet handed out (brokers take them in blocks).
    #[prost(uint64, tag = "3")]
    pub next_producer_id: u64,
}

/// The body of a metadata log object or snapshot: records applied in order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecordBatch {
    /// The records.
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<Record>,
}

impl From<Kind> for Record {
    fn from(kind: Kind) -> Self {
        Record { kind: Some(kind) }
    }
}
