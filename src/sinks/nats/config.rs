//! `[sinks.NAME]` with `type = "nats"`: the server, the credentials, the subject and the stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::{Encoder, probe_subject, template_problem};
use super::send::{Auth, Connecting, NatsSink, Tls};
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::secret::Secret;
use crate::sinks::{Check, Sink, SinkError, SinkType, body_for_display, check_payload_template};

/// The NATS JetStream sink's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), `nats://host:4222` or `tls://host:4222`, comma-separated for a cluster; a
    /// secret, since a URL may hold a user and password.
    pub url: Secret,
    /// Subject template; every token an event value renders is checked.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The stream the subjects must land in: checked at start, and sent as
    /// `Nats-Expected-Stream` so a message another stream would take is refused.
    pub stream: Option<String>,
    /// A token (`env:`/`file:` work).
    pub token: Option<Secret>,
    /// A user name, with `password`.
    pub user: Option<String>,
    /// The user's password (`env:`/`file:` work).
    pub password: Option<Secret>,
    /// An NKey seed (`SU...`; `env:`/`file:` work).
    pub nkey: Option<Secret>,
    /// A credentials file's text (JWT and seed), usually `file:/path/to/user.creds`.
    pub credentials: Option<Secret>,
    /// Refuse to talk without TLS (also implied by a `tls://` URL).
    #[serde(default)]
    pub tls: bool,
    /// A PEM file of CA certificates trusted besides the system's roots.
    pub ca: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS, with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The PEM key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// What the message body holds.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Tera template for the body when `payload = "template"`.
    pub payload_template: Option<String>,
    /// How long a batch may wait for JetStream's acknowledgements.
    #[serde(
        default = "default_timeout",
        with = "humantime_serde",
        alias = "ack_timeout"
    )]
    pub timeout: Duration,
}

