//! Changes fetched for events, stored once per event beside the queue, and the deliveries
//! parked while they are fetched.
//!
//! A delivery that needs changes it does not have yet is parked: moved to the waiting rows at
//! a due time that never comes ([`PARKED`]), so retention keeps its event and no dispatcher takes
//! it. The change file, once fetched, is written here and flushed before the parked rows go
//! back to ready: a restart after that never fetches it again.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::*;
use super::log::{self, LogRow};
use super::progress::Progress;
use super::{DeliveryRow, Queue, QueueError, decode, encode, now_ms};
use crate::event::Event;
use crate::metrics::METRICS;
use crate::sinks::Delivery;

/// The tree: `c` + seq → the changes (JSON); `a` + seq → [`FetchState`]; `f` + seq → why the
/// fetch was given up (for sinks that deliver without changes).
const CHANGES: u8 = b'c';
const STATE: u8 = b'a';
const FAILED: u8 = b'f';

/// The due time of a parked delivery: never.
pub const PARKED: u64 = u64::MAX;

/// Failed fetches of one event so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchState {
    /// Fetches that failed (outages excluded).
    pub attempts: u32,
}

impl Queue {
    fn enrich_tree(&self) -> Result<sled::Tree, QueueError> {
        Ok(self.trees.enrich.clone())
    }

