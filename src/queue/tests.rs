//! Queue unit tests: accept and dedup, take and complete, retry timing, dead letters, retention.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::event::Event;
use serde_json::Value;

pub(crate) fn retention(window: Duration, delivered: Duration, dead: Duration) -> Retention {
    Retention {
        dedup_window: window,
        keep_delivered: delivered,
        keep_dead: dead,
        min_free: 0,
    }
}

pub(crate) fn long() -> Retention {
    let week = Duration::from_secs(7 * 86_400);
    retention(week, week, week)
}

/// A portal event for tests, its id derived from `n`.
pub(crate) fn event(n: u64) -> Event {
    crate::event::sample(n)
}

pub(crate) fn routed(ns: &[u64], sinks: &[&str]) -> Vec<RoutedEvent> {
    ns.iter()
        .map(|n| RoutedEvent {
            event: event(*n),
            sinks: sinks.iter().map(|s| s.to_string()).collect(),
            properties_at: None,
        })
        .collect()
}

#[tokio::test]
async fn floats_survive_the_stored_form() {
    // Found by the parse_payload fuzzer: without serde_json's float_roundtrip, a large number
    // parsed from a payload read back from the queue one ULP off. Through the queue's own rows,
    // in both row forms (properties in the event row, and properties read back from the body).
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    let texts = [
        "1755719255557192552190",
        "1.7557192555571923e21",
        "0.30000000000000004",
    ];
    let mut expected = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let payload = format!(r#"{{"events":[{{"properties":{{"n":{text}}}}}]}}"#);
        let mut e = event(100 + i as u64);
        e.properties
            .insert("n".into(), serde_json::from_str(text).unwrap());
        expected.push((e.event_id.clone(), e.properties["n"].clone()));
        let pointer = (i % 2 == 0).then(|| "/events/0/properties".to_string());
        let routed = vec![RoutedEvent {
            event: e,
            sinks: vec!["s".into()],
            properties_at: pointer,
        }];
        q.accept(Arc::from(payload.as_str()), routed).await.unwrap();
    }
    q.close().unwrap();
    drop(q);
    let q = Queue::open(dir.path(), long()).unwrap();
    let taken = q.take("s", 10, &HashSet::new()).unwrap();
    assert_eq!(taken.len(), texts.len());
    for (id, n) in expected {
        let d = taken.iter().find(|d| d.event.event_id == id).unwrap();
        assert_eq!(d.event.properties["n"], n, "{id}");
    }
    q.close().unwrap();
}

#[tokio::test]
async fn accept_dedups_within_and_across_requests_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    let payload: Arc<str> = Arc::from("{\"p\":1}");
    let a = q
        .accept(payload.clone(), routed(&[1, 2, 1], &["s"]))
        .await
        .unwrap();
    assert_eq!(a.accepted.len(), 2);
    assert_eq!(a.duplicates, vec![event(1).event_id]);
    let b = q
        .accept(payload.clone(), routed(&[2, 3], &["s"]))
        .await
        .unwrap();
    assert_eq!(b.accepted, vec![event(3).event_id]);
    assert_eq!(b.duplicates, vec![event(2).event_id]);
    q.close().unwrap();
    drop(q);

    let q = Queue::open(dir.path(), long()).unwrap();
    let c = q.accept(payload, routed(&[3], &["s"])).await.unwrap();
    assert!(c.accepted.is_empty());
    let taken = q.take("s", 10, &HashSet::new()).unwrap();
    let ids: Vec<_> = taken.iter().map(|d| d.event.id.clone()).collect();
    assert_eq!(ids, vec!["item-1", "item-2", "item-3"]);
    assert_eq!(&*taken[0].payload, "{\"p\":1}");
    assert!(taken[0].event.accepted_at > 0);
    let stats = q.stats([&"s".to_string()]).unwrap();
    assert_eq!(stats.events, 3);
    assert_eq!(stats.bodies, 2, "one log row per request, its payload once");
    assert_eq!(
        stats.sinks["s"],
        SinkStats {
            ready: 3,
            waiting: 0,
            dead: 0
        }
    );
    q.close().unwrap();
}

