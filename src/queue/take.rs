//! The dispatchers' side: take ready deliveries (promoting retries that are due), and record
//! what became of each (delivered, retry later, dead letter).

use std::collections::{HashMap, HashSet};

use super::keys::*;
use super::rows::{BodyRow, corrupt, decode, encode};
use super::{DeliveryRow, EventRow, Queue, QueueError};
use crate::clock::now_ms;
use crate::metrics::METRICS;
use crate::sinks::Delivery;

/// What the dispatcher decided for one delivery after a send.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Confirmed by the sink.
    Delivered,
    /// Try again at `due_ms`.
    Retry {
        /// Epoch ms when it is due again.
        due_ms: u64,
        /// Why it failed.
        error: String,
    },
    /// Give up: move to the dead letters.
    Dead {
        /// Why.
        error: String,
    },
}

impl Queue {
    /// Up to `max` deliveries for `sink`, oldest first, after promoting retries that are due;
    /// deliveries whose seq is in `in_flight` (handed out and not yet completed) are skipped.
    pub fn take(
        &self,
        sink: &str,
        max: usize,
        in_flight: &HashSet<u64>,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.promote_due(sink, now_ms())?;
        let mut out = Vec::new();
        let mut bodies: HashMap<u64, BodyRow> = HashMap::new();
        let mut orphans = sled::Batch::default();
        let mut orphan_count = 0;
        for item in self.ready_rows(sink, in_flight) {
            if out.len() >= max {
                break;
            }
            let (key, value) = item?;
            let (_, rest) = split_sink(&key).ok_or_else(|| corrupt(&key, "bad key"))?;
            let seq = u64_at(rest, 0).ok_or_else(|| corrupt(&key, "bad key"))?;
            if in_flight.contains(&seq) {
                continue;
            }
            let row: DeliveryRow = decode(&key, &value)?;
            let ekey = seq_key(EVENT, seq);
            let Some(ev) = self.tree.get(&ekey)? else {
                tracing::error!(sink, seq, "delivery refers to a missing event; dropping it");
                orphans.remove(key);
                orphan_count += 1;
                continue;
            };
            let (ev, inline) = EventRow::decode(&ekey, &ev)?;
            let body = match bodies.entry(ev.body) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(match inline {
                    Some(payload) => BodyRow::new(payload),
                    None => BodyRow::load(&self.tree, ev.body)?,
                }),
            };
            let payload = body.text.clone();
            let json = if ev.properties_at.is_some() {
                body.json()
            } else {
                None
            };
            out.push(Delivery {
                seq,
                attempts: row.attempts,
                event: ev.restore(&ekey, json),
                payload,
            });
        }
        if orphan_count > 0 {
            self.tree.apply_batch(orphans)?;
            METRICS
                .queue_pending
                .with_label_values(&[sink])
                .sub(orphan_count);
        }
        Ok(out)
    }

    /// `sink`'s ready rows in seq order, less the span the deliveries in flight cover: those
    /// were taken in order, so they form a run that every take would otherwise walk and skip
    /// (about 1 µs a row). A row inside that span that is not in flight (a retry that came due,
    /// a batch sent again after an outage) is taken once the span has moved past it.
    fn ready_rows(
        &self,
        sink: &str,
        in_flight: &HashSet<u64>,
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + use<> {
        let prefix = sink_prefix(READY, sink);
        let (Some(lo), Some(hi)) = (in_flight.iter().min(), in_flight.iter().max()) else {
            return self
                .tree
                .scan_prefix(prefix)
                .chain(None.into_iter().flatten());
        };
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let before = self
            .tree
            .range(prefix.clone()..sink_seq_key(READY, sink, *lo));
        let after = hi
            .checked_add(1)
            .map(|from| self.tree.range(sink_seq_key(READY, sink, from)..end));
        before.chain(after.into_iter().flatten())
    }

    /// Moves `sink`'s waiting deliveries whose time has come to the ready rows.
    fn promote_due(&self, sink: &str, now: u64) -> Result<(), QueueError> {
        let _moving = self.lock_moves();
        let prefix = sink_prefix(WAITING, sink);
        let mut end = prefix.clone();
        end.extend_from_slice(&(now + 1).to_be_bytes());
        let mut batch = sled::Batch::default();
        let mut moved = 0;
        for item in self.tree.range(prefix.clone()..end).take(10_000) {
            let (key, value) = item?;
            let seq = split_sink(&key)
                .and_then(|(_, rest)| u64_at(rest, 8))
                .ok_or_else(|| corrupt(&key, "bad waiting key"))?;
            batch.remove(key);
            batch.insert(sink_seq_key(READY, sink, seq), value);
            moved += 1;
        }
        if moved > 0 {
            self.tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Makes `sink`'s deliveries that wait for a retry due now (only event `seq`'s, when given),
    /// so an operator who knows the destination is back need not sit out the backoff. Deliveries
    /// parked for their feature changes stay parked. Returns how many were moved.
    pub fn retry_now(&self, sink: &str, seq: Option<u64>) -> Result<usize, QueueError> {
        let moved = {
            let _moving = self.lock_moves();
            let prefix = sink_prefix(WAITING, sink);
            let mut end = prefix.clone();
            end.extend_from_slice(&super::enrich::PARKED.to_be_bytes());
            let mut batch = sled::Batch::default();
            let mut moved = 0;
            for item in self.tree.range(prefix.clone()..end) {
                let (key, value) = item?;
                let row_seq = split_sink(&key)
                    .and_then(|(_, rest)| u64_at(rest, 8))
                    .ok_or_else(|| corrupt(&key, "bad waiting key"))?;
                if seq.is_some_and(|s| s != row_seq) {
                    continue;
                }
                batch.remove(key);
                batch.insert(sink_seq_key(READY, sink, row_seq), value);
                moved += 1;
            }
            if moved > 0 {
                self.tree.apply_batch(batch)?;
            }
            moved
        };
        if moved > 0 {
            self.wake(sink);
        }
        Ok(moved)
    }

    /// The queue seq of event `event_id`, while it is remembered.
    pub fn seq_of(&self, event_id: &str) -> Result<Option<u64>, QueueError> {
        let Some(key) = crate::event::DedupKey::parse_hex(event_id) else {
            return Ok(None);
        };
        Ok(self
            .tree
            .get(dedup_key(&key.0))?
            .and_then(|d| u64_at(&d, 8)))
    }

    /// When `sink`'s earliest waiting delivery is due, if it has any.
    pub fn next_due(&self, sink: &str) -> Result<Option<u64>, QueueError> {
        match self.tree.scan_prefix(sink_prefix(WAITING, sink)).next() {
            Some(item) => {
                let (key, _) = item?;
                Ok(split_sink(&key).and_then(|(_, rest)| u64_at(rest, 0)))
            }
            None => Ok(None),
        }
    }

    /// Records what became of a batch of `sink`'s deliveries.
    pub fn complete(
        &self,
        sink: &str,
        results: &[(&Delivery, Decision)],
    ) -> Result<(), QueueError> {
        let _moving = self.lock_moves();
        let now = now_ms();
        let mut batch = sled::Batch::default();
        let (mut done, mut dead) = (0i64, 0i64);
        for (d, decision) in results {
            let ready = sink_seq_key(READY, sink, d.seq);
            batch.remove(ready);
            match decision {
                Decision::Delivered => {
                    batch.insert(done_key(d.seq, sink), &now.to_be_bytes());
                    done += 1;
                }
                Decision::Retry { due_ms, error } => {
                    let row = DeliveryRow {
                        attempts: d.attempts + 1,
                        last_error: Some(error.clone()),
                    };
                    batch.insert(waiting_key(sink, *due_ms, d.seq), encode(&row));
                }
                Decision::Dead { error } => {
                    let letter = self.dead_letter(sink, d, error, now)?;
                    batch.insert(sink_seq_key(DEAD, sink, d.seq), encode(&letter));
                    dead += 1;
                }
            }
        }
        self.tree.apply_batch(batch)?;
        METRICS
            .queue_pending
            .with_label_values(&[sink])
            .sub(done + dead);
        METRICS.dead_letters.with_label_values(&[sink]).add(dead);
        Ok(())
    }
}
