//! Survey123 webhooks (docs/arcgis.md, "Deliveries"): one event per submitted (`addData`) or edited
//! (`editData`) record.
//!
//! The body carries `portalInfo.token`, the submitting user's live ArcGIS token; it is removed
//! from the payload before parsing (see [`crate::senders::prepare`]), so it reaches no event, row or sink.

use serde_json::{Map, Value};

use super::{Family, SURVEY123, samples};
use crate::event::{DedupKey, Event};
use crate::senders::json::At;
use crate::senders::{AuthWay, ParseError};

const KIND: &str = "survey123";

/// Where the submitting user's token sits in a Survey123 body.
pub(super) const TOKEN_PATH: [&str; 2] = ["portalInfo", "token"];

/// Whether an object looks like a Survey123 delivery (for `kind = "auto"`).
fn looks_like_survey(o: &Map<String, Value>) -> bool {
    o.get("eventType").is_some_and(Value::is_string)
        && ["feature", "surveyInfo", "applyEdits"]
            .iter()
            .any(|k| o.contains_key(*k))
}

/// Parses a Survey123 delivery into its one event.
fn parse(hook: &str, value: &Value) -> Result<Vec<Event>, ParseError> {
    let top = At {
        kind: KIND,
        path: "",
    };
    let o = top.object(value)?;
    let operation = top.string(o, "eventType")?;
    let feature = match o.get("feature") {
        None | Some(Value::Null) => {
            return Err(top.error(
                "feature",
                "missing; expected the record {attributes, geometry, layerInfo, result}",
            ));
        }
        Some(v) => At {
            path: "feature",
            ..top
        }
        .object(v)?,
    };
    let at_f = At {
        path: "feature",
        ..top
    };
    let attributes = at_f.opt_object(feature, "attributes")?;
    let layer = at_f.opt_object(feature, "layerInfo")?;
    let result = at_f.opt_object(feature, "result")?;
    let survey = top.opt_object(o, "surveyInfo")?;
    let user = top.opt_object(o, "userInfo")?;
    let portal = top.opt_object(o, "portalInfo")?;

    let id = record_id(result, attributes, layer);
    let webhook = survey
        .and_then(|s| s.get("formTitle"))
        .and_then(Value::as_str);
    let username = user.and_then(|u| u.get("username")).and_then(Value::as_str);
    let form = survey
        .and_then(|s| {
            ["formItemId", "serviceItemId", "serviceUrl"]
                .iter()
                .find_map(|k| s.get(*k).and_then(Value::as_str))
        })
        .unwrap_or_default();

    let mut properties = Map::new();
    let mut keep = |name: &str, v: Option<&Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            properties.insert(name.to_string(), v.clone());
        }
    };
    keep("attributes", feature.get("attributes"));
    keep("geometry", feature.get("geometry"));
    keep("attachments", feature.get("attachments"));
    keep("result", feature.get("result"));
    keep("layerInfo", feature.get("layerInfo"));
    keep("surveyInfo", o.get("surveyInfo"));

    // The record's content: a retried delivery repeats it, a second edit changes it.
    let content = format!(
        "{}|{}",
        feature.get("attributes").unwrap_or(&Value::Null),
        feature.get("geometry").unwrap_or(&Value::Null)
    );
    let key = DedupKey::from_parts(&[KIND, hook, form, &id, &operation, &content]);
    Ok(vec![Event {
        event_id: key.to_string(),
        kind: SURVEY123,
        source: "survey".into(),
        operation,
        id,
        webhook: webhook.map(str::to_string),
        user: username.map(str::to_string),
        when: None,
        portal: portal
            .and_then(|p| p.get("url"))
            .and_then(Value::as_str)
            .map(str::to_string),
        properties,
        hook: hook.to_string(),
        accepted_at: 0,
    }])
}

