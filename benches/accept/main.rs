//! Accept benchmark: durable accept rate and latency of the release binary, next to a no-op
//! actix-web handler driven by the same load generator in the same run; RSS idle and loaded.
//!
//! Run: `cargo bench --bench accept` (env: BENCH_SECONDS, BENCH_CLIENTS, and BENCH_BACKLOG=N for
//! the backlog phase: RSS and restart-to-ready with N queued events). Prints markdown.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "bench-signature-key";

fn main() {
    if let Ok(port) = std::env::var("HOOKBRIDGE_BENCH_NOOP") {
        noop_server(&port);
        return;
    }
    // `cargo test --all-targets` runs bench targets too; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let clients: usize = env_or("BENCH_CLIENTS", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "# hookbridge accept benchmark ({clients} clients, {seconds} s per phase, 1 KB signed portal payloads)\n"
    );

    let noop_port = free_port();
    let mut noop = Command::new(std::env::current_exe().expect("own path"))
        .env("HOOKBRIDGE_BENCH_NOOP", noop_port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start no-op server");
    wait_port(noop_port);
    let noop_url = format!("http://127.0.0.1:{noop_port}/hooks/portal");
    let noop_closed = rt.block_on(closed_loop(
        &noop_url,
        clients,
        seconds,
        0,
        None,
        u64::MAX,
        None,
    ));
    let _ = noop.kill();
    let _ = noop.wait();

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut daemon = start_daemon(&config, dir.path());
    wait_port(port);
    std::thread::sleep(Duration::from_millis(500));
    let pid = daemon.id();
    let rss_idle = rss_kib(pid);
    let url = format!("http://127.0.0.1:{port}/hooks/portal");
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let hb = rt.block_on(closed_loop(&url, clients, seconds, 1, None, u64::MAX, None));
    let half = hb.rate / 2.0;
    let commits = rt.block_on(commit_figures(port));
    let peak_max_phase = peak.load(Ordering::SeqCst);
    // Accept alone: the sink paused, so the two cores serve only ingress and the queue.
    rt.block_on(admin_post(port, "/admin/sinks/log/pause"));
    let hb_alone = rt.block_on(closed_loop(&url, clients, seconds, 3, None, u64::MAX, None));
    rt.block_on(admin_post(port, "/admin/sinks/log/resume"));
    // Let the sink drain what the max phase queued, so the half-rate phase is measured alone.
    let drained = rt.block_on(wait_drained(port));
    let hb_half = rt.block_on(closed_loop(
        &url,
        clients,
        seconds,
        2,
        Some(half),
        u64::MAX,
        None,
    ));
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid);
    let disk = dir_size(&dir.path().join("data"));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = daemon.wait();
    let accepted = hb.ok + hb_alone.ok + hb_half.ok;

    println!("| phase | requests/s | p50 ms | p99 ms | p99.9 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("no-op actix handler (ceiling)", &noop_closed),
        ("hookbridge, durable accept (max)", &hb),
        ("hookbridge, durable accept, sink paused (max)", &hb_alone),
        ("hookbridge at half its max rate", &hb_half),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            r.rate, r.p50, r.p99, r.p999, r.errors
        );
    }
    println!();
    println!(
        "- hookbridge / no-op ratio: **{:.2}** (target ≥ 0.5)",
        hb.rate / noop_closed.rate.max(1.0)
    );
    println!(
        "- with the sink paused (accept alone): **{:.2}**",
        hb_alone.rate / noop_closed.rate.max(1.0)
    );
    println!(
        "- p99 at half rate ({half:.0}/s): **{:.2} ms** (target < 10 ms)",
        hb_half.p99
    );
    println!(
        "- RSS: idle {:.1} MiB, peak in the max phase {:.1} MiB, peak overall (incl. the paused-sink backlog) {:.1} MiB, after load {:.1} MiB",
        rss_idle as f64 / 1024.0,
        peak_max_phase as f64 / 1024.0,
        peak.load(Ordering::SeqCst) as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "- group commit at max rate: {:.1} requests per commit, {:.2} ms per write + fsync",
        commits.0, commits.1
    );
    println!(
        "- the file sink drained the max phase's backlog in {:.1} s before the half-rate phase",
        drained.as_secs_f64()
    );
    println!(
        "- disk: {:.1} MiB for {accepted} accepted events ({:.0} bytes/event, sled before compaction)",
        disk as f64 / 1048576.0,
        disk as f64 / accepted.max(1) as f64
    );
    file_end_to_end(&rt, env_or("BENCH_E2E_RATE", 1000.0), seconds, clients);
    let n: u64 = env_or("BENCH_BACKLOG", 0);
    if n > 0 {
        backlog(&rt, n, clients);
    }
}

