//! RabbitMQ sink (lapin): persistent messages with publisher confirms.
//!
//! `mod.rs` holds the configuration, `encoder.rs` turns a delivery into an AMQP message and a
//! confirm into an outcome, `sink.rs` owns the connection and publishes batches.

mod encoder;
mod sink;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Sink, SinkError, body_for_display, event_headers, payload_template_name,
    register_payload_template,
};
use crate::event::Event;
use crate::problem::Problem;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::secret::Secret;

pub use encoder::message_properties;
pub use sink::RabbitMqSink;

/// `[sinks.NAME]` with `type = "rabbitmq"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitMqConfig {
    /// AMQP URL; it may hold a password, so it is a secret (`env:`/`file:` work).
    pub url: Secret,
    /// Exchange to publish to; the default exchange when empty.
    #[serde(default)]
    pub exchange: String,
    /// Exchange type used when declaring it.
    #[serde(default = "default_exchange_type")]
    pub exchange_type: String,
    /// Declare the exchange (true) or only check that it exists (false).
    #[serde(default = "yes")]
    pub declare: bool,
    /// Routing key template, e.g. `{{ source }}.{{ operation }}`.
    pub routing_key: String,
    /// Publish as mandatory: an unroutable message becomes a dead letter.
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// What the message body holds.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Tera template for the body when `payload = "template"`.
    pub payload_template: Option<String>,
    /// How long a publish may wait for the broker's confirm.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub confirm_timeout: Duration,
}

fn default_exchange_type() -> String {
    "topic".into()
}
fn yes() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl RabbitMqConfig {
    pub(super) fn register_templates(&self, name: &str, r: &mut Renderer, p: &mut Vec<Problem>) {
        let url = self.url.expose();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            p.push(Problem::new(
                format!("sinks.{name}.url"),
                "expected an amqp:// or amqps:// URL",
            ));
        }
        if !["direct", "fanout", "topic", "headers"].contains(&self.exchange_type.as_str()) {
            p.push(Problem::new(
                format!("sinks.{name}.exchange_type"),
                format!(
                    "unknown exchange type {:?}; expected direct, fanout, topic or headers",
                    self.exchange_type
                ),
            ));
        }
        let key = format!("sinks.{name}.routing_key");
        r.add_inline(&key, &self.routing_key, &key, p);
        register_payload_template(name, self.payload, self.payload_template.as_deref(), r, p);
    }

    pub(super) fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let routing_key = r.render_event(&format!("sinks.{name}.routing_key"), event, payload)?;
        let body = r.encode(self.payload, &payload_template_name(name), event, payload)?;
        let headers: BTreeMap<_, _> = event_headers(event).into_iter().collect();
        let properties = message_properties(event, self.payload, &body);
        Ok(json!({
            "exchange": self.exchange,
            "routing_key": routing_key,
            "mandatory": self.mandatory,
            "delivery_mode": properties.delivery_mode(),
            "content_type": properties.content_type().as_ref().map(|c| c.as_str()),
            "message_id": event.event_id,
            "headers": headers,
            "body": body_for_display(&body),
        }))
    }

    /// The running sink: it connects on `connect` and publishes with confirms.
    pub(super) fn build(
        &self,
        name: &str,
        r: &Renderer,
    ) -> Result<Option<Arc<dyn Sink>>, SinkError> {
        Ok(Some(Arc::new(RabbitMqSink::new(
            name,
            self.clone(),
            r.clone(),
        ))))
    }
}