#[tokio::test]
async fn properties_found_in_the_body_are_stored_once_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    let payload = r#"{"events":[{"properties":{"big":"x"}},{"properties":{"n":[1,2.5]}}]}"#;
    let mut evs = routed(&[1, 2, 3], &["s"]);
    for (i, r) in evs.iter_mut().enumerate().take(2) {
        r.properties_at = Some(format!("/events/{i}/properties"));
        r.event.properties =
            serde_json::from_str::<Value>(payload).unwrap()["events"][i]["properties"]
                .as_object()
                .unwrap()
                .clone();
    }
    evs[2].properties_at = Some("/events/2/properties".into());
    let expected: Vec<Event> = evs.iter().map(|r| r.event.clone()).collect();
    q.accept(Arc::from(payload), evs).await.unwrap();

    assert_eq!(q.trees.log.len(), 1, "three events share one log row");
    let (k, v) = q.trees.log.iter().next().unwrap().unwrap();
    let logged = log::LogRow::decode(&k, &v).unwrap();
    assert_eq!(logged.payload, payload.as_bytes(), "the payload once");
    let row: EventRow = rows::decode(&k, logged.events[0].json).unwrap();
    assert!(row.event.properties.is_empty(), "left out of the row");
    assert_eq!(row.properties_at.as_deref(), Some("/events/0/properties"));

    let taken = q.take("s", 10, &HashSet::new()).unwrap();
    for (d, want) in taken.iter().zip(&expected) {
        assert_eq!(d.event.properties, want.properties);
        assert_eq!(d.event.event_id, want.event_id);
    }
    let status = q.status(&expected[1].event_id, &[]).unwrap().unwrap();
    assert_eq!(status.event.unwrap().properties, expected[1].properties);
    q.close().unwrap();
}

#[tokio::test]
async fn a_dead_letter_replays_after_its_log_row_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    let payload = r#"{"events":[{"properties":{"p":1}}]}"#;
    let mut evs = routed(&[1], &["s"]);
    evs[0].properties_at = Some("/events/0/properties".into());
    evs[0].event.properties = serde_json::from_str(r#"{"p":1}"#).unwrap();
    q.accept(Arc::from(payload), evs).await.unwrap();
    let stats = q.stats([&"s".to_string()]).unwrap();
    assert_eq!((stats.events, stats.bodies), (1, 1));

    let batch = q.take("s", 10, &HashSet::new()).unwrap();
    assert_eq!(&*batch[0].payload, payload);
    assert_eq!(batch[0].event.properties["p"], 1);
    let dead = Decision::Dead { error: "no".into() };
    q.complete("s", &[(&batch[0], dead)]).unwrap();
    // The log row is gone (as retention would remove it); replay writes it back whole.
    let (k, _) = q.trees.log.iter().next().unwrap().unwrap();
    q.trees.log.remove(&k).unwrap();
    assert_eq!(q.replay(Some("s".into()), None).await.unwrap(), 1);
    let again = q.take("s", 10, &HashSet::new()).unwrap();
    assert_eq!(&*again[0].payload, payload);
    assert_eq!(again[0].event.event_id, batch[0].event.event_id);
    assert_eq!(again[0].event.properties["p"], 1);
    assert_eq!(q.stats([&"s".to_string()]).unwrap().bodies, 1);
    q.close().unwrap();
}

#[test]
fn rows_in_the_older_json_only_form_still_read() {
    let row = EventRow {
        event: event(1),
        body: 9,
        properties_at: None,
    };
    let mut json = serde_json::to_value(&row).unwrap();
    json["body"] = 9.into();
    let legacy = serde_json::to_vec(&json).unwrap();
    let (back, inline) = EventRow::decode(b"e", &legacy).unwrap();
    assert_eq!((back.event.clone(), back.body, inline), (event(1), 9, None));
    // The form with the payload after the JSON (the body seq inside it), as 31b3ccd wrote it.
    let mut with_payload = vec![1];
    with_payload.extend_from_slice(&(legacy.len() as u32).to_be_bytes());
    with_payload.extend_from_slice(&legacy);
    with_payload.extend_from_slice(b"{}");
    let (back, inline) = EventRow::decode(b"e", &with_payload).unwrap();
    assert_eq!((back.body, inline), (9, Some(&b"{}"[..])));
    let current = row.encode(None);
    assert_eq!(current[0], 2, "the body seq is stored beside the JSON");
    let (back, inline) = EventRow::decode(b"e", &current).unwrap();
    assert_eq!((back.event, back.body, inline), (event(1), 9, None));
    assert!(EventRow::decode(b"e", &[1, 0, 0, 0, 9, b'{']).is_err());
    assert!(EventRow::decode(b"e", &[2, 0, 0, 0]).is_err());
}

