use bytes::Bytes;
use weir_common::{Epoch, Offset, StreamId};

use super::*;

fn sample() -> WalRecord {
    WalRecord {
        stream_id: StreamId(0x0102_0304_0506_0708),
        epoch: Epoch(3),
        base_offset: Offset(42),
        count: 5,
        payload: Bytes::from_static(b"kafka"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The record format is persistent: if this test fails, the bytes on disk changed. Bump `VERSION` and
/// keep reading the old one instead of editing the expected value.
#[test]
fn golden_bytes() {
    let mut out = Vec::new();
    encode(&sample(), &mut out);
    assert_eq!(
        hex(&out),
        concat!(
            "57524543",         // magic "WREC"
            "01",               // version
            "00000021",         // length = 28 + 5
            "190b2c7e",         // crc32c of version, length, body
            "0102030405060708", // stream id
            "0000000000000003", // epoch
            "000000000000002a", // base offset
            "00000005",         // count
            "6b61666b61",       // payload "kafka"
        )
    );
}

#[test]
fn round_trip_slices_payload_without_copy() {
    let mut out = vec![0xAA; 7]; // something before the record
    encode(&sample(), &mut out);
    out.extend_from_slice(&[0, 0, 0, 0]);
    let buf = Bytes::from(out);
    let Ok(Decoded::Record(rec, used)) = decode(&buf, 7, 1 << 20) else {
        panic!("expected a record");
    };
    assert_eq!(rec, sample());
    assert_eq!(used, sample().encoded_len());
    assert_eq!(rec.payload.as_ptr(), buf[7 + 41..].as_ptr());
    assert_eq!(decode(&buf, 7 + used, 1 << 20), Ok(Decoded::End));
}

#[test]
fn zeros_and_empty_input_are_the_end() {
    assert_eq!(decode(&Bytes::new(), 0, 1 << 20), Ok(Decoded::End));
    assert_eq!(
        decode(&Bytes::from(vec![0u8; 64]), 0, 1 << 20),
        Ok(Decoded::End)
    );
}

fn encoded() -> Vec<u8> {
    let mut out = Vec::new();
    encode(&sample(), &mut out);
    out
}

#[test]
fn every_kind_of_damage_is_a_typed_error() {
    let check = |bytes: Vec<u8>, max: usize| decode(&Bytes::from(bytes), 0, max).unwrap_err();

    let mut bad_magic = encoded();
    bad_magic[0] = 0x11;
    assert!(
        matches!(check(bad_magic, 1 << 20), CorruptReason::BadMagic { found } if found == 0x1152_4543)
    );

    let mut bad_version = encoded();
    bad_version[4] = 9;
    assert_eq!(
        check(bad_version, 1 << 20),
        CorruptReason::BadVersion { found: 9 }
    );

    let mut bad_length = encoded();
    bad_length[5..9].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(
        check(bad_length, 1 << 20),
        CorruptReason::BadLength { length: 3 }
    );

    assert_eq!(
        check(encoded(), 40),
        CorruptReason::BadLength { length: 33 }
    );

    let mut truncated = encoded();
    truncated.truncate(30);
    assert_eq!(
        check(truncated, 1 << 20),
        CorruptReason::Truncated {
            needed: 46,
            available: 30
        }
    );

    let mut short_header = encoded();
    short_header.truncate(6);
    assert!(matches!(
        check(short_header, 1 << 20),
        CorruptReason::Truncated { .. }
    ));

    let mut flipped = encoded();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    assert!(matches!(
        check(flipped, 1 << 20),
        CorruptReason::CrcMismatch { .. }
    ));
}

#[test]
fn every_single_bit_flip_is_detected() {
    let clean = encoded();
    for byte in 0..clean.len() {
        for bit in 0..8 {
            let mut damaged = clean.clone();
            damaged[byte] ^= 1 << bit;
            let result = decode(&Bytes::from(damaged), 0, 1 << 20);
            // A single flip cannot zero the four magic bytes, so every flip must surface as an error,
            // never as a different record.
            assert!(
                result.is_err(),
                "flip of byte {byte} bit {bit} went unnoticed: {result:?}"
            );
        }
    }
}
