//! Hostile and broken input at the wire level: each gets the answer Kafka gives (or the connection is
//! closed, for what cannot be parsed), and the broker keeps serving everyone else.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use common::{InProcess, Raw};

/// The broker still answers a fresh connection.
fn still_serving(node: &InProcess) {
    let mut raw = Raw::connect(node);
    let mut response = raw
        .request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .unwrap();
    let versions = ApiVersionsResponse::decode(&mut response, 3).unwrap();
    assert_eq!(versions.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_frames_close_only_their_connection() {
    let node = InProcess::start().await;
    tokio::task::spawn_blocking(move || {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("too short for a header", vec![0, 3]),
            ("unknown api key", vec![0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]),
            (
                "api not served (SaslHandshake)",
                vec![0, 17, 0, 1, 0, 0, 0, 1, 0, 0],
            ),
            (
                "unsupported Metadata version",
                vec![0, 3, 0, 99, 0, 0, 0, 1, 0, 0],
            ),
            (
                "truncated Metadata v12 body",
                vec![0, 3, 0, 12, 0, 0, 0, 1, 0, 4, b'a', b'b', b'c', b'd', 0, 5],
            ),
            (
                // Found by fuzzing: AlterConfigs v0 declaring 2.6 billion resources made the
                // decoder allocate 85 GB and the process abort (vendor/kafka-protocol).
                "AlterConfigs whose array length is far beyond the frame",
                vec![0, 0x21, 0, 0, 0, 0, 0x9b, 0, 0, 0, 0x3a, 0x0a, 0x9b, 0],
            ),
            (
                "a string length beyond the frame",
                vec![0, 3, 0, 1, 0, 0, 0, 1, 0x7f, 0xff, b'x'],
            ),
        ];
        for (what, body) in cases {
            let mut raw = Raw::connect(&node);
            raw.send_frame(&body);
            assert!(raw.is_closed(), "{what}: the connection should be closed");
            still_serving(&node);
        }
        // A frame larger than max_frame_bytes is refused before its body is read.
        let mut raw = Raw::connect(&node);
        raw.stream.write_all(&(200u32 << 20).to_be_bytes()).unwrap();
        assert!(
            raw.is_closed(),
            "oversized frame: the connection should be closed"
        );
        still_serving(&node);
        node
    })
    .await
    .unwrap()
    .server
    .shutdown()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_too_new_gets_a_v0_answer_with_error_35() {
    let node = InProcess::start().await;
    let node = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(&node);
        // ApiVersions v99, header v2 as a new client would send it.
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(99)
            .with_correlation_id(7);
        let mut body = BytesMut::new();
        header.encode(&mut body, 2).unwrap();
        body.put_u8(0); // empty tagged fields of a body we do not know
        raw.send_frame(&body);
        let mut response = raw.read_frame().unwrap();
        assert_eq!(response.get_i32(), 7);
        let v0 = ApiVersionsResponse::decode(&mut response, 0).unwrap();
        assert_eq!(v0.error_code, 35);
        let metadata = v0
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Metadata as i16)
            .unwrap();
        assert_eq!((metadata.min_version, metadata.max_version), (0, 13));
        let produce = v0
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .unwrap();
        assert_eq!(
            produce.min_version, 3,
            "never a higher minimum than Kafka 4.1"
        );
        // The connection stays usable, as with Kafka.
        let mut ok = raw
            .request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
            .unwrap();
        assert_eq!(
            ApiVersionsResponse::decode(&mut ok, 3).unwrap().error_code,
            0
        );
        node
    })
    .await
    .unwrap();
    node.server.shutdown().await.unwrap();
}

fn batch(n: i64) -> BytesMut {
    let values = vec![Bytes::from_static(b"value"); usize::try_from(n).unwrap()];
    BytesMut::from(&common::record_batch(&values, 1_000)[..])
}

