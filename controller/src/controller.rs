//! The controller: turns requests into validated records, appends them to the metadata log, applies
//! them, and serves reads from the resulting state.
//!
//! Writes are serialised by one async mutex around the log (one writer, like a partition); the state
//! sits behind a read-write lock that is held only to read or apply, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use object_store::ObjectStore;
use uuid::Uuid;
use weir_common::{Clock, Epoch, ObjectId, Offset, StreamId, SystemClock};
use weir_storage::{MetadataError, NewObject, ObjectSlice, StreamDescriptor, StreamMetadata};

use crate::ControllerError;
use crate::log::MetaLog;
use crate::records::{
    Counters, Kind, PartitionsAdded, Record, StreamCreated, StreamOpened, StreamTrimmed,
    TopicConfigsSet, TopicCreated, TopicDeleted,
};
use crate::state::{State, Topic, commit_record, compaction_record};

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The clock that stamps object commits (retention by time goes by it). Default: the system's.
    pub clock: Arc<dyn Clock>,
    /// A snapshot is written after this many log appends. Default 1000.
    pub snapshot_every: u64,
    /// Object ids are reserved in blocks of this many, one log append per block. Default 1024.
    pub object_id_block: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            snapshot_every: 1000,
            object_id_block: 1024,
        }
    }
}

/// The cluster's metadata authority. See the [module documentation](self).
#[derive(Debug)]
pub struct Controller {
    log: tokio::sync::Mutex<Writer>,
    state: RwLock<State>,
    pub(crate) config: ControllerConfig,
    /// The next log sequence: every log object below it is applied to `state`.
    next_seq: tokio::sync::watch::Sender<u64>,
    /// The latest log objects appended here, for watchers (older ones are read from the store).
    recent: std::sync::Mutex<std::collections::VecDeque<(u64, bytes::Bytes)>>,
    store: Arc<dyn ObjectStore>,
}

/// How many recent log objects a controller keeps for watchers.
const RECENT_BATCHES: usize = 4096;

#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) log: MetaLog,
    /// Object ids handed out from the reserved block: next, and the block's end.
    pub(crate) next_object_id: u64,
    reserved_object_id: u64,
    /// An append failed with no answer from the store (an error or a timeout): it may have landed.
    /// The log is reread before the next change is judged, so the state never misses it.
    uncertain: bool,
    /// Garbage collection's memory (`gc.rs`).
    pub(crate) gc: crate::gc::GcMemory,
}

