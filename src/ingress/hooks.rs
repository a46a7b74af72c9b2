//! `/hooks/{hook}`: deliveries in (POST), the CRC challenge and URL checks (GET, HEAD).
//!
//! A POST goes down the data flow: size → content type → body → signature → parse → route →
//! durable accept, and only then the 2xx.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use crate::arcgis::{self, ParseError, body::BodyEncoding, body::ContentTypeError};
use crate::config::HookConfig;
use crate::metrics::METRICS;
use crate::queue::{AcceptOutcome, RoutedEvent};
use crate::verify::{self, SIGNATURE_HEADER, VerifyError};

/// Why a delivery was refused; each maps to one status code and one metric label.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// No such hook is configured.
    #[error("no hook named {0:?} is configured")]
    UnknownHook(String),
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
    /// Signature missing or wrong.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// Not a payload of the hook's kind.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The queue cannot take it now; ArcGIS will retry.
    #[error("cannot store the delivery now ({0}); retry later")]
    Unavailable(String),
}

impl IngressError {
    fn status(&self) -> StatusCode {
        match self {
            IngressError::UnknownHook(_) => StatusCode::NOT_FOUND,
            IngressError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            IngressError::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngressError::Body(_) | IngressError::Parse(_) => StatusCode::BAD_REQUEST,
            IngressError::Signature(_) => StatusCode::UNAUTHORIZED,
            IngressError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `outcome` label of `hookbridge_requests_total` and the `error` field of the answer.
    pub fn label(&self) -> &'static str {
        match self {
            IngressError::UnknownHook(_) => "unknown_hook",
            IngressError::TooLarge(_) => "too_large",
            IngressError::Timeout(_) => "timeout",
            IngressError::ContentType(_) => "unsupported_media_type",
            IngressError::Body(_) => "bad_body",
            IngressError::Signature(VerifyError::Missing) => "signature_missing",
            IngressError::Signature(_) => "signature_invalid",
            IngressError::Parse(_) => "bad_payload",
            IngressError::Unavailable(_) => "unavailable",
        }
    }

    fn response(&self) -> HttpResponse {
        HttpResponse::build(self.status()).json(json!({
            "error": self.label(),
            "message": self.to_string(),
        }))
    }
}

/// `POST /hooks/{hook}`.
pub async fn receive(
    req: HttpRequest,
    hook: web::Path<String>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let hook = hook.into_inner();
    let config = state.config();
    let known = config.hooks.contains_key(&hook);
    let label = if known { hook.as_str() } else { "(unknown)" };
    let result = match config.hooks.get(&hook) {
        None => Err(IngressError::UnknownHook(hook.clone())),
        Some(h) => accept(&req, &hook, h, body, &state).await,
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
        Err(e) => {
            METRICS
                .requests
                .with_label_values(&[label, e.label()])
                .inc();
            state.traffic.record(label, e.label());
            tracing::info!(hook = %hook, status = e.status().as_u16(), reason = e.label(), "delivery refused: {e}");
            e.response()
        }
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
    mut payload: web::Payload,
    state: &AppState,
) -> Result<AcceptOutcome, IngressError> {
    if !state.is_accepting() {
        return Err(IngressError::Unavailable("shutting down".into()));
    }
    let limit = state.config().server.max_body.as_u64();
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngressError::TooLarge(limit));
    }
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let encoding = BodyEncoding::from_content_type(content_type)?;

    let read_timeout = state.config().server.read_timeout;
    let raw = tokio::time::timeout(read_timeout, read_body(&mut payload, declared, limit))
        .await
        .map_err(|_| IngressError::Timeout(read_timeout))??;
    if raw.is_empty() {
        return Err(IngressError::Body("the body is empty".into()));
    }

    let decoded = arcgis::body::decode(encoding, &raw);
    let header_sig = req
        .headers()
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().map(str::to_string).unwrap_or_default());
    let signature =
        header_sig.or_else(|| decoded.as_ref().ok().and_then(|d| d.form_signature.clone()));
    match signature {
        Some(sig) if !hook.secrets.is_empty() => {
            let candidates: Vec<&[u8]> = match &decoded {
                Ok(d) => d.signed_candidates.iter().map(|c| c.as_ref()).collect(),
                Err(_) => vec![&raw[..]],
            };
            verify::verify(&sig, &hook.secrets, &candidates)?;
        }
        None if hook.signature_required() => return Err(VerifyError::Missing.into()),
        _ => {}
    }
    let decoded = decoded?;
    let events = arcgis::parse(hook.kind, name, &decoded.json)?;
    if events.is_empty() {
        return Ok(AcceptOutcome::default());
    }

    let config = state.config();
    let routed: Vec<RoutedEvent> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| RoutedEvent {
            sinks: config.routes.sinks_for(&event),
            properties_at: arcgis::properties_pointer(event.kind, i),
            event,
        })
        .collect();
    let text: Arc<str> = Arc::from(String::from_utf8_lossy(&decoded.json).as_ref());
    let kinds: Vec<(&'static str, bool, String)> = routed
        .iter()
        .map(|r| {
            (
                r.event.kind.as_str(),
                r.sinks.is_empty(),
                r.event.event_id.clone(),
            )
        })
        .collect();
    let outcome = state
        .queue
        .accept(text, routed)
        .await
        .map_err(|e| IngressError::Unavailable(e.to_string()))?;
    for (kind, unrouted, id) in kinds {
        if !outcome.accepted.contains(&id) {
            continue;
        }
        METRICS
            .events_accepted
            .with_label_values(&[name, kind])
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
    Ok(outcome)
}

/// Reads the body, refusing it as soon as it passes `limit`.
async fn read_body(
    payload: &mut web::Payload,
    declared: Option<u64>,
    limit: u64,
) -> Result<web::BytesMut, IngressError> {
    let mut raw = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| IngressError::Body(e.to_string()))?;
        if (raw.len() + chunk.len()) as u64 > limit {
            return Err(IngressError::TooLarge(limit));
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

/// Query of `GET /hooks/{hook}`.
#[derive(Deserialize)]
pub struct CrcQuery {
    crc_token: Option<String>,
}

/// `GET /hooks/{hook}`: the CRC answer with `?crc_token=`, else a check that the URL answers.
pub async fn check(
    hook: web::Path<String>,
    query: web::Query<CrcQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let config = state.config();
    let Some(h) = config.hooks.get(hook.as_str()) else {
        return IngressError::UnknownHook(hook.into_inner()).response();
    };
    match (&query.crc_token, h.secrets.first()) {
        (Some(token), Some(key)) => HttpResponse::Ok().json(json!({
            "response_token": verify::sign(key.expose().as_bytes(), token.as_bytes()),
        })),
        (Some(_), None) => HttpResponse::BadRequest().json(json!({
            "error": "no_secret",
            "message": "this hook has no secret, so it cannot answer a CRC challenge",
        })),
        (None, _) => HttpResponse::Ok().json(json!({ "hook": hook.as_str(), "status": "ok" })),
    }
}

/// `HEAD /hooks/{hook}`: 200 for a configured hook, 404 otherwise.
pub async fn head(hook: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    if state.config().hooks.contains_key(hook.as_str()) {
        HttpResponse::Ok().finish()
    } else {
        HttpResponse::NotFound().finish()
    }
}
