//! Idempotent producers (KIP-98): producer ids handed out in blocks by the controller, and per
//! partition the state of each producer that wrote to it: its epoch and its last five batches'
//! sequence ranges and offsets.
//!
//! A batch with a producer id is checked before it gets offsets, under the partition's producer
//! lock (so checks and appends happen in one order):
//! - an older epoch than the producer's: INVALID_PRODUCER_EPOCH;
//! - the sequence range of one of the last five batches: a duplicate (a retry whose answer was
//!   lost). It is not written again; the answer is the original's base offset, once durable;
//! - a newer epoch: must start at sequence 0;
//! - otherwise the next sequence after the last batch, else OUT_OF_ORDER_SEQUENCE_NUMBER.
//!
//! The state is not kept only in memory: a partition's state is rebuilt from the tail of its
//! stream (the batch headers of the last `producer_state_window` offsets) the first time an
//! idempotent producer writes to it after it opened here: after a restart, a move or a failover.
//! A producer not seen in that window is new to the partition: its batch is taken as it comes
//! (Kafka, too, cannot check a producer whose state expired).
//!
//! Transactions (KIP-98) add, per partition, the open transactions (producer id → offset of its
//! first batch in the transaction), which hold back the last stable offset, and the aborted
//! transactions (producer, first offset, marker offset) that read_committed fetches report. Open
//! transactions are rebuilt from the same tail; aborted ones also from the partition's index in the
//! object store (`crate::txn::index`), since an abort may be older than any window.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use kafka_protocol::error::ResponseError;
use weir_common::{Epoch, Offset, StreamId};
use weir_storage::Stream;

use crate::batch;

/// Batches remembered per producer and partition (Kafka's 5: a producer has at most five requests
/// in flight per partition).
const REMEMBERED: usize = 5;
/// Producer ids a broker takes from the controller at once.
const BLOCK: u32 = 1000;

/// One producer batch: its sequences and where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
    last_offset: i64,
}

/// One producer's state in one partition.
#[derive(Debug, Clone, Default)]
struct Producer {
    epoch: i16,
    batches: VecDeque<Written>,
    last_timestamp: i64,
}

/// A producer as DescribeProducers shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// The first offset of its open transaction here, if any.
    pub transaction_start: Option<i64>,
}

/// An aborted transaction in one partition: whose, its first offset, its abort marker's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Aborted {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What read_committed readers need of a partition's transactions: the first offset of the oldest
/// open one and the aborted ones. Kept beside the producer state under a short lock of its own, so
/// fetches never wait for the producer lock (which a produce holds while its append waits for
/// room).
#[derive(Debug, Default)]
pub struct TxnView {
    /// The stream epoch the state was loaded for (`None`: not loaded).
    loaded_for: Option<Epoch>,
    /// The first offset of the oldest open transaction, if any.
    first_open: Option<i64>,
    /// Aborted transactions by marker offset.
    aborted: BTreeMap<i64, Aborted>,
    /// Whether a checkpoint of open transactions is kept in the index.
    checkpointed: bool,
}

impl TxnView {
    /// Whether it describes this opening of the stream.
    pub fn is_loaded_for(&self, epoch: Epoch) -> bool {
        self.loaded_for == Some(epoch)
    }

    /// The last stable offset: the first offset of the oldest open transaction, at most `high`.
    pub fn last_stable(&self, high: i64) -> i64 {
        self.first_open.map_or(high, |f| f.min(high))
    }

    /// The aborted transactions a fetch of `[from, to]` must report: those whose records may lie
    /// in it (marker at or after `from`, first offset at or before `to`).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<Aborted> {
        self.aborted
            .range(from..)
            .map(|(_, a)| *a)
            .filter(|a| a.first_offset <= to)
            .collect()
    }
}

/// A partition's transactions as readers see them.
pub type SharedView = Arc<std::sync::RwLock<TxnView>>;

/// The producers of one partition, valid for one opening of its stream.
#[derive(Debug, Default)]
pub struct PartitionProducers {
    /// The stream epoch the state was loaded for (`None`: not loaded).
    loaded_for: Option<Epoch>,
    producers: HashMap<i64, Producer>,
    /// Open transactions: producer id → the offset of its transaction's first batch.
    open: HashMap<i64, i64>,
    /// The readers' view, updated with every change of the transactions.
    view: SharedView,
    /// The offset of the checkpoint of open transactions kept in the index, and when it was
    /// written (`crate::txn::index`).
    checkpoint: Option<(i64, std::time::Instant)>,
}

