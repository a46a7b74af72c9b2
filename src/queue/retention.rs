//! Retention: forget log rows every sink is done with, old dead letters, marks of rows gone,
//! and expired dedup keys.
//!
//! Runs on the committer thread, the only writer of log rows, so it never races an accept or a
//! replay. Each pass does a bounded amount of work to keep accept latency flat.

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
    pub(super) fn run(&self, trees: &Trees, sinks: &Sinks, dedup_cursor: &mut Vec<u8>) {
        if let Err(e) = self.pass(trees, sinks, dedup_cursor) {
            tracing::warn!(error = %e, "retention pass failed");
        }
    }

    fn pass(
        &self,
        trees: &Trees,
        sinks: &Sinks,
        dedup_cursor: &mut Vec<u8>,
    ) -> Result<(), QueueError> {
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

        // A log row may go once no sink has anything in it left to send and it is older than
        // keep_delivered: whole rows, from the oldest, up to the first one still needed.
        let low = sinks.low_water().min(min_row_seq(q)?);
        for item in trees.log.iter() {
            let (k, v) = item?;
            let row = LogRow::decode(&k, &v)?;
            if row.end() > low || row.accepted_at >= delivered_before || removed >= PASS_LIMIT {
                break;
            }
            trees.log.remove(k)?;
            removed += 1;
        }
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
        for item in trees.dedup.range(dedup_cursor.clone()..).take(PASS_LIMIT) {
            let (k, v) = item?;
            scanned += 1;
            if u64_at(&v, 0).is_some_and(|at| at < dedup_before) {
                trees.dedup.remove(&k)?;
                removed += 1;
            }
            last = Some(k);
        }
        *dedup_cursor = match last {
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

/// The lowest event seq a ready or waiting row refers to: the log rows those need stay.
fn min_row_seq(q: &sled::Tree) -> Result<u64, QueueError> {
    let mut min = u64::MAX;
    // Ready rows are sorted by seq within a sink: look at each sink's first row only.
    let mut cursor = vec![READY];
    while let Some(item) = q.range(cursor.clone()..vec![READY + 1]).next() {
        let (k, _) = item?;
        let Some((sink, rest)) = split_sink(&k) else {
            break;
        };
        if let Some(seq) = u64_at(rest, 0) {
            min = min.min(seq);
        }
        cursor = sink_prefix(READY, sink);
        if let Some(last) = cursor.last_mut() {
            *last = 1;
        }
    }
    for item in q.scan_prefix([WAITING]) {
        let (k, _) = item?;
        if let Some(seq) = row_seq(WAITING, &k) {
            min = min.min(seq);
        }
    }
    Ok(min)
}
