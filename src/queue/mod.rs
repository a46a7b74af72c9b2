//! The durable queue (sled): a log of accepted requests, and each sink's progress through it.
//!
//! Writes that must be durable before the 2xx (accepts, replays) go through one committer thread
//! that writes concurrent requests as plain inserts and makes them durable with one flush and
//! fsync (group commit). The dispatchers read the log and record their progress directly; a
//! completion lost in a crash only means a delivery is sent again, which at-least-once allows.
//!
//! Invariants (the row layout is in `keys.rs`):
//! 1. **Durable before 2xx**: an accept is answered only after its group's fsync (sled's flush,
//!    then `fsync.rs`: the blob files, `db`, the directories); a refused request (any 5xx)
//!    leaves none of its rows after a restart (priced before writing, rolled back durably when
//!    a write fails anyway).
//! 2. **Rows in the order they point**: a request's log row is written before its dedup rows,
//!    a sink's cursor row before the first log row routed to it, a delivery's new row before
//!    the cursor passes it or its old row goes. sled recovers a prefix of its writes, so a crash
//!    never leaves a dedup key without its event or a delivery without a row or cursor to
//!    find it by.
//! 3. **One writer of the log**: only the committer thread writes log rows (accepts, replays,
//!    retention), in seq order; each dispatcher moves only its own sink's cursor and rows, and
//!    the change feed parks and releases them, under the `moving` lock that retention takes.
//! 4. **A delivery is in exactly one place**: in the log beyond its sink's cursor (ready, or
//!    handed out), or in one ready, waiting or dead row, or settled (delivered); a log row stays
//!    while any delivery in it is still to be sent.
//! 5. **Dedup keys outlive their events** for `dedup_window`; retention removes log rows every
//!    sink is done with after `keep_delivered` and dead letters after `keep_dead`.
//! 6. **No write after a failed write**: sled refuses them in that process, so the queue
//!    refuses every accept until a restart applies the pending rollback.
//!
//! Where each concern lives: `keys.rs`, `log.rs`, `rows.rs`, `trees.rs` (the rows and their
//! stored forms); `stage.rs`, `commit.rs`, `flusher.rs`, `store.rs` (accept: priced group
//! commit, fsync, and the replies owed); `space.rs`, `rollback.rs` (disk pricing, undoing a
//! failed write); `progress.rs`, `take.rs` (each sink's place in the log; take and complete
//! deliveries); `dead.rs` (dead letters, replay); `changes.rs` (the change feed's
//! rows behind `ChangeRows`: stored changes, parked deliveries); `retention.rs`; `migrate.rs` (stores of earlier releases); `stats.rs`,
//! `browse.rs`, `status.rs`, `history.rs` (what the admin API and status page read);
//! `config.rs` (`[storage]`).

mod browse;
mod changes;
mod commit;
mod config;
mod dead;
mod error;
mod fault;
mod flusher;
mod fsync;
mod gens;
mod history;
pub(crate) mod keys;
mod log;
mod migrate;
mod progress;
mod retention;
pub(crate) mod rollback;
mod rows;
pub(crate) mod space;
#[cfg(test)]
mod space_tests;
mod stage;
mod stats;
mod status;
mod store;
mod take;
#[cfg(test)]
pub(crate) mod tests;
mod trees;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

pub use browse::{EventQuery, RecentEvents};
pub use changes::ChangeRows;
pub use config::StorageConfig;
pub use dead::DeadLetter;
pub use error::QueueError;
pub use gens::{Intent, LayerWindow};
pub use history::Attempt;
pub use retention::Retention;
pub use rows::{DeliveryRow, EventRow};
pub use stage::{AcceptOutcome, RoutedEvent};
pub use stats::{SinkStats, Stats};
pub use status::{DeliveryStatus, EventStatus};
pub use take::Decision;

use crate::clock::now_ms;
use keys::*;
use rows::{BodyRow, decode, encode};
use trees::Trees;

/// The queue: its sled trees and the committer thread in front of them.
pub struct Queue {
    /// Held while the queue is open: one process per data directory.
    _lock: std::fs::File,
    db: sled::Db,
    trees: Trees,
    tx: std::sync::Mutex<Option<mpsc::Sender<commit::Command>>>,
    committer: std::sync::Mutex<Option<JoinHandle<()>>>,
    wake: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
    /// The store as the committer sees it (fault plan included, for tests).
    store: Arc<store::Store>,
    dir: std::path::PathBuf,
    min_free: u64,
    counted: tokio::sync::watch::Sender<bool>,
    counting: std::sync::Mutex<Option<JoinHandle<()>>>,
    closing: std::sync::atomic::AtomicBool,
    /// Held while deliveries move between the log and their rows, and by retention while it
    /// decides which log rows no delivery needs: a row in mid-move would be missed by its scans.
    moving: std::sync::Mutex<()>,
}

/// Takes the data directory's lock file (`<dir>/lock`, an exclusive `flock`), so that a second
/// process is told the directory is in use before sled is opened.
fn lock_dir(dir: &Path) -> Result<std::fs::File, QueueError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(|e| QueueError::Storage(sled::Error::Io(e)))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(QueueError::Locked(dir.to_path_buf())),
        Err(e) => Err(QueueError::Storage(sled::Error::Io(e.into()))),
    }
}

