//! The HTTP sink end to end: the real daemon sends to a real receiver (actix-web in this test
//! binary, tests/http/receiver.rs) that records every request and answers as scripted.
//! Signatures are checked by the `standardwebhooks` package from PyPI and the HMAC headers by
//! Python's `hmac` and `hashlib` (tests/http/verify.py);
//! the Teams and Slack bodies are parsed for every sample; TLS with a private CA; SIGKILL.

#[path = "http/checks.rs"]
mod checks;
mod common;
#[path = "http/crash.rs"]
mod crash;
#[path = "http/presets.rs"]
mod presets;
#[path = "http/receiver.rs"]
mod receiver;
#[path = "http/retry_page.rs"]
mod retry_page;
#[path = "http/signing.rs"]
mod signing;
#[path = "http/steering.rs"]
mod steering;
#[path = "http/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use common::{BASE_CONFIG, Daemon, sample};
use receiver::{Receiver, Reply};
use serde_json::Value;

/// A daemon config: the base hooks, fast retries, `sinks` (TOML) and one route to `to`.
pub fn config(sinks: &str, to: &str) -> String {
    format!(
        r#"
{BASE_CONFIG}
[hooks.any]
kind = "auto"
secrets = ["example-signature-key"]

[defaults.retry]
attempts = 4
backoff = {{ first = "100ms", max = "300ms" }}

{sinks}

[[routes]]
match = {{}}
to = [{to}]
"#
    )
}

/// One HTTP sink `hook` sending to `url` with `extra` keys.
pub fn http_sink(name: &str, url: &str, extra: &str) -> String {
    format!("[sinks.{name}]\ntype = \"http\"\nurl = \"{url}\"\n{extra}\n")
}

/// A portal payload whose event has item id `id` (so a test can script the receiver by path).
pub fn portal_event(id: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sample("portal-group-update.json")).unwrap();
    v["events"][0]["id"] = Value::from(id);
    v["events"][0]["source"] = Value::from("item");
    serde_json::to_vec(&v).unwrap()
}

