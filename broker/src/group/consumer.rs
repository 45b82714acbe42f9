//! Consumer groups of the KIP-848 protocol (ConsumerGroupHeartbeat): the broker assigns.
//!
//! The state machine is Kafka's, without I/O (the group actor persists and answers):
//! - every change of membership, subscription or subscribed topics' partition counts bumps the
//!   **group epoch**; the target assignment is then recomputed by the server-side assignor
//!   (`uniform`, sticky, the default; or `range`) and stamped with that epoch;
//! - each member **reconciles** towards its target at its own pace: partitions it must give up are
//!   withheld first (its epoch stays until it reports, in a heartbeat, that it no longer owns them);
//!   then it moves to the target epoch and receives the partitions no other member still holds;
//!   partitions still held elsewhere follow in later heartbeats once released. No partition is ever
//!   assigned to two members at once;
//! - a member is fenced (removed) when its session expires, or when it keeps partitions it must
//!   revoke longer than its rebalance timeout.
//!
//! Simplifications, written down: a static member's leave (epoch -2) is handled like a dynamic one,
//! and a static member rejoining under a new member id replaces the old one at once; rack ids are
//! recorded but not used by the assignors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use tokio::time::Instant;
use uuid::Uuid;

use super::records::{
    ConsumerGroupValue, ConsumerMemberValue, TopicMetaValue, TopicPartitionsValue,
};

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The topics the cluster has, as the assignor needs them: name → (id, partition count).
pub type TopicIndex = BTreeMap<String, (Uuid, i32)>;

/// The server-side assignors offered (`group.remote.assignor`), the default first.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// A ConsumerGroupHeartbeat, as the group needs it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns, when it reports them.
    pub owned: Option<Assignment>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's assignment, sent when it changed, when the member joined or reported its
    /// partitions.
    pub assignment: Option<Assignment>,
}

/// Partitions of one topic, named, as ConsumerGroupDescribe shows them.
pub type NamedPartitions = (Uuid, String, Vec<i32>);

/// A member as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub regex: Option<String>,
    pub assigned: Vec<NamedPartitions>,
    pub target: Vec<NamedPartitions>,
}

/// The group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone)]
pub struct Description {
    pub state: &'static str,
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<MemberDescription>,
}

/// A refused heartbeat: Kafka's error code and a message.
pub type Refusal = (i16, String);

#[derive(Debug, Clone, PartialEq)]
struct Member {
    epoch: i32,
    previous_epoch: i32,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout: Duration,
    subscribed: Vec<String>,
    regex: Option<String>,
    assignor: Option<String>,
    /// What the member holds, as far as the group knows.
    assigned: Assignment,
    /// What it must give up before it may move on.
    revoking: Assignment,
    session_deadline: Instant,
    revocation_deadline: Option<Instant>,
}

/// A KIP-848 consumer group. See the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, Assignment>,
    /// The subscribed topics as of the last target computation.
    subscribed_topics: TopicIndex,
}

impl ConsumerGroup {
    /// Whether the group has members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The group epoch.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Kafka's state name for the group.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || !m.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Members as DescribeGroups shows them (no classic metadata or assignment bytes).
    pub fn members(&self) -> Vec<super::actor::MemberView> {
        self.members
            .iter()
            .map(|(id, m)| super::actor::MemberView {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: bytes::Bytes::new(),
                assignment: bytes::Bytes::new(),
            })
            .collect()
    }

