//! The dispatcher's decisions and its loop, against a real queue and a scripted sink.

use super::*;
use crate::queue::RoutedEvent;
use crate::queue::tests::event;
use crate::retry::{Backoff, MAX_RETRY_AFTER};
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

/// A queue in a scratch directory holding `n` events for sink `name`, and a dispatcher of
/// `sink` on it that retries after 10 ms, then backs off up to `max_backoff`.
async fn fixture(
    name: &str,
    sink: Arc<dyn Sink>,
    n: u64,
    max_backoff: Duration,
) -> (tempfile::TempDir, Arc<Queue>, Dispatcher) {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path(), crate::queue::tests::long()).unwrap();
    if n > 0 {
        let events: Vec<RoutedEvent> = (0..n)
            .map(|n| RoutedEvent {
                event: event(n),
                sinks: vec![name.into()],
                properties_at: None,
            })
            .collect();
        queue.accept(Arc::from("{}"), events).await.unwrap();
    }
    let dispatcher = Dispatcher {
        name: name.into(),
        sink,
        queue: queue.clone(),
        retry: RetryConfig {
            attempts: 3,
            backoff: Backoff {
                first: Duration::from_millis(10),
                max: max_backoff,
            },
        },
        health: Arc::new(Health::default()),
        shutdown: CancellationToken::new(),
        control: Arc::new(SinkControl::default()),
    };
    (dir, queue, dispatcher)
}

/// A sink that records how many sends overlap; its first send fails as a whole.
#[derive(Default)]
struct Probe {
    active: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
    sent: Mutex<Vec<u64>>,
}

#[async_trait::async_trait]
impl Sink for Probe {
    async fn connect(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        if first {
            return Err(SinkError::Unavailable("injected".into()));
        }
        if let Ok(mut sent) = self.sent.lock() {
            sent.extend(batch.iter().map(|d| d.seq));
        }
        Ok(vec![Outcome::Delivered; batch.len()])
    }

    fn max_batch(&self) -> usize {
        5
    }

    fn max_in_flight(&self) -> usize {
        3
    }
}

#[tokio::test]
async fn batches_overlap_up_to_max_in_flight_and_a_failed_one_is_sent_again() {
    let probe = Arc::new(Probe::default());
    let (_dir, queue, dispatcher) =
        fixture("p", probe.clone(), 40, Duration::from_millis(20)).await;
    let shutdown = dispatcher.shutdown.clone();
    let task = tokio::spawn(dispatcher.run());
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.sent.lock().unwrap().len() < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap();

    assert_eq!(
        probe.most.load(Ordering::SeqCst),
        3,
        "three batches at once"
    );
    let mut sent = probe.sent.lock().unwrap().clone();
    sent.sort_unstable();
    sent.dedup();
    assert_eq!(
        sent.len(),
        40,
        "every event delivered, the failed batch's included"
    );
    assert_eq!(probe.sent.lock().unwrap().len(), 40, "none delivered twice");
    let stats = queue.stats([&"p".to_string()]).unwrap();
    assert_eq!((stats.sinks["p"].ready, stats.sinks["p"].dead), (0, 0));
    queue.close().unwrap();
}

#[test]
fn retry_after_lengthens_the_backoff_up_to_the_policy_max() {
    let b = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };
    for _ in 0..50 {
        // No wait asked: the plain backoff (first attempt: 0.5 to 1 s).
        let plain = b.delay_after(1, None);
        assert!(plain <= Duration::from_secs(1), "{plain:?}");
        // A longer wait asked: exactly that wait.
        assert_eq!(
            b.delay_after(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        // A shorter wait asked: the backoff still applies (attempt 5: 8 to 16 s).
        let longer = b.delay_after(5, Some(Duration::from_secs(2)));
        assert!(longer >= Duration::from_secs(8), "{longer:?}");
        // A wait past the policy's max is still honoured, up to an hour.
        assert_eq!(
            b.delay_after(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(3600)
        );
        assert_eq!(
            b.delay_after(1, Some(Duration::from_secs(7200))),
            MAX_RETRY_AFTER
        );
        // A receiver asking for 2 s under a backoff whose max is 1 s waits 2 s.
        let short = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(
            short.delay_after(9, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }
}

#[tokio::test]
async fn a_retry_after_outcome_is_due_no_sooner_than_asked_and_spends_an_attempt() {
    let (_dir, queue, d) =
        fixture("p", Arc::new(Probe::default()), 0, Duration::from_secs(60)).await;
    let after = Outcome::RetryAfter("429".into(), Duration::from_secs(20));
    match d.decide(0, after.clone(), 1_000) {
        Decision::Retry { due_ms, error } => {
            assert_eq!(due_ms, 21_000);
            assert_eq!(error, "429");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(d.decide(2, after, 1_000), Decision::Dead { .. }));
    queue.close().unwrap();
}

#[test]
fn backoff_grows_and_is_capped() {
    let b = Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(10),
    };
    for _ in 0..50 {
        let d1 = b.delay(1);
        assert!(
            d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1),
            "{d1:?}"
        );
        let d3 = b.delay(3);
        assert!(
            d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(4),
            "{d3:?}"
        );
        let d20 = b.delay(40);
        assert!(
            d20 >= Duration::from_secs(5) && d20 <= Duration::from_secs(10),
            "{d20:?}"
        );
    }
}

/// A sink that fails each delivery's first attempt and takes it on the second.
#[derive(Default)]
struct SecondTime {
    seen: Mutex<HashSet<u64>>,
    delivered: Mutex<Vec<u64>>,
}

#[async_trait::async_trait]
impl Sink for SecondTime {
    async fn connect(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let mut seen = self.seen.lock().unwrap();
        let mut delivered = self.delivered.lock().unwrap();
        Ok(batch
            .iter()
            .map(|d| {
                if seen.insert(d.seq) {
                    Outcome::Retry("first attempt".into())
                } else {
                    delivered.push(d.seq);
                    Outcome::Delivered
                }
            })
            .collect())
    }

    fn max_batch(&self) -> usize {
        4
    }
}

#[tokio::test]
async fn retries_recorded_beside_the_next_send_are_taken_again_when_due() {
    let sink = Arc::new(SecondTime::default());
    let (_dir, queue, dispatcher) = fixture("s", sink.clone(), 10, Duration::from_millis(20)).await;
    let shutdown = dispatcher.shutdown.clone();
    let task = tokio::spawn(dispatcher.run());
    // The retries' waiting rows are written after the dispatcher may have gone idle: it must
    // still wake for them when they are due, not after its idle minute.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.delivered.lock().unwrap().len() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap();
    let mut delivered = sink.delivered.lock().unwrap().clone();
    delivered.sort_unstable();
    assert_eq!(
        delivered.len(),
        10,
        "each delivered once, on its second attempt"
    );
    delivered.dedup();
    assert_eq!(delivered.len(), 10);
    let stats = queue.stats([&"s".to_string()]).unwrap();
    assert_eq!((stats.sinks["s"].ready, stats.sinks["s"].dead), (0, 0));
    for seq in delivered {
        let outcomes: Vec<_> = queue
            .attempts(seq)
            .unwrap()
            .into_iter()
            .map(|a| a.outcome)
            .collect();
        assert_eq!(outcomes, ["retry", "delivered"], "seq {seq}");
    }
    queue.close().unwrap();
}
