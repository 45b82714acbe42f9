//! Idempotent producers (issue 10): InitProducerId, per producer and partition sequence checks
//! (duplicates of the last five batches acknowledged without a second write, gaps and old epochs
//! refused with Kafka's codes), state rebuilt from the stream after a `kill -9`, and librdkafka's
//! idempotent producer end to end, also through lost responses (a proxy that drops connections
//! after forwarding Produce requests, so the client retries batches the broker already wrote).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::{Process, Raw};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let result = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(result.iter().all(Result::is_ok), "{result:?}");
}

/// A batch of `count` records of an idempotent producer, starting at `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Bytes {
    let values: Vec<Bytes> = (seq..seq + count)
        .map(|i| Bytes::from(format!("v{i}")))
        .collect();
    common::producer_batch(&values, 1_000, pid, epoch, seq)
}

/// Produces one batch; (error code, base offset).
fn produce(raw: &mut Raw, topic: &str, records: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let mut body = raw.request(ApiKey::Produce, 9, &request).unwrap();
    let response = ProduceResponse::decode(&mut body, 9).unwrap();
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn init_producer_id(raw: &mut Raw, pid: i64, epoch: i16) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch);
    let mut body = raw.request(ApiKey::InitProducerId, 4, &request).unwrap();
    let r = InitProducerIdResponse::decode(&mut body, 4).unwrap();
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_acknowledged_once_and_the_state_survives_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Process::start(dir.path());
    create_topic(&weir.kafka.to_string(), "idem", 1).await;
    let addr = weir.kafka;
    let (pid, weir) = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let (error, pid, epoch) = init_producer_id(&mut raw, -1, -1);
        assert_eq!((error, epoch), (0, 0));
        assert!(pid >= 0);
        let (_, other, _) = init_producer_id(&mut raw, -1, -1);
        assert_ne!(other, pid, "each producer its own id");
        assert_eq!(produce(&mut raw, "idem", batch(pid, 0, 0, 3)), (0, 0));
        assert_eq!(produce(&mut raw, "idem", batch(pid, 0, 3, 2)), (0, 3));
        // A retried batch: the same offsets, nothing written again.
        assert_eq!(produce(&mut raw, "idem", batch(pid, 0, 0, 3)), (0, 0));
        assert_eq!(produce(&mut raw, "idem", batch(pid, 0, 3, 2)), (0, 3));
        // A gap.
        assert_eq!(
            produce(&mut raw, "idem", batch(pid, 0, 9, 1)).0,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(produce(&mut raw, "idem", batch(pid, 0, 5, 1)), (0, 5));
        // Another producer interleaved does not disturb it.
        assert_eq!(produce(&mut raw, "idem", batch(other, 0, 0, 1)), (0, 6));
        // Asking again gives a new id: a claimed id and epoch are not taken on trust.
        let (error, fresh, epoch) = init_producer_id(&mut raw, pid, 0);
        assert_eq!(error, 0);
        assert!(fresh != pid && fresh != other && epoch == 0);
        // A new epoch (the client's own bump, KIP-360) starts at 0 and fences the old one.
        assert_eq!(
            produce(&mut raw, "idem", batch(pid, 1, 3, 1)).0,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(produce(&mut raw, "idem", batch(pid, 1, 0, 2)), (0, 7));
        assert_eq!(
            produce(&mut raw, "idem", batch(pid, 0, 6, 1)).0,
            INVALID_PRODUCER_EPOCH
        );
        (pid, weir)
    })
    .await
    .unwrap();
    weir.kill9();

    // A new process on the same data: the state comes back from the stream.
    let weir = Process::start(dir.path());
    let addr = weir.kafka;
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        assert_eq!(
            produce(&mut raw, "idem", batch(pid, 1, 0, 2)),
            (0, 7),
            "a duplicate"
        );
        assert_eq!(
            produce(&mut raw, "idem", batch(pid, 0, 6, 1)).0,
            INVALID_PRODUCER_EPOCH
        );
        assert_eq!(
            produce(&mut raw, "idem", batch(pid, 1, 5, 1)).0,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(
            produce(&mut raw, "idem", batch(pid, 1, 2, 1)),
            (0, 9),
            "next in order"
        );
        // DescribeProducers shows both producers as the stream has them.
        let request = DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(TopicName(StrBytes::from_static_str("idem")))
                .with_partition_indexes(vec![0]),
        ]);
        let mut body = raw.request(ApiKey::DescribeProducers, 0, &request).unwrap();
        let described = DescribeProducersResponse::decode(&mut body, 0).unwrap();
        let p = &described.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        let active: Vec<(i64, i32, i32)> = p
            .active_producers
            .iter()
            .map(|a| (a.producer_id.0, a.producer_epoch, a.last_sequence))
            .collect();
        assert!(active.contains(&(pid, 1, 2)), "{active:?}");
        assert_eq!(active.len(), 2, "{active:?}");
        weir
    })
    .await
    .unwrap();
}

