//! `BodyEncoding::from_content_type` and `body::decode` on arbitrary bytes, then the payload
//! parser on what a form yields, as the ingress does.
//!
//! The input is `content-type \n body`; the content-type line picks the encoding.
//! Invariants: never panics; a JSON body is passed through untouched and is the one signature
//! candidate; in a form, the body as sent is always a candidate, and the JSON is either the
//! `payload` value as it is on the wire, checked first (layout 1, what Esri's receiver reads), or
//! the decoded value, checked last (layout 2); a form signature field can be handed to
//! `signature::arcgis::decode` without panicking.
#![no_main]

use hookbridge::body::{BodyEncoding, decode};
use hookbridge::senders::HookKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let ct = std::str::from_utf8(ct).ok().filter(|s| !s.is_empty());
    let encoding = match BodyEncoding::from_content_type(ct) {
        Ok(e) => e,
        Err(e) => {
            let _ = e.to_string();
            // Still exercise the form decoder: it is the interesting one.
            BodyEncoding::Form
        }
    };
    let Ok(d) = decode(encoding, body) else {
        return;
    };
    assert!(
        d.signed_candidates.iter().any(|c| &**c == body),
        "the body as sent is a signature candidate"
    );
    match encoding {
        BodyEncoding::Json => {
            assert_eq!(&*d.json, body);
            assert_eq!(d.signed_candidates.len(), 1);
            assert!(d.form_signature.is_none());
        }
        BodyEncoding::Form => {
            let first = &*d.signed_candidates[0];
            let last = d.signed_candidates.last().map(|c| &**c).unwrap_or_default();
            if first == &*d.json {
                let wire = [&b"payload="[..], first].concat();
                assert!(
                    body.windows(wire.len()).any(|w| w == wire),
                    "layout 1: the JSON is the payload value as it is on the wire"
                );
            } else {
                assert_eq!(
                    last, &*d.json,
                    "layout 2: the decoded payload is the last candidate"
                );
            }
            if let Some(sig) = &d.form_signature {
                let _ = hookbridge::signature::arcgis::decode(sig);
            }
        }
    }
    if let Ok(events) = hookbridge::senders::parse(HookKind::Auto, "form", &d.json) {
        for e in events {
            assert_eq!(e.event_id.len(), 32);
        }
    }
});