/// The producer fields of one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIds {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Records in the batch.
    pub count: i32,
    /// The batch's `maxTimestamp`.
    pub max_timestamp: i64,
    /// Part of a transaction.
    pub transactional: bool,
}

impl BatchIds {
    fn last_seq(&self) -> i32 {
        // Sequences wrap at i32::MAX.
        let last = i64::from(self.base_sequence) + i64::from(self.count) - 1;
        i32::try_from(last % (i64::from(i32::MAX) + 1)).unwrap_or(0)
    }
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Append,
    /// Written before: answer with this base offset once `last_offset` is durable.
    Duplicate { base_offset: i64, last_offset: i64 },
    /// Refuse it with this error.
    Refuse(ResponseError),
}

impl PartitionProducers {
    /// Whether the state was loaded for this opening of the stream.
    pub fn is_loaded_for(&self, epoch: Epoch) -> bool {
        self.loaded_for == Some(epoch)
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, TxnView> {
        self.view.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, TxnView> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the open transactions' first offset and the loaded epoch to readers.
    fn publish(&self) {
        let mut view = self.view_mut();
        view.first_open = self.open.values().copied().min();
        view.loaded_for = self.loaded_for;
        view.checkpointed = self.checkpoint.is_some();
    }

    /// Rebuilds the state from the stream's last `window` offsets and what the partition's index
    /// holds: its aborted transactions and, if one is kept, a checkpoint of open transactions (the
    /// stream is then read from the checkpoint on, if that is earlier). Returns the aborted
    /// transactions the tail holds, so the caller can index those missing (an abort whose index
    /// write a crash cut short).
    pub async fn load(
        &mut self,
        stream: &Stream,
        window: u64,
        indexed: crate::txn::index::Listed,
    ) -> Result<Vec<Aborted>, weir_storage::StorageError> {
        self.loaded_for = None;
        self.producers.clear();
        self.open.clear();
        {
            let mut view = self.view_mut();
            view.loaded_for = None;
            view.aborted = indexed
                .aborted
                .into_iter()
                .map(|a| (a.last_offset, a))
                .collect();
        }
        let mut found = Vec::new();
        let end = stream.high_watermark().get();
        let log_start = stream.start_offset().get();
        let mut start = log_start.max(end.saturating_sub(window));
        let mut checkpoint = indexed
            .open
            .filter(|c| u64::try_from(c.at).is_ok_and(|at| at >= log_start && at <= end));
        self.checkpoint = checkpoint
            .as_ref()
            .map(|c| (c.at, std::time::Instant::now()));
        if let Some(at) = checkpoint.as_ref().and_then(|c| u64::try_from(c.at).ok()) {
            start = start.min(at);
        }
        let mut next = Offset(start);
        while next.get() < end {
            let stored = match stream.read(next, 4 << 20).await {
                Ok(b) => b,
                // Trimmed meanwhile: start again from the new log start.
                Err(weir_storage::StorageError::OffsetOutOfRange { start, .. }) if start > next => {
                    next = start;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(last) = stored.last() else { break };
            next = last.end_offset();
            for b in &stored {
                for batch in batch::producer_batches(&b.payload) {
                    let offset = match batch {
                        batch::ProducerBatch::Data { base_offset, .. } => base_offset,
                        batch::ProducerBatch::Marker { offset, .. } => offset,
                    };
                    if let Some(c) = checkpoint.take_if(|c| offset >= c.at) {
                        self.seed(&c);
                    }
                    match batch {
                        batch::ProducerBatch::Data { ids, base_offset } => {
                            self.record(ids, base_offset);
                        }
                        batch::ProducerBatch::Marker {
                            producer_id,
                            producer_epoch,
                            commit,
                            offset,
                        } => found.extend(self.end_transaction(
                            producer_id,
                            producer_epoch,
                            commit,
                            offset,
                        )),
                    }
                }
            }
        }
        if let Some(c) = checkpoint {
            self.seed(&c);
        }
        let start = i64::try_from(stream.start_offset().get()).unwrap_or(0);
        self.view_mut().aborted.retain(|last, _| *last >= start);
        self.loaded_for = Some(stream.epoch());
        self.publish();
        Ok(found)
    }

    /// The transactions a checkpoint found open, as the stream reaches the checkpoint's offset.
    fn seed(&mut self, checkpoint: &crate::txn::index::OpenCheckpoint) {
        for (producer_id, first) in &checkpoint.open {
            self.open.entry(*producer_id).or_insert(*first);
        }
        self.publish();
    }

    /// Ends the producer's open transaction with the marker at `offset`; returns the aborted
    /// transaction to index, if it aborted one that wrote here.
    pub fn end_transaction(
        &mut self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        offset: i64,
    ) -> Option<Aborted> {
        let p = self.producers.entry(producer_id).or_default();
        if epoch > p.epoch {
            // A marker written at a bumped epoch (a timed-out or fenced transaction): the producer
            // starts again at sequence 0.
            p.epoch = epoch;
            p.batches.clear();
        }
        let first = self.open.remove(&producer_id)?;
        let aborted = (!commit).then_some(Aborted {
            producer_id,
            first_offset: first,
            last_offset: offset,
        });
        if let Some(a) = aborted {
            self.view_mut().aborted.insert(offset, a);
        }
        self.publish();
        aborted
    }

    /// Forgets the aborted transactions whose markers lie below `start` (trimmed away); whether
    /// there were any.
    pub fn forget_aborted_below(&mut self, start: i64) -> bool {
        let mut view = self.view_mut();
        let before = view.aborted.len();
        view.aborted.retain(|last, _| *last >= start);
        view.aborted.len() != before
    }

    /// The last stable offset: the first offset of the oldest open transaction, at most `high`.
    pub fn last_stable(&self, high: i64) -> i64 {
        self.view().last_stable(high)
    }

    /// The producer's epoch here, if it wrote here (in the window read back).
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|p| p.epoch)
    }

    /// Records the start of a producer's transaction at `offset` (a batch the broker wrote for
    /// it, such as TxnOffsetCommit's offsets), unless one is open.
    pub fn begin_transaction(&mut self, producer_id: i64, epoch: i16, offset: i64) {
        let p = self.producers.entry(producer_id).or_default();
        if epoch > p.epoch {
            p.epoch = epoch;
            p.batches.clear();
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.open.entry(producer_id) {
            e.insert(offset);
            self.publish();
        }
    }

    /// The first offset of the producer's open transaction here, if any.
    pub fn open_transaction(&self, producer_id: i64) -> Option<i64> {
        self.open.get(&producer_id).copied()
    }

    /// The aborted transactions a fetch of `[from, to]` must report (see [`TxnView`]).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<Aborted> {
        self.view().aborted_between(from, to)
    }

    /// Forgets everything (an append failed: what was recorded may not be in the stream).
    pub fn invalidate(&mut self) {
        self.loaded_for = None;
        self.producers.clear();
        self.open.clear();
        self.view_mut().aborted.clear();
        self.publish();
    }

    /// Decides about one batch, without recording it.
    pub fn check(&self, ids: &BatchIds) -> Verdict {
        let Some(p) = self.producers.get(&ids.producer_id) else {
            return Verdict::Append; // new here (or expired from the window)
        };
        if ids.producer_epoch < p.epoch {
            return Verdict::Refuse(ResponseError::InvalidProducerEpoch);
        }
        if ids.producer_epoch > p.epoch {
            return if ids.base_sequence == 0 {
                Verdict::Append
            } else {
                Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
            };
        }
        if let Some(w) = p
            .batches
            .iter()
            .find(|w| w.first_seq == ids.base_sequence && w.last_seq == ids.last_seq())
        {
            return Verdict::Duplicate {
                base_offset: w.base_offset,
                last_offset: w.last_offset,
            };
        }
        let expected = p.batches.back().map_or(0, |w| next_seq(w.last_seq));
        if ids.base_sequence == expected {
            Verdict::Append
        } else {
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
        }
    }

    /// Records a batch that was written at `base_offset`.
    pub fn record(&mut self, ids: BatchIds, base_offset: i64) {
        let p = self.producers.entry(ids.producer_id).or_default();
        if ids.producer_epoch != p.epoch {
            p.epoch = ids.producer_epoch;
            p.batches.clear();
        }
        p.batches.push_back(Written {
            first_seq: ids.base_sequence,
            last_seq: ids.last_seq(),
            base_offset,
            last_offset: base_offset + i64::from(ids.count) - 1,
        });
        if p.batches.len() > REMEMBERED {
            p.batches.pop_front();
        }
        p.last_timestamp = p.last_timestamp.max(ids.max_timestamp);
        if ids.transactional && !self.open.contains_key(&ids.producer_id) {
            self.open.insert(ids.producer_id, base_offset);
            self.publish();
        }
    }

    /// The producers known here (DescribeProducers), by id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut all: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(id, p)| ActiveProducer {
                producer_id: *id,
                epoch: p.epoch,
                last_sequence: p.batches.back().map_or(-1, |w| w.last_seq),
                last_timestamp: p.last_timestamp,
                transaction_start: self.open.get(id).copied(),
            })
            .collect();
        all.sort_by_key(|p| p.producer_id);
        all
    }
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// A partition's producer state and its readers' view of it.
type PartitionEntry = (Arc<tokio::sync::Mutex<PartitionProducers>>, SharedView);

