//! Attempt history: each send of a delivery and what came of it, for the status page.
//!
//! Kept in its own sled tree beside the queue, written after a batch's outcome is recorded.
//! It is a record for people, not state the queue runs on: a write that fails is logged and
//! the delivery goes on as if it had been written. Rows go with their events (see `prune`).
//! A delivery that goes out at its first attempt writes no row of its own: its sink's cursor
//! and the batch's mark say that and when, and [`Queue::attempts`] reads them from there. A
//! delivery that succeeds from a ready row (a retry, a replay) gets a row, as its batch's mark
//! would not be its own.

use serde::{Deserialize, Serialize};

use super::keys::*;
use super::{Decision, Queue, QueueError, decode, encode};
use crate::event::Delivery;

/// The tree that holds attempt rows: key = event seq, sink, 0, attempt time (ms).
/// Most rows one prune removes, so a prune never holds a dispatcher up for long.
const PRUNE_LIMIT: usize = 1_000;

/// One attempt at delivering an event to a sink.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    /// The sink.
    pub sink: String,
    /// When the outcome was recorded, epoch ms.
    pub at: u64,
    /// `delivered`, `retry`, `dead`, or `unavailable` (the sink was down; no attempt spent).
    pub outcome: String,
    /// What the destination reported, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the sink said of a delivery, when it says anything (a command's exit status and
    /// run time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the next attempt is due, for retries, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<u64>,
}

impl Attempt {
    /// An attempt at `sink` recorded at `at` with `outcome`, nothing reported yet.
    fn new(sink: &str, at: u64, outcome: &str) -> Self {
        Attempt {
            sink: sink.to_string(),
            at,
            outcome: outcome.to_string(),
            error: None,
            detail: None,
            next_at: None,
        }
    }
}

fn row_key(seq: u64, sink: &str, at: u64) -> Vec<u8> {
    let mut k = seq.to_be_bytes().to_vec();
    k.extend_from_slice(sink.as_bytes());
    k.push(0);
    k.extend_from_slice(&at.to_be_bytes());
    k
}

impl Queue {
    fn history(&self) -> Result<sled::Tree, QueueError> {
        Ok(self.trees.history.clone())
    }

    /// Records the failed attempts of a batch `sink` sent at `now` (the delivered ones are in
    /// their delivered records); failures to write are logged, not returned.
    pub fn record_attempts(&self, sink: &str, results: &[(&Delivery, Decision)], now: u64) {
        let mut rows = results
            .iter()
            .filter_map(|(d, decision)| match decision {
                Decision::Delivered | Decision::DeliveredWith(_) => None,
                Decision::Retry { due_ms, error } => Some((
                    d.seq,
                    Attempt {
                        error: Some(error.clone()),
                        next_at: Some(*due_ms),
                        ..Attempt::new(sink, now, "retry")
                    },
                )),
                Decision::Dead { error } => Some((
                    d.seq,
                    Attempt {
                        error: Some(error.clone()),
                        ..Attempt::new(sink, now, "dead")
                    },
                )),
            })
            .peekable();
        if rows.peek().is_some() {
            self.write_attempts(sink, rows);
        }
    }

    /// Records that a batch could not be sent because `sink` was down as a whole.
    pub fn record_unavailable(&self, sink: &str, batch: &[Delivery], error: &str) {
        let now = crate::clock::now_ms();
        let rows = batch.iter().map(|d| {
            (
                d.seq,
                Attempt {
                    error: Some(error.to_string()),
                    ..Attempt::new(sink, now, "unavailable")
                },
            )
        });
        self.write_attempts(sink, rows);
    }

    /// Writes `sink`'s attempt rows, each under its event's seq.
    fn write_attempts(&self, sink: &str, rows: impl Iterator<Item = (u64, Attempt)>) {
        let result = self.history().and_then(|tree| {
            let mut batch = sled::Batch::default();
            for (seq, attempt) in rows {
                batch.insert(row_key(seq, sink, attempt.at), encode(&attempt));
            }
            tree.apply_batch(batch)?;
            self.prune(&tree)
        });
        if let Err(e) = result {
            tracing::warn!(sink, error = %e, "cannot record the attempt history");
        }
    }

    /// Removes the history of events retention removed since the last prune (called beside
    /// retention, as writes no longer come with every batch).
    pub(super) fn prune_history(&self) {
        if let Err(e) = self.history().and_then(|tree| self.prune(&tree)) {
            tracing::warn!(error = %e, "cannot prune the attempt history");
        }
    }

    /// Records that `sink` delivered `seq` at `now`, from a ready row or with the sink's word
    /// on it (logged on failure).
    pub(super) fn record_delivered(&self, sink: &str, seq: u64, now: u64, detail: Option<String>) {
        let attempt = Attempt {
            detail,
            ..Attempt::new(sink, now, "delivered")
        };
        self.write_attempts(sink, std::iter::once((seq, attempt)));
    }

