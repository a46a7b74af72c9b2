//! Counts of what the queue holds: per sink and as a whole, for `queue stats`, the admin API
//! and the gauges.

use std::collections::BTreeMap;

use serde::Serialize;

use super::keys::*;
use super::{Queue, QueueError};
use crate::metrics::METRICS;

/// Per-sink counts for `queue stats` and the admin API.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SinkStats {
    /// Deliveries ready to send.
    pub ready: u64,
    /// Deliveries waiting for a retry.
    pub waiting: u64,
    /// Dead letters.
    pub dead: u64,
}

/// Whole-queue counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Stored events (pending or kept for status).
    pub events: u64,
    /// Stored payload bodies.
    pub bodies: u64,
    /// Remembered dedup keys.
    pub dedup_keys: u64,
    /// Per sink.
    pub sinks: BTreeMap<String, SinkStats>,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

impl Queue {
    /// Counts pending deliveries and dead letters per sink into the gauges.
    pub(super) fn count_into_metrics(&self, snapshot: u64) {
        let started = std::time::Instant::now();
        let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for prefix in [READY, WAITING, DEAD] {
            for (i, item) in self.tree.scan_prefix([prefix]).enumerate() {
                if i % 10_000 == 0 && self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok((key, _)) = item else { continue };
                let Some((sink, rest)) = split_sink(&key) else {
                    continue;
                };
                let seq = u64_at(rest, if prefix == WAITING { 8 } else { 0 }).unwrap_or(u64::MAX);
                if seq >= snapshot {
                    continue;
                }
                let c = counts.entry(sink.to_string()).or_default();
                if prefix == DEAD {
                    c.1 += 1;
                } else {
                    c.0 += 1;
                }
            }
        }
        for (sink, (pending, dead)) in &counts {
            METRICS
                .queue_pending
                .with_label_values(&[sink])
                .add(*pending);
            METRICS.dead_letters.with_label_values(&[sink]).add(*dead);
        }
        tracing::info!(elapsed = ?started.elapsed(), "queue counted");
        self.counted.send_replace(true);
    }

    /// Waits until the backlog present at start has been counted into the gauges; dispatchers
    /// wait for this so that their completions are not subtracted before the rows are counted.
    pub async fn wait_counted(&self) {
        let mut rx = self.counted.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    fn sink_stats(&self) -> Result<BTreeMap<String, SinkStats>, QueueError> {
        let mut sinks: BTreeMap<String, SinkStats> = BTreeMap::new();
        for prefix in [READY, WAITING, DEAD] {
            for item in self.tree.scan_prefix([prefix]) {
                let (key, _) = item?;
                let Some((sink, _)) = split_sink(&key) else {
                    continue;
                };
                let s = sinks.entry(sink.to_string()).or_default();
                match prefix {
                    READY => s.ready += 1,
                    WAITING => s.waiting += 1,
                    _ => s.dead += 1,
                }
            }
        }
        Ok(sinks)
    }

    /// Counts everything in the queue (a full scan: for the CLI and the admin API); the
    /// `configured` sinks are listed even when they hold nothing.
    pub fn stats<'a>(
        &self,
        configured: impl IntoIterator<Item = &'a String>,
    ) -> Result<Stats, QueueError> {
        let count = |p: u8| self.tree.scan_prefix([p]).count() as u64;
        let mut sinks = self.sink_stats()?;
        for name in configured {
            sinks.entry(name.clone()).or_default();
        }
        Ok(Stats {
            events: count(EVENT),
            bodies: count(BODY),
            dedup_keys: count(DEDUP),
            sinks,
            disk_bytes: self.db.size_on_disk()?,
        })
    }
}
