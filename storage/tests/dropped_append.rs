//! An append whose caller goes away after it was queued still becomes visible once durable, and the
//! stream can still be closed (its data uploaded).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use weir_common::Offset;
use weir_storage::conformance::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_append_future_still_moves_the_high_watermark() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let h = Harness::new(&store, "dropped");
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.unwrap();
    let stream = storage.open_stream(id).await.unwrap();
    let mut hw = stream.subscribe();
    // Polled once (queued in the WAL; durability takes a sync, so not done yet), then dropped.
    let append = stream.append(3, Bytes::from_static(b"abandoned"));
    assert!(append.now_or_never().is_none());
    tokio::time::timeout(Duration::from_secs(5), hw.wait_for(|end| *end == Offset(3)))
        .await
        .expect("the high watermark moves without the caller")
        .unwrap();
    assert_eq!(
        stream.read(Offset(0), 100).await.unwrap()[0].payload,
        Bytes::from_static(b"abandoned")
    );
    tokio::time::timeout(Duration::from_secs(5), storage.close_stream(id))
        .await
        .expect("closing does not wait for the gone caller")
        .unwrap();
    storage.shutdown().await.unwrap();
}
