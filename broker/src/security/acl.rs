//! ACLs in Kafka's model (KIP-290's pattern types included) and the authorizer that enforces them
//! (as Kafka's `StandardAuthorizer`):
//!
//! - super users (`super_users`) may do everything;
//! - an ACL applies to a resource when its type matches and its pattern does: a literal name equal
//!   to the resource's, the literal `*`, or a prefix of it; to a principal when equal or `User:*`;
//!   to a host when equal to the client's address or `*`;
//! - any applicable DENY for the operation (or ALL) refuses; otherwise an applicable ALLOW for the
//!   operation, for ALL, or for one implying it (READ, WRITE, DELETE and ALTER imply DESCRIBE;
//!   ALTER_CONFIGS implies DESCRIBE_CONFIGS) permits;
//! - a resource no ACL applies to is refused unless `allow_everyone_if_no_acl_found`.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use weir_controller::records::AclBinding;

/// Kafka's resource types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum Resource {
    Any = 1,
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

/// The one cluster resource's name.
pub const CLUSTER: &str = "kafka-cluster";

impl Resource {
    pub fn from_code(code: i8) -> Option<Resource> {
        Some(match code {
            1 => Resource::Any,
            2 => Resource::Topic,
            3 => Resource::Group,
            4 => Resource::Cluster,
            5 => Resource::TransactionalId,
            6 => Resource::DelegationToken,
            7 => Resource::User,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::Any => "ANY",
            Resource::Topic => "TOPIC",
            Resource::Group => "GROUP",
            Resource::Cluster => "CLUSTER",
            Resource::TransactionalId => "TRANSACTIONAL_ID",
            Resource::DelegationToken => "DELEGATION_TOKEN",
            Resource::User => "USER",
        }
    }
}

/// Kafka's ACL operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum Operation {
    Any = 1,
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
    TwoPhaseCommit = 15,
}

impl Operation {
    pub fn from_code(code: i8) -> Option<Operation> {
        use Operation::*;
        [
            Any,
            All,
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            CreateTokens,
            DescribeTokens,
            TwoPhaseCommit,
        ]
        .into_iter()
        .find(|o| *o as i8 == code)
    }

    pub fn name(self) -> &'static str {
        use Operation::*;
        match self {
            Any => "ANY",
            All => "ALL",
            Read => "READ",
            Write => "WRITE",
            Create => "CREATE",
            Delete => "DELETE",
            Alter => "ALTER",
            Describe => "DESCRIBE",
            ClusterAction => "CLUSTER_ACTION",
            DescribeConfigs => "DESCRIBE_CONFIGS",
            AlterConfigs => "ALTER_CONFIGS",
            IdempotentWrite => "IDEMPOTENT_WRITE",
            CreateTokens => "CREATE_TOKENS",
            DescribeTokens => "DESCRIBE_TOKENS",
            TwoPhaseCommit => "TWO_PHASE_COMMIT",
        }
    }

    /// The operations whose ALLOW permits this one.
    fn allowed_by(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            Describe => &[Describe, Read, Write, Delete, Alter, All],
            DescribeConfigs => &[DescribeConfigs, AlterConfigs, All],
            Read => &[Read, All],
            Write => &[Write, All],
            Create => &[Create, All],
            Delete => &[Delete, All],
            Alter => &[Alter, All],
            ClusterAction => &[ClusterAction, All],
            AlterConfigs => &[AlterConfigs, All],
            IdempotentWrite => &[IdempotentWrite, All],
            CreateTokens => &[CreateTokens, All],
            DescribeTokens => &[DescribeTokens, All],
            TwoPhaseCommit => &[TwoPhaseCommit, All],
            Any | All => &[All],
        }
    }
}

/// Pattern types (KIP-290).
pub const PATTERN_ANY: i8 = 1;
pub const PATTERN_MATCH: i8 = 2;
pub const PATTERN_LITERAL: i8 = 3;
pub const PATTERN_PREFIXED: i8 = 4;
/// Permission types.
pub const PERMISSION_ANY: i8 = 1;
pub const PERMISSION_DENY: i8 = 2;
pub const PERMISSION_ALLOW: i8 = 3;

