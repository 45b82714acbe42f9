//! The records the coordinator keeps in `__consumer_offsets` (prost messages; tags are
//! append-only, like the controller's records).
//!
//! A record key starts with one byte naming its kind, then the prost key:
//! - [`OFFSET_RECORD`]: [`OffsetKey`] → [`OffsetValue`] (a null value deletes the offset);
//! - [`GROUP_RECORD`]: [`GroupKey`] → [`GroupValue`], the group's generation, leader and members
//!   with their assignments (a null value deletes the group).
//!
//! Like Kafka's `__consumer_offsets`, the latest record per key wins when the partition is replayed.

/// Key prefix of an offset record.
pub(crate) const OFFSET_RECORD: u8 = 0;
/// Key prefix of a group metadata record.
pub(crate) const GROUP_RECORD: u8 = 1;

/// The key of a committed offset.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OffsetKey {
    #[prost(string, tag = "1")]
    pub(crate) group: String,
    #[prost(string, tag = "2")]
    pub(crate) topic: String,
    #[prost(int32, tag = "3")]
    pub(crate) partition: i32,
}

/// A committed offset.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct OffsetValue {
    #[prost(int64, tag = "1")]
    pub(crate) offset: i64,
    #[prost(int32, tag = "2")]
    pub(crate) leader_epoch: i32,
    #[prost(string, optional, tag = "3")]
    pub(crate) metadata: Option<String>,
    #[prost(int64, tag = "4")]
    pub(crate) commit_timestamp_ms: i64,
}

/// The key of a group's metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GroupKey {
    #[prost(string, tag = "1")]
    pub(crate) group: String,
}

/// A group as of its last completed rebalance, or as it became empty.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct GroupValue {
    #[prost(string, tag = "1")]
    pub(crate) protocol_type: String,
    #[prost(int32, tag = "2")]
    pub(crate) generation: i32,
    #[prost(string, optional, tag = "3")]
    pub(crate) protocol: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub(crate) leader: Option<String>,
    #[prost(int64, tag = "5")]
    pub(crate) timestamp_ms: i64,
    #[prost(message, repeated, tag = "6")]
    pub(crate) members: Vec<MemberValue>,
    /// Set for a group of the KIP-848 protocol (then the classic fields are unused).
    #[prost(message, optional, tag = "7")]
    pub(crate) consumer: Option<ConsumerGroupValue>,
}

/// A KIP-848 consumer group: epochs, members, their assignments and targets.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ConsumerGroupValue {
    #[prost(int32, tag = "1")]
    pub(crate) epoch: i32,
    #[prost(int32, tag = "2")]
    pub(crate) assignment_epoch: i32,
    #[prost(message, repeated, tag = "3")]
    pub(crate) members: Vec<ConsumerMemberValue>,
    /// The subscribed topics when the target assignment was computed.
    #[prost(message, repeated, tag = "4")]
    pub(crate) subscribed_topics: Vec<TopicMetaValue>,
}

/// A member of a [`ConsumerGroupValue`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ConsumerMemberValue {
    #[prost(string, tag = "1")]
    pub(crate) member_id: String,
    #[prost(int32, tag = "2")]
    pub(crate) epoch: i32,
    #[prost(int32, tag = "3")]
    pub(crate) previous_epoch: i32,
    #[prost(string, optional, tag = "4")]
    pub(crate) instance_id: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub(crate) rack_id: Option<String>,
    #[prost(string, tag = "6")]
    pub(crate) client_id: String,
    #[prost(uint32, tag = "7")]
    pub(crate) rebalance_timeout_ms: u32,
    #[prost(string, repeated, tag = "8")]
    pub(crate) subscribed: Vec<String>,
    #[prost(string, optional, tag = "9")]
    pub(crate) regex: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub(crate) assignor: Option<String>,
    #[prost(message, repeated, tag = "11")]
    pub(crate) assigned: Vec<TopicPartitionsValue>,
    #[prost(message, repeated, tag = "12")]
    pub(crate) revoking: Vec<TopicPartitionsValue>,
    #[prost(message, repeated, tag = "13")]
    pub(crate) target: Vec<TopicPartitionsValue>,
    #[prost(string, tag = "14")]
    pub(crate) client_host: String,
}

/// Partitions of one topic.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TopicPartitionsValue {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) topic_id: Vec<u8>,
    #[prost(int32, repeated, tag = "2")]
    pub(crate) partitions: Vec<i32>,
}

/// A topic as the assignor saw it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TopicMetaValue {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) id: Vec<u8>,
    #[prost(int32, tag = "3")]
    pub(crate) partitions: i32,
}

/// A member of a [`GroupValue`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct MemberValue {
    #[prost(string, tag = "1")]
    pub(crate) member_id: String,
    #[prost(string, optional, tag = "2")]
    pub(crate) instance_id: Option<String>,
    #[prost(string, tag = "3")]
    pub(crate) client_id: String,
    #[prost(uint32, tag = "4")]
    pub(crate) session_timeout_ms: u32,
    #[prost(uint32, tag = "5")]
    pub(crate) rebalance_timeout_ms: u32,
    /// The member's metadata for the group's chosen protocol.
    #[prost(bytes = "bytes", tag = "6")]
    pub(crate) subscription: bytes::Bytes,
    #[prost(bytes = "bytes", tag = "7")]
    pub(crate) assignment: bytes::Bytes,
    #[prost(string, tag = "8")]
    pub(crate) client_host: String,
}

/// A record key: the kind byte, then the prost key.
pub(crate) fn key(kind: u8, message: &impl prost::Message) -> bytes::Bytes {
    let mut k = Vec::with_capacity(1 + message.encoded_len());
    k.push(kind);
    message.encode_raw(&mut k);
    bytes::Bytes::from(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Records already in `__consumer_offsets` must keep decoding: pin the bytes.
    #[test]
    fn golden_bytes() {
        let k = key(
            OFFSET_RECORD,
            &OffsetKey {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
            },
        );
        assert_eq!(&k[..], b"\x00\x0a\x01g\x12\x01t\x18\x03");
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 2,
            protocol: Some("range".into()),
            leader: Some("m".into()),
            timestamp_ms: 1,
            members: vec![MemberValue {
                member_id: "m".into(),
                instance_id: None,
                client_id: "c".into(),
                session_timeout_ms: 10,
                rebalance_timeout_ms: 20,
                subscription: bytes::Bytes::from_static(b"s"),
                assignment: bytes::Bytes::from_static(b"a"),
                client_host: String::new(),
            }],
            consumer: None,
        };
        let bytes = v.encode_to_vec();
        assert_eq!(
            bytes,
            b"\x0a\x08consumer\x10\x02\x1a\x05range\x22\x01m\x28\x01\x32\x10\x0a\x01m\x1a\x01c\x20\x0a\x28\x14\x32\x01s\x3a\x01a"
        );
        assert_eq!(GroupValue::decode(&bytes[..]).unwrap(), v);
    }
}
