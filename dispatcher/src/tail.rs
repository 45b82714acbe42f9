//! Reading a whole topic and following it (no consumer group: every dispatcher instance reads all
//! of it): the endpoints from the compacted config topic, the recent attempts and dead letters for
//! the API. Writers wait until their own record has been read back (read-your-writes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{Notify, watch};

/// How far a followed topic has been read.
#[derive(Debug, Default)]
pub struct Position {
    /// Partition -> the next offset to read.
    read: Mutex<HashMap<i32, i64>>,
    changed: Notify,
}

impl Position {
    /// Waits until the record at `offset` of `partition` has been read (or `timeout`).
    pub async fn wait_for(&self, partition: i32, offset: i64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.has_read(partition, offset) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.has_read(partition, offset);
            }
        }
    }

    /// Waits until every partition is read up to `ends` (partition -> next offset).
    pub async fn wait_for_all(&self, ends: &HashMap<i32, i64>, timeout: Duration) -> bool {
        for (partition, end) in ends {
            if *end > 0 && !self.wait_for(*partition, end - 1, timeout).await {
                return false;
            }
        }
        true
    }

    fn has_read(&self, partition: i32, offset: i64) -> bool {
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&partition)
            .is_some_and(|next| *next > offset)
    }

    fn advance(&self, partition: i32, next: i64) {
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(partition, next);
        self.changed.notify_waiters();
    }
}

/// Follows `topic` from its beginning, calling `apply` on each record, until `stop`. Returns the
/// position and the offsets the topic ended at when following started (to wait for a first full
/// read).
pub async fn follow(
    base: &ClientConfig,
    topic: &str,
    mut apply: impl FnMut(&BorrowedMessage<'_>) + Send + 'static,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(
    Arc<Position>,
    HashMap<i32, i64>,
    tokio::task::JoinHandle<()>,
)> {
    let consumer: StreamConsumer = base
        .clone()
        .set(
            "group.id",
            format!("weir-dispatcher-tail-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?;
        ends.insert(*p, high);
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let position = Arc::new(Position::default());
    let pos = position.clone();
    let name = topic.to_owned();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                message = consumer.recv() => match message {
                    Ok(m) => {
                        apply(&m);
                        pos.advance(m.partition(), m.offset() + 1);
                    }
                    Err(e) => {
                        tracing::warn!(topic = %name, error = %e, "reading the topic failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    });
    Ok((position, ends, task))
}
