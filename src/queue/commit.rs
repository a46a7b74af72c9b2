//! The committer thread: group commit of accepts and replays, and retention between groups.
//!
//! One writer decides duplicates, so two concurrent retries of one event cannot both be
//! accepted, and every request waiting while a flush runs shares the next one.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::keys::*;
use super::retention::Retention;
use super::{DeliveryRow, EventRow, Queue, QueueError, encode, now_ms};
use crate::event::Event;
use crate::metrics::METRICS;

/// Most requests folded into one batch.
const MAX_GROUP: usize = 1024;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(5);

/// An event and the sinks the routing table sent it to.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    /// The parsed event.
    pub event: Event,
    /// Destination sink names (empty when no route matched).
    pub sinks: Vec<String>,
    /// Where the event's properties sit verbatim in the payload (a JSON pointer), if they do:
    /// the event row then leaves them out and they are read back from the body row.
    pub properties_at: Option<String>,
}

/// What became of a request's events.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AcceptOutcome {
    /// Event ids stored now.
    pub accepted: Vec<String>,
    /// Event ids that were already accepted before.
    pub duplicates: Vec<String>,
}

pub(super) enum Command {
    Accept {
        payload: Arc<str>,
        events: Vec<RoutedEvent>,
        reply: oneshot::Sender<Result<AcceptOutcome, QueueError>>,
    },
    Replay {
        sink: Option<String>,
        event_id: Option<String>,
        reply: oneshot::Sender<Result<usize, QueueError>>,
    },
    Tick,
}

enum Reply {
    Accept(
        oneshot::Sender<Result<AcceptOutcome, QueueError>>,
        AcceptOutcome,
    ),
    Replay(oneshot::Sender<Result<usize, QueueError>>, usize),
}

/// Runs until every sender is gone, then returns once everything it applied is flushed.
///
/// Two stages overlap: this thread stages and applies group N+1 while the flusher thread
/// fsyncs group N, so a slow fsync does not leave the CPU idle and groups grow under load.
pub(super) fn run(
    db: sled::Db,
    tree: sled::Tree,
    mut rx: mpsc::Receiver<Command>,
    queue: Weak<Queue>,
    retention: Retention,
    dir: PathBuf,
) {
    let flusher = Arc::new(Flusher::default());
    let flush_thread = {
        let (flusher, db, queue) = (flusher.clone(), db.clone(), queue.clone());
        std::thread::Builder::new()
            .name("hookbridge-flush".into())
            .spawn(move || flusher.run(&db, &queue))
    };
    let flush_thread = match flush_thread {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the flush thread");
            return;
        }
    };
    let mut last_retention = Instant::now();
    let mut dedup_cursor: Vec<u8> = vec![DEDUP];
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        commit_group(&db, &tree, group, &queue, &retention, &flusher, &dir);
        if last_retention.elapsed() >= RETENTION_EVERY {
            last_retention = Instant::now();
            if let Some(queue) = queue.upgrade() {
                let _moving = queue.lock_moves();
                retention.run(&tree, &mut dedup_cursor);
            }
        }
    }
    flusher.close();
    let _ = flush_thread.join();
}

/// Groups applied to the tree and waiting for the fsync that makes them durable.
#[derive(Default)]
struct Pending {
    replies: Vec<Reply>,
    added: BTreeMap<String, i64>,
    revived: BTreeMap<String, i64>,
    closed: bool,
}

/// The second pipeline stage: fsync, then answer every request applied before it began.
#[derive(Default)]
struct Flusher {
    pending: Mutex<Pending>,
    ready: Condvar,
}

