//! Prints what the metadata log says about one stream: `dump_stream file:///bucket STREAM`.
#![allow(clippy::unwrap_used)]
use std::sync::Arc;

use object_store::ObjectStore;
use weir_common::StreamId;
use weir_controller::log::{decode, log_key, read_log_object};
use weir_controller::records::Kind;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args[1].strip_prefix("file://").unwrap();
    let stream: u64 = args[2].parse().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(path).unwrap());
    let mut state = weir_controller::State::default();
    let mut seq = 0;
    while let Some(bytes) = read_log_object(&store, seq).await.unwrap() {
        for r in decode(&bytes, &log_key(seq)).unwrap() {
            let touches = match &r.kind {
                Some(Kind::ObjectsCommitted(c)) => c
                    .objects
                    .iter()
                    .any(|o| o.ranges.iter().any(|x| x.stream == stream)),
                Some(Kind::ObjectsCompacted(c)) => {
                    c.added
                        .iter()
                        .any(|o| o.ranges.iter().any(|x| x.stream == stream))
                        || state.streams.get(&StreamId(stream)).is_some_and(|s| {
                            s.slices
                                .iter()
                                .any(|sl| c.removed.contains(&sl.object.id.get()))
                        })
                }
                Some(Kind::StreamOpened(o)) => o.stream == stream,
                Some(Kind::StreamAssigned(o)) => o.stream == stream,
                Some(Kind::StreamMoveRequested(o)) => o.stream == stream,
                Some(Kind::StreamTrimmed(o)) => o.stream == stream,
                Some(Kind::ControllerElected(_)) | Some(Kind::BrokerFenced(_)) => true,
                _ => false,
            };
            if touches {
                println!("{seq}: {:?}", r.kind);
            }
            state.apply(&r);
        }
        seq += 1;
    }
    let s = &state.streams[&StreamId(stream)];
    println!("end {} epoch {} owner {}", s.end, s.epoch, s.owner);
    for sl in &s.slices {
        println!(
            "slice {}..{} in {} ({} bytes)",
            sl.start, sl.end, sl.object.id, sl.bytes
        );
    }
}
