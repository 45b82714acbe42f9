//! Prometheus metrics, served at `/metrics` on the admin listener.
//!
//! Counters and histograms are recorded where things happen, through the `metrics` facade (the WAL,
//! the storage layer, the object-store wrapper, the connection loop). Gauges that describe state
//! (cache sizes, partitions owned, consumer-group lag) are computed when the page is scraped.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `weir_requests_total`, `weir_request_seconds` | counter, histogram | `api` |
//! | `weir_network_bytes_in_total`, `weir_network_bytes_out_total` | counter | |
//! | `weir_wal_append_seconds` | histogram (queued → durable) | |
//! | `weir_wal_fsync_seconds`, `weir_wal_group_commit_records`, `weir_wal_group_commit_bytes` | histogram | |
//! | `weir_uploads_total`, `weir_upload_bytes_total`, `weir_upload_seconds` | counter, histogram | |
//! | `weir_upload_failures_total` (each is retried with backoff) | counter | |
//! | `weir_object_store_requests_total`, `weir_object_store_bytes_total` | counter | `op` |
//! | `weir_block_cache_hits_total`, `weir_block_cache_misses_total` | counter | |
//! | `weir_block_cache_bytes`, `weir_log_cache_bytes`, `weir_unuploaded_bytes` | gauge | |
//! | `weir_partitions_owned` | gauge | |
//! | `weir_consumer_group_lag` | gauge | `group`, `topic`, `partition` |
//!
//! The webhook dispatcher's metrics (`weir_dispatch_*`) are listed in `weir_dispatcher::stats`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::node::Node;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls reuse it).
pub(crate) fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        // 25 µs to ~13 s, doubling: covers an fsync, a request and an upload.
        let buckets: Vec<f64> = (0..20).map(|i| 25e-6 * f64::from(1u32 << i)).collect();
        let sizes: Vec<f64> = (0..24).map(|i| f64::from(1u32 << i)).collect();
        let builder = PrometheusBuilder::new()
            // Gauges of groups or partitions that went away disappear after a while.
            .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(600)))
            .set_buckets(&buckets)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_records".into()),
                    &sizes,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_bytes".into()),
                    &sizes.iter().map(|s| s * 64.0).collect::<Vec<_>>(),
                )
            });
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            Err(e) => {
                tracing::warn!(error = %e, "metrics buckets refused; using summaries");
                PrometheusBuilder::new().build_recorder()
            }
        };
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
        }
        // Histogram samples wait in lock-free buckets until upkeep folds them into the
        // distributions: without it, memory would grow with every request until the next scrape.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("weir-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no metrics upkeep thread; histograms fold at each scrape");
        }
        handle
    })
}

/// The name of an API as a label (`Produce`, `Fetch`, ...): a read-only table of the served
/// APIs, built once, so the per-request lookup takes no lock and allocates nothing.
pub(crate) fn api_label(key: ApiKey) -> &'static str {
    static NAMES: OnceLock<HashMap<i16, &'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        crate::api::supported()
            .into_iter()
            .map(|(k, _)| (k as i16, &*Box::leak(format!("{k:?}").into_boxed_str())))
            .collect()
    });
    names.get(&(key as i16)).copied().unwrap_or("Other")
}

/// Records one served request.
pub(crate) fn request(key: ApiKey, seconds: f64, bytes_in: usize, bytes_out: usize) {
    let api = api_label(key);
    metrics::counter!("weir_requests_total", "api" => api).increment(1);
    metrics::histogram!("weir_request_seconds", "api" => api).record(seconds);
    metrics::counter!("weir_network_bytes_in_total").increment(bytes_in as u64);
    metrics::counter!("weir_network_bytes_out_total").increment(bytes_out as u64);
}

/// The `/metrics` page of a process without a node (`weir dispatcher`): the dispatcher's metrics.
pub fn render_process() -> String {
    install().render()
}

/// The `/metrics` page: state gauges refreshed, then everything rendered.
pub(crate) fn render(node: &Node) -> String {
    let handle = install();
    let stats = node.storage.stats();
    metrics::counter!("weir_block_cache_hits_total").absolute(stats.block_cache_hits);
    metrics::counter!("weir_block_cache_misses_total").absolute(stats.block_cache_misses);
    metrics::gauge!("weir_block_cache_bytes").set(stats.block_cache_bytes as f64);
    metrics::gauge!("weir_log_cache_bytes").set(stats.log_cache_bytes as f64);
    metrics::gauge!("weir_unuploaded_bytes").set(stats.unuploaded_bytes as f64);
    let topics = node.topics();
    let owned = topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter(|s| node.storage.stream(**s).is_some())
        .count();
    metrics::gauge!("weir_partitions_owned").set(owned as f64);
    for group in node.groups.group_ids() {
        for ((topic, partition), committed) in node.groups.committed(&group) {
            let Some(t) = topics.iter().find(|t| t.name == topic) else {
                continue;
            };
            let Some(p) = node.partition(t, partition) else {
                continue;
            };
            let end = i64::try_from(p.stream.high_watermark().get()).unwrap_or(i64::MAX);
            let lag = (end - committed.offset).max(0);
            metrics::gauge!("weir_consumer_group_lag", "group" => group.clone(), "topic" => topic,
                "partition" => partition.to_string())
            .set(lag as f64);
        }
    }
    handle.render()
}
