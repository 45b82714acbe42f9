//! The descriptive APIs: DescribeCluster, DescribeConfigs (through librdkafka's admin client too),
//! OffsetForLeaderEpoch across a restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use common::{InProcess, Raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_cluster_and_configs() {
    let node = InProcess::start().await;
    let configs: BTreeMap<String, String> =
        [("retention.ms".to_string(), "3600000".to_string())].into();
    node.server
        .node()
        .create_topic("described", 2, configs)
        .await
        .unwrap();

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", node.bootstrap())
        .create()
        .unwrap();
    let results = admin
        .describe_configs(
            [
                &ResourceSpecifier::Topic("described"),
                &ResourceSpecifier::Broker(1),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let topic = results[0].as_ref().unwrap();
    let retention = topic.get("retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert!(!retention.is_default);
    let cleanup = topic.get("cleanup.policy").unwrap();
    assert_eq!(cleanup.value.as_deref(), Some("delete"));
    assert!(cleanup.is_default);
    let broker = results[1].as_ref().unwrap();
    assert_eq!(
        broker
            .get("auto.create.topics.enable")
            .unwrap()
            .value
            .as_deref(),
        Some("true")
    );

    let node = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(&node);
        let mut response = raw
            .request(
                ApiKey::DescribeCluster,
                1,
                &DescribeClusterRequest::default(),
            )
            .unwrap();
        let cluster = DescribeClusterResponse::decode(&mut response, 1).unwrap();
        assert_eq!(cluster.controller_id.0, 1);
        assert_eq!(cluster.brokers.len(), 1);
        assert_eq!(
            cluster.brokers[0].port,
            i32::from(node.server.kafka_addr().port())
        );
        assert_eq!(
            cluster.cluster_id.to_string(),
            node.server.node().cluster_id
        );

        let unknown = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("nope")),
        ]);
        let mut response = raw.request(ApiKey::DescribeConfigs, 4, &unknown).unwrap();
        let described = DescribeConfigsResponse::decode(&mut response, 4).unwrap();
        assert_eq!(described.results[0].error_code, 3, "unknown topic");
        node
    })
    .await
    .unwrap();
    node.server.shutdown().await.unwrap();
}

fn offset_for_epoch(raw: &mut Raw, epoch: i32) -> (i16, i32, i64) {
    let request = OffsetForLeaderEpochRequest::default().with_topics(vec![
        OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("epochs")))
            .with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(epoch),
            ]),
    ]);
    let mut response = raw
        .request(ApiKey::OffsetForLeaderEpoch, 4, &request)
        .unwrap();
    let r = OffsetForLeaderEpochResponse::decode(&mut response, 4).unwrap();
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

async fn append(server: &weir_broker::Server, n: u32) {
    let topic = server.node().topic("epochs").unwrap();
    let partition = server.node().partition(&topic, 0).unwrap();
    for _ in 0..n {
        let payload = bytes::Bytes::from_static(b"payload");
        partition.stream.append(1, payload).await.unwrap();
    }
}

/// Each restart bumps the leader epoch; OffsetForLeaderEpoch tells where each epoch ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_follows_the_epoch_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    server
        .node()
        .create_topic("epochs", 1, BTreeMap::new())
        .await
        .unwrap();
    append(&server, 5).await; // epoch 1: offsets 0..5
    server.shutdown().await.unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    append(&server, 3).await; // epoch 2: offsets 5..8
    let addr = server.kafka_addr();
    let answers = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        (
            offset_for_epoch(&mut raw, 1),
            offset_for_epoch(&mut raw, 2),
            offset_for_epoch(&mut raw, 0),
        )
    })
    .await
    .unwrap();
    assert_eq!(answers.0, (0, 1, 5), "epoch 1 ended where epoch 2 began");
    assert_eq!(
        answers.1,
        (0, 2, 8),
        "the current epoch ends at the log end"
    );
    assert_eq!(
        answers.2,
        (0, -1, -1),
        "an epoch older than the history is undefined"
    );
    server.shutdown().await.unwrap();
}

/// Requests sent back to back are answered in order; Produce with acks=0 gets no answer at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_acks_0_is_silent() {
    pipelined(InProcess::start().await).await;
}

/// The same with a connection budget smaller than one request (`max_in_flight_bytes`) and two
/// requests in flight: every request still gets its answer, in order, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_larger_than_the_connection_budget_are_served_one_by_one() {
    pipelined(
        InProcess::start_with(|c| {
            c.max_in_flight_bytes = 16;
            c.max_in_flight_requests = 2;
        })
        .await,
    )
    .await;
}

