//! RabbitMQ at 127.0.0.1:5672 (guest/guest; `BENCH_AMQP_URL` names another): lapin's own
//! confirmed publishes, the hookbridge sink draining a backlog, and end to end through a consumer
//! on a queue bound to the sink's exchange. The exchange and queue are named for the run and
//! deleted afterwards.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use futures::future::join_all;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::time::timeout;

use super::{Figures, Params, Raw, Shape, Summary, drain, end_to_end, windowed};
use crate::daemon::Daemon;
use crate::e2e::{Arrivals, Seen};
use crate::report::{Report, out};

/// The broker, unless `BENCH_AMQP_URL` names another.
fn url() -> String {
    std::env::var("BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The routing key the sink renders for the benchmark's portal events.
const ROUTING_KEY: &str = "item.update";

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report, p: &Params, summary: &mut Summary) {
    out!(report);
    out!(
        report,
        "## RabbitMQ: raw lapin client vs the hookbridge sink"
    );
    out!(report);
    let connected = rt.block_on(async {
        match timeout(Duration::from_secs(10), connect()).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("no answer within 10 s")),
        }
    });
    let (conn, channel) = match connected {
        Ok(c) => c,
        Err(e) => {
            out!(
                report,
                "- skipped: cannot connect to RabbitMQ at {} ({e:#})",
                url().split('@').next_back().unwrap_or_default()
            );
            return;
        }
    };
    let tag = format!("{:016x}", rand::random::<u64>());
    let exchange = format!("hookbridge-bench-{tag}");
    let queue = format!("hookbridge-bench-{tag}");
    let result = rt.block_on(measure(&channel, &exchange, &queue, p));
    rt.block_on(async {
        let _ = timeout(Duration::from_secs(30), async {
            let _ = channel
                .queue_delete(&queue, QueueDeleteOptions::default())
                .await;
            let _ = channel
                .exchange_delete(&exchange, ExchangeDeleteOptions::default())
                .await;
            let _ = conn.close(200, "benchmark done").await;
        })
        .await;
    });
    match result {
        Ok(f) => {
            out!(
                report,
                "Persistent (delivery_mode 2), mandatory messages with the sink's properties and headers, published with confirms to a durable topic exchange and routed to one durable queue; raw bodies 1 KiB, {} messages per raw run.",
                p.n
            );
            out!(report);
            f.print(report, "consumed from a bound queue");
            f.summarize(
                report,
                summary,
                "RabbitMQ",
                "RabbitMQ sink drain / raw lapin",
            );
        }
        Err(e) => out!(report, "- failed: {e:#}"),
    }
}

async fn connect() -> anyhow::Result<(Connection, Channel)> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&url(), props).await?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}

async fn measure(
    channel: &Channel,
    exchange: &str,
    queue: &str,
    p: &Params,
) -> anyhow::Result<Figures> {
    // As the sink declares it (durable topic), and a durable queue taking every key.
    channel
        .exchange_declare(
            exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue,
            exchange,
            "#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let bus = format!(
        "type = \"rabbitmq\"\nurl = \"{}\"\nexchange = \"{exchange}\"\nrouting_key = \"{{{{ source }}}}.{{{{ operation }}}}\"\n",
        url()
    );
    let shape = Shape::of_sink(&bus)?;
    let (raw_conn, raw) = connect().await?;
    raw.confirm_select(ConfirmSelectOptions::default()).await?;
    let limit = Duration::from_secs(60 + p.n / 100);
    let mut runs = Vec::new();
    for depth in shape.raw_depths(p.windows) {
        let took = timeout(limit, publish(&raw, exchange, p.n, shape.batch, depth))
            .await
            .with_context(|| format!("raw publishes did not finish within {limit:?}"))??;
        runs.push(Raw::new("raw lapin", p.n, shape, depth, took));
        channel.queue_purge(queue, Default::default()).await?;
    }
    let _ = timeout(Duration::from_secs(5), raw_conn.close(200, "raw done")).await;

    let d = Daemon::start(&bus);
    ensure!(
        d.ready(Duration::from_secs(30)).await,
        "the daemon's RabbitMQ sink did not connect within 30 s\n{}",
        d.log_tail()
    );

    let arrivals = Arc::new(Arrivals::default());
    let (ready, consumer) = consume(queue.to_string(), arrivals.clone());
    match timeout(Duration::from_secs(15), ready).await {
        Ok(Ok(Ok(()))) => {}
        failed => {
            arrivals.finish(0);
            drop(consumer);
            bail!("the consumer did not start: {failed:?}");
        }
    }
    let (e2e, e2e_sink) = end_to_end(&d, p, 21, arrivals, consumer).await?;
    let drain = drain(&d, p, 22).await?;
    let in_queue = channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    drop(d);
    let mut f = Figures {
        raw: runs,
        drain,
        e2e,
        e2e_sink,
    };
    f.drain.in_broker = Some(format!("{in_queue} messages in the bound queue"));
    Ok(f)
}

/// `n` raw publishes in batches of `batch`, `depth` batches awaiting confirms at once.
async fn publish(
    channel: &Channel,
    exchange: &str,
    n: u64,
    batch: u64,
    depth: usize,
) -> anyhow::Result<Duration> {
    let body = Arc::new(vec![b'x'; 1024]);
    let options = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    windowed(n, batch, depth, |range: Range<u64>| {
        let (channel, body) = (channel.clone(), body.clone());
        async move {
            // Every publish of the batch handed to lapin at once, as the sink does.
            let publishes = range.map(|i| {
                channel.basic_publish(exchange, ROUTING_KEY, options, &body, properties(i))
            });
            join_all(publishes)
                .await
                .into_iter()
                .map(|published| {
                    let confirm = published?;
                    Ok(async move {
                        match confirm.await? {
                            Confirmation::Ack(None) => Ok(()),
                            other => bail!("the broker did not ack a raw publish: {other:?}"),
                        }
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
        }
    })
    .await
}

/// The sink's message properties (src/sinks/rabbitmq/encoder.rs) for raw message `i`.
fn properties(i: u64) -> BasicProperties {
    let id = format!("{i:032x}");
    let mut headers = FieldTable::default();
    for (key, value) in [
        ("event_id", id.as_str()),
        ("hook", "portal"),
        ("kind", "portal"),
        ("source", "item"),
        ("operation", "update"),
    ] {
        headers.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(id))
        .with_timestamp(1_700_000_000)
        .with_app_id(ShortString::from("hookbridge"))
        .with_headers(headers)
}

/// A consumer on `queue` in its own thread and runtime (so the load generator's tasks do not
/// delay its clock): notes when each `message_id` (= event_id) arrives. The receiver answers
/// once it consumes.
fn consume(
    queue: String,
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
                let (conn, channel) = connect().await?;
                let consumer = channel
                    .basic_consume(
                        &queue,
                        "hookbridge-bench",
                        BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                anyhow::Ok((conn, consumer))
            };
            let (conn, mut consumer) = match opened.await {
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
                match timeout(Duration::from_millis(100), consumer.next()).await {
                    Ok(Some(Ok(m))) => {
                        let now = Instant::now();
                        last = now;
                        if let Some(id) = m.properties.message_id() {
                            seen.record(id.to_string(), now, m.data.len());
                        }
                    }
                    Ok(Some(Err(e))) => {
                        eprintln!("RabbitMQ consumer: {e}");
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            let _ = timeout(Duration::from_secs(5), conn.close(200, "consumed")).await;
            seen
        })
    });
    (started, handle)
}
