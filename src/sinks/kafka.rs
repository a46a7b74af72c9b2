//! Kafka sink (rdkafka): topic and key from templates, acknowledged by the brokers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Deserialize;

use serde_json::{Value, json};

use super::{
    Delivery, Outcome, Sink, SinkError, body_for_display, event_headers, payload_template_name,
    register_payload_template,
};
use crate::config::{Problem, Secret};
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};

/// `[sinks.NAME]` with `type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// Topic template, e.g. `arcgis.{{ kind }}.{{ operation }}`.
    pub topic: String,
    /// Message key template; no key when absent.
    pub key: Option<String>,
    /// Any librdkafka producer property (SASL, TLS, compression); a value may be `env:NAME` or
    /// `file:/path` to keep a secret out of the file.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// What the message value holds.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Tera template for the value when `payload = "template"`.
    pub payload_template: Option<String>,
    /// How long a send may wait for the brokers' acknowledgement.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub send_timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl KafkaConfig {
    pub(super) fn register_templates(&self, name: &str, r: &mut Renderer, p: &mut Vec<Problem>) {
        if self.brokers.trim().is_empty() {
            p.push(Problem::new(
                format!("sinks.{name}.brokers"),
                "is empty; expected host:port[,host:port]",
            ));
        }
        r.add_inline(
            &format!("sinks.{name}.topic"),
            &self.topic,
            &format!("sinks.{name}.topic"),
            p,
        );
        if let Some(k) = &self.key {
            r.add_inline(
                &format!("sinks.{name}.key"),
                k,
                &format!("sinks.{name}.key"),
                p,
            );
        }
        register_payload_template(name, self.payload, self.payload_template.as_deref(), r, p);
    }

    pub(super) fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let topic = r.render_event(&format!("sinks.{name}.topic"), event, payload)?;
        let key = match &self.key {
            Some(_) => Some(r.render_event(&format!("sinks.{name}.key"), event, payload)?),
            None => None,
        };
        let value = r.encode(self.payload, &payload_template_name(name), event, payload)?;
        let headers: BTreeMap<_, _> = event_headers(event).into_iter().collect();
        Ok(
            json!({ "topic": topic, "key": key, "headers": headers, "value": body_for_display(&value) }),
        )
    }

    /// Builds the producer; only a setting librdkafka refuses fails here (nothing connects yet).
    pub(super) fn build(
        &self,
        name: &str,
        r: &Renderer,
    ) -> Result<Option<Arc<dyn Sink>>, SinkError> {
        Ok(Some(Arc::new(KafkaSink::new(
            name,
            self.clone(),
            r.clone(),
        )?)))
    }

    /// The producer settings: safe defaults first, then every `options` entry, which wins.
    fn client_config(&self) -> Result<ClientConfig, SinkError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.trim())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                self.send_timeout
                    .as_millis()
                    .clamp(1, i32::MAX as u128)
                    .to_string(),
            )
            // A topic missing from the metadata must fail as unknown (a dead letter) before the
            // message times out, or it would pass for an outage and block the sink forever.
            .set(
                "topic.metadata.propagation.max.ms",
                (self.send_timeout / 2)
                    .as_millis()
                    .clamp(1, 30_000)
                    .to_string(),
            );
        for (key, spec) in &self.options {
            // `env:NAME` and `file:/path` keep SASL passwords and keys out of the config file.
            let value = if spec.starts_with("env:") || spec.starts_with("file:") {
                Secret::resolve(spec)
                    .map_err(|e| SinkError::Config(format!("options.{key}: {e}")))?
                    .expose()
                    .to_string()
            } else {
                spec.clone()
            };
            c.set(key, value);
        }
        Ok(c)
    }
}

/// Produces each delivery to its rendered topic and waits for the brokers' acknowledgement.
pub struct KafkaSink {
    name: String,
    config: KafkaConfig,
    renderer: Renderer,
    client_config: ClientConfig,
    /// Replaced when librdkafka reports a fatal (idempotence) error: such a producer never
    /// recovers, and a new one starts a new idempotent session.
    producer: Mutex<FutureProducer>,
}

impl KafkaSink {
    /// A sink for `config`; fails only when librdkafka refuses a setting.
    pub fn new(name: &str, config: KafkaConfig, renderer: Renderer) -> Result<Self, SinkError> {
        let client_config = config.client_config()?;
        let producer = create_producer(&client_config)?;
        Ok(KafkaSink {
            name: name.to_string(),
            config,
            renderer,
            client_config,
            producer: Mutex::new(producer),
        })
    }

