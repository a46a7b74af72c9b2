//! The durable queue (sled): accepted events and their deliveries, written ahead of any sending.
//!
//! Writes that must be durable before the 2xx (accepts, replays) go through one committer thread
//! that batches concurrent requests into one sled batch and one fsync (group commit). The
//! dispatchers read and complete deliveries directly; a completion lost in a crash only means a
//! delivery is sent again, which at-least-once allows.
//!
//! Invariants (the row layout is in `keys.rs`):
//! 1. **Durable before 2xx**: an accept is answered only after its group's fsync; a refused
//!    request (any 5xx) leaves none of its rows after a restart (priced before writing, rolled
//!    back durably when a write fails anyway).
//! 2. **Whole events**: an event's row, its dedup key and its delivery rows are written in one
//!    batch (a large group is applied in chunks cut only between events).
//! 3. **One writer of accepts**: only the committer thread writes accepts and replays; the
//!    dispatchers move their own sink's delivery rows (ready → waiting → ready, ready → dead,
//!    ready → delivered) and the change feed parks and releases them, under the `moving` lock
//!    that retention also takes.
//! 4. **A delivery row is the unit of work**: one per (event, sink), in exactly one of ready,
//!    waiting or dead; an event and its body stay while any of its deliveries does.
//! 5. **Dedup keys outlive their events** for `dedup_window`; retention removes delivered
//!    events after `keep_delivered` and dead letters after `keep_dead`.
//! 6. **No write after a failed write**: sled refuses them in that process, so the queue
//!    refuses every accept until a restart applies the pending rollback.

mod browse;
mod commit;
mod config;
mod dead;
mod enrich;
mod fault;
mod flusher;
mod history;
pub mod keys;
mod retention;
pub mod rollback;
mod rows;
pub mod space;
#[cfg(test)]
mod space_tests;
mod stage;
mod status;
mod store;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};

pub use browse::{EventQuery, RecentEvents};
pub use config::StorageConfig;
pub use dead::DeadLetter;
pub use history::Attempt;
pub use retention::Retention;
pub use rows::{DeliveryRow, EventRow};
pub use stage::{AcceptOutcome, RoutedEvent};
pub use status::{DeliveryStatus, EventStatus};

use crate::clock::now_ms;
use crate::metrics::METRICS;
use crate::sinks::Delivery;
use keys::*;
use rows::{BodyRow, corrupt, decode, encode};

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// sled failed (disk full, I/O error, corruption).
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// Another process (a running daemon) holds the data directory.
    #[error("the data directory {0} is in use by another hookbridge process")]
    Locked(std::path::PathBuf),
    /// Writing the delivery would take free space below `storage.min_free`.
    #[error(
        "only {free} bytes free on the queue's disk; this write needs about {need} and storage.min_free ({min_free}) must stay free"
    )]
    DiskFull {
        /// Bytes available.
        free: u64,
        /// The configured floor.
        min_free: u64,
        /// Bytes the write would take on disk (sled's overhead included).
        need: u64,
    },
    /// The disk is already below the floor at start: the store is not opened (opening writes).
    #[error(
        "only {free} bytes free on the queue's disk, {need} short of what starting needs (storage.min_free = {min_free}, plus the reserve); free space, then start again"
    )]
    NoRoomToStart {
        /// Bytes available.
        free: u64,
        /// The configured floor.
        min_free: u64,
        /// Bytes missing.
        need: u64,
    },
    /// A failed batch's rollback could not be recorded or applied.
    #[error("{0}")]
    Rollback(#[from] rollback::RollbackError),
    /// A group commit failed; nothing of that batch was acknowledged.
    #[error("the write failed: {0}")]
    Commit(String),
    /// An earlier write failed: nothing more is written or acknowledged until a restart.
    #[error("an earlier write failed (disk full or I/O error); restart once fixed")]
    Failed,
    /// The committer has stopped (shutting down).
    #[error("the queue is shutting down")]
    Closed,
    /// A row could not be decoded.
    #[error("corrupt queue row {key}: {reason}")]
    Corrupt {
        /// Which row.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What the dispatcher decided for one delivery after a send.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Confirmed by the sink.
    Delivered,
    /// Try again at `due_ms`.
    Retry {
        /// Epoch ms when it is due again.
        due_ms: u64,
        /// Why it failed.
        error: String,
    },
    /// Give up: move to the dead letters.
    Dead {
        /// Why.
        error: String,
    },
}

/// Per-sink counts for `queue stats` and the admin API.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SinkStats {
    /// Deliveries ready to send.
    pub ready: u64,
    /// Deliveries waiting for a retry.
    pub waiting: u64,
    /// Dead letters.
    pub dead: u64,
}

