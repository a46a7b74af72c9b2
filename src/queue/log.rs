//! The log: one row per accepted request, holding its fresh routed events and its payload
//! once, under the seq of its first event; the row's events have the seqs that follow.

use std::sync::Arc;

use super::QueueError;
use super::keys::*;
use super::rows::{BodyRow, EventRow, corrupt, decode};
use crate::event::Event;

/// The first byte of a log row (the layout's version of it).
const LOG_ROW: u8 = 3;

/// One event of a log row, borrowed from the stored bytes.
#[derive(Debug)]
pub struct LogEvent<'a> {
    /// The event row's JSON (`EventRow`).
    pub json: &'a [u8],
    /// The sinks it was routed to.
    pub sinks: Vec<&'a str>,
}

impl LogEvent<'_> {
    /// Whether the event was routed to `sink`.
    pub fn routed_to(&self, sink: &str) -> bool {
        self.sinks.contains(&sink)
    }
}

/// A log row read back: when its request was accepted, its events, its payload.
#[derive(Debug)]
pub struct LogRow<'a> {
    /// The seq of its first event (the row's key).
    pub first: u64,
    /// When the request was accepted, epoch ms.
    pub accepted_at: u64,
    /// The events, in seq order.
    pub events: Vec<LogEvent<'a>>,
    /// The payload's text, shared by the events.
    pub payload: &'a [u8],
}

/// Encodes a log row: byte 3, accepted-at (u64), the event count (u32), per event the JSON's
/// length (u32), the JSON, the sink count (u16) and each sink's length (u16) and name; then
/// the payload to the end.
pub fn encode(accepted_at: u64, events: &[(&[u8], &[String])], payload: &[u8]) -> Vec<u8> {
    let size: usize = events
        .iter()
        .map(|(json, sinks)| 6 + json.len() + sinks.iter().map(|s| 2 + s.len()).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(13 + size + payload.len());
    out.push(LOG_ROW);
    out.extend_from_slice(&accepted_at.to_be_bytes());
    out.extend_from_slice(&(events.len() as u32).to_be_bytes());
    for (json, sinks) in events {
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(&(sinks.len() as u16).to_be_bytes());
        for sink in sinks.iter() {
            out.extend_from_slice(&(sink.len() as u16).to_be_bytes());
            out.extend_from_slice(sink.as_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Reads `n` bytes at `at`, or says the row is cut short.
fn take<'a>(key: &[u8], value: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], QueueError> {
    let bytes = value
        .get(*at..*at + n)
        .ok_or_else(|| corrupt(key, "truncated log row"))?;
    *at += n;
    Ok(bytes)
}

fn be_u32(b: &[u8]) -> usize {
    b.iter().fold(0usize, |n, x| (n << 8) | usize::from(*x))
}

impl<'a> LogRow<'a> {
    /// Decodes the row stored at `key`.
    pub fn decode(key: &[u8], value: &'a [u8]) -> Result<LogRow<'a>, QueueError> {
        let first = u64_at(key, 0).ok_or_else(|| corrupt(key, "bad log key"))?;
        if value.first() != Some(&LOG_ROW) {
            return Err(corrupt(key, "not a log row"));
        }
        let mut at = 1;
        let accepted_at = u64_at(take(key, value, &mut at, 8)?, 0).unwrap_or(0);
        let n = be_u32(take(key, value, &mut at, 4)?);
        let mut events = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let len = be_u32(take(key, value, &mut at, 4)?);
            let json = take(key, value, &mut at, len)?;
            let count = be_u32(take(key, value, &mut at, 2)?);
            let mut sinks = Vec::with_capacity(count);
            for _ in 0..count {
                let len = be_u32(take(key, value, &mut at, 2)?);
                let name = take(key, value, &mut at, len)?;
                sinks.push(std::str::from_utf8(name).map_err(|_| corrupt(key, "bad sink name"))?);
            }
            events.push(LogEvent { json, sinks });
        }
        Ok(LogRow {
            first,
            accepted_at,
            events,
            payload: &value[at..],
        })
    }

    /// The seq after the row's last event.
    pub fn end(&self) -> u64 {
        self.first + self.events.len() as u64
    }

    /// The event with seq `seq`, if this row holds it.
    pub fn get(&self, seq: u64) -> Option<&LogEvent<'a>> {
        let i = seq.checked_sub(self.first)?;
        self.events.get(usize::try_from(i).ok()?)
    }

    /// The event `seq` of this row as a dispatcher gets it: its properties put back from
    /// `body` (the payload read once for the row) when it left them there.
    pub fn event(&self, seq: u64, body: &BodyRow) -> Result<Option<Event>, QueueError> {
        let Some(e) = self.get(seq) else {
            return Ok(None);
        };
        let key = log_key(seq);
        let row: EventRow = decode(&key, e.json)?;
        let json = if row.properties_at.is_some() {
            body.json()
        } else {
            None
        };
        Ok(Some(row.restore(&key, json)))
    }
}

/// How many events a stored log row holds, read from its header alone.
pub fn event_count(value: &[u8]) -> u64 {
    match (value.first(), value.get(9..13)) {
        (Some(&LOG_ROW), Some(n)) => be_u32(n) as u64,
        _ => 0,
    }
}

/// The row holding `seq`, if it is still stored: its key and bytes.
pub fn find(log: &sled::Tree, seq: u64) -> Result<Option<(sled::IVec, sled::IVec)>, QueueError> {
    let Some((k, v)) = log.range(..=log_key(seq)).next_back().transpose()? else {
        return Ok(None);
    };
    let row = LogRow::decode(&k, &v)?;
    Ok((row.end() > seq).then_some((k, v)))
}

/// Event `seq` and its payload, while its row is stored.
pub fn event_and_payload(
    log: &sled::Tree,
    seq: u64,
) -> Result<Option<(Event, Arc<str>, u64)>, QueueError> {
    let Some((k, v)) = find(log, seq)? else {
        return Ok(None);
    };
    let row = LogRow::decode(&k, &v)?;
    let body = BodyRow::new(row.payload);
    Ok(row
        .event(seq, &body)?
        .map(|e| (e, body.text.clone(), row.accepted_at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_round_trips_and_a_cut_row_is_refused() {
        let sinks_a = vec!["a".to_string(), "bee".to_string()];
        let sinks_b: Vec<String> = vec![];
        let events: Vec<(&[u8], &[String])> = vec![(b"{\"x\":1}", &sinks_a), (b"{}", &sinks_b)];
        let bytes = encode(42, &events, b"{\"payload\":true}");
        let key = log_key(7);
        let row = LogRow::decode(&key, &bytes).unwrap();
        assert_eq!((row.first, row.accepted_at, row.end()), (7, 42, 9));
        assert_eq!(row.events[0].json, b"{\"x\":1}");
        assert!(row.get(7).unwrap().routed_to("bee"));
        assert!(!row.get(8).unwrap().routed_to("a"));
        assert!(row.get(9).is_none() && row.get(6).is_none());
        assert_eq!(row.payload, b"{\"payload\":true}");
        assert_eq!(event_count(&bytes), 2);
        for cut in 1..bytes.len() - row.payload.len() {
            assert!(LogRow::decode(&key, &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
