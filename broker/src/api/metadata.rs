//! Metadata: the live brokers and each partition's leader (the owner, or the target of a move under
//! way: DESIGN.md 6, metadata always names a leader) with topic ids and leader epochs; unknown
//! topics are created when the client allows it and the broker is configured to.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;
use weir_controller::{ControllerError, Topic};

use super::Client;
use crate::error::controller_code;
use crate::node::Node;
use crate::security::acl::{CLUSTER, Operation, Resource};

pub(super) async fn handle(
    node: &Node,
    client: &Client,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // All topics: those the client may describe.
    let visible =
        |t: &&Topic| client.may_quietly(node, Operation::Describe, Resource::Topic, &t.name);
    let topics = match request.topics {
        None => node
            .topics()
            .iter()
            .filter(visible)
            .map(|t| describe(node, t))
            .collect(),
        // Metadata v0 has no "all topics" null: an empty list means all.
        Some(list) if list.is_empty() && version == 0 => node
            .topics()
            .iter()
            .filter(visible)
            .map(|t| describe(node, t))
            .collect(),
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for wanted in list {
                let name = wanted
                    .name
                    .as_ref()
                    .map(|n| n.0.to_string())
                    .or_else(|| node.topic_by_id(wanted.topic_id).map(|t| t.name.clone()));
                if let Some(name) = &name
                    && !client.may(node, Operation::Describe, Resource::Topic, name)
                {
                    out.push(
                        MetadataResponseTopic::default()
                            // Asked by id: the name is not given away.
                            .with_name(wanted.name.clone())
                            .with_topic_id(wanted.topic_id)
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                    );
                    continue;
                }
                // Creating a topic needs CREATE on the cluster or on the topic; a client that
                // asks to create one it may not gets TOPIC_AUTHORIZATION_FAILED (as Kafka).
                let missing = name.as_deref().is_some_and(|n| node.topic(n).is_none());
                let wants_create =
                    request.allow_auto_topic_creation && node.config.auto_create_topics && missing;
                let auto_create = wants_create
                    && (client.may_quietly(node, Operation::Create, Resource::Cluster, CLUSTER)
                        || name.as_deref().is_some_and(|n| {
                            client.may(node, Operation::Create, Resource::Topic, n)
                        }));
                if let Some(name) = &name
                    && wants_create
                    && !auto_create
                {
                    out.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                    );
                    continue;
                }
                out.push(
                    lookup(
                        node,
                        wanted.name.map(|n| n.0.to_string()),
                        wanted.topic_id,
                        auto_create,
                    )
                    .await,
                );
            }
            out
        }
    };
    let brokers = node
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(node.cluster_id.clone())))
        .with_controller_id(BrokerId(node.controller_id()))
        .with_topics(topics)
}

async fn lookup(
    node: &Node,
    name: Option<String>,
    id: Uuid,
    auto_create: bool,
) -> MetadataResponseTopic {
    let Some(name) = name else {
        return match node.topic_by_id(id) {
            Some(topic) => describe(node, &topic),
            None => MetadataResponseTopic::default()
                .with_topic_id(id)
                .with_error_code(ResponseError::UnknownTopicId.code()),
        };
    };
    if let Some(topic) = node.topic(&name) {
        return describe(node, &topic);
    }
    let error = |code: i16| {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
            .with_error_code(code)
    };
    if !auto_create {
        return error(ResponseError::UnknownTopicOrPartition.code());
    }
    match node
        .create_topic(&name, node.config.default_partitions, Default::default())
        .await
    {
        Ok(topic) => describe(node, &topic),
        // Created concurrently by another request.
        Err(ControllerError::TopicExists(_)) => match node.topic(&name) {
            Some(topic) => describe(node, &topic),
            None => error(ResponseError::UnknownTopicOrPartition.code()),
        },
        Err(e) => error(controller_code(&e)),
    }
}

fn describe(node: &Node, topic: &Topic) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, stream)| {
            let partition = MetadataResponsePartition::default()
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_epoch(node.leader_epoch(*stream));
            match node.leader_of(*stream) {
                Some(leader) => partition
                    .with_leader_id(BrokerId(leader))
                    .with_replica_nodes(vec![BrokerId(leader)])
                    .with_isr_nodes(vec![BrokerId(leader)]),
                // Not placed yet (no live broker): clients retry.
                None => partition
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1)),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
}
