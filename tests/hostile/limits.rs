//! The ingress's limits under a hostile client: no `100 Continue` for a body announced over
//! `server.max_body`, a budget of bytes in flight answered 503 with `Retry-After`, and a brake
//! on guessed admin tokens.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::common::{Daemon, KEY, sign};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
max_body = "64KiB"
max_inflight_bytes = "64KiB"
read_timeout = "2s"
admin_token = "admin-token-0123456789abcdef"
[storage]
path = "{dir}/data"
[hooks.portal]
kind = "portal"
secrets = ["example-signature-key"]
[sinks.log]
type = "file"
path = "{dir}/events.jsonl"
[[routes]]
match = {}
to = ["log"]
"#;

/// The first bytes the server answers to `head` (sent without a body), within 3 s.
fn first_answer(addr: &str, head: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    (s, String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn portal(n: u64) -> Vec<u8> {
    format!(
        r#"{{"info":{{"webhookName":"w","when":{n}}},"events":[{{"username":"u","when":{n},"operation":"update","source":"item","id":"limit-{n}","properties":{{}}}}]}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn expect_continue_is_refused_for_a_body_over_max_body() {
    let d = Daemon::start(CONFIG);
    let addr = d.url.trim_start_matches("http://").to_string();
    let (_s, answer) = first_answer(
        &addr,
        "POST /hooks/portal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 104857600\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(!answer.contains("100 Continue"), "{answer:?}");
    assert!(answer.contains("too_large"), "{answer:?}");
    // Within the limit, the client is told to go on, and the delivery is taken.
    let body = portal(1);
    let (mut s, answer) = first_answer(
        &addr,
        &format!(
            "POST /hooks/portal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nx-esriHook-Signature: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
            body.len(),
            sign(KEY, &body)
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 100 Continue"), "{answer:?}");
    s.write_all(&body).unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.contains("HTTP/1.1 200"), "{rest:?}");
    let m = d.get("/metrics").await.text;
    assert!(
        m.contains("hookbridge_requests_total{hook=\"portal\",outcome=\"too_large\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn bytes_past_the_budget_get_503_with_retry_after_and_nothing_is_stored() {
    let d = Daemon::start(CONFIG);
    let addr = d.url.trim_start_matches("http://").to_string();
    // One client announces 60 KiB and sends a few bytes: it holds 60 KiB of the 64 KiB budget
    // until read_timeout answers it 408.
    let mut hog = TcpStream::connect(&addr).unwrap();
    hog.write_all(
        b"POST /hooks/portal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 61440\r\n\r\n{\"info\":",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = vec![b' '; 8 * 1024];
    let a = d
        .post(
            "portal",
            Some("application/json"),
            Some(&sign(KEY, &body)),
            body.clone(),
        )
        .await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.json["error"], "busy", "{}", a.text);
    assert!(a.text.contains("server.max_inflight_bytes"), "{}", a.text);
    // A real delivery, padded to 8 KiB with whitespace, is refused the same way.
    let mut padded = portal(2);
    padded.resize(8 * 1024, b' ');
    let retry = reqwest::Client::new()
        .post(format!("{}/hooks/portal", d.url))
        .header("Content-Type", "application/json")
        .header("x-esriHook-Signature", sign(KEY, &padded))
        .body(padded)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status().as_u16(), 503);
    assert_eq!(
        retry
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Once the hog is answered (408), the budget is back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = d.post_signed("portal", &portal(3)).await;
        if a.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the budget never came back: {}",
            a.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(hog);
    let lines = d.wait_lines("events.jsonl", 1).await;
    assert_eq!(
        lines.len(),
        1,
        "only the delivery taken after the 503s: {lines:?}"
    );
    assert_eq!(lines[0]["id"], "limit-3");
}

#[tokio::test]
async fn wrong_admin_tokens_wait_one_after_another() {
    let d = Daemon::start(CONFIG);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let guesses = (0..4).map(|i| {
        client
            .get(format!("{}/admin/queue", d.url))
            .bearer_auth(format!("guess-{i}-0123456789abcdef"))
            .send()
    });
    for r in futures::future::join_all(guesses).await {
        assert_eq!(r.unwrap().status().as_u16(), 401);
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(3900), "4 guesses in {took:?}");
    let ok = client
        .get(format!("{}/admin/queue", d.url))
        .bearer_auth("admin-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let m = d.get("/metrics").await.text;
    assert!(m.contains("hookbridge_admin_token_failures_total 4"), "{m}");
}
