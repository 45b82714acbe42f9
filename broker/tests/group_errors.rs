//! The group protocol on the wire. Requests Kafka refuses get Kafka's error codes: unknown
//! members, stale generations, commits for partitions that do not exist, members with no protocol
//! in common. A group's generation, members and assignments survive a broker restart.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};

use common::{InProcess, Raw};

fn s(t: &str) -> StrBytes {
    StrBytes::from_string(t.to_string())
}

fn join(raw: &mut Raw, member: &str, protocol: &str) -> JoinGroupResponse {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s(protocol))
                .with_metadata(Bytes::from_static(b"m")),
        ]);
    let mut r = raw.request(ApiKey::JoinGroup, 5, &request).unwrap();
    JoinGroupResponse::decode(&mut r, 5).unwrap()
}

fn heartbeat(raw: &mut Raw, member: &str, generation: i32) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member));
    let mut r = raw.request(ApiKey::Heartbeat, 3, &request).unwrap();
    HeartbeatResponse::decode(&mut r, 3).unwrap().error_code
}

fn commit(raw: &mut Raw, member: &str, generation: i32, topic: &str, partition: i32) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(1),
                ]),
        ]);
    let mut r = raw.request(ApiKey::OffsetCommit, 8, &request).unwrap();
    OffsetCommitResponse::decode(&mut r, 8).unwrap().topics[0].partitions[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_group_requests_get_kafka_error_codes() {
    let node = InProcess::start().await;
    node.server
        .node()
        .create_topic("t", 2, Default::default())
        .await
        .unwrap();
    let node = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(&node);
        // A new member first learns its id (KIP-394), then joins with it.
        let first = join(&mut raw, "", "range");
        assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
        let member = first.member_id.to_string();
        let joined = join(&mut raw, &member, "range");
        assert_eq!(joined.error_code, 0);
        let generation = joined.generation_id;
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(generation)
            .with_member_id(s(&member))
            .with_assignments(vec![]);
        let mut r = raw.request(ApiKey::SyncGroup, 3, &sync).unwrap();
        assert_eq!(SyncGroupResponse::decode(&mut r, 3).unwrap().error_code, 0);

        assert_eq!(heartbeat(&mut raw, &member, generation), 0);
        assert_eq!(
            heartbeat(&mut raw, "stranger", generation),
            25,
            "UNKNOWN_MEMBER_ID"
        );
        assert_eq!(
            heartbeat(&mut raw, &member, generation - 1),
            22,
            "ILLEGAL_GENERATION"
        );
        assert_eq!(
            join(&mut raw, "stranger", "range").error_code,
            25,
            "UNKNOWN_MEMBER_ID on join"
        );
        assert_eq!(
            join(&mut raw, "", "roundrobin").error_code,
            23,
            "INCONSISTENT_GROUP_PROTOCOL"
        );

        assert_eq!(commit(&mut raw, &member, generation, "t", 1), 0);
        assert_eq!(
            commit(&mut raw, &member, generation, "t", 7),
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            commit(&mut raw, &member, generation, "nope", 0),
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            commit(&mut raw, &member, generation + 5, "t", 0),
            22,
            "ILLEGAL_GENERATION"
        );
        assert_eq!(
            commit(&mut raw, "", -1, "t", 0),
            25,
            "a simple commit into a live group"
        );

        // The good commit is there; the refused ones changed nothing.
        let fetch = OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(None);
        let mut r = raw.request(ApiKey::OffsetFetch, 7, &fetch).unwrap();
        let fetched = OffsetFetchResponse::decode(&mut r, 7).unwrap();
        let offsets: Vec<(String, i32, i64)> = fetched
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.to_string(), p.partition_index, p.committed_offset))
            })
            .collect();
        assert_eq!(offsets, vec![("t".to_string(), 1, 1)]);

        // A group with members cannot be deleted; an unknown one is not found.
        let delete = |raw: &mut Raw, group: &str| {
            let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(group))]);
            let mut r = raw.request(ApiKey::DeleteGroups, 2, &request).unwrap();
            DeleteGroupsResponse::decode(&mut r, 2).unwrap().results[0].error_code
        };
        assert_eq!(delete(&mut raw, "g"), 68, "NON_EMPTY_GROUP");
        assert_eq!(delete(&mut raw, "nobody"), 69, "GROUP_ID_NOT_FOUND");
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(&member));
        let mut r = raw.request(ApiKey::LeaveGroup, 2, &leave).unwrap();
        assert_eq!(LeaveGroupResponse::decode(&mut r, 2).unwrap().error_code, 0);
        // Empty now: its offsets can be deleted, then the group itself.
        use kafka_protocol::messages::offset_delete_request::{
            OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
        };
        let offset_delete = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(1),
                    ]),
            ]);
        let mut r = raw
            .request(ApiKey::OffsetDelete, 0, &offset_delete)
            .unwrap();
        let deleted = OffsetDeleteResponse::decode(&mut r, 0).unwrap();
        assert_eq!(
            (
                deleted.error_code,
                deleted.topics[0].partitions[0].error_code
            ),
            (0, 0)
        );
        let mut r = raw.request(ApiKey::OffsetFetch, 7, &fetch).unwrap();
        assert!(
            OffsetFetchResponse::decode(&mut r, 7)
                .unwrap()
                .topics
                .is_empty(),
            "offset deleted"
        );
        assert_eq!(delete(&mut raw, "g"), 0);
        node
    })
    .await
    .unwrap();
    node.server.shutdown().await.unwrap();
}

