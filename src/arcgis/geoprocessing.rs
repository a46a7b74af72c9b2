//! Geoprocessing-service webhooks: one event per job notification.
//!
//! Esri documents the trigger (a job succeeded, failed or was cancelled) but not a fixed shape,
//! so the job id and status are looked for under the names the REST API uses, at the top level
//! or one object down, and everything else is kept as properties.

use serde_json::{Map, Value};

use super::{ParseError, text};
use crate::event::{DedupKey, Event, EventKind};

const JOB_ID: &[&str] = &["jobId", "jobID", "job_id", "jobid"];
const STATUS: &[&str] = &["jobStatus", "status", "job_status"];
const WEBHOOK: &[&str] = &["webhookName", "name", "webhookId"];

/// Whether a value carries a job id and a status (for `kind = "auto"`).
pub(super) fn looks_like_job(value: &Value) -> bool {
    find_job(value).is_some()
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

/// Parses a geoprocessing job payload.
pub(super) fn parse(hook: &str, value: Value) -> Result<Vec<Event>, ParseError> {
    let job = find_job(&value).ok_or_else(|| ParseError::Shape {
        kind: "geoprocessing",
        detail: "expected an object with jobId and jobStatus".into(),
    })?;
    let job_id = first(job, JOB_ID).map(text).unwrap_or_default();
    let status = first(job, STATUS).map(text).unwrap_or_default();
    let top = value.as_object().cloned().unwrap_or_default();
    let webhook = first(&top, WEBHOOK)
        .or_else(|| first(job, WEBHOOK))
        .map(text);
    let service = ["serviceName", "service", "taskName", "task"]
        .iter()
        .filter_map(|k| job.get(*k).or_else(|| top.get(*k)))
        .map(text)
        .collect::<Vec<_>>()
        .join("/");
    let key = DedupKey::from_parts(&["geoprocessing", hook, &service, &job_id, &status]);
    let mut properties = top;
    for n in JOB_ID.iter().chain(STATUS) {
        properties.remove(*n);
    }
    Ok(vec![Event {
        event_id: key.to_string(),
        kind: EventKind::Geoprocessing,
        source: "gpService".into(),
        operation: status,
        id: job_id,
        webhook,
        user: None,
        when: None,
        portal: None,
        properties,
        hook: hook.to_string(),
        accepted_at: 0,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flat_and_nested_jobs() {
        let flat = json!({"jobId": "j1", "jobStatus": "esriJobSucceeded", "serviceName": "Buffer", "webhookName": "gp"});
        let e = &parse("gp", flat).unwrap()[0];
        assert_eq!(
            (e.id.as_str(), e.operation.as_str()),
            ("j1", "esriJobSucceeded")
        );
        assert_eq!(e.webhook.as_deref(), Some("gp"));
        assert_eq!(e.properties["serviceName"], "Buffer");
        let nested = json!({"name": "gp", "job": {"jobId": "j2", "status": "esriJobFailed"}});
        let e = &parse("gp", nested).unwrap()[0];
        assert_eq!(
            (e.id.as_str(), e.operation.as_str()),
            ("j2", "esriJobFailed")
        );
    }

    #[test]
    fn status_change_is_a_new_event() {
        let a = parse("gp", json!({"jobId": "j", "jobStatus": "esriJobFailed"})).unwrap();
        let b = parse("gp", json!({"jobId": "j", "jobStatus": "esriJobCancelled"})).unwrap();
        assert_ne!(a[0].event_id, b[0].event_id);
    }

    #[test]
    fn no_job_is_refused() {
        assert!(parse("gp", json!({"hello": 1})).is_err());
        assert!(parse("gp", json!([1])).is_err());
    }
}
