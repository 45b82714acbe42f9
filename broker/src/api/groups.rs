//! The classic group protocol: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups. The state machine is in `crate::group`.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use crate::group::actor::{Join, Msg};
use crate::node::Node;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

const UNAVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();

pub(super) fn find_coordinator(
    node: &Node,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    // A group's coordinator leads its `__consumer_offsets` partition (key type 0), a transactional
    // id's its `__transaction_state` partition (key type 1).
    let find = |key: &str, key_type: i8| -> Result<(i32, String, i32), i16> {
        let node_id = match key_type {
            0 => node.coordinator_of(key).ok_or(UNAVAILABLE)?,
            1 => node.transaction_coordinator_of(key).ok_or(UNAVAILABLE)?,
            _ => return Err(ResponseError::InvalidRequest.code()),
        };
        let (host, port) = node.broker_address(node_id).ok_or(UNAVAILABLE)?;
        Ok((node_id, host, port))
    };
    if version < 4 {
        let key = request.key.to_string();
        return match find(&key, request.key_type) {
            Ok((id, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(id))
                .with_host(s(&host))
                .with_port(port),
            Err(code) => FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_node_id(BrokerId(-1))
                .with_port(-1),
        };
    }
    let key_type = request.key_type;
    let coordinators = request
        .coordinator_keys
        .into_iter()
        .map(|key| {
            let found = find(&key, key_type);
            let answer = Coordinator::default().with_key(key);
            match found {
                Ok((id, host, port)) => answer
                    .with_node_id(BrokerId(id))
                    .with_host(s(&host))
                    .with_port(port),
                Err(code) => answer
                    .with_error_code(code)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
            }
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

/// Asks the group's actor; a Kafka error code if this node cannot coordinate the group.
async fn ask<T>(
    node: &Node,
    group: &str,
    msg: impl FnOnce(oneshot::Sender<T>) -> Msg,
) -> Result<T, i16> {
    let (reply, rx) = oneshot::channel();
    let tx = node.groups.group(node, group).await?;
    tx.send(msg(reply)).await.map_err(|_| UNAVAILABLE)?;
    rx.await.map_err(|_| UNAVAILABLE)
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(super) async fn join_group(
    node: &Node,
    client: &super::Client,
    header: &RequestHeader,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    if group.is_empty() {
        return JoinGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let session = millis(request.session_timeout_ms);
    if session < Duration::from_millis(1000) || session > Duration::from_secs(30 * 60) {
        return JoinGroupResponse::default()
            .with_error_code(ResponseError::InvalidSessionTimeout.code());
    }
    let join = Join {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: header
            .client_id
            .as_ref()
            .map_or_else(String::new, |c| c.to_string()),
        client_host: client.host(),
        session_timeout: session,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout: if version >= 1 {
            millis(request.rebalance_timeout_ms)
        } else {
            session
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let joined = match ask(node, &group, |reply| Msg::Join(join, reply)).await {
        Ok(joined) => joined,
        Err(code) => return JoinGroupResponse::default().with_error_code(code),
    };
    let members = joined
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(s(&id))
                .with_group_instance_id(instance.map(|i| s(&i)))
                .with_metadata(metadata)
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_error_code(joined.error)
        .with_generation_id(joined.generation)
        .with_protocol_name(joined.protocol.as_deref().map(s))
        .with_leader(s(&joined.leader))
        .with_member_id(s(&joined.member_id))
        .with_members(members);
    if version >= 7 {
        response.with_protocol_type(joined.protocol_type.as_deref().map(s))
    } else {
        response
    }
}

pub(super) async fn sync_group(
    node: &Node,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let answer = ask(node, &group, |reply| Msg::Sync {
        generation: request.generation_id,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        assignments,
        reply,
    })
    .await;
    let (error, assignment) = match answer {
        Ok(answer) => answer,
        Err(code) => return SyncGroupResponse::default().with_error_code(code),
    };
    let response = SyncGroupResponse::default()
        .with_error_code(error)
        .with_assignment(assignment);
    if version >= 5 {
        response
            .with_protocol_type(request.protocol_type)
            .with_protocol_name(request.protocol_name)
    } else {
        response
    }
}

pub(super) async fn heartbeat(node: &Node, request: HeartbeatRequest) -> HeartbeatResponse {
    let code = ask(node, &request.group_id.0, |reply| Msg::Heartbeat {
        generation: request.generation_id,
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
        reply,
    })
    .await
    .unwrap_or_else(|code| code);
    HeartbeatResponse::default().with_error_code(code)
}

pub(super) async fn leave_group(
    node: &Node,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let codes = match ask(node, &request.group_id.0, |reply| Msg::Leave {
        members: members.clone(),
        reply,
    })
    .await
    {
        Ok(codes) => codes,
        Err(code) => return LeaveGroupResponse::default().with_error_code(code),
    };
    if version >= 3 {
        let responses = members
            .into_iter()
            .zip(codes)
            .map(|((id, instance), code)| {
                MemberResponse::default()
                    .with_member_id(s(&id))
                    .with_group_instance_id(instance.map(|i| s(&i)))
                    .with_error_code(code)
            })
            .collect();
        LeaveGroupResponse::default().with_members(responses)
    } else {
        LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
    }
}

pub(super) async fn list_groups(node: &Node, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut groups = Vec::new();
    for id in node.groups.group_ids() {
        let (state, protocol_type, group_type) = match node.groups.describe(&id).await {
            Some(view) => (view.state, view.protocol_type, view.group_type),
            None => ("Empty", "consumer".to_string(), "classic"),
        };
        if !request.types_filter.is_empty()
            && !request
                .types_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(group_type))
        {
            continue;
        }
        if !request.states_filter.is_empty()
            && !request
                .states_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(state))
        {
            continue;
        }
        groups.push(
            ListedGroup::default()
                .with_group_id(GroupId(s(&id)))
                .with_protocol_type(s(&protocol_type))
                .with_group_state(s(state))
                .with_group_type(s(group_type)),
        );
    }
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) async fn describe_groups(
    node: &Node,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    let deadline = crate::group::load_deadline();
    for id in request.groups {
        let described = DescribedGroup::default().with_group_id(id.clone());
        if let Err(code) = node.groups.coordinates_until(node, &id.0, deadline).await {
            groups.push(described.with_error_code(code));
            continue;
        }
        groups.push(match node.groups.describe(&id.0).await {
            Some(view) => described
                .with_group_state(s(view.state))
                .with_protocol_type(s(&view.protocol_type))
                .with_protocol_data(s(&view.protocol))
                .with_members(
                    view.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(s(&m.member_id))
                                .with_group_instance_id(m.instance_id.map(|i| s(&i)))
                                .with_client_id(s(&m.client_id))
                                .with_client_host(s(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
            // Kafka describes an unknown group as Dead with no members.
            None => described.with_group_state(s("Dead")),
        });
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) async fn delete_groups(
    node: &Node,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    let mut results = Vec::with_capacity(request.groups_names.len());
    let deadline = crate::group::load_deadline();
    for id in request.groups_names {
        let code = match node.groups.coordinates_until(node, &id.0, deadline).await {
            Ok(()) => node.groups.delete_group(node, &id.0).await,
            Err(code) => code,
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete. Simplification: a group with members refuses for every partition
/// (GROUP_SUBSCRIBED_TO_TOPIC), where Kafka refuses only the topics the members subscribe to.
pub(super) async fn offset_delete(
    node: &Node,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let group = request.group_id.0.to_string();
    if let Err(code) = node.groups.coordinates(node, &group).await {
        return OffsetDeleteResponse::default().with_error_code(code);
    }
    if !node.groups.exists(&group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupIdNotFound.code());
    }
    let busy = node
        .groups
        .describe(&group)
        .await
        .is_some_and(|v| !v.members.is_empty());
    let code = if busy {
        ResponseError::GroupSubscribedToTopic.code()
    } else {
        0
    };
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let code = if code == 0 {
        node.groups
            .delete_offsets(node, &group, partitions)
            .await
            .err()
            .unwrap_or(0)
    } else {
        code
    };
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
