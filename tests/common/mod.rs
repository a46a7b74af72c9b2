//! Helpers for end-to-end tests: start the real `hookbridge` binary, post signed samples.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The key the samples in tests/samples are signed with.
pub const KEY: &str = "example-signature-key";

/// A sample payload from tests/samples.
pub fn sample(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/samples")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `sha256=<base64>` of `body` with `key`.
pub fn sign(key: &str, body: &[u8]) -> String {
    hookbridge::signature::arcgis::sign(key.as_bytes(), body)
}

/// The Python that has the official `standardwebhooks` package from PyPI, which the signature
/// tests check hookbridge against; a missing one fails the test with what to install.
pub fn python_with_standardwebhooks() -> String {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-c", "import standardwebhooks"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return candidate.to_string();
        }
    }
    panic!(
        "the signature tests need Python 3 with the standardwebhooks package from PyPI: \
         run `source .ci/setup/python.sh` (or `pip install standardwebhooks`)"
    );
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether `GET /healthz` answers 200 (plain std I/O, so it works inside or outside a runtime).
fn healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    s.read(&mut buf).is_ok_and(|n| {
        buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200")
    })
}

/// A running `hookbridge serve` with its own data directory and config.
pub struct Daemon {
    /// The child process.
    pub child: Option<Child>,
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The temporary directory holding config, data and sink files.
    pub dir: tempfile::TempDir,
    /// The config file path.
    pub config: PathBuf,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    log: PathBuf,
}

/// The `[server]`, `[storage]` and two signed hooks (`portal`, `features`) that sink tests build
/// on; `{port}` and `{dir}` are filled in by `Daemon::start`.
pub const BASE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"

[storage]
path = "{dir}/data"

[hooks.portal]
kind = "portal"
secrets = ["example-signature-key"]

[hooks.features]
kind = "feature-service"
secrets = ["example-signature-key"]
"#;

/// The config used when a test does not need its own: two hooks, everything to a file sink.
pub const FILE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
max_body = "64KiB"

[storage]
path = "{dir}/data"

[hooks.portal]
kind = "portal"
secrets = ["rotated-out-key", "example-signature-key"]

[hooks.features]
kind = "feature-service"
secrets = ["example-signature-key"]

[hooks.any]
kind = "auto"
secrets = ["example-signature-key"]

[hooks.open]
kind = "auto"

[sinks.log]
type = "file"
path = "{dir}/events.jsonl"

[[routes]]
match = {}
to = ["log"]
"#;

impl Daemon {
    /// Writes `config` (with `{port}` and `{dir}` filled in) and starts the daemon on it.
    pub fn start(config: &str) -> Daemon {
        Daemon::start_env(config, &[])
    }

    /// Like `start`, with extra environment variables (values may use `{dir}`).
    pub fn start_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_in(config, tempfile::tempdir().expect("tempdir"), env)
    }

    /// Like `start_env`, in a directory the test prepared (e.g. with a mount inside).
    pub fn start_in(config: &str, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, &text).expect("write config");
        let mut d = Daemon {
            child: None,
            url: format!(
                "{}://127.0.0.1:{port}",
                if text.contains("tls = {") {
                    "https"
                } else {
                    "http"
                }
            ),
            log: dir.path().join("daemon.log"),
            config: path,
            env: env
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        v.replace("{dir}", &dir.path().display().to_string()),
                    )
                })
                .collect(),
            dir,
        };
        d.spawn();
        d
    }

    /// Starts (or restarts) the process and waits until it answers /healthz.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("HOOKBRIDGE_LOG", "info,hookbridge=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hookbridge");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "hookbridge exited at start ({status}):\n{}",
                    self.log_text()
                );
            }
            let addr = self
                .url
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            let tls = self.url.starts_with("https://");
            if (tls && std::net::TcpStream::connect(addr).is_ok()) || (!tls && healthy(addr)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hookbridge did not become healthy:\n{}", self.log_text());
    }

    /// Starts the process expecting it to refuse to start; returns its exit status.
    pub fn spawn_expecting_exit(&mut self) -> ExitStatus {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("HOOKBRIDGE_LOG", "info,hookbridge=debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hookbridge");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("hookbridge did not exit at start:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A path inside the test directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`).
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut c = self.child.take().expect("daemon running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("hookbridge did not stop within 30 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a `hookbridge` subcommand against this daemon's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_hookbridge"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run hookbridge")
    }

    /// Lines of a JSON-lines file in the test directory (empty if it does not exist).
    pub fn jsonl(&self, rel: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path(rel))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `rel` holds at least `n` lines, returning them.
    pub async fn wait_lines(&self, rel: &str, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.jsonl(rel);
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Posts `body` to `/hooks/{hook}`.
    pub async fn post(
        &self,
        hook: &str,
        content_type: Option<&str>,
        signature: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let headers: Vec<(&str, &str)> = signature
            .map(|s| ("x-esriHook-Signature", s))
            .into_iter()
            .collect();
        self.post_with(&format!("/hooks/{hook}"), content_type, &headers, body)
            .await
    }

    /// Posts `body` to `path` (which may carry a query) with extra headers (repeatable).
    pub async fn post_with(
        &self,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let client = reqwest::Client::new();
        let mut req = client.post(format!("{}{path}", self.url)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.expect("request");
        Answer::from(resp).await
    }

    /// Every byte of every file under `rel` in the test directory, concatenated (for searches).
    pub fn bytes_under(&self, rel: &str) -> Vec<u8> {
        fn walk(dir: &Path, out: &mut Vec<u8>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.extend_from_slice(&bytes);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.path(rel), &mut out);
        out
    }

    /// Posts a JSON body signed with the sample key.
    pub async fn post_signed(&self, hook: &str, body: &[u8]) -> Answer {
        self.post(
            hook,
            Some("application/json"),
            Some(&sign(KEY, body)),
            body.to_vec(),
        )
        .await
    }

    /// Signs in to the status page with the admin `token`: a client that follows no redirect,
    /// and the session's cookie.
    pub async fn ui_session(&self, token: &str) -> (reqwest::Client, String) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        let signed = client
            .post(format!("{}/ui/signin", self.url))
            .form(&[("token", token)])
            .send()
            .await
            .expect("sign in");
        assert_eq!(signed.status(), 303, "the status page refused the sign-in");
        let cookie = signed.headers()[reqwest::header::SET_COOKIE]
            .to_str()
            .expect("a text cookie")
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        (client, cookie)
    }

    /// The text of status page `path` (`/ui`, `/ui/events/ID`), signed in with `token`.
    pub async fn ui_page(&self, token: &str, path: &str) -> String {
        let (client, cookie) = self.ui_session(token).await;
        client
            .get(format!("{}{path}", self.url))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .expect("status page")
            .text()
            .await
            .expect("page text")
    }

    /// GETs a path.
    pub async fn get(&self, path: &str) -> Answer {
        let resp = reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("request");
        Answer::from(resp).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as JSON (`Null` when it is not JSON).
    pub json: serde_json::Value,
    /// Body as text.
    pub text: String,
}

impl Answer {
    async fn from(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            headers,
            json,
            text,
        }
    }

    /// The accepted event ids.
    pub fn accepted(&self) -> Vec<String> {
        self.json["accepted"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}
