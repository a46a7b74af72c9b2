//! Event values cannot steer a request: in a templated URL they are percent-encoded for the part
//! they land in, a `.` or `..` segment is dead-lettered, and the host is never templated.

use super::common::Daemon;
use super::receiver::{Receiver, Reply};
use super::{config, dead_letters, http_sink, portal_event, post};

#[tokio::test]
async fn event_values_stay_inside_their_path_segment_and_query_value() {
    let r = Receiver::start();
    r.reply_always(Reply::status(200));
    let sink = http_sink(
        "web",
        &format!("{}/arcgis/{{{{ id }}}}?op={{{{ operation }}}}", r.base),
        "auth = { user = \"hookbridge\", password = \"password-S7-secret\" }\n[sinks.web.retry]\nattempts = 1",
    );
    let mut d = Daemon::start(&config(&sink, "\"web\""));
    let hostile = [
        "../../admin/dlq/purge",
        "x?sink=all#frag",
        "a&b=c",
        "%2e%2e",
        "@127.0.0.1:1/steal#",
    ];
    for id in hostile {
        post(&d, "portal", &portal_event(id)).await;
    }
    // Whole dot segments would resolve away: those are dead letters, never sent.
    for id in ["..", "."] {
        post(&d, "portal", &portal_event(id)).await;
    }
    let got = r.wait_requests(hostile.len()).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let got_now = r.requests();
    assert_eq!(got_now.len(), hostile.len(), "{got:#?}");
    let paths: Vec<&str> = got_now.iter().map(|c| c.path.as_str()).collect();
    for p in &paths {
        assert!(p.starts_with("/arcgis/"), "{p} left /arcgis/");
        let segment = p.trim_start_matches("/arcgis/").split('?').next().unwrap();
        assert!(!segment.contains('/'), "{p}: a value added a path segment");
        let query = p.split_once('?').map(|(_, q)| q).unwrap_or_default();
        assert!(!query.contains('&') && !query.contains('#'), "{p}");
    }
    assert!(
        paths.contains(&"/arcgis/..%2F..%2Fadmin%2Fdlq%2Fpurge?op=update"),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/arcgis/x%3Fsink%3Dall%23frag?op=update"),
        "{paths:?}"
    );
    assert!(paths.contains(&"/arcgis/a%26b%3Dc?op=update"), "{paths:?}");
    assert!(paths.contains(&"/arcgis/%252e%252e?op=update"), "{paths:?}");
    assert!(
        paths.contains(&"/arcgis/%40127.0.0.1%3A1%2Fsteal%23?op=update"),
        "{paths:?}"
    );
    d.stop();
    let dead = dead_letters(&d);
    assert_eq!(
        dead.matches("path segment from an event value").count(),
        2,
        "the dot segments are dead letters with the reason:\n{dead}"
    );
}
