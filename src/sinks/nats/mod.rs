//! NATS JetStream sink (async-nats): a subject per event, each message acknowledged by its stream.
//!
//! `config.rs` holds the settings and their check, `encode.rs` turns a delivery into a message
//! (the subject's tokens checked, `Nats-Msg-Id` = event id so the stream drops resends),
//! `send.rs` owns the client, checks the stream and publishes batches, `errors.rs` says what
//! each answer of JetStream (and each broken link) means for a delivery.

mod config;
mod encode;
mod errors;
mod send;

pub use config::NatsConfig;
