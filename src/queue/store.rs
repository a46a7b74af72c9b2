//! What the committer and the flush thread share: the store, what guards its writes, and the
//! replies they owe, so that neither stage imports the other's internals.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::fault::Faults;
use super::fsync::SledFiles;
use super::progress::Sinks;
use super::retention::Retention;
use super::rollback::{Rollbacks, Undo};
use super::space::Reserve;
use super::trees::Trees;
use super::{AcceptOutcome, Queue, QueueError};

/// A request applied to the tree, answered once its group is durable.
pub(super) enum Reply {
    Accept(
        oneshot::Sender<Result<AcceptOutcome, QueueError>>,
        AcceptOutcome,
    ),
    Replay(oneshot::Sender<Result<usize, QueueError>>, usize),
}

impl Reply {
    /// Refuses the request with `e`.
    pub fn refuse(self, e: &QueueError) {
        let err = QueueError::Commit(e.to_string());
        match self {
            Reply::Accept(tx, _) => {
                let _ = tx.send(Err(err));
            }
            Reply::Replay(tx, _) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

/// What the committer and the flush thread share: the store and what guards its writes.
pub(super) struct Store {
    pub db: sled::Db,
    /// sled's files, synced after each of its flushes.
    pub files: Arc<SledFiles>,
    pub trees: Trees,
    /// Each sink's place in the log.
    pub sinks: Sinks,
    /// The next seq to hand out (only the committer takes seqs; readers see how far it got).
    pub next_seq: std::sync::atomic::AtomicU64,
    /// Groups applied so far: a request notes it before reading its dedup rows (`stage.rs`).
    pub generation: std::sync::atomic::AtomicU64,
    /// The seq floor on disk: seqs below it may have been handed out before a restart.
    pub floor: std::sync::atomic::AtomicU64,
    pub queue: Weak<Queue>,
    pub retention: Retention,
    pub dir: PathBuf,
    pub faults: Faults,
    pub rollbacks: Rollbacks,
    pub reserve: Reserve,
    /// Set when a write failed: nothing is acknowledged after that until a restart.
    pub failed: Arc<AtomicBool>,
    /// What the last delivery refused for space needed, until one is admitted again: `/readyz`
    /// stays 503 while the disk could not take it.
    pub pressure: std::sync::Mutex<Option<u64>>,
    /// Threads undoing failed batches in place; `Queue::close` waits for them.
    pub undoing: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Whether a write has failed since the store was opened.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The error for requests refused after a failed write.
    pub fn earlier_failure(&self) -> QueueError {
        QueueError::Failed
    }

    /// Refuses every request of a group that could not be written, after making sure its rows
    /// will not survive: the undo is recorded durably (on room the reserve gives back) before
    /// anyone hears 503, then applied in place when sled still takes writes, else at the next
    /// start.
    pub fn fail(&self, replies: Vec<Reply>, undo: Undo, e: &QueueError) {
        let first = !self.failed.swap(true, Ordering::SeqCst);
        if first {
            tracing::error!(error = %e, requests = replies.len(), "a write failed; refusing its batch and every later one until restart");
            self.reserve.release();
        }
        let recorded = if undo.0.is_empty() {
            None
        } else {
            match self.rollbacks.record(&undo) {
                Ok(path) => Some(path),
                Err(re) => {
                    tracing::error!(error = %re, rows = undo.0.len(), "cannot record the rollback of the failed batch; its rows may remain after a restart");
                    None
                }
            }
        };
        for r in replies {
            r.refuse(e);
        }
        if undo.0.is_empty() {
            return;
        }
        // sled may block for good on a store that met an I/O error: undo on a thread of its own.
        let (db, trees, rollbacks_dir) = (self.db.clone(), self.trees.clone(), self.dir.clone());
        let files = self.files.clone();
        let undone = std::thread::Builder::new()
            .name("hookbridge-undo".into())
            .spawn(move || {
                let result = undo
                    .apply(&trees)
                    .map_err(QueueError::from)
                    .and_then(|()| files.flush(&db).map(|_| ()));
                match (result, recorded) {
                    (Ok(()), Some(path)) => {
                        if let Err(e) = Rollbacks::new(&rollbacks_dir).done(&path) {
                            tracing::warn!(error = %e, "the failed batch is undone; its rollback file stays and is applied again at start");
                        } else {
                            tracing::info!("the failed batch is undone");
                        }
                    }
                    (Ok(()), None) => tracing::info!("the failed batch is undone"),
                    (Err(e), _) => tracing::warn!(error = %e, "the failed batch cannot be undone now; its rollback is applied at the next start"),
                }
            });
        match undone {
            Ok(handle) => match self.undoing.lock() {
                Ok(mut threads) => threads.push(handle),
                Err(p) => p.into_inner().push(handle),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the undo thread; the rollback is applied at the next start")
            }
        }
    }
}
