//! The metadata log: create-only objects in the object store, plus snapshots.
//!
//! `meta/log/{seq:020}` holds one batch of records; `meta/snapshot/{seq:020}` holds the records that
//! rebuild the state after log object `seq`. Every object is framed as
//! `magic "WEIRMETA" | version u16 | crc32c u32 | prost RecordBatch` (big-endian).
//!
//! Appends use create-only PUTs (`PutMode::Create`): a controller that finds its next sequence number
//! taken has lost leadership to another controller and must stop (DESIGN.md section 6). That is the
//! only arbiter; no consensus library, no database.
//!
//! Log objects are never deleted, snapshots or not: a deposed controller that paused for a while could
//! otherwise re-create a deleted sequence number, succeed, and act on a write nobody will ever read.
//! Snapshots only bound the work of a restart: loading lists the log from the snapshot's sequence on.
//! (Safe deletion needs proof that no older controller can still write, e.g. expired leases; later.)

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use prost::Message;

use crate::ControllerError;
use crate::records::{Record, RecordBatch};
use crate::state::State;

const MAGIC: &[u8; 8] = b"WEIRMETA";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 14;
const LOG_PREFIX: &str = "meta/log";
const SNAPSHOT_PREFIX: &str = "meta/snapshot";

fn key(prefix: &str, seq: u64) -> Path {
    Path::from(format!("{prefix}/{seq:020}"))
}

