//! Weir's shared vocabulary.
//!
//! Every crate of the workspace speaks in these types so that a stream id can never be passed where an
//! offset is expected (STYLE.md habit 8). The crate has no Weir dependencies and almost no external ones,
//! so it sits at the bottom of the dependency graph.

mod clock;
mod ids;
pub mod writeback;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{Epoch, ObjectId, Offset, StreamId};