/// Posts a signed body to `hook` and returns the accepted event ids.
pub async fn post(d: &Daemon, hook: &str, body: &[u8]) -> Vec<String> {
    let a = d.post_signed(hook, body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.accepted()
}

/// Waits until the daemon's log contains `text` (20 s at most).
pub async fn wait_log(d: &Daemon, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if d.log_text().contains(text) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// The dead letters, as `hookbridge dlq list` prints them (the daemon must be stopped).
pub fn dead_letters(d: &Daemon) -> String {
    let out = d.cli(&["dlq", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn url_method_headers_and_body_follow_each_event() {
    let r = Receiver::start();
    let sinks = [
        http_sink(
            "events",
            &format!("{}/in/{{{{ kind }}}}/{{{{ operation }}}}?id={{{{ id }}}}", r.base),
            "headers = { \"X-Source\" = \"{{ source }}\", \"X-Api-Key\" = \"env:RECEIVER_KEY\" }\nauth = { bearer = \"env:RECEIVER_TOKEN\" }",
        ),
        http_sink(
            "raw",
            &format!("{}/raw", r.base),
            "method = \"PUT\"\nbody = \"raw\"\nauth = { user = \"hookbridge\", password = \"env:RECEIVER_PASSWORD\" }",
        ),
        http_sink(
            "text",
            &format!("{}/text", r.base),
            "method = \"PATCH\"\nbody = \"{{ kind }} {{ operation }} {{ id }}\"\ncontent_type = \"text/x-arcgis\"\nauth = { header = \"X-Token\", value = \"env:RECEIVER_KEY\" }",
        ),
    ]
    .concat();
    let d = Daemon::start_env(
        &config(&sinks, "\"events\", \"raw\", \"text\""),
        &[
            ("RECEIVER_KEY", "key-Q9-secret"),
            ("RECEIVER_TOKEN", "token-Q9-secret"),
            ("RECEIVER_PASSWORD", "password-Q9-secret"),
        ],
    );
    let body = sample("portal-item-share-multi.json");
    let ids = post(&d, "portal", &body).await;
    assert_eq!(ids.len(), 2);
    let all = r.wait_requests(6).await;
    assert_eq!(all.len(), 6, "{}", d.log_text());

    let events: Vec<_> = all.iter().filter(|c| c.path.starts_with("/in/")).collect();
    assert_eq!(events.len(), 2);
    for c in &events {
        let e = c.json();
        assert_eq!(c.method, "POST");
        assert_eq!(
            c.path,
            format!(
                "/in/portal/{}?id={}",
                e["operation"].as_str().unwrap(),
                e["id"].as_str().unwrap()
            )
        );
        assert_eq!(c.event_id(), e["event_id"].as_str().unwrap());
        assert!(ids.contains(&c.event_id()));
        assert_eq!(c.header("content-type"), Some("application/json"));
        assert_eq!(c.header("x-source"), Some("item"));
        assert_eq!(c.header("x-api-key"), Some("key-Q9-secret"));
        assert_eq!(c.header("authorization"), Some("Bearer token-Q9-secret"));
        assert!(c.header("user-agent").unwrap().starts_with("hookbridge/"));
    }
    let ops: Vec<_> = events
        .iter()
        .map(|c| c.json()["operation"].clone())
        .collect();
    assert!(
        ops.contains(&"share".into()) && ops.contains(&"delete".into()),
        "{ops:?}"
    );

    for c in r.requests_to("/raw") {
        assert_eq!(c.method, "PUT");
        let sent: Value = serde_json::from_slice(&c.body).unwrap();
        let posted: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent, posted, "the ArcGIS payload as received");
        let basic = base64_of("hookbridge:password-Q9-secret");
        assert_eq!(
            c.header("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
    }
    let texts: Vec<String> = r
        .requests_to("/text")
        .iter()
        .map(|c| {
            assert_eq!(c.method, "PATCH");
            assert_eq!(c.header("content-type"), Some("text/x-arcgis"));
            assert_eq!(c.header("x-token"), Some("key-Q9-secret"));
            String::from_utf8(c.body.clone()).unwrap()
        })
        .collect();
    assert!(
        texts.contains(&"portal share 6cd80cb32d4a4b4d858a020e57fba7b1".to_string()),
        "{texts:?}"
    );

    let log = d.log_text();
    for secret in ["key-Q9-secret", "token-Q9-secret", "password-Q9-secret"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    let metrics = d.get("/metrics").await.text;
    assert!(
        metrics.contains("hookbridge_http_responses_total{sink=\"events\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert_eq!(d.get("/readyz").await.status, 200);
}

/// Standard base64, for the expected basic authentication header.
fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn each_answer_class_is_delivered_retried_or_dead_lettered() {
    let r = Receiver::start();
    r.reply("/in/busy", Reply::status(503).body("maintenance"));
    r.reply("/in/slow", Reply::status(408));
    r.reply("/in/limited", Reply::status(429));
    r.reply("/in/gone", Reply::status(410).body("this hook was deleted"));
    r.reply(
        "/in/bad",
        Reply::status(422).body(&format!(
            "{{\"error\": \"field x is wrong\"}}{}",
            "y".repeat(2000)
        )),
    );
    let sink = http_sink("hook", &format!("{}/in/{{{{ id }}}}", r.base), "");
    let mut d = Daemon::start(&config(&sink, "\"hook\""));
    for id in ["ok", "busy", "slow", "limited", "gone", "bad"] {
        post(&d, "portal", &portal_event(id)).await;
    }
    let seen = r
        .wait_until(|c| {
            ["busy", "slow", "limited"]
                .iter()
                .all(|p| c.iter().filter(|x| x.path == format!("/in/{p}")).count() >= 2)
        })
        .await;
    let count = |p: &str| seen.iter().filter(|c| c.path == format!("/in/{p}")).count();
    assert_eq!(count("ok"), 1, "{}", d.log_text());
    for again in ["busy", "slow", "limited"] {
        assert_eq!(count(again), 2, "{again}: retried once, then delivered");
    }
    assert!(wait_log(&d, "endpoint is gone").await, "{}", d.log_text());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        (count("gone"), r.requests_to("/in/gone").len()),
        (1, 1),
        "410 is not retried"
    );
    assert_eq!(r.requests_to("/in/bad").len(), 1, "422 is not retried");
    let metrics = d.get("/metrics").await.text;
    assert!(
        metrics.contains("hookbridge_http_responses_total{sink=\"hook\",status=\"503\"} 1"),
        "{metrics}"
    );
    assert!(d.stop().success());

    let dead = dead_letters(&d);
    assert!(
        dead.contains("the endpoint is gone") && dead.contains("410 Gone"),
        "{dead}"
    );
    assert!(dead.contains("this hook was deleted"), "{dead}");
    assert!(
        dead.contains("422 Unprocessable Entity: {\\\"error\\\": \\\"field x is wrong\\\"}yyy"),
        "{dead}"
    );
    assert!(
        !dead.contains(&"y".repeat(600)),
        "only the first 512 bytes are quoted: {dead}"
    );
    assert_eq!(dead.matches("\"event_id\"").count(), 2, "{dead}");
}

#[tokio::test]
async fn retry_after_is_honoured_in_seconds_and_as_a_date() {
    let r = Receiver::start();
    r.reply("/in/seconds", Reply::status(429).header("Retry-After", "2"));
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    r.reply("/in/date", Reply::status(503).header("Retry-After", &date));
    let sink = http_sink("hook", &format!("{}/in/{{{{ id }}}}", r.base), "");
    // The policy's max (5 s) is above both waits, so neither is cut short.
    let cfg = config(&sink, "\"hook\"").replace("max = \"300ms\"", "max = \"5s\"");
    let d = Daemon::start(&cfg);
    post(&d, "portal", &portal_event("seconds")).await;
    post(&d, "portal", &portal_event("date")).await;
    let seen = r
        .wait_until(|c| c.iter().filter(|x| !x.path.is_empty()).count() >= 4)
        .await;
    for (path, at_least) in [("/in/seconds", 2.0), ("/in/date", 1.5)] {
        let tries: Vec<_> = seen.iter().filter(|c| c.path == path).collect();
        assert_eq!(tries.len(), 2, "{path}: {}", d.log_text());
        let gap = tries[1].at.duration_since(tries[0].at).as_secs_f64();
        assert!(
            gap >= at_least,
            "{path}: retried after {gap:.2} s, before Retry-After"
        );
        assert!(gap < 6.0, "{path}: {gap:.2} s");
    }
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_everything_and_nothing_is_dead() {
    let port = common::free_port();
    let sink = http_sink(
        "hook",
        &format!("http://127.0.0.1:{port}/in/{{{{ id }}}}"),
        "",
    );
    let mut d = Daemon::start(&config(&sink, "\"hook\""));
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.extend(post(&d, "portal", &portal_event(&format!("item-{n}"))).await);
    }
    let ready = d.get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(ready.text.contains("hook"), "{}", ready.text);
    // Several backoffs long: with attempts = 4, spent attempts would have dead-lettered them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = Receiver::start_on(port);
    let seen = r
        .wait_until(|c| ids.iter().all(|id| c.iter().any(|x| &x.event_id() == id)))
        .await;
    for id in &ids {
        assert!(
            seen.iter().any(|c| &c.event_id() == id),
            "{id} lost: {}",
            d.log_text()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get("/readyz").await.status != 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.get("/readyz").await.status, 200);
    // The receiver goes away: the sink is down (not "connected"), and /readyz, still about
    // hookbridge itself, names it.
    drop(r);
    tokio::time::sleep(Duration::from_millis(500)).await;
    ids.extend(post(&d, "portal", &portal_event("item-after")).await);
    let connected = "hookbridge_sink_connected{sink=\"hook\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ready = d.get("/readyz").await;
    while !ready.text.contains("sinks_down") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        ready = d.get("/readyz").await;
    }
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(
        ready.json["sinks_down"][0]["sink"], "hook",
        "{}",
        ready.text
    );
    assert!(
        d.get("/metrics")
            .await
            .text
            .contains(&format!("{connected} 0"))
    );
    let r = Receiver::start_on(port);
    r.wait_until(|c| c.iter().any(|x| x.event_id() == ids[ids.len() - 1]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get("/readyz").await.text.contains("sinks_down") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        d.get("/readyz").await.json,
        serde_json::json!({"ready": true})
    );
    assert!(
        d.get("/metrics")
            .await
            .text
            .contains(&format!("{connected} 1"))
    );
    assert!(
        d.log_text().contains("sink reachable again"),
        "{}",
        d.log_text()
    );
    assert!(d.stop().success());
    let dead = dead_letters(&d);
    assert!(!dead.contains("event_id"), "nothing dead-lettered: {dead}");
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_the_delivery_is_retried() {
    let r = Receiver::start();
    r.reply("/in/hang", Reply::status(200).delay(Duration::from_secs(5)));
    let sink = http_sink(
        "hook",
        &format!("{}/in/{{{{ id }}}}", r.base),
        "timeout = \"500ms\"",
    );
    let d = Daemon::start(&config(&sink, "\"hook\""));
    let started = Instant::now();
    let ids = post(&d, "portal", &portal_event("hang")).await;
    let seen = r.wait_until(|c| c.len() >= 2).await;
    assert_eq!(seen.len(), 2, "{}", d.log_text());
    assert!(seen.iter().all(|c| c.event_id() == ids[0]));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the hang did not hold the sink"
    );
    assert!(
        wait_log(&d, "did not answer within 500ms").await,
        "{}",
        d.log_text()
    );
}

#[tokio::test]
async fn the_rate_limit_and_max_in_flight_bound_what_the_receiver_sees() {
    let r = Receiver::start();
    r.reply_always(Reply::status(200).delay(Duration::from_millis(100)));
    let sink = http_sink("paced", &format!("{}/paced", r.base), "rate = \"5/s\"");
    let d = Daemon::start(&config(&sink, "\"paced\""));
    let bodies: Vec<Vec<u8>> = (0..15)
        .map(|n| portal_event(&format!("paced-{n}")))
        .collect();
    for b in &bodies {
        post(&d, "portal", b).await;
    }
    let seen = r.wait_until(|c| c.len() >= 15).await;
    assert_eq!(seen.len(), 15, "{}", d.log_text());
    // A burst of 5, then one every 200 ms: 15 requests span at least 2 s.
    let span = seen[14].at.duration_since(seen[0].at);
    assert!(
        span >= Duration::from_millis(1800),
        "15 requests in {span:?} at 5/s"
    );
    for w in seen.windows(11) {
        let gap = w[10].at.duration_since(w[0].at);
        assert!(
            gap >= Duration::from_millis(900),
            "11 requests within {gap:?}"
        );
    }
    let metrics = d.get("/metrics").await.text;
    assert!(
        metrics.contains("hookbridge_http_rate_limit_wait_seconds_total{sink=\"paced\"}"),
        "{metrics}"
    );
    drop(d);

    let r = Receiver::start();
    r.reply_always(Reply::status(200).delay(Duration::from_millis(150)));
    let sink = http_sink("narrow", &format!("{}/narrow", r.base), "max_in_flight = 2");
    let d = Daemon::start(&config(&sink, "\"narrow\""));
    for b in &bodies {
        post(&d, "portal", b).await;
    }
    let seen = r.wait_until(|c| c.len() >= 15).await;
    assert_eq!(seen.len(), 15, "{}", d.log_text());
    assert_eq!(r.most_at_once(), 2, "max_in_flight = 2");
}

#[tokio::test]
async fn retry_now_sends_a_waiting_delivery_without_sitting_out_its_backoff() {
    let r = Receiver::start();
    r.reply_always(Reply::status(200));
    r.reply("/in/a", Reply::status(503));
    r.reply("/in/b", Reply::status(503));
    let sink = http_sink(
        "hook",
        &format!("{}/in/{{{{ id }}}}", r.base),
        "[sinks.hook.retry]\nattempts = 5\nbackoff = { first = \"60s\", max = \"60s\" }",
    );
    let admin = "admin-token-0123456789abcdef";
    let cfg = config(&sink, "\"hook\"").replace(
        "[server]\n",
        &format!("[server]\nadmin_token = \"{admin}\"\n"),
    );
    let d = Daemon::start(&cfg);
    let a = post(&d, "portal", &portal_event("a")).await;
    let b = post(&d, "portal", &portal_event("b")).await;
    r.wait_until(|c| c.len() >= 2).await;
    let client = reqwest::Client::new();
    let admin_post = |path: String| {
        client
            .post(format!("{}{path}", d.url))
            .bearer_auth(admin)
            .send()
    };
    // One event, at every sink.
    let answer: Value = admin_post(format!("/admin/events/{}/retry", a[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["retried"], 1, "{answer}");
    let got = r
        .wait_until(|c| c.iter().filter(|x| x.path == "/in/a").count() >= 2)
        .await;
    assert_eq!(got.iter().filter(|x| x.path == "/in/a").count(), 2);
    assert_eq!(
        got.iter().filter(|x| x.path == "/in/b").count(),
        1,
        "b still waits"
    );
    // The whole sink.
    let answer: Value = admin_post("/admin/sinks/hook/retry".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["retried"], 1, "{answer}");
    r.wait_until(|c| {
        c.iter().any(|x| x.path == "/in/b" && x.event_id() == b[0])
            && c.iter().filter(|x| x.path == "/in/b").count() >= 2
    })
    .await;
    assert_eq!(r.requests_to("/in/b").len(), 2);
    let unknown = admin_post("/admin/events/00000000000000000000000000000000/retry".into())
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let no_sink = admin_post("/admin/sinks/nope/retry".into()).await.unwrap();
    assert_eq!(no_sink.status().as_u16(), 404);
}
