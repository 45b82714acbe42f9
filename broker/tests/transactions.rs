//! Transactions (issue 10) with librdkafka's transactional producer: read_committed consumers see
//! committed transactions only and nothing past an open one, read_uncommitted consumers see
//! everything; aborts stay hidden after a `kill -9` restart that must take them from the
//! aborted-transaction index (the producer-state window is cut to one offset); a transaction past
//! its timeout is aborted and its producer fenced; a new producer with the same transactional id
//! aborts what the old one left open; offsets sent in a transaction are committed with it, or not
//! at all. DescribeTransactions and ListTransactions show the coordinator's view.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Process, Raw};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const T: Duration = Duration::from_secs(30);

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
    let topic =
        rdkafka::admin::NewTopic::new(name, partitions, rdkafka::admin::TopicReplication::Fixed(1));
    let result = futures::executor::block_on(
        admin.create_topics(&[topic], &rdkafka::admin::AdminOptions::new()),
    )
    .unwrap();
    assert!(result.iter().all(Result::is_ok), "{result:?}");
}

fn transactional(bootstrap: &str, id: &str, timeout_ms: u32) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .create()
        .unwrap();
    producer.init_transactions(T).unwrap();
    producer
}

/// Sends `values` round-robin over `partitions` and waits until they are written (not committed).
fn send(producer: &BaseProducer, topic: &str, partitions: i32, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        let partition = i32::try_from(i).unwrap() % partitions;
        producer
            .send(
                BaseRecord::<str, str>::to(topic)
                    .partition(partition)
                    .payload(v),
            )
            .unwrap();
    }
    producer.flush(T).unwrap();
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Plain (non-transactional) records.
fn send_plain(bootstrap: &str, topic: &str, partitions: i32, values: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    send(&producer, topic, partitions, values);
}

/// Every record value of the topic a consumer with `isolation` reads from the beginning, polling
/// until `want` arrived and then one more second (to catch extras), or `wait` passed.
fn read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    want: usize,
    wait: Duration,
) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{topic}-{isolation}"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + wait;
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|q| Instant::now() < q) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
        if seen.len() >= want && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    seen.sort();
    seen
}

fn sorted(groups: &[&[String]]) -> Vec<String> {
    let mut all: Vec<String> = groups.iter().flat_map(|g| g.iter().cloned()).collect();
    all.sort();
    all
}

fn describe(addr: std::net::SocketAddr, id: &str) -> (i16, String, Vec<(String, Vec<i32>)>) {
    let mut raw = Raw::connect_to(addr);
    let request = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(StrBytes::from_string(id.to_string()))]);
    let mut body = raw
        .request(ApiKey::DescribeTransactions, 0, &request)
        .unwrap();
    let response = DescribeTransactionsResponse::decode(&mut body, 0).unwrap();
    let state = &response.transaction_states[0];
    let topics = state
        .topics
        .iter()
        .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
        .collect();
    (
        state.error_code,
        state.transaction_state.to_string(),
        topics,
    )
}

fn list(addr: std::net::SocketAddr, states: &[&str]) -> Vec<(String, String)> {
    let mut raw = Raw::connect_to(addr);
    let request = ListTransactionsRequest::default()
        .with_state_filters(
            states
                .iter()
                .map(|s| StrBytes::from_string((*s).to_string()))
                .collect(),
        )
        .with_duration_filter(-1);
    let mut body = raw.request(ApiKey::ListTransactions, 1, &request).unwrap();
    let response = ListTransactionsResponse::decode(&mut body, 1).unwrap();
    assert_eq!(response.error_code, 0);
    response
        .transaction_states
        .iter()
        .map(|t| {
            (
                t.transactional_id.0.to_string(),
                t.transaction_state.to_string(),
            )
        })
        .collect()
}

