//! The receiver's URL: written out up to the host, templated only after it, with every event
//! value percent-encoded before the template sees it, and checked again before each request.
//!
//! So an event cannot steer a request: its values cannot add `/`, `?`, `#` or `&` (they are
//! encoded as `%2F`, `%3F`, `%23`, `%26`), cannot make a `.` or `..` path segment, and cannot
//! change the scheme, host or port, which `check` requires to be written out.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;

use crate::event::Event;
use crate::render::Renderer;

/// What an event value keeps as it is in a URL: the unreserved characters of RFC 3986.
const KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An event value as it goes into a URL: safe in a path segment and in a query name or value.
pub(super) fn escape_value(value: &str) -> String {
    utf8_percent_encode(value, KEPT).to_string()
}

/// A sink's URL, ready to give each event its request URL.
#[derive(Debug)]
pub(super) enum UrlTemplate {
    /// No template: the same URL for every event.
    Fixed(Url),
    /// A template after the host.
    Templated {
        /// The renderer name of the template.
        name: String,
        /// The scheme, credentials, host and port every rendered URL must keep.
        origin: Url,
        /// The path written before the first tag, as the URL parser normalizes it.
        path_prefix: String,
    },
}

impl UrlTemplate {
    /// Checks `text` (the template compiled as `name`): a literal must be an http(s) URL with a
    /// host; a template must write out the scheme, host and port, and may not loop.
    pub(super) fn new(name: &str, text: &str) -> Result<UrlTemplate, String> {
        let text = text.trim();
        if !is_template(text) {
            // A dot segment would be resolved away silently: refused, as in a template.
            if has_dot_segment(path_part(text)) {
                return Err("the URL's path has a `.` or `..` segment".into());
            }
            return parse_url(text).map(UrlTemplate::Fixed);
        }
        let prefix = static_prefix(text);
        let Some(end) = authority_end(prefix) else {
            return Err(
                "the scheme, host and port must be written out, with a template only after them \
                 (https://host/path/{{ id }}), so that an event cannot choose where the request goes; \
                 a URL kept whole in env:/file: is fine"
                    .into(),
            );
        };
        let origin = parse_url(&prefix[..end])?;
        if loops(text) {
            return Err(
                "a URL template may not loop ({% for %}): it would print names of the event as they are"
                    .into(),
            );
        }
        let path_text = prefix[end..].split(['?', '#']).next().unwrap_or_default();
        if has_dot_segment(path_text) {
            return Err("the URL's path has a `.` or `..` segment".into());
        }
        let path_prefix = parse_url(&format!("{}{path_text}", &prefix[..end]))?
            .path()
            .to_string();
        Ok(UrlTemplate::Templated {
            name: name.to_string(),
            origin,
            path_prefix,
        })
    }

    /// The URL for one event; an error (the event is dead-lettered) when the rendered URL would
    /// leave the configured origin or path.
    pub(super) fn render(
        &self,
        renderer: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Url, String> {
        let (name, origin, path_prefix) = match self {
            UrlTemplate::Fixed(url) => return Ok(url.clone()),
            UrlTemplate::Templated {
                name,
                origin,
                path_prefix,
            } => (name, origin, path_prefix),
        };
        let text = renderer
            .render_event_escaped(name, event, payload, escape_value)
            .map_err(|e| e.to_string())?;
        let text = text.trim();
        if has_dot_segment(path_part(text)) {
            return Err(
                "the url renders with a `.` or `..` path segment from an event value; not sent"
                    .into(),
            );
        }
        let url = parse_url(text)?;
        if !same_origin(&url, origin) {
            return Err(format!(
                "the url renders to {} instead of {}; not sent",
                display_url(url.as_str()),
                display_url(origin.as_str())
            ));
        }
        if !url.path().starts_with(path_prefix.as_str()) {
            return Err(format!(
                "the url renders outside its path {path_prefix:?}; not sent"
            ));
        }
        Ok(url)
    }
}

/// Scheme, credentials, host and port are the same.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.username() == b.username()
        && a.password() == b.password()
}

/// Where the authority of `text` ends (at the `/`, `?` or `#` after `scheme://host`), when
/// `text` has one.
fn authority_end(text: &str) -> Option<usize> {
    let start = text.find("://")? + 3;
    text[start..]
        .find(['/', '?', '#', '\\'])
        .map(|at| start + at)
}

/// The path of a URL's text: after the authority, before `?` or `#`.
fn path_part(text: &str) -> &str {
    authority_end(text)
        .map(|end| text[end..].split(['?', '#']).next().unwrap_or_default())
        .unwrap_or_default()
}

/// Whether a path has a segment the URL parser would resolve away (`.`, `..`, `%2e`, ...).
fn has_dot_segment(path: &str) -> bool {
    path.split(['/', '\\']).any(|segment| {
        let plain = segment.to_ascii_lowercase().replace("%2e", ".");
        plain == "." || plain == ".."
    })
}

