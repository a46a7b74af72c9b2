//! The HTTP sink's URL template: a fuzzed template tail after a fixed origin and path
//! (`http://127.0.0.1:9/base/`), and a fuzzed event (id, operation, properties), through
//! `Config::parse` and `explain`'s preview of the request.
//!
//! Input: the template tail, a NUL byte, the event id, a NUL byte, the operation, a NUL byte,
//! the properties JSON.
//! Invariants: never panics; a template with a tag before the path is refused at load; every
//! rendered URL keeps scheme, host and port, stays under `/base/`, has no `.` or `..` segment,
//! and no event value adds a path segment, a query parameter or a fragment to it.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hookbridge::body::BodyEncoding;
use hookbridge::config::Config;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const ORIGIN: &str = "http://127.0.0.1:9";

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hookbridge-fuzz-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("routes.toml")
    })
}

/// The same template rendered with harmless values, to tell the template's own structure
/// from what values could add.
fn shape(url: &str) -> (usize, usize, bool) {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    (
        path.matches('/').count(),
        url.matches('&').count(),
        url.contains('#'),
    )
}

fn preview_urls(config: &Config, body: &[u8]) -> Vec<String> {
    let Ok(explained) = hookbridge::explain::explain(config, "any", &[], BodyEncoding::Json, body)
    else {
        return vec![];
    };
    explained
        .events
        .iter()
        .flat_map(|e| e.deliveries.iter())
        .filter_map(|d| d.message.get("url").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

fn body(id: &str, operation: &str, properties: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "info": {"webhookName": "w", "webhookId": "x", "portalURL": "https://p.example", "when": 1},
        "events": [{"username": "u", "userId": "u1", "when": 1, "operation": operation,
                    "source": "item", "id": id, "properties": properties}]
    }))
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\0');
    let (Some(tail), Some(id), Some(operation)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    if [
        "dev", "proc", "sys", "env:", "file:", "include", "import", "extends",
    ]
    .iter()
    .any(|s| tail.contains(s))
    {
        return;
    }
    let properties = parts
        .next()
        .and_then(|p| serde_json::from_str::<Value>(p).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let template = format!("{ORIGIN}/base/{tail}");
    let toml_url = toml_string(&template);
    let cfg = format!(
        "[hooks.any]\nkind = \"auto\"\n[sinks.web]\ntype = \"http\"\nurl = {toml_url}\n\
         [[routes]]\nmatch = {{}}\nto = [\"web\"]\n"
    );
    let Ok(config) = Config::parse(config_path(), &cfg) else {
        return;
    };
    let plain = preview_urls(&config, &body("plain", "add", json!({})));
    for url in preview_urls(&config, &body(id, operation, properties)) {
        let parsed = url::Url::parse(&url).expect("a previewed URL parses");
        assert_eq!(parsed.scheme(), "http", "{url}");
        assert_eq!(parsed.host_str(), Some("127.0.0.1"), "{url}");
        assert_eq!(parsed.port(), Some(9), "{url}");
        assert!(parsed.path().starts_with("/base/"), "{url}");
        let path = url.split(['?', '#']).next().unwrap_or_default();
        assert!(
            !path.split('/').any(|s| s == "." || s == ".."),
            "{url}: a dot segment"
        );
        if let Some(reference) = plain.first() {
            let (segments, params, fragment) = shape(reference);
            let (s, p, f) = shape(&url);
            assert!(
                s <= segments,
                "{url}: a value added a path segment ({reference})"
            );
            assert!(
                p <= params,
                "{url}: a value added a query parameter ({reference})"
            );
            assert!(
                !f || fragment,
                "{url}: a value added a fragment ({reference})"
            );
        }
    }
});

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
