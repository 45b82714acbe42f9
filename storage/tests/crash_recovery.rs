//! Property test: random appends across many streams, uploads and crashes at random points; every
//! acknowledged batch must read back at its offset, byte for byte.
//!
//! A "crash" stops the storage without uploading (`Storage::abandon`) while appends are in flight,
//! then reopens the same WAL directory, object store and metadata. Appends that returned `Ok` before
//! the crash are acknowledged and must survive; the others may or may not.
//!
//! proptest prints the failing case (shrunk) and stores it under `proptest-regressions/`; set
//! `PROPTEST_RNG_SEED` to replay a run, `PROPTEST_CASES` to run more cases.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use proptest::prelude::*;
use weir_common::{Offset, StreamId};
use weir_storage::conformance::{Harness, payload};
use weir_storage::{Storage, StorageConfig, Stream};
use weir_wal::FileWalConfig;

const STREAMS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    /// One append, awaited.
    Append {
        stream: usize,
        count: u32,
        len: usize,
    },
    /// Several concurrent appends to one stream.
    Burst { stream: usize, n: usize },
    /// Upload everything durable now.
    Upload,
    /// Concurrent appends to several streams while an upload runs.
    UploadDuringBurst { n: usize },
    /// Crash with `in_flight` appends not yet awaited, then restart.
    Crash { in_flight: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..STREAMS, 1u32..5, 1usize..3000).prop_map(|(stream, count, len)| Op::Append { stream, count, len }),
        3 => (0..STREAMS, 2usize..20).prop_map(|(stream, n)| Op::Burst { stream, n }),
        1 => Just(Op::Upload),
        2 => (2usize..24).prop_map(|n| Op::UploadDuringBurst { n }),
        2 => (0usize..10).prop_map(|in_flight| Op::Crash { in_flight }),
    ]
}

/// What was acknowledged: per stream, base offset → (count, payload).
type Model = BTreeMap<StreamId, BTreeMap<Offset, (u32, Bytes)>>;

struct World {
    harness: Harness,
    storage: Option<Storage>,
    streams: Vec<Stream>,
    ids: Vec<StreamId>,
    model: Model,
    seq: u64,
}

impl World {
    async fn new() -> World {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut harness = Harness::new(&store, "crash-property");
        harness.config = StorageConfig {
            upload_max_bytes: 24 << 10,
            max_unuploaded_bytes: 256 << 10,
            upload_interval_ms: 3_600_000,
            block_max_bytes: 2048,
            log_cache_max_bytes: 16 << 10,
            stream_object_min_bytes: 16 << 10,
            ..StorageConfig::default()
        };
        harness.wal_config = FileWalConfig {
            // Small segments, so trimming is fine-grained and a wrong trim point loses data.
            segment_bytes: 8 << 10,
            max_record_bytes: 4 << 10,
            ..FileWalConfig::default()
        };
        let (storage, _) = harness.open().await;
        let mut ids = Vec::new();
        for _ in 0..STREAMS {
            ids.push(storage.create_stream().await.unwrap());
        }
        let mut world = World {
            harness,
            storage: Some(storage),
            streams: Vec::new(),
            ids,
            model: Model::new(),
            seq: 0,
        };
        world.open_streams().await;
        world
    }

    async fn open_streams(&mut self) {
        let storage = self.storage.as_ref().unwrap();
        self.streams.clear();
        for id in &self.ids {
            self.streams.push(storage.open_stream(*id).await.unwrap());
        }
    }

    fn next_payload(&mut self, stream: usize, len: usize) -> Bytes {
        self.seq += 1;
        payload(self.ids[stream], self.seq, len)
    }

