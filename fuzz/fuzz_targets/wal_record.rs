//! A WAL segment's bytes, as recovery reads them after a crash: decoding records one after the
//! other never panics, and never reads past the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_wal::record::{Decoded, decode};

fuzz_target!(|data: &[u8]| {
    let buf = bytes::Bytes::copy_from_slice(data);
    let mut at = 0usize;
    while at < buf.len() {
        match decode(&buf, at, 1 << 20) {
            Ok(Decoded::Record(record, len)) => {
                assert!(len > 0 && at + len <= buf.len());
                assert!(record.payload.len() <= len);
                at += len;
            }
            Ok(Decoded::End) | Err(_) => break,
        }
    }
});
