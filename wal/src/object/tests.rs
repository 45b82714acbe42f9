use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use weir_common::{Epoch, Offset, StreamId};

use super::*;

fn record(i: u64) -> WalRecord {
    WalRecord {
        stream_id: StreamId(i % 3),
        epoch: Epoch(1),
        base_offset: Offset(i),
        count: 1,
        payload: Bytes::from(format!("record-{i}")),
    }
}

fn config() -> ObjectWalConfig {
    ObjectWalConfig {
        flush_interval_ms: 5,
        ..ObjectWalConfig::default()
    }
}

async fn keys(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    keys.sort();
    keys
}

#[tokio::test]
async fn group_commits_are_recovered_in_order_by_the_next_writer() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (wal, recovery) = ObjectWal::open(store.clone(), config()).await.unwrap();
    assert!(recovery.records.is_empty());
    let pending: Vec<_> = (0..100).map(|i| wal.append(record(i)).unwrap()).collect();
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(p.await.unwrap(), WalPosition(i as u64));
    }
    let puts = wal.stats().syncs;
    assert!(puts < 10, "100 appends shared {puts} PUTs");
    // No close: the writer just stops (a crash); the next one fences it and reads everything.
    drop(wal);
    let (next, recovery) = ObjectWal::open(store.clone(), config()).await.unwrap();
    assert_eq!(next.epoch(), 2);
    let got: Vec<_> = recovery
        .records
        .iter()
        .map(|r| (r.position, r.record.clone()))
        .collect();
    let want: Vec<_> = (0..100).map(|i| (WalPosition(i), record(i))).collect();
    assert_eq!(got, want);
    assert_eq!(next.next_position(), WalPosition(100), "positions continue");
    next.close().await.unwrap();
}

#[tokio::test]
async fn a_fenced_writer_acknowledges_nothing_more() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (old, _) = ObjectWal::open(store.clone(), config()).await.unwrap();
    old.append(record(0)).unwrap().await.unwrap();
    // A second writer for the same broker (a recoverer, or the broker restarted elsewhere).
    let (new, recovery) = ObjectWal::open(store.clone(), config()).await.unwrap();
    assert_eq!(
        recovery.records.len(),
        1,
        "the acknowledged record is recovered"
    );
    let late = old.append(record(1)).unwrap().await;
    assert!(matches!(late, Err(WalError::Fenced { .. })), "{late:?}");
    assert!(
        matches!(old.append(record(2)), Err(WalError::Fenced { .. })),
        "and refuses everything after"
    );
    // The new writer is unaffected, and what the old one failed to write is nowhere.
    new.append(record(3)).unwrap().await.unwrap();
    new.close().await.unwrap();
    let (_, again) = ObjectWal::open(store.clone(), config()).await.unwrap();
    let offsets: Vec<_> = again.records.iter().map(|r| r.record.base_offset).collect();
    assert_eq!(offsets, [Offset(0), Offset(3)]);
}

#[tokio::test]
async fn trim_deletes_whole_commits_but_keeps_the_newest() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (wal, _) = ObjectWal::open(store.clone(), config()).await.unwrap();
    for i in 0..5 {
        wal.append(record(i)).unwrap().await.unwrap(); // one commit each
    }
    assert_eq!(keys(&store).await.len(), 6, "a claim and five commits");
    wal.trim(WalPosition(5)).await.unwrap();
    let left = keys(&store).await;
    assert_eq!(left.len(), 2, "the claim and the newest commit: {left:?}");
    drop(wal);
    let (_, recovery) = ObjectWal::open(store.clone(), config()).await.unwrap();
    let positions: Vec<_> = recovery.records.iter().map(|r| r.position).collect();
    assert_eq!(
        positions,
        [WalPosition(4)],
        "records at or above the trim point may come back"
    );
}

#[tokio::test]
async fn a_corrupt_commit_is_refused_not_skipped() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (wal, _) = ObjectWal::open(store.clone(), config()).await.unwrap();
    wal.append(record(0)).unwrap().await.unwrap();
    drop(wal);
    let path = key(1, 1, 0);
    let mut bytes = store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    store.put(&path, bytes.into()).await.unwrap();
    let err = ObjectWal::open(store, config()).await.unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
}

#[tokio::test]
async fn an_epoch_is_fenced_once_however_many_restarts_follow() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (first, _) = ObjectWal::open(store.clone(), config()).await.unwrap();
    first.append(record(0)).unwrap().await.unwrap();
    drop(first);
    for _ in 0..3 {
        let (wal, recovery) = ObjectWal::open(store.clone(), config()).await.unwrap();
        assert_eq!(recovery.records.len(), 1);
        drop(wal);
    }
    let epoch_one: Vec<_> = keys(&store)
        .await
        .into_iter()
        .filter(|k| k.starts_with("wal/0000000001/0000000001/"))
        .collect();
    assert_eq!(
        epoch_one.len(),
        3,
        "claim, one commit, one fence: {epoch_one:?}"
    );
}
