//! What an operator sees before anything is sent: `hookbridge check` names every bad key of an
//! HTTP sink, and `hookbridge explain` shows the request (secrets hidden) and renders the Teams
//! and Slack bodies as valid JSON for every sample payload.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use super::common::sample;

/// Writes `text` as a config in `dir` and runs `hookbridge ARGS --config it`.
fn run(dir: &Path, text: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let config = dir.join("routes.toml");
    std::fs::write(&config, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(args)
        .arg("--config")
        .arg(&config)
        .envs(env.iter().copied())
        .output()
        .expect("run hookbridge")
}

/// A config with one hook of every kind (`auto`) and the given sinks, all routed.
fn with_sinks(sinks: &str, to: &str) -> String {
    format!("[hooks.any]\nkind = \"auto\"\n{sinks}\n[[routes]]\nmatch = {{}}\nto = [{to}]\n")
}

/// `hookbridge check`'s output for a sink `web` with `extra` keys (and a valid url unless set).
fn check(extra: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let url = if extra.contains("url =") {
        ""
    } else {
        "url = \"https://receiver.example/hooks\"\n"
    };
    let text = with_sinks(
        &format!("[sinks.web]\ntype = \"http\"\n{url}{extra}\n"),
        "\"web\"",
    );
    let out = run(dir.path(), &text, &["check"], &[]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if extra.is_empty() {
        assert!(out.status.success(), "a valid sink fails check: {all}");
    } else {
        assert!(!out.status.success(), "{extra:?} passed check: {all}");
    }
    all
}

#[test]
fn every_bad_key_is_named() {
    check("");
    let cases: &[(&str, &str)] = &[
        ("url = \"ftp://receiver.example/x\"", "sinks.web.url:"),
        ("url = \"receiver.example/{{ id }}\"", "sinks.web.url:"),
        (
            "url = \"https://receiver.example/{{ kind \"",
            "sinks.web.url:",
        ),
        ("url = \"env:HOOKBRIDGE_TEST_UNSET_URL\"", "sinks.web.url:"),
        ("method = \"GET\"", "sinks.web.method:"),
        (
            "headers = { \"Bad Header\" = \"x\" }",
            "sinks.web.headers.Bad Header:",
        ),
        (
            "headers = { \"Content-Type\" = \"text/plain\" }",
            "sinks.web.headers.Content-Type:",
        ),
        (
            "headers = { \"X-Hookbridge-Event-Id\" = \"x\" }",
            "sinks.web.headers.X-Hookbridge-Event-Id:",
        ),
        (
            "headers = { \"X-A\" = \"{{ nope\" }",
            "sinks.web.headers.X-A:",
        ),
        (
            "headers = { \"X-Key\" = \"env:HOOKBRIDGE_TEST_UNSET_KEY\" }",
            "sinks.web.headers.X-Key:",
        ),
        ("body = \"slak\"", "sinks.web.body:"),
        ("body = \"{{ kind \"", "sinks.web.body:"),
        (
            "content_type = \"text/plain\\u0001\"",
            "sinks.web.content_type:",
        ),
        ("timeout = \"soon\"", "sinks.web.timeout:"),
        ("timeout = \"0s\"", "sinks.web.timeout:"),
        ("max_in_flight = 0", "sinks.web.max_in_flight:"),
        ("max_in_flight = 1000", "sinks.web.max_in_flight:"),
        ("rate = \"fast\"", "sinks.web.rate:"),
        ("rate = \"0/s\"", "sinks.web.rate:"),
        ("rate = \"10/day\"", "sinks.web.rate:"),
        (
            "auth = { bearer = \"t\", user = \"u\", password = \"p\" }",
            "sinks.web.auth:",
        ),
        ("auth = { user = \"u\" }", "sinks.web.auth.password:"),
        (
            "auth = { user = \"a:b\", password = \"p\" }",
            "sinks.web.auth.user:",
        ),
        ("auth = { header = \"X-Key\" }", "sinks.web.auth.value:"),
        (
            "auth = { header = \"bad header\", value = \"v\" }",
            "sinks.web.auth.header:",
        ),
        ("auth = { token = \"t\" }", "sinks.web.auth"),
        (
            "auth = { bearer = \"env:HOOKBRIDGE_TEST_UNSET_TOKEN\" }",
            "sinks.web.auth.bearer:",
        ),
        (
            "sign = { scheme = \"jwt\", secret = \"k\" }",
            "sinks.web.sign.scheme:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\" }",
            "sinks.web.sign:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\", secret = \"not base64!\" }",
            "sinks.web.sign.secret:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\", secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"%%\"] }",
            "sinks.web.sign.secrets[1]:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", header = \"X-Sig\" }",
            "sinks.web.sign.header:",
        ),
        (
            "sign = { scheme = \"hmac-sha256\", secret = \"k\", header = \"bad header\" }",
            "sinks.web.sign.header:",
        ),
        (
            "sign = { scheme = \"hmac-sha256\", secrets = [\"a\", \"b\"] }",
            "sinks.web.sign.secrets:",
        ),
        (
            "sign = { scheme = \"hmac-sha256\", secret = \"env:HOOKBRIDGE_TEST_UNSET_SIG\" }",
            "sinks.web.sign.secret:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }\nheaders = { \"webhook-id\" = \"x\" }",
            "sinks.web.headers.webhook-id:",
        ),
        ("ca = \"no-such-ca.pem\"", "sinks.web.ca:"),
        (
            "insecure_skip_verify = \"yes\"",
            "sinks.web.insecure_skip_verify:",
        ),
        ("colour = \"blue\"", "unknown field `colour`"),
    ];
    for (extra, key) in cases {
        let out = check(extra);
        assert!(out.contains(key), "{extra:?}: expected {key:?} in:\n{out}");
    }
}

/// Every sample payload, with the hook kind `auto` detects: tests/samples, the captures in
/// tests/real that are deliveries, and the two geoprocessing shapes (no sample file has them).
fn payloads(dir: &Path) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files: Vec<PathBuf> = ["samples", "real"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .unwrap()
                .flatten()
                .map(|e| e.path())
        })
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name.ends_with(".json") || name.ends_with(".form"))
                && !name.contains("extractChanges-result")
                && !name.contains("webhook-config")
        })
        .collect();
    for (name, body) in [
        (
            "gp-published.json",
            json!({"serviceType": "GPServer", "jobId": "j6e2c1b7f", "name": "buffer \"jobs\"",
                "statusURL": "https://gis.example.org/server/rest/services/Tools/Buffer/GPServer/Buffer/jobs/j6e2c1b7f",
                "taskName": "Buffer", "folderName": "Tools", "serviceName": "Buffer",
                "events": [{"eventType": "esriJobSucceeded", "when": 1730385704000i64}]}),
        ),
        (
            "gp-older.json",
            json!({"webhookName": "buffer-jobs", "jobId": "j6e2c1b7f", "jobStatus": "esriJobFailed",
                "serviceName": "Buffer", "taskName": "BufferPoints"}),
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body.to_string()).unwrap();
        files.push(path);
    }
    files.sort();
    files
}

