//! WAL append throughput and the fdatasync batching that group commit achieves.
//!
//! `cargo bench -p weir-benches --bench wal_append`
//!
//! Each case runs N appenders, each appending one record and awaiting its durability before the next
//! (the way a partition writer with one in-flight produce per client behaves). Criterion reports
//! appends per second. After each case the WAL's own counters give records per `fdatasync`.
//! `fsync_per_write/1KiB` is the baseline: a plain loop of one 1 KiB `pwrite` + `fdatasync` on a
//! zero-filled file of the same disk, i.e. what the WAL would cost without group commit.
//! `fsync_per_write/{16,64}KiB` give the cost of one sync of a whole group, which bounds the gain.
//!
//! The WAL directory is a temporary directory under `WEIR_BENCH_DIR` (default: `target/`), so the
//! figures are those of the disk holding the build.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir_common::{Epoch, Offset, StreamId};
use weir_wal::{FileWal, FileWalConfig, Preallocate, Wal, WalRecord, WalStats};

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("WEIR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::create_dir_all(&base).expect("bench dir");
    base
}

/// The WAL settings; `WEIR_BENCH_PREALLOCATE=none|reserve|zero`, `WEIR_BENCH_SEGMENT_MIB` and
/// `WEIR_BENCH_GROUP_COMMIT_WAIT_US` override the defaults for comparisons.
fn wal_config() -> FileWalConfig {
    let preallocate = match std::env::var("WEIR_BENCH_PREALLOCATE").as_deref() {
        Ok("none") => Preallocate::None,
        Ok("reserve") => Preallocate::Reserve,
        _ => Preallocate::Zero,
    };
    let segment_bytes = std::env::var("WEIR_BENCH_SEGMENT_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(FileWalConfig::default().segment_bytes, |mib| mib << 20);
    let group_commit_wait_us = std::env::var("WEIR_BENCH_GROUP_COMMIT_WAIT_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    FileWalConfig {
        preallocate,
        segment_bytes,
        group_commit_wait_us,
        ..FileWalConfig::default()
    }
}

fn record(stream: u64, payload: &Bytes) -> WalRecord {
    WalRecord {
        stream_id: StreamId(stream),
        epoch: Epoch(1),
        base_offset: Offset(0),
        count: 1,
        payload: payload.clone(),
    }
}

/// `iters` appends spread over `appenders` tasks; returns the elapsed time.
async fn run(wal: &Arc<FileWal>, appenders: u64, iters: u64, payload: &Bytes) -> Duration {
    let per_task = iters.div_ceil(appenders);
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|t| {
            let wal = wal.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    wal.append(record(t, &payload))
                        .expect("queued")
                        .await
                        .expect("durable");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender");
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (per_task * appenders) as f64)
}

fn wal_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("wal_append");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for record_bytes in [1024usize, 64 * 1024] {
        for appenders in [1u64, 64] {
            let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
            let (wal, _) = FileWal::open(dir.path(), wal_config()).expect("open wal");
            let wal = Arc::new(wal);
            let payload = Bytes::from(vec![0x5a; record_bytes]);
            let before = wal.stats();
            group.throughput(Throughput::Elements(1));
            let id = BenchmarkId::new(
                format!("{}KiB", record_bytes / 1024),
                format!("{appenders}_appenders"),
            );
            group.bench_function(id, |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| run(&wal, appenders, iters, &payload));
            });
            report_batching(record_bytes, appenders, before, wal.stats());
            rt.block_on(wal.close()).expect("close");
        }
    }
    group.finish();
}

fn report_batching(record_bytes: usize, appenders: u64, before: WalStats, after: WalStats) {
    let records = after.records - before.records;
    let syncs = (after.syncs - before.syncs).max(1);
    if records == 0 {
        return; // filtered out
    }
    println!(
        "wal_append/{}KiB/{appenders}_appenders: {records} records, {syncs} fdatasyncs, {:.1} records per fdatasync",
        record_bytes / 1024,
        records as f64 / syncs as f64
    );
}

/// A 256 MiB file written with zeros and synced, like a WAL segment prepared with
/// `Preallocate::Zero`, so that the baseline pays what the WAL pays per sync and no more.
fn zeroed_file(dir: &std::path::Path) -> File {
    let file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("baseline"))
        .expect("open");
    let zeros = vec![0u8; 1 << 20];
    for i in 0..256u64 {
        file.write_all_at(&zeros, i << 20).expect("zero-fill");
    }
    file.sync_all().expect("sync");
    file
}

/// `pwrite` + `fdatasync` of one buffer of each size, in a loop: one record per sync (the baseline
/// group commit is measured against, at 1 KiB), and what a sync of a whole group of 16 or 64 such
/// records costs, which bounds what group commit can gain on this disk.
fn fsync_per_write(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
    let file = zeroed_file(dir.path());
    let mut group = c.benchmark_group("fsync_per_write");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for kib in [1usize, 16, 64] {
        let payload = vec![0x5a; kib * 1024];
        let mut at = 0u64;
        group.bench_function(format!("{kib}KiB"), |b| {
            b.iter(|| {
                file.write_all_at(&payload, at).expect("write");
                file.sync_data().expect("fdatasync");
                at = (at + payload.len() as u64) % (255 << 20);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fsync_per_write, wal_append);
criterion_main!(benches);
