//! End-to-end latency: paced requests, a consumer that notes when each event id arrives, and
//! the latency from each request's due time to its event's arrival.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::load::{Run, percentile};
use crate::report::{Report, out};

/// When a consumer should stop: once posting ended and every accepted event arrived, or nothing
/// arrived for 10 s after posting ended (then the missing ones show as accepted but not seen).
#[derive(Default)]
pub struct Arrivals {
    done: AtomicBool,
    expected: AtomicUsize,
}

impl Arrivals {
    /// Posting has ended with `accepted` events acknowledged.
    pub fn finish(&self, accepted: usize) {
        self.expected.store(accepted, Ordering::SeqCst);
        self.done.store(true, Ordering::SeqCst);
    }

    /// Whether to keep consuming, having seen `seen` distinct ids, the last at `last`.
    pub fn keep_going(&self, seen: usize, last: Instant) -> bool {
        !self.done.load(Ordering::SeqCst)
            || (seen < self.expected.load(Ordering::SeqCst)
                && last.elapsed() < Duration::from_secs(10))
    }
}

/// What a consumer saw: when each event id first arrived, and the messages' sizes.
#[derive(Default)]
pub struct Seen {
    pub at: HashMap<String, Instant>,
    pub messages: u64,
    pub bytes: u64,
}

impl Seen {
    pub fn record(&mut self, id: String, at: Instant, bytes: usize) {
        self.at.entry(id).or_insert(at);
        self.messages += 1;
        self.bytes += bytes as u64;
    }
}

/// One end-to-end run's figures.
pub struct EndToEnd {
    pub rate: f64,
    pub seconds: u64,
    pub accepted: usize,
    /// Latencies (ms) of the accepted events that arrived, sorted.
    pub latencies: Vec<f64>,
    /// The requests' own figures (due time → 200).
    pub accept: Run,
    /// Mean size of what the consumer received, when it knows.
    pub message_bytes: Option<u64>,
}

impl EndToEnd {
    pub fn new(
        rate: f64,
        seconds: u64,
        sent: &[(String, Instant)],
        seen: &Seen,
        accept: Run,
    ) -> EndToEnd {
        let mut latencies: Vec<f64> = sent
            .iter()
            .filter_map(|(id, due)| {
                seen.at
                    .get(id)
                    .map(|s| s.saturating_duration_since(*due).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        EndToEnd {
            rate,
            seconds,
            accepted: sent.len(),
            latencies,
            accept,
            message_bytes: (seen.messages > 0).then(|| seen.bytes / seen.messages),
        }
    }

    pub fn p(&self, q: f64) -> f64 {
        percentile(&self.latencies, q)
    }

    pub fn max(&self) -> f64 {
        self.latencies.last().copied().unwrap_or(0.0)
    }

    /// The table: `arrival` names where the event was seen ("line in the file").
    pub fn print(&self, report: &mut Report, arrival: &str) {
        out!(
            report,
            "| {:.0} events/s for {} s | accepted | seen | p50 ms | p99 ms | p99.9 ms | max ms |",
            self.rate,
            self.seconds
        );
        out!(report, "|---|---:|---:|---:|---:|---:|---:|");
        out!(
            report,
            "| request due → {arrival} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.accepted,
            self.latencies.len(),
            self.p(0.5),
            self.p(0.99),
            self.p(0.999),
            self.max()
        );
        out!(
            report,
            "| request due → 200 (accepted, durable) | {} | — | {:.2} | {:.2} | {:.2} | — |",
            self.accept.ok,
            self.accept.p50,
            self.accept.p99,
            self.accept.p999
        );
        if self.accept.errors > 0 {
            out!(report);
            out!(report, "- {} requests failed", self.accept.errors);
        }
    }
}
