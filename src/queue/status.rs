//! Delivery status by event id: the equivalent of ArcGIS's notification status page.

use std::collections::HashMap;

use serde::Serialize;

use super::keys::*;
use super::{BodyRow, DeadLetter, DeliveryRow, EventRow, Queue, QueueError, decode};
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
        let Some(d) = self.tree.get(dedup_key(&key.0))? else {
            return Ok(None);
        };
        let (Some(accepted_at), Some(seq)) = (u64_at(&d, 0), u64_at(&d, 8)) else {
            return Ok(None);
        };
        let waiting = self.waiting_index(sinks, |s| s == seq)?;
        Ok(Some(EventStatus {
            seq,
            event: self.stored_event(seq)?,
            accepted_at,
            deliveries: self.deliveries(seq, sinks, &waiting)?,
        }))
    }

    /// The event stored under `seq`, its properties restored, while it is still stored.
    pub(super) fn stored_event(&self, seq: u64) -> Result<Option<Event>, QueueError> {
        let ekey = seq_key(EVENT, seq);
        Ok(match self.tree.get(&ekey)? {
            Some(v) => {
                let (row, inline) = EventRow::decode(&ekey, &v)?;
                let body = match (inline, &row.properties_at) {
                    (_, None) => None,
                    (Some(payload), Some(_)) => Some(BodyRow::new(payload)),
                    (None, Some(_)) => Some(BodyRow::load(&self.tree, row.body)?),
                };
                Some(row.restore(&ekey, body.as_ref().and_then(BodyRow::json)))
            }
            None => None,
        })
    }

    /// The waiting deliveries of the `sinks` for the events `wanted` picks.
    pub(super) fn waiting_index(
        &self,
        sinks: &[String],
        wanted: impl Fn(u64) -> bool,
    ) -> Result<WaitingIndex, QueueError> {
        let mut index = WaitingIndex::new();
        for sink in sinks {
            for item in self.tree.scan_prefix(sink_prefix(WAITING, sink)) {
                let (k, v) = item?;
                let Some((_, rest)) = split_sink(&k) else {
                    continue;
                };
                let Some(seq) = u64_at(rest, 8).filter(|s| wanted(*s)) else {
                    continue;
                };
                let row: DeliveryRow = decode(&k, &v)?;
                // A parked delivery waits for its changes, not for a time.
                let due = u64_at(rest, 0).filter(|d| *d != super::enrich::PARKED);
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

    /// Every sink's record of the event `seq`: delivered, ready, waiting (from `waiting`), dead.
    pub(super) fn deliveries(
        &self,
        seq: u64,
        sinks: &[String],
        waiting: &WaitingIndex,
    ) -> Result<Vec<DeliveryStatus>, QueueError> {
        let mut deliveries = Vec::new();
        for item in self.tree.scan_prefix(seq_key(DONE, seq)) {
            let (k, v) = item?;
            let sink = String::from_utf8_lossy(&k[9..]).into_owned();
            deliveries.push(DeliveryStatus {
                sink,
                state: "delivered",
                attempts: 0,
                error: None,
                at: u64_at(&v, 0),
            });
        }
        for sink in sinks {
            let rkey = sink_seq_key(READY, sink, seq);
            if let Some(v) = self.tree.get(&rkey)? {
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
            if let Some(v) = self.tree.get(&xkey)? {
                let letter: DeadLetter = decode(&xkey, &v)?;
                deliveries.push(DeliveryStatus {
                    sink: sink.clone(),
                    state: "dead",
                    attempts: letter.attempts,
                    error: Some(letter.error),
                    at: Some(letter.died_at),
                });
            }
        }
        Ok(deliveries)
    }
}
