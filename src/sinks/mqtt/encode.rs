//! From delivery to MQTT message: the topic (every level an event value brings checked), the
//! body and the v5 properties (the event id as correlation data and a user property).
//!
//! An event value may not add levels nor make a wildcard: its `/`, `+`, `#` and control
//! characters (NUL among them) are marked before the template sees them, and a topic that
//! holds a mark is refused (the delivery is dead-lettered with the reason), never sent.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;

use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::sinks::{header_values, payload_template_name};

/// Where an event value put a `/` (the marks are private-use characters).
const SLASH: char = '\u{E000}';
/// Where an event value put a `+` or `#`.
const WILD: char = '\u{E001}';
/// Where an event value put a control character.
const CONTROL: char = '\u{E002}';

/// MQTT's limit on a topic's length, in bytes.
const MAX_TOPIC: usize = 65_535;

/// One message ready to publish.
pub(super) struct Message {
    /// Rendered from the sink's `topic` template.
    pub topic: String,
    /// The event, the raw payload or the rendered `payload_template`.
    pub body: Vec<u8>,
    /// Content type, correlation data (the event id) and the event headers as user properties.
    pub properties: PublishProperties,
}

/// Renders a sink's deliveries into messages.
pub(super) struct Encoder {
    renderer: Renderer,
    topic: String,
    payload: PayloadFormat,
    payload_template: String,
}

impl Encoder {
    /// The encoder for sink `name`, whose templates `renderer` holds.
    pub fn new(name: &str, payload: PayloadFormat, renderer: Renderer) -> Self {
        Encoder {
            renderer,
            topic: format!("sinks.{name}.topic"),
            payload,
            payload_template: payload_template_name(name),
        }
    }

    /// The message for one event, or why it cannot be sent (a hostile or empty topic level,
    /// a control character in a property, a template that fails).
    pub fn message(&self, event: &Event, payload: &str) -> Result<Message, String> {
        let topic = self
            .renderer
            .render_event_escaped(&self.topic, event, payload, mark)
            .map_err(|e| e.to_string())?;
        check_topic(&topic)?;
        if let Some((key, _)) = header_values(event)
            .into_iter()
            .find(|(_, v)| v.chars().any(char::is_control))
        {
            return Err(format!(
                "the event's {key} holds a control character: MQTT brokers refuse it in a user property; not sent"
            ));
        }
        let body = self
            .renderer
            .encode(self.payload, &self.payload_template, event, payload)
            .map_err(|e| e.to_string())?;
        Ok(Message {
            properties: properties(event, self.payload, &body),
            topic,
            body,
        })
    }

    /// The message as the templates render it, unchecked (what `explain` shows).
    pub fn render(&self, event: &Event, payload: &str) -> Result<Message, RenderError> {
        let topic = self.renderer.render_event(&self.topic, event, payload)?;
        let body = self
            .renderer
            .encode(self.payload, &self.payload_template, event, payload)?;
        Ok(Message {
            properties: properties(event, self.payload, &body),
            topic,
            body,
        })
    }
}

/// Content type, the event id as correlation data, and the event headers as user properties.
fn properties(event: &Event, format: PayloadFormat, body: &[u8]) -> PublishProperties {
    let content_type = match format {
        PayloadFormat::Event | PayloadFormat::Raw => "application/json",
        PayloadFormat::Template
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() =>
        {
            "application/json"
        }
        PayloadFormat::Template => "text/plain; charset=utf-8",
    };
    PublishProperties {
        content_type: Some(content_type.to_string()),
        correlation_data: Some(Bytes::from(event.event_id.clone())),
        user_properties: header_values(event)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// An event value as it goes into a topic: what MQTT would read as structure, marked.
fn mark(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '/' => SLASH,
            '+' | '#' => WILD,
            c if c.is_control() => CONTROL,
            c => c,
        })
        .collect()
}

