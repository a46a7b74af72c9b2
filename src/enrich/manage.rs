//! `hookbridge arcgis webhooks list|create|check`: the ArcGIS side of a configured hook, so an
//! administrator registers a webhook without pasting a key by hand and sees what to fix.
//!
//! Feature-service webhooks live under the service's admin endpoint (docs/arcgis.md, "Webhook administration"):
//! ArcGIS Online `…/rest/admin/services/<name>/FeatureServer/WebHooks`, ArcGIS Enterprise
//! `…/admin/services/<folder/><svc>.FeatureServer/webhooks`. A signature key is sent to ArcGIS
//! in a POST body and never printed; what is shown of an ArcGIS webhook's key is whether it has
//! one.

use serde::Serialize;
use serde_json::Value;

use super::{Connection, FetchError};

/// What hookbridge knows of a hook, to compare ArcGIS's webhooks with.
#[derive(Debug, Clone)]
pub struct HookSide<'a> {
    /// The hook's name.
    pub hook: &'a str,
    /// The public URL ArcGIS posts to (`https://…/hooks/NAME`), when it is known.
    pub url: Option<&'a str>,
    /// Whether the hook has a signature key (its first secret signs CRC answers).
    pub has_key: bool,
}

/// One ArcGIS webhook as its resource shows it (never its key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether ArcGIS sends it.
    pub active: Option<bool>,
    /// Where it posts.
    pub hook_url: String,
    /// Whether it has a signature key.
    pub key_set: bool,
    /// The change types it sends (`*` for all).
    pub change_types: Vec<String>,
    /// Failed notification attempts ArcGIS reports.
    pub failed_attempts: Option<i64>,
}

impl WebhookInfo {
    /// Reads a webhook resource of either platform.
    pub fn from_resource(v: &Value) -> WebhookInfo {
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let change_types = match v.get("changeTypes") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => s.split(',').map(|t| t.trim().to_string()).collect(),
            _ => Vec::new(),
        };
        let state = super::webhooks::WebhookState::from_resource(v);
        WebhookInfo {
            id: text("id"),
            name: text("name"),
            active: state.active,
            hook_url: text("hookUrl"),
            key_set: v
                .get("signatureKey")
                .and_then(Value::as_str)
                .is_some_and(|k| !k.is_empty()),
            change_types,
            failed_attempts: state.failed_attempts,
        }
    }

    /// What to fix so that this webhook feeds `side` as it should; empty when nothing.
    pub fn problems(&self, side: &HookSide<'_>) -> Vec<String> {
        let mut out = Vec::new();
        let path = format!("/hooks/{}", side.hook);
        match side.url {
            Some(url) if self.hook_url != url => out.push(format!(
                "its payload URL is {}, not {url}: edit the webhook's hookUrl",
                self.hook_url
            )),
            None if !self.hook_url.trim_end_matches('/').ends_with(&path) => out.push(format!(
                "its payload URL {} does not end in {path}: edit the webhook's hookUrl",
                self.hook_url
            )),
            _ => {}
        }
        if self.active == Some(false) {
            out.push(
                "ArcGIS turned it off (active: false): turn it on again once the failures are understood"
                    .into(),
            );
        }
        match (self.key_set, side.has_key) {
            (false, true) => out.push(format!(
                "it has no signature key, but hook {} requires one: set the hook's key on the webhook (hookbridge arcgis webhooks create does)",
                side.hook
            )),
            (true, false) => out.push(format!(
                "it signs its deliveries, but hook {} has no secret to check them: add the key to hooks.{}.secrets",
                side.hook, side.hook
            )),
            _ => {}
        }
        let wanted = [
            "*",
            "FeaturesCreated",
            "FeaturesUpdated",
            "FeaturesDeleted",
            "FeaturesEdited",
        ];
        if !self.change_types.is_empty()
            && !self
                .change_types
                .iter()
                .any(|t| wanted.contains(&t.as_str()))
        {
            out.push(format!(
                "it sends only {}: no feature edits reach the hook",
                self.change_types.join(", ")
            ));
        }
        if let Some(n) = self.failed_attempts.filter(|n| *n > 0) {
            out.push(format!(
                "ArcGIS counts {n} failed notification attempts: see hookbridge_requests_total for the refusals"
            ));
        }
        out
    }
}

