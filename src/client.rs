//! The admin API's client: how `hookbridge queue` and `hookbridge dlq` reach a running daemon
//! (whose queue they cannot open themselves) through its `/admin` endpoints.

use crate::config::Config;

/// Why an admin API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP client or its runtime could not be made.
    #[error("cannot make the admin API client: {0}")]
    Setup(String),
    /// The daemon could not be reached, or its answer not read.
    #[error("calling {url}: {source}")]
    Call {
        /// What was called.
        url: String,
        /// Why it failed.
        source: reqwest::Error,
    },
    /// The daemon answered with an error.
    #[error("admin API answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The answer's `message`.
        message: String,
    },
}

/// A client of a running daemon's `/admin` API, on the address the config says it listens on.
pub struct AdminClient {
    base: String,
    token: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

/// Whether a call reads or changes the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Reads (`GET`).
    Get,
    /// Changes (`POST`): replay, purge.
    Post,
}

impl AdminClient {
    /// A client for the daemon `config` describes, authenticated with `token`.
    pub fn new(config: &Config, token: &str) -> Result<AdminClient, ClientError> {
        let mut addr = config.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // The daemon's own certificate may be issued for its public name, not for this address.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(config.server.tls.is_some() && addr.ip().is_loopback())
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(AdminClient {
            base: format!("{scheme}://{addr}"),
            token: token.to_string(),
            client,
            runtime,
        })
    }

    /// Calls `path` with the query `pairs` and returns the JSON answer.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            Method::Post => self.client.post(&url),
            Method::Get => self.client.get(&url),
        }
        .bearer_auth(&self.token)
        .query(pairs);
        let failed = |source| ClientError::Call {
            url: url.clone(),
            source,
        };
        self.runtime.block_on(async {
            let resp = req.send().await.map_err(failed)?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.map_err(failed)?;
            if !status.is_success() {
                return Err(ClientError::Refused {
                    status,
                    message: body["message"].as_str().unwrap_or_default().to_string(),
                });
            }
            Ok(body)
        })
    }
}
