//! Every sender hookbridge knows, one line each: adding a sender is its folder and its line here.

use serde_json::Value;

use super::Sender;
use super::arcgis;
use super::generic::Generic;
use super::github::Github;
use super::standard_webhooks::StandardWebhooks;

/// The senders, in the order `kind = "auto"` tries them.
pub static SENDERS: &[&dyn Sender] = &[
    &arcgis::portal::SENDER,
    &arcgis::feature::SENDER,
    &arcgis::geoprocessing::SENDER,
    &arcgis::survey123::SENDER,
    &StandardWebhooks,
    &Github,
    &Generic,
];

/// The sender named `name`.
pub fn by_name(name: &str) -> Option<&'static dyn Sender> {
    SENDERS.iter().copied().find(|s| s.name() == name)
}

/// Every sender's name: the kinds a hook may name and an event may have.
pub fn kinds() -> Vec<&'static str> {
    SENDERS.iter().map(|s| s.name()).collect()
}

/// Every sender's built-in templates (file name, text).
pub fn templates() -> Vec<(&'static str, &'static str)> {
    SENDERS
        .iter()
        .flat_map(|s| s.templates().iter().copied())
        .collect()
}

/// The first sender that takes a body of this shape.
pub(super) fn detect(value: &Value) -> Option<&'static dyn Sender> {
    SENDERS.iter().copied().find(|s| s.detect(value))
}

/// The shapes `kind = "auto"` recognizes, in words: "A, B, or C".
pub(super) fn detectable_shapes() -> String {
    let shapes: Vec<&str> = SENDERS
        .iter()
        .filter(|s| !s.shapes().is_empty())
        .map(|s| s.shapes())
        .collect();
    match shapes.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{}, or {last}", rest.join(", ")),
        None => String::new(),
    }
}
