//! The connection to the broker, and publishing a batch with confirms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::publisher_confirm::PublisherConfirm;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout, timeout_at};

use super::RabbitMqConfig;
use super::encoder::{Encoder, Message, confirmation_error_kind, confirmation_outcome};
use crate::metrics::METRICS;
use crate::render::Renderer;
use crate::sinks::{Delivery, Outcome, Sink, SinkError};

/// How long opening the connection and channel, and declaring the exchange, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// An open connection with a channel in confirm mode.
struct Link {
    connection: Connection,
    channel: Channel,
    /// Which connection this is, so that a batch only drops the link it failed on.
    generation: u64,
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

/// Publishes each delivery as a persistent message and counts it done only on the broker's ack.
pub struct RabbitMqSink {
    name: String,
    config: RabbitMqConfig,
    encoder: Encoder,
    /// The current connection; `None` or closed means reconnect before the next publish.
    /// Held while a batch publishes (so batches go out in order), not while it awaits confirms.
    link: Mutex<Option<Link>>,
    /// Connections opened so far.
    generations: AtomicU64,
}

impl RabbitMqSink {
    /// A sink for `config`; the connection is opened on `connect` or the first `send`.
    pub fn new(name: &str, config: RabbitMqConfig, renderer: Renderer) -> Self {
        RabbitMqSink {
            name: name.to_string(),
            encoder: Encoder::new(name, config.payload, renderer),
            config,
            link: Mutex::new(None),
            generations: AtomicU64::new(0),
        }
    }

    /// The URL without its password, for logs and errors.
    fn url_for_display(&self) -> String {
        redacted(self.config.url.expose())
    }

    /// Counts one failure of `kind` for this sink.
    fn count(&self, kind: &str) {
        METRICS
            .sink_errors
            .with_label_values(&[&self.name, kind])
            .inc();
    }

    /// Drops the link (closing it in the background) and records that the sink is down.
    fn disconnect(&self, slot: &mut Option<Link>) {
        if let Some(old) = slot.take() {
            old.close_in_background();
        }
        METRICS.sink_up.with_label_values(&[&self.name]).set(0);
    }

    /// The link in `slot`, opened again if there is none or the broker dropped it.
    async fn ensure<'a>(&self, slot: &'a mut Option<Link>) -> Result<&'a Link, SinkError> {
        if !slot.as_ref().is_some_and(Link::is_open) {
            self.disconnect(slot);
            let opened = timeout(CONNECT_TIMEOUT, self.open())
                .await
                .unwrap_or_else(|_| {
                    Err(SinkError::Unavailable(format!(
                        "connecting to {} took longer than {CONNECT_TIMEOUT:?}",
                        self.url_for_display()
                    )))
                });
            let link = opened.inspect_err(|_| self.count("connect"))?;
            METRICS.sink_up.with_label_values(&[&self.name]).set(1);
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
                generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
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
        let link = self.ensure(&mut slot).await?;
        let (channel, generation) = (link.channel.clone(), link.generation);
        let deadline = Instant::now() + self.config.confirm_timeout;
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            immediate: false,
        };
        let messages: Vec<Result<Message, String>> = batch
            .iter()
            .map(|d| {
                self.encoder
                    .message(d)
                    .inspect_err(|_| self.count("render"))
            })
            .collect();
        // Hand every message to lapin at once and wait for the socket once, not once per
        // message: each publish takes its confirm number and queues its frames in one step, so
        // every confirm still belongs to its own message.
        let publishes = messages.iter().filter_map(|m| m.as_ref().ok()).map(|m| {
            channel.basic_publish(
                &self.config.exchange,
                &m.routing_key,
                options,
                &m.body,
                m.properties.clone(),
            )
        });
        // Why the link failed mid-batch: the messages without a confirm are not sent.
        let mut broken: Option<String> = None;
        let mut published = match timeout_at(deadline, join_all(publishes)).await {
            Ok(published) => published,
            Err(_) => {
                broken = Some(format!(
                    "publishing took longer than {:?}",
                    self.config.confirm_timeout
                ));
                Vec::new()
            }
        }
        .into_iter();
        let mut steps: Vec<Result<Step, String>> = Vec::with_capacity(batch.len());
        for message in messages {
            let step = match message {
                Err(reason) => Ok(Step::Done(Outcome::Reject(reason))),
                Ok(_) => match published.next() {
                    Some(Ok(confirm)) => Ok(Step::Published(Box::new(confirm))),
                    Some(Err(e)) => {
                        let reason = format!("publish: {e}");
                        broken.get_or_insert_with(|| reason.clone());
                        Err(reason)
                    }
                    None => Err(broken.clone().unwrap_or_else(|| "not published".into())),
                },
            };
            steps.push(step);
        }
        // Published: the next batch may publish while this one waits for its confirms.
        drop(slot);
        // Whether the broker answered for any message: if not, the batch as a whole failed.
        let mut heard = false;
        let mut results: Vec<Result<Outcome, String>> = Vec::with_capacity(batch.len());
        for step in steps {
            let result = match step {
                Ok(Step::Done(outcome)) => Ok(outcome),
                Ok(Step::Published(confirm)) => match timeout_at(deadline, *confirm).await {
                    Ok(Ok(confirmation)) => {
                        heard = true;
                        if let Some(kind) = confirmation_error_kind(&confirmation) {
                            self.count(kind);
                        }
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
            let mut slot = self.link.lock().await;
            if slot.as_ref().is_some_and(|l| l.generation == generation) {
                self.disconnect(&mut slot);
            }
            self.count("connection_lost");
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

    /// Batches publish one after another on the channel and await their confirms together.
    fn max_in_flight(&self) -> usize {
        4
    }
}

/// One delivery on its way through a batch.
enum Step {
    /// Decided before publishing (a template failed).
    Done(Outcome),
    /// Published; the broker's confirm is awaited.
    Published(Box<PublisherConfirm>),
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
    use std::sync::Arc;

    use super::*;
    use crate::sinks::rabbitmq::encoder::tests::{config, event, renderer};

    fn sink(config: RabbitMqConfig) -> RabbitMqSink {
        let r = renderer(&config);
        RabbitMqSink::new("audit", config, r)
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("amqp://guest:s3cret@broker:5672/%2f"),
            "amqp://guest:***@broker:5672/%2f"
        );
        assert_eq!(redacted("amqp://broker/vh"), "amqp://broker/vh");
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
