//! One run of the program, in a process group of its own: stdin written and the tail of stderr
//! read while it runs (stdout goes to `/dev/null`), so a chatty program never blocks; the whole
//! group killed when the timeout passes, and also once the program ended, so nothing it started
//! outlives its delivery or keeps its pipes open.
//!
//! The group is signalled only while its leader is not yet reaped (it is waited for with
//! `WNOWAIT` first): until then no other process can have its id, so the signal cannot reach
//! a stranger's group.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::env::EVENT_ID_VAR;

/// Most bytes of stderr kept: the last ones, which say why a program failed.
pub(super) const STDERR_KEPT: usize = 2048;

/// How long the pipes are read once the group is gone (a process that left the group may hold
/// them open).
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// The program and what every run of it gets, from `[sinks.NAME]`: `path` is `program`, `env`
/// the variables `env.rs` made of `env` and `pass_env`, the others the settings of their name.
pub(super) struct Program {
    pub path: PathBuf,
    pub working_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The program exited with this status.
    Exited(i32),
    /// A signal hookbridge did not send ended it.
    Signaled(i32),
    /// It was still running at the timeout, and its group was killed.
    TimedOut,
}

/// What one run came to.
#[derive(Debug, Clone)]
pub(super) struct Finished {
    /// How it ended.
    pub ended: Ended,
    /// From the start until the program ended (or the timeout).
    pub took: Duration,
    /// The last [`STDERR_KEPT`] bytes of its stderr.
    pub stderr: Vec<u8>,
    /// Whether stderr held more than that.
    pub stderr_cut: bool,
}

/// Tries to start a program whose file is open for writing (ETXTBSY) this many times, 20 ms
/// apart: someone replacing the script under the running daemon, or another thread's fork that
/// still holds the write descriptor of a script written a moment before.
const BUSY_TRIES: u32 = 10;

