//! The status page end to end: the real daemon with a file sink, an email sink whose server
//! asks to retry (451) or refuses (550), and a RabbitMQ sink pointed at a closed port; signed
//! deliveries through the real ingress, one of them hostile. `security` checks sessions, CSRF,
//! cookie flags, escaping and that the token never shows, over plain HTTP; `in_a_browser`
//! drives Debian's chromium through the pages with playwright-core (tests/ui/drive.mjs).

mod common;
#[path = "ui/scenario.rs"]
mod scenario;
#[path = "ui/smtp.rs"]
mod smtp;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, FILE_CONFIG};
use reqwest::header::{ACCEPT, COOKIE, LOCATION, SET_COOKIE};
use scenario::{DEAD_ITEM, HOSTILE, SHARE_ITEM, Scenario, TOKEN, client, sign_in};

#[tokio::test]
async fn security() {
    let s = Scenario::start().await;
    let base = s.d.url.clone();
    let http = client();

    // Without a session, every page and action is refused: 302 for a browser, 401 otherwise.
    let pages = [
        "/ui".to_string(),
        "/ui/".into(),
        "/ui/events".into(),
        format!("/ui/events?q={SHARE_ITEM}"),
        "/ui/events/0123456789abcdef0123456789abcdef".into(),
        "/ui/dead".into(),
        "/ui/dead?sink=mail".into(),
        "/ui/nothing-here".into(),
    ];
    let actions = [
        "/ui/dead/replay",
        "/ui/dead/purge",
        "/ui/sinks/log/pause",
        "/ui/sinks/log/resume",
        "/ui/sinks/log/retry",
        "/ui/events/0123456789abcdef0123456789abcdef/retry",
        "/ui/signout",
    ];
    for path in &pages {
        let url = format!("{base}{path}");
        let html = http.get(&url).header(ACCEPT, "text/html").send().await;
        let html = html.expect("get");
        assert_eq!(html.status(), 302, "{path}");
        assert_eq!(html.headers()[LOCATION], "/ui/signin", "{path}");
        assert_eq!(http.get(&url).send().await.expect("get").status(), 401);
    }
    for path in actions {
        let url = format!("{base}{path}");
        let form = [("csrf", "0".repeat(64)), ("confirmed", "yes".into())];
        let r = http.post(&url).form(&form).send().await.expect("post");
        assert_eq!(r.status(), 401, "{path}");
        let r = http.post(&url).header(ACCEPT, "text/html").form(&form);
        assert_eq!(r.send().await.expect("post").status(), 302, "{path}");
    }
    let root = http.get(&base).send().await.expect("/");
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()[LOCATION], "/ui");

    // A wrong token: the form again, after a delay, counted.
    let started = Instant::now();
    let r = http
        .post(format!("{base}/ui/signin"))
        .form(&[("token", "not-the-token")])
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(started.elapsed() >= Duration::from_millis(900), "no delay");
    assert!(r.text().await.expect("text").contains("name=\"token\""));
    let metrics = s.d.get("/metrics").await.text;
    assert!(
        metrics.contains("hookbridge_ui_signin_failures_total 1"),
        "{metrics}"
    );

    // The right token: a session cookie with the flags.
    let (signed, set_cookie) = sign_in(&base).await;
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(set_cookie.contains(flag), "{flag} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: not Secure");

    // Every page renders, with its guard headers, without the token and with hostile values
    // escaped.
    let hostile_id = form_urlencoded::byte_serialize(HOSTILE[0].as_bytes()).collect::<String>();
    let dead = s.admin("/admin/dlq?sink=mail").await;
    let hostile_event = dead
        .as_array()
        .and_then(|a| a.iter().find(|l| l["event"]["id"] == HOSTILE[0]))
        .map(|l| {
            l["event"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .expect("the hostile event is a dead letter");
    let mut seen = String::new();
    for path in [
        "/ui".to_string(),
        "/ui/events".into(),
        format!("/ui/events?q={hostile_id}"),
        format!("/ui/events/{hostile_event}"),
        "/ui/dead".into(),
        "/ui/dead?sink=mail".into(),
        format!("/ui/events?operation={hostile_id}&hook=%3Cb%3E"),
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .header(COOKIE, &signed.cookie)
            .send()
            .await
            .expect("page");
        assert_eq!(r.status(), 200, "{path}");
        let headers = r.headers().clone();
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap_or("")
                .contains("script-src 'self'")
        );
        let body = r.text().await.expect("text");
        assert!(!body.contains(TOKEN), "{path} shows the token");
        for h in HOSTILE {
            assert!(!body.contains(h), "{path} shows {h} unescaped");
        }
        seen.push_str(&body);
    }
    assert!(seen.contains("&lt;script&gt;alert(&#x27;id&#x27;)&lt;&#x2F;script&gt;"));
    assert!(seen.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(seen.contains("&lt;&#x2F;pre&gt;&lt;script&gt;alert(2)"));

    // Actions need the session's CSRF token.
    let pause = format!("{base}/ui/sinks/log/pause");
    for form in [vec![], vec![("csrf", "f".repeat(64))]] {
        let r = http
            .post(&pause)
            .header(COOKIE, &signed.cookie)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 403);
    }
    let replay = http
        .post(format!("{base}/ui/dead/replay"))
        .header(COOKIE, &signed.cookie)
        .form(&[("sink", "mail"), ("confirmed", "yes")])
        .send()
        .await
        .expect("post");
    assert_eq!(replay.status(), 403);
    let sinks = s.admin("/admin/sinks").await;
    assert_eq!(sinks[1]["sink"], "log");
    assert_eq!(sinks[1]["paused"], false, "refused actions changed nothing");
    assert_eq!(s.admin("/admin/queue").await["sinks"]["mail"]["dead"], 2);

    // With it, they work; a purge asks for confirmation first.
    let r = http
        .post(&pause)
        .header(COOKIE, &signed.cookie)
        .form(&[("csrf", &signed.csrf)])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 303);
    assert_eq!(s.admin("/admin/sinks").await[1]["paused"], true);
    // "Retry now" needs the CSRF token too, and with it answers like the other sink actions.
    let retry = format!("{base}/ui/sinks/log/retry");
    let r = http
        .post(&retry)
        .header(COOKIE, &signed.cookie)
        .form(&[("csrf", "f".repeat(64))])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = http
        .post(&retry)
        .header(COOKIE, &signed.cookie)
        .form(&[("csrf", &signed.csrf)])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 303);
    let purge = format!("{base}/ui/dead/purge");
    let form = [
        ("csrf", signed.csrf.as_str()),
        ("sink", "mail"),
        ("id", hostile_event.as_str()),
    ];
    let r = http
        .post(&purge)
        .header(COOKIE, &signed.cookie)
        .form(&form)
        .send()
        .await;
    let r = r.expect("post");
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .expect("text")
            .contains("Purge 1 dead letter(s)")
    );
    assert_eq!(
        s.admin("/admin/queue").await["sinks"]["mail"]["dead"],
        2,
        "not before confirming"
    );
    let confirmed = [&form[..], &[("confirmed", "yes")]].concat();
    let r = http
        .post(&purge)
        .header(COOKIE, &signed.cookie)
        .form(&confirmed)
        .send()
        .await;
    assert_eq!(r.expect("post").status(), 303);
    assert_eq!(s.admin("/admin/queue").await["sinks"]["mail"]["dead"], 1);

    // Sign-out ends the session.
    let r = http
        .post(format!("{base}/ui/signout"))
        .header(COOKIE, &signed.cookie)
        .form(&[("csrf", &signed.csrf)])
        .send()
        .await
        .expect("sign out");
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap_or("")
            .contains("Max-Age=0")
    );
    let after = http
        .get(format!("{base}/ui"))
        .header(COOKIE, &signed.cookie)
        .send()
        .await;
    assert_eq!(after.expect("get").status(), 401);

    assert!(!s.d.log_text().contains(TOKEN), "the token reached the log");
    let _ = s.smtp.accepted();
}

