//! Organization (portal) webhooks: `{info: {...}, events: [...]}`, one event per entry.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ParseError, millis, text, typed};
use crate::event::{DedupKey, Event, EventKind};

#[derive(Deserialize)]
struct Payload {
    info: Info,
    events: Vec<PortalEvent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    webhook_name: Option<String>,
    webhook_id: Option<String>,
    #[serde(rename = "portalURL")]
    portal_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortalEvent {
    username: Option<String>,
    user_id: Option<String>,
    when: Option<Value>,
    operation: String,
    source: String,
    #[serde(default)]
    id: Value,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// Parses a portal payload. `info.when` (the delivery time) is left out of the dedup key
/// because ArcGIS changes it on every retry; the events themselves stay the same.
pub(super) fn parse(hook: &str, value: Value) -> Result<Vec<Event>, ParseError> {
    let p: Payload = typed("portal", value)?;
    let webhook = p.info.webhook_name.clone().or(p.info.webhook_id.clone());
    let sender = p
        .info
        .webhook_id
        .or(p.info.webhook_name)
        .unwrap_or_default();
    Ok(p.events
        .into_iter()
        .map(|e| {
            let properties = e.properties.unwrap_or_default();
            let id = text(&e.id);
            let when = millis(e.when.as_ref());
            let when_text = e.when.as_ref().map(text).unwrap_or_default();
            let props_text = Value::Object(properties.clone()).to_string();
            let key = DedupKey::from_parts(&[
                "portal",
                hook,
                &sender,
                &e.source,
                &e.operation,
                &id,
                e.username.as_deref().unwrap_or(""),
                e.user_id.as_deref().unwrap_or(""),
                &when_text,
                &props_text,
            ]);
            Event {
                event_id: key.to_string(),
                kind: EventKind::Portal,
                source: e.source,
                operation: e.operation,
                id,
                webhook: webhook.clone(),
                user: e.username,
                when,
                portal: p.info.portal_url.clone(),
                properties,
                hook: hook.to_string(),
                accepted_at: 0,
            }
        })
        .collect())
}

/// The JSON pointer of the `index`-th event's properties in a portal payload.
pub(super) fn properties_pointer(index: usize) -> String {
    format!("/events/{index}/properties")
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
    fn group_update_fields() {
        let ev = parse("portal", sample("portal-group-update.json")).unwrap();
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(e.kind, EventKind::Portal);
        assert_eq!(e.source, "group");
        assert_eq!(e.operation, "update");
        assert_eq!(e.id, "4adc30bb03054812a846fa592de105de");
        assert_eq!(e.webhook.as_deref(), Some("Group monitoring"));
        assert_eq!(e.user.as_deref(), Some("administrator"));
        assert_eq!(e.when, Some(1543192196521));
        assert_eq!(e.portal.as_deref(), Some("https://gis.example.org/portal/"));
        assert_eq!(e.hook, "portal");
    }

    #[test]
    fn retry_with_new_info_when_is_the_same_event() {
        let a = sample("portal-item-share-multi.json");
        let mut b = a.clone();
        b["info"]["when"] = Value::from(1800000000000_i64);
        let ka: Vec<String> = parse("p", a.clone())
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        let kb: Vec<String> = parse("p", b)
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(ka, kb);
        assert_ne!(ka[0], ka[1]);
        let mut c = a;
        c["events"][0]["when"] = Value::from(1);
        let kc: Vec<String> = parse("p", c)
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_ne!(ka[0], kc[0]);
        assert_eq!(ka[1], kc[1]);
    }

    #[test]
    fn missing_operation_names_the_path() {
        let mut v = sample("portal-user-role.json");
        v["events"][0].as_object_mut().unwrap().remove("operation");
        let err = parse("p", v).unwrap_err().to_string();
        assert!(err.contains("events[0]"), "{err}");
        assert!(err.contains("operation"), "{err}");
    }

    #[test]
    fn properties_pointer_finds_each_events_properties() {
        let v = sample("portal-item-share-multi.json");
        let ev = parse("p", v.clone()).unwrap();
        assert_eq!(ev.len(), 2);
        for (i, e) in ev.iter().enumerate() {
            let at = v.pointer(&properties_pointer(i)).unwrap();
            assert_eq!(at.as_object().unwrap(), &e.properties);
        }
        assert!(!ev[0].properties.is_empty());
    }
}
