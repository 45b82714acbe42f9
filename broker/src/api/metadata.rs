//! Metadata: this node as the only broker, every partition led by it, with topic ids and leader
//! epochs; unknown topics are created when the client allows it and the broker is configured to.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;
use weir_controller::{ControllerError, Topic};

use crate::error::controller_code;
use crate::node::Node;

pub(super) async fn handle(
    node: &Node,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let topics = match request.topics {
        None => node.topics().iter().map(|t| describe(node, t)).collect(),
        // Metadata v0 has no "all topics" null: an empty list means all.
        Some(list) if list.is_empty() && version == 0 => {
            node.topics().iter().map(|t| describe(node, t)).collect()
        }
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for wanted in list {
                let auto_create =
                    request.allow_auto_topic_creation && node.config.auto_create_topics;
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
    let (host, port) = node.config.advertised();
    let me = BrokerId(node.config.node_id);
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(me)
                .with_host(StrBytes::from_string(host))
                .with_port(port),
        ])
        .with_cluster_id(Some(StrBytes::from_string(node.cluster_id.clone())))
        .with_controller_id(me)
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
    let me = BrokerId(node.config.node_id);
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, stream)| {
            MetadataResponsePartition::default()
                .with_partition_index(i32::try_from(index).unwrap_or(i32::MAX))
                .with_leader_id(me)
                .with_leader_epoch(node.leader_epoch(*stream))
                .with_replica_nodes(vec![me])
                .with_isr_nodes(vec![me])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
}
