//! `weir serve --wal object` killed with `kill -9`: a broker on a new, empty data directory recovers
//! every acknowledged record from the object store (local directory here; S3 in `s3.rs`).
#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_wal_on_the_local_store_survives_kill9() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    common::scenarios::object_wal_survives_kill9(&url, &[]).await;
}
