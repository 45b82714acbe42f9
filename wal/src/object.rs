//! The object WAL (DESIGN.md 4): one create-only PUT per group commit, so any broker can replay a
//! failed broker's WAL from the bucket.
//!
//! ```text
//! keys:    wal/{broker:010}/{epoch:010}/claim            the epoch's claim (empty)
//!          wal/{broker:010}/{epoch:010}/{seq:020}        a group commit, or a fence
//! object:  header (32 bytes, big-endian) then `count` records in the WAL record format
//!     0  8 magic "WEIRWOBJ"    8 2 version 1    10 2 reserved    12 8 first position
//!     20 4 record count        24 4 reserved    28 4 crc32c of bytes 0..28
//! fence:   the 8 bytes "WEIRFENC" and the fencing writer's epoch
//! ```
//!
//! **Writer.** `open` claims the next epoch of its broker id (a create-only PUT of its claim; a taken
//! claim means another writer raced it, so it tries the next). Appends are queued; one task PUTs
//! everything queued once the oldest has waited `flush_interval_ms` or `max_bytes` are queued, with
//! `PutMode::Create` at the next sequence number, then acknowledges them, in order. A PUT that fails is
//! retried with the same bytes; `AlreadyExists` with other bytes means a recoverer wrote a fence there:
//! the writer is fenced, fails everything queued and acknowledges nothing more.
//!
//! **Recovery.** `open` lists the broker's earlier epochs, fences each one after its highest sequence
//! (retrying one higher while a still-running writer wins the race), and reads every group commit in
//! (epoch, sequence) order. **Trim** deletes whole group commits below the trim point, but always keeps
//! the newest of its own epoch and every fence, so a writer's next sequence number can always be found.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::{Notify, oneshot};

use crate::record::{self, Decoded};
use crate::{
    CorruptReason, PendingAppend, RecoveredRecord, Recovery, Wal, WalError, WalPosition, WalRecord,
    WalStats,
};

const MAGIC: &[u8; 8] = b"WEIRWOBJ";
const FENCE: &[u8; 8] = b"WEIRFENC";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 32;

/// Settings of the object WAL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectWalConfig {
    /// Whose WAL this is: each broker writes under its own id (set from the node id, not the file).
    #[serde(skip)]
    pub broker_id: u32,
    /// Longest an append waits for others to share its PUT. Default 100 ms.
    pub flush_interval_ms: u64,
    /// A group commit is PUT at once when this many bytes are queued. Default 8 MiB.
    pub max_bytes: u64,
    /// Largest encoded record accepted. Default 16 MiB.
    pub max_record_bytes: u64,
}

impl Default for ObjectWalConfig {
    fn default() -> Self {
        Self {
            broker_id: 1,
            flush_interval_ms: 100,
            max_bytes: 8 << 20,
            max_record_bytes: 16 << 20,
        }
    }
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct ObjectWal {
    shared: Arc<Shared>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn ObjectStore>,
    config: ObjectWalConfig,
    epoch: u64,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Group commits that hold records, by (epoch, seq): their key and last position.
    objects: Mutex<BTreeMap<(u64, u64), (Path, u64)>>,
    records: AtomicU64,
    bytes: AtomicU64,
    puts: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    buf: Vec<u8>,
    waiters: Vec<oneshot::Sender<Result<(), WalError>>>,
    first: u64,
    next: u64,
    oldest: Option<tokio::time::Instant>,
    closed: bool,
    failed: Option<WalError>,
}

fn broker_prefix(broker: u32) -> String {
    format!("wal/{broker:010}")
}

fn key(broker: u32, epoch: u64, seq: u64) -> Path {
    Path::from(format!("{}/{epoch:010}/{seq:020}", broker_prefix(broker)))
}

fn claim_key(broker: u32, epoch: u64) -> Path {
    Path::from(format!("{}/{epoch:010}/claim", broker_prefix(broker)))
}

fn store_err(op: &'static str, path: &Path, e: object_store::Error) -> WalError {
    WalError::Store {
        op,
        key: path.to_string(),
        detail: e.to_string(),
    }
}

fn create() -> PutOptions {
    PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    }
}

