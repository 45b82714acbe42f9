//! `limits`: this machine's ceilings, measured in the same run as a benchmark so the two can be
//! compared. A broker on one machine cannot move bytes faster than loopback TCP, cannot ack an
//! `acks=all` write faster than one `fdatasync`, and cannot sustain more than the disk's sequential
//! write rate.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::LimitsArgs;
use crate::error::BenchError;
use crate::progress::{Counters, Progress};
use crate::stats::{LatencyHistogram, LatencySummary, mb_per_s};

/// Bytes per `write` in the TCP and sequential-write tests.
const CHUNK_BYTES: usize = 1 << 20;
/// Bytes per timed write in the fdatasync test: one page, a small WAL append.
const SYNC_WRITE_BYTES: usize = 4096;

/// The ceilings of this machine.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsReport {
    /// Directory the disk tests ran in.
    pub dir: PathBuf,
    pub loopback_tcp: ThroughputLimit,
    /// Latency of one 4 KiB `pwrite` + `fdatasync` over already allocated blocks.
    pub fdatasync_4k: LatencySummary,
    /// `write_mib` MiB written in 1 MiB chunks, then one `fdatasync`, timed together.
    pub sequential_write: ThroughputLimit,
}

/// Bytes moved in a time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ThroughputLimit {
    pub bytes: u64,
    pub elapsed_s: f64,
    pub mb_per_s: f64,
}

impl ThroughputLimit {
    fn new(bytes: u64, elapsed: Duration) -> Self {
        Self {
            bytes,
            elapsed_s: elapsed.as_secs_f64(),
            mb_per_s: mb_per_s(bytes, elapsed),
        }
    }
}

/// Runs the three measurements one after the other.
pub fn run(args: &LimitsArgs, show_progress: bool) -> Result<LimitsReport, BenchError> {
    if args.fsync_samples == 0 || args.write_mib == 0 {
        return Err(BenchError::Usage(
            "--fsync-samples and --write-mib must be at least 1".to_owned(),
        ));
    }
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| BenchError::io(format!("cannot use --dir {}", args.dir.display()), e))?;

    let counters = Arc::new(Counters::default());
    let progress = Progress::start("limits: loopback tcp", Arc::clone(&counters), show_progress);
    let loopback_tcp = loopback_tcp(args.tcp_duration, &counters)?;
    progress.finish();

    let counters = Arc::new(Counters::default());
    let progress = Progress::start("limits: fdatasync", Arc::clone(&counters), show_progress);
    let fdatasync_4k = fdatasync_latency(&dir, args.fsync_samples, &counters)?;
    progress.finish();

    let counters = Arc::new(Counters::default());
    let progress = Progress::start(
        "limits: sequential write",
        Arc::clone(&counters),
        show_progress,
    );
    let sequential_write = sequential_write(&dir, args.write_mib, &counters)?;
    progress.finish();

    Ok(LimitsReport {
        dir,
        loopback_tcp,
        fdatasync_4k,
        sequential_write,
    })
}

/// One sender (this thread) and one receiver thread over a 127.0.0.1 connection, 1 MiB writes.
/// The rate is the receiver's: from its first byte to the sender's end of stream.
fn loopback_tcp(duration: Duration, counters: &Counters) -> Result<ThroughputLimit, BenchError> {
    let tcp_error = |what: &str, e| BenchError::io(format!("loopback tcp: {what}"), e);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| tcp_error("bind", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| tcp_error("local address", e))?;
    let receiver = std::thread::Builder::new()
        .name("weir-bench-tcp-receiver".to_owned())
        .spawn(move || receive_all(&listener))
        .map_err(|e| tcp_error("spawn receiver", e))?;

    let mut stream = TcpStream::connect(addr).map_err(|e| tcp_error("connect", e))?;
    let chunk = vec![0xa5u8; CHUNK_BYTES];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream
            .write_all(&chunk)
            .map_err(|e| tcp_error("write", e))?;
        counters.add(1, CHUNK_BYTES as u64);
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| tcp_error("shutdown", e))?;
    let (bytes, elapsed) = receiver
        .join()
        .map_err(|_| {
            tcp_error(
                "receiver",
                std::io::Error::other("receiver thread panicked"),
            )
        })?
        .map_err(|e| tcp_error("read", e))?;
    Ok(ThroughputLimit::new(bytes, elapsed))
}

