//! The HTTP sink against a local no-op receiver (the no-op actix server of the accept phase, in a
//! process of its own): the sink draining a backlog, next to a raw reqwest client posting the
//! same bodies (the events as the sink renders them) with the same concurrency, in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hookbridge::senders::{HookKind, parse};

use crate::brokers::{self, Counters, Params, Summary};
use crate::daemon::Daemon;
use crate::load::{Load, admin_post, env_or, portal, portal_payload, wait_drained};
use crate::report::{Report, out};

/// The drain / raw ratio the sink should reach.
const TARGET: f64 = 0.7;

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report, p: &Params, summary: &mut Summary) {
    let in_flight: usize = env_or("BENCH_HTTP_IN_FLIGHT", 16);
    out!(report);
    out!(
        report,
        "## HTTP: raw reqwest client vs the hookbridge sink ({in_flight} requests in flight, a local no-op receiver)"
    );
    out!(report);
    let (mut receiver, port) = crate::daemon::spawn_noop();
    let url = format!("http://127.0.0.1:{port}/hooks/receiver");
    let result = measure(rt, &url, receiver.id(), p, in_flight);
    let _ = receiver.kill();
    let _ = receiver.wait();
    match result {
        Ok(f) => {
            let n = p.n as f64;
            let raw_rate = n / f.raw.as_secs_f64().max(1e-9);
            let drain = &f.drain;
            let ratio = drain.rate() / raw_rate.max(1e-9);
            out!(
                report,
                "| figure | requests | seconds | per second | ratio |"
            );
            out!(report, "|---|---:|---:|---:|---:|");
            out!(
                report,
                "| raw reqwest, {in_flight} concurrent POSTs of the sink's bodies | {} | {:.2} | {raw_rate:.0} | 1.00 |",
                p.n,
                f.raw.as_secs_f64()
            );
            out!(
                report,
                "| hookbridge HTTP sink draining {} queued events (resume → pending gauge 0) | {} | {:.2} | {:.0} | **{ratio:.2}** |",
                drain.posted.ok,
                drain.posted.ok,
                drain.took.as_secs_f64(),
                drain.rate()
            );
            out!(report);
            out!(
                report,
                "- sink drain / raw reqwest: **{ratio:.2}** (target ≥ {TARGET}: {})",
                if ratio >= TARGET { "met" } else { "not met" }
            );
            report.target(
                "HTTP sink drain / raw reqwest",
                format!(
                    "{:.0} vs {raw_rate:.0} req/s = **{ratio:.2}**",
                    drain.rate()
                ),
                "≥ 0.7",
                ratio >= TARGET,
            );
            let delivered = drain.posted.ok.max(1) as f64;
            out!(
                report,
                "- CPU per request: raw client {:.0} µs + receiver {:.0} µs; sink {:.0} µs (daemon: queue, dispatcher, rendering, HTTP client) + receiver {:.0} µs",
                f.raw_cpu.0 * 1e6 / n,
                f.raw_cpu.1 * 1e6 / n,
                f.drain_cpu.0 * 1e6 / delivered,
                f.drain_cpu.1 * 1e6 / delivered
            );
            out!(
                report,
                "- the queue's share, measured by draining the same events through the file sink: {:.0} events/s, {:.0} µs of daemon CPU per delivery",
                f.queue_rate,
                f.queue_cpu * 1e6 / delivered
            );
            out!(
                report,
                "- drain: {:.0} delivered, {:.0} dead-lettered; {}",
                drain.sink.delivered,
                drain.sink.dead,
                drain.sink.describe()
            );
            summary.add(
                "HTTP (no-op receiver)",
                Some((raw_rate, drain.rate())),
                None,
            );
        }
        Err(e) => out!(report, "- failed: {e:#}"),
    }
}

/// What the phase measured: the raw run and the sink's drain, with the CPU each side used.
struct Figures {
    raw: Duration,
    /// CPU seconds of this process (the raw client) and of the receiver during the raw run.
    raw_cpu: (f64, f64),
    drain: brokers::Drain,
    /// CPU seconds of the daemon and of the receiver during the drain.
    drain_cpu: (f64, f64),
    /// The same drain through the file sink: events per second, and the daemon's CPU seconds.
    queue_rate: f64,
    queue_cpu: f64,
}

