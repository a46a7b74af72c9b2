//! Running as a service: reload, graceful stop under load, TLS, admin API, sd_notify, unit file.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Daemon, FILE_CONFIG, KEY, sample, sign};
use serde_json::Value;

const ADMIN: &str = "admin-test-token-0123";

fn with_admin(config: &str) -> String {
    config.replace(
        "max_body = \"64KiB\"",
        &format!("max_body = \"64KiB\"\nadmin_token = \"{ADMIN}\""),
    )
}

fn unique(n: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sample("portal-group-update.json")).unwrap();
    v["events"][0]["id"] = Value::from(format!("svc-{n:06}"));
    serde_json::to_vec(&v).unwrap()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_a_valid_config_and_refuses_an_invalid_one() {
    let d = Daemon::start(FILE_CONFIG);
    assert_eq!(d.post_signed("extra", &unique(1)).await.status, 404);
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        format!("{text}\n[hooks.extra]\nkind = \"portal\"\n"),
    )
    .unwrap();
    d.signal("HUP");
    eventually("the new hook", async || {
        d.post("extra", Some("application/json"), None, unique(2))
            .await
            .status
            == 200
    })
    .await;

    std::fs::write(&d.config, "[server]\nlisten = \"nonsense\"\n").unwrap();
    d.signal("HUP");
    eventually("the refusal in the log", async || {
        d.log_text().contains("config reload refused")
    })
    .await;
    assert!(d.log_text().contains("server.listen"), "{}", d.log_text());
    // The old config keeps serving.
    assert_eq!(
        d.post("extra", Some("application/json"), None, unique(3))
            .await
            .status,
        200
    );

    // A file an editor truncated is refused too, and the old config still serves.
    std::fs::write(&d.config, "").unwrap();
    d.signal("HUP");
    eventually("the second refusal in the log", async || {
        d.log_text().matches("config reload refused").count() == 2
    })
    .await;
    // Each refusal is one log line, its problems on it.
    let log = d.log_text();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("config reload refused"))
        .collect();
    assert_eq!(refusals.len(), 2, "{log}");
    assert!(refusals[0].contains("server.listen"), "{log}");
    assert!(
        refusals[1].contains("no hook") && refusals[1].contains("no sink"),
        "{log}"
    );
    assert_eq!(
        d.post("extra", Some("application/json"), None, unique(4))
            .await
            .status,
        200
    );
    let m = d.get("/metrics").await.text;
    assert!(
        m.contains("hookbridge_config_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("hookbridge_config_reloads_total{result=\"invalid\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_and_exits_zero() {
    let mut d = Daemon::start(FILE_CONFIG);
    let url = format!("{}/hooks/portal", d.url);
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acked = Vec::new();
            let mut refused = 0;
            for i in 0..10_000u64 {
                let body = unique(c * 100_000 + i);
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-esriHook-Signature", sign(KEY, &body))
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        acked.extend(
                            v["accepted"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|x| x.as_str().unwrap().to_string()),
                        );
                    }
                    Ok(r) => {
                        assert_eq!(r.status(), 503, "only 503 is allowed while stopping");
                        refused += 1;
                        break;
                    }
                    Err(_) => break,
                }
            }
            (acked, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = d.stop();
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    let mut acked = HashSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap().0);
    }
    assert!(!acked.is_empty());
    d.spawn();
    let lines = d.wait_lines("events.jsonl", acked.len()).await;
    let got: HashSet<String> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap().to_string())
        .collect();
    let missing = acked.difference(&got).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged events lost",
        acked.len()
    );
}

#[tokio::test]
async fn tls_round_trip_with_a_self_signed_certificate() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.key_pair.serialize_pem()).unwrap();
    let config = FILE_CONFIG.replace(
        "max_body = \"64KiB\"",
        &format!(
            "max_body = \"64KiB\"\ntls = {{ cert = \"{0}/tls.crt\", key = \"{0}/tls.key\" }}",
            dir.path().display()
        ),
    );
    let d = Daemon::start(&config);
    assert!(d.url.starts_with("https://"));
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .unwrap();
    let body = sample("portal-group-update.json");
    let resp = client
        .post(format!("{}/hooks/portal", d.url))
        .header("content-type", "application/json")
        .header("x-esriHook-Signature", sign(KEY, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let lines = d.wait_lines("events.jsonl", 1).await;
    assert_eq!(lines.len(), 1);
    // Plain HTTP on the TLS port is not served.
    assert!(
        reqwest::get(d.url.replace("https://", "http://") + "/healthz")
            .await
            .is_err()
    );

    // A bad key file is named by `check`.
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    let out = d.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("server.tls.key"),
        "{out:?}"
    );
}

