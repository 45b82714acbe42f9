//! `e2e`: append-to-consume latency at a fixed rate. A consumer is assigned to the end of every
//! partition and warmed up before the first send; each record's value starts with the run id and
//! its send time, so the consumer (same process, same monotonic clock) times it on arrival.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::cli::E2eArgs;
use crate::error::BenchError;
use crate::kafka;
use crate::limits::LimitsReport;
use crate::load::{DeliveryContext, SendPlan, make_payload, ns_since, send_loop};
use crate::produce::{
    DEFAULT_DURATION, FLUSH_TIMEOUT, ProduceSettings, ProducerTuning, settings_line,
};
use crate::progress::{Counters, Progress};
use crate::report::Section;
use crate::stats::{LatencyHistogram, LatencySummary, Throughput};

/// Bytes at the start of every value: run id (8) and send time in ns since the origin (8).
const STAMP_BYTES: usize = 16;
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Consumer polling before the first send, so connection setup is not measured as latency.
const WARM_UP: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub settings: ProduceSettings,
    pub sent: u64,
    /// Records the consumer saw before the drain timeout.
    pub received: u64,
    /// Records sent but not received.
    pub missing: u64,
    /// Records whose delivery failed on the producer side.
    pub failed: u64,
    pub first_error: Option<String>,
    /// Received records and value bytes, from the first send to the last arrival.
    pub consumed: Throughput,
    /// Send to arrival at the consumer.
    pub latency: Option<LatencySummary>,
    /// Send to the producer's delivery callback.
    pub ack_latency: Option<LatencySummary>,
}

pub fn prepare(args: &E2eArgs) -> Result<i32, BenchError> {
    if args.rate == 0 {
        return Err(BenchError::Usage("e2e needs --rate above 0".to_owned()));
    }
    if args.producer.record_size < STAMP_BYTES {
        return Err(BenchError::Usage(format!(
            "e2e needs --record-size of at least {STAMP_BYTES} bytes (run id + send time)"
        )));
    }
    kafka::prepare_topic(&args.kafka, &args.topic, &args.topic_args)
}

/// What the sending side tells the receiving side when it stops: records sent, and when.
type SendDone = OnceLock<(u64, Instant)>;

pub fn run(args: &E2eArgs, partitions: i32, show_progress: bool) -> Result<E2eReport, BenchError> {
    let settings = settings(args, partitions);
    let origin = Instant::now();
    // Tells this run's records from older ones on a reused topic; unique enough, not secret.
    let wall_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let run_id = wall_ns ^ (u64::from(std::process::id()) << 32);
    let consumer: BaseConsumer = kafka::consumer_config(&args.kafka)
        .create()
        .map_err(|e| BenchError::kafka("cannot create a consumer", e))?;
    assign_at_end(
        &consumer,
        &args.topic,
        partitions,
        args.kafka.connect_timeout,
    )?;

    let received_counters = Arc::new(Counters::default());
    let ack_counters = Arc::new(Counters::default());
    let record_bytes = args.producer.record_size as u64;
    let config = kafka::producer_config(&args.kafka, &settings.tuning);
    let context = DeliveryContext::new(origin, record_bytes, Arc::clone(&ack_counters));
    let producer = ThreadedProducer::from_config_and_context(&config, context)
        .map_err(|e| BenchError::kafka("cannot create a producer", e))?;

    let done = SendDone::new();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (sent, received) = std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            receive(
                &consumer,
                run_id,
                origin,
                &received_counters,
                &done,
                args.drain_timeout,
                ready_tx,
            )
        });
        // The receiver signals after its warm-up; if it died instead, the channel is closed.
        let _ = ready_rx.recv();
        let progress = Progress::start("e2e", Arc::clone(&received_counters), show_progress);
        let start = Instant::now();
        let mut payload = make_payload(args.producer.record_size, run_id);
        let plan = SendPlan {
            count: args.length.count,
            until: args
                .length
                .count
                .is_none()
                .then(|| start + args.length.duration.unwrap_or(DEFAULT_DURATION)),
            rate: args.rate as f64,
        };
        let sent = send_loop(
            &producer,
            &args.topic,
            &mut payload,
            plan,
            origin,
            |buf, sent_at| {
                buf[..8].copy_from_slice(&run_id.to_le_bytes());
                buf[8..STAMP_BYTES].copy_from_slice(&sent_at.to_le_bytes());
            },
        );
        let _ = producer.flush(FLUSH_TIMEOUT);
        // Tell the receiver how many to expect (none if sending failed) and from when to drain.
        let _ = done.set((sent.as_ref().copied().unwrap_or(0), Instant::now()));
        let received = receiver.join().unwrap_or_else(|_| {
            Err(BenchError::Incomplete(
                "the receiver thread panicked".to_owned(),
            ))
        });
        progress.finish();
        (sent.map(|n| (n, start)), received)
    });
    let (sent, start) = sent?;
    let received = received?;

    let context = producer.context();
    let count = received.latency.len();
    Ok(E2eReport {
        settings,
        sent,
        received: count,
        missing: sent.saturating_sub(count),
        failed: ack_counters
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        first_error: context.first_error().or(received.first_error),
        consumed: Throughput::new(
            count,
            count * record_bytes,
            received.last_at.saturating_duration_since(start),
        ),
        latency: received.latency.summary(),
        ack_latency: context.latency().summary(),
    })
}

