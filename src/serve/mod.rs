//! `hookbridge serve`: open the queue, start one dispatcher per sink, serve HTTP, reload on
//! SIGHUP, stop cleanly.
//!
//! Shutdown order matters: stop taking deliveries (503), let in-flight requests finish and
//! commit, let each dispatcher finish the send in hand, then flush and close the queue.
//!
//! A reload builds the new config's sinks first (a sink that cannot be built refuses the whole
//! reload, and the old config keeps serving), then stops the old dispatchers after the sends
//! in hand, starts the new ones, and swaps the config in. Deliveries stay in the queue
//! meanwhile, so nothing is lost and nothing is sent twice beyond at-least-once.

mod listen;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use sd_notify::NotifyState;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::{Dispatcher, SinkControl};
use crate::enrich::reconcile::{Reconciler, Router, Watch};
use crate::enrich::webhooks::WebhookWatcher;
use crate::enrich::{Connection, Enricher, Feed, WithChanges};
use crate::health::Health;
use crate::metrics::METRICS;
use crate::queue::{Queue, QueueError};
use crate::retry::RetryConfig;
use crate::shutdown::{Request, Signals};
use crate::sinks::{Sink, SinkError};
use crate::state::AppState;
use crate::tls::{CertStore, TlsError};

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The queue could not be opened or closed.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// A sink could not be built from its config.
    #[error("sink {name}: {source}")]
    Sink {
        /// Sink name.
        name: String,
        /// Why.
        source: SinkError,
    },
    /// An ArcGIS connection could not be set up.
    #[error("arcgis.{name}: {message}")]
    Enrich {
        /// Connection name.
        name: String,
        /// Why.
        message: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding the listener or installing signal handlers failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The queue was not flushed within `server.shutdown_timeout`; what it acknowledged was
    /// flushed before the acknowledgement, anything else is refused on the next start.
    #[error(
        "the queue could not be flushed within server.shutdown_timeout ({0:?}); stopping without it"
    )]
    Unflushed(Duration),
}

/// The sinks of a config, built (settings checked, clients made) but not yet sending.
struct Built<'c> {
    sinks: Vec<(&'c String, RetryConfig, Arc<dyn Sink>)>,
}

impl<'c> Built<'c> {
    /// Builds every sink of `config`; fails when one cannot be built.
    fn new(config: &'c Config) -> Result<Self, ServeError> {
        let mut sinks = Vec::with_capacity(config.sinks.len());
        for (name, entry) in &config.sinks {
            let sink = entry
                .settings
                .build(name, &config.renderer)
                .map_err(|source| ServeError::Sink {
                    name: name.clone(),
                    source,
                })?;
            sinks.push((name, entry.retry, sink));
        }
        Ok(Built { sinks })
    }

    /// Starts a dispatcher per sink. A sink keeps its pause state and last error across
    /// generations (`controls`).
    fn start(
        self,
        queue: &Arc<Queue>,
        health: &Arc<Health>,
        parent: &CancellationToken,
        controls: &BTreeMap<String, Arc<SinkControl>>,
        feed: &Option<Arc<Feed>>,
    ) -> Sinks {
        let stop = parent.child_token();
        let mut running = Sinks {
            stop: stop.clone(),
            tasks: JoinSet::new(),
            controls: BTreeMap::new(),
        };
        for (name, retry, sink) in self.sinks {
            health.register(name);
            let control = controls.get(name).cloned().unwrap_or_default();
            running.controls.insert(name.clone(), control.clone());
            let sink = match feed {
                Some(feed) => WithChanges::wrap(feed, name, sink),
                None => sink,
            };
            running.tasks.spawn(
                Dispatcher {
                    name: name.clone(),
                    sink,
                    queue: queue.clone(),
                    retry,
                    health: health.clone(),
                    shutdown: stop.clone(),
                    control,
                }
                .run(),
            );
        }
        running
    }
}