/// The principal of a client that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Who may do what; see the [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    /// ACLs are enforced (`authorizer = "acl"`).
    pub enabled: bool,
    pub super_users: HashSet<String>,
    pub allow_if_no_acl: bool,
}

/// A request to check: who, from where, doing what to which resource.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub principal: &'a str,
    pub host: IpAddr,
    pub operation: Operation,
    pub resource: Resource,
    pub name: &'a str,
}

impl Authorizer {
    /// Whether `access` is permitted under `acls`.
    pub fn permits(&self, acls: &BTreeSet<AclBinding>, access: Access<'_>) -> bool {
        if !self.enabled || self.super_users.contains(access.principal) {
            return true;
        }
        let mut any_for_resource = false;
        let mut allowed = false;
        for acl in acls
            .iter()
            .filter(|acl| applies_to_resource(acl, access.resource, access.name))
        {
            any_for_resource = true;
            let applies = (acl.principal == access.principal || acl.principal == "User:*")
                && host_matches(&acl.host, access.host);
            if !applies {
                continue;
            }
            let Ok(op) = i8::try_from(acl.operation) else {
                continue;
            };
            let Some(op) = Operation::from_code(op) else {
                continue;
            };
            if acl.permission == i32::from(PERMISSION_DENY)
                && (op == access.operation || op == Operation::All)
            {
                return false;
            }
            if acl.permission == i32::from(PERMISSION_ALLOW)
                && access.operation.allowed_by().contains(&op)
            {
                allowed = true;
            }
        }
        allowed || (!any_for_resource && self.allow_if_no_acl)
    }

    /// Whether the principal may do `operation` on some resource of the type (Kafka's
    /// `authorizeByResourceType`, used for idempotent producers, KIP-679): an ALLOW on any
    /// pattern, not cancelled by a DENY on `*` or on every name.
    pub fn permits_any(
        &self,
        acls: &BTreeSet<AclBinding>,
        principal: &str,
        host: IpAddr,
        operation: Operation,
        resource: Resource,
    ) -> bool {
        if !self.enabled || self.super_users.contains(principal) {
            return true;
        }
        let mut allowed = false;
        for acl in acls.iter().filter(|a| a.resource_type == resource as i32) {
            let applies = (acl.principal == principal || acl.principal == "User:*")
                && host_matches(&acl.host, host);
            let op = i8::try_from(acl.operation)
                .ok()
                .and_then(Operation::from_code);
            let Some(op) = op.filter(|_| applies) else {
                continue;
            };
            if acl.permission == i32::from(PERMISSION_DENY)
                && (op == operation || op == Operation::All)
                && acl.resource_name == "*"
            {
                return false;
            }
            if acl.permission == i32::from(PERMISSION_ALLOW) && operation.allowed_by().contains(&op)
            {
                allowed = true;
            }
        }
        allowed
    }
}

/// An ACL's host against a client's address, compared as addresses: `10.0.0.5` is also the
/// client `::ffff:10.0.0.5` of a dual-stack listener.
fn host_matches(acl_host: &str, client: IpAddr) -> bool {
    acl_host == "*"
        || acl_host
            .parse::<IpAddr>()
            .is_ok_and(|h| h.to_canonical() == client.to_canonical())
}

fn applies_to_resource(acl: &AclBinding, resource: Resource, name: &str) -> bool {
    if acl.resource_type != resource as i32 {
        return false;
    }
    match i8::try_from(acl.pattern_type).unwrap_or(0) {
        PATTERN_LITERAL => acl.resource_name == name || acl.resource_name == "*",
        PATTERN_PREFIXED => name.starts_with(&acl.resource_name),
        _ => false,
    }
}

/// A DescribeAcls / DeleteAcls filter (Kafka's `AclBindingFilter`).
#[derive(Debug, Clone)]
pub struct Filter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

impl Filter {
    /// Whether the filter is one Kafka accepts (known codes, no UNKNOWN).
    pub fn validate(&self) -> Result<(), String> {
        if Resource::from_code(self.resource_type).is_none() {
            return Err(format!("unknown resource type {}", self.resource_type));
        }
        if !(PATTERN_ANY..=PATTERN_PREFIXED).contains(&self.pattern_type) {
            return Err(format!("unknown pattern type {}", self.pattern_type));
        }
        if Operation::from_code(self.operation).is_none() {
            return Err(format!("unknown operation {}", self.operation));
        }
        if !(PERMISSION_ANY..=PERMISSION_ALLOW).contains(&self.permission) {
            return Err(format!("unknown permission type {}", self.permission));
        }
        Ok(())
    }

