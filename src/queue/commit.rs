//! The committer thread: group commit of accepts and replays, and retention between groups.
//!
//! One writer decides duplicates, so two concurrent retries of one event cannot both be
//! accepted, and every request waiting while a flush runs shares the next one.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};
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
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// An event and the sinks the routing table sent it to.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    /// The parsed event.
    pub event: Event,
    /// Destination sink names (empty when no route matched).
    pub sinks: Vec<String>,
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

/// Runs until every sender is gone, then returns.
pub(super) fn run(
    db: sled::Db,
    tree: sled::Tree,
    mut rx: mpsc::Receiver<Command>,
    queue: Weak<Queue>,
    retention: Retention,
) {
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
        commit_group(&db, &tree, group, &queue, &retention);
        if last_retention.elapsed() >= RETENTION_EVERY {
            last_retention = Instant::now();
            retention.run(&tree, &mut dedup_cursor);
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
) {
    let now = now_ms();
    let mut batch = sled::Batch::default();
    let mut seen: HashSet<[u8; 16]> = HashSet::new();
    let mut replies = Vec::with_capacity(group.len());
    let mut added: BTreeMap<String, i64> = BTreeMap::new();
    let mut revived: BTreeMap<String, i64> = BTreeMap::new();
    let mut failure: Option<QueueError> = None;

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

    let started = Instant::now();
    if let Err(e) = tree.apply_batch(batch) {
        failure = Some(e.into());
    } else if let Err(e) = db.flush() {
        failure = Some(e.into());
    }
    METRICS
        .commit_fsync_seconds
        .observe(started.elapsed().as_secs_f64());
    METRICS.commit_batch_requests.observe(replies.len() as f64);

    if let Some(e) = failure {
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
        return;
    }
    for r in replies {
        match r {
            Reply::Accept(tx, o) => {
                let _ = tx.send(Ok(o));
            }
            Reply::Replay(tx, n) => {
                let _ = tx.send(Ok(n));
            }
        }
    }
    for (sink, n) in &revived {
        METRICS.dead_letters.with_label_values(&[sink]).sub(*n);
    }
    for (sink, n) in added.iter().chain(revived.iter()) {
        METRICS.queue_pending.with_label_values(&[sink]).add(*n);
        if let Some(q) = queue.upgrade() {
            q.wake(sink);
        }
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
    let mut body_seq = None;
    let window_start = now.saturating_sub(retention.dedup_window.as_millis() as u64);
    for RoutedEvent { mut event, sinks } in events {
        let Some(key) = event.dedup_key() else {
            return Err(QueueError::Corrupt {
                key: event.event_id.clone(),
                reason: "event id is not a dedup key".into(),
            });
        };
        let dkey = dedup_key(&key.0);
        let already = seen.contains(&key.0)
            || match tree.get(&dkey)? {
                Some(v) => u64_at(&v, 0).is_some_and(|at| at >= window_start),
                None => false,
            };
        if already {
            outcome.duplicates.push(event.event_id);
            continue;
        }
        seen.insert(key.0);
        let seq = db.generate_id()?;
        event.accepted_at = now as i64;
        if !sinks.is_empty() {
            let body = match body_seq {
                Some(b) => b,
                None => {
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
            batch.insert(seq_key(EVENT, seq), encode(&EventRow { event, body }));
            outcome.accepted.push(id);
        } else {
            outcome.accepted.push(event.event_id);
        }
        let mut value = now.to_be_bytes().to_vec();
        value.extend_from_slice(&seq.to_be_bytes());
        batch.insert(dkey, value);
    }
    Ok(outcome)
}
