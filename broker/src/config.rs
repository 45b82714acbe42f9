//! Broker settings (`weir serve`, and `weir broker` for a cluster): one TOML file, overridden by
//! `WEIR_*` environment variables and flags.
//!
//! Every limit has its unit in its name and a documented default. Unknown keys are refused with an
//! error that names them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_storage::StorageConfig;
use weir_wal::{FileWalConfig, ObjectWalConfig};

/// Settings of a single-node broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Kafka listener. Default `127.0.0.1:9092`.
    pub listen: SocketAddr,
    /// Address clients are told to connect to (`host:port`). Default: the listen address.
    pub advertised_listener: Option<String>,
    /// Kafka listeners, each with its own security protocol (`[[listeners]]`). Empty (the
    /// default): one PLAINTEXT listener on `listen`, advertised as `advertised_listener`.
    pub listeners: Vec<ListenerConfig>,
    /// Certificate and key of the SSL and SASL_SSL listeners (`[tls]`).
    pub tls: TlsConfig,
    /// Admin HTTP listener (health, metrics). Default `127.0.0.1:9644`.
    pub admin_listen: SocketAddr,
    /// Where the WAL (`wal/`) lives, and the object store (`objects/`) unless `object_store` is set.
    /// Default `./weir-data`.
    pub data_dir: PathBuf,
    /// The object store holding the metadata log and the data objects, as a URL: `file:///path`,
    /// `memory://` or `s3://bucket[/prefix]` (S3 settings from the standard `AWS_*` variables).
    /// Default: `file://<data_dir>/objects`.
    pub object_store: Option<String>,
    /// This broker's node id. Default 1.
    pub node_id: i32,
    /// Create topics on Metadata requests that name unknown topics, as Kafka does. Default true.
    pub auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics without a count. Default 1.
    pub default_partitions: u32,
    /// Largest request frame accepted; larger ones close the connection. Default 100 MiB.
    pub max_frame_bytes: u32,
    /// Most simultaneous client connections. Default 10000.
    pub max_connections: u32,
    /// Connections at once from one IP address (Kafka's `max.connections.per.ip`); more are closed
    /// as they arrive. Default 1000.
    pub max_connections_per_ip: u32,
    /// A connection with no request for this long is closed (Kafka's `connections.max.idle.ms`).
    /// Default 600000 (10 minutes).
    pub connections_max_idle_ms: u64,
    /// Once a request's length has arrived, the rest of it must within this time, or the
    /// connection is closed (a client trickling bytes holds no memory for long). Default 30000.
    pub request_read_timeout_ms: u64,
    /// Records one batch may hold; a batch claiming more is refused (INVALID_RECORD): its offsets
    /// would be taken from the partition however few records it really holds. Default 1000000.
    pub max_records_per_batch: u32,
    /// Requests read ahead or waiting for durability, per connection. Default 1024: librdkafka
    /// sends one Produce request per partition, and with the object WAL a connection serves at
    /// most this many per flush interval.
    pub max_in_flight_requests: u32,
    /// Bytes of request frames read ahead or waiting for durability, per connection. Default
    /// 64 MiB.
    pub max_in_flight_bytes: u32,
    /// Offsets at the end of a partition read to rebuild its idempotent producers' state when it
    /// opens here (a restart, a move, a failover). Default 100,000.
    pub producer_state_window: u64,
    /// Largest record batch accepted (Kafka's `message.max.bytes`). Default 1 MiB + 12 bytes.
    pub max_message_bytes: u32,
    /// Partitions of `__consumer_offsets`, fixed when it is first created. Default 50, as Kafka.
    pub offsets_topic_partitions: u32,
    /// Partitions of `__transaction_state`, fixed when it is first created. Default 50, as Kafka.
    pub transaction_state_partitions: u32,
    /// Longest transaction timeout a producer may ask for (Kafka's `transaction.max.timeout.ms`).
    /// Default 15 minutes.
    pub transaction_max_timeout_ms: u64,
    /// How long a transactional id with no transaction open is remembered after its last use
    /// (Kafka's `transactional.id.expiration.ms`). Default 7 days.
    pub transactional_id_expiration_ms: u64,
    /// How long a new consumer group waits for more members before its first assignment (Kafka's
    /// `group.initial.rebalance.delay.ms`). Default 3000 ms.
    pub group_initial_rebalance_delay_ms: u64,
    /// How long a member of a KIP-848 consumer group may go without a heartbeat before it is
    /// fenced (Kafka's `group.consumer.session.timeout.ms`). Default 45000 ms.
    pub group_consumer_session_timeout_ms: u64,
    /// The heartbeat interval KIP-848 members are told to keep (Kafka's
    /// `group.consumer.heartbeat.interval.ms`). Default 5000 ms.
    pub group_consumer_heartbeat_interval_ms: u64,
    /// How often retention is applied and garbage objects are collected (Kafka's
    /// `log.retention.check.interval.ms`). Default 300000 ms.
    pub retention_check_interval_ms: u64,
    /// How long an object no partition needs any more is kept before it is deleted, for reads
    /// already under way (Kafka's `file.delete.delay.ms`). Default 60000 ms.
    pub object_delete_grace_ms: u64,
    /// How often partitions of `cleanup.policy=compact` topics are checked for key compaction
    /// (Kafka's `log.cleaner.backoff.ms`). Default 15000 ms.
    pub key_compaction_interval_ms: u64,
    /// Most keys one key-compaction pass of a `cleanup.policy=compact` partition remembers (about
    /// 40 bytes each); a partition with more distinct keys since its last pass is compacted in
    /// several passes (Kafka's `log.cleaner.dedupe.buffer.size`). Default 1000000.
    pub key_compaction_max_keys: usize,
    /// Storage settings.
    pub storage: StorageConfig,
    /// Where the WAL lives: `file` (under `data_dir/wal`, one `fdatasync` per group commit) or
    /// `object` (in the object store, one PUT per group commit: a broker started on an empty data
    /// directory recovers it from the bucket). Default `file`.
    pub wal_kind: WalKind,
    /// File WAL settings.
    pub wal: FileWalConfig,
    /// Object WAL settings (`flush_interval_ms`, default 100; `max_bytes`, default 8 MiB).
    pub object_wal: ObjectWalConfig,
    /// Cluster settings (`weir broker`); unused by `weir serve`.
    pub cluster: ClusterConfig,
    /// SASL settings of the SASL_PLAINTEXT and SASL_SSL listeners (`[sasl]`).
    pub sasl: SaslConfig,
    /// `acl`: every request is checked against the ACLs (CreateAcls, `weir admin acl`); `none`
    /// (the default): no authorization, as Kafka without an authorizer.
    pub authorizer: AuthorizerKind,
    /// Principals allowed everything, ACLs or not (`["User:admin"]`).
    pub super_users: Vec<String>,
    /// With `authorizer = "acl"`: allow a request on a resource no ACL names (Kafka's
    /// `allow.everyone.if.no.acl.found`). Default false.
    pub allow_everyone_if_no_acl_found: bool,
    /// The webhook dispatcher (`[dispatcher]`): runs inside `weir serve` unless `enabled = false`;
    /// inside `weir broker` when `secret_key` is set (the same on every broker).
    pub dispatcher: weir_dispatcher::DispatcherConfig,
}

