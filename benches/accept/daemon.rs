//! The release binary under test (configs, start, stop) and the no-op actix-web ceiling.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub use crate::load::{KEY, sign};

/// Writes a config with a signed portal hook, a signed feature-service hook (`features`), the
/// admin token "bench-admin-token-0123", `sinks` (TOML tables) and one route sending every event to `to`;
/// returns its path.
fn write(dir: &Path, port: u16, sinks: &str, to: &str) -> PathBuf {
    let config = dir.join("routes.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_token = "bench-admin-token-0123"
[storage]
path = "{dir}/data"
[hooks.portal]
kind = "portal"
secrets = ["{KEY}"]
[hooks.features]
kind = "feature-service"
secrets = ["{KEY}"]
{sinks}
[[routes]]
match = {{}}
to = ["{to}"]
"#,
            dir = dir.display()
        ),
    )
    .expect("write config");
    config
}

/// The accept phases' config: every event to a file sink `log`; returns its path.
pub fn write_config(dir: &Path, port: u16) -> PathBuf {
    let sinks = format!(
        "[sinks.log]\ntype = \"file\"\npath = \"{}/events.jsonl\"\n",
        dir.display()
    );
    write(dir, port, &sinks, "log")
}

pub fn start_daemon(config: &Path, dir: &Path) -> Child {
    start_binary(Path::new(env!("CARGO_BIN_EXE_hookbridge")), config, dir)
}

/// Starts `binary` (this build's daemon, or an earlier release to compare with) on `config`.
pub fn start_binary(binary: &Path, config: &Path, dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
    Command::new(binary)
        .args(["serve", "--config"])
        .arg(config)
        .env("HOOKBRIDGE_LOG", "warn")
        .stderr(log)
        .spawn()
        .expect("start hookbridge")
}

/// SIGTERM, then SIGKILL if it has not exited within 60 s; reaps the process.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A daemon in its own temporary directory whose only sink is `bus`; stopped on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts a daemon with `bus` (the body of a `[sinks.bus]` table) taking every event, and
    /// waits until it listens.
    pub fn start(bus: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::load::free_port();
        let config = write(dir.path(), port, &format!("[sinks.bus]\n{bus}\n"), "bus");
        let child = start_daemon(&config, dir.path());
        crate::load::wait_port(port);
        Daemon { child, port, dir }
    }

    /// Waits (up to `limit`) for `/readyz` to answer 200: every sink has connected once.
    pub async fn ready(&self, limit: Duration) -> bool {
        let started = Instant::now();
        let client = reqwest::Client::new();
        while started.elapsed() < limit {
            let ok = client
                .get(format!("http://127.0.0.1:{}/readyz", self.port))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the daemon's log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Starts this benchmark executable as the no-op server (see [`noop_server`]) on a free port,
/// and waits until it listens; returns the process and its port.
pub fn spawn_noop() -> (Child, u16) {
    let port = crate::load::free_port();
    let child = Command::new(std::env::current_exe().expect("own path"))
        .env("HOOKBRIDGE_BENCH_NOOP", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the no-op server");
    crate::load::wait_port(port);
    (child, port)
}

/// Serves `POST /hooks/{hook}` with a fixed 200 and nothing else: the HTTP stack's ceiling.
pub fn noop_server(port: &str) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let addr = format!("127.0.0.1:{port}");
    let sys = actix_web::rt::System::new();
    let result: std::io::Result<()> = sys.block_on(async move {
        HttpServer::new(|| {
            App::new().route(
                "/hooks/{hook}",
                web::post()
                    .to(|_body: web::Bytes| async { HttpResponse::Ok().body("{\"accepted\":[]}") }),
            )
        })
        .bind(addr)?
        .run()
        .await
    });
    if let Err(e) = result {
        eprintln!("no-op server: {e}");
    }
}
