//! `signature::standard_webhooks` against the official library, both ways: what the
//! `standardwebhooks` package from PyPI signs, hookbridge verifies (and refuses once tampered
//! with or out of its tolerance), and what hookbridge signs, the package verifies
//! (tests/signature/official.py runs it).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use hookbridge::signature::SignatureError;
use hookbridge::signature::standard_webhooks::{self, DEFAULT_TOLERANCE, Key};
use serde_json::{Value, json};

/// The specification's test secret, a second one for rotations, and the second without its
/// prefix and padding (both libraries read it as the same key).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER: &str = "whsec_c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc=";
const OTHER_BARE: &str = "c2Vjb25kLXNlY3JldC1rZXktMDEyMzQ1Njc";
/// A key neither side signs with.
const WRONG: &str = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=";

/// Payloads of several shapes: the specification's, a real portal delivery, non-ASCII text,
/// nothing at all.
fn payloads() -> Vec<String> {
    vec![
        r#"{"test": 2432232314}"#.to_string(),
        String::from_utf8(common::sample("portal-group-update.json")).unwrap(),
        r#"{"name":"Zürich – 東京","note":"tab\there"}"#.to_string(),
        String::new(),
    ]
}

fn key(secret: &str) -> Key {
    Key::parse(secret).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Runs official.py's `command` over `requests`; its JSON answer.
fn official(command: &str, requests: &Value) -> Vec<String> {
    let python = common::python_with_standardwebhooks();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.json");
    std::fs::write(&file, requests.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signature/official.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(command)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "official.py {command} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "official.py {command} printed no JSON list ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// One message as the official library signs it.
struct Signed {
    secret: &'static str,
    id: String,
    timestamp: u64,
    payload: String,
}

#[test]
fn the_official_signatures_pass_our_verifier() {
    // The published vector first, then every payload with every key.
    let mut messages = vec![Signed {
        secret: SECRET,
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek".to_string(),
        timestamp: 1614265330,
        payload: payloads()[0].clone(),
    }];
    for (i, payload) in payloads().into_iter().enumerate() {
        for secret in [SECRET, OTHER, OTHER_BARE] {
            messages.push(Signed {
                secret,
                id: format!("msg_{i}_{}", messages.len()),
                timestamp: 1614265330 + messages.len() as u64,
                payload: payload.clone(),
            });
        }
    }
    let requests: Vec<Value> = messages
        .iter()
        .map(|m| json!({"secret": m.secret, "id": m.id, "timestamp": m.timestamp, "payload": m.payload}))
        .collect();
    let signatures = official("sign", &Value::from(requests));
    assert_eq!(signatures.len(), messages.len());
    assert_eq!(
        signatures[0], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        "the official library signs the published vector as published"
    );

    for (m, signature) in messages.iter().zip(&signatures) {
        let keys = [key(m.secret)];
        let ts = m.timestamp.to_string();
        let body = m.payload.as_bytes();
        let at = |id: &str, ts: &str, body: &[u8], now: u64| {
            standard_webhooks::verify(
                &keys,
                Some(id),
                Some(ts),
                Some(signature),
                body,
                now,
                DEFAULT_TOLERANCE,
            )
        };
        let what = format!("{} signed with {}", m.id, m.secret);
        assert_eq!(at(&m.id, &ts, body, m.timestamp), Ok(0), "{what}");
        assert_eq!(
            standard_webhooks::sign(&keys, &m.id, m.timestamp, body),
            *signature,
            "{what}: ours is byte for byte the official one"
        );

        // Tampered with: the body, the id, the timestamp (still within the tolerance).
        let tampered = [body, b" "].concat();
        for (how, refused) in [
            ("a byte added", at(&m.id, &ts, &tampered, m.timestamp)),
            (
                "another id",
                at(&format!("{}x", m.id), &ts, body, m.timestamp),
            ),
            (
                "another timestamp",
                at(&m.id, &(m.timestamp + 1).to_string(), body, m.timestamp),
            ),
        ] {
            assert!(
                matches!(refused, Err(SignatureError::Mismatch { .. })),
                "{what}, {how}: {refused:?}"
            );
        }
        let wrong = standard_webhooks::verify(
            &[key(WRONG)],
            Some(&m.id),
            Some(&ts),
            Some(signature),
            body,
            m.timestamp,
            DEFAULT_TOLERANCE,
        );
        assert!(
            matches!(wrong, Err(SignatureError::Mismatch { .. })),
            "{what}, a wrong key"
        );

        // The tolerance, to the second, either way.
        assert_eq!(at(&m.id, &ts, body, m.timestamp + 300), Ok(0), "{what}");
        assert_eq!(at(&m.id, &ts, body, m.timestamp - 300), Ok(0), "{what}");
        let old = at(&m.id, &ts, body, m.timestamp + 301);
        assert!(
            matches!(old, Err(SignatureError::TooOld { age: 301, .. })),
            "{what}: {old:?}"
        );
        let new = at(&m.id, &ts, body, m.timestamp - 301);
        assert!(
            matches!(new, Err(SignatureError::TooNew { ahead: 301, .. })),
            "{what}: {new:?}"
        );
    }

    // A rotation: the official signatures of one message with two keys, in one header; either
    // key verifies it, and a verifier that knows the retiring key only still does.
    let (id, ts, body) = ("msg_rotation", 1700000000u64, payloads()[1].clone());
    let pair = official(
        "sign",
        &json!([
            {"secret": SECRET, "id": id, "timestamp": ts, "payload": body},
            {"secret": OTHER, "id": id, "timestamp": ts, "payload": body},
        ]),
    );
    let header = format!("v1a,bm90IG91cnM= {} {}", pair[0], pair[1]);
    let with = |keys: &[Key]| {
        standard_webhooks::verify(
            keys,
            Some(id),
            Some(&ts.to_string()),
            Some(&header),
            body.as_bytes(),
            ts,
            DEFAULT_TOLERANCE,
        )
    };
    assert_eq!(with(&[key(SECRET)]), Ok(0));
    assert_eq!(with(&[key(OTHER_BARE)]), Ok(0));
    assert_eq!(with(&[key(WRONG), key(OTHER)]), Ok(1));
    assert!(matches!(
        with(&[key(WRONG)]),
        Err(SignatureError::Mismatch { .. })
    ));
}

#[test]
fn our_signatures_pass_the_official_verifier() {
    let now = now();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    let mut ask =
        |secret: &str, payload: &str, id: &str, ts: u64, signature: &str, verdict: &str| {
            requests.push(json!({
                "secret": secret,
                "payload": payload,
                "headers": {
                    "webhook-id": id,
                    "webhook-timestamp": ts.to_string(),
                    "webhook-signature": signature,
                },
            }));
            expected.push(verdict.to_string());
        };
    for (i, payload) in payloads().iter().enumerate() {
        let id = format!("msg_{i}");
        let body = payload.as_bytes();
        for secret in [SECRET, OTHER_BARE] {
            let signature = standard_webhooks::sign(&[key(secret)], &id, now, body);
            ask(secret, payload, &id, now, &signature, "accepted");
        }
        // A rotation: one header signed with both keys passes with either.
        let both = standard_webhooks::sign(&[key(SECRET), key(OTHER)], &id, now, body);
        assert_eq!(both.split(' ').count(), 2, "{both}");
        ask(SECRET, payload, &id, now, &both, "accepted");
        ask(OTHER, payload, &id, now, &both, "accepted");

        // The official verifier refuses what it should: so the acceptances above are real.
        let signature = standard_webhooks::sign(&[key(SECRET)], &id, now, body);
        let mismatch = "refused: No matching signature found";
        ask(
            SECRET,
            &format!("{payload} "),
            &id,
            now,
            &signature,
            mismatch,
        );
        ask(
            SECRET,
            payload,
            &format!("{id}x"),
            now,
            &signature,
            mismatch,
        );
        ask(SECRET, payload, &id, now + 1, &signature, mismatch);
        ask(WRONG, payload, &id, now, &signature, mismatch);
        let stale = standard_webhooks::sign(&[key(SECRET)], &id, now - 600, body);
        ask(
            SECRET,
            payload,
            &id,
            now - 600,
            &stale,
            "refused: Message timestamp too old",
        );
        let early = standard_webhooks::sign(&[key(SECRET)], &id, now + 600, body);
        ask(
            SECRET,
            payload,
            &id,
            now + 600,
            &early,
            "refused: Message timestamp too new",
        );
    }
    let verdicts = official("verify", &Value::from(requests));
    assert_eq!(verdicts.len(), expected.len());
    for (n, (got, want)) in verdicts.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "request {n}");
    }
}