/// One generation of running sinks: a dispatcher each, stopped together by `stop`.
struct Sinks {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    controls: BTreeMap<String, Arc<SinkControl>>,
}

impl Sinks {
    /// Stops every dispatcher after the send in hand, waiting at most `bound`; what is not
    /// finished by then stays queued.
    async fn stop(mut self, bound: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(bound, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                ?bound,
                "dispatchers did not finish in time; their deliveries stay queued"
            );
            self.tasks.abort_all();
        }
    }
}

/// Whether a log event may be written: every one of hookbridge's own, and a dependency's up
/// to `debug`, except those known to carry a payload (lapin logs a returned message whole, and
/// frames at `trace`), so that no payload reaches a log whatever `HOOKBRIDGE_LOG` says.
pub fn loggable(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    if target.starts_with("hookbridge") {
        return true;
    }
    *meta.level() <= tracing::Level::DEBUG && !target.starts_with("lapin::returned_messages")
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let mut signals = Signals::install()?;
    let config = Arc::new(config);
    for w in config.warnings() {
        tracing::warn!(key = %w.key, "{}", w.message);
    }
    let queue = Queue::open(&config.storage.path, config.storage.retention())?;
    let health = Arc::new(Health::default());
    let stop = CancellationToken::new();
    let connections = arcgis_connections(&config)?;
    let changes = change_feed(&config, &queue, &connections);
    let mut sinks = Built::new(&config)?.start(&queue, &health, &stop, &BTreeMap::new(), &changes);
    let controls = sinks.controls.clone();
    // The change feed fetches for every generation of sinks; it stops only with the daemon.
    let mut background = JoinSet::new();
    if let Some(feed) = &changes {
        background.spawn(
            Enricher {
                feed: feed.clone(),
                health: health.clone(),
                shutdown: stop.clone(),
            }
            .run(),
        );
    }
    let state = web::Data::new(AppState::new(
        config.clone(),
        queue.clone(),
        health,
        controls,
    ));
    let watched = config.watched_webhooks();
    if !watched.is_empty() {
        background.spawn(
            WebhookWatcher {
                connections: connections.clone(),
                watched,
                health: state.health.clone(),
                shutdown: stop.clone(),
            }
            .run(),
        );
    }
    let reconciled = config.reconciled();
    if !reconciled.is_empty() {
        let watch = Watch::new(&reconciled);
        state.set_watch(watch.clone());
        let routes = state.clone();
        let router: Router = Arc::new(move |e| routes.config().routes.sinks_for(e));
        background.spawn(
            Reconciler {
                queue: queue.clone(),
                watch,
                connections,
                hooks: reconciled,
                router,
                shutdown: stop.clone(),
            }
            .run(),
        );
    }
    let certs = match &config.server.tls {
        Some(tls) => Some(CertStore::new(tls)?),
        None => None,
    };
    let server = listen::listen(&config, &state, certs.as_ref())?;
    let handle = server.handle();
    let mut server_task = tokio::spawn(server);
    notify(&[NotifyState::Ready]);

    // The watchdog is fed from this loop, and only while the queue's committer is alive.
    let usec = watchdog_usec();
    let watchdog = usec > 0;
    let mut feed = tokio::time::interval(if watchdog {
        Duration::from_micros(usec / 2)
    } else {
        Duration::from_secs(3600)
    });
    loop {
        tokio::select! {
            req = signals.next() => match req {
                Request::Stop => break,
                Request::Reload => {
                    notify(&[NotifyState::Reloading]);
                    sinks = reload(&config.path, &state, certs.as_deref(), sinks, &stop, &changes).await;
                    notify(&[NotifyState::Ready]);
                }
            },
            _ = feed.tick(), if watchdog => {
                if queue.is_alive() {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!("the queue committer has stopped; withholding the watchdog ping");
                }
            }
            r = &mut server_task => {
                tracing::error!(result = ?r, "the HTTP server stopped on its own");
                break;
            }
        }
    }

    notify(&[NotifyState::Stopping]);
    shut_down(&config, &state, handle, sinks, &stop, background, queue).await
}

