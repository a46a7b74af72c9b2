//! Email sink (lettre + tera): one templated mail per event, or one digest per window.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use serde_json::{Value, json};

use super::{Sink, SinkError};
use crate::config::{Problem, Secret};
use crate::event::Event;
use crate::render::{RenderError, Renderer};

/// `[sinks.NAME]` with `type = "email"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:port`, `smtps://host:port` or `smtp://host:port?tls=starttls`; may hold credentials.
    pub smtp: Secret,
    /// SMTP user name.
    pub user: Option<String>,
    /// SMTP password.
    pub password: Option<Secret>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Copy recipients.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Blind-copy recipients.
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Template base name: `templates/NAME.subject.tera`, `NAME.txt.tera`, optional `NAME.html.tera`.
    pub template: String,
    /// Collect a window's events into one mail.
    #[serde(default, with = "humantime_serde")]
    pub digest: Option<Duration>,
    /// SMTP command timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl EmailConfig {
    pub(super) fn register_templates(&self, name: &str, r: &mut Renderer, p: &mut Vec<Problem>) {
        let key = format!("sinks.{name}.template");
        let t = &self.template;
        r.add_file(
            &format!("{t}.subject"),
            &format!("{t}.subject.tera"),
            true,
            &key,
            p,
        );
        r.add_file(&format!("{t}.txt"), &format!("{t}.txt.tera"), true, &key, p);
        r.add_file(
            &format!("{t}.html"),
            &format!("{t}.html.tera"),
            false,
            &key,
            p,
        );
        if self.to.is_empty() {
            p.push(Problem::new(
                format!("sinks.{name}.to"),
                "names no recipient",
            ));
        }
    }

    pub(super) fn preview(
        &self,
        _name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let t = &self.template;
        let subject = r.render_event(&format!("{t}.subject"), event, payload)?;
        let text = r.render_event(&format!("{t}.txt"), event, payload)?;
        let html_name = format!("{t}.html");
        let html = if r.has(&html_name) {
            Some(r.render_event(&html_name, event, payload)?)
        } else {
            None
        };
        Ok(json!({
            "from": self.from, "to": self.to, "cc": self.cc, "bcc": self.bcc,
            "subject": subject.trim(), "text": text, "html": html,
        }))
    }

    /// Sending mail is not in this build yet: deliveries wait in the queue.
    pub(super) fn build(
        &self,
        _name: &str,
        _r: &Renderer,
    ) -> Result<Option<Arc<dyn Sink>>, SinkError> {
        Ok(None)
    }
}
