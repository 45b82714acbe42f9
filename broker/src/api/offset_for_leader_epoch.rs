//! OffsetForLeaderEpoch: where an epoch ended, from the epoch history the controller keeps.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use weir_common::Epoch;

use crate::node::Node;

pub(super) fn handle(
    node: &Node,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = node.topic(&t.topic);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = EpochEndOffset::default().with_partition(p.partition);
                    let found = topic.as_ref().and_then(|tp| {
                        let stream = *tp.partitions.get(usize::try_from(p.partition).ok()?)?;
                        Some((stream, node.partition(tp, p.partition)?))
                    });
                    let Some((stream, partition)) = found else {
                        let code = topic
                            .as_ref()
                            .map_or(ResponseError::UnknownTopicOrPartition.code(), |tp| {
                                node.not_here(tp, p.partition)
                            });
                        return result.with_error_code(code);
                    };
                    if p.current_leader_epoch >= 0
                        && p.current_leader_epoch != partition.leader_epoch
                    {
                        let code = if p.current_leader_epoch < partition.leader_epoch {
                            ResponseError::FencedLeaderEpoch
                        } else {
                            ResponseError::UnknownLeaderEpoch
                        };
                        return result.with_error_code(code.code());
                    }
                    let asked = Epoch(u64::try_from(p.leader_epoch).unwrap_or(0));
                    let answer = node.controller.read(|s| s.epoch_end(stream, asked));
                    let hw =
                        i64::try_from(partition.stream.high_watermark().get()).unwrap_or(i64::MAX);
                    match answer {
                        Some((epoch, end)) => result
                            .with_leader_epoch(i32::try_from(epoch.get()).unwrap_or(i32::MAX))
                            .with_end_offset(
                                end.map_or(hw, |e| i64::try_from(e.get()).unwrap_or(i64::MAX)),
                            ),
                        // Older than anything this partition has: Kafka's "undefined" answer.
                        None => result.with_leader_epoch(-1).with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
