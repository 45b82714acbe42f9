//! The aborted-transaction index of a partition, kept in the object store next to its data.
//!
//! A read_committed consumer must learn of every aborted transaction whose records it reads, however
//! old (a replay from the start of a partition). The stream's tail, which the producer state is
//! rebuilt from, does not reach that far, and reading a whole partition at every move would defeat
//! the point of moving without copying. So each abort that wrote to a partition is also one small
//! object, `txn-index/<stream>/<marker offset>` (24 bytes: producer id, first offset, marker offset),
//! written once the marker is durable; the partition's owner lists the prefix once per opening. An
//! abort whose object a crash cut short is in the tail the owner reads anyway, and is written then.
//! Aborts are rare next to appends: one PUT each.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use weir_common::StreamId;

use crate::producers::Aborted;

fn prefix(stream: StreamId) -> Path {
    Path::from(format!("txn-index/{}", stream.get()))
}

fn path(stream: StreamId, last_offset: i64) -> Path {
    Path::from(format!("txn-index/{}/{last_offset:020}", stream.get()))
}

fn encode(a: &Aborted) -> Bytes {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&a.producer_id.to_be_bytes());
    out.extend_from_slice(&a.first_offset.to_be_bytes());
    out.extend_from_slice(&a.last_offset.to_be_bytes());
    Bytes::from(out)
}

fn decode(bytes: &[u8]) -> Option<Aborted> {
    let field = |i: usize| -> Option<i64> {
        Some(i64::from_be_bytes(
            bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    Some(Aborted {
        producer_id: field(0)?,
        first_offset: field(1)?,
        last_offset: field(2)?,
    })
}

/// Records an aborted transaction of the stream.
pub async fn put(
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    aborted: &Aborted,
) -> object_store::Result<()> {
    store
        .put(
            &path(stream, aborted.last_offset),
            PutPayload::from_bytes(encode(aborted)),
        )
        .await
        .map(|_| ())
}

/// Every aborted transaction recorded for the stream, by marker offset.
pub async fn list(
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
) -> object_store::Result<Vec<Aborted>> {
    let metas: Vec<_> = store.list(Some(&prefix(stream))).try_collect().await?;
    // Sixteen GETs at a time.
    let read: Vec<(Path, Bytes)> = futures::stream::iter(metas)
        .map(|meta| async move {
            let bytes = store.get(&meta.location).await?.bytes().await?;
            Ok::<_, object_store::Error>((meta.location, bytes))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let mut out = Vec::with_capacity(read.len());
    for (location, bytes) in read {
        match decode(&bytes) {
            Some(a) => out.push(a),
            None => {
                tracing::warn!(object = %location, "unreadable aborted-transaction entry skipped")
            }
        }
    }
    out.sort_by_key(|a| a.last_offset);
    Ok(out)
}

/// Deletes the entries of a stream whose markers lie below `start` (trimmed away).
pub async fn trim(
    store: &Arc<dyn ObjectStore>,
    stream: StreamId,
    start: i64,
) -> object_store::Result<usize> {
    let metas: Vec<_> = store.list(Some(&prefix(stream))).try_collect().await?;
    let mut deleted = 0;
    for meta in metas {
        let below = meta
            .location
            .filename()
            .and_then(|n| n.parse::<i64>().ok())
            .is_some_and(|last| last < start);
        if below {
            store.delete(&meta.location).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of an entry in the bucket: changing them breaks every stored index.
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
            path(StreamId(9), 258).as_ref(),
            "txn-index/9/00000000000000000258"
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
        put(
            &store,
            StreamId(8),
            &Aborted {
                producer_id: 1,
                first_offset: 1,
                last_offset: 2,
            },
        )
        .await
        .unwrap();
        let all = list(&store, s).await.unwrap();
        assert_eq!(
            all.iter().map(|a| a.last_offset).collect::<Vec<_>>(),
            [20, 35, 50]
        );
        assert_eq!(all[2].first_offset, 5);
        assert_eq!(trim(&store, s, 36).await.unwrap(), 2);
        assert_eq!(list(&store, s).await.unwrap().len(), 1);
        assert_eq!(list(&store, StreamId(8)).await.unwrap().len(), 1);
    }
}