/// Frames a record batch.
pub fn encode(records: &[Record]) -> Bytes {
    let body = RecordBatch {
        records: records.to_vec(),
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.put_u16(VERSION);
    out.put_u32(crc32c::crc32c(&body));
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Unframes a record batch; `key` names the object in errors.
pub fn decode(bytes: &[u8], key: &str) -> Result<Vec<Record>, ControllerError> {
    let bad = |reason: String| ControllerError::Format {
        key: key.to_string(),
        reason,
    };
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(bad(
            "not a metadata object (wrong magic or too short)".into()
        ));
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(bad(format!("unsupported version {version}")));
    }
    let stored = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    let body = &bytes[HEADER_LEN..];
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(bad(format!(
            "crc mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    RecordBatch::decode(body)
        .map(|b| b.records)
        .map_err(|e| bad(format!("undecodable records: {e}")))
}

/// The log object `seq`'s bytes, or `None` if it does not exist (yet).
pub async fn read_log_object(
    store: &Arc<dyn ObjectStore>,
    seq: u64,
) -> Result<Option<Bytes>, ControllerError> {
    let path = key(LOG_PREFIX, seq);
    match store.get(&path).await {
        Ok(got) => got
            .bytes()
            .await
            .map(Some)
            .map_err(|e| ControllerError::store("get", path.as_ref(), e)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(ControllerError::store("get", path.as_ref(), e)),
    }
}

/// The key of log object `seq`.
pub fn log_key(seq: u64) -> String {
    key(LOG_PREFIX, seq).to_string()
}

/// The writer's end of the metadata log.
#[derive(Debug)]
pub struct MetaLog {
    store: Arc<dyn ObjectStore>,
    next_seq: u64,
    since_snapshot: u64,
    snapshot_every: u64,
}

/// The sequence numbers under `prefix`, sorted; only those above `after` when given.
async fn list_seqs(
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
    after: Option<u64>,
) -> Result<Vec<u64>, ControllerError> {
    let prefix_path = Path::from(prefix);
    let listing = match after {
        Some(seq) => store.list_with_offset(Some(&prefix_path), &key(prefix, seq)),
        None => store.list(Some(&prefix_path)),
    };
    let metas: Vec<_> = listing
        .try_collect()
        .await
        .map_err(|e| ControllerError::store("list", prefix, e))?;
    let mut seqs: Vec<u64> = metas
        .iter()
        .filter_map(|m| m.location.filename()?.parse().ok())
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

async fn read_raw(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Bytes, ControllerError> {
    store
        .get(path)
        .await
        .map_err(|e| ControllerError::store("get", path.as_ref(), e))?
        .bytes()
        .await
        .map_err(|e| ControllerError::store("get", path.as_ref(), e))
}

async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Vec<Record>, ControllerError> {
    let bytes = store
        .get(path)
        .await
        .map_err(|e| ControllerError::store("get", path.as_ref(), e))?
        .bytes()
        .await
        .map_err(|e| ControllerError::store("get", path.as_ref(), e))?;
    decode(&bytes, path.as_ref())
}

impl MetaLog {
    /// Loads the newest snapshot and the log after it; returns the log, ready for appends, and the
    /// state. A snapshot is taken after every `snapshot_every` appends.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        snapshot_every: u64,
    ) -> Result<(MetaLog, State), ControllerError> {
        let mut state = State::default();
        let mut next_seq = 0;
        if let Some(&seq) = list_seqs(&store, SNAPSHOT_PREFIX, None).await?.last() {
            for record in read(&store, &key(SNAPSHOT_PREFIX, seq)).await? {
                state.apply(&record);
            }
            next_seq = seq + 1;
        }
        let mut since_snapshot = 0;
        let after = next_seq.checked_sub(1);
        for seq in list_seqs(&store, LOG_PREFIX, after).await? {
            if seq < next_seq {
                continue; // covered by the snapshot
            }
            if seq != next_seq {
                return Err(ControllerError::Format {
                    key: key(LOG_PREFIX, seq).to_string(),
                    reason: format!("metadata log gap: expected sequence {next_seq}"),
                });
            }
            for record in read(&store, &key(LOG_PREFIX, seq)).await? {
                state.apply(&record);
            }
            next_seq = seq + 1;
            since_snapshot += 1;
        }
        tracing::info!(
            next_seq,
            topics = state.topics.len(),
            streams = state.streams.len(),
            "metadata log loaded"
        );
        let log = MetaLog {
            store,
            next_seq,
            since_snapshot,
            snapshot_every: snapshot_every.max(1),
        };
        Ok((log, state))
    }

    /// Appends a batch as the next log object. Fails with `LostLeadership` if another controller
    /// wrote that sequence number first.
    pub async fn append(&mut self, records: &[Record]) -> Result<Bytes, ControllerError> {
        let path = key(LOG_PREFIX, self.next_seq);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let bytes = encode(records);
        let outcome = match self
            .store
            .put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts)
            .await
        {
            Ok(_) => Ok(()),
            // Taken: by another controller, or by this one when an earlier attempt's answer was lost
            // (a timeout after the PUT landed). Identical bytes mean the latter, or a writer that
            // wrote exactly these records, which leaves the log as this writer meant it either way.
            Err(object_store::Error::AlreadyExists { .. }) => {
                match read_raw(&self.store, &path).await {
                    Ok(existing) if existing == bytes => Ok(()),
                    Ok(_) => Err(ControllerError::LostLeadership { seq: self.next_seq }),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(ControllerError::store("put", path.as_ref(), e)),
        };
        if outcome.is_ok() {
            self.next_seq += 1;
            self.since_snapshot += 1;
        }
        outcome.map(|()| bytes)
    }

    /// The store the log lives in.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The sequence number the next append will use.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether enough appends happened since the last snapshot.
    pub fn snapshot_due(&self) -> bool {
        self.since_snapshot >= self.snapshot_every && self.next_seq > 0
    }

    /// Writes a snapshot of `state`, which must reflect every append so far.
    pub async fn snapshot(&mut self, state: &State) -> Result<(), ControllerError> {
        let seq = self.next_seq - 1;
        let path = key(SNAPSHOT_PREFIX, seq);
        // Overwrite is fine: the state after `seq` is the same whoever writes it.
        self.store
            .put(&path, PutPayload::from_bytes(encode(&state.to_records())))
            .await
            .map_err(|e| ControllerError::store("put", path.as_ref(), e))?;
        self.since_snapshot = 0;
        tracing::info!(seq, "metadata snapshot written");
        Ok(())
    }
}
