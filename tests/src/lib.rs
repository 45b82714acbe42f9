//! Cross-crate integration tests and the helper programs they run.
//!
//! The tests live in `tests/tests/`. Helper programs (`src/bin/`) are the processes the tests start and
//! kill; [`payload`] is shared by both sides so a test can check bytes it never saw being written.

use bytes::Bytes;

pub mod browser;
pub mod cluster;
pub mod receiver;
pub mod s3;

/// The payload the crash writer appends as record `seq` of `stream`: deterministic, distinct, and of a
/// length that varies with `seq`.
pub fn payload(stream: u64, seq: u64) -> Bytes {
    let len = 64 + (seq % 17) as usize * 61;
    let mut x =
        stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Bytes::from(bytes)
}
