//! The records the transaction coordinator keeps in `__transaction_state` (prost; tags are
//! append-only). Key: one byte [`TXN_RECORD`] then the transactional id's UTF-8 bytes; value: the
//! transaction's state ([`TxnValue`]), the latest per key winning when the partition is replayed
//! (the topic is compacted).

/// Key prefix of a transaction record.
pub(crate) const TXN_RECORD: u8 = 0;

/// A partition taking part in a transaction.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TxnPartition {
    #[prost(string, tag = "1")]
    pub(crate) topic: String,
    #[prost(int32, tag = "2")]
    pub(crate) partition: i32,
}

/// A transactional id's producer and its current transaction.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TxnValue {
    #[prost(int64, tag = "1")]
    pub(crate) producer_id: i64,
    #[prost(int32, tag = "2")]
    pub(crate) epoch: i32,
    #[prost(int32, tag = "3")]
    pub(crate) last_epoch: i32,
    #[prost(int32, tag = "4")]
    pub(crate) timeout_ms: i32,
    /// `super::Phase` as a number.
    #[prost(int32, tag = "5")]
    pub(crate) phase: i32,
    #[prost(message, repeated, tag = "6")]
    pub(crate) partitions: Vec<TxnPartition>,
    #[prost(int64, tag = "7")]
    pub(crate) started_ms: i64,
    #[prost(int64, tag = "8")]
    pub(crate) updated_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The bytes a transaction record has on disk: changing them breaks every stored
    /// `__transaction_state`.
    #[test]
    fn golden_bytes() {
        let v = TxnValue {
            producer_id: 7,
            epoch: 2,
            last_epoch: 1,
            timeout_ms: 60,
            phase: 1,
            partitions: vec![TxnPartition {
                topic: "t".into(),
                partition: 3,
            }],
            started_ms: 5,
            updated_ms: 6,
        };
        assert_eq!(
            v.encode_to_vec(),
            b"\x08\x07\x10\x02\x18\x01\x20\x3c\x28\x01\x32\x05\x0a\x01t\x10\x03\x38\x05\x40\x06"
        );
    }
}
