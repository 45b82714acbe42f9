//! Produce: validate each partition's batches, give them offsets, append, answer once durable.
//!
//! A request is served in two steps. [`start`] validates every partition's batches and queues
//! them in their streams (offsets assigned, WAL append queued), in request order; it returns the
//! second step, a future that waits until they are durable and builds the response. The connection
//! starts the next pipelined Produce as soon as the first step is done, so consecutive requests
//! share the WAL's group commit while each partition's batches keep their order. `acks` 0, 1 and
//! all behave the same here (DESIGN.md 4: the high watermark never moves before the WAL has the
//! data); with acks=0 the connection sends no response.

use futures::future::{BoxFuture, join_all};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::BrokerId;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use weir_controller::Topic;
use weir_storage::{Durable, Stream};

use std::sync::Arc;

use super::Client;
use crate::batch;
use crate::error::{batch_code, storage_code};
use crate::node::Node;
use crate::producers::{BatchIds, PartitionProducers, Verdict};
use crate::security::acl::{Operation, Resource};
use crate::topic_config;

/// The second step of a Produce: waits for durability, then answers.
pub(crate) type Pending = BoxFuture<'static, ProduceResponse>;

/// Validates and queues every batch of the request, in order; returns the wait for durability.
pub(super) async fn start(
    node: &Node,
    client: &Client,
    request: ProduceRequest,
    version: i16,
) -> Pending {
    let mut topics = Vec::with_capacity(request.topic_data.len());
    let mut leaders = std::collections::BTreeSet::new();
    // Transactional batches need their transactional id, and WRITE on it (then on each topic),
    // as Kafka: without an id no coordinator would ever end their transaction.
    let transactional = request.topic_data.iter().any(|t| {
        t.partition_data
            .iter()
            .any(|p| p.records.as_deref().is_some_and(batch::is_transactional))
    });
    let transaction_denied = transactional
        && request
            .transactional_id
            .as_ref()
            .is_none_or(|id| !client.may(node, Operation::Write, Resource::TransactionalId, &id.0));
    for data in request.topic_data {
        let topic = if version >= 13 {
            node.topic_by_id(data.topic_id)
        } else {
            node.topic(&data.name.0)
        };
        let unknown = if version >= 13 {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let name = topic
            .as_ref()
            .map_or_else(|| data.name.0.to_string(), |t| t.name.clone());
        let (topic, refusal) = if transaction_denied {
            (
                None,
                ResponseError::TransactionalIdAuthorizationFailed.code(),
            )
        } else if topic.is_none() && version >= 13 {
            // An unknown topic id stays unknown (there is no name to authorize).
            (None, unknown.code())
        } else if !client.may(node, Operation::Write, Resource::Topic, &name) {
            (None, ResponseError::TopicAuthorizationFailed.code())
        } else {
            (topic, unknown.code())
        };
        let mut partitions = Vec::with_capacity(data.partition_data.len());
        for p in data.partition_data {
            let mut queued = enqueue(node, topic.as_ref(), p, refusal).await;
            // KIP-951: a partition led elsewhere answers with its leader, so the client need not
            // wait for a metadata refresh.
            if version >= 10
                && let (Queued::Refused(response), Some(topic)) = (&mut queued, topic.as_ref())
                && response.error_code == ResponseError::NotLeaderOrFollower.code()
                && let Some((leader, epoch)) = leader_hint(node, topic, response.index)
            {
                response.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
                leaders.insert(leader);
            }
            partitions.push(queued);
        }
        topics.push((data.name, data.topic_id, partitions));
    }
    let endpoints: Vec<NodeEndpoint> = leaders
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
        .collect();
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, topic_id, partitions) in topics {
            let partitions = join_all(partitions.into_iter().map(Queued::finish)).await;
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_topic_id(topic_id)
                    .with_partition_responses(partitions),
            );
        }
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(endpoints)
    })
}

/// The leader and leader epoch of a partition led by another broker.
fn leader_hint(node: &Node, topic: &Topic, index: i32) -> Option<(i32, i32)> {
    let stream = *topic.partitions.get(usize::try_from(index).ok()?)?;
    let leader = node.leader_of(stream)?;
    (leader != node.config.node_id).then(|| (leader, node.leader_epoch(stream)))
}

