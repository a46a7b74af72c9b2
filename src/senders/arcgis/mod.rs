//! ArcGIS's webhooks, each family a sender: organization (portal), feature-service,
//! geoprocessing and Survey123, in every shape ArcGIS sends (docs/arcgis.md, "Deliveries").

pub mod feature;
pub mod geoprocessing;
pub mod portal;
mod samples;
pub mod survey123;

use serde_json::Value;

use super::{AuthWay, ParseError, Request, Sample, Sender};
use crate::event::{Event, EventKind};

/// The kind of organization (portal) events.
pub const PORTAL: EventKind = EventKind::new("portal");
/// The kind of feature-service change events.
pub const FEATURE_SERVICE: EventKind = EventKind::new("feature-service");
/// The kind of geoprocessing job events.
pub const GEOPROCESSING: EventKind = EventKind::new("geoprocessing");
/// The kind of Survey123 record events.
pub const SURVEY123: EventKind = EventKind::new("survey123");

/// One of ArcGIS's webhook families as a sender (`portal::SENDER`, ...): the families differ
/// in these values only, so one `Sender` serves all four.
pub struct Family {
    name: &'static str,
    shapes: &'static str,
    detect: fn(&Value) -> bool,
    parse: fn(&str, &Value) -> Result<Vec<Event>, ParseError>,
    auth: &'static [AuthWay],
    sends_crc: bool,
    properties_pointer: Option<fn(usize) -> String>,
    samples: &'static [Sample],
    templates: &'static [(&'static str, &'static str)],
}

impl Sender for Family {
    fn name(&self) -> &'static str {
        self.name
    }

    fn shapes(&self) -> &'static str {
        self.shapes
    }

    fn detect(&self, value: &Value) -> bool {
        (self.detect)(value)
    }

    fn count(&self, _request: &Request<'_>, value: &Value) -> usize {
        event_count(value)
    }

    fn scrub(&self, value: &mut Value) -> bool {
        remove_token(value)
    }

    fn parse(&self, request: &Request<'_>, value: &Value) -> Result<Vec<Event>, ParseError> {
        (self.parse)(request.hook, value)
    }

    fn auth(&self) -> &'static [AuthWay] {
        self.auth
    }

    fn sends_crc(&self) -> bool {
        self.sends_crc
    }

    fn properties_pointer(&self, index: usize) -> Option<String> {
        self.properties_pointer.map(|at| at(index))
    }

    fn samples(&self) -> &'static [Sample] {
        self.samples
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        self.templates
    }
}

/// How many events an ArcGIS payload would make, counted without building them: the entries
/// of every `events` list (of each object element, for the ArcGIS Online array), at least one.
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

/// Removes Survey123's `portalInfo.token` (a user's live ArcGIS token) wherever an ArcGIS body
/// has it: a Survey123 webhook may be pointed at a hook of any ArcGIS kind.
fn remove_token(value: &mut Value) -> bool {
    let [outer, inner] = survey123::TOKEN_PATH;
    value
        .get_mut(outer)
        .and_then(Value::as_object_mut)
        .is_some_and(|o| o.remove(inner).is_some())
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

/// The three templates of a mail about an event of `kind` (`portal.subject.tera`, ...),
/// shipped in `templates/`.
macro_rules! mail_templates {
    ($kind:literal) => {
        &[
            (
                concat!($kind, ".html.tera"),
                include_str!(concat!("../../../templates/", $kind, ".html.tera")),
            ),
            (
                concat!($kind, ".subject.tera"),
                include_str!(concat!("../../../templates/", $kind, ".subject.tera")),
            ),
            (
                concat!($kind, ".txt.tera"),
                include_str!(concat!("../../../templates/", $kind, ".txt.tera")),
            ),
        ]
    };
}
use mail_templates;

#[cfg(test)]
mod tests {
    use crate::senders::{HookKind, ParseError, by_name, parse};

    fn kind(name: &str) -> HookKind {
        HookKind::Sender(by_name(name).unwrap())
    }

    const PORTAL: &[u8] = include_bytes!("../../../tests/samples/portal-item-share-multi.json");
    const FEATURE: &[u8] = include_bytes!("../../../tests/samples/feature-multi.json");

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
        let e = parse(kind("portal"), "h", FEATURE).unwrap_err();
        assert!(e.to_string().starts_with("not a portal payload"), "{e}");
        let e = parse(kind("feature-service"), "h", PORTAL).unwrap_err();
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
