//! No edit goes missing, end to end: reconciliation and the watch on ArcGIS's webhooks, the real
//! binary against the local ArcGIS of tests/changes, whose layer can be edited with no webhook
//! delivery sent and whose webhooks can be turned off; file sinks see what came, how often.

mod common;
// Shared with tests/changes.rs, which uses the parts this file does not.
#[allow(dead_code)]
#[path = "changes/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "changes/support.rs"]
mod support;

use common::Daemon;
use serde_json::Value;
use server::Arcgis;
use support::*;

/// A `parcels` hook on `a`'s `Parcels` service, layer 0, with `extra` keys; a split sink
/// `features` and an unsplit `whole`, both enriching.
fn reconciled(a: &Arcgis, extra: &str) -> String {
    let hook = format!(
        r#"
[hooks.parcels]
kind = "feature-service"
service = "{service}"
layers = [0]
reconcile = {{ every = "30s" }}
{extra}
"#,
        service = a.service_url("Parcels")
    );
    let sinks = file_sink("features", "enrich = \"changes\"\nsplit = \"feature\"")
        + &file_sink("whole", "enrich = \"changes\"");
    config(&app_connection(a, ""), &sinks, "\"features\", \"whole\"")
        .replace("[[routes]]", &format!("{hook}\n[[routes]]"))
        .replace(
            "match = { hook = \"features\" }",
            "match = { kind = \"feature-service\" }",
        )
}

/// The counter of finished polls for `parcels`.
async fn polls(d: &Daemon) -> u64 {
    metric(
        d,
        "hookbridge_reconcile_polls_total{hook=\"parcels\",result=\"ok\"}",
    )
    .await
}

/// Asks for a poll now and waits until it finished.
async fn poll_now(d: &Daemon) {
    let before = polls(d).await;
    let r = reqwest::Client::new()
        .post(format!("{}/admin/hooks/parcels/reconcile", d.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    until(d, 20, "the poll", async || polls(d).await > before).await;
}

/// `(operation, OBJECTID)` of each feature message the split sink got.
fn features(d: &Daemon) -> Vec<(String, u64)> {
    d.jsonl("out/features.jsonl")
        .iter()
        .map(|l| {
            let oid = l["properties"]["feature"]["attributes"]["OBJECTID"]
                .as_u64()
                .or_else(|| l["id"].as_str().and_then(|i| i.parse().ok()))
                .unwrap_or_default();
            (l["operation"].as_str().unwrap_or_default().to_string(), oid)
        })
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(o, n)| (o.to_string(), *n)).collect()
}

/// A site that cannot expose an endpoint to ArcGIS: no webhook at all. Edits arrive by the
/// schedule within one interval, and again by an operator's poll, each once.
#[tokio::test]
async fn edits_made_with_no_delivery_arrive_by_reconciliation_within_one_interval_once() {
    let a = Arcgis::start(server::real_change_file());
    let d = start(&reconciled(&a, "webhook = false"));
    until(
        &d,
        20,
        "the first poll (the starting serverGens)",
        async || polls(&d).await >= 1,
    )
    .await;
    assert_eq!(a.calls("service"), 1, "the starting point read once");
    a.edit(0, "add", 1, "new parcel");
    a.edit(0, "add", 2, "another");
    a.edit(0, "update", 1, "corrected");
    // every = "30s": the next scheduled poll finds them.
    until(&d, 45, "the scheduled poll's changes", async || {
        d.jsonl("out/features.jsonl").len() >= 2
    })
    .await;
    let lines = d.jsonl("out/features.jsonl");
    assert_eq!(
        features(&d),
        pairs(&[("add", 1), ("add", 2)]),
        "an add then an update is one add, of the latest state: {lines:#?}\n{}",
        d.log_text()
    );
    let first = &lines[0];
    assert_eq!(first["source"], "reconcile");
    assert_eq!(first["properties"]["reconciled"], true);
    assert_eq!(first["properties"]["change"], "FeaturesCreated");
    assert_eq!(
        first["properties"]["feature"]["attributes"]["Notes"],
        "corrected"
    );
    let whole = d.wait_lines("out/whole.jsonl", 1).await;
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0]["operation"], "FeaturesEdited");
    assert_eq!(whole[0]["kind"], "feature-service");
    assert_eq!(
        whole[0]["properties"]["changes"][0]["adds"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    a.edit(0, "update", 2, "surveyed");
    a.edit(0, "delete", 1, "");
    poll_now(&d).await;
    d.wait_lines("out/features.jsonl", 4).await;
    poll_now(&d).await;
    assert_eq!(
        features(&d),
        pairs(&[("add", 1), ("add", 2), ("update", 2), ("delete", 1)]),
        "{}",
        d.log_text()
    );
    assert_eq!(d.jsonl("out/whole.jsonl").len(), 2, "one event per window");
    assert_eq!(
        u64::from(a.calls("extract")),
        polls(&d).await,
        "one extractChanges call per poll: no sink fetched a window again"
    );

    let refused = d.post_signed("parcels", b"[]").await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("webhook = false"), "{}", refused.text);
    assert_no_secret_on_disk(&d, &a);
}

