//! The dispatcher's admin REST API (JSON; `docs/dispatcher-api.md`). Endpoint changes are written
//! to the config topic and answered once this instance has read them back, so a client's next
//! request sees its change.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::config::{Role, topics};
use crate::crypto::new_signing_secret;
use crate::endpoint::{Endpoint, EndpointPatch, NewEndpoint, StoredEndpoint, StoredSecret};
use crate::replay::{Decision, JobDef, JobRequest, Kind, slot};
use crate::task::now_ms;
use crate::{Inner, auth, task};

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
        .route("/v1/replays", post(create_replay).get(list_jobs))
        .route("/v1/redrives", post(create_redrive).get(list_jobs))
        .route("/v1/replays/{id}", get(show_job))
        .route("/v1/redrives/{id}", get(show_job))
        .route("/v1/replays/{id}/{action}", post(control_job))
        .route("/v1/redrives/{id}/{action}", post(control_job))
        .route("/v1/audit", get(audit_log))
        .route("/v1/events/{topic}/{partition}/{offset}", get(event))
        .route("/v1/stats", get(crate::stats::stats))
        .layer(axum::middleware::from_fn_with_state(
            inner.clone(),
            auth::authenticate,
        ))
        .with_state(inner)
        // The console page holds no data (it asks the API, with the token typed into it), so a
        // browser can load it without a token.
        .route("/console", get(crate::stats::console))
}

/// Refuses a caller without `role`.
fn need(caller: &Caller, role: Role) -> Result<(), Answer> {
    if caller.may(role) {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            format!("{} lacks the {role:?} role", caller.name).to_lowercase(),
        ))
    }
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

/// One record of `weir.dispatch.audit`: who did what to what, when, and how it ended.
#[derive(Serialize)]
struct AuditRecord<'a> {
    actor: &'a str,
    action: &'a str,
    scope: Value,
    at_ms: i64,
    outcome: &'a str,
}

