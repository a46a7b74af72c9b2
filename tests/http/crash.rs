//! SIGKILL while the HTTP sink is sending loses nothing: every acknowledged event reaches the
//! receiver after a restart (some perhaps twice: delivery is at least once).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::common::Daemon;
use super::receiver::{Receiver, Reply};
use super::{config, http_sink, portal_event, post};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_sending_loses_nothing() {
    let r = Receiver::start();
    // Slow answers keep requests in flight when the kill comes.
    r.reply_always(Reply::status(200).delay(Duration::from_millis(80)));
    let sink = http_sink("hook", &format!("{}/in", r.base), "max_in_flight = 2");
    let mut d = Daemon::start(&config(&sink, "\"hook\""));
    let mut acked: HashSet<String> = HashSet::new();
    for trial in 0..3 {
        let before = r.requests().len();
        // Posted at once (one group commit or a few), so sending has barely started.
        let bodies: Vec<Vec<u8>> = (0..120)
            .map(|n| portal_event(&format!("t{trial}-{n}")))
            .collect();
        for ids in join_all(bodies.iter().map(|b| post(&d, "portal", b))).await {
            acked.extend(ids);
        }
        // Kill once some of this trial's events were sent, while the rest are on their way.
        let seen = r.wait_until(|c| c.len() >= before + 20).await;
        assert!(
            seen.len() >= before + 20,
            "trial {trial}: nothing sent:\n{}",
            d.log_text()
        );
        d.kill9();
        let delivered: HashSet<String> = r.requests().iter().map(|c| c.event_id()).collect();
        let pending = acked.difference(&delivered).count();
        assert!(
            pending > 0,
            "trial {trial}: everything was sent before the kill"
        );
        d.spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let delivered: HashSet<String> = r.requests().iter().map(|c| c.event_id()).collect();
            let missing: Vec<_> = acked.difference(&delivered).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "trial {trial}: {} acknowledged events never reached the receiver (e.g. {:?}):\n{}",
                missing.len(),
                missing.iter().take(3).collect::<Vec<_>>(),
                d.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let requests = r.requests().len();
        eprintln!(
            "trial {trial}: killed with {pending} of {} acknowledged events not yet delivered; all delivered after the restart ({} requests, {} repeated)",
            acked.len(),
            requests,
            requests - acked.len()
        );
    }
}
