//! The controller's gRPC messages (generated from `proto/controller.proto` at build time) and the
//! conversions between them and Weir's types, errors included: a failed call carries a [`pb::Failure`]
//! in its status details, so the caller gets back the exact [`MetadataError`] or [`ControllerError`].

use prost::Message;
use tonic::{Code, Status};
use weir_common::{Epoch, ObjectId, Offset, StreamId};
use weir_storage::{MetadataError, NewObject, ObjectDescriptor, ObjectKind, StreamRange};

use crate::ControllerError;

/// The generated messages, client and server.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod pb {
    tonic::include_proto!("weir.controller.v1");
}

use pb::failure::Kind as F;

fn failure(kind: F, stream: u64, a: u64, b: u64, detail: String) -> pb::Failure {
    pb::Failure {
        kind: kind as i32,
        stream,
        a,
        b,
        detail,
    }
}

fn status(code: Code, f: &pb::Failure, message: String) -> Status {
    Status::with_details(code, message, f.encode_to_vec().into())
}

/// The status a metadata error travels as.
pub fn metadata_status(e: &MetadataError) -> Status {
    let message = e.to_string();
    let (code, f) = match e {
        MetadataError::UnknownStream(s) => (
            Code::NotFound,
            failure(F::UnknownStream, s.get(), 0, 0, String::new()),
        ),
        MetadataError::Fenced {
            stream,
            epoch,
            current,
        } => (
            Code::FailedPrecondition,
            failure(
                F::Fenced,
                stream.get(),
                epoch.get(),
                current.get(),
                String::new(),
            ),
        ),
        MetadataError::NotContiguous {
            stream,
            expected,
            found,
        } => (
            Code::FailedPrecondition,
            failure(
                F::NotContiguous,
                stream.get(),
                expected.get(),
                found.get(),
                String::new(),
            ),
        ),
        MetadataError::ObjectFenced(id) => (
            Code::FailedPrecondition,
            failure(F::ObjectFenced, 0, id.get(), 0, String::new()),
        ),
        MetadataError::ReplacedObjectsChanged(d) => (
            Code::Aborted,
            failure(F::ReplacedObjectsChanged, 0, 0, 0, d.clone()),
        ),
        MetadataError::Unavailable(d) => (
            Code::Unavailable,
            failure(F::Unavailable, 0, 0, 0, d.clone()),
        ),
    };
    status(code, &f, message)
}

/// The status a controller error travels as.
pub fn controller_status(e: &ControllerError) -> Status {
    let message = e.to_string();
    let (code, f) = match e {
        ControllerError::TopicExists(t) => (
            Code::AlreadyExists,
            failure(F::TopicExists, 0, 0, 0, t.clone()),
        ),
        ControllerError::UnknownTopic(t) => {
            (Code::NotFound, failure(F::UnknownTopic, 0, 0, 0, t.clone()))
        }
        ControllerError::InvalidTopicName(t) => (
            Code::InvalidArgument,
            failure(F::InvalidTopicName, 0, 0, 0, t.clone()),
        ),
        ControllerError::InvalidPartitions(n) => (
            Code::InvalidArgument,
            failure(F::InvalidPartitions, 0, u64::from(*n), 0, String::new()),
        ),
        ControllerError::UnknownBroker(n) => (
            Code::NotFound,
            failure(F::UnknownBroker, 0, u64::from(*n), 0, String::new()),
        ),
        ControllerError::UnknownStream(s) => (
            Code::NotFound,
            failure(F::UnknownStream, s.get(), 0, 0, String::new()),
        ),
        ControllerError::InvalidRequest(d) => (
            Code::InvalidArgument,
            failure(F::InvalidRequest, 0, 0, 0, d.clone()),
        ),
        ControllerError::NotController(known) => (
            Code::Unavailable,
            failure(
                F::NotController,
                0,
                u64::from(known.unwrap_or(0)),
                0,
                String::new(),
            ),
        ),
        // Lost leadership, store trouble, damaged metadata: the call may be retried elsewhere.
        other => (
            Code::Unavailable,
            failure(F::Unavailable, 0, 0, 0, other.to_string()),
        ),
    };
    status(code, &f, message)
}

fn decode_failure(s: &Status) -> Option<pb::Failure> {
    pb::Failure::decode(s.details())
        .ok()
        .filter(|_| !s.details().is_empty())
}

/// Whether the call should be retried against another (or a new) controller.
pub fn is_retriable(s: &Status) -> bool {
    match decode_failure(s) {
        Some(f) => matches!(f.kind(), F::Unavailable | F::NotController),
        // No failure attached: a transport error, a dead connection, a timeout.
        None => true,
    }
}

