//! The data object format, shared by stream set objects (many streams) and stream objects (one).
//!
//! ```text
//! [data block]* [index] [footer]
//!
//! data block: consecutive batches of one stream, cut at batch boundaries near `block_max_bytes`
//!     batch: base offset u64 | count u32 | length u32 | payload (the bytes appended, untouched)
//! index: one 40-byte entry per block, sorted by (stream id, start offset)
//!     stream id u64 | start offset u64 | end offset delta u32 | batch count u32
//!     | block position u64 | block size u32 | block crc32c u32
//! footer (48 bytes):
//!     index position u64 | index length u32 | index crc32c u32 | entry count u32
//!     | format version u16 | reserved 18 bytes (zero) | magic u64 0x5745_4952_4f42_4a31 ("WEIROBJ1")
//! ```
//! All integers are big-endian. The shape follows AutoMQ's object format (blocks sorted by stream and
//! offset, a fixed-size binary-searchable index, a fixed footer found by one ranged GET of the tail),
//! plus CRC-32C checksums of every block and of the index: object stores checksum transfers, not what we
//! put in them, and a reader should fail loudly on a bad block rather than serve it to a consumer.
//! "batch count" is the number of batches in the block; "end offset delta" is end minus start offset.

#[cfg(test)]
mod tests;

use bytes::{Buf, BufMut, Bytes};
use weir_common::{Offset, StreamId};

/// The footer's magic number.
pub const MAGIC: u64 = 0x5745_4952_4f42_4a31;
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Size of the footer.
pub const FOOTER_LEN: usize = 48;
/// Size of one index entry.
pub const INDEX_ENTRY_LEN: usize = 40;
/// Size of a batch header inside a block.
pub const BATCH_HEADER_LEN: usize = 16;

/// Why object bytes cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The object is shorter than its footer or its footer points outside it.
    #[error("object truncated: {0}")]
    Truncated(&'static str),
    /// The footer's magic is wrong: not a Weir data object.
    #[error("wrong magic {found:#018x}")]
    BadMagic {
        /// What was found.
        found: u64,
    },
    /// A format version this build does not know.
    #[error("unsupported object format version {found}")]
    BadVersion {
        /// What was found.
        found: u16,
    },
    /// A checksum does not match.
    #[error("{what} crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// Which part: "index" or "block".
        what: &'static str,
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
    /// The contents contradict the index.
    #[error("inconsistent object: {0}")]
    Inconsistent(String),
}

/// A batch as stored: the bytes appended at a base offset, covering `count` offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offsets covered.
    pub count: u32,
    /// The bytes appended.
    pub payload: Bytes,
}

impl StoredBatch {
    /// The offset after the batch.
    pub fn end_offset(&self) -> Offset {
        self.base_offset.add(u64::from(self.count))
    }
}

/// One index entry: where a block of one stream's batches lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The stream.
    pub stream_id: StreamId,
    /// First offset in the block.
    pub start_offset: Offset,
    /// End offset minus start offset.
    pub end_offset_delta: u32,
    /// Batches in the block.
    pub batch_count: u32,
    /// Byte position of the block in the object.
    pub position: u64,
    /// Block size in bytes.
    pub size: u32,
    /// CRC-32C of the block.
    pub crc: u32,
}

impl IndexEntry {
    /// The offset after the block's last batch.
    pub fn end_offset(&self) -> Offset {
        self.start_offset.add(u64::from(self.end_offset_delta))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.stream_id.get());
        out.put_u64(self.start_offset.get());
        out.put_u32(self.end_offset_delta);
        out.put_u32(self.batch_count);
        out.put_u64(self.position);
        out.put_u32(self.size);
        out.put_u32(self.crc);
    }

    fn decode(mut b: &[u8]) -> IndexEntry {
        IndexEntry {
            stream_id: StreamId(b.get_u64()),
            start_offset: Offset(b.get_u64()),
            end_offset_delta: b.get_u32(),
            batch_count: b.get_u32(),
            position: b.get_u64(),
            size: b.get_u32(),
            crc: b.get_u32(),
        }
    }
}

/// Builds one object in memory. Batches must be added in (stream, offset) order.
#[derive(Debug)]
pub struct ObjectBuilder {
    buf: Vec<u8>,
    index: Vec<IndexEntry>,
    block_max_bytes: usize,
    open: Option<IndexEntry>,
}

