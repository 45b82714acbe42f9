//! Producing load, shared by `produce` and `e2e`: the delivery callback that times every record,
//! the paced send loop, and payload generation.
//!
//! The send timestamp travels as the delivery opaque (nanoseconds since the run's origin as a
//! `usize`), so timing a record allocates nothing; the payload is built once and librdkafka copies
//! it on send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::error::BenchError;
use crate::progress::Counters;
use crate::stats::LatencyHistogram;

/// How long a sender backs off when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(500);

/// Nanoseconds from `origin` to now, as a delivery opaque or payload stamp.
pub fn ns_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Delivery bookkeeping of one producer instance: ack latency and outcome counters.
#[derive(Debug)]
pub struct DeliveryContext {
    origin: Instant,
    record_bytes: u64,
    counters: Arc<Counters>,
    latency: Mutex<LatencyHistogram>,
    last_ack_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl DeliveryContext {
    pub fn new(origin: Instant, record_bytes: u64, counters: Arc<Counters>) -> Self {
        Self {
            origin,
            record_bytes,
            counters,
            latency: Mutex::new(LatencyHistogram::new()),
            last_ack_ns: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// The send-to-ack latencies recorded so far.
    pub fn latency(&self) -> LatencyHistogram {
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// When the last successful ack arrived, as nanoseconds since the origin (0: none yet).
    pub fn last_ack_ns(&self) -> u64 {
        self.last_ack_ns.load(Ordering::Relaxed)
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    /// Send time in nanoseconds since `origin`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_ns: usize) {
        let now_ns = ns_since(self.origin);
        match result {
            Ok(_) => {
                let sent_at_ns = u64::try_from(sent_at_ns).unwrap_or(u64::MAX);
                self.latency
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record_ns(now_ns.saturating_sub(sent_at_ns));
                self.last_ack_ns.fetch_max(now_ns, Ordering::Relaxed);
                self.counters.add(1, self.record_bytes);
            }
            Err((error, _)) => {
                self.counters.add_error();
                self.first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// When a sender stops, and how fast it may go.
#[derive(Debug, Clone, Copy)]
pub struct SendPlan {
    /// Records this sender sends, if the run is count-bound.
    pub count: Option<u64>,
    /// When this sender stops, if the run is time-bound.
    pub until: Option<Instant>,
    /// Records per second for this sender; 0 = unlimited.
    pub rate: f64,
}

impl SendPlan {
    pub(crate) fn done(&self, sent: u64) -> bool {
        self.count.is_some_and(|count| sent >= count)
            || self.until.is_some_and(|until| Instant::now() >= until)
    }
}

/// Sends records following `plan`; `fill` may stamp the payload before each send. Returns the
/// number of records librdkafka accepted.
pub fn send_loop(
    producer: &ThreadedProducer<DeliveryContext>,
    topic: &str,
    payload: &mut [u8],
    plan: SendPlan,
    origin: Instant,
    mut fill: impl FnMut(&mut [u8], u64),
) -> Result<u64, BenchError> {
    let start = Instant::now();
    let mut sent = 0u64;
    while !plan.done(sent) {
        if plan.rate > 0.0 {
            // Pace against the schedule, not the previous send, so oversleeping is caught up.
            let due = start + Duration::from_secs_f64(sent as f64 / plan.rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let sent_at = usize::try_from(ns_since(origin)).unwrap_or(usize::MAX);
        fill(payload, sent_at as u64);
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(topic, sent_at).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: wait for acks. Latency is measured from the send
                    // that librdkafka accepts, so the wait here counts as backpressure, not latency.
                    std::thread::sleep(QUEUE_FULL_BACKOFF);
                    record = back;
                    record.delivery_opaque =
                        usize::try_from(ns_since(origin)).unwrap_or(usize::MAX);
                }
                Err((error, _)) => return Err(BenchError::kafka("cannot send a record", error)),
            }
        }
        sent += 1;
    }
    Ok(sent)
}

/// A payload of pseudo-random ASCII letters and digits: about 5.2 bits of entropy per byte, so the
/// compression codecs have something to do (roughly 1.5x) without the data being all zeros.
pub fn make_payload(size: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut state = seed | 1;
    (0..size)
        .map(|_| {
            // xorshift64: fast, deterministic, good enough for filler bytes.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

/// Splits `total` records over `senders` as evenly as possible.
pub fn split_count(total: u64, senders: u32, index: u32) -> u64 {
    let senders = u64::from(senders.max(1));
    total / senders + u64::from(u64::from(index) < total % senders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_printable_and_deterministic() {
        let a = make_payload(1000, 7);
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(u8::is_ascii_alphanumeric));
        assert_eq!(a, make_payload(1000, 7));
        assert_ne!(a, make_payload(1000, 8));
    }

    #[test]
    fn counts_split_evenly() {
        let parts: Vec<u64> = (0..3).map(|i| split_count(10, 3, i)).collect();
        assert_eq!(parts, vec![4, 3, 3]);
        assert_eq!(split_count(5, 0, 0), 5);
    }

    #[test]
    fn plan_stops_on_count_or_time() {
        let by_count = SendPlan {
            count: Some(2),
            until: None,
            rate: 0.0,
        };
        assert!(!by_count.done(1));
        assert!(by_count.done(2));
        let by_time = SendPlan {
            count: None,
            until: Some(Instant::now()),
            rate: 0.0,
        };
        assert!(by_time.done(0));
    }
}
