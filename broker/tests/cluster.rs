//! A cluster of `weir broker` processes sharing one object store: partitions spread over the
//! brokers, a broker killed with `kill -9` is fenced and its partitions served by the others with
//! every acknowledged record, and the active controller killed is replaced.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use weir_tests::cluster::Cluster;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 6;

/// Acknowledged records: (partition, offset) → value.
type Acked = BTreeMap<(i32, i64), String>;

fn env() -> Vec<(String, String)> {
    [
        ("WEIR_CLUSTER__SESSION_TIMEOUT_MS", "2000"),
        ("WEIR_CLUSTER__HEARTBEAT_INTERVAL_MS", "300"),
        ("WEIR_OBJECT_WAL__FLUSH_INTERVAL_MS", "20"),
        ("WEIR_STORAGE__UPLOAD_INTERVAL_MS", "1000"),
        ("WEIR_OFFSETS_TOPIC_PARTITIONS", "6"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn produce(bootstrap: &str, from: usize, n: usize, acked: &mut Acked) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = (from..from + n).map(|i| {
        let producer = producer.clone();
        async move {
            let value = format!("record-{i}");
            let key = format!("key-{i}");
            let record = FutureRecord::to(TOPIC)
                .key(&key)
                .payload(&value)
                .partition(i32::try_from(i).unwrap() % PARTITIONS);
            let delivery = producer
                .send(record, Duration::from_secs(60))
                .await
                .map_err(|(e, _)| e)
                .unwrap_or_else(|e| panic!("record {i} not acknowledged: {e}"));
            ((delivery.partition, delivery.offset), value)
        }
    });
    acked.extend(futures::future::join_all(sends).await);
}

/// Reads every partition from the start to its end; fails on a record read twice.
fn read_all(bootstrap: &str) -> Acked {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "auditor")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut seen = Acked::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "reading {TOPIC} did not reach its end"
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => eprintln!("reading {TOPIC}: {e} (retried)"),
            Some(Ok(m)) => {
                let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                let previous = seen.insert((m.partition(), m.offset()), value);
                assert!(
                    previous.is_none(),
                    "offset {} of {} read twice",
                    m.offset(),
                    m.partition()
                );
            }
        }
    }
    seen
}

fn leaders(bootstrap: &str) -> BTreeMap<i32, i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect()
}

fn check(cluster: &Cluster, acked: &Acked, what: &str) {
    let seen = read_all(&cluster.bootstrap());
    let missing: Vec<_> = acked
        .iter()
        .filter(|(k, v)| seen.get(k) != Some(v))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} acknowledged records not read back (first: {missing:?})\n{}",
        acked.iter().filter(|(k, v)| seen.get(k) != Some(v)).count(),
        acked.len(),
        cluster.logs_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_share_partitions_and_survive_kill9_of_a_broker_and_the_controller() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let mut cluster = Cluster::new(env!("CARGO_BIN_EXE_weir").as_ref(), &url, &env());
    cluster.start(1, true);
    cluster.start(2, true);
    cluster.start(3, false);
    let bootstrap = cluster.bootstrap();

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
    // Every broker leads some partitions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = bootstrap.clone();
        let leaders = tokio::task::spawn_blocking(move || leaders(&b))
            .await
            .unwrap();
        let spread: HashSet<i32> = leaders.values().copied().collect();
        if spread == HashSet::from([1, 2, 3]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions not spread: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut acked = Acked::new();
    produce(&bootstrap, 0, 600, &mut acked).await;
    let c = &cluster;
    let a = acked.clone();
    tokio::task::block_in_place(|| check(c, &a, "three brokers"));

    // A broker dies: fenced after the session timeout, its WAL recovered from the bucket by the
    // controller, its partitions served by the others.
    cluster.kill9(3);
    let survivors = cluster.bootstrap();
    produce(&survivors, 600, 300, &mut acked).await;
    let c = &cluster;
    let a = acked.clone();
    tokio::task::block_in_place(|| check(c, &a, "after kill -9 of broker 3"));

    // The active controller dies: the other controller-capable broker takes over.
    let active = (1..=2)
        .find(|n| {
            let (status, body) = cluster.admin_get(*n, "/v1/cluster");
            status == 200 && body.contains(&format!("\"controller\":{n}"))
        })
        .unwrap_or(1);
    cluster.kill9(active);
    produce(&cluster.bootstrap(), 900, 300, &mut acked).await;
    let c = &cluster;
    let a = acked.clone();
    tokio::task::block_in_place(|| check(c, &a, "after kill -9 of the controller"));
}
