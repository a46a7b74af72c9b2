//! Geoprocessing-service webhooks (docs/arcgis.md, "Deliveries"): one event per job state change.
//!
//! Esri's published schema (ArcGIS Enterprise 11.1+) is one object with `jobId`, `statusURL`,
//! `taskName`, `serviceName` and `events: [{eventType, when}]`. An older guess put `jobId` and
//! `jobStatus` at the top level (or one object down); it is still accepted. `eventType` values are
//! kept exactly as sent.

use serde_json::{Map, Value};

use super::{Family, GEOPROCESSING, samples};
use crate::event::{DedupKey, Event};
use crate::senders::json::At;
use crate::senders::{AuthWay, ParseError};

const KIND: &str = "geoprocessing";
const JOB_ID: &[&str] = &["jobId", "jobID", "job_id", "jobid"];
const STATUS: &[&str] = &["jobStatus", "status", "job_status"];
const WEBHOOK: &[&str] = &["webhookName", "name", "webhookId"];

/// Whether a value looks like a job notification of either shape (for `kind = "auto"`).
fn looks_like_job(value: &Value) -> bool {
    value.as_object().is_some_and(is_published) || find_job(value).is_some()
}

fn is_published(o: &Map<String, Value>) -> bool {
    let typed = o.get("serviceType").and_then(Value::as_str) == Some("GPServer");
    o.get("events").is_some_and(Value::is_array) && (typed || first(o, JOB_ID).is_some())
}

fn first<'a>(o: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| o.get(*n))
        .filter(|v| !v.is_null())
}

/// The object holding the job id and status: the payload itself or one of its object fields.
fn find_job(value: &Value) -> Option<&Map<String, Value>> {
    let o = value.as_object()?;
    let has = |o: &Map<String, Value>| first(o, JOB_ID).is_some() && first(o, STATUS).is_some();
    if has(o) {
        return Some(o);
    }
    o.values()
        .filter_map(Value::as_object)
        .find(|inner| has(inner))
}

/// Parses a geoprocessing payload of either shape.
fn parse(hook: &str, value: &Value) -> Result<Vec<Event>, ParseError> {
    let top = At {
        kind: KIND,
        path: "",
    };
    match value.as_object() {
        Some(o) if is_published(o) => published(hook, top, o),
        _ => older(hook, value),
    }
}

/// Esri's published schema: one event per `events[]` entry.
fn published(hook: &str, at: At<'_>, o: &Map<String, Value>) -> Result<Vec<Event>, ParseError> {
    let Some(id_key) = JOB_ID
        .iter()
        .find(|k| o.get(**k).is_some_and(|v| !v.is_null()))
    else {
        return Err(at.error("jobId", "missing; expected the job's id"));
    };
    let job_id = at.text(o, id_key)?.unwrap_or_default();
    let webhook = at.text(o, "name")?;
    let service = service_name(o);
    let mut properties: Map<String, Value> = o
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "events" | "name") && !JOB_ID.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    properties.retain(|_, v| !v.is_null());
    let entries = at.array(o, "events")?;
    if entries.is_empty() {
        return Err(at.error(
            "events",
            "is empty; expected at least one {eventType, when}",
        ));
    }
    let props_text = Value::Object(properties.clone()).to_string();
    let mut out = Vec::with_capacity(entries.len());
    for (j, entry) in entries.iter().enumerate() {
        let path = format!("events[{j}]");
        let at = At { path: &path, ..at };
        let e = at.object(entry)?;
        let status = at.string(e, "eventType")?;
        let when = at.millis(e, "when")?;
        let mut props = properties.clone();
        // Whatever else an entry carries (messages, results) is part of the state it reports.
        for (k, v) in e
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "eventType" | "when"))
        {
            props.insert(k.clone(), v.clone());
        }
        let key = job_key(
            hook,
            &service,
            &job_id,
            &status,
            when,
            &[&props_text, &entry.to_string()],
        );
        out.push(job_event(
            hook,
            key,
            &job_id,
            status,
            webhook.clone(),
            when,
            props,
        ));
    }
    Ok(out)
}

/// The older guess: `jobId` and `jobStatus` at the top level or one object down.
fn older(hook: &str, value: &Value) -> Result<Vec<Event>, ParseError> {
    let job = find_job(value).ok_or_else(|| ParseError::Shape {
        kind: KIND,
        detail: "expected Esri's job notification {jobId, statusURL, events: [{eventType, when}]} \
                 or an object with jobId and jobStatus"
            .into(),
    })?;
    let job_id = first(job, JOB_ID).map(super::text).unwrap_or_default();
    let status = first(job, STATUS).map(super::text).unwrap_or_default();
    let top = value.as_object().cloned().unwrap_or_default();
    let webhook = first(&top, WEBHOOK)
        .or_else(|| first(job, WEBHOOK))
        .map(super::text);
    let service = service_name(job);
    let when = ["when", "time", "timestamp"]
        .iter()
        .find_map(|k| super::millis(job.get(*k).or_else(|| top.get(*k))));
    let mut properties = top;
    for n in JOB_ID.iter().chain(STATUS) {
        properties.remove(*n);
    }
    // The whole rest of the payload tells a new state (new messages, results, time) from a retry.
    let rest = Value::Object(properties.clone()).to_string();
    let key = job_key(hook, &service, &job_id, &status, when, &[&rest]);
    Ok(vec![job_event(
        hook, key, &job_id, status, webhook, when, properties,
    )])
}

