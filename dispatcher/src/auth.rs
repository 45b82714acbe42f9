//! Who may use the admin API. Tokens (`Authorization: Bearer <token>`) carry roles
//! ([`Role`]); with no tokens configured the API is in development mode: it answers loopback
//! clients only, and lets them do everything.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Inner;
use crate::config::{ApiToken, Role};

/// The caller of a request, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`local` in development mode): the actor of audit records.
    pub name: String,
    roles: HashSet<Role>,
    /// Development mode: everything allowed.
    pub development: bool,
}

impl Caller {
    /// Whether the caller has `role` (every token may read).
    pub fn may(&self, role: Role) -> bool {
        self.development || role == Role::Viewer || self.roles.contains(&role)
    }
}

/// The configured tokens, by the SHA-256 of the token.
#[derive(Debug, Default)]
pub struct Tokens(Vec<([u8; 32], ApiToken)>);

impl Tokens {
    pub fn new(tokens: &[ApiToken]) -> Tokens {
        Tokens(
            tokens
                .iter()
                .map(|t| {
                    let hash = match (&t.token, &t.token_sha256) {
                        (Some(clear), _) => Sha256::digest(clear.as_bytes()).into(),
                        (None, Some(hex)) => decode_hex(hex).unwrap_or([0; 32]),
                        (None, None) => [0; 32], // refused by DispatcherConfig::validate
                    };
                    (hash, t.clone())
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, presented: &str) -> Option<&ApiToken> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every entry is compared (no early exit on the first byte that differs).
        let mut found = None;
        for (h, token) in &self.0 {
            if h.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 {
                found = Some(token);
            }
        }
        found
    }
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Middleware: finds the caller, or answers 401/403.
pub(crate) async fn authenticate(
    State(inner): State<Arc<Inner>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match caller(&inner.tokens, peer, authorization) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err((status, message)) => refuse(status, message),
    }
}

/// Who is calling: a token's holder, or (without tokens) a loopback client.
fn caller(
    tokens: &Tokens,
    peer: Option<SocketAddr>,
    authorization: Option<&str>,
) -> Result<Caller, (StatusCode, &'static str)> {
    if tokens.is_empty() {
        if !peer.is_some_and(|p| p.ip().is_loopback()) {
            return Err((
                StatusCode::FORBIDDEN,
                "development mode (no dispatcher.tokens): only loopback clients are served",
            ));
        }
        return Ok(Caller {
            name: "local".into(),
            roles: HashSet::new(),
            development: true,
        });
    }
    let presented = authorization.and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = presented.and_then(|p| tokens.find(p.trim())) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "a valid token is required (Authorization: Bearer <token>)",
        ));
    };
    Ok(Caller {
        name: token.name.clone(),
        roles: token.roles.iter().copied().collect(),
        development: false,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn token(name: &str, clear: Option<&str>, hash: Option<&str>, roles: &[Role]) -> ApiToken {
        ApiToken {
            name: name.into(),
            token: clear.map(Into::into),
            token_sha256: hash.map(Into::into),
            roles: roles.to_vec(),
        }
    }

    #[test]
    fn tokens_match_in_clear_or_by_hash() {
        let tokens = Tokens::new(&[token("a", Some("secret-a"), None, &[Role::Operator])]);
        assert_eq!(tokens.find("secret-a").map(|t| t.name.as_str()), Some("a"));
        assert!(tokens.find("secret-x").is_none());
        let real: [u8; 32] = Sha256::digest(b"secret-b").into();
        let hex: String = real.iter().map(|b| format!("{b:02x}")).collect();
        let tokens = Tokens::new(&[token("b", None, Some(&hex), &[Role::Approver])]);
        assert_eq!(tokens.find("secret-b").map(|t| t.name.as_str()), Some("b"));
        assert!(tokens.find("secret-a").is_none());
    }

    #[test]
    fn without_tokens_only_loopback_clients_are_served() {
        let none = Tokens::new(&[]);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert!(caller(&none, Some(local), None).unwrap().development);
        assert!(caller(&none, Some(local6), None).is_ok());
        assert_eq!(
            caller(&none, Some(remote), None).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            caller(&none, None, None).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        // With tokens, a remote client with a token is served; loopback without one is not.
        let some = Tokens::new(&[token("a", Some("t"), None, &[Role::Viewer])]);
        assert_eq!(
            caller(&some, Some(remote), Some("Bearer t")).unwrap().name,
            "a"
        );
        assert_eq!(
            caller(&some, Some(local), None).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            caller(&some, Some(local), Some("Bearer wrong"))
                .unwrap_err()
                .0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn every_role_reads_and_only_its_own_writes() {
        let caller = Caller {
            name: "v".into(),
            roles: [Role::Approver].into_iter().collect(),
            development: false,
        };
        assert!(caller.may(Role::Viewer));
        assert!(caller.may(Role::Approver));
        assert!(!caller.may(Role::Operator));
        assert!(!caller.may(Role::Payloads));
    }
}
