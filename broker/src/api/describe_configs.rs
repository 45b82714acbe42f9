//! DescribeConfigs for topics (explicit values and Kafka's defaults) and for this broker.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::node::Node;
use crate::topic_config::{ConfigType, TOPIC_CONFIGS, broker_configs};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
// Config sources, as Kafka numbers them.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

pub(super) fn handle(
    node: &Node,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .map(|keys| keys.iter().map(|k| k.to_string()).collect());
            let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == name));
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entry =
                |name: &str, value: String, source: i8, kind: ConfigType, doc: Option<&str>| {
                    let entry = DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_string(name.to_string()))
                        .with_value(Some(StrBytes::from_string(value)))
                        .with_config_source(source)
                        .with_read_only(source == STATIC_BROKER_CONFIG);
                    if version >= 3 {
                        let entry = entry.with_config_type(kind as i8);
                        match (doc, request.include_documentation) {
                            (Some(doc), true) => entry
                                .with_documentation(Some(StrBytes::from_string(doc.to_string()))),
                            _ => entry,
                        }
                    } else {
                        entry
                    }
                };
            match resource.resource_type {
                TOPIC => match node.topic(&resource.resource_name) {
                    Some(topic) => result.with_configs(
                        TOPIC_CONFIGS
                            .iter()
                            .filter(|c| wanted(c.name))
                            .map(|c| match topic.configs.get(c.name) {
                                Some(v) => entry(
                                    c.name,
                                    v.clone(),
                                    DYNAMIC_TOPIC_CONFIG,
                                    c.kind,
                                    Some(c.doc),
                                ),
                                None => entry(
                                    c.name,
                                    c.default.to_string(),
                                    DEFAULT_CONFIG,
                                    c.kind,
                                    Some(c.doc),
                                ),
                            })
                            .collect(),
                    ),
                    None => result.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                },
                BROKER
                    if resource.resource_name.is_empty()
                        || *resource.resource_name == *node.config.node_id.to_string() =>
                {
                    result.with_configs(
                        broker_configs(&node.config)
                            .into_iter()
                            .filter(|(name, _, _)| wanted(name))
                            .map(|(name, value, kind)| {
                                entry(name, value, STATIC_BROKER_CONFIG, kind, None)
                            })
                            .collect(),
                    )
                }
                BROKER => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str("no such broker"))),
                _ => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "unsupported resource type",
                    ))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