/// `hookbridge explain` of `file` on hook `any`, as JSON.
fn explain(dir: &Path, config: &str, file: &Path, env: &[(&str, &str)]) -> Value {
    let out = run(
        dir,
        config,
        &["explain", "--hook", "any", file.to_str().unwrap()],
        env,
    );
    assert!(
        out.status.success(),
        "explain {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const PRESETS: &str = r#"
[sinks.teams]
type = "http"
url = "env:TEAMS_WEBHOOK_URL"
body = "teams"

[sinks.slack]
type = "http"
url = "https://hooks.slack.com/services/T0/B0/SLACKSECRET"
body = "slack"
"#;

const TEAMS_URL: &str = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=TEAMSSECRET";

/// Checks one message's body: a Teams Adaptive Card or a Slack message, parsed.
fn check_preset(sink: &str, body: &Value, what: &str) {
    match sink {
        "teams" => {
            assert_eq!(body["type"], "message", "{what}: {body}");
            let a = &body["attachments"][0];
            assert_eq!(
                a["contentType"], "application/vnd.microsoft.card.adaptive",
                "{what}"
            );
            assert_eq!(a["content"]["type"], "AdaptiveCard", "{what}");
            let items = a["content"]["body"].as_array().unwrap();
            assert!(
                !items[0]["text"].as_str().unwrap().is_empty(),
                "{what}: {body}"
            );
            let facts = items[2]["facts"].as_array().unwrap();
            assert!(
                facts
                    .iter()
                    .all(|f| f["title"].is_string() && f["value"].is_string()),
                "{what}: {body}"
            );
        }
        _ => {
            assert!(!body["text"].as_str().unwrap().is_empty(), "{what}: {body}");
            let blocks = body["blocks"].as_array().unwrap();
            assert_eq!(blocks[0]["type"], "header", "{what}");
            assert!(blocks.iter().all(|b| b["type"].is_string()), "{what}");
        }
    }
}

#[test]
fn teams_and_slack_bodies_are_valid_json_for_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_sinks(PRESETS, "\"teams\", \"slack\"");
    let env = [("TEAMS_WEBHOOK_URL", TEAMS_URL)];
    let mut kinds = std::collections::BTreeSet::new();
    for file in payloads(dir.path()) {
        let x = explain(dir.path(), &config, &file, &env);
        for event in x["events"].as_array().unwrap() {
            kinds.insert(event["event"]["kind"].as_str().unwrap().to_string());
            for d in event["deliveries"].as_array().unwrap() {
                let sink = d["sink"].as_str().unwrap();
                let m = &d["message"];
                let what = format!("{} → {sink}", file.display());
                assert!(
                    m["body"].is_object(),
                    "{what}: the body is not JSON: {}",
                    m["body"]
                );
                assert_eq!(m["headers"]["content-type"], "application/json", "{what}");
                check_preset(sink, &m["body"], &what);
            }
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["feature-service", "geoprocessing", "portal", "survey123"]
    );
}

#[test]
fn hostile_values_keep_the_json_valid_and_cannot_ping_a_slack_channel() {
    let dir = tempfile::tempdir().unwrap();
    let mut v: Value = serde_json::from_slice(&sample("portal-item-share-multi.json")).unwrap();
    v["events"][0]["username"] = "\"quoted\" <!channel> & \\ back\nslash\t}".into();
    v["info"]["webhookName"] = "\"}]}, {\"evil\": true".into();
    let file = dir.path().join("hostile.json");
    std::fs::write(&file, v.to_string()).unwrap();
    let x = explain(
        dir.path(),
        &with_sinks(PRESETS, "\"teams\", \"slack\""),
        &file,
        &[("TEAMS_WEBHOOK_URL", TEAMS_URL)],
    );
    let event = &x["events"][0];
    for d in event["deliveries"].as_array().unwrap() {
        let sink = d["sink"].as_str().unwrap();
        let body = &d["message"]["body"];
        check_preset(sink, body, "hostile");
        let text = body.to_string();
        assert!(!text.contains("\"evil\":true"), "{text}");
        if sink == "slack" {
            let t = body["text"].as_str().unwrap();
            assert!(t.contains("&lt;!channel&gt; &amp;"), "{t}");
            assert!(!t.contains("<!channel>"), "{t}");
        } else {
            let facts = body["attachments"][0]["content"]["body"][2]["facts"].to_string();
            assert!(
                facts.contains("\\\"quoted\\\" <!channel> & \\\\ back\\nslash\\t}"),
                "{facts}"
            );
        }
    }
}

#[test]
fn explain_shows_the_request_with_secrets_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let sinks = format!(
        "{PRESETS}\n[sinks.signed]\ntype = \"http\"\nurl = \"https://receiver.example/in/{{{{ kind }}}}\"\nmethod = \"PUT\"\n\
         headers = {{ \"X-Api-Key\" = \"env:RECEIVER_KEY\", \"X-Kind\" = \"{{{{ kind }}}}\" }}\nauth = {{ bearer = \"env:RECEIVER_TOKEN\" }}\n\
         sign = {{ scheme = \"standard-webhooks\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }}\n"
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples/portal-group-update.json");
    let out = run(
        dir.path(),
        &with_sinks(&sinks, "\"teams\", \"slack\", \"signed\""),
        &["explain", "--hook", "any", file.to_str().unwrap()],
        &[
            ("TEAMS_WEBHOOK_URL", TEAMS_URL),
            ("RECEIVER_KEY", "key-EXPLAINSECRET"),
            ("RECEIVER_TOKEN", "token-EXPLAINSECRET"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [
        "EXPLAINSECRET",
        "TEAMSSECRET",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    let x: Value = serde_json::from_str(&text).unwrap();
    let deliveries = x["events"][0]["deliveries"].as_array().unwrap();
    let by = |sink: &str| deliveries.iter().find(|d| d["sink"] == sink).unwrap()["message"].clone();
    let signed = by("signed");
    assert_eq!(signed["method"], "PUT");
    assert_eq!(signed["url"], "https://receiver.example/in/portal");
    let h = &signed["headers"];
    assert_eq!(h["x-api-key"], "***");
    assert_eq!(h["authorization"], "***");
    assert_eq!(h["x-kind"], "portal");
    assert_eq!(h["webhook-id"], x["events"][0]["event"]["event_id"]);
    assert!(h["webhook-signature"].as_str().unwrap().starts_with("v1,"));
    assert_eq!(
        signed["body"]["event_id"],
        x["events"][0]["event"]["event_id"]
    );
    // A URL from a secret, or with its token inline, shows only where it goes.
    assert_eq!(
        by("teams")["url"],
        "https://prod-01.westeurope.logic.azure.com/…"
    );
    assert_eq!(by("teams")["method"], "POST");
    assert_eq!(
        by("slack")["url"],
        "https://hooks.slack.com/services/T0/B0/SLACKSECRET"
    );
}
