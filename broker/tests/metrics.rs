//! The Prometheus page: after produce, consume, a group commit and an upload, the counters,
//! histograms and gauges it shows have moved.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::InProcess;

fn scrape(admin: SocketAddr) -> String {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    page
}

/// The value of the first sample whose line starts with `series` (name and labels).
fn value(page: &str, series: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic() {
    let node = InProcess::start().await;
    node.server
        .node()
        .create_topic("metered", 2, Default::default())
        .await
        .unwrap();
    let bootstrap = node.bootstrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for i in 0..20 {
        let value = format!("value-{i}");
        producer
            .send(
                FutureRecord::<(), _>::to("metered")
                    .partition(i % 2)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", "metered-group")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&["metered"]).unwrap();
        // Consume partition 0 or 1 partly, commit, and stop: the group has lag.
        let mut got = 0;
        while got < 5 {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                consumer
                    .commit_message(&m.unwrap(), CommitMode::Sync)
                    .unwrap();
                got += 1;
            }
        }
    })
    .await
    .unwrap();
    node.server.node().storage.flush().await.unwrap();

    let page = scrape(node.server.admin_addr());
    assert!(value(&page, "weir_requests_total{api=\"Produce\"}") >= 20.0);
    assert!(value(&page, "weir_requests_total{api=\"Fetch\"}") >= 1.0);
    assert!(value(&page, "weir_request_seconds_count{api=\"Produce\"}") >= 20.0);
    assert!(value(&page, "weir_network_bytes_in_total") > 0.0);
    assert!(value(&page, "weir_network_bytes_out_total") > 0.0);
    assert!(value(&page, "weir_wal_append_seconds_count") >= 20.0);
    assert!(value(&page, "weir_wal_fsync_seconds_count") >= 1.0);
    assert!(value(&page, "weir_wal_group_commit_records_count") >= 1.0);
    assert!(value(&page, "weir_uploads_total") >= 1.0);
    assert!(value(&page, "weir_upload_bytes_total") > 0.0);
    assert!(value(&page, "weir_object_store_requests_total{op=\"PUT\"}") >= 1.0);
    assert!(value(&page, "weir_partitions_owned") >= 2.0);
    value(&page, "weir_block_cache_hits_total");
    value(&page, "weir_block_cache_bytes");
    value(&page, "weir_log_cache_bytes");
    // Lag is shown for the partitions with a committed offset: 10 records each, 5 consumed in all.
    let lags: Vec<f64> = page
        .lines()
        .filter(|l| l.starts_with("weir_consumer_group_lag{group=\"metered-group\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .collect();
    assert!(!lags.is_empty(), "{page}");
    assert_eq!(
        lags.iter().sum::<f64>(),
        10.0 * lags.len() as f64 - 5.0,
        "{page}"
    );
    node.server.shutdown().await.unwrap();
}
