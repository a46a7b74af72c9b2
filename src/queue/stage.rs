//! Staging one request: deciding its duplicates and building its rows, its undo and its cost
//! on disk, before any of it touches the store.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::keys::*;
use super::retention::Retention;
use super::rollback::Undo;
use super::{DeliveryRow, EventRow, QueueError, encode, space};
use crate::event::Event;

/// An event and the sinks the routing table sent it to.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    /// The parsed event.
    pub event: Event,
    /// Destination sink names (empty when no route matched).
    pub sinks: Vec<String>,
    /// Where the event's properties sit verbatim in the payload (a JSON pointer), if they do:
    /// the event row then leaves them out and they are read back from the body row.
    pub properties_at: Option<String>,
}

/// What became of a request's events.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct AcceptOutcome {
    /// Event ids stored now.
    pub accepted: Vec<String>,
    /// Event ids that were already accepted before.
    pub duplicates: Vec<String>,
}

/// One request's writes, ready to join its group's batch once the disk has room for them.
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// Rows to write (None: remove), in order.
    pub writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// What restores the store should the write fail.
    pub undo: Undo,
    /// Dedup keys this request claims (so that a later request of the group sees them).
    pub claimed: Vec<[u8; 16]>,
    /// Deliveries added per sink.
    pub added: BTreeMap<String, i64>,
    /// Where each unit (an event's rows, a dead letter's) ends in `writes`: a group is applied
    /// in chunks cut only there, so that a crash between chunks leaves whole events.
    pub ends: Vec<usize>,
    /// Bytes of keys and values written.
    bytes: u64,
}

impl Staged {
    /// Stages writing `value` at `key`, which held `old` before.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, old: Option<Vec<u8>>) {
        self.bytes += (key.len() + value.len()) as u64;
        self.undo.0.push((key.clone(), old));
        self.writes.push((key, Some(value)));
    }

    /// Stages removing `key`, which held `old`.
    pub fn remove(&mut self, key: Vec<u8>, old: Vec<u8>) {
        self.bytes += key.len() as u64;
        self.undo.0.push((key.clone(), Some(old)));
        self.writes.push((key, None));
    }

    /// Bytes of keys and values written (tests measure sled's overhead against it).
    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Marks the end of a unit of rows that must reach the store together.
    pub fn end_unit(&mut self) {
        self.ends.push(self.writes.len());
    }

    /// What these writes cost on disk, sled's overhead included.
    pub fn cost(&self) -> u64 {
        space::estimate(self.bytes, self.writes.len() as u64)
    }
}

/// Stages one request's new events and decides which are duplicates; `seen` holds the dedup
/// keys claimed by earlier requests of the same group.
pub(super) fn stage_accept(
    db: &sled::Db,
    tree: &sled::Tree,
    seen: &HashSet<[u8; 16]>,
    now: u64,
    retention: &Retention,
    payload: &str,
    events: Vec<RoutedEvent>,
) -> Result<(Staged, AcceptOutcome), QueueError> {
    let mut outcome = AcceptOutcome::default();
    let mut staged = Staged::default();
    let window_start = now.saturating_sub(retention.dedup_window.as_millis() as u64);
    let mut mine: HashSet<[u8; 16]> = HashSet::with_capacity(events.len());
    // Decide the duplicates first: a request whose only new event is routed stores its payload
    // inside that event's row (one row fewer), else once in a body row the events share.
    let mut fresh = Vec::with_capacity(events.len());
    for routed in events {
        let Some(key) = routed.event.dedup_key() else {
            return Err(QueueError::Corrupt {
                key: routed.event.event_id.clone(),
                reason: "event id is not a dedup key".into(),
            });
        };
        if seen.contains(&key.0) || mine.contains(&key.0) {
            outcome.duplicates.push(routed.event.event_id);
            continue;
        }
        // An expired row is overwritten: the undo puts it back.
        let old = tree.get(dedup_key(&key.0))?;
        if old
            .as_ref()
            .is_some_and(|v| u64_at(v, 0).is_some_and(|at| at >= window_start))
        {
            outcome.duplicates.push(routed.event.event_id);
            continue;
        }
        mine.insert(key.0);
        fresh.push((key, routed, old.map(|v| v.to_vec())));
    }
    let inline = fresh.iter().filter(|(_, r, _)| !r.sinks.is_empty()).count() == 1;
    let mut body_seq = None;
    staged.writes.reserve(fresh.len() * 3);
    staged.undo.0.reserve(fresh.len() * 3);
    for (key, routed, old_dedup) in fresh {
        let RoutedEvent {
            mut event,
            sinks,
            properties_at,
        } = routed;
        let seq = db.generate_id()?;
        event.accepted_at = now as i64;
        if sinks.is_empty() {
            outcome.accepted.push(event.event_id);
        } else {
            let body = match (inline, body_seq) {
                (true, _) => seq,
                (false, Some(b)) => b,
                (false, None) => {
                    let b = db.generate_id()?;
                    staged.put(seq_key(BODY, b), payload.as_bytes().to_vec(), None);
                    body_seq = Some(b);
                    b
                }
            };
            for sink in &sinks {
                staged.put(
                    sink_seq_key(READY, sink, seq),
                    encode(&DeliveryRow::default()),
                    None,
                );
                *staged.added.entry(sink.clone()).or_default() += 1;
            }
            let id = event.event_id.clone();
            let properties_at = properties_at.filter(|_| !event.properties.is_empty());
            if properties_at.is_some() {
                event.properties = serde_json::Map::new();
            }
            let row = EventRow {
                event,
                body,
                properties_at,
            };
            let inline_payload = inline.then_some(payload.as_bytes());
            staged.put(seq_key(EVENT, seq), row.encode(inline_payload), None);
            outcome.accepted.push(id);
        }
        let mut value = now.to_be_bytes().to_vec();
        value.extend_from_slice(&seq.to_be_bytes());
        staged.put(dedup_key(&key.0), value, old_dedup);
        staged.claimed.push(key.0);
        staged.end_unit();
    }
    Ok((staged, outcome))
}
