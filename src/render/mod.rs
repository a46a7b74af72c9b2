//! Tera templates shared by the sinks: topics, keys, routing keys, message bodies and mail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

mod builtin;
mod filters;
mod plain;

use builtin::BUILTIN;
pub use filters::{LOCAL_FORMAT, is_http_link};
pub use jiff::tz::TimeZone;
use plain::{AUTOESCAPED, Needs, Part};

use crate::event::Event;
use crate::problem::Problem;

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {message}")]
pub struct RenderError {
    /// The template's name (`sinks.bus.topic`, `item-deleted.subject`).
    pub name: String,
    /// Tera's explanation, with its causes.
    pub message: String,
}

/// What a sink sends as the message body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The normalized event as JSON.
    #[default]
    Event,
    /// The ArcGIS payload the event came in, as received.
    Raw,
    /// The sink's `payload_template`, rendered.
    Template,
}

/// All compiled templates, by name; built at config load so that mistakes surface there.
#[derive(Debug, Clone)]
pub struct Renderer {
    tera: Arc<tera::Tera>,
    dir: PathBuf,
    /// What inline templates need, so that a literal topic or an `{{ id }}` key does not
    /// build (and parse the payload into) a full context for every event.
    needs: Arc<HashMap<String, Needs>>,
    /// Built-in templates beyond the shared ones (file name, text): the senders' mail templates.
    builtins: Arc<Vec<(&'static str, &'static str)>>,
}

impl Renderer {
    /// An empty renderer whose file templates live in `dir`, printing local times in UTC.
    pub fn new(dir: PathBuf) -> Self {
        Renderer::in_zone(dir, &TimeZone::UTC)
    }

    /// An empty renderer whose file templates live in `dir`, whose `local` filter prints times
    /// in `zone` (`templates_timezone`).
    pub fn in_zone(dir: PathBuf, zone: &TimeZone) -> Self {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(AUTOESCAPED.to_vec());
        filters::register(&mut tera, zone);
        Renderer {
            tera: Arc::new(tera),
            dir,
            needs: Arc::default(),
            builtins: Arc::default(),
        }
    }

    /// The same renderer with `extra` built-in templates (file name, text), which a file of the
    /// same name in the templates directory overrides like the shared ones.
    pub fn with_builtins(mut self, extra: Vec<(&'static str, &'static str)>) -> Self {
        self.builtins = Arc::new(extra);
        self
    }

