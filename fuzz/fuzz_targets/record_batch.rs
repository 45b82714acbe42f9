//! A produce payload: validation, and everything the broker does with a payload it accepted
//! (offset assignment, producer headers, transaction markers, key compaction's record walk and
//! rewrite), never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_broker::batch;

fuzz_target!(|data: &[u8]| {
    let Ok(summary) = batch::validate(data, 1 << 20) else {
        return;
    };
    let stored = bytes::Bytes::from(batch::assign_offsets(data, 42, 7).to_vec());
    assert_eq!(stored.len(), data.len());
    assert_eq!(batch::batches(&stored).len(), summary.batches);
    let _ = batch::producer_batches(&stored);
    let _ = batch::is_transactional(&stored);
    let mut n = 0u64;
    let _ = batch::filter::for_each_record(&stored, |_| n += 1);
    let mut keep = false;
    let _ = batch::filter::retain_records(&stored, |_| {
        keep = !keep;
        keep
    });
});
