//! Outbound signatures, so that a receiver can tell a request comes from hookbridge and was not
//! changed on the way: Standard Webhooks (standardwebhooks.com), or a GitHub-style
//! `sha256=<hex>` HMAC of the body in one header.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use sha2::Sha256;

use crate::secret::Secret;

/// `sign`: how requests are signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignConfig {
    /// The signature scheme.
    pub scheme: SignScheme,
    /// The signing secret.
    pub secret: Option<Secret>,
    /// Several secrets while one is rotated out (Standard Webhooks signs with each).
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The header of an `hmac-sha256` signature (default `X-Hub-Signature-256`).
    pub header: Option<String>,
}

/// The signature schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignScheme {
    /// standardwebhooks.com: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// GitHub-style `sha256=<hex HMAC of the body>` in one header.
    HmacSha256,
}

/// The Standard Webhooks headers.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The `hmac-sha256` scheme's header unless `header` names another (GitHub's).
const DEFAULT_HMAC_HEADER: &str = "x-hub-signature-256";

/// Standard base64 that accepts a secret with or without its `=` padding, as the reference
/// libraries do.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Signs requests with the keys of a `sign` table.
pub(super) enum Signer {
    /// One signature per key (several during a rotation), space-separated.
    StandardWebhooks(Vec<Vec<u8>>),
    /// One HMAC of the body in `header`.
    HmacSha256 { key: Vec<u8>, header: HeaderName },
}

impl Signer {
    /// The signer for `c`; an error names the sub-key at fault (`.secret`, `.secrets[1]`, ...).
    pub fn new(c: &SignConfig) -> Result<Signer, (String, String)> {
        let keys: Vec<_> = c.secret.iter().chain(&c.secrets).collect();
        let (one, many) = (c.secret.is_some(), !c.secrets.is_empty());
        if one == many {
            return Err((
                String::new(),
                "expected exactly one of secret = \"...\" or secrets = [...]".into(),
            ));
        }
        let at = |i: usize| match c.secret {
            Some(_) => ".secret".to_string(),
            None => format!(".secrets[{i}]"),
        };
        match c.scheme {
            SignScheme::StandardWebhooks => {
                if c.header.is_some() {
                    return Err((
                        ".header".into(),
                        "standard-webhooks always signs in webhook-signature; header is for hmac-sha256".into(),
                    ));
                }
                let decoded = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| standard_webhooks_key(k.expose()).map_err(|e| (at(i), e)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Signer::StandardWebhooks(decoded))
            }
            SignScheme::HmacSha256 => {
                if keys.len() > 1 {
                    return Err((
                        ".secrets".into(),
                        "hmac-sha256 signs with one secret; rotation needs standard-webhooks"
                            .into(),
                    ));
                }
                let name = c.header.as_deref().unwrap_or(DEFAULT_HMAC_HEADER);
                let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    (
                        ".header".to_string(),
                        format!("{name:?} is not a valid header name"),
                    )
                })?;
                let key = keys
                    .first()
                    .map(|k| k.expose().as_bytes().to_vec())
                    .unwrap_or_default();
                Ok(Signer::HmacSha256 { key, header })
            }
        }
    }

    /// The headers a `sign` table adds (lower case), which no configured header may set.
    pub fn header_names(c: &SignConfig) -> Vec<String> {
        match c.scheme {
            SignScheme::StandardWebhooks => [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE]
                .iter()
                .map(|h| h.as_str().to_string())
                .collect(),
            SignScheme::HmacSha256 => {
                vec![
                    c.header
                        .as_deref()
                        .unwrap_or(DEFAULT_HMAC_HEADER)
                        .to_ascii_lowercase(),
                ]
            }
        }
    }

    /// The signature headers for a request with this message id (the event id: receivers
    /// deduplicate on it), time (epoch seconds) and body.
    pub fn headers(
        &self,
        id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let value = |text: String| {
            HeaderValue::from_str(&text)
                .map_err(|_| format!("cannot sign message id {id:?}: not a header value"))
        };
        match self {
            Signer::StandardWebhooks(keys) => {
                let signatures: Vec<String> = keys
                    .iter()
                    .map(|k| standard_webhooks_signature(k, id, timestamp, body))
                    .collect();
                Ok(vec![
                    (WEBHOOK_ID, value(id.to_string())?),
                    (WEBHOOK_TIMESTAMP, value(timestamp.to_string())?),
                    (WEBHOOK_SIGNATURE, value(signatures.join(" "))?),
                ])
            }
            Signer::HmacSha256 { key, header } => {
                let mut mac = hmac(key);
                mac.update(body);
                let hex = hex::encode(mac.finalize().into_bytes());
                Ok(vec![(header.clone(), value(format!("sha256={hex}"))?)])
            }
        }
    }
}

/// A new HMAC-SHA256; any key length is valid for HMAC.
fn hmac(key: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(e) => unreachable!("HMAC takes keys of any length: {e}"),
    }
}

/// The key of a Standard Webhooks secret: base64, optionally prefixed `whsec_`.
pub(super) fn standard_webhooks_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = LENIENT.decode(encoded).map_err(|_| {
        "expected a Standard Webhooks secret: whsec_ followed by base64 (e.g. from `openssl rand -base64 32`)".to_string()
    })?;
    if key.is_empty() {
        return Err("the secret is empty after whsec_".into());
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, the Standard Webhooks signature.
pub fn standard_webhooks_signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = hmac(key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own test vector, as its reference libraries check it
    /// (standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py,
    /// `test_sign_function`).
    #[test]
    fn the_published_standard_webhooks_vector() {
        let key = standard_webhooks_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = standard_webhooks_signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        // The same secret without its prefix is the same key.
        assert_eq!(
            standard_webhooks_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            key
        );
    }

    fn config(text: &str) -> SignConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn rotation_signs_with_every_secret() {
        let c = config(
            "scheme = \"standard-webhooks\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc=\"]",
        );
        let headers = Signer::new(&c)
            .unwrap()
            .headers(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
            .unwrap();
        let signature = headers[2].1.to_str().unwrap();
        let parts: Vec<&str> = signature.split(' ').collect();
        assert_eq!(parts.len(), 2, "{signature}");
        assert_eq!(parts[0], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(headers[0].1, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(headers[1].1, "1614265330");
    }

    #[test]
    fn hmac_sha256_is_github_style() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let c = config("scheme = \"hmac-sha256\"\nsecret = \"It's a Secret to Everybody\"");
        let headers = Signer::new(&c)
            .unwrap()
            .headers("id", 1, b"Hello, World!")
            .unwrap();
        assert_eq!(headers[0].0, "x-hub-signature-256");
        assert_eq!(
            headers[0].1,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn bad_signing_settings_name_their_key() {
        let err = |text: &str| Signer::new(&config(text)).err().unwrap();
        assert_eq!(err("scheme = \"standard-webhooks\"").0, "");
        assert_eq!(
            err("scheme = \"standard-webhooks\"\nsecret = \"not base64!\"").0,
            ".secret"
        );
        assert_eq!(err("scheme = \"standard-webhooks\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"%%\"]").0, ".secrets[1]");
        assert_eq!(
            err("scheme = \"hmac-sha256\"\nsecret = \"k\"\nheader = \"bad header\"").0,
            ".header"
        );
        assert_eq!(
            err("scheme = \"hmac-sha256\"\nsecrets = [\"a\", \"b\"]").0,
            ".secrets"
        );
    }
}
