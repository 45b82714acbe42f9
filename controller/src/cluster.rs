//! Cluster membership and partition placement (DESIGN.md 6): brokers register and are fenced, one
//! controller is elected through the log, partitions get owners and move between brokers.
//!
//! A move changes only metadata: the controller records the target (`StreamMoveRequested`); the old
//! owner stops writing, uploads what it has not uploaded and closes the stream, then reports it
//! (`move_done`, checked against the epoch it owned the stream at); the controller records the new
//! owner (`StreamAssigned`), who opens the stream, bumping its epoch. Metadata names the target as
//! leader from the start of the move, so clients are never told there is no leader.

use std::collections::{BTreeMap, HashMap};

use weir_common::{Epoch, StreamId};

use crate::records::{
    BrokerDrained, BrokerFenced, BrokerRegistered, ControllerElected, Kind, Record, StreamAssigned,
    StreamMoveRequested,
};
use crate::state::State;
use crate::{Controller, ControllerError};

/// What a broker tells the controller when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    /// Its node id.
    pub node_id: u32,
    /// Advertised Kafka host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: u32,
    /// Its gRPC endpoint (`http://host:port`), where it serves the controller service if it has
    /// the controller role.
    pub rpc: String,
    /// Its admin HTTP address.
    pub admin: String,
    /// Whether it may become the controller.
    pub controller: bool,
    /// Its WAL: `object`, or `file:DIR`.
    pub wal: String,
}

impl State {
    /// Brokers that are registered and not fenced, by node id.
    pub fn live_brokers(&self) -> Vec<u32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.node_id)
            .collect()
    }

    /// Live brokers that may take partitions: not drained.
    pub fn open_brokers(&self) -> Vec<u32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.drained)
            .map(|b| b.node_id)
            .collect()
    }

    /// Streams each broker that may take partitions leads (owns, or is the target of a move).
    pub fn load(&self) -> BTreeMap<u32, usize> {
        let mut load: BTreeMap<u32, usize> =
            self.open_brokers().into_iter().map(|b| (b, 0)).collect();
        for stream in self.streams.values() {
            if let Some(n) = load.get_mut(&stream.leader()) {
                *n += 1;
            }
        }
        load
    }

    /// Owners for `n` new streams of one topic (none if no broker lives): spread evenly over the
    /// live brokers, as Kafka spreads a topic's partitions, the least loaded first.
    pub fn place(&self, n: usize) -> Vec<u32> {
        let mut load = self.load();
        let mut here: BTreeMap<u32, usize> = BTreeMap::new();
        (0..n)
            .map(|_| {
                let least = load
                    .iter()
                    .min_by_key(|(node, count)| {
                        (here.get(*node).copied().unwrap_or(0), **count, **node)
                    })
                    .map(|(node, _)| *node);
                if let Some(node) = least {
                    *load.entry(node).or_default() += 1;
                    *here.entry(node).or_default() += 1;
                }
                least.unwrap_or(0)
            })
            .collect()
    }
}

fn move_to(stream: StreamId, target: u32) -> Record {
    Kind::StreamMoveRequested(StreamMoveRequested {
        stream: stream.get(),
        target,
    })
    .into()
}

fn assigned(stream: StreamId, owner: u32) -> Record {
    Kind::StreamAssigned(StreamAssigned {
        stream: stream.get(),
        owner,
    })
    .into()
}

/// Records giving each stream an owner, for streams created in the same change.
pub(crate) fn placement(state: &State, streams: &[u64]) -> Vec<Record> {
    state
        .place(streams.len())
        .into_iter()
        .zip(streams)
        .filter(|(owner, _)| *owner != 0)
        .map(|(owner, stream)| assigned(StreamId(*stream), owner))
        .collect()
}