/// The first seq never handed out: past the floor row, the log's last row, and the ids sled
/// gave earlier releases (which took their seqs from it).
fn first_free_seq(db: &sled::Db, trees: &Trees) -> Result<u64, QueueError> {
    let floor = trees.q.get(FLOOR)?.and_then(|v| u64_at(&v, 0)).unwrap_or(0);
    let last = match trees.log.iter().next_back().transpose()? {
        Some((k, v)) => log::LogRow::decode(&k, &v)?.end(),
        None => 0,
    };
    Ok(floor.max(last).max(db.generate_id()?).max(1))
}

/// Opens sled's store at `path`. Our own lock is held by then, so a sled lock still taken can
/// only be an earlier queue of this process whose background threads hold the store a moment
/// after it is dropped (a reopen after close): wait for them to let go, up to 5 s.
fn open_sled(path: &Path) -> Result<sled::Db, QueueError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        // The node cache: writes go to the tail of each key range and dedup lookups are random,
        // so a larger cache buys little; 8 MiB keeps a million-event backlog under 128 MiB RSS.
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

impl Queue {
    /// Opens (or creates) the queue in `dir` and starts its committer.
    ///
    /// Refuses (`NoRoomToStart`) without writing anything when the disk is below
    /// `min_free`; removes a snapshot sled left torn; applies the rollbacks of batches whose
    /// write failed before the last stop; and puts the disk reserve back in place.
    pub fn open(dir: &Path, retention: Retention) -> Result<Arc<Queue>, QueueError> {
        let io = |e| QueueError::Storage(sled::Error::Io(e));
        crate::durable::create_dir_all(dir).map_err(io)?;
        let lock = lock_dir(dir)?;
        let reserve = space::Reserve::new(dir, retention.min_free);
        space::check_before_open(dir, retention.min_free, &reserve)?;
        space::remove_torn_snapshots(&dir.join("queue")).map_err(io)?;
        let db = open_sled(&dir.join("queue"))?;
        let files = Arc::new(fsync::SledFiles::open(&dir.join("queue")).map_err(io)?);
        let trees = Trees::open(&db)?;
        let rollbacks = rollback::Rollbacks::new(dir);
        let pending = rollbacks.pending()?;
        if !pending.is_empty() {
            for (path, undo) in &pending {
                tracing::warn!(file = %path.display(), rows = undo.0.len(), "rolling back a batch whose write failed before the last stop");
                undo.apply(&trees)?;
            }
            files.flush(&db)?;
            for (path, _) in &pending {
                rollbacks.done(path)?;
            }
        }
        migrate::run(&trees)?;
        let next_seq = first_free_seq(&db, &trees)?;
        let floor = next_seq + stage::FLOOR_STEP;
        trees.q.insert(FLOOR, &floor.to_be_bytes())?;
        files.flush(&db)?;
        let sinks = progress::Sinks::load(&trees)?;
        reserve.fill().map_err(io)?;
        let (tx, rx) = mpsc::channel(4096);
        let queue = Arc::new_cyclic(|weak| Queue {
            _lock: lock,
            db: db.clone(),
            trees: trees.clone(),
            tx: std::sync::Mutex::new(Some(tx)),
            committer: std::sync::Mutex::new(None),
            wake: std::sync::Mutex::new(HashMap::new()),
            store: Arc::new(store::Store {
                db: db.clone(),
                files,
                trees: trees.clone(),
                sinks,
                next_seq: std::sync::atomic::AtomicU64::new(next_seq),
                generation: std::sync::atomic::AtomicU64::new(0),
                floor: std::sync::atomic::AtomicU64::new(floor),
                queue: weak.clone(),
                retention,
                dir: dir.to_path_buf(),
                faults: fault::Faults::from_env(),
                rollbacks,
                reserve,
                failed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                pressure: std::sync::Mutex::new(None),
                undoing: std::sync::Mutex::new(Vec::new()),
            }),
            dir: dir.to_path_buf(),
            min_free: retention.min_free,
            counted: tokio::sync::watch::Sender::new(false),
            counting: std::sync::Mutex::new(None),
            closing: std::sync::atomic::AtomicBool::new(false),
            moving: std::sync::Mutex::new(()),
        });
        // Counting a large backlog takes seconds: do it beside the daemon, not before it is ready.
        // Rows older than `snapshot` are counted here; newer ones by the commits that add them.
        let snapshot = next_seq;
        let counter = Arc::downgrade(&queue);
        let counting = std::thread::Builder::new()
            .name("hookbridge-count".into())
            .spawn(move || {
                if let Some(q) = counter.upgrade() {
                    q.count_into_metrics(snapshot);
                }
            })
            .map_err(|e| QueueError::Storage(sled::Error::Io(e)))?;
        if let Ok(mut slot) = queue.counting.lock() {
            *slot = Some(counting);
        }
        if let Some(tx) = queue.sender().ok().map(|t| t.downgrade()) {
            std::thread::Builder::new()
                .name("hookbridge-tick".into())
                .spawn(move || commit::tick(tx))
                .map_err(|e| QueueError::Storage(sled::Error::Io(e)))?;
        }
        let idle = Arc::downgrade(&queue.store);
        std::thread::Builder::new()
            .name("hookbridge-sync".into())
            .spawn(move || fsync::idle_sync(idle))
            .map_err(|e| QueueError::Storage(sled::Error::Io(e)))?;
        let handle = std::thread::Builder::new()
            .name("hookbridge-commit".into())
            .spawn({
                let store = queue.store.clone();
                move || commit::run(store, rx)
            })
            .map_err(|e| QueueError::Storage(sled::Error::Io(e)))?;
        if let Ok(mut slot) = queue.committer.lock() {
            *slot = Some(handle);
        }
        Ok(queue)
    }

