//! The WAL record format, shared by every WAL implementation.
//!
//! ```text
//! offset size field
//!      0    4 magic        0x5752_4543 ("WREC"), big-endian like all fields
//!      4    1 version      1
//!      5    4 length       bytes after the crc field (28 + payload length)
//!      9    4 crc32c       CRC-32C of version, length and everything after this field
//!     13    8 stream id
//!     21    8 epoch
//!     29    8 base offset
//!     37    4 count        offsets covered by the payload (a Kafka batch's lastOffsetDelta + 1)
//!     41    - payload      the bytes appended, untouched
//! ```
//!
//! `count` is not in DESIGN.md's minimal list; it is here so that recovery knows each record's offset
//! range without parsing the payload, which keeps the WAL independent of the Kafka batch format.
//! A record starting with four zero bytes marks the end of written data (preallocated space is zero).

use bytes::{BufMut, Bytes};
use weir_common::{Epoch, Offset, StreamId};

use crate::CorruptReason;

/// The magic number at the start of every record.
pub const MAGIC: u32 = 0x5752_4543;
/// The record format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes before the body: magic, version, length, crc.
pub const HEADER_LEN: usize = 13;
/// Fixed part of the body: stream id, epoch, base offset, count.
pub const FIXED_BODY_LEN: usize = 28;

/// One record: a payload appended to a stream at a base offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// The stream appended to.
    pub stream_id: StreamId,
    /// The writer's epoch for that stream.
    pub epoch: Epoch,
    /// The stream offset of the payload's first record.
    pub base_offset: Offset,
    /// How many offsets the payload covers.
    pub count: u32,
    /// The bytes appended (a Kafka RecordBatch for partition streams).
    pub payload: Bytes,
}

impl WalRecord {
    /// Size of the encoded record.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + FIXED_BODY_LEN + self.payload.len()
    }

    /// The offset after the payload's last one.
    pub fn end_offset(&self) -> Offset {
        self.base_offset.add(u64::from(self.count))
    }
}

/// Bytes of a record before its payload.
pub const PREFIX_LEN: usize = HEADER_LEN + FIXED_BODY_LEN;

/// Everything of the encoded record before the payload, checksum included. Callers that copy the
/// payload into a shared buffer compute this first, outside any lock.
///
/// # Panics
/// If the payload is 4 GiB or larger; callers check [`WalRecord::encoded_len`] against their
/// configured maximum first.
pub fn encode_prefix(record: &WalRecord) -> [u8; PREFIX_LEN] {
    let length = u32::try_from(FIXED_BODY_LEN + record.payload.len())
        .expect("callers bound the record size below 4 GiB");
    let mut p = [0u8; PREFIX_LEN];
    let mut w = &mut p[..];
    w.put_u32(MAGIC);
    w.put_u8(VERSION);
    w.put_u32(length);
    w.put_u32(0); // crc, filled in below
    w.put_u64(record.stream_id.get());
    w.put_u64(record.epoch.get());
    w.put_u64(record.base_offset.get());
    w.put_u32(record.count);
    let crc = crc32c::crc32c_append(
        checksum(&p[4..9], &p[HEADER_LEN..PREFIX_LEN]),
        &record.payload,
    );
    p[9..13].copy_from_slice(&crc.to_be_bytes());
    p
}

/// Appends the encoded record to `out`.
///
/// # Panics
/// As [`encode_prefix`].
pub fn encode(record: &WalRecord, out: &mut Vec<u8>) {
    out.reserve(record.encoded_len());
    out.extend_from_slice(&encode_prefix(record));
    out.extend_from_slice(&record.payload);
}

fn checksum(version_and_length: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(version_and_length), body)
}

/// Result of decoding at one position.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A record and the number of bytes it took.
    Record(WalRecord, usize),
    /// Zeros: the end of written data.
    End,
}

/// Decodes the record that starts at `buf[at..]`. The payload is a slice of `buf`, not a copy.
pub fn decode(buf: &Bytes, at: usize, max_record_bytes: usize) -> Result<Decoded, CorruptReason> {
    let rest = &buf[at.min(buf.len())..];
    if rest.iter().take(4).all(|b| *b == 0) {
        return Ok(Decoded::End);
    }
    let truncated = |needed: usize| CorruptReason::Truncated {
        needed: needed as u64,
        available: rest.len() as u64,
    };
    if rest.len() < HEADER_LEN {
        return Err(truncated(HEADER_LEN));
    }
    let magic = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    if magic != MAGIC {
        return Err(CorruptReason::BadMagic { found: magic });
    }
    if rest[4] != VERSION {
        return Err(CorruptReason::BadVersion { found: rest[4] });
    }
    let length = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
    let body_len = length as usize;
    if body_len < FIXED_BODY_LEN || HEADER_LEN + body_len > max_record_bytes {
        return Err(CorruptReason::BadLength { length });
    }
    let total = HEADER_LEN + body_len;
    if rest.len() < total {
        return Err(truncated(total));
    }
    let stored = u32::from_be_bytes([rest[9], rest[10], rest[11], rest[12]]);
    let body = &rest[HEADER_LEN..total];
    let computed = checksum(&rest[4..9], body);
    if stored != computed {
        return Err(CorruptReason::CrcMismatch { stored, computed });
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let record = WalRecord {
        stream_id: StreamId(u64_at(0)),
        epoch: Epoch(u64_at(8)),
        base_offset: Offset(u64_at(16)),
        count: u32::from_be_bytes([body[24], body[25], body[26], body[27]]),
        payload: buf.slice(at + HEADER_LEN + FIXED_BODY_LEN..at + total),
    };
    Ok(Decoded::Record(record, total))
}

#[cfg(test)]
mod tests;
