//! Standard Webhooks (standardwebhooks.com): `webhook-signature` holds space-separated
//! `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` signatures, one per key while a key is
//! rotated, beside `webhook-id` and `webhook-timestamp`; the timestamp bounds replays, so a
//! verifier refuses one too far from its clock in either direction.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::{Algorithm, SignatureError, equal, mac};

/// The header carrying the message id, which receivers deduplicate on.
pub const ID_HEADER: &str = "webhook-id";
/// The header carrying the time of signing, in seconds since 1970.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The header carrying the signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// How far a timestamp may be from the verifier's clock, the reference libraries' default.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The only signature version this scheme defines for a shared key; others are ignored.
const VERSION: &str = "v1";

/// Standard base64 that accepts a secret or a signature with or without its `=` padding, as the
/// reference libraries do.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A signing key: the bytes a `whsec_` secret encodes; its `Debug` shows none of them.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl Key {
    /// The key of a secret: base64 (padding optional), optionally prefixed `whsec_`.
    pub fn parse(secret: &str) -> Result<Key, SignatureError> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let bad = |found: &str| SignatureError::BadKey {
            expected: "a Standard Webhooks secret: whsec_ followed by base64 (e.g. from `openssl rand -base64 32`)",
            found: found.to_string(),
        };
        let key = LENIENT
            .decode(encoded)
            .map_err(|_| bad("a value that is not base64"))?;
        if key.is_empty() {
            return Err(bad("nothing after whsec_"));
        }
        Ok(Key(key))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(***)")
    }
}

/// The digest one key makes of a message.
fn digest(key: &Key, id: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    mac(Algorithm::Sha256, &key.0, &parts)
}

/// The `webhook-signature` value: one `v1,<base64>` per key, space-separated, so a receiver
/// that knows any one of them (the new or the retiring key) verifies the message.
pub fn sign(keys: &[Key], id: &str, timestamp: u64, body: &[u8]) -> String {
    let signatures: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "{VERSION},{}",
                STANDARD.encode(digest(k, id, timestamp, body))
            )
        })
        .collect();
    signatures.join(" ")
}

/// Verifies a message from its three headers (`None` when not sent) at `now` (seconds since
/// 1970): the timestamp within `tolerance` of `now` either way, then any `v1` signature made by
/// any key over id, timestamp and body. Returns the index of the key that matched.
pub fn verify(
    keys: &[Key],
    id: Option<&str>,
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: u64,
    tolerance: Duration,
) -> Result<usize, SignatureError> {
    let id = present(id, ID_HEADER)?;
    let timestamp = present(timestamp_header, TIMESTAMP_HEADER)?;
    let signatures = present(signature_header, SIGNATURE_HEADER)?;
    let timestamp = fresh(parse_timestamp(timestamp)?, now, tolerance)?;

    let offered: Vec<&str> = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .map(|(_, signature)| signature)
        .collect();
    if offered.is_empty() {
        let count = signatures.split(' ').filter(|s| !s.is_empty()).count();
        return Err(SignatureError::Malformed {
            header: SIGNATURE_HEADER.to_string(),
            expected: "space-separated v1,<base64> signatures",
            found: format!("no v1 signature among {count}"),
        });
    }
    // A signature that is not base64 cannot match; it is skipped like one made with another key.
    let offered: Vec<Vec<u8>> = offered
        .iter()
        .filter_map(|s| LENIENT.decode(s).ok())
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let expected = digest(key, id, timestamp, body);
        if offered.iter().any(|s| equal(&expected, s)) {
            return Ok(i);
        }
    }
    Err(SignatureError::Mismatch {
        header: SIGNATURE_HEADER.to_string(),
        signed: "the id, timestamp and body",
    })
}

/// A header's value, trimmed; sent empty counts as not sent.
fn present<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, SignatureError> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(SignatureError::Missing(name)),
    }
}

