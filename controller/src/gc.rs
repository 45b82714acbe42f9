//! Garbage collection of data objects (DESIGN.md 5): objects no stream needs any more, and objects
//! uploaded but never committed.
//!
//! - **Unreferenced objects.** Retention and DeleteRecords move a stream's log start; slices wholly
//!   below it are dropped from the state, and an object that no slice references is garbage. After a
//!   grace period (a reader may have resolved a slice just before the trim and still be reading it,
//!   as Kafka's `file.delete.delay.ms`), an `ObjectsDeleted` record drops it from the metadata, then its
//!   key is deleted.
//! - **Uncommitted objects.** An upload that failed between its PUT and its commit (a crash, a lost
//!   answer) leaves an object no record names. Each pass commits an `ObjectIdFence` at the object id
//!   that had been handed out at the *previous* pass: ids below it can no longer be committed (the
//!   commit is refused and the uploader uploads again with new ids), so a key below the fence that the
//!   metadata does not name is garbage for good, and is deleted. An upload thus has at least one pass
//!   interval between taking its ids and committing.
//!
//! Deleting keys happens after the records are committed: a crash in between leaves keys the next
//! pass deletes (they are below the fence and not named).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use weir_common::ObjectId;
use weir_storage::parse_object_key;

use crate::records::{Kind, ObjectIdFence, ObjectsDeleted};
use crate::{Controller, ControllerError};

/// What garbage collection remembers between passes (in memory: after a restart the grace periods
/// start over, which only delays deletion).
#[derive(Debug, Default)]
pub(crate) struct GcMemory {
    /// When each unreferenced object was first seen unreferenced, in ms.
    unreferenced_since: HashMap<ObjectId, u64>,
    /// The handed-out object id mark of the previous pass: this pass's fence.
    mark: Option<u64>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Objects dropped from the metadata (unreferenced past the grace period).
    pub dropped: usize,
    /// Keys deleted of the objects dropped by this pass.
    pub deleted_dropped: usize,
    /// Keys deleted below the fence that no record names: never committed, or dropped by an earlier
    /// pass whose deletion did not finish.
    pub deleted_unnamed: usize,
    /// Bytes of the deleted keys.
    pub deleted_bytes: u64,
    /// The object id fence after the pass.
    pub fence: u64,
}

impl Controller {
    /// One garbage collection pass; objects must have been unreferenced for `grace_ms` to go.
    pub async fn collect_garbage(&self, grace_ms: u64) -> Result<GcReport, ControllerError> {
        let now = self.config.clock.now_ms();
        let mut report = GcReport::default();
        let (store, dropped) = {
            let mut writer = self.writer().await;
            let unreferenced = self.read(|s| s.unreferenced_objects());
            let still: HashSet<ObjectId> = unreferenced.iter().map(|o| o.id).collect();
            let gc = &mut writer.gc;
            gc.unreferenced_since.retain(|id, _| still.contains(id));
            let due: Vec<u64> = unreferenced
                .iter()
                .filter(|o| {
                    let since = *gc.unreferenced_since.entry(o.id).or_insert(now);
                    now.saturating_sub(since) >= grace_ms
                })
                .map(|o| o.id.get())
                .collect();
            let mut records = Vec::new();
            if !due.is_empty() {
                records.push(Kind::ObjectsDeleted(ObjectsDeleted { ids: due.clone() }).into());
            }
            let fence = self.read(|s| s.object_fence);
            if let Some(mark) = gc.mark.filter(|mark| *mark > fence) {
                records.push(Kind::ObjectIdFence(ObjectIdFence { below: mark }).into());
            }
            if !records.is_empty() {
                self.commit(&mut writer, records).await?;
            }
            for id in &due {
                writer.gc.unreferenced_since.remove(&ObjectId(*id));
            }
            writer.gc.mark = Some(writer.next_object_id);
            report.dropped = due.len();
            let dropped: HashSet<ObjectId> = due.into_iter().map(ObjectId).collect();
            (writer.log.store(), dropped)
        };
        // Outside the writer: listing a big bucket takes a while. Ids at or above the fence may be
        // committed meanwhile and are left alone; below it, the metadata's set cannot grow.
        let (named, fence) = self.read(|s| {
            (
                s.objects.keys().copied().collect::<HashSet<_>>(),
                s.object_fence,
            )
        });
        report.fence = fence;
        let mut listing = store.list(Some(&"data".into()));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| ControllerError::store("list", "data/", e))?;
            let Some(id) = parse_object_key(&meta.location) else {
                continue;
            };
            let garbage = !named.contains(&id) && (id.get() < fence || dropped.contains(&id));
            if !garbage {
                continue;
            }
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ControllerError::store("delete", meta.location.as_ref(), e)),
            }
            report.deleted_bytes += meta.size;
            if dropped.contains(&id) {
                report.deleted_dropped += 1;
            } else {
                report.deleted_unnamed += 1;
            }
        }
        Ok(report)
    }
}