fn sync(raw: &mut Raw, member: &str, generation: i32, assignment: &[u8]) -> (i16, Bytes) {
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(member))
                .with_assignment(Bytes::copy_from_slice(assignment)),
        ]);
    let mut r = raw.request(ApiKey::SyncGroup, 3, &request).unwrap();
    let response = SyncGroupResponse::decode(&mut r, 3).unwrap();
    (response.error_code, response.assignment)
}

fn describe(raw: &mut Raw) -> DescribedGroup {
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]);
    let mut r = raw.request(ApiKey::DescribeGroups, 3, &request).unwrap();
    DescribeGroupsResponse::decode(&mut r, 3)
        .unwrap()
        .groups
        .remove(0)
}

use kafka_protocol::messages::describe_groups_response::DescribedGroup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_state_survives_a_restart() {
    let node = InProcess::start().await;
    let (member, generation) = {
        let addr = node.server.kafka_addr();
        tokio::task::spawn_blocking(move || {
            let mut raw = Raw::connect_to(addr);
            let member = join(&mut raw, "", "range").member_id.to_string();
            let joined = join(&mut raw, &member, "range");
            assert_eq!(joined.error_code, 0);
            let generation = joined.generation_id;
            assert_eq!(
                sync(&mut raw, &member, generation, b"mine"),
                (0, Bytes::from_static(b"mine"))
            );
            (member, generation)
        })
        .await
        .unwrap()
    };
    let InProcess { server, dir } = node;
    server.shutdown().await.unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    let addr = server.kafka_addr();
    let member2 = member.clone();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let group = describe(&mut raw);
        assert_eq!(group.group_state.to_string(), "Stable");
        assert_eq!(group.protocol_data.to_string(), "range");
        assert_eq!(group.members.len(), 1);
        assert_eq!(group.members[0].member_id.to_string(), member2);
        assert_eq!(&group.members[0].member_assignment[..], b"mine");
        assert_eq!(group.members[0].client_host.to_string(), "/127.0.0.1");
        // The member carries on with its generation: no rebalance, same assignment.
        assert_eq!(heartbeat(&mut raw, &member2, generation), 0);
        assert_eq!(
            heartbeat(&mut raw, &member2, generation - 1),
            22,
            "ILLEGAL_GENERATION"
        );
        assert_eq!(
            sync(&mut raw, &member2, generation, b""),
            (0, Bytes::from_static(b"mine"))
        );
        assert_eq!(
            commit(&mut raw, &member2, generation, "__consumer_offsets", 0),
            0
        );
        // It leaves; the empty group keeps its generation across the next restart.
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(&member2));
        let mut r = raw.request(ApiKey::LeaveGroup, 2, &leave).unwrap();
        assert_eq!(LeaveGroupResponse::decode(&mut r, 2).unwrap().error_code, 0);
        assert_eq!(describe(&mut raw).group_state.to_string(), "Empty");
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    let addr = server.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let group = describe(&mut raw);
        assert_eq!(
            (group.error_code, group.group_state.to_string()),
            (0, "Empty".to_string())
        );
        assert_eq!(
            heartbeat(&mut raw, &member, generation),
            25,
            "UNKNOWN_MEMBER_ID"
        );
        let again = join(&mut raw, "", "range").member_id.to_string();
        let joined = join(&mut raw, &again, "range");
        assert_eq!(joined.error_code, 0);
        assert!(
            joined.generation_id > generation,
            "generation {} after {generation}",
            joined.generation_id
        );
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

