//! Every signature scheme hookbridge reads or writes, signing and verifying in one place, so the
//! ingress and the HTTP sink cannot drift apart: ArcGIS's `x-esriHook-Signature` (`arcgis`),
//! Standard Webhooks (`standard_webhooks`), GitHub's `X-Hub-Signature-256` (`github`) and an HMAC
//! of the body in a header of the config's choosing (`hmac`). This file holds what they share:
//! the HMAC itself, the constant-time comparison and the one error type.

pub mod arcgis;
pub mod github;
pub mod hmac;
pub mod standard_webhooks;

use std::fmt;
use std::str::FromStr;

use ::hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Why a signature was not made or not accepted; each message says what was expected and what
/// was found.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// A header the scheme needs was not sent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The value is not in the scheme's form.
    #[error("malformed {header}: expected {expected}, {found}")]
    Malformed {
        /// The header (or form field) that carried it.
        header: String,
        /// The scheme's form.
        expected: &'static str,
        /// What is wrong with this value.
        found: String,
    },
    /// Another algorithm than the scheme's was named.
    #[error("unsupported signature algorithm {found:?}: expected {expected}")]
    UnsupportedAlgorithm {
        /// The algorithm named.
        found: String,
        /// The algorithms accepted.
        expected: &'static str,
    },
    /// A Standard Webhooks timestamp that is not whole seconds since 1970.
    #[error("malformed {header}: expected whole seconds since 1970, found {found:?}")]
    BadTimestamp {
        /// The header that carried it.
        header: &'static str,
        /// The value as sent.
        found: String,
    },
    /// Signed longer ago than the tolerance allows: a replay, or a sender's clock far behind.
    #[error(
        "{header} {timestamp} is {age} s in the past: expected at most {tolerance} s either side of now"
    )]
    TooOld {
        /// The header that carried it.
        header: &'static str,
        /// The timestamp sent.
        timestamp: u64,
        /// How far behind this clock it is, in seconds.
        age: u64,
        /// The tolerance, in seconds.
        tolerance: u64,
    },
    /// Signed further ahead than the tolerance allows: a sender's clock far ahead.
    #[error(
        "{header} {timestamp} is {ahead} s in the future: expected at most {tolerance} s either side of now"
    )]
    TooNew {
        /// The header that carried it.
        header: &'static str,
        /// The timestamp sent.
        timestamp: u64,
        /// How far ahead of this clock it is, in seconds.
        ahead: u64,
        /// The tolerance, in seconds.
        tolerance: u64,
    },
    /// Well-formed, but made with none of the keys over what it should cover.
    #[error("{header} does not match {signed} with any configured key")]
    Mismatch {
        /// The header (or form field) that carried it.
        header: String,
        /// What the signature covers, in words.
        signed: &'static str,
    },
    /// A key that is not in the scheme's form.
    #[error("expected {expected}, found {found}")]
    BadKey {
        /// The key's form.
        expected: &'static str,
        /// What is wrong with this key.
        found: String,
    },
    /// A setting of a scheme that names no known choice (an algorithm, an encoding).
    #[error("expected {expected}, found {found:?}")]
    Unknown {
        /// The choices.
        expected: &'static str,
        /// The setting as written.
        found: String,
    },
}

/// The hash an HMAC is computed with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1: only for receivers that know nothing newer (GitHub's legacy `X-Hub-Signature`).
    Sha1,
    /// HMAC-SHA256, what every scheme here uses unless told otherwise.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    /// The algorithms by name, for messages.
    pub const CHOICES: &'static str = "sha256, sha512 or sha1";

    /// The name in settings and signature prefixes (`sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The length of its digest in bytes, to refuse a truncated signature with a clear message.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = SignatureError;

    /// Reads `sha256`, `sha512` or `sha1` in any case.
    fn from_str(s: &str) -> Result<Self, SignatureError> {
        [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Sha1]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| SignatureError::Unknown {
                expected: Algorithm::CHOICES,
                found: s.to_string(),
            })
    }
}

/// The HMAC of the concatenated `parts` with `key`; parts save copying a message that a scheme
/// signs as `id.timestamp.body`.
pub fn mac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha1 => keyed::<Hmac<Sha1>>(key, parts),
        Algorithm::Sha256 => keyed::<Hmac<Sha256>>(key, parts),
        Algorithm::Sha512 => keyed::<Hmac<Sha512>>(key, parts),
    }
}

/// One HMAC of one hash; any key length is valid for HMAC.
fn keyed<M: Mac + ::hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = match <M as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

/// Whether two digests are equal, in time that does not depend on where they differ (their
/// lengths are public: a digest's length is the algorithm's).
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from `printf %s DATA | openssl dgst -ALG -hmac KEY`.
    #[test]
    fn each_algorithm_matches_openssl() {
        let data: &[&[u8]] = &[b"Hello, ", b"World!"];
        let cases = [
            (Algorithm::Sha1, "b688f6f2602474b86713f193726755f0095edc8b"),
            (
                Algorithm::Sha256,
                "7f424e2d0ff6bd5dec626e0102755bafec91c3510f19739a4eaec8f3bc3a01a4",
            ),
            (
                Algorithm::Sha512,
                "7b735ac190ebd1432d56f95ae2aea5a04a23128f4c228e299b7a49fb7561de8cc8f4fdf4486dc743dfd07827d617273aab42b3bf819d243ded322fac167419f1",
            ),
        ];
        for (algorithm, expected) in cases {
            let digest = mac(algorithm, b"key", data);
            assert_eq!(hex::encode(&digest), expected, "{algorithm}");
            assert_eq!(digest.len(), algorithm.digest_len());
        }
    }

    #[test]
    fn algorithms_by_name() {
        assert_eq!("SHA512".parse(), Ok(Algorithm::Sha512));
        assert_eq!("sha1".parse(), Ok(Algorithm::Sha1));
        assert_eq!(Algorithm::default(), Algorithm::Sha256);
        let e = "md5".parse::<Algorithm>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected sha256, sha512 or sha1, found \"md5\""
        );
    }

    #[test]
    fn equal_is_exact() {
        assert!(equal(b"abc", b"abc"));
        assert!(!equal(b"abc", b"abd"));
        assert!(!equal(b"abc", b"ab"));
    }
}
