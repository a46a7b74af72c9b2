//! Kafka through tansu (a Kafka-compatible broker; started from PATH as tests/kafka.rs does, with
//! in-memory storage, on a free port, in a temporary directory, killed afterwards): rdkafka's
//! FutureProducer with the sink's settings, the hookbridge sink draining a backlog, and end to
//! end through a consumer reading the sink's topic.

use std::ops::Range;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::timeout;

use super::{Figures, Params, Raw, Shape, Summary, drain, end_to_end, windowed};
use crate::daemon::Daemon;
use crate::e2e::{Arrivals, Seen};
use crate::load::free_port;
use crate::report::{Report, out};

/// Where the raw producer writes.
const RAW_TOPIC: &str = "bench.raw";
/// Where the sink writes (one partition, so the consumer reads it whole).
const TOPIC: &str = "bench.events";

pub fn run(rt: &tokio::runtime::Runtime, report: &mut Report, p: &Params, summary: &mut Summary) {
    out!(report);
    out!(
        report,
        "## Kafka (tansu, in-memory storage): raw rdkafka producer vs the hookbridge sink"
    );
    out!(report);
    let found = Command::new("tansu")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        out!(
            report,
            "- skipped: tansu is not on PATH (`cargo install --locked tansu --version 0.6.0 --features dynostore`, see .ci/setup/)"
        );
        return;
    }
    let tansu = match Tansu::start() {
        Ok(t) => t,
        Err(e) => {
            out!(report, "- failed: cannot start tansu: {e:#}");
            return;
        }
    };
    let result = rt.block_on(measure(&tansu, p));
    let log = tansu.log_tail();
    drop(tansu);
    match result {
        Ok(f) => {
            out!(
                report,
                "Producer settings as the sink's (acks=all, enable.idempotence, message.timeout.ms 30 s), single-partition topics, the sink's headers; raw values 1 KiB with a 32-character key, {} messages per raw run. The end-to-end consumer polls with fetch.wait.max.ms 10.",
                p.n
            );
            out!(report);
            f.print(report, "consumed from the topic");
            f.summarize(
                report,
                summary,
                "Kafka (tansu)",
                "Kafka sink drain / raw rdkafka (tansu)",
            );
        }
        Err(e) => out!(report, "- failed: {e:#}\n\ntansu log:\n```\n{log}\n```"),
    }
}

/// A `tansu broker` child process with in-memory storage, killed on drop.
struct Tansu {
    child: Child,
    brokers: String,
    dir: tempfile::TempDir,
}

