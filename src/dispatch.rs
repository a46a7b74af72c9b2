//! One loop per sink: take deliveries, send, record the outcome, retry with backoff, dead-letter.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Backoff, RetryConfig};
use crate::ingress::Health;
use crate::metrics::METRICS;
use crate::queue::{Decision, Queue, now_ms};
use crate::sinks::{Outcome, Sink};

/// Operator control over one sink's dispatcher: pause and resume (from the admin API).
#[derive(Debug, Default)]
pub struct SinkControl {
    paused: AtomicBool,
    changed: Notify,
}

impl SinkControl {
    /// Whether sending is paused (deliveries keep queueing).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pauses or resumes sending.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// Drives one sink until shutdown.
pub struct Dispatcher {
    /// Sink name.
    pub name: String,
    /// The sink.
    pub sink: Arc<dyn Sink>,
    /// The queue it drains.
    pub queue: Arc<Queue>,
    /// Its retry policy.
    pub retry: RetryConfig,
    /// Readiness bookkeeping.
    pub health: Arc<Health>,
    /// Cancelled when the daemon stops; the send in hand is finished first.
    pub shutdown: CancellationToken,
    /// Pause and resume.
    pub control: Arc<SinkControl>,
}

/// The delay before attempt `attempt + 1`: exponential from `first`, capped at `max`, with
/// jitter in the upper half so that many failed deliveries do not retry in lockstep.
pub fn backoff_delay(b: &Backoff, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = b.first.saturating_mul(1u32 << exp).min(b.max);
    let half = base / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

impl Dispatcher {
    /// Connects, then loops until `shutdown` is cancelled.
    pub async fn run(self) {
        if !self.connect().await {
            return;
        }
        tokio::select! {
            _ = self.queue.wait_counted() => {}
            _ = self.shutdown.cancelled() => return,
        }
        let waker = self.queue.waker(&self.name);
        let mut outage = 0u32;
        while !self.shutdown.is_cancelled() {
            if self.control.is_paused() {
                let resumed = self.control.changed.notified();
                if self.control.is_paused() {
                    tokio::select! {
                        _ = resumed => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                }
                continue;
            }
            let batch = match self.queue.take(&self.name, self.sink.max_batch()) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot read the queue");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                let wait = match self.queue.next_due(&self.name) {
                    Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms()).max(1)),
                    _ => Duration::from_secs(60),
                };
                tokio::select! {
                    _ = waker.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shutdown.cancelled() => {}
                }
                continue;
            }
            if let Some(until) = self.sink.hold_until(&batch) {
                let now = now_ms();
                if until > now {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(until - now)) => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                    continue;
                }
            }
            let started = Instant::now();
            let result = self.sink.send(&batch).await;
            METRICS
                .send_seconds
                .with_label_values(&[&self.name])
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(outcomes) => {
                    outage = 0;
                    let now = now_ms();
                    let decisions: Vec<_> = batch
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            let outcome = outcomes.get(i).cloned().unwrap_or_else(|| {
                                Outcome::Retry("the sink reported no outcome".into())
                            });
                            (d, self.decide(d.attempts, outcome, now))
                        })
                        .collect();
                    for (d, decision) in &decisions {
                        let label = match decision {
                            Decision::Delivered => "delivered",
                            Decision::Retry { error, .. } => {
                                tracing::warn!(sink = %self.name, event_id = %d.event.event_id, attempt = d.attempts + 1, %error, "delivery failed; will retry");
                                "retry"
                            }
                            Decision::Dead { error } => {
                                tracing::error!(sink = %self.name, event_id = %d.event.event_id, attempts = d.attempts + 1, %error, "delivery is dead-lettered");
                                "dead"
                            }
                        };
                        METRICS
                            .deliveries
                            .with_label_values(&[&self.name, label])
                            .inc();
                    }
                    if let Err(e) = self.queue.complete(&self.name, &decisions) {
                        tracing::error!(sink = %self.name, error = %e, "cannot record delivery outcomes; they will be sent again");
                        self.pause(Duration::from_secs(1)).await;
                    }
                }
                Err(e) => {
                    outage += 1;
                    let delay = backoff_delay(&self.retry.backoff, outage);
                    METRICS
                        .deliveries
                        .with_label_values(&[&self.name, "unavailable"])
                        .inc_by(batch.len() as u64);
                    tracing::warn!(sink = %self.name, error = %e, retry_in = ?delay, "sink unavailable; nothing is lost, retrying");
                    self.pause(delay).await;
                }
            }
        }
        tracing::debug!(sink = %self.name, "dispatcher stopped");
    }

    /// Maps a sink's outcome to what the queue records, spending attempts on failures.
    fn decide(&self, attempts: u32, outcome: Outcome, now: u64) -> Decision {
        match outcome {
            Outcome::Delivered => Decision::Delivered,
            Outcome::Reject(error) => Decision::Dead { error },
            Outcome::Retry(error) if attempts + 1 >= self.retry.attempts => Decision::Dead {
                error: format!("gave up after {} attempts: {error}", attempts + 1),
            },
            Outcome::Retry(error) => Decision::Retry {
                due_ms: now + backoff_delay(&self.retry.backoff, attempts + 1).as_millis() as u64,
                error,
            },
        }
    }

    /// Connects with backoff until it works; false if shutdown came first.
    async fn connect(&self) -> bool {
        let mut attempt = 0;
        loop {
            tokio::select! {
                r = self.sink.connect() => match r {
                    Ok(()) => {
                        self.health.connected(&self.name);
                        tracing::info!(sink = %self.name, "sink connected");
                        return true;
                    }
                    Err(e) => {
                        attempt += 1;
                        let delay = backoff_delay(&self.retry.backoff, attempt);
                        tracing::warn!(sink = %self.name, error = %e, retry_in = ?delay, "sink cannot connect yet");
                        if !self.pause(delay).await {
                            return false;
                        }
                    }
                },
                _ = self.shutdown.cancelled() => return false,
            }
        }
    }

    /// Sleeps, waking early on shutdown; false if shutdown came.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let d1 = backoff_delay(&b, 1);
            assert!(
                d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1),
                "{d1:?}"
            );
            let d3 = backoff_delay(&b, 3);
            assert!(
                d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4),
                "{d3:?}"
            );
            let d20 = backoff_delay(&b, 40);
            assert!(
                d20 >= Duration::from_secs(5) && d20 <= Duration::from_secs(10),
                "{d20:?}"
            );
        }
    }
}
