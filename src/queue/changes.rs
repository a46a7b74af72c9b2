//! Changes fetched for events, stored once per change window beside the queue, and the
//! deliveries parked while they are fetched.
//!
//! A change window is what one `changesUrl` names (a service, its layers, a `serverGens`
//! range): every event that carries the same URL shares one stored change file, however many
//! events of one delivery (one per change type) or of several deliveries name it.
//!
//! A delivery that needs changes it does not have yet is parked: moved to the waiting rows at
//! a due time that never comes ([`PARKED`]), so retention keeps its event and no dispatcher takes
//! it. The change file, once fetched, is written here and flushed before the parked rows go
//! back to ready: a restart after that never fetches it again.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::*;
use super::log::{self, LogRow};
use super::progress::Progress;
use super::{DeliveryRow, Queue, QueueError, decode, encode, now_ms};
use crate::event::Delivery;
use crate::event::{DedupKey, Event};
use crate::metrics::METRICS;

/// The tree, per change window (`window_key`): `C` + window → the newest event seq that named
/// it, then the changes (JSON); `A` + window → seq, then [`FetchState`]; `F` + window → seq,
/// then why the fetch was given up (for sinks that deliver without changes). The seq lets
/// pruning drop a window once the log no longer holds the event.
const CHANGES: u8 = b'C';
const STATE: u8 = b'A';
const FAILED: u8 = b'F';
/// Rows of stores of earlier releases, keyed by event seq: `c` + seq → changes, `a` + seq →
/// [`FetchState`], `f` + seq → the reason. Read as a fallback, pruned as before.
const OLD_CHANGES: u8 = b'c';
const OLD_STATE: u8 = b'a';
const OLD_FAILED: u8 = b'f';

/// The due time of a parked delivery: never.
pub const PARKED: u64 = u64::MAX;

/// Failed fetches of one change window so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchState {
    /// Fetches that failed (outages excluded).
    pub attempts: u32,
}

/// The key of the change window `url` names, under `prefix`.
fn window_key(prefix: u8, url: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(&DedupKey::from_parts(&["changes", url]).0);
    k
}

/// `seq` then `rest`: the value of a window row.
fn with_seq(seq: u64, rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + rest.len());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(rest);
    v
}

/// The part of a window row's value after its seq.
fn after_seq(v: &[u8]) -> &[u8] {
    v.get(8..).unwrap_or_default()
}

/// The dedup row recording that `sink` delivered the feature change `feature_id`.
fn sent_key(sink: &str, feature_id: &str) -> [u8; 16] {
    DedupKey::from_parts(&["sent", sink, feature_id]).0
}

impl Queue {
    /// The change feed's rows: stored change windows, fetch states, parked deliveries.
    pub fn change_rows(&self) -> ChangeRows<'_> {
        ChangeRows { queue: self }
    }

    /// Event `seq` and its payload, as a dispatcher would get them.
    pub fn event_and_payload(&self, seq: u64) -> Result<Option<(Event, Arc<str>)>, QueueError> {
        Ok(log::event_and_payload(&self.trees.log, seq)?.map(|(e, p, _)| (e, p)))
    }
}

/// The rows the change feed keeps in the queue, and the parked deliveries it moves: the one
/// interface `enrich` has to them.
pub struct ChangeRows<'q> {
    queue: &'q Queue,
}

