//! Key compaction of a `cleanup.policy=compact` topic through `weir serve` and real Kafka clients:
//! after updates to every key in every codec, and tombstones for some, a consumer reading from the
//! start sees exactly the latest record of each live key, at the offset it was acknowledged at; the
//! stored objects shrink; tombstones go on a later pass; a restart serves the same; committed
//! offsets (`__consumer_offsets` is compacted too) keep their latest value.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use common::Process;

const TOPIC: &str = "compacted";
const PARTITIONS: i32 = 2;
const KEYS: usize = 60;
const ROUNDS: usize = 10;
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// What a partition should hold: key → (offset, value; `None` for a tombstone).
type Latest = BTreeMap<(i32, String), (i64, Option<String>)>;

/// A topic's records per partition: (offset, key, value).
type Contents = BTreeMap<i32, Vec<(i64, String, Option<String>)>>;

fn producer(bootstrap: &str, codec: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("compression.type", codec)
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Sends every record, each round's in parallel, and records where each landed.
async fn produce(
    bootstrap: &str,
    round: usize,
    records: &[(String, Option<String>)],
    latest: &mut Latest,
) {
    let producer = producer(bootstrap, CODECS[round % CODECS.len()]);
    let sends = records.iter().enumerate().map(|(i, (key, value))| {
        let producer = producer.clone();
        let partition = (i % PARTITIONS as usize) as i32;
        async move {
            let mut record = FutureRecord::<String, String>::to(TOPIC)
                .key(key)
                .partition(partition);
            if let Some(value) = value {
                record = record.payload(value);
            }
            let delivery = producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            (partition, key.clone(), delivery.offset, value.clone())
        }
    });
    for (partition, key, offset, value) in futures::future::join_all(sends).await {
        let entry = latest.entry((partition, key)).or_insert((-1, None));
        if offset > entry.0 {
            *entry = (offset, value);
        }
    }
}

/// Every record of the topic from the start, per partition: (offset, key, value).
fn read_all(bootstrap: &str) -> Contents {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
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
    let mut out: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    let mut at_end = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
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
            Some(Err(e)) => panic!("reading {TOPIC}: {e}"),
            Some(Ok(m)) => {
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
                out.entry(m.partition()).or_default().push((
                    m.offset(),
                    text(m.key()).unwrap(),
                    text(m.payload()),
                ));
            }
        }
    }
    out
}

/// What a consumer from the start should see.
fn expected(latest: &Latest, with_tombstones: bool) -> Contents {
    let mut out: BTreeMap<i32, Vec<_>> = BTreeMap::new();
    for ((partition, key), (offset, value)) in latest {
        if value.is_some() || with_tombstones {
            out.entry(*partition)
                .or_default()
                .push((*offset, key.clone(), value.clone()));
        }
    }
    for records in out.values_mut() {
        records.sort();
    }
    out
}

/// Bytes of data objects in the store.
async fn stored_bytes(url: &str) -> u64 {
    let store = weir_storage::open_store(url).unwrap();
    store
        .list(Some(&"data".into()))
        .map(|m| m.unwrap().size)
        .fold(0u64, |sum, size| async move { sum + size })
        .await
}

/// Reads until the topic holds what `want` says, or fails after 30 s with what it holds.
async fn wait_for(bootstrap: &str, want: &Contents, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = bootstrap.to_owned();
        let seen = tokio::task::spawn_blocking(move || read_all(&b))
            .await
            .unwrap();
        if &seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after 30 s a consumer from the start sees {} records per partition, expected {}; \
             first differences: {:?}",
            seen.values().map(Vec::len).sum::<usize>(),
            want.values().map(Vec::len).sum::<usize>(),
            seen.iter()
                .flat_map(|(p, r)| r.iter().map(move |r| (p, r)))
                .filter(|(p, r)| !want.get(p).is_some_and(|w| w.contains(r)))
                .take(3)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn committed(bootstrap: &str, group: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    match offsets.find_partition(TOPIC, 0).unwrap().offset() {
        Offset::Offset(o) => o,
        other => panic!("no committed offset: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topics_keep_the_latest_record_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let env: Vec<(String, String)> = [
        ("WEIR_RETENTION_CHECK_INTERVAL_MS", "300"),
        ("WEIR_KEY_COMPACTION_INTERVAL_MS", "300"),
        // Fewer keys than a partition has: passes resume where the map filled.
        ("WEIR_KEY_COMPACTION_MAX_KEYS", "25"),
        ("WEIR_OBJECT_DELETE_GRACE_MS", "0"),
        ("WEIR_STORAGE__UPLOAD_INTERVAL_MS", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let weir = Process::start_with(dir.path(), &["--object-store", &url], &env);
    let bootstrap = weir.kafka.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "0");
    for r in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }

    // As on Kafka, a record without a key is refused.
    let refused = producer(&bootstrap, "lz4")
        .send(
            FutureRecord::<(), str>::to(TOPIC)
                .payload("no key")
                .partition(0),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e);
    assert!(
        matches!(
            refused,
            Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidRecord
            ))
        ),
        "a keyless record on a compacted topic: {refused:?}"
    );

    // Every key updated in every round, each round in another codec; the last round deletes the
    // first ten keys.
    let mut latest = Latest::new();
    for round in 0..ROUNDS {
        let records: Vec<(String, Option<String>)> = (0..KEYS)
            .map(|k| {
                let value = (round + 1 < ROUNDS || k >= 10)
                    .then(|| format!("key {k} version {round} {}", "p".repeat(300)));
                (format!("k{k}"), value)
            })
            .collect();
        produce(&bootstrap, round, &records, &mut latest).await;
    }
    // A group commits offsets over and over: only the latest commit stays.
    for i in 1..=50 {
        let b = bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", "committer")
                .create()
                .unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(TOPIC, 0, Offset::Offset(i))
                .unwrap();
            consumer.commit(&tpl, CommitMode::Sync).unwrap();
        })
        .await
        .unwrap();
    }
    let full = expected(&latest, true);
    let produced_bytes = KEYS * ROUNDS * 300;

    // First pass: superseded records go, the tombstones stay.
    wait_for(&bootstrap, &full, "first key compaction").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let stored = stored_bytes(&url).await;
        if stored < produced_bytes as u64 / 4 || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        stored < produced_bytes as u64 / 4,
        "data objects hold {stored} bytes after key compaction, of {produced_bytes} produced"
    );

    // New data makes the partitions dirty again; that pass drops the tombstones it saw before.
    let records: Vec<(String, Option<String>)> = (0..2)
        .map(|i| (format!("late{i}"), Some("late".to_owned())))
        .collect();
    produce(&bootstrap, 0, &records, &mut latest).await;
    let live = expected(&latest, false);
    wait_for(&bootstrap, &live, "tombstones removed").await;

    // A restart serves the same records and the latest committed offset.
    weir.stop();
    let weir = Process::start_with(dir.path(), &["--object-store", &url], &env);
    let bootstrap = weir.kafka.to_string();
    let b = bootstrap.clone();
    let seen = tokio::task::spawn_blocking(move || read_all(&b))
        .await
        .unwrap();
    assert_eq!(seen, live, "after a restart");
    let b = bootstrap.clone();
    let offset = tokio::task::spawn_blocking(move || committed(&b, "committer"))
        .await
        .unwrap();
    assert_eq!(
        offset, 50,
        "the latest committed offset survives compaction"
    );
    weir.stop();
}
