//! Mounting `lazyfs.py` (the file system that forgets what was not synced) and cutting its
//! power: SIGKILL to the file system's process, then a lazy unmount. Its backing directory
//! then holds exactly what was synced; a new mount over it is the machine after the restart.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to install when the file system cannot run.
pub const INSTALL: &str = "install fuse3 and python3-fusepy (`apt-get install fuse3 \
    python3-fusepy`, as .ci/setup/fuse.sh does), or libfuse2 and `pip install fusepy`; it needs \
    root and /dev/fuse";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powercut/lazyfs.py")
}

/// A Python that can load fusepy and libfuse: `HOOKBRIDGE_LAZYFS_PYTHON`, Debian's own
/// `/usr/bin/python3` (where python3-fusepy installs), or the `python3` on the PATH.
fn python() -> Result<String, String> {
    let mut tried = Vec::new();
    let candidates = std::env::var("HOOKBRIDGE_LAZYFS_PYTHON")
        .into_iter()
        .chain(["/usr/bin/python3".to_string(), "python3".to_string()]);
    for py in candidates {
        let out = Command::new(&py).arg(script()).arg("--check").output();
        match out {
            Ok(o) if o.status.success() => return Ok(py),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let last = err.lines().last().unwrap_or("").to_string();
                tried.push(format!("{py}: {last}"));
            }
            Err(e) => tried.push(format!("{py}: {e}")),
        }
    }
    Err(format!("no Python can load fusepy ({})", tried.join("; ")))
}

/// A mounted `lazyfs.py`.
pub struct LazyFs {
    python: String,
    /// The durable state.
    pub backing: PathBuf,
    /// Where the file system is mounted.
    pub mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

fn mounted(mnt: &Path) -> bool {
    let (Ok(m), Some(Ok(p))) = (std::fs::metadata(mnt), mnt.parent().map(std::fs::metadata)) else {
        return false;
    };
    m.dev() != p.dev()
}

impl LazyFs {
    /// Mounts a fresh file system at `dir/mnt` over `dir/backing`; says why not.
    pub fn mount(dir: &Path) -> Result<LazyFs, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("there is no /dev/fuse".into());
        }
        let python = python()?;
        let fs = LazyFs {
            python,
            backing: dir.join("backing"),
            mnt: dir.join("mnt"),
            child: None,
            log: dir.join("lazyfs.log"),
        };
        std::fs::create_dir_all(&fs.backing).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&fs.mnt).map_err(|e| e.to_string())?;
        let mut fs = fs;
        fs.start()?;
        Ok(fs)
    }

    /// Starts the file system's process over the backing directory and waits for the mount.
    fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.python)
            .arg(script())
            .arg(&self.backing)
            .arg(&self.mnt)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.python))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !mounted(&self.mnt) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "lazyfs.py exited ({status}): {}",
                    std::fs::read_to_string(&self.log)
                        .unwrap_or_default()
                        .trim()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("lazyfs.py did not mount within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Cuts the power: the file system's process dies with everything it had not synced.
    pub fn cut(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while mounted(&self.mnt) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Mounts again over what survived: the machine is back.
    pub fn remount(&mut self) {
        self.cut();
        if let Err(e) = self.start() {
            panic!("remounting lazyfs: {e}");
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Mounts the file system in `dir`, or, when it cannot run: fails under `CI=true` naming
/// what to install, else says loudly that `test` did not run and returns None.
pub fn mount_or_skip(dir: &Path, test: &str) -> Option<LazyFs> {
    match LazyFs::mount(dir) {
        Ok(fs) => Some(fs),
        Err(why) => {
            let msg = format!("{test}: cannot mount lazyfs ({why}): {INSTALL}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n!!!!!!!! NOT RUN: {msg} !!!!!!!!\n");
            None
        }
    }
}
