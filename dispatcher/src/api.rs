//! The dispatcher's admin REST API (JSON; `docs/dispatcher-api.md`). Endpoint changes are written
//! to the config topic and answered once this instance has read them back, so a client's next
//! request sees its change.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::topics;
use crate::crypto::new_signing_secret;
use crate::endpoint::{Endpoint, EndpointPatch, NewEndpoint, StoredEndpoint, StoredSecret};
use crate::task::now_ms;
use crate::{Inner, task};

type Answer = (StatusCode, Json<Value>);

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    (status, Json(json!({ "error": message.into() })))
}

/// The routes, to mount on an admin listener.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/endpoints", post(create).get(list))
        .route("/v1/endpoints/{id}", get(show).patch(update).delete(remove))
        .route("/v1/endpoints/{id}/rotate-secret", post(rotate))
        .route("/v1/attempts", get(attempts))
        .route("/v1/dlq", get(dlq))
        .with_state(inner)
}

/// An endpoint with its lane's state.
fn view(inner: &Inner, endpoint: &Endpoint) -> Value {
    let mut v = serde_json::to_value(endpoint).unwrap_or_default();
    if let Some((_, queued, in_flight, breaker)) = inner
        .engine
        .lanes()
        .into_iter()
        .find(|(id, ..)| *id == endpoint.id)
    {
        v["health"] = json!({ "queued": queued, "in_flight": in_flight, "breaker": breaker });
    }
    v
}

/// Writes an endpoint and waits until the registry has it.
async fn store(inner: &Inner, stored: &StoredEndpoint) -> Result<(), Answer> {
    let Some((partition, offset)) = inner.engine.put_endpoint(stored).await else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot write to weir.dispatch.config",
        ));
    };
    if !inner
        .config_position
        .wait_for(partition, offset, Duration::from_secs(10))
        .await
    {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "written, but not read back within 10 s",
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct AuditRecord<'a> {
    actor: &'a str,
    action: &'a str,
    endpoint_id: &'a str,
    at_ms: i64,
    outcome: &'a str,
}

async fn audit(inner: &Inner, action: &str, endpoint_id: &str, outcome: &str) {
    let record = AuditRecord {
        actor: "admin",
        action,
        endpoint_id,
        at_ms: now_ms(),
        outcome,
    };
    inner
        .engine
        .write_json(topics::AUDIT, endpoint_id, &record)
        .await;
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn create(State(inner): State<Arc<Inner>>, body: Bytes) -> Answer {
    let new: NewEndpoint = match parse(&body) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let id = format!("ep_{}", uuid::Uuid::new_v4().simple());
    let endpoint = Endpoint::create(id.clone(), new, now_ms());
    if let Err(e) = endpoint.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let secret = new_signing_secret();
    let stored = StoredEndpoint {
        endpoint,
        secrets: vec![StoredSecret {
            sealed: inner.engine.registry.key().seal(&secret),
            expires_at_ms: None,
        }],
    };
    if let Err(e) = store(&inner, &stored).await {
        return e;
    }
    audit(&inner, "endpoint.create", &id, "ok").await;
    let mut v = view(&inner, &stored.endpoint);
    v["secret"] = json!(secret);
    (StatusCode::CREATED, Json(v))
}

async fn list(State(inner): State<Arc<Inner>>) -> Answer {
    let all: Vec<Value> = inner
        .engine
        .registry
        .all()
        .iter()
        .map(|l| view(&inner, &l.endpoint))
        .collect();
    (StatusCode::OK, Json(json!({ "endpoints": all })))
}

async fn show(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Answer {
    match inner.engine.registry.get(&id) {
        Some(live) => (StatusCode::OK, Json(view(&inner, &live.endpoint))),
        None => error(StatusCode::NOT_FOUND, format!("no endpoint {id}")),
    }
}

async fn update(State(inner): State<Arc<Inner>>, Path(id): Path<String>, body: Bytes) -> Answer {
    let patch: EndpointPatch = match parse(&body) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let Some(live) = inner.engine.registry.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no endpoint {id}"));
    };
    let endpoint = live.endpoint.patched(patch, now_ms());
    if let Err(e) = endpoint.validate() {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let stored = StoredEndpoint {
        endpoint,
        secrets: live.stored.secrets.clone(),
    };
    if let Err(e) = store(&inner, &stored).await {
        return e;
    }
    audit(&inner, "endpoint.update", &id, "ok").await;
    (StatusCode::OK, Json(view(&inner, &stored.endpoint)))
}

async fn remove(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Answer {
    if inner.engine.registry.get(&id).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no endpoint {id}"));
    }
    let Some((partition, offset)) = inner.engine.delete_endpoint(&id).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot write to weir.dispatch.config",
        );
    };
    inner
        .config_position
        .wait_for(partition, offset, Duration::from_secs(10))
        .await;
    audit(&inner, "endpoint.delete", &id, "ok").await;
    (StatusCode::NO_CONTENT, Json(Value::Null))
}

async fn rotate(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Answer {
    let Some(live) = inner.engine.registry.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no endpoint {id}"));
    };
    let now = now_ms();
    let until =
        now + i64::try_from(inner.config.secret_overlap_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let secret = new_signing_secret();
    let mut secrets = vec![StoredSecret {
        sealed: inner.engine.registry.key().seal(&secret),
        expires_at_ms: None,
    }];
    // The previous secrets keep signing for the overlap (those already expiring keep their end).
    for old in &live.stored.secrets {
        let expires = old.expires_at_ms.unwrap_or(until);
        if expires > now {
            secrets.push(StoredSecret {
                sealed: old.sealed.clone(),
                expires_at_ms: Some(expires),
            });
        }
    }
    let mut endpoint = live.endpoint.clone();
    endpoint.updated_at_ms = now;
    let stored = StoredEndpoint { endpoint, secrets };
    if let Err(e) = store(&inner, &stored).await {
        return e;
    }
    audit(&inner, "endpoint.rotate_secret", &id, "ok").await;
    (
        StatusCode::OK,
        Json(json!({ "id": id, "secret": secret, "previous_valid_until_ms": until })),
    )
}

#[derive(Debug, Deserialize)]
struct Filter {
    endpoint_id: Option<String>,
    event_id: Option<String>,
    limit: Option<usize>,
}

async fn attempts(State(inner): State<Arc<Inner>>, Query(f): Query<Filter>) -> Answer {
    let found = inner.index.attempts.find(
        f.endpoint_id.as_deref(),
        |a: &task::AttemptRecord| f.event_id.as_ref().is_none_or(|e| *e == a.event.id),
        f.limit.unwrap_or(100).min(1000),
    );
    (StatusCode::OK, Json(json!({ "attempts": found })))
}

async fn dlq(State(inner): State<Arc<Inner>>, Query(f): Query<Filter>) -> Answer {
    let found = inner.index.dlq.find(
        f.endpoint_id.as_deref(),
        |d: &task::DeadLetter| f.event_id.as_ref().is_none_or(|e| *e == d.event.id),
        f.limit.unwrap_or(100).min(1000),
    );
    (StatusCode::OK, Json(json!({ "dead_letters": found })))
}
