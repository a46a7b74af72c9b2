//! Every sender's sample bodies, parsed into events: what `hookbridge check` renders every
//! sink's templates with, so a template that fails on a real shape fails at load.

use super::{HookKind, SENDERS, parse};
use crate::event::Event;

/// Each sender's sample bodies, with the hook kind that takes them.
pub fn payloads() -> Vec<(HookKind, &'static str)> {
    SENDERS
        .iter()
        .flat_map(|s| s.samples().iter().map(|json| (HookKind::Sender(*s), *json)))
        .collect()
}

/// The first event of each sample payload, with the payload it came in; `accepted_at` is fixed
/// so that rendered times are stable.
pub fn events() -> Vec<(Event, String)> {
    payloads()
        .into_iter()
        .filter_map(|(kind, json)| {
            let mut e = parse(kind, "sample", json.as_bytes())
                .ok()?
                .into_iter()
                .next()?;
            e.accepted_at = 1_700_000_125_000;
            Some((e, json.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_sample_parses() {
        assert_eq!(super::events().len(), super::payloads().len());
    }
}
