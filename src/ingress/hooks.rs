//! `/hooks/{hook}`: deliveries in (POST) and URL checks (HEAD); the CRC `GET` is `crc.rs`.
//!
//! A POST goes down the data flow: size → content type → body → signature → parse → route →
//! durable accept, and only then the 2xx.

use std::collections::HashSet;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde_json::json;

use crate::body::{self, BodyEncoding, ContentTypeError, DecodedBody, FormError};
use crate::config::{Config, HookConfig};
use crate::event::EventKind;
use crate::metrics::METRICS;
use crate::queue::{AcceptOutcome, RoutedEvent};
use crate::senders::{self, Headers, ParseError};
use crate::signature::{github, standard_webhooks};
use crate::state::{AppState, budget};
use crate::verify::{
    self, Credentials, Policy, Presented, SECRET_HEADER, SIGNATURE_HEADER, VerifyError,
};

/// Why a delivery was refused; each maps to one status code and one metric label.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// No such hook is configured (the name is not echoed: it comes from the request).
    #[error("no hook of that name is configured")]
    UnknownHook,
    /// The body did not arrive within `server.read_timeout`.
    #[error("the body did not arrive within {0:?}")]
    Timeout(std::time::Duration),
    /// Body over `server.max_body`.
    #[error("body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// Content type refused.
    #[error(transparent)]
    ContentType(#[from] ContentTypeError),
    /// The body could not be read to its end.
    #[error("body could not be read: {0}")]
    Body(String),
    /// A form body without a usable `payload` field.
    #[error(transparent)]
    Form(#[from] FormError),
    /// Not authenticated the way the hook requires.
    #[error(transparent)]
    Auth(#[from] VerifyError),
    /// Not a payload of the hook's kind.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The queue cannot take it now; ArcGIS will retry.
    #[error("cannot store the delivery now ({0}); retry later")]
    Unavailable(String),
    /// The ingress is taking as many bytes or events as its budget allows (503, `Retry-After`).
    #[error("too much is being accepted at once ({0}); retry later")]
    Busy(&'static str),
    /// The hook is configured with `webhook = false`: its events come from reconciliation.
    #[error("this hook takes no webhook deliveries (webhook = false: it is reconciled only)")]
    NoWebhook,
}

/// The `Retry-After` of a 503 for a spent budget, in seconds.
const BUSY_RETRY_AFTER: &str = "1";

/// Longest `message` in an error answer: enough to name a path and a type, never a whole value.
const MAX_MESSAGE: usize = 512;

impl IngressError {
    fn status(&self) -> StatusCode {
        match self {
            IngressError::UnknownHook => StatusCode::NOT_FOUND,
            IngressError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            IngressError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngressError::Parse(ParseError::TooManyEvents { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::Parse(ParseError::Busy { .. })
            | IngressError::Unavailable(_)
            | IngressError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::Body(_) | IngressError::Form(_) | IngressError::Parse(_) => {
                StatusCode::BAD_REQUEST
            }
            IngressError::Auth(_) => StatusCode::UNAUTHORIZED,
            IngressError::NoWebhook => StatusCode::FORBIDDEN,
        }
    }

    /// The `outcome` label of `hookbridge_requests_total` and the `error` field of the answer.
    pub fn label(&self) -> &'static str {
        match self {
            IngressError::UnknownHook => "unknown_hook",
            IngressError::TooLarge(_) => "too_large",
            IngressError::Timeout(_) => "timeout",
            IngressError::ContentType(_) => "unsupported_media_type",
            IngressError::Body(_) => "bad_body",
            IngressError::Auth(VerifyError::Missing(_)) => "auth_missing",
            IngressError::Auth(VerifyError::SecretMismatch(_) | VerifyError::Ambiguous(_)) => {
                "secret_invalid"
            }
            IngressError::Auth(_) => "signature_invalid",
            IngressError::Parse(ParseError::TooManyEvents { .. }) => "too_many_events",
            IngressError::Parse(ParseError::Busy { .. }) | IngressError::Busy(_) => "busy",
            IngressError::Form(_) | IngressError::Parse(_) => "bad_payload",
            IngressError::Unavailable(_) => "unavailable",
            IngressError::NoWebhook => "no_webhook",
        }
    }

    /// The message for answers and logs: control characters escaped (no forged log lines), cut
    /// at `MAX_MESSAGE` characters.
    fn message(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.to_string().chars().enumerate() {
            if i == MAX_MESSAGE {
                out.push('…');
                break;
            }
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        out
    }

    pub(super) fn response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status());
        if matches!(
            self,
            IngressError::Busy(_) | IngressError::Parse(ParseError::Busy { .. })
        ) {
            r.insert_header((actix_web::http::header::RETRY_AFTER, BUSY_RETRY_AFTER));
        }
        r.json(json!({
            "error": self.label(),
            "message": self.message(),
        }))
    }
}

/// The configured hook a path names. A name outside `[A-Za-z0-9_-]{1,64}` is refused before the
/// lookup, so a hostile name never reaches a log line or an answer.
pub(super) fn find_hook<'c>(config: &'c Config, name: &str) -> Option<&'c HookConfig> {
    crate::config::valid_name(name)
        .then(|| config.hooks.get(name))
        .flatten()
}

/// For a request that sent `Expect: 100-continue`: the 413 its body would get when the length it
/// announced is over `server.max_body` (counted and logged as [`receive`] would), so the client
/// is never told to send it; `None` lets it go on.
pub fn refuse_before_body(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    max_body: u64,
) -> Option<HttpResponse> {
    declared_length(headers).filter(|n| *n > max_body)?;
    let error = IngressError::TooLarge(max_body);
    let config = state.config();
    let label = path
        .strip_prefix("/hooks/")
        .and_then(|name| find_hook(&config, name).map(|_| name))
        .unwrap_or("(unknown)");
    Some(refused(state, label, &error, " before its body was sent"))
}

/// A refusal counted, logged and answered; `when` says at which step, for the log.
fn refused(state: &AppState, label: &str, error: &IngressError, when: &str) -> HttpResponse {
    METRICS
        .requests
        .with_label_values(&[label, error.label()])
        .inc();
    state.traffic.record(label, error.label());
    tracing::info!(
        hook = label,
        status = error.status().as_u16(),
        reason = error.label(),
        "delivery refused{when}: {}",
        error.message()
    );
    error.response()
}

/// `POST /hooks/{hook}`.
pub async fn receive(
    req: HttpRequest,
    hook: web::Path<String>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let name = hook.into_inner();
    // One snapshot for the whole request: a reload in between must not mix two configs.
    let config = state.config();
    let found = find_hook(&config, &name);
    let label = if found.is_some() {
        name.as_str()
    } else {
        "(unknown)"
    };
    let result = match found {
        None => Err(IngressError::UnknownHook),
        Some(h) => accept(&req, &name, h, &config, body, &state).await,
    };
    let response = match result {
        Ok(outcome) => {
            let duplicate = outcome.accepted.is_empty() && !outcome.duplicates.is_empty();
            let counted = if duplicate { "duplicate" } else { "accepted" };
            METRICS.requests.with_label_values(&[label, counted]).inc();
            state.traffic.record(label, counted);
            let mut r = HttpResponse::Ok();
            if duplicate {
                r.insert_header(("x-hookbridge-duplicate", "true"));
            }
            r.json(outcome)
        }
        Err(e) => refused(&state, label, &e, ""),
    };
    METRICS
        .request_seconds
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn accept(
    req: &HttpRequest,
    name: &str,
    hook: &HookConfig,
    config: &Config,
    payload: web::Payload,
    state: &AppState,
) -> Result<AcceptOutcome, IngressError> {
    if !state.is_accepting() {
        return Err(IngressError::Unavailable("shutting down".into()));
    }
    if !hook.webhook {
        return Err(IngressError::NoWebhook);
    }
    // What the request takes of the budget goes back when `held` drops, with the answer.
    let mut held = budget::Held::default();
    let held = &mut held;
    let (encoding, raw) = read_delivery(req, config, payload, state, held).await?;
    let decoded = body::decode(encoding, &raw);
    authenticate(req, hook, &raw, decoded.as_ref().ok())?;
    let decoded = decoded?;
    let headers = RequestHeaders(req.headers());
    let prepared = config.prepare(name, hook, &headers, &decoded.json, &mut |n| {
        state.budget.take_events(held, n)
    })?;
    if prepared.events.is_empty() {
        return Ok(AcceptOutcome::default());
    }
    let watch = state.watch().filter(|w| w.covers(name));
    let delivered = match watch {
        Some(_) => prepared.events.clone(),
        None => Vec::new(),
    };
    let routed = route(prepared.events, config);
    let kinds: Vec<(EventKind, bool, String)> = routed
        .iter()
        .map(|r| {
            (
                r.event.kind.clone(),
                r.sinks.is_empty(),
                r.event.event_id.clone(),
            )
        })
        .collect();
    let outcome = state
        .queue
        .accept(prepared.payload, routed)
        .await
        .map_err(|e| IngressError::Unavailable(e.to_string()))?;
    count(name, kinds, &outcome);
    if let Some(w) = watch {
        w.delivered(&state.queue, name, &delivered);
    }
    Ok(outcome)
}

/// The body's encoding (from its content type) and the body itself, read within
/// `server.read_timeout` and `server.max_body`; an empty body is refused.
async fn read_delivery(
    req: &HttpRequest,
    config: &Config,
    mut payload: web::Payload,
    state: &AppState,
    held: &mut budget::Held,
) -> Result<(BodyEncoding, web::BytesMut), IngressError> {
    let limit = config.server.max_body.as_u64();
    let declared = declared_length(req.headers());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngressError::TooLarge(limit));
    }
    if let Some(n) = declared {
        if !state.budget.take_bytes(held, n) {
            return Err(IngressError::Busy("server.max_inflight_bytes"));
        }
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let encoding = BodyEncoding::from_content_type(content_type)?;
    let read_timeout = config.server.read_timeout;
    let budget = (declared.is_none()).then_some((&state.budget, held));
    let raw = tokio::time::timeout(
        read_timeout,
        read_body(&mut payload, declared, limit, budget),
    )
    .await
    .map_err(|_| IngressError::Timeout(read_timeout))??;
    if raw.is_empty() {
        return Err(IngressError::Body("the body is empty".into()));
    }
    Ok((encoding, raw))
}

/// Each event with the sinks its routes send it to, and where its properties sit in the payload.
fn route(events: Vec<crate::event::Event>, config: &Config) -> Vec<RoutedEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| RoutedEvent {
            sinks: config.routes.sinks_for(&event),
            properties_at: senders::properties_pointer(&event.kind, i),
            event,
        })
        .collect()
}

