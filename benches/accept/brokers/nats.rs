//! NATS JetStream at 127.0.0.1:4222 (`BENCH_NATS_URL` names another): async-nats's own
//! JetStream publishes awaiting their acknowledgements, the hookbridge sink draining a backlog,
//! and end to end through a core subscription on the stream's subjects. The stream is named
//! for the run and deleted afterwards.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::timeout;

use super::{Figures, Params, Raw, Shape, Summary, drain, end_to_end, windowed};
use crate::daemon::Daemon;
use crate::e2e::{Arrivals, Seen};
use crate::report::{Report, out};

/// The server, unless `BENCH_NATS_URL` names another.
fn url() -> String {
    std::env::var("BENCH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report, p: &Params, summary: &mut Summary) {
    out!(report);
    out!(
        report,
        "## NATS JetStream: raw async-nats client vs the hookbridge sink"
    );
    out!(report);
    let connected = rt.block_on(async {
        match timeout(Duration::from_secs(10), async_nats::connect(url())).await {
            Ok(r) => r.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!("no answer within 10 s")),
        }
    });
    let client = match connected {
        Ok(c) => c,
        Err(e) => {
            out!(
                report,
                "- skipped: cannot connect to NATS at {} ({e:#})",
                url()
            );
            return;
        }
    };
    // The context spawns its acknowledgement task: it is made inside the runtime.
    let js = rt.block_on(async { jetstream::new(client.clone()) });
    let tag = format!("{:012x}", rand::random::<u64>() >> 16);
    let name = format!("HBBENCH-{tag}");
    let prefix = format!("hbbench-{tag}");
    let result = rt.block_on(measure(&client, &js, &name, &prefix, p));
    rt.block_on(async {
        let _ = timeout(Duration::from_secs(30), js.delete_stream(&name)).await;
    });
    match result {
        Ok(f) => {
            out!(
                report,
                "File-stored stream, each message with the sink's headers and a unique `Nats-Msg-Id`, published awaiting its JetStream acknowledgement; raw bodies 1 KiB, {} messages per raw run.",
                p.n
            );
            out!(report);
            f.print(report, "seen by a core subscription");
            f.summarize(
                report,
                summary,
                "NATS JetStream",
                "NATS JetStream sink drain / raw async-nats",
            );
        }
        Err(e) => out!(report, "- failed: {e:#}"),
    }
}

async fn measure(
    client: &async_nats::Client,
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
    p: &Params,
) -> anyhow::Result<Figures> {
    let stream = js
        .create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .context("create the stream")?;
    let bus = format!(
        "type = \"nats\"\nurl = \"{}\"\nsubject = \"{prefix}.{{{{ kind }}}}.{{{{ operation }}}}\"\nstream = \"{name}\"\n",
        url()
    );
    let shape = Shape::of_sink(&bus)?;
    let limit = Duration::from_secs(60 + p.n / 100);
    let mut runs = Vec::new();
    for (run, depth) in shape.raw_depths(p.windows).into_iter().enumerate() {
        let took = timeout(limit, publish(js, prefix, run, p.n, shape.batch, depth))
            .await
            .with_context(|| format!("raw publishes did not finish within {limit:?}"))??;
        runs.push(Raw::new("raw async-nats", p.n, shape, depth, took));
        stream.purge().await.context("purge the stream")?;
    }

    let d = Daemon::start(&bus);
    ensure!(
        d.ready(Duration::from_secs(30)).await,
        "the daemon's NATS sink did not connect within 30 s\n{}",
        d.log_tail()
    );
    let arrivals = Arc::new(Arrivals::default());
    let (ready, consumer) = consume(format!("{prefix}.>"), arrivals.clone());
    match timeout(Duration::from_secs(15), ready).await {
        Ok(Ok(Ok(()))) => {}
        failed => {
            arrivals.finish(0);
            drop(consumer);
            bail!("the consumer did not start: {failed:?}");
        }
    }
    let (e2e, e2e_sink) = end_to_end(&d, p, 31, arrivals, consumer).await?;
    let drain = drain(&d, p, 32).await?;
    drop(d);
    let held = js.get_stream(name).await?.get_info().await?.state.messages;
    let _ = client.flush().await;
    let mut f = Figures {
        raw: runs,
        drain,
        e2e,
        e2e_sink,
    };
    f.drain.in_broker = Some(format!("{held} messages in the stream"));
    Ok(f)
}

/// `n` raw JetStream publishes in batches of `batch`, `depth` batches awaiting acks at once.
async fn publish(
    js: &jetstream::Context,
    prefix: &str,
    run: usize,
    n: u64,
    batch: u64,
    depth: usize,
) -> anyhow::Result<Duration> {
    let body = Bytes::from(vec![b'x'; 1024]);
    let subject = format!("{prefix}.portal.update");
    windowed(n, batch, depth, |range: Range<u64>| {
        let (js, body, subject) = (js.clone(), body.clone(), subject.clone());
        async move {
            let mut acks = Vec::with_capacity((range.end - range.start) as usize);
            for i in range {
                let publish = PublishMessage::build()
                    .payload(body.clone())
                    .headers(headers(run, i));
                let ack = js.send_publish(subject.clone(), publish).await?;
                acks.push(async move {
                    ack.await?;
                    anyhow::Ok(())
                });
            }
            Ok(acks)
        }
    })
    .await
}

/// The sink's headers (src/sinks/nats/encode.rs) for raw message `i` of run `run`.
fn headers(run: usize, i: u64) -> HeaderMap {
    let id = format!("{run:x}{i:031x}");
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    h.insert("Content-Type", "application/json");
    for (key, value) in [
        ("event_id", id.as_str()),
        ("hook", "portal"),
        ("kind", "portal"),
        ("source", "item"),
        ("operation", "update"),
    ] {
        h.insert(key, value);
    }
    h
}

/// A core subscription on `subjects` in its own thread and runtime: notes when each
/// `Nats-Msg-Id` (= event_id) arrives. The receiver answers once it subscribed.
fn consume(
    subjects: String,
    arrivals: Arc<Arrivals>,
) -> (
    tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
    std::thread::JoinHandle<Seen>,
) {
    let (ready, started) = tokio::sync::oneshot::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("consumer runtime");
        rt.block_on(async move {
            let opened = async {
                let client = async_nats::connect(url()).await?;
                let sub = client.subscribe(subjects).await?;
                client.flush().await?;
                anyhow::Ok((client, sub))
            };
            let (_client, mut sub) = match opened.await {
                Ok(c) => {
                    let _ = ready.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return Seen::default();
                }
            };
            let mut seen = Seen::default();
            let mut last = Instant::now();
            while arrivals.keep_going(seen.at.len(), last) {
                match timeout(Duration::from_millis(100), sub.next()).await {
                    Ok(Some(m)) => {
                        let now = Instant::now();
                        last = now;
                        let id = m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                            .map(|v| v.as_str().to_string());
                        if let Some(id) = id {
                            seen.record(id, now, m.payload.len());
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            seen
        })
    });
    (started, handle)
}
