//! `/ui`: the status page administrators open in a browser, served by the daemon itself.
//!
//! Off (404) unless `server.admin_token` is set, like the admin API, and built on the same
//! queue reads. Everything it needs (templates, stylesheet, script) is compiled into the
//! binary: no CDN, no external font, it works offline. Every page but sign-in needs a session;
//! every state change is a POST carrying the session's CSRF token.

mod actions;
mod pages;
pub(crate) mod session;
mod view;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{ACCEPT, LOCATION};
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Serialize;

use crate::metrics::METRICS;
use crate::state::AppState;
use session::{COOKIE, Session, Sessions};

/// The templates, by name; `.html` names are autoescaped.
const TEMPLATES: [(&str, &str); 8] = [
    ("base.html", include_str!("templates/base.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("events.html", include_str!("templates/events.html")),
    ("event.html", include_str!("templates/event.html")),
    ("dead.html", include_str!("templates/dead.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("error.html", include_str!("templates/error.html")),
];
const STYLE: &str = include_str!("static/style.css");
const SCRIPT: &str = include_str!("static/ui.js");
const ICON: &str = include_str!("static/icon.svg");

/// The status page's shared state: its sessions and compiled templates.
#[derive(Debug)]
pub struct Ui {
    /// Signed-in browsers.
    pub sessions: Sessions,
    templates: Result<tera::Tera, String>,
}

impl Default for Ui {
    fn default() -> Self {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![".html"]);
        let templates = tera
            .add_raw_templates(TEMPLATES)
            .map(|()| tera)
            .map_err(|e| {
                let message = crate::render::error_chain(&e);
                tracing::error!(error = %message, "the status page templates do not compile");
                message
            });
        Ui {
            sessions: Sessions::default(),
            templates,
        }
    }
}

impl Ui {
    /// Renders a page; a template that fails is a 500 with the reason logged, never shown.
    fn page(&self, status: StatusCode, name: &str, context: &impl Serialize) -> HttpResponse {
        let rendered = self.templates.as_ref().map_err(Clone::clone).and_then(|t| {
            let ctx = tera::Context::from_serialize(context)
                .map_err(|e| crate::render::error_chain(&e))?;
            t.render(name, &ctx)
                .map_err(|e| crate::render::error_chain(&e))
        });
        match rendered {
            Ok(html) => HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(html),
            Err(e) => {
                tracing::error!(template = name, error = %e, "status page rendering failed");
                HttpResponse::InternalServerError()
                    .content_type("text/plain; charset=utf-8")
                    .body("the status page could not be rendered; the daemon's log says why")
            }
        }
    }
}

/// Headers on every status page answer: no caching of queue contents, no framing, no
/// scripts or styles but the page's own, no referrer leaking ids to other sites.
fn headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Cache-Control", "no-store"))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
        .add((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ))
}

/// Registers `/` (a redirect to `/ui`), the sign-in page, the assets and the pages.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .service(
            web::resource("/ui/signin")
                .wrap(headers())
                .route(web::get().to(actions::signin_form))
                .route(web::post().to(actions::signin)),
        )
        .service(
            web::resource("/ui/static/{file}")
                .wrap(headers())
                .route(web::get().to(asset)),
        )
        .service(
            web::scope("/ui")
                .wrap(from_fn(require_session))
                .wrap(headers())
                .route("", web::get().to(pages::overview))
                .route("/", web::get().to(pages::overview))
                .route("/events", web::get().to(pages::events))
                .route("/events/{id}", web::get().to(pages::event))
                .route("/events/{id}/retry", web::post().to(actions::event))
                .route("/dead", web::get().to(pages::dead))
                .route("/dead/{action}", web::post().to(actions::dead))
                .route("/sinks/{name}/{action}", web::post().to(actions::sink))
                .route("/signout", web::post().to(actions::signout))
                .default_service(web::to(not_found)),
        );
}

/// Whether the status page is on (an admin token is set).
fn enabled(state: &AppState) -> bool {
    state.config().server.admin_token.is_some()
}

async fn root(state: web::Data<AppState>) -> HttpResponse {
    if enabled(&state) {
        see_other("/ui")
    } else {
        HttpResponse::NotFound().finish()
    }
}

async fn not_found(ui: web::Data<Ui>, session: web::ReqData<Session>) -> HttpResponse {
    let ctx = view::Message::new(&session, "Not found", "There is no such page.");
    ui.page(StatusCode::NOT_FOUND, "error.html", &ctx)
}

async fn asset(state: web::Data<AppState>, file: web::Path<String>) -> HttpResponse {
    if !enabled(&state) {
        return HttpResponse::NotFound().finish();
    }
    let (body, kind) = match file.as_str() {
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        "ui.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return HttpResponse::NotFound().finish(),
    };
    HttpResponse::Ok().content_type(kind).body(body)
}

/// A 303 to `to`: after a POST, the browser GETs the result page.
fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to))
        .finish()
}

/// The session a request's cookie names, if it is live for the current admin token.
fn session_of(req: &HttpRequest, state: &AppState, ui: &Ui) -> Option<(String, Session)> {
    let config = state.config();
    let token = config.server.admin_token.as_ref()?;
    let id = req.cookie(COOKIE)?.value().to_string();
    let session = ui.sessions.get(&id, token.expose())?;
    Some((id, session))
}

/// Lets a request into the pages only with a live session: a browser asking for HTML is sent
/// to sign in (302), anything else gets 401.
async fn require_session(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let wired = (
        req.app_data::<web::Data<AppState>>(),
        req.app_data::<web::Data<Ui>>(),
    );
    let refusal = match wired {
        (None, _) | (_, None) => {
            Some(HttpResponse::InternalServerError().body("the status page is not wired"))
        }
        (Some(state), _) if !enabled(state) => Some(HttpResponse::NotFound().finish()),
        (Some(state), Some(ui)) => match session_of(req.request(), state, ui) {
            Some((_, session)) => {
                req.extensions_mut().insert(session);
                None
            }
            None if wants_html(req.request()) => Some(
                HttpResponse::Found()
                    .insert_header((LOCATION, "/ui/signin"))
                    .finish(),
            ),
            None => Some(
                HttpResponse::Unauthorized()
                    .content_type("text/plain; charset=utf-8")
                    .body("sign in at /ui/signin first"),
            ),
        },
    };
    match refusal {
        Some(response) => Ok(req.into_response(response).map_into_right_body()),
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
    }
}

fn wants_html(req: &HttpRequest) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// Counts a refused sign-in.
fn count_failure() {
    METRICS.ui_signin_failures.inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_and_escape() {
        let ui = Ui::default();
        assert!(ui.templates.is_ok(), "{:?}", ui.templates.err());
        let ctx = serde_json::json!({
            "csrf": "", "nav": "", "title": "<b>", "refresh": 0, "message": "<script>x</script>",
        });
        let r = ui.page(StatusCode::OK, "error.html", &ctx);
        assert_eq!(r.status(), StatusCode::OK);
        let body = actix_web::body::to_bytes(r.into_body());
        let body = futures::executor::block_on(body).unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("&lt;script&gt;x"), "{text}");
        assert!(!text.contains("<script>x"), "{text}");
        assert!(!text.contains("Sign out"), "no session, no navigation");
    }
}
