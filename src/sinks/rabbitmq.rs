//! RabbitMQ sink (lapin): persistent messages with publisher confirms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout, timeout_at};

use super::{
    Delivery, Outcome, Sink, SinkError, body_for_display, event_headers, payload_template_name,
    register_payload_template,
};
use crate::config::{Problem, Secret};
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};

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
        Ok(json!({
            "exchange": self.exchange,
            "routing_key": routing_key,
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

/// How long opening the connection and channel, and declaring the exchange, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// AMQP carries a routing key as a short string: at most 255 bytes.
const MAX_ROUTING_KEY: usize = 255;

/// An open connection with a channel in confirm mode.
struct Link {
    connection: Connection,
    channel: Channel,
}

impl Link {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    fn close_in_background(self) {
        close_in_background(self.connection);
    }
}

/// Closes a connection without making the caller wait for a broker that may be gone.
fn close_in_background(connection: Connection) {
    tokio::spawn(async move {
        let _ = timeout(
            Duration::from_secs(5),
            connection.close(200, "hookbridge reconnects"),
        )
        .await;
    });
}

/// One message ready to publish.
struct Message {
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
}

/// Publishes each delivery as a persistent message and counts it done only on the broker's ack.
pub struct RabbitMqSink {
    name: String,
    config: RabbitMqConfig,
    routing_key: String,
    payload_template: String,
    renderer: Renderer,
    /// The current connection; `None` or closed means reconnect before the next publish.
    /// One dispatcher drives a sink, so holding the lock for a whole batch costs nothing.
    link: Mutex<Option<Link>>,
}

impl RabbitMqSink {
    /// A sink for `config`; the connection is opened on `connect` or the first `send`.
    pub fn new(name: &str, config: RabbitMqConfig, renderer: Renderer) -> Self {
        RabbitMqSink {
            name: name.to_string(),
            routing_key: format!("sinks.{name}.routing_key"),
            payload_template: payload_template_name(name),
            config,
            renderer,
            link: Mutex::new(None),
        }
    }

    /// The URL without its password, for logs and errors.
    fn url_for_display(&self) -> String {
        redacted(self.config.url.expose())
    }

    /// The link in `slot`, opened again if there is none or the broker dropped it.
    async fn ensure<'a>(&self, slot: &'a mut Option<Link>) -> Result<&'a Link, SinkError> {
        if !slot.as_ref().is_some_and(Link::is_open) {
            if let Some(old) = slot.take() {
                old.close_in_background();
            }
            let link = timeout(CONNECT_TIMEOUT, self.open()).await.map_err(|_| {
                SinkError::Unavailable(format!(
                    "connecting to {} took longer than {CONNECT_TIMEOUT:?}",
                    self.url_for_display()
                ))
            })??;
            tracing::info!(sink = %self.name, url = %self.url_for_display(), exchange = %self.config.exchange, "connected to RabbitMQ");
            *slot = Some(link);
        }
        slot.as_ref()
            .ok_or_else(|| SinkError::Unavailable("no connection".into()))
    }

    /// Connects, opens a confirm-mode channel, and declares or checks the exchange.
    async fn open(&self) -> Result<Link, SinkError> {
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name(format!("hookbridge sink {}", self.name).into());
        let connection = Connection::connect(self.config.url.expose(), properties)
            .await
            .map_err(|e| {
                SinkError::Unavailable(format!("connect to {}: {e}", self.url_for_display()))
            })?;
        match self.prepare(&connection).await {
            Ok(channel) => Ok(Link {
                connection,
                channel,
            }),
            Err(e) => {
                close_in_background(connection);
                Err(e)
            }
        }
    }

    async fn prepare(&self, connection: &Connection) -> Result<Channel, SinkError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| SinkError::Unavailable(format!("open a channel: {e}")))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| SinkError::Unavailable(format!("enable publisher confirms: {e}")))?;
        let exchange = &self.config.exchange;
        if exchange.is_empty() {
            return Ok(channel);
        }
        let options = ExchangeDeclareOptions {
            passive: !self.config.declare,
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                exchange,
                exchange_kind(&self.config.exchange_type),
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                if self.config.declare {
                    SinkError::Unavailable(format!("declare exchange {exchange:?}: {e}"))
                } else {
                    SinkError::Unavailable(format!(
                        "exchange {exchange:?} is expected to exist (declare = false): {e}"
                    ))
                }
            })?;
        Ok(channel)
    }

    /// The routing key, body and properties for one delivery, or why it cannot be sent.
    fn message(&self, d: &Delivery) -> Result<Message, String> {
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
            .encode(
                self.config.payload,
                &self.payload_template,
                &d.event,
                &d.payload,
            )
            .map_err(|e| e.to_string())?;
        let properties = message_properties(&d.event, self.config.payload, &body);
        Ok(Message {
            routing_key,
            body,
            properties,
        })
    }
}