#[tokio::test]
async fn take_skips_deliveries_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    q.accept(Arc::from("{}"), routed(&[1, 2, 3, 4], &["s"]))
        .await
        .unwrap();
    let first = q.take("s", 2, &HashSet::new()).unwrap();
    let in_flight: HashSet<u64> = first.iter().map(|d| d.seq).collect();
    let second = q.take("s", 10, &in_flight).unwrap();
    let ids: Vec<_> = second.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(ids, ["item-3", "item-4"]);
    assert_eq!(q.take("s", 10, &HashSet::new()).unwrap().len(), 4);

    // A delivery handed out that is no longer in flight (here item-2, whose first send came
    // back) goes out again at once, beside the ones never sent.
    let all = q.take("s", 10, &HashSet::new()).unwrap();
    let seq = |i: usize| all[i].seq;
    let span: HashSet<u64> = [seq(0), seq(2)].into();
    let ids: Vec<_> = q
        .take("s", 10, &span)
        .unwrap()
        .iter()
        .map(|d| d.event.id.clone())
        .collect();
    assert_eq!(ids, ["item-2", "item-4"]);
    let moved: HashSet<u64> = [seq(2)].into();
    let ids: Vec<_> = q
        .take("s", 10, &moved)
        .unwrap()
        .iter()
        .map(|d| d.event.id.clone())
        .collect();
    assert_eq!(ids, ["item-1", "item-2", "item-4"]);
    q.close().unwrap();
}

#[test]
fn a_row_whose_properties_are_missing_still_delivers_its_event() {
    let row = EventRow {
        event: event(1),
        body: 7,
        properties_at: Some("/events/0/properties".into()),
    };
    let body: Value = serde_json::json!({"events": []});
    let restored = row.restore(b"e1", Some(&body));
    assert_eq!(restored.event_id, event(1).event_id);
    assert!(restored.properties.is_empty());
}

#[tokio::test]
async fn concurrent_requests_share_commits_and_each_event_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let q = q.clone();
        // Every event is posted by two requests at once; exactly one may win it.
        tasks.push(tokio::spawn(async move {
            q.accept(Arc::from("{}"), routed(&[i % 32], &["a", "b"]))
                .await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap().unwrap().accepted.len();
    }
    assert_eq!(accepted, 32);
    assert_eq!(q.take("a", 100, &HashSet::new()).unwrap().len(), 32);
    assert_eq!(q.take("b", 100, &HashSet::new()).unwrap().len(), 32);
    q.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_each_become_one_log_row_of_contiguous_seqs() {
    // A log row holds the seqs from its key on: rows must not overlap, whatever the requests
    // beside it do (the committer takes the seqs; rows built on the requests' threads carry none).
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..48u64 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let n = i * 3;
            q.accept(Arc::from("{}"), routed(&[n, n + 1, n + 2], &["a"]))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().accepted.len(), 3);
    }
    let mut end = 0;
    for item in q.trees.log.iter() {
        let (k, v) = item.unwrap();
        let row = log::LogRow::decode(&k, &v).unwrap();
        assert_eq!(row.events.len(), 3);
        assert!(row.first >= end, "rows overlap at {}", row.first);
        end = row.end();
    }
    assert_eq!(q.trees.log.len(), 48);
    assert_eq!(q.take("a", 1_000, &HashSet::new()).unwrap().len(), 144);
    q.close().unwrap();
}

