//! An HMAC of the body in one header, shaped as a receiver asks: the hash (`sha256` unless told,
//! `sha512`, `sha1`), the encoding (hex unless told, or base64) and a prefix before the digest
//! (`sha256=`), so hookbridge can sign for receivers that follow no published scheme.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::{Algorithm, SignatureError, equal, mac};

/// How a digest is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Lower-case hex (upper case is read too): what most receivers compare against.
    #[default]
    Hex,
    /// Standard base64 with padding (read with or without it).
    Base64,
}

impl Encoding {
    /// The encodings by name, for messages.
    pub const CHOICES: &'static str = "hex or base64";

    /// The name in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }

    fn encode(self, digest: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(digest),
            Encoding::Base64 => STANDARD.encode(digest),
        }
    }

    fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::Hex => hex::decode(text).ok(),
            Encoding::Base64 => LENIENT.decode(text).ok(),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = SignatureError;

    /// Reads `hex` or `base64` in any case.
    fn from_str(s: &str) -> Result<Self, SignatureError> {
        [Encoding::Hex, Encoding::Base64]
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| SignatureError::Unknown {
                expected: Encoding::CHOICES,
                found: s.to_string(),
            })
    }
}

/// Standard base64, its `=` padding optional on reading.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One header carrying `prefix` + the encoded HMAC of the body: how it is named and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacHeader {
    /// The header's name, for the receiver and for messages.
    pub header: String,
    /// The hash.
    pub algorithm: Algorithm,
    /// How the digest is written.
    pub encoding: Encoding,
    /// Written before the digest, e.g. `sha256=`; may be empty.
    pub prefix: String,
}

impl HmacHeader {
    /// The header's value for `body` signed with `key`.
    pub fn sign(&self, key: &[u8], body: &[u8]) -> String {
        let digest = mac(self.algorithm, key, &[body]);
        format!("{}{}", self.prefix, self.encoding.encode(&digest))
    }

    /// Checks a header `value` against every key; returns the index of the key that made it.
    pub fn verify<K: AsRef<[u8]>>(
        &self,
        value: &str,
        keys: &[K],
        body: &[u8],
    ) -> Result<usize, SignatureError> {
        let expected = self.decode(value)?;
        keys.iter()
            .position(|k| equal(&mac(self.algorithm, k.as_ref(), &[body]), &expected))
            .ok_or_else(|| SignatureError::Mismatch {
                header: self.header.clone(),
                signed: "the body",
            })
    }

