//! InitProducerId: a new producer id for an idempotent producer, from the node's block, which the
//! controller hands out; for a transactional producer, its transactional id's producer id at a new
//! epoch, from the id's coordinator (`crate::txn`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::node::Node;

pub(super) async fn handle(
    node: &Node,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = &request.transactional_id {
        let claimed =
            (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
        return match node
            .transactions
            .init_producer(node, id, request.transaction_timeout_ms, claimed, version)
            .await
        {
            Ok((producer_id, epoch)) => response
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Err(code) => {
                tracing::debug!(transactional_id = %id.as_str(), code, "InitProducerId refused");
                response.with_error_code(code)
            }
        };
    }
    // Without a transactional id there is nothing to check a claimed id and epoch against: as
    // Kafka, a new id at epoch 0 (clients bump their own epoch, KIP-360). Otherwise any client
    // could fence another producer by naming its id.
    match node.producers.next_id(&node.controller).await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::warn!(error = %e, "cannot allocate producer ids");
            response.with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}
