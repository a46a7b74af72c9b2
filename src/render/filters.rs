//! The filters hookbridge adds to tera, for messages a person reads: times in the configured
//! time zone (`local`), lists as lists (`list`), long ids that wrap in HTML without being cut
//! (`wbr`), Survey123 answers under their questions' labels (`answers`), links (`http_link`).

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Map, Value, json};

/// How `local` prints a time unless given a `format`: `2023-11-14 23:15:20 CET`.
pub const LOCAL_FORMAT: &str = "%Y-%m-%d %H:%M:%S %Z";

/// Characters of an id between two of `wbr`'s break chances.
const WBR_EVERY: usize = 8;

type Args = HashMap<String, Value>;

/// Registers every filter on `tera`, `local` and `answers` printing times in `zone`.
pub(super) fn register(tera: &mut tera::Tera, zone: &TimeZone) {
    tera.register_filter("utc", utc);
    tera.register_filter("http_link", http_link);
    tera.register_filter("list", list);
    tera.register_filter("wbr", Wbr);
    let z = zone.clone();
    tera.register_filter("local", move |v: &Value, args: &Args| local(v, args, &z));
    let z = zone.clone();
    tera.register_filter("answers", move |v: &Value, _: &Args| Ok(answers(v, &z)));
}

/// Whether `text` may become a link a person clicks: an absolute `http` or `https` URL with a
/// host. A payload's `portalURL` or `changesUrl` could be `javascript:` or `data:` otherwise.
pub fn is_http_link(text: &str) -> bool {
    url::Url::parse(text.trim())
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// The `http_link` filter: the value when [`is_http_link`] holds, else an empty string, so
/// `{% if link %}` leaves the link out.
fn http_link(value: &Value, _: &Args) -> tera::Result<Value> {
    Ok(match value.as_str() {
        Some(text) if is_http_link(text) => Value::from(text),
        _ => Value::from(""),
    })
}

/// Epoch milliseconds from a number, or a string of digits (form bodies).
fn epoch_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `ms` in `zone`, printed with `format` (strftime, as jiff reads it).
fn format_time(ms: i64, zone: &TimeZone, format: &str) -> Result<String, String> {
    let at = Timestamp::from_millisecond(ms).map_err(|e| e.to_string())?;
    jiff::fmt::strtime::format(format, &at.to_zoned(zone.clone())).map_err(|e| e.to_string())
}

/// The `utc` filter: epoch milliseconds as `2023-11-14 22:15:20 UTC`.
fn utc(value: &Value, _: &Args) -> tera::Result<Value> {
    let ms = epoch_ms(value).filter(|ms| *ms >= 0).ok_or_else(|| {
        tera::Error::msg(format!("utc expects epoch milliseconds; found {value}"))
    })?;
    format_time(ms, &TimeZone::UTC, LOCAL_FORMAT)
        .map(Value::from)
        .map_err(tera::Error::msg)
}

/// The `local` filter: epoch milliseconds in the configured `templates_timezone` (UTC when
/// unset), as `2023-11-14 23:15:20 CET`; `format` is a strftime format, `tz` another IANA zone.
/// Zero, which ArcGIS and a dry run's `accepted_at` mean as "no time", prints as nothing.
fn local(value: &Value, args: &Args, zone: &TimeZone) -> tera::Result<Value> {
    let ms = epoch_ms(value).ok_or_else(|| {
        tera::Error::msg(format!("local expects epoch milliseconds; found {value}"))
    })?;
    if ms == 0 {
        return Ok(Value::from(""));
    }
    let other;
    let zone = match args.get("tz").and_then(Value::as_str) {
        Some(name) => {
            other = TimeZone::get(name).map_err(|e| {
                tera::Error::msg(format!("local: tz {name:?} is not an IANA time zone: {e}"))
            })?;
            &other
        }
        None => zone,
    };
    let format = args
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or(LOCAL_FORMAT);
    format_time(ms, zone, format)
        .map(Value::from)
        .map_err(|e| tera::Error::msg(format!("local: format {format:?}: {e}")))
}

/// One value as a person reads it: text as it is, nothing for null, JSON for an object.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The `list` filter: a list as `a, b, c` (or joined with `sep`), nulls left out, any other
/// value as its text, so `{{ v | list }}` prints a property whatever its shape.
fn list(value: &Value, args: &Args) -> tera::Result<Value> {
    let sep = args.get("sep").and_then(Value::as_str).unwrap_or(", ");
    Ok(Value::from(match value {
        Value::Array(items) => items
            .iter()
            .filter(|v| !v.is_null())
            .map(text_of)
            .collect::<Vec<_>>()
            .join(sep),
        other => text_of(other),
    }))
}

/// The `wbr` filter, for HTML templates: an id whole, HTML-escaped, with a `<wbr>` break chance
/// every eight characters, so a 32-character id wraps on a phone instead of widening the mail,
/// and copies as the whole id (`<wbr>` adds no character).
struct Wbr;

impl tera::Filter for Wbr {
    fn filter(&self, value: &Value, _: &Args) -> tera::Result<Value> {
        let text = text_of(value);
        let chars: Vec<char> = text.chars().collect();
        let pieces: Vec<String> = chars
            .chunks(WBR_EVERY)
            .map(|c| tera::escape_html(&c.iter().collect::<String>()))
            .collect();
        Ok(Value::from(pieces.join("<wbr>")))
    }

    fn is_safe(&self) -> bool {
        true
    }
}

/// The field definitions of a Survey123 layer (`layerInfo.fields`), by name.
fn field<'a>(fields: &'a [Value], name: &str) -> Option<&'a Map<String, Value>> {
    fields
        .iter()
        .filter_map(Value::as_object)
        .find(|f| f.get("name").and_then(Value::as_str) == Some(name))
}