/// Stops within `shutdown_timeout`: refuses new deliveries, lets requests and sends in flight
/// finish with what the final flush does not need, stops the change feed, flushes the queue.
async fn shut_down(
    config: &Config,
    state: &web::Data<AppState>,
    handle: actix_web::dev::ServerHandle,
    sinks: Sinks,
    stop: &CancellationToken,
    mut background: JoinSet<()>,
    queue: Arc<Queue>,
) -> Result<(), ServeError> {
    tracing::info!("stopping: refusing new deliveries, finishing those in flight");
    // The whole stop fits in shutdown_timeout: requests and sends in flight get what the final
    // flush does not need, and the flush gets the rest.
    let bound = config.server.shutdown_timeout;
    let deadline = tokio::time::Instant::now() + bound;
    let flush_share = (bound / 4).min(Duration::from_secs(10));
    state.stop_accepting();
    if tokio::time::timeout_at(deadline - flush_share, handle.stop(true))
        .await
        .is_err()
    {
        tracing::warn!(?bound, "requests in flight did not finish in time");
    }
    let left = (deadline - flush_share).saturating_duration_since(tokio::time::Instant::now());
    sinks.stop(left).await;
    stop.cancel();
    let left = (deadline - flush_share).saturating_duration_since(tokio::time::Instant::now());
    if tokio::time::timeout(left, async {
        while background.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        background.abort_all();
    }
    close_by(queue, deadline, bound).await?;
    tracing::info!("stopped; everything accepted is on disk");
    Ok(())
}

/// The `[arcgis.*]` connections, when the change feed or reconciliation reads with them.
fn arcgis_connections(config: &Config) -> Result<Vec<Arc<Connection>>, ServeError> {
    if config.enrich.is_empty()
        && config.reconciled().is_empty()
        && config.watched_webhooks().is_empty()
    {
        return Ok(Vec::new());
    }
    let mut connections = Vec::new();
    for (name, c) in &config.arcgis {
        let conn = Connection::new(name, c.clone()).map_err(|e| ServeError::Enrich {
            name: name.clone(),
            message: e.to_string(),
        })?;
        connections.push(Arc::new(conn));
    }
    Ok(connections)
}

/// The change feed, when a sink asks for feature-service changes.
fn change_feed(
    config: &Config,
    queue: &Arc<Queue>,
    connections: &[Arc<Connection>],
) -> Option<Arc<Feed>> {
    if config.enrich.is_empty() {
        return None;
    }
    Some(Feed::new(
        queue.clone(),
        connections.to_vec(),
        config.enrich.clone(),
    ))
}

/// Closes the queue on a thread of its own (sled can block on a store that met an I/O error),
/// waiting for it until `deadline` only.
async fn close_by(
    queue: Arc<Queue>,
    deadline: tokio::time::Instant,
    bound: Duration,
) -> Result<(), ServeError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hookbridge-close".into())
        .spawn(move || {
            let _ = tx.send(queue.close());
        })?;
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(result)) => Ok(result?),
        Ok(Err(_)) | Err(_) => {
            tracing::error!(
                ?bound,
                "the queue could not be flushed in time; exiting without it"
            );
            Err(ServeError::Unflushed(bound))
        }
    }
}

