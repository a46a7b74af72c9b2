//! Whether each sink reaches its destination, for `/readyz`, `hookbridge_sink_connected`, the
//! admin API and the status page: fed by the dispatchers, read by the ingress.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::metrics::METRICS;

/// Where a sink stands with its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    /// Not connected yet since the daemon started.
    Connecting,
    /// The last send or connect reached the destination.
    Up,
    /// The destination could not be reached, since (epoch ms), and why.
    Down(u64, String),
}

/// Whether each sink reaches its destination, for `/readyz`, the admin API and the status page.
#[derive(Debug, Default)]
pub struct Health {
    sinks: Mutex<BTreeMap<String, Link>>,
    /// Other reasons not to be ready, by what they concern (`arcgis.NAME`).
    problems: Mutex<BTreeMap<String, String>>,
    /// What an operator should know that does not stop hookbridge (an ArcGIS webhook turned
    /// off): shown by `/readyz` and the status page, readiness unchanged.
    notices: Mutex<BTreeMap<String, String>>,
}

/// A sink that cannot reach its destination now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Down {
    /// Sink name.
    pub sink: String,
    /// Since when (epoch ms).
    pub since_ms: u64,
    /// The failure that took it down.
    pub reason: String,
}

impl Health {
    /// Registers a sink that must connect before the daemon is ready.
    pub fn register(&self, sink: &str) {
        if let Ok(mut m) = self.sinks.lock() {
            m.entry(sink.to_string()).or_insert(Link::Connecting);
        }
        METRICS.sink_up.with_label_values(&[sink]).set(0);
    }

    /// Records that a sink reached its destination (connected, or a send went through);
    /// returns how long it had been down, when it was.
    pub fn connected(&self, sink: &str) -> Option<std::time::Duration> {
        let before = self
            .sinks
            .lock()
            .ok()
            .and_then(|mut m| m.insert(sink.to_string(), Link::Up));
        METRICS.sink_up.with_label_values(&[sink]).set(1);
        match before {
            Some(Link::Down(since, _)) => Some(std::time::Duration::from_millis(
                crate::clock::now_ms().saturating_sub(since),
            )),
            _ => None,
        }
    }

    /// Records that a sink could not reach its destination (refused, timed out, handshake
    /// failed); returns true when it was up until now, so the outage is logged once.
    pub fn down(&self, sink: &str, reason: &str) -> bool {
        METRICS.sink_up.with_label_values(&[sink]).set(0);
        let Ok(mut m) = self.sinks.lock() else {
            return false;
        };
        match m.get(sink) {
            Some(Link::Down(..)) => false,
            before => {
                let was_up = before == Some(&Link::Up);
                m.insert(
                    sink.to_string(),
                    Link::Down(crate::clock::now_ms(), reason.to_string()),
                );
                was_up
            }
        }
    }

    /// Whether `sink` reaches its destination now.
    pub fn is_up(&self, sink: &str) -> bool {
        self.sinks
            .lock()
            .is_ok_and(|m| m.get(sink) == Some(&Link::Up))
    }

    /// The sinks that were reached once and cannot be now.
    pub fn down_sinks(&self) -> Vec<Down> {
        match self.sinks.lock() {
            Ok(m) => m
                .iter()
                .filter_map(|(sink, link)| match link {
                    Link::Down(since, reason) => Some(Down {
                        sink: sink.clone(),
                        since_ms: *since,
                        reason: reason.clone(),
                    }),
                    _ => None,
                })
                .collect(),
            Err(_) => vec![],
        }
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

    /// Sets the notice `what` (replacing one of the same name); true if it is new.
    pub fn set_notice(&self, what: &str, text: &str) -> bool {
        self.notices
            .lock()
            .map(|mut m| m.insert(what.to_string(), text.to_string()).is_none())
            .unwrap_or(false)
    }

    /// Clears the notice `what`; true if there was one.
    pub fn clear_notice(&self, what: &str) -> bool {
        self.notices
            .lock()
            .map(|mut m| m.remove(what).is_some())
            .unwrap_or(false)
    }

    /// Every notice, by name.
    pub fn notices(&self) -> Vec<String> {
        self.notices
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The sinks that have not connected yet since the daemon started.
    pub fn waiting_for(&self) -> Vec<String> {
        match self.sinks.lock() {
            Ok(m) => m
                .iter()
                .filter(|(_, link)| **link == Link::Connecting)
                .map(|(s, _)| s.clone())
                .collect(),
            Err(_) => vec!["(health state unavailable)".into()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_is_up_only_while_it_reaches_its_destination() {
        let h = Health::default();
        h.register("web");
        assert_eq!(h.waiting_for(), ["web"]);
        assert!(!h.is_up("web"));
        assert_eq!(h.connected("web"), None);
        assert!(h.is_up("web") && h.waiting_for().is_empty());
        assert!(
            h.down("web", "connection refused"),
            "the first failure is news"
        );
        assert!(!h.down("web", "connection refused"), "the second is not");
        assert!(!h.is_up("web"));
        assert!(
            h.waiting_for().is_empty(),
            "it did connect once: readiness holds"
        );
        assert_eq!(h.down_sinks()[0].reason, "connection refused");
        assert!(h.connected("web").is_some(), "back up after an outage");
        assert!(h.down_sinks().is_empty());
    }
}
