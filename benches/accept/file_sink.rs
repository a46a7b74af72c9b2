//! End to end through the file sink: paced requests, the sink's JSON-lines file tailed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::daemon::{start_daemon, stop, write_config};
use crate::e2e::{EndToEnd, Seen};
use crate::load::{Load, Sent, free_port, portal, wait_port};

/// `rate` paced requests for `seconds`; latency from a request's due time to its event's line
/// appearing in the sink's file (polled every millisecond; the sink fsyncs before it counts a
/// line as delivered).
pub fn end_to_end(
    rt: &tokio::runtime::Runtime,
    rate: f64,
    seconds: u64,
    clients: usize,
) -> EndToEnd {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let mut daemon = start_daemon(&config, dir.path());
    wait_port(port);
    let sent: Sent = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let path = dir.path().join("events.jsonl");
    let tail = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = Seen::default();
            let mut offset = 0usize;
            let mut idle_after_done = 0;
            loop {
                let text = std::fs::read(&path).unwrap_or_default();
                let now = Instant::now();
                if text.len() > offset {
                    let end = text[..]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(offset, |i| i + 1)
                        .max(offset);
                    for line in text[offset..end].split(|b| *b == b'\n') {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                            if let Some(id) = v["event_id"].as_str() {
                                seen.record(id.to_string(), now, line.len());
                            }
                        }
                    }
                    offset = end;
                    idle_after_done = 0;
                } else if done.load(Ordering::SeqCst) {
                    idle_after_done += 1;
                    if idle_after_done > 2000 {
                        return seen;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let r = rt.block_on(
        Load::new(
            &format!("http://127.0.0.1:{port}/hooks/portal"),
            clients,
            seconds,
            portal(7),
        )
        .paced(rate)
        .record(sent.clone())
        .run(),
    );
    done.store(true, Ordering::SeqCst);
    let seen = tail.join().expect("tail");
    stop(&mut daemon);
    let sent = sent.lock().expect("lock");
    EndToEnd::new(rate, seconds, &sent, &seen, r)
}