fn assign_at_end(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<(), BenchError> {
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| {
                BenchError::kafka(
                    format!("cannot read the end offset of {topic}/{partition}"),
                    e,
                )
            })?;
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(high))
            .map_err(|e| BenchError::kafka("cannot build the assignment", e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| BenchError::kafka("cannot assign the partitions", e))
}

struct Received {
    latency: LatencyHistogram,
    last_at: Instant,
    first_error: Option<String>,
}

/// Polls until every sent record arrived, or `drain_timeout` after sending stopped.
fn receive(
    consumer: &BaseConsumer,
    run_id: u64,
    origin: Instant,
    counters: &Counters,
    done: &SendDone,
    drain_timeout: Duration,
    ready: mpsc::Sender<()>,
) -> Result<Received, BenchError> {
    let mut out = Received {
        latency: LatencyHistogram::new(),
        last_at: Instant::now(),
        first_error: None,
    };
    let warm_up_until = Instant::now() + WARM_UP;
    let mut ready = Some(ready);
    loop {
        if ready.is_some() && Instant::now() >= warm_up_until {
            // Dropping the sender after the signal is fine: the main thread waits for one message.
            let _ = ready.take().map(|r| r.send(()));
        }
        if let Some((sent, stopped_at)) = done.get()
            && (out.latency.len() >= *sent || stopped_at.elapsed() > drain_timeout)
        {
            return Ok(out);
        }
        match consumer.poll(POLL_TIMEOUT) {
            Some(Ok(message)) => {
                let now_ns = ns_since(origin);
                let Some(sent_at_ns) = message.payload().and_then(|p| stamp(p, run_id)) else {
                    continue; // a record of another run or writer
                };
                out.latency.record_ns(now_ns.saturating_sub(sent_at_ns));
                out.last_at = Instant::now();
                counters.add(1, message.payload_len() as u64);
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(error)) => {
                counters.add_error();
                out.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// The send time in a value written by this run, `None` for anything else.
fn stamp(value: &[u8], run_id: u64) -> Option<u64> {
    let id = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let sent_at = u64::from_le_bytes(value.get(8..STAMP_BYTES)?.try_into().ok()?);
    (id == run_id).then_some(sent_at)
}

fn settings(args: &E2eArgs, partitions: i32) -> ProduceSettings {
    ProduceSettings::new(
        &args.kafka,
        &args.topic,
        partitions,
        &args.producer,
        // Latency runs send records one by one; batching would only add delay.
        ProducerTuning::new(&args.kafka, &args.producer, 0),
        1,
        args.rate,
        &args.length,
    )
}

impl E2eReport {
    pub fn section(&self, limits: Option<&LimitsReport>) -> Section {
        let s = &self.settings;
        let mut section = Section::new(format!(
            "e2e through {} topic {} ({} partitions)",
            s.bootstrap, s.topic, s.partitions
        ));
        section
            .row("settings", settings_line(s))
            .row("records sent", self.sent.to_string())
            .row("records received", self.received.to_string())
            .row("records missing", self.missing.to_string())
            .throughput_rows(self.consumed.records_per_s, self.consumed.mb_per_s, limits)
            .latency_rows("e2e latency", self.latency.as_ref(), limits)
            .latency_rows("ack latency", self.ack_latency.as_ref(), limits);
        if let Some(error) = &self.first_error {
            section.row("first error", error.clone());
        }
        section
    }

    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.missing > 0 {
            problems.push(format!(
                "{} of {} records did not reach the consumer",
                self.missing, self.sent
            ));
        }
        if self.failed > 0 {
            problems.push(format!("{} records failed to produce", self.failed));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_read_back_only_for_this_run() {
        let mut value = make_payload(32, 1);
        value[..8].copy_from_slice(&42u64.to_le_bytes());
        value[8..16].copy_from_slice(&1_234u64.to_le_bytes());
        assert_eq!(stamp(&value, 42), Some(1_234));
        assert_eq!(stamp(&value, 43), None);
        assert_eq!(stamp(&value[..10], 42), None);
    }
}
