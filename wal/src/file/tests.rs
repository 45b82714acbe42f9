use std::fs;
use std::path::Path;

use bytes::Bytes;
use weir_common::{Epoch, Offset, StreamId};

use super::*;
use crate::{CorruptReason, record};

fn rec(stream: u64, base: u64, payload: &str) -> WalRecord {
    WalRecord {
        stream_id: StreamId(stream),
        epoch: Epoch(1),
        base_offset: Offset(base),
        count: 1,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

fn small() -> FileWalConfig {
    FileWalConfig {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        ..FileWalConfig::default()
    }
}

async fn append_all(wal: &FileWal, records: impl IntoIterator<Item = WalRecord>) {
    let pending: Vec<_> = records
        .into_iter()
        .map(|r| wal.append(r).unwrap())
        .collect();
    for p in pending {
        p.await.unwrap();
    }
}

fn payloads(recovery: &Recovery) -> Vec<String> {
    recovery
        .records
        .iter()
        .map(|r| String::from_utf8(r.record.payload.to_vec()).unwrap())
        .collect()
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[tokio::test]
async fn records_come_back_in_order_across_segments_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, recovery) = FileWal::open(dir.path(), small()).unwrap();
    assert!(recovery.records.is_empty() && recovery.torn_tail.is_none());
    let first: Vec<_> = (0..100)
        .map(|i| rec(i % 3, i, &format!("r{i}-{}", "x".repeat(60))))
        .collect();
    append_all(&wal, first.clone()).await;
    assert_eq!(wal.next_position(), WalPosition(100));
    wal.close().await.unwrap();
    assert!(
        segment_files(dir.path()).len() > 2,
        "small segments must roll"
    );

    let (wal, recovery) = FileWal::open(dir.path(), small()).unwrap();
    assert!(recovery.torn_tail.is_none());
    let got: Vec<_> = recovery.records.iter().map(|r| r.record.clone()).collect();
    assert_eq!(got, first);
    for (i, r) in recovery.records.iter().enumerate() {
        assert_eq!(r.position, WalPosition(i as u64));
    }
    assert_eq!(wal.next_position(), WalPosition(100));
    append_all(&wal, [rec(9, 0, "after restart")]).await;
    wal.close().await.unwrap();

    let (_wal, recovery) = FileWal::open(dir.path(), small()).unwrap();
    assert_eq!(recovery.records.len(), 101);
    assert_eq!(recovery.records[100].position, WalPosition(100));
    assert_eq!(payloads(&recovery)[100], "after restart");
}

#[tokio::test]
async fn concurrent_appends_share_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    let wal = Arc::new(wal);
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                wal.append(rec(t, i, "payload")).unwrap().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.records, 640);
    // 32 appenders, each waiting for its own record: with group commit far fewer syncs than records.
    assert!(stats.syncs < stats.records / 2, "no batching: {stats:?}");
}

/// Finds the byte offset of every record in a segment file.
fn record_offsets(path: &Path) -> Vec<u64> {
    let bytes = Bytes::from(fs::read(path).unwrap());
    let mut at = segment::HEADER_LEN as usize;
    let mut offsets = Vec::new();
    while let Ok(record::Decoded::Record(_, used)) = record::decode(&bytes, at, 1 << 20) {
        offsets.push(at as u64);
        at += used;
    }
    offsets
}

#[tokio::test]
async fn torn_last_write_recovers_everything_before_and_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    append_all(&wal, (0..10).map(|i| rec(1, i, &format!("acked-{i}")))).await;
    // The last write: ten records in one group commit.
    append_all(&wal, (10..20).map(|i| rec(1, i, &format!("torn-{i}")))).await;
    wal.close().await.unwrap();

    // A crash tore the write: record 13's bytes never reached the disk, the ones after it did.
    let path = segment_files(dir.path()).pop().unwrap();
    let offsets = record_offsets(&path);
    assert_eq!(offsets.len(), 20);
    let mut bytes = fs::read(&path).unwrap();
    let torn_at = offsets[13] as usize;
    bytes[torn_at + 20..torn_at + 30].fill(0);
    fs::write(&path, &bytes).unwrap();

    let (wal, recovery) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    let torn = recovery.torn_tail.clone().expect("torn tail reported");
    assert_eq!(torn.path, path);
    assert_eq!(torn.file_offset, offsets[13]);
    assert!(matches!(torn.reason, CorruptReason::CrcMismatch { .. }));
    let mut expected: Vec<String> = (0..10).map(|i| format!("acked-{i}")).collect();
    expected.extend((10..13).map(|i| format!("torn-{i}")));
    assert_eq!(payloads(&recovery), expected);

    // New appends continue at position 13 and never meet the old garbage.
    assert_eq!(wal.next_position(), WalPosition(13));
    append_all(&wal, [rec(1, 13, "new-13")]).await;
    wal.close().await.unwrap();
    let (_wal, recovery) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    assert!(recovery.torn_tail.is_none());
    expected.push("new-13".into());
    assert_eq!(payloads(&recovery), expected);
}

