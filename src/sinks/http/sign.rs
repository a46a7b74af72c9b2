//! Outbound signatures, so that a receiver can tell a request comes from hookbridge and was not
//! changed on the way: Standard Webhooks (standardwebhooks.com), a GitHub-style `sha256=<hex>`
//! HMAC of the body in one header, or an HMAC header shaped as the receiver asks. The schemes
//! themselves live in `signature`, which the ingress verifies with too; this file reads the
//! `sign` table and puts the signatures in headers.

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::secret::Secret;
use crate::signature::hmac::{Encoding, HmacHeader};
use crate::signature::{Algorithm, github, standard_webhooks};

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
    /// The header of an `hmac-sha256` signature (default `X-Hub-Signature-256`), or of an `hmac`
    /// one (required).
    pub header: Option<String>,
    /// `hmac`: the hash, `sha256` (default), `sha512` or `sha1`.
    pub algorithm: Option<String>,
    /// `hmac`: how the digest is written, `hex` (default) or `base64`.
    pub encoding: Option<String>,
    /// `hmac`: text written before the digest, e.g. `sha256=` (default none).
    pub prefix: Option<String>,
}

/// The signature schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignScheme {
    /// standardwebhooks.com: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// GitHub-style `sha256=<hex HMAC of the body>` in one header.
    HmacSha256,
    /// An HMAC of the body in the configured header, its hash, encoding and prefix chosen.
    Hmac,
}

/// The Standard Webhooks headers.
const WEBHOOK_ID: HeaderName = HeaderName::from_static(standard_webhooks::ID_HEADER);
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static(standard_webhooks::TIMESTAMP_HEADER);
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static(standard_webhooks::SIGNATURE_HEADER);

/// Signs requests with the keys of a `sign` table.
pub(super) enum Signer {
    /// One signature per key (several during a rotation), space-separated.
    StandardWebhooks(Vec<standard_webhooks::Key>),
    /// GitHub's HMAC of the body in `header`.
    HmacSha256 { key: Vec<u8>, header: HeaderName },
    /// An HMAC of the body in `header`, written as `format` says.
    Hmac {
        key: Vec<u8>,
        header: HeaderName,
        format: HmacHeader,
    },
}

/// A failed check: the sub-key at fault (`.secret`, `.header`, ...) and what is wrong.
type Fault = (String, String);

fn fault(key: &str, message: impl Into<String>) -> Fault {
    (key.to_string(), message.into())
}

