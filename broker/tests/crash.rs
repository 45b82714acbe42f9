//! `kill -9` of a `weir serve` process in the middle of an acks=all produce loses no acknowledged
//! record: after a restart on the same data directory every acknowledged record is read back at the
//! offset it was acknowledged at, with its key and value.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use common::Process;

const PARTITIONS: i32 = 4;

type Acked = Arc<Mutex<HashMap<(i32, i64), (String, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_produce_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Process::start(dir.path());
    let bootstrap = weir.kafka.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for r in admin
        .create_topics(
            [&NewTopic::new(
                "crash",
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000")
        .set("retries", "0")
        .create()
        .unwrap();
    let acked: Acked = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut i = 0u64;
    // Produce for a while, then kill the broker right after queueing a last burst, so that records
    // are in flight (in the producer, on the wire, in the broker) when it dies.
    let mut send_burst = |n: u64, i: &mut u64| {
        for _ in 0..n {
            let (key, value) = (
                format!("k{i}"),
                format!("value-{i}-{}", "x".repeat((*i % 50) as usize)),
            );
            let record = FutureRecord::to("crash")
                .key(&key)
                .payload(&value)
                .partition((*i % PARTITIONS as u64) as i32);
            let delivery = producer.send_result(record).map_err(|(e, _)| e).unwrap();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                if let Ok(Ok(d)) = delivery.await {
                    acked
                        .lock()
                        .unwrap()
                        .insert((d.partition, d.offset), (key, value));
                }
            }));
            *i += 1;
        }
    };
    while started.elapsed() < Duration::from_millis(1500) {
        send_burst(200, &mut i);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_burst(5000, &mut i);
    tokio::time::sleep(Duration::from_millis(3)).await;
    weir.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} of {i} records acknowledged before the kill",
        acked.len()
    );
    assert!(
        acked.len() > 1000,
        "only {} records were acknowledged before the kill",
        acked.len()
    );

    let weir = Process::start(dir.path());
    let bootstrap = weir.kafka.to_string();
    let got = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "crash-check")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            list.add_partition_offset("crash", p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        let mut ends = HashMap::new();
        for p in 0..PARTITIONS {
            ends.insert(
                p,
                consumer
                    .fetch_watermarks("crash", p, Duration::from_secs(10))
                    .unwrap()
                    .1,
            );
        }
        let total: i64 = ends.values().sum();
        let mut got = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (got.len() as i64) < total && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                got.insert((m.partition(), m.offset()), (key, value));
            }
        }
        got
    })
    .await
    .unwrap();
    for (at, record) in &acked {
        assert_eq!(
            got.get(at),
            Some(record),
            "acknowledged record at {at:?} lost or changed"
        );
    }
    drop(weir);
}
