//! End to end through the real binary: every sample in every encoding, every refusal, dedup, CRC.
#![allow(clippy::type_complexity)]

mod common;

use common::{Daemon, FILE_CONFIG, KEY, sample, sign};
use serde_json::Value;

/// Sum of a metric's samples whose line contains every `filter` string.
async fn metric(d: &Daemon, name: &str, filters: &[&str]) -> f64 {
    let text = d.get("/metrics").await.text;
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn form_body(json: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(json).unwrap();
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", text)
        .finish()
        .into_bytes()
}

fn compact(json: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::from_slice::<Value>(json).unwrap()).unwrap()
}

#[tokio::test]
async fn every_sample_in_every_encoding_signed_and_unsigned() {
    let d = Daemon::start(FILE_CONFIG);
    // (sample, hook, expected (source, operation, id) per event)
    let cases: Vec<(&str, &str, Vec<(&str, &str, &str)>)> = vec![
        (
            "portal-group-update.json",
            "portal",
            vec![("group", "update", "4adc30bb03054812a846fa592de105de")],
        ),
        (
            "portal-item-share-multi.json",
            "portal",
            vec![
                ("item", "share", "6cd80cb32d4a4b4d858a020e57fba7b1"),
                ("item", "delete", "7dd95fadaec84859ab8ed1059e675e0c"),
            ],
        ),
        (
            "portal-user-role.json",
            "portal",
            vec![("user", "updateUserRole", "u1TestUser")],
        ),
        (
            "feature-created.json",
            "features",
            vec![("featureService", "FeaturesCreated", "Parcels/0")],
        ),
        (
            "feature-multi.json",
            "features",
            vec![
                ("featureService", "FeaturesCreated", "Parcels/0"),
                ("featureService", "FeaturesUpdated", "Parcels/0"),
                ("featureService", "FeaturesDeleted", "Parcels/0"),
                ("featureService", "AttachmentsCreated", "Parcels/2"),
            ],
        ),
    ];
    let mut expected_lines = 0;
    for (name, hook, expected) in &cases {
        let pretty = sample(name);
        let encodings: Vec<(&str, &str, Vec<u8>)> = vec![
            ("pjson", "application/json", pretty.clone()),
            ("json", "application/json; charset=utf-8", compact(&pretty)),
            (
                "form",
                "application/x-www-form-urlencoded",
                form_body(&compact(&pretty)),
            ),
        ];
        for (i, (enc, ct, body)) in encodings.into_iter().enumerate() {
            // The same events in every encoding are one set of events: only the first is new.
            let a = d
                .post(hook, Some(ct), Some(&sign(KEY, &body)), body.clone())
                .await;
            assert_eq!(a.status, 200, "{name} {enc}: {}", a.text);
            if i == 0 {
                assert_eq!(
                    a.accepted().len(),
                    expected.len(),
                    "{name} {enc}: {}",
                    a.text
                );
                expected_lines += expected.len();
            } else {
                assert!(
                    a.accepted().is_empty(),
                    "{name} {enc} should be a duplicate: {}",
                    a.text
                );
                assert_eq!(
                    a.headers
                        .get("x-hookbridge-duplicate")
                        .map(|v| v.to_str().unwrap()),
                    Some("true")
                );
            }
            // Unsigned: refused by the signed hook, accepted (as a duplicate) by the open one.
            let u = d.post(hook, Some(ct), None, body.clone()).await;
            assert_eq!(u.status, 401, "{name} {enc} unsigned: {}", u.text);
            let o = d.post("open", Some(ct), None, body).await;
            assert_eq!(o.status, 200, "{name} {enc} on the open hook: {}", o.text);
            if i == 0 {
                expected_lines += expected.len();
            }
        }
    }
    let lines = d.wait_lines("events.jsonl", expected_lines).await;
    assert_eq!(lines.len(), expected_lines);
    for (name, hook, expected) in &cases {
        let got: Vec<(String, String, String)> = lines
            .iter()
            .filter(|l| l["hook"] == *hook)
            .filter(|l| expected.iter().any(|(_, _, id)| l["id"] == *id))
            .map(|l| {
                (
                    l["source"].as_str().unwrap().to_string(),
                    l["operation"].as_str().unwrap().to_string(),
                    l["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for (s, o, id) in expected {
            assert!(
                got.iter()
                    .any(|g| g == &(s.to_string(), o.to_string(), id.to_string())),
                "{name}: missing {s} {o} {id} in {got:?}"
            );
        }
    }
    let group = lines
        .iter()
        .find(|l| l["hook"] == "portal" && l["source"] == "group")
        .unwrap();
    assert_eq!(group["kind"], "portal");
    assert_eq!(group["webhook"], "Group monitoring");
    assert_eq!(group["user"], "administrator");
    assert_eq!(group["when"], 1543192196521_i64);
    assert_eq!(group["event_id"].as_str().unwrap().len(), 32);
    let feature = lines.iter().find(|l| l["hook"] == "features").unwrap();
    assert_eq!(feature["kind"], "feature-service");
    assert_eq!(feature["webhook"], "parcels-edits");
    assert_eq!(feature["properties"]["orgId"], "ABCD1EFghIJK2LmN");
}

#[tokio::test]
async fn the_form_sample_with_a_signature_field() {
    let d = Daemon::start(FILE_CONFIG);
    let body = sample("feature-multi.form");
    // Signature in a header, computed over the raw form body.
    let a = d
        .post(
            "features",
            Some("application/x-www-form-urlencoded"),
            Some(&sign(KEY, &body)),
            body.clone(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.accepted().len(), 4);
    let lines = d.wait_lines("events.jsonl", 4).await;
    assert!(
        lines[0]["properties"]["changesUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://services.example.com/")
    );

    // Signature as a form field, computed over the body without it, on a fresh hook.
    let mut with_field = body.clone();
    let sig = sign(KEY, &body);
    with_field.extend_from_slice(format!("&x-esriHook-Signature={}", urlencode(&sig)).as_bytes());
    let a = d
        .post(
            "any",
            Some("application/x-www-form-urlencoded"),
            None,
            with_field.clone(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.accepted().len(), 4);
    // A wrong form-field signature is refused.
    let bad = String::from_utf8(with_field)
        .unwrap()
        .replace("sha256%3D", "sha256%3DAAAA");
    let a = d
        .post(
            "any",
            Some("application/x-www-form-urlencoded"),
            None,
            bad.into_bytes(),
        )
        .await;
    assert_eq!(a.status, 401, "{}", a.text);
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn refusals_answer_the_right_code_and_enqueue_nothing() {
    let d = Daemon::start(FILE_CONFIG);
    let good = sample("portal-group-update.json");
    let sig = sign(KEY, &good);
    let big = vec![b' '; 70 * 1024];
    let truncated = good[..good.len() / 2].to_vec();
    let cases: Vec<(&str, &str, Option<&str>, Option<String>, Vec<u8>, u16, &str)> = vec![
        (
            "unknown hook",
            "nope",
            Some("application/json"),
            Some(sig.clone()),
            good.clone(),
            404,
            "unknown_hook",
        ),
        (
            "missing signature",
            "portal",
            Some("application/json"),
            None,
            good.clone(),
            401,
            "auth_missing",
        ),
        (
            "wrong key",
            "portal",
            Some("application/json"),
            Some(sign("wrong", &good)),
            good.clone(),
            401,
            "signature_invalid",
        ),
        (
            "other algorithm",
            "portal",
            Some("application/json"),
            Some("sha1=abcdef".into()),
            good.clone(),
            401,
            "signature_invalid",
        ),
        (
            "truncated signature",
            "portal",
            Some("application/json"),
            Some(sig[..20].to_string()),
            good.clone(),
            401,
            "signature_invalid",
        ),
        (
            "signature of another body",
            "portal",
            Some("application/json"),
            Some(sign(KEY, b"{}")),
            good.clone(),
            401,
            "signature_invalid",
        ),
        (
            "truncated body",
            "portal",
            Some("application/json"),
            Some(sign(KEY, &truncated)),
            truncated.clone(),
            400,
            "bad_payload",
        ),
        (
            "invalid json",
            "portal",
            Some("application/json"),
            Some(sign(KEY, b"{not json")),
            b"{not json".to_vec(),
            400,
            "bad_payload",
        ),
        (
            "empty body",
            "portal",
            Some("application/json"),
            Some(sign(KEY, b"")),
            vec![],
            400,
            "bad_body",
        ),
        (
            "wrong kind",
            "portal",
            Some("application/json"),
            Some(sign(KEY, &sample("feature-created.json"))),
            sample("feature-created.json"),
            400,
            "bad_payload",
        ),
        (
            "unknown shape",
            "any",
            Some("application/json"),
            Some(sign(KEY, b"{\"hello\":1}")),
            b"{\"hello\":1}".to_vec(),
            400,
            "bad_payload",
        ),
        (
            "xml",
            "portal",
            Some("application/xml"),
            Some(sig.clone()),
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            "portal",
            None,
            Some(sig.clone()),
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "latin-1",
            "portal",
            Some("application/json; charset=iso-8859-1"),
            Some(sig.clone()),
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized",
            "portal",
            Some("application/json"),
            Some(sign(KEY, &big)),
            big.clone(),
            413,
            "too_large",
        ),
        (
            "form without payload",
            "features",
            Some("application/x-www-form-urlencoded"),
            Some(sign(KEY, b"a=1")),
            b"a=1".to_vec(),
            400,
            "bad_payload",
        ),
        (
            "two payload fields",
            "features",
            Some("application/x-www-form-urlencoded"),
            Some(sign(KEY, b"payload=%5B%5D&payload=%5B%5D")),
            b"payload=%5B%5D&payload=%5B%5D".to_vec(),
            400,
            "bad_payload",
        ),
        (
            "invalid utf-8",
            "portal",
            Some("application/json"),
            Some(sign(KEY, b"{\"info\":\"\xff\"}")),
            b"{\"info\":\"\xff\"}".to_vec(),
            400,
            "bad_payload",
        ),
    ];
    for (what, hook, ct, sig, body, code, label) in cases {
        let a = d.post(hook, ct, sig.as_deref(), body.clone()).await;
        assert_eq!(a.status, code, "{what}: {}", a.text);
        assert_eq!(a.json["error"], label, "{what}: {}", a.text);
        let message = a.json["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{what}: no message");
        assert!(!message.contains(KEY), "{what}: the answer echoes a secret");
        if body.len() > 40 {
            let snippet = String::from_utf8_lossy(&body[..40]).to_string();
            assert!(
                !a.text.contains(&snippet),
                "{what}: the answer echoes the body"
            );
        }
        assert_eq!(
            metric(&d, "hookbridge_events_accepted_total", &[]).await,
            0.0,
            "{what}: something was enqueued"
        );
    }
    // Nothing reached the sink; a good delivery afterwards does, alone.
    let a = d.post_signed("portal", &good).await;
    assert_eq!(a.status, 200);
    let lines = d.wait_lines("events.jsonl", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(d.jsonl("events.jsonl").len(), 1, "{lines:?}");
    assert_eq!(
        metric(
            &d,
            "hookbridge_requests_total",
            &["outcome=\"auth_missing\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&d, "hookbridge_requests_total", &["outcome=\"too_large\""]).await,
        1.0
    );
}

#[tokio::test]
async fn retried_deliveries_are_duplicates_and_other_events_are_not() {
    let d = Daemon::start(FILE_CONFIG);
    let first = sample("portal-item-share-multi.json");
    let a = d.post_signed("portal", &first).await;
    assert_eq!(a.accepted().len(), 2);

    // ArcGIS's retry: same events, another info.when.
    let mut retry: Value = serde_json::from_slice(&first).unwrap();
    retry["info"]["when"] = Value::from(1800000000000_i64);
    let retry = serde_json::to_vec(&retry).unwrap();
    let b = d.post_signed("portal", &retry).await;
    assert_eq!(b.status, 200);
    assert!(b.accepted().is_empty(), "{}", b.text);
    assert_eq!(b.json["duplicates"].as_array().unwrap().len(), 2);
    assert_eq!(b.headers.get("x-hookbridge-duplicate").unwrap(), "true");

    // One new event alongside an old one: only the new one is accepted.
    let mut mixed: Value = serde_json::from_slice(&first).unwrap();
    mixed["events"][1]["id"] = Value::from("another-item");
    let mixed = serde_json::to_vec(&mixed).unwrap();
    let c = d.post_signed("portal", &mixed).await;
    assert_eq!(c.accepted().len(), 1, "{}", c.text);
    assert_eq!(c.json["duplicates"].as_array().unwrap().len(), 1);
    assert!(c.headers.get("x-hookbridge-duplicate").is_none());

    let lines = d.wait_lines("events.jsonl", 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(d.jsonl("events.jsonl").len(), 3, "{lines:?}");
    assert_eq!(
        metric(&d, "hookbridge_events_duplicate_total", &[]).await,
        3.0
    );
}

#[tokio::test]
async fn crc_get_and_head() {
    let d = Daemon::start(FILE_CONFIG);
    // Organization webhooks are never sent a CRC challenge: a portal hook signs nothing.
    let a = d.get("/hooks/portal?crc_token=0123456789abcdef").await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json["error"], "crc_not_supported");
    assert!(a.json.get("response_token").is_none());
    // The features and auto hooks answer with their first key, the sample key.
    for hook in ["features", "any"] {
        let a = d
            .get(&format!("/hooks/{hook}?crc_token=0123456789abcdef"))
            .await;
        assert_eq!(
            a.json["response_token"], "sha256=8AWDIMQjFuwy9YK2YrBuYvkpmwAdgRTHhpEn08WCf4w=",
            "{hook}"
        );
        assert_eq!(
            a.json["response_token"],
            sign(KEY, b"0123456789abcdef"),
            "{hook}"
        );
    }
    // A token that could be a body is refused, signing nothing.
    let a = d.get("/hooks/features?crc_token=%7B%22a%22%3A1%7D").await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json["error"], "bad_crc_token");
    assert_eq!(d.get("/hooks/portal").await.status, 200);
    assert_eq!(d.get("/hooks/nope").await.status, 404);
    let a = d.get("/hooks/open?crc_token=x").await;
    assert_eq!(
        (a.status, a.json["error"].as_str()),
        (400, Some("no_secret"))
    );
    let client = reqwest::Client::new();
    let head = client
        .head(format!("{}/hooks/portal", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let head = client
        .head(format!("{}/hooks/nope", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert_eq!(d.get("/healthz").await.status, 200);
    let ready = d.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let m = d.get("/metrics").await.text;
    assert!(
        m.contains("hookbridge_commit_fsync_duration_seconds"),
        "{m}"
    );
}

#[tokio::test]
async fn a_key_from_a_rotation_list_verifies() {
    let d = Daemon::start(FILE_CONFIG);
    let body = sample("portal-user-role.json");
    let a = d
        .post(
            "portal",
            Some("application/json"),
            Some(&sign("rotated-out-key", &body)),
            body.clone(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    // Percent-encoded header value, as some senders do.
    let body = sample("portal-group-update.json");
    let sig: String = form_urlencoded::byte_serialize(sign(KEY, &body).as_bytes()).collect();
    let a = d
        .post("portal", Some("application/json"), Some(&sig), body)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
}
