//! A cluster broker's partitions follow the metadata (DESIGN.md 6). On every metadata change:
//!
//! - a partition assigned here and not moving is opened (its epoch bumped: any earlier owner is
//!   fenced) and, for `__consumer_offsets` and `__transaction_state`, its groups or transactions
//!   are rebuilt: this broker coordinates them;
//! - a partition owned here that is moving away stops taking writes, uploads what it holds that is
//!   not in objects yet, closes, and is reported done, so the controller makes the target the owner.
//!   Nothing else moves: the data is already in the bucket;
//! - a partition open here that another broker owns (this broker was fenced and its partitions
//!   given away after its WAL was recovered) is abandoned.
//!
//! Failures (the controller unreachable, a store outage) are retried on the next change or after a
//! second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use weir_common::{Epoch, StreamId};

use crate::group::OFFSETS_TOPIC;
use crate::node::Node;

/// Which coordinator an internal partition serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coordinated {
    Groups,
    Transactions,
}

/// A stream, what to do with it, and, for an internal topic's partition, whose coordinator and
/// `(index, partition count)`.
type Step = (StreamId, Action, Option<(Coordinated, i32, usize)>);

#[derive(Debug, Clone, Copy)]
enum Action {
    Open,
    /// Open here, but its groups are not loaded (an earlier load failed): load them.
    Load,
    MoveAway(Epoch),
    Abandon,
}

/// Keeps the partitions open here in line with the metadata until `stop`.
pub(crate) async fn follow_assignments(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut changes = node.controller.subscribe();
    loop {
        reconcile(&node).await;
        tokio::select! {
            _ = stop.changed() => return,
            _ = changes.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One pass: what the metadata says against what is open here.
pub(crate) async fn reconcile(node: &Node) {
    let Ok(me) = u32::try_from(node.config.node_id) else {
        return;
    };
    let plan: Vec<Step> = node.controller.read(|s| {
        // Until registered, and while fenced, this broker serves nothing.
        let serving = s.brokers.get(&me).is_some_and(|b| !b.fenced);
        let mut plan = Vec::new();
        for topic in s.topics.values() {
            let coordinated = if topic.name == OFFSETS_TOPIC {
                Some(Coordinated::Groups)
            } else if topic.name == crate::txn::TXN_TOPIC {
                Some(Coordinated::Transactions)
            } else {
                None
            };
            for (index, stream) in topic.partitions.iter().enumerate() {
                let Some(st) = s.streams.get(stream) else {
                    continue;
                };
                let open = node.storage.stream(*stream).is_some();
                let group_partition = coordinated
                    .map(|c| (c, i32::try_from(index).unwrap_or(0), topic.partitions.len()));
                let action = if st.owner == me && serving {
                    if st.target != 0 && st.target != me {
                        Some(Action::MoveAway(st.epoch))
                    } else if !open {
                        Some(Action::Open)
                    } else if group_partition.is_some_and(|(c, i, _)| !is_loaded(node, c, i)) {
                        Some(Action::Load)
                    } else {
                        None
                    }
                } else if open {
                    Some(Action::Abandon)
                } else {
                    None
                };
                if let Some(action) = action {
                    plan.push((*stream, action, group_partition));
                }
            }
        }
        plan
    });
    for (stream, action, group_partition) in plan {
        if let Err(e) = carry_out(node, stream, action, group_partition).await {
            tracing::warn!(%stream, ?action, error = %e, "partition assignment not carried out yet; retrying");
        }
    }
}

fn is_loaded(node: &Node, coordinated: Coordinated, index: i32) -> bool {
    match coordinated {
        Coordinated::Groups => node.groups.is_loaded(index),
        Coordinated::Transactions => node.transactions.is_loaded(index),
    }
}

/// Takes over the coordination an internal partition now open here carries.
async fn load(node: &Node, coordinated: Coordinated, index: i32) -> anyhow::Result<()> {
    match coordinated {
        Coordinated::Groups => {
            let (offsets, groups) = node.groups.load_partition(node, index).await?;
            tracing::info!(index, offsets, groups, "group coordination taken over");
        }
        Coordinated::Transactions => {
            let transactions = node.transactions.load_partition(node, index).await?;
            tracing::info!(index, transactions, "transaction coordination taken over");
        }
    }
    Ok(())
}

fn unload(node: &Node, coordinated: Coordinated, index: i32, partitions: usize) {
    match coordinated {
        Coordinated::Groups => node.groups.unload_partition(index, partitions),
        Coordinated::Transactions => node.transactions.unload_partition(index, partitions),
    }
}

async fn carry_out(
    node: &Node,
    stream: StreamId,
    action: Action,
    group_partition: Option<(Coordinated, i32, usize)>,
) -> anyhow::Result<()> {
    match action {
        Action::Open => {
            let handle = node.storage.open_stream(stream).await?;
            tracing::info!(%stream, epoch = %handle.epoch(), "partition opened here");
            if let Some((c, index, _)) = group_partition {
                load(node, c, index).await?;
            }
        }
        Action::Load => {
            if let Some((c, index, _)) = group_partition {
                load(node, c, index).await?;
            }
        }
        Action::MoveAway(epoch) => {
            if let Some((c, index, partitions)) = group_partition {
                unload(node, c, index, partitions);
            }
            let epoch = match node.storage.stream(stream) {
                Some(handle) => {
                    let epoch = handle.epoch();
                    node.storage.close_stream(stream).await?;
                    epoch
                }
                None => epoch,
            };
            node.controller.move_done(stream, epoch).await?;
            tracing::info!(%stream, %epoch, "partition handed over");
        }
        Action::Abandon => {
            if let Some((c, index, partitions)) = group_partition {
                unload(node, c, index, partitions);
            }
            node.storage.abandon_stream(stream);
        }
    }
    Ok(())
}
