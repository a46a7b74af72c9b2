//! `[sinks.NAME]` with `type = "file"`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::Encoder;
use super::send::FileSink;
use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::sinks::{Check, Sink, SinkError, SinkType, body_for_display, check_payload_template};

/// The file sink's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// File to append to (relative paths are relative to the config file).
    pub path: PathBuf,
    /// What each line holds.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Tera template for each line when `payload = "template"`.
    pub payload_template: Option<String>,
}

impl SinkType for FileConfig {
    const NAME: &'static str = "file";

    fn resolve(&mut self, base: &Path) {
        self.path = base.join(&self.path);
    }

    fn check(&self, check: &mut Check<'_>) {
        check_payload_template(check, self.payload, self.payload_template.as_deref());
    }

    fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let line = Encoder::new(name, self.payload, r.clone()).line(event, payload)?;
        Ok(json!({ "path": self.path, "line": body_for_display(&line) }))
    }

    fn build(&self, name: &str, r: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        let encoder = Encoder::new(name, self.payload, r.clone());
        Ok(Arc::new(FileSink::new(self.path.clone(), encoder)))
    }
}