impl ObjectBuilder {
    /// A builder cutting blocks once they reach `block_max_bytes`.
    pub fn new(block_max_bytes: usize) -> Self {
        Self {
            buf: Vec::new(),
            index: Vec::new(),
            block_max_bytes: block_max_bytes.max(1),
            open: None,
        }
    }

    /// Appends a batch of `stream`.
    ///
    /// # Panics
    /// If the batch does not follow the previous one of the same stream, or streams are out of order,
    /// or a block would cover 4 Gi offsets or bytes: the uploader builds objects from contiguous,
    /// sorted log cache entries, so any of these is a bug.
    pub fn add(&mut self, stream_id: StreamId, batch: &StoredBatch) {
        let need_new = match &self.open {
            None => true,
            Some(open) => {
                assert!(
                    (open.stream_id, open.end_offset()) <= (stream_id, batch.base_offset),
                    "batches must be added in (stream, offset) order"
                );
                open.stream_id != stream_id
                    || open.end_offset() != batch.base_offset
                    || open.size as usize >= self.block_max_bytes
            }
        };
        if need_new {
            self.close_block();
            self.open = Some(IndexEntry {
                stream_id,
                start_offset: batch.base_offset,
                end_offset_delta: 0,
                batch_count: 0,
                position: self.buf.len() as u64,
                size: 0,
                crc: 0,
            });
        }
        let payload_len = u32::try_from(batch.payload.len()).expect("batch below 4 GiB");
        self.buf.put_u64(batch.base_offset.get());
        self.buf.put_u32(batch.count);
        self.buf.put_u32(payload_len);
        self.buf.extend_from_slice(&batch.payload);
        let open = self.open.as_mut().expect("a block is open");
        open.end_offset_delta = u32::try_from(batch.end_offset().distance_from(open.start_offset))
            .expect("block covers fewer than 4 Gi offsets");
        open.batch_count += 1;
        open.size =
            u32::try_from(self.buf.len() as u64 - open.position).expect("block below 4 GiB");
    }

    fn close_block(&mut self) {
        if let Some(mut entry) = self.open.take() {
            let start = usize::try_from(entry.position).expect("position fits in memory");
            entry.crc = crc32c::crc32c(&self.buf[start..]);
            self.index.push(entry);
        }
    }

    /// Bytes written so far (blocks only).
    pub fn data_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Writes the index and footer and returns the object's bytes.
    pub fn finish(mut self) -> Bytes {
        self.close_block();
        let index_position = self.buf.len() as u64;
        for entry in &self.index {
            entry.encode(&mut self.buf);
        }
        let index_start = usize::try_from(index_position).expect("fits in memory");
        let index_len = self.buf.len() - index_start;
        let index_crc = crc32c::crc32c(&self.buf[index_start..]);
        self.buf.put_u64(index_position);
        self.buf
            .put_u32(u32::try_from(index_len).expect("index below 4 GiB"));
        self.buf.put_u32(index_crc);
        self.buf
            .put_u32(u32::try_from(self.index.len()).expect("fewer than 4 Gi blocks"));
        self.buf.put_u16(VERSION);
        self.buf.put_bytes(0, 18);
        self.buf.put_u64(MAGIC);
        Bytes::from(self.buf)
    }
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Where the index starts.
    pub index_position: u64,
    /// Index length in bytes.
    pub index_len: u32,
    /// CRC-32C of the index.
    pub index_crc: u32,
    /// Number of index entries.
    pub entry_count: u32,
}

impl Footer {
    /// Decodes the footer from the last [`FOOTER_LEN`] bytes of an object of `object_size` bytes.
    pub fn decode(tail: &[u8], object_size: u64) -> Result<Footer, FormatError> {
        if tail.len() < FOOTER_LEN || object_size < FOOTER_LEN as u64 {
            return Err(FormatError::Truncated("shorter than the footer"));
        }
        let mut b = &tail[tail.len() - FOOTER_LEN..];
        let footer = Footer {
            index_position: b.get_u64(),
            index_len: b.get_u32(),
            index_crc: b.get_u32(),
            entry_count: b.get_u32(),
        };
        let version = b.get_u16();
        b.advance(18);
        let magic = b.get_u64();
        if magic != MAGIC {
            return Err(FormatError::BadMagic { found: magic });
        }
        if version != VERSION {
            return Err(FormatError::BadVersion { found: version });
        }
        let index_end = footer
            .index_position
            .checked_add(u64::from(footer.index_len))
            .and_then(|end| end.checked_add(FOOTER_LEN as u64));
        if index_end != Some(object_size) {
            return Err(FormatError::Truncated("index does not end at the footer"));
        }
        if u64::from(footer.entry_count) * INDEX_ENTRY_LEN as u64 != u64::from(footer.index_len) {
            return Err(FormatError::Inconsistent(format!(
                "{} entries do not fill an index of {} bytes",
                footer.entry_count, footer.index_len
            )));
        }
        Ok(footer)
    }
}