impl Tansu {
    fn start() -> anyhow::Result<Tansu> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log"))?;
        let child = Command::new("tansu")
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .current_dir(dir.path())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn tansu")?;
        let mut t = Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&t.brokers).is_err() {
            if let Ok(Some(status)) = t.child.try_wait() {
                bail!("tansu exited at start ({status}):\n{}", t.log_tail());
            }
            ensure!(
                Instant::now() < deadline,
                "tansu did not listen within 20 s:\n{}",
                t.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(t)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn measure(t: &Tansu, p: &Params) -> anyhow::Result<Figures> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &t.brokers)
        .create()?;
    let topics: Vec<_> = [RAW_TOPIC, TOPIC]
        .iter()
        .map(|name| NewTopic::new(name, 1, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let created = timeout(Duration::from_secs(30), admin.create_topics(&topics, &opts))
        .await
        .context("creating the topics took over 30 s")??;
    for r in created {
        if let Err((topic, e)) = r {
            bail!("create topic {topic}: {e}");
        }
    }

    let bus = format!(
        "type = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{TOPIC}\"\nkey = \"{{{{ id }}}}\"\n",
        t.brokers
    );
    let shape = Shape::of_sink(&bus)?;
    // The sink's producer settings (src/sinks/kafka/mod.rs, KafkaConfig::client_config).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &t.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .set("topic.metadata.propagation.max.ms", "15000")
        .create()?;
    // Warm up: the metadata and the idempotent producer id are not part of the rate.
    timeout(Duration::from_secs(30), produce(&producer, 1, 1, 1))
        .await
        .context("the warm-up message was not acknowledged within 30 s")??;
    let limit = Duration::from_secs(60 + p.n / 100);
    let mut runs = Vec::new();
    for depth in shape.raw_depths(p.windows) {
        let took = timeout(limit, produce(&producer, p.n, shape.batch, depth))
            .await
            .with_context(|| format!("raw produces did not finish within {limit:?}"))??;
        runs.push(Raw::new("raw rdkafka", p.n, shape, depth, took));
    }
    drop(producer);

    let d = Daemon::start(&bus);
    ensure!(
        d.ready(Duration::from_secs(60)).await,
        "the daemon's Kafka sink did not connect within 60 s\n{}",
        d.log_tail()
    );
    let arrivals = Arc::new(Arrivals::default());
    let (ready, consumer) = consume(t.brokers.clone(), arrivals.clone());
    match timeout(Duration::from_secs(30), ready).await {
        Ok(Ok(Ok(()))) => {}
        failed => {
            arrivals.finish(0);
            drop(consumer);
            bail!("the consumer did not start: {failed:?}");
        }
    }
    let (e2e, e2e_sink) = end_to_end(&d, p, 31, arrivals, consumer).await?;
    let mut drain = drain(&d, p, 32).await?;
    drop(d);
    // Read back rather than trust the high watermark: tansu 0.6 reports the last batch's base
    // offset as the end offset, short of the records it holds.
    let expected = e2e.accepted + drain.posted.ok as usize;
    drain.in_broker = Some(match count(&t.brokers, expected).await {
        Ok((ids, messages)) => format!(
            "{ids} distinct event ids in {messages} messages on the topic ({} from the end-to-end run + {} drained)",
            e2e.accepted, drain.posted.ok
        ),
        Err(e) => format!("the topic could not be read back ({e:#})"),
    });
    Ok(Figures {
        raw: runs,
        drain,
        e2e,
        e2e_sink,
    })
}

/// `n` messages to [`RAW_TOPIC`] in batches of `batch`, `depth` batches awaiting their
/// acknowledgements at once.
async fn produce(
    producer: &FutureProducer,
    n: u64,
    batch: u64,
    depth: usize,
) -> anyhow::Result<Duration> {
    let value = vec![b'x'; 1024];
    windowed(n, batch, depth, |range: Range<u64>| {
        let acks = range
            .map(|i| {
                let key = format!("{i:032x}");
                let record = FutureRecord::to(RAW_TOPIC)
                    .key(&key)
                    .payload(&value)
                    .headers(headers(&key));
                let ack = producer.send_result(record).map_err(|(e, _)| e)?;
                Ok(async move {
                    ack.await
                        .context("the producer dropped a message")?
                        .map_err(|(e, _)| e)?;
                    Ok(())
                })
            })
            .collect::<anyhow::Result<Vec<_>>>();
        std::future::ready(acks)
    })
    .await
}

/// The sink's headers (src/sinks/mod.rs, `event_headers`) for a raw message.
fn headers(event_id: &str) -> OwnedHeaders {
    [
        ("event_id", event_id),
        ("hook", "portal"),
        ("kind", "portal"),
        ("source", "item"),
        ("operation", "update"),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
    })
}

/// A consumer of [`TOPIC`] from its beginning, in its own thread: notes when each `event_id`
/// header arrives. The receiver answers once it has polled for a second (so the fetch position
/// is set before the first message is posted).
fn consume(
    brokers: String,
    arrivals: Arc<Arrivals>,
) -> (
    tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
    std::thread::JoinHandle<Seen>,
) {
    let (ready, started) = tokio::sync::oneshot::channel();
    let handle = std::thread::spawn(move || {
        let opened = || -> anyhow::Result<BaseConsumer> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "hookbridge-bench")
                .set("enable.auto.commit", "false")
                // Fetch as soon as something is there: the default waits up to 500 ms.
                .set("fetch.wait.max.ms", "10")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            Ok(consumer)
        };
        let consumer = match opened() {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(e));
                return Seen::default();
            }
        };
        let mut seen = Seen::default();
        let note = |m: &rdkafka::message::BorrowedMessage<'_>, seen: &mut Seen| {
            let now = Instant::now();
            let id = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "event_id"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            if let Some(id) = id {
                seen.record(id, now, m.payload().map_or(0, <[u8]>::len));
            }
            now
        };
        let warm_up = Instant::now();
        while warm_up.elapsed() < Duration::from_secs(1) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                note(&m, &mut seen);
            }
        }
        let _ = ready.send(Ok(()));
        let mut last = Instant::now();
        while arrivals.keep_going(seen.at.len(), last) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => last = note(&m, &mut seen),
                Some(Err(e)) => eprintln!("Kafka consumer: {e}"),
                None => {}
            }
        }
        seen
    });
    (started, handle)
}

/// Reads [`TOPIC`] from the beginning until `expected` distinct event ids were seen or nothing
/// arrived for 5 s: (distinct event ids, messages).
async fn count(brokers: &str, expected: usize) -> anyhow::Result<(usize, u64)> {
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "hookbridge-bench-count")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let mut ids = std::collections::HashSet::new();
        let mut messages = 0;
        let mut last = Instant::now();
        while ids.len() < expected && last.elapsed() < Duration::from_secs(5) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                last = Instant::now();
                messages += 1;
                if let Some(v) = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "event_id"))
                    .and_then(|h| h.value)
                {
                    ids.insert(v.to_vec());
                }
            }
        }
        Ok((ids.len(), messages))
    })
    .await?
}
