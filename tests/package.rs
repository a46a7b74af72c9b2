//! The Debian package: `cargo deb` builds it from `[package.metadata.deb]` (around the binary
//! the suite built, or a release build with `HOOKBRIDGE_PACKAGE_RELEASE=1`), `dpkg -i` installs
//! it on this machine, the installed `hookbridge check` passes on the installed config,
//! `systemd-analyze verify` passes on the installed unit, and `dpkg --purge` removes it all.
//!
//! It needs root, cargo-deb, dpkg, objcopy/readelf (binutils) and systemd-analyze
//! (`.ci/setup/deb.sh` and `.ci/setup/systemd.sh`); under `CI=true` a missing one fails the test
//! naming it, elsewhere the test says loudly that it did not run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const PACKAGE: &str = "hookbridge";

/// Runs `cmd` and returns its output; panics naming the command if it cannot start.
fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Whether `program args` runs and succeeds.
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// What is missing to run this test, each with how to install it.
fn missing() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !works(&cargo(), &["deb", "--version"]) {
        missing.push("cargo-deb (cargo install --locked cargo-deb; .ci/setup/deb.sh)");
    }
    if !works("dpkg", &["--version"]) || !works("dpkg-deb", &["--version"]) {
        missing.push("dpkg (apt-get install dpkg)");
    }
    if !works("objcopy", &["--version"]) || !works("readelf", &["--version"]) {
        missing.push("objcopy and readelf (apt-get install binutils)");
    }
    if !works("systemd-analyze", &["--version"]) {
        missing.push("systemd-analyze (apt-get install systemd; .ci/setup/systemd.sh)");
    }
    if !works("id", &["-u"]) || run(Command::new("id").arg("-u")).stdout != b"0\n" {
        missing.push("root (dpkg -i installs on this machine)");
    }
    missing
}

/// The `cargo deb` that builds the package into `out`. By default it packages the binary this
/// test suite already built (`--no-build`, from a target directory of its own), so CI does not
/// build every crate again in release mode (that takes 15 to 25 minutes on a busy 2-core
/// machine); with `HOOKBRIDGE_PACKAGE_RELEASE=1` it is the release build a user makes.
fn build(out: &Path) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["deb", "--locked", "--fast", "--output"])
        .arg(out);
    if std::env::var("HOOKBRIDGE_PACKAGE_RELEASE").is_ok_and(|v| v == "1") {
        return cmd;
    }
    // cargo-deb reads the binary from the target directory's `release/`.
    let target = out.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(
        env!("CARGO_BIN_EXE_hookbridge"),
        target.join("release/hookbridge"),
    )
    .unwrap();
    cmd.arg("--no-build").env("CARGO_TARGET_DIR", &target);
    cmd
}

/// Purges the package when dropped, so a failed assertion leaves nothing installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let out = run(Command::new("dpkg").args(["--purge", PACKAGE]));
        if !out.status.success() {
            eprintln!("dpkg --purge {PACKAGE} failed:\n{}", text(&out));
        }
    }
}

fn is_installed() -> bool {
    run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]))
        .stdout
        .ends_with(b"installed")
}

/// Files in `dir` whose names end with `suffix`.
fn built(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[test]
fn the_package_installs_checks_verifies_and_purges() {
    let missing = missing();
    if !missing.is_empty() {
        let msg = format!("the package test needs {}", missing.join(", "));
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!! NOT RUN: {msg} !!!!!!!!\n");
        return;
    }
    assert!(
        !is_installed(),
        "{PACKAGE} is already installed on this machine: this test installs and purges it, so \
         it leaves an installed package alone (dpkg --purge {PACKAGE} first)"
    );

    let out_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run(&mut build(out_dir.path()));
    assert!(out.status.success(), "cargo deb failed:\n{}", text(&out));
    eprintln!("cargo deb took {:.0?}", started.elapsed());
    let debs = built(out_dir.path(), ".deb");
    let ddebs = built(out_dir.path(), ".ddeb");
    assert_eq!(debs.len(), 1, "one .deb in {:?}", out_dir.path());
    assert_eq!(
        ddebs.len(),
        1,
        "one -dbgsym .ddeb beside it: the debug info split off"
    );
    let (deb, ddeb) = (&debs[0], &ddebs[0]);
    eprintln!(
        "{}: {}; {}: {}",
        deb.display(),
        mib(size(deb)),
        ddeb.display(),
        mib(size(ddeb))
    );

    let out = run(Command::new("dpkg").arg("-i").arg(deb));
    let installed = Installed;
    assert!(out.status.success(), "dpkg -i failed:\n{}", text(&out));

    // The binary is stripped: no DWARF left in it (it went to the -dbgsym package).
    let bin = Path::new("/usr/bin/hookbridge");
    eprintln!("installed {}: {}", bin.display(), mib(size(bin)));
    let sections = text(&run(Command::new("readelf").args(["-S", "-W"]).arg(bin)));
    for dwarf in [".debug_info", ".debug_line"] {
        assert!(
            !sections.contains(dwarf),
            "the installed binary keeps {dwarf}:\n{sections}"
        );
    }
    let contents = text(&run(Command::new("dpkg-deb").arg("-c").arg(ddeb)));
    assert!(contents.contains("/usr/lib/debug/"), "{contents}");

    // The config, the templates and the unit where the unit and the config expect them; every
    // file under /etc a conffile, which an upgrade does not overwrite once edited.
    let conffiles = text(&run(Command::new("dpkg-query").args([
        "-W",
        "-f=${Conffiles}",
        PACKAGE,
    ])));
    for file in [
        "/etc/hookbridge/routes.toml",
        "/etc/hookbridge/templates/portal.txt.tera",
        "/etc/hookbridge/templates/teams.json.tera",
    ] {
        assert!(Path::new(file).is_file(), "{file} is not installed");
        assert!(
            conffiles.contains(file),
            "{file} is no conffile:\n{conffiles}"
        );
    }
    let keys = std::fs::metadata("/etc/hookbridge/keys").expect("/etc/hookbridge/keys");
    assert!(keys.is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        keys.permissions().mode() & 0o777,
        0o700,
        "the keys are root's alone"
    );
    let unit = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .iter()
        .map(|d| Path::new(d).join("hookbridge.service"))
        .find(|p| p.is_file())
        .expect("the unit in /lib/systemd/system or /usr/lib/systemd/system");

    // A fresh install starts: every path the unit loads a credential from exists (systemd
    // refuses to start a unit whose LoadCredential= path is missing).
    let unit_text = std::fs::read_to_string(&unit).expect("the installed unit");
    for line in unit_text
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
    {
        let path = line.split_once(':').map_or(line, |(_, p)| p);
        assert!(
            Path::new(path).exists(),
            "the unit loads {path}, which the package does not install: it would not start"
        );
    }

    let out = run(Command::new(bin).args(["check", "--config", "/etc/hookbridge/routes.toml"]));
    assert!(
        out.status.success(),
        "the installed check fails on the installed config:\n{}",
        text(&out)
    );
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&unit));
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify {}:\n{}",
        unit.display(),
        text(&out)
    );

    drop(installed);
    assert!(
        !is_installed(),
        "{PACKAGE} is still installed after dpkg --purge"
    );
    for gone in [bin, unit.as_path(), Path::new("/etc/hookbridge")] {
        assert!(
            !gone.exists(),
            "{} is left after dpkg --purge",
            gone.display()
        );
    }
}
