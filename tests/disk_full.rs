//! Disk full: below `storage.min_free` the daemon answers 503 (ArcGIS retries), stores nothing
//! of a refused delivery, loses nothing it acknowledged, refuses to start on a full disk
//! without writing, and takes deliveries again as soon as space returns.
//!
//! The queue lives on a small tmpfs the test mounts (root, as in CI). Under `CI=true` a missing
//! mount permission fails the test; elsewhere the test says loudly that it did not run.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, sample};
use serde_json::Value;

const ADMIN: &str = "disk-full-admin-token-0123456789";

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
max_body = "2MiB"
# The scenarios need deliveries of tens of thousands of tiny events: the disk is what is tested.
max_events = 100000
shutdown_timeout = "10s"
admin_token = "disk-full-admin-token-0123456789"
[storage]
path = "{dir}/small/data"
min_free = "{min_free}"
[hooks.open]
kind = "portal"
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

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts a `size` tmpfs at `dir/small`. Without the permission: fails under `CI=true`,
/// else returns None after saying loudly that the test did not run.
fn tmpfs(dir: &Path, size: &str, test: &str) -> Option<Mount> {
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&small)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Mount(small)),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            let msg = format!(
                "{test}: cannot mount a {size} tmpfs ({}): this test needs root or CAP_SYS_ADMIN \
                 and the `mount` command",
                why.trim()
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n!!!!!!!! NOT RUN: {msg} !!!!!!!!\n");
            None
        }
    }
}

fn remount(mount: &Mount, size: &str) {
    let ok = Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(&mount.0)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "remount {} to {size}", mount.0.display());
}

/// Takes the tmpfs down to about `left` free bytes with a filler file.
fn fill(mount: &Mount, left: u64) -> PathBuf {
    let st = rustix::fs::statvfs(&mount.0).unwrap();
    let free = st.f_bavail * st.f_frsize;
    let path = mount.0.join("filler");
    let size = free.saturating_sub(left);
    std::fs::write(&path, vec![1u8; size as usize]).unwrap();
    path
}

fn small_payload(n: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sample("portal-group-update.json")).unwrap();
    v["events"][0]["id"] = Value::from(format!("small-{n}"));
    serde_json::to_vec(&v).unwrap()
}

/// Events in the reported delivery.
const BIG: usize = 22_000;

/// The reported delivery: one signed organization payload just under 1 MiB holding 22 000
/// tiny events (the report's had 24 082 with shorter fields).
fn big_delivery() -> Vec<u8> {
    big_delivery_from(0)
}

/// A delivery like [`big_delivery`] whose events' ids start at `from`.
fn big_delivery_from(from: usize) -> Vec<u8> {
    let events: Vec<Value> = (from..from + BIG)
        .map(|n| serde_json::json!({"operation": "add", "source": "item", "id": n}))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "info": {"webhookName": "org", "portalURL": "https://gis.example.org/portal/"},
        "events": events,
    }))
    .unwrap();
    assert!(body.len() < 1 << 20, "{} bytes", body.len());
    body
}

fn config(min_free: &str) -> String {
    CONFIG.replace("{min_free}", min_free)
}

