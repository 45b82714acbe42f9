//! The controller over a real object store: the log survives restarts, snapshots bound recovery,
//! a second controller deposes the first, and storage runs its conformance checks through it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use weir_common::Offset;
use weir_controller::{Controller, ControllerConfig, ControllerError};
use weir_storage::StreamMetadata;
use weir_storage::conformance::{Harness, append_all, read_all};

#[tokio::test]
async fn topics_survive_restarts_and_snapshots() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let config = ControllerConfig {
        snapshot_every: 3,
        ..ControllerConfig::default()
    };
    let c = Controller::open(store.clone(), config.clone())
        .await
        .unwrap();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            c.create_topic(&format!("t{i}"), 2, BTreeMap::new())
                .await
                .unwrap(),
        );
    }
    c.delete_topic("t3").await.unwrap();
    let before = c.read(|s| s.clone());
    drop(c);

    let c = Controller::open(store.clone(), config).await.unwrap();
    assert_eq!(c.read(|s| s.clone()), before);
    assert!(c.read(|s| !s.topics.contains_key("t3")));
    assert_eq!(c.read(|s| s.topics["t5"].id), created[5].id);
    let snapshots = store.list(Some(&"meta/snapshot".into()));
    use futures::TryStreamExt;
    let snapshots: Vec<_> = snapshots.try_collect().await.unwrap();
    assert!(!snapshots.is_empty(), "snapshots were written");
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let c = Controller::open(Arc::new(InMemory::new()), ControllerConfig::default())
        .await
        .unwrap();
    c.create_topic("a", 1, BTreeMap::new()).await.unwrap();
    assert!(matches!(
        c.create_topic("a", 1, BTreeMap::new()).await,
        Err(ControllerError::TopicExists(_))
    ));
    assert!(matches!(
        c.create_topic("bad name", 1, BTreeMap::new()).await,
        Err(ControllerError::InvalidTopicName(_))
    ));
    assert!(matches!(
        c.create_topic("..", 1, BTreeMap::new()).await,
        Err(ControllerError::InvalidTopicName(_))
    ));
    assert!(matches!(
        c.create_topic("b", 0, BTreeMap::new()).await,
        Err(ControllerError::InvalidPartitions(0))
    ));
    assert!(matches!(
        c.delete_topic("nope").await,
        Err(ControllerError::UnknownTopic(_))
    ));
}

#[tokio::test]
async fn a_second_controller_deposes_the_first() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = Controller::open(store.clone(), ControllerConfig::default())
        .await
        .unwrap();
    first.create_topic("a", 1, BTreeMap::new()).await.unwrap();
    let second = Controller::open(store.clone(), ControllerConfig::default())
        .await
        .unwrap();
    second.create_topic("b", 1, BTreeMap::new()).await.unwrap();
    // The first still believes it leads; its next append finds the sequence taken.
    let err = first
        .create_topic("c", 1, BTreeMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ControllerError::LostLeadership { .. }),
        "{err}"
    );
    let reloaded = Controller::open(store, ControllerConfig::default())
        .await
        .unwrap();
    let names: Vec<_> = reloaded.read(|s| s.topics.keys().cloned().collect());
    assert_eq!(
        names,
        vec!["a".to_string(), "b".to_string()],
        "the deposed write is nowhere"
    );
    // The deposed controller reloaded what the new one wrote.
    let seen: Vec<_> = first.read(|s| s.topics.keys().cloned().collect());
    assert_eq!(seen, names, "the deposed controller serves the new state");
}

/// A PUT whose answer was lost (it landed, the caller saw an error) is recognised on retry: the log
/// object at that sequence holds exactly the bytes being written. Different bytes mean another writer.
#[tokio::test]
async fn a_retried_append_that_had_landed_is_recognised() {
    use weir_controller::log::MetaLog;
    use weir_controller::records::{Kind, Record, StreamCreated};
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (mut log, _) = MetaLog::open(store.clone(), 100).await.unwrap();
    let records: Vec<Record> = vec![
        Kind::StreamCreated(StreamCreated {
            stream: 7,
            end_offset: 0,
        })
        .into(),
    ];
    // Another handle at the same position plays the attempt whose answer was lost.
    let (mut lost_attempt, _) = MetaLog::open(store.clone(), 100).await.unwrap();
    lost_attempt.append(&records).await.unwrap();
    log.append(&records).await.unwrap();
    assert_eq!(log.next_seq(), 1);
    let other: Vec<Record> = vec![
        Kind::StreamCreated(StreamCreated {
            stream: 8,
            end_offset: 0,
        })
        .into(),
    ];
    let (mut stale, _) = MetaLog::open(store.clone(), 100).await.unwrap();
    let (mut fresh, _) = MetaLog::open(store, 100).await.unwrap();
    fresh.append(&records).await.unwrap();
    assert!(matches!(
        stale.append(&other).await,
        Err(ControllerError::LostLeadership { seq: 1 })
    ));
}

