//! The pages: overview, events, one event, dead letters. Each reads the queue the way the admin
//! API does (the same `Queue` functions, off the async workers) and renders a template.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Ui;
use super::session::Session;
use super::view::{self, Message};
use crate::clock::now_ms;
use crate::queue::{EventQuery, QueueError};
use crate::state::AppState;

/// Events listed at most on the events page.
const EVENTS_SHOWN: usize = 100;
/// Stored events a search looks through at most, newest first.
const EVENTS_SCANNED: usize = 5_000;
/// Dead letters listed at most on the dead letters page.
const DEAD_SHOWN: usize = 200;
/// Seconds between the overview's refreshes.
const REFRESH_SECS: u32 = 5;

/// Runs a queue read off the async workers.
pub(super) async fn read<T, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> Result<T, QueueError> + Send + 'static,
    T: Send + 'static,
{
    match web::block(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The page shown when the queue cannot be read.
pub(super) fn unavailable(ui: &Ui, session: &Session, error: &str) -> HttpResponse {
    tracing::warn!(error, "status page: the queue could not be read");
    let ctx = Message::new(
        session,
        "Queue unavailable",
        &format!("The queue could not be read: {error}"),
    );
    ui.page(StatusCode::SERVICE_UNAVAILABLE, "error.html", &ctx)
}

fn sink_names(state: &AppState) -> Vec<String> {
    state.config().sinks.keys().cloned().collect()
}

/// `GET /ui`: deliveries per hook, each sink's state, the queue's disk.
pub async fn overview(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    session: web::ReqData<Session>,
) -> HttpResponse {
    let config = state.config();
    let names = sink_names(&state);
    let queue = state.queue.clone();
    let read_names = names.clone();
    let read = read(move || {
        let stats = queue.stats(&read_names)?;
        let mut oldest = BTreeMap::new();
        for name in &read_names {
            oldest.insert(name.clone(), queue.oldest_pending(name)?);
        }
        Ok((stats, oldest, queue.disk_free()))
    })
    .await;
    let (stats, oldest, (free, min_free)) = match read {
        Ok(r) => r,
        Err(e) => return unavailable(&ui, &session, &e),
    };
    let now = now_ms();
    let running: BTreeMap<String, crate::admin::SinkState> = crate::admin::sink_states(&state)
        .into_iter()
        .map(|s| (s.sink.clone(), s))
        .collect();
    let sinks: Vec<Value> = names
        .iter()
        .map(|name| {
            let counts = stats.sinks.get(name).cloned().unwrap_or_default();
            let run = running.get(name);
            let last = run.and_then(|r| r.last_error.as_ref());
            json!({
                "name": name,
                "type": config.sinks.get(name).map(|s| s.settings.type_name()),
                "running": run.is_some(),
                "connected": run.is_some_and(|r| r.connected),
                "paused": run.is_some_and(|r| r.paused),
                "ready": counts.ready,
                "waiting": counts.waiting,
                "dead": counts.dead,
                "dead_url": view::link("/ui/dead", &[("sink", Some(name))]),
                "oldest": oldest.get(name).copied().flatten().map(|at| view::span(now.saturating_sub(at))),
                "last_error": last.map(|l| l.message.as_str()),
                "last_error_at": last.map(|l| view::when(l.at)),
            })
        })
        .collect();
    let traffic = state.traffic.rows();
    let mut hooks: BTreeMap<String, Vec<Value>> =
        config.hooks.keys().map(|h| (h.clone(), vec![])).collect();
    for row in traffic {
        hooks.entry(row.hook.clone()).or_default().push(json!({
            "outcome": row.outcome,
            "refused": !matches!(row.outcome, "accepted" | "duplicate"),
            "hour": row.hour,
            "day": row.day,
        }));
    }
    let hooks: Vec<Value> = hooks
        .into_iter()
        .map(|(hook, outcomes)| {
            json!({
                "hook": hook,
                "url": view::link("/ui/events", &[("hook", Some(&hook))]),
                "outcomes": outcomes,
            })
        })
        .collect();
    let mut ctx = view::frame(&session, "overview", "Overview");
    ctx.insert("refresh".into(), json!(REFRESH_SECS));
    ctx.insert("hooks".into(), json!(hooks));
    ctx.insert("sinks".into(), json!(sinks));
    ctx.insert("notices".into(), json!(state.health.notices()));
    ctx.insert(
        "queue".into(),
        json!({
            "events": stats.events,
            "disk": view::bytes(stats.disk_bytes),
            "free": free.map(view::bytes),
            "min_free": view::bytes(min_free),
            "low": free.is_some_and(|f| f < min_free),
        }),
    );
    ui.page(StatusCode::OK, "overview.html", &ctx)
}

/// The events page's filters, as the form sends them (empty means any).
#[derive(Debug, Default, Deserialize)]
pub struct EventsFilter {
    hook: Option<String>,
    kind: Option<String>,
    operation: Option<String>,
    state: Option<String>,
    q: Option<String>,
}

fn set(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// `GET /ui/events`: the most recent events, newest first, filtered.
pub async fn events(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    session: web::ReqData<Session>,
    filter: web::Query<EventsFilter>,
) -> HttpResponse {
    let config = state.config();
    let query = EventQuery {
        hook: set(&filter.hook),
        kind: set(&filter.kind),
        operation: set(&filter.operation),
        state: set(&filter.state),
        text: set(&filter.q),
        limit: EVENTS_SHOWN,
        scan: EVENTS_SCANNED,
    };
    let queue = state.queue.clone();
    let names = sink_names(&state);
    let q = query.clone();
    let page = match read(move || queue.recent(&q, &names)).await {
        Ok(p) => p,
        Err(e) => return unavailable(&ui, &session, &e),
    };
    let now = now_ms();
    let rows: Vec<Value> = page
        .events
        .iter()
        .map(|s| view::event_row(s, now))
        .collect();
    let mut ctx = view::frame(&session, "events", "Events");
    ctx.insert(
        "filter".into(),
        json!({
            "hook": query.hook.clone().unwrap_or_default(),
            "kind": query.kind.clone().unwrap_or_default(),
            "operation": query.operation.clone().unwrap_or_default(),
            "state": query.state.clone().unwrap_or_default(),
            "q": query.text.clone().unwrap_or_default(),
        }),
    );
    ctx.insert(
        "hooks".into(),
        json!(config.hooks.keys().collect::<Vec<_>>()),
    );
    ctx.insert("kinds".into(), json!(crate::senders::kinds()));
    ctx.insert(
        "states".into(),
        json!(["ready", "waiting", "delivered", "dead"]),
    );
    ctx.insert("events".into(), json!(rows));
    ctx.insert("scanned".into(), json!(page.scanned));
    ctx.insert("truncated".into(), json!(page.truncated));
    ctx.insert("limit".into(), json!(EVENTS_SHOWN));
    ui.page(StatusCode::OK, "events.html", &ctx)
}

/// `GET /ui/events/{id}`: one event's fields, payload, routes and attempt history.
pub async fn event(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    session: web::ReqData<Session>,
    id: web::Path<String>,
) -> HttpResponse {
    let config = state.config();
    let queue = state.queue.clone();
    let names = sink_names(&state);
    let id = id.into_inner();
    let lookup = id.clone();
    let read = read(move || {
        let Some(status) = queue.status(&lookup, &names)? else {
            return Ok(None);
        };
        let payload = queue.payload(status.seq)?;
        let attempts = queue.attempts(status.seq)?;
        Ok(Some((status, payload, attempts)))
    })
    .await;
    let (status, payload, attempts) = match read {
        Ok(Some(r)) => r,
        Ok(None) => {
            let ctx = Message::new(
                &session,
                "Unknown event",
                "No event with this id was accepted within the dedup window.",
            );
            return ui.page(StatusCode::NOT_FOUND, "error.html", &ctx);
        }
        Err(e) => return unavailable(&ui, &session, &e),
    };
    let now = now_ms();
    let mut ctx = view::frame(&session, "events", "Event");
    ctx.insert("event_id".into(), json!(id));
    ctx.insert("accepted".into(), json!(view::when(status.accepted_at)));
    if let Some(e) = &status.event {
        let fields = [
            ("kind", Some(e.kind.as_str().to_string())),
            ("hook", Some(e.hook.clone())),
            ("source", Some(e.source.clone())),
            ("operation", Some(e.operation.clone())),
            ("id", Some(e.id.clone())),
            ("user", e.user.clone()),
            ("webhook", e.webhook.clone()),
            ("when", e.when.map(|w| view::when(w.max(0) as u64))),
            ("portal", e.portal.clone()),
        ];
        let fields: Vec<Value> = fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| json!({ "name": k, "value": v })))
            .collect();
        ctx.insert("fields".into(), json!(fields));
        let props = serde_json::to_string_pretty(&e.properties).unwrap_or_default();
        ctx.insert("properties".into(), json!(props));
        let routes: Vec<Value> = config
            .routes
            .matching(e)
            .into_iter()
            .map(|r| json!({ "name": r.name, "to": r.to.join(", ") }))
            .collect();
        ctx.insert("routes".into(), json!(routes));
    }
    ctx.insert(
        "payload".into(),
        json!(payload.as_deref().map(view::pretty)),
    );
    let deliveries: Vec<Value> = status
        .deliveries
        .iter()
        .map(|d| view::delivery(d, now))
        .collect();
    // "Retry now" while a delivery sits out its backoff.
    let waiting = deliveries.iter().any(|d| d["state"] == "waiting");
    ctx.insert("deliveries".into(), json!(deliveries));
    ctx.insert("waiting".into(), json!(waiting));
    let link = view::event_link(&id);
    ctx.insert(
        "link_id".into(),
        json!(link.trim_start_matches("/ui/events/")),
    );
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({
                "sink": a.sink, "at": view::when(a.at), "outcome": a.outcome,
                "error": a.error, "detail": a.detail,
                "next": a.next_at.map(view::when).unwrap_or_default(),
            })
        })
        .collect();
    ctx.insert("attempts".into(), json!(attempts));
    ui.page(StatusCode::OK, "event.html", &ctx)
}

