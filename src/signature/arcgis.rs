//! ArcGIS's `x-esriHook-Signature`: `sha256=` + base64(HMAC-SHA256(key, body)), read leniently
//! because it reaches us percent-encoded, bare, in hex, in url-safe base64, or with its `+`
//! turned into spaces by a form decoder.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use super::{Algorithm, SignatureError, equal, mac};
use crate::secret::Secret;

/// Name of the header, and of the form field, that carries the signature.
pub const HEADER: &str = "x-esriHook-Signature";

/// The form a value must have, for messages.
const EXPECTED: &str = "sha256=<base64 digest>";

/// The header value ArcGIS sends for `data` signed with `key`.
pub fn sign(key: &[u8], data: &[u8]) -> String {
    format!(
        "sha256={}",
        STANDARD.encode(mac(Algorithm::Sha256, key, &[data]))
    )
}

fn malformed(found: impl Into<String>) -> SignatureError {
    SignatureError::Malformed {
        header: HEADER.to_string(),
        expected: EXPECTED,
        found: found.into(),
    }
}

/// Decodes a signature value: percent-decoded, `sha256=` prefix, base64 (standard or url) or hex.
pub fn decode(value: &str) -> Result<Vec<u8>, SignatureError> {
    let decoded = percent_encoding::percent_decode_str(value.trim())
        .decode_utf8()
        .map_err(|_| malformed("not valid UTF-8 after percent-decoding"))?;
    let value = decoded.trim();
    let digest = match value.split_once('=') {
        Some((alg, rest)) if alg.eq_ignore_ascii_case("sha256") => rest,
        Some((alg, _))
            if !alg.is_empty()
                && alg.len() <= 12
                && alg.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            return Err(SignatureError::UnsupportedAlgorithm {
                found: alg.to_string(),
                expected: "sha256",
            });
        }
        _ => value,
    };
    // A form decoder turns an unescaped '+' into a space; base64 never contains spaces.
    let digest = digest.replace(' ', "+");
    if digest.is_empty() {
        return Err(malformed("the digest is empty"));
    }
    // 64 hex digits are also valid base64 (of 48 bytes), so hex is tried first at that length.
    let is_hex = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    let bytes = if is_hex {
        hex::decode(&digest).map_err(|_| malformed("bad hex digest"))?
    } else {
        STANDARD
            .decode(&digest)
            .or_else(|_| URL_SAFE.decode(&digest))
            .map_err(|_| malformed("the digest is neither base64 nor hex"))?
    };
    if bytes.len() != Algorithm::Sha256.digest_len() {
        return Err(malformed(format!(
            "a SHA-256 digest has 32 bytes, this one has {}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Checks `value` against every key over every candidate text; returns the matching key's index.
///
/// Candidates exist because a form body may be signed as sent or as its decoded payload.
pub fn verify(value: &str, keys: &[Secret], candidates: &[&[u8]]) -> Result<usize, SignatureError> {
    let expected = decode(value)?;
    for (i, key) in keys.iter().enumerate() {
        for data in candidates {
            let digest = mac(Algorithm::Sha256, key.expose().as_bytes(), &[data]);
            if equal(&digest, &expected) {
                return Ok(i);
            }
        }
    }
    Err(SignatureError::Mismatch {
        header: HEADER.to_string(),
        signed: "the body",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<Secret> {
        k.iter().map(|s| Secret::resolve(s).unwrap()).collect()
    }

    fn mismatch() -> SignatureError {
        SignatureError::Mismatch {
            header: HEADER.to_string(),
            signed: "the body",
        }
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
            "../../tests/real/aws-lambda-demo_agol-fs_json_FeaturesCreated_percent-encoded-changesUrl.json"
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
    fn crc_value_from_the_protocol_notes() {
        assert_eq!(
            sign(b"example-signature-key", b"0123456789abcdef"),
            "sha256=8AWDIMQjFuwy9YK2YrBuYvkpmwAdgRTHhpEn08WCf4w="
        );
    }

    #[test]
    fn sample_signature_verifies() {
        let body = include_bytes!("../../tests/samples/portal-group-update.json");
        let sig = include_str!("../../tests/samples/portal-group-update.sig").trim();
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
        let hexed = format!(
            "sha256={}",
            hex::encode(mac(Algorithm::Sha256, b"k", &[body]))
        );
        assert_eq!(verify(&hexed, &keys(&["k"]), &[body]), Ok(0));
        let bare = sig.trim_start_matches("sha256=").to_string();
        assert_eq!(verify(&bare, &keys(&["k"]), &[body]), Ok(0));
        let spaced = sig.replace('+', " ");
        assert_eq!(verify(&spaced, &keys(&["k"]), &[body]), Ok(0));
        let url_safe = sig.replace('+', "-").replace('/', "_");
        assert_eq!(verify(&url_safe, &keys(&["k"]), &[body]), Ok(0));
    }

    #[test]
    fn refusals() {
        let body = b"{}";
        let sig = sign(b"k", body);
        assert_eq!(verify(&sig, &keys(&["other"]), &[body]), Err(mismatch()));
        assert_eq!(verify(&sig, &keys(&["k"]), &[b"{ }"]), Err(mismatch()));
        assert!(matches!(
            verify("sha1=abcd", &keys(&["k"]), &[body]),
            Err(SignatureError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            verify("sha256=", &keys(&["k"]), &[body]),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            verify(&sig[..sig.len() - 8], &keys(&["k"]), &[body]),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            verify("sha256=!!!", &keys(&["k"]), &[body]),
            Err(SignatureError::Malformed { .. })
        ));
    }

    /// The ingress answers a refused signature with these texts: they must not change.
    #[test]
    fn refusal_messages_are_the_ingress_answers() {
        let k = keys(&["k"]);
        let text = |value: &str| verify(value, &k, &[b"{}"]).unwrap_err().to_string();
        assert_eq!(
            text("sha256="),
            "malformed x-esriHook-Signature: expected sha256=<base64 digest>, the digest is empty"
        );
        assert_eq!(
            text("sha256=AAAA"),
            "malformed x-esriHook-Signature: expected sha256=<base64 digest>, a SHA-256 digest has 32 bytes, this one has 3"
        );
        assert_eq!(
            text("sha256=!!!"),
            "malformed x-esriHook-Signature: expected sha256=<base64 digest>, the digest is neither base64 nor hex"
        );
        assert_eq!(
            text("sha1=abcd"),
            "unsupported signature algorithm \"sha1\": expected sha256"
        );
        assert_eq!(
            text(&sign(b"other", b"{}")),
            "x-esriHook-Signature does not match the body with any configured key"
        );
    }
}
