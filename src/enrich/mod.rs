//! The feature change feed: after an event is durably accepted, fetch what changed
//! (extractChanges) once, store it in the queue, and hand it to every sink that asked for it.
//!
//! Sinks ask with `enrich = "changes"`. A delivery that needs changes it does not have is
//! parked (see `queue::ChangeRows`); the [`Enricher`] fetches each parked event's change file once,
//! stores it, and releases the deliveries. A sink that asks runs behind [`WithChanges`], a
//! stage `serve` puts in front of it: the stored changes are attached (and split per feature
//! when the sink asks) just before sending, and the dispatcher knows nothing of them.

pub mod changes;
pub mod config;
pub mod fetch;
pub mod manage;
pub mod reconcile;
pub mod schedule;
mod stage;
pub mod token;
pub mod webhooks;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::health::Health;
use crate::metrics::METRICS;
use crate::queue::{ChangeRows, Queue};
use crate::retry::Backoff;
use crate::senders::arcgis;
pub use config::{ConnectionConfig, OnFailure, SinkEnrich, Split};
pub use fetch::Connection;
use schedule::Schedule;
pub use stage::WithChanges;

/// Why a fetch did not bring changes; each kind is handled differently.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// ArcGIS cannot be reached, timed out or answered 5xx: back off, spend no attempt.
    #[error("ArcGIS unavailable: {0}")]
    Unavailable(String),
    /// No token could be had: like an outage, and `/readyz` says so.
    #[error("no token: {0}")]
    Token(String),
    /// ArcGIS answered with an error: spend an attempt.
    #[error("{0}")]
    Failed(String),
    /// Trying again cannot help (job failed, file over the cap): give up now.
    #[error("{0}")]
    Fatal(String),
}

/// Whether `event` is one whose changes can be fetched: a feature-service event with a changesUrl.
pub fn changes_url(event: &Event) -> Option<&str> {
    (event.kind == arcgis::FEATURE_SERVICE)
        .then(|| event.properties.get("changesUrl").and_then(Value::as_str))
        .flatten()
        .filter(|u| !u.is_empty())
}

/// What every enriching part shares: the queue, the connections, which sinks want changes.
pub struct Feed {
    queue: Arc<Queue>,
    connections: Vec<Arc<Connection>>,
    sinks: BTreeMap<String, SinkEnrich>,
    wake: Notify,
}

impl Feed {
    /// The feed for these connections and sinks.
    pub fn new(
        queue: Arc<Queue>,
        connections: Vec<Arc<Connection>>,
        sinks: BTreeMap<String, SinkEnrich>,
    ) -> Arc<Self> {
        Arc::new(Feed {
            queue,
            connections,
            sinks,
            wake: Notify::new(),
        })
    }

    /// The change feed's rows in the queue.
    fn rows(&self) -> ChangeRows<'_> {
        self.queue.change_rows()
    }

    /// The enrichment settings of `sink`, if it wants changes.
    pub fn for_sink(&self, sink: &str) -> Option<SinkEnrich> {
        self.sinks.get(sink).copied()
    }

    fn connection_for(&self, url: &str) -> Option<Arc<Connection>> {
        self.connections
            .iter()
            .find(|c| c.config.serves(url))
            .cloned()
    }
}

/// How often ready rows are swept for deliveries no dispatcher has parked (a sink that is
/// paused or not connected yet), and stored changes pruned.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often a connection that could not get a token tries again while no fetch needs it.
const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// The task that fetches parked events' changes, once each.
pub struct Enricher {
    /// Shared state.
    pub feed: Arc<Feed>,
    /// Where `/readyz` learns that a connection has no token.
    pub health: Arc<Health>,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
}

/// A finished fetch: the event it was for, the window's URL, the connection, what came back.
type Done = (u64, String, String, Result<Value, FetchError>);

