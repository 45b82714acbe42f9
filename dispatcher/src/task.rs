//! What flows through the dispatcher: an event taken from a record, a delivery task (an event for
//! one endpoint, with its attempt count), and the records the dispatcher writes about them.
//!
//! A task waiting for a retry is a record of a retry topic: the event's own key, value and headers,
//! plus a `weir.task` header holding [`TaskState`] (JSON). So a retry needs no read of the source
//! topic, and the source's retention cannot lose it. A dead letter carries the event by reference
//! (topic, partition, offset) and the remediation context, not the payload.

use serde::{Deserialize, Serialize};

/// The header holding a retry record's [`TaskState`].
pub const TASK_HEADER: &str = "weir.task";

/// Where an event came from and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `ce_id`, else derived from topic, partition and offset: the `webhook-id`.
    pub id: String,
    /// `ce_type`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `tenant`.
    pub tenant: Option<String>,
    /// The record's timestamp (ms).
    pub timestamp_ms: i64,
}

impl EventRef {
    /// The event id when a record has no `ce_id`: topic, partition and offset, without the dots
    /// that Standard Webhooks ids must not contain.
    pub fn derived_id(topic: &str, partition: i32, offset: i64) -> String {
        let topic = topic.replace('%', "%25").replace('.', "%2E");
        format!("evt_{topic}:{partition}:{offset}")
    }
}

/// A delivery task's progress, carried between attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    pub event: EventRef,
    pub endpoint_id: String,
    /// The number of the next attempt (1 for the first).
    pub attempt: u32,
    /// When the dispatcher first took the event for this endpoint (ms).
    pub first_seen_ms: i64,
    /// When the first attempt was made (ms), if one was.
    pub first_attempt_ms: Option<i64>,
    /// Not before this time (ms).
    pub due_ms: i64,
    /// When it was written to its retry topic (ms).
    pub enqueued_ms: i64,
    /// The last failure, if any.
    pub last_status: Option<u16>,
    pub last_error: Option<ErrorClass>,
    /// A replay's id, marking its deliveries (`webhook-replay-id`).
    pub replay_id: Option<String>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// No answer within the endpoint's timeout.
    Timeout,
    /// No connection (refused, reset, DNS).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// HTTP 5xx.
    Server,
    /// HTTP 429.
    Throttled,
    /// HTTP 410: the endpoint is gone (and gets disabled).
    Gone,
    /// Another HTTP 4xx (not retried, except 408, 409 and 425).
    Client,
    /// HTTP 3xx (redirects are not followed).
    Redirect,
    /// The SSRF guard refused the target.
    Blocked,
    /// Not attempted: the endpoint's circuit breaker is open or its queue is full.
    Deferred,
    /// Not attempted: the endpoint was deleted.
    NoEndpoint,
}

impl ErrorClass {
    /// The class of an HTTP status that is not a success.
    pub fn of_status(status: u16) -> ErrorClass {
        match status {
            410 => ErrorClass::Gone,
            429 => ErrorClass::Throttled,
            300..=399 => ErrorClass::Redirect,
            400..=499 => ErrorClass::Client,
            _ => ErrorClass::Server,
        }
    }

    /// Whether another attempt may succeed.
    pub fn retryable(self, status: Option<u16>) -> bool {
        match self {
            ErrorClass::Client => matches!(status, Some(408 | 409 | 425)),
            ErrorClass::Gone | ErrorClass::Blocked | ErrorClass::NoEndpoint => false,
            _ => true,
        }
    }

    /// As the records and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Tls => "tls",
            ErrorClass::Server => "server",
            ErrorClass::Throttled => "throttled",
            ErrorClass::Gone => "gone",
            ErrorClass::Client => "client",
            ErrorClass::Redirect => "redirect",
            ErrorClass::Blocked => "blocked",
            ErrorClass::Deferred => "deferred",
            ErrorClass::NoEndpoint => "no_endpoint",
        }
    }
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed for good: in the dead-letter topic.
    Dead,
}

/// One record of `weir.dispatch.attempts` (key: the endpoint id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub event: EventRef,
    pub endpoint_id: String,
    pub attempt: u32,
    /// HTTP status, if there was an answer.
    pub status: Option<u16>,
    pub error_class: Option<ErrorClass>,
    pub latency_ms: u64,
    pub at_ms: i64,
    pub outcome: Outcome,
    /// When the next attempt is due, if one is scheduled.
    pub next_attempt_ms: Option<i64>,
    pub replay_id: Option<String>,
}

/// One record of `weir.dispatch.dlq` (key: the endpoint id): the event by reference, and what an
/// operator needs to decide on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event: EventRef,
    pub endpoint_id: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub error_class: Option<ErrorClass>,
    pub first_attempt_ms: Option<i64>,
    pub last_attempt_ms: i64,
    /// Why it is here: `exhausted`, `not_retryable`, `expired` or `endpoint_gone`.
    pub reason: String,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_retries() {
        assert_eq!(ErrorClass::of_status(503), ErrorClass::Server);
        assert_eq!(ErrorClass::of_status(429), ErrorClass::Throttled);
        assert_eq!(ErrorClass::of_status(410), ErrorClass::Gone);
        assert_eq!(ErrorClass::of_status(404), ErrorClass::Client);
        assert_eq!(ErrorClass::of_status(301), ErrorClass::Redirect);
        for s in [408, 409, 425] {
            assert!(ErrorClass::of_status(s).retryable(Some(s)), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 422] {
            assert!(!ErrorClass::of_status(s).retryable(Some(s)), "{s}");
        }
        assert!(ErrorClass::Timeout.retryable(None));
        assert!(ErrorClass::Throttled.retryable(Some(429)));
    }

    #[test]
    fn derived_ids_have_no_dots() {
        let id = EventRef::derived_id("orders.v1", 2, 17);
        assert_eq!(id, "evt_orders%2Ev1:2:17");
        assert_ne!(id, EventRef::derived_id("orders%2Ev1", 2, 17));
    }
}
