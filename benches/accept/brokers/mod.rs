//! The broker phases: the raw client's acknowledged rate, the hookbridge sink draining a backlog
//! to the same broker, and end-to-end latency at a paced rate, for RabbitMQ, Kafka, NATS
//! JetStream and MQTT.
//!
//! Each broker module brings its raw client and its consumer; the sink drain, the paced posting
//! and the tables are shared here.

pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod rabbitmq;

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use crate::daemon::Daemon;
use crate::e2e::{Arrivals, EndToEnd, Seen};
use crate::load::{self, Load, Run, Sent, portal};
use crate::report::{Report, out};

/// What the broker phases take from the environment.
pub struct Params {
    /// Messages of each raw run, and events of the sink drain.
    pub n: u64,
    /// Batches in flight at once in the pipelined raw run.
    pub windows: usize,
    /// Paced rate and length of the end-to-end run.
    pub rate: f64,
    pub seconds: u64,
    /// Concurrent clients posting.
    pub clients: usize,
}

/// How the sink sends: deliveries per batch, and batches on their way at once.
#[derive(Clone, Copy)]
pub struct Shape {
    pub batch: u64,
    pub depth: usize,
}

impl Shape {
    /// Asks the library's own sink, built from `bus` (the body of a `[sinks.bus]` table) as the
    /// daemon builds it, so that the raw client's "as the sink" run follows the code.
    pub fn of_sink(bus: &str) -> anyhow::Result<Shape> {
        use hookbridge::render::Renderer;
        use hookbridge::sinks::SinkSettings;
        let table: toml::Table = toml::from_str(bus)?;
        let (config, _) =
            SinkSettings::from_table("bus", table, std::path::Path::new("."), &Default::default())
                .map_err(|problems| anyhow::anyhow!("the sink's config: {problems:?}"))?;
        let mut renderer = Renderer::new("templates".into());
        config
            .compile(
                "bus",
                &mut renderer,
                &hookbridge::senders::samples::events(),
            )
            .map_err(|problems| anyhow::anyhow!("the sink's templates: {problems:?}"))?;
        let sink = config
            .build("bus", &renderer)
            .map_err(|e| anyhow::anyhow!("build the sink: {e}"))?;
        Ok(Shape {
            batch: sink.max_batch() as u64,
            depth: sink.max_in_flight().max(1),
        })
    }

    /// The depths of the raw runs: `windows` batches in flight, then the sink's own depth if it
    /// differs.
    pub fn raw_depths(&self, windows: usize) -> Vec<usize> {
        let mut depths = vec![windows.max(1)];
        if self.depth != depths[0] {
            depths.push(self.depth);
        }
        depths
    }
}

/// One raw-client run: `n` messages acknowledged in `took`.
pub struct Raw {
    pub label: String,
    pub n: u64,
    pub took: Duration,
    /// Sent in the sink's shape (batch and depth).
    pub as_sink: bool,
}

impl Raw {
    /// A run of `client` with `depth` batches of the sink's size in flight.
    pub fn new(client: &str, n: u64, sink: Shape, depth: usize, took: Duration) -> Raw {
        let as_sink = depth == sink.depth;
        let batches = if depth == 1 { "batch" } else { "batches" };
        Raw {
            label: format!(
                "{client}, {depth} {batches} of {} in flight{}",
                sink.batch,
                if as_sink { " (as the sink)" } else { "" }
            ),
            n,
            took,
            as_sink,
        }
    }

