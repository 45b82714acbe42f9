//! ACL checks made around the handlers, as Kafka's `KafkaApis` makes them (with
//! `authorizer = "acl"`; without it every check passes and nothing here changes a request):
//!
//! - requests about one resource (a group's membership, a transaction, the cluster) are refused
//!   as a whole with the API's authorization error;
//! - requests naming several topics, groups or config resources are served for the permitted
//!   ones; the others are taken out before the handler runs and answered with
//!   TOPIC_/GROUP_/TRANSACTIONAL_ID_/CLUSTER_AUTHORIZATION_FAILED;
//! - lists (ListGroups, ListTransactions) leave out what the client may not describe.
//!
//! Produce, Fetch, Metadata, DescribeTopicPartitions, OffsetCommit, OffsetFetch and the ACL and
//! SCRAM APIs check inside their handlers, where the answer is built per partition. DescribeCluster
//! is not checked (as Kafka: any client may learn the brokers).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Client;
use crate::node::Node;
use crate::security::acl::{CLUSTER, Operation, Resource};

const TOPIC: i16 = ResponseError::TopicAuthorizationFailed.code();
const GROUP: i16 = ResponseError::GroupAuthorizationFailed.code();
const TXN: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();
const CLUSTER_DENIED: i16 = ResponseError::ClusterAuthorizationFailed.code();

/// What was taken out of a request, to be answered as refused.
#[derive(Debug, Default)]
pub(super) enum Denied {
    #[default]
    Nothing,
    /// Topics and their partitions.
    Partitions(Vec<(TopicName, Vec<i32>)>),
    /// Topics, groups or transactional ids by name.
    Names(Vec<StrBytes>),
    /// DeleteTopics entries: name (if given) and id.
    Deletions(Vec<(Option<StrBytes>, uuid::Uuid)>),
    /// Config resources (type, name).
    Configs(Vec<(i8, StrBytes)>),
    /// FindCoordinator v4+ keys, with the error their key type calls for.
    Keys(Vec<StrBytes>, i16),
    /// Answer lists filtered to what the client may describe.
    Filter,
}

