//! What sled 0.34 leaves unsynced, synced: the acknowledgements' durability rests on this.
//!
//! sled's `flush()` writes its log to the `db` file with `pwrite` and `sync_file_range`, which
//! neither flushes the drive's cache nor the file's size; its only fsync is its background
//! thread's, every 500 ms. Values and nodes larger than a quarter of a segment go to files of
//! their own under `blobs/` (named by their log sequence number), which sled writes before the
//! log message that points at them and never fsyncs; `conf`, `db`, `blobs/` and snapshots are
//! created without syncing their directory. So after sled's flush, `SledFiles::sync` fsyncs
//! every blob file that appeared since the last sync (once its content is complete), then
//! fdatasyncs `db`, then fsyncs `blobs/` if it gained files: every byte a flushed write depends
//! on is then on stable storage, in that order (a blob before the log that names it). An
//! inotify watch on `blobs/` spares the listing when sled created nothing there. Opening makes
//! what sled wrote at creation durable: `conf`, `db`, the directories.
//!
//! See docs/reliability.md, "Power cut", for the trace and the reasoning.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::QueueError;
use super::rollback::Undo;
use super::store::Store;
use crate::durable::sync_dir;

/// How often the store is synced when no group commit did it: sled's own background thread
/// fsyncs `db` every 500 ms without the blobs its log points at.
pub(super) const IDLE_SYNC: Duration = Duration::from_millis(500);

/// sled's files in its directory, and which blob files are known to be on stable storage.
pub(super) struct SledFiles {
    db: File,
    blobs: PathBuf,
    watch: Watch,
    state: Mutex<State>,
}

struct State {
    /// Blob files whose whole content has been synced; sled never rewrites one.
    settled: HashSet<OsString>,
    /// Whether the last listing found a blob not yet whole (to be synced again).
    unsettled: bool,
    /// Set once an fsync failed: the kernel may have dropped the dirty pages it could not
    /// write, so no later sync can prove anything until the store is reopened.
    failed: Option<String>,
    last: Instant,
}

fn io_err(e: io::Error) -> QueueError {
    QueueError::Storage(sled::Error::Io(e))
}

