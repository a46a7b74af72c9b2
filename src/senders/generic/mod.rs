//! A generic JSON sender, for a service hookbridge has no sender of its own for: the hook names,
//! as JSON pointers (RFC 6901), where a body keeps its events and where each event keeps its
//! id, operation and source (`json = { events = "/items", id = "/id", operation = "/type" }`;
//! without it the body is one event with its id at `/id` and its operation at `/type`). The id
//! is the dedup key, so a sender that retries with the same id is deduplicated.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::event::{DedupKey, Event, EventKind};
use crate::senders::json::type_name;
use crate::senders::{AuthWay, ParseError, Request, Sample, Sender};

/// The kind of events from a generic JSON sender.
pub const KIND: EventKind = EventKind::new("json");

/// The operation of an event whose hook names no `operation` pointer.
const DEFAULT_OPERATION: &str = "event";

/// `json = { ... }`: where a body keeps its events and their fields, as JSON pointers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// The array of events (`/items`); without it the whole body is one event.
    #[serde(default, deserialize_with = "pointer_opt")]
    pub events: Option<String>,
    /// Each event's id, a string or a number: its identity, the dedup key (`/id`).
    #[serde(default = "default_id", deserialize_with = "pointer")]
    pub id: String,
    /// Each event's operation (`/type`); `event` when the event has none there.
    #[serde(default = "default_operation", deserialize_with = "pointer_opt")]
    pub operation: Option<String>,
    /// Each event's source, what it is about (`/entity`).
    #[serde(default, deserialize_with = "pointer_opt")]
    pub source: Option<String>,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            events: None,
            id: default_id(),
            operation: default_operation(),
            source: None,
        }
    }
}

fn default_id() -> String {
    "/id".into()
}

fn default_operation() -> Option<String> {
    Some("/type".into())
}

/// A JSON pointer as the config writes it: empty (the whole value) or starting with `/`.
fn checked(p: String) -> Result<String, String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(p)
    } else {
        Err(format!(
            "{p:?} is not a JSON pointer: expected \"/field\" or \"/a/0/b\" (RFC 6901)"
        ))
    }
}

fn pointer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn pointer_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    pointer(d).map(Some)
}

/// The paths of a hook that names none.
static DEFAULT: std::sync::LazyLock<Paths> = std::sync::LazyLock::new(Paths::default);

/// The generic JSON sender.
pub struct Generic;

impl Sender for Generic {
    fn name(&self) -> &'static str {
        "json"
    }

    fn shapes(&self) -> &'static str {
        ""
    }

    fn count(&self, request: &Request<'_>, value: &Value) -> usize {
        let paths = request.paths.unwrap_or(&DEFAULT);
        match &paths.events {
            Some(at) => value
                .pointer(at)
                .and_then(Value::as_array)
                .map_or(1, Vec::len),
            None => 1,
        }
    }

    fn parse(&self, request: &Request<'_>, value: &Value) -> Result<Vec<Event>, ParseError> {
        parse(request.hook, request.paths.unwrap_or(&DEFAULT), value)
    }

    fn auth(&self) -> &'static [AuthWay] {
        &[AuthWay::Hmac, AuthWay::SecretHeader]
    }

    fn samples(&self) -> &'static [Sample] {
        &[SAMPLE]
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        crate::senders::event_mail!("json")
    }
}

/// An order created, as a shop might send it.
const SAMPLE: Sample = Sample::body(
    r#"{"id": "evt_01HQ3", "type": "order.created", "order": {"number": 1041, "total": 25.5}}"#,
);

/// A shape error of a generic JSON body.
fn shape(detail: impl Into<String>) -> ParseError {
    ParseError::Shape {
        kind: "json",
        detail: detail.into(),
    }
}

