//! The senders beyond ArcGIS, end to end through the daemon: Standard Webhooks deliveries signed
//! by the official `standardwebhooks` package from PyPI, GitHub deliveries signed the way GitHub
//! documents it (HMAC-SHA256 of the body, hex, computed by Python's own `hmac`), and a generic
//! JSON sender with an HMAC header. Each is deduplicated by its sender's id, routed by its kind
//! and delivered to a file sink; a bad signature, a stale timestamp or a missing header is
//! refused with nothing stored.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Answer, Daemon, python_with_standardwebhooks};
use serde_json::{Value, json};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const SHOP_SECRET: &str = "shop-key";

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"

[storage]
path = "{dir}/data"

[hooks.std]
kind = "standard-webhooks"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[hooks.gh]
kind = "github"
secrets = ["It's a Secret to Everybody"]

[hooks.shop]
kind = "json"
secrets = ["shop-key"]
hmac = { header = "X-Shop-Signature", prefix = "sha256=" }
json = { events = "/items", id = "/id", operation = "/action" }

[sinks.std]
type = "file"
path = "{dir}/std.jsonl"

[sinks.gh]
type = "file"
path = "{dir}/gh.jsonl"

[sinks.shop]
type = "file"
path = "{dir}/shop.jsonl"

[[routes]]
match = { kind = "standard-webhooks" }
to = ["std"]

[[routes]]
match = { kind = "github", operation = "issues.opened" }
to = ["gh"]

[[routes]]
match = { kind = "json" }
to = ["shop"]
"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `webhook-signature` for a message, made by the official library (tests/signature/official.py).
fn official_signature(id: &str, timestamp: u64, payload: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let requests = dir.path().join("requests.json");
    let request = json!([{"secret": WHSEC, "id": id, "timestamp": timestamp, "payload": payload}]);
    std::fs::write(&requests, request.to_string()).expect("write requests");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signature/official.py");
    let out = Command::new(python_with_standardwebhooks())
        .args([script, "sign"])
        .arg(&requests)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed: Vec<String> = serde_json::from_slice(&out.stdout).expect("signatures");
    signed.into_iter().next().expect("one signature")
}

/// `prefix` + hex HMAC-SHA256 of `body`, computed by Python's standard library, not hookbridge.
fn python_hmac(key: &str, body: &str, prefix: &str) -> String {
    let code = "import hashlib, hmac, sys; \
                print(sys.argv[3] + hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())";
    let out = Command::new(python_with_standardwebhooks())
        .args(["-c", code, key, body, prefix])
        .output()
        .expect("run python");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn post(d: &Daemon, hook: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    d.post_with(
        &format!("/hooks/{hook}"),
        Some("application/json"),
        headers,
        body.as_bytes().to_vec(),
    )
    .await
}

/// A Standard Webhooks delivery of message `id`, signed by the official library at `timestamp`.
async fn standard(d: &Daemon, id: &str, timestamp: u64, body: &str) -> Answer {
    let ts = timestamp.to_string();
    let signature = official_signature(id, timestamp, body);
    post(
        d,
        "std",
        &[
            ("webhook-id", id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &signature),
        ],
        body,
    )
    .await
}

/// What the daemon accepted and how many events reached each sink, after the sinks settled.
async fn settled(d: &Daemon, file: &str, n: usize) -> Vec<Value> {
    let lines = d.wait_lines(file, n).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(d.jsonl(file).len(), n, "{lines:?}");
    d.jsonl(file)
}

#[tokio::test]
async fn standard_webhooks_signed_by_the_official_library() {
    let d = Daemon::start(CONFIG);
    let created = r#"{"type": "contact.created", "timestamp": "2022-11-03T20:26:10.344522Z", "data": {"id": "c1", "type": "contact"}}"#;
    let deleted =
        r#"{"type": "contact.deleted", "timestamp": "2022-11-03T20:27:10Z", "data": {"id": "c1"}}"#;
    let a = standard(&d, "msg_1", now(), created).await;
    assert_eq!((a.status, a.accepted().len()), (200, 1), "{}", a.text);
    let b = standard(&d, "msg_2", now(), deleted).await;
    assert_eq!((b.status, b.accepted().len()), (200, 1), "{}", b.text);
    // The sender retries message 1 later: a new timestamp and signature, the same webhook-id.
    let again = standard(&d, "msg_1", now() + 1, created).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["duplicates"].as_array().map(Vec::len), Some(1));

    // Refused, and nothing stored: a tampered body, a stale timestamp, an unsigned delivery.
    let ts = now().to_string();
    let signature = official_signature("msg_3", now(), created);
    let tampered = created.replace("c1", "c2");
    let headers = [
        ("webhook-id", "msg_3"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let r = post(&d, "std", &headers, &tampered).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("webhook-signature"), "{}", r.text);
    let stale = standard(&d, "msg_4", now() - 600, created).await;
    assert_eq!(stale.status, 401, "{}", stale.text);
    assert!(stale.text.contains("webhook-timestamp"), "{}", stale.text);
    let unsigned = post(&d, "std", &[("webhook-id", "msg_5")], created).await;
    assert_eq!(unsigned.status, 401, "{}", unsigned.text);

    let lines = settled(&d, "std.jsonl", 2).await;
    let ops: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ops, ["contact.created", "contact.deleted"]);
    assert!(lines.iter().all(|l| l["kind"] == "standard-webhooks"));
    assert_eq!(lines[0]["id"], "c1");
    assert_eq!(lines[0]["event_id"], a.accepted()[0].as_str());
}