/// The webhooks collection of a feature service (`…/FeatureServer`): ArcGIS Online's admin
/// endpoint, or ArcGIS Enterprise's when the connection signs in as a named user.
pub fn collection_url(service: &str, enterprise: bool) -> Option<String> {
    let service = super::fetch::without_query(service).trim_end_matches('/');
    let (root, rest) = service.split_once("/rest/services/")?;
    if enterprise {
        let rest = rest.strip_suffix("/FeatureServer")?;
        Some(format!(
            "{root}/admin/services/{rest}.FeatureServer/webhooks"
        ))
    } else {
        Some(format!("{root}/rest/admin/services/{rest}/WebHooks"))
    }
}

/// The webhooks of a collection.
pub async fn list(conn: &Connection, collection: &str) -> Result<Vec<WebhookInfo>, FetchError> {
    let answer = conn.read(collection).await?;
    let items = match &answer {
        Value::Array(a) => a.clone(),
        other => other
            .get("webhooks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };
    Ok(items.iter().map(WebhookInfo::from_resource).collect())
}

/// Registers a webhook for `hook` posting to `url`, signed with `key` (sent in the POST body,
/// never shown); ArcGIS checks the URL with a CRC request during the call.
pub async fn create(
    conn: &Connection,
    collection: &str,
    hook: &str,
    url: &str,
    key: Option<&str>,
) -> Result<WebhookInfo, FetchError> {
    let name = format!("hookbridge-{hook}");
    let schedule = r#"{"name":"","startAt":0,"state":"enabled","recurrenceInfo":{"frequency":"second","interval":30}}"#;
    let mut form = vec![
        ("name", name.as_str()),
        ("hookUrl", url),
        ("changeTypes", "*"),
        ("active", "true"),
        ("contentType", "application/json"),
        ("payloadFormat", "json"),
        ("format", "json"),
        ("scheduleInfo", schedule),
    ];
    if let Some(k) = key {
        form.push(("signatureKey", k));
    }
    let answer = conn
        .post(
            &format!("{}/create", collection.trim_end_matches('/')),
            &form,
        )
        .await?;
    let mut info = WebhookInfo::from_resource(&answer);
    if info.hook_url.is_empty() {
        info.hook_url = url.to_string();
    }
    info.key_set = info.key_set || key.is_some();
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collections_of_both_platforms() {
        assert_eq!(
            collection_url(
                "https://services3.arcgis.com/ORG/arcgis/rest/services/Parcels/FeatureServer",
                false
            )
            .as_deref(),
            Some(
                "https://services3.arcgis.com/ORG/arcgis/rest/admin/services/Parcels/FeatureServer/WebHooks"
            )
        );
        assert_eq!(
            collection_url(
                "https://gis.example.com/server/rest/services/City/Parcels/FeatureServer",
                true
            )
            .as_deref(),
            Some(
                "https://gis.example.com/server/admin/services/City/Parcels.FeatureServer/webhooks"
            )
        );
        assert_eq!(collection_url("https://x.example/nothing", false), None);
    }

    #[test]
    fn check_says_what_to_fix_and_never_the_key() {
        let v = json!({"id": "a1", "name": "n", "active": false, "hookUrl": "https://old.example/hooks/p",
            "signatureKey": "", "changeTypes": "LayerSchemaChanged", "curNotificationAttempts": 3});
        let w = WebhookInfo::from_resource(&v);
        let side = HookSide {
            hook: "p",
            url: Some("https://hooks.example/hooks/p"),
            has_key: true,
        };
        let p = w.problems(&side).join("\n");
        for says in [
            "not https://hooks.example/hooks/p",
            "turned it off",
            "no signature key",
            "sends only LayerSchemaChanged",
            "3 failed",
        ] {
            assert!(p.contains(says), "{says}: {p}");
        }
        let good = json!({"id": "a1", "name": "n", "active": true, "hookUrl": "https://hooks.example/hooks/p",
            "signatureKey": "s3cret-key", "changeTypes": ["*"], "curNotificationAttempts": 0});
        let w = WebhookInfo::from_resource(&good);
        assert!(w.problems(&side).is_empty(), "{:?}", w.problems(&side));
        assert!(!serde_json::to_string(&w).unwrap().contains("s3cret"));
    }
}
