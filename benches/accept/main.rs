//! Accept benchmark: durable accept rate and latency of the release binary, next to a no-op
//! actix-web handler driven by the same load generator in the same run; RSS idle and loaded;
//! feature-service form bodies; end to end through the file sink, RabbitMQ and Kafka (tansu),
//! each broker next to its raw client on the same broker; the HTTP sink draining to a local no-op
//! receiver next to a raw reqwest client; under `wrk`, the daemon next to the no-op and to the
//! sled floor (`floor.rs`: a minimal receiver doing only the durable part with sled).
//!
//! Run: `cargo bench --bench accept`. Prints markdown (and writes it to `BENCH_REPORT=path`).
//! Environment:
//! - `BENCH_SECONDS` (10): length of each timed phase; `BENCH_CLIENTS` (64): concurrent clients;
//! - `BENCH_E2E_RATE` (1000): paced rate of the end-to-end phases;
//! - `BENCH_BROKER_N` (20000): messages of the raw-client runs and events of the sink drains;
//! - `BENCH_RAW_WINDOWS` (8): batches in flight at once in the pipelined raw-client runs;
//! - `BENCH_HTTP_IN_FLIGHT` (16): requests in flight of the HTTP sink and of its raw client;
//! - `BENCH_ONLY`: a comma list of `accept`, `form`, `file`, `rabbitmq`, `kafka`, `nats`, `mqtt`,
//!   `http`, `wrk`, `maximal` (default: all);
//! - `BENCH_BASELINE=path/to/hookbridge`: the wrk phase also runs that (earlier) build, for a
//!   before-and-after table measured in one run.
//! - `BENCH_BACKLOG=N`: adds the backlog phase (RSS and restart-to-ready with N queued events).
//!
//! RabbitMQ is expected at 127.0.0.1:5672 (guest/guest; `BENCH_AMQP_URL` names another) and
//! Kafka is tansu started from PATH, NATS (JetStream) is expected at 127.0.0.1:4222
//! (`BENCH_NATS_URL`), Mosquitto at 127.0.0.1:1883 (`BENCH_MQTT_PORT`); a phase whose broker is
//! missing prints why it was skipped.

mod backlog;
mod brokers;
mod daemon;
mod e2e;
mod file_sink;
mod floor;
mod form;
mod http_sink;
mod load;
mod maximal;
mod report;
mod wrk;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use daemon::{start_daemon, stop, write_config};
use load::{Load, dir_size, env_or, free_port, portal, rss_kib, wait_port};
use report::{ONE_EVENT_TO_NOOP, RSS_LOADED_MIB, Report, SEVERAL_EVENTS_TO_NOOP, out};

fn main() {
    if let Ok(port) = std::env::var("HOOKBRIDGE_BENCH_NOOP") {
        daemon::noop_server(&port);
        return;
    }
    if let (Ok(port), Some(dir)) = (
        std::env::var(floor::PORT_VAR),
        std::env::var_os(floor::DIR_VAR),
    ) {
        floor::server(&port, std::path::Path::new(&dir));
        return;
    }
    // `cargo test --all-targets` runs bench targets too; only measure under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let clients: usize = env_or("BENCH_CLIENTS", 64);
    let rate: f64 = env_or("BENCH_E2E_RATE", 1000.0);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |phase: &str| only.is_empty() || only.split(',').any(|p| p.trim() == phase);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut report = Report::from_env();
    out!(
        report,
        "# hookbridge accept benchmark ({clients} clients, {seconds} s per phase, 1 KB signed portal payloads)\n"
    );

    // Both no-op runs share one process: its ceiling for JSON and for form bodies.
    let (noop, noop_form) = if wanted("accept") || wanted("form") {
        let (mut server, noop_port) = daemon::spawn_noop();
        let url = |hook: &str| format!("http://127.0.0.1:{noop_port}/hooks/{hook}");
        let noop = wanted("accept")
            .then(|| rt.block_on(Load::new(&url("portal"), clients, seconds, portal(0)).run()));
        let noop_form = wanted("form").then(|| {
            rt.block_on(Load::new(&url("features"), clients, seconds, form::bodies(0)).run())
        });
        let _ = server.kill();
        let _ = server.wait();
        (noop, noop_form)
    } else {
        (None, None)
    };
    if let Some(noop) = &noop {
        accept(&rt, &mut report, noop, clients, seconds);
    }
    if let Some(noop_form) = &noop_form {
        let f = form::measure(&rt, clients, seconds);
        print_form(&mut report, &f, noop_form, noop.as_ref());
    }
    let mut summary = brokers::Summary::default();
    if wanted("file") {
        let e = file_sink::end_to_end(&rt, rate, seconds, clients);
        out!(report);
        out!(
            report,
            "## End to end through the file sink at {rate:.0} events/s"
        );
        out!(report);
        e.print(&mut report, "line in the file (fsync'd)");
        summary.add("file (fsync'd JSON lines)", None, Some(&e));
    }
    let bench = brokers::Params {
        n: env_or("BENCH_BROKER_N", 20_000),
        windows: env_or("BENCH_RAW_WINDOWS", 8),
        rate,
        seconds,
        clients,
    };
    if wanted("rabbitmq") {
        brokers::rabbitmq::run(&rt, &mut report, &bench, &mut summary);
    }
    if wanted("kafka") {
        brokers::kafka::run(&rt, &mut report, &bench, &mut summary);
    }
    if wanted("nats") {
        brokers::nats::run(&rt, &mut report, &bench, &mut summary);
    }
    if wanted("mqtt") {
        brokers::mqtt::run(&rt, &mut report, &bench, &mut summary);
    }
    if wanted("http") {
        http_sink::run(&rt, &mut report, &bench, &mut summary);
    }
    summary.print(&mut report, rate);
    if wanted("wrk") {
        wrk::run(&mut report, seconds);
    }
    if wanted("maximal") {
        maximal::run(&rt, &mut report);
    }
    let n: u64 = env_or("BENCH_BACKLOG", 0);
    if n > 0 {
        backlog::run(&rt, &mut report, n, clients);
    }
    report.print_targets();
}

