//! The committer thread: group commit of accepts and replays, and retention between groups.
//!
//! One writer decides duplicates, so two concurrent retries of one event cannot both be
//! accepted, and every request waiting while a flush runs shares the next one. Each request is
//! priced on disk before it joins the batch and refused if it would cross `storage.min_free`;
//! a group whose write fails is rolled back (see `rollback`), so a refusal stores nothing.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::QueueError;
use super::flusher::{Flusher, Pending};
use super::space;
use super::stage::{AcceptOutcome, Claimed, Prepared, Staged, stage_accept};
use super::store::{Reply, Store};
use super::trees::Tree;
use crate::clock::now_ms;
use crate::metrics::METRICS;

/// Most requests folded into one group.
const MAX_GROUP: usize = 1024;
/// Writes between the points where tests can make the apply fail (a fault in mid-group).
const FAULT_EVERY: usize = 1000;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(5);

pub(super) enum Command {
    Accept {
        prepared: Prepared,
        reply: oneshot::Sender<Result<AcceptOutcome, QueueError>>,
    },
    Replay {
        sink: Option<String>,
        event_id: Option<String>,
        reply: oneshot::Sender<Result<usize, QueueError>>,
    },
    Tick,
}

/// Runs until every sender is gone, then returns once everything it applied is flushed.
///
/// Two stages overlap: this thread stages and applies group N+1 while the flusher thread
/// fsyncs group N, so a slow fsync does not leave the CPU idle and groups grow under load.
pub(super) fn run(store: Arc<Store>, mut rx: mpsc::Receiver<Command>) {
    let flusher = Arc::new(Flusher::default());
    let flush_thread = {
        let (flusher, store) = (flusher.clone(), store.clone());
        std::thread::Builder::new()
            .name("hookbridge-flush".into())
            .spawn(move || flusher.run(&store))
    };
    let flush_thread = match flush_thread {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the flush thread");
            return;
        }
    };
    let mut last_retention = Instant::now();
    let mut cursors = super::retention::Cursors::default();
    let mut claimed = Claimed::default();
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        commit_group(&store, group, &flusher, &mut claimed);
        if last_retention.elapsed() >= RETENTION_EVERY && !store.has_failed() {
            last_retention = Instant::now();
            if let Some(queue) = store.queue.upgrade() {
                let _moving = queue.lock_moves();
                store
                    .retention
                    .run(&store.trees, &store.sinks, &mut cursors);
                queue.prune_history();
            }
        }
    }
    flusher.close();
    let _ = flush_thread.join();
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

/// A group being assembled: the requests that fit on the disk, their rows and their undo.
struct Group {
    /// The group's writes, applied in order as plain inserts and removes (a sled batch would
    /// take sled's process-wide lock and keep every node version it replaced until it ends).
    writes: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)>,
    pending: Pending,
    seen: HashSet<[u8; 16]>,
    /// Bytes the group will take on disk so far.
    need: u64,
    /// Free bytes when the group started (None: not checked).
    free: Option<u64>,
    refused: usize,
    /// What the last refused request needed.
    last_refused: u64,
    /// Rows and bytes of keys and values admitted (for the metrics).
    written: (u64, u64),
}

impl Group {
    /// An empty group, with the disk's free bytes read once if `storage.min_free` is set.
    fn new(store: &Store) -> Group {
        Group {
            writes: Vec::new(),
            pending: Pending::default(),
            seen: HashSet::new(),
            need: space::SLED_BYTES_PER_BATCH,
            free: (store.retention.min_free > 0 && !store.faults.unpriced())
                .then(|| space::free_bytes(&store.dir))
                .flatten(),
            refused: 0,
            last_refused: 0,
            written: (0, 0),
        }
    }

