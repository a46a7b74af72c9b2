//! `[hooks.NAME]`: one payload URL each, how its deliveries authenticate and what is removed
//! from them before they are stored.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::arcgis::HookKind;
use crate::arcgis::json::RedactPath;
use crate::problem::Problem;
use crate::secret::Secret;
use crate::verify::AuthWay;

/// `[hooks.NAME]`: one payload URL, `POST /hooks/NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The payload kind this hook accepts.
    #[serde(default = "default_kind")]
    pub kind: HookKind,
    /// Keys and shared secrets; any one may match (rotation). The first answers CRC challenges.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The ways a delivery may authenticate; by default those the hook's kind of sender uses.
    pub auth: Option<Vec<AuthWay>>,
    /// Refuse unauthenticated deliveries; defaults to true when secrets are set.
    /// (`require_signature` is its older name.)
    #[serde(alias = "require_signature")]
    pub require_auth: Option<bool>,
    /// JSON paths removed from the payload before it is stored or sent (personal data).
    #[serde(default, deserialize_with = "redact_paths")]
    pub redact: Vec<RedactPath>,
}

impl HookConfig {
    /// Whether an unauthenticated delivery is refused.
    pub fn auth_required(&self) -> bool {
        self.require_auth.unwrap_or(!self.secrets.is_empty())
    }

    /// The ways a delivery may authenticate.
    pub fn auth_ways(&self) -> &[AuthWay] {
        match &self.auth {
            Some(ways) => ways,
            None => AuthWay::defaults(self.kind),
        }
    }
}

fn redact_paths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RedactPath>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|p| RedactPath::parse(p).map_err(serde::de::Error::custom))
        .collect()
}

fn default_kind() -> HookKind {
    HookKind::Auto
}

/// Checks every hook: its name, and that its secrets can authenticate the ways it allows.
pub(super) fn check(hooks: &BTreeMap<String, HookConfig>, problems: &mut Vec<Problem>) {
    for (name, hook) in hooks {
        if !valid_name(name) {
            problems.push(Problem::new(
                format!("hooks.{name}"),
                "a hook name may use only letters, digits, '-' and '_'",
            ));
        }
        if hook.require_auth == Some(true) && hook.secrets.is_empty() {
            problems.push(Problem::new(
                format!("hooks.{name}.secrets"),
                "require_auth is true but no secret is configured",
            ));
        }
        let explicit_url = hook.kind == HookKind::Survey123
            || hook
                .auth
                .as_ref()
                .is_some_and(|w| w.contains(&AuthWay::UrlSecret));
        if explicit_url {
            for (i, secret) in hook.secrets.iter().enumerate() {
                if !url_safe(secret.expose()) {
                    problems.push(Problem::new(
                        format!("hooks.{name}.secrets[{i}]"),
                        "a secret sent in the payload URL must use only A-Z a-z 0-9 - . _ ~ \
                         (it is compared exactly as it arrives, never percent-decoded)",
                    ));
                }
            }
        }
        if hook.auth.as_ref().is_some_and(Vec::is_empty) {
            problems.push(Problem::new(
                format!("hooks.{name}.auth"),
                "lists no way; expected any of \"signature\", \"secret-header\", \"url-secret\"",
            ));
        }
    }
}

/// Whether a secret can travel in a URL as it is.
fn url_safe(secret: &str) -> bool {
    secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `name` is a safe hook, sink or connection name (it appears in URLs, keys and
/// metric labels).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
