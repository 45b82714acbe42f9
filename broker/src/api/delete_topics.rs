//! DeleteTopics, by name (v0-5) or by topic id (v6+).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::error::controller_code;
use crate::node::Node;

pub(super) async fn handle(
    node: &Node,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let name = name.or_else(|| node.topic_by_id(id).map(|t| t.name));
        let Some(name) = name else {
            responses.push(
                DeletableTopicResult::default()
                    .with_topic_id(id)
                    .with_error_code(ResponseError::UnknownTopicId.code()),
            );
            continue;
        };
        let result = DeletableTopicResult::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
        responses.push(match node.delete_topic(&name).await {
            Ok(topic) => result.with_topic_id(topic.id),
            Err(e) => result
                .with_error_code(controller_code(&e))
                .with_error_message(Some(StrBytes::from_string(e.to_string()))),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
