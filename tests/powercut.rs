//! Power cut: the queue on a file system that forgets every write not yet fsync'd
//! (`tests/powercut/lazyfs.py`, the method of LazyFS). Deliveries are posted, the daemon is
//! SIGKILLed and the power cut within milliseconds of the last 200, the file system is mounted
//! again over what survived and the daemon restarted: every acknowledged event must be
//! delivered, and the store must open without sled finding anything of it corrupt.
//!
//! Needs root, /dev/fuse and fusepy: under `CI=true` a missing piece fails the test, naming
//! what to install; elsewhere the test says loudly that it did not run.
//! `HOOKBRIDGE_POWERCUT_CASES=fresh,sighup` runs only the cases whose name holds one of those.

mod common;
#[path = "powercut/load.rs"]
mod load;
#[path = "powercut/mount.rs"]
mod mount;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Daemon;
use load::{Acked, Tail, client};
use mount::{LazyFs, mount_or_skip};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
max_body = "1MiB"

[storage]
path = "{dir}/mnt/data"
min_free = "8MiB"
{storage}

[hooks.portal]
kind = "portal"
secrets = ["example-signature-key"]

[hooks.held]
kind = "portal"
secrets = ["example-signature-key"]

[sinks.log]
type = "file"
path = "{dir}/{sink}"

[sinks.held]
type = "file"
path = "{dir}/{held}"

[[routes]]
match = { hook = "portal" }
to = ["log"]

[[routes]]
match = { hook = "held" }
to = ["held"]
"#;

/// When the power goes.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Right after the last of this many deliveries, posted one after another, got its 200.
    AfterSequential(usize),
    /// Under `clients` concurrent clients, a random moment after `acks` acknowledgements.
    UnderLoad { clients: usize, acks: usize },
    /// Under load, as soon as the log shows a retention pass that removed rows.
    DuringRetention { clients: usize },
    /// Under load, a few milliseconds after a SIGHUP (the config is reloaded).
    DuringSighup { clients: usize },
}

/// One power cut.
struct Case {
    /// What the line of the report starts with.
    name: &'static str,
    /// Whether the store already served (deliveries, delivered, a clean stop and a restart).
    used: bool,
    /// Padding in each delivery, bytes.
    pad: usize,
    /// When the power goes.
    cut: Cut,
    /// Extra `[storage]` lines.
    storage: &'static str,
    /// Where the sink `log` writes, under the test directory (`mnt/` is on the cut disk).
    sink: &'static str,
    /// The hooks the clients post to until the cut: `portal` goes to `log`, delivered as it
    /// comes; `held` goes to a sink that cannot write until the restart, so every event
    /// acknowledged there has to come out of the queue.
    to: &'static [&'static str],
    /// The release whose queue (`tests/upgrade/<release>`) the store starts from: this build
    /// converts it at its first start, and every event it held must come out after the cut.
    from: Option<&'static str>,
}

/// Where the sink `held` writes until the restart: nowhere, `routes.toml` is a file.
const HELD: &str = "routes.toml/held.jsonl";
/// Where it writes after the restart.
const HELD_AFTER: &str = "held.jsonl";

/// Padding of a small delivery (about 1 KB in all).
const SMALL: usize = 600;
/// Over 256 KiB: far past sled's blob threshold (a quarter of a 512 KiB segment).
const LARGE: usize = 300 * 1024;

