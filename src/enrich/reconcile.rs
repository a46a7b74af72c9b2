//! Reconciliation: no edit goes missing when ArcGIS sends nothing.
//!
//! ArcGIS Online tries a feature-service delivery once and turns a failing webhook off, so a
//! missed delivery is a lost edit. For a hook that names its service and layers and
//! `reconcile = { every = "5m" }`, hookbridge keeps each layer's last `serverGen` in the queue
//! and calls `extractChanges` from it: right after each webhook delivery, for the windows no
//! delivery covered (a delivery whose window starts after the stored serverGen reveals one that
//! was missed), and on the schedule, from the last window on, unless a webhook delivery came in
//! since the last tick. What it finds goes through the same routes as a webhook event of the
//! same shape, marked `source = "reconcile"`.
//!
//! A poll's windows are recorded (flushed) before their events are accepted, and the serverGens
//! advance (flushed) only after: a restart in between accepts the same events again, which the
//! queue's dedup refuses, so nothing is lost and nothing is repeated downstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Connection, FetchError, changes};
use crate::clock::now_ms;
use crate::event::{DedupKey, Event};
use crate::metrics::METRICS;
use crate::queue::{Intent, LayerWindow, Queue, QueueError, RoutedEvent};
use crate::senders::{self, HookKind, arcgis};

/// The smallest `every`: ArcGIS's own webhook schedule checks for changes every 30 s at most.
pub const MIN_EVERY: Duration = Duration::from_secs(30);

/// How long a poll waits after it failed before it tries again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// A hook that is reconciled: its service, its layers, how often.
#[derive(Debug, Clone)]
pub struct Reconciled {
    /// The hook's name.
    pub hook: String,
    /// The feature service (`…/FeatureServer`).
    pub service: String,
    /// The layer ids it covers.
    pub layers: Vec<u32>,
    /// How often the tail is polled.
    pub every: Duration,
    /// Whether ArcGIS sends the hook webhook deliveries at all.
    pub webhook: bool,
}

/// The current routing table, as a function: the sinks an event goes to.
pub type Router = Arc<dyn Fn(&Event) -> Vec<String> + Send + Sync>;

/// What the ingress and the admin API tell the reconciler: a delivery came in, or poll now.
#[derive(Default)]
pub struct Watch {
    hooks: HashMap<String, HookWatch>,
}

#[derive(Default)]
struct HookWatch {
    layers: Vec<u32>,
    delivered: Notify,
    now: Notify,
    last_delivery: Mutex<Option<Instant>>,
}

impl Watch {
    /// A watch over these hooks.
    pub fn new(hooks: &[Reconciled]) -> Arc<Watch> {
        let hooks = hooks
            .iter()
            .map(|h| {
                let w = HookWatch {
                    layers: h.layers.clone(),
                    ..HookWatch::default()
                };
                (h.hook.clone(), w)
            })
            .collect();
        Arc::new(Watch { hooks })
    }

    /// Whether `hook` is reconciled.
    pub fn covers(&self, hook: &str) -> bool {
        self.hooks.contains_key(hook)
    }

    /// Records the windows a webhook delivery of `hook` named (its events' `serverGens`), and
    /// wakes the hook's reconciliation to look for the windows no delivery covered.
    pub fn delivered(&self, queue: &Queue, hook: &str, events: &[Event]) {
        let Some(w) = self.hooks.get(hook) else {
            return;
        };
        for e in events {
            let Some(url) = super::changes_url(e) else {
                continue;
            };
            let Some((from, to)) = server_gens(url) else {
                continue;
            };
            let layers = match e.properties.get("layerId").and_then(layer_id) {
                Some(l) => vec![l],
                None => w.layers.clone(),
            };
            for layer in layers.into_iter().filter(|l| w.layers.contains(l)) {
                if let Err(e) = queue.record_webhook_window(hook, layer, from, to) {
                    tracing::warn!(hook, error = %e, "cannot record a delivery's window");
                }
            }
        }
        *lock(&w.last_delivery) = Some(Instant::now());
        w.delivered.notify_one();
    }