    /// The group as ConsumerGroupDescribe shows it.
    pub fn describe(&self) -> Description {
        let names: BTreeMap<Uuid, &str> = self
            .subscribed_topics
            .iter()
            .map(|(name, (id, _))| (*id, name.as_str()))
            .collect();
        let named = |a: &Assignment| -> Vec<NamedPartitions> {
            a.iter()
                .filter(|(_, ps)| !ps.is_empty())
                .map(|(id, ps)| {
                    let name = names.get(id).copied().unwrap_or_default().to_string();
                    (*id, name, ps.iter().copied().collect())
                })
                .collect()
        };
        Description {
            state: self.state(),
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor().to_string(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    epoch: m.epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed: m.subscribed.clone(),
                    regex: m.regex.clone(),
                    assigned: named(&m.assigned),
                    target: named(self.target.get(id).unwrap_or(&Assignment::new())),
                })
                .collect(),
        }
    }

    /// The group's assignor: the first member's choice (members of a group agree in practice).
    fn assignor(&self) -> &str {
        self.members
            .values()
            .find_map(|m| m.assignor.as_deref())
            .unwrap_or(ASSIGNORS[0])
    }

    /// Serves one heartbeat at `now` against the cluster's `topics`.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &TopicIndex,
        session_timeout: Duration,
        now: Instant,
    ) -> Result<Answer, Refusal> {
        if let Some(assignor) = &hb.server_assignor
            && !ASSIGNORS.contains(&assignor.as_str())
        {
            return Err((
                ResponseError::UnsupportedAssignor.code(),
                format!("assignor {assignor} is not supported; use one of {ASSIGNORS:?}"),
            ));
        }
        if hb.member_epoch == -1 || hb.member_epoch == -2 {
            if !self.members.contains_key(&hb.member_id) {
                return Err(unknown(&hb.member_id));
            }
            self.remove(&hb.member_id);
            return Ok(Answer {
                member_id: hb.member_id,
                member_epoch: hb.member_epoch,
                assignment: None,
            });
        }
        let joining = hb.member_epoch == 0;
        // One heartbeat bumps the group epoch at most once, whatever it changed.
        let mut bump = false;
        if joining {
            if hb.subscribed_topic_names.is_none() && hb.subscribed_topic_regex.is_none() {
                return Err((
                    ResponseError::InvalidRequest.code(),
                    "a joining member must send its subscription".to_string(),
                ));
            }
            // A static member coming back under a new id replaces its old self.
            if let Some(instance) = &hb.instance_id {
                let old: Vec<String> = self
                    .members
                    .iter()
                    .filter(|(id, m)| {
                        m.instance_id.as_ref() == Some(instance) && **id != hb.member_id
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in old {
                    self.remove(&id);
                }
            }
            if !self.members.contains_key(&hb.member_id) {
                self.members.insert(
                    hb.member_id.clone(),
                    Member {
                        epoch: 0,
                        previous_epoch: -1,
                        instance_id: None,
                        rack_id: None,
                        client_id: String::new(),
                        client_host: String::new(),
                        rebalance_timeout: Duration::ZERO,
                        subscribed: Vec::new(),
                        regex: None,
                        assignor: None,
                        assigned: Assignment::new(),
                        revoking: Assignment::new(),
                        session_deadline: now,
                        revocation_deadline: None,
                    },
                );
                bump = true;
            }
        } else {
            let Some(member) = self.members.get(&hb.member_id) else {
                return Err(unknown(&hb.member_id));
            };
            let lost_response = hb.member_epoch == member.previous_epoch
                && hb.owned.as_ref().is_some_and(|o| same(o, &member.assigned));
            if hb.member_epoch != member.epoch && !lost_response {
                return Err((
                    ResponseError::FencedMemberEpoch.code(),
                    format!(
                        "member {} sent epoch {}, its epoch is {}",
                        hb.member_id, hb.member_epoch, member.epoch
                    ),
                ));
            }
        }

        // Update the member from what the heartbeat carries.
        let Some(member) = self.members.get_mut(&hb.member_id) else {
            return Err(unknown(&hb.member_id));
        };
        let before = member.assigned.clone();
        let mut changed = bump;
        if let Some(mut names) = hb.subscribed_topic_names {
            names.sort();
            names.dedup();
            changed |= member.subscribed != names;
            member.subscribed = names;
        }
        if hb.subscribed_topic_regex.is_some() {
            let regex = hb.subscribed_topic_regex.filter(|r| !r.is_empty());
            changed |= member.regex != regex;
            member.regex = regex;
        }
        if hb.server_assignor.is_some() {
            changed |= member.assignor != hb.server_assignor;
            member.assignor = hb.server_assignor;
        }
        if hb.instance_id.is_some() {
            member.instance_id = hb.instance_id;
        }
        if hb.rack_id.is_some() {
            member.rack_id = hb.rack_id;
        }
        member.client_id = hb.client_id;
        member.client_host = hb.client_host;
        if hb.rebalance_timeout_ms > 0 {
            member.rebalance_timeout =
                Duration::from_millis(u64::try_from(hb.rebalance_timeout_ms).unwrap_or(0));
        }
        member.session_deadline = now + session_timeout;

        // The subscribed topics themselves may have changed (created, deleted, grown).
        let subscribed = self.subscribed_topics(topics);
        if subscribed != self.subscribed_topics {
            self.subscribed_topics = subscribed;
            changed = true;
        }
        if changed {
            self.epoch += 1;
        }
        if self.assignment_epoch < self.epoch {
            self.compute_target();
        }

        self.reconcile(&hb.member_id, hb.owned.as_ref(), now);
        let member = &self.members[&hb.member_id];
        let send = hb.owned.is_some() || joining || member.assigned != before;
        tracing::debug!(member = %hb.member_id, sent_epoch = hb.member_epoch, epoch = member.epoch,
            group_epoch = self.epoch, assigned = member.assigned.values().map(BTreeSet::len).sum::<usize>(),
            revoking = member.revoking.values().map(BTreeSet::len).sum::<usize>(),
            owned = ?hb.owned.as_ref().map(|o| o.values().map(BTreeSet::len).sum::<usize>()),
            "consumer group heartbeat");
        Ok(Answer {
            member_id: hb.member_id,
            member_epoch: member.epoch,
            assignment: send.then(|| member.assigned.clone()),
        })
    }

    /// Whether a member may commit offsets of these partitions (topic name, partition) with this
    /// epoch; Kafka's error code. Besides the member's current epoch, its previous epoch is
    /// accepted for partitions it still holds: a commit sent just before a heartbeat moved the
    /// member on would otherwise fail for partitions that never left it (the relaxed check of
    /// KIP-1251; Kafka 4.1 refuses it with STALE_MEMBER_EPOCH).
    pub fn check_commit(&self, member_id: &str, epoch: i32, partitions: &[(String, i32)]) -> i16 {
        if epoch < 0 && member_id.is_empty() && self.members.is_empty() {
            return 0; // an admin or an assign()-only consumer
        }
        let Some(m) = self.members.get(member_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if epoch == m.epoch {
            return 0;
        }
        let still_held = |(topic, p): &(String, i32)| {
            self.subscribed_topics
                .get(topic)
                .and_then(|(id, _)| m.assigned.get(id))
                .is_some_and(|ps| ps.contains(p))
        };
        if epoch == m.previous_epoch && epoch > 0 && partitions.iter().all(still_held) {
            return 0;
        }
        ResponseError::StaleMemberEpoch.code()
    }

    /// Whether a member may fetch offsets with this epoch (OffsetFetch v9); Kafka's error code.
    pub fn check_fetch(&self, member_id: Option<&str>, epoch: i32) -> i16 {
        match member_id {
            None if epoch < 0 => 0,
            _ => self.check_commit(member_id.unwrap_or(""), epoch, &[]),
        }
    }

    /// Removes the members whose session expired or who held revoked partitions too long; true if
    /// any was removed.
    pub fn expire(&mut self, now: Instant) -> bool {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            tracing::debug!(member = %id, "consumer group member fenced");
            self.remove(id);
        }
        !gone.is_empty()
    }

    /// The next time [`expire`](Self::expire) has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.members
            .values()
            .flat_map(|m| std::iter::once(m.session_deadline).chain(m.revocation_deadline))
            .min()
    }

    fn remove(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.epoch += 1;
        }
    }

    /// The topics some member subscribes to (by name or regex) that exist.
    fn subscribed_topics(&self, topics: &TopicIndex) -> TopicIndex {
        let regexes: Vec<regex::Regex> = self
            .members
            .values()
            .filter_map(|m| m.regex.as_deref())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|r| regex::Regex::new(&format!("^(?:{r})$")).ok())
            .collect();
        topics
            .iter()
            .filter(|(name, _)| {
                self.members.values().any(|m| m.subscribed.contains(name))
                    || (!name.starts_with("__") && regexes.iter().any(|r| r.is_match(name)))
            })
            .map(|(name, t)| (name.clone(), *t))
            .collect()
    }

    /// The topic ids a member subscribes to.
    fn topics_of(&self, member: &Member) -> BTreeSet<Uuid> {
        let regex = member
            .regex
            .as_deref()
            .and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok());
        self.subscribed_topics
            .iter()
            .filter(|(name, _)| {
                member.subscribed.contains(name)
                    || (!name.starts_with("__") && regex.as_ref().is_some_and(|r| r.is_match(name)))
            })
            .map(|(_, (id, _))| *id)
            .collect()
    }

    fn compute_target(&mut self) {
        let subscriptions: BTreeMap<String, BTreeSet<Uuid>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), self.topics_of(m)))
            .collect();
        let partitions: BTreeMap<Uuid, i32> = self.subscribed_topics.values().copied().collect();
        let assignor = self.assignor().to_string();
        self.target = if assignor == "range" {
            assign_range(&subscriptions, &partitions)
        } else {
            assign_uniform(&subscriptions, &partitions, &self.target)
        };
        self.assignment_epoch = self.epoch;
        tracing::debug!(
            epoch = self.epoch,
            assignor,
            members = self.members.len(),
            "target assignment computed"
        );
    }

    /// Moves a member towards its target (Kafka's CurrentAssignmentBuilder).
    fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let held_elsewhere = self.held_by_others(id);
        let assignment_epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        if !m.revoking.is_empty() {
            // Waiting for the member to confirm the revocation.
            let released = owned.is_some_and(|o| !intersects(o, &m.revoking));
            if !released {
                return;
            }
            m.revoking.clear();
            m.revocation_deadline = None;
        }
        let keep = intersection(&m.assigned, &target);
        let revoke = difference(&m.assigned, &target);
        if !revoke.is_empty() {
            m.assigned = keep;
            m.revoking = revoke;
            m.revocation_deadline = Some(now + m.rebalance_timeout.max(Duration::from_secs(1)));
            return;
        }
        if m.epoch != assignment_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = assignment_epoch;
        }
        let mut assigned = keep;
        for (topic, partitions) in &target {
            for p in partitions {
                let taken = held_elsewhere.get(topic).is_some_and(|s| s.contains(p));
                if !taken {
                    assigned.entry(*topic).or_default().insert(*p);
                }
            }
        }
        m.assigned = assigned;
    }

    /// Partitions held or being revoked by members other than `id`.
    fn held_by_others(&self, id: &str) -> Assignment {
        let mut held = Assignment::new();
        for (other, m) in &self.members {
            if other == id {
                continue;
            }
            for set in [&m.assigned, &m.revoking] {
                for (topic, partitions) in set {
                    held.entry(*topic).or_default().extend(partitions);
                }
            }
        }
        held
    }

    /// The group as recorded in `__consumer_offsets`.
    pub(crate) fn snapshot(&self) -> ConsumerGroupValue {
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        ConsumerGroupValue {
            epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            members: self
                .members
                .iter()
                .map(|(id, m)| ConsumerMemberValue {
                    member_id: id.clone(),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: millis(m.rebalance_timeout),
                    subscribed: m.subscribed.clone(),
                    regex: m.regex.clone(),
                    assignor: m.assignor.clone(),
                    assigned: to_values(&m.assigned),
                    revoking: to_values(&m.revoking),
                    target: to_values(self.target.get(id).unwrap_or(&Assignment::new())),
                })
                .collect(),
            subscribed_topics: self
                .subscribed_topics
                .iter()
                .map(|(name, (id, partitions))| TopicMetaValue {
                    name: name.clone(),
                    id: id.as_bytes().to_vec(),
                    partitions: *partitions,
                })
                .collect(),
        }
    }

    /// The group as recorded; every member gets a full session to heartbeat again.
    pub(crate) fn restore(value: ConsumerGroupValue, session_timeout: Duration) -> Self {
        let now = Instant::now();
        let mut group = ConsumerGroup {
            epoch: value.epoch,
            assignment_epoch: value.assignment_epoch,
            ..ConsumerGroup::default()
        };
        for t in value.subscribed_topics {
            let id = Uuid::from_slice(&t.id).unwrap_or_default();
            group.subscribed_topics.insert(t.name, (id, t.partitions));
        }
        for m in value.members {
            let revoking = from_values(&m.revoking);
            let rebalance_timeout = Duration::from_millis(u64::from(m.rebalance_timeout_ms));
            group
                .target
                .insert(m.member_id.clone(), from_values(&m.target));
            group.members.insert(
                m.member_id,
                Member {
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    instance_id: m.instance_id,
                    rack_id: m.rack_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout,
                    subscribed: m.subscribed,
                    regex: m.regex,
                    assignor: m.assignor,
                    assigned: from_values(&m.assigned),
                    revocation_deadline: (!revoking.is_empty())
                        .then(|| now + rebalance_timeout.max(Duration::from_secs(1))),
                    revoking,
                    session_deadline: now + session_timeout,
                },
            );
        }
        group
    }
}