async fn admin(d: &Daemon, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", d.url);
    let mut req = if method == "POST" {
        client.post(url)
    } else {
        client.get(url)
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_api_needs_its_token_and_acts_on_the_queue() {
    let off = Daemon::start(FILE_CONFIG);
    assert_eq!(admin(&off, "GET", "/admin/queue", Some(ADMIN)).await.0, 404);
    drop(off);

    let config = with_admin(FILE_CONFIG)
        + "\n[sinks.strict]\ntype = \"file\"\npath = \"{dir}/strict.txt\"\npayload = \"template\"\npayload_template = \"{{ properties.sharedToGroups | first }}\"\n[[routes]]\nmatch = { source = \"item\" }\nto = [\"strict\"]\n";
    let d = Daemon::start(&config);
    assert_eq!(admin(&d, "GET", "/admin/queue", None).await.0, 401);
    assert_eq!(admin(&d, "GET", "/admin/queue", Some("wrong")).await.0, 401);
    let (code, stats) = admin(&d, "GET", "/admin/queue", Some(ADMIN)).await;
    assert_eq!(code, 200);
    assert!(stats["sinks"]["log"].is_object(), "{stats}");

    // One of the two item events cannot render for "strict": a dead letter.
    let a = d
        .post_signed("portal", &sample("portal-item-share-multi.json"))
        .await;
    let ids = a.accepted();
    eventually("a dead letter", async || {
        admin(&d, "GET", "/admin/dlq", Some(ADMIN))
            .await
            .1
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let (_, letters) = admin(&d, "GET", "/admin/dlq?sink=strict", Some(ADMIN)).await;
    let dead_id = letters[0]["event"]["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(dead_id, ids[1]);
    let (code, status) = admin(&d, "GET", &format!("/admin/events/{dead_id}"), Some(ADMIN)).await;
    assert_eq!(code, 200);
    let states: HashSet<(String, String)> = status["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["sink"].as_str().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&("strict".into(), "dead".into())),
        "{status}"
    );
    eventually("the log delivery", async || {
        let s = admin(&d, "GET", &format!("/admin/events/{dead_id}"), Some(ADMIN))
            .await
            .1;
        s["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["sink"] == "log" && x["state"] == "delivered")
    })
    .await;
    assert_eq!(
        admin(
            &d,
            "GET",
            "/admin/events/00000000000000000000000000000000",
            Some(ADMIN)
        )
        .await
        .0,
        404
    );

    // The CLI uses the admin API while the daemon runs.
    let out = d.cli(&["dlq", "list", "--sink", "strict"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&dead_id));

    let (code, r) = admin(&d, "POST", "/admin/dlq/replay?sink=strict", Some(ADMIN)).await;
    assert_eq!((code, r["replayed"].as_u64()), (200, Some(1)));
    eventually("the replayed delivery to die again", async || {
        admin(&d, "GET", "/admin/dlq", Some(ADMIN))
            .await
            .1
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let out = d.cli(&["dlq", "purge"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("purged 1"),
        "{out:?}"
    );
    assert_eq!(
        admin(&d, "GET", "/admin/dlq", Some(ADMIN)).await.1,
        Value::Array(vec![])
    );

    // Pause holds deliveries in the queue; resume sends them.
    let (code, _) = admin(&d, "POST", "/admin/sinks/log/pause", Some(ADMIN)).await;
    assert_eq!(code, 200);
    let before = d.jsonl("events.jsonl").len();
    assert_eq!(d.post_signed("portal", &unique(42)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        d.jsonl("events.jsonl").len(),
        before,
        "a paused sink sends nothing"
    );
    let (_, stats) = admin(&d, "GET", "/admin/queue", Some(ADMIN)).await;
    assert_eq!(stats["sinks"]["log"]["ready"], 1, "{stats}");
    admin(&d, "POST", "/admin/sinks/log/resume", Some(ADMIN)).await;
    assert_eq!(
        d.wait_lines("events.jsonl", before + 1).await.len(),
        before + 1
    );
    assert_eq!(
        admin(&d, "POST", "/admin/sinks/nope/pause", Some(ADMIN))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn ready_and_watchdog_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let path = socket_path.display().to_string();
    let _d = Daemon::start_env(
        FILE_CONFIG,
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "200000")],
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        assert!(Instant::now() < deadline, "saw only {seen:?}");
        let n = socket.recv(&mut buf).unwrap();
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

#[test]
fn the_unit_file_passes_systemd_analyze_security() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/hookbridge.service");
    let out = match std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", unit])
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            panic!(
                "systemd-analyze is needed for this test ({e}); .ci/setup/systemd.sh installs it"
            )
        }
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hookbridge.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");
}

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let d = Daemon::start(FILE_CONFIG);
    d.post_signed("portal", &sample("portal-item-share-multi.json"))
        .await;
    d.post(
        "portal",
        Some("application/json"),
        None,
        sample("portal-user-role.json"),
    )
    .await;
    d.wait_lines("events.jsonl", 2).await;
    let text = d.get("/metrics").await.text;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed for this test ({e}); .ci/setup/promtool.sh installs it")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}
