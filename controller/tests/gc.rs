//! Retention and garbage collection through the controller, on an in-memory store and a manual
//! clock: slices past retention are trimmed, objects no stream needs are deleted after the grace
//! period, objects never committed are deleted once below the id fence, and a commit of a fenced id
//! is refused.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};
use weir_common::{Clock, ManualClock, ObjectId, Offset, StreamId};
use weir_controller::{Controller, ControllerConfig};
use weir_storage::{
    MetadataError, NewObject, ObjectDescriptor, ObjectKind, StreamMetadata, StreamRange, object_key,
};

const GRACE_MS: u64 = 5_000;

async fn keys(store: &Arc<dyn ObjectStore>) -> BTreeSet<u64> {
    store
        .list(Some(&"data".into()))
        .map(|m| {
            weir_storage::parse_object_key(&m.unwrap().location)
                .unwrap()
                .get()
        })
        .collect()
        .await
}

/// Writes an object's key and returns its descriptor (the bytes do not matter here).
async fn put(store: &Arc<dyn ObjectStore>, id: ObjectId) -> ObjectDescriptor {
    store.put(&object_key(id), "x".into()).await.unwrap();
    ObjectDescriptor {
        id,
        size: 1,
        kind: ObjectKind::Stream,
    }
}

async fn commit(c: &Controller, store: &Arc<dyn ObjectStore>, stream: StreamId, start: u64) {
    let id = c.allocate_object_ids(1).await.unwrap();
    let object = put(store, id).await;
    let epoch = c.describe_stream(stream).await.unwrap().epoch;
    let range = StreamRange {
        stream_id: stream,
        epoch,
        start: Offset(start),
        end: Offset(start + 10),
        bytes: 1000,
    };
    c.commit_objects(vec![NewObject {
        object,
        ranges: vec![range],
    }])
    .await
    .unwrap();
}

/// A controller on an in-memory store and a manual clock, with one open single-partition topic.
struct World {
    store: Arc<dyn ObjectStore>,
    clock: Arc<ManualClock>,
    config: ControllerConfig,
    c: Controller,
    stream: StreamId,
}

impl World {
    async fn new() -> World {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let clock = Arc::new(ManualClock::new(1_000_000));
        let config = ControllerConfig {
            clock: clock.clone(),
            ..ControllerConfig::default()
        };
        let c = Controller::open(store.clone(), config.clone())
            .await
            .unwrap();
        let topic = c.create_topic("t", 1, BTreeMap::new()).await.unwrap();
        let stream = topic.partitions[0];
        c.open_stream(stream).await.unwrap();
        World {
            store,
            clock,
            config,
            c,
            stream,
        }
    }
}

