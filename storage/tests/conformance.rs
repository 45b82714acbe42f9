//! The storage conformance suite on `object_store`'s in-memory and local-filesystem backends and on
//! Weir's own local store (the default of `weir serve`).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    weir_storage::conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    weir_storage::conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(weir_storage::LocalStore::open(dir.path()).unwrap());
    weir_storage::conformance::run_all(store).await;
}

/// On a real S3-compatible server (SeaweedFS), gated by `WEIR_S3_TESTS=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() {
    if !weir_tests::s3::enabled("conformance::s3") {
        return;
    }
    let server = weir_tests::s3::S3Server::start();
    let url = format!("s3://{}/conformance", weir_tests::s3::BUCKET);
    let store = weir_storage::open_store_with_env(&url, server.env()).unwrap();
    weir_storage::check_conditional_create(store.as_ref(), &url)
        .await
        .unwrap();
    weir_storage::conformance::run_all(store).await;
}
