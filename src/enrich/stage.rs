//! The change feed as a stage in front of a sink: [`WithChanges`] is itself a [`Sink`], built
//! by `serve` around each sink with `enrich = "changes"`, so the dispatcher takes, sends and
//! records as for any sink while the stage parks what has no changes yet, attaches the stored
//! changes to the rest and, when the sink asks, splits them per feature.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{Feed, OnFailure, SinkEnrich, Split, changes, changes_url};
use crate::event::Delivery;
use crate::sinks::{Outcome, Sink, SinkError};

/// A sink behind the change feed: what it is sent carries the changes its events name.
pub struct WithChanges {
    feed: Arc<Feed>,
    name: String,
    settings: SinkEnrich,
    sink: Arc<dyn Sink>,
}

impl WithChanges {
    /// `sink` (configured as `name`) behind `feed`, when `name` asks for changes; else `sink`.
    pub fn wrap(feed: &Arc<Feed>, name: &str, sink: Arc<dyn Sink>) -> Arc<dyn Sink> {
        let Some(settings) = feed.for_sink(name) else {
            return sink;
        };
        Arc::new(WithChanges {
            feed: feed.clone(),
            name: name.to_string(),
            settings,
            sink,
        })
    }
}

#[async_trait]
impl Sink for WithChanges {
    async fn connect(&self) -> Result<(), SinkError> {
        self.sink.connect().await
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        if self.settings.split == Split::Feature {
            send_split(&self.feed, &self.name, self.sink.as_ref(), batch).await
        } else {
            self.sink.send(batch).await
        }
    }

    async fn close(&self) {
        self.sink.close().await
    }

    fn admit(&self, batch: Vec<Delivery>) -> Vec<Delivery> {
        self.sink
            .admit(admit(&self.feed, &self.name, self.settings, batch))
    }

    fn hold_until(&self, batch: &[Delivery]) -> Option<u64> {
        self.sink.hold_until(batch)
    }

    fn max_batch(&self) -> usize {
        self.sink.max_batch()
    }

    fn max_in_flight(&self) -> usize {
        self.sink.max_in_flight()
    }
}

/// Attaches stored changes to `sink`'s deliveries that need them; parks (and removes from
/// the batch) those whose changes are not fetched yet.
fn admit(feed: &Feed, sink: &str, settings: SinkEnrich, batch: Vec<Delivery>) -> Vec<Delivery> {
    let rows = feed.rows();
    let mut out = Vec::with_capacity(batch.len());
    let mut parked = false;
    for mut d in batch {
        let Some(url) = changes_url(&d.event).map(str::to_string) else {
            out.push(d);
            continue;
        };
        match rows.changes(d.seq, &url) {
            Ok(Some(changes)) => {
                d.event.properties.insert("changes".into(), changes);
                out.push(d);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(sink, error = %e, "cannot read stored changes");
                continue;
            }
        }
        if settings.on_failure == OnFailure::DeliverUnenriched {
            if let Ok(Some(reason)) = rows.changes_failure(d.seq, &url) {
                d.event
                    .properties
                    .insert("changesError".into(), Value::from(reason));
                out.push(d);
                continue;
            }
        }
        match rows.park(sink, d.seq) {
            Ok(_) => parked = true,
            Err(e) => tracing::error!(sink, error = %e, "cannot park a delivery"),
        }
    }
    if parked {
        feed.wake.notify_one();
    }
    out
}

/// Sends an admitted batch split per feature, one outcome per delivery.
///
/// Split, each feature change goes to the sink once: a change that several events of the
/// batch share (one per change type over one change file) is sent once, and a change the
/// sink delivered before (another delivery or a poll over the same edits) is not sent again.
async fn send_split(
    feed: &Feed,
    name: &str,
    sink: &dyn Sink,
    batch: &[Delivery],
) -> Result<Vec<Outcome>, SinkError> {
    let mut parts = Vec::new();
    let mut owner = Vec::new();
    let mut features: HashSet<String> = HashSet::new();
    for (i, d) in batch.iter().enumerate() {
        match d.event.properties.get("changes") {
            Some(c) => {
                for e in changes::split(&d.event, c) {
                    if !features.insert(e.event_id.clone()) {
                        continue;
                    }
                    parts.push(Delivery {
                        event: e,
                        ..d.clone()
                    });
                    owner.push(i);
                }
            }
            None => {
                parts.push(d.clone());
                owner.push(i);
            }
        }
    }
    let ids: Vec<&str> = features.iter().map(String::as_str).collect();
    let sent = feed.rows().features_sent(name, &ids).unwrap_or_else(|e| {
        tracing::warn!(sink = name, error = %e, "cannot read the feature changes sent; sending them all");
        HashSet::new()
    });
    if !sent.is_empty() {
        let mut keep = parts.iter().map(|p| !sent.contains(&p.event.event_id));
        owner.retain(|_| keep.next().unwrap_or(true));
        parts.retain(|p| !sent.contains(&p.event.event_id));
    }
    let mut outcomes = vec![Outcome::Delivered; batch.len()];
    if parts.is_empty() {
        return Ok(outcomes);
    }
    let got = sink.send(&parts).await?;
    let delivered: Vec<&str> = parts
        .iter()
        .zip(&got)
        .filter(|(p, o)| o.is_delivered() && features.contains(&p.event.event_id))
        .map(|(p, _)| p.event.event_id.as_str())
        .collect();
    if let Err(e) = feed.rows().record_features_sent(name, &delivered) {
        tracing::warn!(sink = name, error = %e, "cannot record the feature changes sent; they may be sent again");
    }
    for (i, o) in owner.into_iter().zip(got) {
        let worse = match (&outcomes[i], &o) {
            (Outcome::Reject(_), _) => false,
            (_, Outcome::Reject(_)) => true,
            (Outcome::Delivered, Outcome::DeliveredWith(_)) => true,
            (
                Outcome::Delivered | Outcome::DeliveredWith(_),
                Outcome::Retry(_) | Outcome::RetryAfter(..),
            ) => true,
            _ => false,
        };
        if worse {
            outcomes[i] = o;
        }
    }
    Ok(outcomes)
}