/// A config with one signed portal hook, a file sink and an admin token; returns its path.
fn write_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let config = dir.join("routes.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_token = "bench"
[storage]
path = "{dir}/data"
[hooks.portal]
kind = "portal"
secrets = ["{KEY}"]
[sinks.log]
type = "file"
path = "{dir}/events.jsonl"
[[routes]]
match = {{}}
to = ["log"]
"#,
            dir = dir.display()
        ),
    )
    .expect("write config");
    config
}

/// Backlog phase: `n` events accepted while the sink is paused, then RSS, disk, and the time
/// from a restart to ready with that backlog.
fn backlog(rt: &tokio::runtime::Runtime, n: u64, clients: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut daemon = start_daemon(&config, dir.path());
    wait_port(port);
    let base = format!("http://127.0.0.1:{port}");
    rt.block_on(async {
        let ok = reqwest::Client::new()
            .post(format!("{base}/admin/sinks/log/pause"))
            .bearer_auth("bench")
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        assert!(ok, "could not pause the sink");
    });
    let started = Instant::now();
    let r = rt.block_on(closed_loop(
        &format!("{base}/hooks/portal"),
        clients,
        24 * 3600,
        9,
        None,
        n,
        None,
    ));
    let fill = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let rss_backlog = rss_kib(daemon.id());
    let disk = dir_size(&dir.path().join("data"));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    let started = Instant::now();
    let mut daemon = start_daemon(&config, dir.path());
    let ready = loop {
        let up = rt.block_on(async {
            reqwest::get(format!("{base}/readyz"))
                .await
                .is_ok_and(|r| r.status().is_success())
        });
        if up {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready after 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let rss_ready = rss_kib(daemon.id());
    std::thread::sleep(Duration::from_secs(5));
    let rss_draining = rss_kib(daemon.id());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    println!();
    println!("## Backlog of {} events (sink paused)", r.ok);
    println!();
    println!(
        "- filled in {:.0} s ({:.0} accepts/s, {} errors)",
        fill.as_secs_f64(),
        r.rate,
        r.errors
    );
    println!(
        "- RSS with the backlog: {:.1} MiB",
        rss_backlog as f64 / 1024.0
    );
    println!(
        "- disk: {:.0} MiB ({:.0} bytes/event)",
        disk as f64 / 1048576.0,
        disk as f64 / r.ok.max(1) as f64
    );
    println!(
        "- restart to ready: {:.2} s; RSS at ready {:.1} MiB, 5 s into draining {:.1} MiB",
        ready.as_secs_f64(),
        rss_ready as f64 / 1024.0,
        rss_draining as f64 / 1024.0
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start_daemon(config: &std::path::Path, dir: &std::path::Path) -> Child {
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
    Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["serve", "--config"])
        .arg(config)
        .env("HOOKBRIDGE_LOG", "warn")
        .stderr(log)
        .spawn()
        .expect("start hookbridge")
}

fn noop_server(port: &str) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let addr = format!("127.0.0.1:{port}");
    let sys = actix_web::rt::System::new();
    let result: std::io::Result<()> = sys.block_on(async move {
        HttpServer::new(|| {
            App::new().route(
                "/hooks/{hook}",
                web::post()
                    .to(|_body: web::Bytes| async { HttpResponse::Ok().body("{\"accepted\":[]}") }),
            )
        })
        .bind(addr)?
        .run()
        .await
    });
    if let Err(e) = result {
        eprintln!("no-op server: {e}");
    }
}

/// A unique portal payload of about 1 KB: run `run`, request `n`.
fn payload(run: u64, n: u64) -> Vec<u8> {
    format!(
        r#"{{"info":{{"webhookName":"bench","webhookId":"72fed926aeb74c9ca8a22aacddc6725a","portalURL":"https://gis.example.org/portal/","when":1700000000000}},"events":[{{"username":"bench","userId":"173dd04b69134bdf99c5000aad0b6298","when":{n},"operation":"update","source":"item","id":"item-{run}-{n:012}","properties":{{"padding":"{pad}"}}}}]}}"#,
        pad = "x".repeat(700)
    )
    .into_bytes()
}

fn sign(body: &[u8]) -> String {
    hookbridge::verify::sign(KEY.as_bytes(), body)
}

/// Event ids acknowledged, with when each request was due.
type Sent = Arc<std::sync::Mutex<Vec<(String, Instant)>>>;

/// End to end through the file sink: `rate` paced requests for `seconds`; latency from a request's
/// due time to its event's line appearing in the sink's file (polled every millisecond).
fn file_end_to_end(rt: &tokio::runtime::Runtime, rate: f64, seconds: u64, clients: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut daemon = start_daemon(&config, dir.path());
    wait_port(port);
    let sent: Sent = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let path = dir.path().join("events.jsonl");
    let tail = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = std::collections::HashMap::new();
            let mut offset = 0usize;
            let mut idle_after_done = 0;
            loop {
                let text = std::fs::read(&path).unwrap_or_default();
                let now = Instant::now();
                if text.len() > offset {
                    let end = text[..]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(offset, |i| i + 1)
                        .max(offset);
                    for line in text[offset..end].split(|b| *b == b'\n') {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                            if let Some(id) = v["event_id"].as_str() {
                                seen.entry(id.to_string()).or_insert(now);
                            }
                        }
                    }
                    offset = end;
                    idle_after_done = 0;
                } else if done.load(Ordering::SeqCst) {
                    idle_after_done += 1;
                    if idle_after_done > 2000 {
                        return seen;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let r = rt.block_on(closed_loop(
        &format!("http://127.0.0.1:{port}/hooks/portal"),
        clients,
        seconds,
        7,
        Some(rate),
        u64::MAX,
        Some(sent.clone()),
    ));
    done.store(true, Ordering::SeqCst);
    let seen = tail.join().expect("tail");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
    let sent = sent.lock().expect("lock");
    let mut lat: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            seen.get(id)
                .map(|s| s.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!();
    println!("## End to end through the file sink at {rate:.0} events/s");
    println!();
    println!(
        "- {} accepted, {} seen in the file; accept → line in file: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        sent.len(),
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        lat.last().copied().unwrap_or(0.0)
    );
    println!(
        "- accept latency at that rate: p50 {:.2} ms, p99 {:.2} ms",
        r.p50, r.p99
    );
}

struct Result {
    rate: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    ok: u64,
    errors: u64,
}

/// `clients` connections post for `seconds`; with `target` set, requests are paced to that rate
/// and latency counts from each request's scheduled time (no coordinated omission).
async fn closed_loop(
    url: &str,
    clients: usize,
    seconds: u64,
    run: u64,
    target: Option<f64>,
    limit: u64,
    sent: Option<Sent>,
) -> Result {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, counter) = (client.clone(), url.to_string(), counter.clone());
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let scheduled = match target {
                    Some(rate) => start + Duration::from_secs_f64(n as f64 / rate),
                    None => Instant::now(),
                };
                if scheduled >= end {
                    break;
                }
                if let Some(d) = scheduled.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(d).await;
                }
                let body = payload(run, n);
                let sig = sign(&body);
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-esriHook-Signature", sig)
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let body = resp.bytes().await.unwrap_or_default();
                        lat.push(scheduled.elapsed().as_secs_f64() * 1000.0);
                        if let Some(sent) = &sent {
                            let v: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            if let Some(id) = v["accepted"][0].as_str() {
                                sent.lock().expect("lock").push((id.to_string(), scheduled));
                            }
                        }
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Result {
        rate: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        p999: pct(0.999),
        ok: all.len() as u64,
        errors,
    }
}

/// POSTs to an admin endpoint of the benchmark daemon (token "bench").
async fn admin_post(port: u16, path: &str) {
    let ok = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth("bench")
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    assert!(ok, "admin call {path} failed");
}

/// Waits until the file sink has no pending deliveries (the metrics gauge, which costs nothing,
/// rather than `/admin/queue`, which scans the store); returns how long that took.
async fn wait_drained(port: u16) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let pending = text
            .lines()
            .find(|l| l.starts_with("hookbridge_queue_pending_deliveries{sink=\"log\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        if pending == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

/// Mean requests per group commit and mean commit time (ms), from the daemon's metrics.
async fn commit_figures(port: u16) -> (f64, f64) {
    let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return (0.0, 0.0),
    };
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let commits = value("hookbridge_commit_batch_requests_count").max(1.0);
    (
        value("hookbridge_commit_batch_requests_sum") / commits,
        value("hookbridge_commit_fsync_duration_seconds_sum") * 1000.0 / commits,
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}
