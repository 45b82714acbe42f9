//! Fetch: sessionless (session id 0, DESIGN.md 7), whole stored batches, long poll woken by appends.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::select_all;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;
use weir_common::Offset;

use super::Client;
use crate::error::storage_code;
use crate::node::{Node, Partition};
use crate::security::acl::{Operation, Resource};

/// One partition asked for.
struct Target {
    topic: usize,
    index: i32,
    partition: Result<Partition, i16>,
    offset: i64,
    max_bytes: usize,
    leader_epoch: i32,
}

pub(super) async fn handle(
    node: &Node,
    client: &Client,
    request: FetchRequest,
    version: i16,
) -> FetchResponse {
    let topics: Vec<FetchTopic> = request.topics;
    let mut targets = Vec::new();
    for (t, topic) in topics.iter().enumerate() {
        let resolved = if version >= 13 {
            node.topic_by_id(topic.topic_id)
                .ok_or(ResponseError::UnknownTopicId.code())
        } else {
            node.topic(&topic.topic.0)
                .ok_or(ResponseError::UnknownTopicOrPartition.code())
        };
        let name = resolved
            .as_ref()
            .map_or_else(|_| topic.topic.0.to_string(), |t| t.name.clone());
        // An unknown topic id stays unknown (there is no name to authorize).
        let unknown_id = version >= 13 && resolved.is_err();
        let resolved = if unknown_id || client.may(node, Operation::Read, Resource::Topic, &name) {
            resolved
        } else {
            Err(ResponseError::TopicAuthorizationFailed.code())
        };
        for p in &topic.partitions {
            let partition = resolved.clone().and_then(|tp| {
                node.partition(&tp, p.partition)
                    .ok_or_else(|| node.not_here(&tp, p.partition))
            });
            targets.push(Target {
                topic: t,
                index: p.partition,
                partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                leader_epoch: p.current_leader_epoch,
            });
        }
    }
    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0));
    let deadline = tokio::time::Instant::now() + max_wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
    // KIP-98: read_committed sees only what transactions committed.
    let committed = request.isolation_level == 1;
    let results = loop {
        // Subscribe before reading, so an append between the read and the wait still wakes us.
        let mut watchers: Vec<watch::Receiver<Offset>> = targets
            .iter()
            .filter_map(|t| t.partition.as_ref().ok().map(|p| p.stream.subscribe()))
            .collect();
        let results = read_all(node, &targets, max_bytes, committed).await;
        let bytes: usize = results
            .iter()
            .map(|r| r.records.as_ref().map_or(0, Bytes::len))
            .sum();
        let any_error = results.iter().any(|r| r.error_code != 0);
        tracing::trace!(bytes, min_bytes, any_error, "fetch read");
        let satisfied = if min_bytes == 0 {
            true
        } else {
            bytes >= min_bytes
        };
        if satisfied || any_error || watchers.is_empty() || tokio::time::Instant::now() >= deadline
        {
            break results;
        }
        let changed = select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            break read_all(node, &targets, max_bytes, committed).await;
        }
    };
    let mut responses: Vec<FetchableTopicResponse> = topics
        .iter()
        .map(|t| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(t.topic.0.clone()))
                .with_topic_id(t.topic_id)
        })
        .collect();
    let mut leaders = std::collections::BTreeSet::new();
    for (target, mut data) in targets.iter().zip(results) {
        if let Ok(p) = &target.partition {
            node.count_traffic(p.stream.id(), data.records.as_ref().map_or(0, Bytes::len));
        }
        // KIP-951: a partition led elsewhere answers with its leader (v12+), whose address comes
        // along (v16+).
        if version >= 12
            && data.error_code == ResponseError::NotLeaderOrFollower.code()
            && let Some((leader, epoch)) =
                leader_hint(node, &topics[target.topic], version, target.index)
        {
            data.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch);
            leaders.insert(leader);
        }
        responses[target.topic].partitions.push(data);
    }
    let endpoints: Vec<NodeEndpoint> = if version >= 16 {
        leaders
            .into_iter()
            .filter_map(|id| {
                let (host, port) = node.broker_address(id)?;
                Some(
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
        .with_node_endpoints(endpoints)
}

/// The leader and leader epoch of a partition led by another broker.
fn leader_hint(node: &Node, topic: &FetchTopic, version: i16, index: i32) -> Option<(i32, i32)> {
    let found = if version >= 13 {
        node.topic_by_id(topic.topic_id)
    } else {
        node.topic(&topic.topic.0)
    }?;
    let stream = *found.partitions.get(usize::try_from(index).ok()?)?;
    let leader = node.leader_of(stream)?;
    (leader != node.config.node_id).then(|| (leader, node.leader_epoch(stream)))
}

async fn read_all(
    node: &Node,
    targets: &[Target],
    max_bytes: usize,
    committed: bool,
) -> Vec<PartitionData> {
    let mut out = Vec::with_capacity(targets.len());
    let mut remaining = max_bytes;
    let mut any_data = false;
    for target in targets {
        // KIP-74: the first partition with data may exceed the response limit by one batch; the
        // ones after it get only whole batches that still fit, and nothing once it is used up.
        let budget = if remaining == 0 && any_data {
            0
        } else {
            remaining.max(1)
        };
        let data = read_one(node, target, budget, any_data, committed).await;
        let used = data.records.as_ref().map_or(0, Bytes::len);
        any_data |= used > 0;
        remaining = remaining.saturating_sub(used);
        out.push(data);
    }
    out
}

/// One partition's records: whole batches within `remaining` and the partition's own limit; with
/// `strict` (an earlier partition already has data), never more, else at least one batch. With
/// `committed` (read_committed), only batches below the last stable offset, and the aborted
/// transactions among them.
async fn read_one(
    node: &Node,
    target: &Target,
    remaining: usize,
    strict: bool,
    committed: bool,
) -> PartitionData {
    let data = PartitionData::default().with_partition_index(target.index);
    let partition = match &target.partition {
        Ok(p) => p,
        Err(code) => return data.with_error_code(*code).with_high_watermark(-1),
    };
    let stream = &partition.stream;
    let hw = i64::try_from(stream.high_watermark().get()).unwrap_or(i64::MAX);
    let start = i64::try_from(stream.start_offset().get()).unwrap_or(0);
    let mut last_stable = hw;
    let mut view = None;
    if !committed {
        // Reported (lag tools read it), from the view if the state is loaded; read_uncommitted
        // never loads it.
        if let Some(v) = node.producers.existing_view(partition.stream.id()) {
            let v = v.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if v.is_loaded_for(stream.epoch()) {
                last_stable = v.last_stable(hw);
            }
        }
    } else {
        match crate::producers::view(node, partition).await {
            Ok(v) => {
                last_stable = v
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .last_stable(hw);
                view = Some(v);
            }
            Err(e) => return data.with_error_code(storage_code(&e)),
        }
    }
    let data = data
        .with_high_watermark(hw)
        .with_last_stable_offset(last_stable)
        .with_log_start_offset(start);
    if target.leader_epoch >= 0 && target.leader_epoch != partition.leader_epoch {
        let code = if target.leader_epoch < partition.leader_epoch {
            ResponseError::FencedLeaderEpoch
        } else {
            ResponseError::UnknownLeaderEpoch
        };
        return data.with_error_code(code.code());
    }
    let Ok(offset) = u64::try_from(target.offset) else {
        return data.with_error_code(ResponseError::OffsetOutOfRange.code());
    };
    if remaining == 0 {
        return data.with_records(Some(Bytes::new()));
    }
    let budget = target.max_bytes.min(remaining).max(1);
    // Past the last stable offset but within the log: nothing to read yet. Past the high
    // watermark the read below answers OFFSET_OUT_OF_RANGE, which makes the client reset.
    if committed && target.offset >= last_stable && target.offset <= hw {
        return data
            .with_records(Some(Bytes::new()))
            .with_aborted_transactions(Some(Vec::new()));
    }
    match stream.read(Offset(offset), budget).await {
        Ok(mut batches) => {
            if committed {
                // Whole batches: a transaction's batches are all on one side of the offset.
                batches
                    .retain(|b| i64::try_from(b.base_offset.get()).is_ok_and(|o| o < last_stable));
            }
            // Whole batches within the limits; the first partition with data may go over with
            // its first batch (so a batch larger than the limits is still delivered), no other.
            let mut total = 0;
            let fit = batches
                .iter()
                .take_while(|b| {
                    total += b.payload.len();
                    total <= budget
                })
                .count();
            batches.truncate(if strict { fit } else { fit.max(1) });
            let records = match batches.len() {
                0 => Bytes::new(),
                1 => batches[0].payload.clone(),
                _ => {
                    let total = batches.iter().map(|b| b.payload.len()).sum();
                    let mut buf = BytesMut::with_capacity(total);
                    for b in &batches {
                        buf.extend_from_slice(&b.payload);
                    }
                    buf.freeze()
                }
            };
            let data = data.with_records(Some(records));
            if !committed {
                return data;
            }
            // The aborted transactions among the batches sent (those that ended before the
            // last stable offset read above, so already in the view).
            let last = batches.last().map_or(-1, |b| {
                i64::try_from(b.end_offset().get()).unwrap_or(i64::MAX) - 1
            });
            let aborted = match &view {
                Some(v) if last >= target.offset => v
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .aborted_between(target.offset, last),
                _ => Vec::new(),
            };
            data.with_aborted_transactions(Some(
                aborted
                    .into_iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_first_offset(a.first_offset)
                    })
                    .collect(),
            ))
        }
        Err(e) => data.with_error_code(storage_code(&e)),
    }
}
