//! The durable queue (sled): accepted events and their deliveries, written ahead of any sending.
//!
//! Writes that must be durable before the 2xx (accepts, replays) go through one committer thread
//! that batches concurrent requests into one sled batch and one fsync (group commit). The
//! dispatchers read and complete deliveries directly; a completion lost in a crash only means a
//! delivery is sent again, which at-least-once allows.

mod browse;
mod commit;
mod dead;
mod enrich;
mod history;
pub mod keys;
mod retention;
mod status;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};

pub use browse::{EventQuery, RecentEvents};
pub use commit::{AcceptOutcome, RoutedEvent};
pub use dead::DeadLetter;
pub use history::Attempt;
pub use retention::Retention;
pub use status::{DeliveryStatus, EventStatus};

use crate::event::Event;
use crate::metrics::METRICS;
use crate::sinks::Delivery;
use keys::*;

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// sled failed (disk full, I/O error, corruption).
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// Free space is below `storage.min_free`.
    #[error("only {free} bytes free on the queue's disk, below storage.min_free ({min_free})")]
    DiskFull {
        /// Bytes available.
        free: u64,
        /// The configured floor.
        min_free: u64,
    },
    /// A group commit failed; nothing of that batch was acknowledged.
    #[error("the write failed: {0}")]
    Commit(String),
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

/// A stored event and the body it came in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRow {
    /// The event.
    pub event: Event,
    /// Sequence number of its body row.
    pub body: u64,
    /// Where `event`'s properties sit in the body (a JSON pointer) when they were left out of
    /// the row to store them once; see [`EventRow::restore`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties_at: Option<String>,
}

/// The first byte of an event row that carries its payload after the row's JSON (rows that
/// start with `{` are the older, JSON-only form, whose payload is always in a body row).
const ROW_WITH_PAYLOAD: u8 = 1;

impl EventRow {
    /// The stored form: the row's JSON, then `payload` when the event keeps its payload inline
    /// (it was its request's only routed event), in which case `body` is the event's own seq.
    pub fn encode(&self, payload: Option<&[u8]>) -> Vec<u8> {
        let json = encode(self);
        let payload = payload.unwrap_or_default();
        let mut out = Vec::with_capacity(5 + json.len() + payload.len());
        out.push(ROW_WITH_PAYLOAD);
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(payload);
        out
    }

    /// Reads a stored row (either form) and the payload it carries inline, if any.
    pub fn decode<'a>(key: &[u8], value: &'a [u8]) -> Result<(Self, Option<&'a [u8]>), QueueError> {
        if value.first() != Some(&ROW_WITH_PAYLOAD) {
            return Ok((decode(key, value)?, None));
        }
        let len = value
            .get(1..5)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| corrupt(key, "truncated event row"))? as usize;
        let json = value
            .get(5..5 + len)
            .ok_or_else(|| corrupt(key, "truncated event row"))?;
        let payload = &value[5 + len..];
        Ok((decode(key, json)?, (!payload.is_empty()).then_some(payload)))
    }

    /// The stored event, with its properties put back from `body` (the payload's JSON) when the
    /// row points there. Should they be missing, the event goes out without them (logged): one
    /// damaged row must not stop its sink.
    pub fn restore(self, key: &[u8], body: Option<&Value>) -> Event {
        let EventRow {
            mut event,
            properties_at,
            ..
        } = self;
        if let Some(at) = properties_at {
            match body.and_then(|v| v.pointer(&at)).and_then(Value::as_object) {
                Some(props) => event.properties = props.clone(),
                None => tracing::error!(
                    row = %String::from_utf8_lossy(key),
                    event_id = %event.event_id,
                    pointer = %at,
                    "the event's properties are missing from its payload; delivering it without them"
                ),
            }
        }
        event
    }
}

/// A body row read for a batch of deliveries: its text, and its JSON once an event needs it.
struct BodyRow {
    text: Arc<str>,
    json: std::cell::OnceCell<Option<Value>>,
}

impl BodyRow {
    /// Reads body row `seq` (`null` if it is gone).
    fn load(tree: &sled::Tree, seq: u64) -> Result<Self, QueueError> {
        Ok(match tree.get(seq_key(BODY, seq))? {
            Some(b) => BodyRow::new(&b),
            None => BodyRow::new(b"null"),
        })
    }

