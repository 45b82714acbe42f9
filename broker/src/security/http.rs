//! The admin HTTP API's security endpoints, behind `weir admin scram` and `weir admin acl` (JSON).
//! They answer loopback clients presenting the broker's admin token (`Authorization: Bearer`,
//! the token in `data_dir/admin.token`, readable by the broker's user only): the operator runs
//! `weir admin` on a broker's host, which is also how the first user is made before any Kafka
//! client can log in. Neither a webhook the dispatcher delivers to a loopback address nor another
//! local user can call them.
//!
//! - `GET /v1/security/scram`: users and their mechanisms (never a key);
//! - `POST /v1/security/scram` [`ScramSet`]: creates or replaces a credential. The CLI salts
//!   and hashes the password itself: only StoredKey and ServerKey travel, neither logs anyone in;
//! - `DELETE /v1/security/scram/{user}/{mechanism}`;
//! - `GET /v1/security/acls`; `POST /v1/security/acls` [`AclView`] adds one;
//!   `DELETE /v1/security/acls` [`AclView`] removes it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use weir_controller::records::{AclBinding, ScramCredential, ScramCredentialKey, SecurityChanged};

use super::acl::{self, Operation, Resource};
use super::scram::{self, Mechanism};
use crate::node::Node;

type Answer = (StatusCode, Json<serde_json::Value>);

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    (status, Json(serde_json::json!({ "error": message.into() })))
}

/// The admin token in `data_dir/admin.token`, made (32 random bytes, hex) if missing.
pub fn admin_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    super::secret_file(&data_dir.join("admin.token"), "the admin token", || {
        let mut raw = [0u8; 32];
        rand::fill(&mut raw[..]);
        raw.iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// Middleware of every security endpoint: a loopback caller with the admin token, or the
/// refusal (403, 401).
pub async fn admitted(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !peer.ip().is_loopback() {
        return error(
            StatusCode::FORBIDDEN,
            "security endpoints answer loopback clients only: run weir admin on the broker's host",
        )
        .into_response();
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let token = node.admin_token.as_bytes();
    let equal = !token.is_empty()
        && presented.len() == token.len()
        && presented
            .iter()
            .zip(token)
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !equal {
        return error(
            StatusCode::UNAUTHORIZED,
            "the admin token is required (Authorization: Bearer <data_dir/admin.token>)",
        )
        .into_response();
    }
    next.run(request).await
}

/// A credential as the CLI sends it: salted and hashed, base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScramSet {
    pub user: String,
    /// `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub iterations: u32,
    pub salt: String,
    pub stored_key: String,
    pub server_key: String,
}

impl ScramSet {
    /// What the CLI sends for a password.
    pub fn from_password(
        user: &str,
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> ScramSet {
        let c = scram::Credential::from_password(mechanism, password, iterations);
        ScramSet {
            user: user.to_string(),
            mechanism: mechanism.name().to_string(),
            iterations,
            salt: B64.encode(&c.salt),
            stored_key: B64.encode(&c.stored_key),
            server_key: B64.encode(&c.server_key),
        }
    }
}

/// A user's mechanisms, as `GET /v1/security/scram` lists them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScramUser {
    pub user: String,
    pub mechanism: String,
    pub iterations: u32,
}

async fn change(node: &Node, change: SecurityChanged) -> Result<(), Answer> {
    node.controller
        .change_security(change)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// `GET /v1/security/scram`.
pub async fn list_scram(State(node): State<Arc<Node>>) -> Answer {
    let users: Vec<ScramUser> = node.controller.read(|s| {
        s.scram
            .values()
            .map(|c| ScramUser {
                user: c.user.clone(),
                mechanism: i8::try_from(c.mechanism)
                    .ok()
                    .and_then(Mechanism::from_code)
                    .map_or("unknown", Mechanism::name)
                    .to_string(),
                iterations: c.iterations,
            })
            .collect()
    });
    (StatusCode::OK, Json(serde_json::json!({ "users": users })))
}

/// `POST /v1/security/scram`.
pub async fn set_scram(State(node): State<Arc<Node>>, Json(set): Json<ScramSet>) -> Answer {
    let Some(mechanism) = Mechanism::from_name(&set.mechanism) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown mechanism {:?}: SCRAM-SHA-256 or SCRAM-SHA-512",
                set.mechanism
            ),
        );
    };
    if set.user.is_empty() || set.user == super::INTERNAL_USER {
        return error(StatusCode::BAD_REQUEST, "empty or reserved user name");
    }
    if !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&set.iterations) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "iterations must be between {} and {}",
                scram::MIN_ITERATIONS,
                scram::MAX_ITERATIONS
            ),
        );
    }
    let decode = |v: &str| B64.decode(v).ok().filter(|b| !b.is_empty());
    let (Some(salt), Some(stored_key), Some(server_key)) = (
        decode(&set.salt),
        decode(&set.stored_key),
        decode(&set.server_key),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "salt, stored_key and server_key must be non-empty base64",
        );
    };
    let credential = ScramCredential {
        user: set.user.clone(),
        mechanism: i32::from(mechanism.code()),
        salt,
        iterations: set.iterations,
        stored_key,
        server_key,
    };
    let record = SecurityChanged {
        credentials_set: vec![credential],
        ..SecurityChanged::default()
    };
    if let Err(e) = change(&node, record).await {
        return e;
    }
    tracing::info!(user = %set.user, mechanism = mechanism.name(), "SCRAM credential set");
    (
        StatusCode::OK,
        Json(serde_json::json!({ "user": set.user, "mechanism": mechanism.name() })),
    )
}

