//! What every actix handler shares (`AppState`): one config snapshot per request, the queue,
//! the sinks' controls, traffic counts and the bytes being accepted. `serve` builds it; the
//! ingress, the admin API and the status page read it, side by side.

pub mod budget;
pub mod traffic;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::dispatch::SinkControl;
use crate::enrich::reconcile::Watch;
use crate::health::Health;
use crate::queue::Queue;

/// What every handler shares.
pub struct AppState {
    config: RwLock<Arc<Config>>,
    /// The durable queue.
    pub queue: Arc<Queue>,
    /// Sink connectivity.
    pub health: Arc<Health>,
    controls: RwLock<Arc<BTreeMap<String, Arc<SinkControl>>>>,
    /// Deliveries per hook and outcome over the last hour and day.
    pub traffic: traffic::Traffic,
    /// The bytes and events being accepted at once.
    pub budget: budget::Budget,
    accepting: AtomicBool,
    /// Told of each delivery to a reconciled hook (set once, at start).
    watch: std::sync::OnceLock<Arc<Watch>>,
}

impl AppState {
    /// State for a running daemon.
    pub fn new(
        config: Arc<Config>,
        queue: Arc<Queue>,
        health: Arc<Health>,
        controls: BTreeMap<String, Arc<SinkControl>>,
    ) -> Self {
        let budget = budget::Budget::new(
            config.server.inflight_bytes(),
            config.server.inflight_events(),
        );
        AppState {
            budget,
            config: RwLock::new(config),
            controls: RwLock::new(Arc::new(controls)),
            queue,
            health,
            traffic: traffic::Traffic::default(),
            accepting: AtomicBool::new(true),
            watch: std::sync::OnceLock::new(),
        }
    }

    /// Hands the ingress the reconciliation's watch (once; later calls change nothing).
    pub fn set_watch(&self, watch: Arc<Watch>) {
        let _ = self.watch.set(watch);
    }

    /// The reconciliation's watch, when some hook is reconciled.
    pub fn watch(&self) -> Option<&Arc<Watch>> {
        self.watch.get()
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

    /// Pause and resume of each running sink.
    pub fn controls(&self) -> Arc<BTreeMap<String, Arc<SinkControl>>> {
        match self.controls.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the running sinks' controls (after a reload rebuilt the sinks).
    pub fn set_controls(&self, controls: BTreeMap<String, Arc<SinkControl>>) {
        let controls = Arc::new(controls);
        match self.controls.write() {
            Ok(mut c) => *c = controls,
            Err(p) => *p.into_inner() = controls,
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
