//! Latency histograms and throughput arithmetic shared by every subcommand.
//!
//! Latencies are recorded in nanoseconds in an HDR histogram (3 significant digits, so a percentile
//! is within 0.1% of the true sample) and summarized in microseconds. Throughput uses decimal
//! megabytes (1 MB = 10^6 bytes), as disk and network vendors do.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram tracks exactly; longer samples are clamped to it.
const LATENCY_NS_MAX: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits kept per sample.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in nanoseconds, 1 ns to 1 hour.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        // The bounds are constants that `new_with_bounds` accepts (low >= 1, high >= 2 * low,
        // digits <= 5); fall back to an auto-resizing histogram rather than panic if that changes.
        let histogram = Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
            .or_else(|_| Histogram::new(SIGNIFICANT_DIGITS))
            .unwrap_or_else(|_| unreachable!("3 significant digits is a valid precision"));
        Self { histogram }
    }

    /// Records one sample; durations beyond an hour count as an hour.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.record_ns(ns);
    }

    /// Records one sample given in nanoseconds (0 counts as 1 ns).
    pub fn record_ns(&mut self, ns: u64) {
        self.histogram
            .saturating_record(ns.clamp(1, LATENCY_NS_MAX));
    }

    /// Adds every sample of `other` (e.g. per-producer histograms into one).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so `add` cannot fail; saturate sample by sample if it does.
        if self.histogram.add(&other.histogram).is_err() {
            for value in other.histogram.iter_recorded() {
                for _ in 0..value.count_at_value() {
                    self.record_ns(value.value_iterated_to());
                }
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// Percentiles in microseconds; `None` when there is no sample.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        let h = &self.histogram;
        Some(LatencySummary {
            samples: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1_000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// Latency percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// Records and bytes moved over an elapsed time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    pub records: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
}

impl Throughput {
    pub fn new(records: u64, bytes: u64, elapsed: Duration) -> Self {
        let elapsed_s = elapsed.as_secs_f64();
        Self {
            records,
            bytes,
            elapsed_s,
            records_per_s: per_second(records as f64, elapsed),
            mb_per_s: mb_per_s(bytes, elapsed),
        }
    }
}

/// `amount / elapsed`, 0 for an empty interval rather than infinity.
/// `p50 X ms, p99 Y ms, max Z ms (n=N)` of `values`, with `decimals` digits ("none" if empty): the
/// summary line of `cluster-bench` and `dispatch-bench`.
pub fn percentiles(mut values: Vec<Duration>, decimals: usize) -> String {
    if values.is_empty() {
        return "none".into();
    }
    values.sort();
    let at = |q: f64| {
        let i = ((values.len() as f64 - 1.0) * q).round() as usize;
        values[i].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.decimals$} ms, p99 {:.decimals$} ms, max {:.decimals$} ms (n={})",
        at(0.5),
        at(0.99),
        at(1.0),
        values.len()
    )
}

pub fn per_second(amount: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { amount / secs } else { 0.0 }
}

/// Decimal megabytes per second.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    per_second(bytes as f64 / 1e6, elapsed)
}

/// `part` as a percentage of `whole`; `None` when `whole` is not positive.
pub fn percent_of(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole * 100.0)
}

/// Parses `250ms`, `10s`, `2m`, `1h` or a bare number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 500ms, 10s, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3_600.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary().expect("samples recorded");
        assert_eq!(s.samples, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(s.p50_us, 500.0), "p50 {}", s.p50_us);
        assert!(close(s.p99_us, 990.0), "p99 {}", s.p99_us);
        assert!(close(s.p999_us, 999.0), "p999 {}", s.p999_us);
        assert!(close(s.max_us, 1000.0), "max {}", s.max_us);
        assert!(close(s.min_us, 1.0), "min {}", s.min_us);
    }

    #[test]
    fn empty_histogram_has_no_summary() {
        assert!(LatencyHistogram::new().summary().is_none());
    }

    #[test]
    fn merge_adds_samples_and_out_of_range_values_saturate() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_secs(10 * 3_600));
        b.record(Duration::ZERO);
        a.merge(&b);
        let s = a.summary().expect("samples recorded");
        assert_eq!(s.samples, 3);
        assert!(s.max_us >= 3_599.0 * 1e6);
        assert!(s.min_us <= 0.001 + f64::EPSILON);
    }

    #[test]
    fn throughput_arithmetic() {
        let t = Throughput::new(2_000, 4_000_000, Duration::from_secs(2));
        assert_eq!(t.records_per_s, 1_000.0);
        assert_eq!(t.mb_per_s, 2.0);
        assert_eq!(Throughput::new(5, 5, Duration::ZERO).records_per_s, 0.0);
        assert_eq!(percent_of(25.0, 200.0), Some(12.5));
        assert_eq!(percent_of(1.0, 0.0), None);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10parsecs").is_err());
    }
}
