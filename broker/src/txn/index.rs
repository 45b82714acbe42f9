//! What a partition's transactions leave in the object store next to its data: the aborted
//! transactions, and checkpoints of long-open ones.
//!
//! A read_committed consumer must learn of every aborted transaction whose records it reads, however
//! old (a replay from the start of a partition). The stream's tail, which the producer state is
//! rebuilt from, does not reach that far, and reading a whole partition at every move would defeat
//! the point of moving without copying. So each abort that wrote to a partition is also one small
//! object, `txn-index/<stream>/aborted-<marker offset>` (24 bytes: producer id, first offset,
//! marker offset), written once the marker is durable. An abort whose object a crash cut short is in
//! the tail the owner reads anyway, and is written then. Aborts are rare next to appends: one PUT each.
//!
//! A transaction still open whose first record is about to leave that tail (a long transaction on a
//! busy partition) would be missed by the next owner, which would then serve its records to
//! read_committed consumers. While one exists, the owner keeps a checkpoint of the open
//! transactions, `txn-index/<stream>/open-<offset>` (the offset it is valid at, then producer id and
//! first offset of each), refreshed every few seconds and deleted once none is at risk; the next owner
//! seeds its state with it and reads the stream from there.
//!
//! The partition's owner lists the prefix once per opening.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use weir_common::StreamId;

use crate::producers::Aborted;

const ABORTED: &str = "aborted-";
const OPEN: &str = "open-";

fn prefix(stream: StreamId) -> Path {
    Path::from(format!("txn-index/{}", stream.get()))
}

fn path(stream: StreamId, kind: &str, offset: i64) -> Path {
    Path::from(format!("txn-index/{}/{kind}{offset:020}", stream.get()))
}

/// The kind and offset an entry's name gives.
fn parse(location: &Path) -> Option<(&'static str, i64)> {
    let name = location.filename()?;
    [ABORTED, OPEN]
        .into_iter()
        .find_map(|kind| Some((kind, name.strip_prefix(kind)?.parse().ok()?)))
}

fn encode(a: &Aborted) -> Bytes {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&a.producer_id.to_be_bytes());
    out.extend_from_slice(&a.first_offset.to_be_bytes());
    out.extend_from_slice(&a.last_offset.to_be_bytes());
    Bytes::from(out)
}

fn i64s(bytes: &[u8]) -> impl Iterator<Item = i64> + '_ {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().unwrap_or([0; 8])))
}

fn decode(bytes: &[u8]) -> Option<Aborted> {
    if bytes.len() != 24 {
        return None;
    }
    let mut fields = i64s(bytes);
    Some(Aborted {
        producer_id: fields.next()?,
        first_offset: fields.next()?,
        last_offset: fields.next()?,
    })
}

/// The open transactions of a partition as of an offset: every transaction open there, by
/// producer id and first offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenCheckpoint {
    pub at: i64,
    pub open: Vec<(i64, i64)>,
}

fn encode_open(c: &OpenCheckpoint) -> Bytes {
    let mut out = Vec::with_capacity(8 + 16 * c.open.len());
    out.extend_from_slice(&c.at.to_be_bytes());
    for (producer_id, first) in &c.open {
        out.extend_from_slice(&producer_id.to_be_bytes());
        out.extend_from_slice(&first.to_be_bytes());
    }
    Bytes::from(out)
}

fn decode_open(bytes: &[u8]) -> Option<OpenCheckpoint> {
    if bytes.len() % 16 != 8 {
        return None;
    }
    let mut fields = i64s(bytes);
    let at = fields.next()?;
    let rest: Vec<i64> = fields.collect();
    Some(OpenCheckpoint {
        at,
        open: rest.chunks_exact(2).map(|p| (p[0], p[1])).collect(),
    })
}

/// What a partition's index holds.
#[derive(Debug, Default)]
pub struct Listed {
    /// Its aborted transactions, by marker offset.
    pub aborted: Vec<Aborted>,
    /// Its latest checkpoint of open transactions, if one is kept.
    pub open: Option<OpenCheckpoint>,
}

/// Records an aborted transaction of the stream.
pub async fn put(
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    aborted: &Aborted,
) -> object_store::Result<()> {
    let at = path(stream, ABORTED, aborted.last_offset);
    store
        .put(&at, PutPayload::from_bytes(encode(aborted)))
        .await
        .map(|_| ())
}

/// Writes a checkpoint of the stream's open transactions, then deletes the older ones.
pub async fn put_open(
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    checkpoint: &OpenCheckpoint,
) -> object_store::Result<()> {
    let at = path(stream, OPEN, checkpoint.at);
    store
        .put(&at, PutPayload::from_bytes(encode_open(checkpoint)))
        .await?;
    delete_open(store, stream, Some(checkpoint.at)).await
}

