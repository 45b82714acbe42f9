//! `consume`: catch-up read throughput. The end offset of every partition is captured first, then
//! the partitions are read from their earliest offset with `assign` (no group membership, no
//! commits) until each reaches its captured end, or until `--count` records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::cli::ConsumeArgs;
use crate::error::BenchError;
use crate::kafka;
use crate::limits::LimitsReport;
use crate::progress::{Counters, Progress};
use crate::report::Section;
use crate::stats::Throughput;

const POLL_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize)]
pub struct ConsumeSettings {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub count: Option<u64>,
    pub overrides: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsumeReport {
    pub settings: ConsumeSettings,
    /// Records between the earliest and the end offsets captured at start, over all partitions.
    pub available: u64,
    /// Consumer errors reported while reading (librdkafka retries most of them itself).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Records and bytes (key + value) read, from `assign` to the last record.
    pub throughput: Throughput,
}

/// One partition's read window.
#[derive(Debug, Clone, Copy)]
struct Window {
    low: i64,
    high: i64,
    done: bool,
}

/// Checks that the broker answers and the topic exists; returns its partitions.
pub fn prepare(args: &ConsumeArgs) -> Result<i32, BenchError> {
    kafka::existing_topic(&args.kafka, &args.topic)
}

pub fn run(
    args: &ConsumeArgs,
    partitions: i32,
    show_progress: bool,
) -> Result<ConsumeReport, BenchError> {
    let consumer: BaseConsumer = kafka::consumer_config(&args.kafka)
        .create()
        .map_err(|e| BenchError::kafka("cannot create a consumer", e))?;
    let mut windows = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(&args.topic, partition, args.kafka.connect_timeout)
            .map_err(|e| {
                BenchError::kafka(
                    format!("cannot read the offsets of {}/{partition}", args.topic),
                    e,
                )
            })?;
        windows.push(Window {
            low,
            high,
            done: high <= low,
        });
        if high > low {
            assignment
                .add_partition_offset(&args.topic, partition, Offset::Offset(low))
                .map_err(|e| BenchError::kafka("cannot build the assignment", e))?;
        }
    }
    let available: u64 = windows
        .iter()
        .map(|w| u64::try_from(w.high - w.low).unwrap_or(0))
        .sum();
    let wanted = args.count.map_or(available, |count| count.min(available));

    let counters = Arc::new(Counters::default());
    let progress = Progress::start("consume", Arc::clone(&counters), show_progress);
    let start = Instant::now();
    consumer
        .assign(&assignment)
        .map_err(|e| BenchError::kafka("cannot assign the partitions", e))?;
    let outcome = read_until_end(
        &consumer,
        &mut windows,
        wanted,
        args.idle_timeout,
        &counters,
    );
    progress.finish();
    let read = outcome?;
    Ok(ConsumeReport {
        settings: ConsumeSettings {
            bootstrap: args.kafka.bootstrap.clone(),
            topic: args.topic.clone(),
            partitions,
            count: args.count,
            overrides: args
                .kafka
                .overrides
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        },
        available,
        errors: read.errors,
        first_error: read.first_error,
        throughput: Throughput::new(read.records, read.bytes, read.last_record_at - start),
    })
}

struct Read {
    records: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    last_record_at: Instant,
}

fn read_until_end(
    consumer: &BaseConsumer,
    windows: &mut [Window],
    wanted: u64,
    idle_timeout: Duration,
    counters: &Counters,
) -> Result<Read, BenchError> {
    let mut read = Read {
        records: 0,
        bytes: 0,
        errors: 0,
        first_error: None,
        last_record_at: Instant::now(),
    };
    while read.records < wanted && !windows.iter().all(|w| w.done) {
        match consumer.poll(POLL_TIMEOUT) {
            Some(Ok(message)) => {
                let bytes = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                read.records += 1;
                read.bytes += bytes as u64;
                read.last_record_at = Instant::now();
                counters.add(1, bytes as u64);
                if let Some(w) = window(windows, message.partition()) {
                    w.done |= message.offset() + 1 >= w.high;
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(w) = window(windows, partition) {
                    w.done = true;
                }
            }
            Some(Err(error)) => {
                read.errors += 1;
                counters.add_error();
                read.first_error.get_or_insert_with(|| error.to_string());
            }
            None => {}
        }
        if read.last_record_at.elapsed() > idle_timeout {
            let detail = read
                .first_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            return Err(BenchError::Incomplete(format!(
                "no record for {idle_timeout:?} after reading {} of {wanted}{detail}",
                read.records
            )));
        }
    }
    Ok(read)
}

fn window(windows: &mut [Window], partition: i32) -> Option<&mut Window> {
    usize::try_from(partition)
        .ok()
        .and_then(|p| windows.get_mut(p))
}

impl ConsumeReport {
    pub fn section(&self, limits: Option<&LimitsReport>) -> Section {
        let s = &self.settings;
        let mut section = Section::new(format!(
            "consume from {} topic {} ({} partitions), earliest to the end offsets at start",
            s.bootstrap, s.topic, s.partitions
        ));
        section
            .row("records available", self.available.to_string())
            .row("records read", self.throughput.records.to_string())
            .row("elapsed", format!("{:.2} s", self.throughput.elapsed_s))
            .throughput_rows(
                self.throughput.records_per_s,
                self.throughput.mb_per_s,
                limits,
            )
            .row("consumer errors", self.errors.to_string());
        if let Some(error) = &self.first_error {
            section.row("first error", error.clone());
        }
        section
    }
}
