//! What changes state: sign-in, sign-out, replay and purge of dead letters, pause, resume and
//! retry now (a sink's waiting deliveries, or one event's).
//!
//! Each is a POST; all but sign-in need the session's CSRF token in the form. Replay and purge
//! first answer a confirmation page, and act only when it is posted back with `confirmed=yes`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::pages::{read, unavailable};
use super::session::{self, Session};
use super::view::{self, Message};
use super::{Ui, count_failure, enabled, see_other, session_of};
use crate::state::AppState;

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    token: String,
}

/// A form that carries only the CSRF token.
#[derive(Deserialize)]
pub struct Csrf {
    csrf: Option<String>,
}

/// The replay and purge forms: which dead letters (a sink's, one event's, or all), and whether
/// the confirmation was given.
#[derive(Deserialize)]
pub struct DeadAction {
    csrf: Option<String>,
    sink: Option<String>,
    id: Option<String>,
    confirmed: Option<String>,
}

fn signin_page(ui: &Ui, status: StatusCode, error: Option<&str>) -> HttpResponse {
    let ctx = json!({
        "csrf": "", "nav": "", "title": "Sign in", "refresh": 0, "error": error,
    });
    ui.page(status, "signin.html", &ctx)
}

fn secure(state: &AppState) -> bool {
    state.config().server.tls.is_some()
}

/// `GET /ui/signin`.
pub async fn signin_form(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    req: HttpRequest,
) -> HttpResponse {
    if !enabled(&state) {
        return HttpResponse::NotFound().finish();
    }
    if session_of(&req, &state, &ui).is_some() {
        return see_other("/ui");
    }
    signin_page(&ui, StatusCode::OK, None)
}

/// `POST /ui/signin`: a session for the right token; the form again, later, for a wrong one.
pub async fn signin(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    req: HttpRequest,
    form: web::Form<SignIn>,
) -> HttpResponse {
    let config = state.config();
    let Some(token) = &config.server.admin_token else {
        return HttpResponse::NotFound().finish();
    };
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    if !form.token.is_empty() && crate::admin::token_matches(&form.token, token) {
        let id = ui.sessions.open(token.expose());
        tracing::info!(%peer, "status page: signed in");
        return HttpResponse::SeeOther()
            .insert_header((actix_web::http::header::LOCATION, "/ui"))
            .cookie(session::cookie(id, secure(&state)))
            .finish();
    }
    count_failure();
    tracing::warn!(%peer, "status page: sign-in refused, the token does not match server.admin_token");
    if let Some(brake) = req.app_data::<web::Data<crate::admin::TokenBrake>>() {
        brake.after_failure().await;
    }
    signin_page(
        &ui,
        StatusCode::UNAUTHORIZED,
        Some("That is not the admin token. Try again."),
    )
}

/// The answer to a form whose CSRF token is missing or wrong.
fn forged(ui: &Ui, session: &Session) -> HttpResponse {
    tracing::warn!("status page: a form without its session's CSRF token was refused");
    let ctx = Message::new(
        session,
        "Refused",
        "The form did not carry this session's security token. Reload the page and try again.",
    );
    ui.page(StatusCode::FORBIDDEN, "error.html", &ctx)
}

/// `POST /ui/signout`.
pub async fn signout(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    req: HttpRequest,
    session: web::ReqData<Session>,
    form: web::Form<Csrf>,
) -> HttpResponse {
    if !session.csrf_matches(form.csrf.as_deref()) {
        return forged(&ui, &session);
    }
    if let Some((id, _)) = session_of(&req, &state, &ui) {
        ui.sessions.close(&id);
    }
    tracing::info!("status page: signed out");
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, "/ui/signin"))
        .cookie(session::removal(secure(&state)))
        .finish()
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref().filter(|s| !s.is_empty()).map(String::from)
}