/// The node's producer ids and every partition's producer state.
#[derive(Debug, Default)]
pub struct Producers {
    /// The current block of ids: next and end.
    block: tokio::sync::Mutex<(u64, u64)>,
    partitions: Mutex<HashMap<StreamId, PartitionEntry>>,
}

impl Producers {
    /// A new producer id (a new block from the controller when this one is used up).
    pub async fn next_id(
        &self,
        metadata: &crate::metadata::Metadata,
    ) -> Result<i64, weir_controller::ControllerError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let first = metadata.allocate_producer_ids(BLOCK).await?;
            *block = (first, first + u64::from(BLOCK));
        }
        let id = block.0;
        block.0 += 1;
        Ok(i64::try_from(id).unwrap_or(i64::MAX))
    }

    /// The producer state of a partition (locked by the caller around check and append).
    pub fn partition(&self, stream: StreamId) -> Arc<tokio::sync::Mutex<PartitionProducers>> {
        self.entry(stream).0
    }

    /// The readers' view of a partition's transactions.
    pub fn view(&self, stream: StreamId) -> SharedView {
        self.entry(stream).1
    }

    /// The readers' view of a partition's transactions, if it has producer state here (a lookup
    /// that creates nothing, for read_uncommitted fetches).
    pub fn existing_view(&self, stream: StreamId) -> Option<SharedView> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stream)
            .map(|(_, view)| view.clone())
    }

    /// Every partition with producer state here.
    fn all(&self) -> Vec<(StreamId, PartitionEntry)> {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, e)| (*id, e.clone()))
            .collect()
    }

    fn entry(&self, stream: StreamId) -> PartitionEntry {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(stream)
            .or_insert_with(|| {
                let view = SharedView::default();
                let state = PartitionProducers {
                    view: view.clone(),
                    ..PartitionProducers::default()
                };
                (Arc::new(tokio::sync::Mutex::new(state)), view)
            })
            .clone()
    }
}

