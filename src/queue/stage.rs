//! Staging one request: deciding its duplicates and building its rows, its undo and its cost
//! on disk, before any of it touches the store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

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

    /// Bytes of keys and values written.
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

/// A request's events with their rows already encoded, off the committer thread: the committer
/// decides duplicates, assigns seqs and writes what is fresh.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The payload, stored once in a body row the events share when more than one fresh one is
    /// routed, else inside the routed event's row.
    payload: Arc<str>,
    events: Vec<PreparedEvent>,
}

/// One event of a [`Prepared`] request.
#[derive(Debug)]
struct PreparedEvent {
    key: [u8; 16],
    event_id: String,
    /// The event row's JSON, without its seqs (None when no route matched: only its dedup key
    /// is written).
    json: Option<Vec<u8>>,
    sinks: Vec<String>,
}

/// Encodes a request's event rows and keys: all that does not depend on which of its events
/// are duplicates or on their seqs. Runs on the request's own thread, so that the single
/// committer spends its time only on what must be serial.
pub(super) fn prepare(
    now: u64,
    payload: Arc<str>,
    events: Vec<RoutedEvent>,
) -> Result<Prepared, QueueError> {
    let mut prepared = Vec::with_capacity(events.len());
    for routed in events {
        let RoutedEvent {
            mut event,
            sinks,
            properties_at,
        } = routed;
        let Some(key) = event.dedup_key() else {
            return Err(QueueError::Corrupt {
                key: event.event_id,
                reason: "event id is not a dedup key".into(),
            });
        };
        event.accepted_at = now as i64;
        let event_id = event.event_id.clone();
        let json = (!sinks.is_empty()).then(|| {
            let properties_at = properties_at.filter(|_| !event.properties.is_empty());
            if properties_at.is_some() {
                event.properties = serde_json::Map::new();
            }
            EventRow {
                event,
                body: 0,
                properties_at,
            }
            .encode_json()
        });
        prepared.push(PreparedEvent {
            key: key.0,
            event_id,
            json,
            sinks,
        });
    }
    Ok(Prepared {
        payload,
        events: prepared,
    })
}

/// Stages one prepared request's new events and decides which are duplicates; `seen` holds
/// the dedup keys claimed by earlier requests of the same group.
///
/// Seqs are taken here, on the one committer thread, so that a request's are one contiguous
/// run, its body's first: retention frees body rows in seq order and relies on it.
pub(super) fn stage_accept(
    db: &sled::Db,
    tree: &sled::Tree,
    seen: &HashSet<[u8; 16]>,
    now: u64,
    retention: &Retention,
    prepared: Prepared,
) -> Result<(Staged, AcceptOutcome), QueueError> {
    let mut outcome = AcceptOutcome::default();
    let mut staged = Staged::default();
    let window_start = now.saturating_sub(retention.dedup_window.as_millis() as u64);
    let mut mine: HashSet<[u8; 16]> = HashSet::with_capacity(prepared.events.len());
    // Decide the duplicates first: a request whose only fresh event is routed keeps its
    // payload inside that event's row (one row fewer), else once in a body row.
    let mut fresh = Vec::with_capacity(prepared.events.len());
    for ev in prepared.events {
        if seen.contains(&ev.key) || mine.contains(&ev.key) {
            outcome.duplicates.push(ev.event_id);
            continue;
        }
        // An expired row is overwritten: the undo puts it back.
        let old = tree.get(dedup_key(&ev.key))?;
        if old
            .as_ref()
            .is_some_and(|v| u64_at(v, 0).is_some_and(|at| at >= window_start))
        {
            outcome.duplicates.push(ev.event_id);
            continue;
        }
        mine.insert(ev.key);
        fresh.push((ev, old));
    }
    let shared = fresh.iter().filter(|(ev, _)| ev.json.is_some()).count() > 1;
    let payload = prepared.payload.as_bytes();
    let mut body = None;
    staged.writes.reserve(fresh.len() * 3 + 1);
    staged.undo.0.reserve(fresh.len() * 3 + 1);
    for (ev, old) in fresh {
        if shared && ev.json.is_some() && body.is_none() {
            let b = db.generate_id()?;
            staged.put(seq_key(BODY, b), payload.to_vec(), None);
            body = Some(b);
        }
        let seq = db.generate_id()?;
        if let Some(json) = ev.json {
            for sink in ev.sinks {
                staged.put(sink_seq_key(READY, &sink, seq), fresh_delivery(), None);
                *staged.added.entry(sink).or_default() += 1;
            }
            let row = match body {
                Some(b) => EventRow::assemble(&json, b, None),
                None => EventRow::assemble(&json, seq, Some(payload)),
            };
            staged.put(seq_key(EVENT, seq), row, None);
        }
        outcome.accepted.push(ev.event_id);
        let mut value = Vec::with_capacity(16);
        value.extend_from_slice(&now.to_be_bytes());
        value.extend_from_slice(&seq.to_be_bytes());
        staged.put(dedup_key(&ev.key), value, old.map(|v| v.to_vec()));
        staged.claimed.push(ev.key);
        staged.end_unit();
    }
    Ok((staged, outcome))
}

/// The stored form of a delivery not yet tried.
fn fresh_delivery() -> Vec<u8> {
    static FRESH: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FRESH
        .get_or_init(|| encode(&DeliveryRow::default()))
        .clone()
}
