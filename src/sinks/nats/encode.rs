//! From delivery to JetStream message: the subject (every token an event value brings checked
//! against NATS's rules), the body and the headers.
//!
//! An event value may not add or split tokens, nor make a wildcard: its `.`, `*`, `>`,
//! whitespace and control characters are marked before the template sees them, and a subject
//! that holds a mark is refused (the delivery is dead-lettered with the reason), never sent.

use async_nats::HeaderMap;

use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::sinks::{header_values, payload_template_name};

/// Where an event value put a `.` (the marks are private-use characters).
const DOT: char = '\u{E000}';
/// Where an event value put a `*`.
const STAR: char = '\u{E001}';
/// Where an event value put a `>`.
const GT: char = '\u{E002}';
/// Where an event value put whitespace or a control character.
const SPACE: char = '\u{E003}';

/// One message ready to publish.
pub(super) struct Message {
    /// Rendered from the sink's `subject` template.
    pub subject: String,
    /// The event headers, `Nats-Msg-Id` (the event id), `Content-Type`, and
    /// `Nats-Expected-Stream` when the sink names its stream.
    pub headers: HeaderMap,
    /// The event, the raw payload or the rendered `payload_template`.
    pub body: Vec<u8>,
}

/// Renders a sink's deliveries into messages.
pub(super) struct Encoder {
    renderer: Renderer,
    subject: String,
    payload: PayloadFormat,
    payload_template: String,
    stream: Option<String>,
}

impl Encoder {
    /// The encoder for sink `name`, whose templates `renderer` holds; `stream` is the stream
    /// each message must land in, when the sink names one.
    pub fn new(
        name: &str,
        payload: PayloadFormat,
        stream: Option<String>,
        renderer: Renderer,
    ) -> Self {
        Encoder {
            renderer,
            subject: format!("sinks.{name}.subject"),
            payload,
            payload_template: payload_template_name(name),
            stream,
        }
    }

    /// The message for one event, or why it cannot be sent (a hostile or empty subject token,
    /// a header value with a line break, a template that fails).
    pub fn message(&self, event: &Event, payload: &str) -> Result<Message, String> {
        let subject = self
            .renderer
            .render_event_escaped(&self.subject, event, payload, mark)
            .map_err(|e| e.to_string())?;
        check_subject(&subject)?;
        if let Some((key, _)) = header_values(event)
            .into_iter()
            .find(|(_, v)| v.chars().any(char::is_control))
        {
            return Err(format!(
                "the event's {key} holds a control character (a line break?): it cannot be a NATS header; not sent"
            ));
        }
        let body = self
            .renderer
            .encode(self.payload, &self.payload_template, event, payload)
            .map_err(|e| e.to_string())?;
        Ok(Message {
            headers: self.headers(event, &body),
            subject,
            body,
        })
    }

    /// The message as the templates render it, unchecked (what `explain` shows).
    pub fn render(&self, event: &Event, payload: &str) -> Result<Message, RenderError> {
        let subject = self.renderer.render_event(&self.subject, event, payload)?;
        let body = self
            .renderer
            .encode(self.payload, &self.payload_template, event, payload)?;
        Ok(Message {
            headers: self.headers(event, &body),
            subject,
            body,
        })
    }

    fn headers(&self, event: &Event, body: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.event_id.as_str());
        if let Some(stream) = &self.stream {
            headers.insert(async_nats::header::NATS_EXPECTED_STREAM, stream.as_str());
        }
        headers.insert("Content-Type", content_type(self.payload, body));
        for (key, value) in header_values(event) {
            headers.insert(key, value);
        }
        headers
    }
}

/// `application/json` for events and raw payloads, and for a template that renders JSON.
fn content_type(format: PayloadFormat, body: &[u8]) -> &'static str {
    match format {
        PayloadFormat::Event | PayloadFormat::Raw => "application/json",
        PayloadFormat::Template
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() =>
        {
            "application/json"
        }
        PayloadFormat::Template => "text/plain; charset=utf-8",
    }
}

/// An event value as it goes into a subject: what NATS would read as structure, marked.
fn mark(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '.' => DOT,
            '*' => STAR,
            '>' => GT,
            c if c.is_whitespace() || c.is_control() => SPACE,
            c => c,
        })
        .collect()
}

/// Whether a rendered subject may be published to: no mark of a hostile event value, no empty
/// token, no wildcard, no whitespace.
pub(super) fn check_subject(subject: &str) -> Result<(), String> {
    let from_value = |what: &str| {
        Err(format!(
            "an event value would put {what} into the subject; values may not add, split or \
             widen subject tokens; not sent"
        ))
    };
    if subject.contains(DOT) {
        return from_value("a `.`");
    }
    if subject.contains(STAR) || subject.contains(GT) {
        return from_value("a wildcard (`*` or `>`)");
    }
    if subject.contains(SPACE) {
        return from_value("a space or control character");
    }
    if subject.is_empty() {
        return Err("the subject renders empty; not sent".into());
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!(
                "the subject {subject:?} has an empty token (an empty event value?); not sent"
            ));
        }
        if token.contains(['*', '>']) {
            return Err(format!(
                "the subject {subject:?} has a wildcard; one cannot publish to it"
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("the subject {subject:?} has whitespace; not sent"));
        }
    }
    Ok(())
}

