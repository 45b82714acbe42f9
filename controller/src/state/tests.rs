use proptest::prelude::*;
use weir_common::{Epoch, ObjectId, Offset, StreamId};

use super::*;
use crate::records::*;

fn topic(name: &str, streams: &[u64]) -> Record {
    Kind::TopicCreated(TopicCreated {
        name: name.into(),
        id: Uuid::from_u128(u128::from(streams[0]) + 1)
            .as_bytes()
            .to_vec(),
        partition_streams: streams.to_vec(),
        configs: [("retention.ms".to_string(), "1000".to_string())].into(),
    })
    .into()
}

fn commit(id: u64, ranges: &[(u64, u64, u64)]) -> Record {
    Kind::ObjectsCommitted(ObjectsCommitted {
        objects: vec![CommittedObject {
            id,
            size: 100,
            kind: 0,
            ranges: ranges
                .iter()
                .map(|(stream, start, end)| CommittedRange {
                    stream: *stream,
                    epoch: 1,
                    start: *start,
                    end: *end,
                    bytes: (end - start) * 10,
                })
                .collect(),
            // A function of the id: ids are unique in a real log.
            committed_at_ms: id * 7,
        }],
    })
    .into()
}

#[test]
fn topics_create_streams_and_delete_removes_them() {
    let mut s = State::default();
    s.apply(&topic("orders", &[0, 1, 2]));
    assert_eq!(
        s.topics["orders"].partitions,
        vec![StreamId(0), StreamId(1), StreamId(2)]
    );
    assert_eq!(s.streams.len(), 3);
    assert_eq!(s.next_stream_id, 3);
    assert_eq!(
        s.topic_by_id(Uuid::from_u128(1)).map(|t| t.name.as_str()),
        Some("orders")
    );
    s.apply(
        &Kind::TopicDeleted(TopicDeleted {
            name: "orders".into(),
        })
        .into(),
    );
    assert!(s.topics.is_empty() && s.streams.is_empty());
    assert_eq!(s.next_stream_id, 3, "ids are never reused");
}

#[test]
fn commits_extend_streams_in_offset_order() {
    let mut s = State::default();
    s.apply(&topic("t", &[0, 1]));
    s.apply(
        &Kind::StreamOpened(StreamOpened {
            stream: 0,
            epoch: 1,
            start_offset: 0,
        })
        .into(),
    );
    s.apply(&commit(7, &[(0, 0, 10), (1, 0, 5)]));
    s.apply(&commit(8, &[(0, 10, 12)]));
    let stream = &s.streams[&StreamId(0)];
    assert_eq!(stream.epoch, Epoch(1));
    assert_eq!(stream.end, Offset(12));
    let ids: Vec<_> = stream.slices.iter().map(|sl| sl.object.id).collect();
    assert_eq!(ids, vec![ObjectId(7), ObjectId(8)]);
    assert_eq!(s.next_object_id, 9);
    assert_eq!(s.objects.len(), 2);
}

#[test]
fn records_of_deleted_streams_are_ignored() {
    let mut s = State::default();
    s.apply(&commit(3, &[(42, 0, 10)]));
    assert!(s.streams.is_empty());
    assert_eq!(
        s.objects.len(),
        1,
        "an object no stream references is still tracked, for collection"
    );
    s.apply(
        &Kind::StreamOpened(StreamOpened {
            stream: 42,
            epoch: 9,
            start_offset: 0,
        })
        .into(),
    );
    assert!(s.streams.is_empty());
}

fn record_strategy() -> impl Strategy<Value = Record> {
    prop_oneof![
        (0u64..6, 1usize..4).prop_map(|(first, n)| {
            let streams: Vec<u64> = (first * 10..first * 10 + n as u64).collect();
            topic(&format!("topic-{first}"), &streams)
        }),
        (0u64..6).prop_map(|t| Kind::TopicDeleted(TopicDeleted {
            name: format!("topic-{t}")
        })
        .into()),
        (0u64..60, 1u64..5, 0u64..100).prop_map(|(stream, epoch, start_offset)| {
            Kind::StreamOpened(StreamOpened {
                stream,
                epoch,
                start_offset,
            })
            .into()
        }),
        (0u64..100, 0u64..60, 0u64..50, 1u64..50)
            .prop_map(|(id, stream, start, len)| commit(id, &[(stream, start, start + len)])),
        (100u64..200).prop_map(|stream| Kind::StreamCreated(StreamCreated {
            stream,
            end_offset: 0
        })
        .into()),
        (0u64..6, 0u64..1000).prop_map(|(t, ms)| {
            let configs = [("retention.ms".to_string(), ms.to_string())].into();
            Kind::TopicConfigsSet(TopicConfigsSet {
                name: format!("topic-{t}"),
                configs,
            })
            .into()
        }),
        // Stream ids are never shared between topics (the controller hands out fresh ones).
        (0u64..6, 0u64..5).prop_map(|(t, k)| {
            Kind::PartitionsAdded(PartitionsAdded {
                name: format!("topic-{t}"),
                partition_streams: vec![300 + t * 10 + k],
            })
            .into()
        }),
        (0u64..60, 0u64..80).prop_map(|(stream, start_offset)| {
            Kind::StreamTrimmed(StreamTrimmed {
                stream,
                start_offset,
            })
            .into()
        }),
        proptest::collection::vec(0u64..100, 0..4)
            .prop_map(|ids| Kind::ObjectsDeleted(ObjectsDeleted { ids }).into()),
        (0u64..100).prop_map(|below| Kind::ObjectIdFence(ObjectIdFence { below }).into()),
        (
            proptest::collection::vec(0u64..100, 0..3),
            100u64..150,
            0u64..60,
            0u64..50,
            1u64..50
        )
            .prop_map(|(removed, id, stream, start, len)| {
                let Some(Kind::ObjectsCommitted(c)) =
                    commit(id, &[(stream, start, start + len)]).kind
                else {
                    unreachable!("commit() builds an ObjectsCommitted record")
                };
                Kind::ObjectsCompacted(ObjectsCompacted {
                    removed,
                    added: c.objects,
                })
                .into()
            }),
        (0u64..500, 0u64..500).prop_map(|(a, b)| Kind::Counters(Counters {
            next_producer_id: 0,
            next_stream_id: a,
            next_object_id: b
        })
        .into()),
        (1u32..4, 0u64..4, any::<bool>()).prop_map(|(node_id, epoch, controller)| {
            Kind::BrokerRegistered(BrokerRegistered {
                node_id,
                epoch,
                host: format!("host-{node_id}"),
                port: 9092 + node_id,
                rpc: format!("http://rpc-{node_id}-{epoch}"),
                admin: String::new(),
                controller,
                wal: "object".into(),
            })
            .into()
        }),
        (1u32..4, 0u64..4).prop_map(|(node_id, epoch)| Kind::BrokerFenced(BrokerFenced {
            node_id,
            epoch
        })
        .into()),
        // Terms are unique in a real log (each election is one more than the last it saw).
        (0u64..20).prop_map(|term| Kind::ControllerElected(ControllerElected {
            node_id: (term % 3) as u32 + 1,
            term,
            rpc: format!("http://controller-{term}"),
        })
        .into()),
        (0u64..60, 0u32..4).prop_map(|(stream, owner)| Kind::StreamAssigned(StreamAssigned {
            stream,
            owner
        })
        .into()),
        (0u64..60, 0u32..4).prop_map(|(stream, target)| {
            Kind::StreamMoveRequested(StreamMoveRequested { stream, target }).into()
        }),
    ]
}

