//! Every ArcGIS dialect through the real daemon: each delivery captured from a real site
//! (tests/real/), each shape in each body encoding it arrives in, each way a sender
//! authenticates, and the Survey123 token that must never be stored.
#![allow(clippy::type_complexity)]

mod common;

use common::{Answer, Daemon, KEY, sign};
use serde_json::Value;

const ADMIN: &str = "dialects-admin-token-0123456789";
const URL_SECRET: &str = "Url-Secret_0123456789";
const SURVEY_TOKEN: &str = "<REDACTED-by-us: 225-char ArcGIS token in original>";

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
admin_token = "dialects-admin-token-0123456789"

[storage]
path = "{dir}/data"

[hooks.portal]
kind = "portal"
secrets = ["example-signature-key"]

[hooks.features]
kind = "feature-service"
secrets = ["example-signature-key"]

[hooks.gp]
kind = "geoprocessing"
secrets = ["example-signature-key"]

[hooks.survey]
kind = "survey123"
secrets = ["Url-Secret_0123456789"]
redact = ["userInfo.email", "applyEdits.adds.attributes.what_industry_do_you_work_in"]

[hooks.any]
kind = "auto"
secrets = ["example-signature-key", "Url-Secret_0123456789"]

[sinks.log]
type = "file"
path = "{dir}/events.jsonl"

[sinks.raw]
type = "file"
path = "{dir}/raw.jsonl"
payload = "raw"

[[routes]]
match = {}
to = ["log", "raw"]
"#;

