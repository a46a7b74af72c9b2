//! Signatures checked by the official verifier, not by hookbridge's own code: the requests the
//! receiver captured are handed to the `standardwebhooks` package from PyPI, and the HMAC
//! headers to Python's own `hmac` and `hashlib` (tests/http/verify.py).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::common::{Daemon, python_with_standardwebhooks, sample};
use super::receiver::Receiver;
use super::{config, http_sink, post};

/// The secrets during a rotation: the new one first, the one being retired second.
const NEW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc=";
const HMAC_SECRET: &str = "It's a Secret to Everybody";
/// The generic `hmac` scheme's choices, as the receiver expects them.
const CUSTOM: &str = "header = \"X-Custom-Signature\", algorithm = \"sha512\", encoding = \"base64\", prefix = \"sha512=\"";

#[tokio::test]
async fn every_signature_passes_the_official_standard_webhooks_verifier() {
    let python = python_with_standardwebhooks();
    let r = Receiver::start();
    let sinks = [
        http_sink(
            "std",
            &format!("{}/std", r.base),
            "sign = { scheme = \"standard-webhooks\", secrets = [\"env:NEW_SECRET\", \"env:OLD_SECRET\"] }",
        ),
        http_sink(
            "teams",
            &format!("{}/teams", r.base),
            "body = \"teams\"\nsign = { scheme = \"standard-webhooks\", secrets = [\"env:NEW_SECRET\", \"env:OLD_SECRET\"] }",
        ),
        http_sink(
            "gh",
            &format!("{}/gh", r.base),
            "body = \"raw\"\nsign = { scheme = \"hmac-sha256\", secret = \"env:HMAC_SECRET\", header = \"X-Signature\" }",
        ),
        http_sink(
            "custom",
            &format!("{}/custom", r.base),
            &format!("sign = {{ scheme = \"hmac\", secret = \"env:HMAC_SECRET\", {CUSTOM} }}"),
        ),
    ]
    .concat();
    let d = Daemon::start_env(
        &config(&sinks, "\"std\", \"teams\", \"gh\", \"custom\""),
        &[
            ("NEW_SECRET", NEW_SECRET),
            ("OLD_SECRET", OLD_SECRET),
            ("HMAC_SECRET", HMAC_SECRET),
        ],
    );
    let mut events = 0;
    for (hook, name) in [
        ("portal", "portal-group-update.json"),
        ("portal", "portal-item-share-multi.json"),
        ("portal", "portal-user-role.json"),
        ("features", "feature-created.json"),
        ("features", "feature-multi.json"),
    ] {
        events += post(&d, hook, &sample(name)).await.len();
    }
    let seen = r.wait_requests(4 * events).await;
    assert_eq!(seen.len(), 4 * events, "{}", d.log_text());

    let messages: Vec<Value> = seen
        .iter()
        .map(|c| {
            let scheme = match c.path.as_str() {
                "/gh" => "hmac-sha256",
                "/custom" => "hmac",
                _ => "standard-webhooks",
            };
            if scheme == "standard-webhooks" {
                assert_eq!(
                    c.header("webhook-id").unwrap(),
                    c.event_id(),
                    "the id is the event id"
                );
                assert_eq!(c.header("webhook-signature").unwrap().split(' ').count(), 2);
            }
            json!({
                "scheme": scheme,
                "body": String::from_utf8(c.body.clone()).unwrap(),
                "headers": c.headers,
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("captured.json");
    let captured = json!({
        "secrets": [NEW_SECRET, OLD_SECRET],
        "hmac_secret": HMAC_SECRET,
        "hmac_header": "X-Signature",
        "hmac": {
            "header": "X-Custom-Signature",
            "algorithm": "sha512",
            "encoding": "base64",
            "prefix": "sha512=",
        },
        "messages": messages,
    });
    std::fs::write(&file, captured.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/http/verify.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the verifier refused: {stdout}{stderr}"
    );
    let expected = format!(
        "verified {} standard-webhooks, {events} hmac-sha256 and {events} hmac messages",
        2 * events
    );
    assert!(stdout.contains(&expected), "{stdout}");
    eprintln!("{stdout}");

    let log = d.log_text();
    for secret in [NEW_SECRET, OLD_SECRET, HMAC_SECRET] {
        assert!(!log.contains(secret), "a signing secret is in the log");
    }
}
