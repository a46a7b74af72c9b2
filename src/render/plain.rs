//! Inline templates that render without tera: literal text, and text with fields every
//! event has, which sinks render for every message (topics, keys, routing keys).

use crate::event::Event;

/// What rendering an inline template needs; templates not listed need the full context.
#[derive(Debug, Clone)]
pub(super) enum Needs {
    /// Nothing: it has no tags and renders to this text.
    Nothing(String),
    /// Literal text and fields every event has (`arcgis.{{ kind }}.{{ operation }}`,
    /// `{{ id }}`): put together without building a context, as sinks do for every message.
    Fields(Vec<Part>),
    /// The event's fields but not `payload`.
    EventOnly,
}

/// A piece of a [`Needs::Fields`] template.
#[derive(Debug, Clone)]
pub(super) enum Part {
    /// Text as written.
    Text(String),
    /// A field's value, as `{{ field }}` prints it.
    Field(Field),
}

/// The event fields that are strings on every event, so `{{ field }}` prints them as they are
/// and never fails (optional fields fail when absent: those go through tera).
#[derive(Debug, Clone, Copy)]
pub(super) enum Field {
    EventId,
    Kind,
    Source,
    Operation,
    Id,
    Hook,
}

impl Field {
    fn named(name: &str) -> Option<Field> {
        Some(match name {
            "event_id" => Field::EventId,
            "kind" => Field::Kind,
            "source" => Field::Source,
            "operation" => Field::Operation,
            "id" => Field::Id,
            "hook" => Field::Hook,
            _ => return None,
        })
    }

    pub(super) fn of(self, event: &Event) -> &str {
        match self {
            Field::EventId => &event.event_id,
            Field::Kind => event.kind.as_str(),
            Field::Source => &event.source,
            Field::Operation => &event.operation,
            Field::Id => &event.id,
            Field::Hook => &event.hook,
        }
    }
}

/// Template names tera autoescapes (see [`super::Renderer::new`]): their fields must go through tera.
pub(super) const AUTOESCAPED: [&str; 2] = [".html", ".html.tera"];

impl Needs {
    /// Classifies template `name`'s source; `None` when it may use the payload or other
    /// templates.
    pub(super) fn of(name: &str, text: &str) -> Option<Needs> {
        if !["{{", "{%", "{#"].iter().any(|t| text.contains(t)) {
            return Some(Needs::Nothing(text.to_string()));
        }
        if !AUTOESCAPED.iter().any(|s| name.ends_with(s)) {
            if let Some(parts) = Needs::fields(text) {
                return Some(Needs::Fields(parts));
            }
        }
        let full = ["payload", "__tera_context", "include", "import", "extends"];
        (!full.iter().any(|w| text.contains(w))).then_some(Needs::EventOnly)
    }

    /// The parts of a template made only of text and `{{ field }}` tags naming a [`Field`]
    /// (no filters, no whitespace control); `None` for anything else.
    fn fields(text: &str) -> Option<Vec<Part>> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (literal, tag) = match rest.find("{{") {
                Some(at) => (&rest[..at], Some(&rest[at + 2..])),
                None => (rest, None),
            };
            if literal.contains("{%") || literal.contains("{#") {
                return None;
            }
            if !literal.is_empty() {
                parts.push(Part::Text(literal.to_string()));
            }
            let Some(tag) = tag else { break };
            let end = tag.find("}}")?;
            let inner = &tag[..end];
            if inner.starts_with('-') || inner.ends_with('-') {
                return None;
            }
            parts.push(Part::Field(Field::named(inner.trim())?));
            rest = &tag[end + 2..];
        }
        Some(parts)
    }
}
