use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::limits::ThroughputLimit;
use crate::produce::{ProduceReport, ProduceSettings, ProducerTuning};
use crate::stats::{LatencyHistogram, Throughput};

fn latency(us: &[u64]) -> LatencySummary {
    let mut h = LatencyHistogram::new();
    for &v in us {
        h.record(Duration::from_micros(v));
    }
    h.summary().expect("samples")
}

fn limits() -> LimitsReport {
    let ceiling = |mb: f64| ThroughputLimit {
        bytes: 1 << 20,
        elapsed_s: 1.0,
        mb_per_s: mb,
    };
    LimitsReport {
        dir: PathBuf::from("/data"),
        loopback_tcp: ceiling(1_000.0),
        fdatasync_4k: latency(&[100; 10]),
        sequential_write: ceiling(500.0),
    }
}

fn produce_report() -> ProduceReport {
    ProduceReport {
        settings: ProduceSettings {
            bootstrap: "127.0.0.1:9092".to_owned(),
            topic: "t".to_owned(),
            partitions: 3,
            record_size: 1000,
            tuning: ProducerTuning {
                acks: "all".to_owned(),
                compression: "none".to_owned(),
                linger_ms: 7,
                batch_size: 1_000_000,
            },
            producers: 1,
            rate: 0,
            count: Some(100_000),
            duration_s: None,
            overrides: vec!["linger.ms=7".to_owned()],
            transaction_records: None,
        },
        sent: 100_000,
        failed: 0,
        unacked: 0,
        first_error: None,
        throughput: Throughput::new(100_000, 100_000_000, Duration::from_secs(2)),
        latency: Some(latency(&[500, 1_000, 2_000])),
    }
}

#[test]
fn relates_results_to_the_limits() {
    let report = Report::new(BenchResult::Produce(produce_report()), Some(limits()));
    let vs = report.vs_limits.expect("limits measured");
    // 50 MB/s of a 1000 MB/s loopback; a 2 ms p99 against a 100 µs fdatasync p99.
    assert_eq!(vs.mb_per_s_pct_of_loopback_tcp, Some(5.0));
    let p99_ratio = vs.p99_over_fdatasync_p99.expect("ratio");
    assert!((p99_ratio - 20.0).abs() < 0.1, "{p99_ratio}");

    let table = report.render();
    assert!(table.contains("5.0% of loopback TCP"), "{table}");
    assert!(table.contains("x fdatasync p99"), "{table}");
    assert!(table.contains("limits of this machine"), "{table}");
    assert!(table.contains("linger.ms=7"), "{table}");
}

#[test]
fn json_report_is_one_tagged_object() {
    let report = Report::new(BenchResult::Produce(produce_report()), None);
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).expect("serializes")).expect("parses");
    assert_eq!(json["command"], "produce");
    assert_eq!(json["tool"], "weir-bench");
    assert_eq!(json["throughput"]["mb_per_s"], 50.0);
    assert!(json.get("limits").is_none());
    assert!(json["latency"]["p99_us"].as_f64().is_some());

    let limits_only = Report::new(BenchResult::Limits, Some(limits()));
    let json = serde_json::to_value(&limits_only).expect("serializes");
    assert_eq!(json["command"], "limits");
    assert_eq!(json["limits"]["loopback_tcp"]["mb_per_s"], 1_000.0);
    assert!(json.get("vs_limits").is_none());
}

#[test]
fn problems_name_failed_records() {
    let mut failed = produce_report();
    failed.failed = 3;
    failed.first_error = Some("Broker: Request timed out".to_owned());
    let report = Report::new(BenchResult::Produce(failed), None);
    let problems = report.problems();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("3 records failed: Broker: Request timed out"));
}

#[test]
fn table_columns_line_up_and_units_scale() {
    let mut section = Section::new("title");
    section
        .row("a", "1")
        .row_with_note("longer label", "12345", "note");
    let text = section.render();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "title");
    assert_eq!(lines[1], "  a                 1");
    assert_eq!(lines[2], "  longer label  12345  note");
    assert_eq!(format_us(12.34), "12.3 µs");
    assert_eq!(format_us(1_500.0), "1.50 ms");
    assert_eq!(format_us(2_500_000.0), "2.50 s");
}
