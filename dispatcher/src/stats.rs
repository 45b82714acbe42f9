//! What the operator console shows: per-endpoint health (success rate, p99 latency, queue depth,
//! breaker), consumer lag, deliveries, retries and dead letters over time. `GET /v1/stats`
//! answers it as JSON; `GET /console` is the page that draws it.
//!
//! The same as Prometheus metrics (through the `metrics` facade; `/metrics` of the admin listener):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `weir_dispatch_attempts_total` | counter | `endpoint`, `outcome` (`delivered`, `failed`), `class` |
//! | `weir_dispatch_attempt_seconds` | histogram (request to answer) | `endpoint` |
//! | `weir_dispatch_delivery_seconds` | histogram (event timestamp to delivery, first attempts) | `endpoint` |
//! | `weir_dispatch_dead_letters_total` | counter | `endpoint`, `reason` |
//! | `weir_dispatch_deferred_total` (handed to a retry topic without an attempt) | counter | `endpoint` |
//! | `weir_dispatch_lag` | gauge | `topic`, `partition` |
//! | `weir_dispatch_endpoint_queued`, `weir_dispatch_endpoint_in_flight`, `weir_dispatch_endpoint_breaker_open` | gauge | `endpoint` |

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Inner;
use crate::engine::Engine;
use crate::task::now_ms;

/// Latencies kept per endpoint for its p99.
const LATENCIES_KEPT: usize = 1000;
/// Points of the time series (one every [`SAMPLE_EVERY`]): 10 minutes.
const POINTS: usize = 120;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One endpoint's attempts since this instance started.
#[derive(Debug, Default)]
struct EndpointHealth {
    delivered: u64,
    failed: u64,
    /// The last attempts' latencies, in microseconds.
    latencies: VecDeque<u32>,
}

/// Per-endpoint health and the time series.
#[derive(Debug, Default)]
pub struct Health {
    endpoints: Mutex<HashMap<String, EndpointHealth>>,
    series: Mutex<VecDeque<Point>>,
}

/// Counters at one time (totals since start; the page draws the differences).
#[derive(Debug, Clone, Copy, Serialize)]
struct Point {
    at_ms: i64,
    delivered: u64,
    failed: u64,
    retries: u64,
    dead: u64,
    lag: i64,
}