/// The dead letters page's query: which sink, and the result of the last action.
#[derive(Debug, Default, Deserialize)]
pub struct DeadFilter {
    sink: Option<String>,
    done: Option<String>,
    n: Option<u64>,
}

/// `GET /ui/dead`: dead letters by sink, with replay and purge.
pub async fn dead(
    state: web::Data<AppState>,
    ui: web::Data<Ui>,
    session: web::ReqData<Session>,
    filter: web::Query<DeadFilter>,
) -> HttpResponse {
    let sink = set(&filter.sink);
    let queue = state.queue.clone();
    let names = sink_names(&state);
    let wanted = sink.clone();
    let read = read(move || {
        let stats = queue.stats(&names)?;
        let letters = queue.dead_letters(wanted.as_deref(), None)?;
        Ok((stats, letters))
    })
    .await;
    let (stats, letters) = match read {
        Ok(r) => r,
        Err(e) => return unavailable(&ui, &session, &e),
    };
    let tabs: Vec<Value> = stats
        .sinks
        .iter()
        .map(|(name, s)| {
            json!({
                "name": name, "dead": s.dead,
                "url": view::link("/ui/dead", &[("sink", Some(name))]),
                "current": sink.as_deref() == Some(name),
            })
        })
        .collect();
    let mut newest: Vec<_> = letters.iter().collect();
    newest.sort_by_key(|l| std::cmp::Reverse(l.died_at));
    let rows: Vec<Value> = newest
        .into_iter()
        .take(DEAD_SHOWN)
        .map(|l| {
            json!({
                "sink": l.sink, "event_id": l.event.event_id,
                "url": view::event_link(&l.event.event_id),
                "hook": l.event.hook, "operation": l.event.operation, "id": l.event.id,
                "died": view::when(l.died_at), "attempts": l.attempts, "error": l.error,
            })
        })
        .collect();
    let done = match (filter.done.as_deref(), filter.n) {
        (Some("replayed"), Some(n)) => Some(format!(
            "Replayed {n} dead letter(s): they are queued to be sent again."
        )),
        (Some("purged"), Some(n)) => Some(format!("Purged {n} dead letter(s).")),
        _ => None,
    };
    let mut ctx = view::frame(&session, "dead", "Dead letters");
    ctx.insert("tabs".into(), json!(tabs));
    ctx.insert("sink".into(), json!(sink));
    ctx.insert("letters".into(), json!(rows));
    ctx.insert("total".into(), json!(letters.len()));
    ctx.insert("shown".into(), json!(letters.len().min(DEAD_SHOWN)));
    ctx.insert("done".into(), json!(done));
    ui.page(StatusCode::OK, "dead.html", &ctx)
}
