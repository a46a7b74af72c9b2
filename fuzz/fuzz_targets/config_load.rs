//! `Config::parse` on arbitrary text, anchored in a scratch directory that holds a copy of the
//! shipped templates.
//!
//! Invariants: never panics; every problem names a key and a non-empty message, and a line
//! within the file; a config that parses is re-checkable (parsing the same text again accepts it
//! with the same hooks, sinks and listen address).
//!
//! Inputs naming device or kernel files are skipped: `file:` secrets, TLS paths and template
//! files are read at load, and `/dev/zero` would only measure the fuzzer's memory limit.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use hookbridge::config::Config;
use libfuzzer_sys::fuzz_target;

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("hookbridge-fuzz-config-{}", std::process::id()));
        let templates = dir.join("templates");
        std::fs::create_dir_all(&templates).unwrap();
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../templates");
        for entry in std::fs::read_dir(shipped).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), templates.join(entry.file_name())).unwrap();
        }
        dir.join("routes.toml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if ["dev", "proc", "sys", "env:"]
        .iter()
        .any(|s| text.contains(s))
    {
        return;
    }
    let path = config_path();
    match Config::parse(path, text) {
        Ok(cfg) => {
            let again = Config::parse(path, text).expect("a config that parsed parses again");
            assert_eq!(again.listen, cfg.listen);
            assert!(cfg.hooks.keys().eq(again.hooks.keys()));
            assert!(cfg.sinks.keys().eq(again.sinks.keys()));
            assert_eq!(again.storage.path, cfg.storage.path);
            for hook in cfg.hooks.values() {
                if hook.require_auth == Some(true) {
                    assert!(!hook.secrets.is_empty());
                }
            }
        }
        Err(problems) => {
            assert!(!problems.is_empty());
            let lines = text.matches('\n').count() + 1;
            for p in &problems {
                assert!(!p.key.is_empty());
                let _ = p.to_string();
                if let Some(line) = p.line {
                    assert!(line >= 1 && line <= lines, "line {line} of {lines}: {p}");
                }
            }
        }
    }
});
