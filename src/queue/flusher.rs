//! The second stage of the group commit: fsync, then answer every request applied before it.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::QueueError;
use super::rollback::Undo;
use super::store::{Reply, Store};
use crate::metrics::METRICS;

/// Groups applied to the tree and waiting for the fsync that makes them durable.
#[derive(Default)]
pub(super) struct Pending {
    pub replies: Vec<Reply>,
    pub added: BTreeMap<String, i64>,
    pub revived: BTreeMap<String, i64>,
    /// What undoes every group in here, should the fsync fail.
    pub undo: Undo,
    closed: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.replies.is_empty()
            && self.added.is_empty()
            && self.revived.is_empty()
            && self.undo.0.is_empty()
    }
}

/// Hands applied groups from the committer to the flush thread.
#[derive(Default)]
pub(super) struct Flusher {
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
    pub fn submit(&self, group: Pending) {
        let mut p = self.lock();
        p.replies.extend(group.replies);
        for (k, v) in group.added {
            *p.added.entry(k).or_default() += v;
        }
        for (k, v) in group.revived {
            *p.revived.entry(k).or_default() += v;
        }
        p.undo.extend(group.undo);
        self.ready.notify_one();
    }

    /// Lets the flush thread end once it has flushed what it holds.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// Flushes and answers until closed. Once a write has failed nothing more is acknowledged:
    /// every later group is rolled back and refused too.
    pub fn run(&self, store: &Store) {
        loop {
            let taken = {
                let mut p = self.lock();
                while p.is_empty() && !p.closed {
                    p = match self.ready.wait(p) {
                        Ok(g) => g,
                        Err(e) => e.into_inner(),
                    };
                }
                if p.is_empty() && p.closed {
                    return;
                }
                let closed = p.closed;
                let taken = std::mem::take(&mut *p);
                p.closed = closed;
                taken
            };
            if store.has_failed() {
                store.fail(taken.replies, taken.undo, &store.earlier_failure());
                continue;
            }
            let started = Instant::now();
            let result = store
                .faults
                .check("fsync")
                .map_err(QueueError::from)
                .and_then(|()| store.files.flush(&store.db));
            METRICS
                .commit_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            METRICS
                .commit_batch_requests
                .observe(taken.replies.len() as f64);
            match result {
                Ok(_) => answer(taken, store),
                Err(e) => store.fail(taken.replies, taken.undo, &e),
            }
        }
    }
}

/// Answers a flushed group and wakes the sinks it added deliveries for.
fn answer(done: Pending, store: &Store) {
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
        if let Some(q) = store.queue.upgrade() {
            q.wake(sink);
        }
    }
}
