//! Feature-service webhooks, in the three shapes ArcGIS sends (docs/arcgis.md, "Deliveries"):
//! a. ArcGIS Online: an array of layer batches, one event per (layer, change type);
//! b. older ArcGIS Online: one object with a singular `changeType`, one event;
//! c. ArcGIS Enterprise 11.1+: one object whose `events` hold `{eventType, when}`, one event each.

use serde_json::{Map, Value};

use super::{FEATURE_SERVICE, Family, samples};
use crate::event::{DedupKey, Event};
use crate::senders::json::{At, type_name};
use crate::senders::{AuthWay, ParseError};

const KIND: &str = "feature-service";

/// What the three shapes are, for a body that is none of them.
const SHAPES: &str = "expected an ArcGIS Online array of layer changes, an object with changeType, \
or an ArcGIS Enterprise object {serviceType, changesUrl, events: [{eventType, when}]}";

/// Whether an object is one of the single-object shapes (for `kind = "auto"`).
fn looks_like_single(o: &Map<String, Value>) -> bool {
    o.contains_key("changeType") || is_enterprise(o)
}

fn is_enterprise(o: &Map<String, Value>) -> bool {
    let typed = o.get("serviceType").and_then(Value::as_str) == Some("FeatureServer");
    o.get("events").is_some_and(Value::is_array) && (typed || o.contains_key("changesUrl"))
}

/// Parses a feature-service payload of any of the three shapes.
fn parse(hook: &str, value: &Value) -> Result<Vec<Event>, ParseError> {
    let top = At {
        kind: KIND,
        path: "",
    };
    match value {
        Value::Array(layers) => {
            let mut out = Vec::new();
            for (i, layer) in layers.iter().enumerate() {
                let path = format!("[{i}]");
                online_layer(hook, At { path: &path, ..top }, layer, &mut out)?;
            }
            Ok(out)
        }
        Value::Object(o) if o.contains_key("changeType") => legacy(hook, top, o),
        Value::Object(o) if is_enterprise(o) => enterprise(hook, top, o),
        Value::Object(_) => Err(ParseError::Shape {
            kind: KIND,
            detail: SHAPES.into(),
        }),
        other => Err(ParseError::Shape {
            kind: KIND,
            detail: format!("{SHAPES}; found {}", type_name(other)),
        }),
    }
}

/// The fields every shape shares: the layer or service, its change window, and `properties`
/// (the payload's other fields, with `changesUrl` decoded).
struct Service {
    name: Option<String>,
    service: String,
    layer_id: String,
    org: String,
    changes_url: Option<String>,
    properties: Map<String, Value>,
}

impl Service {
    /// Reads the shared fields of `o`; `skip` names fields that are not properties.
    fn read(at: At<'_>, o: &Map<String, Value>, skip: &[&str]) -> Result<Self, ParseError> {
        let name = at.text(o, "name")?;
        let service = at.string(o, "serviceName")?;
        let layer_id = at.text(o, "layerId")?.unwrap_or_default();
        let org = at.text(o, "orgId")?.unwrap_or_default();
        let changes_url = at.text(o, "changesUrl")?.map(decode_url);
        let mut properties: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(u) = &changes_url {
            properties.insert("changesUrl".into(), Value::from(u.clone()));
        }
        Ok(Service {
            name,
            service,
            layer_id,
            org,
            changes_url,
            properties,
        })
    }

    /// The event for one change, keyed by everything ArcGIS keeps the same across retries.
    fn event(
        &self,
        hook: &str,
        id: &str,
        change: String,
        when: Option<i64>,
        extra: &[&str],
    ) -> Event {
        let when_text = when.map(|w| w.to_string()).unwrap_or_default();
        let mut parts = vec![
            KIND,
            hook,
            self.name.as_deref().unwrap_or(""),
            &self.org,
            &self.service,
            &self.layer_id,
            self.changes_url.as_deref().unwrap_or(""),
            &when_text,
            &change,
        ];
        parts.extend_from_slice(extra);
        Event {
            event_id: DedupKey::from_parts(&parts).to_string(),
            kind: FEATURE_SERVICE,
            source: "featureService".into(),
            operation: change,
            id: id.to_string(),
            webhook: self.name.clone(),
            user: None,
            when,
            portal: None,
            properties: self.properties.clone(),
            hook: hook.to_string(),
            accepted_at: 0,
        }
    }

    /// `serviceName/layerId`, or the service alone when there is no layer.
    fn layer_name(&self) -> String {
        if self.layer_id.is_empty() {
            self.service.clone()
        } else {
            format!("{}/{}", self.service, self.layer_id)
        }
    }
}

