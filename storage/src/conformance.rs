//! The storage conformance suite: one set of checks that every object store backend must pass.
//!
//! Each check runs a real [`Storage`] over a real [`FileWal`] in a temporary directory and the given
//! object store (scoped to a fresh prefix, so one store serves every check), with [`MemoryMetadata`]
//! standing in for the controller. [`run_all`] is called by the tests for `object_store`'s `InMemory`
//! and `LocalFileSystem`, and later for a real S3 server. Failures panic with a message naming the
//! check, like `object_store`'s own integration suite.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use weir_common::{Offset, StreamId};
use weir_wal::{FileWal, FileWalConfig, Recovery};

use crate::{
    AppendReceipt, Components, MemoryMetadata, ObjectKind, Storage, StorageConfig, StorageError,
    StoredBatch, Stream, StreamMetadata, object_key,
};

/// Runs every check against `store`.
pub async fn run_all(store: Arc<dyn ObjectStore>) {
    macro_rules! checks {
        ($($check:ident),* $(,)?) => {$(
            eprintln!("storage conformance: {}", stringify!($check));
            $check(&store).await;
        )*};
    }
    checks!(
        append_then_read_the_tail,
        upload_then_read_from_objects,
        log_cache_stays_within_budget_between_uploads,
        objects_alone_survive_the_loss_of_the_wal,
        unuploaded_data_is_replayed_from_the_wal,
        big_streams_get_stream_objects,
        wal_is_trimmed_after_upload,
        backpressure_bounds_unuploaded_bytes,
        a_closed_stream_opens_elsewhere,
        a_fenced_owner_cannot_commit,
        damaged_objects_are_reported,
        delete_records_moves_the_log_start,
        compaction_bounds_object_count,
        rewrite_stream_replaces_one_streams_batches,
        rewrites_leave_objects_shared_with_streams_served_elsewhere,
        an_object_holding_two_runs_of_a_stream_serves_each_in_order,
    );
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// One check's world: a prefix of the store, a WAL directory, the metadata.
#[derive(Debug)]
pub struct Harness {
    /// The store, scoped to this check's prefix.
    pub store: Arc<dyn ObjectStore>,
    /// The metadata, shared by every storage instance of the check.
    pub metadata: Arc<MemoryMetadata>,
    /// The WAL directory.
    pub wal_dir: tempfile::TempDir,
    /// Settings for every storage instance of the check.
    pub config: StorageConfig,
    /// Settings of the WAL.
    pub wal_config: FileWalConfig,
}

impl Harness {
    /// A fresh world under a prefix named after `check`.
    pub fn new(store: &Arc<dyn ObjectStore>, check: &str) -> Harness {
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("conformance/{check}-{pid}-{nonce}");
        Harness {
            store: Arc::new(PrefixStore::new(store.clone(), prefix.as_str())),
            metadata: Arc::new(MemoryMetadata::new()),
            wal_dir: tempfile::tempdir().expect("temporary directory"),
            config: StorageConfig {
                // Uploads happen when a check asks for them, unless it sets a size trigger.
                upload_interval_ms: 3_600_000,
                ..StorageConfig::default()
            },
            wal_config: FileWalConfig {
                segment_bytes: 256 << 10,
                max_record_bytes: 128 << 10,
                ..FileWalConfig::default()
            },
        }
    }

    /// Opens the WAL and a storage instance on it.
    pub async fn open(&self) -> (Storage, Recovery) {
        self.try_open().await.expect("storage opens")
    }

    /// Like [`open`](Self::open), returning the error.
    pub async fn try_open(&self) -> Result<(Storage, Recovery), StorageError> {
        let (wal, recovery) = FileWal::open(self.wal_dir.path(), self.wal_config.clone())?;
        let report = Recovery {
            records: recovery.records.clone(),
            torn_tail: recovery.torn_tail.clone(),
        };
        let storage = Storage::open(
            Components {
                wal: Arc::new(wal),
                recovery,
                store: self.store.clone(),
                metadata: self.metadata.clone(),
            },
            self.config.clone(),
        )
        .await?;
        Ok((storage, report))
    }

    /// Deletes the WAL directory's contents, as if the broker's disk were lost.
    pub fn delete_wal(&self) {
        std::fs::remove_dir_all(self.wal_dir.path()).expect("remove wal");
        std::fs::create_dir_all(self.wal_dir.path()).expect("recreate wal dir");
    }
}

/// A deterministic payload, different for every stream, index and length.
pub fn payload(stream: StreamId, i: u64, len: usize) -> Bytes {
    let seed =
        stream.get().wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let bytes: Vec<u8> = (0..len)
        .map(|j| (seed.rotate_left((j % 64) as u32) as u8) ^ (j as u8))
        .collect();
    Bytes::from(bytes)
}

/// Appends the batches concurrently and returns them with where they landed.
pub async fn append_all(stream: &Stream, batches: Vec<(u32, Bytes)>) -> Vec<StoredBatch> {
    let appends = batches.into_iter().map(|(count, bytes)| {
        let stream = stream.clone();
        async move {
            let r: AppendReceipt = stream
                .append(count, bytes.clone())
                .await
                .expect("append succeeds");
            StoredBatch {
                base_offset: r.base_offset,
                count,
                payload: bytes,
            }
        }
    });
    let mut out = futures::future::join_all(appends).await;
    out.sort_by_key(|b| b.base_offset);
    out
}

/// Reads the whole stream from `from`, `page_bytes` at a time.
pub async fn read_all(stream: &Stream, from: Offset, page_bytes: usize) -> Vec<StoredBatch> {
    let mut out: Vec<StoredBatch> = Vec::new();
    let mut next = from;
    loop {
        let page = stream.read(next, page_bytes).await.expect("read succeeds");
        let Some(last) = page.last() else { return out };
        next = last.end_offset();
        out.extend(page);
    }
}

fn batches_for(stream: StreamId, n: u64, len: usize) -> Vec<(u32, Bytes)> {
    (0..n)
        .map(|i| {
            (
                1 + (i % 4) as u32,
                payload(stream, i, len + (i as usize % 7) * 13),
            )
        })
        .collect()
}

async fn append_then_read_the_tail(store: &Arc<dyn ObjectStore>) {
    let h = Harness::new(store, "tail");
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    let written = append_all(&stream, batches_for(id, 50, 300)).await;
    let end = written.last().expect("written").end_offset();
    assert_eq!(
        stream.high_watermark(),
        end,
        "tail: high watermark after appends"
    );
    assert_eq!(
        read_all(&stream, Offset(0), 1 << 20).await,
        written,
        "tail: read from cache"
    );

    // A read from inside a batch returns that whole batch first.
    let inside = written[10].base_offset.add(1);
    let page = stream.read(inside, 1).await.expect("read");
    assert_eq!(
        page,
        vec![written[10].clone()],
        "tail: first batch may start before the offset"
    );
    assert!(
        stream
            .read(end, 1 << 20)
            .await
            .expect("read at end")
            .is_empty()
    );
    assert!(
        matches!(
            stream.read(end.add(1), 10).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ),
        "tail: reading past the high watermark is out of range"
    );
    assert_eq!(
        storage.stats().get_requests,
        0,
        "tail: no object reads for cached data"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn log_cache_stays_within_budget_between_uploads(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "cache-budget");
    h.config.log_cache_max_bytes = 64 << 10;
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    let written = append_all(&stream, batches_for(id, 100, 2000)).await;
    storage.flush().await.expect("flush");
    let budget = h.config.log_cache_max_bytes;
    assert!(
        storage.stats().log_cache_bytes <= budget,
        "cache-budget: evicted after the upload ({:?})",
        storage.stats()
    );
    // New, not yet uploaded data displaces uploaded data at once, not at the next upload.
    let more = append_all(&stream, batches_for(id, 16, 2000)).await;
    assert!(
        storage.stats().log_cache_bytes <= budget,
        "cache-budget: appends evict uploaded batches ({:?})",
        storage.stats()
    );
    let all: Vec<_> = written.into_iter().chain(more).collect();
    assert_eq!(
        read_all(&stream, Offset(0), 16 << 10).await,
        all,
        "cache-budget: everything still readable"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn upload_then_read_from_objects(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "objects");
    h.config.block_max_bytes = 1024;
    h.config.log_cache_max_bytes = 0;
    h.config.object_read_max_bytes = 8 << 10;
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    let written = append_all(&stream, batches_for(id, 120, 200)).await;
    storage.flush().await.expect("flush");
    assert_eq!(
        storage.stats().log_cache_bytes,
        0,
        "objects: cache evicted to its budget"
    );

    assert_eq!(
        read_all(&stream, Offset(0), 3000).await,
        written,
        "objects: paged read"
    );
    let first_pass = storage.stats();
    assert!(
        first_pass.get_requests > 0,
        "objects: reads went to the object store"
    );
    assert_eq!(
        read_all(&stream, Offset(0), 3000).await,
        written,
        "objects: second read"
    );
    let second_pass = storage.stats();
    assert!(
        second_pass.block_cache_hits > first_pass.block_cache_hits,
        "objects: second read served from the block cache"
    );
    // Read-ahead: a sequential read fetched several blocks per GET.
    assert!(
        first_pass.block_cache_misses > first_pass.get_requests,
        "objects: one ranged GET fetched several blocks ({first_pass:?})"
    );
    let mid = written[77]
        .base_offset
        .add(u64::from(written[77].count) - 1);
    let page = stream.read(mid, 1).await.expect("read mid");
    assert_eq!(
        page[0], written[77],
        "objects: whole batch holding the offset"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn objects_alone_survive_the_loss_of_the_wal(store: &Arc<dyn ObjectStore>) {
    let h = Harness::new(store, "wal-loss");
    let (storage, _) = h.open().await;
    let mut expected = Vec::new();
    for _ in 0..5 {
        let id = storage.create_stream().await.expect("create");
        let stream = storage.open_stream(id).await.expect("open");
        expected.push((id, append_all(&stream, batches_for(id, 40, 500)).await));
    }
    storage.flush().await.expect("flush");
    storage.abandon().await.expect("abandon");
    h.delete_wal();

    let (storage, recovery) = h.open().await;
    assert!(recovery.records.is_empty(), "wal-loss: the WAL is gone");
    for (id, written) in &expected {
        let stream = storage.open_stream(*id).await.expect("reopen");
        assert_eq!(
            &read_all(&stream, Offset(0), 4096).await,
            written,
            "wal-loss: {id} from objects"
        );
        let next = stream
            .append(1, payload(*id, 999, 10))
            .await
            .expect("append after restart");
        assert_eq!(
            next.base_offset,
            written.last().expect("written").end_offset()
        );
    }
    storage.shutdown().await.expect("shutdown");
}

async fn delete_records_moves_the_log_start(store: &Arc<dyn ObjectStore>) {
    let h = Harness::new(store, "trim");
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    let written = append_all(&stream, batches_for(id, 20, 100)).await;
    storage.flush().await.expect("flush");
    let written_later = append_all(&stream, batches_for(id, 5, 100)).await;
    let end = stream.high_watermark();
    // Inside a batch: that batch stays readable from the new start (clients skip what is below).
    let new_start = written[5].base_offset.add(1);
    assert_eq!(
        stream.delete_records(new_start).await.expect("trim"),
        new_start
    );
    assert_eq!(stream.start_offset(), new_start);
    assert!(
        matches!(
            stream.read(written[4].base_offset, 1 << 20).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ),
        "trim: below the start is out of range"
    );
    let mut expected = written[5..].to_vec();
    expected.extend(written_later.iter().cloned());
    assert_eq!(read_all(&stream, new_start, 1 << 20).await, expected);
    assert_eq!(
        stream.delete_records(Offset(1)).await.expect("no-op"),
        new_start,
        "trim: the start never moves back"
    );
    assert!(
        matches!(
            stream.delete_records(end.add(1)).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ),
        "trim: not past the high watermark"
    );
    // A crash: the start offset is metadata, so it holds after recovery.
    storage.abandon().await.expect("abandon");
    let (storage, _) = h.open().await;
    let stream = storage.open_stream(id).await.expect("reopen");
    assert_eq!(stream.start_offset(), new_start, "trim: survives a restart");
    assert_eq!(read_all(&stream, new_start, 1 << 20).await, expected);
    // Up to the end: nothing readable, appends go on.
    assert_eq!(stream.delete_records(end).await.expect("trim all"), end);
    assert!(read_all(&stream, end, 1 << 20).await.is_empty());
    storage.shutdown().await.expect("shutdown");
}

async fn unuploaded_data_is_replayed_from_the_wal(store: &Arc<dyn ObjectStore>) {
    let h = Harness::new(store, "replay");
    let (storage, _) = h.open().await;
    let a = storage.create_stream().await.expect("create");
    let b = storage.create_stream().await.expect("create");
    let sa = storage.open_stream(a).await.expect("open");
    let sb = storage.open_stream(b).await.expect("open");
    let mut wa = append_all(&sa, batches_for(a, 20, 100)).await;
    storage.flush().await.expect("flush half");
    wa.extend(append_all(&sa, batches_for(a, 20, 150)).await);
    let wb = append_all(&sb, batches_for(b, 30, 100)).await;
    // Crash: the last appends are only in the WAL.
    storage.abandon().await.expect("abandon");
    let objects_before = h.metadata.objects().len();

    let (storage, recovery) = h.open().await;
    assert!(
        !recovery.records.is_empty(),
        "replay: the WAL held the unuploaded appends"
    );
    assert!(
        h.metadata.objects().len() > objects_before,
        "replay: recovery uploaded them"
    );
    storage.abandon().await.expect("abandon");
    // With the WAL gone too, everything acknowledged is still there.
    h.delete_wal();
    let (storage, _) = h.open().await;
    let sa = storage.open_stream(a).await.expect("reopen");
    let sb = storage.open_stream(b).await.expect("reopen");
    assert_eq!(
        read_all(&sa, Offset(0), 1 << 20).await,
        wa,
        "replay: stream a"
    );
    assert_eq!(
        read_all(&sb, Offset(0), 1 << 20).await,
        wb,
        "replay: stream b"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn big_streams_get_stream_objects(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "split");
    h.config.stream_object_min_bytes = 16 << 10;
    let (storage, _) = h.open().await;
    let big = storage.create_stream().await.expect("create");
    let small1 = storage.create_stream().await.expect("create");
    let small2 = storage.create_stream().await.expect("create");
    append_all(
        &storage.open_stream(big).await.expect("open"),
        batches_for(big, 40, 1000),
    )
    .await;
    append_all(
        &storage.open_stream(small1).await.expect("open"),
        batches_for(small1, 3, 100),
    )
    .await;
    append_all(
        &storage.open_stream(small2).await.expect("open"),
        batches_for(small2, 3, 100),
    )
    .await;
    storage.flush().await.expect("flush");

    let objects = h.metadata.objects();
    let kinds: Vec<_> = objects.iter().map(|o| o.kind).collect();
    assert_eq!(
        kinds.len(),
        2,
        "split: one stream object and one stream set object"
    );
    assert!(kinds.contains(&ObjectKind::Stream) && kinds.contains(&ObjectKind::StreamSet));
    for object in &objects {
        let meta = h
            .store
            .head(&object_key(object.id))
            .await
            .expect("object exists");
        assert_eq!(
            meta.size, object.size,
            "split: size in metadata matches the store"
        );
    }
    let slices = h
        .metadata
        .find_objects(big, Offset(0), 10)
        .await
        .expect("find");
    assert_eq!(slices.len(), 1);
    assert_eq!(
        slices[0].object.kind,
        ObjectKind::Stream,
        "split: the big stream has its own object"
    );
    storage.shutdown().await.expect("shutdown");
}

fn wal_files(h: &Harness) -> usize {
    std::fs::read_dir(h.wal_dir.path())
        .expect("list wal")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        })
        .count()
}

async fn wal_is_trimmed_after_upload(store: &Arc<dyn ObjectStore>) {
    let h = Harness::new(store, "trim");
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    append_all(&stream, batches_for(id, 200, 8000)).await;
    let before = wal_files(&h);
    assert!(
        before > 3,
        "trim: 1.6 MB of appends fill several 256 KiB segments"
    );
    storage.flush().await.expect("flush");
    assert_eq!(
        wal_files(&h),
        1,
        "trim: only the active segment is left after an upload"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn backpressure_bounds_unuploaded_bytes(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "backpressure");
    h.config.upload_max_bytes = 32 << 10;
    h.config.max_unuploaded_bytes = 64 << 10;
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    let written = append_all(&stream, batches_for(id, 300, 2000)).await;
    assert!(storage.stats().unuploaded_bytes <= 64 << 10);
    assert!(
        storage.stats().uploads >= 5,
        "backpressure: appends made uploads happen"
    );
    assert_eq!(read_all(&stream, Offset(0), 1 << 20).await, written);
    let err = stream.append(1, Bytes::from(vec![0u8; 65 << 10])).await;
    assert!(
        matches!(err, Err(StorageError::AppendTooLarge { .. })),
        "backpressure: {err:?}"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn a_closed_stream_opens_elsewhere(store: &Arc<dyn ObjectStore>) {
    let h = Harness::new(store, "move");
    let other = Harness {
        store: h.store.clone(),
        metadata: h.metadata.clone(),
        ..Harness::new(store, "move-other")
    };
    let (a, _) = h.open().await;
    let (b, _) = other.open().await;
    let id = a.create_stream().await.expect("create");
    let on_a = a.open_stream(id).await.expect("open on a");
    let mut written = append_all(&on_a, batches_for(id, 30, 400)).await;
    a.close_stream(id).await.expect("close on a");
    assert!(
        on_a.append(1, payload(id, 0, 1)).await.is_err(),
        "move: closed stream refuses appends"
    );

    let on_b = b.open_stream(id).await.expect("open on b");
    assert!(
        on_b.epoch() > on_a.epoch(),
        "move: the new owner has a newer epoch"
    );
    written.extend(append_all(&on_b, batches_for(id, 5, 400)).await);
    assert_eq!(
        read_all(&on_b, Offset(0), 1 << 20).await,
        written,
        "move: all data on b"
    );
    a.shutdown().await.expect("shutdown a");
    b.shutdown().await.expect("shutdown b");
}

async fn a_fenced_owner_cannot_commit(store: &Arc<dyn ObjectStore>) {
    let h = Harness::new(store, "fence");
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    append_all(&stream, batches_for(id, 5, 100)).await;
    // Another owner takes the stream (the controller bumped its epoch).
    let taken = h.metadata.open_stream(id).await.expect("take over");
    storage
        .flush()
        .await
        .expect("flush leaves the fenced stream out");
    assert_eq!(
        h.metadata
            .describe_stream(id)
            .await
            .expect("describe")
            .end_offset,
        taken.end_offset,
        "fence: nothing committed under the old epoch"
    );
    let err = stream.append(1, payload(id, 9, 10)).await;
    assert!(
        matches!(err, Err(StorageError::Fenced { .. })),
        "fence: {err:?}"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn damaged_objects_are_reported(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "damage");
    h.config.log_cache_max_bytes = 0;
    let (storage, _) = h.open().await;
    let id = storage.create_stream().await.expect("create");
    let stream = storage.open_stream(id).await.expect("open");
    append_all(&stream, batches_for(id, 10, 100)).await;
    storage.flush().await.expect("flush");
    storage.shutdown().await.expect("shutdown");

    let object = h.metadata.objects()[0];
    let key = object_key(object.id);
    let mut bytes = h
        .store
        .get(&key)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    bytes[5] ^= 0xff;
    h.store
        .put(&key, PutPayload::from(bytes))
        .await
        .expect("overwrite");

    let (storage, _) = h.open().await;
    let stream = storage.open_stream(id).await.expect("open");
    match stream.read(Offset(0), 1 << 20).await {
        Err(StorageError::Format { key: k, .. }) => assert_eq!(k, key.to_string()),
        other => panic!("damage: expected a format error naming the object, got {other:?}"),
    }
    storage.shutdown().await.expect("shutdown");
}

async fn compaction_bounds_object_count(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "compaction");
    h.config.log_cache_max_bytes = 0;
    h.config.compaction_min_objects = 4;
    h.config.block_max_bytes = 4 << 10;
    let (storage, _) = h.open().await;
    let a = storage.create_stream().await.expect("create");
    let b = storage.create_stream().await.expect("create");
    let (sa, sb) = (
        storage.open_stream(a).await.expect("open"),
        storage.open_stream(b).await.expect("open"),
    );
    let (mut written_a, mut written_b) = (Vec::new(), Vec::new());
    for round in 0..10 {
        written_a.extend(append_all(&sa, batches_for(a, 20, 300)).await);
        if round % 3 == 0 {
            written_b.extend(append_all(&sb, batches_for(b, 7, 500)).await);
        }
        storage.flush().await.expect("flush");
    }
    // Part of stream a is below its log start: compaction keeps what is still referenced.
    let start = written_a[30].base_offset;
    sa.delete_records(start).await.expect("trim");
    let before = h.metadata.objects().len();
    assert_eq!(before, 10, "compaction: one stream set object per upload");

    let report = storage.compact().await.expect("compact");
    assert_eq!(report.replaced, 10, "compaction: {report:?}");
    let after = h.metadata.objects().len();
    assert!(after <= 2, "compaction: {after} objects left ({report:?})");
    let live_a: Vec<_> = written_a
        .iter()
        .filter(|x| x.end_offset() > start)
        .cloned()
        .collect();
    assert_eq!(
        read_all(&sa, start, 4 << 10).await,
        live_a,
        "compaction: stream a reads the same bytes"
    );
    assert_eq!(
        read_all(&sb, Offset(0), 4 << 10).await,
        written_b,
        "compaction: stream b reads the same bytes"
    );
    let again = storage.compact().await.expect("compact");
    assert_eq!(again.replaced, 0, "compaction: nothing left to do");
    storage.shutdown().await.expect("shutdown");
    h.delete_wal();
    let (storage, _) = h.open().await;
    let sb = storage.open_stream(b).await.expect("reopen");
    assert_eq!(
        read_all(&sb, Offset(0), 4 << 10).await,
        written_b,
        "compaction: the compacted objects alone serve the stream"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn rewrite_stream_replaces_one_streams_batches(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "rewrite");
    // The log cache keeps everything: reads after the rewrite must not serve its stale copies.
    h.config.compaction_max_bytes = 16 << 10; // several groups of objects
    let (storage, _) = h.open().await;
    let a = storage.create_stream().await.expect("create");
    let b = storage.create_stream().await.expect("create");
    let (sa, sb) = (
        storage.open_stream(a).await.expect("open"),
        storage.open_stream(b).await.expect("open"),
    );
    let (mut written_a, mut written_b) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        written_a.extend(append_all(&sa, batches_for(a, 10, 600)).await);
        written_b.extend(append_all(&sb, batches_for(b, 5, 400)).await);
        storage.flush().await.expect("flush");
    }
    // Not uploaded yet: never rewritten.
    let tail = append_all(&sa, batches_for(a, 3, 100)).await;
    let uploaded_end = written_a.last().expect("written").end_offset();
    let shorten = |b: &StoredBatch| StoredBatch {
        payload: b.payload.slice(..b.payload.len() / 3),
        ..b.clone()
    };

    // A rewrite that breaks the offsets is refused, and changes nothing.
    let mut broken = |run: Vec<StoredBatch>| Ok(run.into_iter().skip(1).collect());
    let refused = storage.rewrite_stream(a, uploaded_end, &mut broken).await;
    assert!(
        matches!(refused, Err(StorageError::Rewrite(_))),
        "rewrite: a run missing offsets must be refused, got {refused:?}"
    );
    let mut failing = |_: Vec<StoredBatch>| Err("no".to_owned());
    let refused = storage.rewrite_stream(a, uploaded_end, &mut failing).await;
    assert!(
        matches!(refused, Err(StorageError::Rewrite(_))),
        "{refused:?}"
    );

    // Unchanged batches write nothing.
    let objects = h.metadata.objects();
    let mut same = |run: Vec<StoredBatch>| Ok(run);
    let report = storage
        .rewrite_stream(a, uploaded_end, &mut same)
        .await
        .expect("rewrite");
    assert_eq!((report.replaced, report.written), (0, 0), "{report:?}");
    assert_eq!(h.metadata.objects(), objects, "rewrite: nothing changed");

    // Stream a's first half shrinks; b and the rest of a read the same bytes.
    let half = written_a[written_a.len() / 2].base_offset;
    let mut shrink = |run: Vec<StoredBatch>| {
        Ok(run
            .iter()
            .map(|b| {
                if b.base_offset < half {
                    shorten(b)
                } else {
                    b.clone()
                }
            })
            .collect())
    };
    let report = storage
        .rewrite_stream(a, half, &mut shrink)
        .await
        .expect("rewrite");
    assert!(
        report.replaced > 0 && report.stream_bytes.1 < report.stream_bytes.0,
        "{report:?}"
    );
    let expected: Vec<StoredBatch> = written_a
        .iter()
        .map(|b| {
            if b.base_offset < half {
                shorten(b)
            } else {
                b.clone()
            }
        })
        .chain(tail.iter().cloned())
        .collect();
    assert_eq!(
        digest(&read_all(&sa, Offset(0), 4 << 10).await),
        digest(&expected),
        "rewrite: stream a"
    );
    assert_eq!(
        digest(&read_all(&sb, Offset(0), 4 << 10).await),
        digest(&written_b),
        "rewrite: stream b"
    );

    // The new objects alone serve both streams (shutdown uploads the tail).
    storage.shutdown().await.expect("shutdown");
    h.delete_wal();
    let (storage, _) = h.open().await;
    let (sa, sb) = (
        storage.open_stream(a).await.expect("reopen"),
        storage.open_stream(b).await.expect("reopen"),
    );
    assert_eq!(
        digest(&read_all(&sa, Offset(0), 4 << 10).await),
        digest(&expected),
        "rewrite: stream a after a restart"
    );
    assert_eq!(
        digest(&read_all(&sb, Offset(0), 4 << 10).await),
        digest(&written_b),
        "rewrite: stream b after a restart"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn rewrites_leave_objects_shared_with_streams_served_elsewhere(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "shared");
    h.config.compaction_min_objects = 2;
    let (storage, _) = h.open().await;
    let a = storage.create_stream().await.expect("create");
    let b = storage.create_stream().await.expect("create");
    let (sa, sb) = (
        storage.open_stream(a).await.expect("open"),
        storage.open_stream(b).await.expect("open"),
    );
    let mut written_a = Vec::new();
    for _ in 0..3 {
        written_a.extend(append_all(&sa, batches_for(a, 4, 300)).await);
        append_all(&sb, batches_for(b, 4, 300)).await;
        storage.flush().await.expect("flush");
    }
    // Stream b is now served elsewhere: the objects it shares with a must not be rewritten here.
    drop(sb);
    storage.close_stream(b).await.expect("close");
    let objects = h.metadata.objects();
    let end = written_a.last().expect("written").end_offset();
    let mut shrink = |run: Vec<StoredBatch>| {
        Ok(run
            .iter()
            .map(|x| StoredBatch {
                payload: x.payload.slice(..1),
                ..x.clone()
            })
            .collect())
    };
    let report = storage
        .rewrite_stream(a, end, &mut shrink)
        .await
        .expect("rewrite");
    assert_eq!(report.replaced, 0, "shared objects rewritten: {report:?}");
    let compacted = storage.compact().await.expect("compact");
    assert_eq!(
        compacted.replaced, 0,
        "shared objects compacted: {compacted:?}"
    );
    assert_eq!(h.metadata.objects(), objects, "no object changed");
    assert_eq!(
        digest(&read_all(&sa, Offset(0), 4 << 10).await),
        digest(&written_a),
        "stream a reads the same bytes"
    );
    storage.shutdown().await.expect("shutdown");
}

async fn an_object_holding_two_runs_of_a_stream_serves_each_in_order(store: &Arc<dyn ObjectStore>) {
    let mut h = Harness::new(store, "two-runs");
    h.config.log_cache_max_bytes = 0;
    h.config.compaction_min_objects = 2;
    h.config.stream_object_min_bytes = 4 << 10;
    let (storage, _) = h.open().await;
    let a = storage.create_stream().await.expect("create");
    let sa = storage.open_stream(a).await.expect("open");
    // Small, big (a stream object), small: compaction merges the two small ones around the gap.
    let mut written = append_all(&sa, batches_for(a, 5, 200)).await;
    storage.flush().await.expect("flush");
    written.extend(append_all(&sa, batches_for(a, 8, 1000)).await);
    storage.flush().await.expect("flush");
    written.extend(append_all(&sa, batches_for(a, 5, 200)).await);
    storage.flush().await.expect("flush");
    let report = storage.compact().await.expect("compact");
    assert_eq!(
        report.replaced, 2,
        "the two small objects merged: {report:?}"
    );
    for page in [1, 300, 4 << 10, 1 << 20] {
        assert_eq!(
            digest(&read_all(&sa, Offset(0), page).await),
            digest(&written),
            "two runs in one object, read {page} bytes at a time"
        );
    }
    storage.shutdown().await.expect("shutdown");
}

/// Offsets, lengths and CRCs of batches: comparable without printing payloads.
fn digest(batches: &[StoredBatch]) -> Vec<(Offset, u32, usize, u32)> {
    batches
        .iter()
        .map(|b| {
            (
                b.base_offset,
                b.count,
                b.payload.len(),
                crc32c::crc32c(&b.payload),
            )
        })
        .collect()
}
