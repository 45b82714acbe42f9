//! CreatePartitions, AlterConfigs and IncrementalAlterConfigs for topics. Broker configs are static
//! in Weir (the config file); changing them through the protocol is refused with INVALID_CONFIG.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::error::controller_code;
use crate::node::Node;
use crate::topic_config;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn message(text: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(text))
}

pub(super) async fn create_partitions(
    node: &Node,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let current = node.topic(&topic.name.0).map(|t| t.partitions.len());
        let outcome = match (current, u32::try_from(topic.count)) {
            (None, _) => Err((
                ResponseError::UnknownTopicOrPartition.code(),
                "unknown topic".to_string(),
            )),
            (Some(n), Ok(count)) if (count as usize) > n => {
                if request.validate_only {
                    Ok(())
                } else {
                    node.add_partitions(&topic.name.0, count)
                        .await
                        .map(|_| ())
                        .map_err(|e| (controller_code(&e), e.to_string()))
                }
            }
            (Some(n), _) => Err((
                ResponseError::InvalidPartitions.code(),
                format!("topic has {n} partitions; the count can only grow"),
            )),
        };
        results.push(match outcome {
            Ok(()) => result,
            Err((code, text)) => result
                .with_error_code(code)
                .with_error_message(message(text)),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// One resource's outcome: a Kafka error code and message, or success.
type Outcome = Result<(), (i16, String)>;

fn invalid(text: String) -> (i16, String) {
    (ResponseError::InvalidConfig.code(), text)
}

async fn apply(
    node: &Node,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> Outcome,
) -> Outcome {
    match resource_type {
        TOPIC => {
            let topic = node.topic(name).ok_or((
                ResponseError::UnknownTopicOrPartition.code(),
                format!("unknown topic {name:?}"),
            ))?;
            let mut configs = topic.configs.clone();
            change(&mut configs)?;
            for (key, value) in &configs {
                topic_config::validate(key, value).map_err(invalid)?;
            }
            if !validate_only {
                node.controller
                    .set_topic_configs(name, configs)
                    .await
                    .map_err(|e| (controller_code(&e), e.to_string()))?;
            }
            Ok(())
        }
        BROKER => Err(invalid(
            "broker configs are static in Weir: set them in the config file".into(),
        )),
        other => Err((
            ResponseError::InvalidRequest.code(),
            format!("unsupported resource type {other}"),
        )),
    }
}

pub(super) async fn alter_configs(
    node: &Node,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut responses = Vec::new();
    for resource in request.resources {
        // AlterConfigs replaces the whole set of explicit configs.
        let new: BTreeMap<String, String> = resource
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        let outcome = apply(
            node,
            resource.resource_type,
            &resource.resource_name,
            request.validate_only,
            |configs| {
                *configs = new;
                Ok(())
            },
        )
        .await;
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err((code, text)) => response
                .with_error_code(code)
                .with_error_message(message(text)),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub(super) async fn incremental_alter_configs(
    node: &Node,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let mut responses = Vec::new();
    for resource in request.resources {
        let ops: Vec<(String, i8, Option<String>)> = resource
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.to_string()),
                )
            })
            .collect();
        let outcome = apply(
            node,
            resource.resource_type,
            &resource.resource_name,
            request.validate_only,
            |configs| {
                for (name, op, value) in ops {
                    match (op, value) {
                        (0, Some(v)) => {
                            configs.insert(name, v);
                        }
                        (1, _) => {
                            configs.remove(&name);
                        }
                        (2, Some(v)) | (3, Some(v)) => {
                            let default =
                                topic_config::TOPIC_CONFIGS.iter().find(|c| c.name == name);
                            let Some(default) =
                                default.filter(|c| c.kind == topic_config::ConfigType::List)
                            else {
                                return Err(invalid(format!("{name} is not a list config")));
                            };
                            let current = configs
                                .get(&name)
                                .cloned()
                                .unwrap_or_else(|| default.default.to_string());
                            let mut items: Vec<String> = current
                                .split(',')
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty())
                                .collect();
                            for item in v.split(',').map(str::trim) {
                                if op == 2 && !items.iter().any(|i| i == item) {
                                    items.push(item.to_string());
                                } else if op == 3 {
                                    items.retain(|i| i != item);
                                }
                            }
                            configs.insert(name, items.join(","));
                        }
                        (op, _) => {
                            return Err(invalid(format!("operation {op} on {name} needs a value")));
                        }
                    }
                }
                Ok(())
            },
        )
        .await;
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err((code, text)) => response
                .with_error_code(code)
                .with_error_message(message(text)),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