impl Health {
    /// Records one attempt.
    pub fn record(&self, endpoint: &str, delivered: bool, latency: Duration) {
        let mut all = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let h = all.entry(endpoint.to_owned()).or_default();
        if delivered {
            h.delivered += 1;
        } else {
            h.failed += 1;
        }
        h.latencies
            .push_back(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        if h.latencies.len() > LATENCIES_KEPT {
            h.latencies.pop_front();
        }
    }

    fn endpoint(&self, id: &str) -> Value {
        let all = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(h) = all.get(id) else {
            return json!({ "delivered": 0, "failed": 0, "success_rate": null, "p99_ms": null });
        };
        let mut sorted: Vec<u32> = h.latencies.iter().copied().collect();
        sorted.sort_unstable();
        let p99 = (!sorted.is_empty()).then(|| {
            let i = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
            f64::from(sorted[i]) / 1000.0
        });
        let total = h.delivered + h.failed;
        json!({
            "delivered": h.delivered,
            "failed": h.failed,
            "success_rate": (total > 0).then(|| h.delivered as f64 / total as f64),
            "p99_ms": p99,
        })
    }

    /// Samples the engine's counters every few seconds, until `stop`.
    pub async fn sample(engine: Arc<Engine>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let c = &engine.counters;
            let point = Point {
                at_ms: now_ms(),
                delivered: c.delivered.load(Relaxed),
                failed: c.failed_attempts.load(Relaxed),
                retries: c.retries_scheduled.load(Relaxed) + c.deferred.load(Relaxed),
                dead: c.dead.load(Relaxed),
                lag: 0,
            };
            let lag = engine.lag();
            gauges(&engine, &lag);
            let point = Point {
                lag: lag.values().sum(),
                ..point
            };
            {
                let mut series = engine
                    .health
                    .series
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                series.push_back(point);
                if series.len() > POINTS {
                    series.pop_front();
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }
}

/// Records one attempt's metrics (the lane's handles; a failure's counter is looked up, failures
/// being the rarer case).
pub(crate) fn attempt(
    lane: &crate::lane::Lane,
    state: &crate::task::TaskState,
    error: Option<crate::task::ErrorClass>,
    latency: Duration,
) {
    let m = &lane.metrics;
    m.attempt_seconds.record(latency.as_secs_f64());
    match error {
        None => {
            m.delivered.increment(1);
            if state.attempt == 1 && state.replay_id.is_none() {
                let age_ms = (now_ms() - state.event.timestamp_ms).max(0);
                m.delivery_seconds.record(age_ms as f64 / 1000.0);
            }
        }
        Some(class) => metrics::counter!(
            "weir_dispatch_attempts_total",
            "endpoint" => state.endpoint_id.clone(),
            "outcome" => "failed",
            "class" => class.as_str()
        )
        .increment(1),
    }
}

/// Sets the gauges (lag, lanes) from the engine's state.
fn gauges(engine: &Engine, lag: &BTreeMap<String, i64>) {
    for (name, n) in lag {
        if let Some((topic, partition)) = name.rsplit_once('/') {
            metrics::gauge!(
                "weir_dispatch_lag",
                "topic" => topic.to_owned(),
                "partition" => partition.to_owned()
            )
            .set(*n as f64);
        }
    }
    for (id, queued, in_flight, breaker) in engine.lanes() {
        metrics::gauge!("weir_dispatch_endpoint_queued", "endpoint" => id.clone())
            .set(queued as f64);
        metrics::gauge!("weir_dispatch_endpoint_in_flight", "endpoint" => id.clone())
            .set(in_flight as f64);
        metrics::gauge!("weir_dispatch_endpoint_breaker_open", "endpoint" => id)
            .set(if breaker == "closed" { 0.0 } else { 1.0 });
    }
}

/// `GET /v1/stats`.
pub(crate) async fn stats(State(inner): State<Arc<Inner>>) -> Json<Value> {
    let engine = &inner.engine;
    let lanes: HashMap<String, (usize, usize, &'static str)> = engine
        .lanes()
        .into_iter()
        .map(|(id, queued, in_flight, breaker)| (id, (queued, in_flight, breaker)))
        .collect();
    let endpoints: Vec<Value> = engine
        .registry
        .all()
        .iter()
        .map(|live| {
            let e = &live.endpoint;
            let (queued, in_flight, breaker) =
                lanes.get(&e.id).copied().unwrap_or((0, 0, "closed"));
            let mut v = engine.health.endpoint(&e.id);
            v["id"] = json!(e.id);
            v["url"] = json!(e.url);
            v["enabled"] = json!(e.enabled);
            v["queued"] = json!(queued);
            v["in_flight"] = json!(in_flight);
            v["breaker"] = json!(breaker);
            v
        })
        .collect();
    let series: Vec<Point> = engine
        .health
        .series
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .copied()
        .collect();
    let c = &engine.counters;
    let lag: BTreeMap<String, i64> = engine.lag();
    Json(json!({
        "instance": engine.instance,
        "at_ms": now_ms(),
        "endpoints": endpoints,
        "lag": lag,
        "totals": {
            "delivered": c.delivered.load(Relaxed),
            "failed_attempts": c.failed_attempts.load(Relaxed),
            "retries_scheduled": c.retries_scheduled.load(Relaxed),
            "deferred": c.deferred.load(Relaxed),
            "dead": c.dead.load(Relaxed),
        },
        "series": series,
    }))
}

/// `GET /console`: the operator console (one page, no external resources).
pub(crate) async fn console() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("console.html"),
    )
}