async fn admin_queue(d: &Daemon) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/admin/queue", d.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Waits until every id in `want` is in the file sink; returns those missing.
async fn missing(d: &Daemon, want: &HashSet<String>) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got: HashSet<String> = d
            .jsonl("events.jsonl")
            .iter()
            .filter_map(|l| l["event_id"].as_str().map(String::from))
            .collect();
        let lost: Vec<String> = want.difference(&got).cloned().collect();
        if lost.is_empty() || std::time::Instant::now() > deadline {
            return lost;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Files and sizes under `dir`, to show that nothing was written.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), m.len()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_full_disk_answers_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = tmpfs(dir.path(), "16m", "a_full_disk_answers_503_and_recovers") else {
        return;
    };
    let d = Daemon::start_in(&config("4MiB"), dir, &[]);
    let mut acked = HashSet::new();
    let mut refused = 0;
    for n in 0..2_000u64 {
        let mut v: Value = serde_json::from_slice(&small_payload(n)).unwrap();
        v["events"][0]["properties"]["padding"] = Value::from("y".repeat(60_000));
        let a = d
            .post(
                "open",
                Some("application/json"),
                None,
                serde_json::to_vec(&v).unwrap(),
            )
            .await;
        match a.status {
            200 => acked.extend(a.accepted()),
            503 => {
                assert_eq!(a.json["error"], "unavailable", "{}", a.text);
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("unexpected {other} while the disk fills: {}", a.text),
        }
    }
    assert!(
        refused >= 3,
        "the disk never filled ({} accepted)",
        acked.len()
    );
    assert_eq!(d.get("/healthz").await.status, 200);
    let ready = d.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(ready.text.contains("storage.min_free"), "{}", ready.text);

    // Space returns: deliveries are taken again at once, without a restart.
    remount(&mount, "512m");
    let a = d
        .post(
            "open",
            Some("application/json"),
            None,
            small_payload(10_000),
        )
        .await;
    assert_eq!(a.status, 200, "{}\n{}", a.text, d.log_text());
    acked.extend(a.accepted());
    assert_eq!(d.get("/readyz").await.status, 200);
    let lost = missing(&d, &acked).await;
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {lost:?}",
        lost.len()
    );
    eprintln!(
        "disk full: {} accepted, {refused} answered 503, none lost",
        acked.len()
    );
}

/// Scenario 1 of issue 16: one acknowledged event, then a delivery far larger than the disk,
/// then a restart on a full disk, then room again.
#[tokio::test]
async fn a_delivery_larger_than_the_disk_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = tmpfs(dir.path(), "20m", "a_delivery_larger_than_the_disk") else {
        return;
    };
    let mut d = Daemon::start_in(&config("5MiB"), dir, &[]);
    let first = d.post_signed("portal", &small_payload(1)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let acked: HashSet<String> = first.accepted().into_iter().collect();
    let big = big_delivery();
    let refused = d.post_signed("portal", &big).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(
        refused.text.contains("storage.min_free"),
        "{}",
        refused.text
    );
    let stats = admin_queue(&d).await;
    assert_eq!(
        stats["events"], 1,
        "nothing of the refused delivery: {stats}"
    );
    assert_eq!(stats["dedup_keys"], 1, "{stats}");
    // A refusal before writing does not stop the daemon: small deliveries still fit.
    let second = d.post_signed("portal", &small_payload(2)).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let acked: HashSet<String> = acked.into_iter().chain(second.accepted()).collect();
    assert!(d.stop().success(), "{}", d.log_text());

    // The disk fills up while the daemon is down: it refuses to start, and writes nothing.
    let data = mount.0.join("data");
    let filler = fill(&mount, 2 << 20);
    let before = listing(&data);
    let status = d.spawn_expecting_exit();
    assert_eq!(status.code(), Some(75), "{}", d.log_text());
    assert!(
        d.log_text()
            .contains("not starting: the queue's disk is full")
    );
    assert_eq!(listing(&data), before, "a refused start writes nothing");

    // Room again: everything acknowledged is delivered, and the retry is accepted in full.
    std::fs::remove_file(filler).unwrap();
    remount(&mount, "256m");
    d.spawn();
    let lost = missing(&d, &acked).await;
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    let retry = d.post_signed("portal", &big).await;
    assert_eq!(
        retry.status,
        200,
        "{}",
        &retry.text[..retry.text.len().min(500)]
    );
    assert_eq!(retry.accepted().len(), BIG);
    assert_eq!(retry.json["duplicates"].as_array().map(Vec::len), Some(0));
    let all: HashSet<String> = acked.iter().cloned().chain(retry.accepted()).collect();
    let lost = missing(&d, &all).await;
    assert!(
        lost.is_empty(),
        "{} events of the retry never delivered",
        lost.len()
    );
}

