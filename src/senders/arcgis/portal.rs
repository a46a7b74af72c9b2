//! Organization (portal) webhooks: `{info: {...}, events: [...]}`, one event per entry.

use serde_json::{Map, Value};

use super::{Family, PORTAL, samples};
use crate::event::{DedupKey, Event};
use crate::senders::json::At;
use crate::senders::{AuthWay, ParseError};

/// Parses a portal payload. `info.when` (the delivery time) is left out of the dedup key
/// because ArcGIS changes it on every retry; the events themselves stay the same.
fn parse(hook: &str, value: &Value) -> Result<Vec<Event>, ParseError> {
    let top = At {
        kind: "portal",
        path: "",
    };
    let o = top.object(value)?;
    let info = match o.get("info") {
        Some(v) => At {
            path: "info",
            ..top
        }
        .object(v)?,
        None => return Err(top.error("info", "missing; expected an object")),
    };
    let at_info = At {
        path: "info",
        ..top
    };
    let webhook_name = at_info.text(info, "webhookName")?;
    let webhook_id = at_info.text(info, "webhookId")?;
    let portal_url = at_info.text(info, "portalURL")?;
    let webhook = webhook_name.clone().or(webhook_id.clone());
    let sender = webhook_id.or(webhook_name).unwrap_or_default();
    let entries = top.array(o, "events")?;
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("events[{i}]");
        let at = At { path: &path, ..top };
        let e = at.object(entry)?;
        let operation = at.string(e, "operation")?;
        let source = at.string(e, "source")?;
        let username = at.text(e, "username")?;
        let user_id = at.text(e, "userId")?;
        let id = at.text(e, "id")?.unwrap_or_default();
        let when = at.millis(e, "when")?;
        let properties: Map<String, Value> =
            at.opt_object(e, "properties")?.cloned().unwrap_or_default();
        let when_text = e.get("when").map(super::text).unwrap_or_default();
        let props_text = Value::Object(properties.clone()).to_string();
        let key = DedupKey::from_parts(&[
            "portal",
            hook,
            &sender,
            &source,
            &operation,
            &id,
            username.as_deref().unwrap_or(""),
            user_id.as_deref().unwrap_or(""),
            &when_text,
            &props_text,
        ]);
        out.push(Event {
            event_id: key.to_string(),
            kind: PORTAL,
            source,
            operation,
            id,
            webhook: webhook.clone(),
            user: username,
            when,
            portal: portal_url.clone(),
            properties,
            hook: hook.to_string(),
            accepted_at: 0,
        });
    }
    Ok(out)
}

/// The JSON pointer of the `index`-th event's properties in a portal payload.
fn properties_pointer(index: usize) -> String {
    format!("/events/{index}/properties")
}

/// Whether a body has this family's shape, for `kind = "auto"`.
fn detect(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key("info") && o.contains_key("events"))
}

/// Organization webhooks: items, groups, users and roles.
pub static SENDER: Family = Family {
    name: "portal",
    shapes: "a portal object {info, events}",
    detect,
    parse,
    auth: &[AuthWay::Signature, AuthWay::SecretHeader],
    sends_crc: false,
    properties_pointer: Some(properties_pointer),
    samples: samples::PORTAL,
    templates: super::mail_templates!("portal"),
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
    fn group_update_fields() {
        let ev = parse("portal", &sample("portal-group-update.json")).unwrap();
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(e.kind, PORTAL);
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
        let ka: Vec<String> = parse("p", &a)
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        let kb: Vec<String> = parse("p", &b)
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(ka, kb);
        assert_ne!(ka[0], ka[1]);
        let mut c = a;
        c["events"][0]["when"] = Value::from(1);
        let kc: Vec<String> = parse("p", &c)
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
        let err = parse("p", &v).unwrap_err().to_string();
        assert!(err.contains("events[0]"), "{err}");
        assert!(err.contains("operation"), "{err}");
    }

    #[test]
    fn properties_pointer_finds_each_events_properties() {
        let v = sample("portal-item-share-multi.json");
        let ev = parse("p", &v).unwrap();
        assert_eq!(ev.len(), 2);
        for (i, e) in ev.iter().enumerate() {
            let at = v.pointer(&properties_pointer(i)).unwrap();
            assert_eq!(at.as_object().unwrap(), &e.properties);
        }
        assert!(!ev[0].properties.is_empty());
    }
}