/// A job notification's dedup key: the job, its state and time, and `state` (everything else
/// the payload says about it), so that a new state is never mistaken for a retry.
fn job_key(
    hook: &str,
    service: &str,
    job_id: &str,
    status: &str,
    when: Option<i64>,
    state: &[&str],
) -> DedupKey {
    let when = when.map(|w| w.to_string()).unwrap_or_default();
    let mut parts = vec![KIND, hook, service, job_id, status, &when];
    parts.extend_from_slice(state);
    DedupKey::from_parts(&parts)
}

/// `folderName/serviceName/taskName`, as far as the payload names them.
fn service_name(o: &Map<String, Value>) -> String {
    ["folderName", "serviceName", "service", "taskName", "task"]
        .iter()
        .filter_map(|k| o.get(*k))
        .map(super::text)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

fn job_event(
    hook: &str,
    key: DedupKey,
    job_id: &str,
    status: String,
    webhook: Option<String>,
    when: Option<i64>,
    properties: Map<String, Value>,
) -> Event {
    Event {
        event_id: key.to_string(),
        kind: GEOPROCESSING,
        source: "gpService".into(),
        operation: status,
        id: job_id.to_string(),
        webhook,
        user: None,
        when,
        portal: None,
        properties,
        hook: hook.to_string(),
        accepted_at: 0,
    }
}

/// Geoprocessing webhooks: a job's status changes.
pub static SENDER: Family = Family {
    name: "geoprocessing",
    shapes: "a geoprocessing job {jobId, statusURL, events} or {jobId, jobStatus}",
    detect: looks_like_job,
    parse,
    auth: &[AuthWay::Signature],
    sends_crc: true,
    properties_pointer: None,
    samples: samples::GEOPROCESSING,
    templates: super::mail_templates!("geoprocessing"),
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn published_job() -> Value {
        json!({"serviceType": "GPServer", "jobId": "jd1", "name": "gp-hook",
            "statusURL": "https://h/server/rest/services/Tools/Buffer/GPServer/Buffer/jobs/jd1",
            "taskName": "Buffer", "folderName": "Tools", "serviceName": "Buffer",
            "events": [{"eventType": "esriJobSucceeded", "when": 1730385704000_i64}]})
    }

    #[test]
    fn the_published_schema() {
        let ev = parse("gp", &published_job()).unwrap();
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(
            (e.id.as_str(), e.operation.as_str()),
            ("jd1", "esriJobSucceeded")
        );
        assert_eq!(e.webhook.as_deref(), Some("gp-hook"));
        assert_eq!(e.when, Some(1730385704000));
        for k in ["statusURL", "taskName", "serviceName", "folderName"] {
            assert!(e.properties.contains_key(k), "{k}");
        }
        assert!(!e.properties.contains_key("jobId"));
        assert!(looks_like_job(&published_job()));
    }

    #[test]
    fn a_new_when_or_new_messages_is_a_new_event() {
        let a = parse("gp", &published_job()).unwrap();
        let mut v = published_job();
        v["events"][0]["when"] = Value::from(1730385709000_i64);
        assert_ne!(parse("gp", &v).unwrap()[0].event_id, a[0].event_id);
        let mut v = published_job();
        v["events"][0]["messages"] = json!(["done"]);
        assert_ne!(parse("gp", &v).unwrap()[0].event_id, a[0].event_id);
        assert_eq!(
            parse("gp", &published_job()).unwrap()[0].event_id,
            a[0].event_id
        );
        let old = |extra: Value| {
            let mut v = json!({"jobId": "j", "jobStatus": "esriJobSucceeded"});
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            parse("gp", &v).unwrap()[0].event_id.clone()
        };
        assert_ne!(old(json!({"when": 1})), old(json!({"when": 2})));
        assert_ne!(old(json!({"results": {"a": 1}})), old(json!({})));
    }

    #[test]
    fn empty_events_and_missing_event_type_are_refused() {
        let mut v = published_job();
        v["events"] = json!([]);
        assert!(
            parse("gp", &v)
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        v["events"] = json!([{"when": 1}]);
        let e = parse("gp", &v).unwrap_err().to_string();
        assert!(e.contains("events[0].eventType"), "{e}");
    }

    #[test]
    fn flat_and_nested_jobs() {
        let flat = json!({"jobId": "j1", "jobStatus": "esriJobSucceeded", "serviceName": "Buffer", "webhookName": "gp"});
        let e = &parse("gp", &flat).unwrap()[0];
        assert_eq!(
            (e.id.as_str(), e.operation.as_str()),
            ("j1", "esriJobSucceeded")
        );
        assert_eq!(e.webhook.as_deref(), Some("gp"));
        assert_eq!(e.properties["serviceName"], "Buffer");
        let nested = json!({"name": "gp", "job": {"jobId": "j2", "status": "esriJobFailed"}});
        let e = &parse("gp", &nested).unwrap()[0];
        assert_eq!(
            (e.id.as_str(), e.operation.as_str()),
            ("j2", "esriJobFailed")
        );
    }

    #[test]
    fn status_change_is_a_new_event() {
        let a = parse("gp", &json!({"jobId": "j", "jobStatus": "esriJobFailed"})).unwrap();
        let b = parse(
            "gp",
            &json!({"jobId": "j", "jobStatus": "esriJobCancelled"}),
        )
        .unwrap();
        assert_ne!(a[0].event_id, b[0].event_id);
    }

    #[test]
    fn no_job_is_refused() {
        assert!(parse("gp", &json!({"hello": 1})).is_err());
        assert!(parse("gp", &json!([1])).is_err());
    }
}
