//! Segment files: naming, the header, creation with preallocation, and scanning at recovery.
//!
//! ```text
//! header (32 bytes, big-endian):
//!      0    8 magic           "WEIRWSEG"
//!      8    2 version         1
//!     10    2 reserved        0
//!     12    8 first position  position of the segment's first record (also in the file name)
//!     20    8 reserved        0
//!     28    4 crc32c          of bytes 0..28
//! records from byte 32 on, back to back, then zeros (preallocated) or the end of the file
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use weir_common::writeback;

use super::Preallocate;
use crate::record::{self, Decoded};
use crate::{CorruptReason, RecoveredRecord, WalError, WalPosition};

pub(crate) const HEADER_LEN: u64 = 32;
const MAGIC: &[u8; 8] = b"WEIRWSEG";
const VERSION: u16 = 1;
const EXTENSION: &str = "wal";

/// A segment's file name: its first position, zero-padded so names sort like positions.
pub(crate) fn file_name(first: WalPosition) -> String {
    format!("{:020}.{EXTENSION}", first.0)
}

/// The first position a segment file name stands for, if it is a segment file name.
pub(crate) fn parse_file_name(name: &str) -> Option<WalPosition> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(WalPosition)
}

pub(crate) fn encode_header(first: WalPosition) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_be_bytes());
    h[12..20].copy_from_slice(&first.0.to_be_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_be_bytes());
    h
}

fn check_header(bytes: &[u8], name_first: WalPosition) -> Result<(), CorruptReason> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(CorruptReason::Truncated {
            needed: HEADER_LEN,
            available: bytes.len() as u64,
        });
    }
    if &bytes[0..8] != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(&bytes[0..4]);
        return Err(CorruptReason::BadMagic {
            found: u32::from_be_bytes(found),
        });
    }
    let stored = u32::from_be_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let computed = crc32c::crc32c(&bytes[0..28]);
    if stored != computed {
        return Err(CorruptReason::CrcMismatch { stored, computed });
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(CorruptReason::BadVersion {
            found: u8::try_from(version).unwrap_or(u8::MAX),
        });
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[12..20]);
    let in_header = u64::from_be_bytes(first);
    if in_header != name_first.0 {
        return Err(CorruptReason::PositionMismatch {
            in_header,
            in_name: name_first.0,
        });
    }
    Ok(())
}

/// The segment files of a directory, sorted by first position.
pub(crate) fn list(dir: &Path) -> Result<Vec<(WalPosition, PathBuf)>, WalError> {
    let entries = fs::read_dir(dir).map_err(|e| WalError::io("read_dir", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("read_dir", dir, e))?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(parse_file_name) {
            segments.push((first, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// What scanning one segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) records: Vec<RecoveredRecord>,
    /// Byte offset just past the last good record.
    pub(crate) valid_end: u64,
    /// The first unreadable record, if the scan stopped at one rather than at zeros or end of file.
    pub(crate) damage: Option<(u64, CorruptReason)>,
}

impl Scan {
    pub(crate) fn next_position(&self, first: WalPosition) -> WalPosition {
        WalPosition(first.0 + self.records.len() as u64)
    }
}

/// Reads a whole segment and decodes its records until zeros, the end of the file or damage.
pub(crate) fn scan(
    path: &Path,
    first: WalPosition,
    max_record_bytes: usize,
) -> Result<Scan, WalError> {
    let bytes = Bytes::from(fs::read(path).map_err(|e| WalError::io("read", path, e))?);
    if let Err(reason) = check_header(&bytes, first) {
        return Ok(Scan {
            records: Vec::new(),
            valid_end: 0,
            damage: Some((0, reason)),
        });
    }
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    let damage = loop {
        match record::decode(&bytes, at, max_record_bytes) {
            Ok(Decoded::End) => break None,
            Ok(Decoded::Record(record, used)) => {
                records.push(RecoveredRecord {
                    position: WalPosition(first.0 + records.len() as u64),
                    record,
                });
                at += used;
            }
            Err(reason) => break Some((at as u64, reason)),
        }
    };
    Ok(Scan {
        records,
        valid_end: at as u64,
        damage,
    })
}

/// Name of the spare segment being prepared; not a segment name, so recovery never reads it.
pub(crate) const SPARE_NAME: &str = "next-segment.spare";

/// Prepares the next segment's file before it is needed: created, its space reserved or zero-filled as
/// `preallocate` says, and synced.
///
/// Writing zeros rather than only reserving space (`fallocate`) matters for latency: a write into
/// reserved-but-unwritten space makes the following `fdatasync` also commit the extent conversion to
/// the file system journal, which on this project's machines costs 50-60% more per sync for writes of
/// tens of KiB. Doing it in advance, on another thread, keeps the cost off the append path.
pub(crate) fn prepare_spare(
    dir: &Path,
    capacity: u64,
    preallocate: Preallocate,
) -> Result<File, WalError> {
    let path = dir.join(SPARE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| WalError::io("create", &path, e))?;
    if preallocate != Preallocate::None {
        allocate(&file, capacity).map_err(|e| WalError::io("fallocate", &path, e))?;
    }
    if preallocate == Preallocate::Zero {
        zero_fill(&path, capacity).map_err(|e| WalError::io("zero-fill", &path, e))?;
    }
    file.sync_all()
        .map_err(|e| WalError::io("fsync", &path, e))?;
    Ok(file)
}

/// Writes zeros over the first `len` bytes of the file and syncs it.
///
/// Through the page cache on purpose: the zeroed pages stay cached, so the WAL's later writes of
/// records that do not fill whole pages never have to read a page back from disk first (with
/// `O_DIRECT` zero-filling, measured here, group commits took twice as long). Paced (see
/// [`weir_common::writeback`]): the active segment's syncs must not wait behind 64 MiB of zeros.
fn zero_fill(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let zeros = vec![0u8; writeback::WRITEBACK_CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = zeros
            .len()
            .min(usize::try_from(len - at).unwrap_or(usize::MAX));
        writeback::write_all_at_paced(&file, &zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()
}

/// Turns a prepared spare into the segment starting at `first`: header written and synced, file
/// renamed, directory synced. A crash before the rename leaves only the spare, which recovery deletes;
/// a crash after it leaves an empty segment with a valid header.
pub(crate) fn install_spare(
    dir: &Path,
    spare: &File,
    first: WalPosition,
) -> Result<PathBuf, WalError> {
    let spare_path = dir.join(SPARE_NAME);
    let path = dir.join(file_name(first));
    spare
        .write_all_at(&encode_header(first), 0)
        .map_err(|e| WalError::io("write", &spare_path, e))?;
    spare
        .sync_data()
        .map_err(|e| WalError::io("fdatasync", &spare_path, e))?;
    fs::rename(&spare_path, &path).map_err(|e| WalError::io("rename", &spare_path, e))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Reserves `len` bytes of disk for the file, so appends never fail for lack of space half-way and the
/// file system can lay the segment out contiguously. Falls back to extending the length where the file
/// system has no `fallocate`.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    let len_off = libc::off_t::try_from(len).map_err(|_| io::Error::other("segment too large"))?;
    // SAFETY: the descriptor is open for writing for the duration of the call; fallocate takes no
    // pointers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(len),
        _ => Err(err),
    }
}

/// Makes a segment end at `len` bytes (dropping a torn tail and the unwritten preallocated space) and
/// syncs it.
pub(crate) fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("open", path, e))?;
    file.set_len(len)
        .map_err(|e| WalError::io("truncate", path, e))?;
    file.sync_all().map_err(|e| WalError::io("fsync", path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync", dir, e))
}
