//! Queue tests for the disk: a failed write leaves nothing behind, sled's overhead stays under
//! the factor the free-space check uses, and accepting is linear in the number of events.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::tests::{long, routed};
use super::*;
use serde_json::Value;

/// Bytes allocated on disk under `dir` (the reserve file left out).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if entry.file_name() != "reserve" {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Events stored in the log.
fn events_in_log(q: &Queue) -> u64 {
    q.stats([]).unwrap().events
}

#[tokio::test]
async fn a_failed_apply_or_fsync_leaves_nothing_and_the_retry_is_accepted_whole() {
    // 1 500 events to two sinks: a log row, a cursor row and 1 500 dedup rows, with a point of
    // failure before the first and the thousandth write, then the fsync: writes 1-3.
    let refused_ids: Vec<u64> = (2..1_502).collect();
    for step in 1..=3u64 {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), long()).unwrap();
        let first = q
            .accept(Arc::from("{}"), routed(&[1], &["s"]))
            .await
            .unwrap();
        assert_eq!(first.accepted.len(), 1);
        // An expired dedup row of event 5 must come back as it was.
        let expired = event_key(5);
        q.trees.dedup.insert(expired, &0u64.to_be_bytes()).unwrap();
        q.faults().fail_in(step);
        let refused = q
            .accept(Arc::from("{\"n\":2}"), routed(&refused_ids, &["s", "t"]))
            .await;
        assert!(refused.is_err(), "step {step}: {refused:?}");
        assert!(!q.is_alive(), "step {step}: the queue stops accepting");
        assert!(
            q.accept(Arc::from("{}"), routed(&[9_999], &["s"]))
                .await
                .is_err()
        );
        let _ = q.close();
        drop(q);

        let q = Queue::open(dir.path(), long()).unwrap();
        assert_eq!(
            events_in_log(&q),
            1,
            "step {step}: only the acknowledged event"
        );
        let stats = q.stats([&"t".to_string()]).unwrap();
        assert_eq!(stats.sinks["s"].ready, 1, "step {step}");
        assert_eq!(stats.sinks["t"].ready, 0, "step {step}");
        assert_eq!(
            q.trees.dedup.len(),
            2,
            "step {step}: event 1's and the expired one"
        );
        assert_eq!(
            q.trees.dedup.get(expired).unwrap().as_deref(),
            Some(&0u64.to_be_bytes()[..]),
            "step {step}"
        );
        assert!(
            !dir.path()
                .join("rollback")
                .read_dir()
                .unwrap()
                .any(|_| true)
        );
        let retry = q
            .accept(Arc::from("{\"n\":2}"), routed(&refused_ids, &["s", "t"]))
            .await
            .unwrap();
        assert_eq!(retry.accepted.len(), refused_ids.len(), "step {step}");
        assert!(retry.duplicates.is_empty());
        let taken = q.take("t", 10_000, &HashSet::new()).unwrap();
        assert_eq!(taken.len(), refused_ids.len());
        q.close().unwrap();
    }
    // And those were all the writes: a fourth is the next group's.
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    q.faults().fail_in(4);
    let whole = q
        .accept(Arc::from("{}"), routed(&refused_ids, &["s", "t"]))
        .await;
    assert_eq!(
        whole.map(|o| o.accepted.len()).ok(),
        Some(refused_ids.len())
    );
    assert!(
        q.accept(Arc::from("{}"), routed(&[1], &["s"]))
            .await
            .is_err()
    );
    let _ = q.close();
}

#[tokio::test]
async fn a_rollback_recorded_before_a_stop_is_applied_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    q.accept(Arc::from("{}"), routed(&[1, 2], &["s"]))
        .await
        .unwrap();
    // As if sled had refused the in-place undo: the rows are on disk, the rollback recorded.
    let mut undo = rollback::Undo::default();
    for tree in [trees::Tree::Log, trees::Tree::Dedup] {
        for item in q.trees.get(tree).iter() {
            let (k, _) = item.unwrap();
            undo.push(tree, &k, None);
        }
    }
    rollback::Rollbacks::new(dir.path()).record(&undo).unwrap();
    q.close().unwrap();
    drop(q);
    let q = Queue::open(dir.path(), long()).unwrap();
    assert_eq!((q.trees.log.len(), q.trees.dedup.len()), (0, 0));
    let again = q
        .accept(Arc::from("{}"), routed(&[1, 2], &["s"]))
        .await
        .unwrap();
    assert_eq!(again.accepted.len(), 2);
    q.close().unwrap();
}

