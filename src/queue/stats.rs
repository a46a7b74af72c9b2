//! Counts of what the queue holds: per sink and as a whole, for `queue stats`, the admin API
//! and the gauges.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::keys::*;
use super::log::{self, LogRow};
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
    /// Stored payloads (one per log row: a request's events share it).
    pub bodies: u64,
    /// Remembered dedup keys.
    pub dedup_keys: u64,
    /// Per sink.
    pub sinks: BTreeMap<String, SinkStats>,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

impl Queue {
    /// Counts pending deliveries and dead letters per sink into the gauges. Rows and log events
    /// from `snapshot` on are counted by the commits that add them.
    pub(super) fn count_into_metrics(&self, snapshot: u64) {
        let started = std::time::Instant::now();
        let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for prefix in [READY, WAITING, DEAD] {
            for (i, item) in self.trees.q.scan_prefix([prefix]).enumerate() {
                if i % 10_000 == 0 && self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok((key, _)) = item else { continue };
                let (Some((sink, _)), Some(seq)) = (split_sink(&key), row_seq(prefix, &key)) else {
                    continue;
                };
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
        let sinks = self.store.sinks.all();
        let cursors: HashMap<String, (u64, BTreeSet<u64>)> = sinks
            .iter()
            .map(|(name, s)| {
                let p = s.lock();
                (name.clone(), (p.cursor, p.skip.clone()))
            })
            .collect();
        let from = cursors
            .values()
            .map(|(c, _)| c + 1)
            .min()
            .unwrap_or(u64::MAX);
        let start = match log::find(&self.trees.log, from) {
            Ok(Some((k, _))) => k.to_vec(),
            _ => log_key(from).to_vec(),
        };
        for (i, item) in self.trees.log.range(start..).enumerate() {
            if i % 10_000 == 0 && self.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let Ok((k, v)) = item else { continue };
            let Ok(row) = LogRow::decode(&k, &v) else {
                continue;
            };
            if row.first >= snapshot {
                break;
            }
            for (seq, e) in (row.first..snapshot).zip(&row.events) {
                for sink in &e.sinks {
                    let Some((name, (cursor, skip))) = cursors.get_key_value(*sink) else {
                        continue;
                    };
                    if seq > *cursor && !skip.contains(&seq) {
                        counts.entry(name.clone()).or_default().0 += 1;
                    }
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
            for item in self.trees.q.scan_prefix([prefix]) {
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
        for (name, state) in self.store.sinks.all() {
            let p = state.lock();
            let mut ready = 0;
            let start = match log::find(&self.trees.log, p.cursor + 1)? {
                Some((k, _)) => k.to_vec(),
                None => log_key(p.cursor + 1).to_vec(),
            };
            for item in self.trees.log.range(start..) {
                let (k, v) = item?;
                let row = LogRow::decode(&k, &v)?;
                for (seq, e) in (row.first..).zip(&row.events) {
                    let unsettled =
                        p.handed.contains(&seq) || (seq >= p.read_from && !p.skip.contains(&seq));
                    if seq > p.cursor && e.routed_to(&name) && unsettled {
                        ready += 1;
                    }
                }
            }
            if ready > 0 {
                sinks.entry(name).or_default().ready += ready;
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
        let mut sinks = self.sink_stats()?;
        for name in configured {
            sinks.entry(name.clone()).or_default();
        }
        let (mut events, mut bodies) = (0, 0);
        for item in self.trees.log.iter() {
            let (_, v) = item?;
            events += log::event_count(&v);
            bodies += 1;
        }
        Ok(Stats {
            events,
            bodies,
            dedup_keys: self.trees.dedup.len() as u64,
            sinks,
            disk_bytes: self.db.size_on_disk()?,
        })
    }
}
