//! `[sinks.NAME]`: each table read by its sink type (the registry), its retry policy, and
//! whether it wants feature changes fetched first.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ConfiguredSink, valid_name};
use crate::enrich::SinkEnrich;
use crate::problem::Problem;
use crate::render::Renderer;
use crate::retry::RetryConfig;
use crate::sinks::{Check, SinkSettings};

/// What every sink table is read against.
pub(super) struct Context<'a> {
    /// The config file's directory, for relative paths.
    pub base: &'a Path,
    /// `[defaults.retry]`, for sinks without their own.
    pub defaults: &'a RetryConfig,
    /// No `[arcgis.NAME]` connection is configured.
    pub no_connection: bool,
}

/// Reads every sink table, compiling its templates into `renderer` (checked against ArcGIS's
/// sample shapes); returns the sinks and those that want changes fetched.
pub(super) fn load(
    tables: BTreeMap<String, toml::Table>,
    cx: &Context<'_>,
    renderer: &mut Renderer,
    problems: &mut Vec<Problem>,
) -> (
    BTreeMap<String, ConfiguredSink>,
    BTreeMap<String, SinkEnrich>,
) {
    let samples = crate::senders::samples::events();
    let mut enrich = BTreeMap::new();
    let mut sinks = BTreeMap::new();
    for (name, mut table) in tables {
        let key = format!("sinks.{name}");
        match SinkEnrich::take_from(&mut table, &key) {
            Ok(Some(_)) if cx.no_connection => problems.push(Problem::new(
                format!("{key}.enrich"),
                "no [arcgis.NAME] connection is configured to fetch changes with",
            )),
            Ok(Some(e)) => {
                enrich.insert(name.clone(), e);
            }
            Ok(None) => {}
            Err(p) => problems.extend(p),
        }
        if !valid_name(&name) {
            problems.push(Problem::new(
                &key,
                "a sink name may use only letters, digits, '-' and '_'",
            ));
        }
        match SinkSettings::from_table(&name, table, cx.base, cx.defaults) {
            Ok((settings, retry)) => {
                settings.check(&mut Check {
                    name: &name,
                    renderer,
                    problems,
                    samples: &samples,
                });
                if retry.attempts == 0 {
                    problems.push(Problem::new(
                        format!("{key}.retry.attempts"),
                        "must be at least 1",
                    ));
                }
                sinks.insert(name, ConfiguredSink { settings, retry });
            }
            Err(p) => problems.extend(p),
        }
    }
    (sinks, enrich)
}
