//! Authenticating a delivery the way its sender does: the `x-esriHook-Signature` HMAC
//! (`sha256=` + base64(HMAC-SHA256(key, body)), checked by `signature::arcgis`), the organization
//! webhooks' `secret` header, or a `secret` in the payload URL; for other senders Standard
//! Webhooks' `webhook-signature`, GitHub's `X-Hub-Signature-256` or an HMAC in a header the hook
//! names. Every comparison is constant time.

use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::secret::Secret;
pub use crate::senders::AuthWay;
use crate::signature::hmac::HmacHeader;
use crate::signature::{SignatureError, arcgis, github, standard_webhooks};

/// Name of the header, and of the form field, that carries the signature.
pub const SIGNATURE_HEADER: &str = arcgis::HEADER;

/// Name of the header (and URL query parameter) carrying a shared secret.
pub const SECRET_HEADER: &str = "secret";

/// Why a delivery was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// No credential of a way the hook accepts, and the hook requires one.
    #[error("no credential: this hook accepts {0}")]
    Missing(String),
    /// A `secret` header or URL secret that matches none of the hook's secrets.
    #[error("the {0} matches none of the hook's secrets")]
    SecretMismatch(&'static str),
    /// A credential sent twice (two `secret` headers, two URL secrets): refused as ambiguous.
    #[error("the {0} was sent more than once")]
    Ambiguous(&'static str),
    /// An `x-esriHook-Signature` that is malformed, names another algorithm, or matches no key;
    /// its message is the signature module's, which the 401 answer carries as it is.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A credential as the request carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// Not sent.
    Absent,
    /// Sent once, with these bytes exactly as they arrived.
    One(&'a [u8]),
    /// Sent more than once.
    Many,
}

/// Everything a request offers to authenticate itself.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// `x-esriHook-Signature`, from the header or the form field.
    pub signature: Option<&'a str>,
    /// The texts the signature may have been computed over, most likely first.
    pub signed: &'a [&'a [u8]],
    /// The `secret` request header.
    pub secret_header: Presented<'a>,
    /// The `secret` query parameter of the payload URL, not decoded.
    pub url_secret: Presented<'a>,
    /// Standard Webhooks' `webhook-id`, `webhook-timestamp` and `webhook-signature`.
    pub standard_webhooks: [Option<&'a str>; 3],
    /// GitHub's `X-Hub-Signature-256`.
    pub github: Option<&'a str>,
    /// The header the hook's `hmac` table names.
    pub hmac: Option<&'a str>,
}

impl Credentials<'_> {
    /// No credential at all, over `signed` (tests build on it).
    pub fn none<'a>(signed: &'a [&'a [u8]]) -> Credentials<'a> {
        Credentials {
            signature: None,
            signed,
            secret_header: Presented::Absent,
            url_secret: Presented::Absent,
            standard_webhooks: [None; 3],
            github: None,
            hmac: None,
        }
    }
}

/// What the hook to authenticate against wants.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The ways it accepts.
    pub ways: &'a [AuthWay],
    /// Its keys and secrets.
    pub secrets: &'a [Secret],
    /// Whether a delivery with no credential is refused.
    pub required: bool,
    /// The header of the `hmac` way, when the hook has one.
    pub hmac: Option<&'a HmacHeader>,
    /// How far a Standard Webhooks timestamp may be from `now`.
    pub tolerance: Duration,
    /// Now, in seconds since 1970.
    pub now: u64,
}

impl Policy<'_> {
    /// The accepted ways in words, for a 401 body.
    pub fn describe(&self) -> String {
        let words: Vec<&str> = self
            .ways
            .iter()
            .map(|w| match w {
                AuthWay::Signature => "an x-esriHook-Signature (header or form field)",
                AuthWay::SecretHeader => "a `secret` header",
                AuthWay::UrlSecret => "a `secret` parameter in the payload URL",
                AuthWay::StandardWebhooks => "a Standard Webhooks webhook-signature",
                AuthWay::Github => "an X-Hub-Signature-256",
                AuthWay::Hmac => "the hook's HMAC header",
            })
            .collect();
        words.join(" or ")
    }
}

