//! Every sender's sample bodies, parsed into events: what `hookbridge check` renders every
//! sink's templates with, so a template that fails on a real shape fails at load.

use super::{HookKind, SENDERS, Sample, parse_with};
use crate::event::Event;

/// Each sender's sample deliveries, with the hook kind that takes them.
pub fn payloads() -> Vec<(HookKind, Sample)> {
    SENDERS
        .iter()
        .flat_map(|s| s.samples().iter().map(|x| (HookKind::Sender(*s), *x)))
        .collect()
}

/// The first event of each sample payload, with the payload it came in; `accepted_at` is fixed
/// so that rendered times are stable.
pub fn events() -> Vec<(Event, String)> {
    payloads()
        .into_iter()
        .filter_map(|(kind, sample)| {
            let mut e = parse_with(kind, "sample", &sample.headers, sample.body.as_bytes())
                .ok()?
                .into_iter()
                .next()?;
            e.accepted_at = 1_700_000_125_000;
            Some((e, sample.body.to_string()))
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