impl SledFiles {
    /// Takes sled's files in `store` (the directory sled was just opened on) and makes what
    /// the store holds so far durable: everything written to this file system before (a
    /// store of an earlier release, a process killed before it synced), then `conf`, `db` and
    /// the directory entries of `db`, `conf`, `blobs/`, the snapshots and the store itself.
    pub fn open(store: &Path) -> io::Result<SledFiles> {
        let db = File::open(store.join("db"))?;
        #[cfg(target_os = "linux")]
        rustix::fs::syncfs(&db)?;
        File::open(store.join("conf"))?.sync_all()?;
        db.sync_all()?;
        let blobs = store.join("blobs");
        // Watched before it is listed: a file created in between is seen by the next sync.
        let watch = Watch::new(&blobs);
        let settled = names(&blobs)?;
        sync_dir(&blobs)?;
        sync_dir(store)?;
        if let Some(data) = store.parent() {
            sync_dir(data)?;
        }
        Ok(SledFiles {
            db,
            blobs,
            watch,
            state: Mutex::new(State {
                settled,
                unsettled: false,
                failed: None,
                last: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// sled's flush, then the syncs that make what it wrote durable; returns sled's count.
    pub fn flush(&self, db: &sled::Db) -> Result<usize, QueueError> {
        let n = db.flush()?;
        self.sync().map_err(io_err)?;
        Ok(n)
    }

    /// Makes everything sled has written so far durable (blobs, `db`, `blobs/`).
    pub fn sync(&self) -> io::Result<()> {
        self.sync_with(&mut self.lock(), false)
    }

    /// One caller at a time: a caller must not return before the blobs another one found are
    /// synced, so the lock is held throughout. `idle`: only if sled wrote blobs since the last
    /// sync (sled's own thread fsyncs `db` every 500 ms; what is missing is the blobs).
    fn sync_with(&self, st: &mut State, idle: bool) -> io::Result<()> {
        if let Some(e) = &st.failed {
            return Err(io::Error::other(format!("an earlier fsync failed: {e}")));
        }
        match self.sync_locked(st, idle) {
            Ok(()) => {
                st.last = Instant::now();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "fsync of the queue failed; nothing more is acknowledged until a restart");
                st.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn sync_locked(&self, st: &mut State, idle: bool) -> io::Result<()> {
        // Listing `blobs/` costs in proportion to the blobs stored: skipped when no file was
        // created there since the last listing and every blob it found was whole.
        let gained = if self.watch.fired() || st.unsettled {
            self.sync_new_blobs(st)?
        } else {
            false
        };
        // `db` before `blobs/`: that directory's fsync also makes sled's removals of replaced
        // blobs durable, and each removal must not reach the disk before its replacement.
        if gained || !idle {
            self.db.sync_data()?;
        }
        if gained {
            sync_dir(&self.blobs)?;
        }
        Ok(())
    }

    /// fsyncs the blob files not yet seen whole; returns whether there were any.
    fn sync_new_blobs(&self, st: &mut State) -> io::Result<bool> {
        let listed = names(&self.blobs)?;
        let mut gained = false;
        st.unsettled = false;
        let fresh: Vec<&OsString> = listed.iter().filter(|n| !st.settled.contains(*n)).collect();
        for name in fresh {
            // sled removes a blob once nothing points at it: one gone since the listing needs
            // nothing.
            let mut file = match File::open(self.blobs.join(name)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // A blob another thread is still writing is synced now and again next time, until
            // it is seen whole: sled writes a blob once, front to back, then never again.
            // A file system that syncs by path (FUSE) reports a blob sled removed after the
            // open as gone, which needs nothing either.
            let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
            let whole = match blob_is_whole(&mut file) {
                Err(e) if gone(&e) => continue,
                other => other?,
            };
            match file.sync_data() {
                Err(e) if gone(&e) => continue,
                other => other?,
            }
            gained = true;
            if whole {
                st.settled.insert(name.clone());
            } else {
                st.unsettled = true;
            }
        }
        st.settled.retain(|n| listed.contains(n));
        Ok(gained)
    }

    /// Syncs the blobs sled wrote unless a sync ran within `IDLE_SYNC`.
    fn sync_if_idle(&self) -> io::Result<()> {
        let mut st = self.lock();
        if st.last.elapsed() < IDLE_SYNC {
            return Ok(());
        }
        self.sync_with(&mut st, true)
    }
}

/// Syncs the store every `IDLE_SYNC` while no group commit does, until the store is gone:
/// bounds how long a blob written by sled's own threads (segment cleaning, the dispatchers'
/// writes) stays unsynced while sled's background fsync may already make its pointer durable.
pub(super) fn idle_sync(store: Weak<Store>) {
    loop {
        std::thread::sleep(IDLE_SYNC);
        let Some(store) = store.upgrade() else {
            return;
        };
        if store.has_failed() {
            continue;
        }
        // A failed fsync fails the queue as a failed commit does: refused until a restart,
        // `/readyz` 503, the watchdog withheld.
        if let Err(e) = store.files.sync_if_idle() {
            store.fail(Vec::new(), Undo::default(), &io_err(e));
        }
    }
}

/// Tells whether a file was created in a directory since the last look (inotify: one
/// `read` when nothing was). Without inotify (another OS, no instance left) it always says
/// yes, and the directory is listed at every sync.
struct Watch(Option<std::os::fd::OwnedFd>);

impl Watch {
    #[cfg(target_os = "linux")]
    fn new(dir: &Path) -> Watch {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .and_then(|fd| {
                let what = inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO;
                inotify::add_watch(&fd, dir, what).map(|_| fd)
            });
        match fd {
            Ok(fd) => Watch(Some(fd)),
            Err(e) => {
                tracing::debug!(error = %e, "no inotify on the blob directory: listing it at every sync");
                Watch(None)
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn new(_dir: &Path) -> Watch {
        Watch(None)
    }

    /// Whether anything was created since the last call (an overflow of the event queue, or
    /// any doubt, counts as yes). Drains the events.
    fn fired(&self) -> bool {
        let Some(fd) = &self.0 else {
            return true;
        };
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => return true,
                Ok(_) => any = true,
                Err(rustix::io::Errno::AGAIN) => return any,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return true,
            }
        }
    }
}

/// The names of the files in `dir`.
fn names(dir: &Path) -> io::Result<HashSet<OsString>> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        out.insert(entry?.file_name());
    }
    Ok(out)
}

/// Whether a blob file is complete: sled writes a CRC-32 of the rest of the file first.
fn blob_is_whole(file: &mut File) -> io::Result<bool> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let Some((head, rest)) = bytes.split_first_chunk::<4>() else {
        return Ok(false);
    };
    Ok(u32::from_le_bytes(*head) == crc32(rest))
}

/// The CRC-32 (IEEE) of every byte value, for `crc32`.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = (c >> 1) ^ (0xEDB8_8320 & (c & 1).wrapping_neg());
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), the checksum sled puts at the head of a blob file.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, b| {
        CRC_TABLE[((crc ^ u32::from(*b)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_the_one_sled_writes() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_watch_fires_once_per_batch_of_created_files() {
        let dir = tempfile::tempdir().unwrap();
        let watch = Watch::new(dir.path());
        assert!(watch.0.is_some());
        assert!(!watch.fired());
        std::fs::write(dir.path().join("1"), b"a").unwrap();
        std::fs::write(dir.path().join("2"), b"b").unwrap();
        assert!(watch.fired());
        assert!(!watch.fired());
        std::fs::rename(dir.path().join("2"), dir.path().join("3")).unwrap();
        assert!(watch.fired());
    }

    #[test]
    fn a_blob_cut_short_is_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("7");
        let body = b"\x01some node bytes";
        let mut bytes = crc32(body).to_le_bytes().to_vec();
        bytes.extend_from_slice(body);
        let whole = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            blob_is_whole(&mut File::open(&path).unwrap()).unwrap()
        };
        assert!(whole(&bytes));
        assert!(!whole(&bytes[..bytes.len() - 3]));
        assert!(!whole(&bytes[..2]));
    }
}
