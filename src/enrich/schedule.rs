//! Which change windows the change feed fetches next, so that one URL or host that keeps failing
//! never holds up the others.
//!
//! Each window (the change file one `changesUrl` names, fetched once for every event naming
//! it) waits out its own backoff after a failure. A host whose last answer was an outage
//! gets one fetch at a time (a probe) until it answers again, and no host takes more than
//! [`PER_ORIGIN`] of the [`CONCURRENCY`] fetches, so a slot stays free for other hosts. A
//! window is given up once its fetches have been failing as outages for longer than the
//! connection's `give_up_after`, measured since the daemon started (nothing about an outage is
//! stored: it spends no attempt).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::event::DedupKey;

/// How many change files are fetched at once.
pub const CONCURRENCY: usize = 4;
/// How many of them may go to one host while it answers.
pub const PER_ORIGIN: usize = CONCURRENCY - 1;

/// The fetches running and the waits owed, in memory.
#[derive(Debug, Default)]
pub struct Schedule {
    /// The windows being fetched, and from which host.
    running: HashMap<u64, String>,
    not_before: HashMap<u64, Instant>,
    /// Outages in a row per window, and when the first of them was.
    outages: HashMap<u64, (u32, Instant)>,
    /// Hosts whose last answer was an outage.
    suspect: HashSet<String>,
}

/// The id of the change window `url` names, that the schedule keys its entries by.
pub fn window(url: &str) -> u64 {
    let k = DedupKey::from_parts(&["changes", url]).0;
    let mut first = [0u8; 8];
    first.copy_from_slice(&k[..8]);
    u64::from_be_bytes(first)
}

/// The host part of a URL that outages are counted by: scheme, host and port.
pub fn origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| url.to_string())
}

impl Schedule {
    /// Whether another fetch may start now.
    pub fn has_room(&self) -> bool {
        self.running.len() < CONCURRENCY
    }

    /// Whether window `window`, whose changes are at `origin`, may be fetched now.
    pub fn may_start(&self, window: u64, origin: &str, now: Instant) -> bool {
        if self.running.contains_key(&window)
            || self.not_before.get(&window).is_some_and(|t| *t > now)
        {
            return false;
        }
        let at_origin = self.running.values().filter(|o| *o == origin).count();
        let cap = if self.suspect.contains(origin) {
            1
        } else {
            PER_ORIGIN
        };
        self.has_room() && at_origin < cap
    }

    /// A fetch of `window` from `origin` started.
    pub fn started(&mut self, window: u64, origin: String) {
        self.not_before.remove(&window);
        self.running.insert(window, origin);
    }

    /// The fetch of `window` brought its changes (or an answer that is not an outage).
    pub fn answered(&mut self, window: u64) {
        if let Some(origin) = self.running.remove(&window) {
            self.suspect.remove(&origin);
        }
        self.outages.remove(&window);
    }

    /// The fetch of `window` met an outage; returns how long the window has been unavailable and
    /// the number of outages in a row.
    pub fn outage(&mut self, window: u64, now: Instant) -> (Duration, u32) {
        if let Some(origin) = self.running.remove(&window) {
            self.suspect.insert(origin);
        }
        let entry = self.outages.entry(window).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        (now.saturating_duration_since(entry.1), entry.0)
    }

    /// Window `window` waits until `at` before its next fetch.
    pub fn wait_until(&mut self, window: u64, at: Instant) {
        self.running.remove(&window);
        self.not_before.insert(window, at);
    }

    /// Window `window` is settled (its changes stored, or given up): nothing is owed.
    pub fn forget(&mut self, window: u64) {
        self.running.remove(&window);
        self.not_before.remove(&window);
        self.outages.remove(&window);
    }

    /// When the next waiting window is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.not_before.values().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_host_gets_one_probe_and_leaves_room_for_others() {
        let now = Instant::now();
        let mut s = Schedule::default();
        let bad = origin("https://bad.example/rest/x?a=1");
        assert_eq!(bad, "https://bad.example");
        for seq in 0..PER_ORIGIN as u64 {
            assert!(s.may_start(seq, &bad, now));
            s.started(seq, bad.clone());
        }
        assert!(!s.may_start(9, &bad, now), "one slot stays for other hosts");
        assert!(s.may_start(9, "https://good.example", now));
        let (for_, n) = s.outage(0, now);
        assert_eq!((for_, n), (Duration::ZERO, 1));
        s.wait_until(0, now + Duration::from_secs(5));
        assert!(!s.may_start(0, &bad, now), "it waits out its backoff");
        s.outage(1, now);
        s.outage(2, now);
        assert!(s.may_start(3, &bad, now), "a probe");
        s.started(3, bad.clone());
        assert!(!s.may_start(4, &bad, now), "one probe at a time");
        s.answered(3);
        assert!(s.may_start(4, &bad, now), "the host answered again");
        let (for_, n) = s.outage(0, now + Duration::from_secs(7));
        assert_eq!((for_, n), (Duration::from_secs(7), 2));
        s.forget(0);
        assert_eq!(s.next_due(), None);
    }
}
