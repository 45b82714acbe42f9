//! A cluster of `weir broker` processes sharing one object store: partitions spread over the
//! brokers, a broker killed with `kill -9` is fenced and its partitions served by the others with
//! every acknowledged record, and the active controller killed is replaced.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

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
        ("WEIR_CLUSTER__BALANCE_INTERVAL_MS", "1000"),
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

/// Creates the test topic with `partitions` partitions.
async fn create_topic(bootstrap: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1));
    for r in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
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
        .map(|(k, v)| (k, v, seen.get(k)))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} acknowledged records not read back (first, with what was read there: \
         {missing:?}; {} records read)\n{}",
        acked.iter().filter(|(k, v)| seen.get(k) != Some(v)).count(),
        acked.len(),
        seen.len(),
        cluster.logs_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_share_partitions_and_survive_kill9_of_a_broker_and_the_controller() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    share_and_survive(&url, &env()).await;
}

/// The same on a real S3 server (SeaweedFS), when `WEIR_S3_TESTS=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_s3_survives_kill9_of_a_broker_and_the_controller() {
    if !weir_tests::s3::enabled("cluster::a_cluster_on_s3") {
        return;
    }
    let s3 = weir_tests::s3::S3Server::start();
    let url = format!("s3://{}/cluster", weir_tests::s3::BUCKET);
    let mut env = env();
    env.extend(s3.env());
    share_and_survive(&url, &env).await;
}

