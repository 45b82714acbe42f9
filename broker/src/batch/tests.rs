use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;

fn encode(n: i32, compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i64::from(i),
            sequence: -1 + i,
            timestamp: 1_000 + i64::from(i),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("value {i}"))),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"v")),
            )]
            .into_iter()
            .collect(),
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

#[test]
fn valid_batches_of_every_codec_pass_and_keep_their_bytes() {
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let payload = encode(5, compression);
        let summary = validate(&payload, 1 << 20).unwrap();
        assert_eq!(
            summary,
            Summary {
                offsets: 5,
                batches: 1,
                max_timestamp: 1_004,
                largest_batch_records: 5,
            }
        );
        let stored = assign_offsets(&payload, 42, 7);
        assert_eq!(
            &stored[16..],
            &payload[16..],
            "only baseOffset and leader epoch change"
        );
        let mut b = stored.clone();
        let decoded = RecordBatchDecoder::decode(&mut b).unwrap();
        assert_eq!(decoded.records[0].offset, 42);
        assert_eq!(decoded.records[4].offset, 46);
        assert_eq!(decoded.records[0].partition_leader_epoch, 7);
    }
}

#[test]
fn several_batches_get_consecutive_offsets() {
    let mut payload = BytesMut::new();
    payload.extend_from_slice(&encode(3, Compression::None));
    payload.extend_from_slice(&encode(2, Compression::Zstd));
    let summary = validate(&payload, 1 << 20).unwrap();
    assert_eq!((summary.offsets, summary.batches), (5, 2));
    let stored = assign_offsets(&payload, 10, 1);
    let found: Vec<i64> = batches(&stored).iter().map(|b| b.0).collect();
    assert_eq!(found, vec![10, 13]);
}

#[test]
fn damage_is_refused_with_the_right_kind() {
    let good = encode(3, Compression::None);
    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    assert!(matches!(
        validate(&bad_crc, 1 << 20),
        Err(BatchError::Corrupt { .. })
    ));

    let mut old = good.to_vec();
    old[16] = 1;
    assert_eq!(
        validate(&old, 1 << 20),
        Err(BatchError::OldMagic { at: 0, magic: 1 })
    );

    assert!(matches!(
        validate(&good[..good.len() - 3], 1 << 20),
        Err(BatchError::Corrupt { .. })
    ));
    assert!(matches!(
        validate(&good[..20], 1 << 20),
        Err(BatchError::Corrupt { .. })
    ));
    assert!(matches!(
        validate(&[], 1 << 20),
        Err(BatchError::Corrupt { .. })
    ));
    assert!(matches!(
        validate(&good, 10),
        Err(BatchError::TooLarge { .. })
    ));

    let mut bad_count = good.to_vec();
    bad_count[57..61].copy_from_slice(&9i32.to_be_bytes());
    let crc = crc32c::crc32c(&bad_count[21..]);
    bad_count[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        validate(&bad_count, 1 << 20),
        Err(BatchError::Corrupt { .. })
    ));
}
