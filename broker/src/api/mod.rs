//! The Kafka APIs Weir serves: one route table (which also produces the ApiVersions answer) and one
//! handler module per API. Handlers do no socket I/O; the connection decodes and encodes.

mod alter;
mod api_versions;
mod authorize;
mod consumer_group;
mod create_topics;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_producers;
mod describe_topic_partitions;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod offsets;
mod produce;
mod reassignments;
mod security;
mod txn;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::{Message, VersionRange};

use crate::node::Node;
use crate::security::acl::{Access, Operation, Resource};

pub(crate) use api_versions::unsupported_version_response;

/// Who sent a request: what handlers may need of the connection.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The connection's remote address.
    pub(crate) peer: std::net::SocketAddr,
    /// The authenticated principal (`User:alice`), `User:ANONYMOUS` without a login.
    pub(crate) principal: std::sync::Arc<str>,
}

impl Client {
    /// The client's host as Kafka shows it in group descriptions (`/127.0.0.1`).
    pub(crate) fn host(&self) -> String {
        format!("/{}", self.peer.ip())
    }

    /// Whether the ACLs let the client do `operation` on a resource; a refusal is logged.
    pub(crate) fn may(
        &self,
        node: &Node,
        operation: Operation,
        resource: Resource,
        name: &str,
    ) -> bool {
        let allowed = self.may_quietly(node, operation, resource, name);
        if !allowed {
            tracing::info!(
                principal = %self.principal,
                host = %self.peer.ip(),
                operation = operation.name(),
                resource = resource.name(),
                name,
                "request denied"
            );
        }
        allowed
    }

    /// [`may`](Self::may) without logging a refusal (lists filtered to what the client may see).
    pub(crate) fn may_quietly(
        &self,
        node: &Node,
        operation: Operation,
        resource: Resource,
        name: &str,
    ) -> bool {
        if !node.authorizer.enabled {
            return true;
        }
        node.controller.read(|s| {
            node.authorizer.permits(
                &s.acls,
                Access {
                    principal: &self.principal,
                    host: self.peer.ip(),
                    operation,
                    resource,
                    name,
                },
            )
        })
    }

    /// Whether the client may do `operation` on some resource of the type (KIP-679).
    pub(crate) fn may_any(&self, node: &Node, operation: Operation, resource: Resource) -> bool {
        if !node.authorizer.enabled {
            return true;
        }
        node.controller.read(|s| {
            node.authorizer.permits_any(
                &s.acls,
                &self.principal,
                self.peer.ip(),
                operation,
                resource,
            )
        })
    }
}

/// The APIs served and their version ranges: those of Kafka 4.1 (the `kafka-protocol` crate's), never
/// a higher minimum. Only what is implemented is listed: clients act on what ApiVersions advertises.
pub(crate) fn supported() -> Vec<(ApiKey, VersionRange)> {
    use kafka_protocol::messages::*;
    vec![
        (ApiKey::Produce, ProduceRequest::VERSIONS),
        (ApiKey::Fetch, FetchRequest::VERSIONS),
        (ApiKey::ListOffsets, ListOffsetsRequest::VERSIONS),
        (ApiKey::Metadata, MetadataRequest::VERSIONS),
        (ApiKey::ApiVersions, ApiVersionsRequest::VERSIONS),
        (ApiKey::CreateTopics, CreateTopicsRequest::VERSIONS),
        (ApiKey::DeleteTopics, DeleteTopicsRequest::VERSIONS),
        (
            ApiKey::OffsetForLeaderEpoch,
            OffsetForLeaderEpochRequest::VERSIONS,
        ),
        (ApiKey::DescribeConfigs, DescribeConfigsRequest::VERSIONS),
        (ApiKey::DescribeCluster, DescribeClusterRequest::VERSIONS),
        (ApiKey::FindCoordinator, FindCoordinatorRequest::VERSIONS),
        (ApiKey::JoinGroup, JoinGroupRequest::VERSIONS),
        (ApiKey::SyncGroup, SyncGroupRequest::VERSIONS),
        (ApiKey::Heartbeat, HeartbeatRequest::VERSIONS),
        (ApiKey::LeaveGroup, LeaveGroupRequest::VERSIONS),
        (ApiKey::OffsetCommit, OffsetCommitRequest::VERSIONS),
        (ApiKey::OffsetFetch, OffsetFetchRequest::VERSIONS),
        (ApiKey::ListGroups, ListGroupsRequest::VERSIONS),
        (ApiKey::DescribeGroups, DescribeGroupsRequest::VERSIONS),
        (ApiKey::DeleteGroups, DeleteGroupsRequest::VERSIONS),
        (ApiKey::OffsetDelete, OffsetDeleteRequest::VERSIONS),
        (ApiKey::CreatePartitions, CreatePartitionsRequest::VERSIONS),
        (ApiKey::AlterConfigs, AlterConfigsRequest::VERSIONS),
        (
            ApiKey::IncrementalAlterConfigs,
            IncrementalAlterConfigsRequest::VERSIONS,
        ),
        (ApiKey::DeleteRecords, DeleteRecordsRequest::VERSIONS),
        (
            ApiKey::ConsumerGroupHeartbeat,
            ConsumerGroupHeartbeatRequest::VERSIONS,
        ),
        (
            ApiKey::ConsumerGroupDescribe,
            ConsumerGroupDescribeRequest::VERSIONS,
        ),
        (
            ApiKey::DescribeTopicPartitions,
            DescribeTopicPartitionsRequest::VERSIONS,
        ),
        (
            ApiKey::AlterPartitionReassignments,
            AlterPartitionReassignmentsRequest::VERSIONS,
        ),
        (
            ApiKey::ListPartitionReassignments,
            ListPartitionReassignmentsRequest::VERSIONS,
        ),
        (ApiKey::InitProducerId, InitProducerIdRequest::VERSIONS),
        (
            ApiKey::DescribeProducers,
            DescribeProducersRequest::VERSIONS,
        ),
        // Transactions as of KIP-98/KIP-447. The versions that mean transaction version 2
        // (KIP-890: AddPartitionsToTxn 4+ between brokers, EndTxn 5 bumping the epoch at every
        // end, TxnOffsetCommit 5 adding the partition implicitly, AddOffsetsToTxn 4) are not
        // served, so not advertised; clients then use the protocol served here.
        (ApiKey::AddPartitionsToTxn, VersionRange { min: 0, max: 3 }),
        (ApiKey::AddOffsetsToTxn, VersionRange { min: 0, max: 3 }),
        (ApiKey::EndTxn, VersionRange { min: 0, max: 4 }),
        (ApiKey::TxnOffsetCommit, VersionRange { min: 0, max: 4 }),
        (ApiKey::WriteTxnMarkers, WriteTxnMarkersRequest::VERSIONS),
        (
            ApiKey::DescribeTransactions,
            DescribeTransactionsRequest::VERSIONS,
        ),
        // v2 filters by a regular expression over transactional ids, not served.
        (ApiKey::ListTransactions, VersionRange { min: 0, max: 1 }),
        (ApiKey::SaslHandshake, SaslHandshakeRequest::VERSIONS),
        (ApiKey::SaslAuthenticate, SaslAuthenticateRequest::VERSIONS),
        (
            ApiKey::DescribeUserScramCredentials,
            DescribeUserScramCredentialsRequest::VERSIONS,
        ),
        (
            ApiKey::AlterUserScramCredentials,
            AlterUserScramCredentialsRequest::VERSIONS,
        ),
        (ApiKey::CreateAcls, CreateAclsRequest::VERSIONS),
        (ApiKey::DescribeAcls, DescribeAclsRequest::VERSIONS),
        (ApiKey::DeleteAcls, DeleteAclsRequest::VERSIONS),
    ]
}

