//! The topic configs Weir knows, with Kafka's names and defaults, for DescribeConfigs (and later
//! AlterConfigs). A topic stores only the configs set explicitly; the rest come from here.

/// Kafka's config types, as DescribeConfigs v3+ reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// true/false.
    Boolean = 1,
    /// Free text.
    String = 2,
    /// 32-bit integer.
    Int = 3,
    /// 16-bit integer.
    Short = 4,
    /// 64-bit integer.
    Long = 5,
    /// Floating point.
    Double = 6,
    /// Comma-separated list.
    List = 7,
}

/// One known topic config.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfig {
    /// Kafka's name.
    pub name: &'static str,
    /// Kafka's default.
    pub default: &'static str,
    /// Its type.
    pub kind: ConfigType,
    /// What it does.
    pub doc: &'static str,
}

/// Every topic config Weir reports, in Kafka's spelling. The ones that do not apply to Weir's
/// storage are accepted and reported, so tools that set them (Kafka's own tests, Terraform
/// providers, Strimzi) keep working; their docs say so.
pub const TOPIC_CONFIGS: &[TopicConfig] = &[
    TopicConfig {
        name: "cleanup.policy",
        default: "delete",
        kind: ConfigType::List,
        doc: "delete or compact",
    },
    TopicConfig {
        name: "compression.type",
        default: "producer",
        kind: ConfigType::String,
        doc: "batches are stored as the producer compressed them",
    },
    TopicConfig {
        name: "max.message.bytes",
        default: "1048588",
        kind: ConfigType::Int,
        doc: "largest record batch accepted",
    },
    TopicConfig {
        name: "message.timestamp.type",
        default: "CreateTime",
        kind: ConfigType::String,
        doc: "CreateTime or LogAppendTime",
    },
    TopicConfig {
        name: "min.insync.replicas",
        default: "1",
        kind: ConfigType::Int,
        doc: "durability comes from storage; kept for clients",
    },
    TopicConfig {
        name: "retention.bytes",
        default: "-1",
        kind: ConfigType::Long,
        doc: "bytes kept per partition (-1: no limit)",
    },
    TopicConfig {
        name: "retention.ms",
        default: "604800000",
        kind: ConfigType::Long,
        doc: "how long records are kept (-1: forever)",
    },
    TopicConfig {
        name: "segment.bytes",
        default: "1073741824",
        kind: ConfigType::Int,
        doc: "accepted for compatibility; objects are sized by the uploader",
    },
    TopicConfig {
        name: "delete.retention.ms",
        default: "86400000",
        kind: ConfigType::Long,
        doc: "how long tombstones of compacted topics are kept after a key-compaction pass saw them",
    },
    TopicConfig {
        name: "file.delete.delay.ms",
        default: "60000",
        kind: ConfigType::Long,
        doc: "accepted for compatibility; objects are deleted by the controller",
    },
    TopicConfig {
        name: "flush.messages",
        default: "9223372036854775807",
        kind: ConfigType::Long,
        doc: "accepted for compatibility; every acknowledged batch is durable in the WAL",
    },
    TopicConfig {
        name: "flush.ms",
        default: "9223372036854775807",
        kind: ConfigType::Long,
        doc: "accepted for compatibility; every acknowledged batch is durable in the WAL",
    },
    TopicConfig {
        name: "follower.replication.throttled.replicas",
        default: "",
        kind: ConfigType::List,
        doc: "accepted for compatibility; storage replicates",
    },
    TopicConfig {
        name: "index.interval.bytes",
        default: "4096",
        kind: ConfigType::Int,
        doc: "accepted for compatibility; objects carry their own index",
    },
    TopicConfig {
        name: "leader.replication.throttled.replicas",
        default: "",
        kind: ConfigType::List,
        doc: "accepted for compatibility; storage replicates",
    },
    TopicConfig {
        name: "local.retention.bytes",
        default: "-2",
        kind: ConfigType::Long,
        doc: "accepted for compatibility; all data is in object storage",
    },
    TopicConfig {
        name: "local.retention.ms",
        default: "-2",
        kind: ConfigType::Long,
        doc: "accepted for compatibility; all data is in object storage",
    },
    TopicConfig {
        name: "max.compaction.lag.ms",
        default: "9223372036854775807",
        kind: ConfigType::Long,
        doc: "accepted for compatibility (compaction)",
    },
    TopicConfig {
        name: "message.downconversion.enable",
        default: "true",
        kind: ConfigType::Boolean,
        doc: "accepted for compatibility; batches are served as stored",
    },
    TopicConfig {
        name: "message.timestamp.after.max.ms",
        default: "9223372036854775807",
        kind: ConfigType::Long,
        doc: "accepted for compatibility",
    },
    TopicConfig {
        name: "message.timestamp.before.max.ms",
        default: "9223372036854775807",
        kind: ConfigType::Long,
        doc: "accepted for compatibility",
    },
    TopicConfig {
        name: "min.cleanable.dirty.ratio",
        default: "0.5",
        kind: ConfigType::Double,
        doc: "share of a compacted partition written since its last key compaction that starts one",
    },
    TopicConfig {
        name: "min.compaction.lag.ms",
        default: "0",
        kind: ConfigType::Long,
        doc: "data committed more recently than this is not key-compacted",
    },
    TopicConfig {
        name: "preallocate",
        default: "false",
        kind: ConfigType::Boolean,
        doc: "accepted for compatibility",
    },
    TopicConfig {
        name: "remote.storage.enable",
        default: "false",
        kind: ConfigType::Boolean,
        doc: "accepted for compatibility; all data is in object storage",
    },
    TopicConfig {
        name: "segment.index.bytes",
        default: "10485760",
        kind: ConfigType::Int,
        doc: "accepted for compatibility; objects carry their own index",
    },
    TopicConfig {
        name: "segment.jitter.ms",
        default: "0",
        kind: ConfigType::Long,
        doc: "accepted for compatibility",
    },
    TopicConfig {
        name: "segment.ms",
        default: "604800000",
        kind: ConfigType::Long,
        doc: "accepted for compatibility; objects are sized by the uploader",
    },
    TopicConfig {
        name: "unclean.leader.election.enable",
        default: "false",
        kind: ConfigType::Boolean,
        doc: "accepted for compatibility; there are no replicas to elect",
    },
];