/// A capture from tests/real.
fn real(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/real")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `(events, bodies)` stored in the queue, from the admin API.
async fn stored(d: &Daemon) -> (u64, u64) {
    let client = reqwest::Client::new();
    let v: Value = client
        .get(format!("{}/admin/queue", d.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("admin request")
        .json()
        .await
        .expect("admin json");
    (
        v["events"].as_u64().unwrap_or(u64::MAX),
        v["bodies"].as_u64().unwrap_or(u64::MAX),
    )
}

/// The form body `payload=<json as it is>` (layout 1) with the signature of that raw value as a
/// form field, the way Esri's own receiver verifies it.
fn form_raw_signed(json: &[u8], key: &str) -> Vec<u8> {
    let mut body = b"payload=".to_vec();
    body.extend_from_slice(json);
    let sig: String = form_urlencoded::byte_serialize(sign(key, json).as_bytes()).collect();
    body.extend_from_slice(format!("&x-esriHook-Signature={sig}").as_bytes());
    body
}

/// The form body with the JSON percent-encoded as a whole (layout 2).
fn form_encoded(json: &[u8]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(json).expect("utf-8"))
        .finish()
        .into_bytes()
}

/// A feature-service array with each `changesUrl` percent-encoded inside the JSON, as ArcGIS
/// Online sends it in a raw form value (no `&` may occur in the value).
fn encode_changes_urls(json: &[u8]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(json).expect("json");
    for layer in v.as_array_mut().into_iter().flatten() {
        if let Some(url) = layer["changesUrl"].as_str() {
            let encoded: String = form_urlencoded::byte_serialize(url.as_bytes()).collect();
            layer["changesUrl"] = Value::from(encoded);
        }
    }
    serde_json::to_vec(&v).expect("json")
}

const JSON: Option<&str> = Some("application/json");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

/// Posts and expects a 200 with `n` accepted events.
fn expect_accepted(a: &Answer, n: usize, what: &str) {
    assert_eq!(a.status, 200, "{what}: {}", a.text);
    assert_eq!(a.accepted().len(), n, "{what}: {}", a.text);
}

#[tokio::test]
async fn every_real_delivery_is_accepted_and_parsed() {
    let d = Daemon::start(CONFIG);

    // ArcGIS Online feature service, JSON, changesUrl percent-encoded inside the JSON.
    let agol = real("aws-lambda-demo_agol-fs_json_FeaturesCreated_percent-encoded-changesUrl.json");
    let a = d
        .post("features", JSON, Some(&sign(KEY, &agol)), agol.clone())
        .await;
    expect_accepted(&a, 1, "AGOL JSON");

    // ArcGIS Online feature service, form body, both layouts, signed as Esri's sample verifies.
    let devday = real("esrinederland-devday2020_agol-fs_form-urlencoded_FeaturesCreated.json");
    let raw_layout = encode_changes_urls(&devday);
    let a = d
        .post("features", FORM, None, form_raw_signed(&raw_layout, KEY))
        .await;
    expect_accepted(&a, 2, "AGOL form, raw JSON value, signature field");
    let encoded = form_encoded(devday.trim_ascii());
    let a = d
        .post(
            "features",
            FORM,
            Some(&sign(KEY, &encoded)),
            encoded.clone(),
        )
        .await;
    assert_eq!(a.status, 200, "AGOL form, encoded JSON: {}", a.text);
    assert_eq!(
        a.json["duplicates"].as_array().map(Vec::len),
        Some(2),
        "the same delivery in the other layout is the same events: {}",
        a.text
    );

    // ArcGIS Enterprise 11.x feature service: one object, events [{eventType, when}].
    let enterprise = real("esri-webhooks-samples_enterprise-fs-FeaturesCreated.json");
    let a = d
        .post("features", JSON, Some(&sign(KEY, &enterprise)), enterprise)
        .await;
    expect_accepted(&a, 1, "Enterprise feature service");

    // ArcGIS Enterprise portal (organization) webhook, authenticated by its `secret` header.
    let portal = real("jpeterson-techtrek2019_portal_item-add.json");
    let a = d
        .post_with("/hooks/portal", JSON, &[("secret", KEY)], portal)
        .await;
    expect_accepted(&a, 1, "portal with the secret header");

    // Survey123, authenticated by the secret in its payload URL.
    let survey = real("esridevevents_survey123-webhook_addData.json");
    let a = d
        .post_with(
            &format!("/hooks/survey?secret={URL_SECRET}"),
            JSON,
            &[],
            survey,
        )
        .await;
    expect_accepted(&a, 1, "Survey123");

    // An organization webhook's *configuration* is not a delivery: a clear 400 naming the shapes.
    let config = real("esrinederland-devday2022_portal-webhook-config_notebookserver.json");
    let a = d.post("any", JSON, Some(&sign(KEY, &config)), config).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("Survey123 record"), "{}", a.text);

    let lines = d.wait_lines("events.jsonl", 6).await;
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let by = |hook: &str, op: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["hook"] == hook && l["operation"] == op)
            .unwrap_or_else(|| panic!("no {hook} {op} event in {lines:#?}"))
    };

    let e = lines
        .iter()
        .find(|l| l["webhook"] == "aws_lambda")
        .expect("AGOL JSON event");
    assert_eq!(e["kind"], "feature-service");
    assert_eq!(e["source"], "featureService");
    assert_eq!(e["operation"], "FeaturesCreated");
    assert_eq!(e["id"], "Pest_Inspections/0");
    assert_eq!(e["when"], 1620712326267_i64);
    assert_eq!(e["properties"]["orgId"], "hMYNkrKaydBeWRXE");
    assert_eq!(
        e["properties"]["changesUrl"],
        "https://services.arcgis.com/hMYNkrKaydBeWRXE/ArcGIS/rest/services/Pest_Inspections/FeatureServer/extractChanges?serverGens=[1404636,1404640]&async=true&returnUpdates=false&returnDeletes=false&returnAttachments=false"
    );

    let ops: Vec<&Value> = lines
        .iter()
        .filter(|l| l["webhook"] == "EGT20_SSS_InputWebhook")
        .map(|l| &l["operation"])
        .collect();
    assert_eq!(ops, vec!["FeaturesCreated", "AttachmentsCreated"]);
    let e = by("features", "AttachmentsCreated");
    assert_eq!(e["id"], "SelfServiceStoryMapping2020_Input/0");
    assert!(
        e["properties"]["changesUrl"]
            .as_str()
            .unwrap_or_default()
            .ends_with(
                "serverGens=[46245100,46245124]&async=true&returnUpdates=false&returnDeletes=false"
            ),
        "{e}"
    );

    let e = lines
        .iter()
        .find(|l| l["webhook"] == "Webhook Name")
        .expect("Enterprise event");
    assert_eq!(e["kind"], "feature-service");
    assert_eq!(e["operation"], "FeaturesCreated");
    assert_eq!(e["id"], "ServiceName");
    assert_eq!(e["when"], 1730385704000_i64);
    assert_eq!(
        e["properties"]["webhookId"],
        "c4a7db24-0c5e-4a00-9103-0c7d2fdc03b4"
    );
    assert_eq!(e["properties"]["serviceType"], "FeatureServer");

    let e = by("portal", "add");
    assert_eq!(e["kind"], "portal");
    assert_eq!(e["source"], "item");
    assert_eq!(e["id"], "300972091a98495095735772e2b249b3");
    assert_eq!(e["user"], "portaladmin");
    assert_eq!(e["webhook"], "test");
    assert_eq!(e["when"], 1550621192060_i64);
    assert_eq!(e["portal"], "https://my-portal/");

    let e = by("survey", "addData");
    assert_eq!(e["kind"], "survey123");
    assert_eq!(e["source"], "survey");
    assert_eq!(e["id"], "{B3863DFC-3E46-4A7B-8366-7B7D0BA85C0D}");
    assert_eq!(e["webhook"], "Welcome Survey");
    assert_eq!(e["user"], "atate_cityx");
    assert_eq!(e["portal"], "https://www.arcgis.com");
    assert_eq!(
        e["properties"]["attributes"]["what_industry_do_you_work_in"],
        "Technology"
    );
    assert_eq!(e["properties"]["layerInfo"]["globalIdField"], "globalid");
    assert_eq!(
        e["properties"]["surveyInfo"]["formItemId"],
        "9300861aa41049b9bf28897ba2f48796"
    );
    assert!(e["properties"].get("userInfo").is_none());
}

