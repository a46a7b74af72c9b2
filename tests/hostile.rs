//! Hostile input: every case gets its expected answer, nothing is enqueued, and the daemon
//! answers the next good delivery at once.

mod common;
#[path = "hostile/limits.rs"]
mod limits;
#[path = "hostile/oracle.rs"]
mod oracle;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, KEY, sample, sign};
use serde_json::Value;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
max_body = "256KiB"
read_timeout = "1s"
[storage]
path = "{dir}/data"
[hooks.portal]
kind = "portal"
secrets = ["example-signature-key"]
[hooks.features]
kind = "feature-service"
secrets = ["features-only-key"]
[hooks.any]
kind = "auto"
secrets = ["example-signature-key"]
[sinks.log]
type = "file"
path = "{dir}/events.jsonl"
[[routes]]
match = {}
to = ["log"]
"#;

/// One request as raw bytes on a fresh connection; returns the status code (0 if none came).
fn raw(addr: &str, request: &[u8]) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(request).is_err() {
        return 0;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn post_raw(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}").into_bytes();
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn signed_json(path: &str, body: &[u8]) -> Vec<u8> {
    post_raw(
        path,
        &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\nx-esriHook-Signature: {}\r\n",
            body.len(),
            sign(KEY, body)
        ),
        body,
    )
}

struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    signature: Option<String>,
    hook: &'static str,
    body: Vec<u8>,
    status: u16,
}

fn case(
    name: &'static str,
    hook: &'static str,
    ct: Option<&'static str>,
    sig: Option<String>,
    body: Vec<u8>,
    status: u16,
) -> Case {
    Case {
        name,
        content_type: ct,
        signature: sig,
        hook,
        body,
        status,
    }
}

fn unique(n: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sample("portal-group-update.json")).unwrap();
    v["events"][0]["id"] = Value::from(format!("good-{n}"));
    serde_json::to_vec(&v).unwrap()
}

const JSON: Option<&str> = Some("application/json");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

