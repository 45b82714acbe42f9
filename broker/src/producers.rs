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

use std::collections::{HashMap, VecDeque};
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
}

/// The producers of one partition, valid for one opening of its stream.
#[derive(Debug, Default)]
pub struct PartitionProducers {
    /// The stream epoch the state was loaded for (`None`: not loaded).
    loaded_for: Option<Epoch>,
    producers: HashMap<i64, Producer>,
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

    /// Rebuilds the state from the stream's last `window` offsets.
    pub async fn load(
        &mut self,
        stream: &Stream,
        window: u64,
    ) -> Result<(), weir_storage::StorageError> {
        self.producers.clear();
        let end = stream.high_watermark().get();
        let start = stream.start_offset().get().max(end.saturating_sub(window));
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
                for header in batch::producer_headers(&b.payload) {
                    self.record(header.0, header.1);
                }
            }
        }
        self.loaded_for = Some(stream.epoch());
        Ok(())
    }

    /// Forgets everything (an append failed: what was recorded may not be in the stream).
    pub fn invalidate(&mut self) {
        self.loaded_for = None;
        self.producers.clear();
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
            })
            .collect();
        all.sort_by_key(|p| p.producer_id);
        all
    }
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// The node's producer ids and every partition's producer state.
#[derive(Debug, Default)]
pub struct Producers {
    /// The current block of ids: next and end.
    block: tokio::sync::Mutex<(u64, u64)>,
    partitions: Mutex<HashMap<StreamId, Arc<tokio::sync::Mutex<PartitionProducers>>>>,
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
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(stream)
            .or_default()
            .clone()
    }
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
