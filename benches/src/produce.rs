//! `produce`: how fast records can be written, and how long each takes to be acknowledged.
//!
//! Each `--producers` instance is a librdkafka producer with its own connections, fed by its own
//! thread. Latency runs from the send librdkafka accepts to its delivery callback, so it includes
//! `linger.ms` batching, the broker's append and, with `acks=all`, its durability wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::producer::{Producer, ThreadedProducer};
use serde::Serialize;

use crate::cli::{KafkaArgs, ProduceArgs, ProducerArgs, RunLength};
use crate::error::BenchError;
use crate::kafka;
use crate::limits::LimitsReport;
use crate::load::{DeliveryContext, SendPlan, make_payload, send_loop, split_count};
use crate::progress::{Counters, Progress};
use crate::report::Section;
use crate::stats::{LatencyHistogram, LatencySummary, Throughput};

/// A run without `--count` or `--duration` lasts this long.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How long to wait for outstanding acks once sending stops.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_LINGER_MS: u64 = 5;

/// The settings a result was measured with.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceSettings {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub record_size: usize,
    #[serde(flatten)]
    pub tuning: ProducerTuning,
    pub producers: u32,
    /// Target records/s over all producers; 0 = unlimited.
    pub rate: u64,
    pub count: Option<u64>,
    pub duration_s: Option<f64>,
    /// The `-X` overrides, as `key=value`.
    pub overrides: Vec<String>,
    /// Records per transaction, for transactional producers.
    pub transaction_records: Option<u64>,
}

impl ProduceSettings {
    /// The settings of a run from its arguments (shared by `produce` and `e2e`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kafka: &KafkaArgs,
        topic: &str,
        partitions: i32,
        producer: &ProducerArgs,
        tuning: ProducerTuning,
        producers: u32,
        rate: u64,
        length: &RunLength,
    ) -> Self {
        ProduceSettings {
            bootstrap: kafka.bootstrap.clone(),
            topic: topic.to_string(),
            partitions,
            record_size: producer.record_size,
            tuning,
            producers,
            rate,
            count: length.count,
            duration_s: match length.count {
                Some(_) => None,
                None => Some(length.duration.unwrap_or(DEFAULT_DURATION).as_secs_f64()),
            },
            overrides: kafka
                .overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            transaction_records: None,
        }
    }
}

/// The producer settings in effect: the flags, or a `-X` override of the same property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProducerTuning {
    pub acks: String,
    pub compression: String,
    pub linger_ms: u64,
    pub batch_size: u64,
}

