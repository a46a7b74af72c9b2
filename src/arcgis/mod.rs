//! ArcGIS payloads → events: organization (portal), feature-service, geoprocessing and
//! Survey123 webhooks, in every shape ArcGIS sends (docs/arcgis.md, "Deliveries").

mod feature;
mod geoprocessing;
pub(crate) mod json;
mod portal;
pub mod samples;
mod survey123;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::event::{Event, EventKind};
use json::RedactPath;

/// What a hook expects to receive, which picks the payload parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookKind {
    /// Organization webhooks: `{info, events}`.
    Portal,
    /// Feature-service webhooks: the ArcGIS Online array or either single-object shape.
    FeatureService,
    /// Geoprocessing job webhooks.
    Geoprocessing,
    /// Survey123 webhooks: one record submitted or edited.
    #[serde(rename = "survey123")]
    Survey123,
    /// Detect the kind from the payload's shape.
    Auto,
}

/// Why a body is not a payload of the hook's kind (answered with 400). Messages name the JSON
/// path and the expected type, never a value from the body.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (or too deeply nested, or an object with a key twice).
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// JSON of the wrong shape for the hook's kind.
    #[error("not a {kind} payload: {detail}")]
    Shape {
        /// The kind expected.
        kind: &'static str,
        /// What was wrong, with the JSON path.
        detail: String,
    },
    /// More events in one delivery than `server.max_events` (answered with 413).
    #[error("the payload holds {count} events, more than server.max_events ({max})")]
    TooManyEvents {
        /// How many it holds.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The daemon is building as many events as `server.max_inflight_events` allows (503).
    #[error(
        "{count} events cannot be taken now: the daemon is accepting as many as server.max_inflight_events allows; retry later"
    )]
    Busy {
        /// How many the payload holds.
        count: usize,
    },
    /// `kind = "auto"` and the shape is none of the known ones.
    #[error(
        "unrecognized payload: expected a portal object {{info, events}}, a feature-service array, \
         a feature-service object with changeType, an ArcGIS Enterprise feature-service object \
         {{serviceType, changesUrl, events}}, a geoprocessing job {{jobId, statusURL, events}} or \
         {{jobId, jobStatus}}, or a Survey123 record {{eventType, feature}}"
    )]
    Unrecognized,
}

/// A delivery's payload made ready for the queue: its events, and the text to store (the
/// payload as received, or re-encoded when something had to be removed from it).
#[derive(Debug)]
pub struct Prepared {
    /// The events it holds, in payload order.
    pub events: Vec<Event>,
    /// The payload text to store and hand to sinks: credentials and redacted paths removed.
    pub payload: Arc<str>,
}

/// What a hook asks of a payload beyond its kind.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Paths removed before anything is stored.
    pub redact: &'a [RedactPath],
    /// Most events one payload may hold.
    pub max_events: usize,
}

impl Limits<'_> {
    /// No redaction, no cap (tools and tests).
    pub const NONE: Limits<'static> = Limits {
        redact: &[],
        max_events: usize::MAX,
    };
}

/// The one path from a payload's JSON to its events, shared by the ingress, `explain` and the
/// fuzz targets: strict JSON (no duplicate keys), credentials and `redact` paths removed, the
/// event count checked against the cap before any event is built, then parsed by the hook's
/// kind (or the detected one). `admit` is asked, with the count, whether that many events may
/// be built now.
pub fn prepare(
    kind: HookKind,
    hook: &str,
    json: &[u8],
    limits: Limits<'_>,
    admit: &mut dyn FnMut(usize) -> bool,
) -> Result<Prepared, ParseError> {
    let mut value = json::parse_strict(json)?;
    let mut removed = remove_token(&mut value);
    for path in limits.redact {
        removed |= path.remove(&mut value);
    }
    let count = event_count(&value);
    if count > limits.max_events {
        return Err(ParseError::TooManyEvents {
            count,
            max: limits.max_events,
        });
    }
    if !admit(count) {
        return Err(ParseError::Busy { count });
    }
    let events = parse_value(kind, hook, &value)?;
    let payload: Arc<str> = if removed {
        Arc::from(value.to_string())
    } else {
        Arc::from(String::from_utf8_lossy(json).as_ref())
    };
    Ok(Prepared { events, payload })
}

/// Parses a payload's JSON text for `hook` into its events (empty when it holds none).
pub fn parse(kind: HookKind, hook: &str, json: &[u8]) -> Result<Vec<Event>, ParseError> {
    prepare(kind, hook, json, Limits::NONE, &mut |_| true).map(|p| p.events)
}

