//! The CRC challenge is no signing oracle: every real capture and sample, raw and form-encoded,
//! sent as `crc_token`, is refused with 400, and nothing answered signs it as a delivery.

use std::path::Path;

use super::common::{Daemon, KEY, sign};

/// Every delivery body the project holds: the real captures and the samples.
fn bodies() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut out = Vec::new();
    for dir in ["real", "samples"] {
        let mut names: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                (name.ends_with(".json") || name.ends_with(".form") || name.ends_with(".txt"))
                    && !name.ends_with(".src.txt")
            })
            .collect();
        names.sort();
        for p in names {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(out.len() >= 15, "expected the real captures and samples");
    out
}

/// The body as it is, as a form with the payload as on the wire, and percent-encoded whole.
fn encodings(body: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(body).trim().to_string();
    let encoded: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
    vec![
        body.to_vec(),
        text.clone().into_bytes(),
        format!("payload={text}").into_bytes(),
        format!("payload={encoded}").into_bytes(),
        encoded.into_bytes(),
    ]
}

#[tokio::test]
async fn no_delivery_body_gets_a_crc_answer() {
    let d = Daemon::start(super::CONFIG);
    let client = reqwest::Client::new();
    let mut tried = 0;
    for (name, body) in bodies() {
        for candidate in encodings(&body) {
            let token: String = form_urlencoded::byte_serialize(&candidate).collect();
            for hook in ["features", "any", "portal"] {
                let a = d.get(&format!("/hooks/{hook}?crc_token={token}")).await;
                tried += 1;
                assert_eq!(a.status, 400, "{name} on {hook}: {}", a.text);
                assert!(a.json.get("response_token").is_none(), "{name}: {}", a.text);
                // Were anything answered, it must not be accepted as that body's signature.
                if let Some(signed) = a.json["response_token"].as_str() {
                    let r = client
                        .post(format!("{}/hooks/{hook}", d.url))
                        .header("Content-Type", "application/json")
                        .header("x-esriHook-Signature", signed)
                        .body(candidate.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_ne!(r.status().as_u16(), 200, "{name}: the CRC answer signed it");
                }
            }
        }
    }
    // A token of the documented kind is still answered, with the check value of docs/arcgis.md.
    let a = d.get("/hooks/any?crc_token=abc123").await;
    assert_eq!(a.json["response_token"], sign(KEY, b"abc123"));
    let metrics = d.get("/metrics").await.text;
    assert!(
        !metrics.contains("hookbridge_events_accepted_total{"),
        "something was stored:\n{metrics}"
    );
    let written = std::fs::read(d.path("events.jsonl")).unwrap_or_default();
    assert!(written.is_empty(), "a delivery reached the sink");
    eprintln!("CRC oracle: {tried} candidate bodies refused as crc_token");
}