/// The producer and transaction state of a partition open here, loaded for its current opening
/// (from the stream's tail and the aborted-transaction index), locked.
pub async fn locked(
    node: &crate::node::Node,
    partition: &crate::node::Partition,
) -> Result<tokio::sync::OwnedMutexGuard<PartitionProducers>, weir_storage::StorageError> {
    let stream = &partition.stream;
    let mut state = node.producers.partition(stream.id()).lock_owned().await;
    if state.is_loaded_for(stream.epoch()) {
        return Ok(state);
    }
    let store = node.storage.object_store();
    let store_error = |op: &'static str| {
        let key = format!("txn-index/{}", stream.id().get());
        move |e: object_store::Error| weir_storage::StorageError::ObjectStore {
            op,
            key,
            source: Arc::new(e),
        }
    };
    let listed = crate::txn::index::list(&store, stream.id())
        .await
        .map_err(store_error("list"))?;
    let known: std::collections::HashSet<i64> =
        listed.aborted.iter().map(|a| a.last_offset).collect();
    let found = state
        .load(stream, node.config.producer_state_window, listed)
        .await?;
    for aborted in found.iter().filter(|a| !known.contains(&a.last_offset)) {
        // An abort whose entry a crash cut short.
        if let Err(e) = crate::txn::index::put(&store, stream.id(), aborted).await {
            state.invalidate();
            return Err(store_error("put")(e));
        }
    }
    Ok(state)
}