#[tokio::test]
async fn the_cookie_is_secure_over_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("a cert");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tls.crt"), cert.cert.pem()).expect("write");
    std::fs::write(dir.path().join("tls.key"), cert.key_pair.serialize_pem()).expect("write");
    let config = FILE_CONFIG.replace(
        "max_body = \"64KiB\"",
        &format!(
            "max_body = \"64KiB\"\nadmin_token = \"{TOKEN}\"\n\
             tls = {{ cert = \"{0}/tls.crt\", key = \"{0}/tls.key\" }}",
            dir.path().display()
        ),
    );
    let d = Daemon::start(&config);
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("pem");
    let https = reqwest::Client::builder()
        .add_root_certificate(root)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = https
        .post(format!("{}/ui/signin", d.url))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 303);
    let set = r.headers()[SET_COOKIE].to_str().unwrap_or("").to_string();
    for flag in [
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/ui",
        "Max-Age=",
    ] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
}

#[tokio::test]
async fn off_without_an_admin_token() {
    let d = Daemon::start(FILE_CONFIG);
    for path in [
        "/",
        "/ui",
        "/ui/signin",
        "/ui/events",
        "/ui/static/style.css",
    ] {
        assert_eq!(d.get(path).await.status, 404, "{path}");
    }
}

/// Where the browser and its driver are, or why the test cannot run.
fn browser_tools() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = Path::new("/usr/bin/chromium");
    let driver = root.join("tests/ui/node_modules/playwright-core/package.json");
    let node = Command::new("node").arg("--version").output();
    let mut missing = vec![];
    if !chromium.exists() {
        missing.push("Debian's chromium (apt-get install chromium)");
    }
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node (apt-get install nodejs npm)");
    }
    if !driver.exists() {
        missing.push("playwright-core in tests/ui (cd tests/ui && npm ci)");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the browser test needs {}; .ci/setup/browser.sh installs them",
            missing.join(", ")
        ))
    }
}

#[tokio::test]
async fn in_a_browser() {
    // A missing browser is a failure that says what to install, never a silent pass.
    if let Err(why) = browser_tools() {
        panic!("{why}");
    }
    let s = Scenario::start().await;
    // The mail server recovers: what the browser replays is then delivered. The waiting
    // deliveries stay waiting (their retry is an hour away).
    s.smtp.accept_all();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = std::env::var("UI_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| s.d.path("screenshots"));
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/ui/drive.mjs"))
        .env("BASE_URL", &s.d.url)
        .env("UI_TOKEN", TOKEN)
        .env("SHARE_ITEM", SHARE_ITEM)
        .env("DEAD_ITEM", DEAD_ITEM)
        .env("SHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .expect("the browser run took over 3 minutes")
        .expect("run node");
    let report = format!(
        "stdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.d.log_text()
    );
    assert!(out.status.success(), "the browser run failed\n{report}");
    for page in ["signin", "overview", "events", "event", "dead", "confirm"] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "{page}.png\n{report}"
        );
    }
    assert!(s.smtp.accepted() >= 1, "the replayed mail was delivered");
    assert_eq!(s.admin("/admin/queue").await["sinks"]["mail"]["dead"], 1);
    assert!(!s.d.log_text().contains(TOKEN), "the token reached the log");
}
