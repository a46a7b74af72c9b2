//! From a delivery to the request: URL, method, headers (authentication and signature
//! included), body and its content type, and the settings that shape them. The checks
//! `config.rs` runs at load use the same functions, so what passes `hookbridge check` builds.

use std::collections::BTreeMap;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};

use super::headers::{
    AuthConfig, EVENT_ID_HEADER, auth_header, header_name, header_value, reserved_headers,
};
use super::sign::{SignConfig, Signer};
use super::url_template::{UrlTemplate, is_template};
use crate::event::Event;
use crate::render::Renderer;
use crate::secret::Secret;

/// A config string that is text (a template) or an `env:`/`file:` secret resolved at load;
/// its `Debug` shows a secret as `Secret(***)`.
#[derive(Clone, Debug)]
pub enum TextOrSecret {
    /// Written in the config file.
    Text(String),
    /// Read from the environment or a file; never printed.
    Secret(Secret),
}

impl TextOrSecret {
    /// The value.
    pub fn expose(&self) -> &str {
        match self {
            TextOrSecret::Text(t) => t,
            TextOrSecret::Secret(s) => s.expose(),
        }
    }

    /// Whether it came from `env:` or `file:`.
    pub fn is_secret(&self) -> bool {
        matches!(self, TextOrSecret::Secret(_))
    }
}

impl<'de> Deserialize<'de> for TextOrSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.starts_with("env:") || text.starts_with("file:") {
            return Secret::resolve(&text)
                .map(TextOrSecret::Secret)
                .map_err(serde::de::Error::custom);
        }
        Ok(TextOrSecret::Text(text))
    }
}

/// The request method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Method {
    /// The default: receivers create something per event.
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    /// For receivers that store the event under the URL.
    #[serde(rename = "PUT", alias = "put")]
    Put,
    /// For receivers that update a resource.
    #[serde(rename = "PATCH", alias = "patch")]
    Patch,
}

/// What the request body holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BodySpec {
    /// The normalized event as JSON.
    #[default]
    Event,
    /// The ArcGIS payload as received.
    Raw,
    /// A Microsoft Teams message (an Adaptive Card), built in (`teams.json.tera`).
    Teams,
    /// A Slack incoming-webhook message (`text` and `blocks`), built in (`slack.json.tera`).
    Slack,
    /// An inline tera template over the event.
    Template(String),
}

impl<'de> Deserialize<'de> for BodySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match String::deserialize(d)?.as_str() {
            "event" => BodySpec::Event,
            "raw" => BodySpec::Raw,
            "teams" => BodySpec::Teams,
            "slack" => BodySpec::Slack,
            other => BodySpec::Template(other.to_string()),
        })
    }
}

/// The settings that shape a sink's requests, borrowed from its `[sinks.NAME]` table: each field
/// is the `HttpConfig` setting of its name (the URL as text).
pub(super) struct RequestSpec<'a> {
    pub url: &'a str,
    pub method: Method,
    pub headers: &'a BTreeMap<String, TextOrSecret>,
    pub body: &'a BodySpec,
    pub content_type: Option<&'a str>,
    pub auth: Option<&'a AuthConfig>,
    pub sign: Option<&'a SignConfig>,
}

/// One request, ready to send.
#[derive(Debug)]
pub(super) struct Request {
    /// The event id: the signature's message id, and for logs.
    pub id: String,
    pub method: reqwest::Method,
    pub url: Url,
    /// Content type, event id, configured headers, authentication, signature. Secret values are
    /// marked sensitive.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// A header the encoder adds to each request.
enum HeaderPart {
    /// Rendered per event from the template of this name.
    Template(String),
    /// The same for every request (a secret, or authentication).
    Fixed(HeaderValue),
}

/// Renders a sink's deliveries into requests.
pub(super) struct Encoder {
    renderer: Renderer,
    method: reqwest::Method,
    /// Where each request goes.
    url: UrlTemplate,
    headers: Vec<(HeaderName, HeaderPart)>,
    body: BodySpec,
    /// The renderer name of the body template, for a template or a preset.
    body_template: String,
    content_type: Option<HeaderValue>,
    signer: Option<Signer>,
}

impl Encoder {
    /// The encoder for sink `name`, whose templates `renderer` holds.
    pub fn new(name: &str, c: RequestSpec<'_>, renderer: Renderer) -> Result<Self, String> {
        let reserved = reserved_headers(c.auth, c.sign);
        let mut headers = Vec::new();
        for (header, value) in c.headers {
            let at = |e: String| format!("headers.{header}: {e}");
            let header_name = header_name(header, &reserved).map_err(at)?;
            let part = match value {
                TextOrSecret::Secret(s) => {
                    HeaderPart::Fixed(header_value(s.expose(), true).map_err(at)?)
                }
                TextOrSecret::Text(_) => {
                    HeaderPart::Template(format!("sinks.{name}.headers.{header}"))
                }
            };
            headers.push((header_name, part));
        }
        if let Some(auth) = c.auth {
            let (header, value) = auth_header(auth).map_err(|(k, e)| format!("auth{k}: {e}"))?;
            headers.push((header, HeaderPart::Fixed(value)));
        }
        let url = UrlTemplate::new(&format!("sinks.{name}.url"), c.url)?;
        let body_template = match c.body {
            BodySpec::Teams | BodySpec::Slack => preset(c.body).0.to_string(),
            _ => format!("sinks.{name}.body"),
        };
        let content_type = match c.content_type {
            Some(ct) => Some(header_value(ct, false).map_err(|e| format!("content_type: {e}"))?),
            None => None,
        };
        let signer = match c.sign {
            Some(s) => Some(Signer::new(s).map_err(|(k, e)| format!("sign{k}: {e}"))?),
            None => None,
        };
        Ok(Encoder {
            renderer,
            method: match c.method {
                Method::Post => reqwest::Method::POST,
                Method::Put => reqwest::Method::PUT,
                Method::Patch => reqwest::Method::PATCH,
            },
            url,
            headers,
            body: c.body.clone(),
            body_template,
            content_type,
            signer,
        })
    }

