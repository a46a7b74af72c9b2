//! `[sinks.NAME]` with `type = "http"`: the settings, their checks with key paths, what
//! `explain` shows, and building the running sink.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::{self, BodySpec, Encoder, Method, RequestSpec, TextOrSecret};
use super::headers::{self, AuthConfig};
use super::send::{ClientSpec, HttpSink, Rate};
use super::sign::{SignConfig, Signer};
use super::url_template::{UrlTemplate, display_url};
use crate::event::Event;
use crate::problem::Problem;
use crate::render::{RenderError, Renderer};
use crate::sinks::{Check, Sink, SinkError, SinkType, body_for_display};

/// `[sinks.NAME]` with `type = "http"`; its `Debug` shows no secret and no URL path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to send: a template over the event; `env:`/`file:` keep a URL that holds a token
    /// (Teams, Slack) out of the file.
    pub url: ReceiverUrl,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default)]
    pub method: Method,
    /// Extra headers: templates over the event, or `env:`/`file:` secrets sent as they are.
    #[serde(default)]
    pub headers: BTreeMap<String, TextOrSecret>,
    /// What the body holds: `event` (default), `raw`, `teams`, `slack`, or a tera template.
    #[serde(default)]
    pub body: BodySpec,
    /// The body's `Content-Type`, when the default (JSON, or text for a non-JSON template) is wrong.
    pub content_type: Option<String>,
    /// Bound on one request: connecting, sending and reading the answer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests on their way at once; 1 sends one at a time, in queue order.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// At most this many requests per second, minute or hour (`"10/s"`).
    pub rate: Option<Rate>,
    /// How hookbridge authenticates to the receiver.
    pub auth: Option<AuthConfig>,
    /// How requests are signed, so the receiver can tell they come from hookbridge.
    pub sign: Option<SignConfig>,
    /// A PEM file of private CA certificates trusted besides the system's roots.
    pub ca: Option<PathBuf>,
    /// Accepts any certificate (a test receiver only); logged as a warning at every start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_in_flight() -> usize {
    4
}

/// The most requests in flight a sink may ask for.
const MAX_IN_FLIGHT: usize = 256;

/// The receiver's URL: its `Debug` shows only scheme, host and port, since Slack, Teams and
/// many receivers put their token in the path or query.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ReceiverUrl(pub TextOrSecret);

impl std::ops::Deref for ReceiverUrl {
    type Target = TextOrSecret;
    fn deref(&self) -> &TextOrSecret {
        &self.0
    }
}

impl fmt::Debug for ReceiverUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_url(self.expose()))
    }
}

impl HttpConfig {
    /// The settings that shape each request, for the encoder.
    pub(super) fn request(&self) -> RequestSpec<'_> {
        RequestSpec {
            url: self.url.expose(),
            method: self.method,
            headers: &self.headers,
            body: &self.body,
            content_type: self.content_type.as_deref(),
            auth: self.auth.as_ref(),
            sign: self.sign.as_ref(),
        }
    }

    /// How the client reaches the receiver and paces requests, for the running sink.
    pub(super) fn client(&self) -> ClientSpec<'_> {
        ClientSpec {
            url: self.url.expose(),
            timeout: self.timeout,
            max_in_flight: self.max_in_flight,
            rate: self.rate,
            ca: self.ca.as_deref(),
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }
}

impl SinkType for HttpConfig {
    const NAME: &'static str = "http";

    fn resolve(&mut self, base: &Path) {
        self.ca = self.ca.take().map(|ca| base.join(ca));
    }

