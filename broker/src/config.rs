//! `weir serve` settings: one TOML file, overridden by `WEIR_*` environment variables and flags.
//!
//! Every limit has its unit in its name and a documented default. Unknown keys are refused with an
//! error that names them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_storage::StorageConfig;
use weir_wal::FileWalConfig;

/// Settings of a single-node broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Kafka listener. Default `127.0.0.1:9092`.
    pub listen: SocketAddr,
    /// Address clients are told to connect to (`host:port`). Default: the listen address.
    pub advertised_listener: Option<String>,
    /// Admin HTTP listener (health, metrics). Default `127.0.0.1:9644`.
    pub admin_listen: SocketAddr,
    /// Where the WAL (`wal/`) and the object store (`objects/`) live. Default `./weir-data`.
    pub data_dir: PathBuf,
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
    /// Requests read ahead of the one being served, per connection. Default 16.
    pub max_in_flight_requests: u32,
    /// Largest record batch accepted (Kafka's `message.max.bytes`). Default 1 MiB + 12 bytes.
    pub max_message_bytes: u32,
    /// Storage settings.
    pub storage: StorageConfig,
    /// WAL settings.
    pub wal: FileWalConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_listener: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9644)),
            data_dir: PathBuf::from("./weir-data"),
            node_id: 1,
            auto_create_topics: true,
            default_partitions: 1,
            max_frame_bytes: 100 << 20,
            max_connections: 10_000,
            max_in_flight_requests: 16,
            max_message_bytes: (1 << 20) + 12,
            storage: StorageConfig::default(),
            wal: FileWalConfig::default(),
        }
    }
}

impl ServeConfig {
    /// Reads a TOML file; errors name the file and the offending key.
    pub fn from_file(path: &Path) -> anyhow::Result<ServeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
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
        if self.default_partitions == 0 {
            anyhow::bail!("invalid setting default_partitions: must be at least 1");
        }
        if self.max_frame_bytes < 1024 {
            anyhow::bail!("invalid setting max_frame_bytes: must be at least 1024");
        }
        if self.max_in_flight_requests == 0 || self.max_connections == 0 {
            anyhow::bail!(
                "invalid setting max_in_flight_requests / max_connections: must be positive"
            );
        }
        Ok(())
    }
}