/// sled meeting a real full disk (the delivery goes unpriced, as if another process had taken
/// the room between the check and the write): the request gets 503, nothing of it survives,
/// a restart on the full disk refuses without writing, and with room again nothing
/// acknowledged is lost and the retry is accepted in full.
#[tokio::test]
async fn sled_meeting_a_full_disk_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = tmpfs(dir.path(), "20m", "sled_meeting_a_full_disk") else {
        return;
    };
    let mut d = Daemon::start_in(&config("5MiB"), dir, &[("HOOKBRIDGE_FAULT_UNPRICED", "1")]);
    let mut acked = HashSet::new();
    for n in 0..3 {
        let a = d.post_signed("portal", &small_payload(n)).await;
        assert_eq!(a.status, 200, "{}", a.text);
        acked.extend(a.accepted());
    }
    // Large deliveries until one meets the full disk (the log stores a delivery's payload
    // once: how many fit depends on the layout, not on the test).
    let mut refused = None;
    for round in 0..8 {
        let big = big_delivery_from(round * BIG);
        let posted = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            d.post_signed("portal", &big),
        )
        .await;
        let answer = posted.unwrap_or_else(|_| panic!("no answer in 60 s\n{}", d.log_text()));
        if answer.status == 200 {
            acked.extend(answer.accepted());
            continue;
        }
        assert_eq!(answer.status, 503, "{}\n{}", answer.text, d.log_text());
        refused = Some(big);
        break;
    }
    let big = refused.unwrap_or_else(|| panic!("the disk never filled\n{}", d.log_text()));
    let ready = d.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    let asked = std::time::Instant::now();
    let stopped = d.stop();
    eprintln!(
        "sled under ENOSPC: stop took {:?}, exit {stopped}\n--- log ---\n{}",
        asked.elapsed(),
        d.log_text()
    );
    assert!(asked.elapsed() < std::time::Duration::from_secs(12));
    assert!(!stopped.success(), "a failed write ends in a non-zero exit");

    // Still full (sled's torn log and the rollback file use the room): refuse, write nothing.
    let data = mount.0.join("data");
    let filler = fill(&mount, 1 << 20);
    let before = listing(&data);
    let status = d.spawn_expecting_exit();
    assert_eq!(status.code(), Some(75), "{}", d.log_text());
    assert_eq!(listing(&data), before, "a refused start writes nothing");

    std::fs::remove_file(filler).unwrap();
    remount(&mount, "256m");
    d.env.clear();
    d.spawn();
    let stats = admin_queue(&d).await;
    assert_eq!(
        stats["events"],
        acked.len(),
        "only the acknowledged events: {stats}"
    );
    assert_eq!(stats["dedup_keys"], acked.len(), "{stats}");
    let lost = missing(&d, &acked).await;
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    let retry = d.post_signed("portal", &big).await;
    assert_eq!(
        retry.status,
        200,
        "{}",
        &retry.text[..retry.text.len().min(500)]
    );
    assert_eq!(retry.accepted().len(), BIG, "the retry is accepted in full");
    let all: HashSet<String> = acked.iter().cloned().chain(retry.accepted()).collect();
    let lost = missing(&d, &all).await;
    assert!(lost.is_empty(), "{} events never delivered", lost.len());
}

/// Scenario 2 of issue 16: with the sink paused, a refused delivery must leave no event and no
/// dedup key behind after a restart, so that its retry is accepted (and delivered) in full.
#[tokio::test]
async fn a_refused_delivery_leaves_nothing_behind_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = tmpfs(dir.path(), "20m", "a_refused_delivery_leaves_nothing") else {
        return;
    };
    let mut d = Daemon::start_in(&config("5MiB"), dir, &[]);
    let paused = reqwest::Client::new()
        .post(format!("{}/admin/sinks/log/pause", d.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    let mut acked = HashSet::new();
    for n in 0..5 {
        let a = d.post_signed("portal", &small_payload(n)).await;
        assert_eq!(a.status, 200, "{}", a.text);
        acked.extend(a.accepted());
    }
    let big = big_delivery();
    let refused = d.post_signed("portal", &big).await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(d.stop().success(), "{}", d.log_text());

    d.spawn();
    let stats = admin_queue(&d).await;
    assert_eq!(stats["events"], 5, "only the acknowledged events: {stats}");
    assert_eq!(stats["dedup_keys"], 5, "{stats}");
    remount(&mount, "256m");
    let retry = d.post_signed("portal", &big).await;
    assert_eq!(
        retry.status,
        200,
        "{}",
        &retry.text[..retry.text.len().min(500)]
    );
    assert_eq!(retry.accepted().len(), BIG, "the retry is accepted in full");
    let all: HashSet<String> = acked.iter().cloned().chain(retry.accepted()).collect();
    let lost = missing(&d, &all).await;
    assert!(lost.is_empty(), "{} events never delivered", lost.len());
}