fn cases() -> Vec<Case> {
    let good = sample("portal-group-update.json");
    let s = |b: &[u8]| Some(sign(KEY, b));
    let sig = sign(KEY, &good);
    let b64 = sig.trim_start_matches("sha256=").to_string();
    let truncated = good[..good.len() - 10].to_vec();
    let deep = "[".repeat(100_000).into_bytes();
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes();
    let huge_array = format!("[{}1]", "1,".repeat(30_000)).into_bytes();
    let wide_events = format!(
        "{{\"info\":{{}},\"events\":[{}{{}}]}}",
        "{\"operation\":\"x\",\"source\":\"item\",\"id\":1},".repeat(10)
    )
    .into_bytes();
    let mut invalid_utf8 = good.clone();
    invalid_utf8[20] = 0xff;
    let out_of_range =
        br#"{"info":{},"events":[{"operation":"add","source":"item","id":"i","when":1e400}]}"#
            .to_vec();
    let nested_events = br#"{"info":{},"events":{"operation":"add"}}"#.to_vec();
    let events_null = br#"{"info":{},"events":null}"#.to_vec();
    let op_number = br#"{"info":{},"events":[{"operation":7,"source":"item","id":"i"}]}"#.to_vec();
    let big = vec![b'{'; 300 * 1024];
    let form_two = b"payload=%5B%5D&payload=%5B%5D".to_vec();
    let form_not_json = b"payload=hello".to_vec();
    let form_empty = b"payload=".to_vec();
    let feature_bad = br#"[{"serviceName":"S","events":"FeaturesCreated"}]"#.to_vec();
    let feature_no_service = br#"[{"layerId":0,"events":["FeaturesCreated"]}]"#.to_vec();
    vec![
        case("signature missing", "portal", JSON, None, good.clone(), 401),
        case(
            "signature empty",
            "portal",
            JSON,
            Some(String::new()),
            good.clone(),
            401,
        ),
        case(
            "signature prefix only",
            "portal",
            JSON,
            Some("sha256=".into()),
            good.clone(),
            401,
        ),
        case(
            "signature wrong key",
            "portal",
            JSON,
            Some(sign("nope", &good)),
            good.clone(),
            401,
        ),
        case(
            "signature of another hook's key",
            "portal",
            JSON,
            Some(sign("features-only-key", &good)),
            good.clone(),
            401,
        ),
        case(
            "signature truncated",
            "portal",
            JSON,
            Some(sig[..sig.len() - 6].to_string()),
            good.clone(),
            401,
        ),
        case(
            "signature sha1",
            "portal",
            JSON,
            Some(format!("sha1={b64}")),
            good.clone(),
            401,
        ),
        case(
            "signature sha512",
            "portal",
            JSON,
            Some(format!("sha512={b64}")),
            good.clone(),
            401,
        ),
        case(
            "signature not base64",
            "portal",
            JSON,
            Some("sha256=%%%%".into()),
            good.clone(),
            401,
        ),
        case(
            "signature over another body",
            "portal",
            JSON,
            s(b"{}"),
            good.clone(),
            401,
        ),
        case(
            "signature doubled",
            "portal",
            JSON,
            Some(format!("{sig}{b64}")),
            good.clone(),
            401,
        ),
        case(
            "signature bit flipped",
            "portal",
            JSON,
            Some(sig.replacen('e', "f", 1)),
            good.clone(),
            401,
        ),
        case("body empty", "portal", JSON, s(b""), vec![], 400),
        case(
            "body truncated",
            "portal",
            JSON,
            s(&truncated),
            truncated.clone(),
            400,
        ),
        case(
            "body invalid utf-8",
            "portal",
            JSON,
            s(&invalid_utf8),
            invalid_utf8.clone(),
            400,
        ),
        case(
            "json nested 100000 deep",
            "any",
            JSON,
            s(&deep),
            deep.clone(),
            400,
        ),
        case(
            "object nested 5000 deep",
            "any",
            JSON,
            s(&deep_obj),
            deep_obj.clone(),
            400,
        ),
        case(
            "huge array",
            "portal",
            JSON,
            s(&huge_array),
            huge_array.clone(),
            400,
        ),
        case(
            "events without info fields but wrong item",
            "portal",
            JSON,
            s(&wide_events),
            wide_events.clone(),
            400,
        ),
        case(
            "number out of range",
            "portal",
            JSON,
            s(&out_of_range),
            out_of_range.clone(),
            400,
        ),
        case(
            "events is an object",
            "portal",
            JSON,
            s(&nested_events),
            nested_events.clone(),
            400,
        ),
        case(
            "events is null",
            "portal",
            JSON,
            s(&events_null),
            events_null.clone(),
            400,
        ),
        case(
            "operation is a number",
            "portal",
            JSON,
            s(&op_number),
            op_number.clone(),
            400,
        ),
        case(
            "feature events not a list",
            "any",
            JSON,
            s(&feature_bad),
            feature_bad.clone(),
            400,
        ),
        case(
            "feature without serviceName",
            "any",
            JSON,
            s(&feature_no_service),
            feature_no_service.clone(),
            400,
        ),
        case(
            "wrong kind for the hook",
            "portal",
            JSON,
            s(&sample("feature-multi.json")),
            sample("feature-multi.json"),
            400,
        ),
        case(
            "unknown shape",
            "any",
            JSON,
            s(b"{\"x\":1}"),
            b"{\"x\":1}".to_vec(),
            400,
        ),
        case(
            "a bare string",
            "any",
            JSON,
            s(b"\"hello\""),
            b"\"hello\"".to_vec(),
            400,
        ),
        case(
            "over the size limit",
            "portal",
            JSON,
            s(&big),
            big.clone(),
            413,
        ),
        case(
            "text/plain",
            "portal",
            Some("text/plain"),
            Some(sig.clone()),
            good.clone(),
            415,
        ),
        case(
            "application/xml",
            "portal",
            Some("application/xml"),
            Some(sig.clone()),
            good.clone(),
            415,
        ),
        case(
            "multipart",
            "portal",
            Some("multipart/form-data; boundary=x"),
            Some(sig.clone()),
            good.clone(),
            415,
        ),
        case(
            "no content type",
            "portal",
            None,
            Some(sig.clone()),
            good.clone(),
            415,
        ),
        case(
            "charset latin-1",
            "portal",
            Some("application/json; charset=iso-8859-1"),
            Some(sig.clone()),
            good.clone(),
            415,
        ),
        case(
            "charset utf-16",
            "portal",
            Some("application/json; charset=utf-16"),
            Some(sig.clone()),
            good.clone(),
            415,
        ),
        case(
            "form with two payload fields",
            "any",
            FORM,
            s(&form_two),
            form_two.clone(),
            400,
        ),
        case(
            "form payload not json",
            "any",
            FORM,
            s(&form_not_json),
            form_not_json.clone(),
            400,
        ),
        case(
            "form payload empty",
            "any",
            FORM,
            s(&form_empty),
            form_empty.clone(),
            400,
        ),
        case(
            "form without payload",
            "any",
            FORM,
            s(b"x=1"),
            b"x=1".to_vec(),
            400,
        ),
        case(
            "unknown hook",
            "nope",
            JSON,
            Some(sig.clone()),
            good.clone(),
            404,
        ),
        case(
            "very long hook name",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            JSON,
            Some(sig.clone()),
            good.clone(),
            404,
        ),
    ]
}

