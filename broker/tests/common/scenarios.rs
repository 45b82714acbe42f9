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
