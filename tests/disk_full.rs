//! Disk full: below `storage.min_free` the daemon answers 503 (ArcGIS retries), loses nothing it
//! acknowledged, and takes deliveries again as soon as space returns.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::{Daemon, sample};
use serde_json::Value;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
max_body = "256KiB"
[storage]
path = "{dir}/small/data"
min_free = "4MiB"
[hooks.open]
kind = "portal"
[sinks.log]
type = "file"
path = "{dir}/events.jsonl"
[[routes]]
match = {}
to = ["log"]
"#;

fn payload(n: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sample("portal-group-update.json")).unwrap();
    v["events"][0]["id"] = Value::from(format!("disk-{n}"));
    v["events"][0]["properties"]["padding"] = Value::from("y".repeat(60_000));
    serde_json::to_vec(&v).unwrap()
}

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_and_recovers() {
    // A 16 MiB tmpfs where the daemon keeps its queue (mounting needs root, as in CI).
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); this test needs one");
        return;
    }
    let _mount = Mount(small.clone());
    let d = Daemon::start_in(CONFIG, dir, &[]);
    // 60 KB bodies fill the queue long before the 2 000 requests run out.
    let mut acked = HashSet::new();
    let mut refused = 0;
    for n in 0..2_000u64 {
        let a = d
            .post("open", Some("application/json"), None, payload(n))
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
        "the 16 MiB disk never filled ({} accepted)",
        acked.len()
    );
    assert_eq!(d.get("/healthz").await.status, 200);
    let ready = d.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(ready.text.contains("storage.min_free"), "{}", ready.text);

    // Space returns: deliveries are taken again at once, without a restart.
    assert!(
        Command::new("mount")
            .args(["-o", "remount,size=512m"])
            .arg(&small)
            .status()
            .unwrap()
            .success()
    );
    let a = d
        .post("open", Some("application/json"), None, payload(10_000))
        .await;
    assert_eq!(a.status, 200, "{}\n{}", a.text, d.log_text());
    acked.extend(a.accepted());
    assert_eq!(d.get("/readyz").await.status, 200);
    let lines = d.wait_lines("events.jsonl", acked.len()).await;
    let got: HashSet<String> = lines
        .iter()
        .filter_map(|l| l["event_id"].as_str().map(String::from))
        .collect();
    let lost: Vec<_> = acked.difference(&got).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {lost:?}\n{}",
        lost.len(),
        d.log_text()
    );
    eprintln!(
        "disk full: {} accepted, {refused} answered 503, none lost after recovery",
        acked.len()
    );
}
