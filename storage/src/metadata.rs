//! The metadata the storage layer needs, and the trait through which it gets and commits it.
//!
//! Storage owns this trait (DESIGN.md section 2: "the inverse through a trait that storage owns"): the
//! controller implements it over its metadata log, and [`MemoryMetadata`] implements it here for tests
//! and for single-process use until the controller exists. Every call is one request to the controller,
//! and [`commit_objects`](StreamMetadata::commit_objects) is atomic: all the objects of one upload and
//! all their stream ranges become visible together, or none do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weir_common::{Epoch, ObjectId, Offset, StreamId};

/// What kind of data object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A stream set object: the small slices of many streams from one upload.
    StreamSet,
    /// A stream object: one stream's data.
    Stream,
}

/// A data object as metadata knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectDescriptor {
    /// The object's id; its key is derived from it.
    pub id: ObjectId,
    /// Size in bytes.
    pub size: u64,
    /// Stream set or stream object.
    pub kind: ObjectKind,
}

/// A range of one stream written under an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRange {
    /// The stream.
    pub stream_id: StreamId,
    /// The writer's epoch.
    pub epoch: Epoch,
    /// First offset.
    pub start: Offset,
    /// Offset after the last.
    pub end: Offset,
    /// Bytes of the range's batches in the object (what retention by size counts).
    #[serde(default)]
    pub bytes: u64,
}

/// An uploaded object and the stream ranges it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewObject {
    /// The object.
    pub object: ObjectDescriptor,
    /// The ranges it holds, one per stream.
    pub ranges: Vec<StreamRange>,
}

/// A stream as metadata knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDescriptor {
    /// The stream.
    pub id: StreamId,
    /// Its current epoch.
    pub epoch: Epoch,
    /// The log start offset: nothing below it is readable.
    pub start_offset: Offset,
    /// The end of the data committed in objects.
    pub end_offset: Offset,
}

/// Where a range of a stream lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSlice {
    /// The object holding it.
    pub object: ObjectDescriptor,
    /// First offset of the stream in it.
    pub start: Offset,
    /// Offset after the stream's last one in it.
    pub end: Offset,
    /// Bytes of the stream's batches in it (0 when not recorded).
    pub bytes: u64,
    /// When the object was committed, in milliseconds since the Unix epoch (0 when not recorded):
    /// what retention by time goes by, as Kafka goes by a segment's newest record.
    pub committed_at_ms: u64,
}

/// Why a metadata request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// No such stream.
    #[error("unknown stream {0}")]
    UnknownStream(StreamId),
    /// The caller's epoch is not the stream's current one: another owner took over.
    #[error("{stream} fenced: request carries {epoch}, current is {current}")]
    Fenced {
        /// The stream.
        stream: StreamId,
        /// The epoch in the request.
        epoch: Epoch,
        /// The stream's epoch.
        current: Epoch,
    },
    /// A committed range does not continue the stream.
    #[error("{stream}: committed range starts at {found}, the stream ends at {expected}")]
    NotContiguous {
        /// The stream.
        stream: StreamId,
        /// The stream's committed end.
        expected: Offset,
        /// The range's start.
        found: Offset,
    },
    /// The object's id was handed out before the last garbage collection fenced old ids: an upload
    /// that took that long is refused (its object may already be deleted) and must be redone.
    #[error("{0} was allocated before the garbage collector's fence; upload again")]
    ObjectFenced(ObjectId),
    /// A compaction's inputs changed while it ran (a stream deleted, an object already replaced, a
    /// slice of a stream this broker does not serve): nothing was changed.
    #[error("objects to replace changed: {0}")]
    ReplacedObjectsChanged(String),
    /// The metadata service could not be reached or failed.
    #[error("metadata unavailable: {0}")]
    Unavailable(String),
}

/// The storage layer's view of the controller.
#[async_trait]
pub trait StreamMetadata: Send + Sync + fmt::Debug {
    /// Creates an empty stream at epoch 0.
    async fn create_stream(&self) -> Result<StreamId, MetadataError>;