fn unknown(member_id: &str) -> Refusal {
    (
        ResponseError::UnknownMemberId.code(),
        format!("member {member_id} is not in the group"),
    )
}

fn to_values(a: &Assignment) -> Vec<TopicPartitionsValue> {
    a.iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(topic, partitions)| TopicPartitionsValue {
            topic_id: topic.as_bytes().to_vec(),
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

fn from_values(values: &[TopicPartitionsValue]) -> Assignment {
    values
        .iter()
        .map(|v| {
            (
                Uuid::from_slice(&v.topic_id).unwrap_or_default(),
                v.partitions.iter().copied().collect(),
            )
        })
        .collect()
}

/// Whether two assignments hold the same partitions (empty topic entries ignored).
fn same(a: &Assignment, b: &Assignment) -> bool {
    let flat = |x: &Assignment| -> BTreeSet<(Uuid, i32)> {
        x.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .collect()
    };
    flat(a) == flat(b)
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|other| !ps.is_disjoint(other)))
}

fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let common: BTreeSet<i32> = ps.intersection(b.get(t)?).copied().collect();
            (!common.is_empty()).then_some((*t, common))
        })
        .collect()
}

fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(t, ps)| {
            let rest: BTreeSet<i32> = match b.get(t) {
                Some(other) => ps.difference(other).copied().collect(),
                None => ps.clone(),
            };
            (!rest.is_empty()).then_some((*t, rest))
        })
        .collect()
}

