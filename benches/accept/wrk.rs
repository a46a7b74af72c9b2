//! The figures a user can reproduce with standard tools: `wrk -t2 -c64` (Debian's package) with
//! unique, unsigned 1-event and 3-event portal payloads and feature-service form bodies
//! (`wrk/post.lua`), against the no-op actix-web handler, the sled floor (`floor.rs`) and the
//! daemon (file sink delivering), side by side in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::daemon::{start_binary, start_daemon, stop};
use crate::load::{self, free_port, rss_kib, wait_port};
use crate::report::{
    ONE_EVENT_TO_NOOP, RSS_LOADED_MIB, Report, SEVERAL_EVENTS_TO_NOOP, TO_FLOOR, out,
};

/// What one wrk run reported.
struct WrkRun {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// The request shapes of `wrk/post.lua`: the script's name, what the table calls it, and the
/// least share of the no-op's rate the durable accept is to reach with it.
const SHAPES: [(&str, &str, f64); 3] = [
    (
        "portal1",
        "portal, 1 event per request (~1 KB JSON)",
        ONE_EVENT_TO_NOOP,
    ),
    (
        "portal3",
        "portal, 3 events per request (~1 KB JSON)",
        SEVERAL_EVENTS_TO_NOOP,
    ),
    (
        "form",
        "feature service, 4 events per request (~1 KB form body)",
        SEVERAL_EVENTS_TO_NOOP,
    ),
];

/// Runs the wrk phase and prints its table, or says what to install when wrk is missing.
pub fn run(report: &mut Report, seconds: u64) {
    out!(report);
    out!(
        report,
        "## wrk (`wrk -t2 -c64 -d{seconds}s --latency`, unsigned, unique deliveries)"
    );
    out!(report);
    if Command::new("wrk").arg("--version").output().is_err() {
        out!(
            report,
            "skipped: wrk is not installed (apt-get install wrk; `.ci/setup/wrk.sh` does it)"
        );
        return;
    }
    let (mut noop, noop_port) = crate::daemon::spawn_noop();
    let floor_dir = tempfile::tempdir().expect("tempdir");
    let (mut floor, floor_port) = crate::floor::spawn(&floor_dir.path().join("sled"));
    let floor_pid = floor.id();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut daemon = start_daemon(&config, dir.path());
    wait_port(port);
    let pid = daemon.id();
    out!(
        report,
        "| requests | no-op req/s | floor req/s | hookbridge req/s | hookbridge / no-op | hookbridge / floor (target ≥ {TO_FLOOR}) | floor / no-op | no-op p50 / p99 ms | floor p50 / p99 ms | hookbridge p50 / p99 ms | errors: no-op / floor / hookbridge | RSS peak MiB: floor / hookbridge (target ≤ {RSS_LOADED_MIB}) |"
    );
    out!(
        report,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut profiles = Vec::new();
    let baseline = Baseline::start();
    let mut compared = Vec::new();
    for (shape, what, target) in SHAPES {
        let before = QueueWork::read(&rt, port);
        let (Some(ceiling), Some((sled, sled_rss)), Some((ours, rss))) = (
            wrk(noop_port, shape, seconds),
            peak_rss(floor_pid, || wrk(floor_port, shape, seconds)),
            peak_rss(pid, || wrk(port, shape, seconds)),
        ) else {
            out!(report, "| {what} | wrk failed | | | | | | | | | | |");
            continue;
        };
        profiles.push((what, QueueWork::read(&rt, port).minus(&before)));
        if let Some(b) = &baseline {
            compared.push((what, ceiling.rps, ours.rps, wrk(b.port, shape, seconds)));
        }
        let to_noop = ours.rps / ceiling.rps.max(1.0);
        let to_floor = ours.rps / sled.rps.max(1.0);
        let mib = |kib: u64| kib as f64 / 1024.0;
        out!(
            report,
            "| {what} | {:.0} | {:.0} | {:.0} | **{to_noop:.2}** (target ≥ {target}) | **{to_floor:.2}** | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {} / {} / {} | {:.1} / {:.1} |",
            ceiling.rps,
            sled.rps,
            ours.rps,
            sled.rps / ceiling.rps.max(1.0),
            ceiling.p50_ms,
            ceiling.p99_ms,
            sled.p50_ms,
            sled.p99_ms,
            ours.p50_ms,
            ours.p99_ms,
            ceiling.errors,
            sled.errors,
            ours.errors,
            mib(sled_rss),
            mib(rss)
        );
        report.target(
            &format!("durable accept (wrk), {what}, ratio to the no-op"),
            format!(
                "{:.0} vs {:.0} req/s = **{to_noop:.2}**, p99 {:.1} ms",
                ours.rps, ceiling.rps, ours.p99_ms
            ),
            &format!("≥ {target}"),
            to_noop >= target,
        );
        report.target(
            &format!("durable accept (wrk), {what}, ratio to the sled floor"),
            format!(
                "{:.0} vs {:.0} req/s = **{to_floor:.2}**",
                ours.rps, sled.rps
            ),
            &format!("≥ {TO_FLOOR}"),
            to_floor >= TO_FLOOR,
        );
        report.target(
            &format!("RSS at full load (wrk), {what}"),
            format!("**{:.1} MiB**", mib(rss)),
            &format!("≤ {RSS_LOADED_MIB} MiB"),
            rss <= RSS_LOADED_MIB * 1024,
        );
    }
    out!(report);
    out!(
        report,
        "- the sled floor (`benches/accept/floor.rs`): the no-op's HTTP stack and workers, a handler that parses the body (JSON; a form's `payload` field as JSON) and stores it as one sled row keyed by a monotonic u64 before the 200; {}. Its store is on the daemon's file system, one store through the three shapes as the daemon's is.",
        crate::floor::VARIANT
    );
    out!(
        report,
        "- wrk drives at most what 64 connections give; it cannot pace a rate, so p99 at half rate is the load generator's figure above, not wrk's."
    );
    out!(report);
    out!(
        report,
        "Queue work during those runs (the daemon's `hookbridge_commit_*` metrics):"
    );
    out!(report);
    out!(
        report,
        "| requests | events | rows per event | bytes per event | requests per group | sled apply ms per group | sled apply µs per event | fsync ms per group |"
    );
    out!(report, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (what, w) in profiles {
        let per_event = |v: f64| v / w.events.max(1.0);
        let per_group = |v: f64| v / w.groups.max(1.0);
        out!(
            report,
            "| {what} | {:.0} | {:.2} | {:.0} | {:.1} | {:.2} | {:.1} | {:.2} |",
            w.events,
            per_event(w.rows),
            per_event(w.bytes),
            per_group(w.requests),
            per_group(w.apply_s * 1000.0),
            per_event(w.apply_s * 1e6),
            per_group(w.fsync_s * 1000.0),
        );
    }
    if let Some(mut b) = baseline {
        out!(report);
        out!(
            report,
            "Before and after, same run: `BENCH_BASELINE={}` against this build:",
            b.binary.display()
        );
        out!(report);
        out!(
            report,
            "The baseline runs second, on a fresh store of its own as this build's first run is; \
             the second of two daemons run back to back measured 10–12 % faster with the same \
             binary in both places (docs/benchmarks.md, 2026-12-04), so read \"after\" against \
             about 0.9 of \"before\"."
        );
        out!(report);
        out!(
            report,
            "| requests | no-op req/s | before req/s | before ratio | after req/s | after ratio |"
        );
        out!(report, "|---|---:|---:|---:|---:|---:|");
        for (what, ceiling, after, before) in compared {
            let before = before.map_or(0.0, |r| r.rps);
            out!(
                report,
                "| {what} | {ceiling:.0} | {before:.0} | {:.2} | {after:.0} | **{:.2}** |",
                before / ceiling.max(1.0),
                after / ceiling.max(1.0)
            );
        }
        stop(&mut b.child);
    }
    stop(&mut daemon);
    let _ = noop.kill();
    let _ = noop.wait();
    let _ = floor.kill();
    let _ = floor.wait();
}

/// An earlier build of the daemon (`BENCH_BASELINE=path/to/hookbridge`) run beside this one,
/// on the same config, so that before and after are measured in one run.
struct Baseline {
    binary: PathBuf,
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Baseline {
    /// Starts the baseline daemon when `BENCH_BASELINE` names one.
    fn start() -> Option<Baseline> {
        let binary = PathBuf::from(std::env::var_os("BENCH_BASELINE")?);
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = write_config(dir.path(), port);
        let child = start_binary(&binary, &config, dir.path());
        wait_port(port);
        Some(Baseline {
            binary,
            child,
            port,
            _dir: dir,
        })
    }
}

/// What the committer did, from the daemon's metrics; subtract two readings for one run's share.
#[derive(Default)]
struct QueueWork {
    events: f64,
    rows: f64,
    bytes: f64,
    groups: f64,
    requests: f64,
    apply_s: f64,
    fsync_s: f64,
}

impl QueueWork {
    /// Reads the counters now.
    fn read(rt: &tokio::runtime::Runtime, port: u16) -> QueueWork {
        let text = rt.block_on(load::metrics_text(port));
        let value = |name: &str| load::metric(&text, name, &[]).unwrap_or(0.0);
        QueueWork {
            events: value("hookbridge_events_accepted_total"),
            rows: value("hookbridge_commit_rows_total"),
            bytes: value("hookbridge_commit_bytes_total"),
            groups: value("hookbridge_commit_batch_requests_count"),
            requests: value("hookbridge_commit_batch_requests_sum"),
            apply_s: value("hookbridge_commit_apply_duration_seconds_sum"),
            fsync_s: value("hookbridge_commit_fsync_duration_seconds_sum"),
        }
    }

    /// What happened between `earlier` and this reading.
    fn minus(&self, earlier: &QueueWork) -> QueueWork {
        QueueWork {
            events: self.events - earlier.events,
            rows: self.rows - earlier.rows,
            bytes: self.bytes - earlier.bytes,
            groups: self.groups - earlier.groups,
            requests: self.requests - earlier.requests,
            apply_s: self.apply_s - earlier.apply_s,
            fsync_s: self.fsync_s - earlier.fsync_s,
        }
    }
}

/// Unsigned hooks for the portal and feature-service shapes, every event to a file sink.
fn write_config(dir: &Path, port: u16) -> PathBuf {
    let config = dir.join("routes.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"{d}/data\"\n\
         [hooks.portal]\nkind = \"portal\"\n[hooks.features]\nkind = \"feature-service\"\n\
         [sinks.log]\ntype = \"file\"\npath = \"{d}/events.jsonl\"\n[[routes]]\nmatch = {{}}\nto = [\"log\"]\n",
        d = dir.display()
    );
    std::fs::write(&config, text).expect("write config");
    config
}

/// Runs `f` while sampling `pid`'s RSS every 100 ms; returns its result and the peak in KiB.
fn peak_rss<T>(pid: u32, f: impl FnOnce() -> Option<T>) -> Option<(T, u64)> {
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let result = f();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    result.map(|r| (r, peak.load(Ordering::Relaxed)))
}

/// One wrk run against `port` with the script's `shape`.
fn wrk(port: u16, shape: &str, seconds: u64) -> Option<WrkRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/accept/wrk/post.lua");
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--", shape])
        .output()
        .ok()?;
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Requests/s, the 50th and 99th percentile latencies and the errors (non-2xx answers and
/// socket errors) of wrk's report.
fn parse(text: &str) -> Option<WrkRun> {
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let rps = field("Requests/sec:")?.parse().ok()?;
    let p50_ms = millis(&field("50%")?)?;
    let p99_ms = millis(&field("99%")?)?;
    let refused: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let errors = refused + field("Socket errors:").map_or(0, |v| socket_errors(&v));
    Some(WrkRun {
        rps,
        p50_ms,
        p99_ms,
        errors,
    })
}

/// The sum of wrk's `connect 0, read 0, write 0, timeout 0`.
fn socket_errors(v: &str) -> u64 {
    v.split(',')
        .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// wrk's `1.23ms`, `850.00us` or `1.02s` in milliseconds.
fn millis(v: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    number.trim().parse::<f64>().ok().map(|n| n * factor)
}
