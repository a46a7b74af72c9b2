//! The running Kafka sink: one `FutureProducer`, a batch produced at once, then acknowledged.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::encode::{Encoder, headers};
use super::errors::{Failure, classify, config_error, outcomes, redact};
use super::logs::QuietContext;
use crate::event::Delivery;
use crate::sinks::{Outcome, Sink, SinkError};

/// Produces each delivery to its rendered topic and waits for the brokers' acknowledgement.
pub(super) struct KafkaSink {
    name: String,
    /// The `brokers` setting, for messages.
    brokers: String,
    /// The `timeout` setting; `connect` waits at most this (and at most 10 s).
    timeout: Duration,
    encoder: Encoder,
    client_config: ClientConfig,
    /// Replaced when librdkafka reports a fatal (idempotence) error: such a producer never
    /// recovers, and a new one starts a new idempotent session.
    producer: Mutex<FutureProducer<QuietContext>>,
    /// What librdkafka reports, rate-limited; told when a batch goes through.
    quiet: QuietContext,
}

impl KafkaSink {
    /// A sink producing with `client_config` to `brokers`; fails only when librdkafka refuses a
    /// setting.
    pub fn new(
        name: &str,
        client_config: ClientConfig,
        brokers: &str,
        timeout: Duration,
        encoder: Encoder,
    ) -> Result<Self, SinkError> {
        let quiet = QuietContext::new(name);
        let producer = create_producer(&client_config, &quiet)?;
        Ok(KafkaSink {
            quiet,
            name: name.to_string(),
            brokers: brokers.to_string(),
            timeout,
            encoder,
            client_config,
            producer: Mutex::new(producer),
        })
    }

    /// The current producer (a cheap handle), so a batch uses one producer throughout.
    fn producer(&self) -> FutureProducer<QuietContext> {
        match self.producer.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Starts a fresh producer after a fatal error; the old one is dropped once its sends finish.
    fn replace_producer(&self) {
        match create_producer(&self.client_config, &self.quiet) {
            Ok(p) => {
                let mut guard = match self.producer.lock() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *guard = p;
                tracing::warn!(sink = %self.name, "kafka producer hit a fatal error; started a new one");
            }
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e, "cannot restart the kafka producer")
            }
        }
    }

    /// Renders one delivery and hands it to librdkafka: its topic (for a failure's message)
    /// and the acknowledgement to await, or why it could not be produced.
    fn produce(
        &self,
        producer: &FutureProducer<QuietContext>,
        d: &Delivery,
        buf: &mut Vec<u8>,
    ) -> Result<(String, DeliveryFuture), (Failure, String)> {
        let r = self
            .encoder
            .record(&d.event, &d.payload, buf)
            .map_err(|e| (Failure::Permanent, e.to_string()))?;
        let mut record = FutureRecord::to(&r.topic)
            .payload(r.value)
            .headers(headers(&d.event));
        if let Some(key) = &r.key {
            record = record.key(key);
        }
        match producer.send_result(record).map_err(|(e, _)| e) {
            Ok(ack) => Ok((r.topic, ack)),
            Err(e) => Err((classify(&e), format!("topic {}: {e}", r.topic))),
        }
    }
}

/// A producer for `c`; an error names the refused option, never a secret's value.
fn create_producer(
    c: &ClientConfig,
    quiet: &QuietContext,
) -> Result<FutureProducer<QuietContext>, SinkError> {
    c.create_with_context::<QuietContext, FutureProducer<QuietContext>>(quiet.clone())
        .map_err(|e| SinkError::Config(redact(&config_error(&e), c)))
}

