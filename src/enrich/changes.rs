//! A change file made into what sinks get: `changes` per layer, or one event per feature.

use serde_json::{Map, Value, json};

use crate::event::{DedupKey, Event};

/// The change file's edits, per layer: `{layerId, serverGen, adds, updates, deleteIds}`
/// (ids-only files give `addIds`, `updateIds`, `deleteIds`). Err names what is missing.
pub fn normalize(file: &Value) -> Result<Value, String> {
    let edits = file
        .get("edits")
        .and_then(Value::as_array)
        .ok_or("the change file has no edits array")?;
    let gens: Vec<(i64, Value)> = file
        .get("layerServerGens")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| Some((g.get("id")?.as_i64()?, g.get("serverGen")?.clone())))
                .collect()
        })
        .unwrap_or_default();
    let mut layers = Vec::with_capacity(edits.len());
    for (i, layer) in edits.iter().enumerate() {
        let id = layer
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("edits[{i}].id: missing or not a number"))?;
        let mut out = Map::new();
        out.insert("layerId".into(), id.into());
        let gen_ = gens.iter().find(|(l, _)| *l == id).map(|(_, g)| g.clone());
        out.insert("serverGen".into(), gen_.unwrap_or(Value::Null));
        if let Some(f) = layer.get("features") {
            for k in ["adds", "updates", "deleteIds"] {
                out.insert(k.into(), f.get(k).cloned().unwrap_or_else(|| json!([])));
            }
        } else if let Some(ids) = layer.get("objectIds") {
            for (from, to) in [
                ("adds", "addIds"),
                ("updates", "updateIds"),
                ("deletes", "deleteIds"),
            ] {
                out.insert(
                    to.into(),
                    ids.get(from).cloned().unwrap_or_else(|| json!([])),
                );
            }
        } else {
            return Err(format!("edits[{i}]: neither features nor objectIds"));
        }
        layers.push(Value::Object(out));
    }
    Ok(Value::Array(layers))
}