/// Whether a template loops (`{% for %}` or `{%- for %}`).
fn loops(text: &str) -> bool {
    text.match_indices("{%").any(|(at, _)| {
        text[at + 2..]
            .trim_start_matches('-')
            .trim_start()
            .starts_with("for ")
    })
}

/// A URL as reqwest takes it: absolute, `http` or `https`, with a host.
pub(super) fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| {
        format!(
            "the url renders to something that is not a URL ({e}): {}",
            display_url(text)
        )
    })?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(format!("the url names no host: {}", display_url(text))),
        other => Err(format!(
            "expected an http:// or https:// URL; found scheme {other:?}"
        )),
    }
}

/// Whether a text holds tera tags.
pub(super) fn is_template(text: &str) -> bool {
    ["{{", "{%", "{#"].iter().any(|t| text.contains(t))
}

/// The part of a URL template before its first tag (all of it when it has none).
pub(super) fn static_prefix(url: &str) -> &str {
    let cut = ["{{", "{%", "{#"]
        .iter()
        .filter_map(|t| url.find(t))
        .min()
        .unwrap_or(url.len());
    &url[..cut]
}

/// A URL for logs and dead letters: scheme, host and port only, since Slack, Teams and many
/// receivers put their token in the path or query.
pub(crate) fn display_url(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let more = if rest[end..].trim_end_matches('/').is_empty() {
        ""
    } else {
        "/…"
    };
    format!("{scheme}://{host}{more}")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn template(text: &str) -> (UrlTemplate, Renderer) {
        let mut r = Renderer::new(PathBuf::from("templates"));
        let mut p = vec![];
        r.add_inline("u", text, "u", &mut p);
        assert!(p.is_empty(), "{p:?}");
        (UrlTemplate::new("u", text).unwrap(), r)
    }

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            ..crate::event::sample(1)
        }
    }

    #[test]
    fn urls_for_logs_keep_only_the_origin() {
        assert_eq!(
            display_url("https://hooks.slack.com/services/T0/B0/XXSECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            display_url("https://user:pw@h.example:8443/"),
            "https://h.example:8443"
        );
        assert_eq!(display_url("http://h?token=x"), "http://h/…");
        assert_eq!(display_url("{{ properties.url }}"), "(not a URL)");
    }

    #[test]
    fn load_checks() {
        assert!(UrlTemplate::new("u", "https://r.example/x").is_ok());
        assert!(UrlTemplate::new("u", "https://r.example/x/{{ id }}").is_ok());
        assert!(UrlTemplate::new("u", "https://r.example?x={{ id }}").is_ok());
        for bad in [
            "https://{{ host }}/x",
            "https://r.example{{ path }}",
            "http://{{ properties.tenant }}.example/x",
            "https://r.example:{{ port }}/x",
            "{{ properties.url }}",
            "ftp://r.example/x",
            "r.example/{{ id }}",
            "https://",
            "https://r.example/{% for k in payload %}{{ k }}{% endfor %}",
            "https://r.example/a/../{{ id }}",
            "http://127.0.0.1:9/base/..",
        ] {
            assert!(UrlTemplate::new("u", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_cannot_add_structure() {
        let (t, r) = template("http://127.0.0.1:9/arcgis/{{ id }}?op={{ operation }}");
        let url = t
            .render(&r, &event("../../admin/dlq/purge?x=1#f"), "{}")
            .unwrap();
        assert_eq!(
            url.path(),
            "/arcgis/..%2F..%2Fadmin%2Fdlq%2Fpurge%3Fx%3D1%23f"
        );
        assert_eq!(url.host_str(), Some("127.0.0.1"));
        let e = Event {
            operation: "a&b=c".into(),
            ..event("i")
        };
        assert_eq!(
            t.render(&r, &e, "{}").unwrap().query(),
            Some("op=a%26b%3Dc")
        );
        for dots in ["..", "."] {
            let e = t.render(&r, &event(dots), "{}");
            assert!(e.is_err(), "{dots}: {e:?}");
        }
        // An encoded dot is encoded again: a segment of its own, not a dot.
        let url = t.render(&r, &event("%2e%2E"), "{}").unwrap();
        assert_eq!(url.path(), "/arcgis/%252e%252E");
        let url = t.render(&r, &event("a b\\c"), "{}").unwrap();
        assert_eq!(url.path(), "/arcgis/a%20b%5Cc");
    }

    #[test]
    fn values_from_the_payload_are_encoded_too() {
        let (t, r) = template("https://r.example/x/{{ payload.a }}/{{ payload.n }}");
        let url = t
            .render(&r, &event("i"), r#"{"a": "@evil.example/", "n": 7}"#)
            .unwrap();
        assert_eq!(url.as_str(), "https://r.example/x/%40evil.example%2F/7");
    }
}
