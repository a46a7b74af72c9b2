//! The running HTTP sink: one reqwest client (rustls, the system's roots and an optional private
//! CA), requests bounded in flight and by the rate limit, each answer read by `errors.rs`.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus::{Counter, Histogram};
use reqwest::header::RETRY_AFTER;
use reqwest::redirect::Policy;
use serde::{Deserialize, Deserializer};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::encode::{Encoder, Request};
use super::errors::{Attempt, QUOTED_BYTES, answer, failure};
use super::url_template::{display_url, static_prefix};
use crate::event::Delivery;
use crate::metrics::METRICS;
use crate::sinks::{Outcome, Sink, SinkError};

/// The longest wait for a TCP connection, whatever `timeout` says.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a successful answer is read, so the connection can serve the next request.
const DRAINED_BYTES: usize = 64 * 1024;

/// A rate limit: `count` requests per `per`, in bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period.
    pub count: NonZeroU32,
    /// The period: a second, a minute or an hour.
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/m` or `N/h` (also `sec`, `second`, `min`, `minute`, `hour`).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let expected =
            "expected a count per second, minute or hour, like \"10/s\", \"600/m\" or \"100/h\"";
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{expected}; found {text:?}"))?;
        let count = count.trim().parse::<NonZeroU32>().map_err(|_| {
            format!("{expected}; found {text:?} (the count must be a whole number of at least 1)")
        })?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(format!("{expected}; found {text:?}")),
        };
        if (per / count.get()).is_zero() {
            return Err(format!("{text:?} is more than one request per nanosecond"));
        }
        Ok(Rate { count, per })
    }

    /// The token bucket: one request every `per / count`, bursts of up to `count`.
    pub fn quota(&self) -> Quota {
        Quota::with_period(self.per / self.count.get())
            .unwrap_or_else(|| Quota::per_second(self.count))
            .allow_burst(self.count)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Rate::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How a sink's client reaches the receiver and paces its requests, borrowed from its
/// `[sinks.NAME]` table: each field is the `HttpConfig` setting of its name (the URL as text).
pub(super) struct ClientSpec<'a> {
    pub url: &'a str,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub rate: Option<Rate>,
    pub ca: Option<&'a Path>,
    pub insecure_skip_verify: bool,
}

/// Sends each delivery as one request and counts it done on a 2xx answer.
pub struct HttpSink {
    requests: Arc<Requests>,
    /// The receiver to check at `connect`, when the URL template fixes its host.
    origin: Option<(String, u16)>,
    max_in_flight: usize,
    max_batch: usize,
}

/// What every request of the sink shares. Requests run in tasks of their own, so that they
/// go on while the dispatcher records the previous batch.
struct Requests {
    name: String,
    client: reqwest::Client,
    encoder: Encoder,
    timeout: Duration,
    /// Requests on their way, across every batch the dispatcher has in flight; taken in queue
    /// order, so `max_in_flight = 1` sends in that order.
    permits: Arc<Semaphore>,
    limiter: Option<DefaultDirectRateLimiter>,
    /// The configured URL as logs may show it.
    url: String,
    /// This sink's `hookbridge_http_request_duration_seconds`.
    request_seconds: Histogram,
    /// This sink's `hookbridge_http_rate_limit_wait_seconds_total`.
    rate_wait: Counter,
}

impl HttpSink {
    /// A sink sending `encoder`'s requests as `c` says; fails when the settings cannot work.
    pub fn new(name: &str, encoder: Encoder, c: ClientSpec<'_>) -> Result<Self, SinkError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("hookbridge/", env!("CARGO_PKG_VERSION")))
            .timeout(c.timeout)
            .connect_timeout(c.timeout.min(CONNECT_TIMEOUT))
            .redirect(Policy::none())
            .tls_built_in_webpki_certs(false)
            .tls_built_in_native_certs(true);
        if let Some(ca) = c.ca {
            for cert in read_ca(ca).map_err(|e| SinkError::Config(format!("ca: {e}")))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if c.insecure_skip_verify {
            tracing::warn!(sink = %name, "TLS certificate verification is OFF for this sink (insecure_skip_verify = true): anyone on the way can read and change what it sends");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| SinkError::Config(format!("cannot build the HTTP client: {e}")))?;
        let limiter = c.rate.map(|rate| RateLimiter::direct(rate.quota()));
        let burst = c.rate.map_or(usize::MAX, |r| r.count.get() as usize);
        Ok(HttpSink {
            requests: Arc::new(Requests {
                name: name.to_string(),
                client,
                encoder,
                timeout: c.timeout,
                permits: Arc::new(Semaphore::new(c.max_in_flight.max(1))),
                limiter,
                url: display_url(c.url),
                request_seconds: METRICS.http_request_seconds.with_label_values(&[name]),
                rate_wait: METRICS.http_rate_limit_wait.with_label_values(&[name]),
            }),
            origin: static_origin(c.url),
            max_in_flight: c.max_in_flight.max(1),
            max_batch: (c.max_in_flight * 8).clamp(16, 256).min(burst),
        })
    }

    /// Renders the batch, then sends it from a task of its own: each request takes a permit
    /// in queue order, then goes out in a task of its own. Returns the attempts in batch order,
    /// and whether the receiver answered anything.
    async fn send_all(&self, batch: &[Delivery]) -> (Vec<Attempt>, bool) {
        let requests = self.requests.clone();
        let prepared: Vec<Result<Request, String>> = batch
            .iter()
            .map(|d| requests.encoder.unsigned(&d.event, &d.payload))
            .collect();
        let size = batch.len();
        let driver = tokio::spawn(async move {
            let down = Arc::new(AtomicBool::new(false));
            let heard = Arc::new(AtomicBool::new(false));
            let mut pending = Vec::with_capacity(prepared.len());
            for request in prepared {
                let request = match request {
                    Ok(r) => r,
                    Err(e) => {
                        requests.count("render");
                        let decided = Attempt::Answered(Outcome::Reject(e));
                        pending.push(tokio::spawn(std::future::ready(decided)));
                        continue;
                    }
                };
                let Ok(permit) = requests.permits.clone().acquire_owned().await else {
                    break;
                };
                let (requests, down, heard) = (requests.clone(), down.clone(), heard.clone());
                pending.push(tokio::spawn(async move {
                    let attempt = requests.deliver(request, &down, &heard).await;
                    drop(permit);
                    attempt
                }));
            }
            let mut attempts = Vec::with_capacity(pending.len());
            for task in pending {
                attempts.push(task.await.unwrap_or_else(|e| {
                    Attempt::Answered(Outcome::Retry(format!("the request task failed: {e}")))
                }));
            }
            (attempts, heard.load(Ordering::SeqCst))
        });
        match driver.await {
            Ok((mut attempts, heard)) => {
                let stopped = Attempt::Unreachable("the sink is stopping".into());
                attempts.resize(size, stopped);
                (attempts, heard)
            }
            Err(e) => {
                let failed = Attempt::Unreachable(format!("the batch's task failed: {e}"));
                (vec![failed; size], false)
            }
        }
    }
}

impl Requests {
    /// Counts one failure of `kind` for this sink.
    fn count(&self, kind: &str) {
        METRICS
            .sink_errors
            .with_label_values(&[&self.name, kind])
            .inc();
    }

    /// Sends one request (its permit taken): a token of the rate limit, then the signature,
    /// only now so that its timestamp is fresh. `down` is set once the receiver proved
    /// unreachable, so the rest of the batch is not tried; `heard` once it answered anything.
    async fn deliver(
        &self,
        mut request: Request,
        down: &AtomicBool,
        heard: &AtomicBool,
    ) -> Attempt {
        if down.load(Ordering::SeqCst) {
            return Attempt::Unreachable(format!("not sent: {} is unreachable", self.url));
        }
        if let Some(limiter) = &self.limiter {
            let waited = Instant::now();
            limiter.until_ready().await;
            self.rate_wait.inc_by(waited.elapsed().as_secs_f64());
        }
        if let Err(e) = self
            .encoder
            .sign(&mut request, crate::clock::now_ms() / 1000)
        {
            self.count("render");
            return Attempt::Answered(Outcome::Reject(e));
        }
        let attempt = self.exchange(request, heard).await;
        if matches!(attempt, Attempt::Unreachable(_)) {
            down.store(true, Ordering::SeqCst);
        }
        attempt
    }

    /// One request and its answer.
    async fn exchange(&self, request: Request, heard: &AtomicBool) -> Attempt {
        let shown = display_url(request.url.as_str());
        let request_id = request.id;
        let started = Instant::now();
        let sent = self
            .client
            .request(request.method, request.url)
            .headers(request.headers)
            .body(request.body)
            .send()
            .await;
        let attempt = match sent {
            Ok(response) => {
                heard.store(true, Ordering::SeqCst);
                let status = response.status();
                let retry_after = response.headers().get(RETRY_AFTER).cloned();
                let limit = if status.is_success() {
                    DRAINED_BYTES
                } else {
                    QUOTED_BYTES + 1
                };
                let head = read_head(response, limit).await;
                METRICS
                    .http_responses
                    .with_label_values(&[&self.name, status.as_str()])
                    .inc();
                if !status.is_success() {
                    self.count("status");
                }
                if status.as_u16() == 410 {
                    tracing::warn!(sink = %self.name, url = %shown, event_id = %request_id, "the receiver says the endpoint is gone (410); deliveries are dead-lettered until the sink's url changes");
                }
                Attempt::Answered(answer(
                    status,
                    retry_after.as_ref(),
                    &head,
                    &shown,
                    SystemTime::now(),
                ))
            }
            Err(e) => {
                let attempt = failure(e, &shown, self.timeout);
                match &attempt {
                    Attempt::Unreachable(_) => self.count("connect"),
                    Attempt::Answered(_) => {
                        heard.store(true, Ordering::SeqCst);
                        self.count("timeout");
                    }
                }
                attempt
            }
        };
        self.request_seconds
            .observe(started.elapsed().as_secs_f64());
        attempt
    }
}

/// The receiver's host and port when the URL template fixes them (`https://host/x/{{ id }}`),
/// so that `connect` can check it is reachable; `None` when the host is templated.
pub(super) fn static_origin(url: &str) -> Option<(String, u16)> {
    let prefix = static_prefix(url).trim();
    let (_, rest) = prefix.split_once("://")?;
    let whole = prefix.len() == url.trim().len();
    if !whole && !rest.contains(['/', '?', '#']) {
        return None;
    }
    let parsed = reqwest::Url::parse(prefix).ok()?;
    Some((
        parsed.host_str()?.to_string(),
        parsed.port_or_known_default()?,
    ))
}