    /// A payload's text.
    fn new(payload: &[u8]) -> Self {
        BodyRow {
            text: Arc::from(String::from_utf8_lossy(payload).as_ref()),
            json: std::cell::OnceCell::new(),
        }
    }

    /// The body parsed, if it is JSON.
    fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| serde_json::from_str(&self.text).ok())
            .as_ref()
    }
}

/// A pending delivery's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryRow {
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure, for `queue stats` and dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
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
    db: sled::Db,
    tree: sled::Tree,
    tx: std::sync::Mutex<Option<mpsc::Sender<commit::Command>>>,
    committer: std::sync::Mutex<Option<JoinHandle<()>>>,
    wake: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
    /// Set when a commit failed: sled does not recover from that in-process.
    failed: std::sync::atomic::AtomicBool,
    dir: std::path::PathBuf,
    min_free: u64,
    counted: tokio::sync::watch::Sender<bool>,
    counting: std::sync::Mutex<Option<JoinHandle<()>>>,
    closing: std::sync::atomic::AtomicBool,
    /// Held while deliveries move between ready and waiting rows, and by retention while it
    /// decides which events no delivery needs: a row in mid-move would be missed by its scans.
    moving: std::sync::Mutex<()>,
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Queue {
    /// Opens (or creates) the queue in `dir` and starts its committer.
    pub fn open(dir: &Path, retention: Retention) -> Result<Arc<Queue>, QueueError> {
        std::fs::create_dir_all(dir).map_err(|e| QueueError::Storage(sled::Error::Io(e)))?;
        // The node cache: writes go to the tail of each key range and dedup lookups are random,
        // so a larger cache buys little; 8 MiB keeps a million-event backlog under 128 MiB RSS.
        let db = sled::Config::new()
            .path(dir.join("queue"))
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()?;
        let tree = db.open_tree("q")?;
        let (tx, rx) = mpsc::channel(4096);
        let queue = Arc::new(Queue {
            db: db.clone(),
            tree: tree.clone(),
            tx: std::sync::Mutex::new(Some(tx)),
            committer: std::sync::Mutex::new(None),
            wake: std::sync::Mutex::new(HashMap::new()),
            failed: std::sync::atomic::AtomicBool::new(false),
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
        let weak = Arc::downgrade(&queue);
        if let Some(tx) = queue.sender().ok().map(|t| t.downgrade()) {
            std::thread::Builder::new()
                .name("hookbridge-tick".into())
                .spawn(move || commit::tick(tx))
                .map_err(|e| QueueError::Storage(sled::Error::Io(e)))?;
        }
        let handle = std::thread::Builder::new()
            .name("hookbridge-commit".into())
            .spawn({
                let dir = dir.to_path_buf();
                move || commit::run(db, tree, rx, weak, retention, dir)
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

    /// Why the queue refuses deliveries for lack of space right now, if it does.
    pub fn space_problem(&self) -> Option<String> {
        commit::low_on_space(&self.dir, self.min_free).map(|e| e.to_string())
    }

    /// Refuses at once after a failed commit: sled may block on a store that saw an I/O error.
    fn check_writable(&self) -> Result<(), QueueError> {
        if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QueueError::Commit(
                "an earlier write failed (disk full or I/O error); restart once fixed".into(),
            ));
        }
        Ok(())
    }

    /// Whether the queue can still take writes: the committer runs and no commit has failed.
    ///
    /// After a failed commit (disk full, I/O error) sled refuses further writes until reopened,
    /// so `/readyz` turns 503 and the systemd watchdog is withheld: systemd restarts the daemon.
    pub fn is_alive(&self) -> bool {
        !self.failed.load(std::sync::atomic::Ordering::SeqCst)
            && self
                .committer
                .lock()
                .ok()
                .and_then(|h| h.as_ref().map(|h| !h.is_finished()))
                .unwrap_or(false)
    }

    /// Stops the committer after it has written what it was given, and flushes.
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

fn corrupt(key: &[u8], reason: &str) -> QueueError {
    QueueError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

/// JSON-encodes a row.
fn encode<T: Serialize>(row: &T) -> Vec<u8> {
    serde_json::to_vec(row).unwrap_or_default()
}

/// JSON-decodes a row, naming it on failure.
fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, QueueError> {
    serde_json::from_slice(value).map_err(|e| corrupt(key, &e.to_string()))
}