    /// The stored changes of event `seq`, if they were fetched.
    pub fn changes(&self, seq: u64) -> Result<Option<Value>, QueueError> {
        let key = seq_key(CHANGES, seq);
        match self.enrich_tree()?.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Why fetching event `seq`'s changes was given up, if it was.
    pub fn changes_failure(&self, seq: u64) -> Result<Option<String>, QueueError> {
        let key = seq_key(FAILED, seq);
        Ok(self
            .enrich_tree()?
            .get(&key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Stores event `seq`'s changes and flushes them to disk before returning.
    pub async fn store_changes(&self, seq: u64, changes: &Value) -> Result<(), QueueError> {
        let tree = self.enrich_tree()?;
        let mut batch = sled::Batch::default();
        batch.insert(seq_key(CHANGES, seq), encode(changes));
        batch.remove(seq_key(STATE, seq));
        batch.remove(seq_key(FAILED, seq));
        tree.apply_batch(batch)?;
        let (files, db) = (self.store.files.clone(), self.db.clone());
        tokio::task::spawn_blocking(move || files.flush(&db))
            .await
            .map_err(|e| QueueError::Storage(sled::Error::Io(std::io::Error::other(e))))??;
        Ok(())
    }

    /// Counts one failed fetch of event `seq`; returns the count.
    pub fn count_failed_fetch(&self, seq: u64) -> Result<u32, QueueError> {
        let tree = self.enrich_tree()?;
        let key = seq_key(STATE, seq);
        let mut state: FetchState = match tree.get(&key)? {
            Some(v) => decode(&key, &v)?,
            None => FetchState::default(),
        };
        state.attempts += 1;
        tree.insert(key, encode(&state))?;
        Ok(state.attempts)
    }

    /// Records that the fetch for `seq` was given up (a replay starts counting again).
    pub fn give_up_changes(&self, seq: u64, reason: &str) -> Result<(), QueueError> {
        let tree = self.enrich_tree()?;
        let mut batch = sled::Batch::default();
        batch.remove(seq_key(STATE, seq));
        batch.insert(seq_key(FAILED, seq), reason.as_bytes());
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// Up to `max` event seqs with deliveries for `sink` ready (in a ready row, or in the
    /// log and not yet settled), ready rows first, then oldest first.
    pub fn ready_seqs(&self, sink: &str, max: usize) -> Result<Vec<u64>, QueueError> {
        let mut out = Vec::new();
        for item in self.trees.q.scan_prefix(sink_prefix(READY, sink)).take(max) {
            let (key, _) = item?;
            if let Some(seq) = row_seq(READY, &key) {
                out.push(seq);
            }
        }
        let state = self.sink_state(sink);
        let p = state.lock();
        let start = match log::find(&self.trees.log, p.cursor + 1)? {
            Some((k, _)) => k.to_vec(),
            None => log_key(p.cursor + 1).to_vec(),
        };
        for item in self.trees.log.range(start..) {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            let row = LogRow::decode(&k, &v)?;
            for (seq, e) in (row.first..).zip(&row.events) {
                if out.len() < max && seq > p.cursor && e.routed_to(sink) && unsettled(&p, seq) {
                    out.push(seq);
                }
            }
        }
        Ok(out)
    }

    /// The event seqs whose deliveries to `sink` are parked.
    pub fn parked_seqs(&self, sink: &str) -> Result<Vec<u64>, QueueError> {
        let mut prefix = sink_prefix(WAITING, sink);
        prefix.extend_from_slice(&PARKED.to_be_bytes());
        let mut out = Vec::new();
        for item in self.trees.q.scan_prefix(prefix) {
            let (key, _) = item?;
            if let Some(seq) = row_seq(WAITING, &key) {
                out.push(seq);
            }
        }
        Ok(out)
    }

    /// Parks `sink`'s ready delivery of `seq`; false if it was not ready (done, or off the
    /// ordinary path already).
    pub fn park(&self, sink: &str, seq: u64) -> Result<bool, QueueError> {
        let _moving = self.lock_moves();
        let q = &self.trees.q;
        let state = self.sink_state(sink);
        let mut p = state.lock();
        let ready = sink_seq_key(READY, sink, seq);
        if let Some(row) = q.get(&ready)? {
            q.insert(waiting_key(sink, PARKED, seq), row)?;
            q.remove(ready)?;
            p.from_rows.remove(&seq);
            return Ok(true);
        }
        let routed = match log::find(&self.trees.log, seq)? {
            Some((k, v)) => LogRow::decode(&k, &v)?
                .get(seq)
                .is_some_and(|e| e.routed_to(sink)),
            None => false,
        };
        if !routed || seq <= p.cursor || !unsettled(&p, seq) {
            return Ok(false);
        }
        q.insert(
            waiting_key(sink, PARKED, seq),
            encode(&DeliveryRow::default()),
        )?;
        if !p.handed.remove(&seq) {
            p.skip.insert(seq);
        }
        if let Some(cursor) = p.advance() {
            q.insert(cursor_key(sink), &cursor.to_be_bytes())?;
        }
        Ok(true)
    }

    /// Moves `sink`'s parked delivery of `seq` back to ready and wakes the sink.
    pub fn unpark(&self, sink: &str, seq: u64) -> Result<(), QueueError> {
        {
            let _moving = self.lock_moves();
            let parked = waiting_key(sink, PARKED, seq);
            let Some(row) = self.trees.q.get(&parked)? else {
                return Ok(());
            };
            self.trees.q.insert(sink_seq_key(READY, sink, seq), row)?;
            self.trees.q.remove(parked)?;
        }
        self.wake(sink);
        Ok(())
    }

    /// Dead-letters `sink`'s parked delivery of `seq` with `error`.
    pub fn bury_parked(&self, sink: &str, seq: u64, error: &str) -> Result<(), QueueError> {
        let _moving = self.lock_moves();
        let parked = waiting_key(sink, PARKED, seq);
        let Some(row) = self.trees.q.get(&parked)? else {
            return Ok(());
        };
        let row: DeliveryRow = decode(&parked, &row)?;
        let Some((event, payload)) = self.event_and_payload(seq)? else {
            self.trees.q.remove(parked)?;
            return Ok(());
        };
        let d = Delivery {
            seq,
            attempts: row.attempts,
            event,
            payload,
        };
        let letter = self.dead_letter(sink, &d, error, now_ms());
        self.trees
            .q
            .insert(sink_seq_key(DEAD, sink, seq), encode(&letter))?;
        self.trees.q.remove(parked)?;
        METRICS.queue_pending.with_label_values(&[sink]).dec();
        METRICS.dead_letters.with_label_values(&[sink]).inc();
        Ok(())
    }

    /// Event `seq` and its payload, as a dispatcher would get them.
    pub fn event_and_payload(&self, seq: u64) -> Result<Option<(Event, Arc<str>)>, QueueError> {
        Ok(log::event_and_payload(&self.trees.log, seq)?.map(|(e, p, _)| (e, p)))
    }

    /// Removes stored changes of events the queue no longer holds.
    pub fn prune_changes(&self) -> Result<(), QueueError> {
        let tree = self.enrich_tree()?;
        for item in tree.iter().take(1_000) {
            let (k, _) = item?;
            if let Some(seq) = u64_at(&k, 1) {
                if log::find(&self.trees.log, seq)?.is_none() {
                    tree.remove(k)?;
                }
            }
        }
        Ok(())
    }
}

/// Whether a log delivery above the cursor is still to be sent: handed out, or not read yet
/// and without a row of its own.
fn unsettled(p: &Progress, seq: u64) -> bool {
    p.handed.contains(&seq) || (seq >= p.read_from && !p.skip.contains(&seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::event;
    use crate::queue::{Retention, RoutedEvent};

    #[tokio::test]
    async fn parked_deliveries_are_not_taken_and_changes_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let retention = Retention {
            dedup_window: day,
            keep_delivered: day,
            keep_dead: day,
            min_free: 0,
        };
        let queue = Queue::open(dir.path(), retention).unwrap();
        let routed = RoutedEvent {
            event: event(1),
            sinks: vec!["a".into(), "b".into()],
            properties_at: None,
        };
        queue.accept(Arc::from("{}"), vec![routed]).await.unwrap();
        let seq = queue.ready_seqs("a", 10).unwrap()[0];
        assert!(queue.park("a", seq).unwrap());
        assert!(!queue.park("a", seq).unwrap(), "already parked");
        assert!(queue.take("a", 10, &Default::default()).unwrap().is_empty());
        assert_eq!(queue.parked_seqs("a").unwrap(), [seq]);
        assert_eq!(queue.count_failed_fetch(seq).unwrap(), 1);
        assert_eq!(queue.count_failed_fetch(seq).unwrap(), 2);
        queue
            .store_changes(seq, &serde_json::json!([{"layerId": 0}]))
            .await
            .unwrap();
        assert_eq!(
            queue.count_failed_fetch(seq).unwrap(),
            1,
            "a stored result resets the count"
        );
        queue.unpark("a", seq).unwrap();
        assert_eq!(queue.take("a", 10, &Default::default()).unwrap().len(), 1);
        assert_eq!(queue.changes(seq).unwrap().unwrap()[0]["layerId"], 0);
        assert!(queue.park("b", seq).unwrap());
        queue.bury_parked("b", seq, "the job failed").unwrap();
        let dead = queue.dead_letters(Some("b"), None).unwrap();
        assert_eq!(dead[0].error, "the job failed");
        queue.close().unwrap();
    }
}