/// `POST /ui/dead/{replay|purge}`: confirm, then replay or purge the dead letters chosen.
pub async fn dead(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    session: web::ReqData<Session>,
    action: web::Path<String>,
    form: web::Form<DeadAction>,
) -> HttpResponse {
    if !session.csrf_matches(form.csrf.as_deref()) {
        return forged(&ui, &session);
    }
    let action = action.into_inner();
    if action != "replay" && action != "purge" {
        let ctx = Message::new(&session, "Not found", "There is no such action.");
        return ui.page(StatusCode::NOT_FOUND, "error.html", &ctx);
    }
    let (sink, id) = (nonempty(&form.sink), nonempty(&form.id));
    let back = view::link("/ui/dead", &[("sink", sink.as_deref())]);
    if form.confirmed.as_deref() != Some("yes") {
        let queue = state.queue.clone();
        let (s, i) = (sink.clone(), id.clone());
        let count = match read(move || queue.dead_letters(s.as_deref(), i.as_deref())).await {
            Ok(letters) => letters.len(),
            Err(e) => return unavailable(&ui, &session, &e),
        };
        let mut ctx = view::frame(&session, "dead", "Confirm");
        ctx.insert("action".into(), json!(action));
        ctx.insert("sink".into(), json!(sink));
        ctx.insert("id".into(), json!(id));
        ctx.insert("count".into(), json!(count));
        ctx.insert("back".into(), json!(back));
        return ui.page(StatusCode::OK, "confirm.html", &ctx);
    }
    let result = if action == "replay" {
        state
            .queue
            .replay(sink.clone(), id.clone())
            .await
            .map_err(|e| e.to_string())
    } else {
        let queue = state.queue.clone();
        let (s, i) = (sink.clone(), id.clone());
        read(move || queue.purge(s.as_deref(), i.as_deref())).await
    };
    match result {
        Ok(n) => {
            let done = if action == "replay" {
                "replayed"
            } else {
                "purged"
            };
            tracing::info!(sink = ?sink, event_id = ?id, n, "status page: dead letters {done}");
            let n = n.to_string();
            see_other(&view::link(
                "/ui/dead",
                &[
                    ("sink", sink.as_deref()),
                    ("done", Some(done)),
                    ("n", Some(&n)),
                ],
            ))
        }
        Err(e) => unavailable(&ui, &session, &e),
    }
}

/// `POST /ui/sinks/{name}/{pause|resume|retry}`: retry makes the sink's waiting deliveries due now.
pub async fn sink(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    session: web::ReqData<Session>,
    path: web::Path<(String, String)>,
    form: web::Form<Csrf>,
) -> HttpResponse {
    if !session.csrf_matches(form.csrf.as_deref()) {
        return forged(&ui, &session);
    }
    let (name, action) = path.into_inner();
    if action == "retry" && state.controls().contains_key(&name) {
        let state = state.into_inner();
        let sinks = [name];
        return match web::block(move || crate::admin::retry_now(&state, &sinks, None)).await {
            Ok(Ok(_)) => see_other("/ui"),
            Ok(Err(e)) => unavailable(&ui, &session, &e),
            Err(e) => unavailable(&ui, &session, &e.to_string()),
        };
    }
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => {
            let ctx = Message::new(&session, "Not found", "There is no such action.");
            return ui.page(StatusCode::NOT_FOUND, "error.html", &ctx);
        }
    };
    if crate::admin::set_paused(&state, &name, paused, "status page") {
        see_other("/ui")
    } else {
        let ctx = Message::new(&session, "Unknown sink", "No running sink has this name.");
        ui.page(StatusCode::NOT_FOUND, "error.html", &ctx)
    }
}

/// `POST /ui/events/{id}/retry`: the event's waiting deliveries, at every sink, are due now.
pub async fn event(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    session: web::ReqData<Session>,
    id: web::Path<String>,
    form: web::Form<Csrf>,
) -> HttpResponse {
    if !session.csrf_matches(form.csrf.as_deref()) {
        return forged(&ui, &session);
    }
    let id = id.into_inner();
    let back = view::event_link(&id);
    let state = state.into_inner();
    let retried = web::block(move || {
        let Some(seq) = state.queue.seq_of(&id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let sinks: Vec<String> = state.controls().keys().cloned().collect();
        crate::admin::retry_now(&state, &sinks, Some(seq)).map(Some)
    })
    .await;
    match retried {
        Ok(Ok(Some(_))) => see_other(&back),
        Ok(Ok(None)) => {
            let ctx = Message::new(
                &session,
                "Unknown event",
                "No event with this id was accepted within the dedup window.",
            );
            ui.page(StatusCode::NOT_FOUND, "error.html", &ctx)
        }
        Ok(Err(e)) => unavailable(&ui, &session, &e),
        Err(e) => unavailable(&ui, &session, &e.to_string()),
    }
}