impl Signer {
    /// The signer for `c`; an error names the sub-key at fault (`.secret`, `.secrets[1]`, ...).
    pub fn new(c: &SignConfig) -> Result<Signer, Fault> {
        let keys: Vec<_> = c.secret.iter().chain(&c.secrets).collect();
        let (one, many) = (c.secret.is_some(), !c.secrets.is_empty());
        if one == many {
            return Err(fault(
                "",
                "expected exactly one of secret = \"...\" or secrets = [...]",
            ));
        }
        let at = |i: usize| match c.secret {
            Some(_) => ".secret".to_string(),
            None => format!(".secrets[{i}]"),
        };
        if c.scheme != SignScheme::Hmac {
            let shaped = [
                (".algorithm", &c.algorithm),
                (".encoding", &c.encoding),
                (".prefix", &c.prefix),
            ];
            if let Some((key, _)) = shaped.iter().find(|(_, v)| v.is_some()) {
                return Err(fault(
                    key,
                    "algorithm, encoding and prefix are for scheme = \"hmac\"; this scheme fixes them",
                ));
            }
        }
        if c.scheme != SignScheme::StandardWebhooks && keys.len() > 1 {
            return Err(fault(
                ".secrets",
                format!(
                    "{} signs with one secret; rotation needs standard-webhooks",
                    scheme_name(c.scheme)
                ),
            ));
        }
        let key = || {
            keys.first()
                .map(|k| k.expose().as_bytes().to_vec())
                .unwrap_or_default()
        };
        match c.scheme {
            SignScheme::StandardWebhooks => {
                if c.header.is_some() {
                    return Err(fault(
                        ".header",
                        "standard-webhooks always signs in webhook-signature; header is for hmac-sha256 and hmac",
                    ));
                }
                let decoded = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        standard_webhooks::Key::parse(k.expose())
                            .map_err(|e| (at(i), e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Signer::StandardWebhooks(decoded))
            }
            SignScheme::HmacSha256 => {
                let name = c.header.as_deref().unwrap_or(github::HEADER);
                Ok(Signer::HmacSha256 {
                    key: key(),
                    header: header_name(name)?,
                })
            }
            SignScheme::Hmac => {
                let Some(name) = c.header.as_deref() else {
                    return Err(fault(
                        ".header",
                        "expected the header to sign in (e.g. header = \"X-Signature\"); found none",
                    ));
                };
                let header = header_name(name)?;
                let algorithm = match &c.algorithm {
                    Some(a) => a
                        .parse::<Algorithm>()
                        .map_err(|e| fault(".algorithm", e.to_string()))?,
                    None => Algorithm::default(),
                };
                let encoding = match &c.encoding {
                    Some(e) => e
                        .parse::<Encoding>()
                        .map_err(|e| fault(".encoding", e.to_string()))?,
                    None => Encoding::default(),
                };
                let prefix = c.prefix.clone().unwrap_or_default();
                if !prefix.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(fault(
                        ".prefix",
                        format!(
                            "expected visible ASCII characters without spaces, found {prefix:?}"
                        ),
                    ));
                }
                let format = HmacHeader {
                    header: header.as_str().to_string(),
                    algorithm,
                    encoding,
                    prefix,
                };
                Ok(Signer::Hmac {
                    key: key(),
                    header,
                    format,
                })
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
                        .unwrap_or(github::HEADER)
                        .to_ascii_lowercase(),
                ]
            }
            SignScheme::Hmac => c.header.iter().map(|h| h.to_ascii_lowercase()).collect(),
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
            Signer::StandardWebhooks(keys) => Ok(vec![
                (WEBHOOK_ID, value(id.to_string())?),
                (WEBHOOK_TIMESTAMP, value(timestamp.to_string())?),
                (
                    WEBHOOK_SIGNATURE,
                    value(standard_webhooks::sign(keys, id, timestamp, body))?,
                ),
            ]),
            Signer::HmacSha256 { key, header } => {
                Ok(vec![(header.clone(), value(github::sign(key, body))?)])
            }
            Signer::Hmac {
                key,
                header,
                format,
            } => Ok(vec![(header.clone(), value(format.sign(key, body))?)]),
        }
    }
}

/// A scheme as the config spells it, for messages.
fn scheme_name(scheme: SignScheme) -> &'static str {
    match scheme {
        SignScheme::StandardWebhooks => "standard-webhooks",
        SignScheme::HmacSha256 => "hmac-sha256",
        SignScheme::Hmac => "hmac",
    }
}