impl Controller {
    /// Loads the metadata from `store` and becomes its writer.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        config: ControllerConfig,
    ) -> Result<Controller, ControllerError> {
        let (log, state) = MetaLog::open(store.clone(), config.snapshot_every).await?;
        let reserved = state.next_object_id;
        let (next_seq, _) = tokio::sync::watch::channel(log.next_seq());
        Ok(Controller {
            next_seq,
            recent: std::sync::Mutex::default(),
            store,
            log: tokio::sync::Mutex::new(Writer {
                log,
                next_object_id: reserved,
                reserved_object_id: reserved,
                uncertain: false,
                gc: crate::gc::GcMemory::default(),
            }),
            state: RwLock::new(state),
            config,
        })
    }

    /// Runs `f` on the current state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The next log sequence: the state reflects every log object below it.
    pub fn next_seq(&self) -> u64 {
        *self.next_seq.borrow()
    }

    /// Wakes on every change of [`next_seq`](Self::next_seq).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.next_seq.subscribe()
    }

    /// Log object `seq` if it is among the recent ones kept in memory.
    pub fn recent_batch(&self, seq: u64) -> Option<bytes::Bytes> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let first = recent.front()?.0;
        let (at, bytes) = recent.get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        (*at == seq).then(|| bytes.clone())
    }

    /// The object store holding the metadata log.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The writer, once the state is known to reflect the whole log.
    pub(crate) async fn writer(&self) -> tokio::sync::MutexGuard<'_, Writer> {
        let mut writer = self.log.lock().await;
        if writer.uncertain {
            self.reload(&mut writer).await;
        }
        writer
    }

    /// Appends `records` and applies them. The caller holds the writer.
    pub(crate) async fn commit(
        &self,
        writer: &mut Writer,
        records: Vec<Record>,
    ) -> Result<(), ControllerError> {
        let seq = writer.log.next_seq();
        let bytes = match writer.log.append(&records).await {
            Ok(bytes) => bytes,
            Err(e) => {
                if matches!(e, ControllerError::LostLeadership { .. }) {
                    // Another controller wrote the log: serve what it says from now on (DESIGN.md
                    // 6: step down and reload). The request fails; a retry is judged on the fresh
                    // state.
                    self.reload(writer).await;
                } else {
                    writer.uncertain = true;
                }
                return Err(e);
            }
        };
        let snapshot = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for record in &records {
                state.apply(record);
            }
            writer.log.snapshot_due().then(|| state.clone())
        };
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.back().is_some_and(|(last, _)| last + 1 != seq) {
                recent.clear(); // a reload in between: keep only a contiguous run
            }
            recent.push_back((seq, bytes));
            while recent.len() > RECENT_BATCHES {
                recent.pop_front();
            }
        }
        self.next_seq.send_replace(seq + 1);
        if let Some(snapshot) = snapshot
            && let Err(e) = writer.log.snapshot(&snapshot).await
        {
            // The log holds everything; a missed snapshot only slows the next restart.
            tracing::warn!(error = %e, "metadata snapshot failed");
        }
        Ok(())
    }

    /// Whether another controller appended to the log after this one's last append (one HEAD of the
    /// next sequence); if so the log is reread, so the state shows who is in charge now.
    pub async fn refresh_if_superseded(&self) -> Result<bool, ControllerError> {
        use object_store::ObjectStoreExt;
        let mut writer = self.log.lock().await;
        let path = object_store::path::Path::from(crate::log::log_key(writer.log.next_seq()));
        match self.store.head(&path).await {
            Ok(_) => {
                self.reload(&mut writer).await;
                Ok(true)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(ControllerError::store("head", path.as_ref(), e)),
        }
    }

    /// Rereads the metadata log after another controller wrote to it.
    async fn reload(&self, writer: &mut Writer) {
        match MetaLog::open(writer.log.store(), self.config.snapshot_every).await {
            Ok((log, state)) => {
                tracing::warn!(
                    next_seq = log.next_seq(),
                    "metadata log reread (another controller wrote it, or an append's outcome \
                     was unknown)"
                );
                writer.uncertain = false;
                writer.next_object_id = writer.next_object_id.max(state.next_object_id);
                writer.reserved_object_id = writer.next_object_id;
                let next_seq = log.next_seq();
                writer.log = log;
                *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
                self.recent
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
                self.next_seq.send_replace(next_seq);
            }
            Err(e) => {
                // Still uncertain: the next change tries again before it is judged.
                writer.uncertain = true;
                tracing::error!(error = %e, "reloading the metadata log failed");
            }
        }
    }

    /// Creates a topic with `partitions` partitions, each a new stream.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<Topic, ControllerError> {
        validate_topic_name(name)?;
        if partitions == 0 {
            return Err(ControllerError::InvalidPartitions(partitions));
        }
        let mut writer = self.writer().await;
        let first_stream = self.read(|s| {
            if s.topics.contains_key(name) {
                Err(ControllerError::TopicExists(name.to_string()))
            } else {
                Ok(s.next_stream_id)
            }
        })?;
        let record = TopicCreated {
            name: name.to_string(),
            id: Uuid::new_v4().as_bytes().to_vec(),
            partition_streams: (0..u64::from(partitions))
                .map(|p| first_stream + p)
                .collect(),
            configs,
        };
        let streams = record.partition_streams.clone();
        let mut records = vec![Kind::TopicCreated(record).into()];
        records.extend(self.read(|s| crate::cluster::placement(s, &streams)));
        self.commit(&mut writer, records).await?;
        let topic = self.read(|s| s.topics.get(name).cloned());
        topic.ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))
    }

    /// Deletes a topic and its streams. Its objects stay until garbage collection.
    pub async fn delete_topic(&self, name: &str) -> Result<Topic, ControllerError> {
        let mut writer = self.writer().await;
        let topic = self
            .read(|s| s.topics.get(name).cloned())
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
        let record = TopicDeleted {
            name: name.to_string(),
        };
        self.commit(&mut writer, vec![Kind::TopicDeleted(record).into()])
            .await?;
        Ok(topic)
    }

    /// Replaces a topic's explicit configs (validated by the caller).
    pub async fn set_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<Topic, ControllerError> {
        let mut writer = self.writer().await;
        if self.read(|s| !s.topics.contains_key(name)) {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        }
        let record = TopicConfigsSet {
            name: name.to_string(),
            configs,
        };
        self.commit(&mut writer, vec![Kind::TopicConfigsSet(record).into()])
            .await?;
        self.read(|s| s.topics.get(name).cloned())
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))
    }

    /// Grows a topic to `total` partitions (never shrinks), each new one a new stream.
    pub async fn add_partitions(&self, name: &str, total: u32) -> Result<Topic, ControllerError> {
        let mut writer = self.writer().await;
        let (current, next) = self.read(|s| {
            s.topics
                .get(name)
                .map(|t| (t.partitions.len() as u64, s.next_stream_id))
                .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))
        })?;
        if u64::from(total) <= current {
            return Err(ControllerError::InvalidPartitions(total));
        }
        let record = PartitionsAdded {
            name: name.to_string(),
            partition_streams: (0..u64::from(total) - current).map(|i| next + i).collect(),
        };
        let streams = record.partition_streams.clone();
        let mut records = vec![Kind::PartitionsAdded(record).into()];
        records.extend(self.read(|s| crate::cluster::placement(s, &streams)));
        self.commit(&mut writer, records).await?;
        self.read(|s| s.topics.get(name).cloned())
            .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))
    }

    fn unavailable(e: ControllerError) -> MetadataError {
        MetadataError::Unavailable(e.to_string())
    }

    fn stream_descriptor(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError> {
        self.read(|s| s.describe(stream))
            .ok_or(MetadataError::UnknownStream(stream))
    }
}