#[tokio::test]
async fn github_deliveries_signed_as_github_documents() {
    let d = Daemon::start(CONFIG);
    // An `issues` delivery shaped as GitHub's documentation shows it.
    let body = r#"{"action": "opened", "issue": {"number": 1347, "title": "Found a bug", "user": {"login": "octocat"}}, "repository": {"id": 1296269, "full_name": "octocat/Hello-World"}, "sender": {"login": "octocat"}}"#;
    let signature = python_hmac(GITHUB_SECRET, body, "sha256=");
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let headers = |event: &'static str, sig: &str| -> Vec<(&'static str, String)> {
        vec![
            ("X-GitHub-Event", event.to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
            ("X-Hub-Signature-256", sig.to_string()),
        ]
    };
    let send = |h: Vec<(&'static str, String)>| {
        let d = &d;
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(d, "gh", &h, body).await
        }
    };
    let a = send(headers("issues", &signature)).await;
    assert_eq!((a.status, a.accepted().len()), (200, 1), "{}", a.text);
    // A redelivery (from GitHub's "Redeliver" button) keeps the GUID: a duplicate.
    let again = send(headers("issues", &signature)).await;
    assert_eq!(again.json["duplicates"].as_array().map(Vec::len), Some(1));
    // Refused, and nothing stored: a signature made with another secret, a missing event name.
    let wrong = python_hmac("another secret", body, "sha256=");
    let r = send(headers("issues", &wrong)).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("X-Hub-Signature-256"), "{}", r.text);
    let h = [
        ("X-GitHub-Delivery", "00000000-0000-0000-0000-000000000001"),
        ("X-Hub-Signature-256", signature.as_str()),
    ];
    let r = post(&d, "gh", &h, body).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("X-GitHub-Event: missing"), "{}", r.text);

    let lines = settled(&d, "gh.jsonl", 1).await;
    assert_eq!(lines[0]["kind"], "github");
    assert_eq!(lines[0]["operation"], "issues.opened");
    assert_eq!(lines[0]["id"], "octocat/Hello-World");
    assert_eq!(lines[0]["user"], "octocat");
}

#[tokio::test]
async fn a_generic_json_sender_with_an_hmac_header() {
    let d = Daemon::start(CONFIG);
    let body = r#"{"items": [{"id": "o-1", "action": "created", "total": 3}, {"id": "o-2", "action": "paid"}]}"#;
    let signature = python_hmac(SHOP_SECRET, body, "sha256=");
    let a = post(&d, "shop", &[("X-Shop-Signature", &signature)], body).await;
    assert_eq!((a.status, a.accepted().len()), (200, 2), "{}", a.text);
    let again = post(&d, "shop", &[("X-Shop-Signature", &signature)], body).await;
    assert_eq!(again.json["duplicates"].as_array().map(Vec::len), Some(2));
    let wrong = python_hmac("not the key", body, "sha256=");
    let r = post(&d, "shop", &[("X-Shop-Signature", &wrong)], body).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let no_id = r#"{"items": [{"action": "created"}]}"#;
    let signed = python_hmac(SHOP_SECRET, no_id, "sha256=");
    let r = post(&d, "shop", &[("X-Shop-Signature", &signed)], no_id).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("/items/0/id: missing"), "{}", r.text);

    let lines = settled(&d, "shop.jsonl", 2).await;
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap_or_default(),
                l["operation"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, [("o-1", "created"), ("o-2", "paid")]);
    assert!(lines.iter().all(|l| l["kind"] == "json"));
}

#[test]
fn check_names_a_bad_sender_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("routes.toml");
    let text = "[hooks.std]\nkind = \"standard-webhooks\"\nsecrets = [\"not-a-whsec-key!\"]\n\
                [hooks.x]\nkind = \"portal\"\njson = { id = \"/id\" }\n\
                [hooks.y]\nkind = \"githubb\"\n";
    std::fs::write(&config, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for key in ["hooks.std.secrets[0]", "hooks.x.json", "hooks.y.kind"] {
        assert!(text.contains(key), "{key} not named: {text}");
    }
}

#[test]
fn explain_takes_the_headers_a_sender_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("routes.toml");
    std::fs::write(
        &config,
        CONFIG
            .replace("{port}", "0")
            .replace("{dir}", &dir.path().display().to_string()),
    )
    .expect("write config");
    let body = dir.path().join("issue.json");
    std::fs::write(
        &body,
        r#"{"action": "opened", "repository": {"full_name": "octocat/Hello-World"}}"#,
    )
    .expect("write body");
    let explain = |headers: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookbridge"));
        cmd.arg("--config")
            .arg(&config)
            .args(["explain", "--hook", "gh"]);
        for h in headers {
            cmd.args(["--header", h]);
        }
        cmd.arg(&body).output().expect("run explain")
    };
    let out = explain(&["X-GitHub-Event: issues", "X-GitHub-Delivery: d-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("issues.opened") && text.contains("\"gh\""),
        "{text}"
    );
    let out = explain(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("X-GitHub-Event: missing"));
}
