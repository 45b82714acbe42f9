//! The admin HTTP API's cluster endpoints (JSON):
//!
//! - `GET /v1/cluster`: the brokers (id, address, liveness, epoch), the active controller, and every
//!   partition's owner, move target, leader and epoch;
//! - `POST /v1/cluster/reassign` `{"topic", "partition", "broker"}`: moves a partition to a broker
//!   (no data moves: DESIGN.md 6); answers once the controller has recorded the move;
//! - `POST /v1/cluster/drain` `{"broker"}`: moves every partition off a broker.
//!
//! Errors are `{"error": "..."}` with 400 (bad request), 404 (unknown topic, partition or broker)
//! or 503 (no controller reachable).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use weir_controller::ControllerError;

use crate::node::Node;

/// One broker as `GET /v1/cluster` shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerView {
    /// Node id.
    pub id: u32,
    /// Advertised Kafka `host:port`.
    pub kafka: String,
    /// gRPC endpoint.
    pub rpc: String,
    /// Admin HTTP address.
    pub admin: String,
    /// Incarnation.
    pub epoch: u64,
    /// Declared dead.
    pub fenced: bool,
    /// Drained: takes no partitions until it registers again.
    pub drained: bool,
    /// May become the controller.
    pub controller_capable: bool,
}

/// One partition as `GET /v1/cluster` shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionView {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Owning broker (0: none).
    pub owner: u32,
    /// Broker it is moving to (0: not moving).
    pub target: u32,
    /// The broker clients are sent to.
    pub leader: u32,
    /// Its stream's epoch (Kafka's leader epoch).
    pub epoch: u64,
}

/// `GET /v1/cluster`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster id.
    pub cluster_id: String,
    /// The active controller's node id (0: none known).
    pub controller: u32,
    /// Brokers by node id.
    pub brokers: Vec<BrokerView>,
    /// Every partition of every topic.
    pub partitions: Vec<PartitionView>,
}

/// `POST /v1/cluster/reassign`.
#[derive(Debug, Deserialize)]
pub struct Reassign {
    topic: String,
    partition: u32,
    broker: u32,
}

/// `POST /v1/cluster/drain`.
#[derive(Debug, Deserialize)]
pub struct Drain {
    broker: u32,
}

type Answer = (StatusCode, Json<serde_json::Value>);

fn error(status: StatusCode, message: impl std::fmt::Display) -> Answer {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
}

fn controller_error(e: &ControllerError) -> Answer {
    let status = match e {
        ControllerError::UnknownTopic(_)
        | ControllerError::UnknownStream(_)
        | ControllerError::UnknownBroker(_) => StatusCode::NOT_FOUND,
        ControllerError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

/// The cluster as this broker's metadata shows it.
pub fn view(node: &Node) -> ClusterView {
    node.controller.read(|s| ClusterView {
        cluster_id: node.cluster_id.clone(),
        controller: s.controller.as_ref().map_or(
            if node.controller.is_cluster() {
                0
            } else {
                u32::try_from(node.config.node_id).unwrap_or(0)
            },
            |a| a.node_id,
        ),
        brokers: s
            .brokers
            .values()
            .map(|b| BrokerView {
                id: b.node_id,
                kafka: format!("{}:{}", b.host, b.port),
                rpc: b.rpc.clone(),
                admin: b.admin.clone(),
                epoch: b.epoch,
                fenced: b.fenced,
                drained: b.drained,
                controller_capable: b.controller,
            })
            .collect(),
        partitions: s
            .topics
            .values()
            .flat_map(|t| {
                t.partitions.iter().enumerate().filter_map(|(i, stream)| {
                    let st = s.streams.get(stream)?;
                    Some(PartitionView {
                        topic: t.name.clone(),
                        partition: u32::try_from(i).ok()?,
                        owner: st.owner,
                        target: st.target,
                        leader: st.leader(),
                        epoch: st.epoch.get(),
                    })
                })
            })
            .collect(),
    })
}

/// `GET /v1/cluster`.
pub async fn get_cluster(State(node): State<Arc<Node>>) -> Json<ClusterView> {
    Json(view(&node))
}

/// `POST /v1/cluster/reassign`.
pub async fn reassign(State(node): State<Arc<Node>>, Json(r): Json<Reassign>) -> Answer {
    let Some(topic) = node.topic(&r.topic) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown topic {:?}", r.topic),
        );
    };
    let Some(stream) = usize::try_from(r.partition)
        .ok()
        .and_then(|p| topic.partitions.get(p))
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("topic {:?} has no partition {}", r.topic, r.partition),
        );
    };
    match node.controller.reassign(*stream, r.broker).await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({
                "topic": r.topic, "partition": r.partition, "broker": r.broker,
            })),
        ),
        Err(e) => controller_error(&e),
    }
}

/// `POST /v1/cluster/drain`.
pub async fn drain(State(node): State<Arc<Node>>, Json(d): Json<Drain>) -> Answer {
    match node.controller.drain(d.broker).await {
        Ok(()) => (
            StatusCode::OK,
            Json(serde_json::json!({ "broker": d.broker })),
        ),
        Err(e) => controller_error(&e),
    }
}
