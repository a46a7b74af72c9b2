//! Deliveries per hook and outcome over the last hour and day, in memory, for the status page.
//!
//! Prometheus counters only go up; answering "how many in the last hour" needs time buckets.
//! One ring of minute buckets per (hook, outcome): a day is 1 440 buckets. Counts start at
//! zero when the daemon starts. Hooks are configured and outcomes a fixed set, so the map
//! stays small.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Minutes in the longest window.
const MINUTES: usize = 24 * 60;

/// One (hook, outcome)'s counts per minute, as a ring indexed by minute number.
#[derive(Debug)]
struct Ring {
    /// The minute (since the epoch) each slot counts; a slot from an older day reads as zero.
    minute: Vec<u64>,
    count: Vec<u64>,
}

impl Ring {
    fn new() -> Self {
        Ring {
            minute: vec![u64::MAX; MINUTES],
            count: vec![0; MINUTES],
        }
    }

    fn add(&mut self, minute: u64) {
        let i = (minute % MINUTES as u64) as usize;
        if self.minute[i] != minute {
            self.minute[i] = minute;
            self.count[i] = 0;
        }
        self.count[i] += 1;
    }

    /// The count over the `span` minutes ending with `now` (inclusive).
    fn sum(&self, now: u64, span: u64) -> u64 {
        let from = now.saturating_sub(span - 1);
        self.minute
            .iter()
            .zip(&self.count)
            .filter(|(m, _)| **m != u64::MAX && **m >= from && **m <= now)
            .map(|(_, c)| c)
            .sum()
    }
}

/// Deliveries received, by hook and outcome, in minute buckets over a day.
#[derive(Debug, Default)]
pub struct Traffic {
    rings: Mutex<BTreeMap<(String, &'static str), Ring>>,
}

/// One hook and outcome's counts.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TrafficRow {
    /// The hook (`(unknown)` for paths no hook is configured for).
    pub hook: String,
    /// `accepted`, `duplicate`, or the refusal code.
    pub outcome: &'static str,
    /// Deliveries in the last 60 minutes.
    pub hour: u64,
    /// Deliveries in the last 24 hours.
    pub day: u64,
}

impl Traffic {
    /// Counts one delivery on `hook` with `outcome` now.
    pub fn record(&self, hook: &str, outcome: &'static str) {
        self.record_at(hook, outcome, crate::clock::now_ms());
    }

    fn record_at(&self, hook: &str, outcome: &'static str, now_ms: u64) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings
            .entry((hook.to_string(), outcome))
            .or_insert_with(Ring::new)
            .add(now_ms / 60_000);
    }

    /// Every hook and outcome seen in the last day, sorted by hook then outcome.
    pub fn rows(&self) -> Vec<TrafficRow> {
        self.rows_at(crate::clock::now_ms())
    }

    fn rows_at(&self, now_ms: u64) -> Vec<TrafficRow> {
        let now = now_ms / 60_000;
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings
            .iter()
            .map(|((hook, outcome), ring)| TrafficRow {
                hook: hook.clone(),
                outcome,
                hour: ring.sum(now, 60),
                day: ring.sum(now, MINUTES as u64),
            })
            .filter(|r| r.day > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_what_falls_in_them() {
        let t = Traffic::default();
        let min = 60_000;
        let now = 1_000_000 * min;
        t.record_at("portal", "accepted", now - 2 * 60 * min);
        t.record_at("portal", "accepted", now - 30 * min);
        t.record_at("portal", "accepted", now);
        t.record_at("portal", "signature_invalid", now - 25 * 60 * min);
        t.record_at("features", "duplicate", now - 59 * min);
        let rows = t.rows_at(now);
        assert_eq!(
            rows,
            vec![
                TrafficRow {
                    hook: "features".into(),
                    outcome: "duplicate",
                    hour: 1,
                    day: 1
                },
                TrafficRow {
                    hook: "portal".into(),
                    outcome: "accepted",
                    hour: 2,
                    day: 3
                },
            ]
        );
        // A day later the ring's slots are reused, not added to.
        t.record_at("portal", "accepted", now + MINUTES as u64 * min);
        let later = t.rows_at(now + MINUTES as u64 * min);
        assert_eq!(later.iter().map(|r| r.day).sum::<u64>(), 1);
    }
}
