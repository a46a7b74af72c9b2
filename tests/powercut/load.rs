//! The clients of the power-cut test: unique signed deliveries, what they were told, and
//! the daemon's log as it grows.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{KEY, sample, sign};
use serde_json::Value;

/// A portal payload with a unique item id, padded by `pad` bytes.
pub fn payload(n: u64, pad: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&sample("portal-group-update.json")).unwrap();
    v["events"][0]["id"] = Value::from(format!("item-{n:010}"));
    v["events"][0]["properties"]["padding"] = Value::from("x".repeat(pad));
    serde_json::to_vec(&v).unwrap()
}

/// What the clients were told: the acknowledged event ids and when the last 200 came.
#[derive(Default)]
pub struct Acked {
    pub ids: HashSet<String>,
    pub last: Option<Instant>,
}

/// Posts unique payloads to `hook` until `stop` (or, with `limit`, until that many were
/// acknowledged).
pub async fn client(
    url: String,
    hook: &'static str,
    first: u64,
    pad: usize,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
    limit: Option<usize>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut n = first;
    while !stop.load(Ordering::SeqCst) {
        if limit.is_some_and(|l| acked.lock().unwrap().ids.len() >= l) {
            return;
        }
        n += 1;
        let body = payload(n, pad);
        let sent = http
            .post(format!("{url}/hooks/{hook}"))
            .header("content-type", "application/json")
            .header("x-esriHook-Signature", sign(KEY, &body))
            .body(body)
            .send()
            .await;
        let Ok(resp) = sent else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if resp.status() != 200 {
            continue;
        }
        if let Ok(v) = resp.json::<Value>().await {
            let mut a = acked.lock().unwrap();
            a.last = Some(Instant::now());
            for id in v["accepted"].as_array().into_iter().flatten() {
                a.ids.insert(id.as_str().unwrap().to_string());
            }
        }
    }
}

/// Reads what a log file gained since the last call.
pub struct Tail {
    file: std::fs::File,
    at: u64,
}

impl Tail {
    pub fn new(path: &Path) -> Tail {
        let file = std::fs::File::open(path).unwrap();
        let at = file.metadata().unwrap().len();
        Tail { file, at }
    }

    pub fn read(&mut self) -> String {
        let mut s = String::new();
        self.file.seek(SeekFrom::Start(self.at)).unwrap();
        self.at += self.file.read_to_string(&mut s).unwrap_or(0) as u64;
        s
    }
}