    /// Takes ownership of a stream: bumps its epoch and returns it.
    async fn open_stream(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError>;

    /// Gives up ownership taken at `epoch`.
    async fn close_stream(&self, stream: StreamId, epoch: Epoch) -> Result<(), MetadataError>;

    /// Advances the stream's log start offset to `start` (never backwards): nothing below it is
    /// readable any more (Kafka's DeleteRecords; later, retention). Only the owner at `epoch` may.
    async fn trim_stream(
        &self,
        stream: StreamId,
        epoch: Epoch,
        start: Offset,
    ) -> Result<(), MetadataError>;

    /// The stream's current state, without taking ownership.
    async fn describe_stream(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError>;

    /// Reserves `count` consecutive object ids and returns the first.
    async fn allocate_object_ids(&self, count: u32) -> Result<ObjectId, MetadataError>;

    /// Records uploaded objects. Atomic; every range must carry the stream's current epoch and start
    /// where the stream's committed data ends.
    async fn commit_objects(&self, objects: Vec<NewObject>) -> Result<(), MetadataError>;

    /// Compaction: replaces objects by others holding the same data. Atomic; refused with
    /// [`MetadataError::ReplacedObjectsChanged`] unless the new objects' ranges are exactly the live
    /// slices (ending above their stream's log start) of the replaced objects (see [`check_replace`]).
    /// The replaced objects stay until garbage collection deletes them.
    async fn replace_objects(
        &self,
        removed: Vec<ObjectId>,
        added: Vec<NewObject>,
    ) -> Result<(), MetadataError>;

    /// Up to `limit` slices of `stream`, in offset order, starting with the one holding `from`.
    async fn find_objects(
        &self,
        stream: StreamId,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<ObjectSlice>, MetadataError>;

    /// The streams with live slices (ending above their log start) in each of `objects`; objects
    /// no stream references map to nothing. Compaction rewrites only objects all of whose streams
    /// it serves.
    async fn object_streams(
        &self,
        objects: &[ObjectId],
    ) -> Result<BTreeMap<ObjectId, BTreeSet<StreamId>>, MetadataError>;
}

/// [`StreamMetadata::object_streams`] over `(stream, log start, slices)` of every stream.
pub fn streams_of_objects<'a>(
    objects: &[ObjectId],
    streams: impl IntoIterator<Item = (StreamId, Offset, &'a [ObjectSlice])>,
) -> BTreeMap<ObjectId, BTreeSet<StreamId>> {
    let wanted: BTreeSet<ObjectId> = objects.iter().copied().collect();
    let mut out: BTreeMap<ObjectId, BTreeSet<StreamId>> =
        wanted.iter().map(|id| (*id, BTreeSet::new())).collect();
    for (stream, start, slices) in streams {
        for slice in slices {
            if slice.end > start && wanted.contains(&slice.object.id) {
                out.entry(slice.object.id).or_default().insert(stream);
            }
        }
    }
    out
}

/// The rule every [`StreamMetadata`] implementation applies to `commit_objects`: each range carries
/// its stream's current epoch and continues the stream's committed data (ranges of one stream in
/// one commit follow each other). `describe` looks a stream up.
pub fn check_commit(
    objects: &[NewObject],
    describe: impl Fn(StreamId) -> Option<StreamDescriptor>,
) -> Result<(), MetadataError> {
    let mut ends: HashMap<StreamId, Offset> = HashMap::new();
    for range in objects.iter().flat_map(|o| &o.ranges) {
        let d = describe(range.stream_id).ok_or(MetadataError::UnknownStream(range.stream_id))?;
        if range.epoch != d.epoch {
            return Err(MetadataError::Fenced {
                stream: d.id,
                epoch: range.epoch,
                current: d.epoch,
            });
        }
        let expected = ends.get(&d.id).copied().unwrap_or(d.end_offset);
        if range.start != expected || range.end < range.start {
            return Err(MetadataError::NotContiguous {
                stream: d.id,
                expected,
                found: range.start,
            });
        }
        ends.insert(d.id, range.end);
    }
    Ok(())
}

/// The rule every [`StreamMetadata`] implementation applies to `replace_objects`: the live slices of
/// the removed objects (`live_slices` gives `(stream, start, end)` of each slice ending above its
/// stream's log start) cover exactly the offsets of the added ranges that end above their stream's
/// log start (`start_of`; ranges trimmed away meanwhile are ignored).
pub fn check_replace(
    removed: &[ObjectId],
    added: &[NewObject],
    live_slices: impl Fn(ObjectId) -> Option<Vec<(StreamId, Offset, Offset)>>,
    start_of: impl Fn(StreamId) -> Option<Offset>,
) -> Result<(), MetadataError> {
    let changed = |detail: String| Err(MetadataError::ReplacedObjectsChanged(detail));
    let mut old = Vec::new();
    for id in removed {
        match live_slices(*id) {
            Some(slices) => old.extend(slices),
            None => return changed(format!("{id} is no longer committed")),
        }
    }
    let mut new = Vec::new();
    for range in added.iter().flat_map(|o| &o.ranges) {
        let Some(start) = start_of(range.stream_id) else {
            return changed(format!("{} no longer exists", range.stream_id));
        };
        if range.end > start {
            new.push((range.stream_id, range.start, range.end));
        }
    }
    // Compared as offsets covered: adjacent slices of a stream merge into one new range.
    let (old, new) = (coverage(old), coverage(new));
    if old != new {
        return changed(format!("live slices cover {old:?}, new ranges {new:?}"));
    }
    Ok(())
}

/// Sorted ranges with adjacent ones of the same stream merged.
fn coverage(mut ranges: Vec<(StreamId, Offset, Offset)>) -> Vec<(StreamId, Offset, Offset)> {
    ranges.sort();
    let mut merged: Vec<(StreamId, Offset, Offset)> = Vec::with_capacity(ranges.len());
    for (stream, start, end) in ranges {
        match merged.last_mut() {
            Some((s, _, e)) if *s == stream && *e == start => *e = end,
            _ => merged.push((stream, start, end)),
        }
    }
    merged
}

/// The rule of `close_stream` and `trim_stream`: only the current owner (the stream's epoch) may
/// close or trim it.
pub fn check_close(current: &StreamDescriptor, epoch: Epoch) -> Result<(), MetadataError> {
    if current.epoch == epoch {
        Ok(())
    } else {
        Err(MetadataError::Fenced {
            stream: current.id,
            epoch,
            current: current.epoch,
        })
    }
}

/// The answer to `find_objects` from a stream's slices in offset order: up to `limit` of them,
/// starting with the one holding `from`.
pub fn slices_from(slices: &[ObjectSlice], from: Offset, limit: usize) -> Vec<ObjectSlice> {
    let first = slices.partition_point(|slice| slice.end <= from);
    slices[first..].iter().take(limit).copied().collect()
}

/// [`StreamMetadata`] held in memory: for tests and single-process use. Share one instance (in an
/// `Arc`) across storage restarts to model a controller that outlives a broker.
#[derive(Debug, Default)]
pub struct MemoryMetadata {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    next_stream: u64,
    next_object: u64,
    streams: BTreeMap<StreamId, MemoryStream>,
    objects: HashMap<ObjectId, ObjectDescriptor>,
}

#[derive(Debug)]
struct MemoryStream {
    descriptor: StreamDescriptor,
    slices: Vec<ObjectSlice>,
}

impl MemoryMetadata {
    /// An empty metadata store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Every committed object; for tests.
    pub fn objects(&self) -> Vec<ObjectDescriptor> {
        self.with(|s| {
            let mut all: Vec<_> = s.objects.values().copied().collect();
            all.sort_by_key(|o| o.id);
            all
        })
    }
}

impl MemoryState {
    fn stream(&mut self, id: StreamId) -> Result<&mut MemoryStream, MetadataError> {
        self.streams
            .get_mut(&id)
            .ok_or(MetadataError::UnknownStream(id))
    }
}

#[async_trait]
impl StreamMetadata for MemoryMetadata {
    async fn create_stream(&self) -> Result<StreamId, MetadataError> {
        Ok(self.with(|s| {
            let id = StreamId(s.next_stream);
            s.next_stream += 1;
            s.streams.insert(
                id,
                MemoryStream {
                    descriptor: StreamDescriptor {
                        id,
                        epoch: Epoch(0),
                        start_offset: Offset(0),
                        end_offset: Offset(0),
                    },
                    slices: Vec::new(),
                },
            );
            id
        }))
    }

    async fn open_stream(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError> {
        self.with(|s| {
            let d = &mut s.stream(stream)?.descriptor;
            d.epoch = d.epoch.next();
            Ok(*d)
        })
    }

    async fn close_stream(&self, stream: StreamId, epoch: Epoch) -> Result<(), MetadataError> {
        self.with(|s| check_close(&s.stream(stream)?.descriptor, epoch))
    }

    async fn trim_stream(
        &self,
        stream: StreamId,
        epoch: Epoch,
        start: Offset,
    ) -> Result<(), MetadataError> {
        self.with(|s| {
            let d = &mut s.stream(stream)?.descriptor;
            check_close(d, epoch)?;
            d.start_offset = d.start_offset.max(start);
            Ok(())
        })
    }

    async fn describe_stream(&self, stream: StreamId) -> Result<StreamDescriptor, MetadataError> {
        self.with(|s| Ok(s.stream(stream)?.descriptor))
    }

    async fn allocate_object_ids(&self, count: u32) -> Result<ObjectId, MetadataError> {
        Ok(self.with(|s| {
            let first = ObjectId(s.next_object);
            s.next_object += u64::from(count);
            first
        }))
    }

    async fn commit_objects(&self, objects: Vec<NewObject>) -> Result<(), MetadataError> {
        self.with(|s| {
            check_commit(&objects, |id| s.streams.get(&id).map(|st| st.descriptor))?;
            for new in objects {
                s.objects.insert(new.object.id, new.object);
                for range in new.ranges {
                    let stream = s.stream(range.stream_id)?;
                    stream.slices.push(ObjectSlice {
                        object: new.object,
                        start: range.start,
                        end: range.end,
                        bytes: range.bytes,
                        committed_at_ms: 0,
                    });
                    stream.descriptor.end_offset = range.end;
                }
            }
            Ok(())
        })
    }

    async fn replace_objects(
        &self,
        removed: Vec<ObjectId>,
        added: Vec<NewObject>,
    ) -> Result<(), MetadataError> {
        self.with(|s| {
            let live = |id: ObjectId| {
                s.objects.get(&id)?;
                Some(
                    s.streams
                        .values()
                        .flat_map(|st| {
                            let start = st.descriptor.start_offset;
                            st.slices
                                .iter()
                                .filter(move |sl| sl.object.id == id && sl.end > start)
                                .map(move |sl| (st.descriptor.id, sl.start, sl.end))
                        })
                        .collect(),
                )
            };
            let start_of = |id| s.streams.get(&id).map(|st| st.descriptor.start_offset);
            check_replace(&removed, &added, live, start_of)?;
            for stream in s.streams.values_mut() {
                stream.slices.retain(|sl| !removed.contains(&sl.object.id));
            }
            for id in &removed {
                s.objects.remove(id);
            }
            for new in added {
                s.objects.insert(new.object.id, new.object);
                for range in new.ranges {
                    let stream = s.stream(range.stream_id)?;
                    let slice = ObjectSlice {
                        object: new.object,
                        start: range.start,
                        end: range.end,
                        bytes: range.bytes,
                        committed_at_ms: 0,
                    };
                    let at = stream.slices.partition_point(|sl| sl.start < slice.start);
                    stream.slices.insert(at, slice);
                }
            }
            Ok(())
        })
    }

    async fn find_objects(
        &self,
        stream: StreamId,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<ObjectSlice>, MetadataError> {
        self.with(|s| Ok(slices_from(&s.stream(stream)?.slices, from, limit)))
    }

    async fn object_streams(
        &self,
        objects: &[ObjectId],
    ) -> Result<BTreeMap<ObjectId, BTreeSet<StreamId>>, MetadataError> {
        self.with(|s| {
            Ok(streams_of_objects(
                objects,
                s.streams
                    .iter()
                    .map(|(id, st)| (*id, st.descriptor.start_offset, st.slices.as_slice())),
            ))
        })
    }
}
