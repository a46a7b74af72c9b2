//! The HTTP sink against a local no-op receiver (the no-op actix server of the accept phase, in a
//! process of its own): the sink draining a backlog, next to a raw reqwest client posting the
//! same bodies (the events as the sink renders them) with the same concurrency, in the same run.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hookbridge::arcgis::{HookKind, parse};

use crate::brokers::{self, Params, Summary};
use crate::daemon::Daemon;
use crate::load::{env_or, free_port, portal_payload, wait_port};
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
    let port = free_port();
    let mut receiver: Child = Command::new(std::env::current_exe().expect("own path"))
        .env("HOOKBRIDGE_BENCH_NOOP", port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the no-op receiver");
    wait_port(port);
    let url = format!("http://127.0.0.1:{port}/hooks/receiver");
    let result = measure(rt, &url, p, in_flight);
    let _ = receiver.kill();
    let _ = receiver.wait();
    match result {
        Ok((raw, drain)) => {
            let raw_rate = p.n as f64 / raw.as_secs_f64().max(1e-9);
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
                raw.as_secs_f64()
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

/// The raw run's time, then the sink's drain.
fn measure(
    rt: &tokio::runtime::Runtime,
    url: &str,
    p: &Params,
    in_flight: usize,
) -> anyhow::Result<(Duration, brokers::Drain)> {
    let bodies = Arc::new(
        (0..p.n)
            .map(|n| event_body(30, n))
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let raw = rt.block_on(post_all(url, bodies, in_flight))?;
    let bus = format!("type = \"http\"\nurl = \"{url}\"\nmax_in_flight = {in_flight}\n");
    let d = Daemon::start(&bus);
    ensure!(
        rt.block_on(d.ready(Duration::from_secs(30))),
        "the daemon's HTTP sink did not connect within 30 s\n{}",
        d.log_tail()
    );
    let drain = rt.block_on(brokers::drain(&d, p, 31))?;
    Ok((raw, drain))
}

/// The body the sink sends for payload `n` of run `run`: the normalized event as JSON.
fn event_body(run: u64, n: u64) -> anyhow::Result<Vec<u8>> {
    let mut events = parse(HookKind::Portal, "portal", &portal_payload(run, n))?;
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
