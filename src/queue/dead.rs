//! Dead letters: deliveries that ran out of attempts or were refused, kept whole for replay.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::keys::*;
use super::log;
use super::stage::Staged;
use super::store::Store;
use super::trees::Tree;
use super::{DeliveryRow, EventRow, Queue, QueueError, decode, encode};
use crate::event::Delivery;
use crate::event::Event;
use crate::metrics::METRICS;

/// A delivery given up on, with everything needed to send it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The sink it was for.
    pub sink: String,
    /// The event's sequence number.
    pub seq: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure, as the destination reported it.
    pub error: String,
    /// When it died, epoch ms.
    pub died_at: u64,
    /// The event.
    pub event: Event,
    /// Its body row's sequence number in releases that kept bodies apart (now its own seq).
    pub body: u64,
    /// The ArcGIS payload's JSON text.
    pub payload: String,
}

impl Queue {
    /// The dead letter of delivery `d` to `sink`, which failed for good at `now`.
    pub(super) fn dead_letter(
        &self,
        sink: &str,
        d: &Delivery,
        error: &str,
        now: u64,
    ) -> DeadLetter {
        DeadLetter {
            sink: sink.to_string(),
            seq: d.seq,
            attempts: d.attempts + 1,
            error: error.to_string(),
            died_at: now,
            event: d.event.clone(),
            body: d.seq,
            payload: d.payload.to_string(),
        }
    }

    /// Dead letters, optionally only one sink's or one event's.
    pub fn dead_letters(
        &self,
        sink: Option<&str>,
        event_id: Option<&str>,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let prefix = match sink {
            Some(s) => sink_prefix(DEAD, s),
            None => vec![DEAD],
        };
        let mut out = Vec::new();
        for item in self.trees.q.scan_prefix(prefix) {
            let (k, v) = item?;
            let letter: DeadLetter = decode(&k, &v)?;
            if event_id.is_none_or(|id| id == letter.event.event_id) {
                out.push(letter);
            }
        }
        Ok(out)
    }

    /// Deletes dead letters (all, one sink's, or one event's); returns how many.
    pub fn purge(&self, sink: Option<&str>, event_id: Option<&str>) -> Result<usize, QueueError> {
        let letters = self.dead_letters(sink, event_id)?;
        let mut per_sink: BTreeMap<&str, i64> = BTreeMap::new();
        for l in &letters {
            self.trees.q.remove(sink_seq_key(DEAD, &l.sink, l.seq))?;
            *per_sink.entry(&l.sink).or_default() += 1;
        }
        self.flush()?;
        for (sink, n) in per_sink {
            METRICS.dead_letters.with_label_values(&[sink]).sub(n);
        }
        Ok(letters.len())
    }
}

/// Stages the replay of matching dead letters: each goes back to its sink's ready rows with a
/// fresh attempt count, and its log row is written again (with only this event) if retention
/// took it. The staged `added` counts the revived deliveries per sink.
pub(super) fn stage_replay(
    store: &Store,
    sink: Option<&str>,
    event_id: Option<&str>,
) -> Result<(Staged, usize), QueueError> {
    let prefix = match sink {
        Some(s) => sink_prefix(DEAD, s),
        None => vec![DEAD],
    };
    let mut staged = Staged::default();
    let mut n = 0;
    let mut restored = std::collections::HashSet::new();
    for item in store.trees.q.scan_prefix(prefix) {
        let (k, v) = item?;
        let letter: DeadLetter = decode(&k, &v)?;
        if event_id.is_some_and(|id| id != letter.event.event_id) {
            continue;
        }
        if log::find(&store.trees.log, letter.seq)?.is_none() && restored.insert(letter.seq) {
            let json = EventRow {
                event: letter.event.clone(),
                body: 0,
                properties_at: None,
            }
            .encode_json();
            let sinks = [letter.sink.clone()];
            let accepted_at = letter.event.accepted_at.max(0) as u64;
            let row = log::encode(accepted_at, &[(&json, &sinks)], letter.payload.as_bytes());
            staged.put(Tree::Log, log_key(letter.seq).to_vec(), row, None);
        }
        let rkey = sink_seq_key(READY, &letter.sink, letter.seq);
        let old = store.trees.q.get(&rkey)?.map(|v| v.to_vec());
        staged.put(Tree::Q, rkey, encode(&DeliveryRow::default()), old);
        staged.remove(Tree::Q, k.to_vec(), v.to_vec());
        *staged.added.entry(letter.sink).or_default() += 1;
        n += 1;
    }
    Ok((staged, n))
}
