//! Feature-service webhooks: an array of layer batches, one event per (layer, change type).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ParseError, millis, text, typed};
use crate::event::{DedupKey, Event, EventKind};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerChanges {
    name: Option<String>,
    #[serde(default)]
    layer_id: Value,
    service_name: String,
    #[serde(default)]
    last_updated_time: Option<Value>,
    changes_url: Option<String>,
    events: Vec<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Parses a feature-service payload. The dedup key covers the layer, the change type and the
/// change window (`changesUrl` carries `serverGens`), which ArcGIS keeps across retries.
pub(super) fn parse(hook: &str, value: Value) -> Result<Vec<Event>, ParseError> {
    if !value.is_array() {
        return Err(ParseError::Shape {
            kind: "feature-service",
            detail: "expected a JSON array of layer changes".into(),
        });
    }
    let layers: Vec<LayerChanges> = typed("feature-service", value)?;
    let mut out = Vec::new();
    for layer in layers {
        let layer_id = text(&layer.layer_id);
        let changes_url = layer.changes_url.map(decode_url);
        let when = millis(layer.last_updated_time.as_ref());
        let mut properties = layer.rest;
        properties.insert(
            "serviceName".into(),
            Value::from(layer.service_name.clone()),
        );
        properties.insert("layerId".into(), layer.layer_id.clone());
        if let Some(u) = &changes_url {
            properties.insert("changesUrl".into(), Value::from(u.clone()));
        }
        if let Some(t) = &layer.last_updated_time {
            properties.insert("lastUpdatedTime".into(), t.clone());
        }
        let org = properties.get("orgId").map(text).unwrap_or_default();
        let id = if layer_id.is_empty() {
            layer.service_name.clone()
        } else {
            format!("{}/{}", layer.service_name, layer_id)
        };
        let when_text = when.map(|w| w.to_string()).unwrap_or_default();
        for change in layer.events {
            let key = DedupKey::from_parts(&[
                "feature-service",
                hook,
                layer.name.as_deref().unwrap_or(""),
                &org,
                &layer.service_name,
                &layer_id,
                changes_url.as_deref().unwrap_or(""),
                &when_text,
                &change,
            ]);
            out.push(Event {
                event_id: key.to_string(),
                kind: EventKind::FeatureService,
                source: "featureService".into(),
                operation: change,
                id: id.clone(),
                webhook: layer.name.clone(),
                user: None,
                when,
                portal: None,
                properties: properties.clone(),
                hook: hook.to_string(),
                accepted_at: 0,
            });
        }
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
        let ev = parse("parcels", sample("feature-multi.json")).unwrap();
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
        assert_eq!(e.kind, EventKind::FeatureService);
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
        let ev = parse("p", v).unwrap();
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
            let ev = parse("p", v).unwrap();
            assert_eq!(ev[0].properties["changesUrl"], url);
        }
    }

    #[test]
    fn a_layer_without_events_is_refused() {
        let mut v = sample("feature-created.json");
        v[0].as_object_mut().unwrap().remove("events");
        let err = parse("p", v).unwrap_err().to_string();
        assert!(err.contains("[0]") && err.contains("events"), "{err}");
    }
}
