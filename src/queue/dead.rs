//! Dead letters: deliveries that ran out of attempts or were refused, kept whole for replay.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::keys::*;
use super::stage::Staged;
use super::{DeliveryRow, EventRow, Queue, QueueError, decode, encode};
use crate::event::Event;
use crate::metrics::METRICS;
use crate::sinks::Delivery;

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
    /// Its body row's sequence number.
    pub body: u64,
    /// The ArcGIS payload's JSON text.
    pub payload: String,
}

impl Queue {
    pub(super) fn dead_letter(
        &self,
        sink: &str,
        d: &Delivery,
        error: &str,
        now: u64,
    ) -> Result<DeadLetter, QueueError> {
        let body = match self.tree.get(seq_key(EVENT, d.seq))? {
            Some(v) => EventRow::decode(&seq_key(EVENT, d.seq), &v)?.0.body,
            None => 0,
        };
        Ok(DeadLetter {
            sink: sink.to_string(),
            seq: d.seq,
            attempts: d.attempts + 1,
            error: error.to_string(),
            died_at: now,
            event: d.event.clone(),
            body,
            payload: d.payload.to_string(),
        })
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
        for item in self.tree.scan_prefix(prefix) {
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
        let mut batch = sled::Batch::default();
        let mut per_sink: BTreeMap<&str, i64> = BTreeMap::new();
        for l in &letters {
            batch.remove(sink_seq_key(DEAD, &l.sink, l.seq));
            *per_sink.entry(&l.sink).or_default() += 1;
        }
        self.tree.apply_batch(batch)?;
        self.flush()?;
        for (sink, n) in per_sink {
            METRICS.dead_letters.with_label_values(&[sink]).sub(n);
        }
        Ok(letters.len())
    }
}

/// Stages the replay of matching dead letters: each goes back to its sink's ready rows with a
/// fresh attempt count, and its event and body rows are restored if retention took them. The
/// staged `added` counts the revived deliveries per sink.
pub(super) fn stage_replay(
    tree: &sled::Tree,
    sink: Option<&str>,
    event_id: Option<&str>,
) -> Result<(Staged, usize), QueueError> {
    let prefix = match sink {
        Some(s) => sink_prefix(DEAD, s),
        None => vec![DEAD],
    };
    let mut staged = Staged::default();
    let mut n = 0;
    for item in tree.scan_prefix(prefix) {
        let (k, v) = item?;
        let letter: DeadLetter = decode(&k, &v)?;
        if event_id.is_some_and(|id| id != letter.event.event_id) {
            continue;
        }
        staged.remove(k.to_vec(), v.to_vec());
        // The event row may have gone with retention: write it again. While its request's body
        // row still exists (other events of the request are pending), point at it as before, so
        // that retention keeps that row; else the row carries its payload.
        let ekey = seq_key(EVENT, letter.seq);
        match tree.get(&ekey)? {
            None => {
                let shared =
                    letter.body != letter.seq && tree.contains_key(seq_key(BODY, letter.body))?;
                let row = EventRow {
                    event: letter.event.clone(),
                    body: if shared { letter.body } else { letter.seq },
                    properties_at: None,
                };
                let inline = (!shared).then_some(letter.payload.as_bytes());
                staged.put(ekey, row.encode(inline), None);
            }
            Some(v) => {
                let (row, inline) = EventRow::decode(&ekey, &v)?;
                let bkey = seq_key(BODY, row.body);
                if inline.is_none() && !tree.contains_key(&bkey)? {
                    staged.put(bkey, letter.payload.as_bytes().to_vec(), None);
                }
            }
        }
        let rkey = sink_seq_key(READY, &letter.sink, letter.seq);
        let old = tree.get(&rkey)?.map(|v| v.to_vec());
        staged.put(rkey, encode(&DeliveryRow::default()), old);
        *staged.added.entry(letter.sink).or_default() += 1;
        staged.end_unit();
        n += 1;
    }
    Ok((staged, n))
}