/// The broker configs Weir reports, from the running settings: `(name, value, type)`.
pub fn broker_configs(config: &crate::ServeConfig) -> Vec<(&'static str, String, ConfigType)> {
    vec![
        ("broker.id", config.node_id.to_string(), ConfigType::Int),
        ("node.id", config.node_id.to_string(), ConfigType::Int),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
            ConfigType::Boolean,
        ),
        (
            "num.partitions",
            config.default_partitions.to_string(),
            ConfigType::Int,
        ),
        (
            "message.max.bytes",
            config.max_message_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "socket.request.max.bytes",
            config.max_frame_bytes.to_string(),
            ConfigType::Int,
        ),
        (
            "default.replication.factor",
            "1".to_string(),
            ConfigType::Short,
        ),
        (
            "log.retention.ms",
            "604800000".to_string(),
            ConfigType::Long,
        ),
    ]
}

/// A topic config's value: set explicitly on the topic, else the catalog's default.
pub fn effective<'a>(
    explicit: &'a std::collections::BTreeMap<String, String>,
    name: &str,
) -> Option<&'a str> {
    explicit.get(name).map(String::as_str).or_else(|| {
        TOPIC_CONFIGS
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.default)
    })
}

/// Checks a topic config name and value; the message says what is wrong (INVALID_CONFIG).
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(config) = TOPIC_CONFIGS.iter().find(|c| c.name == name) else {
        return Err(format!("unknown topic config {name:?}"));
    };
    let ok = match config.kind {
        ConfigType::Int | ConfigType::Short => value.parse::<i32>().is_ok(),
        ConfigType::Long => value.parse::<i64>().is_ok(),
        ConfigType::Double => value.parse::<f64>().is_ok_and(f64::is_finite),
        ConfigType::Boolean => value == "true" || value == "false",
        ConfigType::List if name == "cleanup.policy" => {
            !value.is_empty()
                && value
                    .split(',')
                    .all(|p| matches!(p.trim(), "delete" | "compact"))
        }
        ConfigType::String if name == "message.timestamp.type" => {
            value == "CreateTime" || value == "LogAppendTime"
        }
        ConfigType::String if name == "compression.type" => {
            matches!(
                value,
                "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd"
            )
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value {value:?} for {name}"))
    }
}
