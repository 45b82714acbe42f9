//! One consumer group of the classic protocol, owned by one task (an actor): every request about the
//! group is a message to it, so its state has a single writer and its timers (rebalance deadline,
//! session expiry, initial delay) live in the same loop.
//!
//! Classic-protocol states follow Kafka's: Empty → PreparingRebalance → CompletingRebalance → Stable,
//! back to PreparingRebalance whenever a member joins, leaves or expires. A group of the KIP-848
//! protocol keeps its state in [`ConsumerGroup`]; a group with members speaks one protocol at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::GroupLog;
use super::consumer::{self, ConsumerGroup, TopicIndex};
use super::records::{GroupValue, MemberValue};

/// Settings every group of a coordinator shares.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Kafka's `group.initial.rebalance.delay.ms` (classic groups).
    pub initial_delay: Duration,
    /// Kafka's `group.consumer.session.timeout.ms` (KIP-848 groups).
    pub consumer_session_timeout: Duration,
    /// Kafka's `group.consumer.heartbeat.interval.ms` (KIP-848 groups).
    pub consumer_heartbeat_interval: Duration,
}

/// Group states, named as Kafka names them in ListGroups/DescribeGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assigned.
    Stable,
}

impl GroupState {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup request, as the group needs it.
#[derive(Debug)]
pub struct Join {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    /// The client's address as Kafka shows it (`/127.0.0.1`).
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a new dynamic member must first learn its id (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

/// The answer to a join.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Members and their metadata, for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// The group as ListGroups and DescribeGroups show it.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// Kafka's state name.
    pub state: &'static str,
    /// `classic` or `consumer` (KIP-848).
    pub group_type: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub generation: i32,
    pub members: Vec<MemberView>,
    /// For a KIP-848 group: what ConsumerGroupDescribe shows.
    pub consumer: Option<consumer::Description>,
}

/// Messages to the group task.
#[derive(Debug)]
pub enum Msg {
    Join(Join, oneshot::Sender<Joined>),
    Sync {
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        assignments: Vec<(String, Bytes)>,
        reply: oneshot::Sender<(i16, Bytes)>,
    },
    Heartbeat {
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        reply: oneshot::Sender<i16>,
    },
    Leave {
        members: Vec<(String, Option<String>)>,
        reply: oneshot::Sender<Vec<i16>>,
    },
    /// May this member commit offsets under this generation?
    CheckCommit {
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        /// The partitions committed (topic name, partition).
        partitions: Vec<(String, i32)>,
        reply: oneshot::Sender<i16>,
    },
    /// A KIP-848 heartbeat.
    ConsumerHeartbeat {
        heartbeat: consumer::Heartbeat,
        topics: Arc<TopicIndex>,
        reply: oneshot::Sender<Result<consumer::Answer, consumer::Refusal>>,
    },
    /// May this member fetch offsets (OffsetFetch v9 of a KIP-848 member)?
    CheckFetch {
        member_id: Option<String>,
        member_epoch: i32,
        reply: oneshot::Sender<i16>,
    },
    Describe(oneshot::Sender<GroupView>),
    /// The group's metadata record of this generation is durable (or could not be written).
    Persisted {
        generation: i32,
        result: Result<(), i16>,
    },
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    expires: Instant,
    join: Option<oneshot::Sender<Joined>>,
    sync: Option<oneshot::Sender<(i16, Bytes)>>,
}

/// The group's state, owned by its task.
#[derive(Debug)]
pub struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    settings: Settings,
    /// The group's KIP-848 side.
    consumer: ConsumerGroup,
    /// Where the group's state is recorded.
    log: GroupLog,
    /// The group's own mailbox, for answers from its writer.
    back: mpsc::WeakSender<Msg>,
    /// The leader's assignment is being made durable; syncs wait for it.
    persisting: bool,
}

const ERR_UNKNOWN_MEMBER: i16 = ResponseError::UnknownMemberId.code();
const ERR_ILLEGAL_GENERATION: i16 = ResponseError::IllegalGeneration.code();
const ERR_REBALANCING: i16 = ResponseError::RebalanceInProgress.code();
const ERR_FENCED_INSTANCE: i16 = ResponseError::FencedInstanceId.code();

impl Group {
    /// A new, empty group.
    pub fn new(
        id: String,
        settings: Settings,
        log: GroupLog,
        back: mpsc::WeakSender<Msg>,
    ) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            settings,
            consumer: ConsumerGroup::default(),
            log,
            back,
            persisting: false,
        }
    }

    /// The group as last recorded in `__consumer_offsets`: Stable with its members (each gets a
    /// full session to heartbeat again), or Empty. Clients carry on with their generation.
    pub(crate) fn restore(
        id: String,
        settings: Settings,
        log: GroupLog,
        back: mpsc::WeakSender<Msg>,
        value: GroupValue,
    ) -> Group {
        let mut group = Group::new(id, settings, log, back);
        if let Some(c) = value.consumer {
            group.consumer = ConsumerGroup::restore(c, settings.consumer_session_timeout);
        }
        group.generation = value.generation;
        group.protocol_type = Some(value.protocol_type).filter(|t| !t.is_empty());
        group.protocol = value.protocol;
        let now = Instant::now();
        for m in value.members {
            let session_timeout = Duration::from_millis(u64::from(m.session_timeout_ms));
            let protocols = group
                .protocol
                .iter()
                .map(|p| (p.clone(), m.subscription.clone()))
                .collect();
            group.members.insert(
                m.member_id,
                Member {
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout,
                    rebalance_timeout: Duration::from_millis(u64::from(m.rebalance_timeout_ms)),
                    protocols,
                    assignment: m.assignment,
                    expires: now + session_timeout,
                    join: None,
                    sync: None,
                },
            );
        }
        if !group.members.is_empty() {
            group.state = GroupState::Stable;
            group.leader = value.leader.filter(|l| group.members.contains_key(l));
        }
        tracing::debug!(group = %group.id, generation = group.generation,
            members = group.members.len(), "group restored");
        group
    }

    /// The group's state as recorded in `__consumer_offsets`.
    fn snapshot(&self) -> GroupValue {
        let millis = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            timestamp_ms: super::now_ms(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberValue {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: millis(m.session_timeout),
                    rebalance_timeout_ms: millis(m.rebalance_timeout),
                    subscription: self.subscription(m),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            consumer: (self.consumer.epoch() > 0).then(|| self.consumer.snapshot()),
        }
    }

    fn subscription(&self, m: &Member) -> Bytes {
        m.protocols
            .iter()
            .find(|(n, _)| Some(n) == self.protocol.as_ref())
            .map(|(_, md)| md.clone())
            .unwrap_or_default()
    }

    /// Records the group's state without waiting (an emptied classic group's generation, a
    /// KIP-848 group after a member was fenced).
    fn record(&self) {
        if !self.log.write(self.snapshot(), None) {
            tracing::warn!(group = %self.id, "group metadata writer gone");
        }
    }

    /// Serves messages until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => return,
                },
                () = sleep_until(deadline) => self.on_timer(),
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let expiry = self
            .members
            .values()
            .filter(|m| m.join.is_none())
            .map(|m| m.expires)
            .chain(self.pending.values().copied())
            .min();
        [
            expiry,
            self.rebalance_deadline,
            self.consumer.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Join(join, reply) => self.join(join, reply),
            Msg::Sync {
                generation,
                member_id,
                instance_id,
                assignments,
                reply,
            } => {
                if self.fenced(&member_id, instance_id.as_deref()) {
                    let _ = reply.send((ERR_FENCED_INSTANCE, Bytes::new()));
                } else {
                    self.sync(generation, &member_id, assignments, reply);
                }
            }
            Msg::Heartbeat {
                generation,
                member_id,
                instance_id,
                reply,
            } => {
                let code = if self.fenced(&member_id, instance_id.as_deref()) {
                    ERR_FENCED_INSTANCE
                } else {
                    self.heartbeat(generation, &member_id)
                };
                let _ = reply.send(code);
            }
            Msg::Leave { members, reply } => {
                let codes = members
                    .iter()
                    .map(|(m, i)| self.leave(m, i.as_deref()))
                    .collect();
                let _ = reply.send(codes);
            }
            Msg::CheckCommit {
                generation,
                member_id,
                instance_id,
                partitions,
                reply,
            } => {
                let code = if self.fenced(&member_id, instance_id.as_deref()) {
                    ERR_FENCED_INSTANCE
                } else {
                    self.check_commit(generation, &member_id, &partitions)
                };
                let _ = reply.send(code);
            }
            Msg::Describe(reply) => {
                let _ = reply.send(self.view());
            }
            Msg::Persisted { generation, result } => self.persisted(generation, result),
            Msg::ConsumerHeartbeat {
                heartbeat,
                topics,
                reply,
            } => self.consumer_heartbeat(heartbeat, &topics, reply),
            Msg::CheckFetch {
                member_id,
                member_epoch,
                reply,
            } => {
                let code = if self.consumer.is_empty() {
                    0
                } else {
                    self.consumer
                        .check_fetch(member_id.as_deref(), member_epoch)
                };
                let _ = reply.send(code);
            }
        }
    }

    fn join(&mut self, join: Join, reply: oneshot::Sender<Joined>) {
        let fail = |reply: oneshot::Sender<Joined>, error: ResponseError, member_id: String| {
            let _ = reply.send(Joined {
                error: error.code(),
                generation: -1,
                member_id,
                ..Joined::default()
            });
        };
        if join.protocols.is_empty()
            || !self.consumer.is_empty()
            || (!self.members.is_empty()
                && self.protocol_type.as_deref() != Some(join.protocol_type.as_str()))
            || !self.shares_a_protocol(&join.protocols)
        {
            return fail(
                reply,
                ResponseError::InconsistentGroupProtocol,
                join.member_id,
            );
        }
        let member_id = if join.member_id.is_empty() {
            let known = join
                .instance_id
                .as_ref()
                .and_then(|i| {
                    self.members
                        .iter()
                        .find(|(_, m)| m.instance_id.as_ref() == Some(i))
                })
                .map(|(id, _)| id.clone());
            match known {
                // KIP-345: a static member coming back gets a new member id; the old one is
                // fenced, and the member keeps its place (no rebalance if nothing changed).
                Some(old) => self.replace_static_member(&old, join.instance_id.as_deref()),
                None => {
                    let prefix = join.instance_id.as_deref().unwrap_or(&join.client_id);
                    let id = format!("{prefix}-{}", uuid::Uuid::new_v4());
                    if join.require_known_member_id && join.instance_id.is_none() {
                        self.pending
                            .insert(id.clone(), Instant::now() + join.session_timeout);
                        return fail(reply, ResponseError::MemberIdRequired, id);
                    }
                    id
                }
            }
        } else if self.fenced(&join.member_id, join.instance_id.as_deref()) {
            return fail(reply, ResponseError::FencedInstanceId, join.member_id);
        } else if self.members.contains_key(&join.member_id)
            || self.pending.remove(&join.member_id).is_some()
        {
            join.member_id.clone()
        } else {
            return fail(reply, ResponseError::UnknownMemberId, join.member_id);
        };
        let is_new = !self.members.contains_key(&member_id);
        let changed = is_new
            || self
                .members
                .get(&member_id)
                .is_some_and(|m| m.protocols != join.protocols);
        let member = self
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: join.instance_id.clone(),
                client_id: join.client_id.clone(),
                client_host: join.client_host.clone(),
                session_timeout: join.session_timeout,
                rebalance_timeout: join.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                expires: Instant::now(),
                join: None,
                sync: None,
            });
        member.protocols = join.protocols;
        member.session_timeout = join.session_timeout;
        member.rebalance_timeout = join.rebalance_timeout;
        member.expires = Instant::now() + join.session_timeout;
        member.join = Some(reply);
        self.protocol_type = Some(join.protocol_type);
        // A known member of a stable group rejoining with nothing changed gets the current state back.
        if self.state == GroupState::Stable
            && !changed
            && self.leader.as_deref() != Some(member_id.as_str())
        {
            self.answer_join(&member_id);
            return;
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance();
        }
        self.maybe_complete_join();
    }

    /// KIP-345: a request naming a static member's instance id under another member id comes
    /// from an instance that was replaced.
    fn fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        let Some(instance) = instance_id else {
            return false;
        };
        self.members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
            .is_some_and(|(id, _)| id != member_id)
    }

    /// Moves a static member to a new member id; whatever the old one waits for is answered
    /// FENCED_INSTANCE_ID.
    fn replace_static_member(&mut self, old: &str, instance_id: Option<&str>) -> String {
        let id = format!(
            "{}-{}",
            instance_id.unwrap_or("static"),
            uuid::Uuid::new_v4()
        );
        if let Some(mut member) = self.members.remove(old) {
            if let Some(join) = member.join.take() {
                let _ = join.send(Joined {
                    error: ERR_FENCED_INSTANCE,
                    generation: -1,
                    member_id: old.to_string(),
                    ..Joined::default()
                });
            }
            if let Some(sync) = member.sync.take() {
                let _ = sync.send((ERR_FENCED_INSTANCE, Bytes::new()));
            }
            self.members.insert(id.clone(), member);
        }
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(id.clone());
        }
        tracing::debug!(group = %self.id, old, new = %id, "static member replaced");
        self.record();
        id
    }

    fn shares_a_protocol(&self, protocols: &[(String, Bytes)]) -> bool {
        self.members.values().all(|m| {
            m.protocols
                .iter()
                .any(|(name, _)| protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn prepare_rebalance(&mut self) {
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        self.persisting = false;
        for member in self.members.values_mut() {
            if let Some(sync) = member.sync.take() {
                let _ = sync.send((ERR_REBALANCING, Bytes::new()));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        // A new group waits a moment for more members (Kafka's group.initial.rebalance.delay.ms).
        let wait = if was_empty {
            self.settings.initial_delay.min(timeout)
        } else {
            timeout
        };
        self.rebalance_deadline = Some(Instant::now() + wait);
        tracing::debug!(group = %self.id, members = self.members.len(), "rebalance started");
    }

    fn maybe_complete_join(&mut self) {
        let all_joined = self.members.values().all(|m| m.join.is_some());
        let waiting_initial =
            self.generation == 0 && self.rebalance_deadline.is_some_and(|d| d > Instant::now());
        if all_joined && !waiting_initial {
            self.complete_join();
        }
    }

    fn complete_join(&mut self) {
        // Members that did not rejoin in time are out.
        self.members.retain(|_, m| m.join.is_some());
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.generation += 1;
            self.record();
            return;
        }
        self.generation += 1;
        self.protocol = self.choose_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        tracing::debug!(group = %self.id, generation = self.generation, members = self.members.len(),
            protocol = ?self.protocol, "group joined");
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.answer_join(&id);
        }
    }

    fn answer_join(&mut self, member_id: &str) {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone();
        let members = if is_leader {
            self.members
                .iter()
                .map(|(id, m)| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == protocol.as_ref())
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default();
                    (id.clone(), m.instance_id.clone(), metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        let joined = Joined {
            error: 0,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol,
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members,
        };
        if let Some(reply) = self.members.get_mut(member_id).and_then(|m| m.join.take()) {
            let _ = reply.send(joined);
        }
    }

    /// The protocol every member supports, preferring the leader's (or first member's) order.
    fn choose_protocol(&self) -> Option<String> {
        let first = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())?;
        first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned()
    }

    fn sync(
        &mut self,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        reply: oneshot::Sender<(i16, Bytes)>,
    ) {
        let Some(member) = self.members.get_mut(member_id) else {
            let _ = reply.send((ERR_UNKNOWN_MEMBER, Bytes::new()));
            return;
        };
        if generation != self.generation {
            let _ = reply.send((ERR_ILLEGAL_GENERATION, Bytes::new()));
            return;
        }
        match self.state {
            GroupState::Empty => {
                let _ = reply.send((ERR_UNKNOWN_MEMBER, Bytes::new()));
            }
            GroupState::PreparingRebalance => {
                let _ = reply.send((ERR_REBALANCING, Bytes::new()));
            }
            GroupState::Stable => {
                let _ = reply.send((0, member.assignment.clone()));
            }
            GroupState::CompletingRebalance => {
                member.sync = Some(reply);
                if self.leader.as_deref() == Some(member_id) && !self.persisting {
                    let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in &mut self.members {
                        m.assignment = assigned.remove(id).unwrap_or_default();
                    }
                    // Members learn their assignment once the group's record is durable, as on Kafka.
                    self.persisting = true;
                    let (back, generation) = (self.back.clone(), self.generation);
                    let after = move |result| {
                        if let Some(back) = back.upgrade() {
                            tokio::spawn(async move {
                                let _ = back.send(Msg::Persisted { generation, result }).await;
                            });
                        }
                    };
                    if !self.log.write(self.snapshot(), Some(Box::new(after))) {
                        self.persisted(
                            self.generation,
                            Err(ResponseError::CoordinatorNotAvailable.code()),
                        );
                    }
                }
            }
        }
    }

    fn persisted(&mut self, generation: i32, result: Result<(), i16>) {
        if self.state != GroupState::CompletingRebalance
            || generation != self.generation
            || !self.persisting
        {
            return; // the group moved on (a member left or joined) while the record was written
        }
        self.persisting = false;
        match result {
            Ok(()) => {
                self.state = GroupState::Stable;
                tracing::debug!(group = %self.id, generation, "group stable");
                for m in self.members.values_mut() {
                    if let Some(sync) = m.sync.take() {
                        let _ = sync.send((0, m.assignment.clone()));
                    }
                }
            }
            Err(code) => {
                // Kafka answers the syncs with the error and rebalances.
                for m in self.members.values_mut() {
                    m.assignment = Bytes::new();
                    if let Some(sync) = m.sync.take() {
                        let _ = sync.send((code, Bytes::new()));
                    }
                }
                self.prepare_rebalance();
            }
        }
    }

    fn heartbeat(&mut self, generation: i32, member_id: &str) -> i16 {
        let state = self.state;
        let Some(member) = self.members.get_mut(member_id) else {
            return ERR_UNKNOWN_MEMBER;
        };
        if generation != self.generation {
            return ERR_ILLEGAL_GENERATION;
        }
        member.expires = Instant::now() + member.session_timeout;
        match state {
            GroupState::PreparingRebalance => ERR_REBALANCING,
            GroupState::Empty => ERR_UNKNOWN_MEMBER,
            GroupState::CompletingRebalance | GroupState::Stable => 0,
        }
    }

    fn leave(&mut self, member_id: &str, instance_id: Option<&str>) -> i16 {
        if !member_id.is_empty() && self.fenced(member_id, instance_id) {
            return ERR_FENCED_INSTANCE;
        }
        let id = if member_id.is_empty() {
            instance_id.and_then(|i| {
                self.members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_deref() == Some(i))
                    .map(|(id, _)| id.clone())
            })
        } else {
            Some(member_id.to_string())
        };
        let Some(id) = id.filter(|id| self.members.contains_key(id)) else {
            return ERR_UNKNOWN_MEMBER;
        };
        self.remove_member(&id, "left the group");
        0
    }

    fn remove_member(&mut self, id: &str, why: &str) {
        if let Some(member) = self.members.remove(id) {
            if let Some(join) = member.join {
                let _ = join.send(Joined {
                    error: ERR_UNKNOWN_MEMBER,
                    generation: -1,
                    ..Joined::default()
                });
            }
            tracing::debug!(group = %self.id, member = id, why, "member removed");
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.state = GroupState::Empty;
                    self.leader = None;
                    self.persisting = false;
                    self.record();
                } else {
                    self.prepare_rebalance();
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(),
            GroupState::Empty => {}
        }
    }

    fn consumer_heartbeat(
        &mut self,
        heartbeat: consumer::Heartbeat,
        topics: &TopicIndex,
        reply: oneshot::Sender<Result<consumer::Answer, consumer::Refusal>>,
    ) {
        if !self.members.is_empty() {
            let _ = reply.send(Err((
                ResponseError::GroupIdNotFound.code(),
                format!("group {} is a classic group with members", self.id),
            )));
            return;
        }
        let before = self.consumer.snapshot();
        let answer = self.consumer.heartbeat(
            heartbeat,
            topics,
            self.settings.consumer_session_timeout,
            Instant::now(),
        );
        if answer.is_err() || self.consumer.snapshot() == before {
            let _ = reply.send(answer);
            return;
        }
        // As on Kafka, the member hears of its new state once the group's record is durable.
        let after = move |result: Result<(), i16>| {
            let _ = reply.send(match result {
                Ok(()) => answer,
                Err(code) => Err((code, "the group's state could not be stored".to_string())),
            });
        };
        if !self.log.write(self.snapshot(), Some(Box::new(after))) {
            tracing::warn!(group = %self.id, "group metadata writer gone");
        }
    }

    fn check_commit(&self, generation: i32, member_id: &str, partitions: &[(String, i32)]) -> i16 {
        if !self.consumer.is_empty() {
            let code = self
                .consumer
                .check_commit(member_id, generation, partitions);
            if code != 0 {
                tracing::debug!(group = %self.id, member = member_id, epoch = generation, code, "commit refused");
            }
            return code;
        }
        if generation < 0 && member_id.is_empty() {
            // A "simple" consumer (assign, no group membership) may commit while the group is empty.
            return if self.members.is_empty() {
                0
            } else {
                ERR_UNKNOWN_MEMBER
            };
        }
        if !self.members.contains_key(member_id) {
            return ERR_UNKNOWN_MEMBER;
        }
        if generation != self.generation {
            return ERR_ILLEGAL_GENERATION;
        }
        if self.state == GroupState::CompletingRebalance {
            return ERR_REBALANCING;
        }
        0
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.rebalance_deadline.is_some_and(|d| d <= now)
            && self.state == GroupState::PreparingRebalance
        {
            self.complete_join();
        }
        self.pending.retain(|_, expires| *expires > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join.is_none() && m.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove_member(&id, "session expired");
        }
        if self.consumer.expire(now) {
            self.record();
        }
    }

    fn view(&self) -> GroupView {
        if self.members.is_empty() && self.consumer.epoch() > 0 {
            return GroupView {
                state: self.consumer.state(),
                group_type: "consumer",
                protocol_type: "consumer".to_string(),
                protocol: String::new(),
                generation: self.consumer.epoch(),
                members: self.consumer.members(),
                consumer: Some(self.consumer.describe()),
            };
        }
        GroupView {
            state: self.state.name(),
            group_type: "classic",
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            generation: self.generation,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: self.subscription(m),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            consumer: None,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