fn cg_heartbeat(
    raw: &mut Raw,
    group: &str,
    member: &str,
    epoch: i32,
    topics: Option<&[&str]>,
    assignor: Option<&str>,
) -> ConsumerGroupHeartbeatResponse {
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(10_000)
        .with_server_assignor(assignor.map(s))
        .with_subscribed_topic_names(topics.map(|t| t.iter().map(|n| TopicName(s(n))).collect()));
    let mut r = raw
        .request(ApiKey::ConsumerGroupHeartbeat, 1, &request)
        .unwrap();
    ConsumerGroupHeartbeatResponse::decode(&mut r, 1).unwrap()
}

fn cg_describe(raw: &mut Raw, group: &str) -> consumer_group_describe_response::DescribedGroup {
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s(group))]);
    let mut r = raw
        .request(ApiKey::ConsumerGroupDescribe, 1, &request)
        .unwrap();
    ConsumerGroupDescribeResponse::decode(&mut r, 1)
        .unwrap()
        .groups
        .remove(0)
}

/// KIP-848 on the wire: the broker assigns; refusals carry Kafka's codes; the two protocols do
/// not mix in one group; the group's epochs and assignments survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_groups_on_the_wire() {
    let node = InProcess::start().await;
    node.server
        .node()
        .create_topic("t", 3, Default::default())
        .await
        .unwrap();
    let addr = node.server.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let joined = cg_heartbeat(&mut raw, "g848", "m1", 0, Some(&["t"]), None);
        assert_eq!(joined.error_code, 0, "{:?}", joined.error_message);
        assert_eq!(joined.member_epoch, 1);
        let assigned = joined.assignment.unwrap().topic_partitions;
        assert_eq!(assigned[0].partitions, vec![0, 1, 2]);
        let codes = [
            cg_heartbeat(&mut raw, "g848", "stranger", 1, None, None).error_code,
            cg_heartbeat(&mut raw, "g848", "m1", 9, None, None).error_code,
            cg_heartbeat(&mut raw, "g848", "m2", 0, Some(&["t"]), Some("magic")).error_code,
            cg_heartbeat(&mut raw, "g848", "m2", 0, None, None).error_code,
            cg_heartbeat(&mut raw, "", "m2", 0, Some(&["t"]), None).error_code,
        ];
        // UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH, UNSUPPORTED_ASSIGNOR, INVALID_REQUEST x2
        assert_eq!(codes, [25, 110, 112, 42, 42]);
        // A classic member cannot join a KIP-848 group with members.
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g848")))
            .with_session_timeout_ms(10_000)
            .with_member_id(s("classic-1"))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"m")),
            ]);
        let mut r = raw.request(ApiKey::JoinGroup, 5, &request).unwrap();
        assert_eq!(JoinGroupResponse::decode(&mut r, 5).unwrap().error_code, 23);
        // Described with its members and their assignments.
        let described = cg_describe(&mut raw, "g848");
        assert_eq!(described.error_code, 0);
        assert_eq!(
            (
                described.group_state.to_string(),
                described.group_epoch,
                described.assignment_epoch
            ),
            ("Stable".to_string(), 1, 1)
        );
        let member = &described.members[0];
        assert_eq!(member.client_host.to_string(), "/127.0.0.1");
        assert_eq!(
            member.assignment.topic_partitions[0].topic_name.to_string(),
            "t"
        );
        assert_eq!(
            cg_describe(&mut raw, "nobody").error_code,
            69,
            "GROUP_ID_NOT_FOUND"
        );
    })
    .await
    .unwrap();
    let InProcess { server, dir } = node;
    server.shutdown().await.unwrap();
    let server = weir_broker::Server::start(common::config(dir.path(), |_| {}))
        .await
        .unwrap();
    let addr = server.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        // The member carries on with its epoch after the restart.
        let again = cg_heartbeat(&mut raw, "g848", "m1", 1, None, None);
        assert_eq!((again.error_code, again.member_epoch), (0, 1));
        let described = cg_describe(&mut raw, "g848");
        assert_eq!(
            described.members[0].assignment.topic_partitions[0].partitions,
            vec![0, 1, 2]
        );
        // It leaves; the group is empty.
        let left = cg_heartbeat(&mut raw, "g848", "m1", -1, None, None);
        assert_eq!((left.error_code, left.member_epoch), (0, -1));
        assert_eq!(
            cg_describe(&mut raw, "g848").group_state.to_string(),
            "Empty"
        );
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}

