//! The house: imports between the library's top-level modules run one way (no cycle), as
//! docs/architecture.md lays them out. Read from the shipped code's own `crate::` paths (unit
//! test modules may reach further).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`src/queue/commit.rs` → `queue`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The modules a file names through `crate::NAME`, test code included.
fn imports(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .filter_map(|(i, _)| {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// A cycle in `graph`, if there is one, as the list of modules around it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut ring = path[at..].to_vec();
            ring.push(node.to_string());
            return Some(ring);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(ring) = visit(next, graph, path, done) {
                return Some(ring);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// Each top-level module and the modules its shipped code names (unit tests left out: they
/// may build whatever they test with).
fn shipped_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let edges = graph.entry(module.clone()).or_default();
        // Unit tests may build whatever they test with; only the shipped code counts.
        if file
            .file_stem()
            .is_some_and(|s| s.to_string_lossy().ends_with("tests"))
        {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let shipped = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        edges.extend(imports(shipped).into_iter().filter(|m| *m != module));
    }
    graph
}

/// docs/architecture.md, the rules' text.
fn architecture_doc() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
        .expect("read docs/architecture.md")
}

#[test]
fn module_imports_run_one_way() {
    let graph = shipped_graph();
    assert!(
        graph.len() > 20,
        "too few modules found: {:?}",
        graph.keys()
    );
    let known: BTreeSet<&String> = graph.keys().collect();
    for (m, edges) in &graph {
        for e in edges {
            assert!(
                known.contains(e),
                "{m} imports crate::{e}, which is not a module"
            );
        }
    }
    if let Some(ring) = cycle(&graph) {
        panic!(
            "the modules import each other in a ring: {}; see docs/architecture.md",
            ring.join(" -> ")
        );
    }
    let allowed = allowed_imports(&architecture_doc());
    for (m, edges) in &graph {
        let Some(may) = allowed.get(m) else {
            panic!("docs/architecture.md has no paragraph for the module `{m}`");
        };
        for e in edges {
            assert!(
                may.as_ref().is_none_or(|may| may.contains(e)),
                "{m} imports crate::{e}, which docs/architecture.md does not let it import \
                 (it may import {may:?})"
            );
        }
    }
}

/// The leaves: the modules of docs/architecture.md's "Leaves" section, and those whose
/// paragraph lets them import nothing.
fn leaves(doc: &str) -> BTreeSet<String> {
    let section = doc
        .split("\n## Leaves")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_default();
    let listed = allowed_imports(section).into_keys();
    let bare = allowed_imports(doc)
        .into_iter()
        .filter(|(_, may)| may.as_ref().is_some_and(BTreeSet::is_empty))
        .map(|(m, _)| m);
    listed.chain(bare).collect()
}

/// The dispatcher knows the queue and the sinks, and above the leaves nothing else: the change
/// feed (and any stage like it) comes to it as a sink, so it can be taken out or added alone.
#[test]
fn dispatch_imports_only_the_queue_and_the_sinks() {
    let graph = shipped_graph();
    let leaves = leaves(&architecture_doc());
    for leaf in ["clock", "metrics", "retry", "event", "health"] {
        assert!(
            leaves.contains(leaf),
            "{leaf} is not read as a leaf: {leaves:?}"
        );
    }
    assert!(
        !leaves.contains("queue") && !leaves.contains("enrich"),
        "{leaves:?}"
    );
    let others: Vec<&String> = graph["dispatch"]
        .iter()
        .filter(|m| !leaves.contains(*m) && !["queue", "sinks"].contains(&m.as_str()))
        .collect();
    assert!(
        others.is_empty(),
        "dispatch imports {others:?}: it may import only the queue, the sinks and leaves"
    );
}

/// Each module's paragraph in docs/architecture.md (`- **`name.rs`** — ...`) and what its
/// "May import" sentence lists; `None` for "everything below"; nothing listed, nothing allowed.
/// Names in parentheses are the items used, not modules.
fn allowed_imports(doc: &str) -> BTreeMap<String, Option<BTreeSet<String>>> {
    let mut paragraphs: Vec<(String, String)> = Vec::new();
    for line in doc.lines() {
        if let Some(rest) = line.strip_prefix("- **`") {
            let name = rest.split('`').next().unwrap_or_default();
            let name = name.trim_end_matches(".rs").trim_end_matches('/');
            paragraphs.push((name.to_string(), rest.to_string()));
        } else if line.starts_with("  ") && !paragraphs.is_empty() {
            if let Some((_, text)) = paragraphs.last_mut() {
                text.push(' ');
                text.push_str(line.trim());
            }
        } else if !paragraphs.is_empty() {
            paragraphs.push((String::new(), String::new()));
        }
    }
    paragraphs
        .into_iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, text)| {
            let Some(at) = text.find("May import") else {
                return (name, Some(BTreeSet::new()));
            };
            let sentence = text[at..].split(". ").next().unwrap_or_default();
            if sentence.contains("everything") {
                return (name, None);
            }
            let mut plain = String::new();
            let mut depth = 0;
            for c in sentence.chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ if depth == 0 => plain.push(c),
                    _ => {}
                }
            }
            let names = plain
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            (name, Some(names))
        })
        .collect()
}

