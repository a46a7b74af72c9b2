//! From delivery to AMQP message: routing key, body and properties.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::sinks::{event_headers, payload_template_name};

/// AMQP carries a routing key as a short string: at most 255 bytes.
const MAX_ROUTING_KEY: usize = 255;

/// One message ready to publish.
pub(super) struct Message {
    /// Rendered from the sink's `routing_key` template.
    pub routing_key: String,
    /// The event, the raw payload or the rendered `payload_template`.
    pub body: Vec<u8>,
    /// See [`message_properties`].
    pub properties: BasicProperties,
}

/// Renders a sink's deliveries into messages.
pub(super) struct Encoder {
    renderer: Renderer,
    routing_key: String,
    payload: PayloadFormat,
    payload_template: String,
}

impl Encoder {
    /// The encoder for sink `name`, whose templates `renderer` holds.
    pub fn new(name: &str, payload: PayloadFormat, renderer: Renderer) -> Self {
        Encoder {
            renderer,
            routing_key: format!("sinks.{name}.routing_key"),
            payload,
            payload_template: payload_template_name(name),
        }
    }

    /// The routing key, body and properties for one event, or why it cannot be sent.
    pub fn message(&self, event: &Event, payload: &str) -> Result<Message, String> {
        let message = self.render(event, payload).map_err(|e| e.to_string())?;
        if message.routing_key.len() > MAX_ROUTING_KEY {
            return Err(format!(
                "routing key is {} bytes; AMQP allows at most {MAX_ROUTING_KEY}",
                message.routing_key.len()
            ));
        }
        Ok(message)
    }

    /// The message as the templates render it (what `explain` shows), before AMQP's limits.
    pub fn render(&self, event: &Event, payload: &str) -> Result<Message, RenderError> {
        let routing_key = self
            .renderer
            .render_event(&self.routing_key, event, payload)?;
        let body = self
            .renderer
            .encode(self.payload, &self.payload_template, event, payload)?;
        let properties = message_properties(event, self.payload, &body);
        Ok(Message {
            routing_key,
            body,
            properties,
        })
    }
}

/// Persistent delivery, content type, message id = event id, timestamp and the event headers.
fn message_properties(event: &Event, format: PayloadFormat, body: &[u8]) -> BasicProperties {
    let content_type = match format {
        PayloadFormat::Event | PayloadFormat::Raw => "application/json",
        PayloadFormat::Template
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() =>
        {
            "application/json"
        }
        PayloadFormat::Template => "text/plain; charset=utf-8",
    };
    let mut headers = FieldTable::default();
    for (key, value) in event_headers(event) {
        headers.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    let accepted_ms = if event.accepted_at > 0 {
        event.accepted_at as u64
    } else {
        crate::clock::now_ms()
    };
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from(content_type))
        .with_message_id(ShortString::from(event.event_id.clone()))
        .with_timestamp(accepted_ms / 1000)
        .with_app_id(ShortString::from("hookbridge"))
        .with_headers(headers)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sinks::rabbitmq::RabbitMqConfig;

    /// An accepted portal event.
    pub(in crate::sinks::rabbitmq) fn event() -> Event {
        Event {
            event_id: "ab".repeat(16),
            operation: "delete".into(),
            id: "i1".into(),
            hook: "portal".into(),
            accepted_at: 1_700_000_123_456,
            ..crate::event::sample(1)
        }
    }

    /// A config with `url` and `routing_key`, everything else defaulted.
    pub(in crate::sinks::rabbitmq) fn config(url: &str, routing_key: &str) -> RabbitMqConfig {
        toml::from_str(&format!("url = {url:?}\nrouting_key = {routing_key:?}\n")).unwrap()
    }

    /// A renderer holding `config`'s templates as sink `audit`.
    pub(in crate::sinks::rabbitmq) fn renderer(config: &RabbitMqConfig) -> Renderer {
        let mut r = Renderer::new("templates".into());
        let problems = crate::sinks::registry::check_problems("audit", config, &mut r);
        assert!(problems.is_empty(), "{problems:?}");
        r
    }

    fn encoder(routing_key: &str) -> Encoder {
        let c = config("amqp://127.0.0.1:1/%2f", routing_key);
        Encoder::new("audit", c.payload, renderer(&c))
    }

    fn header(p: &BasicProperties, key: &str) -> String {
        match p.headers().as_ref().and_then(|h| h.inner().get(key)) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn properties_are_persistent_and_carry_the_event() {
        let p = message_properties(&event(), PayloadFormat::Event, b"{}");
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some("ab".repeat(16).as_str())
        );
        assert_eq!(*p.timestamp(), Some(1_700_000_123));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(header(&p, "event_id"), "ab".repeat(16));
        assert_eq!(header(&p, "hook"), "portal");
        assert_eq!(header(&p, "kind"), "portal");
        assert_eq!(header(&p, "source"), "item");
        assert_eq!(header(&p, "operation"), "delete");

        let text = message_properties(&event(), PayloadFormat::Template, b"item deleted");
        assert_eq!(
            text.content_type().as_ref().map(|s| s.as_str()),
            Some("text/plain; charset=utf-8")
        );
        let json = message_properties(&event(), PayloadFormat::Template, b"{\"a\": 1}");
        assert_eq!(
            json.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
    }

    #[test]
    fn messages_render_or_explain_why_not() {
        let s = encoder("{{ source }}.{{ operation }}");
        let m = s.message(&event(), "{}").unwrap();
        assert_eq!(m.routing_key, "item.delete");
        let body: Event = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body, event());

        let missing = encoder("{{ user }}");
        let err = missing.message(&event(), "{}").err().unwrap();
        assert!(err.contains("sinks.audit.routing_key"), "{err}");

        let long = encoder(&"x".repeat(300));
        let err = long.message(&event(), "{}").err().unwrap();
        assert!(err.contains("at most 255"), "{err}");
    }
}