/// A configured signature header's name, checked.
fn header_name(name: &str) -> Result<HeaderName, Fault> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| fault(".header", format!("{name:?} is not a valid header name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> SignConfig {
        toml::from_str(text).unwrap()
    }

    /// The headers `sign` (TOML) adds to the published Standard Webhooks message.
    fn signed(text: &str, body: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
        Signer::new(&config(text))
            .unwrap()
            .headers("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
            .unwrap()
    }

    /// The specification's own test vector (standard-webhooks/standard-webhooks,
    /// libraries/python/tests/test_webhooks.py, `test_sign_function`), signed beside a second key.
    #[test]
    fn rotation_signs_with_every_secret() {
        let headers = signed(
            "scheme = \"standard-webhooks\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc=\"]",
            br#"{"test": 2432232314}"#,
        );
        let signature = headers[2].1.to_str().unwrap();
        let parts: Vec<&str> = signature.split(' ').collect();
        assert_eq!(parts.len(), 2, "{signature}");
        assert_eq!(parts[0], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(headers[0].1, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(headers[1].1, "1614265330");
        assert_eq!(headers[2].0, "webhook-signature");
    }

    #[test]
    fn hmac_sha256_is_github_style() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let headers = signed(
            "scheme = \"hmac-sha256\"\nsecret = \"It's a Secret to Everybody\"",
            b"Hello, World!",
        );
        assert_eq!(headers[0].0, "x-hub-signature-256");
        assert_eq!(
            headers[0].1,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn hmac_is_shaped_as_configured() {
        // `printf %s 'Hello, World!' | openssl dgst -sha512 -hmac key -binary | base64`
        let headers = signed(
            "scheme = \"hmac\"\nsecret = \"key\"\nheader = \"X-Signature\"\nalgorithm = \"sha512\"\nencoding = \"base64\"\nprefix = \"sha512=\"",
            b"Hello, World!",
        );
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, "x-signature");
        assert_eq!(
            headers[0].1,
            "sha512=e3NawZDr0UMtVvla4q6loEojEo9MIo4pm3pJ+3Vh3ozI9P30SG3HQ9/QeCfWFyc6q0Kzv4GdJD3tMi+sFnQZ8Q=="
        );
        // The defaults: sha256, hex, no prefix (`openssl dgst -sha256 -hmac key`).
        let headers = signed(
            "scheme = \"hmac\"\nsecret = \"key\"\nheader = \"X-Sig\"",
            b"Hello, World!",
        );
        assert_eq!(
            headers[0].1,
            "7f424e2d0ff6bd5dec626e0102755bafec91c3510f19739a4eaec8f3bc3a01a4"
        );
        let c = config("scheme = \"hmac\"\nsecret = \"key\"\nheader = \"X-Sig\"");
        assert_eq!(Signer::header_names(&c), ["x-sig"]);
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
        assert_eq!(
            err("scheme = \"hmac-sha256\"\nsecret = \"k\"\nalgorithm = \"sha512\"").0,
            ".algorithm"
        );
        assert_eq!(
            err("scheme = \"standard-webhooks\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nprefix = \"v1,\"").0,
            ".prefix"
        );
    }

    #[test]
    fn bad_hmac_settings_name_their_key() {
        let err = |extra: &str| {
            Signer::new(&config(&format!(
                "scheme = \"hmac\"\nsecret = \"k\"\n{extra}"
            )))
            .err()
            .unwrap()
        };
        let missing = err("");
        assert_eq!(missing.0, ".header");
        assert!(missing.1.contains("found none"), "{}", missing.1);
        assert_eq!(err("header = \"bad header\"").0, ".header");
        assert_eq!(
            err("header = \"X-Sig\"\nalgorithm = \"md5\""),
            (
                ".algorithm".to_string(),
                "expected sha256, sha512 or sha1, found \"md5\"".to_string()
            )
        );
        assert_eq!(
            err("header = \"X-Sig\"\nencoding = \"base32\""),
            (
                ".encoding".to_string(),
                "expected hex or base64, found \"base32\"".to_string()
            )
        );
        assert_eq!(err("header = \"X-Sig\"\nprefix = \"a b\"").0, ".prefix");
        assert_eq!(err("header = \"X-Sig\"\nprefix = \"\\n\"").0, ".prefix");
        let rotation = Signer::new(&config(
            "scheme = \"hmac\"\nsecrets = [\"a\", \"b\"]\nheader = \"X-Sig\"",
        ))
        .err()
        .unwrap();
        assert_eq!(rotation.0, ".secrets");
        assert!(
            rotation.1.starts_with("hmac signs with one secret"),
            "{}",
            rotation.1
        );
    }
}
