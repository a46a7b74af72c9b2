//! Turning events into mail: template contexts, rendering, and the lettre `Message`.
//!
//! Header values (subject, addresses) are rendered, then folded to one line without control
//! characters, so no payload value can start a new header; lettre encodes them on top of that.

use std::time::{Duration, UNIX_EPOCH};

use lettre::Message;
use lettre::message::{Mailboxes, MultiPart, SinglePart};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::Event;
use crate::render::{RenderError, Renderer};

/// Longest subject sent, in characters; a longer one is cut with an ellipsis.
const MAX_SUBJECT: usize = 200;

/// The address fields, in the order they are validated and rendered.
pub(super) const ADDRESS_FIELDS: [&str; 4] = ["from", "to", "cc", "bcc"];

/// A mail rendered from templates, before lettre builds the message.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RenderedMail {
    /// Sender, one line.
    pub from: String,
    /// Recipients, one line each (a line may hold several comma-separated addresses).
    pub to: Vec<String>,
    /// Copy recipients.
    pub cc: Vec<String>,
    /// Blind-copy recipients (sent in the envelope only).
    pub bcc: Vec<String>,
    /// Subject, one line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body, when the sink has an HTML template.
    pub html: Option<String>,
}

/// Whether a config string is a template (rendered per mail) rather than a literal.
pub(super) fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// The renderer name of an address template: `sinks.NAME.to[0]`.
pub(super) fn address_template_name(sink: &str, field: &str, i: usize) -> String {
    format!("sinks.{sink}.{field}[{i}]")
}

/// Folds a rendered header value to one line: control characters (CR, LF, tabs) become
/// spaces, runs of whitespace collapse, and the ends are trimmed.
pub(super) fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A one-line subject of at most `MAX_SUBJECT` characters.
pub(super) fn subject_line(s: &str) -> String {
    let line = one_line(s);
    if line.chars().count() <= MAX_SUBJECT {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_SUBJECT - 1).collect();
    cut.push('…');
    cut
}

/// Epoch milliseconds as `2023-11-14 22:15:21 UTC`.
fn utc(ms: i64) -> Option<String> {
    let ms = u64::try_from(ms).ok().filter(|m| *m > 0)?;
    let t = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    let text = humantime::format_rfc3339_seconds(t).to_string();
    Some(text.replacen('T', " ", 1).replace('Z', " UTC"))
}

/// A link a person can open: the portal page of an item, group or user, or the REST page of a
/// feature layer (from its `changesUrl`); only ever an http(s) URL.
fn link(event: &Event) -> Option<String> {
    link_of(event).filter(|l| crate::render::is_http_link(l))
}

fn link_of(event: &Event) -> Option<String> {
    let id = utf8_percent_encode(&event.id, NON_ALPHANUMERIC).to_string();
    let props = &event.properties;
    let survey = props.get("surveyInfo").and_then(|s| s.get("serviceUrl"));
    if let Some(service) = survey {
        let service = service.as_str()?;
        let layer = props.get("layerInfo").and_then(|l| l.get("id"));
        return Some(match layer {
            Some(Value::Number(n)) => format!("{}/{n}", service.trim_end_matches('/')),
            _ => service.to_string(),
        });
    }
    if let Some(portal) = &event.portal {
        let base = portal.trim_end_matches('/');
        return match event.source.as_str() {
            "item" | "items" => Some(format!("{base}/home/item.html?id={id}")),
            "group" | "groups" => Some(format!("{base}/home/group.html?id={id}")),
            "user" | "users" => Some(format!("{base}/home/user.html?user={id}")),
            _ => Some(format!("{base}/home/organization.html")),
        };
    }
    let changes = event.properties.get("changesUrl")?.as_str()?;
    let (service, _) = changes.split_once("/extractChanges")?;
    match event.properties.get("layerId") {
        Some(Value::Number(n)) => Some(format!("{service}/{n}")),
        Some(Value::String(s)) if !s.is_empty() => Some(format!("{service}/{s}")),
        _ => Some(service.to_string()),
    }
}

/// One event's template variables: its fields, `payload` (the parsed ArcGIS payload), and for
/// mail `when_utc`, `accepted_utc` (readable times) and `link` (where known).
pub(super) fn event_value(event: &Event, payload: &str) -> Map<String, Value> {
    let mut map = match serde_json::to_value(event) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let parsed = serde_json::from_str(payload).unwrap_or(Value::Null);
    map.insert("payload".into(), parsed);
    if let Some(t) = event.when.and_then(utc) {
        map.insert("when_utc".into(), Value::from(t));
    }
    if let Some(t) = utc(event.accepted_at) {
        map.insert("accepted_utc".into(), Value::from(t));
    }
    if let Some(l) = link(event) {
        map.insert("link".into(), Value::from(l));
    }
    map
}

/// The context of a mail for one event.
pub(super) fn single_context(event: &Event, payload: &str) -> tera::Context {
    tera::Context::from_value(Value::Object(event_value(event, payload))).unwrap_or_default()
}