    fn producer(&self) -> FutureProducer {
        match self.producer.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Starts a fresh producer after a fatal error; the old one is dropped once its sends finish.
    fn replace_producer(&self) {
        match create_producer(&self.client_config) {
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

    /// The topic, key and value for one delivery.
    fn render(&self, d: &Delivery) -> Result<Rendered, RenderError> {
        let topic = self.renderer.render_event(
            &format!("sinks.{}.topic", self.name),
            &d.event,
            &d.payload,
        )?;
        let key = match &self.config.key {
            Some(_) => Some(self.renderer.render_event(
                &format!("sinks.{}.key", self.name),
                &d.event,
                &d.payload,
            )?),
            None => None,
        };
        let value = self.renderer.encode(
            self.config.payload,
            &payload_template_name(&self.name),
            &d.event,
            &d.payload,
        )?;
        Ok(Rendered { topic, key, value })
    }
}

/// One delivery, ready to produce.
struct Rendered {
    topic: String,
    key: Option<String>,
    value: Vec<u8>,
}

fn create_producer(c: &ClientConfig) -> Result<FutureProducer, SinkError> {
    c.create::<FutureProducer>()
        .map_err(|e| SinkError::Config(redact(&config_error(&e), c)))
}

/// librdkafka's complaint about a setting, named by its key under `options`.
fn config_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, _) => format!("options.{key}: {desc}"),
        other => format!("cannot create the kafka producer: {other}"),
    }
}

/// `text` with the value of every secret-looking setting blanked out, since librdkafka's
/// messages may quote the value they refused.
fn redact(text: &str, c: &ClientConfig) -> String {
    c.config_map()
        .into_keys()
        .filter(|key| is_secret_key(key))
        .filter_map(|key| c.get(key).filter(|v| !v.is_empty()))
        .fold(text.to_string(), |t, value| t.replace(value, "***"))
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key",
        "token",
        "jaas",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// How a failed send should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The brokers refused this message for good: dead-letter it.
    Permanent,
    /// Worth another attempt later.
    Transient,
    /// The cluster did not answer in time: when a whole batch fails so, the sink is down.
    Outage,
    /// The producer cannot go on; it is replaced and the message retried.
    Fatal,
}

fn classify(e: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::InvalidRecord
            | C::PolicyViolation
            | C::InvalidTimestamp
            | C::UnsupportedForMessageFormat
            | C::InvalidRequiredAcks
            | C::BadMessage
            | C::InvalidArgument
            | C::KeySerialization
            | C::ValueSerialization,
        ) => Failure::Permanent,
        Some(
            C::MessageTimedOut
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::Resolve
            | C::NetworkException
            | C::SSL
            | C::Authentication
            | C::SaslAuthenticationFailed,
        ) => Failure::Outage,
        Some(C::Fatal | C::Fenced | C::OutOfOrderSequenceNumber | C::InvalidProducerEpoch) => {
            Failure::Fatal
        }
        _ => Failure::Transient,
    }
}

fn headers(event: &Event) -> OwnedHeaders {
    event_headers(event)
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}

