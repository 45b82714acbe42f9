use super::*;
use proptest::prelude::*;

const SESSION: Duration = Duration::from_secs(45);

fn topics(counts: &[(&str, i32)]) -> TopicIndex {
    counts
        .iter()
        .enumerate()
        .map(|(i, (name, n))| {
            let id = Uuid::from_u128(u128::try_from(i).unwrap() + 1);
            (name.to_string(), (id, *n))
        })
        .collect()
}

fn hb(
    member: &str,
    epoch: i32,
    subscribed: Option<&[&str]>,
    owned: Option<Assignment>,
) -> Heartbeat {
    Heartbeat {
        member_id: member.to_string(),
        member_epoch: epoch,
        instance_id: None,
        rack_id: None,
        client_id: "c".to_string(),
        client_host: "/127.0.0.1".to_string(),
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: subscribed.map(|s| s.iter().map(|t| t.to_string()).collect()),
        subscribed_topic_regex: None,
        server_assignor: None,
        owned,
    }
}

fn count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// A well-behaved client: it owns what it was last told, and heartbeats with it.
#[derive(Debug, Default, Clone)]
struct Client {
    epoch: i32,
    owned: Assignment,
    joined: bool,
}

struct World {
    group: ConsumerGroup,
    topics: TopicIndex,
    clients: BTreeMap<String, Client>,
    subscription: Vec<&'static str>,
    now: Instant,
}

impl World {
    fn new(topics: TopicIndex) -> World {
        World {
            group: ConsumerGroup::default(),
            topics,
            clients: BTreeMap::new(),
            subscription: vec!["a", "b"],
            now: Instant::now(),
        }
    }

    fn beat(&mut self, member: &str) {
        let client = self.clients.entry(member.to_string()).or_default();
        let request = if client.joined {
            hb(member, client.epoch, None, Some(client.owned.clone()))
        } else {
            hb(member, 0, Some(&self.subscription), None)
        };
        let answer = self
            .group
            .heartbeat(request, &self.topics, SESSION, self.now)
            .unwrap();
        client.joined = true;
        client.epoch = answer.member_epoch;
        if let Some(a) = answer.assignment {
            client.owned = a;
        }
        self.check_exclusive();
    }

    fn leave(&mut self, member: &str) {
        if let Some(client) = self.clients.remove(member) {
            self.group
                .heartbeat(hb(member, -1, None, None), &self.topics, SESSION, self.now)
                .unwrap();
            drop(client);
        }
    }

    /// No partition is owned by two clients at once.
    fn check_exclusive(&self) {
        let mut seen = BTreeSet::new();
        for client in self.clients.values() {
            for (t, ps) in &client.owned {
                for p in ps {
                    assert!(
                        seen.insert((*t, *p)),
                        "{t}/{p} owned twice: {:?}",
                        self.clients
                    );
                }
            }
        }
    }

    /// Everyone heartbeats until nothing changes; then every partition is owned once, balanced.
    fn settle(&mut self) {
        for _ in 0..10 {
            let members: Vec<String> = self.clients.keys().cloned().collect();
            for m in members {
                self.beat(&m);
            }
        }
        assert_eq!(
            self.group.state(),
            if self.clients.is_empty() {
                "Empty"
            } else {
                "Stable"
            }
        );
        let total: i32 = self
            .topics
            .iter()
            .filter(|(name, _)| self.subscription.contains(&name.as_str()))
            .map(|(_, (_, n))| *n)
            .sum();
        let owned: Vec<usize> = self.clients.values().map(|c| count(&c.owned)).collect();
        if !self.clients.is_empty() {
            assert_eq!(owned.iter().sum::<usize>(), usize::try_from(total).unwrap());
            let (min, max) = (owned.iter().min().unwrap(), owned.iter().max().unwrap());
            assert!(max - min <= 1, "unbalanced: {owned:?}");
        }
        for c in self.clients.values() {
            assert_eq!(
                c.epoch,
                self.group.epoch(),
                "every member at the group epoch"
            );
        }
    }
}

#[test]
fn members_join_share_and_hand_over_without_overlap() {
    let mut w = World::new(topics(&[("a", 4), ("b", 3)]));
    w.beat("m1");
    w.settle();
    assert_eq!(count(&w.clients["m1"].owned), 7);
    w.beat("m2");
    // m2 gets nothing m1 still holds: it waits for m1's revocation.
    assert_eq!(count(&w.clients["m2"].owned), 0);
    w.beat("m1"); // told to give up some
    w.beat("m1"); // reports it did
    w.beat("m2"); // receives them
    assert!(count(&w.clients["m2"].owned) >= 3);
    w.settle();
    w.beat("m3");
    w.settle();
    w.leave("m2");
    w.settle();
    assert_eq!(w.clients.len(), 2);
}

