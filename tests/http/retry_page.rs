//! The status page's "Retry now" on an event's page: with the session's CSRF token, the event's
//! waiting deliveries are sent at once, and no other event's.

use reqwest::header::{COOKIE, LOCATION};

use super::common::Daemon;
use super::receiver::{Receiver, Reply};
use super::{config, http_sink, portal_event, post};

const ADMIN: &str = "admin-token-0123456789abcdef";

#[tokio::test]
async fn an_events_page_retries_its_waiting_deliveries_now() {
    let r = Receiver::start();
    r.reply_always(Reply::status(200));
    r.reply("/in/a", Reply::status(503));
    r.reply("/in/b", Reply::status(503));
    let sink = http_sink(
        "hook",
        &format!("{}/in/{{{{ id }}}}", r.base),
        "[sinks.hook.retry]\nattempts = 5\nbackoff = { first = \"60s\", max = \"60s\" }",
    );
    let cfg = config(&sink, "\"hook\"").replace(
        "[server]\n",
        &format!("[server]\nadmin_token = \"{ADMIN}\"\n"),
    );
    let d = Daemon::start(&cfg);
    let a = post(&d, "portal", &portal_event("a")).await;
    post(&d, "portal", &portal_event("b")).await;
    r.wait_until(|c| c.len() >= 2).await;

    let (http, cookie) = d.ui_session(ADMIN).await;
    let page_url = format!("{}/ui/events/{}", d.url, a[0]);
    // The delivery waits out its 60 s backoff: the page offers to send it now.
    let mut page = String::new();
    for _ in 0..50 {
        page = http
            .get(&page_url)
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.contains("Retry now") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let action = format!("action=\"/ui/events/{}/retry\"", a[0]);
    assert!(page.contains(&action), "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.get(..64))
        .expect("a CSRF token in the page")
        .to_string();
    let retry = format!("{page_url}/retry");
    for wrong in [vec![], vec![("csrf", "f".repeat(64))]] {
        let refused = http
            .post(&retry)
            .header(COOKIE, &cookie)
            .form(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
    }
    assert_eq!(
        r.requests_to("/in/a").len(),
        1,
        "a refused form sent nothing"
    );
    let done = http
        .post(&retry)
        .header(COOKIE, &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()[LOCATION], format!("/ui/events/{}", a[0]));
    r.wait_until(|c| c.iter().filter(|x| x.path == "/in/a").count() >= 2)
        .await;
    assert_eq!(r.requests_to("/in/a").len(), 2);
    assert_eq!(r.requests_to("/in/b").len(), 1, "b still waits");
    let unknown = http
        .post(format!(
            "{}/ui/events/00000000000000000000000000000000/retry",
            d.url
        ))
        .header(COOKIE, &cookie)
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