/// Kafka's rule: 1 to 249 characters of ASCII letters, digits, `.`, `_` and `-`, and not `.` or `..`.
impl Controller {
    /// Hands out `count` Kafka producer ids (a broker's block): the first of them. Committed
    /// before they are used, so no id is ever handed out twice, across controllers too.
    pub async fn allocate_producer_ids(&self, count: u32) -> Result<u64, ControllerError> {
        let mut writer = self.writer().await;
        let first = self.read(|s| s.next_producer_id);
        let record = Kind::Counters(Counters {
            next_stream_id: self.read(|s| s.next_stream_id),
            next_object_id: self.read(|s| s.next_object_id),
            next_producer_id: first + u64::from(count.max(1)),
        })
        .into();
        self.commit(&mut writer, vec![record]).await?;
        Ok(first)
    }
}

impl Controller {
    /// Records a change of SCRAM credentials or ACLs (validated by the broker that asks).
    pub async fn change_security(
        &self,
        change: crate::records::SecurityChanged,
    ) -> Result<(), ControllerError> {
        let mut writer = self.writer().await;
        self.commit(&mut writer, vec![Kind::SecurityChanged(change).into()])
            .await
    }
}

pub fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 249 || !valid_chars || name == "." || name == ".." {
        return Err(ControllerError::InvalidTopicName(name.to_string()));
    }
    Ok(())
}

#[async_trait]
impl StreamMetadata for Controller {
    async fn create_stream(&self) -> Result<StreamId, MetadataError> {
        let mut writer = self.writer().await;
        let id = self.read(|s| s.next_stream_id);
        let record = Kind::StreamCreated(StreamCreated {
            stream: id,
            end_offset: 0,
        })
        .into();
        self.commit(&mut writer, vec![record])
            .await
            .map_err(Self::unavailable)?;
        Ok(StreamId(id))
    }