    /// When `sink` delivered `seq`: its own history row, else the mark of the batch that
    /// held it (the first mark at or after it).
    pub(super) fn delivered_at(&self, sink: &str, seq: u64) -> Result<Option<u64>, QueueError> {
        let mut own = row_key(seq, sink, 0);
        own.truncate(own.len() - 8);
        for item in self.history()?.scan_prefix(&own).rev() {
            let (k, v) = item?;
            let attempt: Attempt = decode(&k, &v)?;
            if attempt.outcome == "delivered" {
                return Ok(Some(attempt.at));
            }
        }
        let from = sink_seq_key(MARK, sink, seq);
        let mut end = sink_prefix(MARK, sink);
        if let Some(zero) = end.last_mut() {
            *zero = 1;
        }
        Ok(match self.trees.q.range(from..end).next() {
            Some(item) => u64_at(&item?.1, 0),
            None => None,
        })
    }

    /// Removes history rows of events the queue no longer holds (retention removes log rows
    /// in seq order, so those are the rows below the oldest stored one).
    fn prune(&self, history: &sled::Tree) -> Result<(), QueueError> {
        let oldest = match self.trees.log.iter().next() {
            Some(item) => u64_at(&item?.0, 0).unwrap_or(0),
            None => u64::MAX,
        };
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in history
            .range(..oldest.to_be_bytes().to_vec())
            .take(PRUNE_LIMIT)
        {
            batch.remove(item?.0);
            n += 1;
        }
        if n > 0 {
            history.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Every recorded attempt for the event with sequence number `seq`, oldest first per sink:
    /// the failures (and deliveries from ready rows) from the history, the other deliveries
    /// from where each sink stands in the log.
    pub fn attempts(&self, seq: u64) -> Result<Vec<Attempt>, QueueError> {
        let tree = self.history()?;
        let mut out = Vec::new();
        for item in tree.scan_prefix(seq.to_be_bytes()) {
            let (k, v) = item?;
            out.push(decode::<Attempt>(&k, &v)?);
        }
        let routed = match super::log::find(&self.trees.log, seq)? {
            Some((k, v)) => super::status::routed_sinks(&super::log::LogRow::decode(&k, &v)?, seq),
            None => Vec::new(),
        };
        let waiting = self.waiting_index(&routed, |s| s == seq)?;
        for d in self.deliveries(seq, &routed, &routed, &waiting)? {
            if d.state != "delivered"
                || out
                    .iter()
                    .any(|a| a.sink == d.sink && a.outcome == "delivered")
            {
                continue;
            }
            out.push(Attempt::new(&d.sink, d.at.unwrap_or(0), "delivered"));
        }
        out.sort_by_key(|a| a.at);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::tests::routed;

    /// A queue holding one event routed to sink `s`, and that delivery taken.
    async fn one_taken(dir: &std::path::Path) -> (Arc<Queue>, Vec<Delivery>) {
        let queue = Queue::open(dir, crate::queue::tests::long()).unwrap();
        queue
            .accept(Arc::from("{}"), routed(&[1], &["s"]))
            .await
            .unwrap();
        let taken = queue.take("s", 10, &Default::default()).unwrap();
        (queue, taken)
    }

    #[tokio::test]
    async fn attempts_are_recorded_in_order_and_go_with_their_event() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, taken) = one_taken(dir.path()).await;
        let d = &taken[0];
        queue.record_unavailable("s", &taken, "broker down");
        let retry = Decision::Retry {
            due_ms: 5_000,
            error: "451 later".into(),
        };
        queue.record_attempts("s", &[(d, retry)], crate::clock::now_ms() + 10);
        let got = queue.attempts(d.seq).unwrap();
        let outcomes: Vec<_> = got.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["unavailable", "retry"]);
        assert_eq!(got[1].next_at, Some(5_000));
        assert_eq!(got[1].error.as_deref(), Some("451 later"));
        assert!(queue.attempts(d.seq + 1).unwrap().is_empty());

        // A delivery is read from its delivered record, not written twice.
        let history_rows = queue.history().unwrap().len();
        std::thread::sleep(std::time::Duration::from_millis(20));
        queue.complete("s", &[(d, Decision::Delivered)]).unwrap();
        queue.record_attempts(
            "s",
            &[(d, Decision::Delivered)],
            crate::clock::now_ms() + 20,
        );
        assert_eq!(queue.history().unwrap().len(), history_rows);
        let got = queue.attempts(d.seq).unwrap();
        let outcomes: Vec<_> = got.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["unavailable", "retry", "delivered"]);
        assert_eq!(got[2].sink, "s");
        assert!(got[2].at > 0);

        queue.trees.log.remove(log_key(d.seq)).unwrap();
        queue.prune_history();
        assert!(queue.attempts(d.seq).unwrap().is_empty(), "pruned");
        queue.close().unwrap();
    }

    #[tokio::test]
    async fn a_delivery_with_the_sinks_word_keeps_it_as_its_detail() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, taken) = one_taken(dir.path()).await;
        let said = Decision::DeliveredWith("/bin/restore exited with status 0 after 42 ms".into());
        queue.complete("s", &[(&taken[0], said)]).unwrap();
        let got = queue.attempts(taken[0].seq).unwrap();
        assert_eq!(
            got.len(),
            1,
            "one delivered row, not a second from the mark: {got:?}"
        );
        assert_eq!(got[0].outcome, "delivered");
        assert_eq!(got[0].error, None);
        assert_eq!(
            got[0].detail.as_deref(),
            Some("/bin/restore exited with status 0 after 42 ms")
        );
        assert!(queue.take("s", 10, &Default::default()).unwrap().is_empty());
        queue.close().unwrap();
    }
}
