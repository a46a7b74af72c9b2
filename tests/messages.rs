//! What a person reads: every built-in template (a mail of each kind, the digest, the Teams card
//! and the Slack message) rendered for every delivery captured from a real site (tests/real/),
//! in a configured `templates_timezone`: whole ids, lists as lists, local times, and a Survey123
//! record's answers under their questions' labels.

use std::path::Path;

use hookbridge::config::Config;
use hookbridge::event::Event;
use serde_json::Value;

/// When the events were received: 2023-11-14 22:15:20 UTC, 23:15:20 in Berlin.
const ACCEPTED: i64 = 1_700_000_120_001;

const CONFIG: &str = r#"
templates_timezone = "Europe/Berlin"

[hooks.any]
kind = "auto"

[sinks.mail]
type = "email"
smtp = "smtp://127.0.0.1:2525"
from = "hookbridge@example.org"
to = ["gis-admins@example.org"]

[sinks.digest]
type = "email"
smtp = "smtp://127.0.0.1:2525"
from = "hookbridge@example.org"
to = ["gis-admins@example.org"]
digest = "5m"

[sinks.teams]
type = "http"
url = "https://teams.example.org/workflows/in"
body = "teams"

[sinks.slack]
type = "http"
url = "https://hooks.slack.example.org/services/T0/B0/X"
body = "slack"

[[routes]]
match = {}
to = ["mail", "digest", "teams", "slack"]
"#;

/// The captures in tests/real that are no delivery: a change file and a webhook's settings.
const NOT_DELIVERIES: [&str; 2] = [
    "aws-lambda-demo_extractChanges-result_changefile.json",
    "esrinederland-devday2022_portal-webhook-config_notebookserver.json",
];

fn config() -> Config {
    let dir = tempfile::tempdir().unwrap();
    Config::parse(&dir.path().join("routes.toml"), CONFIG).unwrap_or_else(|p| panic!("{p:?}"))
}

/// Every real capture's JSON, by file name.
fn captures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// What each sink would send for each event of `json`, as received at `ACCEPTED`.
fn rendered(config: &Config, json: &[u8]) -> Vec<(Event, Vec<(String, Value)>)> {
    let hook = &config.hooks["any"];
    let prepared = config
        .prepare("any", hook, &(), json, &mut |_| true)
        .unwrap_or_else(|e| panic!("{e}"));
    prepared
        .events
        .into_iter()
        .map(|mut event| {
            event.accepted_at = ACCEPTED;
            let messages = config
                .sinks
                .iter()
                .map(|(name, entry)| {
                    let m = entry
                        .settings
                        .preview(name, &config.renderer, &event, &prepared.payload)
                        .unwrap_or_else(|e| panic!("{name} for {}: {e}", event.id));
                    (name.clone(), m)
                })
                .collect();
            (event, messages)
        })
        .collect()
}