/// Shape a: one element of the ArcGIS Online array. Its `events` are change-type names (objects
/// with `eventType` are taken too).
fn online_layer(
    hook: &str,
    at: At<'_>,
    layer: &Value,
    out: &mut Vec<Event>,
) -> Result<(), ParseError> {
    let o = at.object(layer)?;
    let s = Service::read(at, o, &["name", "events"])?;
    let when = at.millis(o, "lastUpdatedTime")?;
    let id = s.layer_name();
    for (j, change) in at.array(o, "events")?.iter().enumerate() {
        let (change, entry_when) = match change {
            Value::String(c) => (c.clone(), None),
            Value::Object(e) => {
                let path = at.child(&format!("events[{j}]"));
                let at = At { path: &path, ..at };
                (at.string(e, "eventType")?, at.millis(e, "when")?)
            }
            other => {
                return Err(at.error(
                    &format!("events[{j}]"),
                    format!(
                        "expected a change type such as \"FeaturesCreated\", found {}",
                        type_name(other)
                    ),
                ));
            }
        };
        out.push(s.event(hook, &id, change, entry_when.or(when), &[]));
    }
    Ok(())
}

/// Shape b: the older single object, `{layerId, serviceName, changeType, orgId, changesUrl}`.
fn legacy(hook: &str, at: At<'_>, o: &Map<String, Value>) -> Result<Vec<Event>, ParseError> {
    let s = Service::read(at, o, &["name", "changeType"])?;
    let change = at.string(o, "changeType")?;
    let when = at.millis(o, "lastUpdatedTime")?;
    Ok(vec![s.event(hook, &s.layer_name(), change, when, &[])])
}

