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

/// Records per endpoint, newest last.
#[derive(Debug)]
pub struct Recent<T> {
    per_endpoint: usize,
    records: Mutex<HashMap<String, VecDeque<T>>>,
}

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
        list.push_back(parsed);
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
            out.extend(list.iter().rev().filter(|r| keep(r)).take(limit).cloned());
        }
        out.truncate(limit);
        out
    }
}

/// Attempts and dead letters.
#[derive(Debug)]
pub struct Index {
    pub attempts: Recent<AttemptRecord>,
    pub dlq: Recent<DeadLetter>,
}
