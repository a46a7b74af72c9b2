//! The normalized event every payload becomes, and its dedup key.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Which sender an event came from (`portal`, `feature-service`, `github`, ...): the name its
/// sender has in the registry of senders, which routes, templates and metric labels use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventKind(Cow<'static, str>);

impl EventKind {
    /// The kind named `name`, as a sender declares it.
    pub const fn new(name: &'static str) -> Self {
        EventKind(Cow::Borrowed(name))
    }

    /// The name used in routes, templates and metric labels.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stable identity for one event: equal for ArcGIS's retries of it, different for other events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey(pub [u8; 16]);

impl DedupKey {
    /// Hashes the identifying parts of an event, each length-framed so that no two lists collide.
    pub fn from_parts(parts: &[&str]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        DedupKey(out)
    }

    /// Parses the hex form shown to users.
    pub fn parse_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        let arr: [u8; 16] = bytes.try_into().ok()?;
        Some(DedupKey(arr))
    }
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// One normalized event, the unit that is deduplicated, routed and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable dedup key, hex.
    pub event_id: String,
    /// The sender it came from.
    pub kind: EventKind,
    /// `item`, `group`, `user`, `role`, `featureService`, `gpService` or `survey`.
    pub source: String,
    /// What happened: `delete`, `FeaturesCreated`, `esriJobSucceeded`, ...
    pub operation: String,
    /// The item/group/user id, `serviceName/layerId`, the job id, or the record's globalId.
    pub id: String,
    /// The ArcGIS webhook's name (or id) that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The user that caused it (portal events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When it happened, epoch milliseconds, as ArcGIS reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<i64>,
    /// The portal URL, when the payload names one (for links in mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// Trigger-specific details.
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// The hook (`/hooks/{hook}`) it arrived on.
    pub hook: String,
    /// When hookbridge accepted it, epoch milliseconds (0 until accepted).
    #[serde(default)]
    pub accepted_at: i64,
}

impl Event {
    /// The key this event is deduplicated by.
    pub fn dedup_key(&self) -> Option<DedupKey> {
        DedupKey::parse_hex(&self.event_id)
    }

    /// Looks a routing field up by name: a top-level field or `properties.<path>`.
    ///
    /// Array properties yield each element so that a route can match any of them.
    pub fn field(&self, name: &str) -> Vec<String> {
        let one = |s: &str| vec![s.to_string()];
        let opt = |s: &Option<String>| s.as_deref().map(one).unwrap_or_default();
        match name {
            "kind" => one(self.kind.as_str()),
            "source" => one(&self.source),
            "operation" => one(&self.operation),
            "id" => one(&self.id),
            "webhook" => opt(&self.webhook),
            "user" => opt(&self.user),
            "hook" => one(&self.hook),
            "event_id" => one(&self.event_id),
            "portal" => opt(&self.portal),
            _ => match name.strip_prefix("properties.") {
                Some(path) => {
                    let mut cur: Option<&Value> = None;
                    for (i, seg) in path.split('.').enumerate() {
                        cur = if i == 0 {
                            self.properties.get(seg)
                        } else {
                            cur.and_then(|v| v.get(seg))
                        };
                    }
                    match cur {
                        None | Some(Value::Null) => vec![],
                        Some(Value::Array(items)) => items.iter().map(scalar_text).collect(),
                        Some(v) => vec![scalar_text(v)],
                    }
                }
                None => vec![],
            },
        }
    }
}

/// The names `Event::field` understands besides `properties.<path>`.
pub const FIELDS: &[&str] = &[
    "kind",
    "source",
    "operation",
    "id",
    "webhook",
    "user",
    "hook",
    "event_id",
    "portal",
];

/// Text of a JSON scalar as a route compares it (strings without quotes).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The one test event: item `item-{n}` added, with a dedup key of its own; tests change the
/// fields they care about with struct update syntax.
/// One event due at one sink: what the queue hands the dispatcher and the dispatcher a sink.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event's queue sequence number (unique, stable across restarts).
    pub seq: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The event.
    pub event: Event,
    /// The payload's JSON text the event came in.
    pub payload: Arc<str>,
}

#[cfg(test)]
pub(crate) fn sample(n: u64) -> Event {
    Event {
        event_id: DedupKey::from_parts(&["test", &n.to_string()]).to_string(),
        kind: EventKind::new("portal"),
        source: "item".into(),
        operation: "add".into(),
        id: format!("item-{n}"),
        webhook: None,
        user: None,
        when: None,
        portal: None,
        properties: Map::new(),
        hook: "h".into(),
        accepted_at: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_prevents_collisions() {
        assert_ne!(
            DedupKey::from_parts(&["ab", "c"]),
            DedupKey::from_parts(&["a", "bc"])
        );
        let k = DedupKey::from_parts(&["x"]);
        assert_eq!(DedupKey::parse_hex(&k.to_string()), Some(k));
        assert_eq!(k.to_string().len(), 32);
    }

    #[test]
    fn field_lookup_walks_properties() {
        let mut props = Map::new();
        props.insert(
            "sharedToGroups".into(),
            serde_json::json!(["Everyone", "g1"]),
        );
        props.insert("layer".into(), serde_json::json!({"id": 3}));
        let e = Event {
            properties: props,
            ..sample(1)
        };
        assert_eq!(e.field("properties.sharedToGroups"), vec!["Everyone", "g1"]);
        assert_eq!(e.field("properties.layer.id"), vec!["3"]);
        assert!(e.field("properties.nope").is_empty());
        assert!(e.field("webhook").is_empty());
        assert_eq!(e.field("kind"), vec!["portal"]);
    }
}