    /// Stages one command and admits it, or answers it at once with why it was refused (the
    /// store failed earlier, a staging error, or no room on the disk).
    fn take(&mut self, store: &Store, cmd: Command, now: u64, failed: bool, claimed: &Claimed) {
        let min_free = store.retention.min_free;
        match cmd {
            Command::Tick => {}
            Command::Accept { reply, .. } if failed => {
                let _ = reply.send(Err(store.earlier_failure()));
            }
            Command::Replay { reply, .. } if failed => {
                let _ = reply.send(Err(store.earlier_failure()));
            }
            Command::Accept { prepared, reply } => {
                let staged = stage_accept(store, &self.seen, claimed, now, prepared);
                match self.admit_staged(staged, min_free) {
                    Ok((added, outcome)) => {
                        add_counts(&mut self.pending.added, added);
                        self.pending.replies.push(Reply::Accept(reply, outcome));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Replay {
                sink,
                event_id,
                reply,
            } => {
                let staged = super::dead::stage_replay(store, sink.as_deref(), event_id.as_deref());
                match self.admit_staged(staged, min_free) {
                    Ok((revived, n)) => {
                        add_counts(&mut self.pending.revived, revived);
                        self.pending.replies.push(Reply::Replay(reply, n));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// Admits what staging gave, returning the deliveries it adds per sink beside its answer.
    fn admit_staged<T>(
        &mut self,
        staged: Result<(Staged, T), QueueError>,
        min_free: u64,
    ) -> Result<(BTreeMap<String, i64>, T), QueueError> {
        let (staged, answer) = staged?;
        let added = staged.added.clone();
        self.admit(staged, min_free)?;
        Ok((added, answer))
    }

    /// Keeps `/readyz` at 503 while requests are refused for want of disk, and logs the refusals.
    fn report_pressure(&self, store: &Store) {
        if self.free.is_some() {
            let mut pressure = store
                .pressure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if self.refused > 0 {
                *pressure = Some(self.last_refused);
            } else if !self.pending.replies.is_empty() {
                *pressure = None;
            }
        }
        if self.refused > 0 {
            tracing::warn!(
                refused = self.refused,
                free = self.free,
                min_free = store.retention.min_free,
                "refusing deliveries: they would take the disk below storage.min_free"
            );
        }
    }

    /// Adds a staged request if the disk has room for it; else says why not.
    fn admit(&mut self, staged: Staged, min_free: u64) -> Result<(), QueueError> {
        let cost = staged.cost();
        if let Some(free) = self.free {
            let need = self.need.saturating_add(cost);
            if free < min_free.saturating_add(need) {
                self.refused += 1;
                self.last_refused = need;
                return Err(QueueError::DiskFull {
                    free,
                    min_free,
                    need,
                });
            }
        }
        self.need += cost;
        self.written.0 += staged.writes.len() as u64;
        self.written.1 += staged.bytes();
        self.writes.extend(staged.writes);
        self.seen.extend(staged.claimed);
        self.pending.undo.extend(staged.undo);
        Ok(())
    }
}

/// Stages every command of a group, answers those refused, and applies the rest as one write.
fn commit_group(store: &Store, group: Vec<Command>, flusher: &Flusher, claimed: &mut Claimed) {
    let mut g = Group::new(store);
    let now = now_ms();
    let failed = store.has_failed();
    for cmd in group {
        g.take(store, cmd, now, failed, claimed);
    }
    g.report_pressure(store);
    if g.pending.replies.is_empty() {
        return;
    }
    apply(store, g, flusher, claimed);
}

/// Adds per-sink delivery counts into `into`.
fn add_counts(into: &mut BTreeMap<String, i64>, counts: BTreeMap<String, i64>) {
    for (sink, n) in counts {
        *into.entry(sink).or_default() += n;
    }
}

/// Writes a higher seq floor before rows whose seqs reach the one on disk, so that no seq is
/// handed out twice across a restart (a floor too high is harmless: it is never undone).
fn raise_floor(store: &Store) -> sled::Result<()> {
    let next = store.next_seq.load(std::sync::atomic::Ordering::SeqCst);
    if next <= store.floor.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let floor = next + super::stage::FLOOR_STEP;
    store
        .trees
        .q
        .insert(super::keys::FLOOR, &floor.to_be_bytes())?;
    store
        .floor
        .store(floor, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Writes an admitted group's rows in order and hands it to the flusher, whose fsync answers
/// its requests; a group whose write fails is refused and rolled back.
fn apply(store: &Store, mut g: Group, flusher: &Flusher, claimed: &mut Claimed) {
    let started = Instant::now();
    let result = raise_floor(store).and_then(|()| {
        g.writes
            .iter()
            .enumerate()
            .try_for_each(|(i, (tree, k, v))| {
                if i % FAULT_EVERY == 0 {
                    store.faults.check("apply")?;
                }
                store.trees.write(*tree, k, v.as_deref())
            })
    });
    match result {
        Ok(()) => {
            // Readers that note the next generation see this group's rows.
            let generation = store.generation.load(std::sync::atomic::Ordering::SeqCst);
            claimed.push(generation, std::mem::take(&mut g.seen));
            store
                .generation
                .store(generation + 1, std::sync::atomic::Ordering::SeqCst);
            METRICS
                .commit_apply_seconds
                .observe(started.elapsed().as_secs_f64());
            METRICS.commit_rows.inc_by(g.written.0);
            METRICS.commit_bytes.inc_by(g.written.1);
            flusher.submit(g.pending)
        }
        Err(e) => store.fail(g.pending.replies, g.pending.undo, &QueueError::from(e)),
    }
}