#[tokio::test]
async fn retention_and_garbage_collection() {
    let World {
        store,
        clock,
        config,
        c,
        stream,
    } = World::new().await;
    commit(&c, &store, stream, 0).await; // at t0
    clock.advance_ms(10_000);
    commit(&c, &store, stream, 10).await; // at t0 + 10 s
    commit(&c, &store, stream, 20).await;
    let committed = keys(&store).await;
    assert_eq!(committed.len(), 3);

    // Retention: by time only the first slice is due; by size, two of three go to keep 1000 bytes.
    let now = clock.now_ms();
    let by_time = c.read(|s| s.retention_start(stream, now, Some(5_000), None));
    assert_eq!(by_time, Some(Offset(10)));
    let by_size = c.read(|s| s.retention_start(stream, now, None, Some(1_000)));
    assert_eq!(by_size, Some(Offset(20)));
    let neither = c.read(|s| s.retention_start(stream, now, Some(60_000), Some(5_000)));
    assert_eq!(neither, None);

    // An upload that took its id and never committed (a crash between PUT and commit).
    let orphan = put(&store, c.allocate_object_ids(1).await.unwrap())
        .await
        .id;

    c.trim_stream(
        stream,
        c.describe_stream(stream).await.unwrap().epoch,
        Offset(10),
    )
    .await
    .unwrap();
    let first = c.collect_garbage(GRACE_MS).await.unwrap();
    assert_eq!(
        first.dropped, 0,
        "the grace period has not passed: {first:?}"
    );
    assert_eq!(keys(&store).await.len(), 4, "nothing deleted yet");
    // A late upload that took its id before the next pass's fence.
    let late = c.allocate_object_ids(1).await.unwrap();

    clock.advance_ms(GRACE_MS);
    let second = c.collect_garbage(GRACE_MS).await.unwrap();
    assert_eq!(second.dropped, 1, "{second:?}");
    assert_eq!(second.deleted_dropped, 1, "{second:?}");
    assert_eq!(second.deleted_unnamed, 1, "the orphan: {second:?}");
    let left = keys(&store).await;
    assert!(!left.contains(&orphan.get()));
    assert_eq!(left.len(), 2, "the two slices still needed: {left:?}");

    // The late upload's id is below the fence now: its commit is refused, so deleting it was safe.
    clock.advance_ms(1);
    c.collect_garbage(GRACE_MS).await.unwrap();
    let object = put(&store, late).await;
    let epoch = c.describe_stream(stream).await.unwrap().epoch;
    let refused = c
        .commit_objects(vec![NewObject {
            object,
            ranges: vec![StreamRange {
                stream_id: stream,
                epoch,
                start: Offset(30),
                end: Offset(40),
                bytes: 1000,
            }],
        }])
        .await;
    assert_eq!(refused, Err(MetadataError::ObjectFenced(late)));
    let next = c.collect_garbage(GRACE_MS).await.unwrap();
    assert_eq!(
        next.deleted_unnamed, 1,
        "the refused upload's object: {next:?}"
    );

    // The fence, the dropped objects and the commit times survive a restart.
    let reopened = Controller::open(store, config).await.unwrap();
    let mine = c.read(|s| (s.objects.clone(), s.object_fence, s.streams.clone()));
    let theirs = reopened.read(|s| (s.objects.clone(), s.object_fence, s.streams.clone()));
    assert_eq!(mine, theirs);
}

/// Compaction through the controller: the replacement must cover exactly the live slices of the
/// replaced objects; the replaced objects then become garbage, and the state survives a restart.
#[tokio::test]
async fn compaction_replaces_objects_and_leaves_garbage() {
    let World {
        store,
        clock,
        config,
        c,
        stream,
    } = World::new().await;
    for start in [0, 10, 20] {
        commit(&c, &store, stream, start).await;
        clock.advance_ms(1_000);
    }
    let old: Vec<ObjectId> = c.read(|s| s.objects.keys().copied().collect());
    let epoch = c.describe_stream(stream).await.unwrap().epoch;
    let new_id = c.allocate_object_ids(1).await.unwrap();
    let object = put(&store, new_id).await;
    let replacement = |end| NewObject {
        object,
        ranges: vec![StreamRange {
            stream_id: stream,
            epoch,
            start: Offset(0),
            end: Offset(end),
            bytes: 3000,
        }],
    };
    let short = c.replace_objects(old.clone(), vec![replacement(25)]).await;
    assert!(
        matches!(short, Err(MetadataError::ReplacedObjectsChanged(_))),
        "a replacement missing offsets is refused: {short:?}"
    );
    c.replace_objects(old.clone(), vec![replacement(30)])
        .await
        .unwrap();
    let slices = c.read(|s| s.streams[&stream].slices.clone());
    assert_eq!(slices.len(), 1);
    assert_eq!(slices[0].object.id, new_id);
    assert_eq!(
        slices[0].committed_at_ms, 1_002_000,
        "the newest replaced commit time"
    );
    let garbage: Vec<ObjectId> =
        c.read(|s| s.unreferenced_objects().iter().map(|o| o.id).collect());
    assert_eq!(garbage, old);
    let report = c.collect_garbage(0).await.unwrap();
    assert_eq!(report.deleted_dropped, 3, "{report:?}");
    assert_eq!(keys(&store).await, BTreeSet::from([new_id.get()]));
    let reopened = Controller::open(store, config).await.unwrap();
    assert_eq!(reopened.read(|s| s.streams[&stream].slices.clone()), slices);
}
