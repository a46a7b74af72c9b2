//! What messages of every sink share: the event headers, the payload template, a body shown
//! by `explain`.

use super::Check;
use crate::event::Event;
use crate::render::PayloadFormat;

/// The headers every broker message carries, so consumers can route and deduplicate.
pub fn event_headers(event: &Event) -> Vec<(&'static str, String)> {
    header_values(event)
        .into_iter()
        .map(|(key, value)| (key, value.to_string()))
        .collect()
}

/// [`event_headers`] borrowed from the event, for a sink that copies them into each message.
pub(crate) fn header_values(event: &Event) -> [(&'static str, &str); 5] {
    [
        ("event_id", &event.event_id),
        ("hook", &event.hook),
        ("kind", event.kind.as_str()),
        ("source", &event.source),
        ("operation", &event.operation),
    ]
}

/// A message body for display: JSON when it parses, text otherwise.
pub(crate) fn body_for_display(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(body).into_owned()))
}

/// Checks and compiles a sink's `payload_template`, which `payload = "template"` needs.
pub(crate) fn check_payload_template(
    check: &mut Check<'_>,
    format: PayloadFormat,
    template: Option<&str>,
) {
    match (format, template) {
        (PayloadFormat::Template, Some(t)) => check.template("payload_template", t),
        (PayloadFormat::Template, None) => check.problem(
            "payload_template",
            "payload = \"template\" needs a payload_template",
        ),
        (_, Some(_)) => check.problem(
            "payload_template",
            "set payload = \"template\" to use a payload_template",
        ),
        (_, None) => {}
    }
}

/// The renderer name of a sink's payload template.
pub(crate) fn payload_template_name(sink: &str) -> String {
    format!("sinks.{sink}.payload_template")
}