/// Reloads the config file (and TLS files) as a whole: routes, hooks, templates and sinks. An
/// invalid config, or a sink that cannot be built, is refused and the old runtime keeps serving.
/// Returns the sinks now running.
async fn reload(
    path: &Path,
    state: &AppState,
    certs: Option<&CertStore>,
    sinks: Sinks,
    parent: &CancellationToken,
    feed: &Option<Arc<Feed>>,
) -> Sinks {
    // One log event per reload, whatever the outcome: the problems of a refused one on one line.
    let refuse = |error: &dyn std::fmt::Display| {
        let problems: Vec<String> = error
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        tracing::error!(error = %problems.join("; "), "config reload refused; the old config stays in force");
        METRICS.config_reloads.with_label_values(&["invalid"]).inc();
    };
    let new = match Config::load(path) {
        Ok(new) => Arc::new(new),
        Err(e) => {
            refuse(&e);
            return sinks;
        }
    };
    if let (Some(store), Some(tls)) = (certs, &new.server.tls) {
        if let Err(e) = store.reload(tls) {
            refuse(&e);
            return sinks;
        }
    }
    let old = state.config();
    let built = match Built::new(&new) {
        Ok(built) => built,
        Err(e) => {
            refuse(&e);
            return sinks;
        }
    };
    let needs_restart = restart_only_changes(&old, &new).join(", ");
    let hooks_removed: Vec<&str> = old
        .hooks
        .keys()
        .filter(|h| !new.hooks.contains_key(*h))
        .map(String::as_str)
        .collect();
    let sinks_removed: Vec<&str> = old
        .sinks
        .keys()
        .filter(|s| !new.sinks.contains_key(*s))
        .map(String::as_str)
        .collect();
    for name in &sinks_removed {
        state.health.unregister(name);
    }
    // The old dispatchers finish their sends in hand before the new ones take over, so no
    // delivery is in two dispatchers at once.
    let controls = sinks.controls.clone();
    sinks.stop(old.server.shutdown_timeout).await;
    let next = built.start(&state.queue, &state.health, parent, &controls, feed);
    state.set_controls(next.controls.clone());
    state.set_config(new.clone());
    if needs_restart.is_empty() && hooks_removed.is_empty() && sinks_removed.is_empty() {
        tracing::info!(
            hooks = new.hooks.len(),
            sinks = new.sinks.len(),
            "config reloaded; sinks rebuilt"
        );
    } else {
        // Removed hooks now answer 404; a removed sink's deliveries wait in the queue until it
        // is configured again; keys that need a restart keep their old value until then.
        tracing::warn!(
            hooks = new.hooks.len(),
            sinks = new.sinks.len(),
            needs_restart = %needs_restart,
            hooks_removed = %hooks_removed.join(", "),
            sinks_removed = %sinks_removed.join(", "),
            "config reloaded; sinks rebuilt; some changes need attention"
        );
    }
    METRICS.config_reloads.with_label_values(&["ok"]).inc();
    next
}

/// The keys whose change needs a restart: the listener and the store.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen != new.listen {
        keys.push("server.listen");
    }
    if old.server.max_body != new.server.max_body {
        keys.push("server.max_body");
    }
    if (
        old.server.max_inflight_bytes,
        old.server.max_inflight_events,
    ) != (
        new.server.max_inflight_bytes,
        new.server.max_inflight_events,
    ) {
        keys.push("server.max_inflight_bytes, server.max_inflight_events");
    }
    if old.server.read_timeout != new.server.read_timeout {
        keys.push("server.read_timeout");
    }
    if old.server.tls.is_some() != new.server.tls.is_some() {
        keys.push("server.tls");
    }
    if old.storage.path != new.storage.path {
        keys.push("storage.path");
    }
    let (a, b) = (&old.storage, &new.storage);
    if (a.dedup_window, a.keep_delivered, a.keep_dead, a.min_free)
        != (b.dedup_window, b.keep_delivered, b.keep_dead, b.min_free)
    {
        keys.push("storage (dedup_window, keep_delivered, keep_dead, min_free)");
    }
    keys
}

/// The watchdog interval systemd asks for, 0 when none. As in libsystemd, an absent
/// `WATCHDOG_PID` means the interval applies to this process.
fn watchdog_usec() -> u64 {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        return usec;
    }
    match (
        std::env::var("WATCHDOG_USEC"),
        std::env::var_os("WATCHDOG_PID"),
    ) {
        (Ok(v), None) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Tells systemd about a state change; a no-op when not run by systemd.
fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}
