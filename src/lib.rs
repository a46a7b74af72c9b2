//! hookbridge: ArcGIS webhooks in — verified, deduplicated, durable — and out to Kafka,
//! RabbitMQ, email and files, at least once.
//!
//! The modules follow the data: ingress → verify → arcgis (parse) → event (dedup key) →
//! route → queue → dispatch → sinks.

pub mod admin;
pub mod arcgis;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod enrich;
pub mod event;
pub mod explain;
pub mod health;
pub mod ingress;
pub mod metrics;
pub mod problem;
pub mod queue;
pub mod render;
pub mod retry;
pub mod route;
pub mod secret;
pub mod serve;
pub mod shutdown;
pub mod sinks;
pub mod tls;
pub mod ui;
pub mod verify;