    /// The digest a header value carries, its prefix and encoding checked.
    fn decode(&self, value: &str) -> Result<Vec<u8>, SignatureError> {
        let malformed = |found: String| SignatureError::Malformed {
            header: self.header.clone(),
            expected: "the configured prefix followed by the digest",
            found,
        };
        let value = value.trim();
        let Some(encoded) = value.strip_prefix(self.prefix.as_str()) else {
            return Err(malformed(format!(
                "the value does not start with {:?}",
                self.prefix
            )));
        };
        let digest = self
            .encoding
            .decode(encoded)
            .ok_or_else(|| malformed(format!("the digest is not {}", self.encoding.as_str())))?;
        let want = self.algorithm.digest_len();
        if digest.len() != want {
            return Err(malformed(format!(
                "a {} digest has {want} bytes, this one has {}",
                self.algorithm,
                digest.len()
            )));
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(algorithm: Algorithm, encoding: Encoding, prefix: &str) -> HmacHeader {
        HmacHeader {
            header: "X-Signature".into(),
            algorithm,
            encoding,
            prefix: prefix.into(),
        }
    }

    /// Every algorithm in every encoding, against `printf %s BODY | openssl dgst -ALG -hmac KEY`
    /// (hex; `-binary | base64` for base64).
    #[test]
    fn each_algorithm_and_encoding_matches_openssl() {
        let (key, body) = (b"s3cret".as_slice(), br#"{"event":"created"}"#.as_slice());
        let cases = [
            (
                Algorithm::Sha256,
                Encoding::Hex,
                "e308f430e93a4819a7e2080f0356fad6eb8b406ea569122fdf4de6f79ee285e7",
            ),
            (
                Algorithm::Sha256,
                Encoding::Base64,
                "4wj0MOk6SBmn4ggPA1b61uuLQG6laRIv303m957ihec=",
            ),
            (
                Algorithm::Sha512,
                Encoding::Hex,
                "341446d6b92d8cb2c8d1f0aceb2abd15771e71d80f285344c2c19cf7e217eb756e9304e9fda73083f4290834cf9655bf21f11fd66ec48fe71d85cb446d305569",
            ),
            (
                Algorithm::Sha512,
                Encoding::Base64,
                "NBRG1rktjLLI0fCs6yq9FXcecdgPKFNEwsGc9+IX63VukwTp/acwg/QpCDTPllW/IfEf1m7Ej+cdhctEbTBVaQ==",
            ),
            (
                Algorithm::Sha1,
                Encoding::Hex,
                "9ba7727ca6cba3746795abfabd70fa7cc41c444a",
            ),
            (
                Algorithm::Sha1,
                Encoding::Base64,
                "m6dyfKbLo3Rnlav6vXD6fMQcREo=",
            ),
        ];
        for (algorithm, encoding, expected) in cases {
            let h = header(algorithm, encoding, "");
            assert_eq!(h.sign(key, body), expected, "{algorithm} {encoding}");
            assert_eq!(h.verify(expected, &[key], body), Ok(0));
            let prefixed = header(algorithm, encoding, "sig=");
            let value = prefixed.sign(key, body);
            assert_eq!(value, format!("sig={expected}"));
            assert_eq!(
                prefixed.verify(&value, &[b"old".as_slice(), key], body),
                Ok(1)
            );
        }
    }

    #[test]
    fn lenient_spellings_of_the_same_digest() {
        let h = header(Algorithm::Sha256, Encoding::Hex, "sha256=");
        let value = h.sign(b"k", b"body");
        assert_eq!(
            h.verify(
                &value.to_uppercase().replace("SHA256=", "sha256="),
                &[b"k"],
                b"body"
            ),
            Ok(0)
        );
        assert_eq!(h.verify(&format!(" {value} "), &[b"k"], b"body"), Ok(0));
        let b = header(Algorithm::Sha256, Encoding::Base64, "");
        let value = b.sign(b"k", b"body");
        assert_eq!(
            b.verify(value.trim_end_matches('='), &[b"k"], b"body"),
            Ok(0)
        );
    }

    #[test]
    fn refusals_say_what_was_expected() {
        let h = header(Algorithm::Sha256, Encoding::Hex, "sha256=");
        let value = h.sign(b"k", b"body");
        let refused =
            |value: &str, body: &[u8]| h.verify(value, &[b"k"], body).unwrap_err().to_string();
        assert_eq!(
            refused(&value, b"Body"),
            "X-Signature does not match the body with any configured key"
        );
        assert_eq!(
            h.verify(&value, &[b"other"], b"body")
                .unwrap_err()
                .to_string(),
            "X-Signature does not match the body with any configured key"
        );
        assert!(refused(&value[7..], b"body").contains("does not start with \"sha256=\""));
        assert!(refused("sha256=zz", b"body").contains("the digest is not hex"));
        assert!(refused(&value[..value.len() - 1], b"body").contains("the digest is not hex"));
        assert!(
            refused(&value[..value.len() - 4], b"body")
                .contains("a sha256 digest has 32 bytes, this one has 30")
        );
        let sha512 = header(Algorithm::Sha512, Encoding::Hex, "sha256=");
        assert!(
            sha512
                .verify(&value, &[b"k"], b"body")
                .unwrap_err()
                .to_string()
                .contains("64 bytes")
        );
    }

    #[test]
    fn encodings_by_name() {
        assert_eq!("Base64".parse(), Ok(Encoding::Base64));
        assert_eq!("hex".parse(), Ok(Encoding::Hex));
        let e = "base32".parse::<Encoding>().unwrap_err();
        assert_eq!(e.to_string(), "expected hex or base64, found \"base32\"");
    }
}
