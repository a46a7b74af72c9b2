//! ArcGIS payloads → events: organization (portal), feature-service and geoprocessing webhooks.

pub mod body;
mod feature;
mod geoprocessing;
mod portal;

use serde_json::Value;

use crate::config::HookKind;
use crate::event::{Event, EventKind};

/// Why a body is not a payload of the hook's kind (answered with 400).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (or too deeply nested).
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// A form body without a usable `payload` field.
    #[error("{0}")]
    Form(String),
    /// JSON of the wrong shape for the hook's kind.
    #[error("not a {kind} payload: {detail}")]
    Shape {
        /// The kind expected.
        kind: &'static str,
        /// What was wrong, with the JSON path.
        detail: String,
    },
    /// `kind = "auto"` and the shape is none of the known ones.
    #[error(
        "unrecognized payload: expected a portal object {{info, events}}, a feature-service array, or a geoprocessing job {{jobId, jobStatus}}"
    )]
    Unrecognized,
}

/// Parses a payload's JSON text for `hook` into its events (empty when it holds none).
pub fn parse(kind: HookKind, hook: &str, json: &[u8]) -> Result<Vec<Event>, ParseError> {
    let value: Value = serde_json::from_slice(json).map_err(|e| ParseError::Json(e.to_string()))?;
    parse_value(kind, hook, value)
}

/// Parses an already decoded payload.
pub fn parse_value(kind: HookKind, hook: &str, value: Value) -> Result<Vec<Event>, ParseError> {
    let kind = match kind {
        HookKind::Auto => detect(&value).ok_or(ParseError::Unrecognized)?,
        k => k,
    };
    match kind {
        HookKind::Portal => portal::parse(hook, value),
        HookKind::FeatureService => feature::parse(hook, value),
        HookKind::Geoprocessing => geoprocessing::parse(hook, value),
        HookKind::Auto => Err(ParseError::Unrecognized),
    }
}

/// Where the `index`-th event's properties sit verbatim in its payload, as a JSON pointer, so that
/// the queue can store them once (in the body) instead of twice.
///
/// Only portal events copy their properties from the payload unchanged; the other kinds build
/// theirs, so they have no pointer.
pub fn properties_pointer(kind: EventKind, index: usize) -> Option<String> {
    match kind {
        EventKind::Portal => Some(portal::properties_pointer(index)),
        EventKind::FeatureService | EventKind::Geoprocessing => None,
    }
}

/// Guesses the webhook family from the payload's shape.
fn detect(value: &Value) -> Option<HookKind> {
    match value {
        Value::Array(_) => Some(HookKind::FeatureService),
        Value::Object(o) if o.contains_key("info") && o.contains_key("events") => {
            Some(HookKind::Portal)
        }
        Value::Object(_) if geoprocessing::looks_like_job(value) => Some(HookKind::Geoprocessing),
        _ => None,
    }
}

/// Deserializes `value` into `T`, naming the JSON path of the first mismatch.
fn typed<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    value: Value,
) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        ParseError::Shape {
            kind,
            detail: if path == "." {
                inner
            } else {
                format!("at {path}: {inner}")
            },
        }
    })
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