/// A parsed index: what blocks an object holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIndex {
    /// Entries sorted by (stream id, start offset).
    pub entries: Vec<IndexEntry>,
}

impl ObjectIndex {
    /// Parses the index bytes that `footer` describes.
    pub fn decode(index: &[u8], footer: &Footer) -> Result<ObjectIndex, FormatError> {
        if index.len() != footer.index_len as usize {
            return Err(FormatError::Truncated("index shorter than the footer says"));
        }
        let computed = crc32c::crc32c(index);
        if computed != footer.index_crc {
            return Err(FormatError::CrcMismatch {
                what: "index",
                stored: footer.index_crc,
                computed,
            });
        }
        let entries: Vec<_> = index
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(IndexEntry::decode)
            .collect();
        let mut data_end = 0u64;
        for pair in entries.windows(2) {
            if (pair[0].stream_id, pair[0].start_offset)
                >= (pair[1].stream_id, pair[1].start_offset)
            {
                return Err(FormatError::Inconsistent(
                    "index entries out of order".into(),
                ));
            }
        }
        for e in &entries {
            data_end = data_end.max(e.position.saturating_add(u64::from(e.size)));
        }
        if data_end > footer.index_position {
            return Err(FormatError::Inconsistent(
                "a block overlaps the index".into(),
            ));
        }
        Ok(ObjectIndex { entries })
    }

    /// The blocks of `stream` holding offsets at or after `from`, in offset order.
    pub fn blocks_from(&self, stream: StreamId, from: Offset) -> &[IndexEntry] {
        let first = self
            .entries
            .partition_point(|e| (e.stream_id, e.end_offset()) <= (stream, from));
        let last = self.entries.partition_point(|e| e.stream_id <= stream);
        &self.entries[first..last.max(first)]
    }

    /// Approximate memory held, for cache weighing.
    pub fn weight(&self) -> usize {
        self.entries.len() * std::mem::size_of::<IndexEntry>() + 64
    }
}

/// Splits a block into its batches; payloads are slices of `block`, not copies.
pub fn decode_block(block: &Bytes, entry: &IndexEntry) -> Result<Vec<StoredBatch>, FormatError> {
    if block.len() != entry.size as usize {
        return Err(FormatError::Truncated("block shorter than its index entry"));
    }
    let computed = crc32c::crc32c(block);
    if computed != entry.crc {
        return Err(FormatError::CrcMismatch {
            what: "block",
            stored: entry.crc,
            computed,
        });
    }
    let mut batches = Vec::with_capacity(entry.batch_count as usize);
    let mut at = 0usize;
    let mut expected = entry.start_offset;
    while at < block.len() {
        if block.len() - at < BATCH_HEADER_LEN {
            return Err(FormatError::Truncated("batch header cut off"));
        }
        let mut h = &block[at..at + BATCH_HEADER_LEN];
        let base_offset = Offset(h.get_u64());
        let count = h.get_u32();
        let len = h.get_u32() as usize;
        let start = at + BATCH_HEADER_LEN;
        if block.len() - start < len {
            return Err(FormatError::Truncated("batch payload cut off"));
        }
        if base_offset != expected {
            return Err(FormatError::Inconsistent(format!(
                "batch at offset {base_offset} where {expected} was due"
            )));
        }
        let batch = StoredBatch {
            base_offset,
            count,
            payload: block.slice(start..start + len),
        };
        expected = batch.end_offset();
        batches.push(batch);
        at = start + len;
    }
    if batches.len() != entry.batch_count as usize || expected != entry.end_offset() {
        return Err(FormatError::Inconsistent(
            "block contents disagree with its index entry".into(),
        ));
    }
    Ok(batches)
}
