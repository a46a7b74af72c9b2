//! Retention: forget delivered events, old dead letters and expired dedup keys.
//!
//! Runs on the committer thread, the only writer of event and body rows, so it never races an
//! accept or a replay. Each pass does a bounded amount of work to keep accept latency flat.

use std::time::Duration;

use super::keys::*;
use super::{DeadLetter, EventRow};
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
    pub(super) fn run(&self, tree: &sled::Tree, dedup_cursor: &mut Vec<u8>) {
        if let Err(e) = self.pass(tree, dedup_cursor) {
            tracing::warn!(error = %e, "retention pass failed");
        }
    }

    fn pass(&self, tree: &sled::Tree, dedup_cursor: &mut Vec<u8>) -> Result<(), sled::Error> {
        let now = now_ms();
        let ms = |d: Duration| now.saturating_sub(d.as_millis() as u64);
        let (delivered_before, dead_before, dedup_before) = (
            ms(self.keep_delivered),
            ms(self.keep_dead),
            ms(self.dedup_window),
        );
        let mut batch = sled::Batch::default();
        let mut removed = 0usize;

        for item in tree.scan_prefix([DEAD]).take(PASS_LIMIT) {
            let (k, v) = item?;
            if serde_json::from_slice::<DeadLetter>(&v).is_ok_and(|l| l.died_at < dead_before) {
                batch.remove(k);
                removed += 1;
            }
        }
        for item in tree.scan_prefix([DONE]).take(PASS_LIMIT) {
            let (k, v) = item?;
            if u64_at(&v, 0).is_some_and(|at| at < delivered_before) {
                batch.remove(k);
                removed += 1;
            }
        }

        // An event may go once no delivery refers to it and it is older than keep_delivered.
        let min_pending = min_pending_seq(tree)?;
        let mut first_kept_body = None;
        for item in tree.scan_prefix([EVENT]) {
            let (k, v) = item?;
            let seq = u64_at(&k, 1).unwrap_or(u64::MAX);
            let row: Option<EventRow> = EventRow::decode(&k, &v).ok().map(|(row, _)| row);
            let old = row
                .as_ref()
                .is_some_and(|r| (r.event.accepted_at as u64) < delivered_before);
            if seq >= min_pending || !old || removed >= PASS_LIMIT {
                first_kept_body = row.map(|r| r.body).or(Some(0));
                break;
            }
            batch.remove(k);
            removed += 1;
        }
        let body_limit = first_kept_body.unwrap_or(u64::MAX);
        for item in tree
            .range(seq_key(BODY, 0)..seq_key(BODY, body_limit))
            .take(PASS_LIMIT)
        {
            let (k, _) = item?;
            batch.remove(k);
            removed += 1;
        }

        // Dedup keys are in hash order, not time order: walk them a slice per pass.
        let mut scanned = 0;
        let mut last = None;
        for item in tree
            .range(dedup_cursor.clone()..vec![DEDUP + 1])
            .take(PASS_LIMIT)
        {
            let (k, v) = item?;
            scanned += 1;
            if u64_at(&v, 0).is_some_and(|at| at < dedup_before) {
                batch.remove(k.clone());
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
            _ => vec![DEDUP],
        };

        if removed > 0 {
            tree.apply_batch(batch)?;
            tracing::debug!(removed, "retention pass");
        }
        Ok(())
    }
}

/// The lowest event sequence number any sink's pending delivery refers to.
fn min_pending_seq(tree: &sled::Tree) -> Result<u64, sled::Error> {
    let mut min = u64::MAX;
    // Ready rows are sorted by seq within a sink: look at each sink's first row only.
    let mut cursor = vec![READY];
    while let Some(item) = tree.range(cursor.clone()..vec![READY + 1]).next() {
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
    for item in tree.scan_prefix([WAITING]) {
        let (k, _) = item?;
        if let Some(seq) = split_sink(&k).and_then(|(_, rest)| u64_at(rest, 8)) {
            min = min.min(seq);
        }
    }
    Ok(min)
}
