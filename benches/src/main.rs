//! The `weir-bench` command; see the library docs and `benches/README.md`.

use std::process::ExitCode;

use clap::Parser;
use weir_benches::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match weir_benches::run(&cli) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("weir-bench: error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if cli.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("weir-bench: error: cannot write the JSON report: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.render());
    }
    // The report is printed either way; failed or missing records still fail the run.
    let problems = report.problems();
    for problem in &problems {
        eprintln!("weir-bench: {problem}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