/// One partition's part of a request after the first step.
enum Queued {
    /// Refused (the response carries the error).
    Refused(PartitionProduceResponse),
    /// In the WAL's queue.
    Appending {
        response: PartitionProduceResponse,
        durable: Durable,
        stream: Stream,
        topic: String,
        /// An idempotent producer's partition state, forgotten if the append fails.
        producers: Option<Arc<tokio::sync::Mutex<PartitionProducers>>>,
    },
    /// A retried batch written before: answered once its last record is durable.
    Duplicate {
        response: PartitionProduceResponse,
        stream: Stream,
        last_offset: i64,
    },
}

impl Queued {
    async fn finish(self) -> PartitionProduceResponse {
        let (response, durable, stream, topic, producers) = match self {
            Queued::Refused(response) => return response,
            Queued::Duplicate {
                response,
                stream,
                last_offset,
            } => return durable_duplicate(response, &stream, last_offset).await,
            Queued::Appending {
                response,
                durable,
                stream,
                topic,
                producers,
            } => (response, durable, stream, topic, producers),
        };
        let index = response.index;
        match durable.wait().await {
            Ok(receipt) => response
                .with_base_offset(i64::try_from(receipt.base_offset.get()).unwrap_or(i64::MAX))
                .with_log_start_offset(i64::try_from(stream.start_offset().get()).unwrap_or(0)),
            Err(e) => {
                tracing::warn!(topic, partition = index, error = %e, "append failed");
                if let Some(p) = producers {
                    // What was recorded may not be in the stream: read it again next time.
                    p.lock().await.invalidate();
                }
                response.with_error_code(storage_code(&e))
            }
        }
    }
}

/// A duplicate's answer: the original's offsets, once its last record is durable.
async fn durable_duplicate(
    response: PartitionProduceResponse,
    stream: &Stream,
    last_offset: i64,
) -> PartitionProduceResponse {
    let mut watermark = stream.subscribe();
    let durable = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if i64::try_from(watermark.borrow_and_update().get()).unwrap_or(i64::MAX) > last_offset
            {
                return true;
            }
            if watermark.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    match durable {
        Ok(true) => {
            response.with_log_start_offset(i64::try_from(stream.start_offset().get()).unwrap_or(0))
        }
        _ => response
            .with_base_offset(-1)
            .with_error_code(ResponseError::RequestTimedOut.code()),
    }
}

/// The verdict on all the batches of one request (nearly always one batch): each must follow the
/// one before it; all duplicates is a duplicate of the first's offsets.
fn verdict(state: &PartitionProducers, ids: &[BatchIds]) -> Verdict {
    let Some(first) = ids.first() else {
        return Verdict::Append;
    };
    let head = state.check(first);
    for pair in ids.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let follows = a.producer_id == b.producer_id
            && a.producer_epoch == b.producer_epoch
            && i64::from(b.base_sequence)
                == (i64::from(a.base_sequence) + i64::from(a.count)) % (i64::from(i32::MAX) + 1);
        let ok = match head {
            Verdict::Duplicate { .. } => matches!(state.check(&b), Verdict::Duplicate { .. }),
            _ => follows || (a.producer_id != b.producer_id && state.check(&b) == Verdict::Append),
        };
        if !ok {
            return Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber);
        }
    }
    head
}

fn max_message_bytes(node: &Node, topic: &Topic) -> usize {
    topic
        .configs
        .get("max.message.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(node.config.max_message_bytes as usize)
}

/// As Kafka, a compacted topic refuses records without a key (INVALID_RECORD, with the index of each
/// keyless record in `record_errors`, so clients fail those and the rest of the batch as
/// `INVALID_DIFFERENT_RECORD`): key compaction could never replace them. Only compacted topics pay
/// for reading (and decompressing) records.
fn refuse_keyless(
    topic: &Topic,
    partition: i32,
    records: &bytes::Bytes,
    response: &PartitionProduceResponse,
) -> Option<PartitionProduceResponse> {
    let compacted = topic_config::effective(&topic.configs, "cleanup.policy")
        .is_some_and(|p| p.split(',').any(|p| p.trim() == "compact"));
    if !compacted {
        return None;
    }
    let mut keyless = Vec::new();
    let mut index = 0i32;
    let read = batch::filter::for_each_record(records, |r| {
        if r.key.is_none() {
            keyless.push(index);
        }
        index += 1;
    });
    if let Err(e) = read {
        tracing::debug!(topic = %topic.name, partition, error = %e, "produce refused");
        return Some(response.clone().with_error_code(batch_code(&e)));
    }
    if keyless.is_empty() {
        return None;
    }
    let text = format!(
        "Compacted topic cannot accept message without key in topic partition {}-{partition}.",
        topic.name
    );
    let record_errors = keyless
        .into_iter()
        .map(|i| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(i)
                .with_batch_index_error_message(Some(StrBytes::from_string(text.clone())))
        })
        .collect();
    Some(
        response
            .clone()
            .with_error_code(ResponseError::InvalidRecord.code())
            .with_error_message(Some(StrBytes::from_string(text)))
            .with_record_errors(record_errors),
    )
}