/// Parses an already decoded payload.
fn parse_value(kind: HookKind, hook: &str, value: &Value) -> Result<Vec<Event>, ParseError> {
    let kind = match kind {
        HookKind::Auto => detect(value).ok_or(ParseError::Unrecognized)?,
        k => k,
    };
    match kind {
        HookKind::Portal => portal::parse(hook, value),
        HookKind::FeatureService => feature::parse(hook, value),
        HookKind::Geoprocessing => geoprocessing::parse(hook, value),
        HookKind::Survey123 => survey123::parse(hook, value),
        HookKind::Auto => Err(ParseError::Unrecognized),
    }
}

/// How many events a payload would make, counted without building them: the entries of every
/// `events` list (of each object element, for the ArcGIS Online array), at least one.
fn event_count(value: &Value) -> usize {
    let entries = |v: &Value| match v {
        Value::Object(o) => o
            .get("events")
            .and_then(Value::as_array)
            .map_or(1, Vec::len),
        _ => 0,
    };
    match value {
        Value::Array(layers) => layers.iter().map(entries).sum(),
        other => entries(other).max(1),
    }
}

/// Removes Survey123's `portalInfo.token` (a user's live ArcGIS token) wherever a body has it.
fn remove_token(value: &mut Value) -> bool {
    let [outer, inner] = survey123::TOKEN_PATH;
    value
        .get_mut(outer)
        .and_then(Value::as_object_mut)
        .is_some_and(|o| o.remove(inner).is_some())
}

/// Where the `index`-th event's properties sit verbatim in its payload, as a JSON pointer, so that
/// the queue can store them once (in the body) instead of twice.
///
/// Only portal events copy their properties from the payload unchanged; the other kinds build
/// theirs, so they have no pointer.
pub fn properties_pointer(kind: EventKind, index: usize) -> Option<String> {
    match kind {
        EventKind::Portal => Some(portal::properties_pointer(index)),
        EventKind::FeatureService | EventKind::Geoprocessing | EventKind::Survey123 => None,
    }
}

/// Guesses the webhook family from the payload's shape.
fn detect(value: &Value) -> Option<HookKind> {
    let o = match value {
        Value::Array(_) => return Some(HookKind::FeatureService),
        Value::Object(o) => o,
        _ => return None,
    };
    if o.contains_key("info") && o.contains_key("events") {
        Some(HookKind::Portal)
    } else if survey123::looks_like_survey(o) {
        Some(HookKind::Survey123)
    } else if geoprocessing::looks_like_job(value) {
        Some(HookKind::Geoprocessing)
    } else if feature::looks_like_single(o) {
        Some(HookKind::FeatureService)
    } else {
        None
    }
}

/// An epoch-milliseconds value that may arrive as a number or a numeric string.
fn millis(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A value as plain text (strings unquoted), for ids that may be numbers.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTAL: &[u8] = include_bytes!("../../tests/samples/portal-item-share-multi.json");
    const FEATURE: &[u8] = include_bytes!("../../tests/samples/feature-multi.json");

    #[test]
    fn auto_detects_each_kind() {
        assert_eq!(parse(HookKind::Auto, "h", PORTAL).unwrap().len(), 2);
        assert_eq!(parse(HookKind::Auto, "h", FEATURE).unwrap().len(), 4);
        let gp = br#"{"jobId":"j1","jobStatus":"esriJobSucceeded"}"#;
        assert_eq!(parse(HookKind::Auto, "h", gp).unwrap()[0].id, "j1");
        assert!(matches!(
            parse(HookKind::Auto, "h", b"{\"a\":1}"),
            Err(ParseError::Unrecognized)
        ));
        assert!(matches!(
            parse(HookKind::Auto, "h", b"{"),
            Err(ParseError::Json(_))
        ));
    }

    #[test]
    fn wrong_kind_is_refused() {
        let e = parse(HookKind::Portal, "h", FEATURE).unwrap_err();
        assert!(e.to_string().starts_with("not a portal payload"), "{e}");
        let e = parse(HookKind::FeatureService, "h", PORTAL).unwrap_err();
        assert!(
            e.to_string().starts_with("not a feature-service payload"),
            "{e}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(matches!(
            parse(HookKind::Auto, "h", deep.as_bytes()),
            Err(ParseError::Json(_))
        ));
    }
}
