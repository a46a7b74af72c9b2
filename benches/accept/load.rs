//! The load generator (closed loop, optionally paced), its percentiles, and the probes every
//! phase shares: the daemon's metrics and admin API, RSS, disk use, ports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Event ids acknowledged, with when each request was due.
pub type Sent = Arc<Mutex<Vec<(String, Instant)>>>;

/// The key every hook of the benchmark configs is signed with.
pub const KEY: &str = "bench-signature-key";

/// `x-esriHook-Signature` of `body` with [`KEY`].
pub fn sign(body: &[u8]) -> String {
    hookbridge::signature::arcgis::sign(KEY.as_bytes(), body)
}

/// One request of a load.
pub struct Request {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// The `x-esriHook-Signature` header value.
    pub signature: String,
}

/// Builds request number `n` of a load; every `n` gives a body no other `n` gives.
pub type Bodies = Arc<dyn Fn(u64) -> Request + Send + Sync>;

/// What a load measured: answered requests per second and their latency percentiles (ms).
pub struct Run {
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub ok: u64,
    pub errors: u64,
}

/// `clients` keep-alive connections posting to `url` for `seconds` (or until `limit` requests).
pub struct Load {
    url: String,
    clients: usize,
    seconds: u64,
    target: Option<f64>,
    limit: u64,
    sent: Option<Sent>,
    bodies: Bodies,
}

impl Load {
    /// As fast as the server answers, for `seconds`.
    pub fn new(url: &str, clients: usize, seconds: u64, bodies: Bodies) -> Load {
        Load {
            url: url.to_string(),
            clients,
            seconds,
            target: None,
            limit: u64::MAX,
            sent: None,
            bodies,
        }
    }

    /// Requests paced to `rate` per second; latency counts from each request's scheduled time
    /// (no coordinated omission).
    pub fn paced(mut self, rate: f64) -> Load {
        self.target = Some(rate);
        self
    }

    /// Stop after `n` requests (or `seconds`, whichever comes first).
    pub fn limit(mut self, n: u64) -> Load {
        self.limit = n;
        self
    }

    /// Record the first accepted event id of each answered request with its scheduled time.
    pub fn record(mut self, sent: Sent) -> Load {
        self.sent = Some(sent);
        self
    }

    pub async fn run(self) -> Run {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(self.clients)
            .build()
            .expect("client");
        let start = Instant::now();
        let end = start + Duration::from_secs(self.seconds);
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..self.clients {
            let (client, url, counter) = (client.clone(), self.url.clone(), counter.clone());
            let (sent, bodies, target, limit) = (
                self.sent.clone(),
                self.bodies.clone(),
                self.target,
                self.limit,
            );
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                loop {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    if n >= limit {
                        break;
                    }
                    let scheduled = match target {
                        Some(rate) => start + Duration::from_secs_f64(n as f64 / rate),
                        None => Instant::now(),
                    };
                    if scheduled >= end {
                        break;
                    }
                    if let Some(d) = scheduled.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(d).await;
                    }
                    let request = bodies(n);
                    let r = client
                        .post(&url)
                        .header("content-type", request.content_type)
                        .header("x-esriHook-Signature", request.signature)
                        .body(request.body)
                        .timeout(Duration::from_secs(60))
                        .send()
                        .await;
                    match r {
                        Ok(resp) if resp.status().is_success() => {
                            let body = resp.bytes().await.unwrap_or_default();
                            lat.push(scheduled.elapsed().as_secs_f64() * 1000.0);
                            if let Some(sent) = &sent {
                                let v: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                if let Some(id) = v["accepted"][0].as_str() {
                                    sent.lock().expect("lock").push((id.to_string(), scheduled));
                                }
                            }
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            if let Ok((l, e)) = t.await {
                all.extend(l);
                errors += e;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_by(|a, b| a.total_cmp(b));
        Run {
            rate: all.len() as f64 / elapsed,
            p50: percentile(&all, 0.50),
            p99: percentile(&all, 0.99),
            p999: percentile(&all, 0.999),
            ok: all.len() as u64,
            errors,
        }
    }
}

/// The value at quantile `p` of `sorted` (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The client of the metrics and admin calls, built once: building one loads the TLS roots
/// from disk, which at a poll every 10 ms took a third of a core from the daemon being timed.
/// It keeps no idle connection, so it serves any runtime.
fn poll_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("http client")
    })
}

/// The daemon's `/metrics` text (empty when it does not answer).
pub async fn metrics_text(port: u16) -> String {
    match poll_client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Sum of the samples of metric `name` whose labels contain every `filter` (`sink="bus"`);
/// `None` when no sample matches.
pub fn metric(text: &str, name: &str, filters: &[&str]) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && filters.iter().all(|f| l.contains(f))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// POSTs to an admin endpoint of the benchmark daemon (token "bench-admin-token-0123").
pub async fn admin_post(port: u16, path: &str) {
    let ok = poll_client()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth("bench-admin-token-0123")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(ok, "admin call {path} failed");
}

/// Waits (up to `limit`) until `sink` has no pending deliveries, polling the metrics gauge every
/// `every` (the gauge costs nothing, unlike `/admin/queue`, which scans the store); returns how
/// long that took and whether it got there.
pub async fn wait_drained(
    port: u16,
    sink: &str,
    every: Duration,
    limit: Duration,
) -> (Duration, bool) {
    let started = Instant::now();
    let filter = format!("sink=\"{sink}\"");
    while started.elapsed() < limit {
        let text = metrics_text(port).await;
        if metric(&text, "hookbridge_queue_pending_deliveries", &[&filter]) == Some(0.0) {
            return (started.elapsed(), true);
        }
        tokio::time::sleep(every).await;
    }
    (started.elapsed(), false)
}

/// Mean requests per group commit and mean commit time (ms), from the daemon's metrics.
pub async fn commit_figures(port: u16) -> (f64, f64) {
    let text = metrics_text(port).await;
    let value = |name: &str| metric(&text, name, &[]).unwrap_or(0.0);
    let commits = value("hookbridge_commit_batch_requests_count").max(1.0);
    (
        value("hookbridge_commit_batch_requests_sum") / commits,
        value("hookbridge_commit_fsync_duration_seconds_sum") * 1000.0 / commits,
    )
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Signed, unique ~1 KB portal payloads of run `run` (one event each).
pub fn portal(run: u64) -> Bodies {
    Arc::new(move |n| {
        let body = portal_payload(run, n);
        Request {
            signature: sign(&body),
            body,
            content_type: "application/json",
        }
    })
}

/// A unique portal payload of about 1 KB: run `run`, request `n`.
pub fn portal_payload(run: u64, n: u64) -> Vec<u8> {
    format!(
        r#"{{"info":{{"webhookName":"bench","webhookId":"72fed926aeb74c9ca8a22aacddc6725a","portalURL":"https://gis.example.org/portal/","when":1700000000000}},"events":[{{"username":"bench","userId":"173dd04b69134bdf99c5000aad0b6298","when":{n},"operation":"update","source":"item","id":"item-{run}-{n:012}","properties":{{"padding":"{pad}"}}}}]}}"#,
        pad = "x".repeat(700)
    )
    .into_bytes()
}
