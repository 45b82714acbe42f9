//! OffsetCommit and OffsetFetch (v8+ with several groups at once).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Client;
use crate::group::Committed;
use crate::node::Node;
use crate::security::acl::{Operation, Resource};

pub(super) async fn commit(
    node: &Node,
    client: &Client,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let allowed = if !client.may(node, Operation::Read, Resource::Group, &group) {
        ResponseError::GroupAuthorizationFailed.code()
    } else {
        node.groups
            .check_commit(
                node,
                &group,
                request.generation_id_or_member_epoch,
                &request.member_id,
                request.group_instance_id.as_deref(),
                request
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .map(|p| (t.name.0.to_string(), p.partition_index))
                    })
                    .collect(),
            )
            .await
    };
    let mut accepted = Vec::new();
    let mut codes: Vec<(usize, i32, i16)> = Vec::new();
    for (t, topic) in request.topics.iter().enumerate() {
        let known = node.topic(&topic.name.0);
        let readable = client.may(node, Operation::Read, Resource::Topic, &topic.name.0);
        for p in &topic.partitions {
            let exists = known.as_ref().is_some_and(|k| {
                usize::try_from(p.partition_index).is_ok_and(|i| i < k.partitions.len())
            });
            let code = if allowed != 0 {
                allowed
            } else if !readable {
                ResponseError::TopicAuthorizationFailed.code()
            } else if !exists {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                accepted.push((
                    (topic.name.0.to_string(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    },
                ));
                0
            };
            codes.push((t, p.partition_index, code));
        }
    }
    if let Err(code) = node.groups.commit(node, &group, accepted).await {
        for c in codes.iter_mut().filter(|c| c.2 == 0) {
            c.2 = code;
        }
    }
    let topics = request
        .topics
        .iter()
        .enumerate()
        .map(|(t, topic)| {
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(
                    codes
                        .iter()
                        .filter(|c| c.0 == t)
                        .map(|c| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(c.1)
                                .with_error_code(c.2)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's wanted partitions: `None` means all it has committed.
type Wanted = Option<Vec<(String, Vec<i32>)>>;

/// Per topic, each partition and its committed offset, if any.
type TopicOffsets = Vec<(String, Vec<(i32, Option<Committed>)>)>;

fn lookup(node: &Node, client: &Client, group: &str, wanted: Wanted) -> TopicOffsets {
    let mut committed = node.groups.committed(group);
    // Topics the client may not describe: refused when asked for, left out of "all".
    committed.retain(|(topic, _), _| {
        client.may_quietly(node, Operation::Describe, Resource::Topic, topic)
    });
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let found = partitions
                    .into_iter()
                    .map(|p| (p, committed.get(&(topic.clone(), p)).cloned()))
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut by_topic: TopicOffsets = Vec::new();
            for ((topic, p), c) in committed {
                match by_topic.last_mut() {
                    Some((t, list)) if *t == topic => list.push((p, Some(c))),
                    _ => by_topic.push((topic, vec![(p, Some(c))])),
                }
            }
            by_topic
        }
    }
}

pub(super) async fn fetch(
    node: &Node,
    client: &Client,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let s = |t: &str| StrBytes::from_string(t.to_string());
    let topic_code = |topic: &str| {
        if client.may(node, Operation::Describe, Resource::Topic, topic) {
            0
        } else {
            ResponseError::TopicAuthorizationFailed.code()
        }
    };
    if version < 8 {
        let deadline = crate::group::load_deadline();
        if let Err(code) = may_fetch(node, client, &request.group_id.0, deadline).await {
            // v2+ carry the error for the group; v0-1 only per partition.
            let topics = request
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(
                            t.partition_indexes
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            return OffsetFetchResponse::default()
                .with_error_code(code)
                .with_topics(topics);
        }
        let wanted = request.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        let (stable, group) = (request.require_stable, &request.group_id.0);
        let topics = lookup(node, client, &request.group_id.0, wanted)
            .into_iter()
            .map(|(topic, partitions)| {
                let denied = topic_code(&topic);
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s(&topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(p, c)| {
                                let c = c.unwrap_or(Committed {
                                    offset: -1,
                                    leader_epoch: -1,
                                    metadata: None,
                                });
                                let code = if denied != 0 {
                                    denied
                                } else {
                                    unstable_code(node, stable, group, &topic, p)
                                };
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(c.offset)
                                    .with_committed_leader_epoch(c.leader_epoch)
                                    .with_metadata(Some(s(c.metadata.as_deref().unwrap_or(""))))
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_topics(topics);
    }
    let mut groups = Vec::with_capacity(request.groups.len());
    let deadline = crate::group::load_deadline();
    for g in request.groups {
        if let Err(code) = may_fetch(node, client, &g.group_id.0, deadline).await {
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(code),
            );
            continue;
        }
        // v9: a KIP-848 member fetches under its member epoch.
        if version >= 9 {
            let code = node
                .groups
                .check_fetch(&g.group_id.0, g.member_id.as_deref(), g.member_epoch)
                .await;
            if code != 0 {
                groups.push(
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(code),
                );
                continue;
            }
        }
        groups.push({
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let (stable, group) = (request.require_stable, &g.group_id.0);
            let topics = lookup(node, client, &g.group_id.0, wanted)
                .into_iter()
                .map(|(topic, partitions)| {
                    let denied = topic_code(&topic);
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(p, c)| {
                                    let c = c.unwrap_or(Committed {
                                        offset: -1,
                                        leader_epoch: -1,
                                        metadata: None,
                                    });
                                    let code = if denied != 0 {
                                        denied
                                    } else {
                                        unstable_code(node, stable, group, &topic, p)
                                    };
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(c.offset)
                                        .with_committed_leader_epoch(c.leader_epoch)
                                        .with_metadata(Some(s(c.metadata.as_deref().unwrap_or(""))))
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponseGroup::default()
                .with_group_id(g.group_id)
                .with_topics(topics)
        });
    }
    OffsetFetchResponse::default().with_groups(groups)
}

/// Whether the client may fetch the group's offsets from this node: Ok, or the group's error.
async fn may_fetch(
    node: &Node,
    client: &Client,
    group: &str,
    deadline: tokio::time::Instant,
) -> Result<(), i16> {
    if client.may(node, Operation::Describe, Resource::Group, group) {
        node.groups.coordinates_until(node, group, deadline).await
    } else {
        Err(ResponseError::GroupAuthorizationFailed.code())
    }
}

/// KIP-447: with `require_stable`, an offset an open transaction is committing is not answered
/// yet (UNSTABLE_OFFSET_COMMIT; the client asks again).
fn unstable_code(
    node: &Node,
    require_stable: bool,
    group: &str,
    topic: &str,
    partition: i32,
) -> i16 {
    if require_stable && node.groups.unstable(group, topic, partition) {
        ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}