/// The metadata error a status stands for.
pub fn metadata_error(s: &Status) -> MetadataError {
    let Some(f) = decode_failure(s) else {
        return MetadataError::Unavailable(format!("controller call failed: {}", s.message()));
    };
    match f.kind() {
        F::UnknownStream => MetadataError::UnknownStream(StreamId(f.stream)),
        F::Fenced => MetadataError::Fenced {
            stream: StreamId(f.stream),
            epoch: Epoch(f.a),
            current: Epoch(f.b),
        },
        F::NotContiguous => MetadataError::NotContiguous {
            stream: StreamId(f.stream),
            expected: Offset(f.a),
            found: Offset(f.b),
        },
        F::ObjectFenced => MetadataError::ObjectFenced(ObjectId(f.a)),
        F::ReplacedObjectsChanged => MetadataError::ReplacedObjectsChanged(f.detail),
        F::Unavailable if !f.detail.is_empty() => MetadataError::Unavailable(f.detail),
        _ => MetadataError::Unavailable(s.message().to_owned()),
    }
}

/// The controller error a status stands for.
pub fn controller_error(s: &Status) -> ControllerError {
    let Some(f) = decode_failure(s) else {
        return ControllerError::Unavailable(format!("controller call failed: {}", s.message()));
    };
    match f.kind() {
        F::TopicExists => ControllerError::TopicExists(f.detail),
        F::UnknownTopic => ControllerError::UnknownTopic(f.detail),
        F::InvalidTopicName => ControllerError::InvalidTopicName(f.detail),
        F::InvalidPartitions => {
            ControllerError::InvalidPartitions(u32::try_from(f.a).unwrap_or(u32::MAX))
        }
        F::UnknownBroker => ControllerError::UnknownBroker(u32::try_from(f.a).unwrap_or(0)),
        F::UnknownStream => ControllerError::UnknownStream(StreamId(f.stream)),
        F::InvalidRequest => ControllerError::InvalidRequest(f.detail),
        F::NotController => {
            ControllerError::NotController(u32::try_from(f.a).ok().filter(|n| *n != 0))
        }
        F::Unavailable if !f.detail.is_empty() => ControllerError::Unavailable(f.detail),
        _ => ControllerError::Unavailable(s.message().to_owned()),
    }
}

/// A new object on the wire.
pub fn object_to_pb(o: &NewObject) -> pb::NewObject {
    pb::NewObject {
        id: o.object.id.get(),
        size: o.object.size,
        kind: match o.object.kind {
            ObjectKind::StreamSet => 0,
            ObjectKind::Stream => 1,
        },
        ranges: o
            .ranges
            .iter()
            .map(|r| pb::Range {
                stream: r.stream_id.get(),
                epoch: r.epoch.get(),
                start: r.start.get(),
                end: r.end.get(),
                bytes: r.bytes,
            })
            .collect(),
    }
}

/// A new object off the wire.
pub fn object_from_pb(o: &pb::NewObject) -> NewObject {
    NewObject {
        object: ObjectDescriptor {
            id: ObjectId(o.id),
            size: o.size,
            kind: if o.kind == 1 {
                ObjectKind::Stream
            } else {
                ObjectKind::StreamSet
            },
        },
        ranges: o
            .ranges
            .iter()
            .map(|r| StreamRange {
                stream_id: StreamId(r.stream),
                epoch: Epoch(r.epoch),
                start: Offset(r.start),
                end: Offset(r.end),
                bytes: r.bytes,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_wire() {
        let metadata = [
            MetadataError::UnknownStream(StreamId(3)),
            MetadataError::Fenced {
                stream: StreamId(1),
                epoch: Epoch(2),
                current: Epoch(5),
            },
            MetadataError::NotContiguous {
                stream: StreamId(1),
                expected: Offset(10),
                found: Offset(4),
            },
            MetadataError::ObjectFenced(ObjectId(77)),
            MetadataError::ReplacedObjectsChanged("x".into()),
            MetadataError::Unavailable("store down".into()),
        ];
        for e in metadata {
            assert_eq!(metadata_error(&metadata_status(&e)), e);
        }
        let controller = [
            ControllerError::TopicExists("t".into()),
            ControllerError::UnknownTopic("t".into()),
            ControllerError::InvalidTopicName("..".into()),
            ControllerError::InvalidPartitions(0),
            ControllerError::UnknownBroker(4),
            ControllerError::UnknownStream(StreamId(9)),
            ControllerError::InvalidRequest("no".into()),
            ControllerError::NotController(Some(2)),
            ControllerError::NotController(None),
        ];
        for e in controller {
            let back = controller_error(&controller_status(&e));
            assert_eq!(back.to_string(), e.to_string());
        }
        assert!(is_retriable(&controller_status(
            &ControllerError::NotController(None)
        )));
        assert!(!is_retriable(&metadata_status(
            &MetadataError::UnknownStream(StreamId(1))
        )));
        assert!(is_retriable(&Status::unavailable("connection refused")));
    }
}
