//! The config loader's checks, each named by its key.

use super::*;

/// A sink and a route, so that a test's hooks make a complete config.
const SINK_AND_ROUTE: &str =
    "\n[sinks.s]\ntype = \"file\"\npath = \"x.jsonl\"\n[[routes]]\nmatch = {}\nto = [\"s\"]\n";

fn problems(text: &str) -> Vec<String> {
    match Config::parse(Path::new("routes.toml"), text) {
        Ok(_) => vec![],
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn the_default_routes_toml_is_valid() {
    let text = include_str!("../../routes.toml");
    let cfg = Config::parse(Path::new("routes.toml"), text).unwrap();
    assert!(cfg.sinks.contains_key("log"));
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let p = problems(&format!(
        "[server]\nlisten = \"127.0.0.1:1\"\nlissten = 3\n[hooks.h]\n{SINK_AND_ROUTE}"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("server"), "{p:?}");
    assert!(p[0].contains("lissten"), "{p:?}");
    assert!(p[0].contains("line 3"), "{p:?}");
}

#[test]
fn an_empty_top_level_key_is_still_named() {
    // Found by the config_load fuzzer: the problem's key was "".
    let text = format!("\n\"\" = 99\n[hooks.h]\n{SINK_AND_ROUTE}");
    let p = Config::parse(Path::new("routes.toml"), &text).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "(file)");
    assert_eq!(p[0].line, Some(2));
}

#[test]
fn bad_duration_names_the_key() {
    let p = problems("[storage]\ndedup_window = \"seven days\"\n");
    assert!(p[0].starts_with("storage.dedup_window"), "{p:?}");
}

#[test]
fn missing_env_secret_names_the_key() {
    let p =
        problems("[hooks.portal]\nkind = \"portal\"\nsecrets = [\"env:HOOKBRIDGE_TEST_UNSET\"]\n");
    assert!(p[0].starts_with("hooks.portal.secrets[0]"), "{p:?}");
    assert!(p[0].contains("HOOKBRIDGE_TEST_UNSET is not set"), "{p:?}");
}

#[test]
fn templates_timezone_is_an_iana_name_checked_at_load() {
    let ok = format!("templates_timezone = \"Europe/Berlin\"\n[hooks.h]\n{SINK_AND_ROUTE}");
    assert!(problems(&ok).is_empty(), "{:?}", problems(&ok));
    let p = problems(&format!(
        "\ntemplates_timezone = \"Europe/Berln\"\n[hooks.h]\n{SINK_AND_ROUTE}"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("templates_timezone (line 2)"), "{p:?}");
    assert!(p[0].contains("did you mean \"Europe/Berlin\"?"), "{p:?}");
    assert!(p[0].contains("IANA"), "{p:?}");
    let p = problems(&format!(
        "templates_timezone = \"CET+1\"\n[hooks.h]\n{SINK_AND_ROUTE}"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    let p = problems(&format!(
        "templates_timezone = 1\n[hooks.h]\n{SINK_AND_ROUTE}"
    ));
    assert!(p[0].starts_with("templates_timezone"), "{p:?}");
}

#[test]
fn every_semantic_problem_is_listed() {
    let p = problems(
        r#"
[server]
listen = "nowhere"
[hooks."bad/name"]
kind = "portal"
[hooks.p]
require_signature = true
[sinks.log]
type = "file"
path = "x.jsonl"
[[routes]]
match = { colour = "red" }
to = ["nope"]
"#,
    );
    let all = p.join("\n");
    assert!(all.contains("server.listen"), "{all}");
    assert!(all.contains("hooks.bad/name"), "{all}");
    assert!(all.contains("hooks.p.secrets"), "{all}");
    assert!(all.contains("routes[0].to"), "{all}");
    assert!(all.contains("routes[0].match.colour"), "{all}");
}

#[test]
fn hook_auth_ways_are_checked() {
    let p = problems("[hooks.s]\nkind = \"survey123\"\nsecrets = [\"a+b/c\"]\n");
    assert!(p[0].starts_with("hooks.s.secrets[0]"), "{p:?}");
    let p = problems("[hooks.s]\nauth = [\"carrier-pigeon\"]\n");
    assert!(p[0].starts_with("hooks.s.auth"), "{p:?}");
    assert!(p[0].contains("secret-header"), "{p:?}");
    let p = problems("[hooks.s]\nauth = []\nsecrets = [\"k\"]\n");
    assert!(p[0].starts_with("hooks.s.auth"), "{p:?}");
    let p = problems("[hooks.s]\nredact = [\"a..b\"]\n");
    assert!(p[0].starts_with("hooks.s.redact"), "{p:?}");
    let cfg = Config::parse(
            Path::new("routes.toml"),
            &format!("[hooks.a]\nkind = \"portal\"\nsecrets = [\"k\"]\nrequire_signature = false\n[hooks.b]\nkind = \"survey123\"\n{SINK_AND_ROUTE}"),
        )
        .unwrap();
    assert!(!cfg.hooks["a"].auth_required());
    assert_eq!(
        cfg.hooks["a"].auth_ways(),
        &[AuthWay::Signature, AuthWay::SecretHeader]
    );
    assert_eq!(cfg.hooks["b"].auth_ways(), &[AuthWay::UrlSecret]);
}

#[test]
fn weak_admin_tokens_and_zero_limits_are_refused() {
    for token in ["x", "                    ", "short-token-15c"] {
        let p = problems(&format!("[server]\nadmin_token = {token:?}\n"));
        assert!(p[0].starts_with("server.admin_token"), "{token:?}: {p:?}");
        assert!(!p[0].contains("short-token-15c"), "echoes the token: {p:?}");
    }
    let good = format!("[server]\nadmin_token = \"0123456789abcdef\"\n[hooks.h]{SINK_AND_ROUTE}");
    assert!(problems(&good).is_empty(), "{:?}", problems(&good));
    let p = problems("[server]\nmax_events = 0\n");
    assert!(p[0].starts_with("server.max_events"), "{p:?}");
}

#[test]
fn an_empty_or_truncated_file_is_refused() {
    let all = problems("").join("\n");
    for key in ["hooks:", "sinks:", "routes:"] {
        assert!(all.contains(key), "{all}");
    }
    let p = problems("[server]\nlisten = \"127.0.0.1:8080\"\n[hooks.h]\n");
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn unknown_sink_type_is_named() {
    let p = problems("[sinks.x]\ntype = \"carrier-pigeon\"\n");
    assert!(p[0].starts_with("sinks.x.type"), "{p:?}");
}

#[test]
fn every_wrong_value_is_found_and_lines_stay_true() {
    let text = "[server]\nmax_events = \"many\"\n[hooks.h]\nsecrets = [\n  \"env:HOOKBRIDGE_TEST_UNSET_A\",\n]\n[hooks.g]\nrequire_auth = \"yes\"\n"
        .to_string()
        + SINK_AND_ROUTE;
    let p = problems(&text);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].starts_with("server.max_events (line 2)"), "{p:?}");
    // The line of the list the missing variable is in.
    assert!(p[1].starts_with("hooks.h.secrets[0] (line 4)"), "{p:?}");
    assert!(p[2].starts_with("hooks.g.require_auth (line 8)"), "{p:?}");
    assert!(p[2].contains("true or false"), "{p:?}");
}

#[test]
fn reconciliation_settings_are_checked_together() {
    let conn = "[arcgis.online]\nportal = \"https://www.arcgis.com\"\nservices = [\"https://services.arcgis.com/ORG/\"]\ntoken = \"literal-api-key\"\n";
    let service = "https://services.arcgis.com/ORG/arcgis/rest/services/Parcels/FeatureServer";
    let good = format!(
        "{conn}[hooks.p]\nkind = \"feature-service\"\nservice = \"{service}\"\nlayers = [0, 1]\nreconcile = {{ every = \"5m\" }}\nwebhook = false\n{SINK_AND_ROUTE}"
    );
    let cfg = Config::parse(Path::new("routes.toml"), &good).unwrap();
    let r = cfg.reconciled();
    assert_eq!(
        (r[0].hook.as_str(), r[0].layers.as_slice()),
        ("p", &[0, 1][..])
    );
    assert!(!r[0].webhook);

    let all = problems(&format!(
        "{conn}[hooks.p]\nkind = \"portal\"\nreconcile = {{ every = \"10s\" }}\n[hooks.q]\nkind = \"feature-service\"\nservice = \"https://elsewhere.example/arcgis/rest/services/X/FeatureServer\"\nlayers = [0]\nreconcile = {{ every = \"1m\" }}\n[hooks.r]\nwebhook = false\nlayers = [2]\n[hooks.s]\nkind = \"feature-service\"\nservice = \"{service}/0\"\nlayers = [0]\nreconcile = {{ every = \"1m\" }}\n{SINK_AND_ROUTE}"
    ))
    .join("\n");
    for (key, says) in [
        ("hooks.p.reconcile ", "needs kind = \"feature-service\""),
        ("hooks.p.reconcile.every ", "10s is shorter than 30s"),
        ("hooks.p.service ", "missing"),
        ("hooks.p.layers ", "missing"),
        ("hooks.q.service ", "no [arcgis.*] connection"),
        ("hooks.r.webhook ", "false leaves"),
        ("hooks.r.layers ", "is read only for reconciliation"),
        ("hooks.s.service ", "expected a feature service URL"),
    ] {
        assert!(
            all.lines().any(|l| l.starts_with(key) && l.contains(says)),
            "{key}: {says} missing from:\n{all}"
        );
    }
}

#[test]
fn watched_webhooks_need_a_connection_and_a_sane_interval() {
    let conn = "[arcgis.online]\nportal = \"https://www.arcgis.com\"\nservices = [\"https://services.arcgis.com/ORG/arcgis/rest/admin/services/\"]\ntoken = \"literal-api-key\"\n";
    let url =
        "https://services.arcgis.com/ORG/arcgis/rest/admin/services/P/FeatureServer/WebHooks/a1";
    let good = format!("{conn}[hooks.p]\nwebhooks = [\"{url}\"]\n{SINK_AND_ROUTE}");
    let cfg = Config::parse(Path::new("routes.toml"), &good).unwrap();
    let w = cfg.watched_webhooks();
    assert_eq!((w[0].hook.as_str(), w[0].url.as_str()), ("p", url));
    assert_eq!(w[0].every, crate::enrich::webhooks::DEFAULT_EVERY);
    let all = problems(&format!(
        "{conn}[hooks.p]\nwebhooks = [\"https://elsewhere.example/WebHooks/1\", \"not a url\"]\nwatch_every = \"5s\"\n[hooks.q]\nwatch_every = \"1m\"\n{SINK_AND_ROUTE}"
    ))
    .join("\n");
    for (key, says) in [
        ("hooks.p.webhooks[0] ", "no [arcgis.*] connection"),
        (
            "hooks.p.webhooks[1] ",
            "expected the URL of an ArcGIS webhook resource",
        ),
        ("hooks.p.watch_every ", "5s is shorter than 30s"),
        ("hooks.q.watch_every ", "is read only with webhooks"),
    ] {
        assert!(
            all.lines().any(|l| l.starts_with(key) && l.contains(says)),
            "{key}: {says} missing from:\n{all}"
        );
    }
}