/// The raw run, then the sink draining the same number of events.
fn measure(
    rt: &tokio::runtime::Runtime,
    url: &str,
    receiver: u32,
    p: &Params,
    in_flight: usize,
) -> anyhow::Result<Figures> {
    let bodies = Arc::new(
        (0..p.n)
            .map(|n| event_body(30, n))
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let before = (cpu_seconds("self"), cpu_seconds(&receiver.to_string()));
    let raw = rt.block_on(post_all(url, bodies, in_flight))?;
    let raw_cpu = (
        cpu_seconds("self") - before.0,
        cpu_seconds(&receiver.to_string()) - before.1,
    );
    let bus = format!("type = \"http\"\nurl = \"{url}\"\nmax_in_flight = {in_flight}\n");
    let d = Daemon::start(&bus);
    ensure!(
        rt.block_on(d.ready(Duration::from_secs(30))),
        "the daemon's HTTP sink did not connect within 30 s\n{}",
        d.log_tail()
    );
    let (sink, sink_cpu) = rt.block_on(drain(&d, receiver, p))?;
    drop(d);
    // The queue's own share: the same drain through the file sink (one write and fsync per
    // batch of 512), whose daemon CPU is mostly the queue's and the dispatcher's.
    let file = Daemon::start("type = \"file\"\npath = \"events.jsonl\"\n");
    ensure!(
        rt.block_on(file.ready(Duration::from_secs(30))),
        "the file sink did not start\n{}",
        file.log_tail()
    );
    let (queue, queue_cpu) = rt.block_on(drain(&file, receiver, p))?;
    Ok(Figures {
        raw,
        raw_cpu,
        drain: sink,
        drain_cpu: sink_cpu,
        queue_rate: queue.rate(),
        queue_cpu: queue_cpu.0,
    })
}

/// Queues `p.n` events with the sink paused, then times the drain from resume until the
/// pending gauge reads 0, with the CPU the daemon and the receiver used meanwhile.
async fn drain(
    d: &Daemon,
    receiver: u32,
    p: &Params,
) -> anyhow::Result<(brokers::Drain, (f64, f64))> {
    let hooks = format!("http://127.0.0.1:{}/hooks/portal", d.port);
    // One event first: the pending gauge exists once the sink has had a delivery.
    let warm = Load::new(&hooks, 1, 60, portal(32)).limit(1).run().await;
    ensure!(warm.ok == 1, "the warm-up event was not accepted");
    let (_, idle) = wait_drained(
        d.port,
        "bus",
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .await;
    ensure!(
        idle,
        "the warm-up event was not delivered\n{}",
        d.log_tail()
    );
    admin_post(d.port, "/admin/sinks/bus/pause").await;
    let posted = Load::new(&hooks, p.clients, 3600, portal(31))
        .limit(p.n)
        .run()
        .await;
    let before = Counters::read(d.port).await;
    let cpu = (
        cpu_seconds(&d.pid().to_string()),
        cpu_seconds(&receiver.to_string()),
    );
    let resumed = Instant::now();
    admin_post(d.port, "/admin/sinks/bus/resume").await;
    let (_, complete) = wait_drained(
        d.port,
        "bus",
        Duration::from_millis(10),
        Duration::from_secs(600),
    )
    .await;
    let took = resumed.elapsed();
    let cpu = (
        cpu_seconds(&d.pid().to_string()) - cpu.0,
        cpu_seconds(&receiver.to_string()) - cpu.1,
    );
    ensure!(
        complete,
        "the sink did not drain within 600 s\n{}",
        d.log_tail()
    );
    let after = Counters::read(d.port).await;
    let sink = Counters {
        delivered: after.delivered - before.delivered,
        dead: after.dead - before.dead,
        batches: after.batches - before.batches,
        send_seconds: after.send_seconds - before.send_seconds,
    };
    let drain = brokers::Drain {
        posted,
        took,
        sink,
        in_broker: None,
    };
    Ok((drain, cpu))
}

/// User and system CPU seconds of process `pid` (`self` for this one), from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start with the state (3rd).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15, in USER_HZ (100 per second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// The body the sink sends for payload `n` of run `run`: the normalized event as JSON.
fn event_body(run: u64, n: u64) -> anyhow::Result<Vec<u8>> {
    let mut events = parse(
        HookKind::Sender(&hookbridge::senders::arcgis::portal::SENDER),
        "portal",
        &portal_payload(run, n),
    )?;
    let mut event = events.pop().context("the payload holds no event")?;
    event.accepted_at = 1_700_000_000_000;
    Ok(serde_json::to_vec(&event)?)
}

/// Posts every body with `in_flight` concurrent requests through one client, reading each
/// answer as the sink does; returns the time until the last answer.
async fn post_all(
    url: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    in_flight: usize,
) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (client, url, bodies, next) = (
                client.clone(),
                url.to_string(),
                bodies.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(body) = bodies.get(i) else {
                        return anyhow::Ok(());
                    };
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    ensure!(
                        answer.status().is_success(),
                        "the receiver answered {}",
                        answer.status()
                    );
                    answer.bytes().await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}
