//! The headers a request carries besides its body's: each configured name and value checked,
//! the one `auth` adds, and those hookbridge sets itself, which a config may not set.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Deserialize;

use super::sign::{SignConfig, Signer};
use crate::secret::Secret;

/// The header carrying the event id, so that receivers deduplicate even without signing.
pub(super) const EVENT_ID_HEADER: &str = "x-hookbridge-event-id";

/// `auth`: one way of authenticating to the receiver, its secret from `env:`/`file:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<Secret>,
    /// Basic authentication: the user name (with `password`).
    pub user: Option<String>,
    /// Basic authentication: the password.
    pub password: Option<Secret>,
    /// A custom header's name (with `value`), e.g. `X-Api-Key`.
    pub header: Option<String>,
    /// The custom header's value.
    pub value: Option<Secret>,
}

/// Headers hookbridge always sets itself (lower case).
const RESERVED: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    EVENT_ID_HEADER,
];

/// Headers hookbridge sets for a sink with this `auth` and `sign` (lower case): configuring
/// them would conflict.
pub(super) fn reserved_headers(
    auth: Option<&AuthConfig>,
    sign: Option<&SignConfig>,
) -> Vec<String> {
    let mut names: Vec<String> = RESERVED.iter().map(ToString::to_string).collect();
    if let Some(auth) = auth {
        let header = auth.header.as_deref().unwrap_or("authorization");
        names.push(header.to_ascii_lowercase());
    }
    if let Some(sign) = sign {
        names.extend(Signer::header_names(sign));
    }
    names
}

/// A configured header name, checked.
pub(super) fn header_name(name: &str, reserved: &[String]) -> Result<HeaderName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if reserved.iter().any(|r| r == parsed.as_str()) {
        let hint = if parsed == CONTENT_TYPE {
            " (use content_type)"
        } else {
            ""
        };
        return Err(format!("{name} is set by hookbridge itself{hint}"));
    }
    Ok(parsed)
}

/// A header value, checked; `sensitive` keeps it out of debug output and `explain`.
pub(super) fn header_value(text: &str, sensitive: bool) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        "is not a valid header value (it holds a line break or another control character)"
            .to_string()
    })?;
    value.set_sensitive(sensitive);
    Ok(value)
}

/// The header `auth` adds; an error names the sub-key (`""`, `.user`, `.header`) at fault.
pub(super) fn auth_header(a: &AuthConfig) -> Result<(HeaderName, HeaderValue), (String, String)> {
    let ways = [
        a.bearer.is_some(),
        a.user.is_some() || a.password.is_some(),
        a.header.is_some() || a.value.is_some(),
    ];
    let expected = "expected one of { bearer = ... }, { user = ..., password = ... } or { header = ..., value = ... }";
    if ways.iter().filter(|w| **w).count() != 1 {
        return Err((String::new(), expected.into()));
    }
    let invalid = |k: &'static str| move |e: String| (format!(".{k}"), e);
    if let Some(token) = &a.bearer {
        let value =
            header_value(&format!("Bearer {}", token.expose()), true).map_err(invalid("bearer"))?;
        return Ok((AUTHORIZATION, value));
    }
    if let (Some(user), Some(password)) = (&a.user, &a.password) {
        if user.contains(':') {
            return Err((
                ".user".into(),
                "may not contain ':' (basic authentication separates the password with it)".into(),
            ));
        }
        let encoded = STANDARD.encode(format!("{user}:{}", password.expose()));
        let value = header_value(&format!("Basic {encoded}"), true).map_err(invalid("user"))?;
        return Ok((AUTHORIZATION, value));
    }
    if let (Some(header), Some(value)) = (&a.header, &a.value) {
        let name = header_name(header, &[]).map_err(invalid("header"))?;
        let value = header_value(value.expose(), true).map_err(invalid("value"))?;
        return Ok((name, value));
    }
    let missing = match (&a.user, &a.password, &a.header) {
        (Some(_), ..) => ".password",
        (_, Some(_), _) => ".user",
        (.., Some(_)) => ".value",
        _ => ".header",
    };
    let needs = "missing; basic authentication needs user and password, a custom header needs header and value";
    Err((missing.into(), needs.into()))
}
