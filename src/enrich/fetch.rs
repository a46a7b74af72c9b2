//! The extractChanges flow (docs/arcgis.md, "The change feed"): the changesUrl, the async job, the change file.

use std::time::Instant;

use serde_json::Value;

use super::FetchError;
use super::config::ConnectionConfig;
use super::token::{Token, TokenSource};
use crate::metrics::METRICS;

/// One ArcGIS connection: its settings, its HTTP client and its tokens.
pub struct Connection {
    /// The `[arcgis.NAME]` name.
    pub name: String,
    /// Its settings.
    pub config: ConnectionConfig,
    client: reqwest::Client,
    tokens: TokenSource,
}

/// A fetched change file: its JSON and how many bytes were read.
pub struct ChangeFile {
    /// The change file.
    pub json: Value,
    /// Its size.
    pub bytes: u64,
}

/// The header ArcGIS REST reads a token from (`Bearer <token>`), so it never travels in a URL.
pub const TOKEN_HEADER: &str = "X-Esri-Authorization";

/// A call's answer that asks for a new token.
enum Step {
    Done(Value, u64),
    TokenRefused,
}

impl Connection {
    /// A connection for `config`; fails only when the TLS backend cannot start.
    pub fn new(name: &str, config: ConnectionConfig) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| FetchError::Token(format!("cannot build the HTTP client: {e}")))?;
        Ok(Connection {
            name: name.to_string(),
            tokens: TokenSource::new(config.clone(), client.clone()),
            config,
            client,
        })
    }

    /// Gets a token now (for the start-up check and `/readyz`).
    pub async fn check(&self) -> Result<(), FetchError> {
        self.tokens.get().await.map(|_| ())
    }

    /// Fetches the changes behind `changes_url`: directly, or through the async job.
    pub async fn fetch(&self, changes_url: &str) -> Result<ChangeFile, FetchError> {
        let first = self.call(changes_url, true).await?;
        let Some(status_url) = first.json.get("statusUrl").and_then(Value::as_str) else {
            return if is_change_file(&first.json) {
                METRICS
                    .enrich_bytes
                    .with_label_values(&[&self.name])
                    .inc_by(first.bytes);
                Ok(first)
            } else {
                Err(FetchError::Failed(format!(
                    "extractChanges answered neither a statusUrl nor edits (keys: {})",
                    keys(&first.json)
                )))
            };
        };
        let result_url = self.wait_for_job(status_url).await?;
        let file = self.call(&result_url, true).await?;
        METRICS
            .enrich_bytes
            .with_label_values(&[&self.name])
            .inc_by(file.bytes);
        if is_change_file(&file.json) {
            Ok(file)
        } else {
            Err(FetchError::Failed(format!(
                "the result file has no edits (keys: {})",
                keys(&file.json)
            )))
        }
    }

    /// Reads one resource of a service (`f=json`, with the token), such as its description.
    pub async fn read(&self, url: &str) -> Result<Value, FetchError> {
        self.call(url, false).await.map(|f| f.json)
    }

    /// Calls an operation with a POST form (`f=json` added, the token in its header), as
    /// ArcGIS's admin operations want; renews the token once when ArcGIS refuses it.
    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Result<Value, FetchError> {
        let parsed = url::Url::parse(url)
            .map_err(|e| FetchError::Fatal(format!("{}: not a URL ({e})", without_query(url))))?;
        if !self.config.serves_url(&parsed) {
            return Err(FetchError::Fatal(format!(
                "connection {} does not serve {}: the token goes only to its services",
                self.name,
                without_query(url)
            )));
        }
        let mut renewed = false;
        loop {
            let token = self.tokens.get().await?;
            match self.send(&parsed, Some(&token), false, Some(form)).await? {
                Step::Done(json, _) => return Ok(json),
                Step::TokenRefused if !renewed && self.tokens.renewable() => {
                    self.tokens.invalidate(&token).await;
                    renewed = true;
                }
                Step::TokenRefused => {
                    return Err(FetchError::Token(
                        "ArcGIS refused the token (498/499)".into(),
                    ));
                }
            }
        }
    }

    /// Polls the job with backoff until `Completed`; returns its `resultUrl`.
    async fn wait_for_job(&self, status_url: &str) -> Result<String, FetchError> {
        let started = Instant::now();
        let mut wait = self.config.poll_interval;
        loop {
            METRICS
                .enrich_job_polls
                .with_label_values(&[&self.name])
                .inc();
            let status = self.call(status_url, false).await?.json;
            let state = status.get("status").and_then(Value::as_str).unwrap_or("");
            match state {
                "Completed" | "esriJobSucceeded" => {
                    return status
                        .get("resultUrl")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            FetchError::Failed("the completed job has no resultUrl".into())
                        });
                }
                "Failed"
                | "esriJobFailed"
                | "Cancelled"
                | "esriJobCancelled"
                | "CompletedWithErrors" => {
                    let why = status
                        .get("error")
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(FetchError::Fatal(format!(
                        "the extractChanges job ended {state}: {why}"
                    )));
                }
                _ => {}
            }
            if started.elapsed() >= self.config.job_timeout {
                return Err(FetchError::Failed(format!(
                    "the extractChanges job is still {state:?} after {:?}",
                    self.config.job_timeout
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.config.max_poll_interval.max(self.config.poll_interval));
        }
    }

    /// One GET with `f=json` (and the token, for a configured service), renewing the token
    /// once when ArcGIS refuses it.
    async fn call(&self, url: &str, capped: bool) -> Result<ChangeFile, FetchError> {
        let url = url::Url::parse(url)
            .map_err(|e| FetchError::Fatal(format!("{}: not a URL ({e})", without_query(url))))?;
        let mut renewed = false;
        loop {
            // The URL checked is the URL sent: parsed once, dot segments resolved.
            let token = if self.config.serves_url(&url) {
                Some(self.tokens.get().await?)
            } else {
                None
            };
            match self.send(&url, token.as_ref(), capped, None).await? {
                Step::Done(json, bytes) => return Ok(ChangeFile { json, bytes }),
                Step::TokenRefused if !renewed && self.tokens.renewable() => {
                    if let Some(t) = &token {
                        self.tokens.invalidate(t).await;
                    }
                    renewed = true;
                    tracing::info!(connection = %self.name, "ArcGIS refused the token; renewing it");
                }
                Step::TokenRefused => {
                    return Err(FetchError::Token(
                        "ArcGIS refused the token (498/499)".into(),
                    ));
                }
            }
        }
    }

    /// One GET of `url` with `f=json` (a POST of `form` and `f=json` when there is a form);
    /// the token goes in the `X-Esri-Authorization` header (ArcGIS REST takes
    /// `Bearer <token>` there), never in the URL, where proxies log it.
    async fn send(
        &self,
        url: &url::Url,
        token: Option<&Token>,
        capped: bool,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Step, FetchError> {
        let mut u = url.clone();
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| k != "f" && k != "token")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        {
            let mut q = u.query_pairs_mut();
            q.clear();
            q.extend_pairs(kept);
            q.append_pair("f", "json");
        }
        let shown = without_query(url.as_str());
        let mut request = match form {
            Some(fields) => {
                let mut body: Vec<(&str, &str)> = fields.to_vec();
                body.push(("f", "json"));
                self.client.post(url.clone()).form(&body)
            }
            None => self.client.get(u),
        };
        if let Some(t) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose())).map_err(
                    |_| FetchError::Token("the token is not a valid header value".into()),
                )?;
            value.set_sensitive(true);
            request = request.header(TOKEN_HEADER, value);
        }
        let mut answer = request
            .send()
            .await
            .map_err(|e| FetchError::Unavailable(format!("{shown}: {}", e.without_url())))?;
        let status = answer.status().as_u16();
        if status == 498 || status == 499 {
            return Ok(Step::TokenRefused);
        }
        if answer.status().is_server_error() || status == 429 {
            return Err(FetchError::Unavailable(format!(
                "{shown} answered {status}"
            )));
        }
        if !answer.status().is_success() {
            return Err(FetchError::Failed(format!("{shown} answered {status}")));
        }
        let cap = self.config.max_change_file.as_u64();
        if capped && answer.content_length().is_some_and(|n| n > cap) {
            return Err(over_cap(cap));
        }
        let mut body = Vec::new();
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|e| FetchError::Unavailable(format!("{shown}: {}", e.without_url())))?
        {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > cap {
                return Err(over_cap(cap));
            }
        }
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            FetchError::Failed(format!("{shown} answered something that is not JSON: {e}"))
        })?;
        // A job's status carries its own `error` beside `status`: the caller reads both.
        if let Some(err) = json.get("error").filter(|_| json.get("status").is_none()) {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            if code == 498 || code == 499 {
                return Ok(Step::TokenRefused);
            }
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message");
            return Err(FetchError::Failed(format!(
                "{shown} answered error {code}: {message}"
            )));
        }
        Ok(Step::Done(json, body.len() as u64))
    }
}

fn over_cap(cap: u64) -> FetchError {
    FetchError::Fatal(format!(
        "the change file is larger than max_change_file ({cap} bytes)"
    ))
}

/// Whether `v` is a change file (edits per layer).
fn is_change_file(v: &Value) -> bool {
    v.get("edits").is_some_and(Value::is_array)
}

fn keys(v: &Value) -> String {
    v.as_object()
        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "not an object".into())
}

/// A URL for messages: the part before `?`, so no token or query value is ever shown.
pub fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
