//! `[sinks.NAME]` with `type = "kafka"`: the producer's settings, checked at load.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::Encoder;
use super::errors;
use super::send::KafkaSink;
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::secret::Secret;
use crate::sinks::{
    Check, Sink, SinkError, SinkType, body_for_display, check_payload_template, event_headers,
};

/// The Kafka sink's settings.
#[derive(Clone, Deserialize)]
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
    #[serde(
        default = "default_timeout",
        with = "humantime_serde",
        alias = "send_timeout"
    )]
    pub timeout: Duration,
}

/// Written by hand so that an inline SASL password or key in `options` never reaches a log.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: BTreeMap<&str, &str> = self
            .options
            .iter()
            .map(|(k, v)| {
                let shown = if errors::is_secret_key(k) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("options", &options)
            .field("payload", &self.payload)
            .field("payload_template", &self.payload_template)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl SinkType for KafkaConfig {
    const NAME: &'static str = "kafka";

    fn check(&self, check: &mut Check<'_>) {
        if self.brokers.trim().is_empty() {
            check.problem("brokers", "is empty; expected host:port[,host:port]");
        }
        check.template("topic", &self.topic);
        if let Some(k) = &self.key {
            check.template("key", k);
        }
        check_payload_template(check, self.payload, self.payload_template.as_deref());
        // librdkafka checks property names and values when a config is built: do it at load, so
        // `hookbridge check` names a mistyped option instead of `serve` failing on it.
        match self.client_config() {
            Ok(c) => {
                if let Err(e) = c.create_native_config() {
                    let (field, message) = match &e {
                        KafkaError::ClientConfig(_, desc, key, _) => {
                            (format!("options.{key}"), desc.clone())
                        }
                        other => ("options".to_string(), other.to_string()),
                    };
                    check.problem(&field, errors::redact(&message, &c));
                }
            }
            Err(OptionError { key, message }) => check.problem(&format!("options.{key}"), message),
        }
    }

    fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let mut buf = Vec::new();
        let record = self.encoder(name, r).record(event, payload, &mut buf)?;
        let headers: BTreeMap<_, _> = event_headers(event).into_iter().collect();
        Ok(json!({
            "topic": record.topic,
            "key": record.key,
            "headers": headers,
            "value": body_for_display(record.value),
        }))
    }

    /// Builds the producer; only a setting librdkafka refuses fails here (nothing connects yet).
    fn build(&self, name: &str, r: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        let encoder = self.encoder(name, r);
        let sink = KafkaSink::new(
            name,
            self.client_config()?,
            &self.brokers,
            self.timeout,
            encoder,
        )?;
        Ok(Arc::new(sink))
    }
}

impl KafkaConfig {
    /// The encoder of sink `name`, whose templates `r` holds.
    fn encoder(&self, name: &str, r: &Renderer) -> Encoder {
        Encoder::new(name, self.key.is_some(), self.payload, r.clone())
    }

    /// The producer settings: safe defaults first, then every `options` entry, which wins.
    fn client_config(&self) -> Result<ClientConfig, OptionError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.trim())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                self.timeout
                    .as_millis()
                    .clamp(1, i32::MAX as u128)
                    .to_string(),
            )
            // A topic missing from the metadata must fail as unknown (a dead letter) before the
            // message times out, or it would pass for an outage and block the sink forever.
            .set(
                "topic.metadata.propagation.max.ms",
                (self.timeout / 2).as_millis().clamp(1, 30_000).to_string(),
            );
        for (key, spec) in &self.options {
            // `env:NAME` and `file:/path` keep SASL passwords and keys out of the config file.
            let value = if spec.starts_with("env:") || spec.starts_with("file:") {
                Secret::resolve(spec)
                    .map_err(|message| OptionError {
                        key: key.clone(),
                        message,
                    })?
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

/// An `options` value that cannot be resolved (a missing `env:` variable or `file:`).
#[derive(Debug)]
pub(super) struct OptionError {
    key: String,
    message: String,
}

impl From<OptionError> for SinkError {
    fn from(e: OptionError) -> Self {
        SinkError::Config(format!("options.{}: {}", e.key, e.message))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(options: &[(&str, &str)]) -> KafkaConfig {
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
            timeout: Duration::from_secs(10),
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
        assert_eq!(e.key, "sasl.password");
        assert!(
            e.message.contains("HOOKBRIDGE_TEST_UNSET_VARIABLE"),
            "{e:?}"
        );
    }

    #[test]
    fn debug_output_hides_secret_options() {
        let c = config(&[("sasl.password", "hunter2"), ("acks", "1")]);
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2") && text.contains("acks"), "{text}");
    }

    #[test]
    fn check_names_a_refused_option_without_its_secret() {
        let problems = |options: &[(&str, &str)]| {
            crate::sinks::registry::check_problems(
                "bus",
                &config(options),
                &mut Renderer::new(".".into()),
            )
        };
        let p = problems(&[("compression.type", "lz4")]);
        assert!(p.is_empty(), "{p:?}");
        let p = problems(&[("acks", "most")]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "sinks.bus.options.acks");
        let p = problems(&[("sasl.password", "env:HOOKBRIDGE_TEST_UNSET_VARIABLE")]);
        assert_eq!(p[0].key, "sinks.bus.options.sasl.password");
    }
}
