//! Reading the queue for people: recent events with filters, a stored payload, how far behind
//! each sink is, and the disk. The status page and the admin API read the same rows.

use std::collections::HashSet;

use serde::Serialize;

use super::keys::*;
use super::log::{self, LogRow};
use super::progress::Progress;
use super::rows::decode;
use super::status::EventStatus;
use super::{EventRow, Queue, QueueError};

/// Which events to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events that came in on this hook.
    pub hook: Option<String>,
    /// Only events of this kind (`portal`, `feature-service`, `geoprocessing`).
    pub kind: Option<String>,
    /// Only events with this operation.
    pub operation: Option<String>,
    /// Only events with a delivery in this state (`ready`, `waiting`, `delivered`, `dead`).
    pub state: Option<String>,
    /// Case-insensitive text in the event id, the item/group/user id or layer, user, webhook.
    pub text: Option<String>,
    /// Most events returned.
    pub limit: usize,
    /// Most stored events looked at, newest first: bounds a search on a large queue.
    pub scan: usize,
}

/// A page of recent events.
#[derive(Debug, Clone, Serialize)]
pub struct RecentEvents {
    /// The matching events, newest first, with their deliveries.
    pub events: Vec<EventStatus>,
    /// How many stored events were looked at.
    pub scanned: usize,
    /// Whether the scan stopped at `EventQuery::scan` before the oldest stored event.
    pub truncated: bool,
}

impl EventQuery {
    fn matches(&self, e: &crate::event::Event) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        if !(same(&self.hook, &e.hook)
            && same(&self.kind, e.kind.as_str())
            && same(&self.operation, &e.operation))
        {
            return false;
        }
        let Some(text) = self.text.as_deref().map(str::to_lowercase) else {
            return true;
        };
        let fields = [
            Some(e.event_id.as_str()),
            Some(e.id.as_str()),
            e.user.as_deref(),
            e.webhook.as_deref(),
            Some(e.source.as_str()),
        ];
        fields
            .into_iter()
            .flatten()
            .any(|f| f.to_lowercase().contains(&text))
    }
}

