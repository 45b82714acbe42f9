//! InitProducerId: a new producer id for an idempotent producer, from the node's block, which the
//! controller hands out. Transactional producers are not served yet (issue 10): they get
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which clients report at once instead of retrying.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::node::Node;

pub(super) async fn handle(node: &Node, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = &request.transactional_id {
        tracing::warn!(transactional_id = %id.as_str(), "a transactional producer was refused: transactions are not supported yet");
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
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
