//! AlterPartitionReassignments and ListPartitionReassignments: Kafka's way to move partitions, mapped
//! onto Weir's moves (DESIGN.md 6), which copy no data. A partition has one replica, so the first
//! broker of the requested replica list is where it goes; a null list cancels a move under way. An
//! ongoing move is listed with the owner being removed and the target being added.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use weir_controller::ControllerError;

use crate::node::Node;

fn text(s: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(s))
}

pub(super) async fn alter(
    node: &Node,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut responses = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let topic = node.topic(&t.name.0);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let answer =
                ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            let stream = topic.as_ref().and_then(|topic| {
                topic
                    .partitions
                    .get(usize::try_from(p.partition_index).ok()?)
                    .copied()
            });
            let Some(stream) = stream else {
                partitions
                    .push(answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let result = match p.replicas.as_deref() {
                // Cancel: the partition stays with its owner.
                None => {
                    let (owner, target) = node
                        .controller
                        .read(|s| s.streams.get(&stream).map(|st| (st.owner, st.target)))
                        .unwrap_or((0, 0));
                    if target == 0 {
                        Err((
                            ResponseError::NoReassignmentInProgress.code(),
                            "no reassignment in progress".to_owned(),
                        ))
                    } else {
                        node.controller
                            .reassign(stream, owner)
                            .await
                            .map_err(|e| error(&e))
                    }
                }
                Some([]) => Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    "an empty replica list".to_owned(),
                )),
                Some([first, ..]) => match u32::try_from(first.0) {
                    Ok(broker) => node
                        .controller
                        .reassign(stream, broker)
                        .await
                        .map_err(|e| error(&e)),
                    Err(_) => Err((
                        ResponseError::InvalidReplicaAssignment.code(),
                        format!("no broker {}", first.0),
                    )),
                },
            };
            partitions.push(match result {
                Ok(()) => answer,
                Err((code, message)) => answer
                    .with_error_code(code)
                    .with_error_message(text(message)),
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}

fn error(e: &ControllerError) -> (i16, String) {
    let code = match e {
        ControllerError::UnknownBroker(_) => ResponseError::InvalidReplicaAssignment,
        ControllerError::UnknownStream(_) | ControllerError::UnknownTopic(_) => {
            ResponseError::UnknownTopicOrPartition
        }
        ControllerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        _ => ResponseError::NotController,
    };
    (code.code(), e.to_string())
}

pub(super) fn list(
    node: &Node,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let wanted: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = node.controller.read(|s| {
        let mut out = Vec::new();
        for topic in s.topics.values() {
            let indexes: Option<&Vec<i32>> = match &wanted {
                None => None,
                Some(list) => match list.iter().find(|(name, _)| *name == topic.name) {
                    Some((_, indexes)) => Some(indexes),
                    None => continue,
                },
            };
            let mut partitions = Vec::new();
            for (index, stream) in topic.partitions.iter().enumerate() {
                let Ok(index) = i32::try_from(index) else {
                    continue;
                };
                if indexes.is_some_and(|list| !list.contains(&index)) {
                    continue;
                }
                let Some(st) = s.streams.get(stream).filter(|st| st.target != 0) else {
                    continue;
                };
                let id = |n: u32| BrokerId(i32::try_from(n).unwrap_or(-1));
                partitions.push(
                    OngoingPartitionReassignment::default()
                        .with_partition_index(index)
                        .with_replicas(vec![id(st.owner), id(st.target)])
                        .with_adding_replicas(vec![id(st.target)])
                        .with_removing_replicas(vec![id(st.owner)]),
                );
            }
            if !partitions.is_empty() {
                out.push(
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
                        .with_partitions(partitions),
                );
            }
        }
        out
    });
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