/// A webhook that delivers, misses one delivery, and delivers again: what it delivered comes
/// through its events, the window it missed through reconciliation, and a later delivery over
/// a window that overlaps both repeats nothing.
#[tokio::test]
async fn a_delivery_and_a_poll_over_the_same_window_give_each_change_once() {
    let a = Arcgis::start(server::real_change_file());
    let d = start(&reconciled(&a, "secrets = [\"example-signature-key\"]"));
    until(&d, 20, "the first poll", async || polls(&d).await >= 1).await;
    let g0 = a.server_gen();
    a.edit(0, "add", 1, "one");
    let g1 = a.edit(0, "add", 2, "two");
    let url = a.window_url("Parcels", g0, g1, true);
    d.post_signed("parcels", &online_event(&url, 1)).await;
    d.wait_lines("out/features.jsonl", 2).await;
    poll_now(&d).await;
    assert_eq!(features(&d), pairs(&[("add", 1), ("add", 2)]));

    // The delivery for this edit never arrives; the next one reveals the gap.
    let g2 = a.edit(0, "update", 1, "missed");
    let g3 = a.edit(0, "add", 3, "three");
    let url = a.window_url("Parcels", g2, g3, true);
    d.post_signed("parcels", &online_event(&url, 2)).await;
    d.wait_lines("out/features.jsonl", 4).await;
    poll_now(&d).await;
    let mut got = features(&d);
    got.sort();
    assert_eq!(
        got,
        pairs(&[("add", 1), ("add", 2), ("add", 3), ("update", 1)]),
        "{}",
        d.log_text()
    );
    assert!(
        d.jsonl("out/features.jsonl")
            .iter()
            .any(|l| l["source"] == "reconcile" && l["operation"] == "update"),
        "the missed edit came by reconciliation"
    );
    assert_eq!(
        metric(&d, "hookbridge_reconciled_windows_total{hook=\"parcels\"}").await,
        1
    );

    // ArcGIS delivers a window spanning the missed one and the last again: no feature change
    // is sent twice.
    let url = a.window_url("Parcels", g1, g3, true);
    d.post_signed("parcels", &online_event(&url, 3)).await;
    until(&d, 20, "the overlapping delivery", async || {
        d.jsonl("out/whole.jsonl").len() >= 4
    })
    .await;
    poll_now(&d).await;
    assert_eq!(features(&d).len(), 4, "{:#?}", features(&d));
}