/// One Kafka listener (`[[listeners]]`), as Kafka's `listeners` and
/// `listener.security.protocol.map` together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// A name for logs and errors (`INTERNAL`, `EXTERNAL`, ...).
    pub name: String,
    /// Where it listens (`host:port`; port 0 picks a free one).
    pub address: SocketAddr,
    /// Where clients of this listener are told to connect (`host:port`). Default: the bound
    /// address.
    #[serde(default)]
    pub advertised: Option<String>,
    /// PLAINTEXT (the default) or SSL (TLS with the `[tls]` certificate).
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
}

/// A listener's security protocol, by Kafka's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections are TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients log in with SASL.
    pub fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// TLS settings shared by the SSL listeners (`[tls]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM.
    pub cert_path: Option<PathBuf>,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<PathBuf>,
    /// Client certificates must be signed by one of these CAs (PEM); without it clients are not
    /// asked for one. With it, a client's certificate subject is its principal (`User:CN=...`).
    pub client_ca_path: Option<PathBuf>,
}

/// Settings of a broker in a cluster (`weir broker`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The gRPC listener brokers and the controller talk on. Default `127.0.0.1:9645`.
    pub rpc_listen: SocketAddr,
    /// The gRPC address other brokers reach this one at (`host:port`). Default: the bound address.
    pub advertised_rpc: Option<String>,
    /// Whether this broker may become the active controller. Default false.
    pub controller: bool,
    /// A broker (or controller) not heard from this long is fenced (replaced). Default 6000 ms.
    pub session_timeout_ms: u64,
    /// How often a broker heartbeats to the controller (with its partitions' traffic). Default
    /// 1000 ms.
    pub heartbeat_interval_ms: u64,
    /// How often the active controller's balancer looks at the brokers' load and moves partitions
    /// from the most to the least loaded (0: never). Default 10000 ms.
    pub balance_interval_ms: u64,
    /// Where the file WAL lives when `wal_kind = "file"` (`--wal file:DIR`); a survivor recovers a
    /// dead broker's file WAL only if it can reach this directory. Default `data_dir/wal`.
    pub wal_dir: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            rpc_listen: SocketAddr::from(([127, 0, 0, 1], 9645)),
            advertised_rpc: None,
            controller: false,
            session_timeout_ms: 6000,
            heartbeat_interval_ms: 1000,
            balance_interval_ms: 10_000,
            wal_dir: None,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_listener: None,
            listeners: Vec::new(),
            tls: TlsConfig::default(),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9644)),
            data_dir: PathBuf::from("./weir-data"),
            object_store: None,
            node_id: 1,
            auto_create_topics: true,
            default_partitions: 1,
            max_frame_bytes: 100 << 20,
            max_connections: 10_000,
            max_connections_per_ip: 1000,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            max_records_per_batch: 1_000_000,
            max_in_flight_requests: 1024,
            max_in_flight_bytes: 64 << 20,
            producer_state_window: 100_000,
            max_message_bytes: (1 << 20) + 12,
            offsets_topic_partitions: 50,
            transaction_state_partitions: 50,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            group_initial_rebalance_delay_ms: 3000,
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            retention_check_interval_ms: 300_000,
            object_delete_grace_ms: 60_000,
            key_compaction_interval_ms: 15_000,
            key_compaction_max_keys: 1_000_000,
            storage: StorageConfig::default(),
            wal_kind: WalKind::File,
            wal: FileWalConfig::default(),
            object_wal: ObjectWalConfig::default(),
            cluster: ClusterConfig::default(),
            sasl: SaslConfig::default(),
            authorizer: AuthorizerKind::None,
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: false,
            dispatcher: weir_dispatcher::DispatcherConfig::default(),
        }
    }
}

