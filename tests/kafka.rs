//! The Kafka sink through the real binary: librdkafka's mock cluster for topics, keys, headers,
//! outages and broker errors, and tansu (a real Kafka-protocol broker) end to end.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{BASE_CONFIG, Daemon, free_port, sample};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
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

/// The topic most tests route to: one per kind and operation.
const TOPIC: &str = "arcgis.{{ kind }}.{{ operation }}";

/// `config` with the usual topic and no extra sink keys.
fn plain_config(brokers: &str, attempts: u32) -> String {
    config(brokers, TOPIC, "", attempts)
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
timeout = "3s"
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
    let d = Daemon::start(&plain_config(&brokers, 3));
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
    let d = Daemon::start(&plain_config("127.0.0.1:9", 3));
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
    let mut d = Daemon::start(&plain_config(&brokers, 1));
    ready(&d).await;
    mock.broker_down(1).unwrap();
    let ids = post_samples(&d).await;
    // Longer than timeout: the first sends time out while the broker is away.
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
    let d = Daemon::start(&plain_config(&brokers, 1));
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
    let d = Daemon::start(&plain_config(&brokers, 5));
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
        TOPIC,
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
    let mut d = Daemon::start(&plain_config(&tansu.brokers, 5));
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

#[tokio::test]
async fn brokers_down_do_not_flood_the_log() {
    // Nothing listens on this port: librdkafka reports AllBrokersDown tens of times a second.
    let port = free_port();
    let d = Daemon::start(&plain_config(&format!("127.0.0.1:{port}"), 3));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = d.log_text();
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        loud.iter().any(|l| l.contains("librdkafka reports errors")),
        "the spell is reported once:\n{log}"
    );
    assert!(loud.len() <= 6, "{} loud lines in 6 s:\n{log}", loud.len());
    assert!(
        !log.contains("librdkafka: "),
        "librdkafka's own lines leaked:\n{log}"
    );
}