#[tokio::test]
async fn epochs_fence_stale_commits() {
    let c = Controller::open(Arc::new(InMemory::new()), ControllerConfig::default())
        .await
        .unwrap();
    let topic = c.create_topic("a", 1, BTreeMap::new()).await.unwrap();
    let stream = topic.partitions[0];
    let first = c.open_stream(stream).await.unwrap();
    let second = c.open_stream(stream).await.unwrap();
    assert!(second.epoch > first.epoch);
    assert!(c.close_stream(stream, first.epoch).await.is_err());
    c.close_stream(stream, second.epoch).await.unwrap();
}

/// Storage over the controller (instead of its in-memory metadata), with a controller restart in the
/// middle: the data committed through the controller's log comes back from objects alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_commits_through_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let controller = Arc::new(
        Controller::open(store.clone(), ControllerConfig::default())
            .await
            .unwrap(),
    );
    let harness = Harness::new(&store, "controller");
    let topic = controller
        .create_topic("events", 2, BTreeMap::new())
        .await
        .unwrap();
    let open = |metadata: Arc<Controller>| {
        let h = &harness;
        async move {
            let (wal, recovery) =
                weir_wal::FileWal::open(h.wal_dir.path(), h.wal_config.clone()).unwrap();
            weir_storage::Storage::open(
                weir_storage::Components {
                    wal: Arc::new(wal),
                    recovery,
                    store: h.store.clone(),
                    metadata,
                },
                h.config.clone(),
            )
            .await
            .unwrap()
        }
    };
    let storage = open(controller.clone()).await;
    let mut written = Vec::new();
    for stream in &topic.partitions {
        let s = storage.open_stream(*stream).await.unwrap();
        let batches = (0..20u64)
            .map(|i| {
                (
                    1 + (i % 3) as u32,
                    weir_storage::conformance::payload(*stream, i, 300),
                )
            })
            .collect();
        written.push(append_all(&s, batches).await);
    }
    storage.flush().await.unwrap();
    storage.abandon().await.unwrap();
    harness.delete_wal();
    drop(controller);

    let controller = Arc::new(
        Controller::open(store.clone(), ControllerConfig::default())
            .await
            .unwrap(),
    );
    let storage = open(controller.clone()).await;
    for (stream, expected) in topic.partitions.iter().zip(&written) {
        let s = storage.open_stream(*stream).await.unwrap();
        assert_eq!(&read_all(&s, Offset(0), 1 << 20).await, expected);
    }
    storage.shutdown().await.unwrap();
}

/// A metadata append whose response is lost may have landed: the controller rereads the log before
/// judging the next change, so its state never disagrees with the log and the next change succeeds.
#[tokio::test]
async fn an_append_with_a_lost_response_is_reconciled_from_the_log() {
    use weir_storage::faulty::{FaultPlan, FaultyStore};

    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (faulty, faults) = FaultyStore::new(inner.clone());
    let c = Controller::open(Arc::new(faulty), ControllerConfig::default())
        .await
        .unwrap();
    c.create_topic("before", 1, BTreeMap::new()).await.unwrap();
    faults.set(FaultPlan {
        lose_put_responses: true,
        ..FaultPlan::default()
    });
    c.create_topic("lost", 1, BTreeMap::new())
        .await
        .expect_err("the answer was lost");
    faults.heal();
    // The write landed: a retry is told the topic exists, and the next change goes through.
    let retry = c
        .create_topic("lost", 1, BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(retry, ControllerError::TopicExists(_)), "{retry}");
    c.create_topic("after", 1, BTreeMap::new()).await.unwrap();

    // A store that was down instead: nothing landed, and nothing is invented.
    faults.set(FaultPlan {
        down: true,
        ..FaultPlan::default()
    });
    c.create_topic("never", 1, BTreeMap::new())
        .await
        .expect_err("the store is down");
    faults.heal();
    c.create_topic("last", 1, BTreeMap::new()).await.unwrap();

    let mut mine: Vec<String> = c.read(|s| s.topics.keys().cloned().collect());
    mine.sort();
    let reloaded = Controller::open(inner, ControllerConfig::default())
        .await
        .unwrap();
    let mut logged: Vec<String> = reloaded.read(|s| s.topics.keys().cloned().collect());
    logged.sort();
    assert_eq!(mine, logged, "the controller's state is the log's");
    assert_eq!(logged, ["after", "before", "last", "lost"]);
}
