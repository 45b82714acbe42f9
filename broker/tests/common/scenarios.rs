//! Scenarios run against more than one object store (a local directory always, S3 when enabled).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::Process;

/// Data object keys in the store.
async fn data_keys(url: &str, env: &[(String, String)]) -> BTreeSet<String> {
    let store = weir_storage::open_store_with_env(url, env.to_vec()).unwrap();
    store
        .list(Some(&"data".into()))
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await
}

/// Waits until the set of data keys stops changing for a second, and returns it.
async fn settled_keys(url: &str, env: &[(String, String)]) -> BTreeSet<String> {
    let mut last = data_keys(url, env).await;
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while since.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "data objects never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = data_keys(url, env).await;
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

async fn produce(bootstrap: &str, topic: &str, partitions: i32, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    let sends = (0..n).map(|i| {
        let producer = producer.clone();
        async move {
            let value = format!("{topic}-{i}-{}", "z".repeat(200));
            let record = FutureRecord::<(), _>::to(topic)
                .payload(&value)
                .partition(i as i32 % partitions);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    });
    futures::future::join_all(sends).await;
}

fn watermarks(bootstrap: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
        })
        .collect()
}

/// `weir serve` on `url`: a topic with `retention.ms` loses its old data and its objects are deleted
/// from the store; a topic with the default retention keeps everything.
pub async fn retention_deletes_objects(url: &str, env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env.to_vec();
    for (key, value) in [
        ("WEIR_RETENTION_CHECK_INTERVAL_MS", "200"),
        ("WEIR_OBJECT_DELETE_GRACE_MS", "0"),
        ("WEIR_STORAGE__UPLOAD_INTERVAL_MS", "100"),
    ] {
        env.push((key.to_owned(), value.to_owned()));
    }
    let weir = Process::start_with(dir.path(), &["--object-store", url], &env);
    let bootstrap = weir.kafka.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let short = NewTopic::new("short", 2, TopicReplication::Fixed(1)).set("retention.ms", "4000");
    let long = NewTopic::new("long", 2, TopicReplication::Fixed(1));
    for r in admin
        .create_topics([&short, &long], &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let before = data_keys(url, &env).await;
    produce(&bootstrap, "short", 2, 300).await;
    let short_keys: BTreeSet<String> = settled_keys(url, &env)
        .await
        .difference(&before)
        .cloned()
        .collect();
    assert!(
        !short_keys.is_empty(),
        "the short topic's data was uploaded"
    );
    produce(&bootstrap, "long", 2, 300).await;
    let all = settled_keys(url, &env).await;
    let long_keys: BTreeSet<String> = all.difference(&short_keys).cloned().collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = data_keys(url, &env).await;
        let b = bootstrap.clone();
        let short_marks = tokio::task::spawn_blocking(move || watermarks(&b, "short", 2))
            .await
            .unwrap();
        let trimmed = short_marks
            .iter()
            .all(|(low, high)| low == high && *high == 150);
        if trimmed && keys.is_disjoint(&short_keys) {
            assert!(
                long_keys.is_subset(&keys),
                "the long topic's objects are kept"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not delete the short topic: watermarks {short_marks:?}, {} of its {} \
             objects left",
            keys.intersection(&short_keys).count(),
            short_keys.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b = bootstrap.clone();
    let long_marks = tokio::task::spawn_blocking(move || watermarks(&b, "long", 2))
        .await
        .unwrap();
    assert_eq!(
        long_marks,
        vec![(0, 150), (0, 150)],
        "the long topic keeps everything"
    );
    weir.stop();
}

/// `weir serve --wal object` on `url`, killed with `kill -9` mid-produce; a new broker on a new, empty
/// data directory recovers the WAL from the store: every acknowledged record is read back at the
/// offset it was acknowledged at.
pub async fn object_wal_survives_kill9(url: &str, env: &[(String, String)]) {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

    const PARTITIONS: i32 = 4;
    let args = ["--object-store", url, "--wal", "object"];
    let first_dir = tempfile::tempdir().unwrap();
    let weir = Process::start_with(first_dir.path(), &args, env);
    let bootstrap = weir.kafka.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let topic = NewTopic::new("owal", PARTITIONS, TopicReplication::Fixed(1));
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
        .set("linger.ms", "2")
        .set("message.timeout.ms", "5000")
        .set("retries", "0")
        .create()
        .unwrap();
    let acked: Arc<Mutex<HashMap<(i32, i64), String>>> = Arc::default();
    let mut tasks = Vec::new();
    let mut i = 0u64;
    let mut burst = |n: u64, i: &mut u64| {
        for _ in 0..n {
            let value = format!("owal-{i}-{}", "v".repeat((*i % 40) as usize));
            let record = FutureRecord::<(), _>::to("owal")
                .payload(&value)
                .partition((*i % PARTITIONS as u64) as i32);
            let delivery = producer.send_result(record).map_err(|(e, _)| e).unwrap();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                if let Ok(Ok(d)) = delivery.await {
                    acked.lock().unwrap().insert((d.partition, d.offset), value);
                }
            }));
            *i += 1;
        }
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        burst(200, &mut i);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    burst(3000, &mut i);
    tokio::time::sleep(Duration::from_millis(30)).await;
    weir.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 1000,
        "only {} acknowledged before the kill",
        acked.len()
    );
    drop(first_dir);

    let second_dir = tempfile::tempdir().unwrap();
    let weir = Process::start_with(second_dir.path(), &args, env);
    let bootstrap = weir.kafka.to_string();
    let got = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "owal-check")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        let mut total = 0;
        for p in 0..PARTITIONS {
            list.add_partition_offset("owal", p, Offset::Beginning)
                .unwrap();
            total += consumer
                .fetch_watermarks("owal", p, Duration::from_secs(10))
                .unwrap()
                .1;
        }
        consumer.assign(&list).unwrap();
        let mut got = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (got.len() as i64) < total && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.unwrap();
                let value = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                got.insert((m.partition(), m.offset()), value);
            }
        }
        got
    })
    .await
    .unwrap();
    for (at, value) in &acked {
        assert_eq!(
            got.get(at),
            Some(value),
            "acknowledged record at {at:?} lost or changed"
        );
    }
    weir.stop();
}
