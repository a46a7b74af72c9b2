//! The MQTT sink through the real binary, against real Mosquitto: the machine's (127.0.0.1:1883,
//! MQTT v5; `.ci/setup/mqtt.sh` starts it) for topics, properties, order and hostile topics,
//! and a `mosquitto` of the test's own, stopped and started mid-run. Messages are read by a
//! rumqttc v5 subscriber with a persistent session of its own.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BASE_CONFIG, Daemon, free_port};
use futures::StreamExt;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;

/// One message the subscriber got.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    retain: bool,
    qos: QoS,
    correlation: Option<Bytes>,
    user: Vec<(String, String)>,
    content_type: Option<String>,
    body: Value,
}

impl Got {
    fn user(&self, key: &str) -> String {
        self.user
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no user property {key}: {self:?}"))
    }
    fn id(&self) -> String {
        self.user("event_id")
    }
}

/// Fails under CI (with what to install), and says loudly that the test did not run elsewhere.
fn missing(what: &str) -> bool {
    let msg = format!(
        "{what}: run .ci/setup/mqtt.sh (apt-get install mosquitto; mosquitto -d -c /etc/mosquitto/mosquitto.conf)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!! NOT RUN: {msg} !!!!!!!!\n");
    true
}

/// Whether the machine's broker answers on 1883.
fn machine() -> bool {
    std::net::TcpStream::connect("127.0.0.1:1883").is_ok()
        || !missing("no MQTT broker at 127.0.0.1:1883")
}