/// A TCP proxy to `upstream` that, for the first `drops` Produce requests, forwards the request
/// and then closes the client's connection instead of forwarding the answer: the broker wrote the
/// batch, the client never heard.
struct LossyProxy {
    addr: SocketAddr,
    dropped: Arc<AtomicUsize>,
}

impl LossyProxy {
    fn start_on(port: u16, upstream: SocketAddr, drops: usize) -> LossyProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let addr = listener.local_addr().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = dropped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let counter = counter.clone();
                std::thread::spawn(move || relay(client, upstream, &counter, drops));
            }
        });
        LossyProxy { addr, dropped }
    }
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn relay(mut client: TcpStream, upstream: SocketAddr, dropped: &AtomicUsize, drops: usize) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    // Requests and answers alternate per correlation id; the answer of a Produce request
    // whose turn it is to be lost is never forwarded.
    let (tx, rx) = std::sync::mpsc::channel::<(i32, bool)>();
    let mut back_client = client.try_clone().unwrap();
    let mut back_server = server.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut lose: HashMap<i32, bool> = HashMap::new();
        while let Some(frame) = read_frame(&mut back_server) {
            let correlation = (&frame[..4]).get_i32();
            while let Ok((c, l)) = rx.try_recv() {
                lose.insert(c, l);
            }
            if lose.remove(&correlation) == Some(true) {
                let _ = back_client.shutdown(std::net::Shutdown::Both);
                let _ = back_server.shutdown(std::net::Shutdown::Both);
                return;
            }
            let mut out = (frame.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&frame);
            if back_client.write_all(&out).is_err() {
                return;
            }
        }
        let _ = back_client.shutdown(std::net::Shutdown::Both);
    });
    while let Some(frame) = read_frame(&mut client) {
        let mut header = &frame[..];
        let key = header.get_i16();
        let _version = header.get_i16();
        let correlation = header.get_i32();
        let lose = key == ApiKey::Produce as i16
            && dropped
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < drops).then_some(n + 1)
                })
                .is_ok();
        let _ = tx.send((correlation, lose));
        let mut out = (frame.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&frame);
        if server.write_all(&out).is_err() {
            return;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_retries_after_lost_answers_write_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    // The broker advertises the proxy, so every client connection goes through it.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let advertised = format!("127.0.0.1:{port}");
    // (Its dispatcher, a client of the advertised address, is not wanted here.)
    let weir = Process::start_with(
        dir.path(),
        &["--advertised-listener", &advertised],
        &[("WEIR_DISPATCHER__ENABLED".into(), "false".into())],
    );
    let proxy = LossyProxy::start_on(port, weir.kafka, 5);
    create_topic(&proxy.addr.to_string(), "exactly", 3).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", proxy.addr.to_string())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("retry.backoff.ms", "50")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let n = 3000;
    let mut sends = Vec::new();
    for i in 0..n {
        let key = format!("k{}", i % 30);
        let value = format!("{i}");
        sends.push(async {
            let (key, value) = (key, value);
            producer
                .send(
                    FutureRecord::to("exactly").key(&key).payload(&value),
                    Duration::from_secs(60),
                )
                .await
        });
        if sends.len() == 500 {
            for r in futures::future::join_all(std::mem::take(&mut sends)).await {
                r.unwrap();
            }
        }
    }
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    assert_eq!(
        proxy.dropped.load(Ordering::SeqCst),
        5,
        "answers were lost, the producer retried"
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", weir.kafka.to_string())
        .set("group.id", "exactly-check")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["exactly"]).unwrap();
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while total < n {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("every record read back")
            .unwrap();
        let value: i64 = std::str::from_utf8(m.payload().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        seen.entry(key).or_default().push(value);
        total += 1;
    }
    // Nothing more (no duplicates) within a second.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), consumer.recv())
            .await
            .is_err(),
        "a record beyond the {n} produced: a duplicate"
    );
    for (key, values) in &seen {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(&sorted, values, "{key} out of order");
        sorted.dedup();
        assert_eq!(sorted.len(), values.len(), "{key} has duplicates");
    }
    drop(weir);
}

