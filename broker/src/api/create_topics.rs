//! CreateTopics: any replication factor is accepted (durability comes from storage, DESIGN.md 7).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use weir_controller::{ControllerError, validate_topic_name};

use crate::error::controller_code;
use crate::node::Node;

pub(super) async fn handle(node: &Node, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let result = CreatableTopicResult::default().with_name(topic.name.clone());
        let partitions = match topic.num_partitions {
            -1 => Ok(node.config.default_partitions),
            n => u32::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ControllerError::InvalidPartitions(0)),
        };
        let configs: BTreeMap<String, String> = topic
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        // As on Kafka: an unknown config or a bad value fails the topic with INVALID_CONFIG.
        if let Some(problem) = configs
            .iter()
            .find_map(|(k, v)| crate::topic_config::validate(k, v).err())
        {
            results.push(
                result
                    .with_error_code(ResponseError::InvalidConfig.code())
                    .with_error_message(Some(StrBytes::from_string(problem))),
            );
            continue;
        }
        let outcome = match partitions {
            Err(e) => Err(e),
            Ok(_) if request.validate_only => match validate_topic_name(&name) {
                Err(e) => Err(e),
                Ok(()) if node.topic(&name).is_some() => {
                    Err(ControllerError::TopicExists(name.clone()))
                }
                Ok(()) => Ok(None),
            },
            Ok(n) => node.create_topic(&name, n, configs).await.map(Some),
        };
        let result = match outcome {
            Ok(created) => {
                let count = created.as_ref().map_or(topic.num_partitions, |t| {
                    i32::try_from(t.partitions.len()).unwrap_or(i32::MAX)
                });
                let result = result.with_num_partitions(count).with_replication_factor(
                    if topic.replication_factor == -1 {
                        1
                    } else {
                        topic.replication_factor
                    },
                );
                match created {
                    Some(t) => result.with_topic_id(t.id),
                    None => result,
                }
            }
            Err(e) => result
                .with_error_code(controller_code(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
        };
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}