impl ChangeRows<'_> {
    fn enrich_tree(&self) -> Result<sled::Tree, QueueError> {
        Ok(self.queue.trees.enrich.clone())
    }

    /// The stored changes of the window `url` (event `seq` names it), if they were fetched.
    pub fn changes(&self, seq: u64, url: &str) -> Result<Option<Value>, QueueError> {
        let tree = self.enrich_tree()?;
        let key = window_key(CHANGES, url);
        if let Some(v) = tree.get(&key)? {
            return Ok(Some(decode(&key, after_seq(&v))?));
        }
        let old = seq_key(OLD_CHANGES, seq);
        match tree.get(&old)? {
            Some(v) => Ok(Some(decode(&old, &v)?)),
            None => Ok(None),
        }
    }

    /// Why fetching the window `url` (event `seq` names it) was given up, if it was.
    pub fn changes_failure(&self, seq: u64, url: &str) -> Result<Option<String>, QueueError> {
        let tree = self.enrich_tree()?;
        let reason = match tree.get(window_key(FAILED, url))? {
            Some(v) => Some(String::from_utf8_lossy(after_seq(&v)).into_owned()),
            None => tree
                .get(seq_key(OLD_FAILED, seq))?
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        };
        Ok(reason)
    }

    /// Stores the changes of the window `url` (named by event `seq`, the newest to name it)
    /// and flushes them to disk before returning.
    pub async fn store_changes(
        &self,
        seq: u64,
        url: &str,
        changes: &Value,
    ) -> Result<(), QueueError> {
        let tree = self.enrich_tree()?;
        let mut batch = sled::Batch::default();
        batch.insert(window_key(CHANGES, url), with_seq(seq, &encode(changes)));
        batch.remove(window_key(STATE, url));
        batch.remove(window_key(FAILED, url));
        tree.apply_batch(batch)?;
        let (files, db) = (self.queue.store.files.clone(), self.queue.db.clone());
        tokio::task::spawn_blocking(move || files.flush(&db))
            .await
            .map_err(|e| QueueError::Storage(sled::Error::Io(std::io::Error::other(e))))??;
        Ok(())
    }

    /// Counts one failed fetch of the window `url` (named by event `seq`); returns the count.
    pub fn count_failed_fetch(&self, seq: u64, url: &str) -> Result<u32, QueueError> {
        let tree = self.enrich_tree()?;
        let key = window_key(STATE, url);
        let mut state: FetchState = match tree.get(&key)? {
            Some(v) => decode(&key, after_seq(&v))?,
            None => FetchState::default(),
        };
        state.attempts += 1;
        tree.insert(key, with_seq(seq, &encode(&state)))?;
        Ok(state.attempts)
    }

    /// Records that the fetch of the window `url` was given up (a replay starts counting again).
    pub fn give_up_changes(&self, seq: u64, url: &str, reason: &str) -> Result<(), QueueError> {
        let tree = self.enrich_tree()?;
        let mut batch = sled::Batch::default();
        batch.remove(window_key(STATE, url));
        batch.insert(window_key(FAILED, url), with_seq(seq, reason.as_bytes()));
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// Of the feature changes `ids`, those `sink` has delivered within the dedup window.
    pub fn features_sent(&self, sink: &str, ids: &[&str]) -> Result<HashSet<String>, QueueError> {
        let mut out = HashSet::new();
        for id in ids {
            if self.queue.trees.dedup.get(sent_key(sink, id))?.is_some() {
                out.insert((*id).to_string());
            }
        }
        Ok(out)
    }

    /// Records that `sink` delivered the feature changes `ids` (they expire with the dedup keys).
    pub fn record_features_sent(&self, sink: &str, ids: &[&str]) -> Result<(), QueueError> {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&now_ms().to_be_bytes());
        for id in ids {
            self.queue.trees.dedup.insert(sent_key(sink, id), &value)?;
        }
        Ok(())
    }

    /// Up to `max` event seqs with deliveries for `sink` ready (in a ready row, or in the
    /// log and not yet settled), ready rows first, then oldest first.
    pub fn ready_seqs(&self, sink: &str, max: usize) -> Result<Vec<u64>, QueueError> {
        let mut out = Vec::new();
        for item in self
            .queue
            .trees
            .q
            .scan_prefix(sink_prefix(READY, sink))
            .take(max)
        {
            let (key, _) = item?;
            if let Some(seq) = row_seq(READY, &key) {
                out.push(seq);
            }
        }
        let state = self.queue.sink_state(sink);
        let p = state.lock();
        let start = match log::find(&self.queue.trees.log, p.cursor + 1)? {
            Some((k, _)) => k.to_vec(),
            None => log_key(p.cursor + 1).to_vec(),
        };
        for item in self.queue.trees.log.range(start..) {
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
        for item in self.queue.trees.q.scan_prefix(prefix) {
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
        let _moving = self.queue.lock_moves();
        let q = &self.queue.trees.q;
        let state = self.queue.sink_state(sink);
        let mut p = state.lock();
        let ready = sink_seq_key(READY, sink, seq);
        if let Some(row) = q.get(&ready)? {
            q.insert(waiting_key(sink, PARKED, seq), row)?;
            q.remove(ready)?;
            p.from_rows.remove(&seq);
            return Ok(true);
        }
        let routed = match log::find(&self.queue.trees.log, seq)? {
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
            let _moving = self.queue.lock_moves();
            let parked = waiting_key(sink, PARKED, seq);
            let Some(row) = self.queue.trees.q.get(&parked)? else {
                return Ok(());
            };
            self.queue
                .trees
                .q
                .insert(sink_seq_key(READY, sink, seq), row)?;
            self.queue.trees.q.remove(parked)?;
        }
        self.queue.wake(sink);
        Ok(())
    }

    /// Dead-letters `sink`'s parked delivery of `seq` with `error`.
    pub fn bury_parked(&self, sink: &str, seq: u64, error: &str) -> Result<(), QueueError> {
        let _moving = self.queue.lock_moves();
        let parked = waiting_key(sink, PARKED, seq);
        let Some(row) = self.queue.trees.q.get(&parked)? else {
            return Ok(());
        };
        let row: DeliveryRow = decode(&parked, &row)?;
        let Some((event, payload)) = self.queue.event_and_payload(seq)? else {
            self.queue.trees.q.remove(parked)?;
            return Ok(());
        };
        let d = Delivery {
            seq,
            attempts: row.attempts,
            event,
            payload,
        };
        let letter = self.queue.dead_letter(sink, &d, error, now_ms());
        self.queue
            .trees
            .q
            .insert(sink_seq_key(DEAD, sink, seq), encode(&letter))?;
        self.queue.trees.q.remove(parked)?;
        METRICS.queue_pending.with_label_values(&[sink]).dec();
        METRICS.dead_letters.with_label_values(&[sink]).inc();
        Ok(())
    }

    /// Removes stored changes, fetch states and failures of windows whose newest event the
    /// log no longer holds (and the per-event rows of earlier releases likewise), looking at
    /// 1 000 rows from `from` on; returns where the next pass goes on (empty: from the start),
    /// so that rows still needed at the front never keep a pass from the rest.
    pub fn prune_changes(&self, from: &[u8]) -> Result<Vec<u8>, QueueError> {
        let tree = self.enrich_tree()?;
        let mut next = Vec::new();
        for (scanned, item) in tree.range(from.to_vec()..).enumerate() {
            let (k, v) = item?;
            if scanned == 1_000 {
                next = k.to_vec();
                break;
            }
            let seq = match k.first() {
                Some(&(CHANGES | STATE | FAILED)) => u64_at(&v, 0),
                Some(&(OLD_CHANGES | OLD_STATE | OLD_FAILED)) => u64_at(&k, 1),
                _ => None,
            };
            if let Some(seq) = seq {
                if log::find(&self.queue.trees.log, seq)?.is_none() {
                    tree.remove(k)?;
                }
            }
        }
        Ok(next)
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
    use crate::queue::RoutedEvent;
    use crate::queue::tests::event;

    #[tokio::test]
    async fn parked_deliveries_are_not_taken_and_changes_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), crate::queue::tests::long()).unwrap();
        let routed = RoutedEvent {
            event: event(1),
            sinks: vec!["a".into(), "b".into()],
            properties_at: None,
        };
        queue.accept(Arc::from("{}"), vec![routed]).await.unwrap();
        let seq = queue.change_rows().ready_seqs("a", 10).unwrap()[0];
        assert!(queue.change_rows().park("a", seq).unwrap());
        assert!(
            !queue.change_rows().park("a", seq).unwrap(),
            "already parked"
        );
        assert!(queue.take("a", 10, &Default::default()).unwrap().is_empty());
        assert_eq!(queue.change_rows().parked_seqs("a").unwrap(), [seq]);
        let url = "https://services.example/FeatureServer/extractChanges?serverGens=[1,2]";
        let other = "https://services.example/FeatureServer/extractChanges?serverGens=[2,3]";
        assert_eq!(queue.change_rows().count_failed_fetch(seq, url).unwrap(), 1);
        assert_eq!(queue.change_rows().count_failed_fetch(seq, url).unwrap(), 2);
        assert_eq!(
            queue.change_rows().count_failed_fetch(seq, other).unwrap(),
            1
        );
        queue
            .change_rows()
            .store_changes(seq, url, &serde_json::json!([{"layerId": 0}]))
            .await
            .unwrap();
        assert_eq!(
            queue.change_rows().count_failed_fetch(seq, url).unwrap(),
            1,
            "a stored result resets the count"
        );
        assert_eq!(
            queue.change_rows().changes(seq + 7, url).unwrap().unwrap()[0]["layerId"],
            0,
            "every event naming the window shares its changes"
        );
        assert!(queue.change_rows().changes(seq, other).unwrap().is_none());
        queue.change_rows().unpark("a", seq).unwrap();
        assert_eq!(queue.take("a", 10, &Default::default()).unwrap().len(), 1);
        assert_eq!(
            queue.change_rows().changes(seq, url).unwrap().unwrap()[0]["layerId"],
            0
        );
        assert!(queue.change_rows().park("b", seq).unwrap());
        queue
            .change_rows()
            .bury_parked("b", seq, "the job failed")
            .unwrap();
        let dead = queue.dead_letters(Some("b"), None).unwrap();
        assert_eq!(dead[0].error, "the job failed");
        queue.close().unwrap();
    }

    #[test]
    fn feature_changes_sent_are_remembered_per_sink() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), crate::queue::tests::long()).unwrap();
        assert!(
            queue
                .change_rows()
                .features_sent("a", &["f1", "f2"])
                .unwrap()
                .is_empty()
        );
        queue
            .change_rows()
            .record_features_sent("a", &["f1"])
            .unwrap();
        let sent = queue
            .change_rows()
            .features_sent("a", &["f1", "f2"])
            .unwrap();
        assert_eq!(sent.into_iter().collect::<Vec<_>>(), ["f1"]);
        assert!(
            queue
                .change_rows()
                .features_sent("b", &["f1"])
                .unwrap()
                .is_empty()
        );
        queue.close().unwrap();
    }

    #[test]
    fn pruning_goes_on_where_the_last_pass_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), crate::queue::tests::long()).unwrap();
        let tree = queue.trees.enrich.clone();
        for seq in 1..=1_500u64 {
            tree.insert(seq_key(OLD_CHANGES, seq), encode(&serde_json::json!([])))
                .unwrap();
        }
        let next = queue.change_rows().prune_changes(&[]).unwrap();
        assert!(!next.is_empty(), "a pass looks at 1 000 rows");
        assert_eq!(tree.len(), 500);
        assert!(queue.change_rows().prune_changes(&next).unwrap().is_empty());
        assert_eq!(tree.len(), 0, "the second pass took the rest");
        queue.close().unwrap();
    }

    #[test]
    fn changes_stored_by_an_earlier_release_per_event_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), crate::queue::tests::long()).unwrap();
        let tree = queue.trees.enrich.clone();
        tree.insert(
            seq_key(OLD_CHANGES, 5),
            encode(&serde_json::json!([{"layerId": 3}])),
        )
        .unwrap();
        tree.insert(seq_key(OLD_FAILED, 6), "the job failed".as_bytes())
            .unwrap();
        assert_eq!(
            queue.change_rows().changes(5, "u").unwrap().unwrap()[0]["layerId"],
            3
        );
        assert_eq!(
            queue
                .change_rows()
                .changes_failure(6, "u")
                .unwrap()
                .unwrap(),
            "the job failed"
        );
        assert!(
            queue.change_rows().prune_changes(&[]).unwrap().is_empty(),
            "one pass read all"
        );
        assert!(
            queue.change_rows().changes(5, "u").unwrap().is_none(),
            "no log row holds seq 5"
        );
        queue.close().unwrap();
    }
}