/// What listing a broker's keys found, per epoch: the group commits' sequence numbers.
async fn list_epochs(
    store: &dyn ObjectStore,
    broker: u32,
) -> Result<BTreeMap<u64, Vec<u64>>, WalError> {
    let prefix = Path::from(broker_prefix(broker));
    let mut epochs: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut listing = store.list(Some(&prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| store_err("list", &prefix, e))?;
        let parts: Vec<_> = meta.location.parts().collect();
        let [_, _, epoch, name] = parts.as_slice() else {
            continue;
        };
        let Ok(epoch) = epoch.as_ref().parse::<u64>() else {
            continue;
        };
        let seqs = epochs.entry(epoch).or_default();
        if let Ok(seq) = name.as_ref().parse::<u64>() {
            seqs.push(seq);
        }
    }
    for seqs in epochs.values_mut() {
        seqs.sort_unstable();
    }
    Ok(epochs)
}

/// An object's bytes, or `None` if it does not exist.
async fn read(store: &dyn ObjectStore, path: &Path) -> Result<Option<Bytes>, WalError> {
    match store.get(path).await {
        Ok(result) => result
            .bytes()
            .await
            .map(Some)
            .map_err(|e| store_err("get", path, e)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_err("get", path, e)),
    }
}

/// A group commit's records (none for a fence).
fn decode_object(
    path: &Path,
    bytes: &Bytes,
    max_record_bytes: usize,
) -> Result<Vec<RecoveredRecord>, WalError> {
    let corrupt = |at: usize, reason| WalError::Corrupt {
        path: path.as_ref().into(),
        file_offset: at as u64,
        reason,
    };
    if bytes.starts_with(FENCE) {
        return Ok(Vec::new());
    }
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(
            0,
            CorruptReason::Truncated {
                needed: HEADER_LEN as u64,
                available: bytes.len() as u64,
            },
        ));
    }
    let stored = u32::from_be_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let computed = crc32c::crc32c(&bytes[..28]);
    if &bytes[..8] != MAGIC || stored != computed {
        return Err(corrupt(0, CorruptReason::CrcMismatch { stored, computed }));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[12..20]);
    let first = u64::from_be_bytes(first);
    let count = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    let mut out = Vec::with_capacity(count as usize);
    let mut at = HEADER_LEN;
    for i in 0..u64::from(count) {
        match record::decode(bytes, at, max_record_bytes).map_err(|r| corrupt(at, r))? {
            Decoded::Record(record, len) => {
                out.push(RecoveredRecord {
                    position: WalPosition(first + i),
                    record,
                });
                at += len;
            }
            Decoded::End => {
                return Err(corrupt(
                    at,
                    CorruptReason::Truncated {
                        needed: 1,
                        available: 0,
                    },
                ));
            }
        }
    }
    Ok(out)
}

fn encode_object(first: u64, count: u32, records: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(HEADER_LEN + records.len());
    out.extend_from_slice(MAGIC);
    out.put_u16(VERSION);
    out.put_u16(0);
    out.put_u64(first);
    out.put_u32(count);
    out.put_u32(0);
    let crc = crc32c::crc32c(&out[..28]);
    out.put_u32(crc);
    out.extend_from_slice(records);
    Bytes::from(out)
}

