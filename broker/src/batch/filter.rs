//! Record-level reading and filtering of stored batches, for key compaction (`cleanup.policy=compact`).
//!
//! As Kafka's log cleaner does, a filtered batch keeps its `baseOffset`, `lastOffsetDelta`,
//! timestamps and producer fields; only the records change, so every kept record keeps its offset
//! and the batch still covers the same offsets (consumers see gaps, as on any compacted topic). Kept
//! records are copied byte for byte (their offset and timestamp deltas are relative to the unchanged
//! header); a compressed batch is decompressed and its kept records compressed again with the same
//! codec. A batch left with no records becomes an empty batch (header only, uncompressed), which
//! clients skip. Control batches (transaction markers) are never changed.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};

use super::{BatchError, HEADER_LEN, LENGTH_END, i32_at, i64_at};

/// One record as the cleaner sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// The record's offset.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<&'a [u8]>,
    /// Whether its value is null (a tombstone).
    pub tombstone: bool,
    /// The `maxTimestamp` of its batch.
    pub batch_max_timestamp: i64,
}

const COMPRESSION_MASK: i16 = 0x07;
const CONTROL_FLAG: i16 = 0x20;
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;
const RECORD_COUNT_AT: usize = 57;

fn corrupt(at: usize, reason: impl Into<String>) -> BatchError {
    BatchError::Corrupt {
        at,
        reason: reason.into(),
    }
}

