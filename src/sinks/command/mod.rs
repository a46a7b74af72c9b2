//! Command sink: runs a program per event, as administrators run scripts today ("when a protected
//! service is deleted, run the script that restores it"), never through a shell.
//!
//! The argv is the configured program and one entry per `args` template, so an event value is
//! always one whole argument: it can add none, and an argument whose template does not start with
//! `-` may not render to one that does, so a value never becomes an option. The event (or the raw
//! payload, or a template) goes to stdin; the environment is cleared and given only what the
//! config names. The exit status decides (`errors.rs`): 0 delivered, `retry_exit_codes` retried,
//! anything else dead-lettered with the tail of stderr; a program that cannot be started backs
//! the sink off as a whole.
//!
//! `config.rs` holds the settings and their checks and builds the rest, `encode.rs` turns a
//! delivery into argv and stdin, `env.rs` makes the child's environment, `run.rs` runs one
//! process group (its timeout, its stderr, its end), `send.rs` runs a batch at most
//! `max_in_flight` at once, `errors.rs` says what each end means for the delivery.

mod config;
mod encode;
mod env;
mod errors;
mod run;
mod send;

pub use config::CommandConfig;