impl ObjectWal {
    /// Claims a new epoch for `config.broker_id`, fences the earlier ones, and recovers their
    /// records. Must run inside a Tokio runtime (the writer is a task).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        config: ObjectWalConfig,
    ) -> Result<(ObjectWal, Recovery), WalError> {
        if config.max_bytes == 0 || config.flush_interval_ms == 0 {
            return Err(WalError::InvalidConfig {
                key: "wal.object",
                detail: "flush_interval_ms and max_bytes must be at least 1".into(),
            });
        }
        let broker = config.broker_id;
        let max_record = usize::try_from(config.max_record_bytes).unwrap_or(usize::MAX);
        let listed = list_epochs(store.as_ref(), broker).await?;
        // Claim the epoch after the highest seen; a taken claim means a racing writer: go higher.
        let mut epoch = listed.keys().next_back().map_or(1, |e| e + 1);
        loop {
            match store
                .put_opts(&claim_key(broker, epoch), Bytes::new().into(), create())
                .await
            {
                Ok(_) => break,
                Err(object_store::Error::AlreadyExists { .. }) => epoch += 1,
                Err(e) => return Err(store_err("put", &claim_key(broker, epoch), e)),
            }
        }
        // Listed again after the claim: an epoch claimed by a writer racing this one is below ours
        // now, and must be fenced like the others.
        let mut epochs = list_epochs(store.as_ref(), broker).await?;
        epochs.retain(|e, _| *e < epoch);
        let mut records = Vec::new();
        let mut objects = BTreeMap::new();
        let mut next = 0u64;
        for (old, seqs) in &mut epochs {
            // A writer only ever PUTs the sequence after its last success, so if the highest listed
            // object is a fence, that writer is fenced for good and needs no new fence.
            let last = seqs.last().copied();
            let fenced = match last {
                Some(seq) => read(store.as_ref(), &key(broker, *old, seq))
                    .await?
                    .is_some_and(|b| b.starts_with(FENCE)),
                None => false,
            };
            // Fence the old writer after its last group commit; if it is still writing and wins the
            // race for that sequence number, read its commit too and fence one further.
            let mut fence_at = last.map_or(0, |s| s + 1);
            if !fenced {
                loop {
                    let mut fence = FENCE.to_vec();
                    fence.put_u64(epoch);
                    let path = key(broker, *old, fence_at);
                    match store
                        .put_opts(&path, PutPayload::from(fence), create())
                        .await
                    {
                        Ok(_) => break,
                        Err(object_store::Error::AlreadyExists { .. }) => {
                            seqs.push(fence_at);
                            fence_at += 1;
                        }
                        Err(e) => return Err(store_err("put", &path, e)),
                    }
                }
            }
            for seq in seqs.iter() {
                let path = key(broker, *old, *seq);
                // Gone since the listing: trimmed, so its records are in data objects already.
                let Some(bytes) = read(store.as_ref(), &path).await? else {
                    continue;
                };
                let found = decode_object(&path, &bytes, max_record)?;
                if let Some(last) = found.last() {
                    next = next.max(last.position.0 + 1);
                    objects.insert((*old, *seq), (path, last.position.0));
                }
                records.extend(found);
            }
        }
        records.sort_by_key(|r| r.position);
        let shared = Arc::new(Shared {
            store,
            config,
            epoch,
            queue: Mutex::new(Queue {
                first: next,
                next,
                ..Queue::default()
            }),
            wake: Notify::new(),
            objects: Mutex::new(objects),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            puts: AtomicU64::new(0),
        });
        let writer = tokio::spawn(run_writer(shared.clone()));
        tracing::info!(
            broker,
            epoch,
            recovered = records.len(),
            "object wal opened"
        );
        Ok((
            ObjectWal {
                shared,
                writer: Mutex::new(Some(writer)),
            },
            Recovery {
                records,
                torn_tail: None,
            },
        ))
    }

    /// This writer's epoch.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }
}

