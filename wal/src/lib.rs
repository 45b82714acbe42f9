//! The write-ahead log (WAL) under every Weir broker.
//!
//! A broker writes every appended record batch of every stream it owns into **one** shared WAL before
//! the record is acknowledged; data objects in the object store are written later, in bulk, by the
//! uploader in `weir-storage`, which then trims the WAL. The WAL therefore only has to hold what is not
//! yet in objects, and it is only read back at recovery.
//!
//! This crate owns:
//! - the [`Wal`] trait, whose contract both implementations honour (file now, object store later:
//!   DESIGN.md section 4);
//! - the one on-disk/on-object [record format](record) (magic, version, length, CRC-32C, stream id,
//!   epoch, base offset, offset count, payload), pinned by a golden test;
//! - [`FileWal`]: segmented, preallocated files with group commit (one write and one `fdatasync` for all
//!   appends waiting) and recovery that stops at the first torn or corrupt record and says where;
//! - [`ObjectWal`]: one create-only PUT per group commit in an object store, fenced recovery by any
//!   broker.
//!
//! It depends on no other Weir crate but `weir-common`.

mod error;
pub mod file;
pub mod object;
pub mod record;
mod wal;

pub use error::{CorruptReason, WalError};
pub use file::{FileWal, FileWalConfig, Preallocate};
pub use object::{ObjectWal, ObjectWalConfig};
pub use record::WalRecord;
pub use wal::{PendingAppend, RecoveredRecord, Recovery, TornTail, Wal, WalPosition, WalStats};
