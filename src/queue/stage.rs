//! Staging one request: deciding its duplicates and building its log row, its dedup rows, its
//! undo and its cost on disk, before any of it touches the store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::keys::*;
use super::log;
use super::rollback::Undo;
use super::store::Store;
use super::trees::Tree;
use super::{EventRow, QueueError, space};
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

/// One request's writes, ready to join its group once the disk has room for them.
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// Rows to write (None: remove), in order: a row that others point at comes first, so
    /// that whatever prefix of them a crash leaves is consistent.
    pub writes: Vec<(Tree, Vec<u8>, Option<Vec<u8>>)>,
    /// What restores the store should the write fail.
    pub undo: Undo,
    /// Dedup keys this request claims (so that a later request of the group sees them).
    pub claimed: Vec<[u8; 16]>,
    /// Deliveries added per sink.
    pub added: BTreeMap<String, i64>,
    /// Bytes of keys and values written.
    bytes: u64,
}

impl Staged {
    /// Stages writing `value` at `key` of `tree`, which held `old` before.
    pub fn put(&mut self, tree: Tree, key: Vec<u8>, value: Vec<u8>, old: Option<Vec<u8>>) {
        self.bytes += (key.len() + value.len()) as u64;
        self.undo.push(tree, &key, old);
        self.writes.push((tree, key, Some(value)));
    }

    /// Stages removing `key` of `tree`, which held `old`.
    pub fn remove(&mut self, tree: Tree, key: Vec<u8>, old: Vec<u8>) {
        self.bytes += key.len() as u64;
        self.undo.push(tree, &key, Some(old));
        self.writes.push((tree, key, None));
    }

    /// Bytes of keys and values written.
    pub fn bytes(&self) -> u64 {
        self.bytes
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
    /// The payload, stored once in the request's log row.
    payload: Arc<str>,
    events: Vec<PreparedEvent>,
    /// The committer's generation before the dedup rows were read: keys claimed by groups
    /// applied from then on may be missing from what was read, and are looked up again.
    read_at: u64,
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
    /// Its dedup row as the request's thread read it (see [`Prepared::read_at`]).
    old: Option<sled::IVec>,
}

/// Encodes a request's event rows and keys, and reads their dedup rows: all that does not
/// depend on which of its events are duplicates or on their seqs. Runs on the request's own
/// thread, so that the single committer spends its time only on what must be serial (the
/// dedup lookup was a third of it: a random read in a tree larger than sled's cache).
pub(super) fn prepare(
    store: &Store,
    now: u64,
    payload: Arc<str>,
    events: Vec<RoutedEvent>,
) -> Result<Prepared, QueueError> {
    let read_at = store.generation.load(Ordering::SeqCst);
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
        let old = store.trees.dedup.get(key.0)?;
        prepared.push(PreparedEvent {
            key: key.0,
            event_id,
            json,
            sinks,
            old,
        });
    }
    Ok(Prepared {
        payload,
        events: prepared,
        read_at,
    })
}

/// The dedup keys claimed by the last groups applied, by generation: what a request's own
/// reading of the dedup rows may have missed. Kept by the committer alone.
#[derive(Debug, Default)]
pub(super) struct Claimed {
    groups: std::collections::VecDeque<(u64, HashSet<[u8; 16]>)>,
}

/// Most groups whose claims are kept; a request read before the oldest is looked up again.
const CLAIMED_GROUPS: usize = 256;

impl Claimed {
    /// Records the keys group `generation` claimed.
    pub fn push(&mut self, generation: u64, keys: HashSet<[u8; 16]>) {
        if self.groups.len() >= CLAIMED_GROUPS {
            self.groups.pop_front();
        }
        self.groups.push_back((generation, keys));
    }

    /// Whether `key` was claimed at or after `generation`; None when that is older than what
    /// is kept (the caller reads the row again).
    fn since(&self, generation: u64, key: &[u8; 16]) -> Option<bool> {
        match self.groups.front() {
            Some((oldest, _)) if *oldest > generation => None,
            _ => Some(
                self.groups
                    .iter()
                    .rev()
                    .take_while(|(g, _)| *g >= generation)
                    .any(|(_, keys)| keys.contains(key)),
            ),
        }
    }
}