/// Up to `limit` bytes of an answer's body; a body that cannot be read counts as empty.
async fn read_head(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut head = Vec::new();
    while head.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    head
}

/// The certificates of a private CA file (PEM, one or more).
pub(super) fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Whether requests go through a proxy from the environment: then the receiver itself may not
/// be reachable directly, and `connect` does not try.
fn proxied() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

#[async_trait]
impl Sink for HttpSink {
    /// Checks that the receiver's host resolves and accepts a TCP connection, when the URL fixes
    /// it; any HTTP answer will do later, so none is asked for now.
    async fn connect(&self) -> Result<(), SinkError> {
        let Some((host, port)) = self.origin.clone().filter(|_| !proxied()) else {
            return Ok(());
        };
        let reach = async {
            let addresses = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| format!("cannot resolve {host}: {e}"))?;
            let mut last = format!("{host} resolves to no address");
            for address in addresses {
                match TcpStream::connect(address).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("cannot connect to {address}: {e}"),
                }
            }
            Err(last)
        };
        let r = &self.requests;
        let bound = r.timeout.min(CONNECT_TIMEOUT);
        let result = match tokio::time::timeout(bound, reach).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no TCP connection to {host}:{port} within {bound:?}"
            )),
        };
        match result {
            Ok(()) => {
                tracing::info!(sink = %r.name, url = %r.url, "HTTP receiver reachable");
                Ok(())
            }
            Err(e) => {
                r.count("connect");
                Err(SinkError::Unavailable(format!("{}: {e}", r.url)))
            }
        }
    }

    /// Sends the batch's requests concurrently, at most `max_in_flight` at once across batches.
    /// If the receiver could not be reached and answered nothing, the batch fails as a whole
    /// and no attempt is spent.
    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let (attempts, heard) = self.send_all(batch).await;
        let unreachable = attempts.iter().find_map(|a| match a {
            Attempt::Unreachable(reason) => Some(reason.clone()),
            Attempt::Answered(_) => None,
        });
        if let Some(reason) = unreachable {
            if !heard {
                return Err(SinkError::Unavailable(reason));
            }
        }
        Ok(attempts
            .into_iter()
            .map(|a| match a {
                Attempt::Answered(outcome) => outcome,
                Attempt::Unreachable(reason) => Outcome::Retry(reason),
            })
            .collect())
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Two batches when requests may overlap, so the next batch's requests start while the
    /// last ones of the previous batch are still out; one to keep the queue's order.
    fn max_in_flight(&self) -> usize {
        if self.max_in_flight > 1 { 2 } else { 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_static_only_when_the_host_is() {
        assert_eq!(
            static_origin("https://r.example/hooks/{{ kind }}"),
            Some(("r.example".into(), 443))
        );
        assert_eq!(
            static_origin("http://127.0.0.1:9/x"),
            Some(("127.0.0.1".into(), 9))
        );
        assert_eq!(
            static_origin("http://127.0.0.1:9"),
            Some(("127.0.0.1".into(), 9))
        );
        assert_eq!(static_origin("https://{{ properties.host }}/x"), None);
        assert_eq!(static_origin("https://r.example{{ path }}"), None);
        assert_eq!(static_origin("{{ properties.url }}"), None);
    }
}