#[test]
fn a_snapshot_left_torn_does_not_stop_the_store_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    rt.block_on(q.accept(Arc::from("{}"), routed(&[1], &["s"])))
        .unwrap();
    q.close().unwrap();
    drop(q);
    // What a full disk leaves when sled writes a snapshot at open or at a flush.
    std::fs::write(
        dir.path().join("queue/snap.7FFFFFFFFFFFFFFF.generating"),
        b"torn",
    )
    .unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    assert_eq!(events_in_log(&q), 1);
    q.close().unwrap();
}

fn event_key(n: u64) -> [u8; 16] {
    tests::event(n).dedup_key().unwrap().0
}

/// Stages `events` on `q` without writing them, to learn the bytes and rows accepting them
/// writes.
fn staged_size(q: &Queue, payload: &str, events: Vec<RoutedEvent>) -> (u64, u64) {
    let prepared = stage::prepare(&q.store, now_ms(), payload.into(), events).unwrap();
    let claimed = stage::Claimed::default();
    let (staged, _) =
        stage::stage_accept(&q.store, &HashSet::new(), &claimed, now_ms(), prepared).unwrap();
    (staged.bytes(), staged.writes.len() as u64)
}

/// Portal-like events with `props` bytes of properties each, `n` to a request.
fn events(from: u64, n: u64, props: usize) -> Vec<RoutedEvent> {
    let mut evs = routed(&(from..from + n).collect::<Vec<_>>(), &["s"]);
    for r in &mut evs {
        r.event
            .properties
            .insert("p".into(), Value::from("x".repeat(props)));
    }
    evs
}

#[tokio::test]
async fn sled_overhead_stays_under_the_factor() {
    // Shapes of real deliveries: one 1 MiB delivery of tiny events, many small deliveries of one
    // event, and 60 KB single-event payloads; each written until it is well past sled's
    // segment size, measured in blocks allocated.
    let shapes: [(&str, u64, u64, usize, usize); 3] = [
        (
            "24 000 tiny events in one delivery",
            1,
            24_000,
            0,
            1_000_000,
        ),
        ("2 000 deliveries of one 1 KB event", 2_000, 1, 600, 1_000),
        ("200 deliveries of one 60 KB event", 200, 1, 60_000, 60_000),
    ];
    for (name, requests, per_request, props, payload_len) in shapes {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), long()).unwrap();
        q.flush().unwrap();
        let before = allocated(dir.path());
        let payload: Arc<str> = Arc::from("y".repeat(payload_len));
        let (mut bytes, mut rows) = (0, 0);
        for r in 0..requests {
            let evs = events(r * per_request, per_request, props);
            let (b, n) = staged_size(&q, &payload, evs.clone());
            bytes += b;
            rows += n;
            q.accept(payload.clone(), evs).await.unwrap();
        }
        q.flush().unwrap();
        let grew = allocated(dir.path()).saturating_sub(before);
        let estimate = space::estimate(bytes, rows) + space::SLED_BYTES_PER_BATCH;
        eprintln!(
            "{name}: {bytes} bytes in {rows} rows -> {grew} bytes on disk ({:.2} per byte; estimate {estimate})",
            grew as f64 / bytes as f64
        );
        assert!(
            grew <= estimate,
            "{name}: sled used {grew} bytes on disk for {bytes} bytes in {rows} rows, more than the estimate {estimate}"
        );
        q.close().unwrap();
    }
}

/// A `/proc/self/status` figure in bytes (`VmRSS`, `VmHWM`), 0 where there is none.
fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

#[tokio::test]
async fn accepting_grows_linearly_with_the_events_of_a_request() {
    // Timings and memory are printed (--nocapture), not asserted: the machine is shared, and
    // other tests of this binary allocate beside it (run it alone for clean memory figures).
    let mut prev: Option<(u64, f64)> = None;
    for n in [5_000u64, 10_000, 20_000, 40_000] {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), long()).unwrap();
        let payload: Arc<str> = Arc::from("z".repeat(1_000_000));
        let evs = events(0, n, 20);
        // Resets the peak RSS (VmHWM) to the current RSS.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let rss = proc_status("VmRSS");
        let started = Instant::now();
        let outcome = q.accept(payload, evs).await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        let peak = proc_status("VmHWM").saturating_sub(rss);
        assert_eq!(outcome.accepted.len() as u64, n);
        q.close().unwrap();
        drop(q);
        let after = proc_status("VmRSS").saturating_sub(rss);
        let ratio = prev.map(|(pn, ps)| (secs / ps) / (n as f64 / pn as f64));
        eprintln!(
            "accept of {n} events: {secs:.3} s ({:.1} µs/event; growth vs linear: {}), peak RSS +{} MiB, after close +{} MiB",
            secs * 1e6 / n as f64,
            ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            peak >> 20,
            after >> 20,
        );
        prev = Some((n, secs));
    }
}