/// The daemon stops dead after a poll's event is accepted and before the serverGen advances:
/// the restart finishes the poll, and nothing is lost or sent twice.
#[tokio::test]
async fn a_restart_between_the_fetch_and_the_server_gen_update_loses_and_repeats_nothing() {
    let a = Arcgis::start(server::real_change_file());
    // The sinks cannot open their files yet (`out` is a file): nothing is sent before the stop.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("out"), b"not a directory").unwrap();
    let mut d = Daemon::start_in(
        &reconciled(&a, "webhook = false"),
        dir,
        &[
            ("FEED_CLIENT_SECRET", server::CLIENT_SECRET),
            ("HOOKBRIDGE_FAULT_RECONCILE_ABORT", "1"),
        ],
    );
    until(&d, 20, "the first poll", async || polls(&d).await >= 1).await;
    a.edit(0, "add", 7, "before the stop");
    let _ = reqwest::Client::new()
        .post(format!("{}/admin/hooks/parcels/reconcile", d.url))
        .bearer_auth(ADMIN)
        .send()
        .await;
    let stopped = std::time::Instant::now();
    while d
        .child
        .as_mut()
        .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    {
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(20),
            "the daemon did not stop at the fault point\n{}",
            d.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    d.kill9();
    std::fs::remove_file(d.path("out")).unwrap();
    d.env
        .retain(|(k, _)| k != "HOOKBRIDGE_FAULT_RECONCILE_ABORT");
    d.spawn();
    d.wait_lines("out/features.jsonl", 1).await;
    until(&d, 20, "the restarted poll", async || polls(&d).await >= 1).await;
    a.edit(0, "add", 8, "after the restart");
    poll_now(&d).await;
    d.wait_lines("out/features.jsonl", 2).await;
    poll_now(&d).await;
    assert_eq!(
        features(&d),
        pairs(&[("add", 7), ("add", 8)]),
        "{}",
        d.log_text()
    );
    let whole: Vec<Value> = d.jsonl("out/whole.jsonl");
    assert_eq!(
        whole.len(),
        2,
        "one event per window, none twice: {whole:#?}"
    );
}

/// `[arcgis.online]` against `a`, whose services cover its admin endpoints too.
fn admin_connection(a: &Arcgis) -> String {
    format!(
        r#"
[arcgis.online]
portal = "{base}"
services = ["{base}/rest/services/", "{base}/rest/admin/services/"]
client_id = "{id}"
client_secret = "env:FEED_CLIENT_SECRET"
"#,
        base = a.base,
        id = server::CLIENT_ID
    )
}

/// The overview page's text, signed in with the admin token.
async fn overview(d: &Daemon) -> String {
    d.ui_page(ADMIN, "/ui").await
}

/// ArcGIS turns the webhook feeding a hook off: within one interval the metric says 0, the
/// status page shows a banner, and `/readyz` says why while staying ready; on again, all clear.
#[tokio::test]
async fn a_webhook_arcgis_turned_off_shows_on_the_metric_the_page_and_readyz() {
    let a = Arcgis::start(server::real_change_file());
    let url = a.set_webhook("Parcels", "w1", true, 0);
    let connection = admin_connection(&a);
    let hook = format!(
        "\n[hooks.parcels]\nkind = \"feature-service\"\nsecrets = [\"example-signature-key\"]\nwebhooks = [\"{url}\"]\nwatch_every = \"30s\"\n"
    );
    let cfg = config(&connection, &file_sink("f", ""), "\"f\"")
        .replace("[[routes]]", &format!("{hook}\n[[routes]]"));
    let d = start(&cfg);
    let active = async || {
        metric(
            &d,
            "hookbridge_arcgis_webhook_active{hook=\"parcels\",webhook=\"w1\"}",
        )
        .await
    };
    until(&d, 20, "the first read", async || {
        d.get("/metrics")
            .await
            .text
            .contains("hookbridge_arcgis_webhook_active{hook=\"parcels\",webhook=\"w1\"} 1")
    })
    .await;
    let ready = d.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert!(!ready.text.contains("notices"), "{}", ready.text);

    a.set_webhook("Parcels", "w1", false, 5);
    until(&d, 40, "the webhook turned off to show", async || {
        active().await == 0
            && d.get("/metrics").await.text.contains(
                "hookbridge_arcgis_webhook_failed_notifications{hook=\"parcels\",webhook=\"w1\"} 5",
            )
    })
    .await;
    let ready = d.get("/readyz").await;
    assert_eq!(ready.status, 200, "readiness is about hookbridge itself");
    assert!(
        ready.text.contains("is turned off in ArcGIS") && ready.text.contains("hook parcels"),
        "{}",
        ready.text
    );
    let page = overview(&d).await;
    assert!(
        page.contains("class=\"banner\"") && page.contains("is turned off in ArcGIS"),
        "{page}"
    );
    assert!(
        d.log_text().contains("ArcGIS turned the webhook off"),
        "{}",
        d.log_text()
    );
    assert!(
        a.seen().unauthorized == 0,
        "read with the connection's token"
    );

    a.set_webhook("Parcels", "w1", true, 0);
    until(&d, 40, "the webhook on again", async || active().await == 1).await;
    assert!(!d.get("/readyz").await.text.contains("notices"));
    assert!(!overview(&d).await.contains("class=\"banner\""));
    assert_no_secret_on_disk(&d, &a);
}

/// Runs `hookbridge arcgis webhooks ARGS` on `d`'s config: exit success, stdout, stderr.
fn webhooks_cli(d: &Daemon, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["arcgis", "webhooks"])
        .args(args)
        .arg("--config")
        .arg(&d.config)
        .env("FEED_CLIENT_SECRET", server::CLIENT_SECRET)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `create` registers the hook's webhook in ArcGIS (whose CRC challenge the running daemon
/// answers with the hook's key, never printed), `check` passes, then names what to fix once
/// ArcGIS turned it off; an expired token is renewed, a missing privilege is a clear refusal.
#[tokio::test]
async fn webhooks_are_created_and_checked_and_refusals_are_clear() {
    let a = Arcgis::start(server::real_change_file());
    let connection = admin_connection(&a);
    let hook = format!(
        "\n[hooks.parcels]\nkind = \"feature-service\"\nsecrets = [\"example-signature-key\"]\nservice = \"{}\"\n",
        a.service_url("Parcels")
    );
    let cfg = config(&connection, &file_sink("f", ""), "\"f\"")
        .replace("[[routes]]", &format!("{hook}\n[[routes]]"));
    let d = start(&cfg);
    let url = format!("{}/hooks/parcels", d.url);

    let (ok, out, _) = webhooks_cli(&d, &["check", "--hook", "parcels"]);
    assert!(!ok && out.contains("no ArcGIS webhook"), "{out}");

    let (ok, out, err) = webhooks_cli(&d, &["create", "--hook", "parcels", "--url", &url]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("created ArcGIS webhook wh1 (hookbridge-parcels)")
            && out.contains("signed with the hook's first secret"),
        "{out}"
    );
    let (ok, listed, _) = webhooks_cli(&d, &["list", "--hook", "parcels"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["hook_url"], url.as_str());
    assert_eq!(listed[0]["key_set"], true);
    let (ok, out, err) = webhooks_cli(&d, &["check", "--hook", "parcels", "--url", &url]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("webhook wh1 (hookbridge-parcels): ok"),
        "{out}"
    );

    // ArcGIS turns it off after failures (and shows it without a key, posting elsewhere).
    a.set_webhook("Parcels", "wh1", false, 5);
    let (ok, out, _) = webhooks_cli(&d, &["check", "--hook", "parcels"]);
    assert!(!ok, "{out}");
    for says in [
        "turned it off",
        "no signature key",
        "5 failed notification attempts",
    ] {
        assert!(out.contains(says), "{says}: {out}");
    }

    // An expired token is renewed and the call made again; a missing privilege is refused.
    a.set(server::Mode::Refuse498Once);
    let (ok, _, err) = webhooks_cli(&d, &["list", "--hook", "parcels"]);
    assert!(ok, "{err}");
    a.set(server::Mode::NoPrivilege);
    let (ok, out, err) = webhooks_cli(&d, &["create", "--hook", "parcels", "--url", &url]);
    assert!(!ok, "{out}");
    assert!(err.contains("You do not have permissions"), "{err}");
    let (ok, _, err) = webhooks_cli(&d, &["create", "--hook", "parcels"]);
    assert!(!ok && err.contains("create needs --url"), "{err}");
    let (ok, _, err) = webhooks_cli(&d, &["list", "--hook", "nosuch"]);
    assert!(!ok && err.contains("the hooks are:"), "{err}");

    let seen = a.seen();
    assert_eq!(seen.token_in_query, 0, "the token travels in the header");
    let printed = format!("{out}{err}");
    assert!(!printed.contains("example-signature-key"));
}
