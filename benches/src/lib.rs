//! `weir-bench`: a load generator for any Kafka-protocol broker (Weir or Kafka itself), and the
//! Criterion micro-benchmarks in `benches/benches/`.
//!
//! The load generator drives librdkafka (through `rdkafka`), the client most Kafka applications sit
//! on, so its figures are what such applications would see. `limits` measures the machine's own
//! ceilings (loopback TCP, fdatasync, sequential writes) and every subcommand can measure them in
//! the same run with `--with-limits`, so a result is read against what the hardware allows.
//! See `benches/README.md` for the commands.

pub mod cli;
pub mod consume;
pub mod e2e;
pub mod error;
pub mod kafka;
pub mod limits;
pub mod load;
pub mod produce;
pub mod progress;
pub mod report;
pub mod stats;

use cli::{Cli, Command, WithLimits};
use error::BenchError;
use limits::LimitsReport;
use report::{BenchResult, Report};

/// Runs the command line's benchmark and returns its report. The broker is checked (and the topic
/// prepared) before `--with-limits` runs, so an unreachable broker fails fast.
pub fn run(cli: &Cli) -> Result<Report, BenchError> {
    let progress = !cli.quiet;
    let report = match &cli.command {
        Command::Limits(args) => {
            Report::new(BenchResult::Limits, Some(limits::run(args, progress)?))
        }
        Command::Produce(args) => {
            let partitions = produce::prepare(args)?;
            let limits = limits_first(&args.with, progress)?;
            let result = produce::run(args, partitions, progress)?;
            Report::new(BenchResult::Produce(result), limits)
        }
        Command::Consume(args) => {
            let partitions = consume::prepare(args)?;
            let limits = limits_first(&args.with, progress)?;
            let result = consume::run(args, partitions, progress)?;
            Report::new(BenchResult::Consume(result), limits)
        }
        Command::E2e(args) => {
            let partitions = e2e::prepare(args)?;
            let limits = limits_first(&args.with, progress)?;
            let result = e2e::run(args, partitions, progress)?;
            Report::new(BenchResult::E2e(result), limits)
        }
    };
    Ok(report)
}

fn limits_first(with: &WithLimits, progress: bool) -> Result<Option<LimitsReport>, BenchError> {
    with.with_limits
        .then(|| limits::run(&with.limits, progress))
        .transpose()
}