#[test]
fn the_allowed_imports_are_read_from_the_paragraphs() {
    let doc = "- **`a.rs`** — owns x (`A`). May import `b` (`B`), `c`.\n  More text.\n\
               - **`b/`** — owns y.\n- **`s.rs`** — all. May import everything below.\n";
    let allowed = allowed_imports(doc);
    assert_eq!(
        allowed["a"],
        Some(BTreeSet::from(["b".to_string(), "c".to_string()]))
    );
    assert_eq!(allowed["b"], Some(BTreeSet::new()));
    assert_eq!(allowed["s"], None);
}

#[test]
fn a_ring_is_found() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle(&g).map(|r| r.len()), Some(4));
    g.entry("c".into()).or_default().remove("a");
    assert_eq!(cycle(&g), None);
    assert_eq!(
        imports("use crate::queue::{A}; crate::clock::now_ms(); cratex::y"),
        BTreeSet::from(["clock".to_string(), "queue".to_string()])
    );
}

/// Inside a sink's folder imports run one way too: `config.rs` builds the other parts, so none
/// of them may name it or the settings type it defines (each declares the settings it reads).
#[test]
fn inside_a_sink_folder_nothing_imports_its_config() {
    let sinks = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sinks");
    let mut folders = 0;
    for entry in std::fs::read_dir(&sinks).expect("read src/sinks").flatten() {
        let dir = entry.path();
        let Ok(module) = std::fs::read_to_string(dir.join("mod.rs")) else {
            continue;
        };
        folders += 1;
        let settings = module
            .lines()
            .find_map(|l| l.strip_prefix("pub use config::"))
            .map(|rest| rest.trim_end_matches(';').to_string())
            .unwrap_or_else(|| panic!("{} re-exports no settings type", dir.display()));
        for file in std::fs::read_dir(&dir)
            .expect("read a sink folder")
            .flatten()
        {
            let path = file.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name == "config.rs" || name == "mod.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            let shipped = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: Vec<&str> = shipped
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            for word in ["super::config", settings.as_str()] {
                assert!(
                    !code.iter().any(|l| l.contains(word)),
                    "{} names `{word}`: config.rs builds this part, so it may not import it back",
                    path.display()
                );
            }
        }
    }
    assert!(folders >= 5, "too few sink folders found: {folders}");
}

/// A sender's folder imports nothing of another sender's: what senders share is in
/// `senders/mod.rs` (and `json.rs`), so a sender can be added or removed alone.
#[test]
fn a_sender_folder_imports_no_other_sender() {
    let senders = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/senders");
    let folders: Vec<String> = std::fs::read_dir(&senders)
        .expect("read src/senders")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(folders.len() >= 4, "too few sender folders: {folders:?}");
    for folder in &folders {
        let mut files = Vec::new();
        sources(&senders.join(folder), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            let shipped = text.split("#[cfg(test)]").next().unwrap_or_default();
            for other in folders.iter().filter(|o| *o != folder) {
                for path in [
                    format!("senders::{other}"),
                    format!("super::super::{other}"),
                ] {
                    assert!(
                        !shipped.contains(&path),
                        "{} names `{path}`: a sender's folder imports nothing of another sender's",
                        file.display()
                    );
                }
            }
        }
    }
}