/// Checks a request before it is served: `Err` answers it (refused as a whole), `Ok` serves
/// what remains of it and says what was taken out.
// Returned once per request and moved once: boxing the refusal would cost an allocation.
#[allow(clippy::result_large_err)]
pub(super) fn check(
    node: &Node,
    client: &Client,
    request: RequestKind,
    version: i16,
) -> Result<(RequestKind, Denied), ResponseKind> {
    if !node.authorizer.enabled {
        return Ok((request, Denied::Nothing));
    }
    let may = |op, resource, name: &str| client.may(node, op, resource, name);
    let cluster = |op| client.may(node, op, Resource::Cluster, CLUSTER);
    let topic_ok = |op, name: &str| may(op, Resource::Topic, name);
    Ok(match request {
        RequestKind::JoinGroup(r) => {
            if !may(Operation::Read, Resource::Group, &r.group_id) {
                return Err(ResponseKind::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(GROUP)
                        .with_generation_id(-1),
                ));
            }
            (RequestKind::JoinGroup(r), Denied::Nothing)
        }
        RequestKind::SyncGroup(r) => {
            if !may(Operation::Read, Resource::Group, &r.group_id) {
                return Err(ResponseKind::SyncGroup(
                    SyncGroupResponse::default().with_error_code(GROUP),
                ));
            }
            (RequestKind::SyncGroup(r), Denied::Nothing)
        }
        RequestKind::Heartbeat(r) => {
            if !may(Operation::Read, Resource::Group, &r.group_id) {
                return Err(ResponseKind::Heartbeat(
                    HeartbeatResponse::default().with_error_code(GROUP),
                ));
            }
            (RequestKind::Heartbeat(r), Denied::Nothing)
        }
        RequestKind::LeaveGroup(r) => {
            if !may(Operation::Read, Resource::Group, &r.group_id) {
                return Err(ResponseKind::LeaveGroup(
                    LeaveGroupResponse::default().with_error_code(GROUP),
                ));
            }
            (RequestKind::LeaveGroup(r), Denied::Nothing)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            if !may(Operation::Read, Resource::Group, &r.group_id) {
                return Err(ResponseKind::ConsumerGroupHeartbeat(
                    ConsumerGroupHeartbeatResponse::default().with_error_code(GROUP),
                ));
            }
            (RequestKind::ConsumerGroupHeartbeat(r), Denied::Nothing)
        }
        RequestKind::InitProducerId(r) => {
            let code = match &r.transactional_id {
                Some(id) if !may(Operation::Write, Resource::TransactionalId, id) => TXN,
                Some(_) => 0,
                // KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the cluster or
                // WRITE on some topic.
                None if cluster(Operation::IdempotentWrite)
                    || client.may_any(node, Operation::Write, Resource::Topic) =>
                {
                    0
                }
                None => CLUSTER_DENIED,
            };
            if code != 0 {
                return Err(ResponseKind::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_error_code(code)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                ));
            }
            (RequestKind::InitProducerId(r), Denied::Nothing)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            let code = if !may(
                Operation::Write,
                Resource::TransactionalId,
                &r.transactional_id,
            ) {
                TXN
            } else if !may(Operation::Read, Resource::Group, &r.group_id) {
                GROUP
            } else {
                0
            };
            if code != 0 {
                return Err(ResponseKind::AddOffsetsToTxn(
                    AddOffsetsToTxnResponse::default().with_error_code(code),
                ));
            }
            (RequestKind::AddOffsetsToTxn(r), Denied::Nothing)
        }
        RequestKind::EndTxn(r) => {
            if !may(
                Operation::Write,
                Resource::TransactionalId,
                &r.transactional_id,
            ) {
                return Err(ResponseKind::EndTxn(
                    EndTxnResponse::default().with_error_code(TXN),
                ));
            }
            (RequestKind::EndTxn(r), Denied::Nothing)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            // v0-3: one transaction. Kafka answers every partition: the refused ones with the
            // authorization error, the others OPERATION_NOT_ATTEMPTED.
            let txn_ok = may(
                Operation::Write,
                Resource::TransactionalId,
                &r.v3_and_below_transactional_id,
            );
            let denied_topics: Vec<bool> = r
                .v3_and_below_topics
                .iter()
                .map(|t| !txn_ok || !topic_ok(Operation::Write, &t.name))
                .collect();
            if denied_topics.iter().any(|d| *d) {
                let results = r
                    .v3_and_below_topics
                    .iter()
                    .zip(&denied_topics)
                    .map(|(t, denied)| {
                        let code = match (txn_ok, denied) {
                            (false, _) => TXN,
                            (true, true) => TOPIC,
                            (true, false) => ResponseError::OperationNotAttempted.code(),
                        };
                        add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default()
                            .with_name(t.name.clone())
                            .with_results_by_partition(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                            .with_partition_index(*p)
                                            .with_partition_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                return Err(ResponseKind::AddPartitionsToTxn(
                    AddPartitionsToTxnResponse::default()
                        .with_results_by_topic_v3_and_below(results),
                ));
            }
            (RequestKind::AddPartitionsToTxn(r), Denied::Nothing)
        }
        RequestKind::TxnOffsetCommit(mut r) => {
            let code = if !may(
                Operation::Write,
                Resource::TransactionalId,
                &r.transactional_id,
            ) {
                TXN
            } else if !may(Operation::Read, Resource::Group, &r.group_id) {
                GROUP
            } else {
                0
            };
            if code != 0 {
                let topics = r
                    .topics
                    .iter()
                    .map(|t| {
                        txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                return Err(ResponseKind::TxnOffsetCommit(
                    TxnOffsetCommitResponse::default().with_topics(topics),
                ));
            }
            let (kept, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| topic_ok(Operation::Read, &t.name));
            r.topics = kept;
            let denied = denied
                .into_iter()
                .map(|t| {
                    let partitions = t.partitions.iter().map(|p| p.partition_index).collect();
                    (t.name, partitions)
                })
                .collect();
            (RequestKind::TxnOffsetCommit(r), Denied::Partitions(denied))
        }
        RequestKind::WriteTxnMarkers(r) => {
            if !cluster(Operation::ClusterAction) {
                let markers = r
                    .markers
                    .iter()
                    .map(|m| {
                        write_txn_markers_response::WritableTxnMarkerResult::default()
                            .with_producer_id(m.producer_id)
                            .with_topics(
                                m.topics
                                    .iter()
                                    .map(|t| {
                                        write_txn_markers_response::WritableTxnMarkerTopicResult::default()
                                            .with_name(t.name.clone())
                                            .with_partitions(
                                                t.partition_indexes
                                                    .iter()
                                                    .map(|p| {
                                                        write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
                                                            .with_partition_index(*p)
                                                            .with_error_code(CLUSTER_DENIED)
                                                    })
                                                    .collect(),
                                            )
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                return Err(ResponseKind::WriteTxnMarkers(
                    WriteTxnMarkersResponse::default().with_markers(markers),
                ));
            }
            (RequestKind::WriteTxnMarkers(r), Denied::Nothing)
        }
        RequestKind::AlterPartitionReassignments(r) => {
            if !cluster(Operation::Alter) {
                return Err(ResponseKind::AlterPartitionReassignments(
                    AlterPartitionReassignmentsResponse::default().with_error_code(CLUSTER_DENIED),
                ));
            }
            (RequestKind::AlterPartitionReassignments(r), Denied::Nothing)
        }
        RequestKind::ListPartitionReassignments(r) => {
            if !cluster(Operation::Describe) {
                return Err(ResponseKind::ListPartitionReassignments(
                    ListPartitionReassignmentsResponse::default().with_error_code(CLUSTER_DENIED),
                ));
            }
            (RequestKind::ListPartitionReassignments(r), Denied::Nothing)
        }
        RequestKind::FindCoordinator(mut r) => {
            let allowed = |key: &str| match r.key_type {
                1 => may(Operation::Describe, Resource::TransactionalId, key),
                _ => may(Operation::Describe, Resource::Group, key),
            };
            let code = if r.key_type == 1 { TXN } else { GROUP };
            if version < 4 {
                if !allowed(&r.key) {
                    return Err(ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default()
                            .with_error_code(code)
                            .with_node_id(BrokerId(-1))
                            .with_port(-1),
                    ));
                }
                (RequestKind::FindCoordinator(r), Denied::Nothing)
            } else {
                let (kept, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.coordinator_keys)
                    .into_iter()
                    .partition(|k| allowed(k));
                r.coordinator_keys = kept;
                (RequestKind::FindCoordinator(r), Denied::Keys(denied, code))
            }
        }
        RequestKind::ListOffsets(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.topics), |t| {
                topic_ok(Operation::Describe, &t.name)
            });
            r.topics = kept;
            let denied = denied
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            (RequestKind::ListOffsets(r), Denied::Partitions(denied))
        }
        RequestKind::OffsetForLeaderEpoch(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.topics), |t| {
                topic_ok(Operation::Describe, &t.topic)
            });
            r.topics = kept;
            let denied = denied
                .into_iter()
                .map(|t| (t.topic, t.partitions.iter().map(|p| p.partition).collect()))
                .collect();
            (
                RequestKind::OffsetForLeaderEpoch(r),
                Denied::Partitions(denied),
            )
        }
        RequestKind::DeleteRecords(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.topics), |t| {
                topic_ok(Operation::Delete, &t.name)
            });
            r.topics = kept;
            let denied = denied
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            (RequestKind::DeleteRecords(r), Denied::Partitions(denied))
        }
        RequestKind::DescribeProducers(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.topics), |t| {
                topic_ok(Operation::Read, &t.name)
            });
            r.topics = kept;
            let denied = denied
                .into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect();
            (
                RequestKind::DescribeProducers(r),
                Denied::Partitions(denied),
            )
        }
        RequestKind::OffsetDelete(mut r) => {
            if !may(Operation::Delete, Resource::Group, &r.group_id) {
                return Err(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default().with_error_code(GROUP),
                ));
            }
            let (kept, denied) = split_topics(std::mem::take(&mut r.topics), |t| {
                topic_ok(Operation::Read, &t.name)
            });
            r.topics = kept;
            let denied = denied
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            (RequestKind::OffsetDelete(r), Denied::Partitions(denied))
        }
        RequestKind::CreateTopics(mut r) => {
            let cluster_create = cluster(Operation::Create);
            let (kept, denied) = split_topics(std::mem::take(&mut r.topics), |t| {
                cluster_create || topic_ok(Operation::Create, &t.name)
            });
            r.topics = kept;
            let denied = denied.into_iter().map(|t| t.name.0).collect();
            (RequestKind::CreateTopics(r), Denied::Names(denied))
        }
        RequestKind::DeleteTopics(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.topic_names), |t| {
                topic_ok(Operation::Delete, t)
            });
            r.topic_names = kept;
            let mut denied: Vec<(Option<StrBytes>, uuid::Uuid)> = denied
                .into_iter()
                .map(|t| (Some(t.0), uuid::Uuid::nil()))
                .collect();
            let (kept, by_state) = split_topics(std::mem::take(&mut r.topics), |t| {
                let name = t
                    .name
                    .as_ref()
                    .map(|n| n.0.to_string())
                    .or_else(|| node.topic_by_id(t.topic_id).map(|t| t.name.clone()))
                    .unwrap_or_default();
                topic_ok(Operation::Delete, &name)
            });
            r.topics = kept;
            denied.extend(
                by_state
                    .into_iter()
                    .map(|t| (t.name.map(|n| n.0), t.topic_id)),
            );
            (RequestKind::DeleteTopics(r), Denied::Deletions(denied))
        }
        RequestKind::CreatePartitions(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.topics), |t| {
                topic_ok(Operation::Alter, &t.name)
            });
            r.topics = kept;
            let denied = denied.into_iter().map(|t| t.name.0).collect();
            (RequestKind::CreatePartitions(r), Denied::Names(denied))
        }
        RequestKind::DeleteGroups(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.groups_names), |g| {
                may(Operation::Delete, Resource::Group, g)
            });
            r.groups_names = kept;
            let denied = denied.into_iter().map(|g| g.0).collect();
            (RequestKind::DeleteGroups(r), Denied::Names(denied))
        }
        RequestKind::DescribeGroups(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.groups), |g| {
                may(Operation::Describe, Resource::Group, g)
            });
            r.groups = kept;
            let denied = denied.into_iter().map(|g| g.0).collect();
            (RequestKind::DescribeGroups(r), Denied::Names(denied))
        }
        RequestKind::DescribeTransactions(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.transactional_ids), |t| {
                may(Operation::Describe, Resource::TransactionalId, t)
            });
            r.transactional_ids = kept;
            let denied = denied.into_iter().map(|t| t.0).collect();
            (RequestKind::DescribeTransactions(r), Denied::Names(denied))
        }
        RequestKind::DescribeConfigs(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.resources), |c| {
                config_ok(
                    client,
                    node,
                    Operation::DescribeConfigs,
                    c.resource_type,
                    &c.resource_name,
                )
            });
            r.resources = kept;
            let denied = denied
                .into_iter()
                .map(|c| (c.resource_type, c.resource_name))
                .collect();
            (RequestKind::DescribeConfigs(r), Denied::Configs(denied))
        }
        RequestKind::AlterConfigs(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.resources), |c| {
                config_ok(
                    client,
                    node,
                    Operation::AlterConfigs,
                    c.resource_type,
                    &c.resource_name,
                )
            });
            r.resources = kept;
            let denied = denied
                .into_iter()
                .map(|c| (c.resource_type, c.resource_name))
                .collect();
            (RequestKind::AlterConfigs(r), Denied::Configs(denied))
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.resources), |c| {
                config_ok(
                    client,
                    node,
                    Operation::AlterConfigs,
                    c.resource_type,
                    &c.resource_name,
                )
            });
            r.resources = kept;
            let denied = denied
                .into_iter()
                .map(|c| (c.resource_type, c.resource_name))
                .collect();
            (
                RequestKind::IncrementalAlterConfigs(r),
                Denied::Configs(denied),
            )
        }
        RequestKind::ConsumerGroupDescribe(mut r) => {
            let (kept, denied) = split_topics(std::mem::take(&mut r.group_ids), |g| {
                may(Operation::Describe, Resource::Group, g)
            });
            r.group_ids = kept;
            let denied = denied.into_iter().map(|g| g.0).collect();
            (RequestKind::ConsumerGroupDescribe(r), Denied::Names(denied))
        }
        r @ (RequestKind::ListGroups(_) | RequestKind::ListTransactions(_)) => (r, Denied::Filter),
        other => (other, Denied::Nothing),
    })
}

