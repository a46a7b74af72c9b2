//! Kafka sink (rdkafka): topic and key from templates, acknowledged by the brokers.
//!
//! `config.rs` holds the producer's settings and their check, `encode.rs` turns a delivery into
//! a record, `send.rs` owns the producer and sends batches, `errors.rs` sorts every failure,
//! `logs.rs` keeps librdkafka's own reports from flooding the log.

mod config;
mod encode;
mod errors;
mod logs;
mod send;

pub use config::KafkaConfig;
