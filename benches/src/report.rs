//! The end-of-run report: one serializable value printed either as a table or as JSON.
//!
//! When `limits` ran in the same invocation, every throughput figure is also given as a percentage
//! of loopback TCP and every p99 latency as a multiple of the fdatasync p99, the two ceilings a
//! single-node broker cannot beat.

use serde::Serialize;

use crate::consume::ConsumeReport;
use crate::e2e::E2eReport;
use crate::limits::LimitsReport;
use crate::produce::ProduceReport;
use crate::stats::{LatencySummary, percent_of};

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    #[serde(flatten)]
    pub result: BenchResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_limits: Option<VsLimits>,
}

/// The subcommand's own figures, tagged with its name (`"command": "produce"`).
#[derive(Debug, Serialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum BenchResult {
    Produce(ProduceReport),
    Consume(ConsumeReport),
    E2e(E2eReport),
    Limits,
}

/// The headline figures relative to the machine's ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VsLimits {
    /// MB/s as a percentage of loopback TCP MB/s.
    pub mb_per_s_pct_of_loopback_tcp: Option<f64>,
    /// Latency p99 divided by the 4 KiB fdatasync p99.
    pub p99_over_fdatasync_p99: Option<f64>,
}

impl Report {
    pub fn new(result: BenchResult, limits: Option<LimitsReport>) -> Self {
        let vs_limits = limits.as_ref().and_then(|l| match &result {
            BenchResult::Limits => None,
            other => {
                let (mb_per_s, latency) = headline(other);
                Some(VsLimits {
                    mb_per_s_pct_of_loopback_tcp: mb_per_s
                        .and_then(|v| percent_of(v, l.loopback_tcp.mb_per_s)),
                    p99_over_fdatasync_p99: latency
                        .and_then(|s| ratio(s.p99_us, l.fdatasync_4k.p99_us)),
                })
            }
        });
        Self {
            tool: "weir-bench",
            version: env!("CARGO_PKG_VERSION"),
            result,
            limits,
            vs_limits,
        }
    }

    /// What went wrong in a run that still produced figures (failed or missing records).
    pub fn problems(&self) -> Vec<String> {
        match &self.result {
            BenchResult::Produce(r) => r.problems(),
            BenchResult::E2e(r) => r.problems(),
            BenchResult::Consume(_) | BenchResult::Limits => Vec::new(),
        }
    }

    /// The human-readable table.
    pub fn render(&self) -> String {
        let limits = self.limits.as_ref();
        let mut sections = match &self.result {
            BenchResult::Produce(r) => vec![r.section(limits)],
            BenchResult::Consume(r) => vec![r.section(limits)],
            BenchResult::E2e(r) => vec![r.section(limits)],
            BenchResult::Limits => Vec::new(),
        };
        if let Some(limits) = limits {
            sections.push(limits_section(limits));
        }
        sections
            .iter()
            .map(Section::render)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The throughput and latency a result is judged by.
fn headline(result: &BenchResult) -> (Option<f64>, Option<LatencySummary>) {
    match result {
        BenchResult::Produce(r) => (Some(r.throughput.mb_per_s), r.latency),
        BenchResult::Consume(r) => (Some(r.throughput.mb_per_s), None),
        BenchResult::E2e(r) => (Some(r.consumed.mb_per_s), r.latency),
        BenchResult::Limits => (None, None),
    }
}

fn ratio(value: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| value / base)
}

/// Values longer than this are printed as they are, not right-aligned with the numbers.
const ALIGNED_VALUE_WIDTH_MAX: usize = 20;

/// A titled block of `label  value  note` rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub value: String,
    pub note: String,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.row_with_note(label, value, "")
    }

    pub fn row_with_note(
        &mut self,
        label: impl Into<String>,
        value: impl Into<String>,
        note: impl Into<String>,
    ) -> &mut Self {
        self.rows.push(Row {
            label: label.into(),
            value: value.into(),
            note: note.into(),
        });
        self
    }

    /// MB/s, with its share of loopback TCP when limits were measured.
    pub fn throughput_rows(
        &mut self,
        records_per_s: f64,
        mb_per_s: f64,
        limits: Option<&LimitsReport>,
    ) -> &mut Self {
        self.row("records/s", format!("{records_per_s:.0}"));
        let note = limits
            .and_then(|l| percent_of(mb_per_s, l.loopback_tcp.mb_per_s))
            .map(|pct| format!("{pct:.1}% of loopback TCP"))
            .unwrap_or_default();
        self.row_with_note("MB/s", format!("{mb_per_s:.2}"), note)
    }

    /// p50/p99/p999/max, with p99 against the fdatasync p99 when limits were measured.
    pub fn latency_rows(
        &mut self,
        name: &str,
        latency: Option<&LatencySummary>,
        limits: Option<&LimitsReport>,
    ) -> &mut Self {
        let Some(s) = latency else {
            return self.row(format!("{name} latency"), "no samples");
        };
        let p99_note = limits
            .and_then(|l| ratio(s.p99_us, l.fdatasync_4k.p99_us))
            .map(|x| format!("{x:.1}x fdatasync p99"))
            .unwrap_or_default();
        self.row(format!("{name} p50"), format_us(s.p50_us))
            .row_with_note(format!("{name} p99"), format_us(s.p99_us), p99_note)
            .row(format!("{name} p999"), format_us(s.p999_us))
            .row(format!("{name} max"), format_us(s.max_us))
    }

    pub fn render(&self) -> String {
        let label_width = self
            .rows
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(0);
        // Long values (settings, error messages) are left out of the alignment, or one of them
        // would push every number far to the right.
        let value_width = self
            .rows
            .iter()
            .map(|r| r.value.chars().count())
            .filter(|&width| width <= ALIGNED_VALUE_WIDTH_MAX)
            .max()
            .unwrap_or(0);
        let mut out = format!("{}\n", self.title);
        for row in &self.rows {
            let line = format!(
                "  {:<label_width$}  {:>value_width$}  {}",
                row.label, row.value, row.note
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn limits_section(limits: &LimitsReport) -> Section {
    let mut section = Section::new(format!(
        "limits of this machine (disk tests in {})",
        limits.dir.display()
    ));
    section
        .row_with_note(
            "loopback TCP MB/s",
            format!("{:.0}", limits.loopback_tcp.mb_per_s),
            "1 sender, 1 receiver, 1 MiB writes",
        )
        .row_with_note(
            "sequential write MB/s",
            format!("{:.0}", limits.sequential_write.mb_per_s),
            format!(
                "{} MiB in 1 MiB writes + fdatasync",
                limits.sequential_write.bytes >> 20
            ),
        )
        .latency_rows("fdatasync 4 KiB", Some(&limits.fdatasync_4k), None);
    section
}

/// A latency given in microseconds, in the unit that keeps it readable.
pub fn format_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests;