/// The record's globalId: `feature.result.globalId`, else the attribute `layerInfo.globalIdField`
/// names, else its objectId (an id-less record still parses; its content keys it).
fn record_id(
    result: Option<&Map<String, Value>>,
    attributes: Option<&Map<String, Value>>,
    layer: Option<&Map<String, Value>>,
) -> String {
    let field = |name: &str| layer.and_then(|l| l.get(name)).and_then(Value::as_str);
    let attribute = |name: Option<&str>| Some(attributes?.get(name?)?).filter(|v| !v.is_null());
    result
        .and_then(|r| r.get("globalId"))
        .filter(|v| !v.is_null())
        .or_else(|| attribute(field("globalIdField")))
        .or_else(|| {
            result
                .and_then(|r| r.get("objectId"))
                .filter(|v| !v.is_null())
        })
        .or_else(|| attribute(field("objectIdField")))
        .map(super::text)
        .unwrap_or_default()
}

/// Whether a body has this family's shape, for `kind = "auto"`.
fn detect(value: &Value) -> bool {
    value.as_object().is_some_and(looks_like_survey)
}

/// Survey123 webhooks: records submitted or edited.
pub static SENDER: Family = Family {
    name: "survey123",
    shapes: "a Survey123 record {eventType, feature}",
    detect,
    parse,
    auth: &[AuthWay::UrlSecret],
    sends_crc: false,
    properties_pointer: None,
    samples: samples::SURVEY123,
    templates: super::mail_templates!("survey123"),
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> Value {
        json!({"eventType": "addData",
            "feature": {"attributes": {"globalid": "{G1}", "objectid": 4, "q": "a"}, "geometry": null,
                "layerInfo": {"globalIdField": "globalid", "objectIdField": "objectid"},
                "result": {"globalId": "{G1}", "objectId": 4}},
            "surveyInfo": {"formItemId": "f1", "formTitle": "Inspections"},
            "userInfo": {"username": "jsmith", "email": "j@example.org"},
            "portalInfo": {"url": "https://www.arcgis.com"}})
    }

    #[test]
    fn fields() {
        let e = &parse("s", &record()).unwrap()[0];
        assert_eq!(e.kind, SURVEY123);
        assert_eq!((e.id.as_str(), e.operation.as_str()), ("{G1}", "addData"));
        assert_eq!(e.webhook.as_deref(), Some("Inspections"));
        assert_eq!(e.user.as_deref(), Some("jsmith"));
        assert_eq!(e.portal.as_deref(), Some("https://www.arcgis.com"));
        assert_eq!(e.properties["attributes"]["q"], "a");
        assert!(!e.properties.contains_key("userInfo"));
    }

    #[test]
    fn the_id_falls_back_to_the_global_id_field() {
        let mut v = record();
        v["feature"].as_object_mut().unwrap().remove("result");
        assert_eq!(parse("s", &v).unwrap()[0].id, "{G1}");
        v["feature"]["layerInfo"]["globalIdField"] = Value::from("nope");
        assert_eq!(parse("s", &v).unwrap()[0].id, "4");
    }

    #[test]
    fn a_second_edit_is_a_new_event_and_a_retry_is_not() {
        let a = parse("s", &record()).unwrap()[0].event_id.clone();
        assert_eq!(parse("s", &record()).unwrap()[0].event_id, a);
        let mut v = record();
        v["eventType"] = Value::from("editData");
        let edit1 = parse("s", &v).unwrap()[0].event_id.clone();
        assert_ne!(edit1, a);
        v["feature"]["attributes"]["q"] = Value::from("b");
        assert_ne!(parse("s", &v).unwrap()[0].event_id, edit1);
    }

    #[test]
    fn a_body_without_feature_is_refused() {
        let mut v = record();
        v.as_object_mut().unwrap().remove("feature");
        let e = parse("s", &v).unwrap_err().to_string();
        assert!(
            e.starts_with("not a survey123 payload: at feature: missing"),
            "{e}"
        );
        assert!(looks_like_survey(v.as_object().unwrap()));
    }
}
