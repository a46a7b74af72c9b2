//! Standard Webhooks (standardwebhooks.com): any service that signs its deliveries the way the
//! specification says. One event per delivery, `{type, timestamp, data}`; its `webhook-id`
//! header is the message's identity, kept the same on every retry, so it is the dedup key. The
//! signature and its timestamp (replay protection) are checked by `verify`.

use serde_json::{Map, Value};

use crate::event::{DedupKey, Event, EventKind};
use crate::senders::json::At;
use crate::senders::{AuthWay, ParseError, Request, Sample, Sender};

/// The kind of events from a Standard Webhooks sender.
pub const KIND: EventKind = EventKind::new("standard-webhooks");

/// The header that names the message, the same on each retry.
const ID_HEADER: &str = "webhook-id";

/// Longest `webhook-id` taken: ids are short tokens (`msg_...`), never a place for data.
const MAX_ID: usize = 256;

/// A Standard Webhooks sender.
pub struct StandardWebhooks;

impl Sender for StandardWebhooks {
    fn name(&self) -> &'static str {
        "standard-webhooks"
    }

    fn shapes(&self) -> &'static str {
        ""
    }

    fn parse(&self, request: &Request<'_>, value: &Value) -> Result<Vec<Event>, ParseError> {
        let id = request.token_header("standard-webhooks", ID_HEADER, MAX_ID)?;
        parse(request.hook, id, value).map(|e| vec![e])
    }

    fn auth(&self) -> &'static [AuthWay] {
        &[AuthWay::StandardWebhooks]
    }

    fn samples(&self) -> &'static [Sample] {
        &[Sample {
            headers: &[(ID_HEADER, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")],
            body: SAMPLE,
        }]
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        crate::senders::event_mail!("standard-webhooks")
    }
}

/// The example payload of the specification.
const SAMPLE: &str = r#"{"type": "contact.created", "timestamp": "2022-11-03T20:26:10.344522Z",
    "data": {"id": "1f81eb52-5198-4599-803e-771906343485", "type": "contact"}}"#;

/// The event of a delivery with message id `id`: `type` is its operation (and the part before
/// its first `.` its source), `data` its properties, `data.id` its id when it has one.
fn parse(hook: &str, id: &str, value: &Value) -> Result<Event, ParseError> {
    let at = At {
        kind: "standard-webhooks",
        path: "",
    };
    let o = at.object(value)?;
    let operation = at.string(o, "type")?;
    let when = match at.text(o, "timestamp")? {
        Some(t) => Some(
            humantime::parse_rfc3339_weak(&t)
                .map_err(|_| at.error("timestamp", "expected an RFC 3339 time"))?,
        ),
        None => None,
    }
    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    .and_then(|d| i64::try_from(d.as_millis()).ok());
    let properties: Map<String, Value> = match o.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(_) => at.opt_object(o, "data")?.cloned().unwrap_or_default(),
    };
    let data_at = At { path: "data", ..at };
    let subject = data_at.text(&properties, "id")?;
    let source = operation
        .split_once('.')
        .map_or(operation.as_str(), |(s, _)| s)
        .to_string();
    Ok(Event {
        event_id: DedupKey::from_parts(&["standard-webhooks", hook, id]).to_string(),
        kind: KIND,
        source,
        operation,
        id: subject.unwrap_or_else(|| id.to_string()),
        webhook: None,
        user: None,
        when,
        portal: None,
        properties,
        hook: hook.to_string(),
        accepted_at: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::senders::Headers;

    fn request(headers: &dyn Headers) -> Request<'_> {
        Request {
            hook: "h",
            headers,
            paths: None,
        }
    }

    #[test]
    fn the_specifications_example() {
        let value: Value = serde_json::from_str(SAMPLE).unwrap();
        let headers = [("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")];
        let events = StandardWebhooks.parse(&request(&headers), &value).unwrap();
        let e = &events[0];
        assert_eq!(e.kind, KIND);
        assert_eq!(e.operation, "contact.created");
        assert_eq!(e.source, "contact");
        assert_eq!(e.id, "1f81eb52-5198-4599-803e-771906343485");
        assert_eq!(e.when, Some(1_667_507_170_344));
        assert_eq!(e.properties["type"], "contact");
        // The message id alone is the identity: the same message is the same event.
        let again = StandardWebhooks.parse(&request(&headers), &value).unwrap();
        assert_eq!(again[0].event_id, e.event_id);
        let other = [("webhook-id", "msg_other")];
        let other = StandardWebhooks.parse(&request(&other), &value).unwrap();
        assert_ne!(other[0].event_id, e.event_id);
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let value: Value = serde_json::from_str(SAMPLE).unwrap();
        let e = StandardWebhooks.parse(&request(&()), &value).unwrap_err();
        assert!(e.to_string().contains("webhook-id: missing"), "{e}");
        let twice = [("webhook-id", "a"), ("Webhook-Id", "b")];
        assert!(StandardWebhooks.parse(&request(&twice), &value).is_err());
        let long = "x".repeat(300);
        let long = [("webhook-id", long.as_str())];
        assert!(StandardWebhooks.parse(&request(&long), &value).is_err());
        let headers = [("webhook-id", "msg_1")];
        for (body, want) in [
            (r#"{"data": {}}"#, "type"),
            (r#"{"type": 1}"#, "type"),
            (r#"{"type": "a", "data": 3}"#, "data"),
            (r#"{"type": "a", "timestamp": "yesterday"}"#, "timestamp"),
            ("[]", "object"),
        ] {
            let value: Value = serde_json::from_str(body).unwrap();
            let e = StandardWebhooks
                .parse(&request(&headers), &value)
                .unwrap_err();
            assert!(e.to_string().contains(want), "{body}: {e}");
        }
    }
}