/// Config resources: 2 is a topic, 4 (broker) and 8 (broker logger) are the cluster's.
fn config_ok(client: &Client, node: &Node, op: Operation, resource_type: i8, name: &str) -> bool {
    match resource_type {
        2 => client.may(node, op, Resource::Topic, name),
        _ => client.may(node, op, Resource::Cluster, CLUSTER),
    }
}

fn split_topics<T>(all: Vec<T>, mut keep: impl FnMut(&T) -> bool) -> (Vec<T>, Vec<T>) {
    all.into_iter().partition(|t| keep(t))
}

/// Adds what [`check`] took out back to the response, refused; filters lists.
pub(super) fn merge(
    node: &Node,
    client: &Client,
    response: ResponseKind,
    denied: Denied,
) -> ResponseKind {
    use Denied::*;
    match (response, denied) {
        (response, Nothing) => response,
        (ResponseKind::TxnOffsetCommit(mut r), Partitions(denied)) => {
            r.topics.extend(denied.into_iter().map(|(name, partitions)| {
                txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|p| {
                                txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(TOPIC)
                            })
                            .collect(),
                    )
            }));
            ResponseKind::TxnOffsetCommit(r)
        }
        (ResponseKind::ListOffsets(mut r), Partitions(denied)) => {
            r.topics
                .extend(denied.into_iter().map(|(name, partitions)| {
                    list_offsets_response::ListOffsetsTopicResponse::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    list_offsets_response::ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p)
                                        .with_error_code(TOPIC)
                                        .with_timestamp(-1)
                                        .with_offset(-1)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::ListOffsets(r)
        }
        (ResponseKind::OffsetForLeaderEpoch(mut r), Partitions(denied)) => {
            r.topics
                .extend(denied.into_iter().map(|(name, partitions)| {
                    offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                        .with_topic(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    offset_for_leader_epoch_response::EpochEndOffset::default()
                                        .with_partition(p)
                                        .with_error_code(TOPIC)
                                        .with_leader_epoch(-1)
                                        .with_end_offset(-1)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::OffsetForLeaderEpoch(r)
        }
        (ResponseKind::DeleteRecords(mut r), Partitions(denied)) => {
            r.topics
                .extend(denied.into_iter().map(|(name, partitions)| {
                    delete_records_response::DeleteRecordsTopicResult::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    delete_records_response::DeleteRecordsPartitionResult::default()
                                        .with_partition_index(p)
                                        .with_error_code(TOPIC)
                                        .with_low_watermark(-1)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::DeleteRecords(r)
        }
        (ResponseKind::DescribeProducers(mut r), Partitions(denied)) => {
            r.topics
                .extend(denied.into_iter().map(|(name, partitions)| {
                    describe_producers_response::TopicResponse::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    describe_producers_response::PartitionResponse::default()
                                        .with_partition_index(p)
                                        .with_error_code(TOPIC)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::DescribeProducers(r)
        }
        (ResponseKind::OffsetDelete(mut r), Partitions(denied)) => {
            r.topics
                .extend(denied.into_iter().map(|(name, partitions)| {
                    offset_delete_response::OffsetDeleteResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    offset_delete_response::OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(TOPIC)
                                })
                                .collect(),
                        )
                }));
            ResponseKind::OffsetDelete(r)
        }
        (ResponseKind::FindCoordinator(mut r), Keys(denied, code)) => {
            r.coordinators.extend(denied.into_iter().map(|key| {
                find_coordinator_response::Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(code)
            }));
            ResponseKind::FindCoordinator(r)
        }
        (ResponseKind::CreateTopics(mut r), Names(denied)) => {
            r.topics.extend(denied.into_iter().map(|name| {
                create_topics_response::CreatableTopicResult::default()
                    .with_name(TopicName(name))
                    .with_error_code(TOPIC)
                    .with_num_partitions(-1)
                    .with_replication_factor(-1)
            }));
            ResponseKind::CreateTopics(r)
        }
        (ResponseKind::DeleteTopics(mut r), Deletions(denied)) => {
            r.responses.extend(denied.into_iter().map(|(name, id)| {
                delete_topics_response::DeletableTopicResult::default()
                    .with_name(name.map(TopicName))
                    .with_topic_id(id)
                    .with_error_code(TOPIC)
            }));
            ResponseKind::DeleteTopics(r)
        }
        (ResponseKind::CreatePartitions(mut r), Names(denied)) => {
            r.results.extend(denied.into_iter().map(|name| {
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(TopicName(name))
                    .with_error_code(TOPIC)
            }));
            ResponseKind::CreatePartitions(r)
        }
        (ResponseKind::DeleteGroups(mut r), Names(denied)) => {
            r.results.extend(denied.into_iter().map(|g| {
                delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(GroupId(g))
                    .with_error_code(GROUP)
            }));
            ResponseKind::DeleteGroups(r)
        }
        (ResponseKind::DescribeGroups(mut r), Names(denied)) => {
            r.groups.extend(denied.into_iter().map(|g| {
                describe_groups_response::DescribedGroup::default()
                    .with_group_id(GroupId(g))
                    .with_error_code(GROUP)
            }));
            ResponseKind::DescribeGroups(r)
        }
        (ResponseKind::DescribeTransactions(mut r), Names(denied)) => {
            r.transaction_states.extend(denied.into_iter().map(|t| {
                describe_transactions_response::TransactionState::default()
                    .with_transactional_id(TransactionalId(t))
                    .with_error_code(TXN)
            }));
            ResponseKind::DescribeTransactions(r)
        }
        (ResponseKind::ConsumerGroupDescribe(mut r), Names(denied)) => {
            r.groups.extend(denied.into_iter().map(|g| {
                consumer_group_describe_response::DescribedGroup::default()
                    .with_group_id(GroupId(g))
                    .with_error_code(GROUP)
            }));
            ResponseKind::ConsumerGroupDescribe(r)
        }
        (ResponseKind::DescribeConfigs(mut r), Configs(denied)) => {
            r.results.extend(denied.into_iter().map(|(t, name)| {
                describe_configs_response::DescribeConfigsResult::default()
                    .with_resource_type(t)
                    .with_resource_name(name)
                    .with_error_code(if t == 2 { TOPIC } else { CLUSTER_DENIED })
            }));
            ResponseKind::DescribeConfigs(r)
        }
        (ResponseKind::AlterConfigs(mut r), Configs(denied)) => {
            r.responses.extend(denied.into_iter().map(|(t, name)| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(t)
                    .with_resource_name(name)
                    .with_error_code(if t == 2 { TOPIC } else { CLUSTER_DENIED })
            }));
            ResponseKind::AlterConfigs(r)
        }
        (ResponseKind::IncrementalAlterConfigs(mut r), Configs(denied)) => {
            r.responses.extend(denied.into_iter().map(|(t, name)| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(t)
                    .with_resource_name(name)
                    .with_error_code(if t == 2 { TOPIC } else { CLUSTER_DENIED })
            }));
            ResponseKind::IncrementalAlterConfigs(r)
        }
        (ResponseKind::ListGroups(mut r), Filter) => {
            if !client.may_quietly(node, Operation::Describe, Resource::Cluster, CLUSTER) {
                r.groups.retain(|g| {
                    client.may_quietly(node, Operation::Describe, Resource::Group, &g.group_id)
                });
            }
            ResponseKind::ListGroups(r)
        }
        (ResponseKind::ListTransactions(mut r), Filter) => {
            r.transaction_states.retain(|t| {
                client.may_quietly(
                    node,
                    Operation::Describe,
                    Resource::TransactionalId,
                    &t.transactional_id,
                )
            });
            ResponseKind::ListTransactions(r)
        }
        (response, _) => response,
    }
}
