//! Writing large files without stalling the WAL that shares their disk.
//!
//! A `fsync` of a file written through the page cache sends all of its dirty pages to the device at
//! once; every `fdatasync` of the WAL issued meanwhile waits behind that burst (its cache flush waits for
//! the writes in flight). Writing in chunks and pushing each chunk to the device before the next one
//! (`sync_file_range`, as RocksDB's `bytes_per_sync` does) keeps at most one chunk in flight, so a WAL
//! sync waits for one chunk rather than for tens of megabytes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The chunk written and pushed to the device at a time.
pub const WRITEBACK_CHUNK: usize = 1 << 20;

/// Writes `bytes` at `offset` through the page cache, one [`WRITEBACK_CHUNK`] at a time, waiting for
/// each chunk's writeback before writing the next. The caller still syncs the file at the end (this
/// does not flush the device's cache or the file's metadata), which is then cheap.
pub fn write_all_at_paced(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    let mut at = 0usize;
    while at < bytes.len() {
        let n = WRITEBACK_CHUNK.min(bytes.len() - at);
        file.write_all_at(&bytes[at..at + n], offset + at as u64)?;
        write_back(file, offset + at as u64, n)?;
        at += n;
    }
    Ok(())
}

/// Starts writeback of `len` bytes at `offset` and waits for it to finish.
pub fn write_back(file: &File, offset: u64, len: usize) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (Ok(off), Ok(n)) = (
            libc::off64_t::try_from(offset),
            libc::off64_t::try_from(len),
        ) else {
            return Ok(());
        };
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: the descriptor is open for the duration of the call, which takes no pointers.
        let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, flags) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // Not every filesystem supports it; the caller's final sync still makes the data durable.
            if !matches!(err.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
                return Err(err);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
    Ok(())
}
