//! A request frame from a client: decoding it never panics, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weir_broker::wire::decode_request(bytes::Bytes::copy_from_slice(data));
});