/// The accept phases on one daemon with a file sink: max rate with the sink delivering, max
/// rate with it paused, then (after the drain) half the max rate; RSS, group commit and disk.
fn accept(
    rt: &tokio::runtime::Runtime,
    report: &mut Report,
    noop: &load::Run,
    clients: usize,
    seconds: u64,
) {
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
    let hb = rt.block_on(Load::new(&url, clients, seconds, portal(1)).run());
    let half = hb.rate / 2.0;
    let commits = rt.block_on(load::commit_figures(port));
    let peak_max_phase = peak.load(Ordering::SeqCst);
    // Accept alone: the sink paused, so the two cores serve only ingress and the queue.
    rt.block_on(load::admin_post(port, "/admin/sinks/log/pause"));
    let hb_alone = rt.block_on(Load::new(&url, clients, seconds, portal(3)).run());
    rt.block_on(load::admin_post(port, "/admin/sinks/log/resume"));
    // Let the sink drain what the max phase queued, so the half-rate phase is measured alone.
    let (drained, _) = rt.block_on(load::wait_drained(
        port,
        "log",
        Duration::from_millis(200),
        Duration::from_secs(600),
    ));
    let hb_half = rt.block_on(
        Load::new(&url, clients, seconds, portal(2))
            .paced(half)
            .run(),
    );
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid);
    let disk = dir_size(&dir.path().join("data"));
    stop(&mut daemon);
    let accepted = hb.ok + hb_alone.ok + hb_half.ok;

    out!(
        report,
        "| phase | requests/s | p50 ms | p99 ms | p99.9 ms | errors |"
    );
    out!(report, "|---|---:|---:|---:|---:|---:|");
    for (name, r) in [
        ("no-op actix handler (ceiling)", noop),
        ("hookbridge, durable accept (max)", &hb),
        ("hookbridge, durable accept, sink paused (max)", &hb_alone),
        ("hookbridge at half its max rate", &hb_half),
    ] {
        out!(
            report,
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            r.rate,
            r.p50,
            r.p99,
            r.p999,
            r.errors
        );
    }
    out!(report);
    let ratio = hb.rate / noop.rate.max(1.0);
    out!(
        report,
        "- hookbridge / no-op ratio: **{ratio:.2}** (target ≥ {ONE_EVENT_TO_NOOP})"
    );
    report.target(
        "durable accept, 1-event requests, ratio to the no-op (load generator, sink delivering)",
        format!("{:.0} vs {:.0} req/s = **{ratio:.2}**", hb.rate, noop.rate),
        &format!("≥ {ONE_EVENT_TO_NOOP}"),
        ratio >= ONE_EVENT_TO_NOOP,
    );
    let alone = hb_alone.rate / noop.rate.max(1.0);
    report.target(
        "durable accept, 1-event requests, sink paused",
        format!("**{alone:.2}**"),
        &format!("≥ {ONE_EVENT_TO_NOOP}"),
        alone >= ONE_EVENT_TO_NOOP,
    );
    report.target(
        "p99 accept latency at half the max rate",
        format!("**{:.2} ms**", hb_half.p99),
        "< 10 ms",
        hb_half.p99 < 10.0,
    );
    report.target(
        "RSS idle",
        format!("**{:.1} MiB**", rss_idle as f64 / 1024.0),
        "< 20 MiB",
        rss_idle < 20 * 1024,
    );
    report.target(
        "RSS at full load (accept phase)",
        format!("**{:.1} MiB**", peak_max_phase as f64 / 1024.0),
        &format!("≤ {RSS_LOADED_MIB} MiB"),
        peak_max_phase <= RSS_LOADED_MIB * 1024,
    );
    out!(
        report,
        "- with the sink paused (accept alone): **{:.2}**",
        hb_alone.rate / noop.rate.max(1.0)
    );
    out!(
        report,
        "- p99 at half rate ({half:.0}/s): **{:.2} ms** (target < 10 ms)",
        hb_half.p99
    );
    out!(
        report,
        "- RSS: idle {:.1} MiB, peak in the max phase {:.1} MiB, peak overall (incl. the paused-sink backlog) {:.1} MiB, after load {:.1} MiB",
        rss_idle as f64 / 1024.0,
        peak_max_phase as f64 / 1024.0,
        peak.load(Ordering::SeqCst) as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    out!(
        report,
        "- group commit at max rate: {:.1} requests per commit, {:.2} ms per write + fsync",
        commits.0,
        commits.1
    );
    out!(
        report,
        "- the file sink drained the max phase's backlog in {:.1} s before the half-rate phase",
        drained.as_secs_f64()
    );
    out!(
        report,
        "- disk: {:.1} MiB for {accepted} accepted events ({:.0} bytes/event, sled before compaction)",
        disk as f64 / 1048576.0,
        disk as f64 / accepted.max(1) as f64
    );
}

