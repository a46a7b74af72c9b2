//! From delivery to Kafka record: topic, key, value and the event headers.

use rdkafka::message::{Header, OwnedHeaders};

use super::KafkaConfig;
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::sinks::{event_headers, payload_template_name};

/// One delivery, ready to produce.
pub(super) struct Record {
    /// Rendered from the sink's `topic` template.
    pub topic: String,
    /// Rendered from the sink's `key` template, when it has one.
    pub key: Option<String>,
    /// The event, the raw payload or the rendered `payload_template`.
    pub value: Vec<u8>,
}

/// Renders a sink's deliveries into records.
pub(super) struct Encoder {
    renderer: Renderer,
    topic: String,
    key: Option<String>,
    payload: PayloadFormat,
    payload_template: String,
}

impl Encoder {
    /// The encoder for sink `name`, whose templates `renderer` holds.
    pub fn new(name: &str, config: &KafkaConfig, renderer: Renderer) -> Self {
        Encoder {
            renderer,
            topic: format!("sinks.{name}.topic"),
            key: config.key.as_ref().map(|_| format!("sinks.{name}.key")),
            payload: config.payload,
            payload_template: payload_template_name(name),
        }
    }

    /// The topic, key and value for one event.
    pub fn record(&self, event: &Event, payload: &str) -> Result<Record, RenderError> {
        let topic = self.renderer.render_event(&self.topic, event, payload)?;
        let key = match &self.key {
            Some(k) => Some(self.renderer.render_event(k, event, payload)?),
            None => None,
        };
        let value = self
            .renderer
            .encode(self.payload, &self.payload_template, event, payload)?;
        Ok(Record { topic, key, value })
    }
}

/// The Kafka headers consumers deduplicate and route by.
pub(super) fn headers(event: &Event) -> OwnedHeaders {
    event_headers(event)
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}
