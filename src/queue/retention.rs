//! Retention: forget log rows every sink is done with, old dead letters, marks of rows gone,
//! and expired dedup keys.
//!
//! Runs on the committer thread, the only writer of log rows, so it never races an accept or a
//! replay. Each pass does a bounded amount of work to keep accept latency flat.

use std::collections::BTreeSet;
use std::time::Duration;

use super::keys::*;
use super::log::LogRow;
use super::progress::Sinks;
use super::trees::Trees;
use super::{DeadLetter, QueueError};
use crate::clock::now_ms;

/// Most rows one pass looks at per kind: a pass holds up the commits behind it, so passes are
/// small and frequent (every 5 s: up to 120 000 rows a minute per kind) rather than large.
const PASS_LIMIT: usize = 10_000;

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Dedup keys older than this are forgotten.
    pub dedup_window: Duration,
    /// Delivered events and their records are kept this long.
    pub keep_delivered: Duration,
    /// Dead letters are kept this long.
    pub keep_dead: Duration,
    /// Free bytes below which accepts are refused.
    pub min_free: u64,
}

impl Retention {
    /// One pass; errors are logged and the next pass tries again.
    pub(super) fn run(&self, trees: &Trees, sinks: &Sinks, cursors: &mut Cursors) {
        if let Err(e) = self.pass(trees, sinks, cursors) {
            tracing::warn!(error = %e, "retention pass failed");
        }
    }

    fn pass(&self, trees: &Trees, sinks: &Sinks, cursors: &mut Cursors) -> Result<(), QueueError> {
        let now = now_ms();
        let ms = |d: Duration| now.saturating_sub(d.as_millis() as u64);
        let (delivered_before, dead_before, dedup_before) = (
            ms(self.keep_delivered),
            ms(self.keep_dead),
            ms(self.dedup_window),
        );
        let mut removed = 0usize;
        let q = &trees.q;

        for item in q.scan_prefix([DEAD]).take(PASS_LIMIT) {
            let (k, v) = item?;
            if serde_json::from_slice::<DeadLetter>(&v).is_ok_and(|l| l.died_at < dead_before) {
                q.remove(k)?;
                removed += 1;
            }
        }

        // A log row may go once each sink it routes to is past it, no ready or waiting row
        // refers to it, and it is older than keep_delivered: whole rows, a slice of the log per
        // pass, from where the last pass stopped (rows still needed are passed over).
        let cursors_now = sinks.cursors();
        let pinned = pinned_seqs(q)?;
        let mut stopped = None;
        for (scanned, item) in trees.log.range(log_key(cursors.log)..).enumerate() {
            let (k, v) = item?;
            let row = LogRow::decode(&k, &v)?;
            if row.accepted_at >= delivered_before {
                break;
            }
            if scanned >= PASS_LIMIT || removed >= PASS_LIMIT {
                stopped = Some(row.first);
                break;
            }
            let settled = (row.first..).zip(&row.events).all(|(seq, e)| {
                e.sinks
                    .iter()
                    .all(|sink| cursors_now.get(*sink).is_some_and(|c| seq <= *c))
            });
            if !settled || pinned.is_pinned(row.first, row.end()) {
                continue;
            }
            trees.log.remove(k)?;
            removed += 1;
        }
        cursors.log = stopped.unwrap_or(0);
        let first_kept = match trees.log.iter().next() {
            Some(item) => u64_at(&item?.0, 0).unwrap_or(u64::MAX),
            None => u64::MAX,
        };
        for (sink, _) in sinks.all() {
            for item in q.scan_prefix(sink_prefix(MARK, &sink)).take(PASS_LIMIT) {
                let (k, _) = item?;
                if row_seq(MARK, &k).is_none_or(|seq| seq >= first_kept) {
                    break;
                }
                q.remove(k)?;
                removed += 1;
            }
        }

        // Dedup keys are in hash order, not time order: walk them a slice per pass.
        let mut scanned = 0;
        let mut last = None;
        for item in trees.dedup.range(cursors.dedup.clone()..).take(PASS_LIMIT) {
            let (k, v) = item?;
            scanned += 1;
            if u64_at(&v, 0).is_some_and(|at| at < dedup_before) {
                trees.dedup.remove(&k)?;
                removed += 1;
            }
            last = Some(k);
        }
        cursors.dedup = match last {
            Some(k) if scanned == PASS_LIMIT => {
                let mut next = k.to_vec();
                next.push(0);
                next
            }
            _ => Vec::new(),
        };
        if removed > 0 {
            tracing::debug!(removed, "retention pass");
        }
        Ok(())
    }
}

/// Where retention passes stopped, so the next goes on from there.
#[derive(Debug, Default)]
pub(super) struct Cursors {
    /// The next log row to look at (0: from the oldest).
    pub log: u64,
    /// The next dedup key to look at (empty: from the first).
    pub dedup: Vec<u8>,
}

/// Most ready and waiting rows whose seqs retention keeps in memory; beyond that it keeps every
/// log row from the lowest of them on.
const PINNED_LIMIT: usize = 200_000;

/// The seqs ready and waiting rows refer to: the log rows holding them stay.
enum Pinned {
    /// Each of them.
    Each(BTreeSet<u64>),
    /// Too many to hold: everything from the lowest on.
    From(u64),
}

impl Pinned {
    /// Whether a row holding the seqs `first .. end` must stay.
    fn is_pinned(&self, first: u64, end: u64) -> bool {
        match self {
            Pinned::Each(seqs) => seqs.range(first..end).next().is_some(),
            Pinned::From(min) => end > *min,
        }
    }
}

fn pinned_seqs(q: &sled::Tree) -> Result<Pinned, QueueError> {
    let mut seqs = BTreeSet::new();
    let mut min = u64::MAX;
    for prefix in [READY, WAITING] {
        for item in q.scan_prefix([prefix]) {
            let (k, _) = item?;
            if let Some(seq) = row_seq(prefix, &k) {
                min = min.min(seq);
                if seqs.len() < PINNED_LIMIT {
                    seqs.insert(seq);
                }
            }
        }
    }
    Ok(if seqs.len() >= PINNED_LIMIT {
        Pinned::From(min)
    } else {
        Pinned::Each(seqs)
    })
}
