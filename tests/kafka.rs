//! The Kafka sink through the real binary: librdkafka's mock cluster for topics, keys, headers,
//! outages and broker errors, and tansu (a real Kafka-protocol broker) end to end.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{BASE_CONFIG, Daemon, free_port, sample};
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// One consumed message.
#[derive(Debug, Clone)]
struct Consumed {
    topic: String,
    key: Option<String>,
    headers: BTreeMap<String, String>,
    value: Value,
}

/// A daemon config with one kafka sink `bus` taking every event; `extra` goes into `[sinks.bus]`.
fn config(brokers: &str, topic: &str, extra: &str, attempts: u32) -> String {
    format!(
        r#"
{BASE_CONFIG}

[sinks.bus]
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"
key = "{{{{ id }}}}"
send_timeout = "3s"
{extra}

[sinks.bus.retry]
attempts = {attempts}
backoff = {{ first = "200ms", max = "1s" }}

[[routes]]
match = {{}}
to = ["bus"]
"#
    )
}

/// The topics `arcgis.{{ kind }}.{{ operation }}` gives the samples posted by `post_samples`.
const SAMPLE_TOPICS: &[&str] = &[
    "arcgis.portal.share",
    "arcgis.portal.delete",
    "arcgis.portal.update",
    "arcgis.feature-service.FeaturesCreated",
    "arcgis.feature-service.FeaturesUpdated",
    "arcgis.feature-service.FeaturesDeleted",
    "arcgis.feature-service.AttachmentsCreated",
];

fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    for t in SAMPLE_TOPICS {
        mock.create_topic(t, 1, 1).unwrap();
    }
    mock
}

/// Posts three samples (7 events); returns the accepted event ids.
async fn post_samples(d: &Daemon) -> Vec<String> {
    let mut ids = Vec::new();
    for (hook, name) in [
        ("portal", "portal-item-share-multi.json"),
        ("portal", "portal-group-update.json"),
        ("features", "feature-multi.json"),
    ] {
        let a = d.post_signed(hook, &sample(name)).await;
        assert_eq!(a.status, 200, "{name}: {}", a.text);
        ids.extend(a.accepted());
    }
    assert_eq!(ids.len(), 7);
    ids
}

/// Reads `topics` from the beginning until `n` messages arrived or `wait` passed.
async fn consume(brokers: &str, topics: &[&str], n: usize, wait: Duration) -> Vec<Consumed> {
    let brokers = brokers.to_string();
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "hookbridge-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for t in &topics {
            tpl.add_partition_offset(t, 0, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        while out.len() < n && Instant::now() < deadline {
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Consumed {
                topic: m.topic().to_string(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                headers,
                value: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap(),
            });
        }
        out
    })
    .await
    .unwrap()
}