impl Flusher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        match self.pending.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Hands an applied group over; its replies go out after the next fsync.
    fn submit(
        &self,
        replies: Vec<Reply>,
        added: BTreeMap<String, i64>,
        revived: BTreeMap<String, i64>,
    ) {
        let mut p = self.lock();
        p.replies.extend(replies);
        for (k, v) in added {
            *p.added.entry(k).or_default() += v;
        }
        for (k, v) in revived {
            *p.revived.entry(k).or_default() += v;
        }
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    fn run(&self, db: &sled::Db, queue: &Weak<Queue>) {
        loop {
            let taken = {
                let mut p = self.lock();
                while p.replies.is_empty()
                    && p.added.is_empty()
                    && p.revived.is_empty()
                    && !p.closed
                {
                    p = match self.ready.wait(p) {
                        Ok(g) => g,
                        Err(e) => e.into_inner(),
                    };
                }
                if p.replies.is_empty() && p.added.is_empty() && p.revived.is_empty() && p.closed {
                    return;
                }
                let closed = p.closed;
                let taken = std::mem::take(&mut *p);
                p.closed = closed;
                taken
            };
            let started = Instant::now();
            let result = db.flush();
            METRICS
                .commit_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            METRICS
                .commit_batch_requests
                .observe(taken.replies.len() as f64);
            match result {
                Ok(_) => answer(taken, queue),
                Err(e) => fail(taken.replies, &QueueError::from(e), queue),
            }
        }
    }
}

/// Answers a flushed group and wakes the sinks it added deliveries for.
fn answer(done: Pending, queue: &Weak<Queue>) {
    for r in done.replies {
        match r {
            Reply::Accept(tx, o) => {
                let _ = tx.send(Ok(o));
            }
            Reply::Replay(tx, n) => {
                let _ = tx.send(Ok(n));
            }
        }
    }
    for (sink, n) in &done.revived {
        METRICS.dead_letters.with_label_values(&[sink]).sub(*n);
    }
    for (sink, n) in done.added.iter().chain(done.revived.iter()) {
        METRICS.queue_pending.with_label_values(&[sink]).add(*n);
        if let Some(q) = queue.upgrade() {
            q.wake(sink);
        }
    }
}

/// Why the store is too full to take more, if it is: checked before every group so that sled
/// never meets a full disk (it does not recover from that in-process).
pub(super) fn low_on_space(dir: &Path, min_free: u64) -> Option<QueueError> {
    if min_free == 0 {
        return None;
    }
    let st = rustix::fs::statvfs(dir).ok()?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    (free < min_free).then(|| QueueError::DiskFull { free, min_free })
}

