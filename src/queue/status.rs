//! Delivery status by event id: the equivalent of ArcGIS's notification status page.

use std::collections::HashMap;

use serde::Serialize;

use super::keys::*;
use super::log::{self, LogRow};
use super::{BodyRow, DeadLetter, DeliveryRow, Queue, QueueError, decode};
use crate::event::{DedupKey, Event};

/// Where one event stands at each sink it was routed to.
#[derive(Debug, Clone, Serialize)]
pub struct EventStatus {
    /// The event's queue sequence number (what its attempt history is keyed by).
    #[serde(skip)]
    pub seq: u64,
    /// The event, while it is still stored.
    pub event: Option<Event>,
    /// When it was accepted, epoch ms.
    pub accepted_at: u64,
    /// One entry per sink that has a record of it.
    pub deliveries: Vec<DeliveryStatus>,
}

/// One sink's record of an event.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryStatus {
    /// Sink name.
    pub sink: String,
    /// `ready`, `waiting`, `delivered` or `dead`.
    pub state: &'static str,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was delivered, died, or is next due, epoch ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// Waiting deliveries by event seq, read in one pass over the waiting rows (they are keyed by
/// due time, not by event, so looking one event up means reading them all anyway).
pub(super) type WaitingIndex = HashMap<u64, Vec<DeliveryStatus>>;

impl Queue {
    /// The status of an event id, or `None` if it was never accepted (or has been forgotten).
    pub fn status(
        &self,
        event_id: &str,
        sinks: &[String],
    ) -> Result<Option<EventStatus>, QueueError> {
        let Some(key) = DedupKey::parse_hex(event_id) else {
            return Ok(None);
        };
        let Some(d) = self.trees.dedup.get(key.0)? else {
            return Ok(None);
        };
        let (Some(accepted_at), Some(seq)) = (u64_at(&d, 0), u64_at(&d, 8)) else {
            return Ok(None);
        };
        let waiting = self.waiting_index(sinks, |s| s == seq)?;
        let (event, routed) = match log::find(&self.trees.log, seq)? {
            Some((k, v)) => {
                let row = LogRow::decode(&k, &v)?;
                let body = BodyRow::new(row.payload);
                let routed = routed_sinks(&row, seq);
                (row.event(seq, &body)?, routed)
            }
            None => (None, Vec::new()),
        };
        Ok(Some(EventStatus {
            seq,
            event,
            accepted_at,
            deliveries: self.deliveries(seq, &routed, sinks, &waiting)?,
        }))
    }

    /// The waiting deliveries of the `sinks` for the events `wanted` picks.
    pub(super) fn waiting_index(
        &self,
        sinks: &[String],
        wanted: impl Fn(u64) -> bool,
    ) -> Result<WaitingIndex, QueueError> {
        let mut index = WaitingIndex::new();
        for sink in sinks {
            for item in self.trees.q.scan_prefix(sink_prefix(WAITING, sink)) {
                let (k, v) = item?;
                let Some((_, rest)) = split_sink(&k) else {
                    continue;
                };
                let Some(seq) = u64_at(rest, 8).filter(|s| wanted(*s)) else {
                    continue;
                };
                let row: DeliveryRow = decode(&k, &v)?;
                // A parked delivery waits for its changes, not for a time.
                let due = u64_at(rest, 0).filter(|d| *d != super::changes::PARKED);
                let error = match due {
                    Some(_) => row.last_error,
                    None => Some("waiting for its feature changes to be fetched".into()),
                };
                index.entry(seq).or_default().push(DeliveryStatus {
                    sink: sink.clone(),
                    state: "waiting",
                    attempts: row.attempts,
                    error,
                    at: due,
                });
            }
        }
        Ok(index)
    }

    /// Every sink's record of the event `seq`, which the log routed to `routed`: ready,
    /// waiting (from `waiting`) or dead from its row, else delivered or ready from where the
    /// sink stands in the log. Only the configured `sinks` are looked at, bar deliveries made.
    pub(super) fn deliveries(
        &self,
        seq: u64,
        routed: &[String],
        sinks: &[String],
        waiting: &WaitingIndex,
    ) -> Result<Vec<DeliveryStatus>, QueueError> {
        let mut deliveries = Vec::new();
        for sink in routed.iter().filter(|s| !sinks.contains(s)) {
            if self.delivered_by_log(sink, seq) {
                deliveries.push(self.delivered(sink, seq)?);
            }
        }
        for sink in sinks {
            let before = deliveries.len();
            let rkey = sink_seq_key(READY, sink, seq);
            if let Some(v) = self.trees.q.get(&rkey)? {
                let row: DeliveryRow = decode(&rkey, &v)?;
                deliveries.push(DeliveryStatus {
                    sink: sink.clone(),
                    state: "ready",
                    attempts: row.attempts,
                    error: row.last_error,
                    at: None,
                });
            }
            let rows = waiting.get(&seq).into_iter().flatten();
            deliveries.extend(rows.filter(|d| &d.sink == sink).cloned());
            let xkey = sink_seq_key(DEAD, sink, seq);
            if let Some(v) = self.trees.q.get(&xkey)? {
                let letter: DeadLetter = decode(&xkey, &v)?;
                deliveries.push(DeliveryStatus {
                    sink: sink.clone(),
                    state: "dead",
                    attempts: letter.attempts,
                    error: Some(letter.error),
                    at: Some(letter.died_at),
                });
            }
            if deliveries.len() > before || !routed.contains(sink) {
                continue;
            }
            deliveries.push(if self.delivered_by_log(sink, seq) {
                self.delivered(sink, seq)?
            } else {
                DeliveryStatus {
                    sink: sink.clone(),
                    state: "ready",
                    attempts: 0,
                    error: None,
                    at: None,
                }
            });
        }
        Ok(deliveries)
    }

    /// Whether `sink` has settled `seq` without a row of its own: its cursor is past it, or it
    /// read and sent it and nothing has come of it since.
    fn delivered_by_log(&self, sink: &str, seq: u64) -> bool {
        let Some(state) = self.store.sinks.find(sink) else {
            return false;
        };
        let p = state.lock();
        seq <= p.cursor || (seq < p.read_from && !p.handed.contains(&seq))
    }

    /// The delivered record of `seq` at `sink`, with when it was delivered.
    fn delivered(&self, sink: &str, seq: u64) -> Result<DeliveryStatus, QueueError> {
        Ok(DeliveryStatus {
            sink: sink.to_string(),
            state: "delivered",
            attempts: 0,
            error: None,
            at: self.delivered_at(sink, seq)?,
        })
    }
}

/// The sinks a log row routed event `seq` to.
pub(super) fn routed_sinks(row: &LogRow<'_>, seq: u64) -> Vec<String> {
    row.get(seq)
        .map(|e| e.sinks.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}
