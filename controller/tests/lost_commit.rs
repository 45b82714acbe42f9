//! An object commit whose answer was lost (the metadata log PUT landed, the broker saw an error) must
//! not jam the uploader: the next upload finds the range committed, marks it uploaded and goes on.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use weir_common::Offset;
use weir_controller::{Controller, ControllerConfig};
use weir_storage::conformance::{Harness, append_all, payload, read_all};
use weir_storage::faulty::{FaultPlan, FaultyStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_commit_whose_answer_was_lost_does_not_jam_uploads() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (faulty, faults) = FaultyStore::new(inner.clone());
    // The controller's log is on the faulty store; data objects go to the healthy one.
    let controller = Arc::new(
        Controller::open(Arc::new(faulty), ControllerConfig::default())
            .await
            .unwrap(),
    );
    let mut h = Harness::new(&inner, "lost-commit");
    h.config.log_cache_max_bytes = 0;
    let topic = controller
        .create_topic("t", 1, BTreeMap::new())
        .await
        .unwrap();
    let id = topic.partitions[0];
    let (wal, recovery) = weir_wal::FileWal::open(h.wal_dir.path(), h.wal_config.clone()).unwrap();
    let storage = weir_storage::Storage::open(
        weir_storage::Components {
            wal: Arc::new(wal),
            recovery,
            store: h.store.clone(),
            metadata: controller.clone(),
        },
        h.config.clone(),
    )
    .await
    .unwrap();
    let stream = storage.open_stream(id).await.unwrap();
    let batches = |from: u64| {
        (from..from + 20)
            .map(|i| (1, payload(id, i, 200)))
            .collect()
    };
    // A first upload reserves a block of object ids, so the next one's only metadata PUT is its
    // commit.
    let mut first = append_all(&stream, batches(0)).await;
    storage.flush().await.unwrap();
    first.extend(append_all(&stream, batches(20)).await);
    faults.set(FaultPlan {
        lose_put_responses: true,
        ..FaultPlan::default()
    });
    storage
        .flush()
        .await
        .expect_err("the commit's answer was lost");
    faults.heal();
    let second = append_all(&stream, batches(40)).await;
    storage.flush().await.unwrap();
    assert_eq!(storage.stats().unuploaded_bytes, 0, "{:?}", storage.stats());
    let all: Vec<_> = first.into_iter().chain(second).collect();
    assert_eq!(read_all(&stream, Offset(0), 4 << 10).await, all);
    storage.shutdown().await.unwrap();
}
