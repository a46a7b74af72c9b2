//! A watch on ArcGIS's own webhooks: ArcGIS turns a webhook off after failed deliveries and
//! says so only in the webhook's resource, which nobody reads. hookbridge reads each one a hook
//! names, on a schedule, with the connection's token.
//!
//! What it finds goes to `hookbridge_arcgis_webhook_active{hook,webhook}` and
//! `hookbridge_arcgis_webhook_failed_notifications`, to a notice that `/readyz` and the status
//! page show (readiness itself is about hookbridge and does not change), and to one log line
//! when ArcGIS turns a webhook off and one when it is on again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Connection;
use super::fetch::without_query;
use crate::health::Health;
use crate::metrics::METRICS;

/// How often a webhook resource is read unless the hook says `watch_every`.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(300);

/// One ArcGIS webhook resource a hook watches.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The hook it feeds.
    pub hook: String,
    /// Its resource URL (`…/WebHooks/<id>`, `…/webhooks/<id>`).
    pub url: String,
    /// How often it is read.
    pub every: Duration,
}

impl Watched {
    /// The webhook's label: the last segment of its URL (its id).
    pub fn label(&self) -> String {
        without_query(&self.url)
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn notice_key(&self) -> String {
        format!("arcgis-webhook {} {}", self.hook, self.url)
    }
}

/// What a webhook resource says about itself; fields ArcGIS does not give are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookState {
    /// Its name in ArcGIS.
    pub name: Option<String>,
    /// Whether ArcGIS sends it (`active`).
    pub active: Option<bool>,
    /// Failed notification attempts so far (`curNotificationAttempts`).
    pub failed_attempts: Option<i64>,
}

impl WebhookState {
    /// Reads the fields that matter from a webhook resource (either platform's shape; unknown
    /// fields are left alone).
    pub fn from_resource(v: &Value) -> WebhookState {
        let active = match v.get("active") {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        WebhookState {
            name: v.get("name").and_then(Value::as_str).map(str::to_string),
            active,
            failed_attempts: v.get("curNotificationAttempts").and_then(Value::as_i64),
        }
    }
}

/// The task that reads every watched webhook on its schedule.
pub struct WebhookWatcher {
    /// The `[arcgis.*]` connections; each URL is read with the one that serves it.
    pub connections: Vec<Arc<Connection>>,
    /// What to read.
    pub watched: Vec<Watched>,
    /// Where the notices go.
    pub health: Arc<Health>,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
}

impl WebhookWatcher {
    /// Runs until shutdown, one loop per webhook.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        for w in this.watched.clone() {
            tasks.spawn(this.clone().watch(w));
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn watch(self: Arc<Self>, w: Watched) {
        let label = w.label();
        let mut last: Option<bool> = None;
        loop {
            match self.read(&w).await {
                Ok(state) => last = self.record(&w, &label, &state, last),
                Err(e) => {
                    METRICS
                        .arcgis_webhook_read_failures
                        .with_label_values(&[&w.hook, &label])
                        .inc();
                    tracing::warn!(hook = %w.hook, webhook = %label, error = %e, "cannot read the ArcGIS webhook's state");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(w.every) => {}
                _ = self.shutdown.cancelled() => break,
            }
        }
    }

    async fn read(&self, w: &Watched) -> Result<WebhookState, super::FetchError> {
        let conn = self
            .connections
            .iter()
            .find(|c| c.config.serves(&w.url))
            .ok_or_else(|| {
                super::FetchError::Fatal(format!(
                    "no [arcgis.*] connection serves {}",
                    without_query(&w.url)
                ))
            })?;
        Ok(WebhookState::from_resource(&conn.read(&w.url).await?))
    }

    /// Sets the metrics and the notice; logs a change of `active`. Returns the new `active`.
    fn record(
        &self,
        w: &Watched,
        label: &str,
        state: &WebhookState,
        last: Option<bool>,
    ) -> Option<bool> {
        if let Some(n) = state.failed_attempts {
            METRICS
                .arcgis_webhook_failures
                .with_label_values(&[&w.hook, label])
                .set(n);
        }
        let Some(active) = state.active else {
            return last;
        };
        METRICS
            .arcgis_webhook_active
            .with_label_values(&[&w.hook, label])
            .set(i64::from(active));
        let name = state.name.as_deref().unwrap_or(label);
        if active {
            if self.health.clear_notice(&w.notice_key()) {
                tracing::info!(hook = %w.hook, webhook = %label, "the ArcGIS webhook is active again");
            }
        } else {
            let text = format!(
                "ArcGIS webhook {name:?} feeding hook {} is turned off in ArcGIS (it stops sending after failed deliveries): turn it on again in ArcGIS{}",
                w.hook,
                state
                    .failed_attempts
                    .map(|n| format!("; {n} failed notification attempts"))
                    .unwrap_or_default()
            );
            if self.health.set_notice(&w.notice_key(), &text) || last == Some(true) {
                tracing::warn!(hook = %w.hook, webhook = %label, "ArcGIS turned the webhook off; nothing reaches this hook from it until it is turned on again");
            }
        }
        Some(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_platforms_resources_are_read() {
        let online = json!({"id": "a1", "name": "parcels", "active": false,
            "curNotificationAttempts": 5, "hookUrl": "https://x/hooks/p", "signatureKey": ""});
        assert_eq!(
            WebhookState::from_resource(&online),
            WebhookState {
                name: Some("parcels".into()),
                active: Some(false),
                failed_attempts: Some(5),
            }
        );
        let enterprise =
            json!({"id": "9e0f", "name": "gp", "active": "true", "payloadFormat": "json"});
        let s = WebhookState::from_resource(&enterprise);
        assert_eq!((s.active, s.failed_attempts), (Some(true), None));
        let w = Watched {
            hook: "p".into(),
            url: "https://services.example/ORG/arcgis/rest/admin/services/P/FeatureServer/WebHooks/a1".into(),
            every: DEFAULT_EVERY,
        };
        assert_eq!(w.label(), "a1");
    }

    #[test]
    fn a_webhook_turned_off_is_a_notice_until_it_is_on_again() {
        let watcher = WebhookWatcher {
            connections: vec![],
            watched: vec![],
            health: Arc::new(Health::default()),
            shutdown: CancellationToken::new(),
        };
        let w = Watched {
            hook: "p".into(),
            url: "https://h/x/WebHooks/a1".into(),
            every: DEFAULT_EVERY,
        };
        let off = WebhookState {
            name: Some("parcels".into()),
            active: Some(false),
            failed_attempts: Some(5),
        };
        assert_eq!(watcher.record(&w, "a1", &off, Some(true)), Some(false));
        let notices = watcher.health.notices();
        assert!(
            notices[0].contains("\"parcels\" feeding hook p is turned off"),
            "{notices:?}"
        );
        assert!(notices[0].contains("5 failed"), "{notices:?}");
        assert!(
            watcher.health.problems().is_empty(),
            "readiness is unchanged"
        );
        let on = WebhookState {
            active: Some(true),
            ..off
        };
        watcher.record(&w, "a1", &on, Some(false));
        assert!(watcher.health.notices().is_empty());
    }
}