/// Spawns `command`, waiting out a program file that is busy for a moment.
async fn spawn(command: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    let mut tries = 1;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && tries < BUSY_TRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

impl Program {
    /// Runs the program with `args` after its path, `stdin` on its standard input (`None`:
    /// `/dev/null`) and `event_id` in its environment; an error when it could not be started.
    pub async fn run(
        &self,
        args: &[String],
        stdin: Option<Vec<u8>>,
        event_id: &str,
    ) -> io::Result<Finished> {
        let mut command = tokio::process::Command::new(&self.path);
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(EVENT_ID_VAR, event_id)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.working_dir {
            command.current_dir(dir);
        }
        let started = Instant::now();
        let mut child = spawn(&mut command).await?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the program ended before its id was read"))?;
        // Declared after `child`, so dropped before it: a run given up half-way (the sink
        // stopping) kills the group while the leader is still unreaped.
        let mut group = Group {
            pid: pid as libc::pid_t,
            reaped: false,
        };
        let writer = match (stdin, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => Some(tokio::spawn(async move {
                // A program that does not read its input closes the pipe: not a failure.
                let _ = pipe.write_all(&bytes).await;
            })),
            _ => None,
        };
        let tail = Arc::new(Mutex::new(Tail::default()));
        let reader = child
            .stderr
            .take()
            .map(|pipe| tokio::spawn(read_tail(pipe, tail.clone())));

        let mut exited = tokio::task::spawn_blocking(move || wait_exited(pid as libc::pid_t));
        let in_time = tokio::time::timeout(self.timeout, &mut exited)
            .await
            .is_ok();
        let took = started.elapsed();
        group.kill();
        if !in_time {
            let _ = exited.await;
        }
        let status = child.wait().await?;
        group.reaped = true;

        if let Some(reader) = reader {
            if tokio::time::timeout(PIPE_GRACE, reader).await.is_err() {
                tracing::debug!(program = %self.path.display(), "stderr still open after the program's group ended; not read further");
            }
        }
        if let Some(writer) = writer {
            writer.abort();
        }
        let (stderr, stderr_cut) = match tail.lock() {
            Ok(mut t) => (std::mem::take(&mut t.bytes), t.cut),
            Err(_) => (Vec::new(), false),
        };
        let ended = match (in_time, status.code(), status.signal()) {
            (false, ..) => Ended::TimedOut,
            (true, Some(code), _) => Ended::Exited(code),
            (true, None, Some(signal)) => Ended::Signaled(signal),
            (true, None, None) => Ended::Signaled(0),
        };
        Ok(Finished {
            ended,
            took,
            stderr,
            stderr_cut,
        })
    }
}

/// A run's process group (its id is the leader's pid).
struct Group {
    pid: libc::pid_t,
    /// Set once the leader is reaped: its id may then be reused, so the group is not signalled.
    reaped: bool,
}

impl Group {
    /// Kills every process of the group (none left is not an error).
    fn kill(&self) {
        if self.reaped {
            return;
        }
        // SAFETY: killpg takes no pointer. The group's leader is our child and not yet reaped,
        // so its id names this group and no other.
        unsafe {
            libc::killpg(self.pid, libc::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Blocks until process `pid` has ended, leaving it unreaped (`WNOWAIT`), so that its group
/// can still be signalled safely.
fn wait_exited(pid: libc::pid_t) {
    loop {
        // SAFETY: siginfo_t is plain data, valid all zero; waitid writes into the one we pass
        // and into nothing else.
        let result = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if result == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// The last bytes of a stream, and whether earlier ones were dropped.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    cut: bool,
}

impl Tail {
    /// Appends `chunk`, keeping the last [`STDERR_KEPT`] bytes.
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > STDERR_KEPT {
            let extra = self.bytes.len() - STDERR_KEPT;
            self.bytes.drain(..extra);
            self.cut = true;
        }
    }
}

/// Reads `pipe` to its end into `tail`.
async fn read_tail(mut pipe: tokio::process::ChildStderr, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut t) = tail.lock() {
                    t.push(&buf[..n]);
                }
            }
        }
    }
}

/// Why `path` cannot be the program, if it cannot: it must be absolute, a file not every user
/// may write, and executable by hookbridge's user.
pub(super) fn executable_problem(path: &Path) -> Option<String> {
    if !path.is_absolute() {
        return Some(format!(
            "expected an absolute path (no PATH search); found {:?}",
            path.display().to_string()
        ));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    if !meta.is_file() {
        return Some(format!("{} is not a file", path.display()));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Some(format!(
            "{} is writable by every user, so anyone could change what hookbridge runs (chmod o-w)",
            path.display()
        ));
    }
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK)
        .err()
        .map(|e| {
            format!(
                "{} is not executable by hookbridge's user: {e}",
                path.display()
            )
        })
}

/// Why `path` cannot be the working directory, if it cannot.
pub(super) fn directory_problem(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(format!("{} is not a directory", path.display())),
        Err(e) => Some(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An executable `#!/bin/sh` script in `dir`.
    pub(in crate::sinks::command) fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("prog");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn program(path: PathBuf, timeout: Duration) -> Program {
        Program {
            path,
            working_dir: None,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            timeout,
        }
    }

    #[tokio::test]
    async fn stdin_goes_in_and_the_status_and_stderr_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let p = script(
            dir.path(),
            &format!(
                "cat > {out}; printf '%s|' \"$@\" >> {out}; echo \"$HOOKBRIDGE_EVENT_ID\" >> {out}; echo noise; echo oops >&2; exit 7",
                out = out.display()
            ),
        );
        let f = program(p, Duration::from_secs(10))
            .run(
                &["a b".into(), "$(c)".into()],
                Some(b"input\n".to_vec()),
                "e1",
            )
            .await
            .unwrap();
        assert_eq!(f.ended, Ended::Exited(7));
        assert_eq!(f.stderr, b"oops\n");
        assert!(!f.stderr_cut);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "input\na b|$(c)|e1\n"
        );
    }

    #[tokio::test]
    async fn a_flood_on_stderr_neither_blocks_nor_grows_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            "head -c 1000000 /dev/zero | tr '\\0' 'x' >&2; echo last >&2",
        );
        let f = program(p, Duration::from_secs(20))
            .run(&[], None, "e")
            .await
            .unwrap();
        assert_eq!(f.ended, Ended::Exited(0));
        assert_eq!(f.stderr.len(), STDERR_KEPT);
        assert!(f.stderr.ends_with(b"xlast\n") && f.stderr_cut);
    }

    #[tokio::test]
    async fn the_timeout_and_the_end_kill_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let p = script(
            dir.path(),
            &format!(
                "sleep 1000 & echo $! > {pids}; exec sleep 1000",
                pids = pids.display()
            ),
        );
        let started = Instant::now();
        let f = program(p, Duration::from_millis(500))
            .run(&[], None, "e")
            .await
            .unwrap();
        assert_eq!(f.ended, Ended::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        let child = std::fs::read_to_string(&pids).unwrap();
        assert!(gone(child.trim()).await, "the background sleep survived");

        // Exiting at once leaves nothing behind either, and the run does not wait for it.
        let p = script(
            dir.path(),
            &format!(
                "sleep 1000 & echo $! > {pids}; exit 0",
                pids = pids.display()
            ),
        );
        let started = Instant::now();
        let f = program(p, Duration::from_secs(30))
            .run(&[], None, "e")
            .await
            .unwrap();
        assert_eq!(f.ended, Ended::Exited(0));
        assert!(started.elapsed() < Duration::from_secs(5));
        let child = std::fs::read_to_string(&pids).unwrap();
        assert!(gone(child.trim()).await, "the background sleep survived");
    }

    /// Whether process `pid` is gone (or a zombie about to be), waiting a little.
    async fn gone(pid: &str) -> bool {
        for _ in 0..100 {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat) if stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) => {
                    return true;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        false
    }

    #[tokio::test]
    async fn a_signal_is_told_apart_and_a_missing_program_does_not_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "kill -TERM $$");
        let f = program(p, Duration::from_secs(10))
            .run(&[], None, "e")
            .await
            .unwrap();
        assert_eq!(f.ended, Ended::Signaled(libc::SIGTERM));
        let missing = program(dir.path().join("nope"), Duration::from_secs(1));
        let e = missing.run(&[], None, "e").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_program_file_busy_for_a_moment_is_started_once_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "exit 0");
        // A descriptor open for writing makes exec fail with ETXTBSY until it is closed.
        let writer = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let busy = program(p.clone(), Duration::from_secs(10));
        assert_eq!(
            std::process::Command::new(&p).status().unwrap_err().kind(),
            io::ErrorKind::ExecutableFileBusy,
            "the file is busy while the writer is open"
        );
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            drop(writer);
        });
        let f = busy.run(&[], None, "e").await.unwrap();
        assert_eq!(f.ended, Ended::Exited(0));
        release.join().unwrap();
    }

    #[test]
    fn the_program_must_be_an_absolute_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "true");
        assert_eq!(executable_problem(&p), None);
        assert!(
            executable_problem(Path::new("bin/restore"))
                .unwrap()
                .contains("absolute")
        );
        assert!(
            executable_problem(&dir.path().join("nope"))
                .unwrap()
                .contains("No such file")
        );
        assert!(
            executable_problem(dir.path())
                .unwrap()
                .contains("not a file")
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o757)).unwrap();
        assert!(
            executable_problem(&p)
                .unwrap()
                .contains("writable by every user")
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(executable_problem(&p).unwrap().contains("not executable"));
        assert_eq!(directory_problem(dir.path()), None);
        assert!(directory_problem(&p).unwrap().contains("not a directory"));
    }
}
