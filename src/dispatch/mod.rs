//! One loop per sink: take deliveries, send, record the outcome, retry with backoff, dead-letter.

mod record;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::event::Delivery;
use crate::health::Health;
use crate::metrics::METRICS;
use crate::queue::{Decision, Queue};
use crate::retry::RetryConfig;
use crate::sinks::{Outcome, Sink, SinkError};
use record::Recorder;

/// Operator control over one sink's dispatcher: pause and resume (from the admin API), and
/// the last failure it met, so that an operator sees why a sink is behind.
#[derive(Debug, Default)]
pub struct SinkControl {
    paused: AtomicBool,
    changed: Notify,
    last_error: Mutex<Option<LastError>>,
}

/// A sink's most recent failure (connect, outage, or one delivery's), for the status page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastError {
    /// When it happened, epoch ms.
    pub at: u64,
    /// What the destination or the sink reported.
    pub message: String,
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

    /// Remembers a failure as the sink's last error.
    pub fn record_error(&self, message: &str) {
        let mut slot = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(LastError {
            at: now_ms(),
            message: message.to_string(),
        });
    }

    /// The sink's last failure, if it has met one since the daemon started.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

/// A batch on its way to the sink: the deliveries, the sink's answer, and how long it took.
type Sent = (Arc<[Delivery]>, Result<Vec<Outcome>, SinkError>, Duration);

impl Dispatcher {
    /// Connects, then loops until `shutdown` is cancelled.
    ///
    /// Up to `Sink::max_in_flight` batches are sent at once, each in a task of its own, so that
    /// a broker's acks for one batch overlap with publishing the next; outcomes are decided in
    /// the order batches were taken and written to the queue by the [`Recorder`] while the next
    /// batches are taken and sent. A batch's deliveries stay handed out until their outcomes
    /// are written, so none is taken twice. On shutdown, the batches in hand are finished and
    /// recorded first, then the sink closes its connection.
    pub async fn run(self) {
        self.dispatch().await;
        self.sink.close().await;
        tracing::debug!(sink = %self.name, "dispatcher stopped");
    }

    /// The dispatcher's loop, until `shutdown` is cancelled and the batches in hand are done.
    async fn dispatch(&self) {
        if !self.connect().await {
            return;
        }
        tokio::select! {
            _ = self.queue.wait_counted() => {}
            _ = self.shutdown.cancelled() => return,
        }
        let waker = self.queue.waker(&self.name);
        let depth = self.sink.max_in_flight().max(1);
        let mut in_flight: FuturesOrdered<BoxFuture<'static, Sent>> = FuturesOrdered::new();
        let mut recorder = Recorder::default();
        let mut taken: HashSet<u64> = HashSet::new();
        let mut outage = 0u32;
        // After a failed batch: no new batches until the in-flight ones are back and this passes.
        let mut backoff: Option<Duration> = None;
        loop {
            let stopping = self.shutdown.is_cancelled();
            let open = !stopping && backoff.is_none() && !self.control.is_paused();
            // Batches sent and not yet recorded count against the window too: one write may be
            // under way beside `depth` sends. Every batch handed out makes each take skip its
            // rows, and a queue slower to record than the sink is to send holds the sends back.
            let room = depth.min((depth + 1).saturating_sub(recorder.batches()));
            let mut hold = None;
            if open {
                match self.fill(&mut in_flight, &mut taken, room) {
                    Ok(until) => hold = until,
                    Err(delay) => backoff = Some(delay),
                }
            }
            recorder.start(&self.queue, &self.name);
            if in_flight.is_empty() && recorder.is_idle() {
                if stopping {
                    break;
                }
                if let Some(delay) = backoff.take() {
                    self.pause(delay).await;
                    continue;
                }
                self.idle(&waker, hold).await;
                continue;
            }
            let more = open && backoff.is_none() && in_flight.len() < room;
            tokio::select! {
                Some((batch, result, elapsed)) = in_flight.next(), if !in_flight.is_empty() => {
                    // A batch the sink could not take at all has nothing to record.
                    if result.is_err() {
                        for d in batch.iter() {
                            taken.remove(&d.seq);
                        }
                    }
                    self.settle(batch, result, elapsed, &mut outage, &mut backoff, &mut recorder);
                }
                (seqs, recorded) = recorder.done(), if recorder.is_writing() => {
                    for seq in seqs {
                        taken.remove(&seq);
                    }
                    if !recorded {
                        backoff.get_or_insert(Duration::from_secs(1));
                    }
                }
                _ = waker.notified(), if more => {}
                else => {}
            }
        }
    }

