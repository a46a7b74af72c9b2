//! Reading payload JSON strictly: duplicate keys refused, fields read with errors that name the
//! path and the expected type but never echo a value, and paths removed before storage.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::ParseError;

/// Parses JSON text into a value, refusing an object that names a key twice: two readers of the
/// same payload (one taking the first key, one the last) must never see two different events.
pub fn parse_strict(json: &[u8]) -> Result<Value, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let value = Strict
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| ParseError::Json(e.to_string()))?;
    Ok(value)
}

/// A `serde_json::Value` seed that refuses duplicate object keys.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Strict)?;
            if out.contains_key(&key) {
                return Err(A::Error::custom(format_args!(
                    "an object names the key {} twice",
                    shown_key(&key)
                )));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A key as shown in an error: escaped and cut short, since it comes from the sender.
pub fn shown_key(key: &str) -> String {
    let cut: String = key.chars().take(40).collect();
    let more = if cut.len() < key.len() { "…" } else { "" };
    format!("{:?}{more}", cut)
}

/// What kind of JSON value `v` is, for "expected X, found Y" messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A place in a payload being read: the payload kind and the JSON path, for error messages.
#[derive(Clone, Copy)]
pub struct At<'p> {
    /// The payload kind being read (`portal`, `feature-service`, ...).
    pub kind: &'static str,
    /// The path of the object being read, e.g. `events[2]` (empty at the top).
    pub path: &'p str,
}

impl At<'_> {
    /// The path of `key` inside this object.
    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A shape error at `key`.
    pub fn error(&self, key: &str, detail: impl fmt::Display) -> ParseError {
        let at = self.child(key);
        ParseError::Shape {
            kind: self.kind,
            detail: if at.is_empty() {
                detail.to_string()
            } else {
                format!("at {at}: {detail}")
            },
        }
    }

    /// The value at `key` as an object.
    pub fn object<'v>(&self, v: &'v Value) -> Result<&'v Map<String, Value>, ParseError> {
        v.as_object().ok_or_else(|| {
            let detail = format!("expected an object, found {}", type_name(v));
            match self.path {
                "" => ParseError::Shape {
                    kind: self.kind,
                    detail,
                },
                p => ParseError::Shape {
                    kind: self.kind,
                    detail: format!("at {p}: {detail}"),
                },
            }
        })
    }

    /// A required string field.
    pub fn string(&self, o: &Map<String, Value>, key: &str) -> Result<String, ParseError> {
        match o.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) => Err(self.error(key, "missing; expected a string")),
            Some(v) => Err(self.error(key, format!("expected a string, found {}", type_name(v)))),
        }
    }

    /// An optional text field: a string, or a number taken as text.
    pub fn text(&self, o: &Map<String, Value>, key: &str) -> Result<Option<String>, ParseError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(v) => Err(self.error(
                key,
                format!("expected a string or a number, found {}", type_name(v)),
            )),
        }
    }

    /// A required array field.
    pub fn array<'v>(
        &self,
        o: &'v Map<String, Value>,
        key: &str,
    ) -> Result<&'v Vec<Value>, ParseError> {
        match o.get(key) {
            Some(Value::Array(a)) => Ok(a),
            None | Some(Value::Null) => Err(self.error(key, "missing; expected an array")),
            Some(v) => Err(self.error(key, format!("expected an array, found {}", type_name(v)))),
        }
    }

    /// An optional object field.
    pub fn opt_object<'v>(
        &self,
        o: &'v Map<String, Value>,
        key: &str,
    ) -> Result<Option<&'v Map<String, Value>>, ParseError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.error(key, format!("expected an object, found {}", type_name(v)))),
        }
    }

    /// An optional epoch-milliseconds field: a number or a numeric string.
    pub fn millis(&self, o: &Map<String, Value>, key: &str) -> Result<Option<i64>, ParseError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                self.error(
                    key,
                    "expected epoch milliseconds, found a non-numeric string",
                )
            }),
            Some(v) => Err(self.error(
                key,
                format!("expected epoch milliseconds, found {}", type_name(v)),
            )),
        }
    }
}

