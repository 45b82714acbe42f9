//! `weir serve` on a real S3-compatible server (SeaweedFS, gated by `WEIR_S3_TESTS=1`): the bucket
//! is the whole state. A broker started on a new, empty data directory and the same bucket serves
//! every record and every committed offset of the one before it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_tests::s3::{BUCKET, S3Server};

use common::Process;

const TOPIC: &str = "bucket-only";
const PARTITIONS: i32 = 3;
const RECORDS: usize = 3000;
const GROUP: &str = "bucket-group";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_an_empty_data_dir_serves_everything_from_the_bucket() {
    if !weir_tests::s3::enabled("s3::a_broker_on_an_empty_data_dir") {
        return;
    }
    let s3 = S3Server::start();
    let url = format!("s3://{BUCKET}/serve-restart");
    let args = ["--object-store", url.as_str()];

    let first_dir = tempfile::tempdir().unwrap();
    let weir = Process::start_with(first_dir.path(), &args, &s3.env());
    let bootstrap = weir.kafka.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1));
    for r in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = (0..RECORDS).map(|i| {
        let producer = producer.clone();
        async move {
            let (key, value) = (
                format!("k{i}"),
                format!("value-{i}-{}", "y".repeat(i % 300)),
            );
            let record = FutureRecord::to(TOPIC)
                .key(&key)
                .payload(&value)
                .partition((i % PARTITIONS as usize) as i32);
            let delivery = producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            ((delivery.partition, delivery.offset), (key, value))
        }
    });
    let acked: HashMap<(i32, i64), (String, String)> = futures::stream::iter(sends)
        .buffer_unordered(500)
        .collect()
        .await;
    assert_eq!(acked.len(), RECORDS);
    // A group commits offsets half way through each partition.
    let committed: Vec<(i32, i64)> = (0..PARTITIONS)
        .map(|p| (p, (RECORDS / PARTITIONS as usize / 2) as i64))
        .collect();
    let to_commit = committed.clone();
    let boot = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let consumer = group_consumer(&boot);
        let mut list = TopicPartitionList::new();
        for (p, offset) in to_commit {
            list.add_partition_offset(TOPIC, p, Offset::Offset(offset))
                .unwrap();
        }
        consumer.commit(&list, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();
    drop(producer);
    weir.stop();

    // Nothing of the first broker is left but the bucket.
    drop(first_dir);
    let store = weir_storage::open_store_with_env(&url, s3.env()).unwrap();
    let objects = store
        .list(Some(&"data".into()))
        .filter(|m| futures::future::ready(m.is_ok()))
        .count()
        .await;
    assert!(objects > 0, "no data object in the bucket");

    let second_dir = tempfile::tempdir().unwrap();
    let weir = Process::start_with(second_dir.path(), &args, &s3.env());
    let bootstrap = weir.kafka.to_string();
    let (got, offsets) = tokio::task::spawn_blocking(move || {
        let consumer = group_consumer(&bootstrap);
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition(TOPIC, p);
        }
        let offsets = consumer
            .committed_offsets(list.clone(), Duration::from_secs(10))
            .unwrap();
        for p in 0..PARTITIONS {
            list.set_partition_offset(TOPIC, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        let mut got = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < RECORDS && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                got.insert((m.partition(), m.offset()), (key, value));
            }
        }
        (got, offsets)
    })
    .await
    .unwrap();
    assert_eq!(got.len(), RECORDS, "records read back from the bucket");
    for (at, record) in &acked {
        assert_eq!(
            got.get(at),
            Some(record),
            "record at {at:?} lost or changed"
        );
    }
    for (p, offset) in committed {
        let found = offsets.find_partition(TOPIC, p).unwrap().offset();
        assert_eq!(
            found,
            Offset::Offset(offset),
            "committed offset of partition {p}"
        );
    }
    weir.stop();
}

fn group_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_objects_from_the_bucket() {
    if !weir_tests::s3::enabled("s3::retention_deletes_objects_from_the_bucket") {
        return;
    }
    let s3 = S3Server::start();
    let url = format!("s3://{BUCKET}/retention");
    common::scenarios::retention_deletes_objects(&url, &s3.env()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_wal_on_s3_survives_kill9() {
    if !weir_tests::s3::enabled("s3::object_wal_on_s3_survives_kill9") {
        return;
    }
    let s3 = S3Server::start();
    let url = format!("s3://{BUCKET}/object-wal");
    common::scenarios::object_wal_survives_kill9(&url, &s3.env()).await;
}