/// A subscriber to `filter` on `port` (QoS 2, a persistent session `id`), collecting messages.
struct Subscriber {
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    async fn start(port: u16, filter: &str) -> Subscriber {
        let id = format!("hbtest-sub-{:08x}", rand::random::<u32>());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(600));
        let (client, mut events) = AsyncClient::new(options, 1024);
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let filter = filter.to_string();
        let sink = got.clone();
        let task = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let _client = client.clone();
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(filter.clone(), QoS::ExactlyOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let props = p.properties.clone().unwrap_or_default();
                        sink.lock().unwrap().push(Got {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            retain: p.retain,
                            qos: p.qos,
                            correlation: props.correlation_data,
                            user: props.user_properties,
                            content_type: props.content_type,
                            body: serde_json::from_slice(&p.payload).unwrap_or(Value::Null),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .expect("the subscriber did not subscribe within 10 s")
            .unwrap();
        Subscriber { got, task }
    }

    /// What arrived, once `n` distinct event ids did or `wait` passed.
    async fn wait(&self, n: usize, wait: Duration) -> Vec<Got> {
        let deadline = Instant::now() + wait;
        loop {
            let got = self.got.lock().unwrap().clone();
            let ids: BTreeSet<String> = got.iter().map(Got::id).collect();
            if ids.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A daemon config with one mqtt sink `bus` taking every event; `extra` goes into `[sinks.bus]`.
fn config(port: u16, prefix: &str, extra: &str) -> String {
    format!(
        r#"
{BASE_CONFIG}

[sinks.bus]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
topic = "{prefix}/{{{{ kind }}}}/{{{{ operation }}}}"
client_id = "{prefix}-bus"
timeout = "3s"
{extra}

[sinks.bus.retry]
attempts = 5
backoff = {{ first = "100ms", max = "1s" }}

[[routes]]
match = {{}}
to = ["bus"]
"#
    )
}

fn prefix() -> String {
    format!("hbtest-{:012x}", rand::random::<u64>() >> 16)
}

/// A portal payload with one event of `operation` that no other call produces.
fn portal_event(n: usize, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "info": { "webhookName": "mqtt", "when": 1_700_000_000_000u64 + n as u64 },
        "events": [{
            "username": "tester",
            "when": 1_700_000_000_000u64 + n as u64,
            "operation": operation,
            "source": "item",
            "id": format!("{:032x}", rand::random::<u128>()),
            "properties": {}
        }]
    }))
    .unwrap()
}

/// Sum of a metric's samples whose line contains every `filter` string.
async fn metric(d: &Daemon, name: &str, filters: &[&str]) -> f64 {
    d.get("/metrics")
        .await
        .text
        .lines()
        .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn topics_properties_and_order() {
    if !machine() {
        return;
    }
    let prefix = prefix();
    let sub = Subscriber::start(1883, &format!("{prefix}/#")).await;
    let d = Daemon::start(&config(1883, &prefix, "qos = 2"));
    let mut accepted = Vec::new();
    for (hook, file) in [
        ("portal", "portal-item-share-multi.json"),
        ("features", "feature-multi.json"),
        ("portal", "portal-group-update.json"),
    ] {
        let a = d.post_signed(hook, &common::sample(file)).await;
        assert_eq!(a.status, 200, "{file}: {}", a.text);
        accepted.extend(a.accepted());
    }
    let got = sub.wait(accepted.len(), Duration::from_secs(20)).await;
    let ids: Vec<String> = got.iter().map(Got::id).collect();
    assert_eq!(
        ids,
        accepted,
        "in acceptance order, once each (QoS 2); daemon log:\n{}",
        d.log_text()
    );
    for m in &got {
        let b = &m.body;
        assert_eq!(b["event_id"], m.id().as_str());
        assert_eq!(m.correlation.as_deref(), Some(m.id().as_bytes()));
        assert_eq!(m.user("kind"), b["kind"].as_str().unwrap());
        assert_eq!(m.user("source"), b["source"].as_str().unwrap());
        assert_eq!(m.user("operation"), b["operation"].as_str().unwrap());
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert!(!m.retain);
        assert_eq!(m.qos, QoS::ExactlyOnce);
        assert_eq!(
            m.topic,
            format!(
                "{prefix}/{}/{}",
                b["kind"].as_str().unwrap(),
                b["operation"].as_str().unwrap()
            )
        );
    }
}

#[tokio::test]
async fn hostile_topic_values_become_dead_letters_never_topics() {
    if !machine() {
        return;
    }
    let prefix = prefix();
    let sub = Subscriber::start(1883, "#").await;
    let mut d = Daemon::start(&config(1883, &prefix, ""));
    let mut hostile = BTreeSet::new();
    for (i, op) in ["a/b", "+", "#", "", "nul\u{0}byte", "line\nbreak"]
        .iter()
        .enumerate()
    {
        let a = d.post_signed("portal", &portal_event(i, op)).await;
        assert_eq!(a.status, 200, "{op:?}: {}", a.text);
        hostile.extend(a.accepted());
    }
    let good = d
        .post_signed("portal", &portal_event(99, "update"))
        .await
        .accepted();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&d, "hookbridge_deliveries_total", &["outcome=\"dead\""]).await
        < hostile.len() as f64
    {
        assert!(
            Instant::now() < deadline,
            "no dead letters:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = sub.wait(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ours: Vec<Got> = sub
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|g| {
            g.topic.starts_with(&prefix)
                || g.user
                    .iter()
                    .any(|(k, v)| k == "event_id" && hostile.contains(v))
        })
        .cloned()
        .collect();
    assert!(!got.is_empty());
    assert_eq!(ours.len(), 1, "{ours:#?}");
    assert_eq!(ours[0].id(), good[0]);
    assert!(d.stop().success());
    let out = d.cli(&["dlq", "list"]);
    let letters: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids: BTreeSet<String> = letters
        .iter()
        .map(|l| l["event"]["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, hostile);
    for l in &letters {
        let error = l["error"].as_str().unwrap();
        assert!(
            error.contains("topic") && error.contains("not sent"),
            "{error}"
        );
    }
}

/// A `mosquitto` of the test's own on a free port; stopped and started again by the test,
/// killed on drop.
struct OwnBroker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnBroker {
    fn binary() -> Option<&'static str> {
        ["mosquitto", "/usr/sbin/mosquitto"]
            .into_iter()
            .find(|b| Command::new(b).arg("-h").output().is_ok())
    }

    fn start() -> Option<OwnBroker> {
        Self::start_with("")
    }

    /// A broker whose config adds `extra` to its listener's lines.
    fn start_with(extra: &str) -> Option<OwnBroker> {
        if Self::binary().is_none() {
            missing("mosquitto is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Persistence on: a restarted broker keeps sessions, as a production one does.
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\n{extra}\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut b = OwnBroker {
            child: None,
            port,
            dir,
        };
        b.up();
        Some(b)
    }

    fn up(&mut self) {
        let child = Command::new(Self::binary().unwrap())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (mosquitto saves its sessions), and waits for the exit.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn a_broker_restart_mid_run_loses_nothing() {
    let Some(mut broker) = OwnBroker::start() else {
        return;
    };
    let prefix = prefix();
    let sub = Subscriber::start(broker.port, &format!("{prefix}/#")).await;
    let d = Daemon::start(&config(broker.port, &prefix, ""));
    let n = 80;
    let posting = async {
        let mut accepted = BTreeSet::new();
        for i in 0..n {
            let a = d.post_signed("portal", &portal_event(i, "update")).await;
            assert_eq!(a.status, 200, "{}", a.text);
            accepted.extend(a.accepted());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        accepted
    };
    let outage = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        broker.down();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        broker.up();
    };
    let (accepted, ()) = tokio::join!(posting, outage);
    let got = sub.wait(n, Duration::from_secs(60)).await;
    let ids: BTreeSet<String> = got.iter().map(Got::id).collect();
    assert_eq!(ids, accepted, "daemon log:\n{}", d.log_text());
    eprintln!(
        "Mosquitto stopped and started under posting: {} accepted, all delivered, {} messages seen (duplicates at least once allows: {})",
        accepted.len(),
        got.len(),
        got.len() - ids.len()
    );
    assert!(
        d.log_text().contains("sink unavailable"),
        "the sink never noticed the outage:\n{}",
        d.log_text()
    );
}

#[tokio::test]
async fn sigkill_while_sending_loses_nothing() {
    // A broker of the test's own that queues without limit for the subscriber: Mosquitto's
    // default (`max_queued_messages 1000`) drops messages to a subscriber that falls behind
    // 1 000 messages and the resends after the kill, which is the broker's loss, not ours.
    let Some(broker) = OwnBroker::start_with("max_queued_messages 0") else {
        return;
    };
    let prefix = prefix();
    let sub = Subscriber::start(broker.port, &format!("{prefix}/#")).await;
    let token = "mqtt-test-admin-token-0123";
    let text = config(broker.port, &prefix, "").replacen(
        "[server]\n",
        &format!("[server]\nadmin_token = \"{token}\"\n"),
        1,
    );
    let mut d = Daemon::start(&text);
    let admin = |path: &'static str| {
        let url = format!("{}{path}", d.url);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("admin call");
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
    };
    // A backlog (the sink paused), then the kill once the subscriber got part of it.
    admin("/admin/sinks/bus/pause").await;
    let n = 1000;
    let answers: Vec<common::Answer> = futures::stream::iter(0..n)
        .map(|i| {
            let d = &d;
            async move { d.post_signed("portal", &portal_event(i, "update")).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut accepted = BTreeSet::new();
    for a in answers {
        assert_eq!(a.status, 200, "{}", a.text);
        accepted.extend(a.accepted());
    }
    admin("/admin/sinks/bus/resume").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sub.got.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "nothing sent:\n{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    d.kill9();
    let before = sub.got.lock().unwrap().len();
    d.spawn();
    let got = sub.wait(n, Duration::from_secs(60)).await;
    let ids: BTreeSet<String> = got.iter().map(Got::id).collect();
    assert_eq!(ids, accepted, "daemon log:\n{}", d.log_text());
    eprintln!(
        "SIGKILL with {before} of {n} received: all {n} delivered after the restart, {} duplicates",
        got.len() - ids.len()
    );
}

#[tokio::test]
async fn mqtt_3_1_1_when_asked() {
    if !machine() {
        return;
    }
    let prefix = prefix();
    let sub = Subscriber::start(1883, &format!("{prefix}/#")).await;
    let d = Daemon::start(&config(1883, &prefix, "protocol = \"3.1.1\""));
    let a = d
        .post_signed("portal", &common::sample("portal-item-share-multi.json"))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let ids = a.accepted();
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got = sub.got.lock().unwrap().clone();
        if got.len() >= ids.len() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bodies: Vec<String> = got
        .iter()
        .map(|g| g.body["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(bodies, ids, "daemon log:\n{}", d.log_text());
    // 3.1.1 has no properties: the event id travels in the body only.
    assert!(
        got.iter()
            .all(|g| g.user.is_empty() && g.correlation.is_none())
    );
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.key_pair.serialize_pem()).unwrap();
    let extra = format!("certfile {}\nkeyfile {}", cert.display(), key.display());
    let Some(broker) = OwnBroker::start_with(&extra) else {
        return;
    };
    let prefix = prefix();
    let text = config(
        broker.port,
        &prefix,
        &format!("ca = \"{}\"", cert.display()),
    )
    .replace("mqtt://127.0.0.1", "mqtts://127.0.0.1");
    let mut d = Daemon::start(&text);
    let a = d.post_signed("portal", &portal_event(1, "update")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        &d,
        "hookbridge_deliveries_total",
        &["outcome=\"delivered\""],
    )
    .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "not delivered over TLS:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.stop().success());
}
