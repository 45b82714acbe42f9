//! SCRAM credentials (DescribeUserScramCredentials, AlterUserScramCredentials, KIP-554) and ACLs
//! (CreateAcls, DescribeAcls, DeleteAcls): kept in the cluster metadata, changed through the
//! controller. Credentials are stored salted (StoredKey and ServerKey, never the password).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use weir_controller::records::{AclBinding, ScramCredential, ScramCredentialKey, SecurityChanged};

use super::Client;
use crate::node::Node;
use crate::security::acl::{self, CLUSTER, Filter, Operation, Resource};
use crate::security::scram::{self, Credential, Mechanism};

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn message(text: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(text.into()))
}

fn denied() -> (i16, Option<StrBytes>) {
    (
        ResponseError::ClusterAuthorizationFailed.code(),
        message("Cluster authorization failed."),
    )
}

pub(super) fn describe_scram(
    node: &Node,
    client: &Client,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !client.may(node, Operation::Describe, Resource::Cluster, CLUSTER) {
        let (code, text) = denied();
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(code)
            .with_error_message(text);
    }
    let stored: BTreeMap<String, Vec<(i8, i32)>> = node.controller.read(|state| {
        let mut users: BTreeMap<String, Vec<(i8, i32)>> = BTreeMap::new();
        for ((user, mechanism), c) in &state.scram {
            users.entry(user.clone()).or_default().push((
                i8::try_from(*mechanism).unwrap_or(0),
                i32::try_from(c.iterations).unwrap_or(i32::MAX),
            ));
        }
        users
    });
    let result = |user: &str, infos: Option<&Vec<(i8, i32)>>| {
        let base = DescribeUserScramCredentialsResult::default().with_user(s(user));
        match infos {
            Some(infos) => base.with_credential_infos(
                infos
                    .iter()
                    .map(|(m, i)| {
                        CredentialInfo::default()
                            .with_mechanism(*m)
                            .with_iterations(*i)
                    })
                    .collect(),
            ),
            None => base
                .with_error_code(ResponseError::ResourceNotFound.code())
                .with_error_message(message(format!(
                    "Attempt to describe a user credential that does not exist: {user}"
                ))),
        }
    };
    let results = match request.users {
        None => stored
            .iter()
            .map(|(user, infos)| result(user, Some(infos)))
            .collect(),
        Some(users) if users.is_empty() => stored
            .iter()
            .map(|(user, infos)| result(user, Some(infos)))
            .collect(),
        Some(users) => {
            let mut seen = std::collections::HashSet::new();
            let mut results = Vec::new();
            for user in &users {
                let name = user.name.to_string();
                if !seen.insert(name.clone()) {
                    // Kafka refuses a user named twice.
                    results.push(
                        DescribeUserScramCredentialsResult::default()
                            .with_user(s(&name))
                            .with_error_code(ResponseError::DuplicateResource.code())
                            .with_error_message(message(format!(
                                "Cannot describe SCRAM credentials for the same user twice in a single request: {name}"
                            ))),
                    );
                    continue;
                }
                results.push(result(&name, stored.get(&name)));
            }
            results
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub(super) async fn alter_scram(
    node: &Node,
    client: &Client,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let allowed = client.may(node, Operation::Alter, Resource::Cluster, CLUSTER);
    let mut change = SecurityChanged::default();
    // Per user: its outcome so far (users named twice in one request are refused, as Kafka).
    let mut outcome: BTreeMap<String, (i16, Option<String>)> = BTreeMap::new();
    let mut count: BTreeMap<(String, i8), usize> = BTreeMap::new();
    for d in &request.deletions {
        *count.entry((d.name.to_string(), d.mechanism)).or_default() += 1;
    }
    for u in &request.upsertions {
        *count.entry((u.name.to_string(), u.mechanism)).or_default() += 1;
    }
    // What every change is checked for first: ALTER on the cluster, named once, a known mechanism.
    let checked = |user: &str, code: i8| -> Result<Mechanism, (i16, String)> {
        if !allowed {
            return Err((
                ResponseError::ClusterAuthorizationFailed.code(),
                "Cluster authorization failed.".into(),
            ));
        }
        if count.get(&(user.to_string(), code)).copied().unwrap_or(0) > 1 {
            return Err((
                ResponseError::DuplicateResource.code(),
                "A user credential cannot be altered twice in the same request".into(),
            ));
        }
        Mechanism::from_code(code).ok_or_else(|| {
            (
                ResponseError::UnsupportedSaslMechanism.code(),
                format!("Unknown SCRAM mechanism {code}"),
            )
        })
    };
    // A user's first refusal is the one answered.
    let mut record = |user: String, result: Result<(), (i16, String)>| {
        let entry = outcome.entry(user).or_insert((0, None));
        if let (Err((code, why)), 0) = (result, entry.0) {
            *entry = (code, Some(why));
        }
    };
    for d in &request.deletions {
        let user = d.name.to_string();
        let deletion = checked(&user, d.mechanism).and_then(|mechanism| {
            let key = ScramCredentialKey {
                user: user.clone(),
                mechanism: i32::from(mechanism.code()),
            };
            let exists = node
                .controller
                .read(|st| st.scram.contains_key(&(key.user.clone(), key.mechanism)));
            if exists {
                Ok(key)
            } else {
                Err((
                    ResponseError::ResourceNotFound.code(),
                    format!(
                        "Attempt to delete a user credential that does not exist: {user} {}",
                        mechanism.name()
                    ),
                ))
            }
        });
        record(
            user,
            deletion.map(|key| change.credentials_deleted.push(key)),
        );
    }
    for u in &request.upsertions {
        let user = u.name.to_string();
        let unacceptable = |why: String| (ResponseError::UnacceptableCredential.code(), why);
        let upsertion = checked(&user, u.mechanism).and_then(|mechanism| {
            if user.is_empty() || user == crate::security::INTERNAL_USER {
                return Err(unacceptable(
                    "Username must not be empty or reserved".into(),
                ));
            }
            let iterations = u32::try_from(u.iterations).unwrap_or(0);
            if !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&iterations) {
                return Err(unacceptable(format!(
                    "Iterations {} must be between {} and {}",
                    u.iterations,
                    scram::MIN_ITERATIONS,
                    scram::MAX_ITERATIONS
                )));
            }
            if u.salt.is_empty() || u.salted_password.is_empty() {
                return Err(unacceptable(
                    "Salt and salted password must not be empty".into(),
                ));
            }
            let c = Credential::from_salted_password(
                mechanism,
                u.salt.to_vec(),
                iterations,
                &u.salted_password,
            );
            Ok(stored(&user, &c))
        });
        record(user, upsertion.map(|c| change.credentials_set.push(c)));
    }
    // Only users whose every change is acceptable are changed.
    let refused: std::collections::HashSet<String> = outcome
        .iter()
        .filter(|(_, (code, _))| *code != 0)
        .map(|(u, _)| u.clone())
        .collect();
    change
        .credentials_set
        .retain(|c| !refused.contains(&c.user));
    change
        .credentials_deleted
        .retain(|c| !refused.contains(&c.user));
    if (!change.credentials_set.is_empty() || !change.credentials_deleted.is_empty())
        && let Err(e) = node.controller.change_security(change).await
    {
        tracing::warn!(error = %e, "SCRAM credentials not changed");
        for (user, result) in outcome.iter_mut() {
            if !refused.contains(user) {
                *result = (
                    ResponseError::UnknownServerError.code(),
                    Some(format!("credentials not stored: {e}")),
                );
            }
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(
        outcome
            .into_iter()
            .map(|(user, (code, why))| {
                AlterUserScramCredentialsResult::default()
                    .with_user(s(&user))
                    .with_error_code(code)
                    .with_error_message(why.map(StrBytes::from_string))
            })
            .collect(),
    )
}

/// The metadata record of a credential.
pub(crate) fn stored(user: &str, c: &Credential) -> ScramCredential {
    ScramCredential {
        user: user.to_string(),
        mechanism: i32::from(c.mechanism.code()),
        salt: c.salt.clone(),
        iterations: c.iterations,
        stored_key: c.stored_key.clone(),
        server_key: c.server_key.clone(),
    }
}

pub(super) async fn create_acls(
    node: &Node,
    client: &Client,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let allowed = client.may(node, Operation::Alter, Resource::Cluster, CLUSTER);
    let mut results = Vec::with_capacity(request.creations.len());
    let mut added = Vec::new();
    for c in &request.creations {
        let binding = AclBinding {
            resource_type: c.resource_type.into(),
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type.into(),
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation.into(),
            permission: c.permission_type.into(),
        };
        let result = if !allowed {
            let (code, text) = denied();
            AclCreationResult::default()
                .with_error_code(code)
                .with_error_message(text)
        } else if let Err(why) = acl::validate_binding(&binding) {
            AclCreationResult::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(message(why))
        } else {
            added.push(binding);
            AclCreationResult::default()
        };
        results.push(result);
    }
    if !added.is_empty() {
        let change = SecurityChanged {
            acls_added: added,
            ..SecurityChanged::default()
        };
        if let Err(e) = node.controller.change_security(change).await {
            tracing::warn!(error = %e, "ACLs not created");
            for r in results.iter_mut().filter(|r| r.error_code == 0) {
                r.error_code = ResponseError::UnknownServerError.code();
                r.error_message = message(format!("ACL not stored: {e}"));
            }
        }
    }
    CreateAclsResponse::default().with_results(results)
}

fn filter_of(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Filter {
    Filter {
        resource_type,
        name: name.map(ToString::to_string),
        pattern_type,
        principal: principal.map(ToString::to_string),
        host: host.map(ToString::to_string),
        operation,
        permission,
    }
}

pub(super) fn describe_acls(
    node: &Node,
    client: &Client,
    r: DescribeAclsRequest,
) -> DescribeAclsResponse {
    if !client.may(node, Operation::Describe, Resource::Cluster, CLUSTER) {
        let (code, text) = denied();
        return DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(text);
    }
    let filter = filter_of(
        r.resource_type_filter,
        r.resource_name_filter.as_ref(),
        r.pattern_type_filter,
        r.principal_filter.as_ref(),
        r.host_filter.as_ref(),
        r.operation,
        r.permission_type,
    );
    if let Err(why) = filter.validate() {
        return DescribeAclsResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(message(why));
    }
    let matching: Vec<AclBinding> = node.controller.read(|st| {
        st.acls
            .iter()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect()
    });
    let mut resources: BTreeMap<(i32, String, i32), Vec<AclDescription>> = BTreeMap::new();
    for a in matching {
        resources
            .entry((a.resource_type, a.resource_name.clone(), a.pattern_type))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(s(&a.principal))
                    .with_host(s(&a.host))
                    .with_operation(i8::try_from(a.operation).unwrap_or(0))
                    .with_permission_type(i8::try_from(a.permission).unwrap_or(0)),
            );
    }
    DescribeAclsResponse::default().with_resources(
        resources
            .into_iter()
            .map(|((t, name, p), acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(i8::try_from(t).unwrap_or(0))
                    .with_resource_name(s(&name))
                    .with_pattern_type(i8::try_from(p).unwrap_or(0))
                    .with_acls(acls)
            })
            .collect(),
    )
}

pub(super) async fn delete_acls(
    node: &Node,
    client: &Client,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let allowed = client.may(node, Operation::Alter, Resource::Cluster, CLUSTER);
    let mut results = Vec::with_capacity(request.filters.len());
    let mut removed: Vec<AclBinding> = Vec::new();
    for f in &request.filters {
        let filter = filter_of(
            f.resource_type_filter,
            f.resource_name_filter.as_ref(),
            f.pattern_type_filter,
            f.principal_filter.as_ref(),
            f.host_filter.as_ref(),
            f.operation,
            f.permission_type,
        );
        if !allowed {
            let (code, text) = denied();
            results.push(
                DeleteAclsFilterResult::default()
                    .with_error_code(code)
                    .with_error_message(text),
            );
            continue;
        }
        if let Err(why) = filter.validate() {
            results.push(
                DeleteAclsFilterResult::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(message(why)),
            );
            continue;
        }
        let matching: Vec<AclBinding> = node.controller.read(|st| {
            st.acls
                .iter()
                .filter(|a| filter.matches(a))
                .cloned()
                .collect()
        });
        let described = matching
            .iter()
            .map(|a| {
                DeleteAclsMatchingAcl::default()
                    .with_resource_type(i8::try_from(a.resource_type).unwrap_or(0))
                    .with_resource_name(s(&a.resource_name))
                    .with_pattern_type(i8::try_from(a.pattern_type).unwrap_or(0))
                    .with_principal(s(&a.principal))
                    .with_host(s(&a.host))
                    .with_operation(i8::try_from(a.operation).unwrap_or(0))
                    .with_permission_type(i8::try_from(a.permission).unwrap_or(0))
            })
            .collect();
        removed.extend(matching);
        results.push(DeleteAclsFilterResult::default().with_matching_acls(described));
    }
    if !removed.is_empty() {
        let change = SecurityChanged {
            acls_removed: removed,
            ..SecurityChanged::default()
        };
        if let Err(e) = node.controller.change_security(change).await {
            tracing::warn!(error = %e, "ACLs not deleted");
            for r in results.iter_mut().filter(|r| r.error_code == 0) {
                r.error_code = ResponseError::UnknownServerError.code();
                r.error_message = message(format!("ACLs not deleted: {e}"));
                r.matching_acls.clear();
            }
        }
    }
    DeleteAclsResponse::default().with_filter_results(results)
}
