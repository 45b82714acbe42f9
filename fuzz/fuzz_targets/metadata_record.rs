//! A metadata log record read from the bucket: decoding it and applying it to the state (empty, or
//! after the records before it) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weir_controller::records::Record;
use weir_controller::state::State;

fuzz_target!(|data: &[u8]| {
    let mut state = State::default();
    // Several records in a row: each input byte run split at 0xff bytes.
    for part in data.split(|b| *b == 0xff) {
        if let Ok(record) = Record::decode(part) {
            state.apply(&record);
            let _ = state.to_records();
        }
    }
});
