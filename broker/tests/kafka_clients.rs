//! Real Kafka clients (librdkafka through the `rdkafka` crate) against `weir serve`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use common::InProcess;

const PARTITIONS: i32 = 8;

fn producer(bootstrap: &str, compression: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", compression)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "2000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        // librdkafka wants a group even for assign(). Until the group coordinator exists (issue 4)
        // closing such a consumer waits out its session timeout, so keep that short.
        .set("group.id", "weir-tests")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap()
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    if let Ok(debug) = std::env::var("WEIR_TEST_RDKAFKA_DEBUG") {
        config.set("debug", debug);
        config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    let admin: AdminClient<DefaultClientContext> = config.create().unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(3));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

fn assign_all(consumer: &BaseConsumer, topic: &str, partitions: i32, offset: Offset) {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, offset).unwrap();
    }
    consumer.assign(&list).unwrap();
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    // Varied lengths and bytes, some of them not UTF-8.
    (0..(i % 97) + 3)
        .map(|j| (i.wrapping_mul(31) ^ j) as u8)
        .collect()
}

/// What was sent, by (partition, offset): key, value, header value.
type Sent = HashMap<(i32, i64), (Vec<u8>, Vec<u8>, Vec<u8>)>;

async fn produce(bootstrap: &str, topic: &str, compression: &str, count: usize) -> Sent {
    let producer = producer(bootstrap, compression);
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let (k, v) = (key(i), value(i));
        let h = format!("h{i}").into_bytes();
        let record = FutureRecord::to(topic)
            .key(&k)
            .payload(&v)
            .partition((i % PARTITIONS as usize) as i32)
            .headers(OwnedHeaders::new().insert(Header {
                key: "trace",
                value: Some(&h),
            }));
        let delivery = producer.send_result(record).map_err(|(e, _)| e).unwrap();
        pending.push((delivery, k, v, h));
    }
    let mut sent = Sent::new();
    for (delivery, k, v, h) in pending {
        let delivered = delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
        let previous = sent.insert((delivered.partition, delivered.offset), (k, v, h));
        assert!(previous.is_none(), "offset acknowledged twice");
    }
    sent
}

fn consume_all(bootstrap: &str, topic: &str, expected: usize) -> Sent {
    let consumer = consumer(bootstrap);
    assign_all(&consumer, topic, PARTITIONS, Offset::Beginning);
    let mut got = Sent::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < expected && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message.unwrap();
        let header = m.headers().unwrap().get(0);
        assert_eq!(header.key, "trace");
        got.insert(
            (m.partition(), m.offset()),
            (
                m.key().unwrap().to_vec(),
                m.payload().unwrap().to_vec(),
                header.value.unwrap().to_vec(),
            ),
        );
    }
    got
}

/// 100k records over 8 partitions with each codec: every record comes back at the offset it was
/// acknowledged at, with identical key, value and header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_with_every_codec() {
    let node = InProcess::start().await;
    let bootstrap = node.bootstrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        create_topic(&bootstrap, &topic, PARTITIONS).await;
        let sent = produce(&bootstrap, &topic, codec, 100_000).await;
        assert_eq!(sent.len(), 100_000);
        let got = tokio::task::spawn_blocking({
            let (b, t) = (bootstrap.clone(), topic.clone());
            move || consume_all(&b, &t, 100_000)
        })
        .await
        .unwrap();
        assert_eq!(got.len(), sent.len(), "{codec}: every record consumed");
        assert!(
            got == sent,
            "{codec}: records differ from what was produced"
        );
    }
    node.server.shutdown().await.unwrap();
}

/// ListOffsets by timestamp finds the first record at or after it, earliest and latest work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_by_timestamp() {
    let node = InProcess::start().await;
    let bootstrap = node.bootstrap();
    create_topic(&bootstrap, "times", 1).await;
    let producer = producer(&bootstrap, "lz4");
    let base = 1_700_000_000_000i64;
    for i in 0..50i64 {
        let v = format!("v{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("times")
                    .payload(&v)
                    .partition(0)
                    .timestamp(base + i * 1000),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
    let consumer = consumer(&bootstrap);
    let query = |ts: i64| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("times", 0, Offset::Offset(ts))
            .unwrap();
        let found = consumer
            .offsets_for_times(list, Duration::from_secs(10))
            .unwrap();
        found.find_partition("times", 0).unwrap().offset()
    };
    assert_eq!(query(base), Offset::Offset(0));
    assert_eq!(query(base + 20_500), Offset::Offset(21));
    assert_eq!(query(base + 49_000), Offset::Offset(49));
    assert_eq!(
        query(base + 60_000),
        Offset::End,
        "after the last record: the end"
    );
    let (low, high) = consumer
        .fetch_watermarks("times", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!((low, high), (0, 50));
    node.server.shutdown().await.unwrap();
}

/// A consumer waiting on an empty partition gets a record as soon as it is produced, not when its
/// fetch wait runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_when_data_arrives() {
    let node = InProcess::start().await;
    let bootstrap = node.bootstrap();
    create_topic(&bootstrap, "wake", 1).await;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "weir-tests")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.wait.max.ms", "30000")
        .set("socket.timeout.ms", "60000")
        .create()
        .unwrap();
    assign_all(&consumer, "wake", 1, Offset::Beginning);
    // Let the consumer's first Fetch reach the broker and wait there.
    assert!(consumer.poll(Duration::from_secs(2)).is_none());
    let producer = producer(&bootstrap, "none");
    let sent_at = Instant::now();
    producer
        .send(
            FutureRecord::<(), _>::to("wake")
                .payload("now")
                .partition(0),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let (consumer, received) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(25);
        while Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let received = (m.unwrap().payload().unwrap().to_vec(), sent_at.elapsed());
                return (consumer, Some(received));
            }
        }
        (consumer, None)
    })
    .await
    .unwrap();
    let (payload, after) = received.expect("the record arrives");
    assert_eq!(payload, b"now");
    // The fetch waits up to 30 s: arriving well before that shows the append woke it.
    assert!(
        after < Duration::from_secs(15),
        "the waiting fetch was not woken by the append ({after:?})"
    );
    // Wake the consumer's next waiting fetch, so closing it does not wait for that fetch to time out.
    producer
        .send(
            FutureRecord::<(), _>::to("wake")
                .payload("bye")
                .partition(0),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    drop(consumer);
    node.server.shutdown().await.unwrap();
}

/// Topics and records survive a graceful restart (the metadata log and the objects), and deleted
/// topics stay deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_topics_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    let bootstrap = server.kafka_addr().to_string();
    create_topic(&bootstrap, "kept", PARTITIONS).await;
    create_topic(&bootstrap, "dropped", 1).await;
    let sent = produce(&bootstrap, "kept", "zstd", 5_000).await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for r in admin
        .delete_topics(&["dropped"], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    server.shutdown().await.unwrap();

    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    let bootstrap = server.kafka_addr().to_string();
    let got = tokio::task::spawn_blocking({
        let b = bootstrap.clone();
        move || consume_all(&b, "kept", 5_000)
    })
    .await
    .unwrap();
    assert!(got == sent);
    let names: Vec<String> = server
        .node()
        .topics()
        .into_iter()
        .map(|t| t.name)
        .filter(|n| !n.starts_with("__"))
        .collect();
    assert_eq!(
        names,
        vec!["kept".to_string()],
        "user topics: the deleted one stays deleted"
    );
    server.shutdown().await.unwrap();
}