#[async_trait]
impl Sink for RabbitMqSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let mut slot = self.link.lock().await;
        self.ensure(&mut slot).await.map(|_| ())
    }

    /// Publishes the whole batch, then collects the confirms, all within `confirm_timeout`.
    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let mut slot = self.link.lock().await;
        let channel = self.ensure(&mut slot).await?.channel.clone();
        let deadline = Instant::now() + self.config.confirm_timeout;
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            immediate: false,
        };
        // Why the link failed mid-batch; from then on nothing more is published.
        let mut broken: Option<String> = None;
        let mut steps: Vec<Result<Step, String>> = Vec::with_capacity(batch.len());
        for d in batch {
            if let Some(reason) = &broken {
                steps.push(Err(reason.clone()));
                continue;
            }
            let message = match self.message(d) {
                Ok(m) => m,
                Err(reason) => {
                    steps.push(Ok(Step::Done(Outcome::Reject(reason))));
                    continue;
                }
            };
            let publish = channel.basic_publish(
                &self.config.exchange,
                &message.routing_key,
                options,
                &message.body,
                message.properties,
            );
            match timeout_at(deadline, publish).await {
                Ok(Ok(confirm)) => steps.push(Ok(Step::Published(Box::new(confirm)))),
                Ok(Err(e)) => {
                    let reason = format!("publish: {e}");
                    broken = Some(reason.clone());
                    steps.push(Err(reason));
                }
                Err(_) => {
                    let reason = format!(
                        "publishing took longer than {:?}",
                        self.config.confirm_timeout
                    );
                    broken = Some(reason.clone());
                    steps.push(Err(reason));
                }
            }
        }
        // Whether the broker answered for any message: if not, the batch as a whole failed.
        let mut heard = false;
        let mut results: Vec<Result<Outcome, String>> = Vec::with_capacity(batch.len());
        for step in steps {
            let result = match step {
                Ok(Step::Done(outcome)) => Ok(outcome),
                Ok(Step::Published(confirm)) => match timeout_at(deadline, *confirm).await {
                    Ok(Ok(confirmation)) => {
                        heard = true;
                        Ok(confirmation_outcome(confirmation))
                    }
                    Ok(Err(e)) => {
                        let reason = format!("waiting for the confirm: {e}");
                        broken.get_or_insert_with(|| reason.clone());
                        Err(reason)
                    }
                    Err(_) => {
                        let reason = format!("no confirm within {:?}", self.config.confirm_timeout);
                        broken.get_or_insert_with(|| reason.clone());
                        Err(reason)
                    }
                },
                Err(reason) => Err(reason),
            };
            results.push(result);
        }
        if let Some(reason) = broken {
            // Start afresh next time: the channel's confirm sequence can no longer be trusted.
            if let Some(old) = slot.take() {
                old.close_in_background();
            }
            tracing::warn!(sink = %self.name, error = %reason, "RabbitMQ connection lost; will reconnect");
            if !heard {
                return Err(SinkError::Unavailable(reason));
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(Outcome::Retry))
            .collect())
    }
}

/// One delivery on its way through a batch.
enum Step {
    /// Decided before publishing (a template failed).
    Done(Outcome),
    /// Published; the broker's confirm is awaited.
    Published(Box<PublisherConfirm>),
}

/// What the broker's answer to one publish means for the delivery.
fn confirmation_outcome(confirmation: Confirmation) -> Outcome {
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

/// The AMQP exchange type for a validated `exchange_type`.
fn exchange_kind(name: &str) -> ExchangeKind {
    match name {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        "topic" => ExchangeKind::Topic,
        other => ExchangeKind::Custom(other.to_string()),
    }
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
        crate::queue::now_ms()
    };
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from(content_type))
        .with_message_id(ShortString::from(event.event_id.clone()))
        .with_timestamp(accepted_ms / 1000)
        .with_app_id(ShortString::from("hookbridge"))
        .with_headers(headers)
}

/// `url` with any password replaced, so that it can be logged.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn event() -> Event {
        Event {
            event_id: "ab".repeat(16),
            kind: EventKind::Portal,
            source: "item".into(),
            operation: "delete".into(),
            id: "i1".into(),
            webhook: None,
            user: None,
            when: None,
            portal: None,
            properties: Default::default(),
            hook: "portal".into(),
            accepted_at: 1_700_000_123_456,
        }
    }

    fn config(url: &str, routing_key: &str) -> RabbitMqConfig {
        toml::from_str(&format!("url = {url:?}\nrouting_key = {routing_key:?}\n")).unwrap()
    }

    fn sink(config: RabbitMqConfig) -> RabbitMqSink {
        let mut r = Renderer::new("templates".into());
        let mut problems = vec![];
        config.register_templates("audit", &mut r, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        RabbitMqSink::new("audit", config, r)
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
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("amqp://guest:s3cret@broker:5672/%2f"),
            "amqp://guest:***@broker:5672/%2f"
        );
        assert_eq!(redacted("amqp://broker/vh"), "amqp://broker/vh");
    }

    #[test]
    fn messages_render_or_explain_why_not() {
        let s = sink(config(
            "amqp://127.0.0.1:1/%2f",
            "{{ source }}.{{ operation }}",
        ));
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

        let missing = sink(config("amqp://127.0.0.1:1/%2f", "{{ user }}"));
        let err = missing.message(&d).err().unwrap();
        assert!(err.contains("sinks.audit.routing_key"), "{err}");

        let long = sink(config("amqp://127.0.0.1:1/%2f", &"x".repeat(300)));
        let err = long.message(&d).err().unwrap();
        assert!(err.contains("at most 255"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_unavailable_not_a_failed_delivery() {
        // Port 1 on loopback refuses connections.
        let s = sink(config("amqp://guest:s3cret@127.0.0.1:1/%2f", "k"));
        let err = s.connect().await.err().unwrap();
        assert!(matches!(err, SinkError::Unavailable(_)), "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let d = Delivery {
            seq: 1,
            attempts: 0,
            event: event(),
            payload: Arc::from("{}"),
        };
        assert!(matches!(s.send(&[d]).await, Err(SinkError::Unavailable(_))));
    }
}