/// Calls `f` for every record of every data batch of a stored payload (control batches skipped).
pub fn for_each_record(
    payload: &Bytes,
    mut f: impl FnMut(RecordRef<'_>),
) -> Result<(), BatchError> {
    for (at, batch) in split(payload)? {
        if is_control(&batch) {
            continue;
        }
        let records = records_of(&batch).map_err(|e| corrupt(at, e))?;
        let base = i64_at(&batch, 0);
        let max_ts = i64_at(&batch, 35);
        for raw in RawRecords::new(&records, i32_at(&batch, 23)) {
            let raw = raw.map_err(|e| corrupt(at, e))?;
            f(raw.view(base, max_ts));
        }
    }
    Ok(())
}

/// The payload with only the records `keep` accepts, or `None` if it accepts them all. Each batch
/// keeps its offsets; a batch left empty keeps its header with no records.
pub fn retain_records(
    payload: &Bytes,
    mut keep: impl FnMut(RecordRef<'_>) -> bool,
) -> Result<Option<Bytes>, BatchError> {
    let mut out = BytesMut::with_capacity(payload.len());
    let mut changed = false;
    for (at, batch) in split(payload)? {
        if is_control(&batch) {
            out.put_slice(&batch);
            continue;
        }
        let records = records_of(&batch).map_err(|e| corrupt(at, e))?;
        let base = i64_at(&batch, 0);
        let max_ts = i64_at(&batch, 35);
        let mut kept = BytesMut::new();
        let (mut count, mut dropped) = (0i32, false);
        for raw in RawRecords::new(&records, i32_at(&batch, 23)) {
            let raw = raw.map_err(|e| corrupt(at, e))?;
            if keep(raw.view(base, max_ts)) {
                kept.put_slice(raw.bytes);
                count += 1;
            } else {
                dropped = true;
            }
        }
        if !dropped {
            out.put_slice(&batch);
            continue;
        }
        changed = true;
        let compression = attributes(&batch) & COMPRESSION_MASK;
        let body = if count == 0 {
            Bytes::new()
        } else {
            compress(compression, &kept).map_err(|e| corrupt(at, e))?
        };
        let attributes = if count == 0 {
            attributes(&batch) & !COMPRESSION_MASK
        } else {
            attributes(&batch)
        };
        write_batch(&mut out, &batch[..HEADER_LEN], attributes, count, &body);
    }
    Ok(changed.then(|| out.freeze()))
}

/// Whether every batch of the payload is an empty data batch (`false` for a damaged payload).
pub fn is_empty(payload: &Bytes) -> bool {
    match split(payload) {
        Ok(batches) => {
            !batches.is_empty()
                && batches
                    .iter()
                    .all(|(_, b)| i32_at(b, RECORD_COUNT_AT) == 0 && !is_control(b))
        }
        Err(_) => false,
    }
}

/// One empty batch covering `count` offsets from `base_offset`, with the other header fields of
/// the first batch of `like` (timestamps widened to `max_timestamp`) and no producer: what a run of
/// empty batches becomes.
pub fn empty_batch(like: &[u8], base_offset: i64, count: u32, max_timestamp: i64) -> Bytes {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&like[..HEADER_LEN]);
    header[0..8].copy_from_slice(&base_offset.to_be_bytes());
    let last_delta = i32::try_from(count.saturating_sub(1)).unwrap_or(i32::MAX);
    header[23..27].copy_from_slice(&last_delta.to_be_bytes());
    header[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    header[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producerId
    header[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    header[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    let attributes = i16::from_be_bytes([like[21], like[22]]) & !COMPRESSION_MASK;
    let mut out = BytesMut::with_capacity(HEADER_LEN);
    write_batch(&mut out, &header, attributes & !0x10, 0, &[]);
    out.freeze()
}

/// The largest `maxTimestamp` of the payload's batches.
pub fn max_timestamp(payload: &[u8]) -> i64 {
    super::batches(payload)
        .into_iter()
        .map(|(_, ts, _)| ts)
        .max()
        .unwrap_or(-1)
}

fn write_batch(out: &mut BytesMut, header: &[u8], attributes: i16, count: i32, body: &[u8]) {
    let start = out.len();
    out.put_slice(&header[..HEADER_LEN]);
    out.put_slice(body);
    let length = i32::try_from(HEADER_LEN - LENGTH_END + body.len()).unwrap_or(i32::MAX);
    out[start + 8..start + 12].copy_from_slice(&length.to_be_bytes());
    out[start + ATTRIBUTES_AT..start + ATTRIBUTES_AT + 2]
        .copy_from_slice(&attributes.to_be_bytes());
    out[start + RECORD_COUNT_AT..start + RECORD_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + ATTRIBUTES_AT..]);
    out[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The batches of a stored payload, with their byte position.
fn split(payload: &Bytes) -> Result<Vec<(usize, Bytes)>, BatchError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < payload.len() {
        if payload.len() - at < HEADER_LEN {
            return Err(corrupt(at, "truncated batch header"));
        }
        let size = usize::try_from(i32_at(payload, at + 8))
            .ok()
            .map(|l| l + LENGTH_END)
            .filter(|s| *s >= HEADER_LEN && at + s <= payload.len())
            .ok_or_else(|| corrupt(at, "batchLength does not fit the payload"))?;
        out.push((at, payload.slice(at..at + size)));
        at += size;
    }
    Ok(out)
}

fn attributes(batch: &[u8]) -> i16 {
    i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]])
}

fn is_control(batch: &[u8]) -> bool {
    attributes(batch) & CONTROL_FLAG != 0
}

/// Most bytes a batch's records may decompress to: a small compressed batch must not expand into
/// gigabytes (a decompression bomb). 64 MiB, 64 times Kafka's default `message.max.bytes`.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// The xerial framing Kafka's Java client puts around snappy blocks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// The records section of a batch, decompressed (at most [`MAX_DECOMPRESSED_BYTES`]).
fn records_of(batch: &Bytes) -> Result<Bytes, String> {
    let body = batch.slice(HEADER_LEN..);
    let codec = attributes(batch) & COMPRESSION_MASK;
    let capped = |mut reader: Box<dyn std::io::Read + '_>| -> Result<Bytes, String> {
        let mut out = Vec::new();
        let limit = u64::try_from(MAX_DECOMPRESSED_BYTES).unwrap_or(u64::MAX) + 1;
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut reader, limit), &mut out)
            .map_err(|e| format!("cannot decompress records: {e}"))?;
        if out.len() > MAX_DECOMPRESSED_BYTES {
            return Err(format!(
                "records decompress to more than {MAX_DECOMPRESSED_BYTES} bytes"
            ));
        }
        Ok(Bytes::from(out))
    };
    match codec {
        0 => Ok(body),
        1 => capped(Box::new(flate2::read::GzDecoder::new(&body[..]))),
        2 => snappy(&body),
        3 => capped(Box::new(
            lz4::Decoder::new(&body[..]).map_err(|e| format!("cannot decompress records: {e}"))?,
        )),
        4 => capped(Box::new(
            zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| format!("cannot decompress records: {e}"))?,
        )),
        other => Err(format!("unknown compression codec {other}")),
    }
}