fn produce(raw: &mut Raw, topic: &str, records: Bytes) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let mut response = raw
        .request(ApiKey::Produce, 9, &request)
        .expect("a produce response");
    let response = ProduceResponse::decode(&mut response, 9).unwrap();
    response.responses[0].partition_responses[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_kafka_error_codes_and_nothing_is_appended() {
    let node = InProcess::start_with(|c| c.auto_create_topics = false).await;
    node.server
        .node()
        .create_topic("t", 1, Default::default())
        .await
        .unwrap();
    let node = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(&node);
        assert_eq!(
            produce(&mut raw, "t", batch(3).freeze()),
            0,
            "a good batch is accepted"
        );

        let mut bad_crc = batch(2);
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        assert_eq!(
            produce(&mut raw, "t", bad_crc.freeze()),
            2,
            "CORRUPT_MESSAGE"
        );

        let mut old_magic = batch(2);
        old_magic[16] = 1;
        assert_eq!(
            produce(&mut raw, "t", old_magic.freeze()),
            43,
            "UNSUPPORTED_FOR_MESSAGE_FORMAT"
        );

        let truncated = batch(2).freeze().slice(..30);
        assert_eq!(produce(&mut raw, "t", truncated), 2, "CORRUPT_MESSAGE");

        let big = common::record_batch(&[Bytes::from(vec![7u8; 2 << 20])], 0);
        assert_eq!(produce(&mut raw, "t", big), 10, "MESSAGE_TOO_LARGE");

        assert_eq!(
            produce(&mut raw, "missing", batch(1).freeze()),
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );

        // Metadata does not create the topic when auto-creation is off.
        let request = MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("missing")))),
        ]));
        let mut response = raw.request(ApiKey::Metadata, 12, &request).unwrap();
        let metadata = MetadataResponse::decode(&mut response, 12).unwrap();
        assert_eq!(metadata.topics[0].error_code, 3);
        node
    })
    .await
    .unwrap();
    // Only the good batch is in the partition.
    let topic = node.server.node().topic("t").unwrap();
    let partition = node.server.node().partition(&topic, 0).unwrap();
    assert_eq!(partition.stream.high_watermark().get(), 3);
    assert!(node.server.node().topic("missing").is_none());
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_idle_and_slow_clients_are_cut_off() {
    let node = InProcess::start_with(|c| {
        c.max_connections_per_ip = 2;
        c.connections_max_idle_ms = 700;
        c.request_read_timeout_ms = 500;
    })
    .await;
    tokio::task::spawn_blocking(move || {
        // Two connections from 127.0.0.1 are served; a third is closed at once.
        let mut first = Raw::connect(&node);
        let mut second = Raw::connect(&node);
        let mut third = Raw::connect(&node);
        assert!(
            third
                .request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
                .is_none()
        );
        assert!(
            first
                .request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
                .is_some()
        );
        // Idle past connections_max_idle_ms: closed.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(
            first
                .request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
                .is_none()
        );
        assert!(second.is_closed());
        // Their places are free again. A client that sends a length and then trickles: closed
        // after request_read_timeout_ms, holding nothing.
        let mut slow = Raw::connect(&node);
        slow.stream.write_all(&100u32.to_be_bytes()).unwrap();
        slow.stream.write_all(&[0, 18, 0, 3]).unwrap();
        let started = std::time::Instant::now();
        assert!(slow.is_closed());
        assert!(
            started.elapsed() < std::time::Duration::from_millis(690),
            "closed by the read timeout, not the idle one"
        );
        still_serving(&node);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_more_records_than_allowed_is_refused() {
    let node = InProcess::start_with(|c| c.max_records_per_batch = 10).await;
    node.server
        .node()
        .create_topic("counted", 1, Default::default())
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(&node);
        assert_eq!(produce(&mut raw, "counted", batch(10).freeze()), 0);
        let invalid_record = kafka_protocol::error::ResponseError::InvalidRecord.code();
        assert_eq!(
            produce(&mut raw, "counted", batch(11).freeze()),
            invalid_record
        );
        still_serving(&node);
    })
    .await
    .unwrap();
}
