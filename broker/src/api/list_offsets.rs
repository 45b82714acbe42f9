//! ListOffsets: earliest (-2, and -4 "earliest local"), latest (-1), max timestamp (-3), and by
//! timestamp: the first record whose timestamp is at or after the one asked for. For read_committed
//! (isolation level 1) latest is the last stable offset (KIP-98).

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;
use weir_common::Offset;

use crate::batch;
use crate::error::storage_code;
use crate::node::{Node, Partition};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
/// Bytes read per step while scanning for a timestamp.
const SCAN_BYTES: usize = 1 << 20;

pub(super) async fn handle(
    node: &Node,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let found = node.topic(&topic.name.0);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let response =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
            let partition = found
                .as_ref()
                .and_then(|t| node.partition(t, p.partition_index));
            let Some(partition) = partition else {
                let code = found
                    .as_ref()
                    .map_or(ResponseError::UnknownTopicOrPartition.code(), |t| {
                        node.not_here(t, p.partition_index)
                    });
                partitions.push(response.with_error_code(code));
                continue;
            };
            // The field exists from v4 on; the codec refuses a non-default value before.
            let response = if version >= 4 {
                response.with_leader_epoch(partition.leader_epoch)
            } else {
                response
            };
            let found = if p.timestamp == LATEST && request.isolation_level == 1 {
                last_stable(node, &partition).await
            } else {
                lookup(&partition, p.timestamp).await
            };
            partitions.push(match found {
                Ok((offset, timestamp)) => response.with_offset(offset).with_timestamp(timestamp),
                Err(code) => response.with_error_code(code),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

fn i64_of(offset: Offset) -> i64 {
    i64::try_from(offset.get()).unwrap_or(i64::MAX)
}

/// The last stable offset: below it, every transaction has ended.
async fn last_stable(node: &Node, partition: &Partition) -> Result<(i64, i64), i16> {
    let hw = i64_of(partition.stream.high_watermark());
    let state = crate::producers::locked(node, partition)
        .await
        .map_err(|e| storage_code(&e))?;
    Ok((state.last_stable(hw), -1))
}

/// `(offset, timestamp)` for the query; -1 timestamps where Kafka gives -1.
async fn lookup(partition: &Partition, timestamp: i64) -> Result<(i64, i64), i16> {
    let stream = &partition.stream;
    match timestamp {
        LATEST => Ok((i64_of(stream.high_watermark()), -1)),
        EARLIEST | EARLIEST_LOCAL => Ok((i64_of(stream.start_offset()), -1)),
        MAX_TIMESTAMP => scan(partition, None).await,
        ts if ts >= 0 => scan(partition, Some(ts)).await,
        _ => Err(ResponseError::InvalidRequest.code()),
    }
}

/// Scans the stream's batches: for `Some(ts)`, the first record with a timestamp at or after `ts`
/// (-1 if none); for `None`, the record with the largest timestamp.
async fn scan(partition: &Partition, target: Option<i64>) -> Result<(i64, i64), i16> {
    let stream = &partition.stream;
    let end = stream.high_watermark();
    let mut next = stream.start_offset();
    let mut best: Option<(i64, i64)> = None;
    while next < end {
        let batches = stream
            .read(next, SCAN_BYTES)
            .await
            .map_err(|e| storage_code(&e))?;
        let Some(last) = batches.last() else { break };
        next = last.end_offset();
        for stored in &batches {
            for (_, max_ts, range) in batch::batches(&stored.payload) {
                let wanted = match target {
                    Some(ts) => max_ts >= ts,
                    None => best.is_none_or(|(_, b)| max_ts > b),
                };
                if !wanted {
                    continue;
                }
                if let Some(found) = find_record(stored.payload.slice(range), target) {
                    if target.is_some() {
                        return Ok(found);
                    }
                    best = Some(found);
                }
            }
        }
    }
    // Nothing matches: Kafka answers offset -1 (clients read it as "the end").
    Ok(best.unwrap_or((-1, -1)))
}

/// The record of one batch that answers the query (decompressing it if needed).
fn find_record(mut batch: Bytes, target: Option<i64>) -> Option<(i64, i64)> {
    let set = RecordBatchDecoder::decode(&mut batch).ok()?;
    match target {
        Some(ts) => set
            .records
            .iter()
            .find(|r| r.timestamp >= ts)
            .map(|r| (r.offset, r.timestamp)),
        None => set
            .records
            .iter()
            .max_by_key(|r| r.timestamp)
            .map(|r| (r.offset, r.timestamp)),
    }
}