/// The supported range of `key`, if it is served.
pub(crate) fn version_range(key: ApiKey) -> Option<VersionRange> {
    supported()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, range)| range)
}

/// A handler's answer: now, or (Produce) once its batches are durable. `None`: no response is
/// sent (Produce with acks=0).
// Returned once per request and moved once: boxing `Now` would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Answer {
    Now(Option<ResponseKind>),
    Later(futures::future::BoxFuture<'static, Option<ResponseKind>>),
}

/// Serves one decoded request.
pub(crate) async fn handle(
    node: &Node,
    client: &Client,
    header: &RequestHeader,
    request: RequestKind,
) -> Answer {
    let version = header.request_api_version;
    let (request, denied) = match authorize::check(node, client, request, version) {
        Ok(checked) => checked,
        Err(refused) => return Answer::Now(Some(refused)),
    };
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle()),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(node, client, r, version).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(node, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(node, r, version).await)
        }
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let pending = produce::start(node, client, r, version).await;
            return Answer::Later(Box::pin(async move {
                let response = pending.await;
                (acks != 0).then_some(ResponseKind::Produce(response))
            }));
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(node, client, r, version).await),
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(describe_producers::handle(node, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(node, r, version).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(txn::add_partitions(node, r, version).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(txn::add_offsets(node, r, version).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(txn::end(node, r, version).await),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::commit_offsets(node, r).await)
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(txn::write_markers(node, r).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(txn::describe(node, r).await)
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(txn::list(node, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(node, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(node, r, version))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(node, r))
        }
        RequestKind::FindCoordinator(r) => {
            if r.key_type == 1 && (version < 4 || !r.coordinator_keys.is_empty()) {
                // Transactions' coordinators live in `__transaction_state`, created on first use.
                let _ = node.transactions.ensure_topic(node).await;
            }
            ResponseKind::FindCoordinator(groups::find_coordinator(node, r, version))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join_group(node, client, header, r, version).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(groups::sync_group(node, r, version).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(node, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(groups::leave_group(node, r, version).await)
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(node, r).await),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(node, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(node, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(groups::offset_delete(node, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(alter::create_partitions(node, r).await)
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(alter::alter_configs(node, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(alter::incremental_alter_configs(node, r).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
            consumer_group::heartbeat(node, client, header, r, version).await,
        ),
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumer_group::describe(node, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(node, r).await)
        }
        RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
            describe_topic_partitions::handle(node, client, r),
        ),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offsets::commit(node, client, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offsets::fetch(node, client, r, version).await)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(node, r, version).await)
        }
        RequestKind::AlterPartitionReassignments(r) => {
            ResponseKind::AlterPartitionReassignments(reassignments::alter(node, r).await)
        }
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(reassignments::list(node, r))
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            ResponseKind::DescribeUserScramCredentials(security::describe_scram(node, client, r))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(security::alter_scram(node, client, r).await)
        }
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(security::create_acls(node, client, r).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(security::describe_acls(node, client, r))
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(security::delete_acls(node, client, r).await)
        }
        other => {
            // The connection only decodes what `supported` lists.
            tracing::error!(request = ?std::mem::discriminant(&other), "no handler for a decoded request");
            return Answer::Now(None);
        }
    };
    Answer::Now(Some(authorize::merge(node, client, response, denied)))
}
