//! Where events go: the `Sink` trait, and the registry of sink types (one file each).

pub mod email;
pub mod file;
pub mod http;
pub mod kafka;
pub mod rabbitmq;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::event::Event;
use crate::problem::{Problem, table_into};
use crate::render::{RenderError, Renderer};
use crate::retry::RetryConfig;

/// One event due at one sink, as the dispatcher hands it over.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event's queue sequence number (unique, stable across restarts).
    pub seq: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The event.
    pub event: Event,
    /// The ArcGIS payload's JSON text the event came in.
    pub payload: Arc<str>,
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination confirmed it; the delivery row can go.
    Delivered,
    /// A transient failure: try again after a backoff (counts as an attempt).
    Retry(String),
    /// A transient failure whose destination asked for a wait (HTTP `Retry-After`): try again
    /// after the backoff or that wait, whichever is longer, but never past the policy's `max`.
    RetryAfter(String, Duration),
    /// The destination refused it for good: dead-letter it with this reason.
    Reject(String),
}

/// A sink-wide failure: nothing in the batch was sent, and attempts are not counted.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination cannot be reached; the dispatcher backs off and tries again.
    #[error("{0}")]
    Unavailable(String),
    /// The sink's settings cannot work (bad URL, unknown template).
    #[error("invalid sink configuration: {0}")]
    Config(String),
}

/// A destination for events. Implementations live one per file in this module.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Connects (or checks the destination) once at start; `/readyz` waits for this.
    async fn connect(&self) -> Result<(), SinkError>;

    /// Sends a batch; returns one outcome per delivery, in order.
    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError>;

    /// When set, the dispatcher leaves the batch queued until this epoch-ms time, then takes
    /// it again (with whatever joined it): how a digest collects a window's events.
    fn hold_until(&self, _batch: &[Delivery]) -> Option<u64> {
        None
    }

    /// Largest batch the dispatcher should hand over at once.
    fn max_batch(&self) -> usize {
        128
    }

    /// How many batches may be on their way at once: more than one lets a broker's acks for
    /// one batch overlap with publishing the next. Sends must then be safe to run concurrently.
    fn max_in_flight(&self) -> usize {
        1
    }
}

/// A sink's type-specific settings.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// JSON lines in a local file.
    File(file::FileConfig),
    /// Apache Kafka through rdkafka.
    Kafka(kafka::KafkaConfig),
    /// RabbitMQ through lapin.
    RabbitMq(rabbitmq::RabbitMqConfig),
    /// Templated mail through lettre.
    Email(email::EmailConfig),
    /// Requests to an HTTP receiver through reqwest.
    Http(http::HttpConfig),
}

/// The `type` values, for error messages.
const TYPES: &str = "file, kafka, rabbitmq, email, http";