/// The context of a digest: `events` (each as a single mail would see it), `count`, and the
/// first event's fields at the top level (so address templates work in both modes).
pub(super) fn digest_context<'a>(
    items: impl Iterator<Item = (&'a Event, &'a str)>,
) -> tera::Context {
    let events: Vec<Value> = items
        .map(|(e, p)| Value::Object(event_value(e, p)))
        .collect();
    let mut top = match events.first() {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    top.insert("count".into(), Value::from(events.len()));
    top.insert("events".into(), Value::Array(events));
    tera::Context::from_value(Value::Object(top)).unwrap_or_default()
}

/// The template base name of a mail about an event of `kind`: the sink's `template` when set,
/// else `digest` for a digest sink, else the kind's own.
pub(super) fn template_for<'a>(template: Option<&'a str>, digest: bool, kind: &'a str) -> &'a str {
    match (template, digest) {
        (Some(t), _) => t,
        (None, true) => "digest",
        (None, false) => kind,
    }
}

/// Renders every part of a mail with template `t`: the `addresses` (`from`, `to`, `cc`, `bcc`
/// settings in `ADDRESS_FIELDS` order, literal or templated), subject, text and HTML.
pub(super) fn render_mail(
    sink: &str,
    addresses: [&[String]; 4],
    t: &str,
    r: &Renderer,
    ctx: &tera::Context,
) -> Result<RenderedMail, RenderError> {
    // A templated address that renders empty is left out (an optional cc, say).
    let list = |field: &str, values: &[String]| -> Result<Vec<String>, RenderError> {
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let line = if is_template(v) {
                one_line(&r.render(&address_template_name(sink, field, i), ctx)?)
            } else {
                v.clone()
            };
            if !line.is_empty() {
                out.push(line);
            }
        }
        Ok(out)
    };
    let [from, to, cc, bcc] = addresses;
    let html_name = format!("{t}.html");
    Ok(RenderedMail {
        from: list("from", from)?.pop().unwrap_or_default(),
        to: list("to", to)?,
        cc: list("cc", cc)?,
        bcc: list("bcc", bcc)?,
        subject: subject_line(&r.render(&format!("{t}.subject"), ctx)?),
        text: r.render(&format!("{t}.txt"), ctx)?,
        html: if r.has(&html_name) {
            Some(r.render(&html_name, ctx)?)
        } else {
            None
        },
    })
}

/// Parses one address line (possibly several comma-separated mailboxes).
pub(super) fn parse_addresses(line: &str) -> Result<Mailboxes, String> {
    line.parse::<Mailboxes>()
        .map_err(|e| format!("{line:?} is not an email address: {e}"))
}

impl RenderedMail {
    /// Builds the message: text only, or multipart/alternative with the HTML part.
    pub fn message(&self, message_id: String) -> Result<Message, String> {
        let from = parse_addresses(&self.from)?
            .into_single()
            .ok_or_else(|| format!("from must be one address, found {:?}", self.from))?;
        let mut b = Message::builder()
            .from(from)
            .subject(self.subject.clone())
            .message_id(Some(message_id));
        for line in &self.to {
            for m in parse_addresses(line)? {
                b = b.to(m);
            }
        }
        for line in &self.cc {
            for m in parse_addresses(line)? {
                b = b.cc(m);
            }
        }
        for line in &self.bcc {
            for m in parse_addresses(line)? {
                b = b.bcc(m);
            }
        }
        let built = match &self.html {
            Some(html) => b.multipart(MultiPart::alternative_plain_html(
                self.text.clone(),
                html.clone(),
            )),
            None => b.singlepart(SinglePart::plain(self.text.clone())),
        };
        built.map_err(|e| format!("cannot build the mail: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_one_line() {
        assert_eq!(one_line(" a\r\nBcc: evil@x\t b \n"), "a Bcc: evil@x b");
        let long = "x".repeat(500);
        let s = subject_line(&long);
        assert_eq!(s.chars().count(), MAX_SUBJECT);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn times_and_links() {
        assert_eq!(
            utc(1_700_000_121_002).as_deref(),
            Some("2023-11-14 22:15:21 UTC")
        );
        assert_eq!(utc(0), None);
        let mut e: Event = serde_json::from_value(serde_json::json!({
            "event_id": "00", "kind": "portal", "source": "item", "operation": "delete",
            "id": "a b", "hook": "h", "portal": "https://gis.example.org/portal/"
        }))
        .unwrap();
        assert_eq!(
            link(&e).as_deref(),
            Some("https://gis.example.org/portal/home/item.html?id=a%20b")
        );
        e.portal = None;
        e.properties.insert(
            "changesUrl".into(),
            "https://s.example.com/x/FeatureServer/extractChanges?serverGens=[1,2]".into(),
        );
        e.properties.insert("layerId".into(), 0.into());
        assert_eq!(
            link(&e).as_deref(),
            Some("https://s.example.com/x/FeatureServer/0")
        );
        e.properties.insert(
            "changesUrl".into(),
            "javascript:alert(1)//extractChanges".into(),
        );
        assert_eq!(link(&e), None, "only http(s) URLs become links");
        e.portal = Some("javascript:alert(document.domain)//".into());
        assert_eq!(link(&e), None);
    }
}