/// Shape c: ArcGIS Enterprise. There is no layer: `id` names the service (folder-qualified), and
/// the payload's own `id` (the webhook's GUID) is kept as `properties.webhookId`.
fn enterprise(hook: &str, at: At<'_>, o: &Map<String, Value>) -> Result<Vec<Event>, ParseError> {
    let mut s = Service::read(at, o, &["name", "events", "id"])?;
    let webhook_id = at.text(o, "id")?.unwrap_or_default();
    if !webhook_id.is_empty() {
        s.properties
            .insert("webhookId".into(), Value::from(webhook_id.clone()));
    }
    let folder = at.text(o, "folderName")?.unwrap_or_default();
    let id = if folder.is_empty() {
        s.service.clone()
    } else {
        format!("{folder}/{}", s.service)
    };
    let entries = at.array(o, "events")?;
    if entries.is_empty() {
        return Err(at.error(
            "events",
            "is empty; expected at least one {eventType, when}",
        ));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (j, entry) in entries.iter().enumerate() {
        let path = format!("events[{j}]");
        let at = At { path: &path, ..at };
        let e = at.object(entry)?;
        let change = at.string(e, "eventType")?;
        let when = at.millis(e, "when")?;
        out.push(s.event(hook, &id, change, when, &[&webhook_id, &folder]));
    }
    Ok(out)
}

/// Decodes a `changesUrl` that arrived percent-encoded (`https%3a%2f%2f...`).
fn decode_url(url: String) -> String {
    // `get` rather than slicing: the prefix may end inside a multi-byte character.
    let starts = |prefix: &str| {
        url.len() > prefix.len()
            && url
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    if starts("https%3a") || starts("http%3a") {
        percent_encoding::percent_decode_str(&url)
            .decode_utf8()
            .map(|s| s.into_owned())
            .unwrap_or(url)
    } else {
        url
    }
}

/// Whether a body has this family's shape, for `kind = "auto"`.
fn detect(value: &Value) -> bool {
    match value {
        Value::Array(_) => true,
        Value::Object(o) => looks_like_single(o),
        _ => false,
    }
}

/// Feature-service webhooks: edits to a hosted or Enterprise feature service.
pub static SENDER: Family = Family {
    name: "feature-service",
    shapes: "a feature-service array, a feature-service object with changeType, an ArcGIS Enterprise feature-service object {serviceType, changesUrl, events}",
    detect,
    parse,
    auth: &[AuthWay::Signature],
    sends_crc: true,
    properties_pointer: None,
    samples: samples::FEATURE_SERVICE,
    templates: super::mail_templates!("feature-service"),
};

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Value {
        let text = std::fs::read(format!(
            "{}/tests/samples/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        serde_json::from_slice(&text).unwrap()
    }

    #[test]
    fn one_event_per_layer_and_change() {
        let ev = parse("parcels", &sample("feature-multi.json")).unwrap();
        let ops: Vec<(&str, &str)> = ev
            .iter()
            .map(|e| (e.id.as_str(), e.operation.as_str()))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("Parcels/0", "FeaturesCreated"),
                ("Parcels/0", "FeaturesUpdated"),
                ("Parcels/0", "FeaturesDeleted"),
                ("Parcels/2", "AttachmentsCreated"),
            ]
        );
        let e = &ev[0];
        assert_eq!(e.kind, FEATURE_SERVICE);
        assert_eq!(e.source, "featureService");
        assert_eq!(e.webhook.as_deref(), Some("parcels-edits"));
        assert_eq!(e.when, Some(1755719255181));
        assert_eq!(e.properties["orgId"], "ABCD1EFghIJK2LmN");
        assert!(
            e.properties["changesUrl"]
                .as_str()
                .unwrap()
                .contains("serverGens=[762039,762044]")
        );
        let mut ids: Vec<&str> = ev.iter().map(|e| e.event_id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn percent_encoded_changes_url_is_decoded() {
        let mut v = sample("feature-created.json");
        v[0]["changesUrl"] =
            Value::from("https%3a%2f%2fservices.example.com%2fx%3fserverGens%3d%5b1%2c2%5d");
        let ev = parse("p", &v).unwrap();
        assert_eq!(
            ev[0].properties["changesUrl"],
            "https://services.example.com/x?serverGens=[1,2]"
        );
    }

    #[test]
    fn changes_url_with_multibyte_text_is_kept() {
        // Found by the parse_payload/form_decode fuzzers: byte 8 fell inside a character.
        for url in [
            "https:%\u{fffd}rest-of-url",
            "http:%\u{e9}x",
            "abcdefg\u{e9}h",
        ] {
            let mut v = sample("feature-created.json");
            v[0]["changesUrl"] = Value::from(url);
            let ev = parse("p", &v).unwrap();
            assert_eq!(ev[0].properties["changesUrl"], url);
        }
    }

    #[test]
    fn the_older_single_object_is_one_event() {
        let v = serde_json::json!({"layerId": 3, "serviceName": "Hydrants", "changeType": "FeaturesUpdated",
            "orgId": "o1", "changesUrl": "https%3a%2f%2fs.example.com%2fx%3fserverGens%3d%5b1%2c2%5d"});
        let ev = parse("h", &v).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].id.as_str(), ev[0].operation.as_str()),
            ("Hydrants/3", "FeaturesUpdated")
        );
        assert_eq!(
            ev[0].properties["changesUrl"],
            "https://s.example.com/x?serverGens=[1,2]"
        );
        assert!(!ev[0].properties.contains_key("changeType"));
    }

    #[test]
    fn enterprise_objects_give_one_event_per_entry() {
        let mut v = serde_json::json!({"serviceType": "FeatureServer", "name": "Edits", "id": "c4a7",
            "folderName": "Water", "serviceName": "Mains", "changesUrl": "https://h/x?serverGens=%5B1,2%5D",
            "events": [{"eventType": "FeaturesCreated", "when": 10}, {"eventType": "FeaturesDeleted", "when": 11}]});
        let ev = parse("h", &v).unwrap();
        let got: Vec<(&str, &str, Option<i64>)> = ev
            .iter()
            .map(|e| (e.id.as_str(), e.operation.as_str(), e.when))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Water/Mains", "FeaturesCreated", Some(10)),
                ("Water/Mains", "FeaturesDeleted", Some(11))
            ]
        );
        assert_eq!(ev[0].webhook.as_deref(), Some("Edits"));
        assert_eq!(ev[0].properties["webhookId"], "c4a7");
        assert_ne!(ev[0].event_id, ev[1].event_id);
        v["folderName"] = Value::from("");
        assert_eq!(parse("h", &v).unwrap()[0].id, "Mains");
        v["events"] = serde_json::json!([]);
        let e = parse("h", &v).unwrap_err().to_string();
        assert!(e.contains("at events: is empty"), "{e}");
        v["events"] = serde_json::json!([{"when": 1}]);
        let e = parse("h", &v).unwrap_err().to_string();
        assert!(e.contains("events[0].eventType: missing"), "{e}");
    }

    #[test]
    fn an_object_of_no_known_shape_names_the_shapes() {
        let e = parse("h", &serde_json::json!({"a": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("changeType") && e.contains("Enterprise"), "{e}");
    }

    #[test]
    fn a_layer_without_events_is_refused() {
        let mut v = sample("feature-created.json");
        v[0].as_object_mut().unwrap().remove("events");
        let err = parse("p", &v).unwrap_err().to_string();
        assert!(err.contains("[0]") && err.contains("events"), "{err}");
    }
}
