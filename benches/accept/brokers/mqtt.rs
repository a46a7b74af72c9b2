//! MQTT at 127.0.0.1:1883 (Mosquitto; `BENCH_MQTT_PORT` names another port): rumqttc's own
//! QoS 1 publishes counted done on their PUBACKs, the hookbridge sink draining a backlog, and
//! end to end through a v5 subscriber on the sink's topics. Topics are named for the run.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::Notify;
use tokio::time::timeout;

use super::{Figures, Params, Raw, Shape, Summary, drain, end_to_end, windowed};
use crate::daemon::Daemon;
use crate::e2e::{Arrivals, Seen};
use crate::report::{Report, out};

/// The broker's port, unless `BENCH_MQTT_PORT` names another.
fn port() -> u16 {
    std::env::var("BENCH_MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883)
}

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report, p: &Params, summary: &mut Summary) {
    out!(report);
    out!(
        report,
        "## MQTT (Mosquitto): raw rumqttc client vs the hookbridge sink"
    );
    out!(report);
    if std::net::TcpStream::connect(("127.0.0.1", port())).is_err() {
        out!(report, "- skipped: no MQTT broker at 127.0.0.1:{}", port());
        return;
    }
    let prefix = format!("hbbench-{:012x}", rand::random::<u64>() >> 16);
    match rt.block_on(measure(&prefix, p)) {
        Ok(f) => {
            out!(
                report,
                "QoS 1 messages with the sink's v5 properties (user properties, correlation data), each counted on its PUBACK; raw bodies 1 KiB, {} messages per raw run.",
                p.n
            );
            out!(report);
            f.print(report, "received by a v5 subscriber (QoS 1)");
            f.summarize(
                report,
                summary,
                "MQTT (Mosquitto)",
                "MQTT sink drain / raw rumqttc",
            );
        }
        Err(e) => out!(report, "- failed: {e:#}"),
    }
}

async fn measure(prefix: &str, p: &Params) -> anyhow::Result<Figures> {
    let bus = format!(
        "type = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\ntopic = \"{prefix}/{{{{ kind }}}}/{{{{ operation }}}}\"\nclient_id = \"{prefix}-bus\"\n",
        port()
    );
    let shape = Shape::of_sink(&bus)?;
    let limit = Duration::from_secs(60 + p.n / 100);
    let mut runs = Vec::new();
    for depth in shape.raw_depths(p.windows) {
        let took = timeout(limit, publish(prefix, p.n, shape.batch, depth))
            .await
            .map_err(|_| anyhow::anyhow!("raw publishes did not finish within {limit:?}"))??;
        runs.push(Raw::new("raw rumqttc (QoS 1)", p.n, shape, depth, took));
    }

    let d = Daemon::start(&bus);
    ensure!(
        d.ready(Duration::from_secs(30)).await,
        "the daemon's MQTT sink did not connect within 30 s\n{}",
        d.log_tail()
    );
    let arrivals = Arc::new(Arrivals::default());
    let (ready, consumer) = consume(format!("{prefix}/#"), arrivals.clone());
    match timeout(Duration::from_secs(15), ready).await {
        Ok(Ok(())) => {}
        failed => {
            arrivals.finish(0);
            drop(consumer);
            bail!("the subscriber did not start: {failed:?}");
        }
    }
    let (e2e, e2e_sink) = end_to_end(&d, p, 41, arrivals, consumer).await?;
    let drain = drain(&d, p, 42).await?;
    drop(d);
    Ok(Figures {
        raw: runs,
        drain,
        e2e,
        e2e_sink,
    })
}

/// `n` raw QoS 1 publishes in batches of `batch`, `depth` batches awaiting PUBACKs at once
/// (Mosquitto acknowledges in order, so the count of PUBACKs says which are done).
async fn publish(prefix: &str, n: u64, batch: u64, depth: usize) -> anyhow::Result<Duration> {
    let id = format!("{prefix}-raw-{depth}");
    let mut options = MqttOptions::new(id, "127.0.0.1", port());
    options.set_outgoing_inflight_upper_limit(512);
    let (client, mut events) = AsyncClient::new(options, 2048);
    let acked = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let driver = {
        let (acked, notify) = (acked.clone(), notify.clone());
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                        notify.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("raw rumqttc: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    let body = Bytes::from(vec![b'x'; 1024]);
    let topic = format!("{prefix}/portal/update");
    let took = windowed(n, batch, depth, |range: Range<u64>| {
        let (client, body, topic) = (client.clone(), body.clone(), topic.clone());
        let (acked, notify) = (acked.clone(), notify.clone());
        async move {
            let end = range.end;
            for i in range {
                client
                    .publish_with_properties(
                        topic.clone(),
                        QoS::AtLeastOnce,
                        false,
                        body.clone(),
                        properties(i),
                    )
                    .await?;
            }
            // One future for the whole batch: done once every message up to its end is acked.
            Ok(vec![async move {
                loop {
                    let wait = notify.notified();
                    if acked.load(Ordering::SeqCst) >= end {
                        return anyhow::Ok(());
                    }
                    wait.await;
                }
            }])
        }
    })
    .await;
    driver.abort();
    took
}

/// The sink's properties (src/sinks/mqtt/encode.rs) for raw message `i`.
fn properties(i: u64) -> PublishProperties {
    let id = format!("{i:032x}");
    PublishProperties {
        content_type: Some("application/json".into()),
        correlation_data: Some(Bytes::from(id.clone())),
        user_properties: [
            ("event_id", id.as_str()),
            ("hook", "portal"),
            ("kind", "portal"),
            ("source", "item"),
            ("operation", "update"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    }
}

/// A v5 subscriber on `filter` in its own thread and runtime: notes when each correlation
/// data (= event_id) arrives. The receiver answers once the broker granted the subscription.
fn consume(
    filter: String,
    arrivals: Arc<Arrivals>,
) -> (
    tokio::sync::oneshot::Receiver<()>,
    std::thread::JoinHandle<Seen>,
) {
    let (ready, started) = tokio::sync::oneshot::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("subscriber runtime");
        rt.block_on(async move {
            let id = format!("hbbench-sub-{:08x}", rand::random::<u32>());
            let mut options = MqttOptions::new(id, "127.0.0.1", port());
            // poll() is never cancelled (that could drop a packet half written): a ping every
            // 5 s makes it return while nothing arrives.
            options.set_keep_alive(Duration::from_secs(5));
            let (client, mut events) = AsyncClient::new(options, 1024);
            let mut ready = Some(ready);
            let mut seen = Seen::default();
            let mut last = Instant::now();
            while arrivals.keep_going(seen.at.len(), last) {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(m))) => {
                        let now = Instant::now();
                        last = now;
                        let id = m
                            .properties
                            .as_ref()
                            .and_then(|p| p.correlation_data.as_ref())
                            .map(|c| String::from_utf8_lossy(c).into_owned());
                        if let Some(id) = id {
                            seen.record(id, now, m.payload.len());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("MQTT subscriber: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            seen
        })
    });
    (started, handle)
}
