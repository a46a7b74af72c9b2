//! What an operator sees before anything is sent: `hookbridge explain` shows the request
//! (secrets hidden) and renders the Teams and Slack bodies as valid JSON for every sample payload.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::checks::{run, with_sinks};
use super::common::sample;

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

#[test]
fn a_file_in_the_templates_directory_replaces_a_preset() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("slack.json.tera"),
        "{\"text\": {{ operation | json_encode() }}, \"id\": {{ id | json_encode() }}}",
    )
    .unwrap();
    let config = format!(
        "templates = \"templates\"\n{}",
        with_sinks(PRESETS, "\"teams\", \"slack\"")
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples/portal-group-update.json");
    let x = explain(
        dir.path(),
        &config,
        &file,
        &[("TEAMS_WEBHOOK_URL", TEAMS_URL)],
    );
    let deliveries = x["events"][0]["deliveries"].as_array().unwrap();
    for d in deliveries {
        let body = &d["message"]["body"];
        if d["sink"] == "slack" {
            assert_eq!(
                body,
                &json!({"text": "update", "id": "4adc30bb03054812a846fa592de105de"})
            );
        } else {
            check_preset("teams", body, "the built-in Teams card");
        }
    }
}