/// The Teams card's facts as (title, value) pairs.
fn facts(body: &Value) -> Vec<(String, String)> {
    body["attachments"][0]["content"]["body"][2]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_string(),
                f["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn every_built_in_template_renders_every_real_capture() {
    let config = config();
    let mut kinds = std::collections::BTreeSet::new();
    for (file, json) in captures() {
        let hook = &config.hooks["any"];
        if NOT_DELIVERIES.contains(&file.as_str()) {
            assert!(
                config
                    .prepare("any", hook, &(), &json, &mut |_| true)
                    .is_err(),
                "{file} is no delivery"
            );
            continue;
        }
        for (event, messages) in rendered(&config, &json) {
            kinds.insert(event.kind.as_str().to_string());
            // A feature-service event's id is its service and layer, shown as such.
            let id = match event.properties.get("serviceName").and_then(Value::as_str) {
                Some(service) if event.kind.as_str() == "feature-service" => service.to_string(),
                _ => event.id.clone(),
            };
            for (sink, m) in &messages {
                let what = format!("{file} → {sink}");
                let all = m.to_string();
                assert!(!all.contains('…'), "{what}: something is cut: {all}");
                match sink.as_str() {
                    "mail" | "digest" => {
                        let text = m["text"].as_str().unwrap();
                        let html = m["html"].as_str().unwrap();
                        assert!(!m["subject"].as_str().unwrap().is_empty(), "{what}");
                        assert!(
                            text.contains(id.as_str()),
                            "{what}: no whole id {id}:\n{text}"
                        );
                        // A list reads as a list, never as a JSON array.
                        assert!(!text.contains("[\""), "{what}:\n{text}");
                        assert!(!html.contains("[&quot;"), "{what}:\n{html}");
                        // Times in Berlin, not UTC.
                        assert!(!text.contains(" UTC"), "{what}:\n{text}");
                        assert!(
                            text.contains(" CET") || text.contains(" CEST"),
                            "{what}: no local time:\n{text}"
                        );
                    }
                    "teams" | "slack" => {
                        let body = &m["body"];
                        assert!(body.is_object(), "{what}: not JSON: {body}");
                        let text = body.to_string();
                        assert!(
                            text.contains(id.as_str()),
                            "{what}: no whole id {id}: {text}"
                        );
                        assert!(
                            text.contains(" CET") || text.contains(" CEST"),
                            "{what}: no local time: {text}"
                        );
                    }
                    other => panic!("an unexpected sink {other}"),
                }
            }
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["feature-service", "portal", "survey123"]
    );
}

#[test]
fn the_portal_capture_reads_as_a_person_would_write_it() {
    let config = config();
    let json = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/real/jpeterson-techtrek2019_portal_item-add.json"),
    )
    .unwrap();
    let (_, messages) = rendered(&config, &json).remove(0);
    let by = |s: &str| &messages.iter().find(|(n, _)| n == s).unwrap().1;
    let mail = by("mail");
    assert_eq!(
        mail["subject"],
        "Item 300972091a98495095735772e2b249b3 was added by portaladmin"
    );
    let text = mail["text"].as_str().unwrap();
    assert!(text.contains("When:    2019-02-20 01:06:32 CET"), "{text}");
    let html = mail["html"].as_str().unwrap();
    assert!(html.contains("30097209<wbr>1a984950<wbr>"), "{html}");
    let f = facts(&by("teams")["body"]);
    assert!(
        f.contains(&("When".into(), "2019-02-20 01:06:32 CET".into())),
        "{f:?}"
    );
}

#[test]
fn the_survey123_card_shows_the_answers_and_when_it_came() {
    let config = config();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/real/esridevevents_survey123-webhook_addData.json");
    let real = std::fs::read(&path).unwrap();
    // The capture as it is: no field definitions, so the answers go by field name.
    let (_, messages) = rendered(&config, &real).remove(0);
    let by = |m: &[(String, Value)], s: &str| m.iter().find(|(n, _)| n == s).unwrap().1.clone();
    let f = facts(&by(&messages, "teams")["body"]);
    assert!(
        f.contains(&("what_industry_do_you_work_in".into(), "Technology".into())),
        "{f:?}"
    );
    assert!(
        f.contains(&("Received".into(), "2023-11-14 23:15:20 CET".into())),
        "{f:?}"
    );
    assert!(
        f.contains(&(
            "Record".into(),
            "{B3863DFC-3E46-4A7B-8366-7B7D0BA85C0D}".into()
        )),
        "{f:?}"
    );
    assert!(
        !f.iter().any(|(t, _)| t == "globalid" || t == "objectid"),
        "{f:?}"
    );

    // With the layer's fields, as Survey123 sends them for a published form: the aliases.
    let mut v: Value = serde_json::from_slice(&real).unwrap();
    v["feature"]["layerInfo"]["fields"] = serde_json::json!([
        {"name": "objectid", "type": "esriFieldTypeOID", "alias": "ObjectID"},
        {"name": "what_industry_do_you_work_in", "type": "esriFieldTypeString",
         "alias": "What industry do you work in?"}
    ]);
    let (_, messages) = rendered(&config, v.to_string().as_bytes()).remove(0);
    let f = facts(&by(&messages, "teams")["body"]);
    assert!(
        f.contains(&("What industry do you work in?".into(), "Technology".into())),
        "{f:?}"
    );
    let slack = by(&messages, "slack")["body"].to_string();
    assert!(
        slack.contains("What industry do you work in?: Technology"),
        "{slack}"
    );
    let mail = by(&messages, "mail");
    let text = mail["text"].as_str().unwrap();
    assert!(
        text.contains("What industry do you work in?: Technology"),
        "{text}"
    );
    assert!(
        text.contains("When:    2023-11-14 23:15:20 CET (received)"),
        "{text}"
    );
}

#[test]
fn a_long_survey_fits_slack_and_teams() {
    let config = config();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/real/esridevevents_survey123-webhook_addData.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for n in 0..30 {
        v["feature"]["attributes"][format!("q{n:02}")] = Value::from(format!("answer {n}"));
    }
    let (_, messages) = rendered(&config, v.to_string().as_bytes()).remove(0);
    let by = |s: &str| messages.iter().find(|(n, _)| n == s).unwrap().1.clone();
    // Slack refuses a section of more than 10 fields.
    let slack = by("slack")["body"].clone();
    let sections: Vec<&Value> = slack["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "section")
        .collect();
    assert!(sections.len() >= 3, "{slack}");
    assert!(
        sections
            .iter()
            .all(|s| (1..=10).contains(&s["fields"].as_array().unwrap().len())),
        "{slack}"
    );
    let text = slack.to_string();
    assert!(
        text.contains("q00: answer 0") && text.contains("Event: "),
        "{text}"
    );
    // The Teams card shows the first 25 answers and says how many more there are.
    let f = facts(&by("teams")["body"]);
    assert!(f.contains(&("q00".into(), "answer 0".into())), "{f:?}");
    assert!(!f.iter().any(|(t, _)| t == "q29"), "{f:?}");
    assert!(
        f.contains(&("More".into(), "6 more answers in the layer".into())),
        "{f:?}"
    );
}