impl Controller {
    /// Registers a broker (again): returns its new epoch (incarnation).
    pub async fn register_broker(&self, r: Registration) -> Result<u64, ControllerError> {
        if r.node_id == 0 {
            return Err(ControllerError::InvalidRequest(
                "node id 0 is reserved".into(),
            ));
        }
        let mut writer = self.writer().await;
        let epoch = self.read(|s| s.brokers.get(&r.node_id).map_or(1, |b| b.epoch + 1));
        let record = Kind::BrokerRegistered(BrokerRegistered {
            node_id: r.node_id,
            epoch,
            host: r.host,
            port: r.port,
            rpc: r.rpc,
            admin: r.admin,
            controller: r.controller,
            wal: r.wal,
        });
        self.commit(&mut writer, vec![record.into()]).await?;
        Ok(epoch)
    }

    /// Declares a broker's incarnation dead.
    pub async fn fence_broker(&self, node_id: u32, epoch: u64) -> Result<(), ControllerError> {
        let mut writer = self.writer().await;
        let current = self.read(|s| s.brokers.get(&node_id).map(|b| (b.epoch, b.fenced)));
        if current != Some((epoch, false)) {
            return Ok(()); // already fenced, or re-registered since
        }
        let record = Kind::BrokerFenced(BrokerFenced { node_id, epoch });
        self.commit(&mut writer, vec![record.into()]).await
    }

    /// Makes `node_id` the active controller: appends its election with the next term. Fails with
    /// `LostLeadership` if another broker appended first.
    pub async fn elect(&self, node_id: u32, rpc: &str) -> Result<u64, ControllerError> {
        let mut writer = self.writer().await;
        let term = self.read(|s| s.controller.as_ref().map_or(1, |a| a.term + 1));
        let record = Kind::ControllerElected(ControllerElected {
            node_id,
            term,
            rpc: rpc.to_owned(),
        });
        self.commit(&mut writer, vec![record.into()]).await?;
        Ok(term)
    }

    /// Gives every stream without a live owner one (the least loaded live brokers). Streams of a
    /// fenced broker are left to failover, which recovers its WAL first.
    pub async fn assign_unowned(&self) -> Result<usize, ControllerError> {
        let mut writer = self.writer().await;
        let records = self.read(|s| {
            let unowned: Vec<u64> = s
                .streams
                .iter()
                .filter(|(_, st)| st.owner == 0)
                .map(|(id, _)| id.get())
                .collect();
            placement(s, &unowned)
        });
        let n = records.len();
        if n > 0 {
            self.commit(&mut writer, records).await?;
        }
        Ok(n)
    }

    /// Starts moving a stream to `target` (DESIGN.md 6). A stream with no owner is assigned at once.
    pub async fn reassign(&self, stream: StreamId, target: u32) -> Result<(), ControllerError> {
        let mut writer = self.writer().await;
        let record = self.read(|s| {
            let live = s.brokers.get(&target).is_some_and(|b| !b.fenced);
            if !live {
                return Err(ControllerError::UnknownBroker(target));
            }
            let st = s
                .streams
                .get(&stream)
                .ok_or(ControllerError::UnknownStream(stream))?;
            Ok(if st.owner == target {
                // Already there: cancel any move elsewhere.
                (st.target != 0).then(|| move_to(stream, 0))
            } else if st.owner == 0 {
                Some(assigned(stream, target))
            } else {
                Some(move_to(stream, target))
            })
        })?;
        match record {
            Some(record) => self.commit(&mut writer, vec![record]).await,
            None => Ok(()),
        }
    }

    /// The old owner closed a moving stream it owned at `epoch`: the target becomes the owner.
    pub async fn move_done(&self, stream: StreamId, epoch: Epoch) -> Result<(), ControllerError> {
        let mut writer = self.writer().await;
        let target = self.read(|s| {
            let st = s
                .streams
                .get(&stream)
                .ok_or(ControllerError::UnknownStream(stream))?;
            if st.epoch != epoch {
                return Err(ControllerError::InvalidRequest(format!(
                    "{stream} is at {}, not {epoch}: it was reopened since",
                    st.epoch
                )));
            }
            Ok(st.target)
        })?;
        if target == 0 {
            return Ok(()); // cancelled meanwhile: the owner reopens it
        }
        self.commit(&mut writer, vec![assigned(stream, target)])
            .await
    }