const CASES: &[Case] = &[
    Case {
        name: "fresh store, 200 small deliveries one after another",
        used: false,
        pad: SMALL,
        cut: Cut::AfterSequential(200),
        storage: "",
        to: &["held"],
        sink: "events.jsonl",
        from: None,
    },
    Case {
        name: "used store, 200 small deliveries one after another",
        used: true,
        pad: SMALL,
        cut: Cut::AfterSequential(200),
        storage: "",
        to: &["held"],
        sink: "events.jsonl",
        from: None,
    },
    Case {
        name: "fresh store, 20 deliveries of 300 KiB",
        used: false,
        pad: LARGE,
        cut: Cut::AfterSequential(20),
        storage: "",
        to: &["held"],
        sink: "events.jsonl",
        from: None,
    },
    Case {
        name: "used store, 20 deliveries of 300 KiB",
        used: true,
        pad: LARGE,
        cut: Cut::AfterSequential(20),
        storage: "",
        to: &["held"],
        sink: "events.jsonl",
        from: None,
    },
    Case {
        name: "group commit, 16 concurrent clients",
        used: true,
        pad: SMALL,
        cut: Cut::UnderLoad {
            clients: 16,
            acks: 300,
        },
        storage: "",
        to: &["held"],
        sink: "events.jsonl",
        from: None,
    },
    Case {
        name: "during retention, 30 KiB deliveries",
        used: false,
        pad: 30 * 1024,
        cut: Cut::DuringRetention { clients: 4 },
        storage: r#"keep_delivered = "1s""#,
        to: &["portal", "held"],
        sink: "events.jsonl",
        from: None,
    },
    Case {
        name: "during a SIGHUP",
        used: false,
        pad: SMALL,
        cut: Cut::DuringSighup { clients: 8 },
        storage: "",
        to: &["held"],
        sink: "events.jsonl",
        from: None,
    },
    Case {
        name: "file sink on the same disk",
        used: false,
        pad: SMALL,
        cut: Cut::AfterSequential(100),
        storage: "",
        to: &["portal"],
        sink: "mnt/events.jsonl",
        from: None,
    },
    Case {
        name: "upgrade from release ea44360, then 100 deliveries one after another",
        used: false,
        pad: SMALL,
        cut: Cut::AfterSequential(100),
        storage: "",
        to: &["held"],
        sink: "routes.toml/events.jsonl",
        from: Some("ea44360"),
    },
];

