//! A data object read back from the store: footer, index and blocks decode or fail cleanly, never
//! panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_storage::format::{FOOTER_LEN, Footer, ObjectIndex, decode_block};

fuzz_target!(|data: &[u8]| {
    if data.len() < FOOTER_LEN {
        return;
    }
    let size = data.len() as u64;
    let Ok(footer) = Footer::decode(&data[data.len() - FOOTER_LEN..], size) else {
        return;
    };
    let start = usize::try_from(footer.index_position).unwrap_or(usize::MAX);
    let end = start.saturating_add(footer.index_len as usize);
    let Some(index) = data.get(start..end) else {
        return;
    };
    let Ok(index) = ObjectIndex::decode(index, &footer) else {
        return;
    };
    let object = bytes::Bytes::copy_from_slice(data);
    for entry in &index.entries {
        let start = usize::try_from(entry.position).unwrap_or(usize::MAX);
        let end = start.saturating_add(entry.size as usize);
        if end <= object.len() {
            let _ = decode_block(&object.slice(start..end), entry);
        }
    }
});
