//! `hookbridge check` names every bad key of an HTTP sink, and never shows a secret URL.

use std::path::Path;
use std::process::{Command, Output};

/// Writes `text` as a config in `dir` and runs `hookbridge ARGS --config it`.
pub fn run(dir: &Path, text: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let config = dir.join("routes.toml");
    std::fs::write(&config, text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(args)
        .arg("--config")
        .arg(&config)
        .envs(env.iter().copied())
        .output()
        .expect("run hookbridge")
}

/// A config with one hook of every kind (`auto`) and the given sinks, all routed.
pub fn with_sinks(sinks: &str, to: &str) -> String {
    format!("[hooks.any]\nkind = \"auto\"\n{sinks}\n[[routes]]\nmatch = {{}}\nto = [{to}]\n")
}

/// `hookbridge check`'s output for a sink `web` with `extra` keys (and a valid url unless set).
fn check(extra: &str) -> String {
    check_env(extra, &[])
}

/// Like `check`, with environment variables for `env:` values.
fn check_env(extra: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let url = if extra.contains("url =") {
        ""
    } else {
        "url = \"https://receiver.example/hooks\"\n"
    };
    let text = with_sinks(
        &format!("[sinks.web]\ntype = \"http\"\n{url}{extra}\n"),
        "\"web\"",
    );
    let out = run(dir.path(), &text, &["check"], env);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if extra.is_empty() {
        assert!(out.status.success(), "a valid sink fails check: {all}");
    } else {
        assert!(!out.status.success(), "{extra:?} passed check: {all}");
        assert!(
            all.contains(" (line "),
            "a sink problem without its line: {all}"
        );
    }
    without_lines(&all)
}

/// `check`'s output with the ` (line N)` after each key taken out, so cases match on the key.
fn without_lines(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(" (line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 7..];
        match after.find(')') {
            Some(end) if after[..end].bytes().all(|b| b.is_ascii_digit()) => {
                rest = &after[end + 1..]
            }
            _ => {
                out.push_str(" (line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn every_bad_key_is_named() {
    check("");
    let cases: &[(&str, &str)] = &[
        ("url = \"ftp://receiver.example/x\"", "sinks.web.url:"),
        ("url = \"receiver.example/{{ id }}\"", "sinks.web.url:"),
        (
            "url = \"https://receiver.example/{{ kind \"",
            "sinks.web.url:",
        ),
        ("url = \"env:HOOKBRIDGE_TEST_UNSET_URL\"", "sinks.web.url:"),
        // An event may not choose where a request goes: the authority is written out.
        (
            "url = \"https://{{ properties.tenant }}.example/x\"",
            "sinks.web.url: the scheme, host and port must be written out",
        ),
        (
            "url = \"https://receiver.example:{{ properties.port }}/x\"",
            "sinks.web.url: the scheme, host and port must be written out",
        ),
        (
            "url = \"{{ properties.url }}\"",
            "sinks.web.url: the scheme, host and port must be written out",
        ),
        (
            "url = \"https://receiver.example/{% for k in payload %}{{ k }}{% endfor %}\"",
            "sinks.web.url: a URL template may not loop",
        ),
        ("method = \"GET\"", "sinks.web.method:"),
        (
            "headers = { \"Bad Header\" = \"x\" }",
            "sinks.web.headers.Bad Header:",
        ),
        (
            "headers = { \"Content-Type\" = \"text/plain\" }",
            "sinks.web.headers.Content-Type:",
        ),
        (
            "headers = { \"X-Hookbridge-Event-Id\" = \"x\" }",
            "sinks.web.headers.X-Hookbridge-Event-Id:",
        ),
        (
            "headers = { \"X-A\" = \"{{ nope\" }",
            "sinks.web.headers.X-A:",
        ),
        (
            "headers = { \"X-Key\" = \"env:HOOKBRIDGE_TEST_UNSET_KEY\" }",
            "sinks.web.headers.X-Key:",
        ),
        ("body = \"slak\"", "sinks.web.body:"),
        ("body = \"{{ kind \"", "sinks.web.body:"),
        (
            "content_type = \"text/plain\\u0001\"",
            "sinks.web.content_type:",
        ),
        ("timeout = \"soon\"", "sinks.web.timeout:"),
        ("timeout = \"0s\"", "sinks.web.timeout:"),
        ("max_in_flight = 0", "sinks.web.max_in_flight:"),
        ("max_in_flight = 1000", "sinks.web.max_in_flight:"),
        ("rate = \"fast\"", "sinks.web.rate:"),
        ("rate = \"0/s\"", "sinks.web.rate:"),
        ("rate = \"10/day\"", "sinks.web.rate:"),
        ("rate = \"4000000000/s\"", "sinks.web.rate:"),
        (
            "auth = { bearer = \"t\", user = \"u\", password = \"p\" }",
            "sinks.web.auth:",
        ),
        ("auth = { user = \"u\" }", "sinks.web.auth.password:"),
        (
            "auth = { user = \"a:b\", password = \"p\" }",
            "sinks.web.auth.user:",
        ),
        ("auth = { header = \"X-Key\" }", "sinks.web.auth.value:"),
        (
            "auth = { header = \"bad header\", value = \"v\" }",
            "sinks.web.auth.header:",
        ),
        ("auth = { token = \"t\" }", "sinks.web.auth"),
        (
            "auth = { bearer = \"env:HOOKBRIDGE_TEST_UNSET_TOKEN\" }",
            "sinks.web.auth.bearer:",
        ),
        (
            "sign = { scheme = \"jwt\", secret = \"k\" }",
            "sinks.web.sign.scheme:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\" }",
            "sinks.web.sign:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\", secret = \"not base64!\" }",
            "sinks.web.sign.secret:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\", secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"%%\"] }",
            "sinks.web.sign.secrets[1]:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", header = \"X-Sig\" }",
            "sinks.web.sign.header:",
        ),
        (
            "sign = { scheme = \"hmac-sha256\", secret = \"k\", header = \"bad header\" }",
            "sinks.web.sign.header:",
        ),
        (
            "sign = { scheme = \"hmac-sha256\", secrets = [\"a\", \"b\"] }",
            "sinks.web.sign.secrets:",
        ),
        (
            "sign = { scheme = \"hmac-sha256\", secret = \"env:HOOKBRIDGE_TEST_UNSET_SIG\" }",
            "sinks.web.sign.secret:",
        ),
        (
            "sign = { scheme = \"hmac\", secret = \"k\" }",
            "sinks.web.sign.header: expected the header to sign in",
        ),
        (
            "sign = { scheme = \"hmac\", secret = \"k\", header = \"X-Sig\", algorithm = \"md5\" }",
            "sinks.web.sign.algorithm: expected sha256, sha512 or sha1, found \"md5\"",
        ),
        (
            "sign = { scheme = \"hmac\", secret = \"k\", header = \"X-Sig\", encoding = \"base32\" }",
            "sinks.web.sign.encoding: expected hex or base64, found \"base32\"",
        ),
        (
            "sign = { scheme = \"hmac\", secret = \"k\", header = \"X-Sig\", prefix = \"sha 256=\" }",
            "sinks.web.sign.prefix:",
        ),
        (
            "sign = { scheme = \"hmac-sha256\", secret = \"k\", encoding = \"base64\" }",
            "sinks.web.sign.encoding:",
        ),
        (
            "sign = { scheme = \"hmac\", secret = \"k\", header = \"X-Sig\" }\nheaders = { \"x-sig\" = \"x\" }",
            "sinks.web.headers.x-sig:",
        ),
        (
            "sign = { scheme = \"standard-webhooks\", secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" }\nheaders = { \"webhook-id\" = \"x\" }",
            "sinks.web.headers.webhook-id:",
        ),
        ("ca = \"no-such-ca.pem\"", "sinks.web.ca:"),
        (
            "insecure_skip_verify = \"yes\"",
            "sinks.web.insecure_skip_verify:",
        ),
        ("colour = \"blue\"", "unknown field `colour`"),
    ];
    for (extra, key) in cases {
        let out = check(extra);
        assert!(out.contains(key), "{extra:?}: expected {key:?} in:\n{out}");
    }
}

#[test]
fn a_url_from_a_secret_never_shows_in_check_output() {
    let url = "https://receiver.example/SECRETPART/{{ kind";
    let out = check_env("url = \"env:BROKEN_URL\"", &[("BROKEN_URL", url)]);
    assert!(out.contains("sinks.web.url:"), "{out}");
    assert!(!out.contains("SECRETPART"), "{out}");
}
