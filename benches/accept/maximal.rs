//! Maximal requests (`BENCH_ONLY=maximal`): one delivery just over `server.max_events` (413),
//! one just under it (accepted whole), the time and RSS growth of each, and the slowest
//! `/healthz` answer another client saw meanwhile.

use std::time::{Duration, Instant};

use crate::daemon::{sign, start_daemon, stop, write_config};
use crate::load::{free_port, rss_kib, wait_port};
use crate::report::{Report, out};

/// The default `server.max_events`.
const MAX_EVENTS: usize = 10_000;

/// A portal delivery of `n` distinct item events.
fn delivery(n: usize, tag: &str) -> Vec<u8> {
    let events: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"operation":"add","source":"item","id":"{tag}-{i:06}","when":{i}}}"#))
        .collect();
    format!(
        r#"{{"info":{{"webhookName":"bulk"}},"events":[{}]}}"#,
        events.join(",")
    )
    .into_bytes()
}

/// Posts `body` while another client polls `/healthz`; returns (status, time, slowest probe).
async fn post_probed(base: &str, body: Vec<u8>) -> (u16, Duration, Duration) {
    let client = reqwest::Client::new();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let (client, url, done) = (client.clone(), format!("{base}/healthz"), done.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let _ = client.get(&url).send().await;
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            worst
        })
    };
    let started = Instant::now();
    let status = client
        .post(format!("{base}/hooks/portal"))
        .header("content-type", "application/json")
        .header("x-esriHook-Signature", sign(&body))
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    (status, took, probe.await.unwrap_or_default())
}

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut daemon = start_daemon(&config, dir.path());
    wait_port(port);
    let base = format!("http://127.0.0.1:{port}");
    out!(report);
    out!(
        report,
        "## Maximal requests (server.max_events = {MAX_EVENTS})"
    );
    out!(report);
    out!(
        report,
        "| delivery | KiB | status | time ms | RSS before MiB | RSS after MiB | slowest /healthz ms |"
    );
    out!(report, "|---|---:|---:|---:|---:|---:|---:|");
    for (what, n) in [("over the cap", MAX_EVENTS + 1), ("at the cap", MAX_EVENTS)] {
        let body = delivery(n, what.split(' ').next().unwrap_or("x"));
        let kib = body.len() / 1024;
        let before = rss_kib(daemon.id());
        let (status, took, worst) = rt.block_on(post_probed(&base, body));
        std::thread::sleep(Duration::from_millis(500));
        let after = rss_kib(daemon.id());
        out!(
            report,
            "| {n} events, {what} | {kib} | {status} | {:.0} | {:.1} | {:.1} | {:.1} |",
            took.as_secs_f64() * 1e3,
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            worst.as_secs_f64() * 1e3
        );
    }
    stop(&mut daemon);
}
