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

use super::encode::{Encoder, Message};
use super::errors::{batch_outcomes, confirmation_error_kind, confirmation_outcome, redacted};
use crate::event::Delivery;
use crate::metrics::METRICS;
use crate::secret::Secret;
use crate::sinks::{Outcome, Sink, SinkError};

/// How long opening the connection and channel, and declaring the exchange, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long closing the connection at a stop may take before it is left to the broker.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how a sink publishes: the settings of these names in its `[sinks.NAME]` table.
pub(super) struct Publishing {
    /// The AMQP URL; it may hold a password.
    pub url: Secret,
    /// The exchange; the default exchange when empty.
    pub exchange: String,
    /// The exchange's type, when it is declared or checked.
    pub exchange_type: String,
    /// Declare the exchange (true) or only check that it exists (false).
    pub declare: bool,
    /// Publish as mandatory: an unroutable message becomes a dead letter.
    pub mandatory: bool,
    /// How long a batch may wait for the broker's confirms.
    pub timeout: Duration,
}

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
pub(super) struct RabbitMqSink {
    name: String,
    publishing: Publishing,
    encoder: Encoder,
    /// The current connection; `None` or closed means reconnect before the next publish.
    /// Held while a batch publishes (so batches go out in order), not while it awaits confirms.
    link: Mutex<Option<Link>>,
    /// Connections opened so far.
    generations: AtomicU64,
}

impl RabbitMqSink {
    /// A sink publishing as `publishing` says; the connection is opened on `connect` or the
    /// first `send`.
    pub fn new(name: &str, publishing: Publishing, encoder: Encoder) -> Self {
        RabbitMqSink {
            name: name.to_string(),
            encoder,
            publishing,
            link: Mutex::new(None),
            generations: AtomicU64::new(0),
        }
    }

