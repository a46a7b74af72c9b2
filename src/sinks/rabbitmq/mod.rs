//! RabbitMQ sink (lapin): persistent messages with publisher confirms.
//!
//! `config.rs` holds the settings and their check, `encode.rs` turns a delivery into an AMQP
//! message, `send.rs` owns the connection and publishes batches, `errors.rs` says what each
//! answer of the broker (and each broken link) means for a delivery.

mod config;
mod encode;
mod errors;
mod send;

pub use config::RabbitMqConfig;