/// Whole seconds since 1970, digits only (no sign, no fraction).
fn parse_timestamp(text: &str) -> Result<u64, SignatureError> {
    let bad = || SignatureError::BadTimestamp {
        header: TIMESTAMP_HEADER,
        found: text.chars().take(32).collect(),
    };
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

/// `timestamp` when it is within `tolerance` of `now`, either way.
fn fresh(timestamp: u64, now: u64, tolerance: Duration) -> Result<u64, SignatureError> {
    let tolerance = tolerance.as_secs();
    if now > timestamp && now - timestamp > tolerance {
        return Err(SignatureError::TooOld {
            header: TIMESTAMP_HEADER,
            timestamp,
            age: now - timestamp,
            tolerance,
        });
    }
    if timestamp > now && timestamp - now > tolerance {
        return Err(SignatureError::TooNew {
            header: TIMESTAMP_HEADER,
            timestamp,
            ahead: timestamp - now,
            tolerance,
        });
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's test vector, as its reference libraries check it
    /// (standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py,
    /// `test_sign_function`).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: u64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    /// A second key, padded, for rotations.
    const OTHER: &str = "whsec_c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc=";

    fn key(secret: &str) -> Key {
        Key::parse(secret).unwrap()
    }

    /// Verifies `signature` over the published message at `now`, with the default tolerance.
    fn check(
        keys: &[Key],
        ts: &str,
        signature: &str,
        body: &[u8],
        now: u64,
    ) -> Result<usize, SignatureError> {
        verify(
            keys,
            Some(ID),
            Some(ts),
            Some(signature),
            body,
            now,
            DEFAULT_TOLERANCE,
        )
    }

    #[test]
    fn the_published_vectors() {
        assert_eq!(sign(&[key(SECRET)], ID, TS, BODY), SIGNATURE);
        // libraries/rust/src/lib.rs, `test_sign`.
        assert_eq!(
            sign(
                &[key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")],
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        assert_eq!(
            check(&[key(SECRET)], "1614265330", SIGNATURE, BODY, TS),
            Ok(0)
        );
    }

    #[test]
    fn keys_with_or_without_prefix_and_padding() {
        assert_eq!(key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), key(SECRET));
        assert_eq!(key(OTHER.trim_end_matches('=')), key(OTHER));
        assert_eq!(format!("{:?}", key(SECRET)), "Key(***)");
        let e = Key::parse("not base64!").unwrap_err().to_string();
        assert!(e.starts_with("expected a Standard Webhooks secret"), "{e}");
        assert!(e.ends_with("found a value that is not base64"), "{e}");
        assert!(
            Key::parse("whsec_")
                .unwrap_err()
                .to_string()
                .ends_with("found nothing after whsec_")
        );
    }

    #[test]
    fn the_tolerance_holds_both_ways() {
        let keys = [key(SECRET)];
        let at = |now| check(&keys, "1614265330", SIGNATURE, BODY, now);
        assert_eq!(at(TS + 300), Ok(0));
        assert_eq!(at(TS - 300), Ok(0));
        assert_eq!(
            at(TS + 301),
            Err(SignatureError::TooOld {
                header: TIMESTAMP_HEADER,
                timestamp: TS,
                age: 301,
                tolerance: 300
            })
        );
        assert_eq!(
            at(TS - 301),
            Err(SignatureError::TooNew {
                header: TIMESTAMP_HEADER,
                timestamp: TS,
                ahead: 301,
                tolerance: 300
            })
        );
        assert_eq!(
            at(TS + 301).unwrap_err().to_string(),
            "webhook-timestamp 1614265330 is 301 s in the past: expected at most 300 s either side of now"
        );
        assert_eq!(
            at(TS - 3600).unwrap_err().to_string(),
            "webhook-timestamp 1614265330 is 3600 s in the future: expected at most 300 s either side of now"
        );
        let strict = verify(
            &keys,
            Some(ID),
            Some("1614265330"),
            Some(SIGNATURE),
            BODY,
            TS + 1,
            Duration::ZERO,
        );
        assert!(matches!(strict, Err(SignatureError::TooOld { age: 1, .. })));
    }

    #[test]
    fn tampering_is_refused() {
        let keys = [key(SECRET)];
        let refusal = SignatureError::Mismatch {
            header: SIGNATURE_HEADER.to_string(),
            signed: "the id, timestamp and body",
        };
        let mismatch = Err(refusal.clone());
        assert_eq!(
            check(
                &keys,
                "1614265330",
                SIGNATURE,
                br#"{"test": 2432232315}"#,
                TS
            ),
            mismatch
        );
        assert_eq!(check(&keys, "1614265331", SIGNATURE, BODY, TS), mismatch);
        let other_id = verify(
            &keys,
            Some("msg_other"),
            Some("1614265330"),
            Some(SIGNATURE),
            BODY,
            TS,
            DEFAULT_TOLERANCE,
        );
        assert_eq!(other_id, mismatch);
        assert_eq!(
            check(&[key(OTHER)], "1614265330", SIGNATURE, BODY, TS),
            mismatch
        );
        assert_eq!(
            refusal.to_string(),
            "webhook-signature does not match the id, timestamp and body with any configured key"
        );
    }

    #[test]
    fn rotation_signs_with_every_key_and_any_one_verifies() {
        let both = [key(SECRET), key(OTHER)];
        let header = sign(&both, ID, TS, BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert_eq!(parts[0], SIGNATURE);
        assert_eq!(check(&[key(OTHER)], "1614265330", &header, BODY, TS), Ok(0));
        assert_eq!(
            check(&[key(SECRET)], "1614265330", &header, BODY, TS),
            Ok(0)
        );
        assert_eq!(
            check(
                &[key("whsec_QUJD"), key(OTHER)],
                "1614265330",
                &header,
                BODY,
                TS
            ),
            Ok(1)
        );
    }

    #[test]
    fn unknown_versions_and_unreadable_signatures_are_skipped() {
        let keys = [key(SECRET)];
        let header = format!("v1a,c2lnbmVk v2,abc v1,!!! nocomma  {SIGNATURE}");
        assert_eq!(check(&keys, "1614265330", &header, BODY, TS), Ok(0));
        let unpadded = SIGNATURE.trim_end_matches('=');
        assert_eq!(check(&keys, "1614265330", unpadded, BODY, TS), Ok(0));
        let only_other = check(&keys, "1614265330", "v1a,c2lnbmVk v2,abc", BODY, TS);
        assert_eq!(
            only_other.unwrap_err().to_string(),
            "malformed webhook-signature: expected space-separated v1,<base64> signatures, no v1 signature among 2"
        );
    }

    #[test]
    fn missing_and_malformed_headers() {
        let keys = [key(SECRET)];
        let run = |id, ts, sig| verify(&keys, id, ts, sig, BODY, TS, DEFAULT_TOLERANCE);
        let (ts, sig) = (Some("1614265330"), Some(SIGNATURE));
        assert_eq!(run(None, ts, sig), Err(SignatureError::Missing(ID_HEADER)));
        assert_eq!(
            run(Some(ID), None, sig),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            run(Some(ID), ts, None),
            Err(SignatureError::Missing(SIGNATURE_HEADER))
        );
        assert_eq!(
            run(Some(ID), ts, Some(" ")),
            Err(SignatureError::Missing(SIGNATURE_HEADER))
        );
        assert_eq!(
            run(Some(ID), ts, None).unwrap_err().to_string(),
            "missing webhook-signature header"
        );
        for bad in [
            "16142653e0",
            "-1614265330",
            "+1614265330",
            "1614265330.5",
            "99999999999999999999999",
        ] {
            let e = run(Some(ID), Some(bad), sig).unwrap_err();
            assert!(
                matches!(e, SignatureError::BadTimestamp { .. }),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            run(Some(ID), Some("soon"), sig).unwrap_err().to_string(),
            "malformed webhook-timestamp: expected whole seconds since 1970, found \"soon\""
        );
    }
}
