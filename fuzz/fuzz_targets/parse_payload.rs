//! `senders::parse` on arbitrary bytes: the first byte picks the hook kind, the rest is the body.
//!
//! Invariants: never panics; every event id is 32 lowercase hex digits (a valid dedup key);
//! parsing is deterministic; every event carries the hook it arrived on; `auto` gives the same
//! events as the kind it detected; `Event::field` answers every routing field; an event
//! survives the JSON round trip the queue stores it through; where `properties_pointer` says an
//! event's properties sit in the body, the body holds exactly those properties there (the queue
//! stores them only once, in the body, and reads them back from that pointer).
#![no_main]

use hookbridge::event::{Event, EventKind, FIELDS};
use hookbridge::senders::{HookKind, SENDERS, parse, properties_pointer};
use libfuzzer_sys::fuzz_target;

const HOOK: &str = "fuzz-hook";

/// `auto` or one of the senders, picked by `b`.
fn kind_of(b: u8) -> HookKind {
    match SENDERS.get(usize::from(b) % (SENDERS.len() + 1)) {
        Some(s) => HookKind::Sender(*s),
        None => HookKind::Auto,
    }
}

/// The hook kind of the sender of events of kind `k`.
fn hook_kind(k: &EventKind) -> HookKind {
    HookKind::named(k.as_str()).expect("every event kind is a sender's")
}

fn check_event(e: &Event, requested: HookKind) {
    assert_eq!(e.event_id.len(), 32, "event_id {:?}", e.event_id);
    assert!(
        e.event_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "event_id {:?}",
        e.event_id
    );
    let key = e.dedup_key().expect("event_id parses as a dedup key");
    assert_eq!(key.to_string(), e.event_id);
    assert_eq!(e.hook, HOOK);
    if requested != HookKind::Auto {
        assert_eq!(hook_kind(&e.kind), requested);
    }
    for f in FIELDS {
        let _ = e.field(f);
    }
    assert_eq!(e.field("event_id"), vec![e.event_id.clone()]);
    for (k, v) in &e.properties {
        let got = e.field(&format!("properties.{k}"));
        if !k.contains('.') && !v.is_null() {
            if let Some(items) = v.as_array() {
                assert_eq!(got.len(), items.len());
            } else {
                assert_eq!(got.len(), 1);
            }
        }
    }
    let stored = serde_json::to_vec(e).expect("an event serializes");
    let back: Event = serde_json::from_slice(&stored).expect("a stored event reads back");
    assert_eq!(&back, e, "event changed through its stored JSON form");
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, json)) = data.split_first() else {
        return;
    };
    let kind = kind_of(first);
    let Ok(events) = parse(kind, HOOK, json) else {
        return;
    };
    for e in &events {
        check_event(e, kind);
    }
    let body: serde_json::Value = serde_json::from_slice(json).expect("a parsed body is JSON");
    for (i, e) in events.iter().enumerate() {
        if let Some(at) = properties_pointer(&e.kind, i) {
            if !e.properties.is_empty() {
                let stored = body.pointer(&at).and_then(|v| v.as_object());
                assert_eq!(stored, Some(&e.properties), "properties not at {at}");
            }
        }
    }
    let again = parse(kind, HOOK, json).expect("parsing is deterministic");
    assert_eq!(again, events);
    if kind == HookKind::Auto {
        if let Some(e) = events.first() {
            let direct = parse(hook_kind(&e.kind), HOOK, json).expect("detected kind parses");
            assert_eq!(direct, events, "auto differs from the kind it detected");
        }
    }
});
