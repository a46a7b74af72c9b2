//! The dispatchers' side: read deliveries from the log and the ready rows (promoting retries
//! that are due), and record what became of each (delivered, retry later, dead letter).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::keys::*;
use super::log::{self, LogRow};
use super::progress::{Progress, SinkState};
use super::rows::{BodyRow, corrupt, decode, encode};
use super::{DeliveryRow, Queue, QueueError};
use crate::clock::now_ms;
use crate::event::Delivery;
use crate::metrics::METRICS;

/// What the dispatcher decided for one delivery after a send.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Confirmed by the sink.
    Delivered,
    /// Confirmed, with the sink's word on it for the attempt history.
    DeliveredWith(String),
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
    /// The progress of `sink` through the log.
    pub(super) fn sink_state(&self, sink: &str) -> Arc<SinkState> {
        self.store
            .sinks
            .get(sink, self.store.next_seq.load(Ordering::SeqCst))
    }

    /// Up to `max` deliveries for `sink`, oldest first: its ready rows (retries that came due,
    /// replays, released ones), then those handed out before and given back (a batch the sink
    /// could not take), then the log from where the sink got to. Deliveries whose seq is in
    /// `in_flight` (handed out and not yet completed) are skipped.
    pub fn take(
        &self,
        sink: &str,
        max: usize,
        in_flight: &HashSet<u64>,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.promote_due(sink, now_ms())?;
        let state = self.sink_state(sink);
        let mut p = state.lock();
        let mut out = Vec::new();
        self.take_rows(sink, max, in_flight, &mut p, &mut out)?;
        let returned: Vec<u64> = p
            .handed
            .iter()
            .filter(|s| !in_flight.contains(s))
            .take(max.saturating_sub(out.len()))
            .copied()
            .collect();
        for seq in returned {
            match log::event_and_payload(&self.trees.log, seq)? {
                Some((event, payload, _)) => out.push(Delivery {
                    seq,
                    attempts: 0,
                    event,
                    payload,
                }),
                None => {
                    p.handed.remove(&seq);
                }
            }
        }
        if out.len() < max {
            self.read_log(sink, max, &mut p, &mut out)?;
        }
        Ok(out)
    }

    /// Takes `sink`'s ready rows not in flight; a row whose event is gone is dropped.
    fn take_rows(
        &self,
        sink: &str,
        max: usize,
        in_flight: &HashSet<u64>,
        p: &mut Progress,
        out: &mut Vec<Delivery>,
    ) -> Result<(), QueueError> {
        let mut orphans = 0;
        for item in self.trees.q.scan_prefix(sink_prefix(READY, sink)) {
            if out.len() >= max {
                break;
            }
            let (key, value) = item?;
            let seq = row_seq(READY, &key).ok_or_else(|| corrupt(&key, "bad key"))?;
            if in_flight.contains(&seq) {
                continue;
            }
            let row: DeliveryRow = decode(&key, &value)?;
            match log::event_and_payload(&self.trees.log, seq)? {
                Some((event, payload, _)) => {
                    p.from_rows.insert(seq);
                    out.push(Delivery {
                        seq,
                        attempts: row.attempts,
                        event,
                        payload,
                    });
                }
                None => {
                    tracing::error!(sink, seq, "delivery refers to a missing event; dropping it");
                    self.trees.q.remove(&key)?;
                    orphans += 1;
                }
            }
        }
        if orphans > 0 {
            METRICS
                .queue_pending
                .with_label_values(&[sink])
                .sub(orphans);
        }
        Ok(())
    }

    /// Reads the log from where `sink` got to, handing out the events routed to it until
    /// `out` holds `max`.
    fn read_log(
        &self,
        sink: &str,
        max: usize,
        p: &mut Progress,
        out: &mut Vec<Delivery>,
    ) -> Result<(), QueueError> {
        let start = match log::find(&self.trees.log, p.read_from)? {
            Some((k, _)) => k.to_vec(),
            None => log_key(p.read_from).to_vec(),
        };
        for item in self.trees.log.range(start..) {
            let (k, v) = item?;
            let row = LogRow::decode(&k, &v)?;
            let mut body = None;
            for (seq, e) in (row.first..).zip(&row.events) {
                if seq < p.read_from || !e.routed_to(sink) || p.skip.contains(&seq) {
                    continue;
                }
                if out.len() >= max {
                    p.read_from = seq;
                    return Ok(());
                }
                let body = body.get_or_insert_with(|| BodyRow::new(row.payload));
                if let Some(event) = row.event(seq, body)? {
                    p.handed.insert(seq);
                    out.push(Delivery {
                        seq,
                        attempts: 0,
                        event,
                        payload: body.text.clone(),
                    });
                }
            }
            p.read_from = p.read_from.max(row.end());
        }
        Ok(())
    }

    /// Moves `sink`'s waiting deliveries whose time has come to the ready rows.
    fn promote_due(&self, sink: &str, now: u64) -> Result<(), QueueError> {
        let prefix = sink_prefix(WAITING, sink);
        let mut end = prefix.clone();
        end.extend_from_slice(&(now + 1).to_be_bytes());
        if self
            .trees
            .q
            .range(prefix.clone()..end.clone())
            .next()
            .is_none()
        {
            return Ok(());
        }
        let _moving = self.lock_moves();
        for item in self.trees.q.range(prefix..end).take(10_000) {
            let (key, value) = item?;
            let seq = row_seq(WAITING, &key).ok_or_else(|| corrupt(&key, "bad waiting key"))?;
            self.trees.q.insert(sink_seq_key(READY, sink, seq), value)?;
            self.trees.q.remove(key)?;
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
            end.extend_from_slice(&super::changes::PARKED.to_be_bytes());
            let mut moved = 0;
            for item in self.trees.q.range(prefix..end) {
                let (key, value) = item?;
                let row_seq =
                    row_seq(WAITING, &key).ok_or_else(|| corrupt(&key, "bad waiting key"))?;
                if seq.is_some_and(|s| s != row_seq) {
                    continue;
                }
                self.trees
                    .q
                    .insert(sink_seq_key(READY, sink, row_seq), value)?;
                self.trees.q.remove(key)?;
                moved += 1;
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
            .trees
            .dedup
            .get(key.0)?
            .and_then(|d| u64_at(&d, 8))
            .filter(|s| *s != 0))
    }

    /// When `sink`'s earliest waiting delivery is due, if it has any.
    pub fn next_due(&self, sink: &str) -> Result<Option<u64>, QueueError> {
        match self.trees.q.scan_prefix(sink_prefix(WAITING, sink)).next() {
            Some(item) => {
                let (key, _) = item?;
                Ok(split_sink(&key).and_then(|(_, rest)| u64_at(rest, 0)))
            }
            None => Ok(None),
        }
    }

    /// Records what became of a batch of `sink`'s deliveries: a retry or a dead letter gets a
    /// row of its own, a delivery from a ready row loses it, and the cursor moves past what is
    /// settled, with one mark saying when the batch was delivered.
    pub fn complete(
        &self,
        sink: &str,
        results: &[(&Delivery, Decision)],
    ) -> Result<(), QueueError> {
        let _moving = self.lock_moves();
        let state = self.sink_state(sink);
        let mut p = state.lock();
        let now = now_ms();
        let q = &self.trees.q;
        let (mut done, mut dead) = (0i64, 0i64);
        let mut delivered = None;
        for (d, decision) in results {
            let from_row = p.from_rows.remove(&d.seq);
            match decision {
                Decision::Delivered => {
                    done += 1;
                    if from_row {
                        self.record_delivered(sink, d.seq, now, None);
                    } else {
                        delivered = delivered.max(Some(d.seq));
                    }
                }
                Decision::DeliveredWith(detail) => {
                    done += 1;
                    self.record_delivered(sink, d.seq, now, Some(detail.clone()));
                    if !from_row {
                        delivered = delivered.max(Some(d.seq));
                    }
                }
                Decision::Retry { due_ms, error } => {
                    let row = DeliveryRow {
                        attempts: d.attempts + 1,
                        last_error: Some(error.clone()),
                    };
                    q.insert(waiting_key(sink, *due_ms, d.seq), encode(&row))?;
                }
                Decision::Dead { error } => {
                    let letter = self.dead_letter(sink, d, error, now);
                    q.insert(sink_seq_key(DEAD, sink, d.seq), encode(&letter))?;
                    dead += 1;
                }
            }
            if from_row {
                q.remove(sink_seq_key(READY, sink, d.seq))?;
            } else {
                p.handed.remove(&d.seq);
            }
        }
        if let Some(seq) = delivered {
            q.insert(sink_seq_key(MARK, sink, seq), &now.to_be_bytes())?;
            let since = match p.last_mark {
                Some((last, since)) if now < since + 1000 && last < seq => {
                    q.remove(sink_seq_key(MARK, sink, last))?;
                    since
                }
                _ => now,
            };
            p.last_mark = Some((seq, since));
        }
        if let Some(cursor) = p.advance() {
            q.insert(cursor_key(sink), &cursor.to_be_bytes())?;
            state.on_disk.store(true, Ordering::SeqCst);
        }
        METRICS
            .queue_pending
            .with_label_values(&[sink])
            .sub(done + dead);
        METRICS.dead_letters.with_label_values(&[sink]).add(dead);
        Ok(())
    }
}
