//! The WAL's one error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why bytes that should hold a WAL record (or a segment header) do not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptReason {
    /// The magic number is neither the record magic nor zero (unwritten space).
    #[error("wrong magic {found:#010x}")]
    BadMagic {
        /// The four bytes found where the magic belongs.
        found: u32,
    },
    /// A format version this build does not understand.
    #[error("unsupported format version {found}")]
    BadVersion {
        /// The version byte found.
        found: u8,
    },
    /// The length field is smaller than the fixed body or larger than the configured maximum.
    #[error("implausible record length {length}")]
    BadLength {
        /// The length field's value.
        length: u32,
    },
    /// The bytes end before the record does.
    #[error("truncated: record needs {needed} bytes, {available} remain")]
    Truncated {
        /// Bytes the record claims.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// The CRC-32C stored does not match the bytes.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The checksum in the record.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// A segment's header names a first position other than its file name says.
    #[error("segment header says first position {in_header}, file name says {in_name}")]
    PositionMismatch {
        /// The first position in the header.
        in_header: u64,
        /// The first position in the file name.
        in_name: u64,
    },
    /// Consecutive segments leave a gap or overlap in positions.
    #[error("segment starts at position {found}, the previous one ended at {expected}")]
    PositionGap {
        /// The position the previous segment ended at.
        expected: u64,
        /// The first position of this segment.
        found: u64,
    },
}

/// Everything that can go wrong in a WAL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// An I/O call failed. After a failed write or sync the WAL refuses all further appends: the state
    /// of the page cache after a failed `fdatasync` is unknown, so nothing written since the last good
    /// sync can be trusted.
    #[error("wal i/o error: {op} {path}: {source}")]
    Io {
        /// What was being done (`"write"`, `"fdatasync"`, ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// A record or header that is not the last thing written is unreadable. Records after it cannot be
    /// reached, so the WAL refuses to open rather than drop them silently.
    #[error("corrupt wal data in {path} at byte {file_offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset within the file.
        file_offset: u64,
        /// What is wrong.
        reason: CorruptReason,
    },
    /// A record larger than the configured maximum.
    #[error("wal record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// Another process (or another `FileWal` in this one) holds the directory.
    #[error("wal directory {path} is locked by another writer")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A newer writer has taken over this WAL; nothing more is acknowledged (object WAL fencing).
    #[error("wal writer fenced: {detail}")]
    Fenced {
        /// Who fenced it, where known.
        detail: String,
    },
    /// The WAL failed earlier and accepts nothing more.
    #[error("wal is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// An object store request of the object WAL failed.
    #[error("wal object store error: {op} {key}: {detail}")]
    Store {
        /// What was being done (`"put"`, `"get"`, `"list"`, `"delete"`).
        op: &'static str,
        /// The key involved.
        key: String,
        /// The store's error.
        detail: String,
    },
    /// The WAL was closed.
    #[error("wal is closed")]
    Closed,
    /// A setting is out of range.
    #[error("invalid wal setting {key}: {detail}")]
    InvalidConfig {
        /// The setting's name.
        key: &'static str,
        /// Why it is invalid.
        detail: String,
    },
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