async fn audit(inner: &Inner, caller: &Caller, action: &str, scope: Value, outcome: &str) {
    let record = AuditRecord {
        actor: &caller.name,
        action,
        scope,
        at_ms: now_ms(),
        outcome,
    };
    // Bounded: an audit topic that cannot be written fails loudly, never hangs the request.
    let written = tokio::time::timeout(
        Duration::from_secs(10),
        inner.engine.write_json(topics::AUDIT, action, &record),
    )
    .await;
    if written.is_err() {
        tracing::error!(action, actor = %caller.name, "audit record not written within 10 s");
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Answer> {
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn create(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer {
    if let Err(e) = need(&caller, Role::Operator) {
        return e;
    }
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
    audit(
        &inner,
        &caller,
        "endpoint.create",
        json!({ "endpoint_id": id }),
        "ok",
    )
    .await;
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

async fn update(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    if let Err(e) = need(&caller, Role::Operator) {
        return e;
    }
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
    let changed: Value = serde_json::from_slice(&body).unwrap_or_default();
    audit(
        &inner,
        &caller,
        "endpoint.update",
        json!({ "endpoint_id": id, "changes": changed }),
        "ok",
    )
    .await;
    (StatusCode::OK, Json(view(&inner, &stored.endpoint)))
}

async fn remove(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer {
    if let Err(e) = need(&caller, Role::Operator) {
        return e;
    }
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
    audit(
        &inner,
        &caller,
        "endpoint.delete",
        json!({ "endpoint_id": id }),
        "ok",
    )
    .await;
    (StatusCode::NO_CONTENT, Json(Value::Null))
}

async fn rotate(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer {
    if let Err(e) = need(&caller, Role::Operator) {
        return e;
    }
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
    audit(
        &inner,
        &caller,
        "endpoint.rotate_secret",
        json!({ "endpoint_id": id }),
        "ok",
    )
    .await;
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

async fn create_replay(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer {
    create_job(&inner, &caller, Kind::Replay, &body).await
}

async fn create_redrive(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer {
    create_job(&inner, &caller, Kind::Redrive, &body).await
}

/// Why a request cannot make a job.
fn check(inner: &Inner, kind: Kind, request: &JobRequest) -> Result<(), String> {
    if kind == Kind::Replay && request.endpoint_ids.is_empty() {
        return Err("endpoint_ids: a replay names the endpoints it may send to".into());
    }
    for id in &request.endpoint_ids {
        if inner.engine.registry.get(id).is_none() {
            return Err(format!("endpoint_ids: no endpoint {id}"));
        }
    }
    if !request.ranges.is_empty() {
        if kind == Kind::Redrive {
            return Err("ranges: a redrive selects dead letters by time, not offsets".into());
        }
        if request.from_time.is_some() || request.to_time.is_some() {
            return Err("give either from_time/to_time or ranges, not both".into());
        }
    }
    if kind == Kind::Replay && request.error_class.is_some() {
        return Err("error_class: only for redrives".into());
    }
    if request.rate_limit_per_s == Some(0) {
        return Err("rate_limit_per_s: must be positive".into());
    }
    for (field, value) in [
        ("from_time", &request.from_time),
        ("to_time", &request.to_time),
    ] {
        if let Some(v) = value {
            crate::replay::parse_time(field, v)?;
        }
    }
    Ok(())
}

async fn create_job(inner: &Inner, caller: &Caller, kind: Kind, body: &Bytes) -> Answer {
    if let Err(e) = need(caller, Role::Operator) {
        return e;
    }
    let request: JobRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Err(e) = check(inner, kind, &request) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let (plan, planned_records) = match crate::replay::plan(&inner.engine, kind, &request).await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let prefix = if kind == Kind::Replay { "rp" } else { "rd" };
    let id = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let def = JobDef {
        id: id.clone(),
        kind,
        rate_limit_per_s: request
            .rate_limit_per_s
            .unwrap_or(inner.config.replay_rate_per_s),
        needs_approval: !request.dry_run
            && planned_records > inner.config.replay_approval_threshold,
        request,
        created_by: caller.name.clone(),
        created_at_ms: now_ms(),
        plan,
        planned_records,
    };
    if let Err(e) = put_job(inner, &id, "", &def).await {
        return e;
    }
    let action = if kind == Kind::Replay {
        "replay.create"
    } else {
        "redrive.create"
    };
    let outcome = if def.needs_approval {
        "awaiting_approval"
    } else {
        "accepted"
    };
    audit(
        inner,
        caller,
        action,
        json!({ "job": id, "request": def.request, "planned_records": def.planned_records }),
        outcome,
    )
    .await;
    let view = inner.engine.jobs.view(&id).unwrap_or_default();
    (StatusCode::CREATED, Json(view))
}

/// Writes one of a job's records (`suffix`: "", "#approve", "#pause", "#cancel") and waits until
/// it is read back.
async fn put_job<T: Serialize>(
    inner: &Inner,
    id: &str,
    suffix: &str,
    value: &T,
) -> Result<(), Answer> {
    use rdkafka::producer::FutureRecord;
    let partition = slot(id, inner.config.topic_partitions);
    let key = format!("{id}{suffix}");
    let payload = serde_json::to_vec(value).unwrap_or_default();
    let record = FutureRecord::to(topics::REPLAYS)
        .partition(partition)
        .key(&key)
        .payload(&payload);
    let written = inner
        .engine
        .producer
        .send(record, Duration::from_secs(10))
        .await;
    let Ok(delivery) = written else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot write to weir.dispatch.replays",
        ));
    };
    if !inner
        .replays_position
        .wait_for(delivery.partition, delivery.offset, Duration::from_secs(10))
        .await
    {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "written, but not read back within 10 s",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct JobFilter {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_jobs(State(inner): State<Arc<Inner>>, Query(f): Query<JobFilter>) -> Answer {
    let jobs = &inner.engine.jobs;
    let all: Vec<Value> = jobs
        .ids()
        .into_iter()
        .filter(|id| f.status.as_deref().is_none_or(|s| s == jobs.status(id)))
        .take(f.limit.unwrap_or(100).min(1000))
        .filter_map(|id| jobs.view(&id))
        .collect();
    (StatusCode::OK, Json(json!({ "jobs": all })))
}

async fn show_job(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Answer {
    match inner.engine.jobs.view(&id) {
        Some(v) => (StatusCode::OK, Json(v)),
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

async fn control_job(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
) -> Answer {
    let jobs = &inner.engine.jobs;
    let Some(def) = jobs.def(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no job {id}"));
    };
    let status = jobs.status(&id);
    let now = now_ms();
    let conflict = |what: &str| {
        error(
            StatusCode::CONFLICT,
            format!("{id} is {status}: cannot {what}"),
        )
    };
    let decision = |paused: bool| Decision {
        by: caller.name.clone(),
        at_ms: now,
        paused,
    };
    // Each decision is its own key: an approval and a cancel made at once both hold.
    let (suffix, made) = match action.as_str() {
        "approve" => {
            if let Err(e) = need(&caller, Role::Approver) {
                return e;
            }
            if status != "awaiting_approval" {
                return conflict("approve");
            }
            if caller.name == def.created_by && !caller.development {
                return error(
                    StatusCode::FORBIDDEN,
                    "a job is approved by a second operator, not by its creator",
                );
            }
            ("#approve", decision(false))
        }
        "pause" | "resume" | "cancel" => {
            if let Err(e) = need(&caller, Role::Operator) {
                return e;
            }
            match action.as_str() {
                "pause" if matches!(status, "running" | "pending" | "awaiting_approval") => {
                    ("#pause", decision(true))
                }
                "resume" if status == "paused" => ("#pause", decision(false)),
                "cancel" if !matches!(status, "completed" | "failed" | "cancelled") => {
                    ("#cancel", decision(false))
                }
                _ => return conflict(&action),
            }
        }
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("no action {action}: approve, pause, resume or cancel"),
            );
        }
    };
    if let Err(e) = put_job(&inner, &id, suffix, &made).await {
        return e;
    }
    let kind = if def.kind == Kind::Replay {
        "replay"
    } else {
        "redrive"
    };
    audit(
        &inner,
        &caller,
        &format!("{kind}.{action}"),
        json!({ "job": id }),
        "ok",
    )
    .await;
    (StatusCode::OK, Json(jobs.view(&id).unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
struct AuditFilter {
    actor: Option<String>,
    action: Option<String>,
    limit: Option<usize>,
}

async fn audit_log(State(inner): State<Arc<Inner>>, Query(f): Query<AuditFilter>) -> Answer {
    let found = inner.audit.find(
        |r| {
            f.actor.as_deref().is_none_or(|a| r["actor"] == a)
                && f.action
                    .as_deref()
                    .is_none_or(|a| r["action"].as_str().is_some_and(|x| x.starts_with(a)))
        },
        f.limit.unwrap_or(100).min(10_000),
    );
    (StatusCode::OK, Json(json!({ "audit": found })))
}

/// An event's payload and headers, by reference (needs the `payloads` role; audited).
async fn event(
    State(inner): State<Arc<Inner>>,
    Extension(caller): Extension<Caller>,
    Path((topic, partition, offset)): Path<(String, i32, i64)>,
) -> Answer {
    if let Err(e) = need(&caller, Role::Payloads) {
        audit(
            &inner,
            &caller,
            "event.inspect",
            json!({ "topic": topic, "partition": partition, "offset": offset }),
            "denied",
        )
        .await;
        return e;
    }
    let found =
        crate::replay::read_one(&inner.config.kafka_client(), &topic, partition, offset).await;
    let outcome = if found.is_some() { "ok" } else { "not_found" };
    audit(
        &inner,
        &caller,
        "event.inspect",
        json!({ "topic": topic, "partition": partition, "offset": offset }),
        outcome,
    )
    .await;
    match found {
        Some(source) => (StatusCode::OK, Json(source.to_json())),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no record at {topic}/{partition}/{offset}"),
        ),
    }
}