/// How often a checkpoint of open transactions at risk is refreshed.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps the checkpoints of open transactions (`crate::txn::index`): for each partition open here
/// whose oldest open transaction started more than half a `producer_state_window` back (so a
/// reload of the tail would soon miss it), a checkpoint every few seconds; once none is at risk,
/// none. Called every second.
pub async fn keep_checkpoints(node: &crate::node::Node) {
    let window = i64::try_from(node.config.producer_state_window).unwrap_or(i64::MAX);
    for (id, (state, view)) in node.producers.all() {
        let Some(stream) = node.storage.stream(id) else {
            continue;
        };
        let high = i64::try_from(stream.high_watermark().get()).unwrap_or(i64::MAX);
        let (at_risk, checkpointed) = {
            let view = view.read().unwrap_or_else(PoisonError::into_inner);
            if !view.is_loaded_for(stream.epoch()) {
                continue;
            }
            let first = view.first_open;
            let at_risk = first.is_some_and(|first| first < high.saturating_sub(window / 2));
            (at_risk, view.checkpointed)
        };
        let store = node.storage.object_store();
        if !at_risk {
            if checkpointed {
                // This loop alone writes and deletes checkpoints: no lock needed around the store.
                match crate::txn::index::delete_open(&store, id, None).await {
                    Ok(()) => {
                        let mut state = state.lock().await;
                        state.checkpoint = None;
                        state.publish();
                    }
                    Err(e) => {
                        tracing::warn!(stream = %id, error = %e, "open-transaction checkpoint not deleted")
                    }
                }
            }
            continue;
        }
        // What is open as of everything queued so far; written once all of that is durable
        // (so the checkpoint never describes offsets a crash could still lose).
        let checkpoint = {
            let state = state.lock().await;
            if state
                .checkpoint
                .is_some_and(|(_, when)| when.elapsed() < CHECKPOINT_EVERY)
            {
                continue;
            }
            let at = i64::try_from(stream.next_offset().get()).unwrap_or(i64::MAX);
            let mut open: Vec<(i64, i64)> = state.open.iter().map(|(p, f)| (*p, *f)).collect();
            open.sort_unstable();
            crate::txn::index::OpenCheckpoint { at, open }
        };
        let mut watermark = stream.subscribe();
        let durable = tokio::time::timeout(CHECKPOINT_EVERY, async {
            while i64::try_from(watermark.borrow_and_update().get()).unwrap_or(0) < checkpoint.at {
                if watermark.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        if durable != Ok(true) {
            continue;
        }
        match crate::txn::index::put_open(&store, id, &checkpoint).await {
            Ok(()) => {
                tracing::debug!(stream = %id, at = checkpoint.at, open = checkpoint.open.len(), "open transactions checkpointed");
                let mut state = state.lock().await;
                state.checkpoint = Some((checkpoint.at, std::time::Instant::now()));
                state.publish();
            }
            Err(e) => {
                tracing::warn!(stream = %id, error = %e, "open transactions not checkpointed")
            }
        }
    }
}

/// The readers' view of a partition's transactions, loaded for its current opening (only the
/// first read after the partition opened here takes the producer lock, to load the state).
pub async fn view(
    node: &crate::node::Node,
    partition: &crate::node::Partition,
) -> Result<SharedView, weir_storage::StorageError> {
    let view = node.producers.view(partition.stream.id());
    let loaded = view
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .is_loaded_for(partition.stream.epoch());
    if !loaded {
        drop(locked(node, partition).await?);
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchIds {
        BatchIds {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            count,
            max_timestamp: 0,
            transactional: false,
        }
    }

    #[test]
    fn sequences_follow_duplicates_repeat_gaps_and_old_epochs_are_refused() {
        let mut p = PartitionProducers::default();
        assert_eq!(p.check(&ids(7, 0, 0, 3)), Verdict::Append);
        p.record(ids(7, 0, 0, 3), 100);
        assert_eq!(p.check(&ids(7, 0, 3, 2)), Verdict::Append);
        p.record(ids(7, 0, 3, 2), 103);
        assert_eq!(
            p.check(&ids(7, 0, 0, 3)),
            Verdict::Duplicate {
                base_offset: 100,
                last_offset: 102
            }
        );
        assert_eq!(
            p.check(&ids(7, 0, 6, 1)),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(p.check(&ids(7, 1, 0, 1)), Verdict::Append, "a new epoch");
        p.record(ids(7, 1, 0, 1), 105);
        assert_eq!(
            p.check(&ids(7, 0, 5, 1)),
            Verdict::Refuse(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            p.check(&ids(7, 2, 4, 1)),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber),
            "a new epoch starts at 0"
        );
        assert_eq!(p.check(&ids(8, 0, 42, 1)), Verdict::Append, "unknown here");
    }

    #[test]
    fn open_transactions_hold_the_last_stable_offset_and_aborts_are_indexed() {
        let mut p = PartitionProducers::default();
        let txn = |pid, seq, count| BatchIds {
            transactional: true,
            ..ids(pid, 0, seq, count)
        };
        p.record(ids(1, 0, 0, 5), 0); // idempotent, not transactional
        assert_eq!(p.last_stable(5), 5);
        p.record(txn(2, 0, 3), 5);
        p.record(txn(3, 0, 2), 8);
        p.record(txn(2, 3, 1), 10);
        assert_eq!(
            p.last_stable(11),
            5,
            "the oldest open transaction's first offset"
        );
        assert_eq!(p.open_transaction(2), Some(5));
        assert_eq!(
            p.end_transaction(2, 0, true, 11),
            None,
            "a commit is not indexed"
        );
        assert_eq!(p.last_stable(12), 8);
        let aborted = p.end_transaction(3, 0, false, 12);
        assert_eq!(
            aborted,
            Some(Aborted {
                producer_id: 3,
                first_offset: 8,
                last_offset: 12
            })
        );
        assert_eq!(p.last_stable(13), 13);
        assert_eq!(p.aborted_between(0, 7), vec![], "before its first offset");
        assert_eq!(p.aborted_between(9, 9).len(), 1);
        assert_eq!(p.aborted_between(13, 20), vec![], "after its marker");
        assert_eq!(
            p.end_transaction(3, 0, false, 13),
            None,
            "a repeated marker"
        );
        // A marker at a bumped epoch (the coordinator fenced the producer): sequences restart.
        p.record(txn(4, 0, 1), 14);
        p.end_transaction(4, 1, false, 15);
        assert_eq!(p.check(&ids(4, 1, 0, 1)), Verdict::Append);
        assert_eq!(
            p.check(&ids(4, 0, 1, 1)),
            Verdict::Refuse(ResponseError::InvalidProducerEpoch)
        );
        assert!(p.forget_aborted_below(16));
        assert_eq!(p.aborted_between(0, 20), vec![]);
    }

    #[test]
    fn markers_are_read_back_from_their_control_batches() {
        let mut payload = bytes::BytesMut::new();
        payload.extend_from_slice(&crate::txn::markers::control_batch(9, 2, true, 5));
        payload.extend_from_slice(&crate::txn::markers::control_batch(9, 3, false, 5));
        let stored = crate::batch::assign_offsets(&payload, 40, 1);
        assert_eq!(
            crate::batch::producer_batches(&stored),
            vec![
                crate::batch::ProducerBatch::Marker {
                    producer_id: 9,
                    producer_epoch: 2,
                    commit: true,
                    offset: 40
                },
                crate::batch::ProducerBatch::Marker {
                    producer_id: 9,
                    producer_epoch: 3,
                    commit: false,
                    offset: 41
                },
            ]
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut p = PartitionProducers::default();
        for i in 0..7 {
            p.record(ids(1, 0, i, 1), i64::from(i));
        }
        assert!(matches!(
            p.check(&ids(1, 0, 6, 1)),
            Verdict::Duplicate { .. }
        ));
        assert!(matches!(
            p.check(&ids(1, 0, 2, 1)),
            Verdict::Duplicate { .. }
        ));
        assert_eq!(
            p.check(&ids(1, 0, 1, 1)),
            Verdict::Refuse(ResponseError::OutOfOrderSequenceNumber),
            "older than the last five"
        );
        let mut p = PartitionProducers::default();
        p.record(ids(2, 0, i32::MAX - 1, 2), 10);
        assert_eq!(p.check(&ids(2, 0, 0, 1)), Verdict::Append, "wrapped");
    }
}
