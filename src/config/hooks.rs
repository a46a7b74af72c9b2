//! `[hooks.NAME]`: one payload URL each, how its deliveries authenticate and what is removed
//! from them before they are stored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::enrich::reconcile::MIN_EVERY;
use crate::problem::Problem;
use crate::secret::Secret;
use crate::senders::generic::{self, Paths};
use crate::senders::json::RedactPath;
use crate::senders::{AuthWay, HookKind, arcgis};
use crate::signature::hmac::HmacHeader;
use crate::signature::standard_webhooks;

/// `[hooks.NAME]`: one payload URL, `POST /hooks/NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The payload kind this hook accepts.
    #[serde(default = "default_kind")]
    pub kind: HookKind,
    /// Keys and shared secrets; any one may match (rotation). The first answers CRC challenges.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The ways a delivery may authenticate; by default those the hook's kind of sender uses.
    pub auth: Option<Vec<AuthWay>>,
    /// Refuse unauthenticated deliveries; defaults to true when secrets are set.
    /// (`require_signature` is its older name.)
    #[serde(alias = "require_signature")]
    pub require_auth: Option<bool>,
    /// `hmac = { header = "X-Signature", ... }`: the header of the `hmac` way, its hash,
    /// encoding and prefix.
    #[serde(default, deserialize_with = "hmac_header")]
    pub hmac: Option<HmacHeader>,
    /// Where a generic JSON sender's body keeps its events and their fields (`kind = "json"`).
    pub json: Option<Paths>,
    /// JSON paths removed from the payload before it is stored or sent (personal data).
    #[serde(default, deserialize_with = "redact_paths")]
    pub redact: Vec<RedactPath>,
    /// The feature service the hook's webhook watches (`…/FeatureServer`): reconciliation
    /// reads it, and `hookbridge arcgis webhooks` finds its webhooks from it.
    pub service: Option<String>,
    /// The layer ids of `service` the hook covers.
    #[serde(default)]
    pub layers: Vec<u32>,
    /// Calls extractChanges from each layer's last serverGen, so no edit goes missing.
    pub reconcile: Option<ReconcileConfig>,
    /// false: ArcGIS sends this hook no webhook; its events come from reconciliation only and
    /// deliveries to its URL are refused.
    #[serde(default = "yes")]
    pub webhook: bool,
    /// The ArcGIS webhook resources feeding this hook, read on a schedule so that one ArcGIS
    /// turned off shows on the metrics, the status page and `/readyz`.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// How often `webhooks` are read (default 5 minutes, at least 30 s).
    #[serde(default, with = "humantime_serde")]
    pub watch_every: Option<Duration>,
}

/// `reconcile = { every = "5m" }`: how often the layers are polled when no webhook delivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// The interval between polls (at least 30 s, ArcGIS's own shortest webhook schedule).
    #[serde(with = "humantime_serde")]
    pub every: Duration,
}

fn yes() -> bool {
    true
}

impl HookConfig {
    /// Whether an unauthenticated delivery is refused.
    pub fn auth_required(&self) -> bool {
        self.require_auth.unwrap_or(!self.secrets.is_empty())
    }

    /// The ways a delivery may authenticate.
    pub fn auth_ways(&self) -> &[AuthWay] {
        match &self.auth {
            Some(ways) => ways,
            None => self.kind.auth(),
        }
    }
}

/// `hmac = { ... }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HmacTable {
    header: String,
    algorithm: Option<String>,
    encoding: Option<String>,
    prefix: Option<String>,
}

fn hmac_header<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HmacHeader>, D::Error> {
    use serde::de::Error;
    let t = HmacTable::deserialize(d)?;
    if t.header.is_empty() || !t.header.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(D::Error::custom(format!(
            "header: {:?} is not a header name",
            t.header
        )));
    }
    let algorithm = match t.algorithm {
        Some(a) => a.parse().map_err(D::Error::custom)?,
        None => Default::default(),
    };
    let encoding = match t.encoding {
        Some(e) => e.parse().map_err(D::Error::custom)?,
        None => Default::default(),
    };
    Ok(Some(HmacHeader {
        header: t.header,
        algorithm,
        encoding,
        prefix: t.prefix.unwrap_or_default(),
    }))
}

fn redact_paths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RedactPath>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|p| RedactPath::parse(p).map_err(serde::de::Error::custom))
        .collect()
}

fn default_kind() -> HookKind {
    HookKind::Auto
}

