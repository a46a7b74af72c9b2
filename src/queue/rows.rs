//! The rows' stored forms: an event's JSON (inside a log row), a delivery's state, and the
//! event and body rows of earlier releases, which `migrate.rs` reads.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::QueueError;
use super::keys::*;
use crate::event::Event;

/// A stored event and the body it came in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRow {
    /// The event.
    pub event: Event,
    /// Sequence number of its body row (stored beside the JSON, outside it, so that the JSON
    /// can be encoded before the committer knows the seq; older rows carry it inside).
    #[serde(default, skip_serializing)]
    pub body: u64,
    /// Where `event`'s properties sit in the body (a JSON pointer) when they were left out of
    /// the row to store them once; see [`EventRow::restore`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties_at: Option<String>,
}

/// The first byte of an event row written by releases before the body seq moved out of the
/// JSON: byte 1, the JSON's length (u32), the JSON (with `body`), then the payload inline, if any.
const ROW_WITH_PAYLOAD: u8 = 1;
/// The first byte of an event row: byte 2, the body seq (u64), the JSON's length (u32), the
/// JSON (without `body`), then the payload inline, if any. Rows that start with `{` are the
/// oldest, JSON-only form, whose payload is always in a body row.
const ROW_WITH_BODY: u8 = 2;

impl EventRow {
    /// The row's JSON, as a log row holds it: what a request's thread encodes before the
    /// committer assigns seqs.
    pub fn encode_json(&self) -> Vec<u8> {
        encode(self)
    }

    /// The stored form of a row whose JSON is `json` (from [`EventRow::encode_json`]): `payload`
    /// follows when the event keeps its payload inline (its request's only routed event), in
    /// which case `body` is the event's own seq.
    pub fn assemble(json: &[u8], body: u64, payload: Option<&[u8]>) -> Vec<u8> {
        let payload = payload.unwrap_or_default();
        let mut out = Vec::with_capacity(13 + json.len() + payload.len());
        out.push(ROW_WITH_BODY);
        out.extend_from_slice(&body.to_be_bytes());
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(payload);
        out
    }

    /// The stored form, with `payload` inline when the event keeps it (see [`EventRow::assemble`]).
    pub fn encode(&self, payload: Option<&[u8]>) -> Vec<u8> {
        Self::assemble(&self.encode_json(), self.body, payload)
    }

    /// Reads a stored row (any form) and the payload it carries inline, if any.
    pub fn decode<'a>(key: &[u8], value: &'a [u8]) -> Result<(Self, Option<&'a [u8]>), QueueError> {
        let (body, at) = match value.first() {
            Some(&ROW_WITH_BODY) => (
                Some(u64_at(value, 1).ok_or_else(|| corrupt(key, "truncated event row"))?),
                9,
            ),
            Some(&ROW_WITH_PAYLOAD) => (None, 1),
            _ => return Ok((decode(key, value)?, None)),
        };
        let len = value
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| corrupt(key, "truncated event row"))? as usize;
        let json = value
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| corrupt(key, "truncated event row"))?;
        let payload = &value[at + 4 + len..];
        let mut row: EventRow = decode(key, json)?;
        if let Some(body) = body {
            row.body = body;
        }
        Ok((row, (!payload.is_empty()).then_some(payload)))
    }

    /// The stored event, with its properties put back from `body` (the payload's JSON) when the
    /// row points there. Should they be missing, the event goes out without them (logged): one
    /// damaged row must not stop its sink.
    pub fn restore(self, key: &[u8], body: Option<&Value>) -> Event {
        let EventRow {
            mut event,
            properties_at,
            ..
        } = self;
        if let Some(at) = properties_at {
            match body.and_then(|v| v.pointer(&at)).and_then(Value::as_object) {
                Some(props) => event.properties = props.clone(),
                None => tracing::error!(
                    row = %String::from_utf8_lossy(key),
                    event_id = %event.event_id,
                    pointer = %at,
                    "the event's properties are missing from its payload; delivering it without them"
                ),
            }
        }
        event
    }
}

/// A body row read for a batch of deliveries: its text, and its JSON once an event needs it.
pub(super) struct BodyRow {
    pub text: Arc<str>,
    json: std::cell::OnceCell<Option<Value>>,
}

impl BodyRow {
    /// Reads an earlier release's body row `seq` (`null` if it is gone).
    pub fn load(tree: &sled::Tree, seq: u64) -> Result<Self, QueueError> {
        Ok(match tree.get(seq_key(OLD_BODY, seq))? {
            Some(b) => BodyRow::new(&b),
            None => BodyRow::new(b"null"),
        })
    }

    /// A payload's text (stored from a `str`, so valid UTF-8 unless the row was damaged).
    pub fn new(payload: &[u8]) -> Self {
        let text: Arc<str> = match std::str::from_utf8(payload) {
            Ok(text) => Arc::from(text),
            Err(_) => Arc::from(String::from_utf8_lossy(payload).as_ref()),
        };
        BodyRow {
            text,
            json: std::cell::OnceCell::new(),
        }
    }

    /// The body parsed, if it is JSON.
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| serde_json::from_str(&self.text).ok())
            .as_ref()
    }
}

/// A pending delivery's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryRow {
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure, for `queue stats` and dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub(super) fn corrupt(key: &[u8], reason: &str) -> QueueError {
    QueueError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

/// JSON-encodes a row.
pub(super) fn encode<T: Serialize>(row: &T) -> Vec<u8> {
    serde_json::to_vec(row).unwrap_or_default()
}

/// JSON-decodes a row, naming it on failure.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    value: &[u8],
) -> Result<T, QueueError> {
    serde_json::from_slice(value).map_err(|e| corrupt(key, &e.to_string()))
}