impl Queue {
    /// The most recent stored events that match `query`, newest first, with their deliveries.
    pub fn recent(&self, query: &EventQuery, sinks: &[String]) -> Result<RecentEvents, QueueError> {
        let mut candidates = Vec::new();
        let mut scanned = 0;
        let mut truncated = false;
        'rows: for item in self.trees.log.iter().rev() {
            let (k, v) = item?;
            let row = LogRow::decode(&k, &v)?;
            for (i, e) in row.events.iter().enumerate().rev() {
                let seq = row.first + i as u64;
                if scanned >= query.scan {
                    truncated = true;
                    break 'rows;
                }
                scanned += 1;
                let stored: EventRow = decode(&k, e.json)?;
                if query.matches(&stored.event) {
                    let routed: Vec<String> = e.sinks.iter().map(|s| s.to_string()).collect();
                    candidates.push((seq, stored.event, routed));
                }
            }
        }
        let wanted: HashSet<u64> = candidates.iter().map(|(seq, _, _)| *seq).collect();
        let waiting = self.waiting_index(sinks, |s| wanted.contains(&s))?;
        let mut events = Vec::new();
        for (seq, event, routed) in candidates {
            if events.len() >= query.limit {
                break;
            }
            let deliveries = self.deliveries(seq, &routed, sinks, &waiting)?;
            if let Some(state) = &query.state
                && !deliveries.iter().any(|d| d.state == state.as_str())
            {
                continue;
            }
            events.push(EventStatus {
                seq,
                accepted_at: event.accepted_at.max(0) as u64,
                event: Some(event),
                deliveries,
            });
        }
        Ok(RecentEvents {
            events,
            scanned,
            truncated,
        })
    }

    /// The ArcGIS payload the event `seq` came in, while it is stored.
    pub fn payload(&self, seq: u64) -> Result<Option<String>, QueueError> {
        let Some((k, v)) = log::find(&self.trees.log, seq)? else {
            return Ok(None);
        };
        let row = LogRow::decode(&k, &v)?;
        Ok(Some(String::from_utf8_lossy(row.payload).into_owned()))
    }

    /// When the oldest delivery `sink` still has to send (ready, waiting, or in the log) was
    /// accepted.
    pub fn oldest_pending(&self, sink: &str) -> Result<Option<u64>, QueueError> {
        let q = &self.trees.q;
        let mut oldest: Option<u64> = None;
        let mut consider = |seq: u64| oldest = Some(oldest.map_or(seq, |o| o.min(seq)));
        if let Some(item) = q.scan_prefix(sink_prefix(READY, sink)).next() {
            let (k, _) = item?;
            if let Some(seq) = row_seq(READY, &k) {
                consider(seq);
            }
        }
        for item in q.scan_prefix(sink_prefix(WAITING, sink)) {
            let (k, _) = item?;
            if let Some(seq) = row_seq(WAITING, &k) {
                consider(seq);
            }
        }
        if let Some(state) = self.store.sinks.find(sink) {
            let p = state.lock();
            match p.handed.first() {
                Some(seq) => consider(*seq),
                None => {
                    if let Some(seq) = self.first_unread(sink, &p)? {
                        consider(seq);
                    }
                }
            }
        }
        let Some(seq) = oldest else { return Ok(None) };
        Ok(match log::find(&self.trees.log, seq)? {
            Some((k, v)) => Some(LogRow::decode(&k, &v)?.accepted_at),
            None => None,
        })
    }

    /// The first event routed to `sink` that it has not read from the log yet.
    fn first_unread(&self, sink: &str, p: &Progress) -> Result<Option<u64>, QueueError> {
        let start = match log::find(&self.trees.log, p.read_from)? {
            Some((k, _)) => k.to_vec(),
            None => log_key(p.read_from).to_vec(),
        };
        for item in self.trees.log.range(start..) {
            let (k, v) = item?;
            let row = LogRow::decode(&k, &v)?;
            for (seq, e) in (row.first..).zip(&row.events) {
                if seq >= p.read_from && e.routed_to(sink) && !p.skip.contains(&seq) {
                    return Ok(Some(seq));
                }
            }
        }
        Ok(None)
    }

    /// Free bytes on the queue's disk (None if the system cannot tell), and `storage.min_free`.
    pub fn disk_free(&self) -> (Option<u64>, u64) {
        let free = rustix::fs::statvfs(&self.dir)
            .ok()
            .map(|st| st.f_bavail.saturating_mul(st.f_frsize));
        (free, self.min_free)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::queue::tests::event;
    use crate::queue::{Decision, RoutedEvent};

    #[tokio::test]
    async fn recent_lists_newest_first_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path(), crate::queue::tests::long()).unwrap();
        let sinks = vec!["s".to_string()];
        for n in 0..5 {
            let mut e = event(n);
            e.id = format!("item-{n}");
            let routed = RoutedEvent {
                event: e,
                sinks: sinks.clone(),
                properties_at: None,
            };
            queue
                .accept(Arc::from(format!("{{\"n\":{n}}}")), vec![routed])
                .await
                .unwrap();
        }
        let taken = queue.take("s", 1, &Default::default()).unwrap();
        let retry = Decision::Retry {
            due_ms: crate::clock::now_ms() + 60_000,
            error: "later".into(),
        };
        queue.complete("s", &[(&taken[0], retry)]).unwrap();

        let all = EventQuery {
            limit: 10,
            scan: 100,
            ..Default::default()
        };
        let page = queue.recent(&all, &sinks).unwrap();
        let ids: Vec<_> = page
            .events
            .iter()
            .map(|s| s.event.as_ref().unwrap().id.clone())
            .collect();
        assert_eq!(ids, ["item-4", "item-3", "item-2", "item-1", "item-0"]);
        assert!(!page.truncated);

        let waiting = EventQuery {
            state: Some("waiting".into()),
            ..all.clone()
        };
        let page = queue.recent(&waiting, &sinks).unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].deliveries[0].error.as_deref(), Some("later"));

        let text = EventQuery {
            text: Some("ITEM-2".into()),
            ..all.clone()
        };
        let page = queue.recent(&text, &sinks).unwrap();
        assert_eq!(page.events.len(), 1);
        let seq = page.events[0].seq;
        assert_eq!(queue.payload(seq).unwrap().as_deref(), Some("{\"n\":2}"));

        let bounded = EventQuery { scan: 2, ..all };
        assert!(queue.recent(&bounded, &sinks).unwrap().truncated);
        assert!(queue.oldest_pending("s").unwrap().is_some());
        assert_eq!(queue.oldest_pending("other").unwrap(), None);
        queue.close().unwrap();
    }
}
