//! The recent attempts and dead letters of each endpoint, for `GET /v1/attempts` and `GET /v1/dlq`:
//! the last `index_per_endpoint` records of `weir.dispatch.attempts` and `weir.dispatch.dlq` per
//! endpoint, read from the topics (so every instance answers alike). Older records stay in the
//! topics, readable with any Kafka client.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use serde::de::DeserializeOwned;

use crate::task::{AttemptRecord, DeadLetter};

/// Records per endpoint, newest last, with their positions (partition, offset).
#[derive(Debug)]
pub struct Recent<T> {
    per_endpoint: usize,
    records: Mutex<HashMap<String, VecDeque<Positioned<T>>>>,
}

/// A record and where it is in its topic (partition, offset).
type Positioned<T> = ((i32, i64), T);

impl<T: DeserializeOwned + Clone> Recent<T> {
    /// Keeps `per_endpoint` records per endpoint.
    pub fn new(per_endpoint: usize) -> Recent<T> {
        Recent {
            per_endpoint,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Adds a record read from the topic (key: the endpoint id).
    pub fn apply(&self, record: &BorrowedMessage<'_>) {
        let (Some(key), Some(value)) = (record.key(), record.payload()) else {
            return;
        };
        let (Ok(endpoint), Ok(parsed)) =
            (std::str::from_utf8(key), serde_json::from_slice::<T>(value))
        else {
            return;
        };
        let mut all = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let list = all.entry(endpoint.to_owned()).or_default();
        list.push_back(((record.partition(), record.offset()), parsed));
        if list.len() > self.per_endpoint {
            list.pop_front();
        }
    }

    /// The records of `endpoint` (or of all) that `keep`, newest first, at most `limit`.
    pub fn find(&self, endpoint: Option<&str>, keep: impl Fn(&T) -> bool, limit: usize) -> Vec<T> {
        let all = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<T> = Vec::new();
        for (id, list) in all.iter() {
            if endpoint.is_some_and(|e| e != id) {
                continue;
            }
            out.extend(
                list.iter()
                    .rev()
                    .map(|(_, r)| r)
                    .filter(|r| keep(r))
                    .take(limit)
                    .cloned(),
            );
        }
        out.truncate(limit);
        out
    }
}

impl<T> Recent<T> {
    /// Forgets the record at `at` (a dead letter redriven). `_partition`: where the marker is.
    pub fn remove(&self, _partition: i32, at: (i32, i64)) {
        let mut all = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        for list in all.values_mut() {
            list.retain(|(position, _)| *position != at);
        }
    }
}

/// The last records of a topic (the audit trail), newest last.
#[derive(Debug)]
pub struct Log {
    keep: usize,
    records: Mutex<VecDeque<serde_json::Value>>,
}

impl Log {
    pub fn new(keep: usize) -> Log {
        Log {
            keep,
            records: Mutex::new(VecDeque::new()),
        }
    }

    pub fn apply(&self, record: &BorrowedMessage<'_>) {
        let Some(value) = record
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        else {
            return;
        };
        let mut all = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        all.push_back(value);
        if all.len() > self.keep {
            all.pop_front();
        }
    }

    /// The records that `keep`, newest first, at most `limit`.
    pub fn find(
        &self,
        keep: impl Fn(&serde_json::Value) -> bool,
        limit: usize,
    ) -> Vec<serde_json::Value> {
        let all = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter()
            .rev()
            .filter(|r| keep(r))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Attempts and dead letters.
#[derive(Debug)]
pub struct Index {
    pub attempts: Recent<AttemptRecord>,
    pub dlq: Recent<DeadLetter>,
}
