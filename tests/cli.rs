//! The command line and the routing table, through the real binary.

mod common;

use std::process::Command;

use common::{Daemon, FILE_CONFIG, KEY, sample};
use serde_json::Value;

fn hookbridge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(args)
        .output()
        .expect("run hookbridge")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_accepts_the_default_config_and_lists_every_problem_of_a_bad_one() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ok = hookbridge(&["check", "--config", &format!("{root}/routes.toml")]);
    assert!(ok.status.success(), "{}", text(&ok));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("routes.toml");
    std::fs::write(
        &bad,
        r#"
[server]
listen = "not an address"
[hooks.portal]
kind = "portal"
require_signature = true
[sinks.bus]
type = "kafka"
brokers = "127.0.0.1:9092"
topic = "arcgis.{{ kind"
[[routes]]
match = { operation = "delete", colour = "red" }
to = ["bus", "missing"]
"#,
    )
    .unwrap();
    let out = hookbridge(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    for key in [
        "server.listen",
        "hooks.portal.secrets",
        "sinks.bus.topic",
        "routes[0].match.colour",
        "routes[0].to[1]",
    ] {
        assert!(t.contains(key), "missing {key} in:\n{t}");
    }
    assert!(t.contains("5 problem(s)"), "{t}");

    std::fs::write(&bad, "[server]\nlisten = \"127.0.0.1:1\"\nmax_body = 12\n[storage]\ndedup_window = \"forever\"\n").unwrap();
    let out = hookbridge(&["check", "--config", bad.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("storage.dedup_window") && t.contains("line 5"),
        "{t}"
    );

    let out = hookbridge(&["check", "--config", "/nonexistent/routes.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("cannot read"), "{}", text(&out));
}

#[test]
fn check_reports_one_mistake_of_every_class_once_each_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("routes.toml");
    std::fs::write(
        &bad,
        r#"[server]
listen = "127.0.0.1:8080"
max_events = "many"

[hooks.parcels]
kind = "feature-service"
secrets = ["env:HOOKBRIDGE_TEST_UNSET_PARCELS_KEY"]

[sinks.teams]
type = "http"
url = "https://example.org/x"
max_in_flight = "four"

[sinks.bus]
type = "kafka"
brokers = "127.0.0.1:9092"
topic = "{{ kind"

[[routes]]
match = { kind = "survey" }
to = ["teams", "bus", "nosuch"]
"#,
    )
    .unwrap();
    let out = hookbridge(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let all = text(&out);
    let problems: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("routes.toml: "))
        .map(|l| l.split("routes.toml: ").nth(1).unwrap())
        .collect();
    let expected = [
        ("server.max_events (line 3)", "expected a whole number"),
        (
            "hooks.parcels.secrets[0] (line 7)",
            "HOOKBRIDGE_TEST_UNSET_PARCELS_KEY is not set",
        ),
        (
            "sinks.teams.max_in_flight (line 12)",
            "expected a whole number",
        ),
        ("sinks.bus.topic (line 17)", ""),
        (
            "routes[0].match.kind (line 20)",
            "did you mean \"survey123\"",
        ),
        ("routes[0].to[2] (line 21)", "no sink named \"nosuch\""),
    ];
    assert_eq!(problems.len(), expected.len(), "{all}");
    for ((key, says), got) in expected.iter().zip(&problems) {
        assert!(
            got.starts_with(key) && got.contains(says),
            "expected {key} {says:?}, got {got}\n{all}"
        );
    }
    assert!(!all.contains("usize"), "{all}");
    assert!(
        all.contains(&format!("{} problem(s) found", expected.len())),
        "{all}"
    );
    // explain names the hooks there are.
    let out = hookbridge(&[
        "explain",
        "--hook",
        "nosuch",
        "--config",
        &format!("{}/routes.toml", env!("CARGO_MANIFEST_DIR")),
        &format!(
            "{}/tests/samples/portal-group-update.json",
            env!("CARGO_MANIFEST_DIR")
        ),
    ]);
    assert!(
        text(&out).contains("configured hooks: [any, features, portal, survey]"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_refuses_an_empty_file_naming_what_is_missing() {
    // An editor that truncated routes.toml must not leave a config that passes: every hook would
    // answer 404.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("routes.toml");
    std::fs::write(&empty, "").unwrap();
    let out = hookbridge(&["check", "--config", empty.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for problem in [
        "no hook: add a [hooks.NAME] table",
        "no sink: add a [sinks.NAME] table",
        "no route: add a [[routes]] table",
    ] {
        assert!(t.contains(problem), "missing {problem:?} in:\n{t}");
    }
    assert!(t.contains("3 problem(s)"), "{t}");
}

#[test]
fn sign_prints_the_sample_signature() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = hookbridge(&[
        "sign",
        "--key",
        KEY,
        &format!("{root}/tests/samples/portal-group-update.json"),
    ]);
    assert!(out.status.success());
    let expected =
        std::fs::read_to_string(format!("{root}/tests/samples/portal-group-update.sig")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected.trim());
}

#[test]
fn explain_shows_events_keys_routes_and_messages() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = hookbridge(&[
        "explain",
        "--config",
        &format!("{root}/routes.toml"),
        "--hook",
        "features",
        &format!("{root}/tests/samples/feature-multi.form"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["event"]["operation"], "FeaturesCreated");
    assert_eq!(events[0]["event"]["event_id"].as_str().unwrap().len(), 32);
    assert_eq!(events[0]["routes"][0], "everything to the log");
    assert_eq!(events[0]["deliveries"][0]["sink"], "log");
    assert_eq!(
        events[0]["deliveries"][0]["message"]["line"]["id"],
        "Parcels/0"
    );

    let out = hookbridge(&[
        "explain",
        "--config",
        &format!("{root}/routes.toml"),
        "--hook",
        "portal",
        &format!("{root}/tests/samples/feature-created.json"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("not a portal payload"),
        "{}",
        text(&out)
    );
}

const ROUTING: &str = r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
path = "{dir}/data"
[hooks.portal]
kind = "portal"
[hooks.features]
kind = "feature-service"
[sinks.deletes]
type = "file"
path = "{dir}/deletes.jsonl"
[sinks.edits]
type = "file"
path = "{dir}/edits.jsonl"
[sinks.public]
type = "file"
path = "{dir}/public.jsonl"
[[routes]]
name = "deletes"
match = { operation = ["delete", "FeaturesDeleted"] }
to = ["deletes"]
stop = true
[[routes]]
name = "edits"
match = { kind = "feature-service", operation = "Features*" }
to = ["edits"]
[[routes]]
name = "shared to everyone"
match = { "properties.sharedToGroups" = "Everyone" }
to = ["public", "edits"]
"#;

#[tokio::test]
async fn routes_fan_out_by_value_list_glob_property_and_stop() {
    let d = Daemon::start(ROUTING);
    let post = |hook: &'static str, name: &'static str| {
        let body = sample(name);
        let d = &d;
        async move { d.post(hook, Some("application/json"), None, body).await }
    };
    assert_eq!(
        post("portal", "portal-item-share-multi.json").await.status,
        200
    );
    assert_eq!(post("features", "feature-multi.json").await.status, 200);
    let unrouted = post("portal", "portal-user-role.json").await;
    assert_eq!(unrouted.status, 200);
    assert_eq!(unrouted.accepted().len(), 1);

    let deletes = d.wait_lines("deletes.jsonl", 2).await;
    let ops: Vec<&str> = deletes
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(
        ops.contains(&"delete") && ops.contains(&"FeaturesDeleted"),
        "{ops:?}"
    );
    // FeaturesDeleted matched "deletes" with stop = true, so it is not among the edits.
    let edits = d.wait_lines("edits.jsonl", 3).await;
    let mut ops: Vec<&str> = edits
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    ops.sort();
    assert_eq!(ops, vec!["FeaturesCreated", "FeaturesUpdated", "share"]);
    let public = d.wait_lines("public.jsonl", 1).await;
    assert_eq!(public.len(), 1);
    assert_eq!(public[0]["operation"], "share");

    let metrics = d.get("/metrics").await.text;
    let unrouted_line = metrics
        .lines()
        .find(|l| l.starts_with("hookbridge_events_unrouted_total{"))
        .unwrap_or_default();
    assert!(unrouted_line.ends_with(" 1"), "{unrouted_line}");
    assert!(d.log_text().contains("matched no route"));
}

const STRICT: &str = r#"
[server]
listen = "127.0.0.1:{port}"
[storage]
path = "{dir}/data"
[hooks.portal]
kind = "portal"
[sinks.groups]
type = "file"
path = "{dir}/groups.txt"
payload = "template"
payload_template = "{{ properties.sharedToGroups | first }}"
[[routes]]
match = {}
to = ["groups"]
"#;

#[tokio::test]
async fn refused_deliveries_become_dead_letters_that_replay() {
    let mut d = Daemon::start(STRICT);
    let a = d
        .post(
            "portal",
            Some("application/json"),
            None,
            sample("portal-item-share-multi.json"),
        )
        .await;
    assert_eq!(a.accepted().len(), 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(d.path("groups.txt"))
        .unwrap_or_default()
        .lines()
        .count()
        < 1
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(d.stop().success());
    assert_eq!(
        std::fs::read_to_string(d.path("groups.txt")).unwrap(),
        "Everyone\n"
    );

    let out = d.cli(&["dlq", "list"]);
    let letters: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["event"]["operation"], "delete");
    assert_eq!(letters[0]["sink"], "groups");
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("sinks.groups.payload_template"),
        "{}",
        letters[0]["error"]
    );
    let stats: Value = serde_json::from_slice(&d.cli(&["queue", "stats"]).stdout).unwrap();
    assert_eq!(stats["sinks"]["groups"]["dead"], 1, "{stats}");

    // Fix the template, replay, and the delivery goes through.
    let fixed = std::fs::read_to_string(&d.config).unwrap().replace(
        "{{ properties.sharedToGroups | first }}",
        "{{ operation }} {{ id }}",
    );
    std::fs::write(&d.config, fixed).unwrap();
    let out = d.cli(&["dlq", "replay", "--sink", "groups"]);
    assert!(text(&out).contains("replayed 1"), "{}", text(&out));
    d.spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let t = std::fs::read_to_string(d.path("groups.txt")).unwrap_or_default();
        if t.contains("delete 7dd95fadaec84859ab8ed1059e675e0c") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replayed delivery never arrived: {t}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(d.stop().success());
    let out = d.cli(&["dlq", "list"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        Value::Array(vec![])
    );
    assert!(text(&d.cli(&["dlq", "purge"])).contains("purged 0"));
}

#[test]
fn offline_commands_refuse_a_running_daemons_data() {
    let d = Daemon::start(FILE_CONFIG);
    let out = d.cli(&["queue", "stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is `hookbridge serve` running"),
        "{}",
        text(&out)
    );
}
