//! `[sinks.NAME]` with `type = "mqtt"`: the broker, the session, the topic and the QoS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::{Encoder, template_problem};
use super::send::{Broker, MqttSink, Publishing};
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::secret::Secret;
use crate::sinks::{Check, Sink, SinkError, SinkType, body_for_display, check_payload_template};

/// The MQTT sink's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:1883` or `mqtts://host:8883` (TLS); a secret (`env:`/`file:` work).
    pub url: Secret,
    /// Topic template; every level an event value renders is checked.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// `"5"` (the default) or `"3.1.1"`, for a broker that does not speak MQTT 5.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// 1 (at least once, the default) or 2 (exactly once between hookbridge and the broker).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish as retained messages.
    #[serde(default)]
    pub retain: bool,
    /// The session's client id; `hookbridge-NAME` by default. Two sinks (or daemons) on one
    /// broker need two ids.
    pub client_id: Option<String>,
    /// How long the broker keeps the session (and its in-flight messages) while disconnected.
    #[serde(default = "default_session_expiry", with = "humantime_serde")]
    pub session_expiry: Duration,
    /// How often the link is checked with a ping when idle (at least 5 s).
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// A user name, with `password`.
    pub user: Option<String>,
    /// The user's password (`env:`/`file:` work).
    pub password: Option<Secret>,
    /// A PEM file of CA certificates trusted besides the system's roots (with `mqtts://`).
    pub ca: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS, with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The PEM key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Dead-letter a message the broker had no subscriber for (v5's reason 0x10).
    #[serde(default)]
    pub require_subscribers: bool,
    /// What the message body holds.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Tera template for the body when `payload = "template"`.
    pub payload_template: Option<String>,
    /// How long a batch may wait for the broker's PUBACK (QoS 1) or PUBCOMP (QoS 2).
    #[serde(
        default = "default_timeout",
        with = "humantime_serde",
        alias = "ack_timeout"
    )]
    pub timeout: Duration,
}

fn default_topic() -> String {
    "arcgis/{{ kind }}/{{ operation }}".into()
}
fn default_protocol() -> String {
    "5".into()
}
fn default_qos() -> u8 {
    1
}
fn default_session_expiry() -> Duration {
    Duration::from_secs(3600)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SinkType for MqttConfig {
    const NAME: &'static str = "mqtt";

    fn resolve(&mut self, base: &Path) {
        for path in [&mut self.ca, &mut self.client_cert, &mut self.client_key] {
            *path = path.take().map(|p| base.join(p));
        }
    }

    fn check(&self, check: &mut Check<'_>) {
        if let Err(e) = parse_url(self.url.expose()) {
            check.problem("url", e);
        }
        check.template("topic", &self.topic);
        if let Some(problem) = template_problem(&self.topic) {
            check.problem("topic", problem);
        }
        if !matches!(self.protocol.as_str(), "5" | "3.1.1") {
            check.problem(
                "protocol",
                format!("{:?}: expected \"5\" or \"3.1.1\"", self.protocol),
            );
        } else if self.protocol == "3.1.1" && self.require_subscribers {
            check.problem(
                "require_subscribers",
                "needs MQTT 5: a 3.1.1 broker does not say whether anyone subscribed",
            );
        }
        if !matches!(self.qos, 1 | 2) {
            check.problem(
                "qos",
                format!(
                    "{} is not 1 or 2: QoS 0 is never acknowledged, so nothing could count as delivered",
                    self.qos
                ),
            );
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.starts_with(' ') || id.contains(['+', '#', '/']) {
                check.problem(
                    "client_id",
                    "expected a name without spaces, `+`, `#` or `/`",
                );
            }
        }
        if self.session_expiry.as_secs() > u64::from(u32::MAX) {
            check.problem("session_expiry", "at most 136 years (MQTT's u32 seconds)");
        }
        if self.keep_alive < Duration::from_secs(5) || self.keep_alive.as_secs() > 65_535 {
            check.problem("keep_alive", "between 5 s and 65535 s");
        }
        if self.user.is_some() != self.password.is_some() {
            check.problem("password", "user and password go together");
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            check.problem("client_key", "client_cert and client_key go together");
        }
        let tls = parse_url(self.url.expose()).is_ok_and(|b| b.tls);
        for (field, path) in [
            ("ca", &self.ca),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if let Some(path) = path {
                if !tls {
                    check.problem(field, "TLS settings need an mqtts:// url");
                } else if let Err(e) = std::fs::metadata(path) {
                    check.problem(field, format!("{}: {e}", path.display()));
                }
            }
        }
        if self.timeout.is_zero() {
            check.problem("timeout", "must be more than 0");
        }
        check_payload_template(check, self.payload, self.payload_template.as_deref());
    }

    fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let encoder = self.encoder(name, r);
        let message = encoder.render(event, payload)?;
        let properties: BTreeMap<_, _> =
            message.properties.user_properties.iter().cloned().collect();
        let mut shown = json!({
            "topic": message.topic,
            "qos": self.qos,
            "retain": self.retain,
            "content_type": message.properties.content_type,
            "correlation_data": event.event_id,
            "user_properties": properties,
            "body": body_for_display(&message.body),
        });
        if let Err(reason) = encoder.message(event, payload) {
            shown["refused"] = Value::from(reason);
        }
        Ok(shown)
    }

    /// The running sink: its session starts on `connect`.
    fn build(&self, name: &str, r: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        let broker =
            parse_url(self.url.expose()).map_err(|e| SinkError::Config(format!("url: {e}")))?;
        Ok(Arc::new(MqttSink::new(
            name,
            self.publishing(name, broker),
            self.encoder(name, r),
        )))
    }
}

