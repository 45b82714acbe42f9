//! Endpoints: where events go and how (DESIGN.md 8). The admin API creates and changes them; they
//! are records of the compacted `weir.dispatch.config` topic, keyed by id, with the signing secrets
//! encrypted ([`crate::crypto`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The default retry schedule: seconds before each retry, after a first attempt at once. Eight
/// attempts over about 27.6 hours, as Svix and the Standard Webhooks guidance do.
pub const DEFAULT_RETRY_SCHEDULE_S: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

/// Delivery order for one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Deliveries overlap freely (the default, and the fastest).
    #[default]
    None,
    /// Events with the same record key are delivered one at a time, in offset order.
    Key,
}

/// An endpoint as the API shows it (without its secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `ep_` + a random id.
    pub id: String,
    /// Target URL (http or https).
    pub url: String,
    /// Only events whose `tenant` header equals this (none: every tenant).
    pub tenant: Option<String>,
    /// Topics whose events go here.
    pub source_topics: Vec<String>,
    /// Event types (`ce_type` header) that go here; `*` matches any run of characters.
    pub event_types: Vec<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Requests in flight to this endpoint at most.
    pub max_in_flight: u32,
    /// Requests per second at most (none: unlimited).
    pub rate_limit_per_s: Option<u32>,
    /// Seconds before each retry.
    pub retry_schedule_s: Vec<u64>,
    /// Delivery order.
    pub ordering: Ordering,
    /// Disabled endpoints get nothing (their events are not queued).
    pub enabled: bool,
    /// Why it was disabled by the dispatcher (an HTTP 410), if it was.
    pub disabled_reason: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at_ms: i64,
    /// Milliseconds since the epoch.
    pub updated_at_ms: i64,
}

/// A signing secret as stored: encrypted, and until when it still signs (an old secret after a
/// rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    /// [`crate::crypto::SecretKey::seal`]ed.
    pub sealed: String,
    /// Milliseconds since the epoch; none for the current secret.
    pub expires_at_ms: Option<i64>,
}

/// The config topic's record value for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEndpoint {
    /// The endpoint.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Current secret first.
    pub secrets: Vec<StoredSecret>,
}

/// `POST /v1/endpoints`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub url: String,
    #[serde(default)]
    pub tenant: Option<String>,
    pub source_topics: Vec<String>,
    #[serde(default = "all_types")]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
    #[serde(default = "default_schedule")]
    pub retry_schedule_s: Vec<u64>,
    #[serde(default)]
    pub ordering: Ordering,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn all_types() -> Vec<String> {
    vec!["*".into()]
}
fn default_timeout() -> u64 {
    15_000
}
fn default_in_flight() -> u32 {
    16
}
fn default_schedule() -> Vec<u64> {
    DEFAULT_RETRY_SCHEDULE_S.to_vec()
}
fn yes() -> bool {
    true
}

/// `PATCH /v1/endpoints/{id}`: the fields to change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub url: Option<String>,
    #[serde(default, with = "double_option")]
    pub tenant: Option<Option<String>>,
    pub source_topics: Option<Vec<String>>,
    pub event_types: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub timeout_ms: Option<u64>,
    pub max_in_flight: Option<u32>,
    #[serde(default, with = "double_option")]
    pub rate_limit_per_s: Option<Option<u32>>,
    pub retry_schedule_s: Option<Vec<u64>>,
    pub ordering: Option<Ordering>,
    pub enabled: Option<bool>,
}

/// `null` clears a field, absence leaves it.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Headers an endpoint may not set: the dispatcher's own.
const RESERVED: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "traceparent",
    "user-agent",
    "transfer-encoding",
];