/// The template text split into tokens at the dots outside its tags: each token, and whether
/// a tag is in it.
fn tokens(template: &str) -> Vec<(String, bool)> {
    let mut out = vec![(String::new(), false)];
    let mut depth_end: Option<&str> = None;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        match depth_end {
            None if rest.starts_with("{{") || rest.starts_with("{%") || rest.starts_with("{#") => {
                depth_end = Some(match &rest[..2] {
                    "{{" => "}}",
                    "{%" => "%}",
                    _ => "#}",
                });
                if let Some(last) = out.last_mut() {
                    last.1 = true;
                }
                rest = &rest[2..];
                continue;
            }
            Some(end) if rest.starts_with(end) => {
                depth_end = None;
                rest = &rest[2..];
                continue;
            }
            None if c == '.' => out.push((String::new(), false)),
            None => {
                if let Some(last) = out.last_mut() {
                    last.0.push(c);
                }
            }
            Some(_) => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What is wrong with the template's own text as a subject (an empty token, a wildcard,
/// whitespace), if anything.
pub(super) fn template_problem(template: &str) -> Option<String> {
    for (text, tagged) in tokens(template) {
        if text.is_empty() && !tagged {
            return Some("the subject would have an empty token (a `.` at an end, or `..`)".into());
        }
        if text.contains(['*', '>']) {
            return Some("a subject to publish to may not hold a wildcard (`*`, `>`)".into());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some("a subject may not hold whitespace".into());
        }
    }
    None
}

/// The subjects the template can render, as a filter (`arcgis.*.*`): each token with a tag is
/// `*` (a value cannot add tokens); after a `{% %}` block anything may follow, so `>`.
pub(super) fn probe_subject(template: &str) -> String {
    let mut parts = Vec::new();
    for (text, tagged) in tokens(template) {
        if tagged && template.contains("{%") {
            parts.push(">".to_string());
            break;
        }
        parts.push(if tagged { "*".to_string() } else { text });
    }
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::nats::config::tests::{config, renderer};

    fn encoder(lines: &str) -> Encoder {
        let c = config(lines);
        Encoder::new("bus", c.payload, c.stream.clone(), renderer(&c))
    }

    fn event(operation: &str) -> Event {
        Event {
            operation: operation.into(),
            ..crate::event::sample(1)
        }
    }

    #[test]
    fn subjects_render_with_headers() {
        let e = encoder("stream = \"ARCGIS\"");
        let m = e.message(&event("update"), "{}").unwrap();
        assert_eq!(m.subject, "arcgis.portal.update");
        let id = crate::event::sample(1).event_id;
        let get = |k: &str| {
            let name: async_nats::HeaderName = k.parse().unwrap();
            m.headers.get(name).map(|v| v.as_str().to_string())
        };
        assert_eq!(get("Nats-Msg-Id").as_deref(), Some(id.as_str()));
        assert_eq!(get("event_id").as_deref(), Some(id.as_str()));
        assert_eq!(get("operation").as_deref(), Some("update"));
        assert_eq!(get("Nats-Expected-Stream").as_deref(), Some("ARCGIS"));
        assert_eq!(get("Content-Type").as_deref(), Some("application/json"));
        let body: Event = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(body.operation, "update");
    }

    #[test]
    fn hostile_values_are_refused_with_a_reason() {
        let e = encoder("");
        for (value, says) in [
            ("a.b", "`.`"),
            ("*", "wildcard"),
            (">", "wildcard"),
            ("a b", "space"),
            ("a\u{0}b", "space"),
            ("", "empty token"),
        ] {
            let err = e.message(&event(value), "{}").err().unwrap();
            assert!(err.contains(says), "{value:?}: {err}");
        }
        let err = encoder("subject = \"x.{{ user }}\"")
            .message(&event("u"), "{}")
            .err()
            .unwrap();
        assert!(err.contains("sinks.bus.subject"), "{err}");
    }

    #[test]
    fn a_template_gives_its_probe_and_its_own_problems() {
        assert_eq!(
            probe_subject("arcgis.{{ kind }}.{{ operation }}"),
            "arcgis.*.*"
        );
        assert_eq!(probe_subject("a.x{{ id }}y.b"), "a.*.b");
        assert_eq!(probe_subject("a.{% if id %}b{% endif %}.c"), "a.>");
        assert_eq!(probe_subject("fixed.subject"), "fixed.subject");
        assert_eq!(template_problem("arcgis.{{ kind }}.{{ operation }}"), None);
        assert!(template_problem(".a").is_some());
        assert!(template_problem("a.{{ kind }}.").is_some());
        assert!(template_problem("a.*").is_some());
        assert!(template_problem("a b.{{ kind }}").is_some());
        assert!(check_subject("a.b.c").is_ok());
    }
}
