//! The transaction APIs (KIP-98): AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
//! WriteTxnMarkers (broker to broker), DescribeTransactions and ListTransactions. The state machine
//! is `crate::txn`; InitProducerId with a transactional id is in `init_producer_id`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::group::{Committed, now_ms};
use crate::node::Node;
use crate::txn::{Phase, markers};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// AddPartitionsToTxn v0-3 (one transaction per request; v4+ is the broker-to-broker form of
/// KIP-890, not advertised). A partition that does not exist fails the request: it gets
/// UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED, as Kafka.
pub(super) async fn add_partitions(
    node: &Node,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let id = request.v3_and_below_transactional_id.0.to_string();
    let wanted: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let exists = |(topic, p): &(String, i32)| {
        node.topic(topic)
            .is_some_and(|t| usize::try_from(*p).is_ok_and(|p| p < t.partitions.len()))
    };
    let code_of = |tp: &(String, i32), all_exist: bool, code: i16| {
        if all_exist {
            code
        } else if exists(tp) {
            ResponseError::OperationNotAttempted.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        }
    };
    let all_exist = wanted.iter().all(exists);
    let code = if all_exist {
        node.transactions
            .add_partitions(
                node,
                &id,
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
                &wanted,
                version,
            )
            .await
            .err()
            .unwrap_or(0)
    } else {
        0
    };
    if code != 0 {
        tracing::debug!(transactional_id = %id, code, "AddPartitionsToTxn refused");
    }
    let results = request
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            let topic = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(code_of(&(topic.clone(), *p), all_exist, code))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name)
                .with_results_by_partition(partitions)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction, so its
/// marker commits the offsets TxnOffsetCommit writes.
pub(super) async fn add_offsets(
    node: &Node,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let response = AddOffsetsToTxnResponse::default();
    let Some(offsets) = node.topic(crate::group::OFFSETS_TOPIC) else {
        return response.with_error_code(ResponseError::CoordinatorNotAvailable.code());
    };
    let index = crate::group::partition_for(&request.group_id.0, offsets.partitions.len());
    let partition = (crate::group::OFFSETS_TOPIC.to_string(), index);
    let result = node
        .transactions
        .add_partitions(
            node,
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            std::slice::from_ref(&partition),
            version,
        )
        .await;
    response.with_error_code(result.err().unwrap_or(0))
}

/// EndTxn: commit or abort; answered once the decision is durable and (normally) marked.
pub(super) async fn end(node: &Node, request: EndTxnRequest, version: i16) -> EndTxnResponse {
    let result = node
        .transactions
        .end(
            node,
            &request.transactional_id.0,
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
            version,
        )
        .await;
    if let Err(code) = result {
        tracing::debug!(transactional_id = %request.transactional_id.0.as_str(), code, "EndTxn refused");
    }
    EndTxnResponse::default()
        .with_error_code(result.err().unwrap_or(0))
        .with_producer_id(request.producer_id)
        .with_producer_epoch(request.producer_epoch)
}

/// TxnOffsetCommit: a transaction's consumed offsets, sent to the group's coordinator.
pub(super) async fn commit_offsets(
    node: &Node,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let offsets: Vec<((String, i32), Committed)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    (t.name.0.to_string(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    },
                )
            })
        })
        .collect();
    let mut code = 0;
    // KIP-447: a member of a generation that is over may not commit (a zombie).
    if request.generation_id >= 0 {
        let partitions = offsets.iter().map(|(tp, _)| tp.clone()).collect();
        code = node
            .groups
            .check_commit(
                node,
                &group,
                request.generation_id,
                &request.member_id,
                request.group_instance_id.as_deref(),
                partitions,
            )
            .await;
    }
    if code == 0
        && let Err(c) = node
            .groups
            .commit_in_transaction(
                node,
                &group,
                request.producer_id.0,
                request.producer_epoch,
                offsets,
            )
            .await
    {
        code = c;
    }
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// WriteTxnMarkers: a coordinator on another broker marks transactions in partitions led here.
pub(super) async fn write_markers(
    node: &Node,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let m = markers::Marker {
            producer_id: marker.producer_id.0,
            epoch: marker.producer_epoch,
            commit: marker.transaction_result,
            coordinator_epoch: marker.coordinator_epoch,
        };
        let mut topics = Vec::with_capacity(marker.topics.len());
        for t in marker.topics {
            let topic = node.topic(&t.name.0);
            // The partitions' markers are written together (they share group commits).
            let partitions = futures::future::join_all(t.partition_indexes.iter().map(|index| {
                let topic = topic.as_ref();
                async move {
                    let code = match topic {
                        None => ResponseError::UnknownTopicOrPartition.code(),
                        Some(topic) => match node.partition(topic, *index) {
                            None => node.not_here(topic, *index),
                            Some(partition) => {
                                markers::write_local(node, topic, *index, partition, m)
                                    .await
                                    .err()
                                    .unwrap_or(0)
                            }
                        },
                    };
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(*index)
                        .with_error_code(code)
                }
            }))
            .await;
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

/// DescribeTransactions: each transactional id's state, from its coordinator.
pub(super) async fn describe(
    node: &Node,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let answer = TransactionState::default()
            .with_transactional_id(id.clone())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let state = match node.transactions.describe(node, &id.0).await {
            Err(code) => answer.with_error_code(code),
            Ok(txn) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, p) in &txn.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.0.as_str() == topic => last.partitions.push(*p),
                        _ => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(s(topic)))
                                .with_partitions(vec![*p]),
                        ),
                    }
                }
                answer
                    .with_transaction_state(s(txn.phase.name()))
                    .with_transaction_timeout_ms(txn.timeout_ms)
                    .with_transaction_start_time_ms(txn.started_ms)
                    .with_producer_id(ProducerId(txn.producer_id))
                    .with_producer_epoch(txn.epoch)
                    .with_topics(topics)
            }
        };
        states.push(state);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions: the transactions this node coordinates, filtered by state, producer id and
/// (v1) how long they have been open.
pub(super) async fn list(
    node: &Node,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut phases = Vec::new();
    for name in &request.state_filters {
        match Phase::named(name) {
            Some(p) => phases.push(p),
            None => unknown.push(name.clone()),
        }
    }
    let now = now_ms();
    let listed = node
        .transactions
        .list()
        .await
        .into_iter()
        .filter(|(_, t)| request.state_filters.is_empty() || phases.contains(&t.phase))
        .filter(|(_, t)| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == t.producer_id)
        })
        .filter(|(_, t)| {
            request.duration_filter < 0
                || (t.started_ms >= 0 && now - t.started_ms >= request.duration_filter)
        })
        .map(|(id, t)| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(s(&id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(s(t.phase.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