/// The `uniform` assignor: balanced (counts differ by at most one when subscriptions are equal)
/// and sticky (a partition stays with its previous target owner while that keeps the balance).
pub fn assign_uniform(
    subscriptions: &BTreeMap<String, BTreeSet<Uuid>>,
    partitions: &BTreeMap<Uuid, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    if subscriptions.is_empty() {
        return out;
    }
    let all: Vec<(Uuid, i32)> = partitions
        .iter()
        .filter(|(t, _)| subscriptions.values().any(|s| s.contains(t)))
        .flat_map(|(t, n)| (0..*n).map(move |p| (*t, p)))
        .collect();
    let floor = all.len() / subscriptions.len();
    let mut extras = all.len() % subscriptions.len();
    let mut load: BTreeMap<&str, usize> = subscriptions.keys().map(|m| (m.as_str(), 0)).collect();
    let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    // Sticky pass: keep previous targets within the quota.
    for (member, assignment) in previous {
        let Some(subscribed) = subscriptions.get(member) else {
            continue;
        };
        for (topic, ps) in assignment {
            let count = partitions.get(topic).copied().unwrap_or(0);
            if !subscribed.contains(topic) {
                continue;
            }
            for p in ps.iter().filter(|p| **p < count) {
                let l = load.get(member.as_str()).copied().unwrap_or(0);
                let room = l < floor || (l == floor && extras > 0);
                if !room || !taken.insert((*topic, *p)) {
                    continue;
                }
                if l == floor {
                    extras -= 1;
                }
                *load.entry(member.as_str()).or_default() += 1;
                out.entry(member.clone())
                    .or_default()
                    .entry(*topic)
                    .or_default()
                    .insert(*p);
            }
        }
    }
    // Fill: each remaining partition to the least-loaded member subscribed to its topic.
    for (topic, p) in all {
        if taken.contains(&(topic, p)) {
            continue;
        }
        let best = subscriptions
            .iter()
            .filter(|(_, s)| s.contains(&topic))
            .map(|(m, _)| m)
            .min_by_key(|m| (load.get(m.as_str()).copied().unwrap_or(0), *m));
        if let Some(member) = best {
            *load.entry(member.as_str()).or_default() += 1;
            out.entry(member.clone())
                .or_default()
                .entry(topic)
                .or_default()
                .insert(p);
        }
    }
    out
}

/// The `range` assignor: per topic, consecutive partition ranges to the subscribed members in
/// member-id order, the first ones taking one more when the count does not divide.
pub fn assign_range(
    subscriptions: &BTreeMap<String, BTreeSet<Uuid>>,
    partitions: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subscriptions
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (topic, count) in partitions {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, s)| s.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let count = usize::try_from(*count).unwrap_or(0);
        let (per, extra) = (count / members.len(), count % members.len());
        let mut next = 0usize;
        for (i, member) in members.iter().enumerate() {
            let n = per + usize::from(i < extra);
            let range: BTreeSet<i32> = (next..next + n)
                .map(|p| i32::try_from(p).unwrap_or(i32::MAX))
                .collect();
            next += n;
            if !range.is_empty() {
                out.entry((*member).clone())
                    .or_default()
                    .insert(*topic, range);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