#[test]
fn read_committed_sees_committed_transactions_only_also_after_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "WEIR_TRANSACTION_STATE_PARTITIONS".to_string(),
        "4".to_string(),
    )];
    let weir = Process::start_with(dir.path(), &[], &env);
    let b = weir.kafka.to_string();
    create_topic(&b, "tx", 2);

    let producer = transactional(&b, "tx-app", 60_000);
    let (c1, aborted, plain, c2) = (
        values("c1", 10),
        values("a", 10),
        values("p", 5),
        values("c2", 10),
    );
    producer.begin_transaction().unwrap();
    send(&producer, "tx", 2, &c1);
    producer.commit_transaction(T).unwrap();
    producer.begin_transaction().unwrap();
    send(&producer, "tx", 2, &aborted);
    producer.abort_transaction(T).unwrap();
    send_plain(&b, "tx", 2, &plain);
    producer.begin_transaction().unwrap();
    send(&producer, "tx", 2, &c2);
    producer.commit_transaction(T).unwrap();
    assert_eq!(describe(weir.kafka, "tx-app").1, "CompleteCommit");

    let committed = sorted(&[&c1, &plain, &c2]);
    assert_eq!(read(&b, "tx", 2, "read_committed", 25, T), committed);
    assert_eq!(
        read(&b, "tx", 2, "read_uncommitted", 35, T),
        sorted(&[&c1, &aborted, &plain, &c2])
    );

    // An open transaction holds back everything after its first record, for read_committed only.
    let (open, after) = (values("o", 4), values("q", 3));
    producer.begin_transaction().unwrap();
    send(&producer, "tx", 2, &open);
    send_plain(&b, "tx", 2, &after);
    let (code, state, topics) = describe(weir.kafka, "tx-app");
    assert_eq!((code, state.as_str()), (0, "Ongoing"));
    assert_eq!(topics, vec![("tx".to_string(), vec![0, 1])]);
    assert_eq!(
        list(weir.kafka, &["Ongoing"]),
        vec![("tx-app".to_string(), "Ongoing".to_string())]
    );
    assert_eq!(
        read(&b, "tx", 2, "read_committed", 32, Duration::from_secs(3)),
        committed,
        "nothing past the open transaction's first record"
    );
    assert_eq!(read(&b, "tx", 2, "read_uncommitted", 42, T).len(), 42);
    producer.commit_transaction(T).unwrap();
    let all_committed = sorted(&[&c1, &plain, &c2, &open, &after]);
    assert_eq!(read(&b, "tx", 2, "read_committed", 32, T), all_committed);
    drop(producer);

    // After a kill -9 the partitions are read again with a producer-state window of one offset:
    // the aborted transaction is known from the index in the object store, not the tail.
    weir.kill9();
    let env = [
        (
            "WEIR_TRANSACTION_STATE_PARTITIONS".to_string(),
            "4".to_string(),
        ),
        ("WEIR_PRODUCER_STATE_WINDOW".to_string(), "1".to_string()),
    ];
    let weir = Process::start_with(dir.path(), &[], &env);
    let b = weir.kafka.to_string();
    assert_eq!(read(&b, "tx", 2, "read_committed", 32, T), all_committed);
    assert_eq!(describe(weir.kafka, "tx-app").1, "CompleteCommit");
    // The coordinator's state survived too: the id's producer is fenced by the next one.
    let again = transactional(&b, "tx-app", 60_000);
    again.begin_transaction().unwrap();
    send(&again, "tx", 2, &values("n", 2));
    again.commit_transaction(T).unwrap();
    assert_eq!(read(&b, "tx", 2, "read_committed", 34, T).len(), 34);
    weir.stop();
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "WEIR_TRANSACTION_STATE_PARTITIONS".to_string(),
        "4".to_string(),
    )];
    let weir = Process::start_with(dir.path(), &[], &env);
    let b = weir.kafka.to_string();
    create_topic(&b, "slow", 1);
    let producer = transactional(&b, "slow-app", 2_000);
    producer.begin_transaction().unwrap();
    send(&producer, "slow", 1, &values("late", 5));
    let deadline = Instant::now() + T;
    while describe(weir.kafka, "slow-app").1 != "CompleteAbort" {
        assert!(
            Instant::now() < deadline,
            "the timed-out transaction was not aborted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its records stay hidden and hold nothing back.
    let later = values("after", 3);
    send_plain(&b, "slow", 1, &later);
    assert_eq!(
        read(&b, "slow", 1, "read_committed", 3, T),
        sorted(&[&later])
    );
    let err = producer.commit_transaction(T).unwrap_err();
    assert!(
        matches!(err, KafkaError::Transaction(_)),
        "a fenced producer cannot commit: {err:?}"
    );
    weir.stop();
}

#[test]
fn a_new_producer_aborts_what_the_old_one_left_open_and_offsets_follow_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(
        "WEIR_TRANSACTION_STATE_PARTITIONS".to_string(),
        "4".to_string(),
    )];
    let weir = Process::start_with(dir.path(), &[], &env);
    let b = weir.kafka.to_string();
    create_topic(&b, "out", 1);
    create_topic(&b, "in", 1);

    let zombie = transactional(&b, "worker", 60_000);
    zombie.begin_transaction().unwrap();
    send(&zombie, "out", 1, &values("zombie", 5));
    let successor = transactional(&b, "worker", 60_000);
    let err = zombie.commit_transaction(T).unwrap_err();
    assert!(matches!(err, KafkaError::Transaction(_)), "{err:?}");

    // Offsets sent in an aborted transaction are not committed; in a committed one they are.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", "transform")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let offsets = |offset: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("in", 0, Offset::Offset(offset))
            .unwrap();
        tpl
    };
    let metadata = consumer.group_metadata().unwrap();
    successor.begin_transaction().unwrap();
    send(&successor, "out", 1, &values("dropped", 2));
    successor
        .send_offsets_to_transaction(&offsets(7), &metadata, T)
        .unwrap();
    successor.abort_transaction(T).unwrap();
    successor.begin_transaction().unwrap();
    send(&successor, "out", 1, &values("kept", 3));
    successor
        .send_offsets_to_transaction(&offsets(11), &metadata, T)
        .unwrap();
    successor.commit_transaction(T).unwrap();

    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("in", 0);
    let committed = consumer.committed_offsets(wanted, T).unwrap();
    let by_partition: BTreeMap<i32, Offset> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect();
    assert_eq!(by_partition.get(&0), Some(&Offset::Offset(11)));
    assert_eq!(
        read(&b, "out", 1, "read_committed", 3, T),
        sorted(&[&values("kept", 3)])
    );
    assert_eq!(read(&b, "out", 1, "read_uncommitted", 10, T).len(), 10);

    // The coordinator rebuilt from __transaction_state keeps the committed offsets too.
    weir.kill9();
    let weir = Process::start_with(dir.path(), &[], &env);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", weir.kafka.to_string())
        .set("group.id", "transform")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("in", 0);
    let committed = consumer.committed_offsets(wanted, T).unwrap();
    assert_eq!(
        committed.elements()[0].offset(),
        Offset::Offset(11),
        "committed offsets survive a kill -9"
    );
    weir.stop();
}

