//! Benchmarks live in `benches/benches/`; see BENCHMARKS.md for how to run them.
