//! `hookbridge arcgis webhooks list|create|check`: the ArcGIS webhooks on a hook's feature
//! service (`hooks.NAME.service`), read and registered with the connection that serves it.
//! Keys go to ArcGIS in a POST body and are never printed.

use std::fmt::Write as _;

use crate::config::Config;
use crate::enrich::manage::{self, HookSide};
use crate::enrich::{Connection, FetchError};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// List the service's webhooks.
    List,
    /// Register one for the hook.
    Create,
    /// Compare them with the hook.
    Check,
}

/// What an operation printed, and whether all was well.
#[derive(Debug, Clone)]
pub struct Report {
    /// The text for the terminal.
    pub text: String,
    /// False when `check` found something to fix (or no webhook feeds the hook).
    pub ok: bool,
}

/// Why an operation could not run.
#[derive(Debug, thiserror::Error)]
pub enum WebhooksError {
    /// No such hook.
    #[error("no hook named {name:?}; the hooks are: {known}")]
    NoHook {
        /// The name asked for.
        name: String,
        /// The configured hooks.
        known: String,
    },
    /// The hook names no service.
    #[error(
        "hooks.{0}.service is not set: name the feature service (https://…/FeatureServer) whose webhooks feed the hook"
    )]
    NoService(String),
    /// No connection serves it.
    #[error("no [arcgis.*] connection lists a services prefix for {0}")]
    NoConnection(String),
    /// The service URL has no admin endpoint hookbridge knows.
    #[error("{0} is not a …/rest/services/…/FeatureServer URL")]
    NotAService(String),
    /// `create` without `--url`.
    #[error(
        "create needs --url, the hook's public URL as ArcGIS reaches it (https://…/hooks/NAME)"
    )]
    NoUrl,
    /// ArcGIS refused or failed (expired token, missing privilege, unreachable).
    #[error("ArcGIS: {0}")]
    Arcgis(String),
    /// The runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The list could not be printed.
    #[error("cannot print the list: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<FetchError> for WebhooksError {
    fn from(e: FetchError) -> Self {
        WebhooksError::Arcgis(e.to_string())
    }
}

/// Runs `op` for `hook`; `url` is the hook's public URL (required by `create`).
pub fn run(
    config: &Config,
    op: Op,
    hook_name: &str,
    url: Option<&str>,
) -> Result<Report, WebhooksError> {
    let Some(hook) = config.hooks.get(hook_name) else {
        let known: Vec<&str> = config.hooks.keys().map(String::as_str).collect();
        return Err(WebhooksError::NoHook {
            name: hook_name.to_string(),
            known: known.join(", "),
        });
    };
    let service = hook
        .service
        .as_deref()
        .ok_or_else(|| WebhooksError::NoService(hook_name.to_string()))?;
    let (name, settings) = config
        .arcgis
        .iter()
        .find(|(_, c)| c.serves(service))
        .ok_or_else(|| WebhooksError::NoConnection(service.to_string()))?;
    let collection = manage::collection_url(service, settings.username.is_some())
        .ok_or_else(|| WebhooksError::NotAService(service.to_string()))?;
    let conn = Connection::new(name, settings.clone())?;
    let side = HookSide {
        hook: hook_name,
        url,
        has_key: !hook.secrets.is_empty(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match op {
            Op::List => {
                let all = manage::list(&conn, &collection).await?;
                Ok(Report {
                    text: format!("{}\n", serde_json::to_string_pretty(&all)?),
                    ok: true,
                })
            }
            Op::Create => {
                let url = url.ok_or(WebhooksError::NoUrl)?;
                let key = hook.secrets.first().map(|s| s.expose());
                let made = manage::create(&conn, &collection, hook_name, url, key).await?;
                let signed = if made.key_set {
                    "signed with the hook's first secret"
                } else {
                    "unsigned (the hook has no secret)"
                };
                Ok(Report {
                    text: format!(
                        "created ArcGIS webhook {} ({}) posting to {}, {signed}\n",
                        made.id, made.name, made.hook_url
                    ),
                    ok: true,
                })
            }
            Op::Check => {
                let all = manage::list(&conn, &collection).await?;
                Ok(check(&all, &side, service))
            }
        }
    })
}

/// Each webhook posting to the hook, and what to fix about it.
fn check(all: &[manage::WebhookInfo], side: &HookSide<'_>, service: &str) -> Report {
    let path = format!("/hooks/{}", side.hook);
    let feeding: Vec<_> = all
        .iter()
        .filter(|w| w.hook_url.trim_end_matches('/').ends_with(&path))
        .collect();
    let mut text = String::new();
    if feeding.is_empty() {
        let _ = writeln!(
            text,
            "no ArcGIS webhook on {service} posts to {path}: create one with `hookbridge arcgis webhooks create --hook {} --url https://…{path}`",
            side.hook
        );
        return Report { text, ok: false };
    }
    let mut fix = 0;
    for w in feeding {
        let problems = w.problems(side);
        if problems.is_empty() {
            let _ = writeln!(text, "webhook {} ({}): ok", w.id, w.name);
        }
        for p in &problems {
            let _ = writeln!(text, "webhook {} ({}): {p}", w.id, w.name);
        }
        fix += problems.len();
    }
    if fix > 0 {
        let _ = writeln!(text, "{fix} thing(s) to fix");
    }
    Report { text, ok: fix == 0 }
}
