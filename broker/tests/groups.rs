//! Consumer groups with librdkafka, of the classic protocol and of KIP-848 (`group.protocol=consumer`,
//! the broker assigns): members share partitions, a member leaving hands its partitions to the
//! others, and committed offsets are honoured after a broker restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::TopicPartitionList;

const TOPIC: &str = "work";
const PARTITIONS: i32 = 8;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    Classic,
    Consumer,
}

fn member(bootstrap: &str, name: &str, protocol: Protocol) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.id", name)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    match protocol {
        // KIP-848 members take their timings from the broker.
        Protocol::Consumer => config
            .set("group.id", "workers-848")
            .set("group.protocol", "consumer"),
        Protocol::Classic => config
            .set("group.id", "workers")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500"),
    };
    let consumer: BaseConsumer = config.create().unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    consumer
}

async fn produce(bootstrap: &str, from: usize, to: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let pending: Vec<_> = (from..to)
        .map(|i| {
            let key = format!("k{i}");
            producer
                .send_result(
                    FutureRecord::to(TOPIC)
                        .key(&key)
                        .payload("v")
                        .partition((i % PARTITIONS as usize) as i32),
                )
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Polls until `done` says stop or the time runs out; returns the keys seen and commits them.
fn consume_until(
    consumer: &BaseConsumer,
    seen: &mut HashSet<String>,
    done: impl Fn(&HashSet<String>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(seen) && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            seen.insert(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
            consumer.commit_message(&m, CommitMode::Sync).unwrap();
        }
    }
}

fn assigned(consumer: &BaseConsumer) -> usize {
    consumer.assignment().unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_rebalance_and_resume_from_committed_offsets() {
    share_rebalance_resume(Protocol::Classic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_members_share_rebalance_and_resume_from_committed_offsets() {
    share_rebalance_resume(Protocol::Consumer).await;
}

fn fast_heartbeats(c: &mut weir_broker::ServeConfig) {
    c.group_consumer_heartbeat_interval_ms = 300;
    c.group_consumer_session_timeout_ms = 10_000;
}

async fn share_rebalance_resume(protocol: Protocol) {
    common::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), fast_heartbeats))
        .await
        .unwrap();
    let bootstrap = server.kafka_addr().to_string();
    server
        .node()
        .create_topic(TOPIC, PARTITIONS as u32, Default::default())
        .await
        .unwrap();
    produce(&bootstrap, 0, 2000).await;

    let b = bootstrap.clone();
    let (seen, a) = tokio::task::spawn_blocking(move || {
        let a = member(&b, "a", protocol);
        let second = member(&b, "b", protocol);
        let mut seen = HashSet::new();
        // Both members get a share of the partitions.
        let deadline = Instant::now() + Duration::from_secs(30);
        while (assigned(&a) == 0
            || assigned(&second) == 0
            || assigned(&a) + assigned(&second) != PARTITIONS as usize)
            && Instant::now() < deadline
        {
            for c in [&a, &second] {
                if let Some(m) = c.poll(Duration::from_millis(50)) {
                    let m = m.unwrap();
                    seen.insert(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
                    c.commit_message(&m, CommitMode::Sync).unwrap();
                }
            }
        }
        assert!(
            assigned(&a) > 0 && assigned(&second) > 0,
            "both members hold partitions"
        );
        assert_eq!(assigned(&a) + assigned(&second), PARTITIONS as usize);
        // Each consumes for a while, then the second leaves.
        consume_until(&second, &mut seen, |s| s.len() >= 600);
        drop(second);
        // The first member takes over every partition and finishes the work.
        consume_until(&a, &mut seen, |s| s.len() >= 2000);
        assert_eq!(
            assigned(&a),
            PARTITIONS as usize,
            "the remaining member took over every partition"
        );
        (seen, a)
    })
    .await
    .unwrap();
    assert_eq!(
        seen.len(),
        2000,
        "every record consumed at least once across the rebalance"
    );
    drop(a);
    server.shutdown().await.unwrap();

    // After a restart, the group resumes from its committed offsets: only new records arrive.
    let server = weir_broker::Server::start(common::config(dir.path(), fast_heartbeats))
        .await
        .unwrap();
    let bootstrap = server.kafka_addr().to_string();
    produce(&bootstrap, 2000, 2010).await;
    let b = bootstrap.clone();
    let (after, committed) = tokio::task::spawn_blocking(move || {
        let c = member(&b, "c", protocol);
        let mut seen = HashSet::new();
        consume_until(&c, &mut seen, |s| s.len() >= 10);
        // Nothing older shows up a little later either.
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end {
            if let Some(m) = c.poll(Duration::from_millis(50)) {
                seen.insert(String::from_utf8(m.unwrap().key().unwrap().to_vec()).unwrap());
            }
        }
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition(TOPIC, p);
        }
        let committed: BTreeMap<i32, i64> = c
            .committed_offsets(list, Duration::from_secs(10))
            .unwrap()
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
            .collect();
        (seen, committed)
    })
    .await
    .unwrap();
    let expected: HashSet<String> = (2000..2010).map(|i| format!("k{i}")).collect();
    assert_eq!(after, expected, "only records after the committed offsets");
    assert_eq!(
        committed.values().sum::<i64>(),
        2010,
        "committed offsets cover every record"
    );
    server.shutdown().await.unwrap();
}
