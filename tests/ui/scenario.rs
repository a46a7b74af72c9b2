//! The status page tests' world: the daemon's config, a hostile payload, the deliveries that
//! put every page in every state, and a signed-in HTTP session.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::common::{Daemon, free_port, sample};
use crate::smtp::FakeSmtp;

/// The admin token: long enough that finding it in a page or log by chance is impossible.
pub const TOKEN: &str = "ui-test-admin-token-5f1c9a7e2b";
/// The item the share event is about (it waits at the mail sink).
pub const SHARE_ITEM: &str = "6cd80cb32d4a4b4d858a020e57fba7b1";
/// The item the delete event is about (the mail sink refuses it: a dead letter).
pub const DEAD_ITEM: &str = "7dd95fadaec84859ab8ed1059e675e0c";
/// Markup a hostile payload carries; it must never reach a page unescaped.
pub const HOSTILE: [&str; 3] = [
    "<script>alert('id')</script>",
    "<img src=x onerror=alert(1)>",
    "</pre><script>alert(2)</script>",
];

fn config(smtp_port: u16, closed_port: u16) -> String {
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    format!(
        r#"
templates = "{templates}"

[server]
listen = "127.0.0.1:{{port}}"
admin_token = "{TOKEN}"

[storage]
path = "{{dir}}/data"

[hooks.portal]
kind = "portal"
secrets = ["example-signature-key"]

[hooks.features]
kind = "feature-service"
secrets = ["example-signature-key"]

[sinks.log]
type = "file"
path = "{{dir}}/events.jsonl"

[sinks.mail]
type = "email"
smtp = "smtp://127.0.0.1:{smtp_port}"
from = "hookbridge@example.org"
to = ["{{{{ operation }}}}@example.org"]
template = "portal"
timeout = "5s"
retry = {{ attempts = 3, backoff = {{ first = "1h", max = "1h" }} }}

[sinks.audit]
type = "rabbitmq"
url = "amqp://guest:guest@127.0.0.1:{closed_port}/%2f"
exchange = "arcgis"
routing_key = "{{{{ source }}}}.{{{{ operation }}}}"

[[routes]]
name = "everything to the log"
match = {{}}
to = ["log"]

[[routes]]
name = "portal events to mail and audit"
match = {{ kind = "portal" }}
to = ["mail", "audit"]
"#,
        templates = templates.display()
    )
}

/// A portal payload whose values are markup and script.
fn hostile_payload() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "info": { "webhookName": HOSTILE[1], "webhookId": "w1", "when": 1700000999000u64 },
        "events": [{
            "username": HOSTILE[1],
            "when": 1700000999001u64,
            "operation": "delete",
            "source": "item",
            "id": HOSTILE[0],
            "properties": { "title": HOSTILE[2] }
        }]
    }))
    .expect("json")
}

/// The daemon and its SMTP server, with deliveries in every state the pages show.
pub struct Scenario {
    /// The daemon.
    pub d: Daemon,
    /// Its mail server.
    pub smtp: FakeSmtp,
}

impl Scenario {
    /// Starts both and posts the deliveries; returns once the queue holds them as expected.
    pub async fn start() -> Scenario {
        let smtp = FakeSmtp::start();
        let d = Daemon::start(&config(smtp.port, free_port()));
        for (hook, name) in [
            ("portal", "portal-group-update.json"),
            ("portal", "portal-item-share-multi.json"),
            ("features", "feature-created.json"),
        ] {
            let answer = d.post_signed(hook, &sample(name)).await;
            assert_eq!(answer.status, 200, "{name}: {}", answer.text);
        }
        let answer = d.post_signed("portal", &hostile_payload()).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let refused = d.post("portal", Some("application/json"), None, b"{}".to_vec());
        assert_eq!(refused.await.status, 401);
        let s = Scenario { d, smtp };
        s.wait_for(|q| {
            let mail = &q["sinks"]["mail"];
            mail["waiting"] == 2 && mail["dead"] == 2 && q["sinks"]["log"]["ready"] == 0
        })
        .await;
        s
    }

    /// GETs an admin API path with the token.
    pub async fn admin(&self, path: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.d.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("admin API");
        r.json().await.expect("admin JSON")
    }

    /// Waits (20 s at most) until the admin API's queue stats satisfy `done`.
    pub async fn wait_for(&self, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let q = self.admin("/admin/queue").await;
            if done(&q) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue never got there: {q}\n{}",
                self.d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A client that follows no redirect, so each answer can be looked at.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A signed-in session: its cookie header and the CSRF token its pages carry.
pub struct Signed {
    /// `hookbridge_session=...`, for a Cookie header.
    pub cookie: String,
    /// The token the session's forms carry.
    pub csrf: String,
}

/// Signs in over HTTP; returns the session and the Set-Cookie header as sent.
pub async fn sign_in(base: &str) -> (Signed, String) {
    let r = client()
        .post(format!("{base}/ui/signin"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[LOCATION], "/ui");
    let set = r.headers()[SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_string();
    let cookie = set.split(';').next().expect("pair").to_string();
    let page = client()
        .get(format!("{base}/ui"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("overview")
        .text()
        .await
        .expect("text");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.get(..64))
        .expect("a CSRF token in the page")
        .to_string();
    (Signed { cookie, csrf }, set)
}