impl Drop for ObjectWal {
    /// Without `close`, the writer stops where it is, as in a crash: nothing queued is acknowledged.
    fn drop(&mut self) {
        if let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            writer.abort();
        }
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<(u64, u64), (Path, u64)>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// PUTs one group commit until it lands, or until it is known fenced.
    async fn put(&self, seq: u64, bytes: Bytes) -> Result<(), WalError> {
        let path = key(self.config.broker_id, self.epoch, seq);
        let mut retry = Duration::from_millis(50);
        loop {
            self.puts.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            let result = self
                .store
                .put_opts(&path, PutPayload::from_bytes(bytes.clone()), create())
                .await;
            metrics::histogram!("weir_wal_put_seconds").record(started.elapsed().as_secs_f64());
            match result {
                Ok(_) => return Ok(()),
                // Taken: by a recoverer's fence, or by this writer when an earlier attempt's answer
                // was lost. Identical bytes mean the latter.
                Err(object_store::Error::AlreadyExists { .. }) => loop {
                    // Only bytes read back decide: a failed read is retried, not taken for a fence.
                    match read(self.store.as_ref(), &path).await {
                        Ok(Some(found)) if found == bytes => return Ok(()),
                        Ok(_) => {
                            return Err(WalError::Fenced {
                                detail: format!("{path} was written by another writer"),
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reading back a taken wal key failed; retrying");
                            tokio::time::sleep(retry).await;
                            retry = (retry * 2).min(Duration::from_secs(5));
                        }
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, key = %path, "wal PUT failed; retrying");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

async fn run_writer(shared: Arc<Shared>) {
    let interval = Duration::from_millis(shared.config.flush_interval_ms);
    let mut seq = 0u64;
    loop {
        // Wait until something is queued and it is time to PUT (or the WAL closes).
        let batch = loop {
            let notified = shared.wake.notified();
            let deadline = {
                let mut q = shared.queue();
                let due = q.buf.len() as u64 >= shared.config.max_bytes
                    || q.closed
                    || q.oldest.is_some_and(|t| t.elapsed() >= interval);
                if due && !q.waiters.is_empty() {
                    let first = q.first;
                    q.first = q.next;
                    q.oldest = None;
                    break Some((
                        first,
                        std::mem::take(&mut q.buf),
                        std::mem::take(&mut q.waiters),
                    ));
                }
                if q.closed {
                    break None;
                }
                q.oldest.map(|t| t + interval)
            };
            match deadline {
                Some(at) => {
                    let _ = tokio::time::timeout_at(at, notified).await;
                }
                None => notified.await,
            }
        };
        let Some((first, buf, waiters)) = batch else {
            return;
        };
        let count = u32::try_from(waiters.len()).unwrap_or(u32::MAX);
        let bytes = encode_object(first, count, &buf);
        let result = shared.put(seq, bytes).await;
        match result {
            Ok(()) => {
                let last = first + u64::from(count) - 1;
                let path = key(shared.config.broker_id, shared.epoch, seq);
                shared.objects().insert((shared.epoch, seq), (path, last));
                shared
                    .records
                    .fetch_add(u64::from(count), Ordering::Relaxed);
                shared.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                seq += 1;
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "object wal fenced; acknowledging nothing more");
                let rest = {
                    let mut q = shared.queue();
                    q.failed = Some(e.clone());
                    std::mem::take(&mut q.waiters)
                };
                for w in waiters.into_iter().chain(rest) {
                    let _ = w.send(Err(e.clone()));
                }
                return;
            }
        }
    }
}

#[async_trait]
impl Wal for ObjectWal {
    fn append(&self, record: WalRecord) -> Result<PendingAppend, WalError> {
        let size = record.encoded_len() as u64;
        if size > self.shared.config.max_record_bytes {
            return Err(WalError::RecordTooLarge {
                size,
                max: self.shared.config.max_record_bytes,
            });
        }
        let (tx, rx) = oneshot::channel();
        let position = {
            let mut q = self.shared.queue();
            if let Some(e) = &q.failed {
                return Err(e.clone());
            }
            if q.closed {
                return Err(WalError::Closed);
            }
            record::encode(&record, &mut q.buf);
            q.waiters.push(tx);
            q.oldest.get_or_insert_with(tokio::time::Instant::now);
            let position = WalPosition(q.next);
            q.next += 1;
            position
        };
        self.shared.wake.notify_one();
        Ok(PendingAppend::new(position, rx))
    }

    fn next_position(&self) -> WalPosition {
        WalPosition(self.shared.queue().next)
    }

    async fn trim(&self, before: WalPosition) -> Result<(), WalError> {
        let doomed: Vec<((u64, u64), Path)> = {
            let objects = self.shared.objects();
            // The newest group commit of this epoch stays: it tells a recoverer where to fence.
            let newest_own = objects
                .keys()
                .rfind(|(e, _)| *e == self.shared.epoch)
                .copied();
            objects
                .iter()
                .filter(|(k, (_, last))| *last < before.0 && Some(**k) != newest_own)
                .map(|(k, (path, _))| (*k, path.clone()))
                .collect()
        };
        for (k, path) in doomed {
            match self.shared.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    self.shared.objects().remove(&k);
                }
                Err(e) => return Err(store_err("delete", &path, e)),
            }
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), WalError> {
        self.shared.queue().closed = true;
        self.shared.wake.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        match &self.shared.queue().failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn stats(&self) -> WalStats {
        WalStats {
            records: self.shared.records.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            syncs: self.shared.puts.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