async fn pipelined(node: InProcess) {
    use bytes::{Buf, BufMut, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiVersionsRequest, MetadataRequest, ProduceRequest, RequestHeader,
    };
    use kafka_protocol::protocol::{Encodable, HeaderVersion};

    fn frame<R: Encodable + HeaderVersion>(
        key: ApiKey,
        version: i16,
        correlation: i32,
        request: &R,
    ) -> Vec<u8> {
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .encode(&mut body, R::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut out = Vec::new();
        out.put_u32(u32::try_from(body.len()).unwrap());
        out.extend_from_slice(&body);
        out
    }

    node.server
        .node()
        .create_topic("quiet", 1, BTreeMap::new())
        .await
        .unwrap();
    let batch = common::record_batch(&[bytes::Bytes::from_static(b"fire and forget")], 0);
    let produce = ProduceRequest::default()
        .with_acks(0)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("quiet")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ]);
    let node = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut raw = Raw::connect(&node);
        let mut all = Vec::new();
        all.extend(frame(
            ApiKey::ApiVersions,
            3,
            1,
            &ApiVersionsRequest::default(),
        ));
        all.extend(frame(ApiKey::Produce, 9, 2, &produce));
        all.extend(frame(
            ApiKey::Metadata,
            12,
            3,
            &MetadataRequest::default().with_topics(None),
        ));
        all.extend(frame(
            ApiKey::ApiVersions,
            3,
            4,
            &ApiVersionsRequest::default(),
        ));
        raw.stream.write_all(&all).unwrap();
        let ids: Vec<i32> = (0..3)
            .map(|_| raw.read_frame().unwrap().get_i32())
            .collect();
        assert_eq!(
            ids,
            vec![1, 3, 4],
            "in order, and nothing for the acks=0 produce"
        );
        // Pipelined acks=all Produce requests (which overlap their waits for durability) with a
        // Metadata request among them: answered in order, offsets in request order.
        let mut all = Vec::new();
        let acked = produce.clone().with_acks(-1);
        for id in 10..30 {
            if id == 20 {
                all.extend(frame(ApiKey::Metadata, 12, id, &MetadataRequest::default()));
            } else {
                all.extend(frame(ApiKey::Produce, 9, id, &acked));
            }
        }
        raw.stream.write_all(&all).unwrap();
        let mut offsets = Vec::new();
        for id in 10..30 {
            let mut body = raw.read_frame().unwrap();
            assert_eq!(body.get_i32(), id, "answered in request order");
            if id != 20 {
                // Produce v9 is flexible: the response header has tagged fields.
                let _tagged = body.get_u8();
                let r = kafka_protocol::messages::ProduceResponse::decode(&mut body, 9).unwrap();
                let p = &r.responses[0].partition_responses[0];
                assert_eq!(p.error_code, 0);
                offsets.push(p.base_offset);
            }
        }
        assert_eq!(
            offsets,
            (1..20).collect::<Vec<i64>>(),
            "one offset each, in order"
        );
        node
    })
    .await
    .unwrap();
    let topic = node.server.node().topic("quiet").unwrap();
    let partition = node.server.node().partition(&topic, 0).unwrap();
    assert_eq!(
        partition.stream.high_watermark().get(),
        20,
        "the acks=0 record and the 19 acknowledged ones were appended"
    );
    node.server.shutdown().await.unwrap();
}