/// Whether a rendered topic may be published to: no mark of a hostile event value, no empty
/// level, no wildcard, no `$` start (the broker's own topics).
pub(super) fn check_topic(topic: &str) -> Result<(), String> {
    let from_value = |what: &str| {
        Err(format!(
            "an event value would put {what} into the topic; values may not add levels or \
             wildcards; not sent"
        ))
    };
    if topic.contains(SLASH) {
        return from_value("a `/`");
    }
    if topic.contains(WILD) {
        return from_value("a wildcard (`+` or `#`)");
    }
    if topic.contains(CONTROL) {
        return from_value("a control character (NUL, a line break)");
    }
    if topic.is_empty() {
        return Err("the topic renders empty; not sent".into());
    }
    if topic.len() > MAX_TOPIC {
        return Err(format!(
            "the topic is {} bytes; MQTT allows at most {MAX_TOPIC}",
            topic.len()
        ));
    }
    if topic.starts_with('$') {
        return Err(format!(
            "the topic {topic:?} starts with `$`, kept for the broker's own topics"
        ));
    }
    if topic.split('/').any(str::is_empty) {
        return Err(format!(
            "the topic {topic:?} has an empty level (an empty event value?); not sent"
        ));
    }
    if topic.contains(['+', '#']) || topic.chars().any(char::is_control) {
        return Err(format!(
            "the topic {topic:?} has a wildcard or a control character"
        ));
    }
    Ok(())
}

/// What is wrong with the template's own text as a topic (an empty level, a wildcard), if
/// anything: the text outside its tags is checked.
pub(super) fn template_problem(template: &str) -> Option<String> {
    let mut literal = String::new();
    let mut rest = template;
    while !rest.is_empty() {
        let end = if rest.starts_with("{{") {
            Some("}}")
        } else if rest.starts_with("{%") {
            Some("%}")
        } else if rest.starts_with("{#") {
            Some("#}")
        } else {
            None
        };
        match end {
            Some(end) => {
                // A tag stands for a value: a non-empty level part.
                literal.push('x');
                rest = rest[2..].find(end).map_or("", |i| &rest[2 + i + 2..]);
            }
            None => {
                let c = rest.chars().next().unwrap_or_default();
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if literal.contains(['+', '#']) {
        return Some("a topic to publish to may not hold a wildcard (`+`, `#`)".into());
    }
    if literal.starts_with('$') {
        return Some("a topic starting with `$` is the broker's own".into());
    }
    if literal.split('/').any(str::is_empty) {
        return Some("the topic would have an empty level (a `/` at an end, or `//`)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::mqtt::config::tests::{config, renderer};

    fn encoder(lines: &str) -> Encoder {
        let c = config(lines);
        Encoder::new("bus", c.payload, renderer(&c))
    }

    fn event(operation: &str) -> Event {
        Event {
            operation: operation.into(),
            ..crate::event::sample(1)
        }
    }

    #[test]
    fn topics_render_with_properties() {
        let m = encoder("").message(&event("update"), "{}").unwrap();
        assert_eq!(m.topic, "arcgis/portal/update");
        let id = crate::event::sample(1).event_id;
        assert_eq!(
            m.properties.correlation_data.as_deref(),
            Some(id.as_bytes())
        );
        assert!(
            m.properties
                .user_properties
                .contains(&("event_id".into(), id.clone()))
        );
        assert!(
            m.properties
                .user_properties
                .contains(&("operation".into(), "update".into()))
        );
        assert_eq!(
            m.properties.content_type.as_deref(),
            Some("application/json")
        );
    }

    #[test]
    fn hostile_values_are_refused_with_a_reason() {
        let e = encoder("");
        for (value, says) in [
            ("a/b", "`/`"),
            ("+", "wildcard"),
            ("#", "wildcard"),
            ("a\u{0}b", "control"),
            ("", "empty level"),
        ] {
            let err = e.message(&event(value), "{}").err().unwrap();
            assert!(err.contains(says), "{value:?}: {err}");
        }
        // A space is a fine topic character in MQTT.
        assert!(e.message(&event("a b"), "{}").is_ok());
        assert!(template_problem("arcgis/{{ kind }}/{{ operation }}").is_none());
        assert!(template_problem("/a/{{ kind }}").is_some());
        assert!(template_problem("$SYS/{{ kind }}").is_some());
        assert!(template_problem("a/+/{{ kind }}").is_some());
    }
}
