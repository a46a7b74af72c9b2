//! hookbridge: ArcGIS webhooks in — verified, deduplicated, durable — and out to Kafka,
//! RabbitMQ, HTTP receivers, email and files, at least once.
//!
//! The modules follow the data: ingress → body (decode) → verify → senders (parse) → event (dedup
//! key) → route → queue → dispatch → sinks; `signature` signs and verifies for both ends.

pub(crate) mod admin;
pub mod body;
pub mod client;
pub(crate) mod clock;
pub mod config;
pub(crate) mod dispatch;
pub(crate) mod durable;
pub(crate) mod enrich;
pub mod event;
pub mod explain;
pub(crate) mod health;
pub(crate) mod ingress;
pub(crate) mod metrics;
pub(crate) mod problem;
pub mod queue;
pub mod render;
pub(crate) mod retry;
pub(crate) mod route;
pub(crate) mod secret;
pub mod senders;
pub mod serve;
pub(crate) mod shutdown;
pub mod signature;
pub mod sinks;
pub(crate) mod state;
pub(crate) mod tls;
pub(crate) mod ui;
pub mod verify;
pub mod webhooks;