/// CreatePartitions grows a topic; AlterConfigs and IncrementalAlterConfigs change topic configs,
/// refuse unknown names and bad values with INVALID_CONFIG, and the changes survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_configs_can_be_changed() {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    use rdkafka::admin::{AlterConfig, NewPartitions};

    let dir = tempfile::tempdir().unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    server
        .node()
        .create_topic("grow", 2, BTreeMap::new())
        .await
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", server.kafka_addr().to_string())
        .create()
        .unwrap();
    let r = admin
        .create_partitions([&NewPartitions::new("grow", 5)], &AdminOptions::new())
        .await
        .unwrap();
    r[0].as_ref().unwrap();
    let r = admin
        .create_partitions([&NewPartitions::new("grow", 3)], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r[0].is_err(), "shrinking is refused");
    let r = admin
        .alter_configs(
            [&AlterConfig::new(ResourceSpecifier::Topic("grow")).set("retention.ms", "1000")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    r[0].as_ref().unwrap();

    let addr = server.kafka_addr();
    let codes = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let mut alter = |name: &str, op: i8, value: &str| {
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("grow"))
                    .with_configs(vec![
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(name.to_string()))
                            .with_config_operation(op)
                            .with_value(Some(StrBytes::from_string(value.to_string()))),
                    ]),
            ]);
            let mut r = raw
                .request(ApiKey::IncrementalAlterConfigs, 1, &request)
                .unwrap();
            IncrementalAlterConfigsResponse::decode(&mut r, 1)
                .unwrap()
                .responses[0]
                .error_code
        };
        (
            alter("no.such.config", 0, "1"),
            alter("retention.ms", 0, "soon"),
            alter("max.message.bytes", 0, "2000000"),
            alter("cleanup.policy", 2, "compact"),
            // Kafka configs that do not apply to Weir's storage are accepted, as tools set them.
            alter("flush.ms", 0, "1000"),
            alter("min.cleanable.dirty.ratio", 0, "half"),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        codes,
        (40, 40, 0, 0, 0, 40),
        "INVALID_CONFIG for unknown names and bad values"
    );
    // CreateTopics checks configs the same way.
    use rdkafka::admin::{NewTopic, TopicReplication};
    let created = admin
        .create_topics(
            [
                &NewTopic::new("bad-config", 1, TopicReplication::Fixed(1))
                    .set("dummy.doesntexist", "1"),
                &NewTopic::new("good-config", 1, TopicReplication::Fixed(1)).set("flush.ms", "10"),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &created[0],
            Err((_, rdkafka::types::RDKafkaErrorCode::InvalidConfig))
        ),
        "{created:?}"
    );
    assert!(created[1].is_ok(), "{created:?}");
    assert!(server.node().topic("bad-config").is_none());
    server.shutdown().await.unwrap();

    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    let topic = server.node().topic("grow").unwrap();
    assert_eq!(topic.partitions.len(), 5);
    assert_eq!(
        topic.configs.get("retention.ms").map(String::as_str),
        Some("1000")
    );
    assert_eq!(
        topic.configs.get("max.message.bytes").map(String::as_str),
        Some("2000000")
    );
    assert_eq!(
        topic.configs.get("cleanup.policy").map(String::as_str),
        Some("delete,compact")
    );
    assert!(
        server.node().partition(&topic, 4).is_some(),
        "new partitions are open after a restart"
    );
    server.shutdown().await.unwrap();
}

/// DeleteRecords moves the log start: earliest offsets and consumers from the beginning start
/// there, before and after a restart; refusals get Kafka's codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start() {
    use rdkafka::TopicPartitionList;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Message, Offset};

    common::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    let node = server.node();
    node.create_topic("trim", 2, BTreeMap::new()).await.unwrap();
    let compact = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    node.create_topic("keyed", 1, compact).await.unwrap();
    let bootstrap = server.kafka_addr().to_string();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let sends: Vec<_> = (0..10)
        .map(|i| {
            let value = format!("v{i}");
            let producer = producer.clone();
            async move {
                let record = FutureRecord::<(), _>::to("trim")
                    .partition(0)
                    .payload(&value);
                producer
                    .send(record, std::time::Duration::from_secs(10))
                    .await
            }
        })
        .collect();
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset("trim", 0, Offset::Offset(4))
        .unwrap();
    list.add_partition_offset("trim", 1, Offset::Offset(1))
        .unwrap(); // past its end (0)
    list.add_partition_offset("trim", 7, Offset::Offset(0))
        .unwrap();
    list.add_partition_offset("keyed", 0, Offset::Offset(0))
        .unwrap();
    let result = admin
        .delete_records(&list, &AdminOptions::new())
        .await
        .unwrap();
    let outcome: BTreeMap<(String, i32), Result<i64, String>> = result
        .elements()
        .iter()
        .map(|e| {
            let r = match e.error() {
                Ok(()) => Ok(e.offset().to_raw().unwrap()),
                Err(err) => Err(format!("{err:?}")),
            };
            ((e.topic().to_string(), e.partition()), r)
        })
        .collect();
    assert_eq!(outcome[&("trim".to_string(), 0)], Ok(4), "{outcome:?}");
    let refused = |key: (&str, i32), code: &str| {
        let r = &outcome[&(key.0.to_string(), key.1)];
        assert!(
            r.as_ref().is_err_and(|e| e.contains(code)),
            "{key:?}: {r:?}"
        );
    };
    refused(("trim", 1), "OffsetOutOfRange");
    // librdkafka refuses a partition it does not know before asking (Local: Unknown partition).
    refused(("trim", 7), "Unknown");
    refused(("keyed", 0), "PolicyViolation");
    // On the wire, without the client's own check: an unknown partition, a negative offset.
    let addr = server.kafka_addr();
    let codes = tokio::task::spawn_blocking(move || {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
        let request = DeleteRecordsRequest::default().with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("trim")))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(7)
                        .with_offset(0),
                    DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(-5),
                ]),
        ]);
        let mut raw = Raw::connect_to(addr);
        let mut r = raw.request(ApiKey::DeleteRecords, 2, &request).unwrap();
        let response = DeleteRecordsResponse::decode(&mut r, 2).unwrap();
        response.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(
        codes,
        vec![3, 1],
        "UNKNOWN_TOPIC_OR_PARTITION, OFFSET_OUT_OF_RANGE"
    );

    let check = move |bootstrap: String| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "trim-check")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let timeout = std::time::Duration::from_secs(10);
        let marks = consumer.fetch_watermarks("trim", 0, timeout).unwrap();
        let mut assign = TopicPartitionList::new();
        assign
            .add_partition_offset("trim", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&assign).unwrap();
        let first = loop {
            if let Some(m) = consumer.poll(timeout) {
                let m = m.unwrap();
                break (m.offset(), m.payload().unwrap().to_vec());
            }
        };
        (marks, first)
    };
    let b = bootstrap.clone();
    let (marks, first) = tokio::task::spawn_blocking(move || check(b)).await.unwrap();
    assert_eq!(marks, (4, 10));
    assert_eq!(
        first,
        (4, b"v4".to_vec()),
        "consumption starts at the new start"
    );
    drop((producer, admin));
    server.shutdown().await.unwrap();

    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    let b = server.kafka_addr().to_string();
    let (marks, first) = tokio::task::spawn_blocking(move || check(b)).await.unwrap();
    assert_eq!(marks, (4, 10), "the start offset survives a restart");
    assert_eq!(first, (4, b"v4".to_vec()));
    server.shutdown().await.unwrap();
}