impl Enricher {
    /// Runs until shutdown: checks every connection's token, then fetches as deliveries park.
    pub async fn run(self) {
        let mut last_check = Instant::now();
        let mut broken = self.check_tokens(&HashSet::new()).await;
        let mut jobs: JoinSet<Done> = JoinSet::new();
        let mut schedule = Schedule::default();
        // Where the next pruning pass of stored changes goes on.
        let mut pruned = Vec::new();
        let mut last_sweep = Instant::now()
            .checked_sub(SWEEP_EVERY)
            .unwrap_or_else(Instant::now);
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep(&mut pruned);
            }
            if !broken.is_empty() && last_check.elapsed() >= RECHECK_EVERY {
                last_check = Instant::now();
                broken = self.check_tokens(&broken).await;
            }
            self.start_fetches(&mut schedule, &mut jobs);
            let wait = schedule
                .next_due()
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(SWEEP_EVERY)
                .min(SWEEP_EVERY);
            tokio::select! {
                Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                    let Ok((seq, url, conn, result)) = done else { continue };
                    self.finish(seq, &url, &conn, result, &mut schedule).await;
                }
                _ = self.feed.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
        jobs.abort_all();
    }

    /// Starts a fetch for each change window of parked events the schedule lets through,
    /// oldest first: the oldest parked event naming a window fetches it for all of them, and
    /// the others are released once its changes are stored.
    fn start_fetches(&self, schedule: &mut Schedule, jobs: &mut JoinSet<Done>) {
        let mut windows = HashSet::new();
        for seq in self.parked() {
            if !schedule.has_room() {
                break;
            }
            let Some(url) = self.url_of(seq) else {
                self.release(seq);
                continue;
            };
            let window = schedule::window(&url);
            if let Ok(Some(_)) = self.feed.rows().changes(seq, &url) {
                schedule.forget(window);
                self.release(seq);
                continue;
            }
            if !windows.insert(window) {
                continue;
            }
            let origin = schedule::origin(&url);
            if !schedule.may_start(window, &origin, Instant::now()) {
                continue;
            }
            let Some(conn) = self.feed.connection_for(&url) else {
                self.give_up(
                    seq,
                    &url,
                    &format!(
                        "no [arcgis.*] connection lists a services prefix for {}",
                        fetch::without_query(&url)
                    ),
                );
                continue;
            };
            schedule.started(window, origin);
            jobs.spawn(async move {
                let r = conn
                    .fetch(&url)
                    .await
                    .and_then(|f| changes::normalize(&f.json).map_err(FetchError::Failed));
                (seq, url, conn.name.clone(), r)
            });
        }
    }

    /// Records a fetch's result, and when the window is to be fetched again.
    async fn finish(
        &self,
        seq: u64,
        url: &str,
        conn: &str,
        result: Result<Value, FetchError>,
        schedule: &mut Schedule,
    ) {
        let settings = self
            .feed
            .connections
            .iter()
            .find(|c| c.name == conn)
            .map(|c| &c.config);
        let first = settings.map_or(Duration::from_secs(1), |c| c.poll_interval);
        let window = schedule::window(url);
        match result {
            Ok(changes) => {
                schedule.answered(window);
                if let Err(e) = self.feed.rows().store_changes(seq, url, &changes).await {
                    tracing::error!(connection = conn, error = %e, "cannot store the changes; fetching again later");
                    schedule.wait_until(window, Instant::now() + Duration::from_secs(1));
                    return;
                }
                schedule.forget(window);
                METRICS.enrich_fetches.with_label_values(&[conn]).inc();
                tracing::info!(connection = conn, seq, "changes fetched and stored");
                self.health.clear_problem(&format!("arcgis.{conn}"));
                self.release_window(url);
            }
            Err(e @ (FetchError::Unavailable(_) | FetchError::Token(_))) => {
                let token = matches!(e, FetchError::Token(_));
                let kind = if token { "token" } else { "unavailable" };
                METRICS
                    .enrich_failures
                    .with_label_values(&[conn, kind])
                    .inc();
                if let Some(c) = self.feed.connections.iter().find(|c| c.name == conn) {
                    self.note_token(c, token.then_some(&e));
                }
                let (down_for, outages) = schedule.outage(window, Instant::now());
                let bound = settings.map_or(Duration::MAX, |c| c.give_up_after);
                if !token && down_for >= bound {
                    schedule.forget(window);
                    self.give_up(
                        seq,
                        url,
                        &format!(
                            "changes could not be fetched: unavailable for {} (give_up_after): {e}",
                            humantime::format_duration(Duration::from_secs(down_for.as_secs()))
                        ),
                    );
                    return;
                }
                let delay = feed_backoff(first).delay(outages);
                tracing::warn!(connection = conn, seq, error = %e, retry_in = ?delay, "cannot fetch changes now; nothing is lost, no attempt spent");
                schedule.wait_until(window, Instant::now() + delay);
            }
            Err(FetchError::Failed(e)) => {
                schedule.answered(window);
                METRICS
                    .enrich_failures
                    .with_label_values(&[conn, "error"])
                    .inc();
                let attempts = self
                    .feed
                    .rows()
                    .count_failed_fetch(seq, url)
                    .unwrap_or(u32::MAX);
                let limit = settings.map_or(1, |c| c.attempts);
                if attempts >= limit {
                    schedule.forget(window);
                    self.give_up(
                        seq,
                        url,
                        &format!("changes could not be fetched after {attempts} attempts: {e}"),
                    );
                    return;
                }
                let delay = feed_backoff(first).delay(attempts);
                tracing::warn!(connection = conn, seq, attempt = attempts, error = %e, retry_in = ?delay, "fetching changes failed; will retry");
                schedule.wait_until(window, Instant::now() + delay);
            }
            Err(FetchError::Fatal(e)) => {
                schedule.forget(window);
                METRICS
                    .enrich_failures
                    .with_label_values(&[conn, "fatal"])
                    .inc();
                self.give_up(seq, url, &format!("changes could not be fetched: {e}"));
            }
        }
    }

    /// Gets a token for each connection (only those in `only`, unless it is empty); returns
    /// the names of those that cannot get one.
    async fn check_tokens(&self, only: &HashSet<String>) -> HashSet<String> {
        let mut broken = HashSet::new();
        for c in &self.feed.connections {
            if !only.is_empty() && !only.contains(&c.name) {
                continue;
            }
            let err = c.check().await.err();
            if err.is_some() {
                broken.insert(c.name.clone());
            }
            self.note_token(c, err.as_ref());
        }
        broken
    }

    fn note_token(&self, c: &Connection, err: Option<&FetchError>) {
        let key = format!("arcgis.{}", c.name);
        match err {
            Some(FetchError::Token(e)) => {
                tracing::warn!(connection = %c.name, error = %e, "cannot get an ArcGIS token");
                self.health
                    .set_problem(&key, &format!("connection {key} cannot get a token: {e}"));
            }
            Some(_) => {}
            None => self.health.clear_problem(&key),
        }
    }

    /// Parks ready deliveries of enriching sinks whose changes are missing (sinks whose
    /// dispatcher is not taking, e.g. paused or not connected), and prunes stored changes.
    fn sweep(&self, pruned: &mut Vec<u8>) {
        for (sink, s) in &self.feed.sinks {
            let Ok(seqs) = self.feed.rows().ready_seqs(sink, 1_000) else {
                continue;
            };
            for seq in seqs {
                let Some(url) = self.url_of(seq) else {
                    continue;
                };
                let settled = s.on_failure == OnFailure::DeliverUnenriched
                    && matches!(self.feed.rows().changes_failure(seq, &url), Ok(Some(_)));
                let needs = !settled && matches!(self.feed.rows().changes(seq, &url), Ok(None));
                if needs {
                    let _ = self.feed.rows().park(sink, seq);
                }
            }
        }
        match self.feed.rows().prune_changes(pruned) {
            Ok(next) => *pruned = next,
            Err(e) => tracing::warn!(error = %e, "cannot prune stored changes"),
        }
    }

    /// Every event seq with a parked delivery, oldest first.
    fn parked(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self
            .feed
            .sinks
            .keys()
            .filter_map(|s| self.feed.rows().parked_seqs(s).ok())
            .flatten()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    fn url_of(&self, seq: u64) -> Option<String> {
        let (event, _) = self.feed.queue.event_and_payload(seq).ok().flatten()?;
        changes_url(&event).map(str::to_string)
    }

    fn release(&self, seq: u64) {
        for sink in self.feed.sinks.keys() {
            if let Err(e) = self.feed.rows().unpark(sink, seq) {
                tracing::error!(sink, error = %e, "cannot release a parked delivery");
            }
        }
    }

    /// Every parked event naming the change window `url`, oldest first.
    fn parked_in(&self, url: &str) -> Vec<u64> {
        self.parked()
            .into_iter()
            .filter(|seq| self.url_of(*seq).as_deref() == Some(url))
            .collect()
    }

    /// Releases every parked event naming the window `url`: its changes are stored.
    fn release_window(&self, url: &str) {
        for seq in self.parked_in(url) {
            self.release(seq);
        }
    }

    /// Gives the window's fetch up: each sink dead-letters every parked delivery naming it, or
    /// delivers it without changes, as it chose.
    fn give_up(&self, seq: u64, url: &str, reason: &str) {
        tracing::error!(seq, %reason, "giving up on a change window");
        if let Err(e) = self.feed.rows().give_up_changes(seq, url, reason) {
            tracing::error!(error = %e, "cannot record the failed fetch");
        }
        for seq in self.parked_in(url) {
            for (sink, s) in &self.feed.sinks {
                let r = match s.on_failure {
                    OnFailure::DeadLetter => self.feed.rows().bury_parked(sink, seq, reason),
                    OnFailure::DeliverUnenriched => self.feed.rows().unpark(sink, seq),
                };
                if let Err(e) = r {
                    tracing::error!(sink, error = %e, "cannot settle a parked delivery");
                }
            }
        }
    }
}

/// The change feed's backoff after outages or failures in a row: from `first`, at most a minute
/// (a fetch retried sooner than a sink's delivery would be, so changes do not lag).
fn feed_backoff(first: Duration) -> Backoff {
    Backoff {
        first,
        max: Duration::from_secs(60),
    }
}
