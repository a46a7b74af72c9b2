//! The command sink end to end: the real daemon runs real programs (small `#!/bin/sh` scripts
//! written per test, which record what they got) for a captured portal delivery whose item id
//! each test sets: argv and stdin intact whatever the id holds, the environment allow-list and
//! its secrets, retries by exit status with the attempt history, dead letters with the stderr
//! tail, the timeout killing the process group, the concurrency limit, and `check`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BASE_CONFIG, Daemon};
use serde_json::Value;

const ADMIN: &str = "admin-token-command-0123";

/// A daemon config: the base hooks with an admin token, fast retries, `sinks` (TOML), and
/// deleted portal items routed to `restore`.
fn config(sinks: &str) -> String {
    let base = BASE_CONFIG.replace(
        "[server]\n",
        &format!("[server]\nadmin_token = \"{ADMIN}\"\n"),
    );
    format!(
        r#"
{base}
[defaults.retry]
attempts = 3
backoff = {{ first = "100ms", max = "200ms" }}

{sinks}

[[routes]]
name = "restore protected services when they are deleted"
match = {{ source = "item", operation = "delete" }}
to = ["restore"]
"#
    )
}

/// Writes an executable `#!/bin/sh` script `name` into `dir`; `{dir}` in `body` is `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let body = body.replace("{dir}", &dir.display().to_string());
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The item-add delivery captured from a real portal, turned into the deletes of items `ids`.
fn deleted(ids: &[&str]) -> Vec<u8> {
    let real = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/real/jpeterson-techtrek2019_portal_item-add.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(real).unwrap()).unwrap();
    let event = v["events"][0].clone();
    v["events"] = ids
        .iter()
        .map(|id| {
            let mut e = event.clone();
            e["operation"] = Value::from("delete");
            e["id"] = Value::from(*id);
            e
        })
        .collect();
    serde_json::to_vec(&v).unwrap()
}

/// Posts a signed body to the portal hook; returns the accepted event ids.
async fn post(d: &Daemon, body: &[u8]) -> Vec<String> {
    let a = d.post_signed("portal", body).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.accepted()
}

