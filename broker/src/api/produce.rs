//! Produce: validate each partition's batches, give them offsets, append, answer once durable.
//!
//! All partitions of a request are appended concurrently, so they share the WAL's group commit.
//! `acks` 0, 1 and all behave the same here (DESIGN.md 4: the high watermark never moves before the
//! WAL has the data); with acks=0 the connection sends no response.

use futures::future::join_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use weir_controller::Topic;

use crate::batch;
use crate::error::{batch_code, storage_code};
use crate::node::Node;

pub(super) async fn handle(node: &Node, request: ProduceRequest, version: i16) -> ProduceResponse {
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for data in request.topic_data {
        let topic = if version >= 13 {
            node.topic_by_id(data.topic_id)
        } else {
            node.topic(&data.name.0)
        };
        let unknown = if version >= 13 {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let partitions = join_all(
            data.partition_data
                .into_iter()
                .map(|p| produce_partition(node, topic.as_ref(), p, unknown.code())),
        )
        .await;
        topics.push(
            TopicProduceResponse::default()
                .with_name(data.name)
                .with_topic_id(data.topic_id)
                .with_partition_responses(partitions),
        );
    }
    ProduceResponse::default().with_responses(topics)
}

fn max_message_bytes(node: &Node, topic: &Topic) -> usize {
    topic
        .configs
        .get("max.message.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(node.config.max_message_bytes as usize)
}

async fn produce_partition(
    node: &Node,
    topic: Option<&Topic>,
    data: PartitionProduceData,
    unknown_topic: i16,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(data.index)
        .with_base_offset(-1);
    let Some(topic) = topic else {
        return response.with_error_code(unknown_topic);
    };
    let Some(partition) = node.partition(topic, data.index) else {
        return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let records = data.records.unwrap_or_default();
    let summary = match batch::validate(&records, max_message_bytes(node, topic)) {
        Ok(summary) => summary,
        Err(e) => {
            tracing::debug!(topic = %topic.name, partition = data.index, error = %e, "produce refused");
            return response.with_error_code(batch_code(&e));
        }
    };
    let epoch = partition.leader_epoch;
    let appended = partition
        .stream
        .append_with(summary.offsets, records.len(), |base| {
            batch::assign_offsets(&records, base.get(), epoch)
        })
        .await;
    match appended {
        Ok(receipt) => response
            .with_base_offset(i64::try_from(receipt.base_offset.get()).unwrap_or(i64::MAX))
            .with_log_start_offset(
                i64::try_from(partition.stream.start_offset().get()).unwrap_or(0),
            ),
        Err(e) => {
            tracing::warn!(topic = %topic.name, partition = data.index, error = %e, "append failed");
            response.with_error_code(storage_code(&e))
        }
    }
}
