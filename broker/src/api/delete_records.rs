//! DeleteRecords: advances partitions' log start offsets (the records below stop being readable;
//! retention later deletes the objects wholly below). Offset -1 means the high watermark.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use weir_common::Offset;

use crate::error::storage_code;
use crate::node::Node;

pub(super) async fn handle(node: &Node, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let known = node.topic(&topic.name.0);
        // As on Kafka: a compact-only topic keeps its history by key, not by offset.
        let compacted = known.as_ref().is_some_and(|t| {
            t.configs
                .get("cleanup.policy")
                .is_some_and(|p| !p.split(',').any(|p| p.trim() == "delete"))
        });
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            let partition = known
                .as_ref()
                .and_then(|t| node.partition(t, p.partition_index));
            let Some(partition) = partition else {
                let code = known
                    .as_ref()
                    .map_or(ResponseError::UnknownTopicOrPartition.code(), |t| {
                        node.not_here(t, p.partition_index)
                    });
                partitions.push(result.with_error_code(code));
                continue;
            };
            if compacted {
                partitions.push(result.with_error_code(ResponseError::PolicyViolation.code()));
                continue;
            }
            let stream = &partition.stream;
            let offset = match p.offset {
                -1 => stream.high_watermark(),
                o if o >= 0 => Offset(o.unsigned_abs()),
                _ => {
                    partitions.push(result.with_error_code(ResponseError::OffsetOutOfRange.code()));
                    continue;
                }
            };
            partitions.push(match stream.delete_records(offset).await {
                Ok(start) => {
                    tracing::info!(topic = %topic.name.0, partition = p.partition_index,
                        start = %start, "records deleted");
                    result.with_low_watermark(i64::try_from(start.get()).unwrap_or(i64::MAX))
                }
                Err(e) => result.with_error_code(storage_code(&e)),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