    /// Validates the settings and compiles the templates, naming each problem's key.
    fn check(&self, check: &mut Check<'_>) {
        let name = check.name;
        let (r, p) = (&mut *check.renderer, &mut *check.problems);
        let key = |k: &str| format!("sinks.{name}.{k}");
        if let Err(e) = UrlTemplate::new(&key("url"), self.url.expose()) {
            p.push(Problem::new(key("url"), e));
        }
        let before = p.len();
        r.add_inline(&key("url"), self.url.expose(), &key("url"), p);
        if self.url.is_secret() {
            // Tera quotes the template around a syntax error: not a secret URL.
            for problem in &mut p[before..] {
                problem.message = "the URL read from env:/file: is not a valid template".into();
            }
        }
        let reserved = headers::reserved_headers(self.auth.as_ref(), self.sign.as_ref());
        for (header, value) in &self.headers {
            let at = format!("sinks.{name}.headers.{header}");
            match headers::header_name(header, &reserved) {
                Err(e) => p.push(Problem::new(&at, e)),
                Ok(_) if value.is_secret() => {
                    if let Err(e) = headers::header_value(value.expose(), false) {
                        p.push(Problem::new(&at, e));
                    }
                }
                Ok(_) => r.add_inline(&at, value.expose(), &at, p),
            }
        }
        match &self.body {
            BodySpec::Event | BodySpec::Raw => {}
            BodySpec::Teams | BodySpec::Slack => {
                let (template, file) = encode::preset(&self.body);
                let before = p.len();
                r.add_file_or_builtin(template, file, &key("body"), p);
                if p.len() == before {
                    if let Err(e) = check_preset(template, r, check.samples) {
                        p.push(Problem::new(key("body"), format!("{file}: {e}")));
                    }
                }
            }
            BodySpec::Template(t) => match encode::check_template_body(t) {
                Ok(()) => r.add_inline(&key("body"), t, &key("body"), p),
                Err(e) => p.push(Problem::new(key("body"), e)),
            },
        }
        if let Some(ct) = &self.content_type {
            if let Err(e) = headers::header_value(ct, false) {
                p.push(Problem::new(key("content_type"), e));
            }
        }
        if self.timeout.is_zero() {
            p.push(Problem::new(key("timeout"), "must be longer than 0s"));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            p.push(Problem::new(
                key("max_in_flight"),
                format!(
                    "expected 1 to {MAX_IN_FLIGHT}; found {}",
                    self.max_in_flight
                ),
            ));
        }
        if let Some(auth) = &self.auth {
            if let Err((sub, e)) = headers::auth_header(auth) {
                p.push(Problem::new(key(&format!("auth{sub}")), e));
            }
        }
        if let Some(sign) = &self.sign {
            if let Err((sub, e)) = Signer::new(sign) {
                p.push(Problem::new(key(&format!("sign{sub}")), e));
            }
        }
        if let Some(ca) = &self.ca {
            if let Err(e) = super::send::read_ca(ca) {
                p.push(Problem::new(key("ca"), e));
            }
        }
    }

    /// The request that would be sent for `event`: method, URL, headers (secrets as `***`)
    /// and body, for `hookbridge explain`.
    fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let failed = |message: String| RenderError {
            name: format!("sinks.{name}"),
            message,
        };
        let encoder = Encoder::new(name, self.request(), r.clone()).map_err(failed)?;
        let request = encoder
            .render(event, payload, crate::clock::now_ms() / 1000)
            .map_err(failed)?;
        let headers: BTreeMap<&str, &str> = request
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if v.is_sensitive() {
                    "***"
                } else {
                    v.to_str().unwrap_or("(binary)")
                };
                (k.as_str(), shown)
            })
            .collect();
        let url = if self.url.is_secret() {
            display_url(request.url.as_str())
        } else {
            request.url.to_string()
        };
        Ok(json!({
            "method": request.method.as_str(),
            "url": url,
            "headers": headers,
            "body": body_for_display(&request.body),
        }))
    }

    /// The running sink: the client is built here (a CA file that cannot be read fails it);
    /// nothing connects until `connect`.
    fn build(&self, name: &str, r: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        let encoder = Encoder::new(name, self.request(), r.clone()).map_err(SinkError::Config)?;
        Ok(Arc::new(HttpSink::new(name, encoder, self.client())?))
    }
}

/// Renders a preset body with every sample event: a `teams.json.tera` or `slack.json.tera`
/// override that fails, or gives something other than JSON, is named at load instead of
/// dead-lettering every event it meets.
fn check_preset(template: &str, r: &Renderer, samples: &[(Event, String)]) -> Result<(), String> {
    for (event, payload) in samples {
        let kind = event.kind.as_str();
        let body = r
            .render_event(template, event, payload)
            .map_err(|e| format!("fails with the {kind} sample: {e}"))?;
        serde_json::from_str::<serde::de::IgnoredAny>(&body)
            .map_err(|e| format!("gives no JSON with the {kind} sample: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets_and_the_url_path() {
        let c: HttpConfig = toml::from_str(
            r#"
url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
headers = { "X-Api-Key" = "env:PATH", "X-Team" = "gis" }
auth = { bearer = "inline-token-123" }
"#,
        )
        .unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("XXXXSECRET"), "{text}");
        assert!(!text.contains("inline-token-123"), "{text}");
        assert!(!text.contains(&std::env::var("PATH").unwrap()), "{text}");
        assert!(
            text.contains("hooks.slack.com") && text.contains("gis"),
            "{text}"
        );
    }

    #[test]
    fn a_preset_override_that_gives_no_json_is_named_at_load() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("slack.json.tera"), "text: {{ id }}").unwrap();
        let text = format!(
            "templates = {:?}\n[hooks.h]\n[[routes]]\nmatch = {{}}\nto = [\"chat\"]\n[sinks.chat]\ntype = \"http\"\nurl = \"https://hooks.example.org/x\"\nbody = \"slack\"\n",
            dir.path().display().to_string()
        );
        let p = crate::config::Config::parse(std::path::Path::new("routes.toml"), &text)
            .err()
            .unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "sinks.chat.body");
        assert!(p[0].message.contains("gives no JSON"), "{p:?}");
        std::fs::write(
            dir.path().join("slack.json.tera"),
            "{\"text\": {{ id | json_encode() }}}",
        )
        .unwrap();
        assert!(crate::config::Config::parse(std::path::Path::new("routes.toml"), &text).is_ok());
    }
}