impl SinkConfig {
    /// Parses `[sinks.NAME]`: its `type`, its optional `retry`, and the type's own keys.
    pub fn from_table(
        name: &str,
        mut table: toml::Table,
        base: &Path,
        defaults: &RetryConfig,
    ) -> Result<(SinkConfig, RetryConfig), Vec<Problem>> {
        let key = format!("sinks.{name}");
        let retry = match table.remove("retry") {
            Some(toml::Value::Table(t)) => table_into::<RetryConfig>(t, &format!("{key}.retry"))?,
            Some(_) => {
                return Err(vec![Problem::new(
                    format!("{key}.retry"),
                    "expected a table",
                )]);
            }
            None => *defaults,
        };
        let kind = match table.remove("type") {
            Some(toml::Value::String(s)) => s,
            Some(_) => {
                return Err(vec![Problem::new(
                    format!("{key}.type"),
                    "expected a string",
                )]);
            }
            None => {
                return Err(vec![Problem::new(
                    format!("{key}.type"),
                    format!("missing; expected one of {TYPES}"),
                )]);
            }
        };
        let config = match kind.as_str() {
            "file" => {
                let mut c: file::FileConfig = table_into(table, &key)?;
                c.path = base.join(&c.path);
                SinkConfig::File(c)
            }
            "kafka" => SinkConfig::Kafka(table_into(table, &key)?),
            "rabbitmq" => SinkConfig::RabbitMq(table_into(table, &key)?),
            "email" => SinkConfig::Email(table_into(table, &key)?),
            "http" => {
                let mut c: http::HttpConfig = table_into(table, &key)?;
                c.ca = c.ca.map(|ca| base.join(ca));
                SinkConfig::Http(c)
            }
            other => {
                return Err(vec![Problem::new(
                    format!("{key}.type"),
                    format!("unknown sink type {other:?}; expected one of {TYPES}"),
                )]);
            }
        };
        Ok((config, retry))
    }

    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::File(_) => "file",
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::RabbitMq(_) => "rabbitmq",
            SinkConfig::Email(_) => "email",
            SinkConfig::Http(_) => "http",
        }
    }

    /// Compiles the sink's templates into `renderer`, recording problems under `sinks.NAME`.
    pub fn register_templates(
        &self,
        name: &str,
        renderer: &mut Renderer,
        problems: &mut Vec<Problem>,
    ) {
        match self {
            SinkConfig::File(c) => c.register_templates(name, renderer, problems),
            SinkConfig::Kafka(c) => c.register_templates(name, renderer, problems),
            SinkConfig::RabbitMq(c) => c.register_templates(name, renderer, problems),
            SinkConfig::Email(c) => c.register_templates(name, renderer, problems),
            SinkConfig::Http(c) => c.check(name, renderer, problems),
        }
    }

    /// What this sink would send for `event`, for `hookbridge explain`.
    pub fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<serde_json::Value, RenderError> {
        match self {
            SinkConfig::File(c) => c.preview(name, r, event, payload),
            SinkConfig::Kafka(c) => c.preview(name, r, event, payload),
            SinkConfig::RabbitMq(c) => c.preview(name, r, event, payload),
            SinkConfig::Email(c) => c.preview(name, r, event, payload),
            SinkConfig::Http(c) => c.preview(name, r, event, payload),
        }
    }

    /// Builds the running sink, or `None` for a type whose sending is not available in this build.
    pub fn build(
        &self,
        name: &str,
        renderer: &Renderer,
    ) -> Result<Option<Arc<dyn Sink>>, SinkError> {
        match self {
            SinkConfig::File(c) => Ok(Some(Arc::new(file::FileSink::new(
                name,
                c.clone(),
                renderer.clone(),
            )))),
            SinkConfig::Kafka(c) => c.build(name, renderer),
            SinkConfig::RabbitMq(c) => c.build(name, renderer),
            SinkConfig::Email(c) => c.build(name, renderer),
            SinkConfig::Http(c) => Ok(Some(c.build(name, renderer)?)),
        }
    }
}

/// The headers every broker message carries, so consumers can route and deduplicate.
pub fn event_headers(event: &Event) -> Vec<(&'static str, String)> {
    vec![
        ("event_id", event.event_id.clone()),
        ("hook", event.hook.clone()),
        ("kind", event.kind.as_str().to_string()),
        ("source", event.source.clone()),
        ("operation", event.operation.clone()),
    ]
}

/// A message body for display: JSON when it parses, text otherwise.
pub(crate) fn body_for_display(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(body).into_owned()))
}

/// Registers a sink's `payload_template` when `payload = "template"`.
pub(crate) fn register_payload_template(
    name: &str,
    format: crate::render::PayloadFormat,
    template: Option<&str>,
    renderer: &mut Renderer,
    problems: &mut Vec<Problem>,
) {
    use crate::render::PayloadFormat;
    let key = format!("sinks.{name}.payload_template");
    match (format, template) {
        (PayloadFormat::Template, Some(t)) => {
            renderer.add_inline(&payload_template_name(name), t, &key, problems)
        }
        (PayloadFormat::Template, None) => problems.push(Problem::new(
            key,
            "payload = \"template\" needs a payload_template",
        )),
        (_, Some(_)) => problems.push(Problem::new(
            key,
            "set payload = \"template\" to use a payload_template",
        )),
        (_, None) => {}
    }
}

/// The renderer name of a sink's payload template.
pub(crate) fn payload_template_name(sink: &str) -> String {
    format!("sinks.{sink}.payload_template")
}