#[tokio::test]
async fn complete_retry_dead_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    q.accept(Arc::from("{\"raw\":true}"), routed(&[1, 2, 3], &["s"]))
        .await
        .unwrap();
    let batch = q.take("s", 10, &HashSet::new()).unwrap();
    let now = now_ms();
    q.complete(
        "s",
        &[
            (&batch[0], Decision::Delivered),
            (
                &batch[1],
                Decision::Retry {
                    due_ms: now + 300,
                    error: "busy".into(),
                },
            ),
            (
                &batch[2],
                Decision::Dead {
                    error: "refused".into(),
                },
            ),
        ],
    )
    .unwrap();
    // Nothing is ready until the retry is due.
    assert!(q.take("s", 10, &HashSet::new()).unwrap().is_empty());
    let due = q.next_due("s").unwrap().unwrap();
    assert!(due >= now + 300);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = q.take("s", 10, &HashSet::new()).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.id, "item-2");
    assert_eq!(again[0].attempts, 1);

    let dead = q.dead_letters(Some("s"), None).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].error, "refused");
    assert_eq!(dead[0].payload, "{\"raw\":true}");
    assert_eq!(
        q.dead_letters(None, Some(&event(3).event_id))
            .unwrap()
            .len(),
        1
    );
    assert!(q.dead_letters(None, Some("nope")).unwrap().is_empty());

    assert_eq!(q.replay(Some("s".into()), None).await.unwrap(), 1);
    assert!(q.dead_letters(None, None).unwrap().is_empty());
    let ready: Vec<_> = q
        .take("s", 10, &HashSet::new())
        .unwrap()
        .into_iter()
        .map(|d| (d.event.id, d.attempts))
        .collect();
    assert!(ready.contains(&("item-3".to_string(), 0)), "{ready:?}");

    q.complete("s", &[(&again[0], Decision::Dead { error: "x".into() })])
        .unwrap();
    assert_eq!(q.purge(None, None).unwrap(), 1);
    assert!(q.dead_letters(None, None).unwrap().is_empty());
    q.close().unwrap();
}