/// A JSON path to remove before storage: dotted keys; on an array, a number picks one element
/// and a key applies to every element (`applyEdits.adds.attributes.email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactPath(Vec<String>);

impl RedactPath {
    /// Parses `a.b.c`; empty segments are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "{:?} is not a path: expected dotted keys such as \"userInfo.email\"",
                text
            ));
        }
        Ok(RedactPath(segments))
    }

    /// The path as written.
    pub fn as_dotted(&self) -> String {
        self.0.join(".")
    }

    /// Removes what the path names from `value`; returns whether anything was removed.
    pub fn remove(&self, value: &mut Value) -> bool {
        remove_at(value, &self.0)
    }
}

fn remove_at(value: &mut Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match value {
        Value::Object(o) if rest.is_empty() => o.remove(first).is_some(),
        Value::Object(o) => o.get_mut(first).is_some_and(|v| remove_at(v, rest)),
        Value::Array(items) => match first.parse::<usize>() {
            Ok(i) if rest.is_empty() => {
                // Removing an element would shift the others: blank it instead.
                items.get_mut(i).is_some_and(|v| {
                    *v = Value::Null;
                    true
                })
            }
            Ok(i) => items.get_mut(i).is_some_and(|v| remove_at(v, rest)),
            Err(_) => items
                .iter_mut()
                .fold(false, |removed, v| remove_at(v, path) | removed),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = parse_strict(br#"{"operation":"delete","x":1,"operation":"update"}"#).unwrap_err();
        assert!(e.to_string().contains("\"operation\" twice"), "{e}");
        assert!(parse_strict(br#"{"a":[{"b":1,"b":1}]}"#).is_err());
        assert_eq!(
            parse_strict(br#"{"a":{"b":1},"b":2}"#).unwrap(),
            json!({"a":{"b":1},"b":2})
        );
    }

    #[test]
    fn strict_parse_matches_serde_json() {
        let text = br#"[1,-2,3.5,1.7557192555571923e21,"s\u00e9",null,true,{"k":[{}]}]"#;
        let ours = parse_strict(text).unwrap();
        let theirs: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(ours, theirs);
        assert!(parse_strict(b"[1] x").is_err());
        assert!(parse_strict(b"").is_err());
    }

    #[test]
    fn errors_name_the_path_and_type_but_not_the_value() {
        let v = json!({"operation": "x".repeat(100), "n": {"secret": true}});
        let at = At {
            kind: "portal",
            path: "events[0]",
        };
        let o = v.as_object().unwrap();
        let e = at.array(o, "operation").unwrap_err().to_string();
        assert_eq!(
            e,
            "not a portal payload: at events[0].operation: expected an array, found a string"
        );
        let e = at.string(o, "missing").unwrap_err().to_string();
        assert!(e.contains("events[0].missing: missing"), "{e}");
        let long = "k".repeat(200);
        assert!(shown_key(&long).len() < 50);
    }

    #[test]
    fn redaction_paths() {
        let mut v = json!({
            "portalInfo": {"url": "u", "token": "t"},
            "applyEdits": [{"adds": [{"attributes": {"email": "a", "x": 1}}]},
                           {"adds": [{"attributes": {"email": "b"}}]}],
            "list": [1, 2, 3]
        });
        assert!(
            RedactPath::parse("portalInfo.token")
                .unwrap()
                .remove(&mut v)
        );
        assert!(
            RedactPath::parse("applyEdits.adds.attributes.email")
                .unwrap()
                .remove(&mut v)
        );
        assert!(RedactPath::parse("list.1").unwrap().remove(&mut v));
        assert!(!RedactPath::parse("nope.deeper").unwrap().remove(&mut v));
        assert_eq!(
            v,
            json!({
                "portalInfo": {"url": "u"},
                "applyEdits": [{"adds": [{"attributes": {"x": 1}}]}, {"adds": [{"attributes": {}}]}],
                "list": [1, null, 3]
            })
        );
        assert!(RedactPath::parse("a..b").is_err());
        assert!(RedactPath::parse("").is_err());
    }
}
