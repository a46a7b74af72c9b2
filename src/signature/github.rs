//! GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, which many receivers
//! copy: the generic HMAC header with GitHub's choices.

use super::hmac::{Encoding, HmacHeader};
use super::{Algorithm, SignatureError};

/// The header GitHub signs in.
pub const HEADER: &str = "X-Hub-Signature-256";

/// GitHub's choices as a generic HMAC header: SHA-256, hex, `sha256=`.
pub fn scheme() -> HmacHeader {
    HmacHeader {
        header: HEADER.to_string(),
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        prefix: "sha256=".to_string(),
    }
}

/// The `X-Hub-Signature-256` value for `body` signed with `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    scheme().sign(key, body)
}

/// Checks an `X-Hub-Signature-256` value against every key; returns the matching key's index.
pub fn verify<K: AsRef<[u8]>>(
    value: &str,
    keys: &[K],
    body: &[u8],
) -> Result<usize, SignatureError> {
    scheme().verify(value, keys, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn the_documented_example() {
        assert_eq!(sign(SECRET, BODY), SIGNATURE);
        assert_eq!(verify(SIGNATURE, &[SECRET], BODY), Ok(0));
        assert_eq!(verify(SIGNATURE, &[b"old".as_slice(), SECRET], BODY), Ok(1));
    }

    #[test]
    fn tampering_is_refused() {
        let refused = verify(SIGNATURE, &[SECRET], b"Hello, World?").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "X-Hub-Signature-256 does not match the body with any configured key"
        );
        assert!(verify(SIGNATURE, &[b"It's a secret to everybody"], BODY).is_err());
        let bare = SIGNATURE.trim_start_matches("sha256=");
        assert!(matches!(
            verify(bare, &[SECRET], BODY),
            Err(SignatureError::Malformed { .. })
        ));
    }
}
