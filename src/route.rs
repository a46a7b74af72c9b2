//! The routing table: which sinks each event goes to, decided once at acceptance.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::event::{Event, FIELDS};
use crate::problem::Problem;

/// `[[routes]]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A label for logs and `explain`.
    pub name: Option<String>,
    /// Field → expected value(s); empty matches everything.
    #[serde(rename = "match", default)]
    pub matches: BTreeMap<String, toml::Value>,
    /// Sink names the event goes to.
    pub to: Vec<String>,
    /// When true, later routes are not considered for an event this route matched.
    #[serde(default)]
    pub stop: bool,
}

/// One accepted value for a field: exact text or a glob.
#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Glob(String),
}

impl Pattern {
    fn new(text: String) -> Self {
        if text.contains(['*', '?', '[', '{']) {
            Pattern::Glob(text)
        } else {
            Pattern::Exact(text)
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == value,
            Pattern::Glob(g) => glob_match::glob_match(g, value),
        }
    }
}

/// A field condition: the event's field must equal (or glob-match) one of the patterns.
#[derive(Debug, Clone)]
struct Condition {
    field: String,
    any_of: Vec<Pattern>,
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's label (its name, or `routes[N]`).
    pub name: String,
    conditions: Vec<Condition>,
    /// Destination sink names.
    pub to: Vec<String>,
    /// Stop evaluating further routes after a match.
    pub stop: bool,
}

impl Route {
    /// Whether every condition holds for `event`.
    pub fn matches(&self, event: &Event) -> bool {
        self.conditions.iter().all(|c| {
            let values = event.field(&c.field);
            values.iter().any(|v| c.any_of.iter().any(|p| p.matches(v)))
        })
    }
}

/// The compiled `[[routes]]`, evaluated in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles the routes, checking fields, values, sink names and kinds (`kinds`: every
    /// sender's name).
    pub fn build(
        routes: &[RouteConfig],
        sinks: &BTreeSet<&str>,
        kinds: &[&str],
    ) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let mut conditions = Vec::new();
            for (field, value) in &r.matches {
                let fkey = format!("{key}.match.{field}");
                if !FIELDS.contains(&field.as_str())
                    && field.strip_prefix("properties.").is_none_or(str::is_empty)
                {
                    problems.push(Problem::new(
                        &fkey,
                        format!(
                            "unknown field; expected one of {} or properties.<path>",
                            FIELDS.join(", ")
                        ),
                    ));
                    continue;
                }
                match patterns(value) {
                    Ok(any_of) if any_of.is_empty() => problems.push(Problem::new(
                        &fkey,
                        "an empty list matches nothing; remove the key to match everything",
                    )),
                    Ok(any_of) if field == "kind" && unknown_kind(&any_of, kinds).is_some() => {
                        let wrong = unknown_kind(&any_of, kinds).unwrap_or_default();
                        problems.push(Problem::new(&fkey, unknown_kind_message(&wrong, kinds)));
                    }
                    Ok(any_of) => conditions.push(Condition {
                        field: field.clone(),
                        any_of,
                    }),
                    Err(msg) => problems.push(Problem::new(&fkey, msg)),
                }
            }
            if r.to.is_empty() {
                problems.push(Problem::new(format!("{key}.to"), "names no sink"));
            }
            for (j, sink) in r.to.iter().enumerate() {
                if !sinks.contains(sink.as_str()) {
                    let known: Vec<&str> = sinks.iter().copied().collect();
                    problems.push(Problem::new(
                        format!("{key}.to[{j}]"),
                        format!(
                            "no sink named {sink:?}; configured sinks: [{}]",
                            known.join(", ")
                        ),
                    ));
                }
            }
            out.push(Route {
                name: r.name.clone().unwrap_or(key),
                conditions,
                to: r.to.clone(),
                stop: r.stop,
            });
        }
        if problems.is_empty() {
            Ok(RouteTable { routes: out })
        } else {
            Err(problems)
        }
    }

    /// The routes `event` matches, in order, honouring `stop`.
    pub fn matching(&self, event: &Event) -> Vec<&Route> {
        let mut hits = Vec::new();
        for r in &self.routes {
            if r.matches(event) {
                hits.push(r);
                if r.stop {
                    break;
                }
            }
        }
        hits
    }

    /// The distinct sinks `event` goes to, in first-seen order.
    pub fn sinks_for(&self, event: &Event) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.matching(event) {
            for s in &r.to {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }
}