impl MqttConfig {
    /// The encoder of sink `name`, whose templates `r` holds.
    fn encoder(&self, name: &str, r: &Renderer) -> Encoder {
        Encoder::new(name, self.payload, r.clone())
    }

    /// The broker, session and publishing settings of the running sink.
    fn publishing(&self, name: &str, mut broker: Broker) -> Publishing {
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            broker.login = Some((user.clone(), password.clone()));
        }
        broker.ca = self.ca.clone();
        broker.client_cert = self.client_cert.clone();
        broker.client_key = self.client_key.clone();
        Publishing {
            broker,
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| format!("hookbridge-{name}")),
            v5: self.protocol != "3.1.1",
            session_expiry: u32::try_from(self.session_expiry.as_secs()).unwrap_or(u32::MAX),
            keep_alive: self.keep_alive,
            qos: self.qos,
            retain: self.retain,
            require_subscribers: self.require_subscribers,
            timeout: self.timeout,
        }
    }
}

/// The broker of an `mqtt://` or `mqtts://` URL (credentials in it allowed).
fn parse_url(url: &str) -> Result<Broker, String> {
    let expected = "expected mqtt://host[:port] or mqtts://host[:port]";
    let (scheme, rest) = url.split_once("://").ok_or(expected)?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        _ => return Err(expected.into()),
    };
    let rest = rest.trim_end_matches('/');
    let (login, hostport) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let password = Secret::resolve(password).map_err(|_| "the URL's password is empty")?;
            (Some((user.to_string(), password)), hostport)
        }
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port"))?,
        ),
        _ => (hostport, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '?', '#']) {
        return Err(expected.into());
    }
    Ok(Broker {
        host: host.to_string(),
        port,
        tls,
        login,
        ca: None,
        client_cert: None,
        client_key: None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config from TOML lines (with `url` set unless they set it).
    pub(crate) fn config(lines: &str) -> MqttConfig {
        let text = if lines.contains("url") {
            lines.to_string()
        } else {
            format!("url = \"mqtt://127.0.0.1:1883\"\n{lines}")
        };
        toml::from_str(&text).unwrap()
    }

    /// A renderer holding `config`'s templates as sink `bus`.
    pub(crate) fn renderer(config: &MqttConfig) -> Renderer {
        let mut r = Renderer::new("templates".into());
        let problems = crate::sinks::registry::check_problems("bus", config, &mut r);
        assert!(problems.is_empty(), "{problems:?}");
        r
    }

    fn problems(lines: &str) -> Vec<String> {
        crate::sinks::registry::check_problems(
            "bus",
            &config(lines),
            &mut Renderer::new(".".into()),
        )
        .into_iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect()
    }

    #[test]
    fn settings_are_checked_naming_their_key() {
        assert!(problems("").is_empty(), "{:?}", problems(""));
        for (lines, key) in [
            ("url = \"http://x\"", "url"),
            ("topic = \"arcgis/#\"", "topic"),
            ("topic = \"a//{{ kind }}\"", "topic"),
            ("qos = 0", "qos"),
            ("protocol = \"3\"", "protocol"),
            (
                "protocol = \"3.1.1\"\nrequire_subscribers = true",
                "require_subscribers",
            ),
            ("client_id = \"a b/c\"", "client_id"),
            ("keep_alive = \"1s\"", "keep_alive"),
            ("user = \"u\"", "password"),
            ("ca = \"ca.pem\"", "ca"),
        ] {
            let p = problems(lines);
            assert!(
                p.first()
                    .is_some_and(|p| p.starts_with(&format!("sinks.bus.{key}:"))),
                "{lines}: {p:?}"
            );
        }
    }

    #[test]
    fn urls_give_the_broker() {
        let b = parse_url("mqtts://u:pw@broker.example").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("broker.example", 8883, true)
        );
        assert_eq!(
            b.login.as_ref().map(|(u, p)| (u.as_str(), p.expose())),
            Some(("u", "pw"))
        );
        let b = parse_url("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("127.0.0.1", 1884, false));
        assert!(parse_url("mqtt://h:x").is_err());
        let c = config("url = \"mqtt://u:hunter2@h\"\npassword = \"hunter3\"\nuser = \"u\"");
        let text = format!("{c:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "{text}"
        );
    }
}
