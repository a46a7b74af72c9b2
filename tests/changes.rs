//! The feature change feed end to end: the real binary, real ingress, a local ArcGIS that checks
//! the token on every call (tests/changes/server.rs), file sinks and librdkafka's mock cluster.

mod common;
#[path = "changes/isolation.rs"]
mod isolation;
// Shared with tests/reconcile.rs, which uses the parts this file does not.
#[allow(dead_code)]
#[path = "changes/server.rs"]
mod server;
#[path = "changes/support.rs"]
mod support;

use std::time::{Duration, Instant};

use common::Daemon;
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use server::{Arcgis, Mode};
use support::*;

#[tokio::test]
async fn three_sinks_share_one_fetch_which_survives_a_kill() {
    let a = Arcgis::start(server::real_change_file());
    let sinks: String = ["a", "b", "c"]
        .iter()
        .map(|s| file_sink(s, "enrich = \"changes\""))
        .collect();
    // The sinks cannot open their files yet (`out` is a file), so nothing is delivered before the kill.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("out"), b"not a directory").unwrap();
    let cfg = config(&app_connection(&a, ""), &sinks, "\"a\", \"b\", \"c\"");
    let mut d = Daemon::start_in(&cfg, dir, &[("FEED_CLIENT_SECRET", server::CLIENT_SECRET)]);
    let ids = post(
        &d,
        &online_event(&a.changes_url("Pest_Inspections", true), 1),
    )
    .await;
    assert_eq!(ids.len(), 1);
    until(&d, 20, "the fetch to be stored", async || {
        metric(&d, "hookbridge_enrich_fetches_total").await == 1
    })
    .await;
    assert_eq!(
        (a.calls("extract"), a.calls("file")),
        (1, 1),
        "one fetch for three sinks"
    );
    assert!(a.calls("job") >= 2, "the job was polled until Completed");
    d.kill9();

    std::fs::remove_file(d.path("out")).unwrap();
    d.spawn();
    for s in ["a", "b", "c"] {
        let lines = d.wait_lines(&format!("out/{s}.jsonl"), 1).await;
        assert_eq!(lines.len(), 1, "{s}: {}", d.log_text());
        let changes = &lines[0]["properties"]["changes"];
        assert_eq!(changes[0]["layerId"], 0, "{s}: {}", lines[0]);
        assert_eq!(changes[0]["serverGen"], 1770625);
        assert_eq!(changes[0]["adds"].as_array().unwrap().len(), 2);
        assert_eq!(changes[0]["updates"][0]["attributes"]["OBJECTID"], 62);
        assert_eq!(changes[0]["deleteIds"], json!([]));
    }
    assert_eq!(
        (a.calls("extract"), a.calls("file")),
        (1, 1),
        "not fetched again after the restart"
    );
    let seen = a.seen();
    assert_eq!(seen.unauthorized, 0, "every call carried the valid token");
    assert_eq!(seen.without_f_json, 0);
    d.stop();
    assert_no_secret_on_disk(&d, &a);
}

