//! The deploy files work together: every credential `deploy/routes.production.toml` reads is a
//! file of the keys directory the unit loads (and the unit loads nothing that could be missing),
//! the production config and the Kubernetes ConfigMap pass `hookbridge check` with the unit's
//! credentials and the Secret's placeholders, and no password is written inline.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const CREDENTIALS: &str = "/run/credentials/hookbridge.service/";

fn deploy(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `hookbridge check` on `config` (written in `dir`) with `env`; returns success and output.
fn check(dir: &Path, config: &str, env: &[(String, String)]) -> (bool, String) {
    let path = dir.join("routes.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["check", "--config"])
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_unit_loads_every_credential_the_production_config_reads() {
    let config = deploy("routes.production.toml");
    let unit = deploy("hookbridge.service");
    let read: BTreeSet<&str> = config
        .match_indices(CREDENTIALS)
        .map(|(at, _)| {
            let rest = &config[at + CREDENTIALS.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    // LoadCredential=ID:PATH; a directory PATH makes each of its files credential ID_FILE.
    let loaded: Vec<(&str, &str)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("LoadCredential="))
        .map(|l| l.split_once(':').unwrap())
        .collect();
    assert_eq!(
        loaded,
        [("keys", "/etc/hookbridge/keys")],
        "the unit loads the keys directory, and only it: a fresh install must start with it empty"
    );
    assert!(!read.is_empty());
    for name in &read {
        assert!(
            name.strip_prefix("keys_")
                .is_some_and(|f| !f.is_empty() && !f.contains('/')),
            "the config reads credential {name}, which is no file of /etc/hookbridge/keys"
        );
    }
    // Every key file, made up, in /etc/hookbridge/keys; the credentials as systemd lays them
    // out from it; the config checked with them.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&creds).unwrap();
    for name in &read {
        let file = &name["keys_".len()..];
        let value = match file {
            "amqp-url" => "amqps://hookbridge:secret-password@mq.example.org:5671/%2f",
            "admin-token" => "0123456789abcdef0123456789abcdef",
            _ => "a-secret-value-of-some-length",
        };
        std::fs::write(keys.join(file), value).unwrap();
    }
    for entry in std::fs::read_dir(&keys).unwrap() {
        let entry = entry.unwrap();
        let name = format!("keys_{}", entry.file_name().to_string_lossy());
        std::fs::copy(entry.path(), creds.join(name)).unwrap();
    }
    let local = config
        .replace(CREDENTIALS, &format!("{}/", creds.display()))
        .replace(
            "/var/lib/hookbridge",
            &dir.path().join("state").display().to_string(),
        );
    let (ok, out) = check(dir.path(), &local, &[]);
    assert!(ok, "deploy/routes.production.toml fails check:\n{out}");
    for inline in ["change-me", "password = \"", "\"sasl.password\" = \"c"] {
        let hits: Vec<&str> = config
            .lines()
            .filter(|l| {
                l.contains(inline) && !l.contains("file:") && !l.trim_start().starts_with('#')
            })
            .collect();
        assert!(hits.is_empty(), "an inline secret: {hits:?}");
    }
}

#[test]
fn the_kubernetes_config_map_passes_check_with_the_secret_placeholders() {
    let yaml = deploy("kubernetes.yaml");
    let map = yaml
        .split("\n---")
        .find(|doc| doc.contains("kind: ConfigMap"))
        .expect("a ConfigMap");
    let config: String = map
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("routes.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(config.contains("[hooks."), "{config}");
    let secret = yaml
        .split("\n---")
        .find(|doc| doc.contains("kind: Secret"))
        .expect("a Secret");
    let env: Vec<(String, String)> = secret
        .lines()
        .skip_while(|l| !l.starts_with("stringData:"))
        .skip(1)
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    assert!(env.len() >= 2, "{env:?}");
    let dir = tempfile::tempdir().unwrap();
    let local = config.replace(
        "/var/lib/hookbridge",
        &dir.path().join("state").display().to_string(),
    );
    let (ok, out) = check(dir.path(), &local, &env);
    assert!(
        ok,
        "the ConfigMap fails check with the Secret's values:\n{out}"
    );
}

#[test]
fn the_packaged_config_passes_check() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/debian/routes.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let local = config
        .replace(
            "/var/lib/hookbridge",
            &dir.path().join("state").display().to_string(),
        )
        .replace(
            "/etc/hookbridge/templates",
            &templates.display().to_string(),
        );
    assert_ne!(local, config);
    let (ok, out) = check(dir.path(), &local, &[]);
    assert!(ok, "deploy/debian/routes.toml fails check:\n{out}");
}
