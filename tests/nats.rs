//! The NATS JetStream sink through the real binary, against real servers: the machine's
//! (127.0.0.1:4222, JetStream on; `.ci/setup/nats.sh` starts it) for subjects, headers, order,
//! the stream check and hostile subjects, and a `nats-server -js` of the test's own, stopped
//! and started mid-run. Messages are read back from the stream by sequence.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, stream};
use common::{BASE_CONFIG, Daemon, free_port, sample};
use futures::StreamExt;
use hookbridge::event::Delivery;
use hookbridge::render::Renderer;
use hookbridge::sinks::{Outcome, Sink, SinkError, SinkSettings};
use serde_json::Value;

const URL: &str = "nats://127.0.0.1:4222";

/// Fails under CI (with what to install), and says loudly that the test did not run elsewhere.
fn missing(what: &str) -> bool {
    let msg = format!(
        "{what}: run .ci/setup/nats.sh (apt-get install nats-server; nats-server -js -a 127.0.0.1 -p 4222)"
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!! NOT RUN: {msg} !!!!!!!!\n");
    true
}

/// The machine's server, or `None` (outside CI) when it does not answer.
async fn machine() -> Option<jetstream::Context> {
    match async_nats::connect(URL).await {
        Ok(c) => Some(jetstream::new(c)),
        Err(e) => {
            missing(&format!("no NATS server at {URL} ({e})"));
            None
        }
    }
}

/// A stream of its own (subjects `PREFIX.>`), and the prefix.
async fn own_stream(js: &jetstream::Context) -> (String, String) {
    let tag = format!("{:012x}", rand::random::<u64>() >> 16);
    let name = format!("HBTEST-{tag}");
    let prefix = format!("hbtest-{tag}");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("create a stream");
    (name, prefix)
}

/// A daemon config with one nats sink `bus` taking every event; `extra` goes into `[sinks.bus]`.
fn config(url: &str, prefix: &str, extra: &str) -> String {
    format!(
        r#"
{BASE_CONFIG}

[sinks.bus]
type = "nats"
url = "{url}"
subject = "{prefix}.{{{{ kind }}}}.{{{{ operation }}}}"
ack_timeout = "3s"
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

/// Every message in `stream`, in stream order, once `n` are there or `wait` passed.
async fn read(js: &jetstream::Context, stream: &str, n: u64, wait: Duration) -> Vec<StreamMessage> {
    let s = js.get_stream(stream).await.expect("the stream");
    let deadline = Instant::now() + wait;
    loop {
        let count = s.get_info().await.map(|i| i.state.messages).unwrap_or(0);
        if count >= n || Instant::now() > deadline {
            let mut out = Vec::new();
            for seq in 1..=count {
                if let Ok(m) = s.get_raw_message(seq).await {
                    out.push(m);
                }
            }
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header(m: &StreamMessage, key: &str) -> String {
    let name: async_nats::HeaderName = key.parse().unwrap();
    m.headers
        .get(name)
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|| panic!("no header {key} in {:?}", m.headers))
}

fn body(m: &StreamMessage) -> Value {
    serde_json::from_slice(&m.payload).expect("a JSON body")
}

/// A portal payload with one event of `operation` that no other call produces.
fn portal_event(n: usize, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "info": { "webhookName": "nats", "when": 1_700_000_000_000u64 + n as u64 },
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

/// The sink outside the daemon, built from `[sinks.lib]` TOML as the config loader does.
fn library_sink(toml_text: &str) -> std::sync::Arc<dyn Sink> {
    let table: toml::Table = toml::from_str(toml_text).unwrap();
    let (config, _) =
        SinkSettings::from_table("lib", table, std::path::Path::new("."), &Default::default())
            .unwrap();
    let mut renderer = Renderer::new("templates".into());
    config
        .compile(
            "lib",
            &mut renderer,
            &hookbridge::senders::samples::events(),
        )
        .unwrap();
    config.build("lib", &renderer).unwrap()
}

fn job(event_id: &str) -> Delivery {
    let event = serde_json::from_value(serde_json::json!({
        "event_id": event_id,
        "kind": "portal",
        "source": "item",
        "operation": "update",
        "id": "i1",
        "hook": "portal",
        "accepted_at": 1_700_000_000_000u64,
    }))
    .unwrap();
    Delivery {
        seq: 1,
        attempts: 0,
        event,
        payload: std::sync::Arc::from("{}"),
    }
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

#[tokio::test]
async fn subjects_headers_order_and_duplicates_dropped() {
    let Some(js) = machine().await else { return };
    let (stream, prefix) = own_stream(&js).await;
    let d = Daemon::start(&config(URL, &prefix, &format!("stream = \"{stream}\"")));
    let mut accepted = Vec::new();
    for (hook, file) in [
        ("portal", "portal-item-share-multi.json"),
        ("features", "feature-multi.json"),
        ("portal", "portal-group-update.json"),
    ] {
        let a = d.post_signed(hook, &sample(file)).await;
        assert_eq!(a.status, 200, "{file}: {}", a.text);
        accepted.extend(a.accepted());
    }
    assert_eq!(accepted.len(), 7);
    let got = read(&js, &stream, 7, Duration::from_secs(20)).await;
    let ids: Vec<String> = got.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    assert_eq!(
        ids,
        accepted,
        "in acceptance order; daemon log:\n{}",
        d.log_text()
    );
    for m in &got {
        let b = body(m);
        let id = header(m, "Nats-Msg-Id");
        assert_eq!(b["event_id"], id.as_str());
        assert_eq!(header(m, "event_id"), id);
        assert_eq!(header(m, "kind"), b["kind"].as_str().unwrap());
        assert_eq!(header(m, "source"), b["source"].as_str().unwrap());
        assert_eq!(header(m, "operation"), b["operation"].as_str().unwrap());
        assert_eq!(header(m, "Content-Type"), "application/json");
        assert_eq!(header(m, "Nats-Expected-Stream"), stream);
        assert_eq!(
            m.subject.as_str(),
            format!(
                "{prefix}.{}.{}",
                b["kind"].as_str().unwrap(),
                b["operation"].as_str().unwrap()
            )
        );
    }

    // A resend of an event JetStream has (at least once): acknowledged, dropped by Nats-Msg-Id.
    let sink = library_sink(&format!(
        "type = \"nats\"\nurl = \"{URL}\"\nsubject = \"{prefix}.{{{{ kind }}}}.{{{{ operation }}}}\"\n"
    ));
    sink.connect().await.unwrap();
    let out = sink
        .send(&[job(&accepted[0]), job(&accepted[3])])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Delivered, Outcome::Delivered]);
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 7, "duplicates were stored");
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test]
async fn a_missing_stream_is_named_once_connected() {
    let Some(js) = machine().await else { return };
    let tag = format!("{:012x}", rand::random::<u64>() >> 16);
    let named = library_sink(&format!(
        "type = \"nats\"\nurl = \"{URL}\"\nsubject = \"none-{tag}.{{{{ kind }}}}\"\nstream = \"NOPE-{tag}\"\n"
    ));
    let err = named.connect().await.expect_err("no such stream");
    assert!(matches!(err, SinkError::Unavailable(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("NOPE-{tag}")) && text.contains("does not exist"),
        "{text}"
    );
    let unnamed = library_sink(&format!(
        "type = \"nats\"\nurl = \"{URL}\"\nsubject = \"none-{tag}.{{{{ kind }}}}.{{{{ operation }}}}\"\n"
    ));
    let err = unnamed
        .connect()
        .await
        .expect_err("no stream takes the subjects")
        .to_string();
    assert!(err.contains(&format!("none-{tag}.*.*")), "{err}");
    // Once a stream takes them, the sink connects.
    js.create_stream(stream::Config {
        name: format!("NOPE-{tag}"),
        subjects: vec![format!("none-{tag}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    named.connect().await.unwrap();
    unnamed.connect().await.unwrap();
    let _ = js.delete_stream(format!("NOPE-{tag}")).await;
}

#[tokio::test]
async fn hostile_subject_values_become_dead_letters_never_subjects() {
    let Some(js) = machine().await else { return };
    let (stream, prefix) = own_stream(&js).await;
    let mut d = Daemon::start(&config(URL, &prefix, ""));
    let mut hostile = BTreeSet::new();
    for (i, op) in ["a.b", "*", ">", "two words", "", "tab\tbed"]
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
    let got = read(&js, &stream, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(header(&got[0], "Nats-Msg-Id"), good[0]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while d
        .get("/metrics")
        .await
        .text
        .lines()
        .filter(|l| l.starts_with("hookbridge_deliveries_total") && l.contains("outcome=\"dead\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        < hostile.len() as f64
    {
        assert!(
            Instant::now() < deadline,
            "no dead letters:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.stop().success());
    let letters = dead_letters(&d);
    let ids: BTreeSet<String> = letters
        .iter()
        .map(|l| l["event"]["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, hostile);
    for l in &letters {
        let error = l["error"].as_str().unwrap();
        assert!(
            error.contains("subject") && error.contains("not sent"),
            "{error}"
        );
        assert_eq!(l["attempts"], 1, "a refused subject is not retried");
    }
    let _ = js.delete_stream(&stream).await;
}

/// A `nats-server -js` of the test's own on a free port, storing in a temporary directory;
/// stopped (SIGTERM) and started again by the test, killed on drop.
struct OwnServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// More arguments (TLS).
    extra: Vec<String>,
}

impl OwnServer {
    fn start() -> Option<OwnServer> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[String]) -> Option<OwnServer> {
        let binary = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if binary.is_none() {
            missing("nats-server is not installed");
            return None;
        }
        let mut s = OwnServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.to_vec(),
        };
        s.up();
        Some(s)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let binary = [
            "nats-server",
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
        ]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and waits for the exit.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn a_server_restart_mid_run_loses_nothing_and_stores_no_duplicate() {
    let Some(mut server) = OwnServer::start() else {
        return;
    };
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let (stream, prefix) = own_stream(&js).await;
    let d = Daemon::start(&config(
        &server.url(),
        &prefix,
        &format!("stream = \"{stream}\""),
    ));
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
        server.down();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        server.up();
    };
    let (accepted, ()) = tokio::join!(posting, outage);
    assert_eq!(accepted.len(), n);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let got = read(&js, &stream, n as u64, Duration::from_secs(60)).await;
    let ids: BTreeSet<String> = got.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    assert_eq!(ids, accepted, "daemon log:\n{}", d.log_text());
    assert_eq!(got.len(), n, "JetStream stored a duplicate");
    assert!(
        d.log_text().contains("sink unavailable"),
        "the sink never noticed the outage:\n{}",
        d.log_text()
    );
}

#[tokio::test]
async fn sigkill_while_sending_loses_nothing() {
    let Some(js) = machine().await else { return };
    let (stream, prefix) = own_stream(&js).await;
    let token = "nats-test-admin-token-0123";
    let text = config(URL, &prefix, "").replacen(
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
    // A backlog (the sink paused), then the kill once the stream holds part of it.
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
    let s = js.get_stream(&stream).await.unwrap();
    let count = || async { s.get_info().await.map(|i| i.state.messages).unwrap_or(0) };
    admin("/admin/sinks/bus/resume").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count().await < 100 {
        assert!(Instant::now() < deadline, "nothing sent:\n{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    d.kill9();
    let before = count().await;
    d.spawn();
    let got = read(&js, &stream, n as u64, Duration::from_secs(60)).await;
    let ids: BTreeSet<String> = got.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    assert_eq!(ids, accepted, "daemon log:\n{}", d.log_text());
    assert_eq!(got.len(), n, "a resend after the restart was stored twice");
    eprintln!(
        "SIGKILL with {before} of {n} in the stream; all {n} there after the restart, no duplicate"
    );
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.key_pair.serialize_pem()).unwrap();
    let args = [
        "--tls".to_string(),
        "--tlscert".to_string(),
        cert.display().to_string(),
        "--tlskey".to_string(),
        key.display().to_string(),
    ];
    let Some(server) = OwnServer::start_with(&args) else {
        return;
    };
    let url = format!("tls://127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(cert.clone())
        .connect(&url)
        .await
        .expect("a TLS client");
    let js = jetstream::new(client);
    let (stream, prefix) = own_stream(&js).await;
    let extra = format!("ca = \"{}\"\nstream = \"{stream}\"", cert.display());
    let d = Daemon::start(&config(&url, &prefix, &extra));
    let a = d.post_signed("portal", &portal_event(1, "update")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let got = read(&js, &stream, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "daemon log:\n{}", d.log_text());
    assert_eq!(header(&got[0], "Nats-Msg-Id"), a.accepted()[0]);
}