/// Deletes the stream's checkpoints of open transactions (all but the one at `keep`).
pub async fn delete_open(
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    keep: Option<i64>,
) -> object_store::Result<()> {
    let metas: Vec<_> = store.list(Some(&prefix(stream))).try_collect().await?;
    for meta in metas {
        if let Some((OPEN, at)) = parse(&meta.location)
            && Some(at) != keep
        {
            store.delete(&meta.location).await?;
        }
    }
    Ok(())
}

/// Everything recorded for the stream: the aborted transactions and the latest checkpoint of open
/// ones (entries are read sixteen at a time).
pub async fn list(store: &Arc<dyn ObjectStore>, stream: StreamId) -> object_store::Result<Listed> {
    let metas: Vec<_> = store.list(Some(&prefix(stream))).try_collect().await?;
    let latest_open = metas
        .iter()
        .filter_map(|m| match parse(&m.location) {
            Some((OPEN, at)) => Some(at),
            _ => None,
        })
        .max();
    let wanted = metas.into_iter().filter(|m| match parse(&m.location) {
        Some((ABORTED, _)) => true,
        Some((_, at)) => Some(at) == latest_open,
        None => false,
    });
    let read: Vec<(Path, Bytes)> = futures::stream::iter(wanted)
        .map(|meta| async move {
            let bytes = store.get(&meta.location).await?.bytes().await?;
            Ok::<_, object_store::Error>((meta.location, bytes))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let mut listed = Listed::default();
    for (location, bytes) in read {
        match parse(&location) {
            Some((ABORTED, _)) => match decode(&bytes) {
                Some(a) => listed.aborted.push(a),
                None => {
                    tracing::warn!(object = %location, "unreadable aborted-transaction entry skipped")
                }
            },
            _ => match decode_open(&bytes) {
                Some(c) => listed.open = Some(c),
                None => {
                    tracing::warn!(object = %location, "unreadable open-transaction checkpoint skipped")
                }
            },
        }
    }
    listed.aborted.sort_by_key(|a| a.last_offset);
    Ok(listed)
}

/// Deletes the aborted-transaction entries of a stream whose markers lie below `start` (trimmed
/// away).
pub async fn trim(
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    start: i64,
) -> object_store::Result<usize> {
    let metas: Vec<_> = store.list(Some(&prefix(stream))).try_collect().await?;
    let mut deleted = 0;
    for meta in metas {
        if let Some((ABORTED, last)) = parse(&meta.location)
            && last < start
        {
            store.delete(&meta.location).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of the entries in the bucket: changing them breaks every stored index.
    #[test]
    fn golden_bytes() {
        let a = Aborted {
            producer_id: 1,
            first_offset: 2,
            last_offset: 258,
        };
        let bytes = encode(&a);
        assert_eq!(
            &bytes[..],
            b"\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\x01\x02"
        );
        assert_eq!(decode(&bytes), Some(a));
        assert_eq!(
            path(StreamId(9), ABORTED, 258).as_ref(),
            "txn-index/9/aborted-00000000000000000258"
        );
        let c = OpenCheckpoint {
            at: 3,
            open: vec![(4, 1)],
        };
        let bytes = encode_open(&c);
        assert_eq!(
            &bytes[..],
            b"\0\0\0\0\0\0\0\x03\0\0\0\0\0\0\0\x04\0\0\0\0\0\0\0\x01"
        );
        assert_eq!(decode_open(&bytes), Some(c));
        assert_eq!(
            path(StreamId(9), OPEN, 3).as_ref(),
            "txn-index/9/open-00000000000000000003"
        );
    }

    #[tokio::test]
    async fn entries_round_trip_and_trim() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let s = StreamId(7);
        for (first, last) in [(10, 20), (30, 35), (5, 50)] {
            let a = Aborted {
                producer_id: first,
                first_offset: first,
                last_offset: last,
            };
            put(&store, s, &a).await.unwrap();
        }
        let other = Aborted {
            producer_id: 1,
            first_offset: 1,
            last_offset: 2,
        };
        put(&store, StreamId(8), &other).await.unwrap();
        for at in [40, 60] {
            let c = OpenCheckpoint {
                at,
                open: vec![(5, at - 1)],
            };
            put_open(&store, s, &c).await.unwrap();
        }
        let listed = list(&store, s).await.unwrap();
        let ends: Vec<i64> = listed.aborted.iter().map(|a| a.last_offset).collect();
        assert_eq!(ends, [20, 35, 50]);
        assert_eq!(listed.aborted[2].first_offset, 5);
        assert_eq!(
            listed.open,
            Some(OpenCheckpoint {
                at: 60,
                open: vec![(5, 59)]
            }),
            "the latest checkpoint; the older one deleted"
        );
        assert_eq!(trim(&store, s, 36).await.unwrap(), 2);
        assert_eq!(list(&store, s).await.unwrap().aborted.len(), 1);
        delete_open(&store, s, None).await.unwrap();
        assert_eq!(list(&store, s).await.unwrap().open, None);
        assert_eq!(list(&store, StreamId(8)).await.unwrap().aborted.len(), 1);
    }
}