/// DescribeTopicPartitions pages through partitions with a cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_topic_partitions_pages_with_a_cursor() {
    use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
    use kafka_protocol::messages::{
        DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
    };
    let node = InProcess::start().await;
    node.server
        .node()
        .create_topic("a", 3, BTreeMap::new())
        .await
        .unwrap();
    node.server
        .node()
        .create_topic("b", 2, BTreeMap::new())
        .await
        .unwrap();
    let addr = node.server.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let name = |n: &str| TopicName(StrBytes::from_string(n.to_string()));
        let mut request = DescribeTopicPartitionsRequest::default()
            .with_topics(vec![
                TopicRequest::default().with_name(name("b")),
                TopicRequest::default().with_name(name("a")),
                TopicRequest::default().with_name(name("nope")),
            ])
            .with_response_partition_limit(2);
        let mut pages = Vec::new();
        loop {
            let mut r = raw
                .request(ApiKey::DescribeTopicPartitions, 0, &request)
                .unwrap();
            let response = DescribeTopicPartitionsResponse::decode(&mut r, 0).unwrap();
            for t in &response.topics {
                let parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
                pages.push((t.name.as_ref().unwrap().to_string(), t.error_code, parts));
            }
            match response.next_cursor {
                Some(cursor) => request.cursor = Some(
                    kafka_protocol::messages::describe_topic_partitions_request::Cursor::default()
                        .with_topic_name(cursor.topic_name)
                        .with_partition_index(cursor.partition_index),
                ),
                None => break,
            }
        }
        assert_eq!(
            pages,
            vec![
                ("a".to_string(), 0, vec![0, 1]),
                ("a".to_string(), 0, vec![2]),
                ("b".to_string(), 0, vec![0]),
                ("b".to_string(), 0, vec![1]),
                ("nope".to_string(), 3, vec![]),
            ]
        );
    })
    .await
    .unwrap();
    node.server.shutdown().await.unwrap();
}

/// Fetch's `max_bytes` (KIP-74): the first partition with data may go over by one batch; the
/// partitions after it get only batches that still fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_keeps_to_the_response_limit() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};

    let node = InProcess::start().await;
    node.server
        .node()
        .create_topic("big", 3, BTreeMap::new())
        .await
        .unwrap();
    let topic = node.server.node().topic("big").unwrap();
    for p in 0..3 {
        let batch = common::record_batch(&[bytes::Bytes::from(vec![b'x'; 100_000])], 0);
        let partition = node.server.node().partition(&topic, p).unwrap();
        let len = batch.len();
        partition
            .stream
            .append_with(1, len, |base| {
                weir_broker::batch::assign_offsets(&batch, base.get(), 0)
            })
            .await
            .unwrap();
    }
    let addr = node.server.kafka_addr();
    let sizes = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(150_000)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("big")))
                    .with_partitions(
                        (0..3)
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(0)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    ),
            ]);
        let mut r = raw.request(ApiKey::Fetch, 12, &request).unwrap();
        let response = FetchResponse::decode(&mut r, 12).unwrap();
        response.responses[0]
            .partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(sizes[0] > 100_000, "{sizes:?}");
    assert_eq!(&sizes[1..], &[0, 0], "nothing more fits in 150 kB");
    node.server.shutdown().await.unwrap();
}