/// One case of the shape × encoding × auth matrix.
struct Case {
    what: &'static str,
    path: String,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Case {
    async fn post(&self, d: &Daemon) -> Answer {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        d.post_with(&self.path, self.content_type, &headers, self.body.clone())
            .await
    }
}

/// Each shape in each encoding it can arrive in, authenticated each way its hook accepts:
/// `(what, hook, content type, body, the text the signature covers)`.
fn deliveries() -> Vec<(
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    Vec<u8>,
)> {
    let agol = real("aws-lambda-demo_agol-fs_json_FeaturesCreated_percent-encoded-changesUrl.json");
    let devday = real("esrinederland-devday2020_agol-fs_form-urlencoded_FeaturesCreated.json");
    let devday = encode_changes_urls(&devday);
    let legacy = br#"{"layerId":0,"serviceName":"Hydrants","changeType":"FeaturesUpdated","orgId":"o1","changesUrl":"https%3a%2f%2fservices.arcgis.com%2fo1%2fArcGIS%2frest%2fservices%2fHydrants%2fFeatureServer%2fextractChanges%3fserverGens%3d%5b5%2c9%5d"}"#.to_vec();
    let enterprise = real("esri-webhooks-samples_enterprise-fs-FeaturesCreated.json");
    let gp = br#"{"serviceType":"GPServer","jobId":"jd9a1","statusURL":"https://gis.example.org/server/rest/services/Tools/Buffer/GPServer/Buffer/jobs/jd9a1","name":"gp-hook","taskName":"Buffer","folderName":"Tools","serviceName":"Buffer","events":[{"eventType":"esriJobSucceeded","when":1730385704000}]}"#.to_vec();
    let gp_old =
        br#"{"jobId":"j-old","jobStatus":"esriJobFailed","serviceName":"Buffer"}"#.to_vec();
    let portal = real("jpeterson-techtrek2019_portal_item-add.json");
    let raw_form = |json: &[u8]| {
        let mut b = b"payload=".to_vec();
        b.extend_from_slice(json);
        b
    };
    vec![
        (
            "AGOL array, JSON",
            "features",
            JSON,
            agol.clone(),
            agol.clone(),
        ),
        (
            "AGOL array, raw form",
            "features",
            FORM,
            raw_form(&devday),
            devday.clone(),
        ),
        (
            "AGOL array, encoded form",
            "features",
            FORM,
            form_encoded(&devday),
            form_encoded(&devday),
        ),
        (
            "legacy changeType, JSON",
            "features",
            JSON,
            legacy.clone(),
            legacy.clone(),
        ),
        (
            "legacy changeType, raw form",
            "features",
            FORM,
            raw_form(&legacy),
            legacy.clone(),
        ),
        (
            "Enterprise feature service, JSON",
            "features",
            JSON,
            enterprise.clone(),
            enterprise.clone(),
        ),
        (
            "Enterprise feature service, encoded form",
            "features",
            FORM,
            form_encoded(&enterprise),
            form_encoded(&enterprise),
        ),
        ("geoprocessing, JSON", "gp", JSON, gp.clone(), gp.clone()),
        (
            "geoprocessing, raw form",
            "gp",
            FORM,
            raw_form(&gp),
            gp.clone(),
        ),
        (
            "older geoprocessing, JSON",
            "gp",
            JSON,
            gp_old.clone(),
            gp_old.clone(),
        ),
        (
            "portal, JSON",
            "portal",
            JSON,
            portal.clone(),
            portal.clone(),
        ),
        (
            "auto: Enterprise feature service",
            "any",
            JSON,
            enterprise.clone(),
            enterprise,
        ),
        ("auto: geoprocessing", "any", JSON, gp.clone(), gp),
    ]
}

#[tokio::test]
async fn each_shape_each_encoding_each_auth_way() {
    let d = Daemon::start(CONFIG);
    let mut accepted_events = 0;
    for (what, hook, ct, body, signed) in deliveries() {
        let path = format!("/hooks/{hook}");
        let mut good: Vec<Case> = vec![Case {
            what: "signature header",
            path: path.clone(),
            content_type: ct,
            headers: vec![("x-esriHook-Signature", sign(KEY, &signed))],
            body: body.clone(),
        }];
        if ct == FORM {
            let mut with_field = body.clone();
            let sig: String =
                form_urlencoded::byte_serialize(sign(KEY, &signed).as_bytes()).collect();
            with_field.extend_from_slice(format!("&x-esriHook-Signature={sig}").as_bytes());
            good.push(Case {
                what: "signature form field",
                path: path.clone(),
                content_type: ct,
                headers: vec![],
                body: with_field,
            });
        }
        if hook == "portal" || hook == "any" {
            good.push(Case {
                what: "secret header",
                path: path.clone(),
                content_type: ct,
                headers: vec![("secret", KEY.to_string())],
                body: body.clone(),
            });
        }
        if hook == "any" {
            good.push(Case {
                what: "URL secret",
                path: format!("{path}?secret={URL_SECRET}"),
                content_type: ct,
                headers: vec![],
                body: body.clone(),
            });
        }
        let bad: Vec<Case> = vec![
            Case {
                what: "no credential",
                path: path.clone(),
                content_type: ct,
                headers: vec![],
                body: body.clone(),
            },
            Case {
                what: "signature with a wrong key",
                path: path.clone(),
                content_type: ct,
                headers: vec![("x-esriHook-Signature", sign("wrong-key", &signed))],
                body: body.clone(),
            },
            Case {
                what: "wrong secret header",
                path: path.clone(),
                content_type: ct,
                headers: vec![("secret", "wrong-secret".into())],
                body: body.clone(),
            },
            Case {
                what: "wrong URL secret",
                path: format!("{path}?secret=wrong-secret"),
                content_type: ct,
                headers: vec![],
                body: body.clone(),
            },
        ];
        for case in &bad {
            let a = case.post(&d).await;
            assert_eq!(a.status, 401, "{what} / {}: {}", case.what, a.text);
            assert!(
                a.json["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("accepts") || m.contains("match")),
                "{what} / {}: {}",
                case.what,
                a.text
            );
            assert!(
                !a.text.contains("wrong-secret"),
                "the answer echoes a secret"
            );
            assert_eq!(
                stored(&d).await.0,
                accepted_events,
                "{what} / {}: something was stored",
                case.what
            );
        }
        for (i, case) in good.iter().enumerate() {
            let a = case.post(&d).await;
            assert_eq!(a.status, 200, "{what} / {}: {}", case.what, a.text);
            if i == 0 {
                // The same delivery in another encoding is the same events: duplicates then.
                let known = a.json["duplicates"].as_array().map_or(0, Vec::len);
                assert!(a.accepted().len() + known > 0, "{what}: {}", a.text);
                accepted_events += a.accepted().len() as u64;
            } else {
                assert!(
                    a.accepted().is_empty(),
                    "{what} / {}: a retry is a duplicate: {}",
                    case.what,
                    a.text
                );
            }
        }
    }
    assert_eq!(stored(&d).await.0, accepted_events);
    let lines = d.wait_lines("events.jsonl", accepted_events as usize).await;
    let ops: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap_or_default().to_string(),
                l["operation"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for expected in [
        ("Hydrants/0", "FeaturesUpdated"),
        ("jd9a1", "esriJobSucceeded"),
        ("j-old", "esriJobFailed"),
        ("ServiceName", "FeaturesCreated"),
    ] {
        assert!(
            ops.iter().any(|(i, o)| i == expected.0 && o == expected.1),
            "{expected:?} not in {ops:?}"
        );
    }
}

#[tokio::test]
async fn the_survey123_token_is_never_stored_sent_or_logged() {
    let mut d = Daemon::start(CONFIG);
    let body = real("esridevevents_survey123-webhook_addData.json");
    let path = format!("/hooks/survey?secret={URL_SECRET}");
    let a = d.post_with(&path, JSON, &[], body.clone()).await;
    expect_accepted(&a, 1, "first delivery");
    // ArcGIS's retry of the same delivery is a duplicate.
    let a = d.post_with(&path, JSON, &[], body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.headers
            .get("x-hookbridge-duplicate")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    // A second edit of the same record is a new event.
    let mut edit: Value = serde_json::from_slice(&body).expect("json");
    edit["eventType"] = Value::from("editData");
    edit["feature"]["attributes"]["what_industry_do_you_work_in"] = Value::from("Government");
    let edit1 = serde_json::to_vec(&edit).expect("json");
    expect_accepted(&d.post_with(&path, JSON, &[], edit1).await, 1, "first edit");
    edit["feature"]["attributes"]["what_industry_do_you_work_in"] = Value::from("Education");
    let edit2 = serde_json::to_vec(&edit).expect("json");
    expect_accepted(
        &d.post_with(&path, JSON, &[], edit2).await,
        1,
        "second edit",
    );

    let raw = d.wait_lines("raw.jsonl", 3).await;
    let events = d.wait_lines("events.jsonl", 3).await;
    assert_eq!((raw.len(), events.len()), (3, 3));
    for line in &raw {
        assert!(line["portalInfo"].get("token").is_none(), "{line}");
        assert_eq!(line["portalInfo"]["url"], "https://www.arcgis.com");
        assert!(line["userInfo"].get("email").is_none(), "redacted: {line}");
        assert_eq!(line["userInfo"]["username"], "atate_cityx");
        assert!(
            line["applyEdits"][0]["adds"][0]["attributes"]
                .get("what_industry_do_you_work_in")
                .is_none(),
            "redacted: {line}"
        );
    }
    let status = d.cli(&["--version"]);
    assert!(status.status.success());
    d.stop();
    for (what, bytes) in [
        ("data directory", d.bytes_under("data")),
        (
            "sink output",
            [d.bytes_under("events.jsonl"), d.bytes_under("raw.jsonl")].concat(),
        ),
        ("log", d.log_text().into_bytes()),
    ] {
        for secret in [SURVEY_TOKEN, "atate@esri.com", URL_SECRET] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} found in the {what}"
            );
        }
    }
}

#[tokio::test]
async fn hostile_deliveries_are_refused_and_store_nothing() {
    let d = Daemon::start(CONFIG);
    let survey = real("esridevevents_survey123-webhook_addData.json");
    let enterprise = real("esri-webhooks-samples_enterprise-fs-FeaturesCreated.json");
    let portal = real("jpeterson-techtrek2019_portal_item-add.json");
    let devday = real("esrinederland-devday2020_agol-fs_form-urlencoded_FeaturesCreated.json");
    let mut no_feature: Value = serde_json::from_slice(&survey).expect("json");
    if let Some(o) = no_feature.as_object_mut() {
        o.remove("feature");
    }
    let no_feature = serde_json::to_vec(&no_feature).expect("json");
    let mut no_events: Value = serde_json::from_slice(&enterprise).expect("json");
    no_events["events"] = Value::Array(vec![]);
    let no_events = serde_json::to_vec(&no_events).expect("json");
    let mut two_payloads = form_encoded(devday.trim_ascii());
    two_payloads.extend_from_slice(b"&");
    two_payloads.extend_from_slice(&form_encoded(devday.trim_ascii()));
    let url = |s: &str| format!("/hooks/survey?secret={s}");
    let encoded_secret: String = URL_SECRET.bytes().map(|b| format!("%{b:02X}")).collect();
    let cases: Vec<(
        &str,
        String,
        Option<&str>,
        Vec<(&str, String)>,
        Vec<u8>,
        u16,
    )> = vec![
        (
            "a form body with two payload fields",
            "/hooks/features".into(),
            FORM,
            vec![("x-esriHook-Signature", sign(KEY, &two_payloads))],
            two_payloads.clone(),
            400,
        ),
        (
            // HTTP does not count whitespace around a field value as part of it (the parser drops
            // it), so the hostile variant is a secret with whitespace and more around it.
            "a secret header with surrounding spaces",
            "/hooks/portal".into(),
            JSON,
            vec![("secret", format!(" {KEY} x "))],
            portal.clone(),
            401,
        ),
        (
            "two secret headers",
            "/hooks/portal".into(),
            JSON,
            vec![("secret", KEY.into()), ("secret", KEY.into())],
            portal.clone(),
            401,
        ),
        (
            "a URL secret percent-encoded",
            url(&encoded_secret),
            JSON,
            vec![],
            survey.clone(),
            401,
        ),
        (
            "two URL secrets",
            format!("{}&secret={URL_SECRET}", url(URL_SECRET)),
            JSON,
            vec![],
            survey.clone(),
            401,
        ),
        (
            "a Survey123 body without feature",
            url(URL_SECRET),
            JSON,
            vec![],
            no_feature,
            400,
        ),
        (
            "an Enterprise object with events: []",
            "/hooks/features".into(),
            JSON,
            vec![("x-esriHook-Signature", sign(KEY, &no_events))],
            no_events,
            400,
        ),
        (
            "a Survey123 body on a portal hook",
            "/hooks/portal".into(),
            JSON,
            vec![("secret", KEY.into())],
            survey.clone(),
            400,
        ),
    ];
    for (what, path, ct, headers, body, code) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = d.post_with(&path, ct, &headers, body).await;
        assert_eq!(a.status, code, "{what}: {}", a.text);
        let message = a.json["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{what}: {}", a.text);
        for secret in [KEY, URL_SECRET, SURVEY_TOKEN] {
            assert!(
                !a.text.contains(secret),
                "{what}: the answer echoes a secret"
            );
        }
        assert_eq!(stored(&d).await, (0, 0), "{what}: something was stored");
    }
    assert!(
        !d.log_text().contains(URL_SECRET),
        "the URL secret reached the log"
    );
}
