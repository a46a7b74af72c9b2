//! Feature-service webhooks as ArcGIS sends them with `contentType =
//! application/x-www-form-urlencoded`: `payload=<the JSON array, form-encoded>`, signed over the
//! raw body in the `x-esriHook-Signature` header (the first text the daemon checks a form
//! signature against; see `body::decode_form`).

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{self, sign};
use crate::load::{self, Bodies, Load, Request, Run};

/// Change types of one request: three on layer 0, one on layer 2 (the shape of
/// tests/samples/feature-multi.form).
pub const EVENTS_PER_REQUEST: u64 = 4;

/// Signed form bodies of run `run`; request `n` carries its own `serverGens` window and
/// `lastUpdatedTime`, both in the dedup key, so each of its events is new.
pub fn bodies(run: u64) -> Bodies {
    Arc::new(move |n| {
        let json = payload(run, n);
        let mut body = b"payload=".to_vec();
        body.extend(form_urlencoded::byte_serialize(json.as_bytes()).flat_map(str::bytes));
        Request {
            signature: sign(&body),
            body,
            content_type: "application/x-www-form-urlencoded",
        }
    })
}

/// The feature-service JSON array of request `n` of run `run` (~800 bytes, ~970 form-encoded).
fn payload(run: u64, n: u64) -> String {
    let from = run * 1_000_000_000_000 + 2 * n;
    let to = from + 1;
    let when = 1_755_719_255_181 + n;
    let url = |attachments: bool| {
        format!(
            "https://services.example.com/ABCD1EFghIJK2LmN/ArcGIS/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[{from},{to}]&async=true&returnAttachments={attachments}"
        )
    };
    format!(
        r#"[{{"name":"parcels-edits","layerId":0,"orgId":"ABCD1EFghIJK2LmN","serviceName":"Parcels","lastUpdatedTime":{when},"changesUrl":"{}","events":["FeaturesCreated","FeaturesUpdated","FeaturesDeleted"]}},{{"name":"parcels-edits","layerId":2,"orgId":"ABCD1EFghIJK2LmN","serviceName":"Parcels","lastUpdatedTime":{when},"changesUrl":"{}","events":["AttachmentsCreated"]}}]"#,
        url(false),
        url(true)
    )
}

/// The form phase's figures.
pub struct Figures {
    pub run: Run,
    /// Events the daemon stored during the timed phase, and refused as duplicates.
    pub events: f64,
    pub duplicates: f64,
    /// Mean requests per group commit, and ms per write + fsync.
    pub commits: (f64, f64),
    /// Mean size of a request body.
    pub body_bytes: usize,
}

/// Max rate of signed form bodies to a `feature-service` hook of a fresh daemon (the file sink
/// delivering, as in the main max phase).
pub fn measure(rt: &tokio::runtime::Runtime, clients: usize, seconds: u64) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = load::free_port();
    let config = daemon::write_config(dir.path(), port);
    let mut child = daemon::start_daemon(&config, dir.path());
    load::wait_port(port);
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("http://127.0.0.1:{port}/hooks/features");
    // One request first: the body must be accepted with all its events, or the phase is moot.
    let check = rt.block_on(async {
        let r = bodies(99)(0);
        let resp = reqwest::Client::new()
            .post(&url)
            .header("content-type", r.content_type)
            .header("x-esriHook-Signature", r.signature)
            .body(r.body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("post a form body");
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.unwrap_or_default();
        (status, v)
    });
    assert!(
        check.0.is_success()
            && check.1["accepted"].as_array().map(Vec::len) == Some(EVENTS_PER_REQUEST as usize),
        "the daemon did not accept a feature-service form body with {EVENTS_PER_REQUEST} events: {} {}",
        check.0,
        check.1
    );
    let counts = |text: &str| {
        let events = load::metric(
            text,
            "hookbridge_events_accepted_total",
            &["hook=\"features\""],
        );
        let duplicates = load::metric(
            text,
            "hookbridge_events_duplicate_total",
            &["hook=\"features\""],
        );
        (events.unwrap_or(0.0), duplicates.unwrap_or(0.0))
    };
    let before = counts(&rt.block_on(load::metrics_text(port)));
    let run = rt.block_on(Load::new(&url, clients, seconds, bodies(1)).run());
    let after = counts(&rt.block_on(load::metrics_text(port)));
    let commits = rt.block_on(load::commit_figures(port));
    daemon::stop(&mut child);
    let body_bytes = (0..100).map(|n| bodies(1)(n).body.len()).sum::<usize>() / 100;
    Figures {
        run,
        events: after.0 - before.0,
        duplicates: after.1 - before.1,
        commits,
        body_bytes,
    }
}