/// Authenticates a delivery: it passes when any credential of an accepted way matches; it is
/// refused when credentials were sent and none matches, or none was sent and one is required.
/// Credentials of ways the hook does not accept are ignored. Returns the way that matched.
pub fn authenticate(
    policy: Policy<'_>,
    creds: Credentials<'_>,
) -> Result<Option<AuthWay>, VerifyError> {
    let mut refusal = None;
    if policy.secrets.is_empty() {
        // Nothing to check against: only a hook that does not require it gets here.
        return if policy.required {
            Err(VerifyError::Missing(policy.describe()))
        } else {
            Ok(None)
        };
    }
    for way in policy.ways {
        let outcome = match way {
            AuthWay::Signature => creds.signature.map(|sig| {
                arcgis::verify(sig, policy.secrets, creds.signed)
                    .map(|_| ())
                    .map_err(VerifyError::from)
            }),
            AuthWay::SecretHeader => {
                shared_secret(creds.secret_header, policy.secrets, "secret header")
            }
            AuthWay::UrlSecret => shared_secret(creds.url_secret, policy.secrets, "URL secret"),
            AuthWay::StandardWebhooks => standard(&policy, &creds),
            AuthWay::Github => creds.github.map(|value| {
                any_text(creds.signed, |body| {
                    github::verify(value, &keys(&policy), body)
                })
            }),
            AuthWay::Hmac => match (policy.hmac, creds.hmac) {
                (Some(h), Some(value)) => Some(any_text(creds.signed, |body| {
                    h.verify(value, &keys(&policy), body)
                })),
                _ => None,
            },
        };
        match outcome {
            Some(Ok(())) => return Ok(Some(*way)),
            Some(Err(e)) => {
                refusal.get_or_insert(e);
            }
            None => {}
        }
    }
    match refusal {
        Some(e) => Err(e),
        None if policy.required => Err(VerifyError::Missing(policy.describe())),
        None => Ok(None),
    }
}

/// The hook's secrets as HMAC keys.
fn keys<'a>(policy: &Policy<'a>) -> Vec<&'a [u8]> {
    policy
        .secrets
        .iter()
        .map(|s| s.expose().as_bytes())
        .collect()
}

