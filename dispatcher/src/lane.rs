//! One endpoint's lane: its queue, its limit of requests in flight, its rate limit (token bucket),
//! its circuit breaker, and (for `ordering: key`) one delivery at a time per record key. A lane
//! never holds up another: work it cannot take goes back to the engine, which hands it to a retry
//! topic.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, mpsc};

use crate::endpoint::Ordering;
use crate::progress::Token;
use crate::task::TaskState;

/// A delivery task with its event.
#[derive(Debug)]
pub struct Job {
    pub state: TaskState,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// The record it came from; done when dropped.
    pub token: Arc<Token>,
}

/// Consecutive failures open the breaker for a cooldown; then one trial request decides.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
    trial: bool,
}

/// What the breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Open until then.
    No(Instant),
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            failures: 0,
            open_until: None,
            trial: false,
        }
    }

    /// Whether a request may go now.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.open_until {
            None => Admit::Yes,
            Some(until) if now < until => Admit::No(until),
            Some(_) if self.trial => Admit::No(now + self.cooldown / 10),
            Some(_) => {
                self.trial = true;
                Admit::Yes
            }
        }
    }

    /// A request's result (`failed`: a failure that says the endpoint is unwell).
    pub fn record(&mut self, failed: bool, now: Instant) {
        if failed {
            self.failures += 1;
            if self.trial || self.failures >= self.threshold {
                self.open_until = Some(now + self.cooldown);
            }
        } else {
            self.failures = 0;
            self.open_until = None;
        }
        self.trial = false;
    }

    /// `closed`, `open` or `half_open`.
    pub fn state(&self, now: Instant) -> &'static str {
        match self.open_until {
            None => "closed",
            Some(until) if now < until => "open",
            Some(_) => "half_open",
        }
    }
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct Lane {
    pub endpoint_id: String,
    queue: mpsc::Sender<Job>,
    pub in_flight: Arc<Semaphore>,
    pub limiter: Option<DefaultDirectRateLimiter>,
    pub breaker: Mutex<Breaker>,
    pub ordering: Ordering,
    /// `ordering: key`: keys with a delivery under way, and the jobs waiting behind each.
    pub keys: Mutex<HashMap<Bytes, VecDeque<Job>>>,
    /// The settings it was made for; a change makes a new lane.
    pub shape: (u32, Option<u32>, Ordering),
    /// Average attempt latency (ms; 0: none yet).
    latency_ms: AtomicU64,
    /// Its metrics, registered once (no lookup or allocation per attempt).
    pub metrics: LaneMetrics,
}

/// An endpoint's metric handles (`weir_dispatch_*{endpoint}`).
#[derive(Debug)]
pub struct LaneMetrics {
    pub delivered: metrics::Counter,
    pub attempt_seconds: metrics::Histogram,
    pub delivery_seconds: metrics::Histogram,
}

impl LaneMetrics {
    fn new(endpoint: &str) -> LaneMetrics {
        let e = endpoint.to_owned();
        LaneMetrics {
            delivered: metrics::counter!(
                "weir_dispatch_attempts_total",
                "endpoint" => e.clone(),
                "outcome" => "delivered",
                "class" => "none"
            ),
            attempt_seconds: metrics::histogram!("weir_dispatch_attempt_seconds", "endpoint" => e.clone()),
            delivery_seconds: metrics::histogram!("weir_dispatch_delivery_seconds", "endpoint" => e),
        }
    }
}