    pub fn rate(&self) -> f64 {
        self.n as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// Sends `n` messages in batches of `batch`, with at most `depth` batches awaiting their
/// acknowledgements: `start(range)` hands a batch to the client and returns one acknowledgement
/// future per message. Returns how long it took until the last acknowledgement.
pub async fn windowed<S, SF, A>(
    n: u64,
    batch: u64,
    depth: usize,
    mut start: S,
) -> anyhow::Result<Duration>
where
    S: FnMut(Range<u64>) -> SF,
    SF: Future<Output = anyhow::Result<Vec<A>>>,
    A: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut in_flight: VecDeque<Vec<A>> = VecDeque::new();
    let mut next = 0;
    while next < n {
        let end = (next + batch).min(n);
        in_flight.push_back(start(next..end).await?);
        next = end;
        while in_flight.len() >= depth.max(1) {
            for ack in in_flight.pop_front().into_iter().flatten() {
                ack.await?;
            }
        }
    }
    for ack in in_flight.into_iter().flatten() {
        ack.await?;
    }
    Ok(started.elapsed())
}

/// The sink draining a backlog of `posted.ok` events.
pub struct Drain {
    /// Posting the events while the sink was paused.
    pub posted: Run,
    /// From `/resume` until the pending gauge read 0.
    pub took: Duration,
    /// The sink's counters over the drain.
    pub sink: Counters,
    /// What the broker holds afterwards, when the phase can tell.
    pub in_broker: Option<String>,
}

impl Drain {
    pub fn rate(&self) -> f64 {
        self.posted.ok as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// Sink `bus`'s counters so far: deliveries delivered and dead, batches sent and their total
/// send time (render, publish, broker acknowledgement).
#[derive(Clone, Copy, Default)]
pub struct Counters {
    pub delivered: f64,
    pub dead: f64,
    pub batches: f64,
    pub send_seconds: f64,
}

impl Counters {
    pub async fn read(port: u16) -> Counters {
        let text = load::metrics_text(port).await;
        let value =
            |name: &str, filters: &[&str]| load::metric(&text, name, filters).unwrap_or(0.0);
        let bus = "sink=\"bus\"";
        Counters {
            delivered: value(
                "hookbridge_deliveries_total",
                &[bus, "outcome=\"delivered\""],
            ),
            dead: value("hookbridge_deliveries_total", &[bus, "outcome=\"dead\""]),
            batches: value("hookbridge_sink_send_duration_seconds_count", &[bus]),
            send_seconds: value("hookbridge_sink_send_duration_seconds_sum", &[bus]),
        }
    }

    /// What happened between `before` and `self`.
    fn since(self, before: Counters) -> Counters {
        Counters {
            delivered: self.delivered - before.delivered,
            dead: self.dead - before.dead,
            batches: self.batches - before.batches,
            send_seconds: self.send_seconds - before.send_seconds,
        }
    }

    /// "N batches of M deliveries on average, X ms per send".
    pub fn describe(&self) -> String {
        let batches = self.batches.max(1.0);
        format!(
            "{:.0} batches, {:.1} deliveries per batch, {:.2} ms per send (render, publish, broker ack)",
            self.batches,
            (self.delivered + self.dead) / batches,
            self.send_seconds * 1000.0 / batches
        )
    }
}

/// Pauses sink `bus`, posts `p.n` events (run `run`), resumes it and times until its pending
/// gauge reads 0: every event broker-confirmed (or dead, which is counted).
pub async fn drain(d: &Daemon, p: &Params, run: u64) -> anyhow::Result<Drain> {
    let port = d.port;
    let (_, idle) = load::wait_drained(
        port,
        "bus",
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .await;
    ensure!(
        idle,
        "the sink still had pending deliveries before the drain phase"
    );
    let before = Counters::read(port).await;
    load::admin_post(port, "/admin/sinks/bus/pause").await;
    let url = format!("http://127.0.0.1:{port}/hooks/portal");
    let posted = Load::new(&url, p.clients, 3600, portal(run))
        .limit(p.n)
        .run()
        .await;
    let text = load::metrics_text(port).await;
    let pending = load::metric(
        &text,
        "hookbridge_queue_pending_deliveries",
        &["sink=\"bus\""],
    )
    .unwrap_or(0.0);
    ensure!(
        pending >= posted.ok as f64,
        "{} events accepted but only {pending} pending while the sink was paused",
        posted.ok
    );
    let resumed = Instant::now();
    load::admin_post(port, "/admin/sinks/bus/resume").await;
    let (_, complete) = load::wait_drained(
        port,
        "bus",
        Duration::from_millis(10),
        Duration::from_secs(600),
    )
    .await;
    let took = resumed.elapsed();
    ensure!(
        complete,
        "the sink did not drain within 600 s\n{}",
        d.log_tail()
    );
    Ok(Drain {
        posted,
        took,
        sink: Counters::read(port).await.since(before),
        in_broker: None,
    })
}

/// Posts at `p.rate` for `p.seconds` (run `run`) while `consumer` (already consuming) notes
/// arrivals; then lets it finish and computes the latencies.
pub async fn end_to_end(
    d: &Daemon,
    p: &Params,
    run: u64,
    arrivals: Arc<Arrivals>,
    consumer: std::thread::JoinHandle<Seen>,
) -> anyhow::Result<(EndToEnd, Counters)> {
    let before = Counters::read(d.port).await;
    let sent: Sent = Arc::default();
    let url = format!("http://127.0.0.1:{}/hooks/portal", d.port);
    let r = Load::new(&url, p.clients, p.seconds, portal(run))
        .paced(p.rate)
        .record(sent.clone())
        .run()
        .await;
    let sent: Vec<(String, Instant)> = sent.lock().expect("lock").clone();
    arrivals.finish(sent.len());
    let seen = tokio::task::spawn_blocking(move || consumer.join())
        .await
        .context("join the consumer")?
        .map_err(|_| anyhow::anyhow!("the consumer panicked"))?;
    let sink = Counters::read(d.port).await.since(before);
    Ok((EndToEnd::new(p.rate, p.seconds, &sent, &seen, r), sink))
}

/// One broker's figures.
pub struct Figures {
    /// The raw runs: `windows` batches in flight, then the sink's own depth.
    pub raw: Vec<Raw>,
    pub drain: Drain,
    pub e2e: EndToEnd,
    /// The sink's counters over the end-to-end run.
    pub e2e_sink: Counters,
}

impl Figures {
    /// Adds this broker to the side-by-side summary and its drain ratio to the closing table.
    pub fn summarize(
        &self,
        report: &mut Report,
        summary: &mut Summary,
        broker: &str,
        figure: &str,
    ) {
        summary.add(
            broker,
            Some((self.best_raw(), self.drain.rate())),
            Some(&self.e2e),
        );
        let ratio = self.drain.rate() / self.best_raw().max(1e-9);
        report.target(
            figure,
            format!(
                "{:.0} vs {:.0} msg/s = **{ratio:.2}**",
                self.drain.rate(),
                self.best_raw()
            ),
            "≥ 0.7",
            ratio >= 0.7,
        );
    }

    /// The fastest raw run's rate: the raw client at its best.
    pub fn best_raw(&self) -> f64 {
        self.raw.iter().map(Raw::rate).fold(0.0, f64::max)
    }

    /// The raw tables, the drain and the end-to-end table; `arrival` names what the consumer saw.
    pub fn print(&self, report: &mut Report, arrival: &str) {
        let reference = self.best_raw().max(1e-9);
        out!(
            report,
            "| figure | messages | seconds | per second | ratio to the fastest raw run |"
        );
        out!(report, "|---|---:|---:|---:|---:|");
        for raw in &self.raw {
            out!(
                report,
                "| {} | {} | {:.2} | {:.0} | {:.2} |",
                raw.label,
                raw.n,
                raw.took.as_secs_f64(),
                raw.rate(),
                raw.rate() / reference
            );
        }
        let d = &self.drain;
        out!(
            report,
            "| hookbridge sink draining {} queued events (resume → pending gauge 0) | {} | {:.2} | {:.0} | **{:.2}** |",
            d.posted.ok,
            d.posted.ok,
            d.took.as_secs_f64(),
            d.rate(),
            d.rate() / reference
        );
        out!(report);
        if self.raw.iter().any(|r| r.took < Duration::from_millis(500)) {
            out!(
                report,
                "- a raw run lasted under 0.5 s, so its rate (and every ratio to it) is noisy: raise BENCH_BROKER_N"
            );
        }
        if let Some(sink_style) = self.raw.iter().find(|r| r.as_sink) {
            out!(
                report,
                "- sink drain / the raw client in the sink's shape: **{:.2}**",
                d.rate() / sink_style.rate().max(1e-9)
            );
        }
        out!(
            report,
            "- drain: {:.0} delivered, {:.0} dead-lettered; {}; the {} events were posted (sink paused) at {:.0}/s with {} errors",
            d.sink.delivered,
            d.sink.dead,
            d.sink.describe(),
            d.posted.ok,
            d.posted.rate,
            d.posted.errors
        );
        if let Some(held) = &d.in_broker {
            out!(report, "- after the drain: {held}");
        }
        if let Some(bytes) = self.e2e.message_bytes {
            out!(report, "- the sink's messages: {bytes} bytes on average");
        }
        out!(report);
        self.e2e.print(report, arrival);
        out!(report);
        out!(
            report,
            "- the sink during the end-to-end run: {}",
            self.e2e_sink.describe()
        );
    }
}

/// The closing table: every sink's drain and end-to-end figures side by side.
#[derive(Default)]
pub struct Summary {
    rows: Vec<String>,
    brokers: usize,
}

impl Summary {
    /// `rates` is (raw client, sink drain) for a broker.
    pub fn add(&mut self, sink: &str, rates: Option<(f64, f64)>, e2e: Option<&EndToEnd>) {
        let (raw, drain, ratio) = match rates {
            Some((raw, drain)) => {
                self.brokers += 1;
                (
                    format!("{raw:.0}"),
                    format!("{drain:.0}"),
                    format!("{:.2}", drain / raw.max(1e-9)),
                )
            }
            None => ("—".into(), "—".into(), "—".into()),
        };
        let e2e = match e2e {
            Some(e) => format!(
                "{} | {} | {:.2} | {:.2} | {:.2} | {:.2}",
                e.accepted,
                e.latencies.len(),
                e.p(0.5),
                e.p(0.99),
                e.p(0.999),
                e.max()
            ),
            None => "— | — | — | — | — | —".into(),
        };
        self.rows
            .push(format!("| {sink} | {raw} | {drain} | {ratio} | {e2e} |"));
    }

    /// Printed when at least one broker was measured.
    pub fn print(&self, report: &mut Report, rate: f64) {
        if self.brokers == 0 {
            return;
        }
        out!(report);
        out!(report, "## Sinks side by side");
        out!(report);
        out!(
            report,
            "| sink | raw client msgs/s (fastest run) | sink drain events/s | drain / raw | accepted at {rate:.0}/s | seen | e2e p50 ms | p99 ms | p99.9 ms | max ms |"
        );
        out!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in &self.rows {
            out!(report, "{row}");
        }
    }
}