/// Passes when `check` passes for any of the texts the body may have been signed as; the first
/// refusal otherwise.
fn any_text(
    signed: &[&[u8]],
    check: impl Fn(&[u8]) -> Result<usize, SignatureError>,
) -> Result<(), VerifyError> {
    let mut first = None;
    for body in signed {
        match check(body) {
            Ok(_) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.map_or(
        VerifyError::Missing("a signed body".into()),
        VerifyError::from,
    ))
}

/// Checks a Standard Webhooks signature when any of its headers was sent: the hook's secrets
/// are its `whsec_` keys (checked at load), the timestamp within `policy.tolerance`.
fn standard(policy: &Policy<'_>, creds: &Credentials<'_>) -> Option<Result<(), VerifyError>> {
    let [id, timestamp, signature] = creds.standard_webhooks;
    if id.is_none() && timestamp.is_none() && signature.is_none() {
        return None;
    }
    let keys: Result<Vec<_>, _> = policy
        .secrets
        .iter()
        .map(|s| standard_webhooks::Key::parse(s.expose()))
        .collect();
    Some(keys.map_err(VerifyError::from).and_then(|keys| {
        any_text(creds.signed, |body| {
            standard_webhooks::verify(
                &keys,
                id,
                timestamp,
                signature,
                body,
                policy.now,
                policy.tolerance,
            )
        })
    }))
}

/// Checks a shared secret sent as it is; `None` when it was not sent.
fn shared_secret(
    presented: Presented<'_>,
    secrets: &[Secret],
    what: &'static str,
) -> Option<Result<(), VerifyError>> {
    match presented {
        Presented::Absent => None,
        Presented::Many => Some(Err(VerifyError::Ambiguous(what))),
        Presented::One(value) => Some(if matches_secret(value, secrets) {
            Ok(())
        } else {
            Err(VerifyError::SecretMismatch(what))
        }),
    }
}

/// Whether `value` equals one of `secrets`, compared in constant time (per secret; every secret
/// is compared, so the time does not tell which one matched).
pub fn matches_secret(value: &[u8], secrets: &[Secret]) -> bool {
    secrets.iter().fold(false, |found, s| {
        bool::from(s.expose().as_bytes().ct_eq(value)) | found
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::arcgis::sign;

    fn keys(k: &[&str]) -> Vec<Secret> {
        k.iter().map(|s| Secret::resolve(s).unwrap()).collect()
    }

    #[test]
    fn authentication_by_each_way() {
        let secrets = keys(&["s3cret", "older"]);
        const ALL: &[AuthWay] = &[
            AuthWay::Signature,
            AuthWay::SecretHeader,
            AuthWay::UrlSecret,
        ];
        let policy = |ways: &'static [AuthWay], required| Policy {
            ways,
            secrets: &secrets,
            required,
            hmac: None,
            tolerance: Duration::from_secs(300),
            now: 0,
        };
        let body: &[u8] = b"{}";
        let good_sig = sign(b"older", body);
        let creds = |sig: Option<&'static str>, header, url| Credentials {
            signature: sig,
            secret_header: header,
            url_secret: url,
            ..Credentials::none(&[b"{}"])
        };
        let sig: &'static str = Box::leak(good_sig.into_boxed_str());
        use Presented::*;
        assert_eq!(
            authenticate(policy(ALL, true), creds(Some(sig), Absent, Absent)),
            Ok(Some(AuthWay::Signature))
        );
        assert_eq!(
            authenticate(policy(ALL, true), creds(None, One(b"s3cret"), Absent)),
            Ok(Some(AuthWay::SecretHeader))
        );
        assert_eq!(
            authenticate(policy(ALL, true), creds(None, Absent, One(b"older"))),
            Ok(Some(AuthWay::UrlSecret))
        );
        // A way the hook does not accept is ignored.
        assert!(matches!(
            authenticate(
                policy(&[AuthWay::Signature], true),
                creds(None, One(b"s3cret"), Absent)
            ),
            Err(VerifyError::Missing(_))
        ));
        assert_eq!(
            authenticate(policy(ALL, true), creds(None, One(b" s3cret"), Absent)),
            Err(VerifyError::SecretMismatch("secret header"))
        );
        assert_eq!(
            authenticate(policy(ALL, true), creds(None, Many, Absent)),
            Err(VerifyError::Ambiguous("secret header"))
        );
        assert_eq!(
            authenticate(policy(ALL, true), creds(None, Absent, One(b"s3cre%74"))),
            Err(VerifyError::SecretMismatch("URL secret"))
        );
        // Not required: nothing sent passes, a wrong credential still does not.
        assert_eq!(
            authenticate(policy(ALL, false), creds(None, Absent, Absent)),
            Ok(None)
        );
        assert!(authenticate(policy(ALL, false), creds(None, One(b"no"), Absent)).is_err());
        let e = authenticate(policy(ALL, true), creds(None, Absent, Absent)).unwrap_err();
        assert!(e.to_string().contains("a `secret` header"), "{e}");
    }

    /// The ways of senders other than ArcGIS: Standard Webhooks (the specification's vector,
    /// its timestamp checked), GitHub's documented example, and an HMAC in a named header.
    #[test]
    fn the_other_senders_ways() {
        let body: &[u8] = br#"{"test": 2432232314}"#;
        let signed: &[&[u8]] = &[body];
        let whsec = keys(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        let policy = |ways: &'static [AuthWay], secrets, now| Policy {
            ways,
            secrets,
            required: true,
            hmac: None,
            tolerance: Duration::from_secs(300),
            now,
        };
        let standard = Credentials {
            standard_webhooks: [
                Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                Some("1614265330"),
                Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ],
            ..Credentials::none(signed)
        };
        let ways = &[AuthWay::StandardWebhooks];
        assert_eq!(
            authenticate(policy(ways, &whsec, 1614265330 + 299), standard),
            Ok(Some(AuthWay::StandardWebhooks))
        );
        let late = authenticate(policy(ways, &whsec, 1614265330 + 301), standard);
        assert!(late.unwrap_err().to_string().contains("webhook-timestamp"));
        let tampered = Credentials {
            signed: &[b"{}"],
            ..standard
        };
        assert!(authenticate(policy(ways, &whsec, 1614265330), tampered).is_err());
        assert!(matches!(
            authenticate(policy(ways, &whsec, 0), Credentials::none(signed)),
            Err(VerifyError::Missing(_))
        ));

        let secret = keys(&["It's a Secret to Everybody"]);
        let hello: &[&[u8]] = &[b"Hello, World!"];
        let github = Credentials {
            github: Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
            ..Credentials::none(hello)
        };
        assert_eq!(
            authenticate(policy(&[AuthWay::Github], &secret, 0), github),
            Ok(Some(AuthWay::Github))
        );
        let wrong = keys(&["another"]);
        assert!(authenticate(policy(&[AuthWay::Github], &wrong, 0), github).is_err());

        let header = HmacHeader {
            header: "X-Signature".into(),
            algorithm: Default::default(),
            encoding: Default::default(),
            prefix: "sha256=".into(),
        };
        let value = header.sign(b"It's a Secret to Everybody", b"Hello, World!");
        let hmac = Credentials {
            hmac: Some(&value),
            ..Credentials::none(hello)
        };
        let with_header = Policy {
            hmac: Some(&header),
            ..policy(&[AuthWay::Hmac], &secret, 0)
        };
        assert_eq!(authenticate(with_header, hmac), Ok(Some(AuthWay::Hmac)));
        assert!(
            authenticate(
                Policy {
                    secrets: &wrong,
                    ..with_header
                },
                hmac
            )
            .is_err()
        );
    }

    /// A refused signature answers with the signature module's text, unchanged.
    #[test]
    fn a_refused_signature_keeps_its_message() {
        let secrets = keys(&["k"]);
        let policy = Policy {
            ways: &[AuthWay::Signature],
            secrets: &secrets,
            required: true,
            hmac: None,
            tolerance: Duration::from_secs(300),
            now: 0,
        };
        let refused = |sig: &str| {
            authenticate(
                policy,
                Credentials {
                    signature: Some(sig),
                    ..Credentials::none(&[b"{}"])
                },
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            refused(&sign(b"other", b"{}")),
            "x-esriHook-Signature does not match the body with any configured key"
        );
        assert_eq!(
            refused("sha256="),
            "malformed x-esriHook-Signature: expected sha256=<base64 digest>, the digest is empty"
        );
        assert_eq!(
            refused("sha512=abc"),
            "unsupported signature algorithm \"sha512\": expected sha256"
        );
    }
}