#[test]
fn refusals_carry_kafka_codes() {
    let t = topics(&[("a", 2)]);
    let mut g = ConsumerGroup::default();
    let now = Instant::now();
    let unknown = g
        .heartbeat(hb("x", 3, None, None), &t, SESSION, now)
        .unwrap_err();
    assert_eq!(unknown.0, ResponseError::UnknownMemberId.code());
    let joined = g
        .heartbeat(hb("m", 0, Some(&["a"]), None), &t, SESSION, now)
        .unwrap();
    assert_eq!(joined.member_epoch, 1);
    assert_eq!(count(&joined.assignment.unwrap()), 2);
    let fenced = g
        .heartbeat(hb("m", 7, None, None), &t, SESSION, now)
        .unwrap_err();
    assert_eq!(fenced.0, ResponseError::FencedMemberEpoch.code());
    let mut bad = hb("m", 1, None, None);
    bad.server_assignor = Some("sticky-ish".into());
    assert_eq!(
        g.heartbeat(bad, &t, SESSION, now).unwrap_err().0,
        ResponseError::UnsupportedAssignor.code()
    );
    let no_subscription = g
        .heartbeat(hb("n", 0, None, None), &t, SESSION, now)
        .unwrap_err();
    assert_eq!(no_subscription.0, ResponseError::InvalidRequest.code());
    assert_eq!(g.check_commit("m", 1, &[]), 0);
    assert_eq!(
        g.check_commit("m", 0, &[]),
        ResponseError::StaleMemberEpoch.code()
    );
    assert_eq!(
        g.check_commit("x", 1, &[]),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(
        g.check_commit("", -1, &[]),
        ResponseError::UnknownMemberId.code()
    );
    // The session runs out: the member is fenced and the group is empty.
    assert!(g.expire(now + SESSION + Duration::from_secs(1)));
    assert!(g.is_empty());
    assert_eq!(g.check_commit("", -1, &[]), 0);
}

#[test]
fn a_lost_response_is_forgiven() {
    let t = topics(&[("a", 2)]);
    let mut g = ConsumerGroup::default();
    let now = Instant::now();
    let first = g
        .heartbeat(hb("m", 0, Some(&["a"]), None), &t, SESSION, now)
        .unwrap();
    let owned = first.assignment.unwrap();
    // Another member joins; m moves to a new epoch after revoking, but loses that answer.
    g.heartbeat(hb("n", 0, Some(&["a"]), None), &t, SESSION, now)
        .unwrap();
    let told = g
        .heartbeat(hb("m", 1, None, Some(owned.clone())), &t, SESSION, now)
        .unwrap();
    let kept = told.assignment.unwrap();
    let moved = g
        .heartbeat(hb("m", 1, None, Some(kept.clone())), &t, SESSION, now)
        .unwrap();
    assert_eq!(moved.member_epoch, 2);
    // The client never saw epoch 2: it retries with epoch 1 and what it owns.
    let again = g
        .heartbeat(hb("m", 1, None, Some(kept)), &t, SESSION, now)
        .unwrap();
    assert_eq!(again.member_epoch, 2);
}

#[test]
fn snapshot_restores_the_same_group() {
    let mut w = World::new(topics(&[("a", 5), ("b", 2)]));
    w.beat("m1");
    w.beat("m2");
    w.beat("m1");
    let value = w.group.snapshot();
    let restored = ConsumerGroup::restore(value.clone(), SESSION);
    assert_eq!(restored.snapshot(), value);
    assert_eq!(restored.state(), w.group.state());
}

#[test]
fn range_assigns_consecutive_partitions() {
    let t1 = Uuid::from_u128(1);
    let subs: BTreeMap<String, BTreeSet<Uuid>> = [
        ("a".to_string(), BTreeSet::from([t1])),
        ("b".to_string(), BTreeSet::from([t1])),
    ]
    .into();
    let out = assign_range(&subs, &BTreeMap::from([(t1, 5)]));
    assert_eq!(out["a"][&t1], BTreeSet::from([0, 1, 2]));
    assert_eq!(out["b"][&t1], BTreeSet::from([3, 4]));
}

proptest! {
    /// Whatever members join, leave or heartbeat in whatever order, and however topics grow, no
    /// partition is ever owned by two members, and once everyone has heartbeated the group is
    /// stable, complete and balanced.
    #[test]
    fn no_partition_is_owned_twice(
        steps in proptest::collection::vec((0u8..4, 0usize..5), 1..80),
        a in 1i32..12,
        b in 0i32..6,
    ) {
        let mut w = World::new(topics(&[("a", a), ("b", b), ("c", 3)]));
        for (op, m) in steps {
            let member = format!("m{m}");
            match op {
                0 | 1 => w.beat(&member),
                2 => w.leave(&member),
                _ => {
                    // Partitions added to "a" (CreatePartitions).
                    if let Some(t) = w.topics.get_mut("a") {
                        t.1 += 1;
                    }
                }
            }
        }
        w.settle();
    }
}