impl Endpoint {
    /// A new endpoint from `POST /v1/endpoints` (validated by [`Endpoint::validate`]).
    pub fn create(id: String, new: NewEndpoint, now_ms: i64) -> Endpoint {
        Endpoint {
            id,
            url: new.url,
            tenant: new.tenant,
            source_topics: new.source_topics,
            event_types: new.event_types,
            headers: new.headers,
            timeout_ms: new.timeout_ms,
            max_in_flight: new.max_in_flight,
            rate_limit_per_s: new.rate_limit_per_s,
            retry_schedule_s: new.retry_schedule_s,
            ordering: new.ordering,
            enabled: new.enabled,
            disabled_reason: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }

    /// This endpoint with `patch` applied.
    pub fn patched(&self, patch: EndpointPatch, now_ms: i64) -> Endpoint {
        let mut e = self.clone();
        if let Some(v) = patch.url {
            e.url = v;
        }
        if let Some(v) = patch.tenant {
            e.tenant = v;
        }
        if let Some(v) = patch.source_topics {
            e.source_topics = v;
        }
        if let Some(v) = patch.event_types {
            e.event_types = v;
        }
        if let Some(v) = patch.headers {
            e.headers = v;
        }
        if let Some(v) = patch.timeout_ms {
            e.timeout_ms = v;
        }
        if let Some(v) = patch.max_in_flight {
            e.max_in_flight = v;
        }
        if let Some(v) = patch.rate_limit_per_s {
            e.rate_limit_per_s = v;
        }
        if let Some(v) = patch.retry_schedule_s {
            e.retry_schedule_s = v;
        }
        if let Some(v) = patch.ordering {
            e.ordering = v;
        }
        if let Some(v) = patch.enabled {
            e.enabled = v;
            if v {
                e.disabled_reason = None;
            }
        }
        e.updated_at_ms = now_ms;
        e
    }

    /// Why this endpoint cannot be stored, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err("url: must be an http or https URL with a host".into());
        }
        if self.source_topics.is_empty() || self.source_topics.iter().any(String::is_empty) {
            return Err("source_topics: at least one topic name".into());
        }
        if self
            .source_topics
            .iter()
            .any(|t| t.starts_with("weir.dispatch."))
        {
            return Err("source_topics: the dispatcher's own topics cannot be sources".into());
        }
        if self.event_types.is_empty() {
            return Err("event_types: at least one pattern (\"*\" for all)".into());
        }
        if !(1..=120_000).contains(&self.timeout_ms) {
            return Err("timeout_ms: between 1 and 120000".into());
        }
        if !(1..=1000).contains(&self.max_in_flight) {
            return Err("max_in_flight: between 1 and 1000".into());
        }
        if self.rate_limit_per_s == Some(0) {
            return Err("rate_limit_per_s: positive, or null for no limit".into());
        }
        if self.retry_schedule_s.len() > 30 || self.retry_schedule_s.iter().any(|s| *s > 604_800) {
            return Err("retry_schedule_s: at most 30 retries of at most 7 days each".into());
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str())
                || lower.starts_with("webhook-")
                || lower.starts_with("ce-")
            {
                return Err(format!("headers: {name} is set by the dispatcher"));
            }
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return Err(format!("headers: {name} is not a valid header"));
            }
        }
        Ok(())
    }

    /// Whether an event of `topic`, `tenant` and `event_type` goes here.
    pub fn wants(&self, topic: &str, tenant: Option<&str>, event_type: Option<&str>) -> bool {
        self.enabled
            && self.source_topics.iter().any(|t| t == topic)
            && self.tenant.as_deref().is_none_or(|t| Some(t) == tenant)
            && self
                .event_types
                .iter()
                .any(|p| glob(p, event_type.unwrap_or("")))
    }
}

/// `pattern` with `*` matching any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "order.created"));
        assert!(glob("order.*", "order.created"));
        assert!(!glob("order.*", "invoice.created"));
        assert!(glob("*.created", "order.created"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c"));
        assert!(!glob("ab*ba", "aba"), "prefix and suffix may not overlap");
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    fn endpoint() -> Endpoint {
        let new: NewEndpoint = serde_json::from_str(
            r#"{"url": "http://127.0.0.1:9/hook", "source_topics": ["orders"],
                "tenant": "acme", "event_types": ["order.*"]}"#,
        )
        .unwrap();
        Endpoint::create("ep_1".into(), new, 0)
    }

    #[test]
    fn defaults_and_matching() {
        let e = endpoint();
        assert_eq!(e.retry_schedule_s, DEFAULT_RETRY_SCHEDULE_S.to_vec());
        assert_eq!(
            (e.timeout_ms, e.max_in_flight, e.enabled),
            (15_000, 16, true)
        );
        assert!(e.validate().is_ok());
        assert!(e.wants("orders", Some("acme"), Some("order.paid")));
        assert!(!e.wants("orders", Some("other"), Some("order.paid")));
        assert!(!e.wants("orders", Some("acme"), Some("invoice.paid")));
        assert!(!e.wants("invoices", Some("acme"), Some("order.paid")));
        let off = e.patched(
            EndpointPatch {
                enabled: Some(false),
                ..EndpointPatch::default()
            },
            1,
        );
        assert!(!off.wants("orders", Some("acme"), Some("order.paid")));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |patch: &str| {
            let patch: EndpointPatch = serde_json::from_str(patch).unwrap();
            endpoint().patched(patch, 1).validate().unwrap_err()
        };
        assert!(bad(r#"{"url": "ftp://x/"}"#).starts_with("url"));
        assert!(bad(r#"{"timeout_ms": 0}"#).starts_with("timeout_ms"));
        assert!(bad(r#"{"max_in_flight": 0}"#).starts_with("max_in_flight"));
        assert!(bad(r#"{"rate_limit_per_s": 0}"#).starts_with("rate_limit_per_s"));
        assert!(bad(r#"{"headers": {"webhook-id": "x"}}"#).starts_with("headers"));
        assert!(bad(r#"{"source_topics": []}"#).starts_with("source_topics"));
        let cleared: EndpointPatch = serde_json::from_str(r#"{"tenant": null}"#).unwrap();
        assert_eq!(endpoint().patched(cleared, 1).tenant, None);
    }
}