async fn enqueue(
    node: &Node,
    topic: Option<&Topic>,
    data: PartitionProduceData,
    unknown_topic: i16,
) -> Queued {
    let response = PartitionProduceResponse::default()
        .with_index(data.index)
        .with_base_offset(-1);
    let Some(topic) = topic else {
        return Queued::Refused(response.with_error_code(unknown_topic));
    };
    let Some(partition) = node.partition(topic, data.index) else {
        return Queued::Refused(response.with_error_code(node.not_here(topic, data.index)));
    };
    let records = data.records.unwrap_or_default();
    let summary = match batch::validate(&records, max_message_bytes(node, topic)) {
        Ok(summary) => summary,
        Err(e) => {
            tracing::debug!(topic = %topic.name, partition = data.index, error = %e, "produce refused");
            return Queued::Refused(response.with_error_code(batch_code(&e)));
        }
    };
    if summary.largest_batch_records > node.config.max_records_per_batch {
        let text = format!(
            "a batch of {} records exceeds max_records_per_batch {}",
            summary.largest_batch_records, node.config.max_records_per_batch
        );
        tracing::debug!(topic = %topic.name, partition = data.index, text, "produce refused");
        return Queued::Refused(
            response
                .with_error_code(ResponseError::InvalidRecord.code())
                .with_error_message(Some(StrBytes::from_string(text))),
        );
    }
    if let Some(refused) = refuse_keyless(topic, data.index, &records, &response) {
        return Queued::Refused(refused);
    }
    node.count_traffic(partition.stream.id(), records.len());
    let ids = batch::producer_ids(&records);
    // An idempotent producer's batches are checked and appended under the partition's producer
    // lock, so the checks see the appends in their order.
    let producers = (!ids.is_empty()).then(|| node.producers.partition(partition.stream.id()));
    let mut state = None;
    if producers.is_some() {
        match crate::producers::locked(node, &partition).await {
            Ok(locked) => state = Some(locked),
            Err(e) => {
                tracing::warn!(topic = %topic.name, partition = data.index, error = %e, "cannot read the producers' state");
                return Queued::Refused(response.with_error_code(storage_code(&e)));
            }
        }
    }
    if let Some(state) = state.as_mut() {
        match verdict(state, &ids) {
            Verdict::Append => {}
            Verdict::Duplicate {
                base_offset,
                last_offset,
            } => {
                tracing::debug!(topic = %topic.name, partition = data.index, base_offset, "duplicate batch acknowledged again");
                return Queued::Duplicate {
                    response: response.with_base_offset(base_offset),
                    stream: partition.stream,
                    last_offset,
                };
            }
            Verdict::Refuse(error) => {
                tracing::debug!(topic = %topic.name, partition = data.index, ?ids, error = ?error, "idempotent batch refused");
                return Queued::Refused(response.with_error_code(error.code()));
            }
        }
    }
    let epoch = partition.leader_epoch;
    let mut assigned = 0u64;
    let queued = partition
        .stream
        .enqueue(summary.offsets, records.len(), |base| {
            assigned = base.get();
            batch::assign_offsets(&records, base.get(), epoch)
        })
        .await;
    if let (Some(state), Ok(_)) = (state.as_mut(), &queued) {
        let mut base = i64::try_from(assigned).unwrap_or(i64::MAX);
        for b in &ids {
            state.record(*b, base);
            base += i64::from(b.count);
        }
    }
    drop(state);
    match queued {
        Ok(durable) => Queued::Appending {
            response,
            durable,
            stream: partition.stream,
            topic: topic.name.clone(),
            producers,
        },
        Err(e) => {
            tracing::warn!(topic = %topic.name, partition = data.index, error = %e, "append failed");
            Queued::Refused(response.with_error_code(storage_code(&e)))
        }
    }
}