impl ProducerTuning {
    /// `default_linger_ms` applies when neither `--linger-ms` nor `-X linger.ms` is given.
    pub fn new(kafka: &KafkaArgs, producer: &ProducerArgs, default_linger_ms: u64) -> Self {
        let overridden = |keys: &[&str]| {
            // librdkafka applies properties in order, so the last override wins.
            kafka
                .overrides
                .iter()
                .rev()
                .find(|(key, _)| keys.contains(&key.as_str()))
                .map(|(_, value)| value.clone())
        };
        let number = |keys: &[&str], flag: u64| {
            overridden(keys)
                .and_then(|v| v.parse().ok())
                .unwrap_or(flag)
        };
        Self {
            acks: overridden(&["acks", "request.required.acks"])
                .unwrap_or_else(|| producer.acks.as_config().to_owned()),
            compression: overridden(&["compression.type", "compression.codec"])
                .unwrap_or_else(|| producer.compression.as_config().to_owned()),
            linger_ms: number(
                &["linger.ms", "queue.buffering.max.ms"],
                producer.linger_ms.unwrap_or(default_linger_ms),
            ),
            batch_size: number(&["batch.size"], producer.batch_size),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    pub settings: ProduceSettings,
    /// Records librdkafka accepted.
    pub sent: u64,
    /// Records whose delivery failed.
    pub failed: u64,
    /// Records neither acked nor failed when the flush timeout ran out.
    pub unacked: u64,
    pub first_error: Option<String>,
    /// Acked records and value bytes, from the first send to the last ack.
    pub throughput: Throughput,
    /// Send-to-ack latency of acked records.
    pub latency: Option<LatencySummary>,
}

/// Checks the arguments, that the broker answers, and prepares the topic; returns its partitions.
pub fn prepare(args: &ProduceArgs) -> Result<i32, BenchError> {
    if args.producers == 0 || args.producer.record_size == 0 {
        return Err(BenchError::Usage(
            "--producers and --record-size must be at least 1".to_owned(),
        ));
    }
    kafka::prepare_topic(&args.kafka, &args.topic, &args.topic_args)
}

pub fn run(
    args: &ProduceArgs,
    partitions: i32,
    show_progress: bool,
) -> Result<ProduceReport, BenchError> {
    let settings = settings(args, partitions);
    let config = kafka::producer_config(&args.kafka, &settings.tuning);
    let counters = Arc::new(Counters::default());
    let origin = Instant::now();
    let record_bytes = args.producer.record_size as u64;
    let producers = (0..args.producers)
        .map(|index| {
            let context = DeliveryContext::new(origin, record_bytes, Arc::clone(&counters));
            let mut config = config.clone();
            if args.transaction_records.is_some() {
                let id = format!("weir-bench-{}-{index}", std::process::id());
                config.set("transactional.id", id);
                config.set("enable.idempotence", "true");
            }
            let producer: ThreadedProducer<DeliveryContext> =
                ThreadedProducer::from_config_and_context(&config, context)
                    .map_err(|e| BenchError::kafka("cannot create a producer", e))?;
            if args.transaction_records.is_some() {
                producer
                    .init_transactions(TRANSACTION_TIMEOUT)
                    .map_err(|e| BenchError::kafka("cannot start a transactional producer", e))?;
            }
            Ok(producer)
        })
        .collect::<Result<Vec<_>, BenchError>>()?;

    let progress = Progress::start("produce", Arc::clone(&counters), show_progress);
    let start_ns = crate::load::ns_since(origin);
    let until = (args.length.count.is_none())
        .then(|| Instant::now() + args.length.duration.unwrap_or(DEFAULT_DURATION));
    let per_producer_rate = args.rate as f64 / f64::from(args.producers);
    let sent = std::thread::scope(|scope| {
        let senders: Vec<_> = producers
            .iter()
            .zip(0u32..)
            .map(|(producer, index)| {
                let plan = SendPlan {
                    count: args
                        .length
                        .count
                        .map(|c| split_count(c, args.producers, index)),
                    until,
                    rate: per_producer_rate,
                };
                let topic = args.topic.as_str();
                let record_size = args.producer.record_size;
                let per_transaction = args.transaction_records;
                scope.spawn(move || {
                    let mut payload = make_payload(record_size, u64::from(index) + 1);
                    match per_transaction {
                        None => send_loop(producer, topic, &mut payload, plan, origin, |_, _| {}),
                        Some(n) => {
                            send_in_transactions(producer, topic, &mut payload, plan, n, origin)
                        }
                    }
                })
            })
            .collect();
        senders
            .into_iter()
            .map(|sender| {
                sender.join().unwrap_or_else(|_| {
                    Err(BenchError::Incomplete(
                        "a sender thread panicked".to_owned(),
                    ))
                })
            })
            .sum::<Result<u64, BenchError>>()
    });
    // Flush even when a sender failed, so the producers do not drop records mid-flight silently.
    let unacked = flush_all(&producers);
    progress.finish();
    let sent = sent?;

    let mut latency = LatencyHistogram::new();
    let mut last_ack_ns = start_ns;
    let mut first_error = None;
    for producer in &producers {
        let context = producer.context();
        latency.merge(&context.latency());
        last_ack_ns = last_ack_ns.max(context.last_ack_ns());
        first_error = first_error.or_else(|| context.first_error());
    }
    let acked = latency.len();
    let elapsed = Duration::from_nanos(last_ack_ns - start_ns);
    Ok(ProduceReport {
        settings,
        sent,
        failed: counters.errors.load(std::sync::atomic::Ordering::Relaxed),
        unacked,
        first_error,
        throughput: Throughput::new(acked, acked * record_bytes, elapsed),
        latency: latency.summary(),
    })
}

/// How long a transactional producer's init and commit may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// [`send_loop`] in transactions of `per_transaction` records, each committed before the next
/// begins (the commit waits for its records' acknowledgements).
fn send_in_transactions(
    producer: &ThreadedProducer<DeliveryContext>,
    topic: &str,
    payload: &mut [u8],
    plan: SendPlan,
    per_transaction: u64,
    origin: Instant,
) -> Result<u64, BenchError> {
    let mut sent = 0u64;
    let per_transaction = per_transaction.max(1);
    while !plan.done(sent) {
        producer
            .begin_transaction()
            .map_err(|e| BenchError::kafka("cannot begin a transaction", e))?;
        let chunk = SendPlan {
            count: Some(
                plan.count
                    .map_or(per_transaction, |c| per_transaction.min(c - sent)),
            ),
            until: None,
            rate: plan.rate,
        };
        sent += send_loop(producer, topic, payload, chunk, origin, |_, _| {})?;
        // Delivered first, waited for here: the client library's flush polls in steps of 100 ms
        // while this producer's own thread takes the acknowledgements, which would make every
        // commit take 100 ms whatever the broker does.
        let deadline = Instant::now() + TRANSACTION_TIMEOUT;
        while producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        producer
            .commit_transaction(TRANSACTION_TIMEOUT)
            .map_err(|e| BenchError::kafka("cannot commit a transaction", e))?;
    }
    Ok(sent)
}

/// Waits for outstanding deliveries; returns how many records are still in flight after
/// [`FLUSH_TIMEOUT`].
fn flush_all(producers: &[ThreadedProducer<DeliveryContext>]) -> u64 {
    let deadline = Instant::now() + FLUSH_TIMEOUT;
    producers
        .iter()
        .map(|producer| {
            let left = deadline.saturating_duration_since(Instant::now());
            // A timeout is reported through the in-flight count below.
            let _ = producer.flush(left);
            u64::try_from(producer.in_flight_count()).unwrap_or(0)
        })
        .sum()
}

fn settings(args: &ProduceArgs, partitions: i32) -> ProduceSettings {
    ProduceSettings {
        transaction_records: args.transaction_records,
        ..ProduceSettings::new(
            &args.kafka,
            &args.topic,
            partitions,
            &args.producer,
            ProducerTuning::new(&args.kafka, &args.producer, DEFAULT_LINGER_MS),
            args.producers,
            args.rate,
            &args.length,
        )
    }
}

impl ProduceReport {
    pub fn section(&self, limits: Option<&LimitsReport>) -> Section {
        let s = &self.settings;
        let mut section = Section::new(format!(
            "produce to {} topic {} ({} partitions)",
            s.bootstrap, s.topic, s.partitions
        ));
        section
            .row("settings", settings_line(s))
            .row("records acked", self.throughput.records.to_string())
            .row("records failed", (self.failed + self.unacked).to_string())
            .row("elapsed", format!("{:.2} s", self.throughput.elapsed_s))
            .throughput_rows(
                self.throughput.records_per_s,
                self.throughput.mb_per_s,
                limits,
            )
            .latency_rows("ack latency", self.latency.as_ref(), limits);
        if let Some(error) = &self.first_error {
            section.row("first error", error.clone());
        }
        section
    }

    /// Failures that should make the run exit non-zero after printing the report.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.failed > 0 {
            problems.push(format!(
                "{} records failed: {}",
                self.failed,
                self.first_error.as_deref().unwrap_or("unknown error")
            ));
        }
        if self.unacked > 0 {
            problems.push(format!(
                "{} records not acknowledged within {FLUSH_TIMEOUT:?}",
                self.unacked
            ));
        }
        problems
    }
}

