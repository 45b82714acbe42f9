//! Transaction markers: the control batch that ends a producer's transaction in one partition.
//!
//! The coordinator writes a marker into a partition open on its own node directly, and asks the
//! partition's leader with WriteTxnMarkers (the Kafka request brokers send each other) otherwise.
//! Writing a marker ends the producer's open transaction there (the last stable offset moves past
//! it); an abort is added to the partition's aborted-transaction index, in memory and, once the
//! marker is durable, in the object store (`super::index`). In a `__consumer_offsets` partition a
//! marker also makes the transaction's offsets committed, or drops them.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, RequestHeader, ResponseHeader, TopicName, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_controller::Topic;

use crate::batch;
use crate::error::storage_code;
use crate::node::{Node, Partition};

/// How long a WriteTxnMarkers request to another broker may take.
const REMOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The control batch of a marker: one control record, key `(version 0, type)` (0 abort, 1 commit),
/// value `(version 0, coordinator epoch)`.
pub fn control_batch(producer_id: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> Bytes {
    let mut key = BytesMut::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = BytesMut::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record {
        transactional: true,
        control: true,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: crate::group::now_ms(),
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
        delete_horizon: false,
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        std::slice::from_ref(&record),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("a control batch always encodes");
    buf.freeze()
}

/// The marker of one producer's transaction.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    pub producer_id: i64,
    pub epoch: i16,
    /// Commit (else abort).
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Writes a transaction's marker into each of `partitions`, wherever they are led: directly into
/// those open here, with one WriteTxnMarkers request per other leader for the rest, all at once.
/// Each partition's result: Ok once its marker is durable, else a Kafka code
/// (UNKNOWN_TOPIC_OR_PARTITION: the partition is gone, nothing to mark).
pub async fn write_all(
    node: &Node,
    partitions: &std::collections::BTreeSet<(String, i32)>,
    marker: Marker,
) -> Vec<((String, i32), Result<(), i16>)> {
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    let mut results = Vec::with_capacity(partitions.len());
    let mut local = Vec::new();
    let mut remote: std::collections::BTreeMap<i32, Vec<(String, i32)>> = Default::default();
    for (topic, index) in partitions {
        let tp = (topic.clone(), *index);
        let Some(found) = node.topic(topic) else {
            results.push((tp, Err(unknown)));
            continue;
        };
        let Some(stream) = usize::try_from(*index)
            .ok()
            .and_then(|i| found.partitions.get(i).copied())
        else {
            results.push((tp, Err(unknown)));
            continue;
        };
        if let Some(partition) = node.partition(&found, *index) {
            local.push((tp, found, partition));
            continue;
        }
        match node.leader_of(stream) {
            // Opening here, or no leader yet.
            Some(leader) if leader != node.config.node_id => {
                remote.entry(leader).or_default().push(tp);
            }
            _ => results.push((tp, Err(not_leader))),
        }
    }
    let local =
        futures::future::join_all(local.into_iter().map(|(tp, topic, partition)| async move {
            let result = write_local(node, &topic, tp.1, partition, marker).await;
            (tp, result)
        }));
    let remote = futures::future::join_all(
        remote
            .into_iter()
            .map(|(leader, tps)| write_remote(node, leader, tps, marker)),
    );
    let (local, remote) = futures::future::join(local, remote).await;
    results.extend(local);
    results.extend(remote.into_iter().flatten());
    results
}

/// One WriteTxnMarkers request to `leader` for all of `partitions`.
async fn write_remote(
    node: &Node,
    leader: i32,
    partitions: Vec<(String, i32)>,
    marker: Marker,
) -> Vec<((String, i32), Result<(), i16>)> {
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for (topic, index) in &partitions {
        by_topic.entry(topic).or_default().push(*index);
    }
    let topics = by_topic
        .into_iter()
        .map(|(topic, indexes)| {
            WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(indexes)
        })
        .collect();
    let request = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id))
            .with_producer_epoch(marker.epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(topics),
    ]);
    let answer = match tokio::time::timeout(REMOTE_TIMEOUT, send(node, leader, request)).await {
        Ok(Ok(answer)) => answer,
        failed => {
            let code = match failed {
                Err(_) => ResponseError::RequestTimedOut.code(),
                Ok(Err(e)) => {
                    tracing::debug!(leader, error = %e, "WriteTxnMarkers to another broker failed");
                    ResponseError::NetworkException.code()
                }
                Ok(Ok(_)) => unreachable!(),
            };
            return partitions.into_iter().map(|tp| (tp, Err(code))).collect();
        }
    };
    let mut codes: std::collections::HashMap<(String, i32), i16> = answer
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| ((t.name.0.to_string(), p.partition_index), p.error_code))
        })
        .collect();
    partitions
        .into_iter()
        .map(|tp| {
            // A partition the answer leaves out was not marked.
            let code = codes
                .remove(&tp)
                .unwrap_or(ResponseError::UnknownServerError.code());
            (tp, if code == 0 { Ok(()) } else { Err(code) })
        })
        .collect()
}

