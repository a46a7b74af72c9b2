//! `hookbridge explain`: a dry run of a payload through parse, dedup key, routing and rendering.

use serde::Serialize;
use serde_json::Value;

use crate::body::{BodyEncoding, FormError, decode};
use crate::config::Config;
use crate::enrich::fetch::without_query;
use crate::enrich::{Split, changes_url};
use crate::event::Event;
use crate::render::RenderError;
use crate::senders::ParseError;

/// Why a dry run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// No such hook: its name, and the hooks there are.
    #[error("no hook named {0:?} in the config; configured hooks: [{known}]", known = .1.join(", "))]
    UnknownHook(String, Vec<String>),
    /// A form body without a usable `payload` field.
    #[error(transparent)]
    Form(#[from] FormError),
    /// The payload does not parse for the hook.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A template failed.
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// The whole dry run.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// One entry per event the payload holds.
    pub events: Vec<ExplainedEvent>,
}

/// One event: its fields, the routes it matched, and what each sink would send.
#[derive(Debug, Serialize)]
pub struct ExplainedEvent {
    /// The normalized event (its `event_id` is the dedup key).
    pub event: Event,
    /// Names of the routes it matched.
    pub routes: Vec<String>,
    /// What each destination sink would send.
    pub deliveries: Vec<Preview>,
}

/// What one sink would send for one event.
#[derive(Debug, Serialize)]
pub struct Preview {
    /// Sink name.
    pub sink: String,
    /// Sink type.
    pub r#type: &'static str,
    /// Topic, key, routing key, headers, body or rendered mail, per sink type.
    pub message: Value,
    /// For a sink with `enrich = "changes"`: where the changes would be fetched from (the
    /// message above shows `properties.changes` empty, as nothing is fetched in a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<String>,
}

/// What explain says about a sink's changes: the URL without its query, and the connection.
fn changes_note(config: &Config, url: &str, split: Split) -> String {
    let shown = without_query(url);
    let per = match split {
        Split::Feature => "; sent as one message per added, updated or deleted feature",
        Split::None => "; sent as properties.changes",
    };
    match config.arcgis.iter().find(|(_, c)| c.serves(url)) {
        Some((name, _)) => {
            format!("changes would be fetched from {shown} with connection arcgis.{name}{per}")
        }
        None => format!(
            "changes would be fetched from {shown}, but no [arcgis.*] connection lists it in services: the event would be dead-lettered"
        ),
    }
}

/// Parses `body` as `hook` would receive it with `headers` (name and value: the headers a
/// sender such as GitHub names its events in) and shows what would happen, sending nothing.
pub fn explain(
    config: &Config,
    hook: &str,
    headers: &[(&str, &str)],
    encoding: BodyEncoding,
    body: &[u8],
) -> Result<Explanation, ExplainError> {
    let h = config.hooks.get(hook).ok_or_else(|| {
        ExplainError::UnknownHook(hook.to_string(), config.hooks.keys().cloned().collect())
    })?;
    let decoded = decode(encoding, body)?;
    let prepared = config.prepare(hook, h, &headers, &decoded.json, &mut |_| true)?;
    let payload = &*prepared.payload;
    let mut out = Vec::new();
    for event in prepared.events {
        let routes = config
            .routes
            .matching(&event)
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let mut deliveries = Vec::new();
        for sink in config.routes.sinks_for(&event) {
            let Some(entry) = config.sinks.get(&sink) else {
                continue;
            };
            let (changes, shown) = match (config.enrich.get(&sink), changes_url(&event)) {
                (Some(e), Some(url)) => {
                    let mut shown = event.clone();
                    shown
                        .properties
                        .insert("changes".into(), Value::Array(vec![]));
                    (Some(changes_note(config, url, e.split)), shown)
                }
                _ => (None, event.clone()),
            };
            deliveries.push(Preview {
                r#type: entry.settings.type_name(),
                message: entry
                    .settings
                    .preview(&sink, &config.renderer, &shown, payload)?,
                sink,
                changes,
            });
        }
        out.push(ExplainedEvent {
            event,
            routes,
            deliveries,
        });
    }
    Ok(Explanation { events: out })
}