/// The producer settings on one line, shared with `e2e`.
pub fn settings_line(s: &ProduceSettings) -> String {
    let rate = if s.rate == 0 {
        "unlimited".to_owned()
    } else {
        format!("{}/s", s.rate)
    };
    let mut line = format!(
        "{} B records, acks={}, compression={}, linger.ms={}, batch.size={}, {} producer(s), rate {}",
        s.record_size,
        s.tuning.acks,
        s.tuning.compression,
        s.tuning.linger_ms,
        s.tuning.batch_size,
        s.producers,
        rate
    );
    for o in &s.overrides {
        line.push_str(&format!(", {o}"));
    }
    if let Some(n) = s.transaction_records {
        line.push_str(&format!(", transactions of {n} records"));
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn produce_args(argv: &[&str]) -> ProduceArgs {
        let cli =
            Cli::try_parse_from(["weir-bench", "produce"].iter().chain(argv)).expect("parses");
        match cli.command {
            Command::Produce(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn overrides_win_over_flags_in_the_reported_settings() {
        let args = produce_args(&[
            "--linger-ms",
            "3",
            "-X",
            "linger.ms=20",
            "-X",
            "compression.codec=gzip",
        ]);
        let tuning = ProducerTuning::new(&args.kafka, &args.producer, DEFAULT_LINGER_MS);
        assert_eq!(tuning.linger_ms, 20);
        assert_eq!(tuning.compression, "gzip");
        assert_eq!(tuning.acks, "all");

        let defaults = produce_args(&[]);
        let tuning = ProducerTuning::new(&defaults.kafka, &defaults.producer, DEFAULT_LINGER_MS);
        assert_eq!(tuning.linger_ms, DEFAULT_LINGER_MS);
        assert_eq!(tuning.batch_size, 1_000_000);
    }
}