#[tokio::test]
async fn truncated_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    append_all(&wal, (0..5).map(|i| rec(1, i, "abcdefgh"))).await;
    wal.close().await.unwrap();
    let path = segment_files(dir.path()).pop().unwrap();
    let offsets = record_offsets(&path);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(offsets[4] + 7).unwrap();

    let (_wal, recovery) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    assert_eq!(recovery.records.len(), 4);
    let torn = recovery.torn_tail.unwrap();
    assert_eq!(torn.file_offset, offsets[4]);
    assert!(matches!(torn.reason, CorruptReason::Truncated { .. }));
}

#[tokio::test]
async fn torn_segment_header_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    append_all(&wal, (0..3).map(|i| rec(1, i, "x"))).await;
    wal.close().await.unwrap();
    // A crash while creating the next segment left its header half written.
    let bad = dir.path().join(segment::file_name(WalPosition(3)));
    fs::write(&bad, [b'W', b'E', b'I', 0, 0]).unwrap();

    let (wal, recovery) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    assert_eq!(recovery.records.len(), 3);
    assert_eq!(recovery.torn_tail.unwrap().file_offset, 0);
    assert_eq!(wal.next_position(), WalPosition(3));
}

#[tokio::test]
async fn damage_before_the_last_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = FileWal::open(dir.path(), small()).unwrap();
    append_all(&wal, (0..60).map(|i| rec(1, i, &"y".repeat(100)))).await;
    wal.close().await.unwrap();
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let victim = &files[0];
    let offsets = record_offsets(victim);
    let mut bytes = fs::read(victim).unwrap();
    bytes[offsets[2] as usize] = 0x77; // wrong magic
    fs::write(victim, &bytes).unwrap();

    let err = FileWal::open(dir.path(), small()).unwrap_err();
    match err {
        WalError::Corrupt {
            path,
            file_offset,
            reason: CorruptReason::BadMagic { .. },
        } => {
            assert_eq!(&path, victim);
            assert_eq!(file_offset, offsets[2]);
        }
        other => panic!("expected a corrupt-record error, got {other}"),
    }
    // The message names the file and the position.
    let text = FileWal::open(dir.path(), small()).unwrap_err().to_string();
    assert!(text.contains(&victim.display().to_string()) && text.contains(&offsets[2].to_string()));
}

#[tokio::test]
async fn wrong_version_in_header_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = FileWal::open(dir.path(), small()).unwrap();
    append_all(&wal, (0..60).map(|i| rec(1, i, &"z".repeat(100)))).await;
    wal.close().await.unwrap();
    let victim = segment_files(dir.path())[0].clone();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[9] = 7;
    let crc = crc32c::crc32c(&bytes[0..28]);
    bytes[28..32].copy_from_slice(&crc.to_be_bytes());
    fs::write(&victim, &bytes).unwrap();
    let err = FileWal::open(dir.path(), small()).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Corrupt {
                reason: CorruptReason::BadVersion { found: 7 },
                file_offset: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn trim_frees_whole_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = FileWal::open(dir.path(), small()).unwrap();
    append_all(&wal, (0..100).map(|i| rec(1, i, &"t".repeat(100)))).await;
    let before = segment::list(dir.path()).unwrap();
    assert!(before.len() >= 4);
    // Trim to the middle of the third segment: the first two go, the third stays.
    let third_first = before[2].0;
    wal.trim(WalPosition(third_first.0 + 1)).await.unwrap();
    let after = segment::list(dir.path()).unwrap();
    assert_eq!(after, before[2..].to_vec());
    wal.close().await.unwrap();

    let (_wal, recovery) = FileWal::open(dir.path(), small()).unwrap();
    assert_eq!(recovery.records[0].position, third_first);
    assert_eq!(recovery.records.last().unwrap().position, WalPosition(99));
}

#[tokio::test]
async fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_wal, _) = FileWal::open(dir.path(), FileWalConfig::default()).unwrap();
    let err = FileWal::open(dir.path(), FileWalConfig::default()).unwrap_err();
    assert!(matches!(err, WalError::Locked { .. }), "{err}");
}

#[tokio::test]
async fn oversized_records_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = FileWal::open(dir.path(), small()).unwrap();
    let err = wal.append(rec(1, 0, &"o".repeat(2000))).unwrap_err();
    assert!(
        matches!(err, WalError::RecordTooLarge { max: 1024, .. }),
        "{err}"
    );
    wal.close().await.unwrap();
    assert!(matches!(
        wal.append(rec(1, 0, "late")),
        Err(WalError::Closed)
    ));

    let bad = FileWalConfig {
        max_record_bytes: 1 << 30,
        ..small()
    };
    let err = FileWal::open(tempfile::tempdir().unwrap().path(), bad).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::InvalidConfig {
                key: "max_record_bytes",
                ..
            }
        ),
        "{err}"
    );
}