/// Answers every command of a group with `e` without touching the store.
fn refuse_all(group: Vec<Command>, e: &QueueError) {
    tracing::warn!(error = %e, requests = group.len(), "refusing deliveries: the disk is nearly full");
    for cmd in group {
        let err = QueueError::Commit(e.to_string());
        match cmd {
            Command::Accept { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Replay { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Command::Tick => {}
        }
    }
}

/// Refuses every request of a group that could not be written, and marks the queue failed.
fn fail(replies: Vec<Reply>, e: &QueueError, queue: &Weak<Queue>) {
    tracing::error!(error = %e, requests = replies.len(), "group commit failed; refusing the batch");
    if let Some(q) = queue.upgrade() {
        q.failed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    for r in replies {
        let err = QueueError::Commit(e.to_string());
        match r {
            Reply::Accept(tx, _) => {
                let _ = tx.send(Err(err));
            }
            Reply::Replay(tx, _) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

/// Sends a `Tick` every `RETENTION_EVERY` so retention also runs when no request comes in.
pub(super) fn tick(tx: mpsc::WeakSender<Command>) {
    loop {
        std::thread::sleep(RETENTION_EVERY);
        match tx.upgrade() {
            Some(tx) => {
                if tx.blocking_send(Command::Tick).is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}

fn commit_group(
    db: &sled::Db,
    tree: &sled::Tree,
    group: Vec<Command>,
    queue: &Weak<Queue>,
    retention: &Retention,
    flusher: &Flusher,
    dir: &Path,
) {
    if let Some(e) = low_on_space(dir, retention.min_free) {
        refuse_all(group, &e);
        return;
    }
    let now = now_ms();
    let mut batch = sled::Batch::default();
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let mut replies = Vec::with_capacity(group.len());
    let mut added: BTreeMap<String, i64> = BTreeMap::new();
    let mut revived: BTreeMap<String, i64> = BTreeMap::new();

    for cmd in group {
        match cmd {
            Command::Accept {
                payload,
                events,
                reply,
            } => {
                match stage_accept(
                    db, tree, &mut batch, &mut seen, &mut added, now, retention, &payload, events,
                ) {
                    Ok(outcome) => replies.push(Reply::Accept(reply, outcome)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Tick => {}
            Command::Replay {
                sink,
                event_id,
                reply,
            } => {
                match super::dead::stage_replay(
                    tree,
                    &mut batch,
                    sink.as_deref(),
                    event_id.as_deref(),
                    &mut revived,
                ) {
                    Ok(n) => replies.push(Reply::Replay(reply, n)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    match tree.apply_batch(batch) {
        Ok(()) => flusher.submit(replies, added, revived),
        Err(e) => fail(replies, &QueueError::from(e), queue),
    }
}

/// Adds one request's rows to the group's batch and decides which events are duplicates.
#[allow(clippy::too_many_arguments)]
fn stage_accept(
    db: &sled::Db,
    tree: &sled::Tree,
    batch: &mut sled::Batch,
    seen: &mut HashSet<[u8; 16]>,
    added: &mut BTreeMap<String, i64>,
    now: u64,
    retention: &Retention,
    payload: &str,
    events: Vec<RoutedEvent>,
) -> Result<AcceptOutcome, QueueError> {
    let mut outcome = AcceptOutcome::default();
    let window_start = now.saturating_sub(retention.dedup_window.as_millis() as u64);
    // Decide the duplicates first: a request whose only new event is routed stores its payload
    // inside that event's row (one row fewer), else once in a body row the events share.
    let mut fresh = Vec::with_capacity(events.len());
    for routed in events {
        let Some(key) = routed.event.dedup_key() else {
            return Err(QueueError::Corrupt {
                key: routed.event.event_id.clone(),
                reason: "event id is not a dedup key".into(),
            });
        };
        let already = seen.contains(&key.0)
            || match tree.get(dedup_key(&key.0))? {
                Some(v) => u64_at(&v, 0).is_some_and(|at| at >= window_start),
                None => false,
            };
        if already {
            outcome.duplicates.push(routed.event.event_id);
            continue;
        }
        seen.insert(key.0);
        fresh.push((key, routed));
    }
    let inline = fresh.iter().filter(|(_, r)| !r.sinks.is_empty()).count() == 1;
    let mut body_seq = None;
    for (key, routed) in fresh {
        let RoutedEvent {
            mut event,
            sinks,
            properties_at,
        } = routed;
        let seq = db.generate_id()?;
        event.accepted_at = now as i64;
        if sinks.is_empty() {
            outcome.accepted.push(event.event_id);
        } else {
            let body = match (inline, body_seq) {
                (true, _) => seq,
                (false, Some(b)) => b,
                (false, None) => {
                    let b = db.generate_id()?;
                    batch.insert(seq_key(BODY, b), payload.as_bytes());
                    body_seq = Some(b);
                    b
                }
            };
            for sink in &sinks {
                batch.insert(
                    sink_seq_key(READY, sink, seq),
                    encode(&DeliveryRow::default()),
                );
                *added.entry(sink.clone()).or_default() += 1;
            }
            let id = event.event_id.clone();
            let properties_at = properties_at.filter(|_| !event.properties.is_empty());
            if properties_at.is_some() {
                event.properties = serde_json::Map::new();
            }
            let row = EventRow {
                event,
                body,
                properties_at,
            };
            let inline_payload = inline.then_some(payload.as_bytes());
            batch.insert(seq_key(EVENT, seq), row.encode(inline_payload));
            outcome.accepted.push(id);
        }
        let mut value = now.to_be_bytes().to_vec();
        value.extend_from_slice(&seq.to_be_bytes());
        batch.insert(dedup_key(&key.0), value);
    }
    Ok(outcome)
}
