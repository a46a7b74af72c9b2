//! MQTT sink (rumqttc, v5): a topic per event in a persistent session, each message counted
//! done only on the broker's PUBACK (QoS 1) or PUBCOMP (QoS 2).
//!
//! `config.rs` holds the settings and their check, `encode.rs` turns a delivery into a message
//! (the topic's levels checked, the event id as correlation data and user property),
//! `session.rs` drives the client's event loop and matches each acknowledgement to its
//! publish, `send.rs` hands batches to the session, `errors.rs` says what each reason code
//! (and each broken link) means for a delivery.

mod config;
mod encode;
mod errors;
mod send;
mod session;

pub use config::MqttConfig;
