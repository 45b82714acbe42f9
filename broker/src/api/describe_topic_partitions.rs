//! DescribeTopicPartitions (KIP-966): topics and their partitions, paged by a cursor so clients
//! can list very many partitions. Topics come in name order; an empty request lists all.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Client;
use crate::node::Node;
use crate::security::acl::{Operation, Resource};

/// Every topic operation (Kafka's AclOperation bits: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS): with no ACLs, everything is allowed.
const ALL_TOPIC_OPERATIONS: i32 =
    1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11;

pub(super) fn handle(
    node: &Node,
    client: &Client,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let describable =
        |name: &str| client.may_quietly(node, Operation::Describe, Resource::Topic, name);
    let mut names: Vec<String> = if request.topics.is_empty() {
        // All topics: those the client may describe.
        node.topics()
            .into_iter()
            .map(|t| t.name)
            .filter(|n| describable(n))
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| t.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (first_topic, mut first_partition) = match &request.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    if let Some(first) = &first_topic {
        names.retain(|n| n >= first);
    }
    let mut budget = usize::try_from(request.response_partition_limit)
        .ok()
        .filter(|l| *l > 0)
        .unwrap_or(2000);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        let topic_name = TopicName(StrBytes::from_string(name.clone()));
        if !client.may(node, Operation::Describe, Resource::Topic, &name) {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(topic_name))
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
            );
            first_partition = 0;
            continue;
        }
        let Some(topic) = node.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(topic_name))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            );
            first_partition = 0;
            continue;
        };
        let mut partitions = Vec::new();
        let from = usize::try_from(first_partition).unwrap_or(0);
        first_partition = 0;
        for (index, stream) in topic.partitions.iter().enumerate().skip(from) {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(topic_name.clone())
                        .with_partition_index(index),
                );
                break;
            }
            budget -= 1;
            let leader = BrokerId(node.leader_of(*stream).unwrap_or(-1));
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(index)
                    .with_leader_id(leader)
                    .with_leader_epoch(node.leader_epoch(*stream))
                    .with_replica_nodes(vec![leader])
                    .with_isr_nodes(vec![leader])
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![])),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name))
                .with_topic_id(topic.id)
                .with_is_internal(topic.name.starts_with("__"))
                .with_partitions(partitions)
                .with_topic_authorized_operations(authorized_operations(node, client, &name)),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

/// The topic operations the client may do, as Kafka's AclOperation bits.
fn authorized_operations(node: &Node, client: &Client, topic: &str) -> i32 {
    if !node.authorizer.enabled {
        return ALL_TOPIC_OPERATIONS;
    }
    [
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
    ]
    .into_iter()
    .filter(|op| client.may_quietly(node, *op, Resource::Topic, topic))
    .fold(0, |bits, op| bits | 1 << (op as i32))
}