/// Counts what the queue stored (per kind), what matched no route, and the duplicates.
fn count(name: &str, kinds: Vec<(EventKind, bool, String)>, outcome: &AcceptOutcome) {
    let stored: HashSet<&str> = outcome.accepted.iter().map(String::as_str).collect();
    for (kind, unrouted, id) in kinds {
        if !stored.contains(id.as_str()) {
            continue;
        }
        METRICS
            .events_accepted
            .with_label_values(&[name, kind.as_str()])
            .inc();
        if unrouted {
            METRICS.events_unrouted.with_label_values(&[name]).inc();
            tracing::warn!(hook = name, event_id = %id, "event matched no route; it is recorded but goes nowhere");
        }
    }
    METRICS
        .events_duplicate
        .with_label_values(&[name])
        .inc_by(outcome.duplicates.len() as u64);
}

/// A request's headers as a sender reads them: a header sent more than once, or not as text,
/// reads as absent.
struct RequestHeaders<'a>(&'a HeaderMap);

impl Headers for RequestHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let mut values = self.0.get_all(name);
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    }
}

/// Checks the delivery's credentials against the hook: the signature (header, else form field),
/// the `secret` header, and the URL's `secret` parameter, as the hook's `auth` allows.
fn authenticate(
    req: &HttpRequest,
    hook: &HookConfig,
    raw: &[u8],
    decoded: Option<&DecodedBody<'_>>,
) -> Result<(), VerifyError> {
    let header_sig = req
        .headers()
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or_default());
    let signature = header_sig.or_else(|| decoded.and_then(|d| d.form_signature.as_deref()));
    let signed: Vec<&[u8]> = match decoded {
        Some(d) => d.signed_candidates.iter().map(|c| c.as_ref()).collect(),
        None => vec![raw],
    };
    let mut headers = req.headers().get_all(SECRET_HEADER);
    let secret_header = match (headers.next(), headers.next()) {
        (None, _) => Presented::Absent,
        (Some(v), None) => Presented::One(v.as_bytes()),
        (Some(_), Some(_)) => Presented::Many,
    };
    let mut params = req
        .query_string()
        .split('&')
        .filter_map(|p| p.strip_prefix("secret="));
    let url_secret = match (params.next(), params.next()) {
        (None, _) => Presented::Absent,
        (Some(v), None) => Presented::One(v.as_bytes()),
        (Some(_), Some(_)) => Presented::Many,
    };
    let policy = Policy {
        ways: hook.auth_ways(),
        secrets: &hook.secrets,
        required: hook.auth_required(),
        hmac: hook.hmac.as_ref(),
        tolerance: standard_webhooks::DEFAULT_TOLERANCE,
        now: crate::clock::now_ms() / 1000,
    };
    let headers = RequestHeaders(req.headers());
    verify::authenticate(
        policy,
        Credentials {
            signature,
            signed: &signed,
            secret_header,
            url_secret,
            standard_webhooks: [
                standard_webhooks::ID_HEADER,
                standard_webhooks::TIMESTAMP_HEADER,
                standard_webhooks::SIGNATURE_HEADER,
            ]
            .map(|name| headers.get(name)),
            github: headers.get(github::HEADER),
            hmac: hook.hmac.as_ref().and_then(|h| headers.get(&h.header)),
        },
    )
    .map(|_| ())
}

/// The body's declared `Content-Length`, when it has one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads the body, refusing it as soon as it passes `limit`; a body of no declared length
/// takes its bytes from the budget as they arrive.
async fn read_body(
    payload: &mut web::Payload,
    declared: Option<u64>,
    limit: u64,
    mut budget: Option<(&budget::Budget, &mut budget::Held)>,
) -> Result<web::BytesMut, IngressError> {
    let mut raw = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| IngressError::Body(e.to_string()))?;
        if (raw.len() + chunk.len()) as u64 > limit {
            return Err(IngressError::TooLarge(limit));
        }
        if let Some((b, held)) = budget.as_mut() {
            if !b.take_bytes(held, chunk.len() as u64) {
                return Err(IngressError::Busy("server.max_inflight_bytes"));
            }
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

/// `HEAD /hooks/{hook}`: 200 for a configured hook, 404 otherwise.
pub async fn head(hook: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    if find_hook(&state.config(), &hook).is_some() {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::NotFound().finish()
    }
}