    /// The built-in template of file name `file`, if there is one.
    fn builtin(&self, file: &str) -> Option<&'static str> {
        BUILTIN
            .iter()
            .chain(self.builtins.iter())
            .find(|(f, _)| *f == file)
            .map(|(_, t)| *t)
    }

    /// The directory file templates are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Compiles an inline template under `name`, recording a problem at `key` if it is invalid.
    pub fn add_inline(&mut self, name: &str, text: &str, key: &str, problems: &mut Vec<Problem>) {
        let tera = Arc::make_mut(&mut self.tera);
        if let Err(e) = tera.add_raw_template(name, text) {
            problems.push(Problem::new(key, error_chain(&e)));
        }
        let needs = Arc::make_mut(&mut self.needs);
        match Needs::of(name, text) {
            Some(n) => needs.insert(name.to_string(), n),
            None => needs.remove(name),
        };
    }

    /// Compiles a mail's template set `base`: `base.subject`, `base.txt` and the optional
    /// `base.html`. The set comes whole from the templates directory when that holds
    /// `base.subject.tera` or `base.txt.tera`, else whole from the built-in templates, so a
    /// directory's own text is never mixed with a built-in HTML part.
    pub fn add_set(&mut self, base: &str, key: &str, problems: &mut Vec<Problem>) {
        let file = |part: &str| format!("{base}.{part}.tera");
        let in_dir = ["subject", "txt"]
            .iter()
            .any(|part| self.dir.join(file(part)).exists());
        for (part, required) in [("subject", true), ("txt", true), ("html", false)] {
            let name = format!("{base}.{part}");
            let file = file(part);
            let builtin = self.builtin(&file);
            let added = match (in_dir, builtin) {
                (true, _) if self.dir.join(&file).exists() => {
                    let path = self.dir.join(&file);
                    let tera = Arc::make_mut(&mut self.tera);
                    tera.add_template_file(&path, Some(&name))
                }
                (false, Some(text)) => Arc::make_mut(&mut self.tera).add_raw_template(&name, text),
                _ => {
                    if required {
                        problems.push(Problem::new(
                            key,
                            format!(
                                "template file {} does not exist, and there is no built-in template {base:?}",
                                self.dir.join(&file).display()
                            ),
                        ));
                    }
                    continue;
                }
            };
            Arc::make_mut(&mut self.needs).remove(&name);
            if let Err(e) = added {
                problems.push(Problem::new(key, error_chain(&e)));
            }
        }
    }

    /// Compiles one template `name` from `file` in the templates directory, or else from the
    /// built-in template of that file name (an HTTP sink's `teams` and `slack` bodies).
    pub fn add_file_or_builtin(
        &mut self,
        name: &str,
        file: &str,
        key: &str,
        problems: &mut Vec<Problem>,
    ) {
        let path = self.dir.join(file);
        let builtin = self.builtin(file);
        let tera = Arc::make_mut(&mut self.tera);
        let added = match builtin {
            _ if path.exists() => tera.add_template_file(&path, Some(name)),
            Some(text) => tera.add_raw_template(name, text),
            None => {
                problems.push(Problem::new(
                    key,
                    format!(
                        "template file {} does not exist, and there is no built-in template {file:?}",
                        path.display()
                    ),
                ));
                return;
            }
        };
        Arc::make_mut(&mut self.needs).remove(name);
        if let Err(e) = added {
            problems.push(Problem::new(key, error_chain(&e)));
        }
    }

    /// Whether a template of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.tera.get_template_names().any(|n| n == name)
    }

    /// Renders `name` with the given context.
    pub fn render(&self, name: &str, context: &tera::Context) -> Result<String, RenderError> {
        self.tera.render(name, context).map_err(|e| RenderError {
            name: name.to_string(),
            message: error_chain(&e),
        })
    }

    /// Renders `name` for one event.
    pub fn render_event(
        &self,
        name: &str,
        event: &Event,
        payload: &str,
    ) -> Result<String, RenderError> {
        self.render_with(name, event, payload, None)
    }

    /// Renders `name` for one event with every string of the event and its payload passed
    /// through `escape` before the template sees it, so no value can add structure to the text
    /// it lands in (an HTTP sink's URL). The template's own text is kept as written.
    pub fn render_event_escaped(
        &self,
        name: &str,
        event: &Event,
        payload: &str,
        escape: fn(&str) -> String,
    ) -> Result<String, RenderError> {
        self.render_with(name, event, payload, Some(escape))
    }

    /// Renders `name` for one event, building only the context it needs, with the event's
    /// strings escaped when `escape` is given.
    fn render_with(
        &self,
        name: &str,
        event: &Event,
        payload: &str,
        escape: Option<fn(&str) -> String>,
    ) -> Result<String, RenderError> {
        let payload = match self.needs.get(name) {
            Some(Needs::Nothing(text)) => return Ok(text.clone()),
            Some(Needs::Fields(parts)) => {
                return Ok(parts.iter().fold(String::new(), |mut out, p| {
                    match (p, escape) {
                        (Part::Text(t), _) => out.push_str(t),
                        (Part::Field(f), None) => out.push_str(f.of(event)),
                        (Part::Field(f), Some(escape)) => out.push_str(&escape(f.of(event))),
                    }
                    out
                }));
            }
            Some(Needs::EventOnly) => None,
            None => Some(payload),
        };
        let mut value = context_value(event, payload);
        if let Some(escape) = escape {
            escape_strings(&mut value, escape);
        }
        self.render(name, &tera::Context::from_value(value).unwrap_or_default())
    }

    /// The message body for `event` in `format`; `template` names the sink's payload template.
    pub fn encode(
        &self,
        format: PayloadFormat,
        template: &str,
        event: &Event,
        payload: &str,
    ) -> Result<Vec<u8>, RenderError> {
        // About the payload's size whatever the format (an event carries most of its payload),
        // so that the buffer is not grown and copied several times over.
        let mut out = Vec::with_capacity(payload.len() + 512);
        self.encode_into(format, template, event, payload, &mut out)?;
        Ok(out)
    }

    /// [`Renderer::encode`] appended to `out`, so that a sink whose client copies each message
    /// (librdkafka does) encodes a whole batch into one reused buffer.
    pub fn encode_into(
        &self,
        format: PayloadFormat,
        template: &str,
        event: &Event,
        payload: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderError> {
        match format {
            PayloadFormat::Event => {
                serde_json::to_writer(&mut *out, event).map_err(|e| RenderError {
                    name: "event".into(),
                    message: e.to_string(),
                })
            }
            PayloadFormat::Raw => {
                out.extend_from_slice(payload.as_bytes());
                Ok(())
            }
            PayloadFormat::Template => {
                out.extend_from_slice(self.render_event(template, event, payload)?.as_bytes());
                Ok(())
            }
        }
    }
}

