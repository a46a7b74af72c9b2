//! `[server]`: the HTTP listener, its limits and the admin token, checked as a whole.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::problem::Problem;
use crate::secret::Secret;
use crate::tls::{TlsConfig, TlsError};

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to bind.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Native TLS; plain HTTP when absent (put a reverse proxy in front).
    pub tls: Option<TlsConfig>,
    /// Largest body accepted; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body: bytesize::ByteSize,
    /// Most events one delivery may hold; more get 413 before anything is parsed into events.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Most body bytes being read and parsed at once, over all requests; past it, 503 with
    /// `Retry-After` (at least `max_body`; see [`ServerConfig::inflight_bytes`]).
    pub max_inflight_bytes: Option<bytesize::ByteSize>,
    /// Most events being built and stored at once, over all requests; past it, 503 with
    /// `Retry-After` (at least `max_events`; see [`ServerConfig::inflight_events`]).
    pub max_inflight_events: Option<usize>,
    /// Bearer token for `/admin`; the admin API is off without one.
    pub admin_token: Option<Secret>,
    /// How long a graceful stop may take before in-flight work is abandoned (it stays queued).
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send its headers, and then its body (slow clients get 408).
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls: None,
            max_body: default_max_body(),
            max_events: default_max_events(),
            max_inflight_bytes: None,
            max_inflight_events: None,
            admin_token: None,
            shutdown_timeout: default_shutdown_timeout(),
            read_timeout: default_read_timeout(),
        }
    }
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
/// Far above a real delivery (ArcGIS batches a feature service's changes per layer and change
/// type, and an organization event is one change), far below what a request may cost: see
/// docs/reliability.md, "Hostile load".
fn default_max_events() -> usize {
    10_000
}
/// The default budget of body bytes: 16 MiB, and never less than two largest bodies. ArcGIS's
/// deliveries are a few KiB, so only a flood meets it.
const INFLIGHT_BYTES: u64 = 16 * 1024 * 1024;
/// The default budget of events: 20 000, and never less than two largest deliveries (each costs
/// tens of MiB while it is built and stored); a real delivery holds a handful of events.
const INFLIGHT_EVENTS: usize = 20_000;

impl ServerConfig {
    /// The budget of body bytes being accepted at once.
    pub fn inflight_bytes(&self) -> u64 {
        self.max_inflight_bytes.map_or_else(
            || INFLIGHT_BYTES.max(self.max_body.as_u64().saturating_mul(2)),
            |b| b.as_u64(),
        )
    }

    /// The budget of events being accepted at once.
    pub fn inflight_events(&self) -> usize {
        self.max_inflight_events
            .unwrap_or_else(|| INFLIGHT_EVENTS.max(self.max_events.saturating_mul(2)))
    }
}
fn default_max_body() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(1)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Shortest admin token accepted: it guards replay, purge and pause over the network.
const MIN_ADMIN_TOKEN: usize = 16;

impl ServerConfig {
    /// Checks the settings, makes the TLS paths absolute against `base` and loads them once;
    /// returns the listen address (a placeholder when it is invalid, with a problem recorded).
    pub(super) fn check(&mut self, base: &Path, problems: &mut Vec<Problem>) -> SocketAddr {
        let listen = match self.listen.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                problems.push(Problem::new(
                    "server.listen",
                    format!(
                        "expected an address like 0.0.0.0:8080, found {:?}",
                        self.listen
                    ),
                ));
                SocketAddr::from(([0, 0, 0, 0], 8080))
            }
        };
        if self.max_body.as_u64() == 0 {
            problems.push(Problem::new("server.max_body", "must be larger than 0"));
        }
        if self.max_events == 0 {
            problems.push(Problem::new("server.max_events", "must be at least 1"));
        }
        if self.inflight_bytes() < self.max_body.as_u64() {
            problems.push(Problem::new(
                "server.max_inflight_bytes",
                format!(
                    "must be at least server.max_body ({}), or a largest delivery could never be taken",
                    self.max_body
                ),
            ));
        }
        if self.inflight_events() < self.max_events {
            problems.push(Problem::new(
                "server.max_inflight_events",
                format!(
                    "must be at least server.max_events ({}), or a largest delivery could never be taken",
                    self.max_events
                ),
            ));
        }
        if let Some(token) = &self.admin_token {
            let t = token.expose();
            if t.trim().is_empty() || t.chars().count() < MIN_ADMIN_TOKEN {
                problems.push(Problem::new(
                    "server.admin_token",
                    format!(
                        "must be at least {MIN_ADMIN_TOKEN} characters and not only whitespace \
                         (e.g. `openssl rand -hex 24`)"
                    ),
                ));
            }
        }
        if let Some(tls) = &mut self.tls {
            tls.cert = base.join(&tls.cert);
            tls.key = base.join(&tls.key);
            if let Err(e) = crate::tls::load(tls) {
                let (key, msg) = match &e {
                    TlsError::Cert(m) => ("server.tls.cert", m.clone()),
                    TlsError::Key(m) => ("server.tls.key", m.clone()),
                    TlsError::Config(m) => ("server.tls", m.clone()),
                };
                problems.push(Problem::new(key, msg));
            }
        }
        listen
    }
}