/// A GET of the admin API, as JSON.
async fn admin(d: &Daemon, path: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}{path}", d.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// Where event `id` stands at the sink `restore` (`ready`, `waiting`, `delivered`, `dead`).
async fn state(d: &Daemon, id: &str) -> String {
    let status = admin(d, &format!("/admin/events/{id}")).await;
    status["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["sink"] == "restore")
        .and_then(|x| x["state"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Waits (20 s at most) until event `id` is `wanted` at `restore`.
async fn wait_state(d: &Daemon, id: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = state(d, id).await;
        if now == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "event {id} is {now:?}, not {wanted}:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The dead letter of event `id` at `restore`.
async fn dead_letter(d: &Daemon, id: &str) -> Value {
    wait_state(d, id, "dead").await;
    let letters = admin(d, &format!("/admin/dlq?sink=restore&id={id}")).await;
    letters[0].clone()
}

/// Waits (20 s at most) until `path` exists.
async fn wait_file(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// A portal delete whose item id holds quotes, spaces, `;`, `$()`, backticks and a pipe: each
/// would do something in a shell.
const HOSTILE_ID: &str =
    "svc a\"b'c; touch {dir}/pwned $(touch {dir}/pwned) `touch {dir}/pwned` | tee {dir}/pwned";

#[tokio::test]
async fn a_deleted_item_runs_the_program_with_its_argv_stdin_and_only_the_named_environment() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path();
    std::fs::write(at.join("secret"), "file-SECRET-7f3a\n").unwrap();
    script(
        at,
        "restore",
        "cat > {dir}/stdin\nenv > {dir}/env\nprintf '%s\\0' \"$@\" > {dir}/argv.tmp\nmv {dir}/argv.tmp {dir}/argv",
    );
    let sink = r#"
[sinks.restore]
type = "command"
program = "{dir}/restore"
args = ["--service", "{{ id }}", "--who={{ user }}", "{{ operation }}"]
stdin = "event"
env = { API_TOKEN = "env:RESTORE_TOKEN", PORTAL_PASSWORD = "file:{dir}/secret", MODE = "restore" }
pass_env = ["PASSED_THROUGH", "NOT_IN_THE_DAEMON"]
timeout = "10s"
"#;
    let daemon_env = [
        ("RESTORE_TOKEN", "env-SECRET-91c2"),
        ("PASSED_THROUGH", "yes"),
        ("NOT_LISTED", "daemon-only"),
    ];
    let d = Daemon::start_in(&config(sink), dir, &daemon_env);
    let id = HOSTILE_ID.replace("{dir}", &d.dir.path().display().to_string());
    let ids = post(&d, &deleted(&[&id])).await;
    assert!(wait_file(&d.path("argv")).await, "{}", d.log_text());

    let argv = std::fs::read(d.path("argv")).unwrap();
    let argv: Vec<&str> = std::str::from_utf8(&argv)
        .unwrap()
        .strip_suffix('\0')
        .unwrap()
        .split('\0')
        .collect();
    assert_eq!(
        argv,
        ["--service", id.as_str(), "--who=portaladmin", "delete"]
    );
    assert!(!d.path("pwned").exists(), "a value was run by a shell");

    let stdin: Value = serde_json::from_slice(&std::fs::read(d.path("stdin")).unwrap()).unwrap();
    assert_eq!(stdin["id"], id.as_str());
    assert_eq!(stdin["event_id"], ids[0].as_str());
    assert_eq!(stdin["operation"], "delete");

    let env = std::fs::read_to_string(d.path("env")).unwrap();
    let mut names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    names.sort();
    for line in [
        "API_TOKEN=env-SECRET-91c2",
        "PORTAL_PASSWORD=file-SECRET-7f3a",
        "MODE=restore",
        "PASSED_THROUGH=yes",
        "PATH=/usr/bin:/bin",
        &format!("HOOKBRIDGE_EVENT_ID={}", ids[0]),
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from:\n{env}"
        );
    }
    // What the shell adds itself (PWD, SHLVL, `_`) aside, nothing else.
    let ours: Vec<&str> = names
        .into_iter()
        .filter(|n| !matches!(*n, "PWD" | "SHLVL" | "_" | "OLDPWD"))
        .collect();
    assert_eq!(
        ours,
        [
            "API_TOKEN",
            "HOOKBRIDGE_EVENT_ID",
            "MODE",
            "PASSED_THROUGH",
            "PATH",
            "PORTAL_PASSWORD"
        ],
        "{env}"
    );
    wait_state(&d, &ids[0], "delivered").await;

    // explain shows the argv and the variables' names, never a secret.
    std::fs::write(d.path("payload.json"), deleted(&["svc-1"])).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["explain", "--hook", "portal", "--config"])
        .arg(&d.config)
        .arg(d.path("payload.json"))
        .envs(daemon_env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_str(&text).unwrap();
    let message = &shown["events"][0]["deliveries"][0]["message"];
    assert_eq!(
        message["argv"],
        serde_json::json!([
            d.path("restore"),
            "--service",
            "svc-1",
            "--who=portaladmin",
            "delete"
        ])
    );
    assert_eq!(message["env"]["API_TOKEN"], "***");
    assert_eq!(message["env"]["PORTAL_PASSWORD"], "***");
    for secret in ["env-SECRET-91c2", "file-SECRET-7f3a"] {
        assert!(!text.contains(secret), "explain shows a secret:\n{text}");
        assert!(!d.log_text().contains(secret), "the log shows a secret");
    }
}

#[tokio::test]
async fn a_value_that_would_become_an_option_is_dead_lettered_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "restore", "echo ran >> {dir}/ran");
    let sink = r#"
[sinks.restore]
type = "command"
program = "{dir}/restore"
args = ["--service", "{{ id }}"]
"#;
    let d = Daemon::start_in(&config(sink), dir, &[]);
    let ids = post(&d, &deleted(&["--delete-everything"])).await;
    let letter = dead_letter(&d, &ids[0]).await;
    let error = letter["error"].as_str().unwrap();
    assert!(
        error.contains("args[1] rendered \"--delete-everything\"")
            && error.contains("may not become an option")
            && error.contains("not run"),
        "{error}"
    );
    assert_eq!(letter["attempts"], 1);
    assert!(!d.path("ran").exists(), "the program ran");
}

#[tokio::test]
async fn a_retried_exit_status_then_success_are_both_in_the_attempt_history() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "restore",
        "echo run >> {dir}/runs\nif [ \"$(wc -l < {dir}/runs)\" -lt 2 ]; then echo 'portal busy, try later' >&2; exit 75; fi",
    );
    let sink = r#"
[sinks.restore]
type = "command"
program = "{dir}/restore"
stdin = "none"
"#;
    let d = Daemon::start_in(&config(sink), dir, &[]);
    let ids = post(&d, &deleted(&["svc-busy"])).await;
    wait_state(&d, &ids[0], "delivered").await;
    assert_eq!(
        std::fs::read_to_string(d.path("runs"))
            .unwrap()
            .lines()
            .count(),
        2
    );

    let page = event_page(&d, &ids[0]).await;
    let retry = page
        .split("<tr>")
        .find(|row| row.contains("outcome-retry"))
        .unwrap_or_else(|| panic!("no retry row:\n{page}"));
    assert!(
        retry.contains("exited with status 75 after ")
            && retry.contains(" ms")
            && retry.contains("stderr: portal busy, try later"),
        "{retry}"
    );
    let delivered = page
        .split("<tr>")
        .find(|row| row.contains("outcome-delivered"))
        .unwrap_or_else(|| panic!("no delivered row:\n{page}"));
    assert!(
        delivered.contains("restore exited with status 0 after ") && delivered.contains(" ms"),
        "the delivered attempt keeps its exit status and run time: {delivered}"
    );
}