/// The form phase's table, next to the no-op driven with the same bodies.
fn print_form(
    report: &mut Report,
    f: &form::Figures,
    noop: &load::Run,
    json_noop: Option<&load::Run>,
) {
    out!(report);
    out!(
        report,
        "## Feature-service form bodies (max rate, `application/x-www-form-urlencoded`, ~{} B, {} events per request)",
        f.body_bytes,
        form::EVENTS_PER_REQUEST
    );
    out!(report);
    out!(
        report,
        "| phase | requests/s | events/s | events per request | p50 ms | p99 ms | p99.9 ms | errors | ratio to no-op |"
    );
    out!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    out!(
        report,
        "| no-op actix handler, same form bodies (ceiling) | {:.0} | — | — | {:.2} | {:.2} | {:.2} | {} | 1.00 |",
        noop.rate,
        noop.p50,
        noop.p99,
        noop.p999,
        noop.errors
    );
    let per_request = f.events / f.run.ok.max(1) as f64;
    out!(
        report,
        "| hookbridge, feature-service hook, durable accept (max) | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | **{:.2}** |",
        f.run.rate,
        f.run.rate * per_request,
        per_request,
        f.run.p50,
        f.run.p99,
        f.run.p999,
        f.run.errors,
        f.run.rate / noop.rate.max(1.0)
    );
    let ratio = f.run.rate / noop.rate.max(1.0);
    report.target(
        "feature-service form bodies, ratio to the no-op (load generator)",
        format!(
            "{:.0} vs {:.0} req/s = **{ratio:.2}**",
            f.run.rate, noop.rate
        ),
        &format!("≥ {SEVERAL_EVENTS_TO_NOOP}"),
        ratio >= SEVERAL_EVENTS_TO_NOOP,
    );
    out!(report);
    out!(
        report,
        "- {:.0} events stored from {} accepted requests, {:.0} refused as duplicates (each request has its own `serverGens` window and `lastUpdatedTime`, so every request is a durable write); file sink delivering",
        f.events,
        f.run.ok,
        f.duplicates
    );
    if let Some(json) = json_noop {
        out!(
            report,
            "- ratio to the no-op with the JSON portal bodies: {:.2}",
            f.run.rate / json.rate.max(1.0)
        );
    }
    out!(
        report,
        "- group commit: {:.1} requests per commit, {:.2} ms per write + fsync",
        f.commits.0,
        f.commits.1
    );
}
