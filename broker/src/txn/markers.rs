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

/// Writes the marker of `producer_id`'s transaction into `topic`/`index`, wherever it is led;
/// durable when it returns Ok. Errors are Kafka codes (UNKNOWN_TOPIC_OR_PARTITION: the partition is
/// gone, nothing to mark).
pub async fn write(
    node: &Node,
    topic: &str,
    index: i32,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), i16> {
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let found = node.topic(topic).ok_or(unknown)?;
    let stream = *found
        .partitions
        .get(usize::try_from(index).map_err(|_| unknown)?)
        .ok_or(unknown)?;
    if let Some(partition) = node.partition(&found, index) {
        return write_local(
            node,
            &found,
            index,
            partition,
            producer_id,
            epoch,
            commit,
            coordinator_epoch,
        )
        .await;
    }
    let not_leader = ResponseError::NotLeaderOrFollower.code();
    let leader = node.leader_of(stream).ok_or(not_leader)?;
    if leader == node.config.node_id {
        return Err(not_leader); // opening here
    }
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_transaction_result(commit)
        .with_coordinator_epoch(coordinator_epoch)
        .with_topics(vec![
            WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_indexes(vec![index]),
        ]);
    let request = WriteTxnMarkersRequest::default().with_markers(vec![marker]);
    let response = tokio::time::timeout(REMOTE_TIMEOUT, send(node, leader, request))
        .await
        .map_err(|_| ResponseError::RequestTimedOut.code())?
        .map_err(|e| {
            tracing::debug!(leader, error = %e, "WriteTxnMarkers to another broker failed");
            ResponseError::NetworkException.code()
        })?;
    let code = response
        .markers
        .iter()
        .flat_map(|m| &m.topics)
        .flat_map(|t| &t.partitions)
        .map(|p| p.error_code)
        .find(|c| *c != 0)
        .unwrap_or(0);
    if code == 0 { Ok(()) } else { Err(code) }
}

/// Writes a marker into a partition open here.
#[allow(clippy::too_many_arguments)]
pub async fn write_local(
    node: &Node,
    topic: &Topic,
    index: i32,
    partition: Partition,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Result<(), i16> {
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
