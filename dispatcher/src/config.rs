//! Dispatcher settings (`[dispatcher]` in `weir serve`'s TOML, `WEIR_DISPATCHER__*` variables, or
//! `weir dispatcher`'s flags).

use serde::{Deserialize, Serialize};

/// See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Run the dispatcher inside `weir serve`. Default true.
    pub enabled: bool,
    /// Kafka bootstrap servers (`weir serve` uses its own listener).
    pub bootstrap: String,
    /// librdkafka properties of the dispatcher's Kafka clients, to log in to a secured cluster:
    /// `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`.
    /// Inside `weir serve` with SASL-only listeners or ACLs the dispatcher logs in by itself.
    pub kafka: std::collections::BTreeMap<String, String>,
    /// The consumer group every dispatcher instance joins. Default `weir-dispatcher`.
    pub group_id: String,
    /// The key encrypting endpoint secrets at rest: 32 bytes, base64. `weir serve` generates one
    /// in its data directory when none is set; `weir dispatcher` requires it.
    pub secret_key: Option<String>,
    /// Targets in these networks are allowed although private or loopback (the SSRF guard denies
    /// them otherwise), e.g. `["127.0.0.0/8", "::1/128"]`. Unset: none, except in `weir serve`,
    /// which allows loopback (a development setup) and says so at start-up.
    pub allow_cidrs: Option<Vec<ipnet::IpNet>>,
    /// The ports of the process the dispatcher runs in (its admin, Kafka and gRPC listeners): never
    /// a webhook target on a non-public address, whatever `allow_cidrs` says, so an endpoint
    /// cannot make the dispatcher call its own broker's APIs. Set by the broker, not configured.
    #[serde(skip)]
    pub own_ports: Vec<u16>,
    /// The retry topics' delays in seconds, one topic `weir.dispatch.retry.<delay>s` each.
    /// Default 5, 300, 1800, 7200, 18000, 36000.
    pub retry_tiers_s: Vec<u64>,
    /// Partitions of the dispatcher's topics when it creates them. Default 6.
    pub topic_partitions: i32,
    /// How long a rotated-out secret keeps signing. Default 24 h.
    pub secret_overlap_s: u64,
    /// Consecutive failures that open an endpoint's circuit breaker. Default 10.
    pub breaker_failures: u32,
    /// How long an open breaker waits before one trial request. Default 30 s.
    pub breaker_cooldown_ms: u64,
    /// Tasks waiting per endpoint before more are handed to a retry topic. Default 1000.
    pub queue_per_endpoint: usize,
    /// Attempts and dead letters per endpoint the API keeps in memory. Default 1000.
    pub index_per_endpoint: usize,
    /// Replays and redrives that may send more events than this wait for a second operator's
    /// approval (an approver token other than the creator's). Default 10,000.
    pub replay_approval_threshold: u64,
    /// A replay's or redrive's rate limit when its request names none, in deliveries per second.
    /// Default 50.
    pub replay_rate_per_s: u32,
    /// Admin API tokens. None: development mode (the dispatcher's API answers only loopback
    /// clients and lets them do everything, said at start-up).
    pub tokens: Vec<ApiToken>,
}

/// An admin API token (`Authorization: Bearer <token>`), e.g. in TOML
/// `[[dispatcher.tokens]] name = "alice", token_sha256 = "<hex>", roles = ["operator"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who uses it: the actor in audit records.
    pub name: String,
    /// The token in clear (prefer `token_sha256`).
    #[serde(default)]
    pub token: Option<String>,
    /// The SHA-256 of the token, hex (`printf %s TOKEN | sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// What it may do.
    pub roles: Vec<Role>,
}

/// What a token may do. `viewer` reads; `operator` also changes endpoints and starts, pauses,
/// resumes and cancels replays and redrives; `approver` also approves them (not its own);
/// `payloads` may read event payloads (each read is audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Approver,
    Payloads,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            enabled: true,
            bootstrap: "127.0.0.1:9092".into(),
            kafka: std::collections::BTreeMap::new(),
            group_id: "weir-dispatcher".into(),
            secret_key: None,
            allow_cidrs: None,
            own_ports: Vec::new(),
            retry_tiers_s: vec![5, 300, 1800, 7200, 18_000, 36_000],
            topic_partitions: 6,
            secret_overlap_s: 86_400,
            breaker_failures: 10,
            breaker_cooldown_ms: 30_000,
            queue_per_endpoint: 1000,
            index_per_endpoint: 1000,
            replay_approval_threshold: 10_000,
            replay_rate_per_s: 50,
            tokens: Vec::new(),
        }
    }
}

impl DispatcherConfig {
    /// A Kafka client configuration: the bootstrap servers and the `kafka` properties.
    pub fn kafka_client(&self) -> rdkafka::ClientConfig {
        let mut client = rdkafka::ClientConfig::new();
        client.set("bootstrap.servers", &self.bootstrap);
        for (key, value) in &self.kafka {
            client.set(key, value);
        }
        client
    }

    /// Why these settings cannot run, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.retry_tiers_s.is_empty() || self.retry_tiers_s.contains(&0) {
            anyhow::bail!("invalid setting dispatcher.retry_tiers_s: at least one positive delay");
        }
        if self.topic_partitions < 1 {
            anyhow::bail!("invalid setting dispatcher.topic_partitions: must be positive");
        }
        if self.queue_per_endpoint == 0 || self.index_per_endpoint == 0 {
            anyhow::bail!(
                "invalid setting dispatcher.queue_per_endpoint / index_per_endpoint: must be positive"
            );
        }
        if self.breaker_failures == 0 {
            anyhow::bail!("invalid setting dispatcher.breaker_failures: must be positive");
        }
        if self.replay_rate_per_s == 0 {
            anyhow::bail!("invalid setting dispatcher.replay_rate_per_s: must be positive");
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let hash_ok = t
                .token_sha256
                .as_deref()
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if t.token.is_some() == t.token_sha256.is_some() || (t.token.is_none() && !hash_ok) {
                anyhow::bail!(
                    "invalid setting dispatcher.tokens[{i}] ({}): give exactly one of token or \
                     token_sha256 (64 hex digits)",
                    t.name
                );
            }
            if t.name.is_empty() || t.roles.is_empty() {
                anyhow::bail!(
                    "invalid setting dispatcher.tokens[{i}]: needs a name and at least one role"
                );
            }
        }
        if let Some(key) = &self.secret_key {
            crate::crypto::SecretKey::from_base64(key)
                .map_err(|e| anyhow::anyhow!("invalid setting dispatcher.secret_key: {e}"))?;
        }
        Ok(())
    }

    /// The retry tiers, ascending, without duplicates.
    pub fn tiers(&self) -> Vec<u64> {
        let mut tiers = self.retry_tiers_s.clone();
        tiers.sort_unstable();
        tiers.dedup();
        tiers
    }
}

/// The dispatcher's topics.
pub mod topics {
    /// Endpoints (compacted).
    pub const CONFIG: &str = "weir.dispatch.config";
    /// One record per attempt.
    pub const ATTEMPTS: &str = "weir.dispatch.attempts";
    /// Exhausted and non-retryable tasks.
    pub const DLQ: &str = "weir.dispatch.dlq";
    /// Admin actions.
    pub const AUDIT: &str = "weir.dispatch.audit";
    /// Replay and redrive jobs, their controls and progress (compacted).
    pub const REPLAYS: &str = "weir.dispatch.replays";

    /// The retry topic of a tier.
    pub fn retry(delay_s: u64) -> String {
        format!("weir.dispatch.retry.{delay_s}s")
    }
}