/// Writes a marker into a partition open here.
pub async fn write_local(
    node: &Node,
    topic: &Topic,
    index: i32,
    partition: Partition,
    marker: Marker,
) -> Result<(), i16> {
    let Marker {
        producer_id,
        epoch,
        commit,
        coordinator_epoch,
    } = marker;
    let offsets = topic.name == crate::group::OFFSETS_TOPIC;
    if offsets && !node.groups.is_loaded(index) {
        // Its groups are being read back: a marker now would reach neither the replay nor the
        // pending offsets it ends. The coordinator retries.
        return Err(ResponseError::CoordinatorLoadInProgress.code());
    }
    let payload = control_batch(producer_id, epoch, commit, coordinator_epoch);
    let stream = partition.stream.clone();
    let mut state = crate::producers::locked(node, &partition)
        .await
        .map_err(|e| storage_code(&e))?;
    if state
        .epoch_of(producer_id)
        .is_some_and(|known| epoch < known)
    {
        // A marker from before the producer's current epoch: stale (a deposed coordinator's).
        return Err(ResponseError::InvalidProducerEpoch.code());
    }
    let leader_epoch = partition.leader_epoch;
    let mut assigned = 0u64;
    let durable = stream
        .enqueue(1, payload.len(), |base| {
            assigned = base.get();
            batch::assign_offsets(&payload, base.get(), leader_epoch)
        })
        .await
        .map_err(|e| storage_code(&e))?;
    let offset = i64::try_from(assigned).unwrap_or(i64::MAX);
    let aborted = state.end_transaction(producer_id, epoch, commit, offset);
    drop(state);
    let invalidate = || async {
        node.producers
            .partition(stream.id())
            .lock()
            .await
            .invalidate();
    };
    if let Err(e) = durable.wait().await {
        invalidate().await;
        return Err(storage_code(&e));
    }
    if let Some(aborted) = aborted {
        let store = node.storage.object_store();
        if let Err(e) = super::index::put(&store, stream.id(), &aborted).await {
            // Read the partition again before the retried marker: the tail holds this abort,
            // and the entry is written then.
            tracing::warn!(topic = %topic.name, partition = index, error = %e, "aborted transaction not indexed yet");
            invalidate().await;
            return Err(ResponseError::KafkaStorageError.code());
        }
    }
    if offsets {
        node.groups
            .end_transaction(index, topic.partitions.len(), producer_id, commit);
    }
    tracing::debug!(topic = %topic.name, partition = index, producer_id, commit, offset, "transaction marker written");
    Ok(())
}

/// Sends WriteTxnMarkers to another broker's Kafka listener and reads its answer.
async fn send(
    node: &Node,
    leader: i32,
    request: WriteTxnMarkersRequest,
) -> anyhow::Result<WriteTxnMarkersResponse> {
    const VERSION: i16 = 1;
    let (host, port) = node
        .broker_address(leader)
        .ok_or_else(|| anyhow::anyhow!("broker {leader} is not registered"))?;
    let mut socket = tokio::net::TcpStream::connect((host.as_str(), u16::try_from(port)?)).await?;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::WriteTxnMarkers as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("weir-txn-coordinator")));
    let mut body = BytesMut::new();
    header.encode(&mut body, WriteTxnMarkersRequest::header_version(VERSION))?;
    request.encode(&mut body, VERSION)?;
    let mut frame = BytesMut::with_capacity(body.len() + 4);
    frame.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
    frame.extend_from_slice(&body);
    socket.write_all(&frame).await?;
    let length = socket.read_u32().await?;
    let mut answer = vec![0u8; usize::try_from(length)?];
    socket.read_exact(&mut answer).await?;
    let mut answer = Bytes::from(answer);
    ResponseHeader::decode(
        &mut answer,
        WriteTxnMarkersResponse::header_version(VERSION),
    )?;
    WriteTxnMarkersResponse::decode(&mut answer, VERSION)
}