fn default_subject() -> String {
    "arcgis.{{ kind }}.{{ operation }}".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SinkType for NatsConfig {
    const NAME: &'static str = "nats";

    fn resolve(&mut self, base: &Path) {
        for path in [&mut self.ca, &mut self.client_cert, &mut self.client_key] {
            *path = path.take().map(|p| base.join(p));
        }
    }

    fn check(&self, check: &mut Check<'_>) {
        for url in self.url.expose().split(',') {
            let url = url.trim();
            let scheme = url.split_once("://").map(|(s, _)| s);
            if url.is_empty() || !matches!(scheme, None | Some("nats" | "tls")) {
                check.problem(
                    "url",
                    "expected nats://host:port or tls://host:port (comma-separated for several)",
                );
            }
        }
        check.template("subject", &self.subject);
        if let Some(problem) = template_problem(&self.subject) {
            check.problem("subject", problem);
        }
        if let Some(stream) = &self.stream {
            if stream.is_empty() || stream.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
                check.problem(
                    "stream",
                    format!("{stream:?} is not a stream name: no spaces, `.`, `*`, `>`, `/`"),
                );
            }
        }
        let ways = [
            self.token.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.nkey.is_some(),
            self.credentials.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            check.problem(
                "token",
                "set one way to authenticate: token, user and password, nkey, or credentials",
            );
        }
        if self.user.is_some() != self.password.is_some() {
            check.problem("password", "user and password go together");
        }
        if let Some(seed) = &self.nkey {
            if !seed.expose().starts_with("SU") {
                check.problem("nkey", "expected a user NKey seed (it starts with SU)");
            }
        }
        if let Some(creds) = &self.credentials {
            if !creds.expose().contains("BEGIN NATS USER JWT") {
                check.problem(
                    "credentials",
                    "expected a credentials file's text (file:/path/to/user.creds)",
                );
            }
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            check.problem("client_key", "client_cert and client_key go together");
        }
        for (field, path) in [
            ("ca", &self.ca),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ] {
            if let Some(path) = path {
                if let Err(e) = std::fs::metadata(path) {
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
        let headers: BTreeMap<String, String> = message
            .headers
            .iter()
            .map(|(k, v)| {
                let values: Vec<&str> = v.iter().map(|v| v.as_str()).collect();
                (k.to_string(), values.join(", "))
            })
            .collect();
        let mut shown = json!({
            "subject": message.subject,
            "stream": self.stream,
            "headers": headers,
            "body": body_for_display(&message.body),
        });
        if let Err(reason) = encoder.message(event, payload) {
            shown["refused"] = Value::from(reason);
        }
        Ok(shown)
    }

    /// The running sink: it connects on `connect` and publishes awaiting JetStream's acks.
    fn build(&self, name: &str, r: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        Ok(Arc::new(NatsSink::new(
            name,
            self.connecting(name),
            self.encoder(name, r),
        )))
    }
}

impl NatsConfig {
    /// The encoder of sink `name`, whose templates `r` holds.
    fn encoder(&self, name: &str, r: &Renderer) -> Encoder {
        Encoder::new(name, self.payload, self.stream.clone(), r.clone())
    }

    /// How the running sink connects and what it checks once connected.
    fn connecting(&self, name: &str) -> Connecting {
        let auth = match (
            &self.token,
            &self.user,
            &self.password,
            &self.nkey,
            &self.credentials,
        ) {
            (Some(token), ..) => Auth::Token(token.clone()),
            (_, Some(user), Some(password), ..) => {
                Auth::UserPassword(user.clone(), password.clone())
            }
            (.., Some(seed), _) => Auth::NKey(seed.clone()),
            (.., Some(creds)) => Auth::Credentials(creds.clone()),
            _ => Auth::None,
        };
        Connecting {
            url: self.url.clone(),
            auth,
            tls: Tls {
                required: self.tls,
                ca: self.ca.clone(),
                client_cert: self.client_cert.clone(),
                client_key: self.client_key.clone(),
            },
            stream: self.stream.clone(),
            subject_key: format!("sinks.{name}.subject"),
            probe: probe_subject(&self.subject),
            timeout: self.timeout,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config from TOML lines (with `url` set unless they set it).
    pub(crate) fn config(lines: &str) -> NatsConfig {
        let text = if lines.contains("url") {
            lines.to_string()
        } else {
            format!("url = \"nats://127.0.0.1:4222\"\n{lines}")
        };
        toml::from_str(&text).unwrap()
    }

    /// A renderer holding `config`'s templates as sink `bus`.
    pub(crate) fn renderer(config: &NatsConfig) -> Renderer {
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
        let p = problems("url = \"amqp://x\"");
        assert!(p[0].starts_with("sinks.bus.url:"), "{p:?}");
        let p = problems("subject = \"arcgis.>\"");
        assert!(p[0].starts_with("sinks.bus.subject:"), "{p:?}");
        let p = problems("subject = \"arcgis..{{ kind }}\"");
        assert!(p[0].contains("empty token"), "{p:?}");
        let p = problems("stream = \"a.b\"");
        assert!(p[0].starts_with("sinks.bus.stream:"), "{p:?}");
        let p = problems("token = \"t\"\nuser = \"u\"\npassword = \"p\"");
        assert!(p[0].contains("one way"), "{p:?}");
        let p = problems("user = \"u\"");
        assert!(p[0].starts_with("sinks.bus.password:"), "{p:?}");
        let p = problems("nkey = \"hunter2\"");
        assert!(
            p[0].starts_with("sinks.bus.nkey:") && !p[0].contains("hunter2"),
            "{p:?}"
        );
        let p = problems("ca = \"/nonexistent/ca.pem\"");
        assert!(p[0].starts_with("sinks.bus.ca:"), "{p:?}");
    }

    #[test]
    fn debug_output_hides_credentials() {
        let c =
            config("url = \"nats://u:pw1@127.0.0.1:4222\"\ntoken = \"tok2\"\nnkey = \"SUseed3\"");
        let text = format!("{c:?}");
        for secret in ["pw1", "tok2", "SUseed3"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn explain_shows_subject_headers_and_refusals() {
        let c = config("stream = \"ARCGIS\"");
        let r = renderer(&c);
        let event = Event {
            operation: "bad op".into(),
            ..crate::event::sample(1)
        };
        let shown = c
            .preview("bus", &r, &crate::event::sample(1), "{}")
            .unwrap();
        assert_eq!(
            shown["headers"]["Nats-Msg-Id"],
            crate::event::sample(1).event_id
        );
        assert_eq!(shown["headers"]["Nats-Expected-Stream"], "ARCGIS");
        assert!(shown.get("refused").is_none(), "{shown}");
        let shown = c.preview("bus", &r, &event, "{}").unwrap();
        assert!(
            shown["refused"].as_str().unwrap().contains("space"),
            "{shown}"
        );
    }
}