/// Whole-queue counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Stored events (pending or kept for status).
    pub events: u64,
    /// Stored payload bodies.
    pub bodies: u64,
    /// Remembered dedup keys.
    pub dedup_keys: u64,
    /// Per sink.
    pub sinks: BTreeMap<String, SinkStats>,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// The queue: one sled tree and the committer thread in front of it.
pub struct Queue {
    /// Held while the queue is open: one process per data directory.
    _lock: std::fs::File,
    db: sled::Db,
    tree: sled::Tree,
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
    /// Held while deliveries move between ready and waiting rows, and by retention while it
    /// decides which events no delivery needs: a row in mid-move would be missed by its scans.
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

impl Queue {
    /// Opens (or creates) the queue in `dir` and starts its committer.
    ///
    /// Refuses (`NoRoomToStart`) without writing anything when the disk is below
    /// `min_free`; removes a snapshot sled left torn; applies the rollbacks of batches whose
    /// write failed before the last stop; and puts the disk reserve back in place.
    pub fn open(dir: &Path, retention: Retention) -> Result<Arc<Queue>, QueueError> {
        let io = |e| QueueError::Storage(sled::Error::Io(e));
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = lock_dir(dir)?;
        let reserve = space::Reserve::new(dir, retention.min_free);
        space::check_before_open(dir, retention.min_free, &reserve)?;
        space::remove_torn_snapshots(&dir.join("queue")).map_err(io)?;
        // The node cache: writes go to the tail of each key range and dedup lookups are random,
        // so a larger cache buys little; 8 MiB keeps a million-event backlog under 128 MiB RSS.
        let db = sled::Config::new()
            .path(dir.join("queue"))
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()?;
        let tree = db.open_tree("q")?;
        let rollbacks = rollback::Rollbacks::new(dir);
        let pending = rollbacks.pending()?;
        if !pending.is_empty() {
            for (path, undo) in &pending {
                tracing::warn!(file = %path.display(), rows = undo.0.len(), "rolling back a batch whose write failed before the last stop");
                tree.apply_batch(undo.to_batch())?;
            }
            db.flush()?;
            for (path, _) in &pending {
                rollbacks.done(path)?;
            }
        }
        reserve.fill().map_err(io)?;
        let (tx, rx) = mpsc::channel(4096);
        let queue = Arc::new_cyclic(|weak| Queue {
            _lock: lock,
            db: db.clone(),
            tree: tree.clone(),
            tx: std::sync::Mutex::new(Some(tx)),
            committer: std::sync::Mutex::new(None),
            wake: std::sync::Mutex::new(HashMap::new()),
            store: Arc::new(store::Store {
                db: db.clone(),
                tree: tree.clone(),
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
        let snapshot = queue.db.generate_id()?;
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
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(commit::Command::Accept {
                payload,
                events,
                reply,
            })
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
        self.db.flush()?;
        Ok(())
    }

    /// The lock that keeps deliveries from moving between ready and waiting rows.
    pub(super) fn lock_moves(&self) -> std::sync::MutexGuard<'_, ()> {
        self.moving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Up to `max` deliveries for `sink`, oldest first, after promoting retries that are due;
    /// deliveries whose seq is in `in_flight` (handed out and not yet completed) are skipped.
    pub fn take(
        &self,
        sink: &str,
        max: usize,
        in_flight: &HashSet<u64>,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.promote_due(sink, now_ms())?;
        let mut out = Vec::new();
        let mut bodies: HashMap<u64, BodyRow> = HashMap::new();
        let mut orphans = sled::Batch::default();
        let mut orphan_count = 0;
        for item in self.tree.scan_prefix(sink_prefix(READY, sink)) {
            if out.len() >= max {
                break;
            }
            let (key, value) = item?;
            let (_, rest) = split_sink(&key).ok_or_else(|| corrupt(&key, "bad key"))?;
            let seq = u64_at(rest, 0).ok_or_else(|| corrupt(&key, "bad key"))?;
            if in_flight.contains(&seq) {
                continue;
            }
            let row: DeliveryRow = decode(&key, &value)?;
            let ekey = seq_key(EVENT, seq);
            let Some(ev) = self.tree.get(&ekey)? else {
                tracing::error!(sink, seq, "delivery refers to a missing event; dropping it");
                orphans.remove(key);
                orphan_count += 1;
                continue;
            };
            let (ev, inline) = EventRow::decode(&ekey, &ev)?;
            let body = match bodies.entry(ev.body) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(match inline {
                    Some(payload) => BodyRow::new(payload),
                    None => BodyRow::load(&self.tree, ev.body)?,
                }),
            };
            let payload = body.text.clone();
            let json = if ev.properties_at.is_some() {
                body.json()
            } else {
                None
            };
            out.push(Delivery {
                seq,
                attempts: row.attempts,
                event: ev.restore(&ekey, json),
                payload,
            });
        }
        if orphan_count > 0 {
            self.tree.apply_batch(orphans)?;
            METRICS
                .queue_pending
                .with_label_values(&[sink])
                .sub(orphan_count);
        }
        Ok(out)
    }

    /// Moves `sink`'s waiting deliveries whose time has come to the ready rows.
    fn promote_due(&self, sink: &str, now: u64) -> Result<(), QueueError> {
        let _moving = self.lock_moves();
        let prefix = sink_prefix(WAITING, sink);
        let mut end = prefix.clone();
        end.extend_from_slice(&(now + 1).to_be_bytes());
        let mut batch = sled::Batch::default();
        let mut moved = 0;
        for item in self.tree.range(prefix.clone()..end).take(10_000) {
            let (key, value) = item?;
            let seq = split_sink(&key)
                .and_then(|(_, rest)| u64_at(rest, 8))
                .ok_or_else(|| corrupt(&key, "bad waiting key"))?;
            batch.remove(key);
            batch.insert(sink_seq_key(READY, sink, seq), value);
            moved += 1;
        }
        if moved > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// When `sink`'s earliest waiting delivery is due, if it has any.
    pub fn next_due(&self, sink: &str) -> Result<Option<u64>, QueueError> {
        match self.tree.scan_prefix(sink_prefix(WAITING, sink)).next() {
            Some(item) => {
                let (key, _) = item?;
                Ok(split_sink(&key).and_then(|(_, rest)| u64_at(rest, 0)))
            }
            None => Ok(None),
        }
    }

    /// Records what became of a batch of `sink`'s deliveries.
    pub fn complete(
        &self,
        sink: &str,
        results: &[(&Delivery, Decision)],
    ) -> Result<(), QueueError> {
        let _moving = self.lock_moves();
        let now = now_ms();
        let mut batch = sled::Batch::default();
        let (mut done, mut dead) = (0i64, 0i64);
        for (d, decision) in results {
            let ready = sink_seq_key(READY, sink, d.seq);
            batch.remove(ready);
            match decision {
                Decision::Delivered => {
                    batch.insert(done_key(d.seq, sink), &now.to_be_bytes());
                    done += 1;
                }
                Decision::Retry { due_ms, error } => {
                    let row = DeliveryRow {
                        attempts: d.attempts + 1,
                        last_error: Some(error.clone()),
                    };
                    batch.insert(waiting_key(sink, *due_ms, d.seq), encode(&row));
                }
                Decision::Dead { error } => {
                    let letter = self.dead_letter(sink, d, error, now)?;
                    batch.insert(sink_seq_key(DEAD, sink, d.seq), encode(&letter));
                    dead += 1;
                }
            }
        }
        self.tree.apply_batch(batch)?;
        METRICS
            .queue_pending
            .with_label_values(&[sink])
            .sub(done + dead);
        METRICS.dead_letters.with_label_values(&[sink]).add(dead);
        Ok(())
    }

    /// Counts pending deliveries and dead letters per sink into the gauges.
    fn count_into_metrics(&self, snapshot: u64) {
        let started = std::time::Instant::now();
        let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for prefix in [READY, WAITING, DEAD] {
            for (i, item) in self.tree.scan_prefix([prefix]).enumerate() {
                if i % 10_000 == 0 && self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok((key, _)) = item else { continue };
                let Some((sink, rest)) = split_sink(&key) else {
                    continue;
                };
                let seq = u64_at(rest, if prefix == WAITING { 8 } else { 0 }).unwrap_or(u64::MAX);
                if seq >= snapshot {
                    continue;
                }
                let c = counts.entry(sink.to_string()).or_default();
                if prefix == DEAD {
                    c.1 += 1;
                } else {
                    c.0 += 1;
                }
            }
        }
        for (sink, (pending, dead)) in &counts {
            METRICS
                .queue_pending
                .with_label_values(&[sink])
                .add(*pending);
            METRICS.dead_letters.with_label_values(&[sink]).add(*dead);
        }
        tracing::info!(elapsed = ?started.elapsed(), "queue counted");
        self.counted.send_replace(true);
    }

    /// Waits until the backlog present at start has been counted into the gauges; dispatchers
    /// wait for this so that their completions are not subtracted before the rows are counted.
    pub async fn wait_counted(&self) {
        let mut rx = self.counted.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    fn sink_stats(&self) -> Result<BTreeMap<String, SinkStats>, QueueError> {
        let mut sinks: BTreeMap<String, SinkStats> = BTreeMap::new();
        for prefix in [READY, WAITING, DEAD] {
            for item in self.tree.scan_prefix([prefix]) {
                let (key, _) = item?;
                let Some((sink, _)) = split_sink(&key) else {
                    continue;
                };
                let s = sinks.entry(sink.to_string()).or_default();
                match prefix {
                    READY => s.ready += 1,
                    WAITING => s.waiting += 1,
                    _ => s.dead += 1,
                }
            }
        }
        Ok(sinks)
    }

    /// Counts everything in the queue (a full scan: for the CLI and the admin API); the
    /// `configured` sinks are listed even when they hold nothing.
    pub fn stats<'a>(
        &self,
        configured: impl IntoIterator<Item = &'a String>,
    ) -> Result<Stats, QueueError> {
        let count = |p: u8| self.tree.scan_prefix([p]).count() as u64;
        let mut sinks = self.sink_stats()?;
        for name in configured {
            sinks.entry(name.clone()).or_default();
        }
        Ok(Stats {
            events: count(EVENT),
            bodies: count(BODY),
            dedup_keys: count(DEDUP),
            sinks,
            disk_bytes: self.db.size_on_disk()?,
        })
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), QueueError> {
        self.db.flush()?;
        Ok(())
    }

    /// Whether an event id has been accepted within the dedup window.
    pub fn seen(&self, event_id: &str) -> Result<bool, QueueError> {
        let Some(key) = crate::event::DedupKey::parse_hex(event_id) else {
            return Ok(false);
        };
        Ok(self.tree.contains_key(dedup_key(&key.0))?)
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
