//! Disk space: what a write will cost on disk, the floor it must not cross, and the reserve.
//!
//! sled 0.34 does not survive a full disk: a write that meets ENOSPC leaves the store refusing
//! every later write until restart, and a snapshot torn by ENOSPC makes every later open fail
//! with "Read corrupted data at file offset None" (see docs/reliability.md, "Disk full"). So the
//! queue never lets sled get there: each request is priced before anything is written and
//! refused (503) if it would take free space below `storage.min_free`; the daemon does not open
//! the store on a disk already below the floor; and a reserve file holds back room that is
//! released when a write fails anyway, so the failed batch can still be rolled back.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::QueueError;

/// Bytes sled puts on disk per byte of keys and values written. Measured by
/// `space_tests::sled_overhead_stays_under_the_factor` (blocks allocated after a flush): 3.96
/// for one delivery of 24 000 tiny events applied in chunks (3.51 as one batch), 2.1 for 1 KB
/// deliveries, 1.5 for 60 KB ones. Every insert goes to the log, and nodes rewritten by
/// consolidation and splits are logged again before segment cleaning reclaims the old copies;
/// 5 leaves a margin over the worst case.
pub const SLED_BYTES_PER_BYTE: u64 = 5;

/// Bytes sled adds per row written (message header, node entry, page-table slot): what the
/// per-byte factor does not cover for rows of a few dozen bytes (dedup and delivery rows).
pub const SLED_BYTES_PER_ROW: u64 = 96;

/// Bytes a group may take on disk beyond its rows: a fresh log segment (512 KiB) and blob
/// files rounded up to whole blocks.
pub const SLED_BYTES_PER_BATCH: u64 = 1024 * 1024;

/// Most space the reserve file holds back.
const RESERVE_MAX: u64 = 64 * 1024 * 1024;

/// The reserve file's name in the data directory.
const RESERVE_FILE: &str = "reserve";

/// What a batch of `rows` rows holding `bytes` bytes of keys and values costs on disk.
pub fn estimate(bytes: u64, rows: u64) -> u64 {
    bytes
        .saturating_mul(SLED_BYTES_PER_BYTE)
        .saturating_add(rows.saturating_mul(SLED_BYTES_PER_ROW))
}

/// Bytes available to the daemon on the filesystem holding `dir` (None if it cannot be read).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Why writing `need` more bytes would take free space below `min_free`, if it would.
pub fn refuse(dir: &Path, min_free: u64, need: u64) -> Option<QueueError> {
    if min_free == 0 {
        return None;
    }
    let free = free_bytes(dir)?;
    (free < min_free.saturating_add(need)).then_some(QueueError::DiskFull {
        free,
        min_free,
        need,
    })
}

/// How much room the reserve file holds back for a given floor: a quarter of it, at most 64 MiB.
pub fn reserve_size(min_free: u64) -> u64 {
    (min_free / 4).min(RESERVE_MAX)
}

/// A file of zeros that holds back room for recovery after a failed write.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    size: u64,
}

impl Reserve {
    /// The reserve of the data directory `dir` for the floor `min_free`.
    pub fn new(dir: &Path, min_free: u64) -> Reserve {
        Reserve {
            path: dir.join(RESERVE_FILE),
            size: reserve_size(min_free),
        }
    }

    /// What is still to be written to (re)create the reserve: 0 when it is in place.
    pub fn missing(&self) -> u64 {
        let have = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        self.size.saturating_sub(have)
    }

    /// Writes the reserve (real blocks, not a sparse file) if it is not complete.
    pub fn fill(&self) -> std::io::Result<()> {
        if self.size == 0 || self.missing() == 0 {
            return Ok(());
        }
        let mut f = std::fs::File::create(&self.path)?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = self.size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    }

    /// Gives the reserve's room back to the filesystem; returns whether there was any.
    pub fn release(&self) -> bool {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(
                    path = %self.path.display(),
                    bytes = self.size,
                    "released the disk reserve to recover from a failed write"
                );
                true
            }
            Err(_) => false,
        }
    }
}

/// Refuses to open the store on a disk below the floor: opening writes (sled's config and a
/// snapshot), and a write torn by a full disk there corrupts the store for good.
pub fn check_before_open(dir: &Path, min_free: u64, reserve: &Reserve) -> Result<(), QueueError> {
    if min_free == 0 {
        return Ok(());
    }
    let Some(free) = free_bytes(dir) else {
        return Ok(());
    };
    let want = min_free.saturating_add(reserve.missing());
    if free < want {
        return Err(QueueError::NoRoomToStart {
            free,
            min_free,
            need: want - free,
        });
    }
    Ok(())
}

/// Removes snapshots sled left half written (`snap.*.generating`): sled renames a snapshot
/// only once it is complete, yet at open takes the newest file, torn or not, and then fails
/// with "Read corrupted data at file offset None". The complete snapshot and the log before it
/// still recover everything.
pub fn remove_torn_snapshots(store: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %name, "removing a snapshot that was never completed");
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