    /// Asks `hook`'s reconciliation to poll now, the tail included; false if it has none.
    pub fn poll_now(&self, hook: &str) -> bool {
        match self.hooks.get(hook) {
            Some(w) => {
                w.now.notify_one();
                true
            }
            None => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `serverGens=[from,to]` of a changesUrl.
fn server_gens(url: &str) -> Option<(u64, u64)> {
    let u = url::Url::parse(url).ok()?;
    let (_, v) = u.query_pairs().find(|(k, _)| k == "serverGens")?;
    let v: Value = serde_json::from_str(&v).ok()?;
    Some((v.get(0)?.as_u64()?, v.get(1)?.as_u64()?))
}

fn layer_id(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The task that reconciles every such hook, each on its own schedule.
pub struct Reconciler {
    /// The durable queue: serverGens, intents and the events found.
    pub queue: Arc<Queue>,
    /// Deliveries and "poll now" requests.
    pub watch: Arc<Watch>,
    /// The `[arcgis.*]` connections; a hook's service is read with the one that serves it.
    pub connections: Vec<Arc<Connection>>,
    /// The hooks.
    pub hooks: Vec<Reconciled>,
    /// The routes in force.
    pub router: Router,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
}

impl Reconciler {
    /// Runs until shutdown.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        for hook in this.hooks.clone() {
            tasks.spawn(this.clone().hook_loop(hook));
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn hook_loop(self: Arc<Self>, hook: Reconciled) {
        let Some(w) = self.watch.hooks.get(&hook.hook) else {
            return;
        };
        let mut tail = true;
        loop {
            let wait = match self.poll(&hook, tail).await {
                Ok(found) => {
                    METRICS
                        .reconcile_polls
                        .with_label_values(&[&hook.hook, "ok"])
                        .inc();
                    if found > 0 {
                        tracing::info!(hook = %hook.hook, windows = found, "reconciliation delivered changes no webhook delivered");
                    }
                    hook.every
                }
                Err(e) => {
                    METRICS
                        .reconcile_polls
                        .with_label_values(&[&hook.hook, "failed"])
                        .inc();
                    tracing::warn!(hook = %hook.hook, error = %e, "reconciliation poll failed; nothing is lost, it tries again");
                    hook.every.min(RETRY_AFTER_FAILURE)
                }
            };
            let since = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    // A webhook that delivered since the last tick is alive: its next
                    // delivery shows any window it missed.
                    let recent = lock(&w.last_delivery).is_some_and(|t| t >= since);
                    tail = !hook.webhook || !recent;
                }
                _ = w.delivered.notified() => tail = false,
                _ = w.now.notified() => tail = true,
                _ = self.shutdown.cancelled() => break,
            }
        }
    }

    fn connection(&self, url: &str) -> Result<&Arc<Connection>, ReconcileError> {
        self.connections
            .iter()
            .find(|c| c.config.serves(url))
            .ok_or_else(|| ReconcileError::NoConnection(url.to_string()))
    }

    /// One poll: an intent left by a stop first, then the windows no delivery covered, then
    /// (when `tail`) everything since; returns how many layer windows it delivered.
    async fn poll(&self, hook: &Reconciled, tail: bool) -> Result<usize, ReconcileError> {
        let conn = self.connection(&hook.service)?.clone();
        if let Some(intent) = self.queue.intent(&hook.hook)? {
            self.deliver(hook, &conn, &intent, &BTreeMap::new()).await?;
        }
        let gens = self.gens(hook, &conn).await?;
        let mut found: Vec<(LayerWindow, Value)> = Vec::new();
        let mut windows = Vec::new();
        let mut after = Vec::new();
        for (layer, stored) in gens {
            let mut at = stored;
            let mut delivered = self.queue.webhook_windows(&hook.hook, layer)?;
            delivered.sort_unstable();
            for (from, to) in delivered {
                if to <= at {
                    continue;
                }
                if from > at {
                    windows.push(LayerWindow {
                        layer,
                        from: at,
                        to: from,
                    });
                }
                at = to;
            }
            after.push((layer, at));
        }
        for w in windows {
            let url = window_url(&hook.service, &w);
            let file = conn.fetch(&url).await?;
            let layers = changes::normalize(&file.json).map_err(FetchError::Failed)?;
            if let Some(entry) = layer_entry(&layers, w.layer).filter(has_edits) {
                found.push((w, entry));
            }
        }
        if tail {
            let url = tail_url(&hook.service, &after);
            let file = conn.fetch(&url).await?;
            let layers = changes::normalize(&file.json).map_err(FetchError::Failed)?;
            for (layer, at) in after.iter_mut() {
                let Some(entry) = layer_entry(&layers, *layer) else {
                    continue;
                };
                let Some(to) = entry.get("serverGen").and_then(Value::as_u64) else {
                    continue;
                };
                if to <= *at {
                    continue;
                }
                let w = LayerWindow {
                    layer: *layer,
                    from: *at,
                    to,
                };
                *at = to;
                if has_edits(&entry) {
                    found.push((w, entry));
                }
            }
        }
        if found.is_empty() {
            self.queue.set_server_gens(&hook.hook, &after).await?;
            return Ok(0);
        }
        found.sort_by_key(|(w, _)| (w.layer, w.from));
        let intent = Intent {
            windows: found.iter().map(|(w, _)| w.clone()).collect(),
            gens: after,
        };
        let known = found
            .into_iter()
            .map(|(w, entry)| (window_url(&hook.service, &w), entry))
            .collect();
        self.queue.set_intent(&hook.hook, &intent).await?;
        self.deliver(hook, &conn, &intent, &known).await?;
        Ok(intent.windows.len())
    }

    /// Each layer's stored serverGen; a layer without one starts from the service's current
    /// serverGen (its `changeTrackingInfo`), so only edits from now on are reconciled.
    async fn gens(
        &self,
        hook: &Reconciled,
        conn: &Connection,
    ) -> Result<Vec<(u32, u64)>, ReconcileError> {
        let mut gens = Vec::new();
        let mut missing = Vec::new();
        for layer in &hook.layers {
            match self.queue.server_gen(&hook.hook, *layer)? {
                Some(g) => gens.push((*layer, g)),
                None => missing.push(*layer),
            }
        }
        if missing.is_empty() {
            return Ok(gens);
        }
        let info = conn.read(&service_info_url(&hook.service)).await?;
        let current = info
            .pointer("/changeTrackingInfo/layerServerGens")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ReconcileError::Service(format!(
                    "{} has no changeTrackingInfo.layerServerGens: is change tracking on?",
                    super::fetch::without_query(&hook.service)
                ))
            })?;
        let mut base = Vec::new();
        for layer in missing {
            let g = current
                .iter()
                .find(|g| g.get("id").and_then(layer_id) == Some(layer))
                .and_then(|g| g.get("serverGen"))
                .and_then(Value::as_u64)
                .ok_or_else(|| {
                    ReconcileError::Service(format!(
                        "{} lists no serverGen for layer {layer}",
                        super::fetch::without_query(&hook.service)
                    ))
                })?;
            base.push((layer, g));
        }
        self.queue.set_server_gens(&hook.hook, &base).await?;
        tracing::info!(hook = %hook.hook, layers = ?base, "reconciliation starts from the service's current serverGens");
        gens.extend(base);
        Ok(gens)
    }

