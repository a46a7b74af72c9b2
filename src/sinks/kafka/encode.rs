//! From delivery to Kafka record: topic, key, value and the event headers.

use rdkafka::message::{Header, OwnedHeaders};

use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::sinks::{header_values, payload_template_name};

/// One delivery, ready to produce. The value borrows: the raw payload itself, or the batch's
/// encoding buffer (librdkafka copies a message when it is produced, so one buffer serves a
/// whole batch).
pub(super) struct Record<'a> {
    /// Rendered from the sink's `topic` template.
    pub topic: String,
    /// Rendered from the sink's `key` template, when it has one.
    pub key: Option<String>,
    /// The event, the raw payload or the rendered `payload_template`.
    pub value: &'a [u8],
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
    /// The encoder for sink `name`, whose templates `renderer` holds; `keyed` when the sink has
    /// a `key` template, `payload` its setting.
    pub fn new(name: &str, keyed: bool, payload: PayloadFormat, renderer: Renderer) -> Self {
        Encoder {
            renderer,
            topic: format!("sinks.{name}.topic"),
            key: keyed.then(|| format!("sinks.{name}.key")),
            payload,
            payload_template: payload_template_name(name),
        }
    }

    /// The topic, key and value for one event; `buf` is cleared and holds the value unless it
    /// is the raw payload.
    pub fn record<'a>(
        &self,
        event: &Event,
        payload: &'a str,
        buf: &'a mut Vec<u8>,
    ) -> Result<Record<'a>, RenderError> {
        let topic = self.renderer.render_event(&self.topic, event, payload)?;
        let key = match &self.key {
            Some(k) => Some(self.renderer.render_event(k, event, payload)?),
            None => None,
        };
        let value = match self.payload {
            PayloadFormat::Raw => payload.as_bytes(),
            format => {
                buf.clear();
                self.renderer
                    .encode_into(format, &self.payload_template, event, payload, buf)?;
                buf.as_slice()
            }
        };
        Ok(Record { topic, key, value })
    }
}

/// The Kafka headers consumers deduplicate and route by.
pub(super) fn headers(event: &Event) -> OwnedHeaders {
    let values = header_values(event);
    values.iter().fold(
        OwnedHeaders::new_with_capacity(values.len()),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}
