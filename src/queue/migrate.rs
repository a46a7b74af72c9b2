//! Turning a store written by an earlier release (a row per event, per shared body, per
//! delivery and per delivered record) into the log layout, once, at open.
//!
//! Each event row becomes a log row of its own, with its payload and the sinks that had a row
//! for it; its delivered records become delivered-at marks; its ready, waiting and dead rows
//! stay as they are (ready rows are the deliveries off the ordinary path now); every sink's
//! cursor is put after the last event, so that nothing is read from the log twice; the dedup
//! rows move to their own tree. Every step can run again: a conversion cut short by a crash
//! goes on from where it stopped at the next open, and the layout row is written last.

use std::collections::{BTreeSet, HashMap};

use super::QueueError;
use super::keys::*;
use super::log;
use super::rows::{BodyRow, EventRow};
use super::trees::Trees;

/// Whether the store holds rows of an earlier layout.
fn has_old_rows(q: &sled::Tree) -> Result<bool, QueueError> {
    for prefix in [OLD_EVENT, OLD_BODY, OLD_DEDUP, OLD_DONE] {
        if q.scan_prefix([prefix]).next().transpose()?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Converts the store to this layout if it is not in it yet; returns how many events moved.
/// The caller flushes.
pub(super) fn run(trees: &Trees) -> Result<u64, QueueError> {
    let q = &trees.q;
    if q.get(VERSION)?.as_deref() == Some(&[LAYOUT][..]) {
        return Ok(0);
    }
    if !has_old_rows(q)? {
        q.insert(VERSION, &[LAYOUT])?;
        return Ok(0);
    }
    let started = std::time::Instant::now();
    tracing::info!("converting the queue written by an earlier release to the log layout");
    let mut sinks: BTreeSet<String> = BTreeSet::new();
    let mut waiting: HashMap<u64, Vec<String>> = HashMap::new();
    for prefix in [READY, WAITING, DEAD] {
        for item in q.scan_prefix([prefix]) {
            let (k, _) = item?;
            let (Some((sink, _)), Some(seq)) = (split_sink(&k), row_seq(prefix, &k)) else {
                continue;
            };
            sinks.insert(sink.to_string());
            if prefix == WAITING {
                waiting.entry(seq).or_default().push(sink.to_string());
            }
        }
    }
    for item in q.scan_prefix([OLD_DONE]) {
        let (k, _) = item?;
        if let Some(sink) = k.get(9..).and_then(|s| std::str::from_utf8(s).ok()) {
            sinks.insert(sink.to_string());
        }
    }
    let last_old = match q.scan_prefix([OLD_EVENT]).next_back().transpose()? {
        Some((k, _)) => u64_at(&k, 1).unwrap_or(0),
        None => 0,
    };
    let last_log = match trees.log.iter().next_back().transpose()? {
        Some((k, v)) => log::LogRow::decode(&k, &v)?.end().saturating_sub(1),
        None => 0,
    };
    let cursor = last_old.max(last_log);
    for sink in &sinks {
        if !q.contains_key(cursor_key(sink))? {
            q.insert(cursor_key(sink), &cursor.to_be_bytes())?;
        }
    }

    let mut moved = 0;
    for item in q.scan_prefix([OLD_EVENT]) {
        let (k, v) = item?;
        let Some(seq) = u64_at(&k, 1) else { continue };
        let (row, inline) = EventRow::decode(&k, &v)?;
        let body = match inline {
            Some(p) => BodyRow::new(p),
            None => BodyRow::load(q, row.body)?,
        };
        let mut routed = Vec::new();
        for sink in &sinks {
            let has_row = q.contains_key(sink_seq_key(READY, sink, seq))?
                || q.contains_key(sink_seq_key(DEAD, sink, seq))?
                || q.contains_key(old_done_key(seq, sink))?
                || waiting.get(&seq).is_some_and(|w| w.contains(sink));
            if has_row {
                routed.push(sink.clone());
            }
        }
        let accepted_at = row.event.accepted_at.max(0) as u64;
        let json = EventRow {
            event: row.event,
            body: 0,
            properties_at: row.properties_at,
        }
        .encode_json();
        let value = log::encode(accepted_at, &[(&json, &routed)], body.text.as_bytes());
        trees.log.insert(log_key(seq), value)?;
        for item in q.scan_prefix(seq_key(OLD_DONE, seq)) {
            let (dk, at) = item?;
            if let Some(sink) = dk.get(9..).and_then(|s| std::str::from_utf8(s).ok()) {
                q.insert(sink_seq_key(MARK, sink, seq), at)?;
            }
            q.remove(dk)?;
        }
        q.remove(k)?;
        moved += 1;
    }
    for prefix in [OLD_BODY, OLD_DONE] {
        for item in q.scan_prefix([prefix]) {
            q.remove(item?.0)?;
        }
    }
    for item in q.scan_prefix([OLD_DEDUP]) {
        let (k, v) = item?;
        trees.dedup.insert(&k[1..], v)?;
        q.remove(k)?;
    }
    q.insert(VERSION, &[LAYOUT])?;
    tracing::info!(events = moved, elapsed = ?started.elapsed(), "queue converted to the log layout");
    Ok(moved)
}
