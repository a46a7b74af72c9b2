//! `hookbridge serve`: open the queue, start one dispatcher per sink, serve HTTP, stop cleanly.
//!
//! Shutdown order matters: stop taking deliveries (503), let in-flight requests finish and
//! commit, let each dispatcher finish the send in hand, then flush and close the queue.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use sd_notify::NotifyState;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::{Dispatcher, SinkControl};
use crate::enrich::{Connection, Enricher, Feed};
use crate::ingress::{self, AppState, Health};
use crate::metrics::METRICS;
use crate::queue::{Queue, QueueError, Retention};
use crate::shutdown::{Request, Signals};
use crate::sinks::SinkError;
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
}

/// The retention settings of a config.
pub fn retention(config: &Config) -> Retention {
    Retention {
        dedup_window: config.storage.dedup_window,
        keep_delivered: config.storage.keep_delivered,
        keep_dead: config.storage.keep_dead,
        min_free: config.storage.min_free.as_u64(),
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let mut signals = Signals::install()?;
    let config = Arc::new(config);
    let queue = Queue::open(&config.storage.path, retention(&config))?;
    let health = Arc::new(Health::default());
    let stop = CancellationToken::new();
    let mut dispatchers = JoinSet::new();
    let mut controls = BTreeMap::new();
    let feed = change_feed(&config, &queue)?;
    for (name, entry) in &config.sinks {
        let sink = entry
            .config
            .build(name, &config.renderer)
            .map_err(|source| ServeError::Sink {
                name: name.clone(),
                source,
            })?;
        match sink {
            Some(sink) => {
                health.register(name);
                let control = Arc::new(SinkControl::default());
                controls.insert(name.clone(), control.clone());
                dispatchers.spawn(
                    Dispatcher {
                        name: name.clone(),
                        sink,
                        queue: queue.clone(),
                        retry: entry.retry,
                        health: health.clone(),
                        shutdown: stop.clone(),
                        control,
                        feed: feed.clone(),
                    }
                    .run(),
                );
            }
            None => tracing::warn!(
                sink = %name,
                r#type = entry.config.type_name(),
                "this sink type cannot send in this build; its deliveries wait in the queue"
            ),
        }
    }

    if let Some(feed) = &feed {
        dispatchers.spawn(
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
    let app_state = state.clone();
    let max_body = config.server.max_body.as_u64() as usize;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .configure(ingress::routes)
    })
    .disable_signals()
    .client_request_timeout(config.server.read_timeout)
    .shutdown_timeout(config.server.shutdown_timeout.as_secs().max(1));
    let certs = match &config.server.tls {
        Some(tls) => Some(CertStore::new(tls)?),
        None => None,
    };
    let server = match &certs {
        Some(store) => server.bind_rustls_0_23(config.listen, store.server_config()?)?,
        None => server.bind(config.listen)?,
    };
    for addr in server.addrs() {
        tracing::info!(%addr, tls = certs.is_some(), hooks = config.hooks.len(), sinks = config.sinks.len(), "hookbridge listening");
    }
    let server = server.run();
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
                    reload(&config.path, &state, certs.as_deref());
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
    tracing::info!("stopping: refusing new deliveries, finishing those in flight");
    state.stop_accepting();
    handle.stop(true).await;
    stop.cancel();
    let bound = config.server.shutdown_timeout;
    if tokio::time::timeout(bound, async {
        while dispatchers.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            ?bound,
            "dispatchers did not finish in time; their deliveries stay queued"
        );
        dispatchers.abort_all();
    }
    queue.close()?;
    tracing::info!("stopped; everything accepted is on disk");
    Ok(())
}

/// The change feed, when a sink asks for feature-service changes.
fn change_feed(config: &Config, queue: &Arc<Queue>) -> Result<Option<Arc<Feed>>, ServeError> {
    if config.enrich.is_empty() {
        return Ok(None);
    }
    let mut connections = Vec::new();
    for (name, c) in &config.arcgis {
        let conn = Connection::new(name, c.clone()).map_err(|e| ServeError::Enrich {
            name: name.clone(),
            message: e.to_string(),
        })?;
        connections.push(Arc::new(conn));
    }
    Ok(Some(Feed::new(
        queue.clone(),
        connections,
        config.enrich.clone(),
    )))
}

/// Reloads the config file (and TLS files); an invalid one is refused and the old one keeps serving.
fn reload(path: &Path, state: &AppState, certs: Option<&CertStore>) {
    let result = match Config::load(path) {
        Ok(new) => {
            let tls = match (certs, &new.server.tls) {
                (Some(store), Some(tls)) => store.reload(tls).map_err(|e| e.to_string()),
                _ => Ok(()),
            };
            match tls {
                Ok(()) => {
                    let old = state.config();
                    if old.sinks.keys().ne(new.sinks.keys())
                        || old.storage.path != new.storage.path
                        || old.listen != new.listen
                    {
                        tracing::warn!(
                            "sinks, storage or listen changed: those changes take effect after a restart"
                        );
                    }
                    state.set_config(Arc::new(new));
                    tracing::info!("config reloaded");
                    "ok"
                }
                Err(e) => {
                    tracing::error!(error = %e, "config reload refused; the old config stays in force");
                    "invalid"
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the old config stays in force");
            "invalid"
        }
    };
    METRICS.config_reloads.with_label_values(&[result]).inc();
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
