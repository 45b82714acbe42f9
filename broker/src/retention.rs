//! Housekeeping on a timer: retention (`retention.ms`, `retention.bytes`) moves the log start of the
//! partitions open here, key compaction keeps the latest record per key of `cleanup.policy=compact`
//! partitions (`cleaner.rs`), compaction rewrites small stream set objects into fewer
//! (`storage/src/compactor.rs`), then the controller's garbage collection deletes the objects no
//! partition needs any more and those never committed (`controller/src/gc.rs`).
//!
//! Retention works on whole committed slices (an upload's part of one partition), as Kafka's works on
//! whole segments: a slice goes once it was committed more than `retention.ms` ago, or while the
//! partition keeps at least `retention.bytes` without it. Data not yet uploaded is never removed.
//! Topics whose `cleanup.policy` does not include `delete`, and `__consumer_offsets`, are skipped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_common::{Clock, Offset, StreamId, SystemClock};

use crate::cleaner::Cleaner;
use crate::node::Node;
use crate::topic_config;

/// Runs retention, compaction and garbage collection every `retention_check_interval_ms`, and key
/// compaction every `key_compaction_interval_ms`, one at a time, until `stop`.
pub(crate) async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let every = |ms: u64| {
        let period = Duration::from_millis(ms.max(1));
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    };
    let mut housekeeping = every(node.config.retention_check_interval_ms);
    let mut cleaning = every(node.config.key_compaction_interval_ms);
    let mut cleaner = Cleaner::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = cleaning.tick() => cleaner.run(&node, SystemClock.now_ms(), &stop).await,
            _ = housekeeping.tick() => housekeep(&node).await,
        }
    }
}

/// Retention, then compaction, then garbage collection.
async fn housekeep(node: &Node) {
    enforce_retention(node, SystemClock.now_ms()).await;
    match node.storage.compact().await {
        Ok(report) if report.replaced > 0 => tracing::info!(?report, "objects compacted"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "compaction failed; retrying later"),
    }
    match node
        .controller
        .collect_garbage(node.config.object_delete_grace_ms)
        .await
    {
        Ok(None) => {} // the active controller collects garbage for the cluster
        Ok(Some(report)) => {
            let deleted = report.deleted_dropped + report.deleted_unnamed;
            metrics::counter!("weir_objects_deleted_total", "reason" => "unreferenced")
                .increment(report.deleted_dropped as u64);
            metrics::counter!("weir_objects_deleted_total", "reason" => "uncommitted")
                .increment(report.deleted_unnamed as u64);
            if deleted > 0 {
                tracing::info!(?report, "objects deleted");
            }
        }
        Err(e) => tracing::warn!(error = %e, "garbage collection failed; retrying later"),
    }
}

/// Moves the log start of every partition open here that has slices past retention.
pub(crate) async fn enforce_retention(node: &Node, now_ms: u64) {
    for (stream, start) in due(node, now_ms) {
        let Some(handle) = node.storage.stream(stream) else {
            continue; // not open here
        };
        match handle.delete_records(start).await {
            Ok(start) => {
                tracing::debug!(%stream, %start, "retention moved the log start");
                let start = i64::try_from(start.get()).unwrap_or(i64::MAX);
                let state = node.producers.partition(stream);
                if state.lock().await.forget_aborted_below(start) {
                    let store = node.storage.object_store();
                    if let Err(e) = crate::txn::index::trim(&store, stream, start).await {
                        tracing::warn!(%stream, error = %e, "aborted-transaction entries not trimmed");
                    }
                }
            }
            Err(e) => tracing::warn!(%stream, error = %e, "retention could not move the log start"),
        }
    }
}

fn due(node: &Node, now_ms: u64) -> Vec<(StreamId, Offset)> {
    node.controller.read(|state| {
        let mut due = Vec::new();
        for topic in state.topics.values() {
            let config = |name| topic_config::effective(&topic.configs, name);
            let deletes = config("cleanup.policy")
                .is_some_and(|p| p.split(',').any(|p| p.trim() == "delete"));
            if !deletes || topic.name == crate::group::OFFSETS_TOPIC {
                continue;
            }
            let limit = |name| {
                config(name)
                    .and_then(|v| v.parse::<i64>().ok())
                    .and_then(|v| u64::try_from(v).ok())
            };
            let (ms, bytes) = (limit("retention.ms"), limit("retention.bytes"));
            if ms.is_none() && bytes.is_none() {
                continue;
            }
            for stream in &topic.partitions {
                if let Some(start) = state.retention_start(*stream, now_ms, ms, bytes) {
                    due.push((*stream, start));
                }
            }
        }
        due
    })
}
