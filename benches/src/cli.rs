//! Command-line interface: one subcommand per benchmark, shared option groups flattened in.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::stats::parse_duration;

/// Load generator for any Kafka-protocol broker, plus this machine's own ceilings.
#[derive(Debug, Parser)]
#[command(
    name = "weir-bench",
    version,
    about = "Load generator for any Kafka-protocol broker (librdkafka), plus this machine's ceilings"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print one JSON object on stdout instead of the table (progress still goes to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce records as fast as allowed: records/s, MB/s and send-to-ack latency.
    Produce(ProduceArgs),
    /// Read a topic from its earliest offset to the end offsets seen at start: catch-up MB/s.
    Consume(ConsumeArgs),
    /// Produce at a fixed rate and consume at the same time: append-to-consume latency.
    E2e(E2eArgs),
    /// Measure this machine's ceilings: loopback TCP, fdatasync latency, sequential writes.
    Limits(LimitsArgs),
}

/// How to reach the broker; shared by the Kafka subcommands.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Broker list (`host:port[,host:port...]`).
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// librdkafka property for every client this run creates (repeatable): `-X linger.ms=20`.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub overrides: Vec<(String, String)>,
    /// How long to wait for the broker's first metadata answer and for admin calls.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

/// The topic to use and whether to create it.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Replication factor of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
    /// Use the topic as it is; fail if it does not exist.
    #[arg(long)]
    pub no_create: bool,
}

/// Producer settings shared by `produce` and `e2e`.
#[derive(Debug, Clone, Args)]
pub struct ProducerArgs {
    /// Bytes of value per record (no key).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Acknowledgements the producer waits for.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Producer compression codec.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// librdkafka `linger.ms` [default: 5 for produce, 0 for e2e].
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// librdkafka `batch.size` in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_size: u64,
}

/// How long a run lasts: a record count or a duration.
#[derive(Debug, Clone, Args)]
pub struct RunLength {
    /// Records to send (over all producers).
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// How long to send (`30s`, `2m`); the default when neither is given is 10s.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Runs the `limits` measurements first so the result and the ceilings come from one run.
#[derive(Debug, Clone, Args)]
pub struct WithLimits {
    /// Measure the machine's ceilings first and relate the results to them.
    #[arg(long)]
    pub with_limits: bool,
    #[command(flatten)]
    pub limits: LimitsArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic to write (created if missing unless --no-create).
    #[arg(long, default_value = "weir-bench")]
    pub topic: String,
    #[command(flatten)]
    pub topic_args: TopicArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub length: RunLength,
    /// Target records/s over all producers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Producer instances, each with its own connection and sending thread.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Transactional producers (a `transactional.id` each), committing every this many records.
    #[arg(long)]
    pub transaction_records: Option<u64>,
    #[command(flatten)]
    pub with: WithLimits,
}

#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic to read; it must exist.
    #[arg(long, default_value = "weir-bench")]
    pub topic: String,
    /// Stop after this many records (default: everything up to the end offsets seen at start).
    #[arg(long)]
    pub count: Option<u64>,
    /// Give up when no record arrives for this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    #[command(flatten)]
    pub with: WithLimits,
}

#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic to write and read (created if missing unless --no-create).
    #[arg(long, default_value = "weir-bench-e2e")]
    pub topic: String,
    #[command(flatten)]
    pub topic_args: TopicArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub length: RunLength,
    /// Records/s to send; latency is only meaningful below the broker's ceiling.
    #[arg(long, default_value_t = 1_000)]
    pub rate: u64,
    /// How long to wait for the last records after sending stops.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub with: WithLimits,
}

#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// Directory for the disk tests; put it on the disk the broker's WAL uses. The test files
    /// are temporary and removed afterwards.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// How long the loopback TCP test sends.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub tcp_duration: Duration,
    /// Number of timed 4 KiB write + fdatasync pairs.
    #[arg(long, default_value_t = 2_000)]
    pub fsync_samples: u32,
    /// MiB written (1 MiB at a time, then one fdatasync) by the sequential write test.
    #[arg(long, default_value_t = 512)]
    pub write_mib: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    #[value(name = "0")]
    None,
    #[value(name = "1")]
    Leader,
    #[value(name = "all", alias = "-1")]
    All,
}

impl Acks {
    /// The librdkafka `acks` value.
    pub fn as_config(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The librdkafka `compression.type` value.
    pub fn as_config(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn produce_flags_parse() {
        let cli = Cli::try_parse_from([
            "weir-bench",
            "produce",
            "-b",
            "127.0.0.1:1234",
            "--acks",
            "1",
            "--compression",
            "zstd",
            "-X",
            "queue.buffering.max.kbytes=2048",
            "--duration",
            "5s",
            "--json",
        ])
        .expect("valid command line");
        assert!(cli.json);
        let Command::Produce(args) = cli.command else {
            panic!("parsed as another subcommand");
        };
        assert_eq!(args.producer.acks, Acks::Leader);
        assert_eq!(args.producer.compression.as_config(), "zstd");
        assert_eq!(
            args.kafka.overrides,
            vec![("queue.buffering.max.kbytes".to_owned(), "2048".to_owned())]
        );
        assert_eq!(args.length.duration, Some(Duration::from_secs(5)));
    }

    #[test]
    fn count_and_duration_conflict() {
        let parsed =
            Cli::try_parse_from(["weir-bench", "produce", "--count", "5", "--duration", "5s"]);
        assert!(parsed.is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}
