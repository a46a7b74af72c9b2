//! The templates shipped in `templates/`, built into the binary.

/// The templates every sink shares, shipped in `templates/` and built into the binary so that an
/// email digest (and an HTTP sink's Teams or Slack body) works wherever its config file lives; a
/// file of the same name in the templates directory wins. Each sender brings its own mail
/// templates ([`super::Renderer::with_builtins`]).
pub(super) const BUILTIN: [(&str, &str); 5] = [
    (
        "digest.html.tera",
        include_str!("../../templates/digest.html.tera"),
    ),
    (
        "digest.subject.tera",
        include_str!("../../templates/digest.subject.tera"),
    ),
    (
        "digest.txt.tera",
        include_str!("../../templates/digest.txt.tera"),
    ),
    (
        "slack.json.tera",
        include_str!("../../templates/slack.json.tera"),
    ),
    (
        "teams.json.tera",
        include_str!("../../templates/teams.json.tera"),
    ),
];