    /// The request for one event, signed at `now_secs`; an error says why this event cannot be
    /// sent (a template fails on it, or renders something a request cannot carry).
    pub fn render(&self, event: &Event, payload: &str, now_secs: u64) -> Result<Request, String> {
        let mut request = self.unsigned(event, payload)?;
        self.sign(&mut request, now_secs)?;
        Ok(request)
    }

    /// Adds the signature headers for a request sent at `now_secs` (nothing without `sign`).
    pub fn sign(&self, request: &mut Request, now_secs: u64) -> Result<(), String> {
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers(&request.id, now_secs, &request.body)? {
                request.headers.insert(name, value);
            }
        }
        Ok(())
    }

    /// The request for one event without its signature, which is added when it goes out.
    pub fn unsigned(&self, event: &Event, payload: &str) -> Result<Request, String> {
        let url = self.url.render(&self.renderer, event, payload)?;
        let body = match &self.body {
            BodySpec::Event => serde_json::to_vec(event).map_err(|e| e.to_string())?,
            BodySpec::Raw => payload.as_bytes().to_vec(),
            _ => self
                .renderer
                .render_event(&self.body_template, event, payload)
                .map_err(|e| e.to_string())?
                .into_bytes(),
        };
        let mut headers = HeaderMap::new();
        let content_type = match &self.content_type {
            Some(ct) => ct.clone(),
            None => HeaderValue::from_static(default_content_type(&self.body, &body)),
        };
        headers.insert(CONTENT_TYPE, content_type);
        let id = header_value(&event.event_id, false)?;
        headers.insert(HeaderName::from_static(EVENT_ID_HEADER), id);
        for (name, part) in &self.headers {
            let value = match part {
                HeaderPart::Fixed(v) => v.clone(),
                HeaderPart::Template(t) => {
                    let text = self
                        .renderer
                        .render_event(t, event, payload)
                        .map_err(|e| e.to_string())?;
                    header_value(&text, false).map_err(|e| format!("header {name}: {e}"))?
                }
            };
            headers.append(name.clone(), value);
        }
        Ok(Request {
            id: event.event_id.clone(),
            method: self.method.clone(),
            url,
            headers,
            body,
        })
    }
}

/// The content type when `content_type` is not set: JSON for the event, the raw payload and the
/// presets; for a template, JSON when it rendered to JSON, else UTF-8 text.
fn default_content_type(body: &BodySpec, rendered: &[u8]) -> &'static str {
    match body {
        BodySpec::Template(_)
            if serde_json::from_slice::<serde::de::IgnoredAny>(rendered).is_err() =>
        {
            "text/plain; charset=utf-8"
        }
        _ => "application/json",
    }
}

/// The built-in template and file of a preset body.
pub(super) fn preset(body: &BodySpec) -> (&'static str, &'static str) {
    match body {
        BodySpec::Slack => ("slack.json", "slack.json.tera"),
        _ => ("teams.json", "teams.json.tera"),
    }
}

/// Refuses a body that looks like a misspelt preset name rather than a template.
pub(super) fn check_template_body(text: &str) -> Result<(), String> {
    let word = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if word && !is_template(text) {
        return Err(format!(
            "unknown body {text:?}; expected event, raw, teams, slack or a tera template"
        ));
    }
    Ok(())
}
