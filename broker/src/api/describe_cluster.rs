//! DescribeCluster: this node as the only broker and the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use crate::node::Node;

pub(super) fn handle(node: &Node, _request: DescribeClusterRequest) -> DescribeClusterResponse {
    let (host, port) = node.config.advertised();
    let me = BrokerId(node.config.node_id);
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(node.cluster_id.clone()))
        .with_controller_id(me)
        .with_brokers(vec![
            DescribeClusterBroker::default()
                .with_broker_id(me)
                .with_host(StrBytes::from_string(host))
                .with_port(port),
        ])
}