    /// The notifier a sink's dispatcher sleeps on; woken when deliveries are added for it.
    pub fn waker(&self, sink: &str) -> Arc<Notify> {
        let mut map = match self.wake.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(sink.to_string()).or_default().clone()
    }

    fn wake(&self, sink: &str) {
        self.waker(sink).notify_one();
    }

    fn sender(&self) -> Result<mpsc::Sender<commit::Command>, QueueError> {
        match self.tx.lock() {
            Ok(g) => g.clone().ok_or(QueueError::Closed),
            Err(_) => Err(QueueError::Closed),
        }
    }

    /// Stores a request's new events and their deliveries durably; duplicates are only reported.
    ///
    /// Returns once the batch holding them has been fsync'd.
    pub async fn accept(
        &self,
        payload: Arc<str>,
        events: Vec<RoutedEvent>,
    ) -> Result<AcceptOutcome, QueueError> {
        self.check_writable()?;
        let prepared = stage::prepare(&self.store, now_ms(), payload, events)?;
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(commit::Command::Accept { prepared, reply })
            .await
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Puts dead letters (all, one sink's, or one event's) back into the ready queue.
    pub async fn replay(
        &self,
        sink: Option<String>,
        event_id: Option<String>,
    ) -> Result<usize, QueueError> {
        self.check_writable()?;
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(commit::Command::Replay {
                sink,
                event_id,
                reply,
            })
            .await
            .map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Why the queue refuses deliveries for lack of space right now, if it does: even the
    /// smallest would cross `storage.min_free`, or the last one refused for space still would.
    pub fn space_problem(&self) -> Option<String> {
        let last = *self
            .store
            .pressure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let need = last.unwrap_or(0).max(space::SLED_BYTES_PER_BATCH);
        space::refuse(&self.dir, self.min_free, need).map(|e| e.to_string())
    }

    /// The injected-failure plan of the commit path (unit tests).
    #[cfg(test)]
    pub(crate) fn faults(&self) -> &fault::Faults {
        &self.store.faults
    }

    /// Refuses at once after a failed commit: sled may block on a store that saw an I/O error.
    fn check_writable(&self) -> Result<(), QueueError> {
        if self.store.has_failed() {
            return Err(self.store.earlier_failure());
        }
        Ok(())
    }

    /// Whether the queue can still take writes: the committer runs and no commit has failed.
    ///
    /// After a failed commit (disk full, I/O error) sled refuses further writes until reopened,
    /// so `/readyz` turns 503 and the systemd watchdog is withheld: systemd restarts the daemon.
    pub fn is_alive(&self) -> bool {
        !self.store.has_failed()
            && self
                .committer
                .lock()
                .ok()
                .and_then(|h| h.as_ref().map(|h| !h.is_finished()))
                .unwrap_or(false)
    }

    /// Stops the committer after it has written what it was given, and flushes; after a
    /// failed write it does not flush (sled may block on such a store) and says so.
    pub fn close(&self) -> Result<(), QueueError> {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let counting = self.counting.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = counting {
            let _ = h.join();
        }
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.committer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        if self.store.has_failed() {
            let undoing = match self.store.undoing.lock() {
                Ok(mut t) => std::mem::take(&mut *t),
                Err(p) => std::mem::take(&mut *p.into_inner()),
            };
            for h in undoing {
                let _ = h.join();
            }
            return Err(self.store.earlier_failure());
        }
        self.store.faults.stall_close();
        self.store.files.flush(&self.db)?;
        Ok(())
    }

    /// The lock that keeps deliveries from moving between the log and their rows.
    pub(super) fn lock_moves(&self) -> std::sync::MutexGuard<'_, ()> {
        self.moving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Flushes everything written so far to stable storage (sled's flush, then the fsyncs).
    pub fn flush(&self) -> Result<(), QueueError> {
        self.store.files.flush(&self.db)?;
        Ok(())
    }

    /// Whether an event id has been accepted within the dedup window.
    pub fn seen(&self, event_id: &str) -> Result<bool, QueueError> {
        let Some(key) = crate::event::DedupKey::parse_hex(event_id) else {
            return Ok(false);
        };
        Ok(self.trees.dedup.contains_key(key.0)?)
    }

    /// Waits up to `timeout` for a condition on the queue; used by tests and shutdown.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Queue) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if check(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        check(self)
    }
}