/// The status page of event `id`, signed in with the admin token.
async fn event_page(d: &Daemon, id: &str) -> String {
    d.ui_page(ADMIN, &format!("/ui/events/{id}")).await
}

#[tokio::test]
async fn another_exit_status_is_dead_lettered_with_the_stderr_tail_only() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "restore",
        "echo run >> {dir}/runs\necho STDOUT-MARKER\nhead -c 6000 /dev/zero | tr '\\0' 'e' >&2\nprintf 'item gone\\nfor good\\033[31m red\\r\\n' >&2\nexit 3",
    );
    let sink = r#"
[sinks.restore]
type = "command"
program = "{dir}/restore"
"#;
    let d = Daemon::start_in(&config(sink), dir, &[]);
    let ids = post(&d, &deleted(&["svc-gone"])).await;
    let letter = dead_letter(&d, &ids[0]).await;
    let error = letter["error"].as_str().unwrap();
    assert!(
        error.contains("restore exited with status 3 after ")
            && error.contains("; stderr: …eee")
            && error.ends_with("eeeitem gone\\nfor good\\u{1b}[31m red"),
        "{error}"
    );
    assert!(error.chars().count() < 700, "{}", error.len());
    assert!(!error.contains("STDOUT-MARKER"), "{error}");
    assert_eq!(letter["attempts"], 1, "not retried");
    assert_eq!(
        std::fs::read_to_string(d.path("runs"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

/// Whether process `pid` is gone (or a zombie its parent has not reaped yet).
async fn gone(pid: &str) -> bool {
    for _ in 0..100 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')) => {
                return true;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    false
}

#[tokio::test]
async fn the_timeout_kills_the_whole_process_group_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "restore",
        "echo $$ >> {dir}/pids\nsleep 1000 &\necho $! >> {dir}/pids\nsleep 1000 &\necho $! >> {dir}/pids\nwait",
    );
    let sink = r#"
[sinks.restore]
type = "command"
program = "{dir}/restore"
timeout = "500ms"

[sinks.restore.retry]
attempts = 2
backoff = { first = "100ms", max = "100ms" }
"#;
    let d = Daemon::start_in(&config(sink), dir, &[]);
    let ids = post(&d, &deleted(&["svc-slow"])).await;
    let letter = dead_letter(&d, &ids[0]).await;
    let error = letter["error"].as_str().unwrap();
    assert!(
        error.starts_with("gave up after 2 attempts: ")
            && error.contains("did not finish within 500ms; its process group was killed"),
        "{error}"
    );
    let pids = std::fs::read_to_string(d.path("pids")).unwrap();
    let pids: Vec<&str> = pids.lines().collect();
    assert_eq!(pids.len(), 6, "three processes per attempt: {pids:?}");
    for pid in pids {
        assert!(gone(pid).await, "process {pid} survived the timeout");
    }
}

#[tokio::test]
async fn no_more_runs_at_once_than_max_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "restore",
        "echo \"start $(date +%s%N)\" >> {dir}/log\nsleep 0.3\necho \"end $(date +%s%N)\" >> {dir}/log",
    );
    let sink = r#"