#[async_trait]
impl Sink for KafkaSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let producer = self.producer();
        let timeout = self.timeout.min(Duration::from_secs(10));
        let brokers = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|m| m.brokers().len())
        })
        .await
        .map_err(|e| SinkError::Unavailable(e.to_string()))?
        .map_err(|e| {
            SinkError::Unavailable(format!(
                "kafka brokers {} did not answer: {e}",
                self.brokers
            ))
        })?;
        tracing::debug!(sink = %self.name, brokers, "kafka cluster answered");
        self.quiet.recovered();
        Ok(())
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let producer = self.producer();
        // Every message is handed to librdkafka before any acknowledgement is awaited, so the
        // batch pipelines; librdkafka copies each one, so one buffer encodes the whole batch.
        let mut buf = Vec::new();
        let pending: Vec<_> = batch
            .iter()
            .map(|d| self.produce(&producer, d, &mut buf))
            .collect();
        // One entry per delivery: `None` when acknowledged, else why it failed.
        let mut failures = Vec::with_capacity(batch.len());
        for p in pending {
            failures.push(match p {
                Ok((topic, ack)) => match ack.await {
                    Ok(Ok(_)) => None,
                    Ok(Err((e, _))) => Some((classify(&e), format!("topic {topic}: {e}"))),
                    Err(_) => Some((
                        Failure::Transient,
                        "the kafka producer dropped the message".to_string(),
                    )),
                },
                Err(f) => Some(f),
            });
        }
        if failures
            .iter()
            .any(|f| matches!(f, Some((Failure::Fatal, _))))
        {
            self.replace_producer();
        }
        if failures.iter().any(Option::is_none) {
            self.quiet.recovered();
        }
        outcomes(failures, &self.brokers)
    }

    /// Large batches: librdkafka sends a batch in a few produce requests, and every batch in
    /// hand makes the queue's next take skip its rows, so fewer and larger batches cost less.
    fn max_batch(&self) -> usize {
        512
    }

    /// Two batches: one acknowledged while the next is produced (librdkafka pipelines and
    /// orders produce requests itself; idempotence keeps order).
    fn max_in_flight(&self) -> usize {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::render::Renderer;
    use crate::sinks::SinkType;
    use crate::sinks::kafka::KafkaConfig;
    use crate::sinks::kafka::config::tests::config;
    use rdkafka::mocking::MockCluster;
    use std::sync::Arc;

    fn delivery(seq: u64, operation: &str) -> Delivery {
        Delivery {
            seq,
            attempts: 0,
            event: Event {
                event_id: format!("{seq:032x}"),
                operation: operation.into(),
                id: format!("item{seq}"),
                accepted_at: 1,
                ..crate::event::sample(seq)
            },
            payload: Arc::from("{}"),
        }
    }

    /// A sink on `brokers` with topic `t.{{ operation }}`, its templates compiled.
    fn sink(brokers: &str, topic: &str) -> Arc<dyn Sink> {
        let c = KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            key: Some("{{ id }}".into()),
            timeout: Duration::from_millis(1500),
            ..config(&[])
        };
        let mut r = Renderer::new(".".into());
        let problems = crate::sinks::registry::check_problems("bus", &c, &mut r);
        assert!(problems.is_empty(), "{problems:?}");
        c.build("bus", &r).unwrap()
    }

    #[tokio::test]
    async fn a_batch_is_delivered_and_bad_templates_are_rejected() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t.add", 1, 1).unwrap();
        let s = sink(
            &mock.bootstrap_servers(),
            "t.{{ operation }}{{ properties.nope.deeper }}",
        );
        s.connect().await.unwrap();
        let out = s.send(&[delivery(1, "add")]).await.unwrap();
        assert!(
            matches!(&out[0], Outcome::Reject(r) if r.contains("sinks.bus.topic")),
            "{out:?}"
        );

        let s = sink(&mock.bootstrap_servers(), "t.{{ operation }}");
        let out = s
            .send(&[delivery(1, "add"), delivery(2, "add"), delivery(3, "add")])
            .await
            .unwrap();
        assert_eq!(out, vec![Outcome::Delivered; 3]);
    }

    #[tokio::test]
    async fn a_cluster_that_does_not_answer_is_unavailable_not_a_failed_attempt() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t.add", 1, 1).unwrap();
        let s = sink(&mock.bootstrap_servers(), "t.{{ operation }}");
        s.connect().await.unwrap();
        mock.broker_down(1).unwrap();
        let r = s.send(&[delivery(1, "add"), delivery(2, "add")]).await;
        assert!(matches!(r, Err(SinkError::Unavailable(_))), "{r:?}");
        mock.broker_up(1).unwrap();
        // As the dispatcher does: try again while unavailable (librdkafka reconnects with backoff).
        for _ in 0..10 {
            match s.send(&[delivery(1, "add"), delivery(2, "add")]).await {
                Ok(out) => return assert_eq!(out, vec![Outcome::Delivered; 2]),
                Err(SinkError::Unavailable(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        panic!("never delivered after the broker came back");
    }

    #[test]
    fn a_refused_setting_is_a_config_error_without_secret_values() {
        let r = Renderer::new(".".into());
        let err = |options: &[(&str, &str)]| {
            let c = config(options);
            match c.build("bus", &r) {
                Ok(_) => format!("accepted {options:?}"),
                Err(e) => e.to_string(),
            }
        };
        let e = err(&[("no.such.property", "1")]);
        assert!(e.contains("options.no.such.property"), "{e}");
        let e = err(&[("acks", "most")]);
        assert!(e.contains("options.acks"), "{e}");
        let e = err(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "hunter2"),
            ("ssl.key.pem", "hunter2"),
        ]);
        assert!(e.starts_with("invalid sink configuration"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
