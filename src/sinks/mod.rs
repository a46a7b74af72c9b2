//! Where events go: the `Sink` trait, and the registry of sink types. Each type is one folder
//! of one shape: `config.rs` (its settings and their check, preview and build), `encode.rs`
//! (a delivery to the wire form), `send.rs` (the running sink), `errors.rs` (every failure
//! classified in one place); it is declared by implementing [`SinkType`] and listed in [`TYPES`].

mod command;
mod email;
mod file;
mod http;
mod kafka;
mod message;
mod mqtt;
mod nats;
mod rabbitmq;
mod registry;

use std::time::Duration;

use async_trait::async_trait;

use crate::event::Delivery;

pub use message::event_headers;
pub(crate) use message::{
    body_for_display, check_payload_template, header_values, payload_template_name,
};
pub use registry::{Check, SinkSettings, SinkType, TypeEntry};

/// Every sink type hookbridge knows: adding one is a folder and a line here.
const TYPES: &[TypeEntry] = &[
    TypeEntry::of::<file::FileConfig>(),
    TypeEntry::of::<kafka::KafkaConfig>(),
    TypeEntry::of::<rabbitmq::RabbitMqConfig>(),
    TypeEntry::of::<email::EmailConfig>(),
    TypeEntry::of::<http::HttpConfig>(),
    TypeEntry::of::<nats::NatsConfig>(),
    TypeEntry::of::<mqtt::MqttConfig>(),
    TypeEntry::of::<command::CommandConfig>(),
];

/// The outcome of each delivery of a batch, each `Err` when the link failed before its answer
/// came: if the destination answered for none of them (`heard` false), the sink as a whole is
/// unavailable and no attempt is spent; otherwise the unanswered ones are retried.
pub fn batch_outcomes(
    results: Vec<Result<Outcome, String>>,
    heard: bool,
) -> Result<Vec<Outcome>, SinkError> {
    if !heard {
        if let Some(Err(reason)) = results.iter().find(|r| r.is_err()) {
            return Err(SinkError::Unavailable(reason.clone()));
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(Outcome::Retry))
        .collect())
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination confirmed it; the delivery row can go.
    Delivered,
    /// Confirmed, with what the destination said of it (a command's exit status and run
    /// time), which the attempt history keeps.
    DeliveredWith(String),
    /// A transient failure: try again after a backoff (counts as an attempt).
    Retry(String),
    /// A transient failure whose destination asked for a wait (HTTP `Retry-After`): try again
    /// after the backoff or that wait, whichever is longer, but never past the policy's `max`.
    RetryAfter(String, Duration),
    /// The destination refused it for good: dead-letter it with this reason.
    Reject(String),
}

impl Outcome {
    /// Whether the destination confirmed the delivery.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered | Outcome::DeliveredWith(_))
    }
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

/// A destination for events: one per configured sink, built by its [`SinkType`].
#[async_trait]
pub trait Sink: Send + Sync {
    /// Connects (or checks the destination) once at start; `/readyz` waits for this.
    async fn connect(&self) -> Result<(), SinkError>;

    /// Sends a batch; returns one outcome per delivery, in order.
    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError>;

    /// Ends the connection when the dispatcher stops (a stop or a reload), after the batches
    /// in hand: a client library's own task then ends cleanly rather than meeting a runtime
    /// that is going away (lapin logged an ERROR on every clean stop).
    async fn close(&self) {}

    /// What of a batch just taken goes out now; a stage in front of the sink (the change
    /// feed) keeps back, and parks in the queue, what must wait.
    fn admit(&self, batch: Vec<Delivery>) -> Vec<Delivery> {
        batch
    }

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