proptest! {
    /// A snapshot (the state as records) rebuilds exactly the state it was taken of.
    #[test]
    fn snapshot_records_rebuild_the_same_state(records in proptest::collection::vec(record_strategy(), 0..60)) {
        let mut state = State::default();
        for r in &records {
            state.apply(r);
        }
        let mut rebuilt = State::default();
        for r in state.to_records() {
            rebuilt.apply(&r);
        }
        prop_assert_eq!(rebuilt, state);
    }

    /// Every kind of record survives its encoding (a kind missing from the `oneof` tags would decode
    /// as nothing).
    #[test]
    fn records_survive_encoding(records in proptest::collection::vec(record_strategy(), 0..60)) {
        use prost::Message;
        for r in &records {
            let decoded = Record::decode(r.encode_to_vec().as_slice());
            prop_assert_eq!(decoded.as_ref(), Ok(r));
        }
    }

    /// Applying is deterministic: the same records give the same state.
    #[test]
    fn apply_is_deterministic(records in proptest::collection::vec(record_strategy(), 0..60)) {
        let mut a = State::default();
        let mut b = State::default();
        for r in &records {
            a.apply(r);
            b.apply(r);
        }
        prop_assert_eq!(a, b);
    }
}

#[test]
fn epoch_history_answers_offset_for_leader_epoch() {
    let mut s = State::default();
    s.apply(&topic("t", &[0]));
    let open = |epoch, start_offset| -> Record {
        Kind::StreamOpened(StreamOpened {
            stream: 0,
            epoch,
            start_offset,
        })
        .into()
    };
    s.apply(&open(1, 0));
    s.apply(&open(2, 10));
    s.apply(&open(3, 10)); // nothing written under epoch 2
    s.apply(&open(4, 25));
    let id = StreamId(0);
    assert_eq!(s.epoch_end(id, Epoch(0)), None);
    assert_eq!(
        s.epoch_end(id, Epoch(1)),
        Some((Epoch(1), Some(Offset(10))))
    );
    assert_eq!(
        s.epoch_end(id, Epoch(2)),
        Some((Epoch(1), Some(Offset(10)))),
        "epoch 2 left no trace"
    );
    assert_eq!(
        s.epoch_end(id, Epoch(3)),
        Some((Epoch(3), Some(Offset(25))))
    );
    assert_eq!(s.epoch_end(id, Epoch(4)), Some((Epoch(4), None)));
    assert_eq!(s.epoch_end(id, Epoch(9)), Some((Epoch(4), None)));
}

#[test]
fn trimming_drops_whole_slices_and_leaves_their_objects_unreferenced() {
    let mut s = State::default();
    s.apply(&topic("t", &[0, 1]));
    s.apply(&commit(7, &[(0, 0, 10), (1, 0, 5)]));
    s.apply(&commit(8, &[(0, 10, 20)]));
    let trim = |stream, start_offset| -> Record {
        Kind::StreamTrimmed(StreamTrimmed {
            stream,
            start_offset,
        })
        .into()
    };
    s.apply(&trim(0, 15));
    let starts: Vec<_> = s.streams[&StreamId(0)]
        .slices
        .iter()
        .map(|x| x.start)
        .collect();
    assert_eq!(
        starts,
        [Offset(10)],
        "the slice below 15 is gone, the one across it stays"
    );
    assert!(
        s.unreferenced_objects().is_empty(),
        "object 7 still holds stream 1"
    );
    s.apply(&trim(1, 5));
    let gone: Vec<_> = s.unreferenced_objects().iter().map(|o| o.id).collect();
    assert_eq!(gone, [ObjectId(7)]);
    s.apply(&Kind::ObjectsDeleted(ObjectsDeleted { ids: vec![7] }).into());
    assert!(s.unreferenced_objects().is_empty());
    assert!(!s.objects.contains_key(&ObjectId(7)));
}
