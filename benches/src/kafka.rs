//! Client configuration, the reachability check and topic preparation shared by the Kafka
//! subcommands. Nothing here is Weir-specific: only the Kafka protocol as librdkafka speaks it.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::cli::{KafkaArgs, TopicArgs};
use crate::error::BenchError;
use crate::produce::ProducerTuning;

/// How often topic metadata is polled while waiting for a new topic's leaders.
const METADATA_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The configuration every client of a run starts from. Command-specific settings are added by
/// the caller, then [`apply_overrides`] lets `-X` win over all of them.
pub fn base_config(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("client.id", "weir-bench");
    config
}

/// Applies the `-X key=value` overrides last, so they take precedence.
pub fn apply_overrides(config: &mut ClientConfig, kafka: &KafkaArgs) {
    for (key, value) in &kafka.overrides {
        config.set(key, value);
    }
}

/// A producer configuration from the effective producer settings plus `-X` overrides.
pub fn producer_config(kafka: &KafkaArgs, tuning: &ProducerTuning) -> ClientConfig {
    let mut config = base_config(kafka);
    config
        .set("acks", &tuning.acks)
        .set("compression.type", &tuning.compression)
        .set("linger.ms", tuning.linger_ms.to_string())
        .set("batch.size", tuning.batch_size.to_string())
        // Not every Kafka-protocol broker implements InitProducerId; this is librdkafka's default
        // anyway, stated so that a run's settings are all visible here.
        .set("enable.idempotence", "false");
    apply_overrides(&mut config, kafka);
    config
}

/// A consumer configuration for manual assignment (`assign`, no group membership).
pub fn consumer_config(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = base_config(kafka);
    // librdkafka insists on a group id even when the group is never joined or committed to.
    let group = format!("weir-bench-{}", std::process::id());
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true");
    apply_overrides(&mut config, kafka);
    config
}

/// Checks that a broker answers and returns the topic's partition count, creating the topic
/// (unless `--no-create`) when it does not exist.
pub fn prepare_topic(kafka: &KafkaArgs, topic: &str, args: &TopicArgs) -> Result<i32, BenchError> {
    let admin = admin_client(kafka)?;
    if let Some(partitions) = existing_partitions(&admin, kafka, topic)? {
        return Ok(partitions);
    }
    if args.no_create {
        return Err(BenchError::Topic {
            topic: topic.to_owned(),
            reason: "does not exist (and --no-create was given)".to_owned(),
        });
    }
    create_topic(&admin, kafka, topic, args)?;
    wait_for_partitions(&admin, kafka, topic)
}

/// Checks that a broker answers and returns the partition count of an existing topic.
pub fn existing_topic(kafka: &KafkaArgs, topic: &str) -> Result<i32, BenchError> {
    let admin = admin_client(kafka)?;
    existing_partitions(&admin, kafka, topic)?.ok_or_else(|| BenchError::Topic {
        topic: topic.to_owned(),
        reason: "does not exist".to_owned(),
    })
}

fn admin_client(kafka: &KafkaArgs) -> Result<AdminClient<DefaultClientContext>, BenchError> {
    let mut config = base_config(kafka);
    // The metadata probe must not create the topic with the broker's default partition count.
    config.set("allow.auto.create.topics", "false");
    apply_overrides(&mut config, kafka);
    config
        .create()
        .map_err(|e| BenchError::kafka("cannot create the admin client", e))
}

/// The topic's partition count, `None` when the broker does not know the topic.
fn existing_partitions(
    admin: &AdminClient<DefaultClientContext>,
    kafka: &KafkaArgs,
    topic: &str,
) -> Result<Option<i32>, BenchError> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), kafka.connect_timeout)
        .map_err(|source| BenchError::Unreachable {
            bootstrap: kafka.bootstrap.clone(),
            source,
        })?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match found.error() {
        None if !found.partitions().is_empty() => Ok(Some(len_i32(found.partitions().len()))),
        None => Ok(None),
        Some(code) if RDKafkaErrorCode::from(code) == RDKafkaErrorCode::UnknownTopicOrPartition => {
            Ok(None)
        }
        Some(code) => Err(BenchError::Topic {
            topic: topic.to_owned(),
            reason: format!("metadata error: {}", RDKafkaErrorCode::from(code)),
        }),
    }
}

fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    kafka: &KafkaArgs,
    topic: &str,
    args: &TopicArgs,
) -> Result<(), BenchError> {
    let creation_error = |reason: String| BenchError::TopicCreation {
        topic: topic.to_owned(),
        reason,
    };
    if args.partitions < 1 {
        return Err(creation_error("--partitions must be at least 1".to_owned()));
    }
    let new_topic = NewTopic::new(
        topic,
        args.partitions,
        TopicReplication::Fixed(args.replication_factor),
    );
    let options = AdminOptions::new()
        .request_timeout(Some(kafka.connect_timeout))
        .operation_timeout(Some(kafka.connect_timeout));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("cannot start the async runtime", e))?;
    let results = runtime
        .block_on(admin.create_topics([&new_topic], &options))
        .map_err(|e: KafkaError| creation_error(e.to_string()))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(creation_error(code.to_string())),
        }
    }
    Ok(())
}

/// Waits until a just-created topic shows up in metadata with all its partitions.
fn wait_for_partitions(
    admin: &AdminClient<DefaultClientContext>,
    kafka: &KafkaArgs,
    topic: &str,
) -> Result<i32, BenchError> {
    let deadline = Instant::now() + kafka.connect_timeout;
    loop {
        if let Some(partitions) = existing_partitions(admin, kafka, topic)? {
            return Ok(partitions);
        }
        if Instant::now() >= deadline {
            return Err(BenchError::TopicCreation {
                topic: topic.to_owned(),
                reason: format!(
                    "created, but not in the broker's metadata after {:?}",
                    kafka.connect_timeout
                ),
            });
        }
        std::thread::sleep(METADATA_POLL_INTERVAL);
    }
}

/// Partition counts fit in `i32` on the wire; saturate rather than wrap if a broker says otherwise.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}