/// The events of a body, found where `paths` say.
pub fn parse(hook: &str, paths: &Paths, value: &Value) -> Result<Vec<Event>, ParseError> {
    let entries: Vec<&Value> = match &paths.events {
        None => vec![value],
        Some(at) => match value.pointer(at) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(other) => {
                return Err(shape(format!(
                    "{at}: expected an array of events, found {}",
                    type_name(other)
                )));
            }
            None => return Err(shape(format!("{at}: missing; expected an array of events"))),
        },
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| event(hook, paths, i, entry))
        .collect()
}

/// One event: its fields read where `paths` say; `index` names it in errors.
fn event(hook: &str, paths: &Paths, index: usize, entry: &Value) -> Result<Event, ParseError> {
    let at = |p: &str| match &paths.events {
        Some(events) => format!("{events}/{index}{p}"),
        None => p.to_string(),
    };
    let field = |p: &str, required: bool| -> Result<Option<String>, ParseError> {
        match entry.pointer(p) {
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            None | Some(Value::Null) if !required => Ok(None),
            None => Err(shape(format!(
                "{}: missing; expected a string or a number",
                at(p)
            ))),
            Some(other) => Err(shape(format!(
                "{}: expected a non-empty string or a number, found {}",
                at(p),
                type_name(other)
            ))),
        }
    };
    let id = field(&paths.id, true)?.unwrap_or_default();
    let operation = match &paths.operation {
        Some(p) => field(p, false)?,
        None => None,
    };
    let source = match &paths.source {
        Some(p) => field(p, false)?,
        None => None,
    };
    let properties: Map<String, Value> = match entry {
        Value::Object(o) => o.clone(),
        other => Map::from_iter([("value".to_string(), other.clone())]),
    };
    Ok(Event {
        event_id: DedupKey::from_parts(&["json", hook, &id]).to_string(),
        kind: KIND,
        source: source.unwrap_or_default(),
        operation: operation.unwrap_or_else(|| DEFAULT_OPERATION.to_string()),
        id,
        webhook: None,
        user: None,
        when: None,
        portal: None,
        properties,
        hook: hook.to_string(),
        accepted_at: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Paths {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn events_are_found_where_the_paths_say() {
        let p = paths(
            "events = \"/items\"\nid = \"/id\"\noperation = \"/action/name\"\nsource = \"/entity\"",
        );
        let body = serde_json::json!({"items": [
            {"id": "a1", "action": {"name": "created"}, "entity": "order", "total": 3},
            {"id": 7, "entity": "order"}
        ]});
        let events = parse("h", &p, &body).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            (
                events[0].id.as_str(),
                events[0].operation.as_str(),
                events[0].source.as_str()
            ),
            ("a1", "created", "order")
        );
        assert_eq!(events[0].properties["total"], 3);
        assert_eq!(
            (events[1].id.as_str(), events[1].operation.as_str()),
            ("7", "event")
        );
        assert_ne!(events[0].event_id, events[1].event_id);
        // The id is the identity: the same id is the same event, wherever it sits.
        let one = parse(
            "h",
            &paths("id = \"/id\""),
            &serde_json::json!({"id": "a1"}),
        )
        .unwrap();
        assert_eq!(one[0].event_id, events[0].event_id);
    }

    #[test]
    fn refusals_name_the_pointer() {
        let p = paths("events = \"/items\"\nid = \"/id\"");
        for (body, want) in [
            (serde_json::json!({}), "/items: missing"),
            (
                serde_json::json!({"items": {}}),
                "/items: expected an array",
            ),
            (
                serde_json::json!({"items": [{"id": ""}]}),
                "/items/0/id: expected a non-empty",
            ),
            (
                serde_json::json!({"items": [{"id": "x"}, {}]}),
                "/items/1/id: missing",
            ),
            (
                serde_json::json!({"items": [{"id": {"a": 1}}]}),
                "found an object",
            ),
        ] {
            let e = parse("h", &p, &body).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        let bad: Result<Paths, _> = toml::from_str("id = \"id\"");
        assert!(bad.unwrap_err().to_string().contains("not a JSON pointer"));
    }
}
