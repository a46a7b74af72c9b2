//! Senders: who sends a hook its deliveries, and how a body becomes events. Each sender is one
//! folder behind the [`Sender`] trait and one line in `registry.rs`: ArcGIS's four webhook
//! families (`arcgis/`), Standard Webhooks, GitHub and a generic JSON sender.

pub mod arcgis;
pub mod generic;
pub mod github;
pub mod json;
mod registry;
pub mod samples;
pub mod standard_webhooks;

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::event::{Event, EventKind};
use json::RedactPath;
pub use registry::{SENDERS, by_name, kinds, templates};

/// What one kind of sender is: how its bodies are recognized, counted and parsed, how its
/// deliveries authenticate, and the samples and templates that come with it.
pub trait Sender: Sync {
    /// The name a hook's `kind` gives and its events carry (routes, templates, metric labels).
    fn name(&self) -> &'static str;

    /// The shapes `kind = "auto"` takes for this sender, in words, for the error of a body no
    /// sender recognizes; empty for a sender `auto` never picks.
    fn shapes(&self) -> &'static str;

    /// Whether `kind = "auto"` takes a body of this shape for this sender.
    fn detect(&self, _value: &Value) -> bool {
        false
    }

    /// How many events the body would make, counted before any is built (for `max_events`).
    fn count(&self, _request: &Request<'_>, _value: &Value) -> usize {
        1
    }

    /// Removes credentials the sender puts in its bodies (before anything is stored); whether
    /// anything was removed.
    fn scrub(&self, _value: &mut Value) -> bool {
        false
    }

