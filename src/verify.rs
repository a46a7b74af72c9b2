//! Authenticating a delivery the way its sender does: the `x-esriHook-Signature` HMAC
//! (`sha256=` + base64(HMAC-SHA256(key, body))), the organization webhooks' `secret` header, or a
//! `secret` in the payload URL; every comparison in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use subtle::ConstantTimeEq;

use crate::secret::Secret;
pub use crate::senders::AuthWay;

type HmacSha256 = Hmac<Sha256>;

/// Name of the header, and of the form field, that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-esriHook-Signature";

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
    /// The value is not `sha256=` followed by a base64 (or hex) digest.
    #[error("malformed x-esriHook-Signature: expected sha256=<base64 digest>, {0}")]
    Malformed(String),
    /// Another algorithm than sha256 was named.
    #[error("unsupported signature algorithm {0:?}: expected sha256")]
    UnsupportedAlgorithm(String),
    /// Well-formed but made with none of the hook's keys.
    #[error("x-esriHook-Signature does not match the body with any configured key")]
    Mismatch,
}

/// The header value ArcGIS sends for `data` signed with `key`.
pub fn sign(key: &[u8], data: &[u8]) -> String {
    format!("sha256={}", STANDARD.encode(digest(key, data)))
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this constructor cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn digest(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = mac(key);
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Decodes a signature value: percent-decoded, `sha256=` prefix, base64 (standard or url) or hex.
pub fn decode(value: &str) -> Result<Vec<u8>, VerifyError> {
    let decoded = percent_encoding::percent_decode_str(value.trim())
        .decode_utf8()
        .map_err(|_| VerifyError::Malformed("not valid UTF-8 after percent-decoding".into()))?;
    let value = decoded.trim();
    let digest = match value.split_once('=') {
        Some((alg, rest)) if alg.eq_ignore_ascii_case("sha256") => rest,
        Some((alg, _))
            if !alg.is_empty()
                && alg.len() <= 12
                && alg.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            return Err(VerifyError::UnsupportedAlgorithm(alg.to_string()));
        }
        _ => value,
    };
    // A form decoder turns an unescaped '+' into a space; base64 never contains spaces.
    let digest = digest.replace(' ', "+");
    if digest.is_empty() {
        return Err(VerifyError::Malformed("the digest is empty".into()));
    }
    // 64 hex digits are also valid base64 (of 48 bytes), so hex is tried first at that length.
    let is_hex = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    let bytes = if is_hex {
        hex::decode(&digest).map_err(|_| VerifyError::Malformed("bad hex digest".into()))?
    } else {
        STANDARD
            .decode(&digest)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&digest))
            .map_err(|_| VerifyError::Malformed("the digest is neither base64 nor hex".into()))?
    };
    if bytes.len() != 32 {
        return Err(VerifyError::Malformed(format!(
            "a SHA-256 digest has 32 bytes, this one has {}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Checks `value` against every key over every candidate text; returns the matching key's index.
///
/// Candidates exist because a form body may be signed as sent or as its decoded payload.
pub fn verify(value: &str, keys: &[Secret], candidates: &[&[u8]]) -> Result<usize, VerifyError> {
    let expected = decode(value)?;
    for (i, key) in keys.iter().enumerate() {
        for data in candidates {
            let mut m = mac(key.expose().as_bytes());
            m.update(data);
            // verify_slice compares in constant time.
            if m.verify_slice(&expected).is_ok() {
                return Ok(i);
            }
        }
    }
    Err(VerifyError::Mismatch)
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
            AuthWay::Signature => creds
                .signature
                .map(|sig| verify(sig, policy.secrets, creds.signed).map(|_| ())),
            AuthWay::SecretHeader => {
                shared_secret(creds.secret_header, policy.secrets, "secret header")
            }
            AuthWay::UrlSecret => shared_secret(creds.url_secret, policy.secrets, "URL secret"),
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

    fn keys(k: &[&str]) -> Vec<Secret> {
        k.iter().map(|s| Secret::resolve(s).unwrap()).collect()
    }

    /// JSON text with the whitespace outside strings removed, keys left in their order.
    fn minify(text: &str) -> String {
        let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
        for c in text.chars() {
            if in_string {
                in_string = escaped || c != '"';
                escaped = !escaped && c == '\\';
            } else if c.is_whitespace() {
                continue;
            } else {
                in_string = c == '"';
            }
            out.push(c);
        }
        out
    }

    /// The check body of docs/arcgis.md ("Authentication"): a real ArcGIS Online delivery, minified.
    fn check_body() -> String {
        let text = include_str!(
            "../tests/real/aws-lambda-demo_agol-fs_json_FeaturesCreated_percent-encoded-changesUrl.json"
        );
        let body = minify(text);
        assert_eq!(body.len(), 433);
        assert!(body.starts_with(r#"[{"name":"aws_lambda""#));
        body
    }

    #[test]
    fn check_values_of_the_protocol_notes() {
        use crate::body::{BodyEncoding, decode};
        let body = check_body();
        // JSON body, key "bananas".
        let json_sig = "sha256=DNDstHS04lyi+0KNP4R+dDFM462zJU2LvMVewqBJFZs=";
        assert_eq!(sign(b"bananas", body.as_bytes()), json_sig);
        assert_eq!(
            verify(json_sig, &keys(&["bananas"]), &[body.as_bytes()]),
            Ok(0)
        );
        // Form body: the field's value is the HMAC of the payload value as it is on the wire.
        let form = format!(
            "payload={body}&x-esriHook-Signature=sha256%3D3PxDnST54eDa1vXjcyJnYRVgKjVCuWtQzme%2FdPfobEY%3D"
        );
        let d = decode(BodyEncoding::Form, form.as_bytes()).unwrap();
        assert_eq!(&*d.json, body.as_bytes());
        let field = d.form_signature.as_deref().unwrap();
        let signed: Vec<&[u8]> = d.signed_candidates.iter().map(|c| c.as_ref()).collect();
        assert_eq!(verify(field, &keys(&["MYSECRETKEY"]), &signed), Ok(0));
        assert_eq!(
            verify(field, &keys(&["MYSECRETKEY"]), &signed[..1]),
            Ok(0),
            "the raw payload value is the first candidate"
        );
        // The HMAC of the whole body up to the `&` is another value, as the notes say.
        assert_eq!(
            sign(b"MYSECRETKEY", format!("payload={body}").as_bytes()),
            "sha256=4PmA7zo8TGutRxw1TrY8TpvOsa5cmRVSzfaF3LerQFA="
        );
        // CRC, key MYSECRETKEY, token abc123.
        assert_eq!(
            sign(b"MYSECRETKEY", b"abc123"),
            "sha256=JZBRSjXI4VWGz/kfx+MhyuzBzDmFvu6acHbGAAl80LU="
        );
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
        };
        let body: &[u8] = b"{}";
        let good_sig = sign(b"older", body);
        let creds = |sig: Option<&'static str>, header, url| Credentials {
            signature: sig,
            signed: &[b"{}"],
            secret_header: header,
            url_secret: url,
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

    #[test]
    fn crc_value_from_the_protocol_notes() {
        assert_eq!(
            sign(b"example-signature-key", b"0123456789abcdef"),
            "sha256=8AWDIMQjFuwy9YK2YrBuYvkpmwAdgRTHhpEn08WCf4w="
        );
    }

    #[test]
    fn sample_signature_verifies() {
        let body = include_bytes!("../tests/samples/portal-group-update.json");
        let sig = include_str!("../tests/samples/portal-group-update.sig").trim();
        assert_eq!(sign(b"example-signature-key", body), sig);
        assert_eq!(
            verify(sig, &keys(&["old", "example-signature-key"]), &[body]),
            Ok(1)
        );
    }

    #[test]
    fn variants_are_tolerated() {
        let body = b"{}";
        let sig = sign(b"k", body);
        let pct = sig
            .replace('=', "%3D")
            .replace('+', "%2B")
            .replace('/', "%2F");
        assert_eq!(verify(&pct, &keys(&["k"]), &[body]), Ok(0));
        let hexed = format!("sha256={}", hex::encode(digest(b"k", body)));
        assert_eq!(verify(&hexed, &keys(&["k"]), &[body]), Ok(0));
        let bare = sig.trim_start_matches("sha256=").to_string();
        assert_eq!(verify(&bare, &keys(&["k"]), &[body]), Ok(0));
        let spaced = sig.replace('+', " ");
        assert_eq!(verify(&spaced, &keys(&["k"]), &[body]), Ok(0));
    }

    #[test]
    fn refusals() {
        let body = b"{}";
        let sig = sign(b"k", body);
        assert_eq!(
            verify(&sig, &keys(&["other"]), &[body]),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&sig, &keys(&["k"]), &[b"{ }"]),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify("sha1=abcd", &keys(&["k"]), &[body]),
            Err(VerifyError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            verify("sha256=", &keys(&["k"]), &[body]),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify(&sig[..sig.len() - 8], &keys(&["k"]), &[body]),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify("sha256=!!!", &keys(&["k"]), &[body]),
            Err(VerifyError::Malformed(_))
        ));
    }
}