    /// Whether `acl` matches.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        let any = |code: i8, value: i32| code == 1 || i32::from(code) == value;
        let resource = any(self.resource_type, acl.resource_type);
        let pattern = match self.pattern_type {
            PATTERN_ANY => self.name.as_ref().is_none_or(|n| *n == acl.resource_name),
            // MATCH: every ACL that would apply to the named resource.
            PATTERN_MATCH => self.name.as_ref().is_none_or(|n| {
                match i8::try_from(acl.pattern_type).unwrap_or(0) {
                    PATTERN_LITERAL => acl.resource_name == *n || acl.resource_name == "*",
                    PATTERN_PREFIXED => n.starts_with(&acl.resource_name),
                    _ => false,
                }
            }),
            code => {
                i32::from(code) == acl.pattern_type
                    && self.name.as_ref().is_none_or(|n| *n == acl.resource_name)
            }
        };
        resource
            && pattern
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && any(self.operation, acl.operation)
            && any(self.permission, acl.permission)
    }
}

/// Checks an ACL to create; the reason it is refused.
pub fn validate_binding(acl: &AclBinding) -> Result<(), String> {
    let code = |v: i32| i8::try_from(v).unwrap_or(0);
    match Resource::from_code(code(acl.resource_type)) {
        None | Some(Resource::Any) => {
            return Err(format!("invalid resource type {}", acl.resource_type));
        }
        Some(Resource::Cluster) if acl.resource_name != CLUSTER => {
            return Err(format!("the cluster resource is named {CLUSTER:?}"));
        }
        _ => {}
    }
    if acl.resource_name.is_empty() {
        return Err("empty resource name".into());
    }
    let pattern = code(acl.pattern_type);
    if pattern != PATTERN_LITERAL && pattern != PATTERN_PREFIXED {
        return Err(format!(
            "invalid pattern type {}: LITERAL or PREFIXED",
            acl.pattern_type
        ));
    }
    if pattern == PATTERN_PREFIXED && acl.resource_name == "*" {
        return Err("a PREFIXED pattern cannot be \"*\"".into());
    }
    match Operation::from_code(code(acl.operation)) {
        None | Some(Operation::Any) => {
            return Err(format!("invalid operation {}", acl.operation));
        }
        _ => {}
    }
    let permission = code(acl.permission);
    if permission != PERMISSION_ALLOW && permission != PERMISSION_DENY {
        return Err(format!(
            "invalid permission type {}: ALLOW or DENY",
            acl.permission
        ));
    }
    match acl.principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
        _ => {
            return Err(format!(
                "invalid principal {:?}: TYPE:NAME, e.g. User:alice",
                acl.principal
            ));
        }
    }
    if acl.host != "*" && acl.host.parse::<IpAddr>().is_err() {
        return Err(format!(
            "invalid host {:?}: an IP address or \"*\"",
            acl.host
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn acl(
        resource: Resource,
        name: &str,
        pattern: i8,
        principal: &str,
        op: Operation,
        permission: i8,
    ) -> AclBinding {
        AclBinding {
            resource_type: resource as i32,
            resource_name: name.into(),
            pattern_type: pattern.into(),
            principal: principal.into(),
            host: "*".into(),
            operation: op as i32,
            permission: permission.into(),
        }
    }

    fn check(
        a: &Authorizer,
        acls: &BTreeSet<AclBinding>,
        who: &str,
        op: Operation,
        topic: &str,
    ) -> bool {
        a.permits(
            acls,
            Access {
                principal: who,
                host: "127.0.0.1".parse().unwrap(),
                operation: op,
                resource: Resource::Topic,
                name: topic,
            },
        )
    }

    #[test]
    fn kafkas_rules() {
        let a = Authorizer {
            enabled: true,
            super_users: ["User:admin".to_string()].into(),
            allow_if_no_acl: false,
        };
        let mut acls = BTreeSet::new();
        acls.insert(acl(
            Resource::Topic,
            "orders",
            PATTERN_LITERAL,
            "User:alice",
            Operation::Read,
            PERMISSION_ALLOW,
        ));
        acls.insert(acl(
            Resource::Topic,
            "pay-",
            PATTERN_PREFIXED,
            "User:*",
            Operation::Write,
            PERMISSION_ALLOW,
        ));
        acls.insert(acl(
            Resource::Topic,
            "pay-secret",
            PATTERN_LITERAL,
            "User:bob",
            Operation::All,
            PERMISSION_DENY,
        ));
        assert!(check(&a, &acls, "User:alice", Operation::Read, "orders"));
        let mut from_one_host = acls.clone();
        from_one_host.insert(AclBinding {
            host: "127.0.0.1".into(),
            ..acl(
                Resource::Topic,
                "orders",
                PATTERN_LITERAL,
                "User:carol",
                Operation::Read,
                PERMISSION_ALLOW,
            )
        });
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let access = |host| Access {
            principal: "User:carol",
            host,
            operation: Operation::Read,
            resource: Resource::Topic,
            name: "orders",
        };
        assert!(
            a.permits(&from_one_host, access(mapped)),
            "an IPv4-mapped client matches"
        );
        assert!(!a.permits(&from_one_host, access("127.0.0.2".parse().unwrap())));
        assert!(
            check(&a, &acls, "User:alice", Operation::Describe, "orders"),
            "READ implies DESCRIBE"
        );
        assert!(!check(&a, &acls, "User:alice", Operation::Write, "orders"));
        assert!(!check(&a, &acls, "User:bob", Operation::Read, "orders"));
        assert!(
            check(&a, &acls, "User:bob", Operation::Write, "pay-in"),
            "prefix and wildcard principal"
        );
        assert!(
            !check(&a, &acls, "User:bob", Operation::Write, "pay-secret"),
            "DENY wins"
        );
        assert!(check(
            &a,
            &acls,
            "User:carol",
            Operation::Write,
            "pay-secret"
        ));
        assert!(
            !check(&a, &acls, "User:alice", Operation::Read, "unlisted"),
            "no ACL: refused"
        );
        assert!(
            check(&a, &acls, "User:admin", Operation::Delete, "orders"),
            "super user"
        );
        let open = Authorizer {
            allow_if_no_acl: true,
            ..a.clone()
        };
        assert!(check(&open, &acls, "User:x", Operation::Read, "unlisted"));
        assert!(!check(&open, &acls, "User:x", Operation::Read, "orders"));
        assert!(a.permits_any(
            &acls,
            "User:bob",
            "127.0.0.1".parse().unwrap(),
            Operation::Write,
            Resource::Topic
        ));
        assert!(!a.permits_any(
            &acls,
            "User:alice",
            "127.0.0.1".parse().unwrap(),
            Operation::Delete,
            Resource::Topic
        ));
        let off = Authorizer::default();
        assert!(check(
            &off,
            &acls,
            "User:bob",
            Operation::Write,
            "pay-secret"
        ));
    }

    #[test]
    fn filters_match_as_kafka() {
        let literal = acl(
            Resource::Topic,
            "orders",
            PATTERN_LITERAL,
            "User:alice",
            Operation::Read,
            PERMISSION_ALLOW,
        );
        let prefixed = acl(
            Resource::Topic,
            "ord",
            PATTERN_PREFIXED,
            "User:alice",
            Operation::Read,
            PERMISSION_ALLOW,
        );
        let filter = |name: Option<&str>, pattern| Filter {
            resource_type: Resource::Topic as i8,
            name: name.map(str::to_string),
            pattern_type: pattern,
            principal: None,
            host: None,
            operation: Operation::Any as i8,
            permission: PERMISSION_ANY,
        };
        assert!(filter(None, PATTERN_ANY).matches(&literal));
        assert!(filter(Some("orders"), PATTERN_MATCH).matches(&prefixed));
        assert!(!filter(Some("orders"), PATTERN_LITERAL).matches(&prefixed));
        assert!(filter(Some("ord"), PATTERN_PREFIXED).matches(&prefixed));
        assert!(validate_binding(&literal).is_ok());
        let mut bad = literal.clone();
        bad.host = "example.com".into();
        assert!(validate_binding(&bad).is_err());
    }
}