/// The id of a feature: its GlobalID, else its OBJECTID (attribute names in any case).
fn feature_id(feature: &Value) -> String {
    let attrs = feature.get("attributes").and_then(Value::as_object);
    let find = |name: &str| {
        attrs.and_then(|a| {
            a.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    };
    let v = find("globalid").or_else(|| find("objectid"));
    v.map(id_text).unwrap_or_default()
}

fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The change type ArcGIS names an operation of a change file with.
fn change_type(op: &str) -> &'static str {
    match op {
        "add" => "FeaturesCreated",
        "update" => "FeaturesUpdated",
        _ => "FeaturesDeleted",
    }
}

/// The service a change window belongs to: its `changesUrl` without the query and without the
/// final `extractChanges` (so every window of one service names it the same way).
fn service_url(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.trim_end_matches('/');
    path.strip_suffix("/extractChanges").unwrap_or(path)
}

/// The id of one feature change, from what identifies the change and nothing else: the layer
/// (service URL and layer id), the operation, the feature's id and the edit itself (the
/// feature as the change file gives it; for ids-only files the layer's serverGen stands in; a
/// delete needs none, a feature is deleted once). The same change met twice, in two windows
/// that overlap or through a delivery and a poll, gets the same id.
pub fn feature_event_id(layer: &str, op: &str, id: &str, edit: &str) -> String {
    DedupKey::from_parts(&["feature-change", layer, op, id, edit]).to_string()
}

/// One event per added, updated, deleted feature, in change-file order within each layer:
/// `operation` add/update/delete, `id` the feature's id, `properties.layer`
/// (`serviceName/layerId`), `properties.feature`, `properties.serverGen`, `properties.change`
/// the change type of the operation; `event_id` from [`feature_event_id`].
pub fn split(event: &Event, changes: &Value) -> Vec<Event> {
    let mut out = Vec::new();
    let Some(layers) = changes.as_array() else {
        return out;
    };
    let service = event
        .properties
        .get("serviceName")
        .and_then(Value::as_str)
        .unwrap_or(&event.id)
        .to_string();
    let service_at = event
        .properties
        .get("changesUrl")
        .and_then(Value::as_str)
        .map_or_else(|| service.clone(), |u| service_url(u).to_string());
    for layer in layers {
        let layer_id = layer.get("layerId").cloned().unwrap_or(Value::Null);
        let layer_name = format!("{service}/{}", id_text(&layer_id));
        let layer_at = format!("{service_at}/{}", id_text(&layer_id));
        let server_gen = layer.get("serverGen").cloned().unwrap_or(Value::Null);
        let by_gen = format!("serverGen {server_gen}");
        let list = |k: &str| {
            layer
                .get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut parts: Vec<(&str, String, Value, String)> = Vec::new();
        for f in list("adds") {
            parts.push(("add", feature_id(&f), f.clone(), f.to_string()));
        }
        for id in list("addIds") {
            parts.push(("add", id_text(&id), Value::Null, by_gen.clone()));
        }
        for f in list("updates") {
            parts.push(("update", feature_id(&f), f.clone(), f.to_string()));
        }
        for id in list("updateIds") {
            parts.push(("update", id_text(&id), Value::Null, by_gen.clone()));
        }
        for id in list("deleteIds") {
            parts.push(("delete", id_text(&id), Value::Null, String::new()));
        }
        for (op, id, feature, edit) in parts {
            let mut e = event.clone();
            e.event_id = feature_event_id(&layer_at, op, &id, &edit);
            e.properties.remove("changes");
            e.properties
                .insert("change".into(), Value::from(change_type(op)));
            e.properties
                .insert("parentEventId".into(), Value::from(event.event_id.clone()));
            e.properties
                .insert("layer".into(), Value::from(layer_name.clone()));
            e.properties.insert("layerId".into(), layer_id.clone());
            e.properties.insert("serverGen".into(), server_gen.clone());
            e.properties.insert("feature".into(), feature);
            e.operation = op.to_string();
            e.id = id;
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> Value {
        let p = format!(
            "{}/tests/real/aws-lambda-demo_extractChanges-result_changefile.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn the_real_change_file_is_normalized_and_split_in_order() {
        let c = normalize(&real()).unwrap();
        assert_eq!(c[0]["layerId"], 0);
        assert_eq!(c[0]["serverGen"], 1770625);
        assert_eq!(c[0]["adds"].as_array().unwrap().len(), 2);
        let mut ev = crate::queue::tests::event(1);
        ev.properties
            .insert("serviceName".into(), "Webhook_Demo".into());
        let parts = split(&ev, &c);
        let got: Vec<(&str, &str)> = parts
            .iter()
            .map(|e| (e.operation.as_str(), e.id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("add", "CF08E663-267C-4371-AFE9-C87875C26038"),
                ("add", "A39C9D58-9E97-4DD0-A6B8-A2AA64CB04C7"),
                ("update", "E516F064-703A-497A-8093-81A82BEDCB06"),
            ]
        );
        assert_eq!(parts[0].properties["layer"], "Webhook_Demo/0");
        assert_eq!(parts[2].properties["feature"]["attributes"]["OBJECTID"], 62);
        assert_ne!(parts[0].event_id, parts[1].event_id);
        let changes: Vec<&Value> = parts.iter().map(|e| &e.properties["change"]).collect();
        assert_eq!(
            changes,
            ["FeaturesCreated", "FeaturesCreated", "FeaturesUpdated"],
            "each feature's own change type, not the webhook's"
        );
    }

    #[test]
    fn a_change_has_the_same_id_whichever_event_or_window_brings_it() {
        let c = normalize(&real()).unwrap();
        let url = |gens: &str| {
            format!(
                "https://services.example/ORG/arcgis/rest/services/Demo/FeatureServer/extractChanges?serverGens={gens}&async=true"
            )
        };
        let mut created = crate::queue::tests::event(1);
        created.operation = "FeaturesCreated".into();
        created
            .properties
            .insert("changesUrl".into(), url("[1,2]").into());
        let mut updated = crate::queue::tests::event(2);
        updated.operation = "FeaturesUpdated".into();
        updated
            .properties
            .insert("changesUrl".into(), url("[0,2]").into());
        let ids =
            |e: &Event| -> Vec<String> { split(e, &c).into_iter().map(|f| f.event_id).collect() };
        assert_eq!(ids(&created), ids(&updated));
        let mut elsewhere = created.clone();
        elsewhere.properties.insert(
            "changesUrl".into(),
            "https://services.example/ORG/arcgis/rest/services/Other/FeatureServer/extractChanges"
                .into(),
        );
        assert_ne!(ids(&created), ids(&elsewhere), "another service's change");
        let mut edited = c.clone();
        edited[0]["updates"][0]["attributes"]["Notes"] = "edited again".into();
        let again: Vec<String> = split(&created, &edited)
            .into_iter()
            .map(|f| f.event_id)
            .collect();
        assert_eq!(ids(&created)[..2], again[..2]);
        assert_ne!(ids(&created)[2], again[2], "a later edit is another change");
    }

    #[test]
    fn the_ids_only_form_is_read() {
        let file = json!({"layerServerGens": [{"id": 3, "serverGen": 9}],
            "edits": [{"id": 3, "objectIds": {"adds": [1, 2], "updates": [], "deletes": [7]}}]});
        let c = normalize(&file).unwrap();
        assert_eq!(c[0]["addIds"], json!([1, 2]));
        let parts = split(&crate::queue::tests::event(1), &c);
        let got: Vec<(&str, &str)> = parts
            .iter()
            .map(|e| (e.operation.as_str(), e.id.as_str()))
            .collect();
        assert_eq!(got, [("add", "1"), ("add", "2"), ("delete", "7")]);
        assert!(normalize(&json!({"edits": [{"id": 1}]})).is_err());
        assert!(normalize(&json!({"error": {}})).is_err());
    }
}
