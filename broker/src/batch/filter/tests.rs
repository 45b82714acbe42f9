use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;

/// A batch at `base` of `n` records; record `i` has key `k{i % keys}`, and every fifth is a
/// tombstone.
fn batch(base: i64, n: i64, keys: i64, compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 3,
            producer_id: 7,
            producer_epoch: 1,
            timestamp_type: TimestampType::Creation,
            offset: base + i,
            sequence: i as i32,
            timestamp: 1_000 + i,
            key: Some(Bytes::from(format!("k{}", i % keys))),
            value: (i % 5 != 4).then(|| Bytes::from(format!("value {i}"))),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

fn decode(payload: &Bytes) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let mut buf = payload.clone();
    RecordBatchDecoder::decode_all(&mut buf)
        .expect("the rewritten payload decodes, CRC and all")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| (r.offset, r.key, r.value))
        .collect()
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

#[test]
fn records_are_read_with_offsets_keys_and_tombstones() {
    for codec in CODECS {
        let payload = batch(100, 10, 3, codec);
        let mut seen = Vec::new();
        for_each_record(&payload, |r| {
            seen.push((r.offset, r.key.map(<[u8]>::to_vec), r.tombstone));
        })
        .unwrap();
        let expected: Vec<_> = (0..10)
            .map(|i| {
                (
                    100 + i,
                    Some(format!("k{}", i % 3).into_bytes()),
                    i % 5 == 4,
                )
            })
            .collect();
        assert_eq!(seen, expected, "{codec:?}");
    }
}

#[test]
fn filtered_batches_keep_their_offsets_and_codec() {
    for codec in CODECS {
        let payload = [batch(100, 10, 3, codec), batch(110, 4, 3, codec)].concat();
        let payload = Bytes::from(payload);
        let all = decode(&payload);
        let new = retain_records(&payload, |r| r.offset % 2 == 0)
            .unwrap()
            .expect("something was removed");
        let expected: Vec<_> = all.into_iter().filter(|r| r.0 % 2 == 0).collect();
        assert_eq!(decode(&new), expected, "{codec:?}");
        // Same batches, same offsets covered, same codec and producer fields.
        let old_batches = crate::batch::batches(&payload);
        let new_batches = crate::batch::batches(&new);
        assert_eq!(old_batches.len(), new_batches.len());
        for ((old_base, old_ts, old), (new_base, new_ts, new_range)) in
            old_batches.into_iter().zip(new_batches)
        {
            assert_eq!((old_base, old_ts), (new_base, new_ts));
            let (o, n) = (&payload[old], &new[new_range]);
            assert_eq!(o[23..27], n[23..27], "lastOffsetDelta kept");
            assert_eq!(o[21..23], n[21..23], "attributes kept");
            assert_eq!(o[43..57], n[43..57], "producer fields kept");
        }
        assert!(new.len() < payload.len());
    }
}

#[test]
fn nothing_removed_means_no_copy_and_everything_removed_leaves_empty_batches() {
    let payload = batch(0, 6, 6, Compression::Zstd);
    assert_eq!(retain_records(&payload, |_| true).unwrap(), None);
    let empty = retain_records(&payload, |_| false).unwrap().unwrap();
    assert_eq!(empty.len(), HEADER_LEN);
    assert!(is_empty(&empty));
    assert!(!is_empty(&payload));
    assert_eq!(decode(&empty), vec![]);
    assert_eq!(i32_at(&empty, 23), 5, "still covers offsets 0..6");
    assert_eq!(attributes(&empty) & COMPRESSION_MASK, 0);

    let merged = empty_batch(&empty, 0, 20, 5_000);
    assert!(is_empty(&merged));
    assert_eq!(i32_at(&merged, 23), 19);
    assert_eq!(i64_at(&merged, 35), 5_000);
    assert_eq!(i64_at(&merged, 43), -1, "no producer");
    assert_eq!(decode(&merged), vec![]);
    for b in [&empty, &merged] {
        let crc = u32::from_be_bytes([b[17], b[18], b[19], b[20]]);
        assert_eq!(crc, crc32c::crc32c(&b[21..]), "CRC-32C of the new header");
    }
}

#[test]
fn rewritten_batches_carry_a_valid_crc() {
    for codec in CODECS {
        let payload = batch(0, 8, 8, codec);
        let new = retain_records(&payload, |r| r.offset != 3)
            .unwrap()
            .unwrap();
        let crc = u32::from_be_bytes([new[17], new[18], new[19], new[20]]);
        assert_eq!(crc, crc32c::crc32c(&new[21..]), "{codec:?}");
    }
}

#[test]
fn a_decompression_bomb_is_refused_without_allocating_it() {
    // A raw snappy block whose header claims 2 GiB.
    let mut header = BytesMut::from(&batch(0, 1, 1, Compression::None)[..HEADER_LEN]);
    header[21..23].copy_from_slice(&2i16.to_be_bytes()); // snappy
    let body: &[u8] = &[0x80, 0x80, 0x80, 0x80, 0x08, 0x00];
    let mut bomb = BytesMut::new();
    write_batch(&mut bomb, &header, 2, 1, body);
    let err = for_each_record(&bomb.freeze(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");

    // 80 MiB of zeros in zstd: a few kilobytes, over the cap once decompressed.
    let zeros = vec![0u8; 80 << 20];
    let compressed = zstd::encode_all(&zeros[..], 3).unwrap();
    let mut header = BytesMut::from(&batch(0, 1, 1, Compression::None)[..HEADER_LEN]);
    header[21..23].copy_from_slice(&4i16.to_be_bytes());
    let mut bomb = BytesMut::new();
    write_batch(&mut bomb, &header, 4, 1, &compressed);
    let err = retain_records(&bomb.freeze(), |_| true).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

#[test]
fn a_record_offset_outside_its_batch_is_refused() {
    let payload = batch(0, 3, 3, Compression::None);
    let mut damaged = BytesMut::from(&payload[..]);
    // The first record: length varint, attributes, timestamp delta (0), then the offset delta (0).
    let at = HEADER_LEN + 3;
    assert_eq!(damaged[at], 0, "offset delta of record 0");
    damaged[at] = 20; // zig-zag 10: beyond lastOffsetDelta 2
    let err = for_each_record(&damaged.freeze(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("outside its batch"), "{err}");
}

#[test]
fn damaged_payloads_are_not_empty_and_do_not_panic() {
    let payload = batch(0, 2, 2, Compression::None);
    let empty = retain_records(&payload, |_| false).unwrap().unwrap();
    for cut in [0, 1, 30, HEADER_LEN - 1] {
        assert!(!is_empty(&empty.slice(..cut)), "cut at {cut}");
    }
    let mut short_length = BytesMut::from(&empty[..]);
    short_length[8..12].copy_from_slice(&10i32.to_be_bytes());
    assert!(!is_empty(&short_length.freeze()));
}

#[test]
fn damage_is_an_error_not_a_panic() {
    let payload = batch(0, 6, 6, Compression::None);
    for cut in [1, 30, HEADER_LEN + 3, payload.len() - 2] {
        let damaged = payload.slice(..cut);
        assert!(for_each_record(&damaged, |_| {}).is_err(), "cut at {cut}");
    }
    let mut garbled = BytesMut::from(&payload[..]);
    garbled[HEADER_LEN] = 0x7f; // a record length far beyond the batch
    assert!(retain_records(&garbled.freeze(), |_| false).is_err());
}
