//! Helpers for the change feed tests: configs, ArcGIS deliveries, waiting, secret checks.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use super::common::{BASE_CONFIG, Daemon};
use super::server::{self, Arcgis};

/// Admin token for replays.
pub const ADMIN: &str = "admin-token-0123456789abcdef";

/// `[arcgis.online]` with OAuth2 app credentials against `a`; `extra` adds keys.
pub fn app_connection(a: &Arcgis, extra: &str) -> String {
    connection_at(&a.base, extra)
}

/// `[arcgis.online]` with OAuth2 app credentials against the portal at `base`.
pub fn connection_at(base: &str, extra: &str) -> String {
    format!(
        r#"
[arcgis.online]
portal = "{base}"
services = ["{base}/rest/services/"]
client_id = "{id}"
client_secret = "env:FEED_CLIENT_SECRET"
poll_interval = "50ms"
fetch_timeout = "1s"
{extra}
"#,
        id = server::CLIENT_ID,
    )
}

/// A config: base hooks, an admin token, `arcgis`, `sinks`, one route from `features` to `to`.
pub fn config(arcgis: &str, sinks: &str, to: &str) -> String {
    let base = BASE_CONFIG.replace(
        "[server]\n",
        &format!("[server]\nadmin_token = \"{ADMIN}\"\n"),
    );
    format!(
        r#"{base}
{arcgis}
{sinks}

[[routes]]
match = {{ hook = "features" }}
to = [{to}]
"#
    )
}

/// A file sink named `name` writing to `{{dir}}/out/NAME.jsonl`, with `extra` keys.
pub fn file_sink(name: &str, extra: &str) -> String {
    format!(
        r#"
[sinks.{name}]
type = "file"
path = "{{dir}}/out/{name}.jsonl"
{extra}

[sinks.{name}.retry]
attempts = 3
backoff = {{ first = "100ms", max = "300ms" }}
"#
    )
}

pub fn start(cfg: &str) -> Daemon {
    Daemon::start_env(cfg, &[("FEED_CLIENT_SECRET", server::CLIENT_SECRET)])
}

/// An ArcGIS Online feature-service delivery (the real sample's shape, its changesUrl
/// percent-encoded with lowercase hex as ArcGIS sends it) pointing at `url`; `n` makes it unique.
pub fn online_event(url: &str, n: u64) -> Vec<u8> {
    let encoded: String = url
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            other => format!("%{other:02x}"),
        })
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/real/aws-lambda-demo_agol-fs_json_FeaturesCreated_percent-encoded-changesUrl.json"
    );
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v[0]["changesUrl"] = Value::from(encoded);
    v[0]["lastUpdatedTime"] = Value::from(1620712326267u64 + n);
    serde_json::to_vec(&v).unwrap()
}

/// The real ArcGIS Enterprise delivery pointing at `url`.
pub fn enterprise_event(url: &str) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/real/esri-webhooks-samples_enterprise-fs-FeaturesCreated.json"
    );
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["changesUrl"] = Value::from(url);
    serde_json::to_vec(&v).unwrap()
}

/// Posts `body` to the `features` hook; returns the accepted event ids.
pub async fn post(d: &Daemon, body: &[u8]) -> Vec<String> {
    let a = d.post_signed("features", body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.accepted()
}

/// A counter's value from /metrics (0 when absent).
pub async fn metric(d: &Daemon, name: &str) -> u64 {
    let text = d.get("/metrics").await.text;
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits up to `secs` for `check`, then fails with the daemon's log.
pub async fn until(d: &Daemon, secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails if any token the server issued, or the client secret, is anywhere in the test
/// directory (data directory, sink files, log, config).
pub fn assert_no_secret_on_disk(d: &Daemon, a: &Arcgis) {
    let bytes = d.bytes_under("");
    let hay = String::from_utf8_lossy(&bytes);
    let seen = a.seen();
    assert!(!seen.tokens.is_empty(), "the server issued no token");
    for t in seen
        .tokens
        .iter()
        .map(String::as_str)
        .chain([server::CLIENT_SECRET, "secretpart"])
    {
        assert!(!hay.contains(t), "{t} found under the test directory");
    }
}

/// The dead letters, read with the daemon stopped.
pub fn dead_letters(d: &Daemon) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["dlq", "list", "--config"])
        .arg(&d.config)
        .env("FEED_CLIENT_SECRET", server::CLIENT_SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Reads `topic` from the beginning until `n` records arrived or 30 s passed.
pub async fn consume(brokers: &str, topic: &str, n: usize) -> Vec<(Option<String>, Value)> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "changes-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < n && Instant::now() < deadline {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.unwrap();
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap(),
            ));
        }
        out
    })
    .await
    .unwrap()
}