[sinks.restore]
type = "command"
program = "{dir}/restore"
max_in_flight = 2
"#;
    let d = Daemon::start_in(&config(sink), dir, &[]);
    let ids = post(&d, &deleted(&["a", "b", "c", "d", "e", "f", "g"])).await;
    assert_eq!(ids.len(), 7);
    for id in &ids {
        wait_state(&d, id, "delivered").await;
    }
    let mut marks: Vec<(u128, i32)> = std::fs::read_to_string(d.path("log"))
        .unwrap()
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (at.parse().unwrap(), if what == "start" { 1 } else { -1 })
        })
        .collect();
    assert_eq!(marks.len(), 14);
    // At the same instant an end counts before a start.
    marks.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in marks {
        now += step;
        most = most.max(now);
    }
    assert_eq!(most, 2, "runs at once");
}

#[test]
fn check_refuses_a_program_it_cannot_run_and_a_bad_template_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path();
    let ok = script(at, "ok", "echo ran >> {dir}/ran");
    let plain = script(at, "plain", "echo ran >> {dir}/ran");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:1"
[storage]
path = "{dir}/data"
[hooks.portal]
kind = "portal"

[sinks.relative]
type = "command"
program = "bin/restore-service"

[sinks.missing]
type = "command"
program = "{dir}/nowhere"

[sinks.plain]
type = "command"
program = "{plain}"

[sinks.restore]
type = "command"
program = "{ok}"
args = ["--service", "{{{{ id"]
env = {{ "NO-GOOD" = "x" }}

[[routes]]
match = {{}}
to = ["relative", "missing", "plain", "restore"]
"#,
        dir = at.display(),
        plain = plain.display(),
        ok = ok.display()
    );
    let config = at.join("routes.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    let problems: Vec<&str> = all
        .lines()
        .filter_map(|l| l.split("routes.toml: ").nth(1))
        .collect();
    let expected = [
        (
            "sinks.missing.program (line 14)",
            "No such file or directory",
        ),
        ("sinks.plain.program (line 18)", "is not executable"),
        (
            "sinks.relative.program (line 10)",
            "expected an absolute path",
        ),
        ("sinks.restore.args[1] (line 23)", ""),
        (
            "sinks.restore.env.NO-GOOD (line 24)",
            "is not a variable name",
        ),
    ];
    assert_eq!(problems.len(), expected.len(), "{all}");
    for (key, says) in expected {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(key) && p.contains(says)),
            "expected {key} {says:?} in:\n{all}"
        );
    }

    // serve refuses the same config at start, and nothing ever ran.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = serve.kill();
            panic!("serve started with a config check refuses");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    assert!(!at.join("ran").exists(), "a program ran");
}
