//! GitHub webhooks (docs.github.com, "Webhook events and payloads"): one event per delivery,
//! named by the `X-GitHub-Event` header (its operation, with the body's `action` after a dot
//! when it has one: `issues.opened`); `X-GitHub-Delivery` is the delivery's GUID, the same when
//! GitHub or a person redelivers it, so it is the dedup key. `X-Hub-Signature-256` is checked
//! by `verify`.

use serde_json::{Map, Value};

use crate::event::{DedupKey, Event, EventKind};
use crate::senders::json::At;
use crate::senders::{AuthWay, ParseError, Request, Sample, Sender};

/// The kind of events from GitHub.
pub const KIND: EventKind = EventKind::new("github");

/// The header naming the event (`push`, `issues`, `ping`, ...).
const EVENT_HEADER: &str = "X-GitHub-Event";
/// The header with the delivery's GUID.
const DELIVERY_HEADER: &str = "X-GitHub-Delivery";
/// Longest header value taken: both are short tokens.
const MAX_HEADER: usize = 128;

/// GitHub (github.com and GitHub Enterprise Server).
pub struct Github;

impl Sender for Github {
    fn name(&self) -> &'static str {
        "github"
    }

    fn shapes(&self) -> &'static str {
        ""
    }

    fn parse(&self, request: &Request<'_>, value: &Value) -> Result<Vec<Event>, ParseError> {
        let event = request.token_header("github", EVENT_HEADER, MAX_HEADER)?;
        let delivery = request.token_header("github", DELIVERY_HEADER, MAX_HEADER)?;
        parse(request.hook, event, delivery, value).map(|e| vec![e])
    }

    fn auth(&self) -> &'static [AuthWay] {
        &[AuthWay::Github]
    }

    fn samples(&self) -> &'static [Sample] {
        &[Sample {
            headers: &[
                (EVENT_HEADER, "issues"),
                (DELIVERY_HEADER, "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ],
            body: SAMPLE,
        }]
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        crate::senders::event_mail!("github")
    }
}

/// An `issues` delivery, cut down from GitHub's documented example.
const SAMPLE: &str = r#"{"action": "opened", "issue": {"number": 1347, "title": "Found a bug",
    "html_url": "https://github.com/octocat/Hello-World/issues/1347", "user": {"login": "octocat"}},
    "repository": {"id": 1296269, "full_name": "octocat/Hello-World"},
    "sender": {"login": "octocat", "id": 1}}"#;

/// The event of a delivery: what happened (`event` and the body's `action`), to which
/// repository (or organization), by whom, with the whole body as its properties.
fn parse(hook: &str, event: &str, delivery: &str, value: &Value) -> Result<Event, ParseError> {
    let at = At {
        kind: "github",
        path: "",
    };
    let o = at.object(value)?;
    let action = at.text(o, "action")?;
    let operation = match &action {
        Some(a) => format!("{event}.{a}"),
        None => event.to_string(),
    };
    let name = |object: &str, field: &str| -> Result<Option<String>, ParseError> {
        let inner = At { path: object, ..at };
        match at.opt_object(o, object)? {
            Some(m) => inner.text(m, field),
            None => Ok(None),
        }
    };
    let (source, id) = match (
        name("repository", "full_name")?,
        name("organization", "login")?,
    ) {
        (Some(repo), _) => ("repository", repo),
        (None, Some(org)) => ("organization", org),
        (None, None) => ("delivery", delivery.to_string()),
    };
    let properties: Map<String, Value> = o.clone();
    Ok(Event {
        event_id: DedupKey::from_parts(&["github", hook, delivery]).to_string(),
        kind: KIND,
        source: source.to_string(),
        operation,
        id,
        webhook: None,
        user: name("sender", "login")?,
        when: None,
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

    const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

    fn request(headers: &dyn Headers) -> Request<'_> {
        Request {
            hook: "h",
            headers,
            paths: None,
        }
    }

    #[test]
    fn an_issue_opened() {
        let value: Value = serde_json::from_str(SAMPLE).unwrap();
        let headers = [
            ("X-GitHub-Event", "issues"),
            ("x-github-delivery", DELIVERY),
        ];
        let e = &Github.parse(&request(&headers), &value).unwrap()[0];
        assert_eq!(e.kind, KIND);
        assert_eq!(e.operation, "issues.opened");
        assert_eq!(
            (e.source.as_str(), e.id.as_str()),
            ("repository", "octocat/Hello-World")
        );
        assert_eq!(e.user.as_deref(), Some("octocat"));
        assert_eq!(e.properties["issue"]["number"], 1347);
        // The delivery GUID alone is the identity.
        let again = Github.parse(&request(&headers), &value).unwrap();
        assert_eq!(again[0].event_id, e.event_id);
    }

    #[test]
    fn a_ping_has_no_action() {
        let value: Value = serde_json::from_str(
            r#"{"zen": "Keep it logically awesome.", "hook_id": 1, "organization": {"login": "octo-org"}}"#,
        )
        .unwrap();
        let headers = [("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", DELIVERY)];
        let e = &Github.parse(&request(&headers), &value).unwrap()[0];
        assert_eq!(e.operation, "ping");
        assert_eq!(
            (e.source.as_str(), e.id.as_str()),
            ("organization", "octo-org")
        );
    }

    #[test]
    fn refusals_name_the_header() {
        let value: Value = serde_json::from_str(SAMPLE).unwrap();
        let only_event = [("X-GitHub-Event", "issues")];
        let e = Github.parse(&request(&only_event), &value).unwrap_err();
        assert!(e.to_string().contains("X-GitHub-Delivery: missing"), "{e}");
        let spaced = [
            ("X-GitHub-Event", "is sues"),
            ("X-GitHub-Delivery", DELIVERY),
        ];
        let e = Github.parse(&request(&spaced), &value).unwrap_err();
        assert!(e.to_string().contains("X-GitHub-Event"), "{e}");
        let headers = [
            ("X-GitHub-Event", "issues"),
            ("X-GitHub-Delivery", DELIVERY),
        ];
        let e = Github
            .parse(&request(&headers), &serde_json::json!([1]))
            .unwrap_err();
        assert!(e.to_string().contains("not a github payload"), "{e}");
    }
}
