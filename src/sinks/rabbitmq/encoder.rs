//! From delivery to AMQP message, and from the broker's confirm back to an outcome.

use lapin::BasicProperties;
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::event::Event;
use crate::render::{PayloadFormat, Renderer};
use crate::sinks::{Delivery, Outcome, event_headers, payload_template_name};

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

    /// The routing key, body and properties for one delivery, or why it cannot be sent.
    pub fn message(&self, d: &Delivery) -> Result<Message, String> {
        let routing_key = self
            .renderer
            .render_event(&self.routing_key, &d.event, &d.payload)
            .map_err(|e| e.to_string())?;
        if routing_key.len() > MAX_ROUTING_KEY {
            return Err(format!(
                "routing key is {} bytes; AMQP allows at most {MAX_ROUTING_KEY}",
                routing_key.len()
            ));
        }
        let body = self
            .renderer
            .encode(self.payload, &self.payload_template, &d.event, &d.payload)
            .map_err(|e| e.to_string())?;
        let properties = message_properties(&d.event, self.payload, &body);
        Ok(Message {
            routing_key,
            body,
            properties,
        })
    }
}

/// What the broker's answer to one publish means for the delivery.
pub(super) fn confirmation_outcome(confirmation: Confirmation) -> Outcome {
    match confirmation {
        Confirmation::Ack(None) => Outcome::Delivered,
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Outcome::Reject(returned_reason(
                returned.reply_code,
                returned.reply_text.as_str(),
                returned.delivery.exchange.as_str(),
                returned.delivery.routing_key.as_str(),
            ))
        }
        Confirmation::Nack(None) => Outcome::Retry("the broker refused the message (nack)".into()),
        Confirmation::NotRequested => {
            Outcome::Retry("the channel is not in confirm mode; not counted as sent".into())
        }
    }
}

/// The `hookbridge_sink_errors_total` kind of a confirm that is not a plain ack.
pub(super) fn confirmation_error_kind(confirmation: &Confirmation) -> Option<&'static str> {
    match confirmation {
        Confirmation::Ack(None) => None,
        Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Some("unroutable"),
        Confirmation::Nack(None) => Some("nack"),
        Confirmation::NotRequested => Some("unconfirmed"),
    }
}

/// The dead-letter reason for a message the broker returned as unroutable.
fn returned_reason(code: u16, text: &str, exchange: &str, routing_key: &str) -> String {
    let exchange = if exchange.is_empty() {
        "(default)"
    } else {
        exchange
    };
    format!(
        "unroutable: the broker returned it with {code} {text} \
         (exchange {exchange}, routing key {routing_key:?})"
    )
}

/// Persistent delivery, content type, message id = event id, timestamp and the event headers.
pub fn message_properties(event: &Event, format: PayloadFormat, body: &[u8]) -> BasicProperties {
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
    use std::sync::Arc;

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
        let mut problems = vec![];
        config.register_templates("audit", &mut r, &mut problems);
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
    fn confirmations_map_to_outcomes() {
        assert_eq!(
            confirmation_outcome(Confirmation::Ack(None)),
            Outcome::Delivered
        );
        assert!(matches!(
            confirmation_outcome(Confirmation::Nack(None)),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            confirmation_outcome(Confirmation::NotRequested),
            Outcome::Retry(_)
        ));
        let reason = returned_reason(312, "NO_ROUTE", "", "item.delete");
        assert!(reason.contains("312 NO_ROUTE"), "{reason}");
        assert!(reason.contains("(default)"), "{reason}");
    }

    #[test]
    fn messages_render_or_explain_why_not() {
        let s = encoder("{{ source }}.{{ operation }}");
        let d = Delivery {
            seq: 1,
            attempts: 0,
            event: event(),
            payload: Arc::from("{}"),
        };
        let m = s.message(&d).unwrap();
        assert_eq!(m.routing_key, "item.delete");
        let body: Event = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body, event());

        let missing = encoder("{{ user }}");
        let err = missing.message(&d).err().unwrap();
        assert!(err.contains("sinks.audit.routing_key"), "{err}");

        let long = encoder(&"x".repeat(300));
        let err = long.message(&d).err().unwrap();
        assert!(err.contains("at most 255"), "{err}");
    }
}
