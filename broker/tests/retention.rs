//! Retention on the local object store: a topic's data past `retention.ms` is trimmed and its objects
//! deleted (the same scenario runs on S3 in `s3.rs`).
#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_objects_on_the_local_store() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    common::scenarios::retention_deletes_objects(&url, &[]).await;
}