/// The fields that are the record's bookkeeping, not answers: its ids and editor tracking.
fn bookkeeping(layer: Option<&Value>) -> Vec<String> {
    let named = |v: Option<&Value>, k: &str| {
        v.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let edit = layer.and_then(|l| l.get("editFieldsInfo"));
    let mut skip: Vec<String> = ["globalIdField", "objectIdField"]
        .iter()
        .filter_map(|k| named(layer, k))
        .chain(
            [
                "creationDateField",
                "creatorField",
                "editDateField",
                "editorField",
            ]
            .iter()
            .filter_map(|k| named(edit, k)),
        )
        .collect();
    if skip.is_empty() {
        skip = vec!["globalid".into(), "objectid".into()];
    }
    skip
}

/// An answer's text: a date field's epoch milliseconds as a local time, a coded value's name
/// (each of a multiple choice's codes), else the value as [`list`] prints it.
fn answer_text(value: &Value, field: Option<&Map<String, Value>>, zone: &TimeZone) -> String {
    let kind = field.and_then(|f| f.get("type")).and_then(Value::as_str);
    if kind == Some("esriFieldTypeDate") {
        if let Some(text) = epoch_ms(value).and_then(|ms| format_time(ms, zone, LOCAL_FORMAT).ok())
        {
            return text;
        }
    }
    let codes = field
        .and_then(|f| f.get("domain"))
        .and_then(|d| d.get("codedValues"))
        .and_then(Value::as_array);
    if let Some(codes) = codes {
        let name_of = |code: &str| {
            codes.iter().find_map(|c| {
                (c.get("code").map(text_of).as_deref() == Some(code))
                    .then(|| c.get("name").map(text_of))
                    .flatten()
            })
        };
        let text = text_of(value);
        if let Some(name) = name_of(&text) {
            return name;
        }
        let names: Option<Vec<String>> = text.split(',').map(|c| name_of(c.trim())).collect();
        if let Some(names) = names {
            return names.join(", ");
        }
    }
    match value {
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(", "),
        other => text_of(other),
    }
}

/// The `answers` filter: a Survey123 event's `properties` to its answers, in the form's order
/// where the payload lists the layer's fields, each `{name, label, value}`: `label` the
/// question's alias where the payload has one, else the field name; unanswered questions and
/// the record's ids and editor tracking left out.
pub(super) fn answers(properties: &Value, zone: &TimeZone) -> Value {
    let Some(attributes) = properties.get("attributes").and_then(Value::as_object) else {
        return Value::Array(Vec::new());
    };
    let layer = properties.get("layerInfo");
    let fields: &[Value] = layer
        .and_then(|l| l.get("fields"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let skip = bookkeeping(layer);
    let in_form_order = fields
        .iter()
        .filter_map(|f| f.get("name").and_then(Value::as_str))
        .filter(|n| attributes.contains_key(*n));
    let rest = attributes
        .keys()
        .map(String::as_str)
        .filter(|n| field(fields, n).is_none());
    let out = in_form_order
        .chain(rest)
        .filter(|n| !skip.iter().any(|s| s.eq_ignore_ascii_case(n)))
        .filter_map(|name| {
            let value = attributes.get(name)?;
            if value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty()) {
                return None;
            }
            let f = field(fields, name);
            let label = f
                .and_then(|f| f.get("alias"))
                .and_then(Value::as_str)
                .filter(|a| !a.trim().is_empty())
                .unwrap_or(name);
            Some(json!({"name": name, "label": label, "value": answer_text(value, f, zone)}))
        })
        .collect();
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap()
    }

    #[test]
    fn local_times_in_the_zone_and_utc_as_before() {
        let none = Args::new();
        let ms = Value::from(1_700_000_120_001_u64);
        assert_eq!(
            local(&ms, &none, &berlin()).unwrap(),
            "2023-11-14 23:15:20 CET"
        );
        assert_eq!(utc(&ms, &none).unwrap(), "2023-11-14 22:15:20 UTC");
        assert_eq!(
            local(&ms, &none, &TimeZone::UTC).unwrap(),
            "2023-11-14 22:15:20 UTC"
        );
        let summer = Value::from(1_720_000_000_000_u64);
        assert_eq!(
            local(&summer, &none, &berlin()).unwrap(),
            "2024-07-03 11:46:40 CEST"
        );
        let args = Args::from([
            ("format".to_string(), Value::from("%d.%m.%Y %H:%M")),
            ("tz".to_string(), Value::from("America/New_York")),
        ]);
        assert_eq!(local(&ms, &args, &berlin()).unwrap(), "14.11.2023 17:15");
        let bad = Args::from([("tz".to_string(), Value::from("Mars/Olympus"))]);
        assert!(local(&ms, &bad, &berlin()).is_err());
        assert!(local(&Value::from("soon"), &none, &berlin()).is_err());
        assert_eq!(local(&Value::from(0), &none, &berlin()).unwrap(), "");
    }

    #[test]
    fn lists_read_as_lists() {
        let none = Args::new();
        let v = json!(["Everyone", "4adc30bb03054812a846fa592de105de", null, 3]);
        assert_eq!(
            list(&v, &none).unwrap(),
            "Everyone, 4adc30bb03054812a846fa592de105de, 3"
        );
        assert_eq!(list(&json!("one"), &none).unwrap(), "one");
        assert_eq!(list(&json!({"a": 1}), &none).unwrap(), r#"{"a":1}"#);
        let sep = Args::from([("sep".to_string(), Value::from(" / "))]);
        assert_eq!(list(&json!(["a", "b"]), &sep).unwrap(), "a / b");
    }

    #[test]
    fn long_ids_wrap_whole_and_escaped() {
        let w = tera::Filter::filter(
            &Wbr,
            &json!("300972091a98495095735772e2b249b3"),
            &Args::new(),
        )
        .unwrap();
        assert_eq!(w, "30097209<wbr>1a984950<wbr>95735772<wbr>e2b249b3");
        let w = tera::Filter::filter(&Wbr, &json!("<b>&"), &Args::new()).unwrap();
        assert_eq!(w, "&lt;b&gt;&amp;");
        assert!(tera::Filter::is_safe(&Wbr));
    }

    #[test]
    fn answers_take_aliases_dates_and_choices() {
        let props = json!({
            "attributes": {"globalid": "{G1}", "objectid": 4, "when_seen": 1_700_000_120_001_u64,
                "industry": "sci", "tools": "gis,cad", "note": "", "extra": 2.5, "CreationDate": 1},
            "layerInfo": {"globalIdField": "globalid", "objectIdField": "objectid",
                "editFieldsInfo": {"creationDateField": "CreationDate"},
                "fields": [
                    {"name": "industry", "alias": "What industry do you work in?", "type": "esriFieldTypeString",
                     "domain": {"type": "codedValue", "codedValues": [{"name": "Science", "code": "sci"}]}},
                    {"name": "when_seen", "alias": "When did you see it?", "type": "esriFieldTypeDate"},
                    {"name": "tools", "alias": "", "type": "esriFieldTypeString",
                     "domain": {"codedValues": [{"name": "GIS", "code": "gis"}, {"name": "CAD", "code": "cad"}]}},
                    {"name": "note", "alias": "Note"}]}
        });
        let got = answers(&props, &berlin());
        assert_eq!(
            got,
            json!([
                {"name": "industry", "label": "What industry do you work in?", "value": "Science"},
                {"name": "when_seen", "label": "When did you see it?", "value": "2023-11-14 23:15:20 CET"},
                {"name": "tools", "label": "tools", "value": "GIS, CAD"},
                {"name": "extra", "label": "extra", "value": "2.5"}
            ])
        );
        // Without field definitions: the attributes by name, ids left out.
        let bare = json!({"attributes": {"globalid": "{G1}", "objectid": 11, "q": "Technology"}});
        assert_eq!(
            answers(&bare, &TimeZone::UTC),
            json!([{"name": "q", "label": "q", "value": "Technology"}])
        );
        assert_eq!(answers(&json!({}), &TimeZone::UTC), json!([]));
    }
}
