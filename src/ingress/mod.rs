//! The actix-web application: hooks, health, readiness, metrics, admin API and status page.

pub mod hooks;
pub mod traffic;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::config::Config;
use crate::dispatch::SinkControl;
use crate::metrics::METRICS;
use crate::queue::Queue;

/// Whether each sink has connected at least once, for `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    sinks: Mutex<BTreeMap<String, bool>>,
    /// Other reasons not to be ready, by what they concern (`arcgis.NAME`).
    problems: Mutex<BTreeMap<String, String>>,
}

impl Health {
    /// Registers a sink that must connect before the daemon is ready.
    pub fn register(&self, sink: &str) {
        if let Ok(mut m) = self.sinks.lock() {
            m.entry(sink.to_string()).or_insert(false);
        }
        METRICS.sink_up.with_label_values(&[sink]).set(0);
    }

    /// Records that a sink connected.
    pub fn connected(&self, sink: &str) {
        if let Ok(mut m) = self.sinks.lock() {
            m.insert(sink.to_string(), true);
        }
        METRICS.sink_up.with_label_values(&[sink]).set(1);
    }

    /// Records a reason not to be ready (an ArcGIS connection without a token).
    pub fn set_problem(&self, what: &str, reason: &str) {
        if let Ok(mut m) = self.problems.lock() {
            m.insert(what.to_string(), reason.to_string());
        }
    }

    /// Clears what `set_problem` recorded for `what`.
    pub fn clear_problem(&self, what: &str) {
        if let Ok(mut m) = self.problems.lock() {
            m.remove(what);
        }
    }

    /// The recorded problems.
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The sinks that have not connected yet.
    pub fn waiting_for(&self) -> Vec<String> {
        match self.sinks.lock() {
            Ok(m) => m
                .iter()
                .filter(|(_, up)| !**up)
                .map(|(s, _)| s.clone())
                .collect(),
            Err(_) => vec!["(health state unavailable)".into()],
        }
    }
}

/// What every handler shares.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    /// The durable queue.
    pub queue: Arc<Queue>,
    /// Sink connectivity.
    pub health: Arc<Health>,
    /// Pause/resume per running sink.
    pub controls: BTreeMap<String, Arc<SinkControl>>,
    /// Deliveries per hook and outcome over the last hour and day.
    pub traffic: traffic::Traffic,
    /// The status page's sessions and templates.
    pub ui: crate::ui::Ui,
    accepting: AtomicBool,
}

impl AppState {
    /// State for a running daemon.
    pub fn new(
        config: Arc<Config>,
        queue: Arc<Queue>,
        health: Arc<Health>,
        controls: BTreeMap<String, Arc<SinkControl>>,
    ) -> Self {
        AppState {
            config: RwLock::new(config),
            queue,
            health,
            controls,
            traffic: traffic::Traffic::default(),
            ui: crate::ui::Ui::default(),
            accepting: AtomicBool::new(true),
        }
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the config in force (routing of later deliveries changes).
    pub fn set_config(&self, config: Arc<Config>) {
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(p) => *p.into_inner() = config,
        }
    }

    /// Whether new deliveries are taken (false once shutdown begins).
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Stops taking new deliveries: they get 503, so ArcGIS retries them later.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }
}

/// Registers every route on an actix app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/hooks/{hook}")
            .route(web::post().to(hooks::receive))
            .route(web::get().to(hooks::check))
            .route(web::head().to(hooks::head)),
    )
    .route("/healthz", web::get().to(healthz))
    .route("/readyz", web::get().to(readyz))
    .route("/metrics", web::get().to(metrics))
    .configure(crate::admin::routes)
    .configure(crate::ui::routes);
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.is_accepting() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "reason": "shutting down" }));
    }
    if !state.queue.is_alive() {
        return HttpResponse::ServiceUnavailable().json(json!({
            "ready": false,
            "reason": "the queue cannot write (disk full or I/O error); restart once fixed",
        }));
    }
    if let Some(reason) = state.queue.space_problem() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "reason": reason }));
    }
    let problems = state.health.problems();
    if !problems.is_empty() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "reason": problems.join("; ") }));
    }
    let waiting = state.health.waiting_for();
    if waiting.is_empty() {
        HttpResponse::Ok().json(json!({ "ready": true }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "ready": false,
            "reason": format!("sinks not connected yet: {}", waiting.join(", ")),
        }))
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(METRICS.render())
}
