//! The webhook dispatcher (DESIGN.md section 8; issues 8 and 9).
//!
//! Planned contents: endpoint configuration in a compacted topic, per-endpoint queues with rate limits and
//! circuit breakers, retry tiers and the dead-letter topic, replay jobs and the admin API. It talks to the
//! broker only through the Kafka protocol, so it never depends on `weir-broker`.