    /// Accepts one event per window of `intent` (its changes stored first, so no sink fetches
    /// them again), then advances the serverGens.
    async fn deliver(
        &self,
        hook: &Reconciled,
        conn: &Connection,
        intent: &Intent,
        known: &BTreeMap<String, Value>,
    ) -> Result<(), ReconcileError> {
        for w in &intent.windows {
            let url = window_url(&hook.service, w);
            let entry = match known.get(&url) {
                Some(e) => e.clone(),
                None => match self.queue.change_rows().changes(0, &url)? {
                    Some(c) => c.get(0).cloned().unwrap_or(Value::Null),
                    None => {
                        let file = conn.fetch(&url).await?;
                        let layers = changes::normalize(&file.json).map_err(FetchError::Failed)?;
                        layer_entry(&layers, w.layer).unwrap_or(Value::Null)
                    }
                },
            };
            let stored = json!([entry]);
            self.queue
                .change_rows()
                .store_changes(self.queue.last_seq()?, &url, &stored)
                .await?;
            let (event, payload) = reconciled_event(hook, w, &url)?;
            let id = event.event_id.clone();
            let sinks = (self.router)(&event);
            let routed = RoutedEvent {
                event,
                sinks,
                properties_at: None,
            };
            self.queue.accept(payload, vec![routed]).await?;
            if let Some(seq) = self.queue.seq_of(&id)? {
                self.queue
                    .change_rows()
                    .store_changes(seq, &url, &stored)
                    .await?;
            }
            METRICS
                .reconciled_windows
                .with_label_values(&[&hook.hook])
                .inc();
        }
        abort_if_asked();
        self.queue.set_server_gens(&hook.hook, &intent.gens).await?;
        Ok(())
    }
}