/// Static membership (group.instance.id): a restarted member rejoins under its instance id and
/// gets its place back without a rebalance; it leaves by instance id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_rejoins_without_a_rebalance() {
    let node = InProcess::start().await;
    let addr = node.server.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect_to(addr);
        let join_static = |raw: &mut Raw, instance: &str| {
            let request = JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(s(""))
                .with_group_instance_id(Some(s(instance)))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(b"m")),
                ]);
            let mut r = raw.request(ApiKey::JoinGroup, 5, &request).unwrap();
            JoinGroupResponse::decode(&mut r, 5).unwrap()
        };
        // Two static members: the leader joins alone first, the second triggers one rebalance.
        let leader = join_static(&mut raw, "inst-a");
        assert_eq!(leader.error_code, 0);
        let a = leader.member_id.to_string();
        assert_eq!(sync(&mut raw, &a, leader.generation_id, b"a0").0, 0);
        let mut raw_b = Raw::connect_to(addr);
        let pending = std::thread::spawn(move || {
            let joined = join_static(&mut raw_b, "inst-b");
            (raw_b, joined)
        });
        // The leader rejoins for the rebalance the second member started.
        while describe(&mut raw).group_state.to_string() != "PreparingRebalance" {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let rejoined = join(&mut raw, &a, "range");
        let (mut raw_b, b_joined) = pending.join().unwrap();
        assert_eq!((rejoined.error_code, b_joined.error_code), (0, 0));
        let generation = rejoined.generation_id;
        let b = b_joined.member_id.to_string();
        assert_eq!(sync(&mut raw, &a, generation, b"a").0, 0);
        assert_eq!(sync(&mut raw_b, &b, generation, b"").1, Bytes::new());
        // "inst-b" restarts: it joins with no member id and gets its place back under a new
        // member id, same generation; the old id is fenced (KIP-345).
        let back = join_static(&mut raw_b, "inst-b");
        assert_eq!(back.error_code, 0);
        let b2 = back.member_id.to_string();
        assert_ne!(b2, b, "a new member id");
        assert_eq!(back.generation_id, generation, "no rebalance");
        assert_eq!(sync(&mut raw_b, &b2, generation, b"").0, 0);
        let static_heartbeat = |raw: &mut Raw, member: &str| {
            let request = HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id(generation)
                .with_member_id(s(member))
                .with_group_instance_id(Some(s("inst-b")));
            let mut r = raw.request(ApiKey::Heartbeat, 3, &request).unwrap();
            HeartbeatResponse::decode(&mut r, 3).unwrap().error_code
        };
        assert_eq!(
            static_heartbeat(&mut raw_b, &b),
            82,
            "FENCED_INSTANCE_ID for the old id"
        );
        assert_eq!(static_heartbeat(&mut raw_b, &b2), 0);
        assert_eq!(
            heartbeat(&mut raw, &a, generation),
            0,
            "the leader is undisturbed"
        );
        // It leaves by instance id (LeaveGroup v3+).
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        let leave = LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_members(vec![
                MemberIdentity::default()
                    .with_member_id(s(""))
                    .with_group_instance_id(Some(s("inst-b"))),
            ]);
        let mut r = raw_b.request(ApiKey::LeaveGroup, 3, &leave).unwrap();
        let left = LeaveGroupResponse::decode(&mut r, 3).unwrap();
        assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
        assert_eq!(describe(&mut raw).members.len(), 1);
    })
    .await
    .unwrap();
    node.server.shutdown().await.unwrap();
}
