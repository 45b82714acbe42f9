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
