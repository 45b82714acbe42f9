//! ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848): the broker-side assignment protocol. Requests are checked as
//! Kafka checks them, then handed to the group's actor (state machine in `group::consumer`).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::group::actor::Msg;
use crate::group::consumer::{self, TopicIndex};
use crate::node::Node;

pub(super) async fn heartbeat(
    node: &Node,
    client: &super::Client,
    header: &RequestHeader,
    request: ConsumerGroupHeartbeatRequest,
    version: i16,
) -> ConsumerGroupHeartbeatResponse {
    let refuse = |code: ResponseError, message: String| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if let Err(message) = check(&request, version) {
        return refuse(ResponseError::InvalidRequest, message);
    }
    let mut member_id = request.member_id.to_string();
    if member_id.is_empty() {
        member_id = uuid::Uuid::new_v4().to_string(); // v0: the broker names new members
    }
    let owned = request.topic_partitions.map(|tps| {
        tps.into_iter()
            .map(|tp| (tp.topic_id, tp.partitions.into_iter().collect()))
            .collect()
    });
    let heartbeat = consumer::Heartbeat {
        member_id,
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|i| i.to_string()),
        rack_id: request.rack_id.map(|r| r.to_string()),
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: client.host(),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.0.to_string()).collect()),
        subscribed_topic_regex: request.subscribed_topic_regex.map(|r| r.to_string()),
        server_assignor: request.server_assignor.map(|a| a.to_string()),
        owned,
    };
    let topics: TopicIndex = node
        .topics()
        .into_iter()
        .map(|t| {
            let n = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
            (t.name, (t.id, n))
        })
        .collect();
    let topics = Arc::new(topics);
    let tx = match node.groups.group(node, &request.group_id.0).await {
        Ok(tx) => tx,
        Err(code) => {
            return ConsumerGroupHeartbeatResponse::default().with_error_code(code);
        }
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    let msg = Msg::ConsumerHeartbeat {
        heartbeat,
        topics,
        reply,
    };
    let unavailable = || {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
    };
    if tx.send(msg).await.is_err() {
        return unavailable();
    }
    let Ok(answer) = rx.await else {
        return unavailable();
    };
    let interval = node.groups.settings().consumer_heartbeat_interval;
    match answer {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(StrBytes::from_string(answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(i32::try_from(interval.as_millis()).unwrap_or(i32::MAX))
            .with_assignment(answer.assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(topic, partitions)| {
                            TopicPartitions::default()
                                .with_topic_id(topic)
                                .with_partitions(partitions.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err((code, message)) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}

/// Kafka's request checks (`throwIfConsumerGroupHeartbeatRequestIsInvalid`).
fn check(request: &ConsumerGroupHeartbeatRequest, version: i16) -> Result<(), String> {
    if request.group_id.0.is_empty() {
        return Err("GroupId can't be empty.".to_string());
    }
    if request.instance_id.as_ref().is_some_and(|i| i.is_empty()) {
        return Err("InstanceId can't be empty.".to_string());
    }
    if request.rack_id.as_ref().is_some_and(|r| r.is_empty()) {
        return Err("RackId can't be empty.".to_string());
    }
    if version >= 1 && request.member_id.is_empty() {
        return Err("MemberId can't be empty.".to_string());
    }
    match request.member_epoch {
        0 => {
            if request.rebalance_timeout_ms == -1 {
                return Err("RebalanceTimeoutMs must be provided in first request.".to_string());
            }
            if request
                .topic_partitions
                .as_ref()
                .is_some_and(|t| !t.is_empty())
            {
                return Err("TopicPartitions must be empty when (re-)joining.".to_string());
            }
            if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none()
            {
                return Err(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request."
                        .to_string(),
                );
            }
        }
        -1 | -2 => {}
        e if e < 0 => return Err(format!("MemberEpoch {e} is invalid.")),
        _ => {
            if request.member_id.is_empty() {
                return Err("MemberId can't be empty.".to_string());
            }
        }
    }
    Ok(())
}

/// ConsumerGroupDescribe: KIP-848 groups with their epochs, members, assignments and targets.
/// Classic and unknown groups are GROUP_ID_NOT_FOUND, as on Kafka.
pub(super) async fn describe(
    node: &Node,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response as d;
    let s = |t: &str| StrBytes::from_string(t.to_string());
    let partitions = |list: Vec<consumer::NamedPartitions>| {
        d::Assignment::default().with_topic_partitions(
            list.into_iter()
                .map(|(id, name, ps)| {
                    d::TopicPartitions::default()
                        .with_topic_id(id)
                        .with_topic_name(TopicName(s(&name)))
                        .with_partitions(ps)
                })
                .collect(),
        )
    };
    let mut groups = Vec::with_capacity(request.group_ids.len());
    let deadline = crate::group::load_deadline();
    for id in request.group_ids {
        let described = d::DescribedGroup::default().with_group_id(id.clone());
        if let Err(code) = node.groups.coordinates_until(node, &id.0, deadline).await {
            groups.push(described.with_error_code(code));
            continue;
        }
        let view = node.groups.describe(&id.0).await;
        let Some(group) = view.and_then(|v| v.consumer) else {
            groups.push(
                described
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(s(&format!(
                        "Group {} is not a consumer group.",
                        id.0
                    )))),
            );
            continue;
        };
        let members = group
            .members
            .into_iter()
            .map(|m| {
                d::Member::default()
                    .with_member_id(s(&m.member_id))
                    .with_instance_id(m.instance_id.as_deref().map(s))
                    .with_rack_id(m.rack_id.as_deref().map(s))
                    .with_member_epoch(m.epoch)
                    .with_client_id(s(&m.client_id))
                    .with_client_host(s(&m.client_host))
                    .with_subscribed_topic_names(
                        m.subscribed.iter().map(|t| TopicName(s(t))).collect(),
                    )
                    .with_subscribed_topic_regex(m.regex.as_deref().map(s))
                    .with_assignment(partitions(m.assigned))
                    .with_target_assignment(partitions(m.target))
                    .with_member_type(1) // a consumer of the KIP-848 protocol
            })
            .collect();
        groups.push(
            described
                .with_group_state(s(group.state))
                .with_group_epoch(group.epoch)
                .with_assignment_epoch(group.assignment_epoch)
                .with_assignor_name(s(&group.assignor))
                .with_members(members)
                .with_authorized_operations(i32::MIN),
        );
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
