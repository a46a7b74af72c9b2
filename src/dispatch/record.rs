//! Writing what became of sent batches to the queue, off the dispatcher's own thread.
//!
//! Recording an outcome is a sled write per delivery (and an attempt row), as costly as taking
//! it was. On the dispatcher's thread it would add to the time of every batch; here it runs on
//! a blocking thread while the dispatcher takes and sends the next batches. One write runs at
//! a time, and each takes every batch settled since the previous one began, so a busy sink's
//! outcomes go to the queue in a few large writes rather than one per batch.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::event::Delivery;
use crate::queue::{Decision, Queue};

/// Batches whose outcomes are decided and not yet in the queue, and the write under way.
#[derive(Default)]
pub(super) struct Recorder {
    waiting: Vec<(Arc<[Delivery]>, Vec<Decision>)>,
    writing: Option<Writing>,
}

/// A write under way: the batches it holds, their deliveries' sequence numbers (still handed
/// out until it ends), and the blocking task, which answers whether the queue took it.
struct Writing {
    batches: usize,
    seqs: Vec<u64>,
    task: JoinHandle<bool>,
}

impl Recorder {
    /// Queues a batch's decisions, one per delivery, in order.
    pub fn push(&mut self, batch: Arc<[Delivery]>, decisions: Vec<Decision>) {
        self.waiting.push((batch, decisions));
    }

    /// How many batches are waiting or being written: their rows are still ready in the queue.
    pub fn batches(&self) -> usize {
        self.waiting.len() + self.writing.as_ref().map_or(0, |w| w.batches)
    }

    /// Whether nothing is waiting and no write is under way.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.writing.is_none()
    }

    /// Whether a write is under way (then [`Recorder::done`] has something to wait for).
    pub fn is_writing(&self) -> bool {
        self.writing.is_some()
    }

    /// Starts writing everything waiting, unless a write is already under way.
    pub fn start(&mut self, queue: &Arc<Queue>, sink: &str) {
        if self.writing.is_some() || self.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting);
        let batches = waiting.len();
        let seqs = waiting
            .iter()
            .flat_map(|(b, _)| b.iter().map(|d| d.seq))
            .collect();
        let (queue, sink) = (queue.clone(), sink.to_string());
        let task = tokio::task::spawn_blocking(move || write(&queue, &sink, waiting));
        self.writing = Some(Writing {
            batches,
            seqs,
            task,
        });
    }

    /// Waits for the write under way (pending forever when there is none): the sequence
    /// numbers it held, and whether the queue took it (if not, they are ready to send again).
    pub async fn done(&mut self) -> (Vec<u64>, bool) {
        let Some(writing) = self.writing.as_mut() else {
            return std::future::pending().await;
        };
        let recorded = match (&mut writing.task).await {
            Ok(recorded) => recorded,
            Err(e) => {
                tracing::error!(error = %e, "recording delivery outcomes failed; they will be sent again");
                false
            }
        };
        let seqs = self.writing.take().map(|w| w.seqs).unwrap_or_default();
        (seqs, recorded)
    }
}

/// Records the outcomes of `batches` in one queue write, then their attempt history; false if
/// the queue could not record them (they will be sent again).
fn write(queue: &Queue, sink: &str, batches: Vec<(Arc<[Delivery]>, Vec<Decision>)>) -> bool {
    let (deliveries, decisions): (Vec<_>, Vec<_>) = batches.into_iter().unzip();
    let results: Vec<(&Delivery, Decision)> = deliveries
        .iter()
        .flat_map(|b| b.iter())
        .zip(decisions.into_iter().flatten())
        .collect();
    match queue.complete(sink, &results) {
        Ok(()) => {
            queue.record_attempts(sink, &results, now_ms());
            true
        }
        Err(e) => {
            tracing::error!(sink, error = %e, "cannot record delivery outcomes; they will be sent again");
            false
        }
    }
}
