//! `hookbridge serve`: open the queue, start one dispatcher per sink, serve HTTP, stop cleanly.
//!
//! Shutdown order matters: stop taking deliveries (503), let in-flight requests finish and
//! commit, let each dispatcher finish the send in hand, then flush and close the queue.

use std::path::Path;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::ingress::{self, AppState, Health};
use crate::queue::{Queue, QueueError, Retention};
use crate::shutdown::{Request, Signals};
use crate::sinks::SinkError;

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
                health.expect(name);
                dispatchers.spawn(
                    Dispatcher {
                        name: name.clone(),
                        sink,
                        queue: queue.clone(),
                        retry: entry.retry,
                        health: health.clone(),
                        shutdown: stop.clone(),
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

    let state = web::Data::new(AppState::new(config.clone(), queue.clone(), health));
    let app_state = state.clone();
    let max_body = config.server.max_body.as_u64() as usize;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::PayloadConfig::new(max_body))
            .configure(ingress::routes)
    })
    .disable_signals()
    .shutdown_timeout(config.server.shutdown_timeout.as_secs().max(1))
    .bind(config.listen)?;
    for addr in server.addrs() {
        tracing::info!(%addr, hooks = config.hooks.len(), sinks = config.sinks.len(), "hookbridge listening");
    }
    let server = server.run();
    let handle = server.handle();
    let mut server_task = tokio::spawn(server);

    loop {
        tokio::select! {
            req = signals.next() => match req {
                Request::Stop => break,
                Request::Reload => reload(&config.path, &state),
            },
            r = &mut server_task => {
                tracing::error!(result = ?r, "the HTTP server stopped on its own");
                break;
            }
        }
    }

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

/// Reloads the config file; an invalid one is refused and the old one keeps serving.
fn reload(path: &Path, state: &AppState) {
    match Config::load(path) {
        Ok(new) => {
            let old = state.config();
            if old.sinks.keys().ne(new.sinks.keys()) || old.storage.path != new.storage.path {
                tracing::warn!(
                    "sinks or storage changed: those changes take effect after a restart"
                );
            }
            state.set_config(Arc::new(new));
            tracing::info!("config reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the old config stays in force")
        }
    }
}
