//! Each sink's progress through the log: a cursor on disk, and in memory what lies between the
//! cursor and the next row the sink has not read yet.
//!
//! The dispatcher reads the log in seq order and hands out every event routed to its sink;
//! settling one (delivered, or moved to a waiting, parked or dead row) takes it off `handed`,
//! and the cursor then moves to just before the first event still out. So the cursor is
//! written once per batch, not once per delivery, and after a restart a sink starts again at
//! its cursor: what it had sent beyond it is sent again, which at-least-once allows.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use super::QueueError;
use super::keys::*;
use super::trees::Trees;

/// One sink's place in the log.
#[derive(Debug, Default)]
pub struct Progress {
    /// Every seq up to this one is settled for the sink (stored in its cursor row).
    pub cursor: u64,
    /// The next seq the sink reads in the log; every routed event below it is handed out,
    /// settled, or in `skip`.
    pub read_from: u64,
    /// Log deliveries handed out and not yet settled.
    pub handed: BTreeSet<u64>,
    /// Deliveries handed out from ready rows (their row goes when they settle).
    pub from_rows: HashSet<u64>,
    /// Seqs above the cursor that the log reading must pass over: they have a row of their
    /// own already (found at open, or parked before the sink read them).
    pub skip: BTreeSet<u64>,
    /// The delivered-at mark written last (its seq, and when its second began): marks are
    /// kept to one a second, a later batch in the same second moves it.
    pub last_mark: Option<(u64, u64)>,
}

/// A sink's progress, and what the committer updates without waiting for the sink's lock.
#[derive(Debug, Default)]
pub struct SinkState {
    /// The progress, locked by the sink's reads and completions.
    pub progress: Mutex<Progress>,
    /// Whether the cursor row exists (a sink known only in memory gets it before its first
    /// event is written).
    pub on_disk: AtomicBool,
}

impl SinkState {
    /// Locks the progress, whatever a panicking holder left.
    pub fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Progress {
    /// Where the cursor may move now: just before the first event still handed out, or
    /// before the next unread seq.
    pub fn settled_to(&self) -> u64 {
        let first_out = self.handed.first().copied().unwrap_or(self.read_from);
        first_out
            .min(self.read_from)
            .saturating_sub(1)
            .max(self.cursor)
    }

    /// Moves the cursor to [`Progress::settled_to`]; returns its new value if it moved.
    pub fn advance(&mut self) -> Option<u64> {
        let to = self.settled_to();
        if to <= self.cursor {
            return None;
        }
        self.cursor = to;
        self.skip = self.skip.split_off(&(to + 1));
        Some(to)
    }
}

/// The progress of every sink the queue has seen, each behind its own lock.
#[derive(Debug, Default)]
pub struct Sinks {
    map: Mutex<HashMap<String, Arc<SinkState>>>,
}

impl Sinks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<SinkState>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads every cursor row, and the rows above each cursor that the sink must not read
    /// from the log again.
    pub fn load(trees: &Trees) -> Result<Sinks, QueueError> {
        let mut map = HashMap::new();
        for item in trees.q.scan_prefix([CURSOR]) {
            let (k, v) = item?;
            let sink = String::from_utf8_lossy(&k[1..]).into_owned();
            let cursor = u64_at(&v, 0).unwrap_or(0);
            let progress = Progress {
                cursor,
                read_from: cursor + 1,
                ..Progress::default()
            };
            map.insert(sink, progress);
        }
        for prefix in [READY, WAITING, DEAD] {
            for item in trees.q.scan_prefix([prefix]) {
                let (k, _) = item?;
                let (Some((sink, _)), Some(seq)) = (split_sink(&k), row_seq(prefix, &k)) else {
                    continue;
                };
                if let Some(p) = map.get_mut(sink) {
                    if seq > p.cursor {
                        p.skip.insert(seq);
                    }
                }
            }
        }
        let map = map
            .into_iter()
            .map(|(k, progress)| {
                let state = SinkState {
                    progress: Mutex::new(progress),
                    on_disk: AtomicBool::new(true),
                };
                (k, Arc::new(state))
            })
            .collect();
        Ok(Sinks {
            map: Mutex::new(map),
        })
    }

    /// The progress of `sink`; a sink never routed to starts at `next` (the next seq to be
    /// handed out), as nothing before it is for the sink.
    pub fn get(&self, sink: &str, next: u64) -> Arc<SinkState> {
        if let Some(s) = self.map().get(sink) {
            return s.clone();
        }
        self.map()
            .entry(sink.to_string())
            .or_insert_with(|| {
                Arc::new(SinkState {
                    progress: Mutex::new(Progress {
                        cursor: next.saturating_sub(1),
                        read_from: next,
                        ..Progress::default()
                    }),
                    ..SinkState::default()
                })
            })
            .clone()
    }

    /// The progress of `sink`, if the queue knows it.
    pub fn find(&self, sink: &str) -> Option<Arc<SinkState>> {
        self.map().get(sink).cloned()
    }

    /// Every known sink and its progress.
    pub fn all(&self) -> Vec<(String, Arc<SinkState>)> {
        self.map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every known sink's cursor.
    pub fn cursors(&self) -> HashMap<String, u64> {
        self.all()
            .into_iter()
            .map(|(name, s)| {
                let cursor = s.lock().cursor;
                (name, cursor)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_stops_before_the_first_delivery_still_out() {
        let mut p = Progress {
            cursor: 9,
            read_from: 10,
            ..Progress::default()
        };
        p.read_from = 20;
        p.handed.extend(10..20);
        assert_eq!(p.advance(), None);
        for s in [10, 11, 12, 15] {
            p.handed.remove(&s);
        }
        assert_eq!(p.advance(), Some(12));
        p.handed.clear();
        p.skip.insert(25);
        assert_eq!(p.advance(), Some(19));
        assert!(p.skip.contains(&25));
        p.read_from = 30;
        assert_eq!(p.advance(), Some(29));
        assert!(p.skip.is_empty());
    }
}
