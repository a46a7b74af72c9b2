//! Whether each sink has connected, for `/readyz` and `hookbridge_sink_up`: fed by the
//! dispatchers, read by the ingress.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::metrics::METRICS;

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

    /// Forgets a sink that a reload removed, so readiness no longer waits for it.
    pub fn unregister(&self, sink: &str) {
        if let Ok(mut m) = self.sinks.lock() {
            m.remove(sink);
        }
        let _ = METRICS.sink_up.remove_label_values(&[sink]);
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