/// SASL settings (`[sasl]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaslConfig {
    /// The mechanisms SASL listeners offer: `SCRAM-SHA-256`, `SCRAM-SHA-512`, `PLAIN`. Default:
    /// all three. PLAIN sends the password itself: use it on SASL_SSL listeners.
    pub mechanisms: Vec<String>,
}

impl Default for SaslConfig {
    fn default() -> Self {
        Self {
            mechanisms: vec![
                "SCRAM-SHA-256".into(),
                "SCRAM-SHA-512".into(),
                "PLAIN".into(),
            ],
        }
    }
}

/// Which authorizer checks requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizerKind {
    /// Every request is allowed.
    #[default]
    None,
    /// ACLs.
    Acl,
}

/// Where the WAL lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WalKind {
    /// Files under `data_dir/wal`.
    File,
    /// The object store.
    Object,
}

impl ServeConfig {
    /// Reads a TOML file; errors name the file and the offending key.
    pub fn from_file(path: &Path) -> anyhow::Result<ServeConfig> {
        Self::load(Some(path), std::iter::empty())
    }

    /// The settings from an optional TOML file, overridden by environment variables: `WEIR_<KEY>` for
    /// a top-level key, `WEIR_<SECTION>__<KEY>` inside a section (`WEIR_STORAGE__UPLOAD_MAX_BYTES`).
    /// Values are read as TOML (numbers, booleans), else as strings. Variables that name no setting
    /// are ignored with a warning, since `WEIR_` is also used by tools around Weir.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<ServeConfig> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => toml::Table::new(),
        };
        let known = toml::Table::try_from(ServeConfig::default())?;
        for (var, value) in env {
            let Some(name) = var.strip_prefix("WEIR_") else {
                continue;
            };
            let keys: Vec<String> = name
                .to_lowercase()
                .split("__")
                .map(str::to_string)
                .collect();
            if !is_known(&known, &keys) {
                if name != "CONFIG" {
                    tracing::warn!(variable = %var, "environment variable names no setting; ignored");
                }
                continue;
            }
            set(&mut table, &keys, parse_value(&value));
        }
        let source = path.map_or("settings".to_string(), |p| {
            format!("config file {}", p.display())
        });
        table
            .try_into()
            .map_err(|e| anyhow::anyhow!("{source} (with WEIR_* overrides): {e}"))
    }

    /// The advertised `(host, port)`.
    pub fn advertised(&self) -> (String, i32) {
        if let Some(adv) = &self.advertised_listener
            && let Some((host, port)) = adv.rsplit_once(':')
            && let Ok(port) = port.parse()
        {
            return (host.to_string(), port);
        }
        (self.listen.ip().to_string(), i32::from(self.listen.port()))
    }

    /// Checks the settings; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.storage.validate()?;
        self.dispatcher.validate()?;
        if self.default_partitions == 0 {
            anyhow::bail!("invalid setting default_partitions: must be at least 1");
        }
        if self.max_frame_bytes < 1024 {
            anyhow::bail!("invalid setting max_frame_bytes: must be at least 1024");
        }
        if self.key_compaction_max_keys == 0 {
            anyhow::bail!("invalid setting key_compaction_max_keys: must be at least 1");
        }
        if self.max_in_flight_requests == 0 || self.max_connections == 0 {
            anyhow::bail!(
                "invalid setting max_in_flight_requests / max_connections: must be positive"
            );
        }
        if self.max_in_flight_bytes == 0 {
            anyhow::bail!("invalid setting max_in_flight_bytes: must be positive");
        }
        for (key, value) in [
            (
                "max_connections_per_ip",
                u64::from(self.max_connections_per_ip),
            ),
            ("connections_max_idle_ms", self.connections_max_idle_ms),
            ("request_read_timeout_ms", self.request_read_timeout_ms),
            (
                "max_records_per_batch",
                u64::from(self.max_records_per_batch),
            ),
        ] {
            if value == 0 {
                anyhow::bail!("invalid setting {key}: must be positive");
            }
        }
        for m in &self.sasl.mechanisms {
            if crate::security::SaslMechanism::from_name(m).is_none() {
                anyhow::bail!(
                    "invalid setting sasl.mechanisms: {m:?} is not one of {:?}",
                    crate::security::SaslMechanism::NAMES
                );
            }
        }
        for user in &self.super_users {
            if !user
                .split_once(':')
                .is_some_and(|(k, n)| !k.is_empty() && !n.is_empty())
            {
                anyhow::bail!(
                    "invalid setting super_users: {user:?} is not a principal (TYPE:NAME, e.g. User:admin)"
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for l in &self.listeners {
            if !names.insert(l.name.as_str()) {
                anyhow::bail!(
                    "invalid setting listeners: the name {:?} is used twice",
                    l.name
                );
            }
            if l.security_protocol.is_sasl() && self.sasl.mechanisms.is_empty() {
                anyhow::bail!(
                    "invalid setting sasl.mechanisms: listener {:?} is {:?} and needs at least one",
                    l.name,
                    l.security_protocol
                );
            }
            if l.security_protocol.is_tls()
                && (self.tls.cert_path.is_none() || self.tls.key_path.is_none())
            {
                anyhow::bail!(
                    "invalid setting tls.cert_path / tls.key_path: listener {:?} is {:?} and needs both",
                    l.name,
                    l.security_protocol
                );
            }
        }
        Ok(())
    }
}

fn is_known(known: &toml::Table, keys: &[String]) -> bool {
    match keys {
        [] => false,
        // Settings without a default are absent from `known`.
        [key] => {
            known.contains_key(key)
                || [
                    "advertised_listener",
                    "cert_path",
                    "key_path",
                    "client_ca_path",
                    "object_store",
                    "advertised_rpc",
                    "wal_dir",
                    "secret_key",
                    "allow_cidrs",
                ]
                .contains(&key.as_str())
        }
        [section, rest @ ..] => match known.get(section) {
            Some(toml::Value::Table(inner)) => is_known(inner, rest),
            _ => false,
        },
    }
}

fn set(table: &mut toml::Table, keys: &[String], value: toml::Value) {
    match keys {
        [] => {}
        [key] => {
            table.insert(key.clone(), value);
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(inner) = entry {
                set(inner, rest, value);
            }
        }
    }
}

/// A TOML value when the text is one (`42`, `true`), else the text as a string.
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(
            &path,
            "default_partitions = 3\n[storage]\nupload_interval_ms = 500\n",
        )
        .unwrap();
        let config = ServeConfig::load(
            Some(&path),
            env(&[
                ("WEIR_DEFAULT_PARTITIONS", "8"),
                ("WEIR_AUTO_CREATE_TOPICS", "false"),
                ("WEIR_STORAGE__UPLOAD_MAX_BYTES", "33554432"),
                ("WEIR_DATA_DIR", "/var/lib/weir"),
                ("WEIR_TEST_SOMETHING", "1"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.default_partitions, 8);
        assert!(!config.auto_create_topics);
        assert_eq!(config.storage.upload_max_bytes, 32 << 20);
        assert_eq!(config.storage.upload_interval_ms, 500);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/weir"));
    }

    #[test]
    fn a_bad_setting_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "[storage]\nupload_max_byte = 1\n").unwrap();
        let err = ServeConfig::load(Some(&path), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("upload_max_byte"), "{err}");
        let err = ServeConfig::load(None, env(&[("WEIR_MAX_CONNECTIONS", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_connections"), "{err}");
    }
}