    /// Gives the streams of a fenced broker, whose WAL has been recovered into objects, to the least
    /// loaded live brokers; moves towards it are cancelled.
    pub async fn reassign_from_fenced(&self, broker: u32) -> Result<usize, ControllerError> {
        let mut writer = self.writer().await;
        let records = self.read(|s| {
            if s.brokers.get(&broker).is_none_or(|b| !b.fenced) {
                return Vec::new();
            }
            let owned: Vec<u64> = s
                .streams
                .iter()
                .filter(|(_, st)| st.owner == broker)
                .map(|(id, _)| id.get())
                .collect();
            let mut records = placement(s, &owned);
            records.extend(
                s.streams
                    .iter()
                    .filter(|(_, st)| st.target == broker && st.owner != broker)
                    .map(|(id, _)| move_to(*id, 0)),
            );
            records
        });
        let n = records.len();
        if n > 0 {
            self.commit(&mut writer, records).await?;
        }
        Ok(n)
    }

    /// Moves every stream off `broker`, to the least loaded other live brokers.
    pub async fn drain(&self, broker: u32) -> Result<usize, ControllerError> {
        let mut writer = self.writer().await;
        let records = self.read(|s| {
            if !s.brokers.contains_key(&broker) {
                return Err(ControllerError::UnknownBroker(broker));
            }
            let mut load = s.load();
            load.remove(&broker);
            if load.is_empty() {
                return Err(ControllerError::InvalidRequest(format!(
                    "no other live broker to drain broker {broker} to"
                )));
            }
            let epoch = s.brokers.get(&broker).map_or(0, |b| b.epoch);
            let mut records = vec![
                Kind::BrokerDrained(BrokerDrained {
                    node_id: broker,
                    epoch,
                })
                .into(),
            ];
            for (id, st) in &s.streams {
                if st.owner != broker {
                    if st.target == broker {
                        // Moving to the drained broker: the owner keeps it.
                        records.push(move_to(*id, 0));
                    }
                    continue;
                }
                let Some((&target, _)) = load.iter().min_by_key(|(node, n)| (**n, **node)) else {
                    break;
                };
                *load.entry(target).or_default() += 1;
                records.push(move_to(*id, target));
            }
            Ok(records)
        })?;
        let n = records.len();
        if n > 0 {
            self.commit(&mut writer, records).await?;
        }
        Ok(n)
    }
}

/// What every partition weighs beyond its traffic (bytes per second), so idle partitions spread too.
const PARTITION_FLOOR: u64 = 1000;

/// Each partition's traffic as the balancer weighs it: an exponentially weighted moving average of
/// the rates its owners report (every heartbeat, over the second before), with time constant
/// `horizon`. One-second rates are noisy: a producer with sticky partitioning sends a few batches
/// per partition per second, so a balancer reading them raw sees a new 10% imbalance every round
/// and moves partitions back and forth. The average belongs to the partition, not to its owner,
/// so it survives a move.
#[derive(Debug)]
pub(crate) struct Loads {
    horizon: std::time::Duration,
    rates: HashMap<StreamId, (f64, std::time::Instant)>,
}

impl Loads {
    /// No reports yet; averages over about `horizon`.
    pub(crate) fn new(horizon: std::time::Duration) -> Loads {
        Loads {
            horizon: horizon.max(std::time::Duration::from_millis(1)),
            rates: HashMap::new(),
        }
    }

    /// One reported rate of `stream` (bytes per second), taken at `now`.
    pub(crate) fn record(&mut self, stream: StreamId, bytes_per_s: u64, now: std::time::Instant) {
        let sample = bytes_per_s as f64;
        self.rates
            .entry(stream)
            .and_modify(|(rate, at)| {
                let dt = now.saturating_duration_since(*at).as_secs_f64();
                let alpha = 1.0 - (-dt / self.horizon.as_secs_f64()).exp();
                *rate += alpha * (sample - *rate);
                *at = now;
            })
            .or_insert((sample, now));
    }