/// Unpacks the queue an earlier release wrote into `mnt/`, synced (as if it had been there
/// for long), and returns the ids of the events it holds.
fn unpack_release(dir: &Path, release: &str) -> HashSet<String> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/upgrade")
        .join(release);
    let mnt = dir.join("mnt");
    let untar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture.join("queue.tar.gz"))
        .arg("-C")
        .arg(&mnt)
        .status()
        .expect("tar is installed");
    assert!(untar.success(), "tar -xzf {}", fixture.display());
    for sub in ["data/queue/blobs", "data/queue", "data"] {
        let d = mnt.join(sub);
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::File::open(&path).unwrap().sync_all().unwrap();
            }
        }
        sync_dir(&d);
    }
    sync_dir(&mnt);
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    expected["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Event ids the two file sinks hold.
fn delivered(d: &Daemon, sink: &str) -> HashSet<String> {
    [sink, HELD_AFTER]
        .iter()
        .flat_map(|f| d.jsonl(f))
        .filter_map(|l| l["event_id"].as_str().map(String::from))
        .collect()
}

/// Waits until every id of `acked` is in the sink; returns those that never came.
async fn missing_after(d: &Daemon, sink: &str, acked: &HashSet<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = delivered(d, sink);
        if acked.is_subset(&got) || Instant::now() > deadline {
            return acked.difference(&got).cloned().collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Points a file sink from `from` to `to` (under the test directory) from the next start on.
fn sink_to(d: &Daemon, from: &str, to: &str) {
    let dir = d.dir.path().display().to_string();
    let text = std::fs::read_to_string(&d.config).unwrap().replace(
        &format!("path = \"{dir}/{from}\""),
        &format!("path = \"{dir}/{to}\""),
    );
    std::fs::write(&d.config, text).unwrap();
}

/// Posts to `portal`, waits for it all to be delivered, stops cleanly and restarts: a store
/// that served.
async fn use_store(d: &mut Daemon, case: &Case, acked: &Arc<Mutex<Acked>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let limit = if case.pad > SMALL { 12 } else { 300 };
            tokio::spawn(client(
                d.url.clone(),
                "portal",
                900_000_000 + c * 1_000_000,
                case.pad,
                acked.clone(),
                stop.clone(),
                Some(limit),
            ))
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let ids = acked.lock().unwrap().ids.clone();
    let missing = missing_after(d, case.sink, &ids).await;
    assert!(
        missing.is_empty(),
        "{}: before the cut: {missing:?}",
        case.name
    );
    let status = d.stop();
    assert!(
        status.success(),
        "{}: stop: {status}\n{}",
        case.name,
        d.log_text()
    );
    d.spawn();
}

/// What one case found.
struct Found {
    acked: usize,
    lost: Vec<String>,
    /// Milliseconds from the last 200 to the cut.
    gap_ms: u128,
    /// Lines of the restart's log that say something was found corrupt.
    corrupt: Vec<String>,
    /// sled's blob files that survived the cut.
    blobs: usize,
}

/// Runs the clients and cuts the power as `case.cut` says: SIGKILL to the daemon, then the cut.
async fn post_and_cut(d: &mut Daemon, fs: &mut LazyFs, case: &Case, acked: &Arc<Mutex<Acked>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |clients: u64, limit: Option<usize>| -> Vec<tokio::task::JoinHandle<()>> {
        (0..clients)
            .map(|c| {
                tokio::spawn(client(
                    d.url.clone(),
                    case.to[c as usize % case.to.len()],
                    c * 1_000_000,
                    case.pad,
                    acked.clone(),
                    stop.clone(),
                    limit,
                ))
            })
            .collect()
    };
    let count = |a: &Arc<Mutex<Acked>>| a.lock().unwrap().ids.len();
    let before = count(acked);
    let mut log = Tail::new(&d.path("daemon.log"));
    let tasks = match case.cut {
        Cut::AfterSequential(n) => {
            for t in spawn(1, Some(before + n)) {
                t.await.unwrap();
            }
            Vec::new()
        }
        Cut::UnderLoad { clients, acks } => {
            let tasks = spawn(clients as u64, None);
            while count(acked) < before + acks {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 300)).await;
            tasks
        }
        Cut::DuringRetention { clients } => {
            let tasks = spawn(clients as u64, None);
            let deadline = Instant::now() + Duration::from_secs(20);
            while !log.read().contains("retention pass") {
                assert!(
                    Instant::now() < deadline,
                    "{}: no retention pass\n{}",
                    case.name,
                    d.log_text()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tasks
        }
        Cut::DuringSighup { clients } => {
            let tasks = spawn(clients as u64, None);
            while count(acked) < before + 100 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            d.signal("HUP");
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 20)).await;
            tasks
        }
    };
    d.kill9();
    fs.cut();
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
}

/// One case on its own file system; None when the file system cannot run here.
async fn run(case: &Case) -> Option<Found> {
    let dir = tempfile::tempdir().unwrap();
    let mut fs = mount_or_skip(dir.path(), "a_power_cut_loses_no_acknowledged_event")?;
    let config = CONFIG
        .replace("{storage}", case.storage)
        .replace("{sink}", case.sink)
        .replace("{held}", HELD);
    let acked = Arc::new(Mutex::new(Acked::default()));
    if let Some(release) = case.from {
        let held = unpack_release(dir.path(), release);
        acked.lock().unwrap().ids.extend(held);
    }
    let mut d = Daemon::start_in(&config, dir, &[]);
    if case.used {
        use_store(&mut d, case, &acked).await;
    }
    post_and_cut(&mut d, &mut fs, case, &acked).await;
    let cut = Instant::now();
    let blobs = std::fs::read_dir(fs.backing.join("data/queue/blobs")).map_or(0, |d| d.count());
    let (ids, last) = {
        let a = acked.lock().unwrap();
        (a.ids.clone(), a.last)
    };
    fs.remount();
    sink_to(&d, HELD, HELD_AFTER);
    // A sink that could not write before the cut (under `routes.toml/`) writes after it.
    let sink = case.sink.strip_prefix("routes.toml/").unwrap_or(case.sink);
    sink_to(&d, case.sink, sink);
    let mut log = Tail::new(&d.path("daemon.log"));
    d.spawn();
    let lost = missing_after(&d, sink, &ids).await;
    let corrupt = log
        .read()
        .lines()
        .filter(|l| l.contains("corrupt"))
        .map(String::from)
        .collect();
    d.kill9();
    drop(fs);
    Some(Found {
        acked: ids.len(),
        lost,
        gap_ms: last.map_or(0, |l| cut.duration_since(l).as_millis()),
        corrupt,
        blobs,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_no_acknowledged_event() {
    let only = std::env::var("HOOKBRIDGE_POWERCUT_CASES").ok();
    let mut failed = Vec::new();
    for case in CASES {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|w| case.name.contains(w)))
        {
            continue;
        }
        let started = Instant::now();
        let Some(f) = run(case).await else { return };
        let line = format!(
            "{}: {} acknowledged, {} lost, cut {} ms after the last 200, {} blob file(s) kept, {} corrupt-store line(s), {:.1} s",
            case.name,
            f.acked,
            f.lost.len(),
            f.gap_ms,
            f.blobs,
            f.corrupt.len(),
            started.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        // Deliveries over 256 KiB are stored in sled's blob files: the case must have used them.
        let no_blobs = case.pad >= LARGE && f.blobs == 0;
        if !f.lost.is_empty() || !f.corrupt.is_empty() || no_blobs {
            failed.push(format!(
                "{line} (e.g. {:?}; {:?})",
                f.lost.iter().take(3).collect::<Vec<_>>(),
                f.corrupt.first()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "power cuts lost data:\n{}",
        failed.join("\n")
    );
}

fn write_file(path: &Path, bytes: &[u8], sync: bool) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    if sync {
        f.sync_all().unwrap();
    }
}

fn sync_dir(path: &Path) {
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn the_file_system_keeps_what_was_synced_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut fs) = mount_or_skip(dir.path(), "the_file_system_keeps_what_was_synced") else {
        return;
    };
    let m = fs.mnt.clone();
    write_file(&m.join("kept"), b"synced", true);
    write_file(&m.join("renamed.tmp"), b"renamed", true);
    std::fs::create_dir(m.join("sub")).unwrap();
    write_file(&m.join("sub/inner"), &vec![7u8; 300_000], true);
    sync_dir(&m.join("sub"));
    sync_dir(&m);
    // Nothing below is followed by the syncs that would keep it.
    write_file(&m.join("never-synced"), b"gone", false);
    write_file(&m.join("file-synced-only"), b"no entry", true);
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("kept"))
        .unwrap()
        .write_all(b" and more")
        .unwrap();
    std::fs::rename(m.join("renamed.tmp"), m.join("renamed")).unwrap();
    std::fs::remove_file(m.join("sub/inner")).unwrap();
    fs.remount();
    assert_eq!(std::fs::read(m.join("kept")).unwrap(), b"synced");
    assert!(!m.join("never-synced").exists());
    assert!(!m.join("file-synced-only").exists());
    assert!(!m.join("renamed").exists());
    assert_eq!(std::fs::read(m.join("renamed.tmp")).unwrap(), b"renamed");
    assert_eq!(std::fs::read(m.join("sub/inner")).unwrap().len(), 300_000);
    // The rename and the removal, once their directories are synced, stay.
    std::fs::rename(m.join("renamed.tmp"), m.join("renamed")).unwrap();
    std::fs::remove_file(m.join("sub/inner")).unwrap();
    sync_dir(&m);
    sync_dir(&m.join("sub"));
    fs.remount();
    assert_eq!(std::fs::read(m.join("renamed")).unwrap(), b"renamed");
    assert!(!m.join("renamed.tmp").exists());
    assert!(!m.join("sub/inner").exists());
}
