//! The storage layer against a failing object store (`weir_storage::faulty`): outages, lost PUT
//! responses, throttling, errors and latency. Appends are acknowledged by the WAL throughout (they never
//! wait for the store, only for backpressure); uploads retry with backoff; nothing acknowledged is lost
//! or duplicated, and once the store recovers everything reaches objects and reads back byte-identical,
//! also with the WAL gone.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use weir_common::{Offset, StreamId};
use weir_storage::StoredBatch;
use weir_storage::conformance::{Harness, append_all, payload, read_all};
use weir_storage::faulty::{FaultPlan, Faults, FaultyStore};

fn batches(stream: StreamId, from: u64, n: u64) -> Vec<(u32, bytes::Bytes)> {
    (from..from + n)
        .map(|i| {
            (
                1 + (i % 3) as u32,
                payload(stream, i, 300 + (i as usize % 11) * 40),
            )
        })
        .collect()
}

fn faulty() -> (Arc<dyn ObjectStore>, Arc<Faults>) {
    let (store, faults) = FaultyStore::new(Arc::new(InMemory::new()));
    (Arc::new(store), faults)
}

/// After a flush, with the WAL deleted, a new instance reads `expected` from objects alone.
async fn objects_hold(h: &Harness, stream: StreamId, expected: &[StoredBatch]) {
    h.delete_wal();
    let (storage, _) = h.open().await;
    let stream = storage
        .open_stream(stream)
        .await
        .expect("open from objects");
    assert_eq!(
        read_all(&stream, Offset(0), 4 << 10).await,
        expected,
        "read back from objects alone"
    );
    storage.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_uploads_and_loses_nothing() {
    let (store, faults) = faulty();
    let h = Harness::new(&store, "outage");
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    faults.set(FaultPlan {
        down: true,
        ..FaultPlan::default()
    });
    let written = append_all(&stream, batches(id, 0, 200)).await;
    storage.flush().await.expect_err("the store is down");
    assert_eq!(storage.stats().uploads, 0);
    assert_eq!(
        read_all(&stream, Offset(0), 4 << 10).await,
        written,
        "acknowledged records are readable during the outage"
    );
    faults.heal();
    storage.flush().await.expect("the store is back");
    storage.shutdown().await.expect("shutdown");
    objects_hold(&h, id, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_put_responses_neither_lose_nor_duplicate() {
    let (store, faults) = faulty();
    let mut h = Harness::new(&store, "lost-response");
    h.config.log_cache_max_bytes = 0;
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    faults.set(FaultPlan {
        lose_put_responses: true,
        ..FaultPlan::default()
    });
    let first = append_all(&stream, batches(id, 0, 100)).await;
    storage
        .flush()
        .await
        .expect_err("the PUT's answer was lost");
    faults.heal();
    let second = append_all(&stream, batches(id, 100, 100)).await;
    storage.flush().await.expect("the store answers again");
    let written: Vec<_> = first.into_iter().chain(second).collect();
    assert_eq!(
        read_all(&stream, Offset(0), 4 << 10).await,
        written,
        "each batch once, at its offset"
    );
    // The object whose answer was lost was never committed: garbage, not data.
    let objects = h.store.list(Some(&"data".into())).count().await;
    assert!(
        objects as u64 > storage.stats().objects_written,
        "{objects} objects in the store, {} committed",
        storage.stats().objects_written
    );
    storage.shutdown().await.expect("shutdown");
    objects_hold(&h, id, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_throttling_store_is_retried_until_everything_is_uploaded() {
    let (store, faults) = faulty();
    let mut h = Harness::new(&store, "flaky");
    // The background uploader runs often, and backpressure applies early.
    h.config.upload_interval_ms = 20;
    h.config.upload_max_bytes = 32 << 10;
    h.config.max_unuploaded_bytes = 256 << 10;
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    let mut written = Vec::new();
    let plans = [
        FaultPlan {
            fail_every: 3,
            latency: Duration::from_millis(5),
            ..FaultPlan::default()
        },
        FaultPlan {
            throttle: true,
            ..FaultPlan::default()
        },
        FaultPlan {
            lose_put_responses: true,
            fail_every: 2,
            ..FaultPlan::default()
        },
        FaultPlan::default(),
    ];
    for (round, plan) in plans.into_iter().enumerate() {
        faults.set(plan);
        let from = round as u64 * 150;
        written.extend(append_all(&stream, batches(id, from, 150)).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    storage.flush().await.expect("the store works again");
    assert!(faults.injected() > 0, "faults were injected");
    assert!(storage.stats().uploads > 0);
    assert_eq!(read_all(&stream, Offset(0), 4 << 10).await, written);
    storage.shutdown().await.expect("shutdown");
    objects_hold(&h, id, &written).await;
}