/// How many seqs the floor row reserves at a time: the floor is written once per this many.
pub(super) const FLOOR_STEP: u64 = 1 << 24;

/// Takes `n` seqs for a request's events (the committer raises the floor on disk before it
/// writes rows that reach it).
fn take_seqs(store: &Store, n: u64) -> u64 {
    store.next_seq.fetch_add(n, Ordering::SeqCst)
}

/// Stages one prepared request's new events and decides which are duplicates; `seen` holds
/// the dedup keys claimed by earlier requests of the same group.
///
/// The fresh routed events become one log row under seqs taken here, on the one committer
/// thread, so that rows go into the log in seq order. A sink routed to for the first time
/// gets its cursor row first, just before the row, so it never reads what came before.
pub(super) fn stage_accept(
    store: &Store,
    seen: &HashSet<[u8; 16]>,
    claimed: &Claimed,
    now: u64,
    prepared: Prepared,
) -> Result<(Staged, AcceptOutcome), QueueError> {
    let mut outcome = AcceptOutcome::default();
    let mut staged = Staged::default();
    let window_start = now.saturating_sub(store.retention.dedup_window.as_millis() as u64);
    let mut mine: HashSet<[u8; 16]> = HashSet::with_capacity(prepared.events.len());
    let mut fresh = Vec::with_capacity(prepared.events.len());
    let read_at = prepared.read_at;
    for ev in prepared.events {
        if seen.contains(&ev.key) || mine.contains(&ev.key) {
            outcome.duplicates.push(ev.event_id);
            continue;
        }
        // What the request's thread read holds unless a group applied since claimed the key.
        let old = match claimed.since(read_at, &ev.key) {
            Some(true) => {
                outcome.duplicates.push(ev.event_id);
                continue;
            }
            Some(false) => ev.old.clone(),
            None => store.trees.dedup.get(ev.key)?,
        };
        // An expired row is overwritten: the undo puts it back.
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
    let routed = fresh.iter().filter(|(ev, _)| ev.json.is_some()).count() as u64;
    let mut first = 0;
    if routed > 0 {
        for (ev, _) in &fresh {
            for sink in &ev.sinks {
                let state = store.sinks.get(sink, store.next_seq.load(Ordering::SeqCst));
                if !state.on_disk.swap(true, Ordering::SeqCst) {
                    let cursor = state.lock().cursor.to_be_bytes().to_vec();
                    staged.put(Tree::Q, cursor_key(sink), cursor, None);
                }
            }
        }
        first = take_seqs(store, routed);
        let events: Vec<(&[u8], &[String])> = fresh
            .iter()
            .filter_map(|(ev, _)| ev.json.as_deref().map(|j| (j, ev.sinks.as_slice())))
            .collect();
        let row = log::encode(now, &events, prepared.payload.as_bytes());
        staged.put(Tree::Log, log_key(first).to_vec(), row, None);
    }
    let mut seq = first;
    for (ev, old) in fresh {
        let stored = if ev.json.is_some() {
            for sink in ev.sinks {
                *staged.added.entry(sink).or_default() += 1;
            }
            seq += 1;
            seq - 1
        } else {
            0
        };
        outcome.accepted.push(ev.event_id);
        let mut value = Vec::with_capacity(16);
        value.extend_from_slice(&now.to_be_bytes());
        value.extend_from_slice(&stored.to_be_bytes());
        staged.put(Tree::Dedup, ev.key.to_vec(), value, old.map(|v| v.to_vec()));
        staged.claimed.push(ev.key);
    }
    Ok((staged, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_kept_for_the_last_groups_and_older_reads_are_looked_up_again() {
        let mut c = Claimed::default();
        for g in 0..(CLAIMED_GROUPS as u64 + 10) {
            c.push(g, HashSet::from([[g as u8; 16]]));
        }
        let last = CLAIMED_GROUPS as u64 + 9;
        assert_eq!(c.since(last, &[last as u8; 16]), Some(true));
        assert_eq!(
            c.since(last, &[(last - 1) as u8; 16]),
            Some(false),
            "claimed before the read"
        );
        assert_eq!(
            c.since(last + 1, &[last as u8; 16]),
            Some(false),
            "read after the claim"
        );
        assert_eq!(c.since(3, &[3; 16]), None, "older than what is kept");
    }
}