#[tokio::test]
async fn replaying_one_event_of_a_request_keeps_the_body_its_pending_siblings_need() {
    let dir = tempfile::tempdir().unwrap();
    let week = Duration::from_secs(7 * 86_400);
    let r = retention(week, Duration::ZERO, week);
    let q = Queue::open(dir.path(), r).unwrap();
    let payload = r#"{"shared":true}"#;
    q.accept(Arc::from(payload), routed(&[1, 2, 3], &["s"]))
        .await
        .unwrap();
    let batch = q.take("s", 10, &HashSet::new()).unwrap();
    let retry = Decision::Retry {
        due_ms: 0,
        error: "later".into(),
    };
    q.complete(
        "s",
        &[
            (&batch[0], Decision::Delivered),
            (&batch[1], Decision::Dead { error: "no".into() }),
            (&batch[2], retry),
        ],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    r.run(&q.trees, &q.store.sinks, &mut Default::default());
    let stats = q.stats([]).unwrap();
    assert_eq!(
        (stats.events, stats.bodies),
        (3, 1),
        "the row stays while event 3 waits"
    );

    assert_eq!(q.replay(Some("s".into()), None).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    r.run(&q.trees, &q.store.sinks, &mut Default::default());
    let again = q.take("s", 10, &HashSet::new()).unwrap();
    let ids: Vec<_> = again.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(ids, ["item-2", "item-3"]);
    for d in &again {
        assert_eq!(&*d.payload, payload, "{}", d.event.id);
    }
    q.close().unwrap();
}

#[tokio::test]
async fn retention_forgets_delivered_events_old_dead_letters_and_expired_dedup_keys() {
    let dir = tempfile::tempdir().unwrap();
    let r = retention(
        Duration::from_millis(200),
        Duration::from_millis(100),
        Duration::from_millis(100),
    );
    let q = Queue::open(dir.path(), r).unwrap();
    q.accept(Arc::from("{}"), routed(&[1, 2, 3], &["s"]))
        .await
        .unwrap();
    q.accept(Arc::from("{}"), routed(&[4], &[])).await.unwrap();
    let batch = q.take("s", 10, &HashSet::new()).unwrap();
    q.complete(
        "s",
        &[
            (&batch[0], Decision::Delivered),
            (&batch[1], Decision::Dead { error: "no".into() }),
        ],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    r.run(&q.trees, &q.store.sinks, &mut Default::default());
    let stats = q.stats([]).unwrap();
    // Event 3 is still pending, so its request's row stays whole.
    assert_eq!(stats.events, 3, "{stats:?}");
    assert_eq!(stats.bodies, 1, "{stats:?}");
    assert_eq!(
        stats.sinks["s"].dead, 0,
        "the dead letter is older than keep_dead"
    );
    assert_eq!(stats.dedup_keys, 0, "{stats:?}");
    // With its dedup key forgotten, a late retry of event 1 is accepted again.
    let again = q
        .accept(Arc::from("{}"), routed(&[1], &["s"]))
        .await
        .unwrap();
    assert_eq!(again.accepted.len(), 1);
    let pending: Vec<_> = q
        .take("s", 10, &HashSet::new())
        .unwrap()
        .into_iter()
        .map(|d| d.event.id)
        .collect();
    assert_eq!(pending, vec!["item-3", "item-1"]);
    let batch = q.take("s", 10, &HashSet::new()).unwrap();
    let delivered: Vec<_> = batch.iter().map(|d| (d, Decision::Delivered)).collect();
    q.complete("s", &delivered).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.run(&q.trees, &q.store.sinks, &mut Default::default());
    assert_eq!(
        q.stats([]).unwrap().bodies,
        0,
        "every row is delivered and old"
    );
    q.close().unwrap();
}

#[tokio::test]
async fn a_second_opener_is_told_the_directory_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    assert!(matches!(
        Queue::open(dir.path(), long()),
        Err(QueueError::Locked(_))
    ));
    q.close().unwrap();
    drop(q);
    // sled's own file lock goes with the last handle its background threads hold, a moment
    // after the queue is dropped: the next opener waits for that moment, and only for it.
    let again = Queue::open(dir.path(), long()).unwrap();
    again.close().unwrap();
}

#[tokio::test]
async fn retention_takes_the_rows_of_a_sink_that_is_done_while_another_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let r = retention(
        Duration::from_secs(60),
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    let q = Queue::open(dir.path(), r).unwrap();
    for n in 0..6u64 {
        let sink = if n % 2 == 0 { "log" } else { "held" };
        q.accept(Arc::from("{}"), routed(&[n], &[sink]))
            .await
            .unwrap();
    }
    let batch = q.take("log", 10, &HashSet::new()).unwrap();
    let delivered: Vec<_> = batch.iter().map(|d| (d, Decision::Delivered)).collect();
    q.complete("log", &delivered).unwrap();
    let held = q.take("held", 10, &HashSet::new()).unwrap();
    assert_eq!(held.len(), 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.run(&q.trees, &q.store.sinks, &mut Default::default());
    let stats = q.stats([]).unwrap();
    assert_eq!(
        stats.bodies, 3,
        "the rows for the sink that is down stay: {stats:?}"
    );
    assert_eq!(q.take("held", 10, &HashSet::new()).unwrap().len(), 3);
    q.close().unwrap();
}

#[tokio::test]
async fn a_delivery_waiting_for_a_retry_is_not_reported_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    let ok = q
        .accept(Arc::from("{}"), routed(&[1, 2], &["s"]))
        .await
        .unwrap();
    let batch = q.take("s", 10, &HashSet::new()).unwrap();
    let retry = Decision::Retry {
        due_ms: crate::clock::now_ms() + 60_000,
        error: "503".into(),
    };
    q.complete("s", &[(&batch[0], retry), (&batch[1], Decision::Delivered)])
        .unwrap();
    let states: Vec<_> = ok
        .accepted
        .iter()
        .map(|id| {
            let s = q.status(id, &["s".to_string()]).unwrap().unwrap();
            s.deliveries[0].state
        })
        .collect();
    assert_eq!(states, ["waiting", "delivered"]);
    let delivered = |seq| {
        q.attempts(seq)
            .unwrap()
            .iter()
            .filter(|a| a.outcome == "delivered")
            .count()
    };
    assert_eq!((delivered(batch[0].seq), delivered(batch[1].seq)), (0, 1));
    q.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_posted_by_racing_requests_is_stored_once_whatever_group_each_joins() {
    // Each request reads its dedup rows on its own thread, before the committer applies the
    // groups in front of it: a key claimed meanwhile must still make it a duplicate.
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), long()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..600u64 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(i % 7 * 300)).await;
            q.accept(Arc::from("{}"), routed(&[i % 150, 1_000 + i % 50], &["a"]))
                .await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap().unwrap().accepted.len();
    }
    assert_eq!(accepted, 200);
    assert_eq!(q.take("a", 1_000, &HashSet::new()).unwrap().len(), 200);
    q.close().unwrap();
}