/// The dead letters, read with the daemon stopped.
fn dead_letters(d: &Daemon) -> Vec<Value> {
    let out = d.cli(&["dlq", "list"]);
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

/// Waits for `/readyz` to answer 200.
async fn ready(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = d.get("/readyz").await;
        if a.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never ready: {}\n{}",
            a.text,
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn topic_key_and_headers_from_templates() {
    let mock = mock_cluster();
    let brokers = mock.bootstrap_servers();
    let d = Daemon::start(&config(
        &brokers,
        "arcgis.{{ kind }}.{{ operation }}",
        "",
        3,
    ));
    ready(&d).await;
    let ids = post_samples(&d).await;
    let got = consume(&brokers, SAMPLE_TOPICS, ids.len(), Duration::from_secs(30)).await;
    assert_eq!(got.len(), ids.len(), "{got:#?}\n{}", d.log_text());
    let mut seen = BTreeSet::new();
    for m in &got {
        let v = &m.value;
        let kind = v["kind"].as_str().unwrap();
        let operation = v["operation"].as_str().unwrap();
        assert_eq!(m.topic, format!("arcgis.{kind}.{operation}"));
        assert_eq!(
            m.key.as_deref(),
            v["id"].as_str(),
            "key is the event id field"
        );
        assert_eq!(m.headers["event_id"], v["event_id"].as_str().unwrap());
        assert_eq!(m.headers["kind"], kind);
        assert_eq!(m.headers["operation"], operation);
        assert_eq!(m.headers["source"], v["source"].as_str().unwrap());
        assert_eq!(m.headers["hook"], v["hook"].as_str().unwrap());
        seen.insert(m.headers["event_id"].clone());
    }
    assert_eq!(seen, ids.into_iter().collect::<BTreeSet<_>>());
    let delete = got
        .iter()
        .find(|m| m.topic == "arcgis.portal.delete")
        .unwrap();
    assert_eq!(
        delete.key.as_deref(),
        Some("7dd95fadaec84859ab8ed1059e675e0c")
    );
    assert_eq!(delete.headers["source"], "item");
    assert_eq!(delete.headers["hook"], "portal");
}

#[test]
fn explain_shows_topic_key_and_headers() {
    let d = Daemon::start(&config(
        "127.0.0.1:9",
        "arcgis.{{ kind }}.{{ operation }}",
        "",
        3,
    ));
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/samples/portal-item-share-multi.json");
    let out = d.cli(&["explain", "--hook", "portal", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "arcgis.portal.delete",
        "arcgis.portal.share",
        "7dd95fadaec84859ab8ed1059e675e0c",
        "event_id",
        "operation",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[tokio::test]
async fn broker_down_then_up_loses_nothing() {
    let mock = mock_cluster();
    let brokers = mock.bootstrap_servers();
    // One attempt only: were the outage spent as attempts, the events would be dead letters.
    let mut d = Daemon::start(&config(
        &brokers,
        "arcgis.{{ kind }}.{{ operation }}",
        "",
        1,
    ));
    ready(&d).await;
    mock.broker_down(1).unwrap();
    let ids = post_samples(&d).await;
    // Longer than send_timeout: the first sends time out while the broker is away.
    tokio::time::sleep(Duration::from_secs(5)).await;
    mock.broker_up(1).unwrap();
    let got = consume(&brokers, SAMPLE_TOPICS, ids.len(), Duration::from_secs(40)).await;
    let seen: BTreeSet<_> = got.iter().map(|m| m.headers["event_id"].clone()).collect();
    assert_eq!(
        seen,
        ids.into_iter().collect::<BTreeSet<_>>(),
        "{}",
        d.log_text()
    );
    assert!(
        d.log_text().contains("sink unavailable"),
        "the outage was not seen as one:\n{}",
        d.log_text()
    );
    assert!(d.stop().success());
    assert!(dead_letters(&d).is_empty());
}

#[tokio::test]
async fn readyz_waits_for_the_cluster_and_events_wait_for_it() {
    let mock = mock_cluster();
    let brokers = mock.bootstrap_servers();
    mock.broker_down(1).unwrap();
    let d = Daemon::start(&config(
        &brokers,
        "arcgis.{{ kind }}.{{ operation }}",
        "",
        1,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = d.get("/readyz").await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert!(a.text.contains("bus"), "{}", a.text);
    // Accepted while the sink is not connected: durable, sent once it is.
    let ids = post_samples(&d).await;
    mock.broker_up(1).unwrap();
    ready(&d).await;
    let got = consume(&brokers, SAMPLE_TOPICS, ids.len(), Duration::from_secs(30)).await;
    let seen: BTreeSet<_> = got.iter().map(|m| m.headers["event_id"].clone()).collect();
    assert_eq!(
        seen,
        ids.into_iter().collect::<BTreeSet<_>>(),
        "{}",
        d.log_text()
    );
}

#[tokio::test]
async fn transient_produce_errors_are_retried() {
    let mock = mock_cluster();
    let brokers = mock.bootstrap_servers();
    let d = Daemon::start(&config(
        &brokers,
        "arcgis.{{ kind }}.{{ operation }}",
        "",
        5,
    ));
    ready(&d).await;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        ],
    );
    let ids = post_samples(&d).await;
    let got = consume(&brokers, SAMPLE_TOPICS, ids.len(), Duration::from_secs(30)).await;
    let seen: BTreeSet<_> = got.iter().map(|m| m.headers["event_id"].clone()).collect();
    assert_eq!(
        seen,
        ids.into_iter().collect::<BTreeSet<_>>(),
        "{}",
        d.log_text()
    );
    mock.clear_request_errors(RDKafkaApiKey::Produce);
}

#[tokio::test]
async fn unknown_topic_is_a_dead_letter_with_the_reason() {
    let mock = mock_cluster();
    let brokers = mock.bootstrap_servers();
    let mut d = Daemon::start(&config(
        &brokers,
        "missing.{{ kind }}",
        r#"options = { "allow.auto.create.topics" = "false" }"#,
        5,
    ));
    ready(&d).await;
    let a = d
        .post_signed("portal", &sample("portal-group-update.json"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let id = a.accepted()[0].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log_text().contains("dead-lettered") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.stop().success());
    let dead = dead_letters(&d);
    assert_eq!(dead.len(), 1, "{dead:#?}\n{}", d.log_text());
    assert_eq!(dead[0]["sink"], "bus");
    assert_eq!(dead[0]["event"]["event_id"], id.as_str());
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("missing.portal") && error.contains("Unknown"),
        "reason: {error}"
    );
}

#[tokio::test]
async fn message_too_large_is_a_dead_letter_with_the_reason() {
    let mock = mock_cluster();
    let brokers = mock.bootstrap_servers();
    // librdkafka's smallest message.max.bytes; the padded value is over it.
    let mut d = Daemon::start(&config(
        &brokers,
        "arcgis.{{ kind }}.{{ operation }}",
        r#"options = { "message.max.bytes" = "1000" }
payload = "template"
payload_template = "{% for i in range(end=1200) %}x{% endfor %}""#,
        5,
    ));
    ready(&d).await;
    let a = d
        .post_signed("portal", &sample("portal-group-update.json"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log_text().contains("dead-lettered") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.stop().success());
    let dead = dead_letters(&d);
    assert_eq!(dead.len(), 1, "{dead:#?}\n{}", d.log_text());
    let error = dead[0]["error"].as_str().unwrap();
    assert!(error.contains("MessageSizeTooLarge"), "reason: {error}");
    assert_eq!(dead[0]["attempts"], 1, "a permanent error is not retried");
}

/// A `tansu broker` child process with in-memory storage, killed on drop.
struct Tansu {
    child: std::process::Child,
    brokers: String,
    log: tempfile::NamedTempFile,
}

impl Tansu {
    /// Starts tansu on a free port; fails the test with how to install it when it is missing.
    fn start() -> Tansu {
        let found = std::process::Command::new("tansu")
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "tansu (a Kafka-compatible broker) is not on PATH: run .ci/setup/kafka.sh \
             (cargo install --locked tansu --version 0.6.0 --features dynostore)"
        );
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new("tansu")
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let mut t = Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&t.brokers).is_err() {
            if let Ok(Some(status)) = t.child.try_wait() {
                panic!("tansu exited at start ({status}):\n{}", t.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen:\n{}",
                t.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates single-partition topics through the Kafka admin API.
    async fn create_topics(&self, topics: &[&str]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .unwrap();
        let new: Vec<_> = topics
            .iter()
            .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for r in admin.create_topics(&new, &opts).await.unwrap() {
            if let Err((topic, e)) = r {
                panic!("create topic {topic}: {e}\n{}", self.log_text());
            }
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tansu_end_to_end() {
    let tansu = Tansu::start();
    tansu.create_topics(SAMPLE_TOPICS).await;
    let mut d = Daemon::start(&config(
        &tansu.brokers,
        "arcgis.{{ kind }}.{{ operation }}",
        "",
        5,
    ));
    ready(&d).await;
    let ids: BTreeSet<_> = post_samples(&d).await.into_iter().collect();
    let got = consume(
        &tansu.brokers,
        SAMPLE_TOPICS,
        ids.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        got.len(),
        ids.len(),
        "{got:#?}\ndaemon:\n{}\ntansu:\n{}",
        d.log_text(),
        tansu.log_text()
    );
    for m in &got {
        let v = &m.value;
        let (kind, operation) = (
            v["kind"].as_str().unwrap(),
            v["operation"].as_str().unwrap(),
        );
        assert_eq!(m.topic, format!("arcgis.{kind}.{operation}"));
        assert_eq!(m.key.as_deref(), v["id"].as_str());
        assert_eq!(m.headers["event_id"], v["event_id"].as_str().unwrap());
        assert_eq!(m.headers["hook"], v["hook"].as_str().unwrap());
        assert_eq!(m.headers["source"], v["source"].as_str().unwrap());
    }
    let seen: BTreeSet<_> = got.iter().map(|m| m.headers["event_id"].clone()).collect();
    assert_eq!(seen, ids);
    assert!(d.stop().success());
    assert!(dead_letters(&d).is_empty());
}

/// `q`-quantile of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn bench_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A portal payload with one event no other call produces, `operation` naming its topic; the
/// padding brings the message hookbridge produces to about 1 KB.
fn portal_event(n: usize, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "info": { "webhookName": "bench", "when": 1_700_000_000_000u64 + n as u64 },
        "events": [{
            "username": "tester",
            "when": 1_700_000_000_000u64 + n as u64,
            "operation": operation,
            "source": "item",
            "id": format!("{:032x}", rand::random::<u128>()),
            "properties": { "note": "x".repeat(500) }
        }]
    }))
    .unwrap()
}

/// Reads `topic` from the beginning in a thread until `n` distinct `event_id` headers arrived (or
/// nothing came for 60 s): when each first arrived, and the mean value size.
fn arrivals(
    brokers: &str,
    topic: &str,
    n: usize,
) -> tokio::task::JoinHandle<(BTreeMap<String, Instant>, usize)> {
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "hookbridge-bench")
            .set("enable.auto.commit", "false")
            // Fetch as soon as something is there: the default waits up to 500 ms.
            .set("fetch.wait.max.ms", "10")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut arrived = BTreeMap::new();
        let mut bytes = 0;
        let mut last = Instant::now();
        while arrived.len() < n && last.elapsed() < Duration::from_secs(60) {
            let Some(m) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.unwrap();
            let now = Instant::now();
            last = now;
            let id = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "event_id"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .expect("event_id header");
            bytes += m.payload().map_or(0, |p| p.len());
            arrived.entry(id).or_insert(now);
        }
        let mean = bytes / arrived.len().max(1);
        (arrived, mean)
    })
}

/// Pauses or resumes sink `bus` through the admin API.
async fn set_paused(d: &Daemon, paused: bool) {
    let verb = if paused { "pause" } else { "resume" };
    let r = reqwest::Client::new()
        .post(format!("{}/admin/sinks/bus/{verb}", d.url))
        .bearer_auth(BENCH_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{verb}: {}", r.text().await.unwrap());
}

const BENCH_TOKEN: &str = "bench-admin-token";

/// Posts `n` portal events with `operation`, `clients` at a time: each accepted id with when its
/// post started and how long it took to answer, and how long all the posts took.
async fn post_events(
    d: &Daemon,
    n: usize,
    clients: usize,
    operation: &str,
) -> (Vec<(String, Instant, Duration)>, Duration) {
    let started = Instant::now();
    let posted: Vec<(String, Instant, Duration)> = futures::stream::iter(0..n)
        .map(|i| async move {
            let body = portal_event(i, operation);
            let sent = Instant::now();
            let a = d.post_signed("portal", &body).await;
            assert_eq!(a.status, 200, "{}", a.text);
            (a.accepted()[0].clone(), sent, sent.elapsed())
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    (posted, started.elapsed())
}

/// The raw producer's rate, then hookbridge's, on the cluster at `brokers` (topics `bench.raw`,
/// `bench.update` and `bench.share` exist).
async fn bench_on(label: &str, brokers: &str) {
    let n = bench_env("HOOKBRIDGE_BENCH_N", 2000);
    let clients = bench_env("HOOKBRIDGE_BENCH_CLIENTS", 32);

    // The raw client with the sink's settings: N ~1 KB sends enqueued at once, then every
    // delivery report awaited.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        // Room for any N at once (the default queue holds 100,000).
        .set("queue.buffering.max.messages", "10000000")
        .create()
        .unwrap();
    let value = vec![b'x'; 1024];
    let keys: Vec<String> = (0..n).map(|i| format!("{i:032x}")).collect();
    // Warm up: the metadata and the idempotent producer id are not part of the rate.
    producer
        .send_result(FutureRecord::to("bench.raw").key("warm-up").payload(&value))
        .map_err(|(e, _)| e)
        .unwrap()
        .await
        .unwrap()
        .map_err(|(e, _)| e)
        .unwrap();
    let started = Instant::now();
    // Like the sink's batches: enqueue with `send_result`, then await each acknowledgement.
    let acks: Vec<_> = keys
        .iter()
        .map(|key| {
            let record = FutureRecord::to("bench.raw").key(key).payload(&value);
            producer.send_result(record).map_err(|(e, _)| e).unwrap()
        })
        .collect();
    for ack in acks {
        ack.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let raw_rate = n as f64 / started.elapsed().as_secs_f64();
    drop(producer);

    // Through hookbridge: signed posts until the consumer has every event.
    let d = Daemon::start(
        // The default send_timeout (30 s), as the raw producer's message.timeout.ms.
        &config(brokers, "bench.{{ operation }}", "", 5)
            .replace("send_timeout = \"3s\"", "send_timeout = \"30s\"")
            .replace(
                "[storage]",
                &format!("admin_token = \"{BENCH_TOKEN}\"\n\n[storage]"),
            ),
    );
    ready(&d).await;
    let consumer = arrivals(brokers, "bench.update", n);
    // Let the consumer join before the first message can arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let (posted, accepted_in) = post_events(&d, n, clients, "update").await;
    let (arrived, size) = consumer.await.unwrap();
    assert_eq!(
        arrived.len(),
        n,
        "not every event arrived\n{}",
        d.log_text()
    );
    let last = arrived.values().max().copied().unwrap();
    let rate = n as f64 / (last - started).as_secs_f64();
    let mut latencies: Vec<Duration> = posted
        .iter()
        .map(|(id, sent, _)| arrived[id].saturating_duration_since(*sent))
        .collect();
    latencies.sort();
    let mut answers: Vec<Duration> = posted.iter().map(|p| p.2).collect();
    answers.sort();
    let accept_rate = n as f64 / accepted_in.as_secs_f64();

    // The sink alone: N deliveries queue while it is paused, then it drains them.
    set_paused(&d, true).await;
    let (posted, _) = post_events(&d, n, clients, "share").await;
    assert_eq!(posted.len(), n);
    let consumer = arrivals(brokers, "bench.share", n);
    // Let the consumer join before the first message can arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resumed = Instant::now();
    set_paused(&d, false).await;
    let (arrived, _) = consumer.await.unwrap();
    assert_eq!(
        arrived.len(),
        n,
        "not every queued event arrived\n{}",
        d.log_text()
    );
    let first = arrived.values().min().copied().unwrap();
    let last = arrived.values().max().copied().unwrap();
    let drain = (n - 1) as f64 / (last - first).as_secs_f64();
    let from_resume = n as f64 / (last - resumed).as_secs_f64();

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let pct = |v: &[Duration]| {
        format!(
            "p50 {}, p90 {}, p99 {}, max {}",
            ms(quantile(v, 0.5)),
            ms(quantile(v, 0.9)),
            ms(quantile(v, 0.99)),
            ms(v[v.len() - 1])
        )
    };
    println!(
        "kafka bench on {label}, {n} events, {clients} clients ({} build)\n  \
         raw rdkafka producer (acks=all, idempotent, 1 KiB): {raw_rate:.0} msg/s\n  \
         hookbridge accept rate:               {accept_rate:.0} events/s ({:.3} of raw)\n  \
         post answered (accept) latency        {}\n  \
         first post to last consumed:          {rate:.0} events/s ({:.3} of raw; {size} B messages)\n  \
         post-to-consumer latency              {}\n  \
         sink draining a backlog:              {drain:.0} events/s first to last consumed ({:.3} of raw), \
         {from_resume:.0} events/s from resume ({:.3} of raw)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        accept_rate / raw_rate,
        pct(&answers),
        rate / raw_rate,
        pct(&latencies),
        drain / raw_rate,
        from_resume / raw_rate,
    );
}

const BENCH_TOPICS: &[&str] = &["bench.raw", "bench.update", "bench.share"];

/// Accept-to-consumer throughput and latency through the daemon, next to rdkafka's own
/// acknowledged produce rate on the same broker, on tansu and on librdkafka's mock cluster. Run
/// with `cargo test --test kafka bench -- --ignored --nocapture` (N from `HOOKBRIDGE_BENCH_N`,
/// concurrent clients from `HOOKBRIDGE_BENCH_CLIENTS`).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly"]
async fn bench_accept_to_confirm() {
    let tansu = Tansu::start();
    tansu.create_topics(BENCH_TOPICS).await;
    bench_on("tansu (memory storage)", &tansu.brokers).await;
    drop(tansu);

    let mock = MockCluster::new(1).unwrap();
    for t in BENCH_TOPICS {
        mock.create_topic(t, 1, 1).unwrap();
    }
    bench_on("rdkafka mock cluster", &mock.bootstrap_servers()).await;
}
