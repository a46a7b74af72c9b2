//! Kafka sink (rdkafka): topic and key from templates, acknowledged by the brokers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use serde_json::{Value, json};

use super::{
    Sink, SinkError, body_for_display, event_headers, payload_template_name,
    register_payload_template,
};
use crate::config::Problem;
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};

/// `[sinks.NAME]` with `type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// Topic template, e.g. `arcgis.{{ kind }}.{{ operation }}`.
    pub topic: String,
    /// Message key template; no key when absent.
    pub key: Option<String>,
    /// Any librdkafka producer property (SASL, TLS, compression).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// What the message value holds.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Tera template for the value when `payload = "template"`.
    pub payload_template: Option<String>,
    /// How long a send may wait for the brokers' acknowledgement.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub send_timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl KafkaConfig {
    pub(super) fn register_templates(&self, name: &str, r: &mut Renderer, p: &mut Vec<Problem>) {
        if self.brokers.trim().is_empty() {
            p.push(Problem::new(
                format!("sinks.{name}.brokers"),
                "is empty; expected host:port[,host:port]",
            ));
        }
        r.add_inline(
            &format!("sinks.{name}.topic"),
            &self.topic,
            &format!("sinks.{name}.topic"),
            p,
        );
        if let Some(k) = &self.key {
            r.add_inline(
                &format!("sinks.{name}.key"),
                k,
                &format!("sinks.{name}.key"),
                p,
            );
        }
        register_payload_template(name, self.payload, self.payload_template.as_deref(), r, p);
    }

    pub(super) fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let topic = r.render_event(&format!("sinks.{name}.topic"), event, payload)?;
        let key = match &self.key {
            Some(_) => Some(r.render_event(&format!("sinks.{name}.key"), event, payload)?),
            None => None,
        };
        let value = r.encode(self.payload, &payload_template_name(name), event, payload)?;
        let headers: BTreeMap<_, _> = event_headers(event).into_iter().collect();
        Ok(
            json!({ "topic": topic, "key": key, "headers": headers, "value": body_for_display(&value) }),
        )
    }

    /// Sending to Kafka is not in this build yet: deliveries wait in the queue.
    pub(super) fn build(
        &self,
        _name: &str,
        _r: &Renderer,
    ) -> Result<Option<Arc<dyn Sink>>, SinkError> {
        Ok(None)
    }
}
