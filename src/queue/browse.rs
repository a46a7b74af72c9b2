//! Reading the queue for people: recent events with filters, a stored payload, how far behind
//! each sink is, and the disk. The status page and the admin API read the same rows.

use std::collections::HashSet;

use serde::Serialize;

use super::keys::*;
use super::status::EventStatus;
use super::{BodyRow, EventRow, Queue, QueueError};

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
        for item in self.tree.scan_prefix([EVENT]).rev() {
            if scanned >= query.scan {
                truncated = true;
                break;
            }
            scanned += 1;
            let (k, v) = item?;
            let Some(seq) = u64_at(&k, 1) else { continue };
            let (row, _) = EventRow::decode(&k, &v)?;
            if query.matches(&row.event) {
                candidates.push((seq, row.event));
            }
        }
        let wanted: HashSet<u64> = candidates.iter().map(|(seq, _)| *seq).collect();
        let waiting = self.waiting_index(sinks, |s| wanted.contains(&s))?;
        let mut events = Vec::new();
        for (seq, event) in candidates {
            if events.len() >= query.limit {
                break;
            }
            let deliveries = self.deliveries(seq, sinks, &waiting)?;
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
        let ekey = seq_key(EVENT, seq);
        let Some(v) = self.tree.get(&ekey)? else {
            return Ok(None);
        };
        let (row, inline) = EventRow::decode(&ekey, &v)?;
        let body = match inline {
            Some(payload) => BodyRow::new(payload),
            None => BodyRow::load(&self.tree, row.body)?,
        };
        Ok(Some(body.text.to_string()))
    }

    /// When the oldest delivery `sink` still has to send (ready or waiting) was accepted.
    pub fn oldest_pending(&self, sink: &str) -> Result<Option<u64>, QueueError> {
        let mut oldest: Option<u64> = None;
        if let Some(item) = self.tree.scan_prefix(sink_prefix(READY, sink)).next() {
            let (k, _) = item?;
            oldest = split_sink(&k).and_then(|(_, rest)| u64_at(rest, 0));
        }
        for item in self.tree.scan_prefix(sink_prefix(WAITING, sink)) {
            let (k, _) = item?;
            if let Some(seq) = split_sink(&k).and_then(|(_, rest)| u64_at(rest, 8)) {
                oldest = Some(oldest.map_or(seq, |o| o.min(seq)));
            }
        }
        let Some(seq) = oldest else { return Ok(None) };
        let ekey = seq_key(EVENT, seq);
        Ok(match self.tree.get(&ekey)? {
            Some(v) => Some(EventRow::decode(&ekey, &v)?.0.event.accepted_at.max(0) as u64),
            None => None,
        })
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