    /// Takes batches and starts sending them until `room` are in flight or nothing is ready.
    /// Returns when a held batch (a digest window) is due again, or the delay to wait when the
    /// queue cannot be read.
    fn fill(
        &self,
        in_flight: &mut FuturesOrdered<BoxFuture<'static, Sent>>,
        taken: &mut HashSet<u64>,
        room: usize,
    ) -> Result<Option<u64>, Duration> {
        // Takes that gave nothing to send (all kept back by `Sink::admit`) before idling.
        let mut retakes = 0;
        while in_flight.len() < room {
            let batch = match self.queue.take(&self.name, self.sink.max_batch(), taken) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot read the queue");
                    return Err(Duration::from_secs(1));
                }
            };
            if batch.is_empty() {
                break;
            }
            let batch = self.sink.admit(batch);
            if batch.is_empty() {
                retakes += 1;
                if retakes > 8 {
                    break;
                }
                continue;
            }
            if let Some(until) = self.sink.hold_until(&batch) {
                if until > now_ms() {
                    return Ok(Some(until));
                }
            }
            taken.extend(batch.iter().map(|d| d.seq));
            let batch: Arc<[Delivery]> = batch.into();
            // The send runs in a task of its own, so that rendering and publishing one batch
            // go on beside this loop's taking the next one from the queue.
            let send = tokio::spawn({
                let (sink, batch) = (self.sink.clone(), batch.clone());
                async move {
                    let started = Instant::now();
                    let result = sink.send(&batch).await;
                    (result, started.elapsed())
                }
            });
            in_flight.push_back(Box::pin(async move {
                match send.await {
                    Ok((result, elapsed)) => (batch, result, elapsed),
                    // A send that panicked sent nothing we know of: like an outage, no attempt
                    // is spent and the batch is sent again after the backoff.
                    Err(e) => (
                        batch,
                        Err(SinkError::Unavailable(format!("the send failed: {e}"))),
                        Duration::ZERO,
                    ),
                }
            }));
        }
        Ok(None)
    }

    /// Settles what a batch's send came to: each delivery's outcome, handed to the recorder, or
    /// an outage of the sink as a whole (no attempt spent), which sets the backoff before the
    /// next batch.
    fn settle(
        &self,
        batch: Arc<[Delivery]>,
        result: Result<Vec<Outcome>, SinkError>,
        elapsed: Duration,
        outage: &mut u32,
        backoff: &mut Option<Duration>,
        recorder: &mut Recorder,
    ) {
        METRICS
            .send_seconds
            .with_label_values(&[&self.name])
            .observe(elapsed.as_secs_f64());
        match result {
            Ok(outcomes) => {
                if backoff.is_none() {
                    *outage = 0;
                }
                if let Some(was_down) = self.health.connected(&self.name) {
                    tracing::info!(sink = %self.name, down_for = ?Duration::from_secs(was_down.as_secs()), "sink reachable again");
                }
                let decisions = self.decisions(&batch, outcomes);
                recorder.push(batch, decisions);
            }
            Err(e) => {
                METRICS
                    .deliveries
                    .with_label_values(&[&self.name, "unavailable"])
                    .inc_by(batch.len() as u64);
                let error = e.to_string();
                self.control.record_error(&error);
                self.queue.record_unavailable(&self.name, &batch, &error);
                let news = self.health.down(&self.name, &error);
                // The other batches in flight likely fail the same way: one outage, one wait.
                if backoff.is_none() {
                    *outage += 1;
                    let delay = self.retry.backoff.delay(*outage);
                    if news {
                        tracing::warn!(sink = %self.name, error = %e, retry_in = ?delay, "sink unavailable; nothing is lost, retrying until it is back");
                    } else {
                        tracing::debug!(sink = %self.name, error = %e, retry_in = ?delay, "sink still unavailable");
                    }
                    *backoff = Some(delay);
                }
            }
        }
    }

    /// Waits for new deliveries, the next retry or digest time, a resume, or shutdown.
    async fn idle(&self, waker: &Notify, hold: Option<u64>) {
        if self.control.is_paused() {
            let resumed = self.control.changed.notified();
            if self.control.is_paused() {
                tokio::select! {
                    _ = resumed => {}
                    _ = self.shutdown.cancelled() => {}
                }
            }
            return;
        }
        if let Some(until) = hold {
            self.pause(Duration::from_millis(until.saturating_sub(now_ms())))
                .await;
            return;
        }
        let wait = match self.queue.next_due(&self.name) {
            Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms()).max(1)),
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = waker.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// Turns a batch's outcomes into decisions, one per delivery, and counts them.
    fn decisions(&self, batch: &[Delivery], outcomes: Vec<Outcome>) -> Vec<Decision> {
        let now = now_ms();
        let mut outcomes = outcomes.into_iter();
        let (mut delivered, mut retry, mut dead) = (0u64, 0u64, 0u64);
        let decisions: Vec<Decision> = batch
            .iter()
            .map(|d| {
                let outcome = outcomes
                    .next()
                    .unwrap_or_else(|| Outcome::Retry("the sink reported no outcome".into()));
                let decision = self.decide(d.attempts, outcome, now);
                match &decision {
                    Decision::Delivered | Decision::DeliveredWith(_) => delivered += 1,
                    Decision::Retry { error, .. } => {
                        retry += 1;
                        self.control.record_error(error);
                        tracing::warn!(sink = %self.name, event_id = %d.event.event_id, attempt = d.attempts + 1, %error, "delivery failed; will retry");
                    }
                    Decision::Dead { error } => {
                        dead += 1;
                        self.control.record_error(error);
                        tracing::error!(sink = %self.name, event_id = %d.event.event_id, attempts = d.attempts + 1, %error, "delivery is dead-lettered");
                    }
                }
                decision
            })
            .collect();
        for (label, n) in [("delivered", delivered), ("retry", retry), ("dead", dead)] {
            if n > 0 {
                METRICS
                    .deliveries
                    .with_label_values(&[&self.name, label])
                    .inc_by(n);
            }
        }
        decisions
    }

    /// Maps a sink's outcome to what the queue records, spending attempts on failures.
    fn decide(&self, attempts: u32, outcome: Outcome, now: u64) -> Decision {
        match outcome {
            Outcome::Delivered => Decision::Delivered,
            Outcome::DeliveredWith(detail) => Decision::DeliveredWith(detail),
            Outcome::Reject(error) => Decision::Dead { error },
            Outcome::Retry(error) => self.retry_or_give_up(attempts, error, None, now),
            Outcome::RetryAfter(error, after) => {
                self.retry_or_give_up(attempts, error, Some(after), now)
            }
        }
    }

    /// A failed attempt: retried after `Backoff::delay_after`, or dead once the attempts are spent.
    fn retry_or_give_up(
        &self,
        attempts: u32,
        error: String,
        after: Option<Duration>,
        now: u64,
    ) -> Decision {
        if attempts + 1 >= self.retry.attempts {
            return Decision::Dead {
                error: format!("gave up after {} attempts: {error}", attempts + 1),
            };
        }
        let delay = self.retry.backoff.delay_after(attempts + 1, after);
        Decision::Retry {
            due_ms: now + delay.as_millis() as u64,
            error,
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
                        self.control.record_error(&e.to_string());
                        let delay = self.retry.backoff.delay(attempt);
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
mod tests;