#[async_trait]
impl Sink for KafkaSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let producer = self.producer();
        let timeout = self.config.send_timeout.min(Duration::from_secs(10));
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
                self.config.brokers
            ))
        })?;
        tracing::debug!(sink = %self.name, brokers, "kafka cluster answered");
        Ok(())
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let producer = self.producer();
        // Enqueue everything first so the batch pipelines, then collect the acknowledgements.
        let mut pending = Vec::with_capacity(batch.len());
        for d in batch {
            let r = match self.render(d) {
                Ok(r) => r,
                Err(e) => {
                    pending.push(Err((Failure::Permanent, e.to_string())));
                    continue;
                }
            };
            let mut record = FutureRecord::to(&r.topic)
                .payload(&r.value)
                .headers(headers(&d.event));
            if let Some(key) = &r.key {
                record = record.key(key);
            }
            pending.push(match producer.send_result(record) {
                Ok(ack) => Ok((r.topic.clone(), ack)),
                Err((e, _)) => Err((classify(&e), format!("topic {}: {e}", r.topic))),
            });
        }
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
        if !failures.is_empty()
            && failures
                .iter()
                .all(|f| matches!(f, Some((Failure::Outage, _))))
        {
            let reason = failures
                .iter()
                .flatten()
                .map(|(_, r)| r.as_str())
                .next()
                .unwrap_or_default();
            return Err(SinkError::Unavailable(format!(
                "kafka brokers {} unavailable: {reason}",
                self.config.brokers
            )));
        }
        Ok(failures
            .into_iter()
            .map(|f| match f {
                None => Outcome::Delivered,
                Some((Failure::Permanent, reason)) => Outcome::Reject(reason),
                Some((_, reason)) => Outcome::Retry(reason),
            })
            .collect())
    }

    fn max_batch(&self) -> usize {
        256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use rdkafka::mocking::MockCluster;

    fn delivery(seq: u64, operation: &str) -> Delivery {
        Delivery {
            seq,
            attempts: 0,
            event: Event {
                event_id: format!("{seq:032x}"),
                kind: EventKind::Portal,
                source: "item".into(),
                operation: operation.into(),
                id: format!("item{seq}"),
                webhook: None,
                user: None,
                when: None,
                portal: None,
                properties: Default::default(),
                hook: "h".into(),
                accepted_at: 1,
            },
            payload: Arc::from("{}"),
        }
    }

    /// A sink on `brokers` with topic `t.{{ operation }}`, its templates compiled.
    fn sink(brokers: &str, topic: &str) -> KafkaSink {
        let c = KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            key: Some("{{ id }}".into()),
            send_timeout: Duration::from_millis(1500),
            ..config(&[])
        };
        let mut r = Renderer::new(".".into());
        let mut problems = Vec::new();
        c.register_templates("bus", &mut r, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        KafkaSink::new("bus", c, r).unwrap()
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
        let out = s
            .send(&[delivery(1, "add"), delivery(2, "add")])
            .await
            .unwrap();
        assert_eq!(out, vec![Outcome::Delivered; 2]);
    }

    fn config(options: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            topic: "t".into(),
            key: None,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            payload: PayloadFormat::Event,
            payload_template: None,
            send_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn safe_defaults_and_options_override_them() {
        let c = config(&[]).client_config().unwrap();
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("message.timeout.ms"), Some("10000"));
        assert_eq!(c.get("topic.metadata.propagation.max.ms"), Some("5000"));
        let c = config(&[("acks", "1"), ("compression.type", "zstd")])
            .client_config()
            .unwrap();
        assert_eq!(c.get("acks"), Some("1"));
        assert_eq!(c.get("compression.type"), Some("zstd"));
    }

    #[test]
    fn option_values_can_be_secrets_from_the_environment() {
        let c = config(&[("sasl.password", "env:PATH")])
            .client_config()
            .unwrap();
        assert_eq!(
            c.get("sasl.password"),
            std::env::var("PATH").ok().as_deref()
        );
        let e = config(&[("sasl.password", "env:HOOKBRIDGE_TEST_UNSET_VARIABLE")])
            .client_config()
            .err()
            .unwrap();
        assert!(e.to_string().contains("options.sasl.password"), "{e}");
    }

    #[test]
    fn a_refused_setting_is_a_config_error_without_secret_values() {
        let r = Renderer::new(".".into());
        let err = |options: &[(&str, &str)]| match KafkaSink::new("bus", config(options), r.clone())
        {
            Ok(_) => format!("accepted {options:?}"),
            Err(e) => e.to_string(),
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

    #[test]
    fn secrets_are_blanked_out_of_messages() {
        let mut c = ClientConfig::new();
        c.set("sasl.password", "hunter2").set("acks", "all");
        assert_eq!(
            redact("bad sasl.password hunter2 with acks all", &c),
            "bad sasl.password *** with acks all"
        );
    }

    #[test]
    fn broker_errors_are_classified() {
        let p = |c| classify(&KafkaError::MessageProduction(c));
        assert_eq!(p(RDKafkaErrorCode::MessageSizeTooLarge), Failure::Permanent);
        assert_eq!(
            p(RDKafkaErrorCode::UnknownTopicOrPartition),
            Failure::Permanent
        );
        assert_eq!(
            p(RDKafkaErrorCode::TopicAuthorizationFailed),
            Failure::Permanent
        );
        assert_eq!(p(RDKafkaErrorCode::MessageTimedOut), Failure::Outage);
        assert_eq!(p(RDKafkaErrorCode::AllBrokersDown), Failure::Outage);
        assert_eq!(p(RDKafkaErrorCode::NotEnoughReplicas), Failure::Transient);
        assert_eq!(p(RDKafkaErrorCode::QueueFull), Failure::Transient);
        assert_eq!(p(RDKafkaErrorCode::Fatal), Failure::Fatal);
    }
}