    /// The URL without its password, for logs and errors.
    fn url_for_display(&self) -> String {
        redacted(self.publishing.url.expose())
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
            tracing::info!(sink = %self.name, url = %self.url_for_display(), exchange = %self.publishing.exchange, "connected to RabbitMQ");
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
        let connection = Connection::connect(self.publishing.url.expose(), properties)
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
        let exchange = &self.publishing.exchange;
        if exchange.is_empty() {
            return Ok(channel);
        }
        let options = ExchangeDeclareOptions {
            passive: !self.publishing.declare,
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                exchange,
                exchange_kind(&self.publishing.exchange_type),
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                if self.publishing.declare {
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

impl RabbitMqSink {
    /// Hands every message to lapin at once and waits for the socket once, not once per
    /// message: each publish takes its confirm number and queues its frames in one step, so
    /// every confirm still belongs to its own message.
    async fn publish(
        &self,
        channel: &Channel,
        messages: Vec<Result<Message, String>>,
        deadline: Instant,
        batch: &mut Batch,
    ) -> Vec<Result<Step, String>> {
        let options = BasicPublishOptions {
            mandatory: self.publishing.mandatory,
            immediate: false,
        };
        let publishes = messages.iter().filter_map(|m| m.as_ref().ok()).map(|m| {
            channel.basic_publish(
                &self.publishing.exchange,
                &m.routing_key,
                options,
                &m.body,
                m.properties.clone(),
            )
        });
        let mut published = match timeout_at(deadline, join_all(publishes)).await {
            Ok(published) => published,
            Err(_) => {
                batch.broke(format!(
                    "publishing took longer than {:?}",
                    self.publishing.timeout
                ));
                Vec::new()
            }
        }
        .into_iter();
        messages
            .into_iter()
            .map(|message| match message {
                Err(reason) => Ok(Step::Done(Outcome::Reject(reason))),
                Ok(_) => match published.next() {
                    Some(Ok(confirm)) => Ok(Step::Published(Box::new(confirm))),
                    Some(Err(e)) => Err(batch.broke(format!("publish: {e}"))),
                    None => Err(batch
                        .broken
                        .clone()
                        .unwrap_or_else(|| "not published".into())),
                },
            })
            .collect()
    }

    /// Awaits each published message's confirm (until `deadline`) and maps it to an outcome.
    async fn confirms(
        &self,
        steps: Vec<Result<Step, String>>,
        deadline: Instant,
        batch: &mut Batch,
    ) -> Vec<Result<Outcome, String>> {
        let mut results = Vec::with_capacity(steps.len());
        for step in steps {
            results.push(match step {
                Ok(Step::Done(outcome)) => Ok(outcome),
                Ok(Step::Published(confirm)) => match timeout_at(deadline, *confirm).await {
                    Ok(Ok(confirmation)) => {
                        batch.heard = true;
                        if let Some(kind) = confirmation_error_kind(&confirmation) {
                            self.count(kind);
                        }
                        Ok(confirmation_outcome(confirmation))
                    }
                    Ok(Err(e)) => Err(batch.broke(format!("waiting for the confirm: {e}"))),
                    Err(_) => {
                        Err(batch.broke(format!("no confirm within {:?}", self.publishing.timeout)))
                    }
                },
                Err(reason) => Err(reason),
            });
        }
        results
    }
}

/// What a batch learned about the link while it was sent.
#[derive(Default)]
struct Batch {
    /// Whether the broker answered for any message: if not, the batch as a whole failed.
    heard: bool,
    /// Why the link failed mid-batch (the first reason): unconfirmed messages are not sent.
    broken: Option<String>,
}

impl Batch {
    /// Records that the link broke (keeping the first reason) and returns this reason.
    fn broke(&mut self, reason: String) -> String {
        self.broken.get_or_insert_with(|| reason.clone());
        reason
    }
}

#[async_trait]
impl Sink for RabbitMqSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let mut slot = self.link.lock().await;
        self.ensure(&mut slot).await.map(|_| ())
    }

    /// Closes the connection (channel first, then the connection, as AMQP asks), so that
    /// lapin's I/O loop ends before the runtime does.
    async fn close(&self) {
        let Some(link) = self.link.lock().await.take() else {
            return;
        };
        METRICS.sink_up.with_label_values(&[&self.name]).set(0);
        let closing = async {
            if link.channel.status().connected() {
                link.channel.close(200, "hookbridge stops").await?;
            }
            if link.connection.status().connected() {
                link.connection.close(200, "hookbridge stops").await?;
            }
            Ok::<(), lapin::Error>(())
        };
        match timeout(CLOSE_TIMEOUT, closing).await {
            Ok(Ok(())) => tracing::debug!(sink = %self.name, "closed the RabbitMQ connection"),
            Ok(Err(e)) => {
                tracing::debug!(sink = %self.name, error = %e, "closing the RabbitMQ connection failed")
            }
            Err(_) => tracing::debug!(
                sink = %self.name,
                "the broker did not confirm the close within {CLOSE_TIMEOUT:?}"
            ),
        }
    }

    /// Publishes the whole batch, then collects the confirms, all within `timeout`.
    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let deadline = Instant::now() + self.publishing.timeout;
        let mut slot = self.link.lock().await;
        let link = self.ensure(&mut slot).await?;
        let (channel, generation) = (link.channel.clone(), link.generation);
        let messages = batch
            .iter()
            .map(|d| {
                self.encoder
                    .message(&d.event, &d.payload)
                    .inspect_err(|_| self.count("render"))
            })
            .collect();
        let mut batch = Batch::default();
        let steps = self.publish(&channel, messages, deadline, &mut batch).await;
        // Published: the next batch may publish while this one waits for its confirms.
        drop(slot);
        let results = self.confirms(steps, deadline, &mut batch).await;
        if let Some(reason) = &batch.broken {
            // Start afresh next time: the channel's confirm sequence can no longer be trusted.
            let mut slot = self.link.lock().await;
            if slot.as_ref().is_some_and(|l| l.generation == generation) {
                self.disconnect(&mut slot);
            }
            self.count("connection_lost");
            tracing::warn!(sink = %self.name, error = %reason, "RabbitMQ connection lost; will reconnect");
        }
        batch_outcomes(results, batch.heard, batch.broken)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sinks::SinkType;
    use crate::sinks::rabbitmq::encode::tests::{config, event, renderer};

    /// The sink of `url` as `config.rs` builds it.
    fn sink(url: &str) -> Arc<dyn Sink> {
        let c = config(url, "k");
        c.build("audit", &renderer(&c)).unwrap()
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_unavailable_not_a_failed_delivery() {
        // Port 1 on loopback refuses connections.
        let s = sink("amqp://guest:s3cret@127.0.0.1:1/%2f");
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