    /// The body's events.
    fn parse(&self, request: &Request<'_>, value: &Value) -> Result<Vec<Event>, ParseError>;

    /// The ways its deliveries authenticate, for a hook that does not set `auth`.
    fn auth(&self) -> &'static [AuthWay];

    /// Whether it sends the CRC challenge (`GET ?crc_token=`) before registering a webhook.
    fn sends_crc(&self) -> bool {
        false
    }

    /// Where the `index`-th event's properties sit verbatim in the body (a JSON pointer), so
    /// that the queue stores them once; `None` when the sender builds them.
    fn properties_pointer(&self, _index: usize) -> Option<String> {
        None
    }

    /// Deliveries of each shape it sends: `check` renders every sink's templates with them.
    fn samples(&self) -> &'static [Sample];

    /// Its built-in templates (file name, text): the mail of an event of its kind.
    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

/// The mail templates of a sender that has none of its own: `templates/event.*.tera` under the
/// sender's name (`github.subject.tera`, ...), so a file of that name overrides them for it.
macro_rules! event_mail {
    ($kind:literal) => {
        &[
            (
                concat!($kind, ".subject.tera"),
                include_str!("../../../templates/event.subject.tera"),
            ),
            (
                concat!($kind, ".txt.tera"),
                include_str!("../../../templates/event.txt.tera"),
            ),
        ]
    };
}
use event_mail;

/// How a hook authenticates a delivery; a hook accepts any of the ways it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthWay {
    /// `x-esriHook-Signature`: HMAC-SHA256 of the body, as a header or a form field.
    Signature,
    /// A request header `secret` equal to one of the hook's secrets (organization webhooks).
    SecretHeader,
    /// A query parameter `secret` in the payload URL equal to one of the secrets (Survey123).
    UrlSecret,
    /// Standard Webhooks: `webhook-signature` over id, timestamp and body, the timestamp recent.
    StandardWebhooks,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC of the body>`.
    Github,
    /// An HMAC of the body in the header the hook's `hmac` table names.
    Hmac,
}

impl AuthWay {
    /// How the way is written in the config and named in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthWay::Signature => "signature",
            AuthWay::SecretHeader => "secret-header",
            AuthWay::UrlSecret => "url-secret",
            AuthWay::StandardWebhooks => "standard-webhooks",
            AuthWay::Github => "github",
            AuthWay::Hmac => "hmac",
        }
    }
}

/// What a hook expects to receive: one sender, or whichever ArcGIS family the body's shape says.
#[derive(Clone, Copy)]
pub enum HookKind {
    /// Detect the sender from the body's shape.
    Auto,
    /// This sender only.
    Sender(&'static dyn Sender),
}

impl HookKind {
    /// The kind a hook names, if a sender has that name (or it is `auto`).
    pub fn named(name: &str) -> Option<HookKind> {
        match name {
            "auto" => Some(HookKind::Auto),
            name => by_name(name).map(HookKind::Sender),
        }
    }

    /// The name, as the config writes it.
    pub fn name(&self) -> &'static str {
        match self {
            HookKind::Auto => "auto",
            HookKind::Sender(s) => s.name(),
        }
    }

    /// The ways a hook of this kind accepts when its `auth` is not set: how its sender can
    /// authenticate (every ArcGIS way for `auto`).
    pub fn auth(&self) -> &'static [AuthWay] {
        match self {
            HookKind::Auto => &[
                AuthWay::Signature,
                AuthWay::SecretHeader,
                AuthWay::UrlSecret,
            ],
            HookKind::Sender(s) => s.auth(),
        }
    }

    /// Whether the hook answers the CRC challenge: its sender sends one, or it may (`auto`).
    pub fn sends_crc(&self) -> bool {
        match self {
            HookKind::Auto => true,
            HookKind::Sender(s) => s.sends_crc(),
        }
    }

    /// Whether this is the sender of events of `kind`.
    pub fn is(&self, kind: &EventKind) -> bool {
        matches!(self, HookKind::Sender(s) if s.name() == kind.as_str())
    }
}

impl PartialEq for HookKind {
    fn eq(&self, other: &HookKind) -> bool {
        self.name() == other.name()
    }
}

impl fmt::Debug for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for HookKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<HookKind, D::Error> {
        let name = String::deserialize(d)?;
        HookKind::named(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown kind {name:?}: expected auto or one of {}",
                kinds().join(", ")
            ))
        })
    }
}

/// A sample delivery: the headers a sender reads, and the body.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Headers as name and value.
    pub headers: &'static [(&'static str, &'static str)],
    /// The body's JSON text.
    pub body: &'static str,
}

impl Sample {
    /// A sample that is a body alone.
    pub const fn body(body: &'static str) -> Sample {
        Sample { headers: &[], body }
    }
}

/// The request headers a sender may read (GitHub's event name, Standard Webhooks' message id).
pub trait Headers {
    /// The value of header `name` (any case), when it was sent once and is text.
    fn get(&self, name: &str) -> Option<&str>;
}

/// No headers: a body read outside a request (`explain`, reconciliation, tests).
impl Headers for () {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// Headers given as name and value pairs (samples, tests).
impl Headers for &[(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        lookup(self, name)
    }
}

/// Headers given as an array of name and value pairs (tests).
impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        lookup(self, name)
    }
}

/// The value of `name` among `pairs`, when it is there once.
fn lookup<'a>(pairs: &'a [(&str, &str)], name: &str) -> Option<&'a str> {
    let mut found = pairs.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
    match (found.next(), found.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

/// What a sender reads of a delivery besides its body.
pub struct Request<'a> {
    /// The hook (`/hooks/{hook}`) it came to.
    pub hook: &'a str,
    /// Its headers.
    pub headers: &'a dyn Headers,
    /// The hook's `json` paths, for the generic JSON sender.
    pub paths: Option<&'a generic::Paths>,
}

impl<'a> Request<'a> {
    /// Header `name`, which a sender of `kind` needs as an id or a name: sent once, 1 to `max`
    /// printable characters; otherwise an error naming the header (never echoing its value).
    pub fn token_header(
        &self,
        kind: &'static str,
        name: &str,
        max: usize,
    ) -> Result<&'a str, ParseError> {
        let refuse = |detail: String| ParseError::Header {
            kind,
            detail: format!("{name}: {detail}"),
        };
        let value = self
            .headers
            .get(name)
            .ok_or_else(|| refuse("missing; expected it once".into()))?;
        if value.is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(format!("expected 1 to {max} printable characters")));
        }
        Ok(value)
    }
}

/// Why a body is not a payload of the hook's kind (answered with 400). Messages name the JSON
/// path and the expected type, never a value from the body.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (or too deeply nested, or an object with a key twice).
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// JSON of the wrong shape for the hook's kind.
    #[error("not a {kind} payload: {detail}")]
    Shape {
        /// The kind expected.
        kind: &'static str,
        /// What was wrong, with the JSON path.
        detail: String,
    },
    /// A header the sender needs is missing or malformed.
    #[error("not a {kind} delivery: {detail}")]
    Header {
        /// The kind expected.
        kind: &'static str,
        /// Which header, and what was wrong with it.
        detail: String,
    },
    /// More events in one delivery than `server.max_events` (answered with 413).
    #[error("the payload holds {count} events, more than server.max_events ({max})")]
    TooManyEvents {
        /// How many it holds.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The daemon is building as many events as `server.max_inflight_events` allows (503).
    #[error(
        "{count} events cannot be taken now: the daemon is accepting as many as server.max_inflight_events allows; retry later"
    )]
    Busy {
        /// How many the payload holds.
        count: usize,
    },
    /// `kind = "auto"` and the shape is none of the known ones.
    #[error("unrecognized payload: expected {}", registry::detectable_shapes())]
    Unrecognized,
}

/// A delivery's payload made ready for the queue: its events, and the text to store (the
/// payload as received, or re-encoded when something had to be removed from it).
#[derive(Debug)]
pub struct Prepared {
    /// The events it holds, in payload order.
    pub events: Vec<Event>,
    /// The payload text to store and hand to sinks: credentials and redacted paths removed.
    pub payload: Arc<str>,
}

/// What a hook asks of a payload beyond its kind.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Paths removed before anything is stored.
    pub redact: &'a [RedactPath],
    /// Most events one payload may hold.
    pub max_events: usize,
}

impl Limits<'_> {
    /// No redaction, no cap (tools and tests).
    pub const NONE: Limits<'static> = Limits {
        redact: &[],
        max_events: usize::MAX,
    };
}

/// The one path from a payload's JSON to its events, shared by the ingress, `explain` and the
/// fuzz targets: strict JSON (no duplicate keys), the sender (the hook's, or the one the shape
/// names), its credentials and the `redact` paths removed, the event count checked against the
/// cap before any event is built, then parsed. `admit` is asked, with the count, whether that
/// many events may be built now.
pub fn prepare(
    kind: HookKind,
    request: &Request<'_>,
    json: &[u8],
    limits: Limits<'_>,
    admit: &mut dyn FnMut(usize) -> bool,
) -> Result<Prepared, ParseError> {
    let mut value = json::parse_strict(json)?;
    let sender = match kind {
        HookKind::Sender(s) => s,
        HookKind::Auto => registry::detect(&value).ok_or(ParseError::Unrecognized)?,
    };
    let mut removed = sender.scrub(&mut value);
    for path in limits.redact {
        removed |= path.remove(&mut value);
    }
    let count = sender.count(request, &value);
    if count > limits.max_events {
        return Err(ParseError::TooManyEvents {
            count,
            max: limits.max_events,
        });
    }
    if !admit(count) {
        return Err(ParseError::Busy { count });
    }
    let events = sender.parse(request, &value)?;
    let payload: Arc<str> = if removed {
        Arc::from(value.to_string())
    } else {
        Arc::from(String::from_utf8_lossy(json).as_ref())
    };
    Ok(Prepared { events, payload })
}

/// Parses a payload's JSON text for `hook` into its events (empty when it holds none), with no
/// headers, no redaction and no cap (tools and tests).
pub fn parse(kind: HookKind, hook: &str, json: &[u8]) -> Result<Vec<Event>, ParseError> {
    parse_with(kind, hook, &(), json)
}

/// [`parse`] with the request's `headers`.
pub fn parse_with(
    kind: HookKind,
    hook: &str,
    headers: &dyn Headers,
    json: &[u8],
) -> Result<Vec<Event>, ParseError> {
    let request = Request {
        hook,
        headers,
        paths: None,
    };
    prepare(kind, &request, json, Limits::NONE, &mut |_| true).map(|p| p.events)
}

/// Where the `index`-th event of kind `kind` keeps its properties verbatim in its payload (see
/// [`Sender::properties_pointer`]).
pub fn properties_pointer(kind: &EventKind, index: usize) -> Option<String> {
    by_name(kind.as_str())?.properties_pointer(index)
}