    fn ack(&mut self, stream: usize, base: Offset, count: u32, bytes: Bytes) {
        let previous = self
            .model
            .entry(self.ids[stream])
            .or_default()
            .insert(base, (count, bytes));
        assert!(
            previous.is_none(),
            "offset {base} of stream {stream} acknowledged twice"
        );
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Append { stream, count, len } => {
                let bytes = self.next_payload(stream, len);
                let r = self.streams[stream]
                    .append(count, bytes.clone())
                    .await
                    .unwrap();
                self.ack(stream, r.base_offset, count, bytes);
            }
            Op::Burst { stream, n } => {
                let batches: Vec<_> = (0..n)
                    .map(|i| (1 + (i % 3) as u32, self.next_payload(stream, 100 + i * 37)))
                    .collect();
                let appends = batches
                    .iter()
                    .map(|(count, bytes)| self.streams[stream].append(*count, bytes.clone()));
                let results = futures::future::join_all(appends).await;
                for ((count, bytes), r) in batches.into_iter().zip(results) {
                    self.ack(stream, r.unwrap().base_offset, count, bytes);
                }
            }
            Op::Upload => self.storage.as_ref().unwrap().flush().await.unwrap(),
            Op::UploadDuringBurst { n } => self.upload_during_burst(n).await,
            Op::Crash { in_flight } => self.crash(in_flight).await,
        }
    }

    async fn upload_during_burst(&mut self, n: usize) {
        let batches: Vec<_> = (0..n)
            .map(|i| (i % STREAMS, self.next_payload(i % STREAMS, 200 + i * 11)))
            .collect();
        let appends = batches
            .iter()
            .map(|(stream, bytes)| self.streams[*stream].append(1, bytes.clone()));
        let storage = self.storage.as_ref().unwrap();
        let (results, flushed) = tokio::join!(futures::future::join_all(appends), async {
            tokio::task::yield_now().await;
            storage.flush().await
        });
        flushed.unwrap();
        for ((stream, bytes), r) in batches.into_iter().zip(results) {
            self.ack(stream, r.unwrap().base_offset, 1, bytes);
        }
    }

    async fn crash(&mut self, in_flight: usize) {
        let mut tasks = Vec::new();
        for i in 0..in_flight {
            let stream = i % STREAMS;
            let bytes = self.next_payload(stream, 50 + i);
            let handle = self.streams[stream].clone();
            tasks.push((
                stream,
                bytes.clone(),
                tokio::spawn(async move { handle.append(1, bytes).await }),
            ));
        }
        tokio::task::yield_now().await;
        self.storage.take().unwrap().abandon().await.unwrap();
        for (stream, bytes, task) in tasks {
            if let Ok(r) = task.await.unwrap() {
                self.ack(stream, r.base_offset, 1, bytes);
            }
        }
        let (storage, _) = self.harness.open().await;
        self.storage = Some(storage);
        self.open_streams().await;
        self.verify().await;
    }

    async fn verify(&self) {
        for (i, id) in self.ids.iter().enumerate() {
            let stream = &self.streams[i];
            for (base, (count, bytes)) in self.model.get(id).into_iter().flatten() {
                let page = stream
                    .read(*base, 1)
                    .await
                    .unwrap_or_else(|e| panic!("{id} read at {base}: {e}"));
                let first = page
                    .first()
                    .unwrap_or_else(|| panic!("{id}: nothing at acknowledged offset {base}"));
                assert_eq!(first.base_offset, *base, "{id}: batch boundary moved");
                assert_eq!(first.count, *count, "{id}: count at {base}");
                assert_eq!(&first.payload, bytes, "{id}: bytes at {base} differ");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_batches_survive_crashes(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let mut world = World::new().await;
            for op in &ops {
                world.apply(op).await;
            }
            world.verify().await;
            world.crash(3).await;
            // And once more with the WAL gone after an upload: objects alone hold everything.
            world.storage.as_ref().unwrap().flush().await.unwrap();
            world.storage.take().unwrap().abandon().await.unwrap();
            world.harness.delete_wal();
            let (storage, _) = world.harness.open().await;
            world.storage = Some(storage);
            world.open_streams().await;
            world.verify().await;
            world.storage.take().unwrap().shutdown().await.unwrap();
        });
    }
}