/// `DELETE /v1/security/scram/{user}/{mechanism}`.
pub async fn delete_scram(
    State(node): State<Arc<Node>>,
    Path((user, mechanism)): Path<(String, String)>,
) -> Answer {
    let Some(mechanism) = Mechanism::from_name(&mechanism) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown mechanism {mechanism:?}"),
        );
    };
    let code = i32::from(mechanism.code());
    if !node
        .controller
        .read(|s| s.scram.contains_key(&(user.clone(), code)))
    {
        return error(
            StatusCode::NOT_FOUND,
            format!("{user} has no {} credential", mechanism.name()),
        );
    }
    let record = SecurityChanged {
        credentials_deleted: vec![ScramCredentialKey {
            user: user.clone(),
            mechanism: code,
        }],
        ..SecurityChanged::default()
    };
    if let Err(e) = change(&node, record).await {
        return e;
    }
    (StatusCode::OK, Json(serde_json::json!({ "deleted": user })))
}

/// One ACL, by Kafka's names: `{"resource_type": "TOPIC", "resource_name": "orders",
/// "pattern_type": "LITERAL", "principal": "User:alice", "host": "*", "operation": "READ",
/// "permission": "ALLOW"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AclView {
    pub resource_type: String,
    pub resource_name: String,
    #[serde(default = "literal")]
    pub pattern_type: String,
    pub principal: String,
    #[serde(default = "any_host")]
    pub host: String,
    pub operation: String,
    #[serde(default = "allow")]
    pub permission: String,
}

fn literal() -> String {
    "LITERAL".into()
}
fn any_host() -> String {
    "*".into()
}
fn allow() -> String {
    "ALLOW".into()
}

impl AclView {
    /// The binding this names; why not, if it names none.
    pub fn binding(&self) -> Result<AclBinding, String> {
        let upper = |s: &str| s.to_ascii_uppercase().replace('-', "_");
        let resource = (1..=7)
            .filter_map(Resource::from_code)
            .find(|r| r.name() == upper(&self.resource_type))
            .ok_or_else(|| format!("unknown resource type {:?}", self.resource_type))?;
        let operation = (2..=15)
            .filter_map(Operation::from_code)
            .find(|o| o.name() == upper(&self.operation))
            .ok_or_else(|| format!("unknown operation {:?}", self.operation))?;
        let pattern = match upper(&self.pattern_type).as_str() {
            "LITERAL" => acl::PATTERN_LITERAL,
            "PREFIXED" => acl::PATTERN_PREFIXED,
            other => {
                return Err(format!(
                    "unknown pattern type {other:?}: LITERAL or PREFIXED"
                ));
            }
        };
        let permission = match upper(&self.permission).as_str() {
            "ALLOW" => acl::PERMISSION_ALLOW,
            "DENY" => acl::PERMISSION_DENY,
            other => return Err(format!("unknown permission {other:?}: ALLOW or DENY")),
        };
        let binding = AclBinding {
            resource_type: resource as i32,
            resource_name: self.resource_name.clone(),
            pattern_type: pattern.into(),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: operation as i32,
            permission: permission.into(),
        };
        acl::validate_binding(&binding)?;
        Ok(binding)
    }

    /// The view of a binding.
    pub fn of(b: &AclBinding) -> AclView {
        let code = |v: i32| i8::try_from(v).unwrap_or(0);
        AclView {
            resource_type: Resource::from_code(code(b.resource_type))
                .map_or("UNKNOWN", Resource::name)
                .to_string(),
            resource_name: b.resource_name.clone(),
            pattern_type: if code(b.pattern_type) == acl::PATTERN_PREFIXED {
                "PREFIXED"
            } else {
                "LITERAL"
            }
            .to_string(),
            principal: b.principal.clone(),
            host: b.host.clone(),
            operation: Operation::from_code(code(b.operation))
                .map_or("UNKNOWN", Operation::name)
                .to_string(),
            permission: if code(b.permission) == acl::PERMISSION_DENY {
                "DENY"
            } else {
                "ALLOW"
            }
            .to_string(),
        }
    }
}

/// `GET /v1/security/acls`.
pub async fn list_acls(State(node): State<Arc<Node>>) -> Answer {
    let acls: Vec<AclView> = node
        .controller
        .read(|s| s.acls.iter().map(AclView::of).collect());
    (StatusCode::OK, Json(serde_json::json!({ "acls": acls })))
}

/// `POST /v1/security/acls`.
pub async fn add_acl(State(node): State<Arc<Node>>, Json(view): Json<AclView>) -> Answer {
    let binding = match view.binding() {
        Ok(b) => b,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let record = SecurityChanged {
        acls_added: vec![binding],
        ..SecurityChanged::default()
    };
    if let Err(e) = change(&node, record).await {
        return e;
    }
    (StatusCode::OK, Json(serde_json::json!({ "added": view })))
}

/// `DELETE /v1/security/acls`.
pub async fn remove_acl(State(node): State<Arc<Node>>, Json(view): Json<AclView>) -> Answer {
    let binding = match view.binding() {
        Ok(b) => b,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    if !node.controller.read(|s| s.acls.contains(&binding)) {
        return error(StatusCode::NOT_FOUND, "no such ACL");
    }
    let record = SecurityChanged {
        acls_removed: vec![binding],
        ..SecurityChanged::default()
    };
    if let Err(e) = change(&node, record).await {
        return e;
    }
    (StatusCode::OK, Json(serde_json::json!({ "removed": view })))
}