/// Checks every hook: its name, and that its secrets can authenticate the ways it allows.
pub(super) fn check(hooks: &BTreeMap<String, HookConfig>, problems: &mut Vec<Problem>) {
    for (name, hook) in hooks {
        if !valid_name(name) {
            problems.push(Problem::new(
                format!("hooks.{name}"),
                "a hook name may use only letters, digits, '-' and '_'",
            ));
        }
        if hook.require_auth == Some(true) && hook.secrets.is_empty() {
            problems.push(Problem::new(
                format!("hooks.{name}.secrets"),
                "require_auth is true but no secret is configured",
            ));
        }
        let explicit_url = hook.kind.is(&arcgis::SURVEY123)
            || hook
                .auth
                .as_ref()
                .is_some_and(|w| w.contains(&AuthWay::UrlSecret));
        if explicit_url {
            for (i, secret) in hook.secrets.iter().enumerate() {
                if !url_safe(secret.expose()) {
                    problems.push(Problem::new(
                        format!("hooks.{name}.secrets[{i}]"),
                        "a secret sent in the payload URL must use only A-Z a-z 0-9 - . _ ~ \
                         (it is compared exactly as it arrives, never percent-decoded)",
                    ));
                }
            }
        }
        let ways = hook.auth_ways();
        if ways.contains(&AuthWay::StandardWebhooks) {
            for (i, secret) in hook.secrets.iter().enumerate() {
                if let Err(e) = standard_webhooks::Key::parse(secret.expose()) {
                    problems.push(Problem::new(
                        format!("hooks.{name}.secrets[{i}]"),
                        e.to_string(),
                    ));
                }
            }
        }
        if ways.contains(&AuthWay::Hmac) && hook.hmac.is_none() && !hook.secrets.is_empty() {
            problems.push(Problem::new(
                format!("hooks.{name}.hmac"),
                "missing; the hmac way needs the header it reads: hmac = { header = \"X-Signature\" }",
            ));
        }
        if hook.json.is_some() && !hook.kind.is(&generic::KIND) {
            problems.push(Problem::new(
                format!("hooks.{name}.json"),
                "is read only by the generic JSON sender: add kind = \"json\"",
            ));
        }
        check_reconcile(name, hook, problems);
        check_watch(name, hook, problems);
        if hook.auth.as_ref().is_some_and(Vec::is_empty) {
            problems.push(Problem::new(
                format!("hooks.{name}.auth"),
                "lists no way; expected any of \"signature\", \"secret-header\", \"url-secret\", \"standard-webhooks\", \"github\", \"hmac\"",
            ));
        }
    }
}

/// Checks `service`, `layers`, `reconcile` and `webhook` together: each needs the others.
fn check_reconcile(name: &str, hook: &HookConfig, problems: &mut Vec<Problem>) {
    let key = |field: &str| format!("hooks.{name}.{field}");
    if let Some(r) = &hook.reconcile {
        if !hook.kind.is(&arcgis::FEATURE_SERVICE) {
            problems.push(Problem::new(
                key("reconcile"),
                "reconciliation reads a feature service's changes: it needs kind = \"feature-service\"",
            ));
        }
        if r.every < MIN_EVERY {
            problems.push(Problem::new(
                key("reconcile.every"),
                format!(
                    "{} is shorter than 30s, ArcGIS's own shortest webhook schedule",
                    humantime::format_duration(r.every)
                ),
            ));
        }
        if hook.service.is_none() {
            problems.push(Problem::new(
                key("service"),
                "missing; reconcile needs the feature service (https://…/FeatureServer)",
            ));
        }
        if hook.layers.is_empty() {
            problems.push(Problem::new(
                key("layers"),
                "missing; reconcile needs the layer ids it covers, e.g. layers = [0]",
            ));
        }
    }
    if let Some(service) = &hook.service {
        let path_ok = url::Url::parse(service).is_ok_and(|u| {
            matches!(u.scheme(), "https" | "http")
                && u.query().is_none()
                && u.path()
                    .trim_end_matches('/')
                    .to_ascii_lowercase()
                    .ends_with("/featureserver")
        });
        if !path_ok {
            problems.push(Problem::new(
                key("service"),
                "expected a feature service URL ending in /FeatureServer, without a query",
            ));
        }
    }
    if !hook.layers.is_empty() && hook.reconcile.is_none() {
        problems.push(Problem::new(
            key("layers"),
            "is read only for reconciliation; add reconcile = { every = \"5m\" }",
        ));
    }
    if !hook.webhook && hook.reconcile.is_none() {
        problems.push(Problem::new(
            key("webhook"),
            "false leaves the hook nothing to deliver: add reconcile = { every = \"5m\" }",
        ));
    }
}

/// Checks `webhooks` and `watch_every`.
fn check_watch(name: &str, hook: &HookConfig, problems: &mut Vec<Problem>) {
    for (i, url) in hook.webhooks.iter().enumerate() {
        let ok = url::Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "https" | "http") && u.query().is_none() && u.username().is_empty()
        });
        if !ok {
            problems.push(Problem::new(
                format!("hooks.{name}.webhooks[{i}]"),
                "expected the URL of an ArcGIS webhook resource (…/WebHooks/<id>, …/webhooks/<id>), without a query",
            ));
        }
    }
    if let Some(every) = hook.watch_every {
        if every < MIN_EVERY {
            problems.push(Problem::new(
                format!("hooks.{name}.watch_every"),
                format!(
                    "{} is shorter than 30s; ArcGIS changes a webhook's state no faster",
                    humantime::format_duration(every)
                ),
            ));
        }
        if hook.webhooks.is_empty() {
            problems.push(Problem::new(
                format!("hooks.{name}.watch_every"),
                "is read only with webhooks = [\"https://…/WebHooks/<id>\"]",
            ));
        }
    }
}

/// Whether a secret can travel in a URL as it is.
fn url_safe(secret: &str) -> bool {
    secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `name` is a safe hook, sink or connection name (it appears in URLs, keys and
/// metric labels).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
