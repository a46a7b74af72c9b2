//! Routing: `[[routes]]` from fuzzed TOML (after a fixed header declaring sinks `a`, `b`, `c`),
//! events from fuzzed JSON, then `RouteTable::matching` / `sinks_for`.
//!
//! Input: `kind byte`, TOML routes, a NUL byte, the payload JSON.
//! Invariants: never panics; `sinks_for` names only configured sinks, each once, in the order of
//! the matching routes; every route `matching` returns does match; evaluation is deterministic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hookbridge::config::Config;
use hookbridge::senders::{HookKind, SENDERS};
use libfuzzer_sys::fuzz_target;

const HEADER: &str = "[sinks.a]\ntype = \"file\"\npath = \"a.jsonl\"\n\
[sinks.b]\ntype = \"file\"\npath = \"b.jsonl\"\n\
[sinks.c]\ntype = \"file\"\npath = \"c.jsonl\"\n";

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir()
            .join(format!("hookbridge-fuzz-route-{}", std::process::id()))
            .join("routes.toml")
    })
}

/// `auto` or one of the senders, picked by `b`.
fn kind_of(b: u8) -> HookKind {
    match SENDERS.get(usize::from(b) % (SENDERS.len() + 1)) {
        Some(s) => HookKind::Sender(*s),
        None => HookKind::Auto,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (routes, json) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let Ok(routes) = std::str::from_utf8(routes) else {
        return;
    };
    if ["dev", "proc", "sys", "env:", "file:"]
        .iter()
        .any(|s| routes.contains(s))
    {
        return;
    }
    let text = format!("{HEADER}{routes}");
    let Ok(cfg) = Config::parse(config_path(), &text) else {
        return;
    };
    let Ok(events) = hookbridge::senders::parse(kind_of(first), "fuzz", json) else {
        return;
    };
    for event in &events {
        let hits = cfg.routes.matching(event);
        let mut expected: Vec<String> = Vec::new();
        for r in &hits {
            assert!(
                r.matches(event),
                "route {} returned but does not match",
                r.name
            );
            for s in &r.to {
                if !expected.contains(s) {
                    expected.push(s.clone());
                }
            }
        }
        // Only the last hit may stop evaluation.
        for r in hits.iter().rev().skip(1) {
            assert!(
                !r.stop,
                "route {} stops but later routes were taken",
                r.name
            );
        }
        let sinks = cfg.routes.sinks_for(event);
        assert_eq!(sinks, expected);
        for s in &sinks {
            assert!(cfg.sinks.contains_key(s), "unknown sink {s}");
        }
        assert_eq!(cfg.routes.sinks_for(event), sinks, "deterministic");
    }
});