/// For the restart test: with `HOOKBRIDGE_FAULT_RECONCILE_ABORT=1` (and the `fault-injection`
/// feature) the process stops dead once a poll's events are accepted, before its serverGens
/// advance.
fn abort_if_asked() {
    #[cfg(feature = "fault-injection")]
    if std::env::var("HOOKBRIDGE_FAULT_RECONCILE_ABORT").is_ok_and(|v| v == "1") {
        tracing::warn!("fault injection: stopping between the accept and the serverGen update");
        std::process::abort();
    }
}

fn layer_entry(layers: &Value, layer: u32) -> Option<Value> {
    layers
        .as_array()?
        .iter()
        .find(|l| l.get("layerId").and_then(layer_id) == Some(layer))
        .cloned()
}

fn has_edits(entry: &Value) -> bool {
    ["adds", "updates", "deleteIds", "addIds", "updateIds"]
        .iter()
        .any(|k| {
            entry
                .get(*k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        })
}

/// The parameters every extractChanges call of a poll carries: all edits, whole features, JSON.
const EXTRACT: [(&str, &str); 6] = [
    ("returnInserts", "true"),
    ("returnUpdates", "true"),
    ("returnDeletes", "true"),
    ("returnIdsOnly", "false"),
    ("dataFormat", "json"),
    ("async", "true"),
];

fn extract_url(service: &str, params: &[(&str, String)]) -> String {
    let base = format!("{}/extractChanges", service.trim_end_matches('/'));
    match url::Url::parse(&base) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
                for (k, v) in EXTRACT {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => base,
    }
}

/// The changesUrl of one layer's window: `serverGens=[from,to]`, as a webhook's names it.
pub fn window_url(service: &str, w: &LayerWindow) -> String {
    extract_url(
        service,
        &[
            ("layers", format!("[{}]", w.layer)),
            ("serverGens", format!("[{},{}]", w.from, w.to)),
        ],
    )
}

/// Everything since each layer's serverGen (`layerServerGens`).
fn tail_url(service: &str, gens: &[(u32, u64)]) -> String {
    let layers: Vec<u32> = gens.iter().map(|(l, _)| *l).collect();
    let since: Vec<Value> = gens
        .iter()
        .map(|(l, g)| json!({"id": l, "serverGen": g}))
        .collect();
    extract_url(
        service,
        &[
            ("layers", Value::from(layers).to_string()),
            ("layerServerGens", Value::from(since).to_string()),
        ],
    )
}

/// The service resource, whose `changeTrackingInfo` gives each layer's current serverGen.
fn service_info_url(service: &str) -> String {
    match url::Url::parse(service) {
        Ok(mut u) => {
            u.query_pairs_mut().append_pair("returnUpdates", "true");
            u.to_string()
        }
        Err(_) => service.to_string(),
    }
}

/// The event a poll delivers for one window: an ArcGIS Online feature-service delivery of one
/// layer, `FeaturesEdited`, parsed like any other, with `source = "reconcile"`,
/// `properties.reconciled = true` and an id of its window.
fn reconciled_event(
    hook: &Reconciled,
    w: &LayerWindow,
    url: &str,
) -> Result<(Event, Arc<str>), ReconcileError> {
    let service_name = service_name(&hook.service);
    let payload = json!([{
        "layerId": w.layer,
        "serviceName": service_name,
        "lastUpdatedTime": now_ms(),
        "changesUrl": url,
        "events": ["FeaturesEdited"],
        "reconciled": true,
    }])
    .to_string();
    let mut events = senders::parse(
        HookKind::Sender(&arcgis::feature::SENDER),
        &hook.hook,
        payload.as_bytes(),
    )
    .map_err(|e| ReconcileError::Service(e.to_string()))?;
    let mut event = events
        .pop()
        .ok_or_else(|| ReconcileError::Service("no event for the window".into()))?;
    event.event_id = DedupKey::from_parts(&[
        "reconcile",
        &hook.hook,
        super::fetch::without_query(&hook.service),
        &w.layer.to_string(),
        &w.from.to_string(),
        &w.to.to_string(),
    ])
    .to_string();
    event.source = "reconcile".into();
    Ok((event, Arc::from(payload)))
}

/// The service's name: the path segment before `FeatureServer`.
fn service_name(service: &str) -> String {
    let segments: Vec<&str> = super::fetch::without_query(service)
        .trim_end_matches('/')
        .split('/')
        .collect();
    segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("FeatureServer"))
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| segments.get(i))
        .map_or_else(|| service.to_string(), |s| (*s).to_string())
}

