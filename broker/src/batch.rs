//! Kafka RecordBatch v2 validation and the two in-place rewrites the broker makes.
//!
//! The broker stores the bytes the producer sent (DESIGN.md section 3). It checks each batch's framing,
//! magic and CRC-32C, then rewrites only `baseOffset` and `partitionLeaderEpoch`, which lie outside
//! the CRC, so nothing is re-encoded or decompressed.
//!
//! ```text
//!  0 baseOffset i64 | 8 batchLength i32 | 12 partitionLeaderEpoch i32 | 16 magic i8 | 17 crc u32
//! 21 attributes i16 | 23 lastOffsetDelta i32 | 27 baseTimestamp i64 | 35 maxTimestamp i64
//! 43 producerId i64 | 51 producerEpoch i16 | 53 baseSequence i32 | 57 recordCount i32 | 61 records
//! ```

use bytes::{Bytes, BytesMut};

pub mod filter;

/// Bytes of a batch header, up to the records.
pub const HEADER_LEN: usize = 61;
/// `batchLength` counts the bytes after itself.
const LENGTH_END: usize = 12;

/// Why a produce payload was refused; each maps to one Kafka error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Framing, CRC or offset fields are wrong (CORRUPT_MESSAGE).
    #[error("corrupt record batch at byte {at}: {reason}")]
    Corrupt {
        /// Byte position of the batch in the payload.
        at: usize,
        /// What is wrong.
        reason: String,
    },
    /// A message format before v2 (magic 0 or 1), which Kafka 4 no longer accepts.
    #[error("record batch at byte {at} has magic {magic}; only magic 2 is supported")]
    OldMagic {
        /// Byte position of the batch.
        at: usize,
        /// The magic byte found.
        magic: i8,
    },
    /// A control batch (transaction marker) sent by a client, which only brokers write
    /// (INVALID_RECORD, as Kafka).
    #[error("record batch at byte {at} is a control batch; clients may not produce those")]
    ControlBatch {
        /// Byte position of the batch.
        at: usize,
    },
    /// A batch larger than the topic's `max.message.bytes` (MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    TooLarge {
        /// The batch size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// What validation learned about a produce payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Offsets the payload covers, summed over its batches.
    pub offsets: u32,
    /// Number of batches.
    pub batches: usize,
    /// Largest `maxTimestamp` of the batches.
    pub max_timestamp: i64,
    /// Records in the largest batch (by record count).
    pub largest_batch_records: u32,
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Checks every batch of a produce payload.
pub fn validate(payload: &[u8], max_batch_bytes: usize) -> Result<Summary, BatchError> {
    let corrupt = |at: usize, reason: String| BatchError::Corrupt { at, reason };
    let mut at = 0usize;
    let mut summary = Summary {
        offsets: 0,
        batches: 0,
        max_timestamp: -1,
        largest_batch_records: 0,
    };
    if payload.is_empty() {
        return Err(corrupt(0, "no record batch".into()));
    }
    while at < payload.len() {
        let rest = &payload[at..];
        if rest.len() < 17 {
            return Err(corrupt(
                at,
                format!("{} bytes cannot hold a batch header", rest.len()),
            ));
        }
        let magic = rest[16] as i8;
        if magic != 2 {
            return Err(BatchError::OldMagic { at, magic });
        }
        if rest.len() < HEADER_LEN {
            return Err(corrupt(
                at,
                format!("{} bytes cannot hold a batch header", rest.len()),
            ));
        }
        let length = i32_at(rest, 8);
        let size = usize::try_from(length).ok().map(|l| l + LENGTH_END);
        let Some(size) = size.filter(|s| *s >= HEADER_LEN && *s <= rest.len()) else {
            return Err(corrupt(
                at,
                format!(
                    "batchLength {length} does not fit the {} bytes sent",
                    rest.len()
                ),
            ));
        };
        if size > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        let stored = u32::from_be_bytes([rest[17], rest[18], rest[19], rest[20]]);
        let computed = crc32c::crc32c(&rest[21..size]);
        if stored != computed {
            return Err(corrupt(
                at,
                format!("crc mismatch: stored {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        if i16::from_be_bytes([rest[21], rest[22]]) & 0x20 != 0 {
            return Err(BatchError::ControlBatch { at });
        }
        let last_offset_delta = i32_at(rest, 23);
        let record_count = i32_at(rest, 57);
        if last_offset_delta < 0 || record_count != last_offset_delta + 1 {
            return Err(corrupt(
                at,
                format!(
                    "lastOffsetDelta {last_offset_delta} does not match recordCount {record_count}"
                ),
            ));
        }
        let offsets = u32::try_from(record_count).unwrap_or(0);
        summary.offsets = summary
            .offsets
            .checked_add(offsets)
            .ok_or_else(|| corrupt(at, "too many records".into()))?;
        summary.batches += 1;
        summary.largest_batch_records = summary.largest_batch_records.max(offsets);
        summary.max_timestamp = summary.max_timestamp.max(i64_at(rest, 35));
        at += size;
    }
    Ok(summary)
}

/// Copies a validated payload with each batch's `baseOffset` and `partitionLeaderEpoch` set.
pub fn assign_offsets(payload: &[u8], base_offset: u64, leader_epoch: i32) -> Bytes {
    let mut out = BytesMut::from(payload);
    let mut at = 0usize;
    let mut next = base_offset;
    while at + HEADER_LEN <= out.len() {
        let size = usize::try_from(i32_at(&out, at + 8)).unwrap_or(0) + LENGTH_END;
        let count = u64::try_from(i32_at(&out, at + 23)).unwrap_or(0) + 1;
        out[at..at + 8].copy_from_slice(&next.to_be_bytes());
        out[at + 12..at + 16].copy_from_slice(&leader_epoch.to_be_bytes());
        next += count;
        at += size;
    }
    out.freeze()
}

/// The producer fields of each batch of a validated payload written by an idempotent producer
/// (producer id 0 and up), in order.
pub fn producer_ids(payload: &[u8]) -> Vec<crate::producers::BatchIds> {
    producer_headers(payload)
        .into_iter()
        .map(|(ids, _)| ids)
        .collect()
}

/// The producer fields and base offset of each data batch of a payload that has a producer id.
pub fn producer_headers(payload: &[u8]) -> Vec<(crate::producers::BatchIds, i64)> {
    producer_batches(payload)
        .into_iter()
        .filter_map(|b| match b {
            ProducerBatch::Data { ids, base_offset } => Some((ids, base_offset)),
            ProducerBatch::Marker { .. } => None,
        })
        .collect()
}

/// A batch written by a producer: its records, or a transaction marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerBatch {
    /// Records of an idempotent or transactional producer.
    Data {
        ids: crate::producers::BatchIds,
        base_offset: i64,
    },
    /// A transaction marker (a control batch): the producer's transaction ended here.
    Marker {
        producer_id: i64,
        producer_epoch: i16,
        /// Commit (else abort).
        commit: bool,
        offset: i64,
    },
}

/// Attribute bit: the batch is part of a transaction.
pub const TRANSACTIONAL: i16 = 0x10;
/// Attribute bit: the batch holds control records (transaction markers).
pub const CONTROL: i16 = 0x20;

/// Whether any batch of a payload is part of a transaction (its records or its marker). Walks
/// the batch headers without allocating: every Produce request asks.
pub fn is_transactional(payload: &[u8]) -> bool {
    batch_ranges(payload).any(|range| {
        let b = &payload[range];
        i16::from_be_bytes([b[21], b[22]]) & TRANSACTIONAL != 0
    })
}

/// The producer batches of a stored payload (those with a producer id), in order.
pub fn producer_batches(payload: &[u8]) -> Vec<ProducerBatch> {
    batches(payload)
        .into_iter()
        .filter_map(|(base_offset, max_timestamp, range)| {
            let b = &payload[range];
            let producer_id = i64_at(b, 43);
            if producer_id < 0 {
                return None;
            }
            let attributes = i16::from_be_bytes([b[21], b[22]]);
            let producer_epoch = i16::from_be_bytes([b[51], b[52]]);
            if attributes & CONTROL != 0 {
                // Control batches (transaction markers) carry the producer's id but no sequence.
                return marker_type(&b[HEADER_LEN..]).map(|kind| ProducerBatch::Marker {
                    producer_id,
                    producer_epoch,
                    commit: kind == 1,
                    offset: base_offset,
                });
            }
            let ids = crate::producers::BatchIds {
                producer_id,
                producer_epoch,
                base_sequence: i32_at(b, 53),
                // The sequences a batch took: its offset span, which key compaction keeps
                // (it may drop records, not offsets).
                count: i32_at(b, 23) + 1,
                max_timestamp,
                transactional: attributes & TRANSACTIONAL != 0,
            };
            Some(ProducerBatch::Data { ids, base_offset })
        })
        .collect()
}

/// The type of a control record (0 abort, 1 commit), from the first record of a control batch:
/// `length varint, attributes i8, timestampDelta varlong, offsetDelta varint, keyLength varint,
/// key = version i16, type i16`.
fn marker_type(records: &[u8]) -> Option<i16> {
    let mut at = 0usize;
    let _length = varint(records, &mut at)?;
    at += 1; // attributes
    let _timestamp_delta = varint(records, &mut at)?;
    let _offset_delta = varint(records, &mut at)?;
    if varint(records, &mut at)? < 4 {
        return None;
    }
    let key = records.get(at..at + 4)?;
    Some(i16::from_be_bytes([key[2], key[3]]))
}

/// A zig-zag varint (as record fields are encoded) at `*at`, which moves past it.
fn varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// The batches of a stored payload: `(base offset, max timestamp, byte range)` each.
pub fn batches(payload: &[u8]) -> Vec<(i64, i64, std::ops::Range<usize>)> {
    batch_ranges(payload)
        .map(|range| {
            let at = range.start;
            (i64_at(payload, at), i64_at(payload, at + 35), range)
        })
        .collect()
}

/// The byte range of each whole batch of a payload, in order (a damaged tail ends the walk).
fn batch_ranges(payload: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + HEADER_LEN > payload.len() {
            return None;
        }
        let size = usize::try_from(i32_at(payload, at + 8)).unwrap_or(0) + LENGTH_END;
        if size < HEADER_LEN || at + size > payload.len() {
            return None;
        }
        let range = at..at + size;
        at += size;
        Some(range)
    })
}

#[cfg(test)]
mod tests;
