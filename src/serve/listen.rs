//! The listener: actix-web's app (ingress, admin API, status page) served by actix-http, whose
//! `Expect: 100-continue` handler hookbridge sets itself, so that a body announced larger than
//! `server.max_body` is answered 413 before the client is told to send it.

use std::sync::Arc;

use actix_http::body::BoxBody;
use actix_http::{HttpMessage, HttpService, Request, Response};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{App, web};

use super::ServeError;
use crate::config::Config;
use crate::ingress;
use crate::state::AppState;
use crate::tls::CertStore;

/// Binds the listener (with TLS when configured) and mounts the ingress, admin API and status
/// page; the returned server runs once spawned.
pub(super) fn listen(
    config: &Config,
    state: &web::Data<AppState>,
    certs: Option<&Arc<CertStore>>,
) -> Result<actix_web::dev::Server, ServeError> {
    let app_state = state.clone();
    let ui = web::Data::new(crate::ui::Ui::default());
    let brake = web::Data::new(crate::admin::TokenBrake::default());
    let max_body = config.server.max_body.as_u64();
    let read_timeout = config.server.read_timeout;
    let tls = match certs {
        Some(store) => Some(store.server_config()?),
        None => None,
    };
    let builder = actix_server::Server::build()
        .disable_signals()
        .shutdown_timeout(config.server.shutdown_timeout.as_secs().max(1));
    let shutdown = builder.graceful_shutdown_signal();
    // The same service over TCP or over TLS: two factory types, one recipe.
    macro_rules! service {
        () => {{
            let (app_state, ui, brake) = (app_state.clone(), ui.clone(), brake.clone());
            let expect_state = app_state.clone();
            let app = App::new()
                .app_data(app_state)
                .app_data(ui)
                .app_data(brake)
                .app_data(web::PayloadConfig::new(max_body as usize))
                .configure(ingress::routes)
                .configure(crate::admin::routes)
                .configure(crate::ui::routes)
                .into_factory()
                .map_err(|e: actix_web::Error| e.error_response());
            let signal = shutdown.clone();
            HttpService::build()
                .client_request_timeout(read_timeout)
                .graceful_shutdown_signal(move || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                })
                .expect(fn_service(move |req: Request| {
                    let state = expect_state.clone();
                    async move { expect_continue(req, &state, max_body) }
                }))
                .finish(map_config(app, |_| AppConfig::default()))
        }};
    }
    let server = match tls {
        Some(tls) => builder.bind("hookbridge", config.listen, move || {
            service!().rustls_0_23(tls.clone())
        })?,
        None => builder.bind("hookbridge", config.listen, move || service!().tcp())?,
    };
    tracing::info!(addr = %config.listen, tls = certs.is_some(), hooks = config.hooks.len(), sinks = config.sinks.len(), "hookbridge listening");
    Ok(server.run())
}

/// Lets a client that sent `Expect: 100-continue` send its body, unless the ingress refuses it
/// from its headers alone.
fn expect_continue(
    req: Request,
    state: &AppState,
    max_body: u64,
) -> Result<Request, Response<BoxBody>> {
    match ingress::hooks::refuse_before_body(state, req.path(), req.headers(), max_body) {
        Some(refusal) => Err(refusal.into()),
        None => Ok(req),
    }
}
