//! The one mapping from Weir's errors to Kafka error codes.

use kafka_protocol::error::ResponseError;
use weir_controller::ControllerError;
use weir_storage::{MetadataError, StorageError};

use crate::batch::BatchError;

/// Kafka's error code for a storage error.
pub(crate) fn storage_code(e: &StorageError) -> i16 {
    let code = match e {
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        StorageError::Fenced { .. } => ResponseError::NotLeaderOrFollower,
        StorageError::StreamNotOpen(_) => ResponseError::NotLeaderOrFollower,
        StorageError::AppendTooLarge { .. } => ResponseError::RecordListTooLarge,
        StorageError::Wal(weir_wal::WalError::RecordTooLarge { .. }) => {
            ResponseError::MessageTooLarge
        }
        StorageError::Metadata(MetadataError::UnknownStream(_)) => {
            ResponseError::UnknownTopicOrPartition
        }
        StorageError::Metadata(MetadataError::Fenced { .. }) => ResponseError::NotLeaderOrFollower,
        StorageError::Closed(_) => ResponseError::NotLeaderOrFollower,
        _ => ResponseError::KafkaStorageError,
    };
    code.code()
}

/// Kafka's error code for a rejected produce payload.
pub(crate) fn batch_code(e: &BatchError) -> i16 {
    match e {
        BatchError::Corrupt { .. } => ResponseError::CorruptMessage,
        BatchError::OldMagic { .. } => ResponseError::UnsupportedForMessageFormat,
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        BatchError::ControlBatch { .. } => ResponseError::InvalidRecord,
    }
    .code()
}

/// Kafka's error code for a controller error.
pub(crate) fn controller_code(e: &ControllerError) -> i16 {
    match e {
        ControllerError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        ControllerError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        ControllerError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ControllerError::LostLeadership { .. }
        | ControllerError::NotController(_)
        | ControllerError::Unavailable(_) => ResponseError::NotController,
        ControllerError::UnknownStream(_) => ResponseError::UnknownTopicOrPartition,
        ControllerError::UnknownBroker(_) => ResponseError::BrokerNotAvailable,
        ControllerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        ControllerError::Store { .. } | ControllerError::Format { .. } => {
            ResponseError::KafkaStorageError
        }
    }
    .code()
}