#[tokio::test]
async fn split_by_feature_gives_one_kafka_record_per_feature_in_order() {
    let a = Arcgis::start(server::two_layer_change_file());
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("layer-mirror", 1, 1).unwrap();
    let brokers = mock.bootstrap_servers();
    let sink = format!(
        r#"
[sinks.bus]
type = "kafka"
brokers = "{brokers}"
topic = "layer-mirror"
key = "{{{{ properties.layer }}}}/{{{{ id }}}}"
timeout = "5s"
enrich = "changes"
split = "feature"
"#
    );
    let d = start(&config(&app_connection(&a, ""), &sink, "\"bus\""));
    post(
        &d,
        &online_event(&a.changes_url("Pest_Inspections", true), 2),
    )
    .await;
    let got = consume(&brokers, "layer-mirror", 6).await;
    let keys: Vec<String> = got
        .iter()
        .map(|(k, _)| k.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        [
            "Pest_Inspections/0/CF08E663-267C-4371-AFE9-C87875C26038",
            "Pest_Inspections/0/A39C9D58-9E97-4DD0-A6B8-A2AA64CB04C7",
            "Pest_Inspections/0/E516F064-703A-497A-8093-81A82BEDCB06",
            "Pest_Inspections/0/61",
            "Pest_Inspections/1/5",
            "Pest_Inspections/1/3",
        ],
        "{got:#?}\n{}",
        d.log_text()
    );
    let ops: Vec<&str> = got
        .iter()
        .map(|(_, v)| v["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["add", "add", "update", "delete", "add", "update"]);
    assert_eq!(
        got[0].1["properties"]["feature"]["attributes"]["OBJECTID"],
        67
    );
    assert_eq!(got[4].1["properties"]["serverGen"], 1770630);
    assert!(
        got.iter()
            .all(|(_, v)| v["properties"].get("changes").is_none())
    );
    let text = serde_json::to_string(&got.iter().map(|(_, v)| v).collect::<Vec<_>>()).unwrap();
    for t in a.seen().tokens {
        assert!(!text.contains(&t), "a record carries the token");
    }
    assert_no_secret_on_disk(&d, &a);
}

/// ArcGIS Online names several change types over one changesUrl; every event shares one fetch,
/// and a split sink gets each feature change once, with its own operation, under an id that a
/// later window bringing the same change repeats (so it is not sent again).
#[tokio::test]
async fn one_fetch_per_change_window_and_each_change_once() {
    let a = Arcgis::start(server::real_change_file());
    let sinks = file_sink("features", "enrich = \"changes\"\nsplit = \"feature\"")
        + &file_sink("whole", "enrich = \"changes\"");
    let d = start(&config(
        &app_connection(&a, ""),
        &sinks,
        "\"features\", \"whole\"",
    ));
    let delivered = async |sink: &str| {
        metric(
            &d,
            &format!("hookbridge_deliveries_total{{outcome=\"delivered\",sink=\"{sink}\"}}"),
        )
        .await
    };
    let mut body: Value = serde_json::from_slice(&online_event(
        &a.window_url("Pest_Inspections", 1404636, 1404640, true),
        8,
    ))
    .unwrap();
    body[0]["events"] = json!(["FeaturesCreated", "FeaturesUpdated"]);
    let ids = post(&d, &serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(ids.len(), 2, "one event per change type");
    until(&d, 20, "both events delivered to both sinks", async || {
        delivered("features").await == 2 && delivered("whole").await == 2
    })
    .await;
    assert_eq!(
        (a.calls("extract"), a.calls("file")),
        (1, 1),
        "one fetch for the window"
    );
    let lines = d.jsonl("out/features.jsonl");
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["operation"].as_str().unwrap_or_default(),
                l["properties"]["change"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("add", "FeaturesCreated"),
            ("add", "FeaturesCreated"),
            ("update", "FeaturesUpdated"),
        ],
        "each feature once, with its own change type: {lines:#?}"
    );
    let mut feature_ids: Vec<&str> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap_or_default())
        .collect();
    feature_ids.sort_unstable();
    feature_ids.dedup();
    assert_eq!(feature_ids.len(), 3);
    assert!(feature_ids.iter().all(|id| !ids.contains(&id.to_string())));
    let whole = d.jsonl("out/whole.jsonl");
    assert_eq!(whole.len(), 2, "the unsplit sink gets each event");
    assert!(whole.iter().all(|l| {
        l["properties"]["changes"][0]["adds"]
            .as_array()
            .map(Vec::len)
            == Some(2)
    }));

    // A later delivery over a window that overlaps (ArcGIS serves the same edits again):
    // fetched, and nothing the split sink already has is sent again.
    post(
        &d,
        &online_event(&a.window_url("Pest_Inspections", 1404630, 1404640, true), 9),
    )
    .await;
    until(&d, 20, "the second delivery", async || {
        delivered("features").await == 3 && delivered("whole").await == 3
    })
    .await;
    assert_eq!(a.calls("file"), 2, "another window, another fetch");
    assert_eq!(d.jsonl("out/features.jsonl").len(), 3, "no change twice");
    assert_eq!(d.jsonl("out/whole.jsonl").len(), 3);
    assert_no_secret_on_disk(&d, &a);
}

#[tokio::test]
async fn enterprise_user_token_is_renewed_after_a_498_and_direct_answers_are_read() {
    let a = Arcgis::start(server::real_change_file());
    let conn = format!(
        r#"
[arcgis.enterprise]
portal = "{base}"
services = ["{base}/rest/services/"]
username = "{user}"
password = "env:FEED_PASSWORD"
poll_interval = "50ms"
"#,
        base = a.base,
        user = server::USERNAME
    );
    let cfg = config(&conn, &file_sink("f", "enrich = \"changes\""), "\"f\"");
    let d = Daemon::start_env(&cfg, &[("FEED_PASSWORD", server::PASSWORD)]);
    until(&d, 10, "the start-up token", async || a.calls("token") == 1).await;
    a.set(Mode::Refuse498Once);
    post(&d, &enterprise_event(&a.changes_url("ServiceName", false))).await;
    let lines = d.wait_lines("out/f.jsonl", 1).await;
    assert_eq!(
        lines[0]["properties"]["changes"][0]["adds"][1]["attributes"]["OBJECTID"],
        68
    );
    assert_eq!(a.calls("token"), 2, "a new token after the 498");
    assert_eq!(a.calls("extract"), 2, "the refused call was made again");
    assert_eq!(a.calls("job"), 0, "no job without async=true");
    assert_eq!(a.seen().unauthorized, 0);
    assert!(!d.log_text().contains(server::PASSWORD));
    assert_no_secret_on_disk(&d, &a);
}

#[tokio::test]
async fn outages_and_hangs_back_off_without_spending_attempts() {
    let a = Arcgis::start(server::real_change_file());
    // One attempt only: had an outage or a timeout spent it, the event would be dead.
    let d = start(&config(
        &app_connection(&a, "attempts = 1"),
        &file_sink("f", "enrich = \"changes\""),
        "\"f\"",
    ));
    a.set(Mode::Unavailable(3));
    post(
        &d,
        &online_event(&a.changes_url("Pest_Inspections", true), 3),
    )
    .await;
    until(&d, 20, "three 503s", async || a.calls("extract") >= 4).await;
    a.set(Mode::Hang(1));
    post(
        &d,
        &online_event(&a.changes_url("Pest_Inspections", true), 4),
    )
    .await;
    let lines = d.wait_lines("out/f.jsonl", 2).await;
    assert_eq!(lines.len(), 2, "{}", d.log_text());
    for l in &lines {
        assert_eq!(l["properties"]["changes"][0]["serverGen"], 1770625);
    }
    assert!(a.calls("extract") >= 6, "503 ×3, a hang, and the successes");
    assert!(metric(&d, "hookbridge_enrich_failures_total").await >= 4);
    let mut d = d;
    d.stop();
    assert!(dead_letters(&d).is_empty());
}

#[tokio::test]
async fn errors_dead_letter_with_the_reason_and_a_replay_fetches_again() {
    let a = Arcgis::start(server::real_change_file());
    let sinks = file_sink("f", "enrich = \"changes\"")
        + &file_sink(
            "loose",
            "enrich = \"changes\"\non_enrich_failure = \"deliver-unenriched\"",
        );
    let mut d = start(&config(
        &app_connection(&a, "attempts = 2"),
        &sinks,
        "\"f\", \"loose\"",
    ));
    a.set(Mode::ErrorInOk);
    let ids = post(
        &d,
        &online_event(&a.changes_url("Pest_Inspections", true), 5),
    )
    .await;
    let loose = d.wait_lines("out/loose.jsonl", 1).await;
    assert!(
        loose[0]["properties"]["changesError"]
            .as_str()
            .unwrap()
            .contains("serverGens out of range"),
        "{}",
        loose[0]
    );
    assert!(loose[0]["properties"].get("changes").is_none());
    assert_eq!(a.calls("extract"), 2, "two attempts");
    let replay = reqwest::Client::new()
        .post(format!("{}/admin/dlq/replay?sink=f", d.url))
        .bearer_auth(ADMIN);
    until(&d, 20, "the dead letter", async || {
        metric(&d, "hookbridge_dead_letters{sink=\"f\"}").await == 1
    })
    .await;
    a.set(Mode::Normal);
    let answer = replay.send().await.unwrap();
    assert!(answer.status().is_success());
    let lines = d.wait_lines("out/f.jsonl", 1).await;
    assert_eq!(lines[0]["event_id"], ids[0].as_str());
    assert_eq!(
        lines[0]["properties"]["changes"][0]["adds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(a.calls("extract"), 3, "the replay fetched again");

    a.set(Mode::FailJob);
    post(
        &d,
        &online_event(&a.changes_url("Pest_Inspections", true), 6),
    )
    .await;
    d.wait_lines("out/loose.jsonl", 2).await;
    // The loose sink delivers at once; sink f spends its attempts first.
    until(&d, 20, "the failed job's dead letter", async || {
        metric(&d, "hookbridge_dead_letters{sink=\"f\"}").await == 1
    })
    .await;
    d.stop();
    let dead = dead_letters(&d);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("job ended Failed") && error.contains("change-tracked"),
        "{error}"
    );
    assert_no_secret_on_disk(&d, &a);
}

#[tokio::test]
async fn a_change_file_over_the_cap_is_a_clear_dead_letter() {
    let a = Arcgis::start(server::real_change_file());
    let mut d = start(&config(
        &app_connection(&a, "max_change_file = \"1KiB\""),
        &file_sink("f", "enrich = \"changes\""),
        "\"f\"",
    ));
    post(
        &d,
        &online_event(&a.changes_url("Pest_Inspections", true), 7),
    )
    .await;
    until(&d, 20, "the dead letter", async || {
        metric(&d, "hookbridge_dead_letters{sink=\"f\"}").await == 1
    })
    .await;
    assert_eq!(a.calls("file"), 1, "not fetched again");
    d.stop();
    let dead = dead_letters(&d);
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("larger than max_change_file (1024 bytes)"),
        "{error}"
    );
}

#[tokio::test]
async fn readyz_says_when_a_connection_cannot_get_a_token() {
    let a = Arcgis::start(server::real_change_file());
    a.set(Mode::NoToken);
    let d = start(&config(
        &app_connection(&a, ""),
        &file_sink("f", "enrich = \"changes\""),
        "\"f\"",
    ));
    let mut last = String::new();
    until(&d, 10, "readyz to name the connection", async || {
        let r = d.get("/readyz").await;
        last = r.text.clone();
        r.status == 503 && r.text.contains("arcgis.online cannot get a token")
    })
    .await;
    assert!(last.contains("Invalid client_id"), "{last}");
    a.set(Mode::Normal);
    until(&d, 20, "readyz to recover", async || {
        d.get("/readyz").await.status == 200
    })
    .await;
}

#[tokio::test]
async fn latency_from_accept_to_delivered_with_changes() {
    let a = Arcgis::start(server::real_change_file());
    let sinks = file_sink("plain", "") + &file_sink("rich", "enrich = \"changes\"");
    let d = start(&config(
        &app_connection(&a, ""),
        &sinks,
        "\"plain\", \"rich\"",
    ));
    until(&d, 10, "readiness", async || {
        d.get("/readyz").await.status == 200
    })
    .await;
    let rounds = 10;
    let (mut plain, mut rich) = (Duration::ZERO, Duration::ZERO);
    for n in 0..rounds {
        let started = Instant::now();
        post(
            &d,
            &online_event(&a.changes_url("Pest_Inspections", true), 100 + n),
        )
        .await;
        let want = n as usize + 1;
        let (mut p, mut r) = (None, None);
        while p.is_none() || r.is_none() {
            if p.is_none() && d.jsonl("out/plain.jsonl").len() >= want {
                p = Some(started.elapsed());
            }
            if r.is_none() && d.jsonl("out/rich.jsonl").len() >= want {
                r = Some(started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{}",
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        plain += p.unwrap_or_default();
        rich += r.unwrap_or_default();
    }
    let lines = d.jsonl("out/rich.jsonl");
    assert!(
        lines
            .iter()
            .all(|l| l["properties"]["changes"][0]["serverGen"] == 1770625)
    );
    println!(
        "accept → delivered, mean of {rounds}: without changes {:?}, with changes {:?} \
         (async job, one Pending poll at poll_interval 50ms); added {:?}",
        plain / rounds as u32,
        rich / rounds as u32,
        (rich - plain.min(rich)) / rounds as u32
    );
}

#[test]
fn explain_says_where_changes_would_be_fetched_from_without_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let base = "http://127.0.0.1:9";
    let sinks = file_sink(
        "f",
        "enrich = \"changes\"\npayload = \"template\"\npayload_template = \"{{ properties.changes | length }} layers\"",
    );
    let text = config(&connection_at(base, ""), &sinks, "\"f\"")
        .replace("{port}", "8080")
        .replace("{dir}", &dir.path().display().to_string());
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, text).unwrap();
    let body = dir.path().join("event.json");
    let url = format!(
        "{base}/rest/services/Pest_Inspections/FeatureServer/extractChanges?serverGens=[1,2]&async=true"
    );
    std::fs::write(&body, online_event(&url, 0)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["explain", "--config"])
        .arg(&path)
        .args(["--hook", "features"])
        .arg(&body)
        .env("FEED_CLIENT_SECRET", server::CLIENT_SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &v["events"][0]["deliveries"][0];
    assert_eq!(
        d["changes"],
        format!(
            "changes would be fetched from {base}/rest/services/Pest_Inspections/FeatureServer/extractChanges \
                 with connection arcgis.online; sent as properties.changes"
        )
    );
    assert!(d.to_string().contains("0 layers"), "{d}");
    assert!(!stdout.contains(server::CLIENT_SECRET));
}
