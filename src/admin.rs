//! `/admin`: queue stats, dead letters, delivery status and sink pausing, behind a bearer token.
//!
//! Off (404) unless `server.admin_token` is set; the token is compared in constant time.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::dispatch::LastError;
use crate::metrics::METRICS;
use crate::secret::Secret;
use crate::state::AppState;

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .wrap(from_fn(require_token))
            .route("/queue", web::get().to(queue_stats))
            .route("/dlq", web::get().to(dlq_list))
            .route("/dlq/replay", web::post().to(dlq_replay))
            .route("/dlq/purge", web::post().to(dlq_purge))
            .route("/events/{id}", web::get().to(event_status))
            .route("/sinks", web::get().to(sinks))
            .route("/sinks/{name}/pause", web::post().to(pause))
            .route("/sinks/{name}/resume", web::post().to(resume))
            .route("/sinks/{name}/retry", web::post().to(retry_sink))
            .route("/events/{id}/retry", web::post().to(retry_event))
            .route("/hooks/{name}/reconcile", web::post().to(reconcile_now))
            .default_service(web::to(not_found)),
    );
}

/// `?sink=NAME&id=EVENT_ID` filters.
#[derive(Debug, Deserialize)]
pub struct Filter {
    sink: Option<String>,
    id: Option<String>,
}

fn error(
    status: actix_web::http::StatusCode,
    code: &str,
    message: impl Into<String>,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "message": message.into() }))
}

/// Lets a request through to the admin handlers only with the configured bearer token.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let refusal = match req.app_data::<web::Data<AppState>>() {
        Some(state) => refuse(req.request(), state),
        None => Some(Refusal::Other(error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            "no_state",
            "the admin API is not wired to the daemon",
        ))),
    };
    let refusal = match refusal {
        Some(Refusal::WrongToken(response)) => {
            METRICS.admin_token_failures.inc();
            tracing::warn!(peer = %peer(req.request()), "admin API: refused, the bearer token does not match server.admin_token");
            if let Some(brake) = req.app_data::<web::Data<TokenBrake>>() {
                brake.after_failure().await;
            }
            Some(response)
        }
        Some(Refusal::Other(response)) => Some(response),
        None => None,
    };
    match refusal {
        Some(response) => Ok(req.into_response(response).map_into_right_body()),
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

/// Why an admin request is refused: a wrong token is braked and counted, the rest is not.
enum Refusal {
    /// A bearer token that is not the admin token: a guess.
    WrongToken(HttpResponse),
    /// The API is off, or no token was sent.
    Other(HttpResponse),
}

/// None when the request carries the configured token; the refusal otherwise.
fn refuse(req: &HttpRequest, state: &AppState) -> Option<Refusal> {
    use actix_web::http::StatusCode;
    let config = state.config();
    let Some(token) = &config.server.admin_token else {
        return Some(Refusal::Other(error(
            StatusCode::NOT_FOUND,
            "admin_disabled",
            "the admin API is off: set server.admin_token",
        )));
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if given.is_empty() {
        return Some(Refusal::Other(error(
            StatusCode::UNAUTHORIZED,
            "token_missing",
            "expected Authorization: Bearer <admin_token>",
        )));
    }
    if token_matches(given, token) {
        None
    } else {
        Some(Refusal::WrongToken(error(
            StatusCode::UNAUTHORIZED,
            "token_invalid",
            "the bearer token does not match server.admin_token",
        )))
    }
}

/// The peer's address for log lines.
fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// The wait before a wrong token's answer; failures wait one after the other, so guessing runs
/// at one try per `FAILURE_DELAY` however many connections a guesser opens.
pub const FAILURE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The brake on wrong admin tokens, shared by the admin API and the status page's sign-in, so
/// that a guesser gets one try per [`FAILURE_DELAY`] across both.
#[derive(Debug, Default)]
pub struct TokenBrake {
    turn: tokio::sync::Mutex<()>,
}

impl TokenBrake {
    /// Waits `FAILURE_DELAY`, one failure after another.
    pub async fn after_failure(&self) {
        let _turn = self.turn.lock().await;
        tokio::time::sleep(FAILURE_DELAY).await;
    }
}

/// Whether `given` is the admin token, compared in constant time (the API and the status page).
pub fn token_matches(given: &str, token: &Secret) -> bool {
    bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))
}

/// Runs a blocking queue read off the async workers and answers its result as JSON.
async fn blocking<T, E, F>(f: F) -> HttpResponse
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: serde::Serialize + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match web::block(f).await {
        Ok(Ok(v)) => HttpResponse::Ok().json(v),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    error(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        "queue_error",
        e.to_string(),
    )
}

async fn not_found() -> HttpResponse {
    error(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such admin endpoint",
    )
}

async fn queue_stats(state: web::Data<AppState>) -> HttpResponse {
    let sinks: Vec<String> = state.config().sinks.keys().cloned().collect();
    let queue = state.queue.clone();
    blocking(move || queue.stats(&sinks)).await
}

async fn dlq_list(state: web::Data<AppState>, f: web::Query<Filter>) -> HttpResponse {
    let queue = state.queue.clone();
    let f = f.into_inner();
    blocking(move || queue.dead_letters(f.sink.as_deref(), f.id.as_deref())).await
}

