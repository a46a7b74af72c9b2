//! A refusal stores nothing: each write of the commit path is made to fail in turn (the
//! `fault-injection` feature, `HOOKBRIDGE_FAULT_WRITE=N`); the request hit gets 503, the daemon
//! stops accepting and says why, SIGTERM ends it non-zero within `shutdown_timeout`, and after a
//! restart none of the refused request's rows exist and its retry is accepted in full.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Daemon, sample};
use serde_json::Value;

const ADMIN: &str = "fault-injection-admin-token-0123";

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_timeout = "5s"
admin_token = "fault-injection-admin-token-0123"
[storage]
path = "{dir}/data"
[hooks.portal]
kind = "portal"
secrets = ["example-signature-key"]
[sinks.log]
type = "file"
path = "{dir}/events.jsonl"
[[routes]]
match = {}
to = ["log"]
"#;

/// A delivery of `n` portal events with ids `{tag}-0..n`.
fn delivery(tag: &str, n: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sample("portal-group-update.json")).unwrap();
    let template = v["events"][0].clone();
    v["events"] = (0..n)
        .map(|i| {
            let mut e = template.clone();
            e["id"] = Value::from(format!("{tag}-{i}"));
            e
        })
        .collect();
    serde_json::to_vec(&v).unwrap()
}

async fn stats(d: &Daemon) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/admin/queue", d.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

fn delivered(d: &Daemon) -> HashSet<String> {
    d.jsonl("events.jsonl")
        .iter()
        .filter_map(|l| l["event_id"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn each_failed_write_of_the_commit_path_stores_nothing_of_its_request() {
    // Writes 1 and 2: the first request's apply and fsync; 3 and 4: the second's.
    for step in 1..=4u64 {
        let n = step.to_string();
        let mut d = Daemon::start_env(CONFIG, &[("HOOKBRIDGE_FAULT_WRITE", &n)]);
        let requests = [delivery("a", 1), delivery("b", 40)];
        let mut acked = HashSet::new();
        let mut refused = Vec::new();
        for body in &requests {
            let a = d.post_signed("portal", body).await;
            match a.status {
                200 => acked.extend(a.accepted()),
                503 => refused.push(body.clone()),
                other => panic!("step {step}: unexpected {other}: {}", a.text),
            }
        }
        let hit = ((step - 1) / 2) as usize;
        assert_eq!(
            refused.len(),
            2 - hit,
            "step {step}: the request hit and every later one get 503\n{}",
            d.log_text()
        );
        let ready = d.get("/readyz").await;
        assert_eq!(ready.status, 503, "step {step}: {}", ready.text);
        assert!(
            ready.text.contains("cannot write"),
            "step {step}: {}",
            ready.text
        );

        let asked = Instant::now();
        let status = d.stop();
        assert!(
            asked.elapsed() < Duration::from_secs(7),
            "step {step}: the stop took {:?}",
            asked.elapsed()
        );
        assert!(
            !status.success(),
            "step {step}: exits non-zero after a failed write"
        );
        assert!(
            d.log_text().contains("an earlier write failed"),
            "step {step}: the log says why\n{}",
            d.log_text()
        );

        d.env.clear();
        d.spawn();
        let s = stats(&d).await;
        assert_eq!(
            s["events"],
            acked.len(),
            "step {step}: only acknowledged rows: {s}"
        );
        assert_eq!(s["dedup_keys"], acked.len(), "step {step}: {s}");
        for body in &refused {
            let retry = d.post_signed("portal", body).await;
            assert_eq!(retry.status, 200, "step {step}: {}", retry.text);
            assert_eq!(
                retry.json["duplicates"].as_array().map(Vec::len),
                Some(0),
                "step {step}: the retry is accepted in full: {}",
                retry.text
            );
            acked.extend(retry.accepted());
        }
        assert_eq!(acked.len(), 41, "step {step}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !acked.is_subset(&delivered(&d)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lost: Vec<_> = acked.difference(&delivered(&d)).cloned().collect();
        assert!(lost.is_empty(), "step {step}: never delivered: {lost:?}");
    }
}

#[tokio::test]
async fn sigterm_ends_within_shutdown_timeout_when_the_queue_cannot_be_flushed() {
    let mut d = Daemon::start_env(CONFIG, &[("HOOKBRIDGE_FAULT_STALL_CLOSE", "1")]);
    let a = d.post_signed("portal", &delivery("c", 3)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let asked = Instant::now();
    let status = d.stop();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(7), "the stop took {took:?}");
    assert!(
        !status.success(),
        "an unflushed queue ends in a non-zero exit"
    );
    assert!(
        d.log_text()
            .contains("the queue could not be flushed in time"),
        "{}",
        d.log_text()
    );
    // What was acknowledged had been flushed before the 200: it is all there after a restart.
    d.env.clear();
    d.spawn();
    let want: HashSet<String> = a.accepted().into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want.is_subset(&delivered(&d)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(want.is_subset(&delivered(&d)));
    eprintln!("stop with a stalled flush: {took:?}, {status}");
}