/// The template context for one event: its fields, plus `payload` (the parsed ArcGIS payload).
pub fn context(event: &Event, payload: &str) -> tera::Context {
    context_of(event, Some(payload))
}

/// The context for one event, with `payload` only when it is given.
fn context_of(event: &Event, payload: Option<&str>) -> tera::Context {
    tera::Context::from_value(context_value(event, payload)).unwrap_or_default()
}

/// The context's JSON: the event's fields, and `payload` parsed when it is given.
fn context_value(event: &Event, payload: Option<&str>) -> Value {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    if let (Value::Object(map), Some(payload)) = (&mut value, payload) {
        let parsed = serde_json::from_str(payload).unwrap_or(Value::Null);
        map.insert("payload".into(), parsed);
    }
    value
}

/// Replaces every string value in `value` by its escaped form. Object keys stay as they are, so
/// that lookups by name still work; a template that prints keys must loop, which the callers
/// that escape refuse.
fn escape_strings(value: &mut Value, escape: fn(&str) -> String) {
    match value {
        Value::String(s) => *s = escape(s),
        Value::Array(items) => items.iter_mut().for_each(|v| escape_strings(v, escape)),
        Value::Object(map) => map.values_mut().for_each(|v| escape_strings(v, escape)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Tera's error with its causes, which hold the useful part (line, variable name).
pub(crate) fn error_chain(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            event_id: "ab".repeat(16),
            operation: "delete".into(),
            id: "i1".into(),
            user: Some("<script>".into()),
            hook: "portal".into(),
            ..crate::event::sample(1)
        }
    }

    #[test]
    fn inline_templates_render_and_errors_are_named() {
        let mut r = Renderer::new(PathBuf::from("templates"));
        let mut p = vec![];
        r.add_inline(
            "t",
            "arcgis.{{ kind }}.{{ operation }}",
            "sinks.x.topic",
            &mut p,
        );
        r.add_inline("bad", "{{ kind ", "sinks.x.key", &mut p);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "sinks.x.key");
        assert_eq!(
            r.render_event("t", &event(), "{}").unwrap(),
            "arcgis.portal.delete"
        );
    }

    #[test]
    fn shortcuts_render_what_the_full_context_renders() {
        let mut r = Renderer::new(PathBuf::from("templates"));
        let mut p = vec![];
        let cases = [
            ("literal", "arcgis.events"),
            (
                "fields",
                "arcgis.{{ kind }}.{{operation}}/{{\n hook }}:{{ id }}}-{{ event_id }}",
            ),
            ("key", "{{ id }}"),
            ("event-only", "{{ kind }}/{{ id | upper }}{# note #}"),
            ("trimmed", "a {{- id }}"),
            ("optional", "{{ kind }}.{{ user }}"),
            ("payload", "{{ payload.a }}-{{ id }}"),
            ("context", "{{ __tera_context | length }}"),
        ];
        for (name, text) in cases {
            r.add_inline(name, text, "k", &mut p);
        }
        assert!(p.is_empty(), "{p:?}");
        assert!(matches!(r.needs.get("literal"), Some(Needs::Nothing(_))));
        assert!(matches!(r.needs.get("fields"), Some(Needs::Fields(_))));
        assert!(matches!(r.needs.get("key"), Some(Needs::Fields(_))));
        assert!(matches!(r.needs.get("event-only"), Some(Needs::EventOnly)));
        assert!(matches!(r.needs.get("trimmed"), Some(Needs::EventOnly)));
        assert!(matches!(r.needs.get("optional"), Some(Needs::EventOnly)));
        assert!(r.needs.get("payload").is_none());
        assert!(r.needs.get("context").is_none());
        let (e, payload) = (event(), r#"{"a":7}"#);
        for (name, _) in cases {
            let full = r.render(name, &context(&e, payload)).unwrap();
            assert_eq!(r.render_event(name, &e, payload).unwrap(), full, "{name}");
        }
        assert_eq!(r.render_event("payload", &e, payload).unwrap(), "7-i1");
        assert_eq!(
            r.render_event("fields", &e, payload).unwrap(),
            format!("arcgis.portal.delete/portal:i1}}-{}", e.event_id)
        );
        // An autoescaped name prints its fields through tera.
        r.add_inline("k.html", "{{ id }}", "k", &mut p);
        assert!(matches!(r.needs.get("k.html"), Some(Needs::EventOnly)));
        // A name compiled again with a template that needs more loses its shortcut.
        r.add_inline("literal", "{{ payload.a }}", "k", &mut p);
        assert_eq!(r.render_event("literal", &e, payload).unwrap(), "7");
    }

    #[test]
    fn the_utc_filter_formats_epoch_milliseconds() {
        let mut r = Renderer::new(PathBuf::from("templates"));
        let mut p = vec![];
        r.add_inline("t", "{{ when | utc }}", "k", &mut p);
        let e = Event {
            when: Some(1_700_000_120_001),
            ..event()
        };
        assert_eq!(
            r.render_event("t", &e, "{}").unwrap(),
            "2023-11-14 22:15:20 UTC"
        );
        let bad = Event {
            when: None,
            ..event()
        };
        assert!(r.render_event("t", &bad, "{}").is_err());
    }

    #[test]
    fn formats() {
        let r = Renderer::new(PathBuf::from("templates"));
        let raw = r
            .encode(PayloadFormat::Raw, "", &event(), "{\"a\":1}")
            .unwrap();
        assert_eq!(raw, b"{\"a\":1}");
        let ev: Event =
            serde_json::from_slice(&r.encode(PayloadFormat::Event, "", &event(), "{}").unwrap())
                .unwrap();
        assert_eq!(ev, event());
    }

    #[test]
    fn buttons_link_only_http_urls() {
        let mut r = Renderer::new(PathBuf::from("templates"));
        let mut p = vec![];
        r.add_file_or_builtin("teams", "teams.json.tera", "teams", &mut p);
        r.add_file_or_builtin("slack", "slack.json.tera", "slack", &mut p);
        assert!(p.is_empty(), "{p:?}");
        let hostile = Event {
            kind: crate::event::EventKind::new("portal"),
            source: "item".into(),
            portal: Some("javascript:alert(document.domain)//".into()),
            ..event()
        };
        let fine = Event {
            portal: Some("https://gis.example.org/portal".into()),
            ..hostile.clone()
        };
        for name in ["teams", "slack"] {
            let out = r.render_event(name, &hostile, "{}").unwrap();
            assert!(!out.contains("javascript"), "{name}: {out}");
            assert!(!out.contains("Open in ArcGIS"), "{name}: {out}");
            let out = r.render_event(name, &fine, "{}").unwrap();
            assert!(
                out.contains("https://gis.example.org/portal/home/item.html?id=i1"),
                "{name}: {out}"
            );
        }
        assert!(is_http_link("http://h.example/x") && !is_http_link("data:text/html,x"));
    }
}