fn receive_all(listener: &TcpListener) -> std::io::Result<(u64, Duration)> {
    let (mut stream, _) = listener.accept()?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut bytes = 0u64;
    let mut first_byte_at = None;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first_byte_at.get_or_insert_with(Instant::now);
        bytes += n as u64;
    }
    let elapsed = first_byte_at.map_or(Duration::ZERO, |at| at.elapsed());
    Ok((bytes, elapsed))
}

/// Times `samples` pairs of a 4 KiB `pwrite` and `fdatasync`. The file is written with zeros and
/// synced first, so the timed writes overwrite allocated blocks as a preallocated WAL segment does
/// (no file-size metadata to flush).
fn fdatasync_latency(
    dir: &Path,
    samples: u32,
    counters: &Counters,
) -> Result<LatencySummary, BenchError> {
    let disk_error =
        |what: &str, e| BenchError::io(format!("fdatasync test in {}: {what}", dir.display()), e);
    let file = tempfile::tempfile_in(dir).map_err(|e| disk_error("create file", e))?;
    let total = u64::from(samples) * SYNC_WRITE_BYTES as u64;
    fill_zeros(&file, total).map_err(|e| disk_error("preallocate", e))?;

    let block = vec![0x5au8; SYNC_WRITE_BYTES];
    let mut histogram = LatencyHistogram::new();
    for i in 0..u64::from(samples) {
        let start = Instant::now();
        file.write_all_at(&block, i * SYNC_WRITE_BYTES as u64)
            .map_err(|e| disk_error("write", e))?;
        file.sync_data().map_err(|e| disk_error("fdatasync", e))?;
        histogram.record(start.elapsed());
        counters.add(1, SYNC_WRITE_BYTES as u64);
    }
    histogram
        .summary()
        .ok_or_else(|| BenchError::Usage("--fsync-samples must be at least 1".to_owned()))
}

fn fill_zeros(file: &File, bytes: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; CHUNK_BYTES];
    let mut offset = 0u64;
    while offset < bytes {
        let len = (bytes - offset).min(CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..len], offset)?;
        offset += len as u64;
    }
    file.sync_all()
}

/// Writes `mib` MiB sequentially in 1 MiB chunks to a new file and syncs it, timing both.
fn sequential_write(
    dir: &Path,
    mib: u32,
    counters: &Counters,
) -> Result<ThroughputLimit, BenchError> {
    let disk_error =
        |what: &str, e| BenchError::io(format!("write test in {}: {what}", dir.display()), e);
    let mut file = tempfile::tempfile_in(dir).map_err(|e| disk_error("create file", e))?;
    let chunk = vec![0x5au8; CHUNK_BYTES];
    let start = Instant::now();
    for _ in 0..mib {
        file.write_all(&chunk).map_err(|e| disk_error("write", e))?;
        counters.add(1, CHUNK_BYTES as u64);
    }
    file.sync_data().map_err(|e| disk_error("fdatasync", e))?;
    Ok(ThroughputLimit::new(
        u64::from(mib) * CHUNK_BYTES as u64,
        start.elapsed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_run_with_tiny_sizes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = LimitsArgs {
            dir: dir.path().to_path_buf(),
            tcp_duration: Duration::from_millis(50),
            fsync_samples: 10,
            write_mib: 2,
        };
        let report = run(&args, false).expect("limits run");
        assert!(report.loopback_tcp.bytes >= CHUNK_BYTES as u64);
        assert_eq!(report.fdatasync_4k.samples, 10);
        assert!(report.fdatasync_4k.p50_us > 0.0);
        assert_eq!(report.sequential_write.bytes, 2 * CHUNK_BYTES as u64);
        assert!(report.sequential_write.mb_per_s > 0.0);
    }

    #[test]
    fn missing_dir_is_a_clear_error() {
        let args = LimitsArgs {
            dir: PathBuf::from("/nonexistent/weir-bench"),
            tcp_duration: Duration::from_millis(10),
            fsync_samples: 1,
            write_mib: 1,
        };
        let err = run(&args, false).expect_err("missing dir");
        assert!(err.to_string().contains("/nonexistent/weir-bench"), "{err}");
    }
}
