//! `signature::arcgis::{sign, decode, verify}`.
//!
//! Invariants: never panics on any header value; a decoded digest is always 32 bytes; `sign`'s
//! output (and its percent-encoded, hex, bare and form-mangled variants) verifies with its key
//! and no other data; a verified index names one of the keys.
#![no_main]

use hookbridge::config::Secret;
use hookbridge::signature::SignatureError;
use hookbridge::signature::arcgis::{decode, sign, verify};
use libfuzzer_sys::fuzz_target;

/// The input, split on NUL bytes: `value \0 data \0 other \0 key \0 key ...`
/// (a header value as it might arrive, the signed body, another candidate text, and up to four
/// inline signature keys; `env:`/`file:` specs and non-UTF-8 keys are skipped).
struct Input<'a> {
    value: &'a str,
    keys: Vec<&'a str>,
    data: &'a [u8],
    other: &'a [u8],
}

impl<'a> Input<'a> {
    fn split(bytes: &'a [u8]) -> Option<Self> {
        let mut parts = bytes.split(|&b| b == 0);
        let value = std::str::from_utf8(parts.next()?).ok()?;
        let data = parts.next().unwrap_or_default();
        let other = parts.next().unwrap_or_default();
        let keys = parts.filter_map(|k| std::str::from_utf8(k).ok()).collect();
        Some(Input {
            value,
            keys,
            data,
            other,
        })
    }
}

fn inline(spec: &str) -> Option<Secret> {
    if spec.starts_with("env:") || spec.starts_with("file:") {
        return None;
    }
    Secret::resolve(spec).ok()
}

fuzz_target!(|bytes: &[u8]| {
    let Some(input) = Input::split(bytes) else {
        return;
    };
    let keys: Vec<Secret> = input
        .keys
        .iter()
        .take(4)
        .filter_map(|k| inline(k))
        .collect();

    // Arbitrary header values: never a panic, and a digest is 32 bytes.
    match decode(input.value) {
        Ok(d) => assert_eq!(d.len(), 32),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match verify(input.value, &keys, &[input.data, input.other]) {
        Ok(i) => assert!(i < keys.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // What `sign` produces verifies with its key, in every tolerated spelling.
    for (i, key) in keys.iter().enumerate() {
        let sig = sign(key.expose().as_bytes(), input.data);
        assert!(sig.starts_with("sha256="));
        let found = verify(&sig, &keys, &[input.data]).expect("own signature verifies");
        // An earlier key may match too: HMAC treats "k" and "k\0" (and a long key and its
        // SHA-256) as the same key.
        assert!(found <= i);
        let only = std::slice::from_ref(key);
        assert_eq!(verify(&sig, only, &[input.data]), Ok(0));
        let pct = sig
            .replace('=', "%3D")
            .replace('+', "%2B")
            .replace('/', "%2F");
        assert_eq!(verify(&pct, only, &[input.data]), Ok(0), "percent-encoded");
        let form_mangled = sig.replace('+', " ");
        assert_eq!(
            verify(&form_mangled, only, &[input.data]),
            Ok(0),
            "+ as space"
        );
        let bare = &sig["sha256=".len()..];
        assert_eq!(verify(bare, only, &[input.data]), Ok(0), "bare");
        let digest = decode(&sig).expect("own signature decodes");
        let hexed = format!("sha256={}", hex_encode(&digest));
        assert_eq!(verify(&hexed, only, &[input.data]), Ok(0), "hex");
        // A different text never verifies.
        if input.other != input.data {
            assert!(matches!(
                verify(&sig, only, &[input.other]),
                Err(SignatureError::Mismatch { .. })
            ));
        }
    }
});

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