/// [`produce`] to a partition that may still be opening on its new owner (as clients do, it
/// retries NOT_LEADER_OR_FOLLOWER and LEADER_NOT_AVAILABLE).
fn produce_to_new_owner(raw: &mut Raw, topic: &str, records: Bytes) -> (i16, i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = produce(raw, topic, records.clone());
        if !matches!(answer.0, 5 | 6) || std::time::Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn leader_of(bootstrap: &str, topic: &str) -> i32 {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata.topics()[0].partitions()[0].leader()
}

/// Waits until `node` leads the topic's partition 0.
fn wait_leader(cluster: &weir_tests::cluster::Cluster, topic: &str, node: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while leader_of(&cluster.bootstrap(), topic) != node {
        assert!(
            std::time::Instant::now() < deadline,
            "{node} never led {topic}\n{}",
            cluster.logs_tail(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_follows_a_partition_move_and_a_failover() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let env: Vec<(String, String)> = [
        ("WEIR_CLUSTER__SESSION_TIMEOUT_MS", "2000"),
        ("WEIR_CLUSTER__HEARTBEAT_INTERVAL_MS", "300"),
        ("WEIR_OBJECT_WAL__FLUSH_INTERVAL_MS", "20"),
        ("WEIR_STORAGE__UPLOAD_INTERVAL_MS", "1000"),
        ("WEIR_OFFSETS_TOPIC_PARTITIONS", "2"),
        // No balancing: the test moves the partition itself.
        ("WEIR_CLUSTER__BALANCE_INTERVAL_MS", "3600000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut cluster =
        weir_tests::cluster::Cluster::new(env!("CARGO_BIN_EXE_weir").as_ref(), &url, &env);
    cluster.start(1, true);
    cluster.start(2, true);
    create_topic(&cluster.bootstrap(), "moving", 1).await;
    let cluster = tokio::task::spawn_blocking(move || {
        let first = leader_of(&cluster.bootstrap(), "moving");
        let other = 3 - first;
        let node = |n: i32| cluster.broker(u32::try_from(n).unwrap()).kafka;
        let mut raw = Raw::connect_to(node(first));
        let (error, pid, _) = init_producer_id(&mut raw, -1, -1);
        assert_eq!(error, 0);
        assert_eq!(produce(&mut raw, "moving", batch(pid, 0, 0, 3)), (0, 0));
        assert_eq!(produce(&mut raw, "moving", batch(pid, 0, 3, 2)), (0, 3));

        // Moved (no data copied): the new owner reads the producers' state from the stream.
        let body = format!(r#"{{"topic":"moving","partition":0,"broker":{other}}}"#);
        let (status, answer) =
            cluster.admin_post(u32::try_from(first).unwrap(), "/v1/cluster/reassign", &body);
        assert_eq!(status, 200, "{answer}");
        wait_leader(&cluster, "moving", other);
        let mut raw = Raw::connect_to(node(other));
        assert_eq!(
            produce_to_new_owner(&mut raw, "moving", batch(pid, 0, 3, 2)),
            (0, 3),
            "a duplicate after the move"
        );
        assert_eq!(
            produce(&mut raw, "moving", batch(pid, 0, 9, 1)).0,
            OUT_OF_ORDER_SEQUENCE_NUMBER
        );
        assert_eq!(produce(&mut raw, "moving", batch(pid, 0, 5, 1)), (0, 5));
        (cluster, pid, first, other)
    })
    .await
    .unwrap();
    let (mut cluster, pid, first, other) = cluster;

    // Its owner killed: the survivor recovers the partition, and the state with it.
    cluster.kill9(u32::try_from(other).unwrap());
    tokio::task::spawn_blocking(move || {
        wait_leader(&cluster, "moving", first);
        let mut raw = Raw::connect_to(cluster.broker(u32::try_from(first).unwrap()).kafka);
        assert_eq!(
            produce_to_new_owner(&mut raw, "moving", batch(pid, 0, 5, 1)),
            (0, 5),
            "a duplicate after the failover"
        );
        assert_eq!(produce(&mut raw, "moving", batch(pid, 0, 6, 2)), (0, 6));
    })
    .await
    .unwrap();
}