    async fn open_stream(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError> {
        let mut writer = self.writer().await;
        let current = self.stream_descriptor(stream)?;
        let epoch = current.epoch.next();
        let record = Kind::StreamOpened(StreamOpened {
            stream: stream.get(),
            epoch: epoch.get(),
            start_offset: current.end_offset.get(),
        })
        .into();
        self.commit(&mut writer, vec![record])
            .await
            .map_err(Self::unavailable)?;
        self.stream_descriptor(stream)
    }

    async fn close_stream(&self, stream: StreamId, epoch: Epoch) -> Result<(), MetadataError> {
        weir_storage::check_close(&self.stream_descriptor(stream)?, epoch)
    }

    async fn trim_stream(
        &self,
        stream: StreamId,
        epoch: Epoch,
        start: Offset,
    ) -> Result<(), MetadataError> {
        let mut writer = self.writer().await;
        let current = self.stream_descriptor(stream)?;
        weir_storage::check_close(&current, epoch)?;
        if start <= current.start_offset {
            return Ok(());
        }
        let record = Kind::StreamTrimmed(StreamTrimmed {
            stream: stream.get(),
            start_offset: start.get(),
        })
        .into();
        self.commit(&mut writer, vec![record])
            .await
            .map_err(Self::unavailable)
    }

    async fn describe_stream(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError> {
        self.stream_descriptor(stream)
    }

    async fn allocate_object_ids(&self, count: u32) -> Result<ObjectId, MetadataError> {
        let mut writer = self.writer().await;
        let count = u64::from(count);
        if writer.next_object_id + count > writer.reserved_object_id {
            let reserved = writer.next_object_id + count.max(self.config.object_id_block);
            let record = Kind::Counters(Counters {
                next_stream_id: self.read(|s| s.next_stream_id),
                next_object_id: reserved,
                next_producer_id: self.read(|s| s.next_producer_id),
            })
            .into();
            self.commit(&mut writer, vec![record])
                .await
                .map_err(Self::unavailable)?;
            writer.reserved_object_id = reserved;
        }
        let first = writer.next_object_id;
        writer.next_object_id += count;
        Ok(ObjectId(first))
    }

    async fn commit_objects(&self, objects: Vec<NewObject>) -> Result<(), MetadataError> {
        let mut writer = self.writer().await;
        self.read(|s| {
            let fenced = objects.iter().find(|o| o.object.id.get() < s.object_fence);
            if let Some(o) = fenced {
                return Err(MetadataError::ObjectFenced(o.object.id));
            }
            weir_storage::check_commit(&objects, |id| s.describe(id))
        })?;
        let now = self.config.clock.now_ms();
        self.commit(&mut writer, vec![commit_record(&objects, now)])
            .await
            .map_err(Self::unavailable)
    }

    async fn replace_objects(
        &self,
        removed: Vec<ObjectId>,
        added: Vec<NewObject>,
    ) -> Result<(), MetadataError> {
        let mut writer = self.writer().await;
        let committed_at = self.read(|s| {
            if let Some(o) = added.iter().find(|o| o.object.id.get() < s.object_fence) {
                return Err(MetadataError::ObjectFenced(o.object.id));
            }
            let live = |id: ObjectId| {
                s.objects.get(&id)?;
                Some(
                    s.streams
                        .iter()
                        .flat_map(|(stream_id, stream)| {
                            stream
                                .slices
                                .iter()
                                .filter(move |sl| sl.object.id == id && sl.end > stream.start)
                                .map(move |sl| (*stream_id, sl.start, sl.end))
                        })
                        .collect(),
                )
            };
            let start_of = |id| s.streams.get(&id).map(|st| st.start);
            weir_storage::check_replace(&removed, &added, live, start_of)?;
            Ok(s.streams
                .values()
                .flat_map(|st| &st.slices)
                .filter(|sl| removed.contains(&sl.object.id))
                .map(|sl| sl.committed_at_ms)
                .max()
                .unwrap_or_default())
        })?;
        self.commit(
            &mut writer,
            vec![compaction_record(&removed, &added, committed_at)],
        )
        .await
        .map_err(Self::unavailable)
    }

    async fn find_objects(
        &self,
        stream: StreamId,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<ObjectSlice>, MetadataError> {
        self.read(|s| s.find_slices(stream, from, limit))
    }

    async fn object_streams(
        &self,
        objects: &[ObjectId],
    ) -> Result<BTreeMap<ObjectId, std::collections::BTreeSet<StreamId>>, MetadataError> {
        Ok(self.read(|s| s.object_streams(objects)))
    }
}
