//! The Kafka front end (DESIGN.md section 7; issue 3 onwards).
//!
//! Planned contents: the connection loop and codec (`kafka-protocol`), one handler per API, the partition
//! actors that own offset assignment over `weir_storage` streams, group and transaction coordinators,
//! authentication, and the `weir` binary (`weir serve`, `weir broker`, `weir admin`).
