use std::collections::HashMap;

use weir_common::StreamId;

use super::{Loads, plan_balance};
use crate::records::*;
use crate::state::State;

fn cluster(brokers: &[u32], owners: &[u32]) -> State {
    let mut s = State::default();
    for b in brokers {
        s.apply(
            &Kind::BrokerRegistered(BrokerRegistered {
                node_id: *b,
                epoch: 1,
                ..BrokerRegistered::default()
            })
            .into(),
        );
    }
    s.apply(
        &Kind::TopicCreated(TopicCreated {
            name: "t".into(),
            id: vec![1; 16],
            partition_streams: (0..owners.len() as u64).collect(),
            configs: Default::default(),
        })
        .into(),
    );
    for (stream, owner) in owners.iter().enumerate() {
        s.apply(
            &Kind::StreamAssigned(StreamAssigned {
                stream: stream as u64,
                owner: *owner,
            })
            .into(),
        );
    }
    s
}

#[test]
fn a_new_broker_gets_its_share_and_a_balanced_cluster_stays_put() {
    let s = cluster(&[1, 2, 3], &[1, 1, 1, 2, 2, 2]);
    let moves = plan_balance(&s, &HashMap::new(), |_| true);
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert!(moves.iter().all(|(_, to)| *to == 3), "{moves:?}");
    let mut from: Vec<u64> = moves.iter().map(|(s, _)| s.get() / 3).collect();
    from.sort_unstable();
    assert_eq!(from, [0, 1], "one from each loaded broker: {moves:?}");

    let balanced = cluster(&[1, 2, 3], &[1, 2, 3, 1, 2, 3]);
    assert!(plan_balance(&balanced, &HashMap::new(), |_| true).is_empty());
    // 7 partitions on 3 brokers cannot be closer than 3-2-2: no moves back and forth.
    let uneven = cluster(&[1, 2, 3], &[1, 2, 3, 1, 2, 3, 1]);
    assert!(plan_balance(&uneven, &HashMap::new(), |_| true).is_empty());
}

#[test]
fn traffic_outweighs_partition_counts() {
    // Broker 1 has one busy partition, broker 2 five idle ones: the busy one stays alone.
    let s = cluster(&[1, 2], &[1, 2, 2, 2, 2, 2]);
    let loads = HashMap::from([(StreamId(0), 10_000_000)]);
    assert!(plan_balance(&s, &loads, |_| true).is_empty());
    // Two busy partitions on broker 1: one moves to the idle broker 2.
    let s = cluster(&[1, 2], &[1, 1, 2]);
    let loads = HashMap::from([(StreamId(0), 5_000_000), (StreamId(1), 5_000_000)]);
    let moves = plan_balance(&s, &loads, |_| true);
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0].1, 2);
}

#[test]
fn no_balancing_while_a_move_or_a_failover_is_under_way() {
    let mut s = cluster(&[1, 2, 3], &[1, 1, 1, 2, 2, 2]);
    s.apply(
        &Kind::StreamMoveRequested(StreamMoveRequested {
            stream: 0,
            target: 2,
        })
        .into(),
    );
    assert!(plan_balance(&s, &HashMap::new(), |_| true).is_empty());
    let mut s = cluster(&[1, 2, 3], &[1, 1, 1, 2, 2, 2]);
    s.apply(
        &Kind::BrokerFenced(BrokerFenced {
            node_id: 1,
            epoch: 1,
        })
        .into(),
    );
    assert!(plan_balance(&s, &HashMap::new(), |_| true).is_empty());
}

#[test]
fn moves_spread_each_topic() {
    // Topic t (streams 0..3) all on broker 1; add topic u (streams 3..6) there too.
    let mut s = cluster(&[1, 2], &[1, 1, 1]);
    s.apply(
        &Kind::TopicCreated(TopicCreated {
            name: "u".into(),
            id: vec![2; 16],
            partition_streams: vec![3, 4, 5],
            configs: Default::default(),
        })
        .into(),
    );
    for stream in 3..6 {
        s.apply(&Kind::StreamAssigned(StreamAssigned { stream, owner: 1 }).into());
    }
    let moves = plan_balance(&s, &HashMap::new(), |_| true);
    assert_eq!(moves.len(), 3, "{moves:?}");
    let of_t = moves.iter().filter(|(s, _)| s.get() < 3).count();
    assert!((1..=2).contains(&of_t), "both topics spread: {moves:?}");
}

#[test]
fn drained_and_silent_brokers_take_nothing() {
    let mut s = cluster(&[1, 2, 3], &[1, 1, 1, 2, 2, 2]);
    assert!(
        plan_balance(&s, &HashMap::new(), |b| b != 3).is_empty(),
        "3 is silent"
    );
    s.apply(
        &Kind::BrokerDrained(BrokerDrained {
            node_id: 3,
            epoch: 1,
        })
        .into(),
    );
    assert!(
        plan_balance(&s, &HashMap::new(), |_| true).is_empty(),
        "3 is drained"
    );
    assert_eq!(
        s.place(4),
        [1, 2, 1, 2],
        "new partitions avoid the drained broker"
    );
}

/// A producer with sticky partitioning: each second, 100 batches of 20 KB, each to one of 12
/// partitions at random (a fixed-seed generator); the bytes per partition that second.
fn sticky_second(seed: &mut u64) -> [u64; 12] {
    let mut bytes = [0u64; 12];
    for _ in 0..100 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        bytes[((*seed >> 33) % 12) as usize] += 20_000;
    }
    bytes
}

#[test]
fn averaged_loads_keep_a_balanced_cluster_still_under_noisy_traffic() {
    let s = cluster(&[1, 2, 3], &[1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]);
    let start = std::time::Instant::now();
    let mut loads = Loads::new(std::time::Duration::from_secs(20));
    let mut seed = 7;
    let mut raw_rounds_with_moves = 0;
    for second in 1..=120u64 {
        let now = start + std::time::Duration::from_secs(second);
        let rates = sticky_second(&mut seed);
        for (stream, rate) in rates.iter().enumerate() {
            loads.record(StreamId(stream as u64), *rate, now);
        }
        // One-second rates as they are: the balancer would keep moving partitions.
        let raw: HashMap<StreamId, u64> = rates
            .iter()
            .enumerate()
            .map(|(i, r)| (StreamId(i as u64), *r))
            .collect();
        if !plan_balance(&s, &raw, |_| true).is_empty() {
            raw_rounds_with_moves += 1;
        }
        if second >= 30 && second % 10 == 0 {
            let averaged = loads.snapshot();
            assert_eq!(
                plan_balance(&s, &averaged, |_| true),
                vec![],
                "second {second}: {averaged:?}"
            );
        }
    }
    assert!(
        raw_rounds_with_moves > 60,
        "raw rates alone move partitions most rounds ({raw_rounds_with_moves} of 120)"
    );
}

#[test]
fn averaged_loads_follow_a_change_of_traffic() {
    let start = std::time::Instant::now();
    let mut loads = Loads::new(std::time::Duration::from_secs(10));
    let at = |s: u64| start + std::time::Duration::from_secs(s);
    loads.record(StreamId(1), 0, at(0));
    for second in 1..=30 {
        loads.record(StreamId(1), 1_000_000, at(second));
    }
    let rate = loads.snapshot()[&StreamId(1)];
    assert!(
        (950_000..=1_000_000).contains(&rate),
        "three time constants later: {rate}"
    );
    // A report after a long silence counts for nearly everything.
    loads.record(StreamId(1), 5, at(1000));
    assert_eq!(loads.snapshot()[&StreamId(1)], 5);
}
