//! The change feed's trust and failure boundaries: the token reaches only `services`, sent in a
//! header, never in a URL; a change file that stays unavailable holds up no other, and is given
//! up after `give_up_after`.

use std::time::{Duration, Instant};

use super::server::{self, Arcgis};
use super::support::*;

/// `[arcgis.online]` whose only service prefix is `http://localhost:PORT/rest/services/`.
fn localhost_connection(a: &Arcgis) -> String {
    let port = a.base.rsplit(':').next().unwrap();
    format!(
        r#"
[arcgis.online]
portal = "{base}"
services = ["http://localhost:{port}/rest/services/"]
client_id = "{id}"
client_secret = "env:FEED_CLIENT_SECRET"
poll_interval = "50ms"
fetch_timeout = "1s"
"#,
        base = a.base,
        id = server::CLIENT_ID,
    )
}

#[tokio::test]
async fn the_token_never_leaves_the_services_prefix() {
    let a = Arcgis::start(server::real_change_file());
    // Another local server, on another port: it records any request and any token it gets.
    let elsewhere = Arcgis::start(server::real_change_file());
    let port = a.base.rsplit(':').next().unwrap().to_string();
    let other = elsewhere.base.rsplit(':').next().unwrap().to_string();
    let mut d = start(&config(
        &localhost_connection(&a),
        &file_sink("f", "enrich = \"changes\""),
        "\"f\"",
    ));
    let window = "FeatureServer/extractChanges?serverGens=[1,2]&returnUpdates=true";
    let good = format!("http://localhost:{port}/rest/services/Pest/{window}");
    let tricks = [
        format!("http://localhost:{port}/rest/services/../other/Pest/{window}"),
        format!("http://localhost:{port}/rest/services/%2e%2e/other/Pest/{window}"),
        format!("http://localhost:{port}/rest/services/.%2E/other/Pest/{window}"),
        format!("http://localhost:{port}/rest/services/..\\other/Pest/{window}"),
        format!("http://localhost:{port}/rest/services%2F..%2Fother/Pest/{window}"),
        format!("http://localhost@127.0.0.1:{other}/rest/services/Pest/{window}"),
        format!("http://localhost:{other}/rest/services/Pest/{window}"),
        format!("http://localhost:{port}@127.0.0.1:{other}/rest/services/Pest/{window}"),
    ];
    post(&d, &online_event(&good, 1)).await;
    for (n, url) in tricks.iter().enumerate() {
        post(&d, &online_event(url, 10 + n as u64)).await;
    }
    let lines = d.wait_lines("out/f.jsonl", 1).await;
    assert_eq!(lines[0]["properties"]["changes"][0]["serverGen"], 1770625);
    until(&d, 20, "every trick dead-lettered", async || {
        metric(&d, "hookbridge_dead_letters{sink=\"f\"}").await == tricks.len() as u64
    })
    .await;
    // The one good fetch carried the token in its header; nothing else got one.
    let seen = a.seen();
    assert_eq!(seen.token_in_query, 0, "a token travelled in a URL");
    assert_eq!(seen.unauthorized, 0);
    assert!(
        seen.stray.iter().all(|(_, token)| !token),
        "{:?}",
        seen.stray
    );
    let there = elsewhere.seen();
    assert!(
        there.calls.is_empty() && there.stray.is_empty(),
        "the other port was reached: {there:?}"
    );
    d.stop();
    let dead = dead_letters(&d);
    assert_eq!(dead.len(), tricks.len(), "{dead:#?}");
    for letter in &dead {
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("no [arcgis.*] connection"), "{error}");
        assert!(
            !error.contains("serverGens"),
            "the query is never shown: {error}"
        );
    }
    assert_no_secret_on_disk(&d, &a);
}

#[tokio::test]
async fn a_change_file_that_stays_unavailable_holds_up_no_other() {
    let a = Arcgis::start(server::real_change_file());
    let sinks = file_sink("f", "enrich = \"changes\"")
        + &file_sink(
            "loose",
            "enrich = \"changes\"\non_enrich_failure = \"deliver-unenriched\"",
        );
    let mut d = start(&config(
        &app_connection(&a, "give_up_after = \"3s\""),
        &sinks,
        "\"f\", \"loose\"",
    ));
    for n in 0..4 {
        post(&d, &online_event(&a.changes_url("broken", true), n)).await;
    }
    until(&d, 10, "the broken service to be tried", async || {
        a.calls("broken") >= 4
    })
    .await;
    let started = Instant::now();
    for n in 10..13 {
        post(
            &d,
            &online_event(&a.changes_url("Pest_Inspections", true), n),
        )
        .await;
    }
    until(&d, 10, "the good ones, enriched", async || {
        d.jsonl("out/f.jsonl").len() >= 3
    })
    .await;
    let waited = started.elapsed();
    for l in d.jsonl("out/f.jsonl") {
        assert_eq!(l["properties"]["changes"][0]["serverGen"], 1770625);
    }
    // The broken ones are given up after give_up_after: dead letters at f, unenriched at loose.
    until(&d, 20, "the broken ones given up", async || {
        metric(&d, "hookbridge_dead_letters{sink=\"f\"}").await == 4
    })
    .await;
    let loose = d.wait_lines("out/loose.jsonl", 7).await;
    let unenriched = loose
        .iter()
        .filter(|l| l["properties"].get("changesError").is_some())
        .count();
    assert_eq!(unenriched, 4, "{loose:#?}");
    d.stop();
    let dead = dead_letters(&d);
    assert_eq!(dead.len(), 4);
    for letter in &dead {
        let error = letter["error"].as_str().unwrap();
        assert!(error.contains("(give_up_after)"), "{error}");
    }
    eprintln!("good change files delivered {waited:?} after the broken ones began failing");
    assert!(waited < Duration::from_secs(10));
}