/// Snappy, raw or in xerial blocks; each block's stated length is checked before allocating.
fn snappy(body: &[u8]) -> Result<Bytes, String> {
    let bad = |e: snap::Error| format!("cannot decompress snappy records: {e}");
    let mut blocks: Vec<&[u8]> = Vec::new();
    if body.len() >= XERIAL_HEADER_LEN && body.starts_with(XERIAL_MAGIC) {
        let mut rest = &body[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            let len = take(&mut rest, 4)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            blocks.push(take(&mut rest, len)?);
        }
    } else {
        blocks.push(body);
    }
    let mut total = 0usize;
    for block in &blocks {
        total = total.saturating_add(snap::raw::decompress_len(block).map_err(bad)?);
    }
    if total > MAX_DECOMPRESSED_BYTES {
        return Err(format!(
            "records decompress to {total} bytes, more than {MAX_DECOMPRESSED_BYTES}"
        ));
    }
    let mut out = vec![0u8; total];
    let mut at = 0usize;
    let mut decoder = snap::raw::Decoder::new();
    for block in blocks {
        at += decoder.decompress(block, &mut out[at..]).map_err(bad)?;
    }
    out.truncate(at);
    Ok(Bytes::from(out))
}

fn compress(codec: i16, records: &[u8]) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    let write = |w: &mut BytesMut| {
        w.put_slice(records);
        Ok(())
    };
    let result = match codec {
        0 => return Ok(Bytes::copy_from_slice(records)),
        1 => Gzip::compress(&mut out, write),
        2 => Snappy::compress(&mut out, write),
        3 => Lz4::compress(&mut out, write),
        4 => Zstd::compress(&mut out, write),
        other => return Err(format!("unknown compression codec {other}")),
    };
    result.map_err(|e| format!("cannot compress records: {e}"))?;
    Ok(out.freeze())
}

/// A record's raw bytes and the fields the cleaner needs.
struct RawRecord<'a> {
    bytes: &'a [u8],
    offset_delta: i32,
    key: Option<&'a [u8]>,
    tombstone: bool,
}

impl RawRecord<'_> {
    fn view(&self, base_offset: i64, batch_max_timestamp: i64) -> RecordRef<'_> {
        RecordRef {
            offset: base_offset + i64::from(self.offset_delta),
            key: self.key,
            tombstone: self.tombstone,
            batch_max_timestamp,
        }
    }
}

/// The records of a (decompressed) records section, one at a time; each offset delta must lie in
/// the batch (`0..=last_offset_delta`).
struct RawRecords<'a> {
    rest: &'a [u8],
    last_offset_delta: i32,
}

impl<'a> RawRecords<'a> {
    fn new(records: &'a [u8], last_offset_delta: i32) -> Self {
        Self {
            rest: records,
            last_offset_delta,
        }
    }

    fn next_record(&mut self) -> Result<RawRecord<'a>, String> {
        let all = self.rest;
        let mut cur = all;
        let length = varint(&mut cur)?;
        let header_len = all.len() - cur.len();
        let length = usize::try_from(length)
            .ok()
            .filter(|l| *l <= cur.len())
            .ok_or_else(|| format!("record length {length} exceeds the batch"))?;
        let (bytes, rest) = all.split_at(header_len + length);
        let mut body = &cur[..length];
        let _attributes = take(&mut body, 1)?;
        let _timestamp_delta = varint(&mut body)?;
        let offset_delta = i32::try_from(varint(&mut body)?)
            .ok()
            .filter(|d| (0..=self.last_offset_delta).contains(d))
            .ok_or_else(|| "record offset delta outside its batch".to_owned())?;
        let key = nullable(&mut body)?;
        let value = nullable(&mut body)?;
        self.rest = rest;
        Ok(RawRecord {
            bytes,
            offset_delta,
            key,
            tombstone: value.is_none(),
        })
    }
}

impl<'a> Iterator for RawRecords<'a> {
    type Item = Result<RawRecord<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let record = self.next_record();
        if record.is_err() {
            self.rest = &[];
        }
        Some(record)
    }
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if buf.len() < n {
        return Err("record truncated".to_owned());
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// A zig-zag varint (Kafka's varint and varlong share the encoding).
fn varint(buf: &mut &[u8]) -> Result<i64, String> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let [byte, rest @ ..] = *buf else {
            return Err("record truncated in a varint".to_owned());
        };
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes".to_owned())
}

/// A varint length and that many bytes; a negative length is null.
fn nullable<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, String> {
    let len = varint(buf)?;
    if len < 0 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| "record field too long".to_owned())?;
    take(buf, len).map(Some)
}

#[cfg(test)]
mod tests;
