//! What the templates see: queue state turned into text (UTC times, ages, sizes) and links.
//!
//! Values are passed as text and escaped by the templates; nothing here builds markup.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use super::session::Session;
use crate::clock::now_ms;
use crate::queue::{DeliveryStatus, EventStatus};

/// An epoch-ms time as `2026-11-26 01:02:03 UTC`.
pub fn when(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// A duration in seconds, largest units first: `3m 12s`.
pub fn span(ms: u64) -> String {
    let secs = Duration::from_secs(ms / 1000);
    if secs.is_zero() {
        return "under a second".into();
    }
    humantime::format_duration(secs).to_string()
}

/// A size: `12.3 MiB`.
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).to_string_as(true)
}

/// `/ui/<path>?k=v&...` with the pairs whose value is set, percent-encoded.
pub fn link(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            q.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", q.finish())
    } else {
        path.to_string()
    }
}

/// The link to an event's page.
pub fn event_link(event_id: &str) -> String {
    let id: String = event_id.chars().filter(char::is_ascii_hexdigit).collect();
    format!("/ui/events/{id}")
}

/// One sink's record of an event, in words.
pub fn delivery(d: &DeliveryStatus, now: u64) -> Value {
    let detail = match (d.state, d.at) {
        ("waiting", Some(at)) if at > now => {
            format!("next attempt {} (in {})", when(at), span(at - now))
        }
        ("waiting", Some(at)) => format!("next attempt due since {}", when(at)),
        ("delivered", Some(at)) => format!("at {}", when(at)),
        ("dead", Some(at)) => format!("since {}", when(at)),
        ("ready", _) if d.attempts > 0 => "queued to be sent again".into(),
        ("ready", _) => "queued to be sent".into(),
        _ => String::new(),
    };
    json!({
        "sink": d.sink,
        "state": d.state,
        "detail": detail,
        "attempts": d.attempts,
        "error": d.error,
    })
}

/// An event as a row of the events list.
pub fn event_row(s: &EventStatus, now: u64) -> Value {
    let e = s.event.as_ref();
    json!({
        "event_id": e.map(|e| e.event_id.as_str()).unwrap_or_default(),
        "url": e.map(|e| event_link(&e.event_id)).unwrap_or_default(),
        "accepted": when(s.accepted_at),
        "hook": e.map(|e| e.hook.as_str()).unwrap_or_default(),
        "kind": e.map(|e| e.kind.as_str()).unwrap_or_default(),
        "source": e.map(|e| e.source.as_str()).unwrap_or_default(),
        "operation": e.map(|e| e.operation.as_str()).unwrap_or_default(),
        "id": e.map(|e| e.id.as_str()).unwrap_or_default(),
        "user": e.and_then(|e| e.user.as_deref()).unwrap_or_default(),
        "deliveries": s.deliveries.iter().map(|d| delivery(d, now)).collect::<Vec<_>>(),
    })
}

/// JSON text indented for reading; text that is not JSON is shown as it is.
pub fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_string())
}

/// The page frame every signed-in page shares: the CSRF token for its forms, which nav entry
/// is current, and the title.
pub fn frame(session: &Session, nav: &str, title: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("csrf".into(), json!(session.csrf));
    m.insert("nav".into(), json!(nav));
    m.insert("title".into(), json!(title));
    m.insert("refresh".into(), json!(0));
    m.insert("now".into(), json!(when(now_ms())));
    m
}

/// A page that only says something (not found, refused, a queue error).
#[derive(Debug, Serialize)]
pub struct Message {
    csrf: String,
    nav: &'static str,
    title: String,
    message: String,
    refresh: u32,
}

impl Message {
    /// A message page for a signed-in browser.
    pub fn new(session: &Session, title: &str, message: &str) -> Self {
        Message {
            csrf: session.csrf.clone(),
            nav: "",
            title: title.into(),
            message: message.into(),
            refresh: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(span(192_400), "3m 12s");
        assert_eq!(span(10), "under a second");
        assert_eq!(bytes(100 * 1024 * 1024), "100.0 MiB");
        assert_eq!(
            link("/ui/events", &[("q", Some("a b&c")), ("hook", None)]),
            "/ui/events?q=a+b%26c"
        );
        assert_eq!(link("/ui/dead", &[("sink", Some(""))]), "/ui/dead");
        assert_eq!(event_link("ab<script>12"), "/ui/events/abc12");
        assert_eq!(pretty("{\"a\":1}"), "{\n  \"a\": 1\n}");
        assert_eq!(pretty("<x>"), "<x>");
    }
}