/// Why a poll did not finish; the next one tries again from the stored serverGens.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// No `[arcgis.*]` connection serves the hook's service.
    #[error("no [arcgis.*] connection lists a services prefix for {0}")]
    NoConnection(String),
    /// The service answered, but not as a change-tracked service does.
    #[error("{0}")]
    Service(String),
    /// A fetch failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The queue could not store what the poll found.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "https://services.example/ORG/arcgis/rest/services/Parcels/FeatureServer";

    #[test]
    fn window_urls_name_their_server_gens_and_read_back() {
        let w = LayerWindow {
            layer: 2,
            from: 10,
            to: 14,
        };
        let url = window_url(SERVICE, &w);
        assert!(
            url.starts_with(&format!("{SERVICE}/extractChanges?")),
            "{url}"
        );
        assert_eq!(server_gens(&url), Some((10, 14)));
        assert_eq!(service_name(SERVICE), "Parcels");
        let tail = tail_url(SERVICE, &[(0, 5), (2, 9)]);
        let u = url::Url::parse(&tail).unwrap();
        let q: BTreeMap<String, String> = u.query_pairs().into_owned().collect();
        assert_eq!(q["layers"], "[0,2]");
        assert_eq!(
            q["layerServerGens"],
            r#"[{"id":0,"serverGen":5},{"id":2,"serverGen":9}]"#
        );
        assert_eq!(q["dataFormat"], "json");
    }

    #[test]
    fn a_reconciled_event_has_the_webhook_shape_and_an_id_of_its_window() {
        let hook = Reconciled {
            hook: "parcels".into(),
            service: SERVICE.into(),
            layers: vec![0],
            every: MIN_EVERY,
            webhook: true,
        };
        let w = LayerWindow {
            layer: 0,
            from: 1,
            to: 2,
        };
        let url = window_url(SERVICE, &w);
        let (a, payload) = reconciled_event(&hook, &w, &url).unwrap();
        let (b, _) = reconciled_event(&hook, &w, &url).unwrap();
        assert_eq!(a.event_id, b.event_id, "the same window, the same id");
        assert_eq!(a.source, "reconcile");
        assert_eq!(a.operation, "FeaturesEdited");
        assert_eq!(a.id, "Parcels/0");
        assert_eq!(a.properties["reconciled"], true);
        assert_eq!(super::super::changes_url(&a), Some(url.as_str()));
        assert!(payload.contains("FeaturesEdited"));
        let other = LayerWindow { to: 3, ..w };
        let (c, _) = reconciled_event(&hook, &other, &window_url(SERVICE, &other)).unwrap();
        assert_ne!(a.event_id, c.event_id);
    }
}
