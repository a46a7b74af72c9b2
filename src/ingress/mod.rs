//! The ingress routes: hooks, the CRC challenge, health, readiness, metrics.

pub mod crc;
pub mod hooks;

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::metrics::METRICS;
use crate::state::AppState;

/// Registers the ingress routes (hooks, health, readiness, metrics) on an actix app; `serve`
/// mounts the admin API and the status page beside them.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/hooks/{hook}")
            .route(web::post().to(hooks::receive))
            .route(web::get().to(crc::check))
            .route(web::head().to(hooks::head)),
    )
    .route("/healthz", web::get().to(healthz))
    .route("/readyz", web::get().to(readyz))
    .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.is_accepting() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "reason": "shutting down" }));
    }
    if !state.queue.is_alive() {
        return HttpResponse::ServiceUnavailable().json(json!({
            "ready": false,
            "reason": "the queue cannot write (disk full or I/O error); restart once fixed",
        }));
    }
    if let Some(reason) = state.queue.space_problem() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "reason": reason }));
    }
    let problems = state.health.problems();
    if !problems.is_empty() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "reason": problems.join("; ") }));
    }
    let waiting = state.health.waiting_for();
    if waiting.is_empty() {
        // Readiness is about hookbridge itself (a sink that is down queues its deliveries), but
        // the answer says which sinks cannot reach their destination now.
        let mut answer = json!({ "ready": true });
        let down = state.health.down_sinks();
        if !down.is_empty() {
            answer["sinks_down"] = json!(down);
        }
        // What an operator should know (an ArcGIS webhook turned off) is said, not failed on.
        let notices = state.health.notices();
        if !notices.is_empty() {
            answer["notices"] = json!(notices);
        }
        HttpResponse::Ok().json(answer)
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "ready": false,
            "reason": format!("sinks not connected yet: {}", waiting.join(", ")),
        }))
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(METRICS.render())
}