async fn dlq_replay(state: web::Data<AppState>, f: web::Query<Filter>) -> HttpResponse {
    let f = f.into_inner();
    match state.queue.replay(f.sink, f.id).await {
        Ok(n) => HttpResponse::Ok().json(json!({ "replayed": n })),
        Err(e) => internal(e),
    }
}

async fn dlq_purge(state: web::Data<AppState>, f: web::Query<Filter>) -> HttpResponse {
    let queue = state.queue.clone();
    let f = f.into_inner();
    blocking(move || {
        queue
            .purge(f.sink.as_deref(), f.id.as_deref())
            .map(|n| json!({ "purged": n }))
    })
    .await
}

async fn event_status(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    let sinks: Vec<String> = state.config().sinks.keys().cloned().collect();
    let queue = state.queue.clone();
    let id = id.into_inner();
    let lookup = id.clone();
    match web::block(move || queue.status(&lookup, &sinks)).await {
        Ok(Ok(Some(status))) => HttpResponse::Ok().json(status),
        Ok(Ok(None)) => error(
            actix_web::http::StatusCode::NOT_FOUND,
            "unknown_event",
            format!("no event {id} was accepted within the dedup window"),
        ),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// One running sink as an operator sees it: the admin API's `/admin/sinks` and the status page.
#[derive(Debug, Clone, Serialize)]
pub struct SinkState {
    /// Sink name.
    pub sink: String,
    /// Whether sending is paused.
    pub paused: bool,
    /// Whether it reaches its destination now (connected, and its last send was not refused).
    pub connected: bool,
    /// Its most recent failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// Every running sink's state, by name.
pub fn sink_states(state: &AppState) -> Vec<SinkState> {
    state
        .controls()
        .iter()
        .map(|(name, c)| SinkState {
            sink: name.clone(),
            paused: c.is_paused(),
            connected: state.health.is_up(name),
            last_error: c.last_error(),
        })
        .collect()
}

/// Pauses or resumes a running sink; false when no running sink has that name.
pub fn set_paused(state: &AppState, name: &str, paused: bool, by: &str) -> bool {
    match state.controls().get(name) {
        Some(c) => {
            c.set_paused(paused);
            tracing::info!(sink = %name, paused, by, "sink pause changed");
            true
        }
        None => false,
    }
}

async fn sinks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(sink_states(&state))
}

async fn pause(state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    pause_answer(&state, name.into_inner(), true)
}

async fn resume(state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    pause_answer(&state, name.into_inner(), false)
}

/// Makes the waiting deliveries of the sinks named (only event `seq`'s, when given) due now;
/// the status page's "Retry now" buttons and the admin API call it.
pub fn retry_now(state: &AppState, sinks: &[String], seq: Option<u64>) -> Result<usize, String> {
    let mut moved = 0;
    for sink in sinks {
        moved += state
            .queue
            .retry_now(sink, seq)
            .map_err(|e| e.to_string())?;
    }
    if moved > 0 {
        tracing::info!(sinks = %sinks.join(", "), moved, "deliveries made due now by an operator");
    }
    Ok(moved)
}

/// `POST /admin/sinks/{name}/retry`: the sink's waiting deliveries are tried now.
async fn retry_sink(state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let name = name.into_inner();
    if !state.controls().contains_key(&name) {
        return error(
            actix_web::http::StatusCode::NOT_FOUND,
            "unknown_sink",
            format!("no running sink named {name:?}"),
        );
    }
    let state = state.into_inner();
    blocking(move || retry_now(&state, &[name], None).map(|n| json!({ "retried": n }))).await
}

/// `POST /admin/hooks/{name}/reconcile`: the hook's layers are polled now, the tail included.
async fn reconcile_now(state: web::Data<AppState>, name: web::Path<String>) -> HttpResponse {
    let name = name.into_inner();
    match state.watch() {
        Some(w) if w.poll_now(&name) => {
            tracing::info!(hook = %name, "reconciliation asked for by an operator");
            HttpResponse::Accepted().json(json!({ "hook": name, "reconcile": "started" }))
        }
        _ => error(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_reconciled",
            format!("no hook named {name:?} has reconcile set"),
        ),
    }
}

/// `POST /admin/events/{id}/retry`: the event's waiting deliveries, at every sink, are tried now.
async fn retry_event(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    let seq = match state.queue.seq_of(&id) {
        Ok(Some(seq)) => seq,
        Ok(None) => {
            return error(
                actix_web::http::StatusCode::NOT_FOUND,
                "unknown_event",
                "no event of that id is stored",
            );
        }
        Err(e) => return internal(e),
    };
    let state = state.into_inner();
    blocking(move || {
        let sinks: Vec<String> = state.controls().keys().cloned().collect();
        retry_now(&state, &sinks, Some(seq)).map(|n| json!({ "retried": n }))
    })
    .await
}

fn pause_answer(state: &AppState, name: String, paused: bool) -> HttpResponse {
    if set_paused(state, &name, paused, "admin API") {
        HttpResponse::Ok().json(json!({ "sink": name, "paused": paused }))
    } else {
        error(
            actix_web::http::StatusCode::NOT_FOUND,
            "unknown_sink",
            format!("no running sink named {name:?}"),
        )
    }
}
