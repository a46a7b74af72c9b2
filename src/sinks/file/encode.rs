//! From delivery to one line of the file.

use crate::event::Event;
use crate::render::{PayloadFormat, RenderError, Renderer};
use crate::sinks::payload_template_name;

/// Renders a sink's deliveries into lines.
pub(super) struct Encoder {
    renderer: Renderer,
    payload: PayloadFormat,
    template: String,
}

impl Encoder {
    /// The encoder for sink `name`, whose templates `renderer` holds.
    pub fn new(name: &str, payload: PayloadFormat, renderer: Renderer) -> Self {
        Encoder {
            renderer,
            payload,
            template: payload_template_name(name),
        }
    }

    /// One line for `event`, newline included; a line break inside it is dropped, so that a
    /// line is always one record.
    pub fn line(&self, event: &Event, payload: &str) -> Result<Vec<u8>, RenderError> {
        let mut line = self
            .renderer
            .encode(self.payload, &self.template, event, payload)?;
        line.retain(|b| *b != b'\n');
        line.push(b'\n');
        Ok(line)
    }
}
