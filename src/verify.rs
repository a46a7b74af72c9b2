//! `x-esriHook-Signature`: `sha256=` + base64(HMAC-SHA256(key, body)), checked in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Name of the header (and form field) carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-esriHook-Signature";

/// Why a delivery's signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// No signature, and the hook requires one.
    #[error("missing x-esriHook-Signature: this hook requires signed deliveries")]
    Missing,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<Secret> {
        k.iter().map(|s| Secret::resolve(s).unwrap()).collect()
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