async fn accepted(d: &Daemon) -> f64 {
    let text = d.get("/metrics").await.text;
    text.lines()
        .filter(|l| l.starts_with("hookbridge_events_accepted_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A good delivery right after a hostile one is accepted, and fast.
async fn still_fast(d: &Daemon, n: u64, after: &str) {
    let started = Instant::now();
    let a = d.post_signed("portal", &unique(n)).await;
    assert_eq!(a.status, 200, "good delivery after {after}: {}", a.text);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "slow after {after}: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn hostile_corpus() {
    let d = Daemon::start(CONFIG);
    let addr = d.url.trim_start_matches("http://").to_string();
    let mut good = 0u64;
    let cases = cases();
    let count = cases.len();
    for c in cases {
        let a = d
            .post(c.hook, c.content_type, c.signature.as_deref(), c.body)
            .await;
        assert_eq!(a.status, c.status, "{}: {}", c.name, a.text);
        assert!(
            a.json["error"].is_string() && a.json["message"].is_string(),
            "{}: {}",
            c.name,
            a.text
        );
        assert!(!a.text.contains(KEY), "{}: the answer echoes a key", c.name);
        assert_eq!(
            accepted(&d).await,
            good as f64,
            "{}: something was enqueued",
            c.name
        );
        still_fast(&d, good, c.name).await;
        good += 1;
    }

    // Cases that need a raw connection.
    let body = unique(1_000_000);
    let raw_cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("dot-dot hook", signed_json("/hooks/..", &body), &[404]),
        (
            "percent-encoded dot-dot",
            signed_json("/hooks/%2e%2e", &body),
            &[404],
        ),
        (
            "percent-encoded slash",
            signed_json("/hooks/portal%2Fx", &body),
            &[404],
        ),
        (
            "hook name of 10 000 bytes",
            signed_json(&format!("/hooks/{}", "a".repeat(10_000)), &body),
            &[404, 414, 431, 400],
        ),
        (
            "non-ASCII hook name",
            signed_json("/hooks/%C3%A9t%C3%A9", &body),
            &[404],
        ),
        (
            "content-length shorter than the body",
            {
                let mut r = signed_json("/hooks/portal", &body);
                let cl = format!("Content-Length: {}", body.len());
                let short = format!("Content-Length: {}", body.len() - 20);
                let text = String::from_utf8(r.clone()).unwrap().replace(&cl, &short);
                r = text.into_bytes();
                r
            },
            &[400, 401],
        ),
        (
            "content-length over the limit",
            post_raw(
                "/hooks/portal",
                "Content-Type: application/json\r\nContent-Length: 10000000\r\n",
                b"{",
            ),
            &[413],
        ),
        (
            "invalid content-length",
            post_raw(
                "/hooks/portal",
                "Content-Type: application/json\r\nContent-Length: banana\r\n",
                b"{}",
            ),
            &[400],
        ),
        (
            "header with a NUL",
            post_raw(
                "/hooks/portal",
                "Content-Type: application/json\r\nx-esriHook-Signature: sha256=\0\r\nContent-Length: 2\r\n",
                b"{}",
            ),
            &[400, 401],
        ),
    ];
    let raw_count = raw_cases.len();
    for (name, request, allowed) in raw_cases {
        let addr = addr.clone();
        let status = tokio::task::spawn_blocking(move || raw(&addr, &request))
            .await
            .unwrap();
        assert!(
            allowed.contains(&status),
            "{name}: got {status}, expected one of {allowed:?}"
        );
        assert_eq!(
            accepted(&d).await,
            good as f64,
            "{name}: something was enqueued"
        );
        still_fast(&d, good, name).await;
        good += 1;
    }

    // A client that trickles its body is cut off after read_timeout; others are served meanwhile.
    let trickle = {
        let addr = addr.clone();
        let body = unique(2_000_000);
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let head = format!(
                "POST /hooks/portal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-esriHook-Signature: {}\r\n\r\n",
                body.len(),
                sign(KEY, &body)
            );
            s.write_all(head.as_bytes()).unwrap();
            let started = Instant::now();
            for b in body.iter().take(30) {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap_or(0);
            (
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    still_fast(&d, good, "a trickling client").await;
    good += 1;
    let (answer, took) = tokio::task::spawn_blocking(move || trickle.join().unwrap())
        .await
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "trickle: {answer:?} after {took:?}"
    );
    assert_eq!(
        accepted(&d).await,
        good as f64,
        "trickle: something was enqueued"
    );

    // Duplicated keys: two readers of the body (one taking the first key, one the last) would
    // see two different events, so the body is refused and nothing is stored.
    let dup = br#"{"info":{"webhookName":"a"},"info":{"webhookName":"b"},"events":[{"operation":"add","source":"item","id":"dup"}]}"#;
    let a = d.post_signed("portal", dup).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("\\\"info\\\" twice"), "{}", a.text);
    let nested = br#"{"info":{},"events":[{"operation":"delete","source":"item","id":"x","operation":"update"}]}"#;
    let a = d.post_signed("portal", nested).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(
        accepted(&d).await,
        good as f64,
        "duplicate keys: something was enqueued"
    );
    eprintln!(
        "hostile corpus: {} cases, each refused with its code and nothing enqueued",
        count + raw_count + 2
    );
    assert!(count + raw_count + 2 >= 40);
}

/// The daemon's log has no line that did not come from hookbridge: every line starts with a
/// timestamp or is a continuation hookbridge wrote itself.
fn assert_no_forged_lines(log: &str, marker: &str) {
    assert!(
        !log.contains(marker),
        "a request value reached the log raw:\n{log}"
    );
    for c in ['\u{1b}', '\0'] {
        assert!(
            !log.contains(c),
            "a control character reached the log: {c:?}"
        );
    }
}

#[tokio::test]
async fn request_values_never_reach_logs_or_answers_raw() {
    let d = Daemon::start(CONFIG);
    let addr = d.url.trim_start_matches("http://").to_string();
    // Hook names with line breaks, escape and NUL bytes: 404, not echoed, not logged.
    for name in [
        "a%0AFORGED-LINE",
        "b%0D%0AFORGED-LINE",
        "c%1B[31mFORGED-LINE",
        "d%00FORGED-LINE",
    ] {
        let body = unique(900);
        let request = signed_json(&format!("/hooks/{name}"), &body);
        assert_eq!(raw(&addr, &request), 404, "{name}");
    }
    let long = "h".repeat(60_000);
    let a = d.post_signed(&long, &unique(901)).await;
    assert!(
        a.status == 404 || a.status == 414 || a.status == 431,
        "{}",
        a.status
    );
    assert!(
        a.text.len() < 600,
        "a long hook name is echoed: {} bytes",
        a.text.len()
    );
    assert!(!a.text.contains("hhhhhhhhhhhhhhhh"), "{}", a.text);
    let a = d
        .post_signed(
            "FORGED-LINE-65-chars-long-name-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            &unique(902),
        )
        .await;
    assert_eq!(a.status, 404, "a name over 64 characters is not a hook");
    assert!(!a.text.contains("FORGED"), "{}", a.text);

    // A payload value in an error: named by path and type, never echoed, answer bounded.
    let marker = "ECHOED-PAYLOAD-VALUE";
    let big = format!(
        r#"{{"info":{{}},"events":"{marker}{}"}}"#,
        "v".repeat(200_000)
    );
    let a = d.post_signed("portal", big.as_bytes()).await;
    assert_eq!(a.status, 400, "{}", &a.text[..a.text.len().min(300)]);
    assert!(a.text.len() < 600, "error answer of {} bytes", a.text.len());
    assert!(!a.text.contains(marker), "{}", a.text);
    assert!(
        a.text
            .contains("at events: expected an array, found a string"),
        "{}",
        a.text
    );
    // A key with control characters in an error message is escaped.
    let dup = format!("{{\"info\":{{}},\"k\\u001b[31m{marker}\":1,\"k\\u001b[31m{marker}\":2}}");
    let a = d.post_signed("portal", dup.as_bytes()).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(!a.text.contains('\u{1b}'), "{}", a.text);

    still_fast(&d, 903, "the echo cases").await;
    assert_eq!(accepted(&d).await, 1.0, "only the good delivery was stored");
    let log = d.log_text();
    assert_no_forged_lines(&log, "FORGED-LINE");
    assert!(
        !log.contains("vvvvvvvvvvvvvvvv"),
        "a payload value reached the log"
    );
}

/// A portal delivery with `n` distinct item events, about 80 bytes each.
fn portal_events(n: usize, tag: &str) -> Vec<u8> {
    let events: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"operation":"add","source":"item","id":"{tag}-{i:06}","when":{i}}}"#))
        .collect();
    format!(
        r#"{{"info":{{"webhookName":"bulk"}},"events":[{}]}}"#,
        events.join(",")
    )
    .into_bytes()
}

#[tokio::test]
async fn the_event_cap_refuses_a_maximal_request_fast_and_stores_nothing() {
    let config = CONFIG.replace("max_body = \"256KiB\"", "max_body = \"1MiB\"");
    let d = Daemon::start(&config);
    let over = portal_events(10_001, "over");
    let started = Instant::now();
    let a = d.post_signed("portal", &over).await;
    let refused_in = started.elapsed();
    assert_eq!(a.status, 413, "{}", a.text);
    assert_eq!(a.json["error"], "too_many_events", "{}", a.text);
    assert!(a.text.contains("server.max_events (10000)"), "{}", a.text);
    assert_eq!(
        accepted(&d).await,
        0.0,
        "the refused delivery stored something"
    );

    // Just under the cap: accepted in full while /healthz keeps answering.
    let under = portal_events(10_000, "under");
    let url = d.url.clone();
    let probe = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut worst = Duration::ZERO;
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let t = Instant::now();
            let ok = client
                .get(format!("{url}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            assert!(ok, "/healthz failed during a maximal request");
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        worst
    });
    let started = Instant::now();
    let a = d.post_signed("portal", &under).await;
    let accepted_in = started.elapsed();
    assert_eq!(a.status, 200, "{}", &a.text[..a.text.len().min(300)]);
    assert_eq!(a.accepted().len(), 10_000);
    let worst = probe.await.expect("probe");
    assert_eq!(accepted(&d).await, 10_000.0);
    eprintln!(
        "max_events: 10 001 events refused (413) in {refused_in:?}; 10 000 events ({} KiB) accepted in {accepted_in:?}; slowest /healthz meanwhile {worst:?}",
        under.len() / 1024
    );
}
