//! Which offsets may be committed. A record is done when every task it produced is delivered or
//! durably handed to a retry or dead-letter topic; a partition's committed offset is the first
//! record not yet done. So a dispatcher killed at any moment loses nothing: whatever was not done
//! is read again by whoever gets the partition (at least once; same `webhook-id`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Stores the offsets to commit (librdkafka commits stored offsets every auto-commit interval and
/// when partitions are revoked).
pub trait OffsetStore: Send + Sync + 'static {
    /// The next offset to read of `topic`/`partition` is `next`.
    fn store(&self, topic: &str, partition: i32, next: i64);
}

#[derive(Debug)]
struct Partition {
    generation: u64,
    /// Records taken and not done yet: offset -> tasks left.
    pending: BTreeMap<i64, usize>,
    /// The offset after the last record taken.
    next: i64,
    stored: i64,
}

/// The records in progress of one consumer's partitions.
pub struct Progress {
    partitions: Mutex<HashMap<(String, i32), Partition>>,
    generations: AtomicU64,
    store: Arc<dyn OffsetStore>,
    /// Set at shutdown: nothing more is stored.
    closed: AtomicBool,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").finish_non_exhaustive()
    }
}

/// A record in progress; done when the last clone is dropped.
#[derive(Debug)]
pub struct Token {
    progress: Arc<Progress>,
    topic: String,
    partition: i32,
    offset: i64,
    generation: u64,
    /// Set when a task of the record was dropped undone: the record never counts as done.
    abandoned: AtomicBool,
}

impl Token {
    /// The record's work was dropped without being done (a job stopped or cancelled): the offset
    /// is never stored past it, so whoever goes on later does it again.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
    }
}

impl Progress {
    /// Progress storing its offsets in `store`.
    pub fn new(store: Arc<dyn OffsetStore>) -> Arc<Progress> {
        Arc::new(Progress {
            partitions: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            store,
            closed: AtomicBool::new(false),
        })
    }

    /// Takes a record: done once the returned token and all its clones are dropped.
    pub fn take(self: &Arc<Self>, topic: &str, partition: i32, offset: i64) -> Arc<Token> {
        let mut all = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let p = all
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| Partition {
                generation: self.generations.fetch_add(1, Ordering::Relaxed),
                pending: BTreeMap::new(),
                next: offset,
                stored: offset,
            });
        p.pending.insert(offset, 1);
        p.next = p.next.max(offset + 1);
        Arc::new(Token {
            progress: self.clone(),
            topic: topic.to_owned(),
            partition,
            offset,
            generation: p.generation,
            abandoned: AtomicBool::new(false),
        })
    }

    /// Forgets partitions revoked from this consumer: their tokens store nothing any more.
    pub fn revoke(&self, partitions: &[(String, i32)]) {
        let mut all = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for key in partitions {
            all.remove(key);
        }
    }

    /// Stops storing offsets (shutdown: what is in flight is read again by the next owner).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Records in progress, over all partitions.
    pub fn in_progress(&self) -> usize {
        self.partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|p| p.pending.len())
            .sum()
    }

    fn done(&self, token: &Token) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let store = {
            let mut all = self
                .partitions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(p) = all.get_mut(&(token.topic.clone(), token.partition)) else {
                return;
            };
            if p.generation != token.generation {
                return;
            }
            p.pending.remove(&token.offset);
            let committable = p.pending.keys().next().copied().unwrap_or(p.next);
            if committable <= p.stored {
                return;
            }
            p.stored = committable;
            committable
        };
        self.store.store(&token.topic, token.partition, store);
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if !self.abandoned.load(Ordering::SeqCst) {
            self.progress.done(self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Stored(Mutex<Vec<(String, i32, i64)>>);

    impl OffsetStore for Stored {
        fn store(&self, topic: &str, partition: i32, next: i64) {
            self.0.lock().unwrap().push((topic.into(), partition, next));
        }
    }

    #[test]
    fn the_committed_offset_is_the_first_record_not_done() {
        let stored = Arc::new(Stored::default());
        let progress = Progress::new(stored.clone());
        let a = progress.take("t", 0, 10);
        let b = progress.take("t", 0, 11);
        let b2 = b.clone(); // a record with two tasks
        let c = progress.take("t", 0, 12);
        drop(c);
        drop(b);
        assert!(stored.0.lock().unwrap().is_empty(), "10 is not done");
        drop(a);
        assert_eq!(stored.0.lock().unwrap().last(), Some(&("t".into(), 0, 11)));
        drop(b2);
        assert_eq!(stored.0.lock().unwrap().last(), Some(&("t".into(), 0, 13)));
        assert_eq!(progress.in_progress(), 0);
    }

    #[test]
    fn an_abandoned_record_holds_the_offset() {
        let stored = Arc::new(Stored::default());
        let progress = Progress::new(stored.clone());
        let a = progress.take("t", 0, 3);
        let b = progress.take("t", 0, 4);
        a.abandon();
        drop(a);
        drop(b);
        assert!(stored.0.lock().unwrap().is_empty(), "3 was not done");
        assert_eq!(progress.in_progress(), 1);
    }

    #[test]
    fn revoked_partitions_and_a_closed_progress_store_nothing() {
        let stored = Arc::new(Stored::default());
        let progress = Progress::new(stored.clone());
        let a = progress.take("t", 0, 5);
        progress.revoke(&[("t".into(), 0)]);
        let b = progress.take("t", 0, 7); // assigned again, a new generation
        drop(a);
        assert!(
            stored.0.lock().unwrap().is_empty(),
            "a stale token stores nothing"
        );
        progress.close();
        drop(b);
        assert!(stored.0.lock().unwrap().is_empty(), "closed");
    }
}