    /// The average rate of every reported stream.
    pub(crate) fn snapshot(&self) -> HashMap<StreamId, u64> {
        self.rates
            .iter()
            .map(|(s, (rate, _))| (*s, rate.round() as u64))
            .collect()
    }
}

/// The balancer's moves (DESIGN.md 6): from the most to the least loaded live broker, while the most
/// loaded is more than 10% above the average and a move makes the pair better balanced; at most three
/// at a time, none while a move is under way or a fenced broker still owns partitions. `loads` are
/// the partitions' bytes per second as their owners report them; only `healthy` brokers (heard from
/// lately) take part, and never a drained one.
pub fn plan_balance(
    state: &State,
    loads: &HashMap<StreamId, u64>,
    healthy: impl Fn(u32) -> bool,
) -> Vec<(StreamId, u32)> {
    let live: Vec<u32> = state
        .open_brokers()
        .into_iter()
        .filter(|b| healthy(*b))
        .collect();
    let busy = state
        .streams
        .values()
        .any(|st| st.target != 0 || (st.owner != 0 && !live.contains(&st.owner)));
    if live.len() < 2 || busy {
        return Vec::new();
    }
    let weight = |id: &StreamId| loads.get(id).copied().unwrap_or(0) + PARTITION_FLOOR;
    let mut load: BTreeMap<u32, u64> = live.iter().map(|b| (*b, 0)).collect();
    let mut owned: BTreeMap<u32, Vec<(StreamId, u64)>> = BTreeMap::new();
    for (id, st) in &state.streams {
        if let Some(l) = load.get_mut(&st.owner) {
            *l += weight(id);
            owned.entry(st.owner).or_default().push((*id, weight(id)));
        }
    }
    // Each topic's partitions per broker: among equally good moves, the one spreading its topic
    // the most (as Kafka spreads each topic's partitions).
    let topic_of: HashMap<StreamId, &str> = state
        .topics
        .values()
        .flat_map(|t| t.partitions.iter().map(move |s| (*s, t.name.as_str())))
        .collect();
    let mut per_topic: HashMap<(&str, u32), i64> = HashMap::new();
    for (id, st) in &state.streams {
        if let Some(topic) = topic_of.get(id) {
            *per_topic.entry((topic, st.owner)).or_default() += 1;
        }
    }
    let total: u64 = load.values().sum();
    let average = total / load.len() as u64;
    let mut moves = Vec::new();
    while moves.len() < 3 {
        let (Some((&most, &high)), Some((&least, &low))) = (
            load.iter()
                .max_by_key(|(b, l)| (**l, std::cmp::Reverse(**b))),
            load.iter().min_by_key(|(b, l)| (**l, **b)),
        ) else {
            break;
        };
        if high * 10 <= average * 11 || most == least {
            break;
        }
        // The partition closest to half the gap, if moving it helps the pair.
        let gap = high - low;
        let candidates = owned.get(&most).map(Vec::as_slice).unwrap_or_default();
        let spread = |stream: &StreamId| {
            topic_of.get(stream).map_or(0, |t| {
                per_topic.get(&(*t, most)).copied().unwrap_or(0)
                    - per_topic.get(&(*t, least)).copied().unwrap_or(0)
            })
        };
        let Some(&(stream, w)) = candidates
            .iter()
            .filter(|(_, w)| *w < gap)
            .min_by_key(|(s, w)| ((gap / 2).abs_diff(*w), -spread(s), *s))
        else {
            break;
        };
        moves.push((stream, least));
        if let Some(topic) = topic_of.get(&stream) {
            *per_topic.entry((*topic, most)).or_default() -= 1;
            *per_topic.entry((*topic, least)).or_default() += 1;
        }
        *load.entry(most).or_default() -= w;
        *load.entry(least).or_default() += w;
        if let Some(list) = owned.get_mut(&most) {
            list.retain(|(s, _)| *s != stream);
        }
        owned.entry(least).or_default().push((stream, w));
    }
    moves
}

#[cfg(test)]
mod tests;