/// The first exact value among `patterns` that is no event kind (a glob may match several).
fn unknown_kind(patterns: &[Pattern], kinds: &[&str]) -> Option<String> {
    patterns.iter().find_map(|p| match p {
        Pattern::Exact(v) if !kinds.contains(&v.as_str()) => Some(v.clone()),
        _ => None,
    })
}

/// Why a `kind` value never matches, with the closest kind when one is close.
fn unknown_kind_message(wrong: &str, kinds: &[&str]) -> String {
    let closest = kinds
        .iter()
        .map(|k| (strsim::jaro_winkler(wrong, k), *k))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default();
    format!(
        "no event has kind {wrong:?}{closest}; expected one of {}",
        kinds.join(", ")
    )
}

/// Turns a match value (string, list, number or boolean) into patterns.
fn patterns(value: &toml::Value) -> Result<Vec<Pattern>, String> {
    match value {
        toml::Value::Array(items) => items.iter().map(|v| scalar(v).map(Pattern::new)).collect(),
        v => Ok(vec![Pattern::new(scalar(v)?)]),
    }
}

fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        other => Err(format!(
            "expected a string, a number, a boolean or a list of them, found {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(text: &str) -> Result<RouteTable, Vec<Problem>> {
        #[derive(Deserialize)]
        struct F {
            routes: Vec<RouteConfig>,
        }
        let f: F = toml::from_str(text).unwrap();
        RouteTable::build(
            &f.routes,
            &BTreeSet::from(["a", "b", "c"]),
            &["portal", "feature-service", "geoprocessing", "survey123"],
        )
    }

    fn event(source: &str, operation: &str, props: serde_json::Value) -> Event {
        Event {
            source: source.into(),
            operation: operation.into(),
            id: "x".into(),
            webhook: Some("w".into()),
            user: Some("u".into()),
            properties: props.as_object().cloned().unwrap_or_default(),
            hook: "portal".into(),
            ..crate::event::sample(0)
        }
    }

    #[test]
    fn exact_list_glob_properties_and_stop() {
        let t = table(
            r#"
[[routes]]
match = { source = "item", operation = "delete" }
to = ["a"]
[[routes]]
match = { operation = ["share", "unshare"] }
to = ["b"]
[[routes]]
match = { operation = "Features*" }
to = ["c"]
stop = true
[[routes]]
match = { "properties.sharedToGroups" = "Everyone" }
to = ["a"]
[[routes]]
match = {}
to = ["b"]
"#,
        )
        .unwrap();
        assert_eq!(
            t.sinks_for(&event("item", "delete", json!({}))),
            vec!["a", "b"]
        );
        assert_eq!(t.sinks_for(&event("group", "delete", json!({}))), vec!["b"]);
        assert_eq!(
            t.sinks_for(&event(
                "item",
                "share",
                json!({"sharedToGroups": ["g1", "Everyone"]})
            )),
            vec!["b", "a"]
        );
        assert_eq!(
            t.sinks_for(&event("featureService", "FeaturesCreated", json!({}))),
            vec!["c"]
        );
    }

    #[test]
    fn an_event_may_match_nothing() {
        let t = table("[[routes]]\nmatch = { source = \"item\" }\nto = [\"a\"]\n").unwrap();
        assert!(t.sinks_for(&event("user", "add", json!({}))).is_empty());
    }

    #[test]
    fn bad_routes_name_their_keys() {
        let p = table(
            "[[routes]]\nmatch = { colour = \"red\", source = [] , id = { a = 1 } }\nto = [\"zzz\"]\n",
        )
        .unwrap_err();
        let all: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        let all = all.join("\n");
        assert!(
            all.contains("routes[0].match.colour: unknown field"),
            "{all}"
        );
        assert!(
            all.contains("routes[0].match.source: an empty list"),
            "{all}"
        );
        assert!(
            all.contains("routes[0].match.id: expected a string"),
            "{all}"
        );
        assert!(
            all.contains("routes[0].to[0]: no sink named \"zzz\""),
            "{all}"
        );
    }
}