/// The coordinator's broker for a transactional id: the one whose DescribeTransactions answers.
fn coordinator(cluster: &weir_tests::cluster::Cluster, id: &str) -> Option<u32> {
    cluster
        .brokers()
        .find(|b| describe(b.kafka, id).0 == 0)
        .map(|b| b.node_id)
}

#[test]
fn transactions_span_brokers_and_survive_the_coordinators_failover() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let env: Vec<(String, String)> = [
        ("WEIR_CLUSTER__SESSION_TIMEOUT_MS", "2000"),
        ("WEIR_CLUSTER__HEARTBEAT_INTERVAL_MS", "300"),
        ("WEIR_OBJECT_WAL__FLUSH_INTERVAL_MS", "20"),
        ("WEIR_OFFSETS_TOPIC_PARTITIONS", "2"),
        ("WEIR_TRANSACTION_STATE_PARTITIONS", "2"),
        ("WEIR_CLUSTER__BALANCE_INTERVAL_MS", "3600000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut cluster =
        weir_tests::cluster::Cluster::new(env!("CARGO_BIN_EXE_weir").as_ref(), &url, &env);
    cluster.start(1, true);
    cluster.start(2, true);
    let b = cluster.bootstrap();
    // Four partitions over two brokers: each transaction has partitions on both, so the
    // coordinator marks some of them through WriteTxnMarkers to the other broker.
    create_topic(&b, "spread", 4);
    let producer = transactional(&b, "span", 60_000);
    let (c1, aborted, c2) = (values("c1", 20), values("a", 20), values("c2", 20));
    for (batch, commit) in [(&c1, true), (&aborted, false), (&c2, true)] {
        producer.begin_transaction().unwrap();
        send(&producer, "spread", 4, batch);
        if commit {
            producer.commit_transaction(T).unwrap();
        } else {
            producer.abort_transaction(T).unwrap();
        }
    }
    assert_eq!(
        read(&b, "spread", 4, "read_committed", 40, T),
        sorted(&[&c1, &c2])
    );
    assert_eq!(read(&b, "spread", 4, "read_uncommitted", 60, T).len(), 60);

    // The coordinator killed mid-transaction: the survivor takes `__transaction_state` over, and
    // a new producer of the id aborts what was left open.
    let open = values("open", 8);
    producer.begin_transaction().unwrap();
    send(&producer, "spread", 4, &open);
    let victim = coordinator(&cluster, "span").expect("a coordinator for the id");
    drop(producer);
    cluster.kill9(victim);
    let b = cluster.bootstrap();
    let successor = transactional(&b, "span", 60_000);
    let c3 = values("c3", 8);
    successor.begin_transaction().unwrap();
    send(&successor, "spread", 4, &c3);
    successor.commit_transaction(T).unwrap();
    assert_eq!(
        read(&b, "spread", 4, "read_committed", 48, T),
        sorted(&[&c1, &c2, &c3])
    );
}

/// InitProducerId for `id` over the raw protocol (v4): (error, producer id, epoch).
fn init(raw: &mut Raw, id: &str, claimed: (i64, i16)) -> (i16, i64, i16) {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.to_string()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(claimed.0))
        .with_producer_epoch(claimed.1);
    let mut body = raw.request(ApiKey::InitProducerId, 4, &request).unwrap();
    let r = InitProducerIdResponse::decode(&mut body, 4).unwrap();
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

#[test]
fn a_fenced_producer_cannot_fence_its_successor_and_idle_ids_expire() {
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "WEIR_TRANSACTION_STATE_PARTITIONS".to_string(),
            "4".to_string(),
        ),
        (
            "WEIR_TRANSACTIONAL_ID_EXPIRATION_MS".to_string(),
            "5000".to_string(),
        ),
    ];
    let weir = Process::start_with(dir.path(), &[], &env);
    let mut raw = Raw::connect_to(weir.kafka);
    // The first lookup of a transactional id creates __transaction_state.
    let deadline = Instant::now() + T;
    loop {
        let request = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![StrBytes::from_static_str("solo")]);
        let mut body = raw.request(ApiKey::FindCoordinator, 4, &request).unwrap();
        let r = FindCoordinatorResponse::decode(&mut body, 4).unwrap();
        if r.coordinators[0].error_code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no coordinator: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (error, pid, first) = init(&mut raw, "solo", (-1, -1));
    assert_eq!((error, first), (0, 0));
    // A new instance starts fresh: the next epoch, the same id.
    let (error, same, second) = init(&mut raw, "solo", (-1, -1));
    assert_eq!((error, same, second), (0, pid, 1));
    // The old instance tries to recover with its own (id, epoch) (KIP-360): it is fenced, and
    // does not fence the new one.
    let fenced = kafka_protocol::error::ResponseError::ProducerFenced.code();
    assert_eq!(init(&mut raw, "solo", (pid, first)).0, fenced);
    // The current one may bump its own epoch.
    assert_eq!(init(&mut raw, "solo", (pid, second)), (0, pid, 2));
    assert_eq!(
        init(&mut raw, "solo", (pid, second)).0,
        fenced,
        "now stale too"
    );
    // Unused for transactional_id_expiration_ms, the id is forgotten.
    let deadline = Instant::now() + T;
    let not_found = kafka_protocol::error::ResponseError::TransactionalIdNotFound.code();
    while describe(weir.kafka, "solo").0 != not_found {
        assert!(
            Instant::now() < deadline,
            "the idle transactional id was not forgotten"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    weir.stop();
}

/// The open-transaction checkpoint files under a `weir serve` data directory's object store.
fn checkpoints(dir: &std::path::Path) -> usize {
    let root = dir.join("objects").join("txn-index");
    let Ok(streams) = std::fs::read_dir(root) else {
        return 0;
    };
    streams
        .flatten()
        .flat_map(|s| std::fs::read_dir(s.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_string_lossy().starts_with("open-"))
        .count()
}

#[test]
fn a_transaction_open_longer_than_the_state_window_survives_a_kill9() {
    let dir = tempfile::tempdir().unwrap();
    // A window of 20 offsets: the transaction's first records leave it after 20 more appends.
    let env = [
        (
            "WEIR_TRANSACTION_STATE_PARTITIONS".to_string(),
            "4".to_string(),
        ),
        ("WEIR_PRODUCER_STATE_WINDOW".to_string(), "20".to_string()),
    ];
    let weir = Process::start_with(dir.path(), &[], &env);
    let b = weir.kafka.to_string();
    create_topic(&b, "long", 1);
    let producer = transactional(&b, "long-app", 120_000);
    producer.begin_transaction().unwrap();
    let open = values("t", 2);
    send(&producer, "long", 1, &open);
    let plain = values("p", 50);
    send_plain(&b, "long", 1, &plain);
    // The owner checkpoints the open transaction once it is at risk of leaving the window.
    let deadline = Instant::now() + T;
    while checkpoints(dir.path()) == 0 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint of the open transaction"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    weir.kill9();
    let weir = Process::start_with(dir.path(), &[], &env);
    let b = weir.kafka.to_string();
    assert_eq!(
        read(&b, "long", 1, "read_committed", 1, Duration::from_secs(3)),
        Vec::<String>::new(),
        "still open after the restart: nothing past its first record"
    );
    // The broker came back on new ports: the application's next producer of the id aborts what
    // the first left open.
    drop(producer);
    let _successor = transactional(&b, "long-app", 120_000);
    assert_eq!(
        read(&b, "long", 1, "read_committed", 50, T),
        sorted(&[&plain])
    );
    assert_eq!(read(&b, "long", 1, "read_uncommitted", 52, T).len(), 52);
    // Nothing open any more: the checkpoint goes.
    let deadline = Instant::now() + T;
    while checkpoints(dir.path()) != 0 {
        assert!(Instant::now() < deadline, "the checkpoint was not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    weir.stop();
}

/// A read_committed Fetch past the high watermark is out of range (the client resets), as a
/// read_uncommitted one is; at the end of the log it is simply empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_fetch_past_the_end_is_out_of_range() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
    let node = common::InProcess::start().await;
    node.server
        .node()
        .create_topic("ends", 1, Default::default())
        .await
        .unwrap();
    let addr = node.server.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let fetch = |raw: &mut Raw, isolation: i8, offset: i64| {
            let request = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_isolation_level(isolation)
                .with_topics(vec![
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_static_str("ends")))
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                ]);
            let mut body = raw.request(ApiKey::Fetch, 11, &request).unwrap();
            let r = FetchResponse::decode(&mut body, 11).unwrap();
            r.responses[0].partitions[0].error_code
        };
        let out_of_range = kafka_protocol::error::ResponseError::OffsetOutOfRange.code();
        for isolation in [0, 1] {
            assert_eq!(
                fetch(&mut raw, isolation, 5),
                out_of_range,
                "isolation {isolation}"
            );
            assert_eq!(fetch(&mut raw, isolation, 0), 0, "isolation {isolation}");
        }
    })
    .await
    .unwrap();
}
