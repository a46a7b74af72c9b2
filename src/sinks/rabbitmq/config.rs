//! `[sinks.NAME]` with `type = "rabbitmq"`: where and how messages are published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::Encoder;
use super::send::{Publishing, RabbitMqSink};
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::secret::Secret;
use crate::sinks::{
    Check, Sink, SinkError, SinkType, body_for_display, check_payload_template, event_headers,
};

/// The RabbitMQ sink's settings.
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
    #[serde(
        default = "default_timeout",
        with = "humantime_serde",
        alias = "confirm_timeout"
    )]
    pub timeout: Duration,
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

impl SinkType for RabbitMqConfig {
    const NAME: &'static str = "rabbitmq";

    fn check(&self, check: &mut Check<'_>) {
        let url = self.url.expose();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            check.problem("url", "expected an amqp:// or amqps:// URL");
        }
        if !["direct", "fanout", "topic", "headers"].contains(&self.exchange_type.as_str()) {
            check.problem(
                "exchange_type",
                format!(
                    "unknown exchange type {:?}; expected direct, fanout, topic or headers",
                    self.exchange_type
                ),
            );
        }
        check.template("routing_key", &self.routing_key);
        check_payload_template(check, self.payload, self.payload_template.as_deref());
    }

    fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let message = Encoder::new(name, self.payload, r.clone()).render(event, payload)?;
        let headers: BTreeMap<_, _> = event_headers(event).into_iter().collect();
        let properties = &message.properties;
        Ok(json!({
            "exchange": self.exchange,
            "routing_key": message.routing_key,
            "mandatory": self.mandatory,
            "delivery_mode": properties.delivery_mode(),
            "content_type": properties.content_type().as_ref().map(|c| c.as_str()),
            "message_id": event.event_id,
            "headers": headers,
            "body": body_for_display(&message.body),
        }))
    }

    /// The running sink: it connects on `connect` and publishes with confirms.
    fn build(&self, name: &str, r: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        let encoder = Encoder::new(name, self.payload, r.clone());
        Ok(Arc::new(RabbitMqSink::new(
            name,
            self.publishing(),
            encoder,
        )))
    }
}

impl RabbitMqConfig {
    /// Where and how the running sink publishes.
    fn publishing(&self) -> Publishing {
        Publishing {
            url: self.url.clone(),
            exchange: self.exchange.clone(),
            exchange_type: self.exchange_type.clone(),
            declare: self.declare,
            mandatory: self.mandatory,
            timeout: self.timeout,
        }
    }
}
