//! A cluster broker's partitions follow the metadata (DESIGN.md 6). On every metadata change:
//!
//! - a partition assigned here and not moving is opened (its epoch bumped: any earlier owner is
//!   fenced) and, for `__consumer_offsets`, its groups are rebuilt: this broker coordinates them;
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

/// A stream, what to do with it, and its `__consumer_offsets` partition `(index, count)` if any.
type Step = (StreamId, Action, Option<(i32, usize)>);

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
            let offsets = topic.name == OFFSETS_TOPIC;
            for (index, stream) in topic.partitions.iter().enumerate() {
                let Some(st) = s.streams.get(stream) else {
                    continue;
                };
                let open = node.storage.stream(*stream).is_some();
                let group_partition =
                    offsets.then(|| (i32::try_from(index).unwrap_or(0), topic.partitions.len()));
                let action = if st.owner == me && serving {
                    if st.target != 0 && st.target != me {
                        Some(Action::MoveAway(st.epoch))
                    } else if !open {
                        Some(Action::Open)
                    } else if group_partition.is_some_and(|(i, _)| !node.groups.is_loaded(i)) {
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

async fn carry_out(
    node: &Node,
    stream: StreamId,
    action: Action,
    group_partition: Option<(i32, usize)>,
) -> anyhow::Result<()> {
    match action {
        Action::Open => {
            let handle = node.storage.open_stream(stream).await?;
            tracing::info!(%stream, epoch = %handle.epoch(), "partition opened here");
            if let Some((index, _)) = group_partition {
                let (offsets, groups) = node.groups.load_partition(node, index).await?;
                tracing::info!(index, offsets, groups, "group coordination taken over");
            }
        }
        Action::Load => {
            if let Some((index, _)) = group_partition {
                let (offsets, groups) = node.groups.load_partition(node, index).await?;
                tracing::info!(index, offsets, groups, "group coordination taken over");
            }
        }
        Action::MoveAway(epoch) => {
            if let Some((index, partitions)) = group_partition {
                node.groups.unload_partition(index, partitions);
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
            if let Some((index, partitions)) = group_partition {
                node.groups.unload_partition(index, partitions);
            }
            node.storage.abandon_stream(stream);
        }
    }
    Ok(())
}
