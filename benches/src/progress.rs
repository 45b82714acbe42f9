//! The one-line progress display on stderr, refreshed about once a second while a phase runs.
//!
//! Workers only bump atomic counters; a separate thread reads them, so progress costs the hot path
//! one relaxed atomic add per record. On a terminal the line is redrawn in place; otherwise one
//! line per second is printed, which reads well in CI logs.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters a running phase updates and the progress thread reads.
#[derive(Debug, Default)]
pub struct Counters {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

const REFRESH: Duration = Duration::from_secs(1);

/// A running progress display; [`Progress::finish`] (or drop) stops it and clears the line.
#[derive(Debug)]
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `counters` under `label`; `enabled = false` shows nothing.
    pub fn start(label: &str, counters: Arc<Counters>, enabled: bool) -> Self {
        if !enabled {
            return Self {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let label = label.to_owned();
        let thread = std::thread::Builder::new()
            .name("weir-bench-progress".to_owned())
            .spawn(move || show(&label, &counters, &stopped))
            .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }

    /// A message on its own line between phases (e.g. "measuring fdatasync latency").
    pub fn note(enabled: bool, message: &str) {
        if enabled {
            eprintln!("{message}");
        }
    }

    pub fn finish(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panicking progress thread must not take the benchmark result with it.
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn show(label: &str, counters: &Counters, stopped: &mpsc::Receiver<()>) {
    let terminal = std::io::stderr().is_terminal();
    let start = Instant::now();
    let (mut last_records, mut last_bytes, mut last_at) = (0u64, 0u64, start);
    // Anything but a timeout (a message or the sender dropped) means stop.
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
        let now = Instant::now();
        let records = counters.records.load(Ordering::Relaxed);
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let interval = now - last_at;
        let line = format_line(
            label,
            now - start,
            records,
            crate::stats::per_second((records - last_records.min(records)) as f64, interval),
            crate::stats::mb_per_s(bytes - last_bytes.min(bytes), interval),
            errors,
        );
        (last_records, last_bytes, last_at) = (records, bytes, now);
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the benchmark.
        let _ = if terminal {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if terminal {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}

fn format_line(
    label: &str,
    elapsed: Duration,
    records: u64,
    records_per_s: f64,
    mb_per_s: f64,
    errors: u64,
) -> String {
    let mut line = format!(
        "[{label}] {:>6.1}s {records:>12} records {records_per_s:>11.0} rec/s {mb_per_s:>9.1} MB/s",
        elapsed.as_secs_f64()
    );
    if errors > 0 {
        line.push_str(&format!(" {errors} errors"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_rate_and_errors() {
        let line = format_line("produce", Duration::from_secs(3), 1234, 410.5, 0.42, 2);
        assert!(line.starts_with("[produce]"), "{line}");
        assert!(line.contains("1234 records"), "{line}");
        assert!(
            line.contains("410 rec/s") || line.contains("411 rec/s"),
            "{line}"
        );
        assert!(line.ends_with("2 errors"), "{line}");
    }

    #[test]
    fn disabled_progress_starts_no_thread() {
        let progress = Progress::start("x", Arc::new(Counters::default()), false);
        assert!(progress.thread.is_none());
        progress.finish();
    }
}