impl Lane {
    /// A lane and the receiving end of its queue.
    pub fn new(
        endpoint_id: &str,
        max_in_flight: u32,
        rate_limit_per_s: Option<u32>,
        ordering: Ordering,
        queue: usize,
        breaker: Breaker,
    ) -> (Arc<Lane>, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(queue);
        let limiter = rate_limit_per_s
            .and_then(NonZeroU32::new)
            .map(|r| RateLimiter::direct(Quota::per_second(r)));
        let lane = Arc::new(Lane {
            endpoint_id: endpoint_id.to_owned(),
            queue: tx,
            in_flight: Arc::new(Semaphore::new(max_in_flight as usize)),
            limiter,
            breaker: Mutex::new(breaker),
            ordering,
            keys: Mutex::new(HashMap::new()),
            shape: (max_in_flight, rate_limit_per_s, ordering),
            latency_ms: AtomicU64::new(0),
            metrics: LaneMetrics::new(endpoint_id),
        });
        (lane, rx)
    }

    /// Queues a job, or gives it back when the queue is full.
    pub fn offer(&self, job: Job) -> Result<(), Box<Job>> {
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job) => {
                Box::new(job)
            }
        })
    }

    /// Queues a job, waiting up to `patience` for room; gives it back if there is none by then.
    pub async fn offer_within(&self, job: Job, patience: Duration) -> Result<(), Box<Job>> {
        match tokio::time::timeout(patience, self.queue.reserve()).await {
            Ok(Ok(slot)) => {
                slot.send(job);
                Ok(())
            }
            _ => Err(Box::new(job)),
        }
    }

    /// Records an attempt's latency (an average over the last few dozen attempts).
    pub fn observe(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let old = self.latency_ms.load(AtomicOrdering::Relaxed);
        let new = if old == 0 { ms } else { (old * 31 + ms) / 32 };
        self.latency_ms.store(new.max(1), AtomicOrdering::Relaxed);
    }

    /// Busy but well: its breaker is closed and it answers within a second on average. A full
    /// queue of a healthy lane is waited for (its capacity is the limit for everyone); that of an
    /// unwell one is not (its work goes to a retry topic).
    pub fn healthy(&self) -> bool {
        self.latency_ms.load(AtomicOrdering::Relaxed) < 1000 && self.breaker_state() == "closed"
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// `ordering: key`: claims the job's key, or parks the job behind the delivery holding it.
    /// Returns the job when it may go now.
    pub fn claim_key(&self, job: Job) -> Option<Job> {
        let Some(key) = job.key.clone().filter(|_| self.ordering == Ordering::Key) else {
            return Some(job);
        };
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        match keys.get_mut(&key) {
            Some(waiting) => {
                waiting.push_back(job);
                None
            }
            None => {
                keys.insert(key, VecDeque::new());
                Some(job)
            }
        }
    }

    /// `ordering: key`: the delivery holding `key` is over; the next job behind it, if any (the key
    /// stays claimed for it).
    pub fn release_key(&self, key: Option<&Bytes>) -> Option<Job> {
        let key = key.filter(|_| self.ordering == Ordering::Key)?;
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting = keys.get_mut(key)?;
        match waiting.pop_front() {
            Some(next) => Some(next),
            None => {
                keys.remove(key);
                None
            }
        }
    }

    pub fn breaker_state(&self) -> &'static str {
        self.breaker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .state(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_one_trial_closes_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(30));
        b.record(true, t0);
        b.record(true, t0);
        assert_eq!(b.admit(t0), Admit::Yes);
        b.record(false, t0);
        b.record(true, t0);
        b.record(true, t0);
        assert_eq!(b.admit(t0), Admit::Yes, "a success reset the count");
        b.record(true, t0);
        assert!(matches!(b.admit(t0), Admit::No(_)), "three in a row");
        let later = t0 + Duration::from_secs(31);
        assert_eq!(b.admit(later), Admit::Yes, "one trial");
        assert!(matches!(b.admit(later), Admit::No(_)), "only one");
        b.record(true, later);
        assert!(
            matches!(b.admit(later), Admit::No(_)),
            "the trial failed: open again"
        );
        let again = later + Duration::from_secs(31);
        assert_eq!(b.admit(again), Admit::Yes);
        b.record(false, again);
        assert_eq!(b.state(again), "closed");
        assert_eq!(b.admit(again), Admit::Yes);
    }
}
