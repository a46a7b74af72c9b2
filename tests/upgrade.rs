//! Upgrade: a queue written by an earlier release opens and is delivered by this build, and
//! what it accepted is still a duplicate (`tests/upgrade/make-fixture.sh` wrote each fixture:
//! `31b3ccd`, rows per delivery with sled's own flush; `ea44360`, the last release with rows per
//! delivery, synced after each flush).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use common::{Daemon, FILE_CONFIG};
use serde_json::Value;

/// What `make-fixture.sh` posted to the earlier release, in order.
const SAMPLES: [(&str, &str); 6] = [
    ("application/json", "portal-group-update.json"),
    ("application/json", "portal-item-share-multi.json"),
    ("application/json", "portal-user-role.json"),
    ("application/json", "feature-created.json"),
    ("application/json", "feature-multi.json"),
    ("application/x-www-form-urlencoded", "feature-multi.form"),
];

fn samples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples")
}

#[tokio::test]
async fn a_queue_written_by_release_31b3ccd_is_delivered() {
    delivers_the_queue_of("31b3ccd").await;
}

#[tokio::test]
async fn a_queue_written_by_release_ea44360_is_delivered() {
    delivers_the_queue_of("ea44360").await;
}

/// Opens the fixture queue of `release` with this build and checks every event it held.
async fn delivers_the_queue_of(release: &str) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/upgrade")
        .join(release);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    let expected: HashSet<String> = expected["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        expected.len() >= 5,
        "the fixture holds {} events",
        expected.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(fixture.join("queue.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar is installed");
    assert!(untar.success(), "tar -xzf {}", fixture.display());

    // The fixture's rows carry the times they were written: a dedup window of ten years keeps
    // its keys whatever the fixture's age, so the check below is about the format alone.
    let config = FILE_CONFIG.replace(
        "[storage]\npath = \"{dir}/data\"\n",
        "[storage]\npath = \"{dir}/data\"\ndedup_window = \"3650d\"\n",
    );
    assert_ne!(config, FILE_CONFIG, "the storage table moved");
    let mut d = Daemon::start_in(&config, dir, &[]);
    let lines = d.wait_lines("events.jsonl", expected.len()).await;
    let got: HashSet<String> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected, "every queued event is delivered once");
    assert_eq!(lines.len(), expected.len(), "{lines:?}");
    // Each event goes out as this build makes it of the same delivery today.
    let fresh = Daemon::start(FILE_CONFIG);
    for (content_type, sample) in SAMPLES {
        let body = std::fs::read(samples().join(sample)).unwrap();
        let a = fresh.post("open", Some(content_type), None, body).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let today = fresh.wait_lines("events.jsonl", expected.len()).await;
    for mut line in lines {
        let id = line["event_id"].clone();
        let mut twin = today
            .iter()
            .find(|t| t["event_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} is not made of the samples today"));
        for l in [&mut line, &mut twin] {
            l.as_object_mut().unwrap().remove("accepted_at");
        }
        assert_eq!(
            line, twin,
            "the queued event is delivered as it would be today"
        );
    }

    // The dedup keys the earlier release wrote still count.
    for (_, sample) in &SAMPLES[..3] {
        let body = std::fs::read(samples().join(sample)).unwrap();
        let again = d.post("open", Some("application/json"), None, body).await;
        assert_eq!(again.status, 200, "{}", again.text);
        assert!(again.accepted().is_empty(), "{sample}: {}", again.text);
    }
    assert!(d.stop().success(), "{}", d.log_text());
}
