//! DescribeProducers: the idempotent producers a partition knows (their epoch, last sequence and
//! last timestamp), from the state its owner keeps (read from the stream first if need be).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::error::storage_code;
use crate::node::Node;

pub(super) async fn handle(
    node: &Node,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let topic = node.topic(&t.name.0);
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for index in t.partition_indexes {
            let answer = PartitionResponse::default().with_partition_index(index);
            let Some(topic) = topic.as_ref() else {
                partitions
                    .push(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let Some(partition) = node.partition(topic, index) else {
                partitions.push(answer.with_error_code(node.not_here(topic, index)));
                continue;
            };
            let state = match crate::producers::locked(node, &partition).await {
                Ok(state) => state,
                Err(e) => {
                    partitions.push(answer.with_error_code(storage_code(&e)));
                    continue;
                }
            };
            let active = state
                .active()
                .into_iter()
                .map(|p| {
                    ProducerState::default()
                        .with_producer_id(ProducerId(p.producer_id))
                        .with_producer_epoch(i32::from(p.epoch))
                        .with_last_sequence(p.last_sequence)
                        .with_last_timestamp(p.last_timestamp)
                        .with_coordinator_epoch(-1)
                        .with_current_txn_start_offset(p.transaction_start.unwrap_or(-1))
                })
                .collect();
            partitions.push(answer.with_active_producers(active));
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
