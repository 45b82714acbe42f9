use bytes::Bytes;
use weir_common::{Offset, StreamId};

use super::*;

fn batch(base: u64, count: u32, payload: &'static str) -> StoredBatch {
    StoredBatch {
        base_offset: Offset(base),
        count,
        payload: Bytes::from_static(payload.as_bytes()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_all(object: &Bytes) -> Vec<(StreamId, StoredBatch)> {
    let footer = Footer::decode(object, object.len() as u64).unwrap();
    let start = footer.index_position as usize;
    let index =
        ObjectIndex::decode(&object[start..start + footer.index_len as usize], &footer).unwrap();
    let mut out = Vec::new();
    for e in &index.entries {
        let block = object.slice(e.position as usize..(e.position + u64::from(e.size)) as usize);
        for b in decode_block(&block, e).unwrap() {
            out.push((e.stream_id, b));
        }
    }
    out
}

/// Data objects are persistent: if this test fails, the bytes in the object store changed. Bump
/// `VERSION` and keep reading the old one instead of editing the expected value.
#[test]
fn golden_bytes() {
    let mut builder = ObjectBuilder::new(1 << 20);
    builder.add(StreamId(1), &batch(0, 2, "ab"));
    builder.add(StreamId(7), &batch(10, 1, "c"));
    let object = builder.finish();
    assert_eq!(
        hex(&object),
        concat!(
            // block 0: stream 1, one batch
            "0000000000000000",
            "00000002",
            "00000002",
            "6162",
            // block 1: stream 7, one batch
            "000000000000000a",
            "00000001",
            "00000001",
            "63",
            // index entry 0: stream 1, start 0, delta 2, 1 batch, position 0, size 18, crc
            "0000000000000001",
            "0000000000000000",
            "00000002",
            "00000001",
            "0000000000000000",
            "00000012",
            "458f985d",
            // index entry 1: stream 7, start 10, delta 1, 1 batch, position 18, size 17, crc
            "0000000000000007",
            "000000000000000a",
            "00000001",
            "00000001",
            "0000000000000012",
            "00000011",
            "81735aa4",
            // footer: index position 35, length 80, index crc, 2 entries, version 1, reserved, magic
            "0000000000000023",
            "00000050",
            "34c473b6",
            "00000002",
            "0001",
            "000000000000000000000000000000000000",
            "574549524f424a31",
        )
    );
}

#[test]
fn blocks_are_cut_near_the_target_at_batch_boundaries() {
    let mut builder = ObjectBuilder::new(64);
    let mut expected = Vec::new();
    for stream in [3u64, 5] {
        for i in 0..20u64 {
            let b = batch(i * 3, 3, "0123456789abcdef0123456789");
            builder.add(StreamId(stream), &b);
            expected.push((StreamId(stream), b));
        }
    }
    let object = builder.finish();
    assert_eq!(read_all(&object), expected);
    let footer = Footer::decode(&object, object.len() as u64).unwrap();
    let start = footer.index_position as usize;
    let index =
        ObjectIndex::decode(&object[start..start + footer.index_len as usize], &footer).unwrap();
    // 42-byte batches, blocks close once they reach 64 bytes: two batches a block.
    assert_eq!(index.entries.len(), 20);
    assert!(
        index
            .entries
            .iter()
            .all(|e| e.batch_count == 2 && e.end_offset_delta == 6)
    );

    // Lookup: the block holding offset 13 of stream 5 and everything after it.
    let blocks = index.blocks_from(StreamId(5), Offset(13));
    assert_eq!(blocks.len(), 8);
    assert_eq!(blocks[0].start_offset, Offset(12));
    assert!(index.blocks_from(StreamId(5), Offset(60)).is_empty());
    assert!(index.blocks_from(StreamId(4), Offset(0)).is_empty());
    assert_eq!(index.blocks_from(StreamId(3), Offset(0)).len(), 10);
}

#[test]
fn a_gap_in_offsets_starts_a_new_block() {
    let mut builder = ObjectBuilder::new(1 << 20);
    builder.add(StreamId(1), &batch(0, 1, "a"));
    builder.add(StreamId(1), &batch(5, 1, "b"));
    let object = builder.finish();
    let footer = Footer::decode(&object, object.len() as u64).unwrap();
    assert_eq!(footer.entry_count, 2);
    assert_eq!(read_all(&object).len(), 2);
}

fn sample_object() -> Bytes {
    let mut builder = ObjectBuilder::new(1 << 20);
    builder.add(StreamId(1), &batch(0, 2, "hello"));
    builder.add(StreamId(1), &batch(2, 2, "world"));
    builder.finish()
}

#[test]
fn damage_is_detected_not_served() {
    let object = sample_object();
    let size = object.len() as u64;

    let mut bad_magic = object.to_vec();
    let n = bad_magic.len();
    bad_magic[n - 1] ^= 0xff;
    assert!(matches!(
        Footer::decode(&bad_magic, size),
        Err(FormatError::BadMagic { .. })
    ));

    let mut bad_version = object.to_vec();
    bad_version[n - 27] = 9;
    assert_eq!(
        Footer::decode(&bad_version, size),
        Err(FormatError::BadVersion { found: 9 })
    );

    assert!(matches!(
        Footer::decode(&object[..20], 20),
        Err(FormatError::Truncated(_))
    ));
    assert!(matches!(
        Footer::decode(&object, size + 1),
        Err(FormatError::Truncated(_))
    ));

    let footer = Footer::decode(&object, size).unwrap();
    let start = footer.index_position as usize;
    let mut index_bytes = object[start..start + footer.index_len as usize].to_vec();
    index_bytes[3] ^= 1;
    assert!(matches!(
        ObjectIndex::decode(&index_bytes, &footer),
        Err(FormatError::CrcMismatch { what: "index", .. })
    ));

    let index =
        ObjectIndex::decode(&object[start..start + footer.index_len as usize], &footer).unwrap();
    let entry = index.entries[0];
    let mut block = object[..entry.size as usize].to_vec();
    block[20] ^= 1;
    assert!(matches!(
        decode_block(&Bytes::from(block), &entry),
        Err(FormatError::CrcMismatch { what: "block", .. })
    ));
    assert!(matches!(
        decode_block(&object.slice(..entry.size as usize - 1), &entry),
        Err(FormatError::Truncated(_))
    ));
}

#[test]
fn payloads_are_slices_of_the_block() {
    let object = sample_object();
    let footer = Footer::decode(&object, object.len() as u64).unwrap();
    let start = footer.index_position as usize;
    let index =
        ObjectIndex::decode(&object[start..start + footer.index_len as usize], &footer).unwrap();
    let block = object.slice(..index.entries[0].size as usize);
    let batches = decode_block(&block, &index.entries[0]).unwrap();
    assert_eq!(batches[1].payload, Bytes::from_static(b"world"));
    assert_eq!(batches[1].payload.as_ptr(), block[37..].as_ptr());
}