async fn share_and_survive(url: &str, env: &[(String, String)]) {
    let mut cluster = Cluster::new(env!("CARGO_BIN_EXE_weir").as_ref(), url, env);
    cluster.start(1, true);
    cluster.start(2, true);
    cluster.start(3, false);
    let bootstrap = cluster.bootstrap();

    create_topic(&bootstrap, PARTITIONS).await;
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

    // A new broker joins: the balancer gives it its share of partitions, and nothing is lost.
    cluster.start(4, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let led: usize = owners(&cluster).values().filter(|o| **o == 4).count();
        if led >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new broker leads {led} partitions\n{}",
            cluster.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    produce(&cluster.bootstrap(), 1200, 300, &mut acked).await;
    let c = &cluster;
    let a = acked.clone();
    tokio::task::block_in_place(|| check(c, &a, "after a broker joined"));
}

/// A broker paused past its session (a long GC pause, a stalled VM) is fenced and its partitions
/// served by the others with every acknowledged record. When it wakes it learns it was fenced and
/// stops, instead of registering again with a WAL the recovery fenced for good (it would have
/// been given partitions it could never acknowledge a write for); restarted, it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_paused_past_its_session_stops_and_rejoins_once_restarted() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let mut cluster = Cluster::new(env!("CARGO_BIN_EXE_weir").as_ref(), &url, &env());
    cluster.start(1, true);
    cluster.start(2, false);
    cluster.start(3, false);
    create_topic(&cluster.bootstrap(), PARTITIONS).await;
    let leads =
        |cluster: &Cluster, node: u32| owners(cluster).values().filter(|o| **o == node).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while leads(&cluster, 3) == 0 {
        assert!(Instant::now() < deadline, "broker 3 leads nothing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut acked = Acked::new();
    produce(&cluster.bootstrap(), 0, 120, &mut acked).await;

    // Paused: fenced after the session timeout, its partitions given to the others.
    cluster.signal(3, "STOP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while leads(&cluster, 3) > 0 {
        assert!(
            Instant::now() < deadline,
            "the paused broker keeps its partitions\n{}",
            cluster.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let others = format!("{},{}", cluster.broker(1).kafka, cluster.broker(2).kafka);
    produce(&others, 120, 120, &mut acked).await;

    // Resumed: it stops on its own, saying why.
    cluster.signal(3, "CONT");
    let status = tokio::task::block_in_place(|| cluster.wait_exit(3, Duration::from_secs(30)));
    let status = status
        .unwrap_or_else(|| panic!("the fenced broker did not stop\n{}", cluster.logs_tail(20)));
    assert!(!status.success(), "a fenced broker exits with an error");
    assert!(
        cluster.log(3).contains("this broker was fenced"),
        "its log says why\n{}",
        cluster.log(3)
    );

    // Restarted on its data directory: it rejoins, is given partitions and serves them.
    cluster.start(3, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while leads(&cluster, 3) == 0 {
        assert!(
            Instant::now() < deadline,
            "the restarted broker is given nothing\n{}",
            cluster.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    produce(&cluster.bootstrap(), 240, 120, &mut acked).await;
    let c = &cluster;
    tokio::task::block_in_place(|| check(c, &acked, "after a pause past the session"));
}

/// A group's requests that reach the broker its `__consumer_offsets` partition is moving to,
/// before that broker has opened and replayed the partition, wait for it and are answered in
/// request order. Refusing them lets a group's committed offsets go backwards: clients retry a
/// refused OffsetCommit after a backoff, behind the newer commits they send meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_taking_over_a_group_answers_its_commits_in_order() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    // Only the move the test makes: the balancer could move the group's partition meanwhile.
    let mut env = env();
    env.push(("WEIR_CLUSTER__BALANCE_INTERVAL_MS".into(), "0".into()));
    let mut cluster = Cluster::new(env!("CARGO_BIN_EXE_weir").as_ref(), &url, &env);
    cluster.start(1, true);
    cluster.start(2, false);
    create_topic(&cluster.bootstrap(), 1).await;
    let group = "moving";
    let c = &cluster;
    tokio::task::block_in_place(|| {
        // The coordinator now, and a first commit there.
        let mut first = common::Raw::connect_to(c.broker(1).kafka);
        let deadline = Instant::now() + Duration::from_secs(30);
        let coordinator = loop {
            if let Some(id) = find_coordinator(&mut first, group) {
                break id;
            }
            assert!(Instant::now() < deadline, "no coordinator for {group}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut old = common::Raw::connect_to(c.broker(coordinator).kafka);
        assert_eq!(commit_offset(&mut old, group, 1), 0, "the first commit");

        // Its partition moves to the other broker; once that broker names itself, commits go there
        // at once, pipelined, as a client's asynchronous commits are.
        let other = if coordinator == 1 { 2 } else { 1 };
        let index = weir_broker::group::partition_for(group, 6);
        let body =
            format!(r#"{{"topic":"__consumer_offsets","partition":{index},"broker":{other}}}"#);
        let (status, answer) = c.admin_post(other, "/v1/cluster/reassign", &body);
        assert_eq!(status, 200, "reassign: {answer}");
        let mut new = common::Raw::connect_to(c.broker(other).kafka);
        let deadline = Instant::now() + Duration::from_secs(30);
        while find_coordinator(&mut new, group) != Some(other) {
            assert!(
                Instant::now() < deadline,
                "{other} never became the coordinator"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        for offset in [10, 20] {
            new.send(ApiKey::OffsetCommit, 8, &commit_request(group, offset));
        }
        for offset in [10, 20] {
            let mut r = new.receive(ApiKey::OffsetCommit, 8).unwrap();
            let code =
                OffsetCommitResponse::decode(&mut r, 8).unwrap().topics[0].partitions[0].error_code;
            assert_eq!(code, 0, "the commit of {offset} on the new coordinator");
        }
        assert_eq!(
            fetch_offset(&mut new, group),
            Ok(20),
            "the later commit wins"
        );
        // The old coordinator sends the group's clients away.
        assert_eq!(fetch_offset(&mut old, group), Err(16), "NOT_COORDINATOR");
    });
}

/// The coordinator of `group` a broker names, if it names one.
fn find_coordinator(raw: &mut common::Raw, group: &str) -> Option<u32> {
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let mut r = raw.request(ApiKey::FindCoordinator, 3, &request).unwrap();
    let answer = FindCoordinatorResponse::decode(&mut r, 3).unwrap();
    (answer.error_code == 0).then(|| u32::try_from(answer.node_id.0).unwrap())
}

fn commit_request(group: &str, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(offset),
                ]),
        ])
}

/// Commits `offset` for partition 0; the partition's error code.
fn commit_offset(raw: &mut common::Raw, group: &str, offset: i64) -> i16 {
    let mut r = raw
        .request(ApiKey::OffsetCommit, 8, &commit_request(group, offset))
        .unwrap();
    OffsetCommitResponse::decode(&mut r, 8).unwrap().topics[0].partitions[0].error_code
}

/// The group's committed offset of partition 0, or the group's error code.
fn fetch_offset(raw: &mut common::Raw, group: &str) -> Result<i64, i16> {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_indexes(vec![0]),
        ]));
    let mut r = raw.request(ApiKey::OffsetFetch, 7, &request).unwrap();
    let answer = OffsetFetchResponse::decode(&mut r, 7).unwrap();
    if answer.error_code != 0 {
        return Err(answer.error_code);
    }
    Ok(answer.topics[0].partitions[0].committed_offset)
}

/// Which broker is the active controller, as a broker's admin API says.
fn controller(cluster: &Cluster) -> Option<u32> {
    cluster.brokers().find_map(|b| {
        let (status, body) = cluster.admin_get(b.node_id, "/v1/cluster");
        let view: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200)
            .then(|| view["controller"].as_u64())?
            .map(|n| n as u32)
    })
}

/// Partition → owner, as a broker's admin API says.
fn owners(cluster: &Cluster) -> BTreeMap<i32, u32> {
    let Some(b) = cluster.brokers().next() else {
        return BTreeMap::new();
    };
    let (_, body) = cluster.admin_get(b.node_id, "/v1/cluster");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    view["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["topic"] == TOPIC && p["target"] == 0)
        .map(|p| {
            (
                p["partition"].as_i64().unwrap() as i32,
                p["owner"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

/// The continuous producer: record `seq` goes to partition `seq % 6`, one in flight per partition
/// (no idempotence yet, so order holds only without concurrent retries).
fn produce_continuously(
    bootstrap: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(Acked, usize)> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let future: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "1")
            .set("message.timeout.ms", "120000")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let mut acked = Acked::new();
        let mut failed = 0;
        let mut seq = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            // A burst of 30 records, then the acknowledgements.
            let burst: Vec<_> = (seq..seq + 30)
                .map(|i| {
                    let value = format!("seq-{i:08}");
                    let key = format!("k{i}");
                    let partition = i32::try_from(i).unwrap() % PARTITIONS;
                    let send = future
                        .send_result(
                            FutureRecord::to(TOPIC)
                                .key(&key)
                                .payload(&value)
                                .partition(partition),
                        )
                        .map_err(|(e, _)| e);
                    (value, send)
                })
                .collect();
            seq += 30;
            for (value, send) in burst {
                let Ok(delivery) = send else {
                    failed += 1;
                    continue;
                };
                match runtime.block_on(delivery) {
                    Ok(Ok(d)) => {
                        acked.insert((d.partition, d.offset), value);
                    }
                    _ => failed += 1,
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (acked, failed)
    })
}

/// A client whose librdkafka debug lines (`WEIR_TEST_RDKAFKA_DEBUG`, librdkafka's `debug`
/// contexts, such as `cgrp,fetch,consumer`) go to stderr with a UTC time, to be read next to the
/// brokers' logs (`WEIR_TEST_LOG_DIR`, `WEIR_TEST_LOG`) after a failure.
struct Traced(&'static str);

impl rdkafka::ClientContext for Traced {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        trace(self.0, &format!("{facility} {message}"));
    }
}

impl rdkafka::consumer::ConsumerContext for Traced {}

fn traced(config: &mut ClientConfig, name: &'static str) -> BaseConsumer<Traced> {
    if let Some(contexts) = std::env::var("WEIR_TEST_RDKAFKA_DEBUG")
        .ok()
        .filter(|c| !c.is_empty())
    {
        config
            .set("debug", contexts)
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config.create_with_context(Traced(name)).unwrap()
}

fn tracing() -> bool {
    std::env::var_os("WEIR_TEST_RDKAFKA_DEBUG").is_some()
}

fn trace(who: &str, line: &str) {
    if !tracing() {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (s, ms) = (now.as_secs() % 86_400, now.subsec_millis());
    eprintln!(
        "{:02}:{:02}:{:02}.{ms:03} {who} {line}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

/// A consumer group member consuming and committing until `stop`; returns how many records it saw.
///
/// It commits one commit at a time (synchronously): "never backwards" holds only for a client
/// that does. librdkafka retries an OffsetCommit that failed (a transport error when its
/// coordinator dies, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS) after a backoff, while
/// asynchronous commits made meanwhile wait for the next coordinator and go first: a run traced
/// with `WEIR_TEST_RDKAFKA_DEBUG` showed the commit sent as the coordinator was killed landing on
/// its successor after the newer ones, which Kafka would store the same way. What the watcher
/// checks is Weir's part: no acknowledged commit lost, none applied out of order, across moves
/// and failovers of the group's coordinator.
fn consume_in_group(
    bootstrap: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer<Traced> = traced(
            ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "chaos")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "10000"),
            "member",
        );
        consumer.subscribe(&[TOPIC]).unwrap();
        let mut seen = 0;
        let mut last_commit = Instant::now();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                seen += 1;
            }
            if last_commit.elapsed() > Duration::from_millis(300) {
                if let Some(positions) = tracing().then(|| consumer.position().ok()).flatten() {
                    let at: Vec<_> = positions
                        .elements()
                        .iter()
                        .map(|e| (e.partition(), e.offset()))
                        .collect();
                    trace("member", &format!("committing {at:?}"));
                }
                let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
                last_commit = Instant::now();
            }
        }
        let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
        seen
    })
}

/// Watches the group's committed offsets; returns every time one went backwards.
fn watch_commits(
    bootstrap: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer<Traced> = traced(
            ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "chaos"),
            "watcher",
        );
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        let mut backwards = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let mut tpl = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                tpl.add_partition(TOPIC, p);
            }
            if let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(5)) {
                if tracing() {
                    let seen: Vec<_> = committed
                        .elements()
                        .iter()
                        .map(|e| (e.partition(), e.offset()))
                        .collect();
                    trace("watcher", &format!("committed {seen:?}"));
                }
                for e in committed.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        let before = last.insert(e.partition(), o).unwrap_or(-1);
                        if o < before {
                            trace(
                                "watcher",
                                &format!("partition {}: {before} -> {o}", e.partition()),
                            );
                            backwards.push(format!("partition {}: {before} -> {o}", e.partition()));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        backwards
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_and_brokers_die_join_and_drain_under_load() {
    let objects = tempfile::tempdir().unwrap();
    // WEIR_TEST_LOG_DIR keeps the bucket too, for a look after a failure.
    let bucket = std::env::var_os("WEIR_TEST_LOG_DIR").map_or_else(
        || objects.path().to_path_buf(),
        |d| std::path::PathBuf::from(d).join("bucket"),
    );
    std::fs::create_dir_all(&bucket).unwrap();
    let url = format!("file://{}", bucket.display());
    chaos(&url, &env()).await;
}

/// The same on a real S3 server (SeaweedFS), when `WEIR_S3_TESTS=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_partitions_move_and_brokers_die_join_and_drain_under_load() {
    if !weir_tests::s3::enabled("cluster::on_s3_partitions_move") {
        return;
    }
    let s3 = weir_tests::s3::S3Server::start();
    let url = format!("s3://{}/chaos", weir_tests::s3::BUCKET);
    let mut env = env();
    env.extend(s3.env());
    chaos(&url, &env).await;
}

/// Moves every second, kill -9 of a broker and of the controller, two brokers joining and one
/// drained, under a continuous producer and a consumer group; then the audit.
async fn chaos(url: &str, env: &[(String, String)]) {
    let mut cluster = Cluster::new(env!("CARGO_BIN_EXE_weir").as_ref(), url, env);
    cluster.start(1, true);
    cluster.start(2, true);
    cluster.start(3, false);
    // Clients bootstrap from every broker that will ever run (4 and 5 join later).
    create_topic(&cluster.bootstrap(), PARTITIONS).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = produce_continuously(cluster.bootstrap(), stop.clone());
    let group = consume_in_group(cluster.bootstrap(), stop.clone());
    let commits = watch_commits(cluster.bootstrap(), stop.clone());
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(1500).await;

    // Moves every second, each to another broker.
    for round in 0..6 {
        let owners = owners(&cluster);
        let partition = round % PARTITIONS;
        let from = owners.get(&partition).copied().unwrap_or(1);
        let to = if from == 3 { 1 } else { from + 1 };
        let body = format!(r#"{{"topic":"{TOPIC}","partition":{partition},"broker":{to}}}"#);
        let (status, answer) = cluster.admin_post(1, "/v1/cluster/reassign", &body);
        assert_eq!(status, 200, "reassign: {answer}");
        pause(1000).await;
    }
    // A broker dies, then the controller.
    cluster.kill9(3);
    pause(4000).await;
    let active = controller(&cluster).unwrap();
    cluster.kill9(active);
    let survivor = if active == 1 { 2 } else { 1 };
    pause(4000).await;
    // Two brokers join; the survivor is drained and stopped.
    cluster.start(4, true);
    cluster.start(5, false);
    pause(1000).await;
    let (status, answer) = cluster.admin_post(
        4,
        "/v1/cluster/drain",
        &format!(r#"{{"broker":{survivor}}}"#),
    );
    assert_eq!(status, 200, "drain: {answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while owners(&cluster).values().any(|o| *o == survivor) {
        assert!(
            Instant::now() < deadline,
            "drain did not finish\n{}",
            cluster.logs_tail(30)
        );
        pause(200).await;
    }
    assert!(cluster.stop(survivor), "the drained broker stops cleanly");
    pause(4000).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed) = producer.join().unwrap();
    let consumed = group.join().unwrap();
    let backwards = commits.join().unwrap();
    assert!(
        acked.len() > 1000,
        "only {} records acknowledged ({failed} failed)",
        acked.len()
    );
    assert!(consumed > 0, "the consumer group consumed nothing");
    assert!(
        backwards.is_empty(),
        "committed offsets went backwards: {backwards:?}"
    );

    // The audit: every acknowledged record at its offset, each partition in order.
    let c = &cluster;
    let a = acked.clone();
    tokio::task::block_in_place(|| check(c, &a, "after moves, failures, joins and a drain"));
    let mut last: BTreeMap<i32, &str> = BTreeMap::new();
    for ((partition, offset), value) in &acked {
        if let Some(before) = last.insert(*partition, value) {
            assert!(
                before < value.as_str(),
                "partition {partition} out of order at offset {offset}: {before} then {value}"
            );
        }
    }
    eprintln!(
        "audit: {} acknowledged ({failed} not), consumed {consumed} in the group",
        acked.len()
    );
}
