//! File sink: JSON lines appended to a local file, fsync'd before a delivery counts as done.
//!
//! `config.rs` holds the settings, `encode.rs` turns a delivery into a line, `send.rs` owns the
//! file and appends batches, `errors.rs` says what each failure means.

mod config;
mod encode;
mod errors;
mod send;

pub use config::FileConfig;
