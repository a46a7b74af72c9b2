//! `[sinks.NAME]` with `type = "email"`: the SMTP server, the addresses and the templates,
//! each rendered with sample events at load.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::encode::{
    ADDRESS_FIELDS, address_template_name, digest_context, is_template, parse_addresses,
    render_mail, single_context, template_for,
};
use super::send::{EmailSink, SmtpTarget};
use crate::event::Event;
use crate::render::{RenderError, Renderer};
use crate::secret::Secret;
use crate::sinks::{Check, Sink, SinkError, SinkType};

/// The email sink's settings.
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
    /// Template base name: `templates/NAME.subject.tera`, `NAME.txt.tera`, optional `NAME.html.tera`
    /// (built-in ones when the files are not there). By default each event's kind names its
    /// template (`portal`, `feature-service`, `geoprocessing`, `survey123`), and a digest's is
    /// `digest`.
    pub template: Option<String>,
    /// Collect a window's events into one mail.
    #[serde(default, with = "humantime_serde")]
    pub digest: Option<Duration>,
    /// SMTP timeout for connecting and each command; a whole mail may take twice this.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl EmailConfig {
    /// The address lists in `ADDRESS_FIELDS` order.
    pub(super) fn addresses(&self) -> [&[String]; 4] {
        [
            std::slice::from_ref(&self.from),
            &self.to,
            &self.cc,
            &self.bcc,
        ]
    }

    /// The SMTP server, as configured.
    pub(super) fn target(&self) -> Result<SmtpTarget, String> {
        SmtpTarget::parse(
            self.smtp.expose(),
            self.user.as_deref(),
            self.password.as_ref().map(Secret::expose),
        )
    }

    /// The template base name for an event of `kind`.
    fn template_for<'a>(&'a self, kind: &'a str) -> &'a str {
        template_for(self.template.as_deref(), self.digest.is_some(), kind)
    }

    /// Every template base name the sink may render: its template, the digest's, or one per
    /// kind of event (each sender's, named after it; `samples` holds every sender's events).
    fn template_names<'a>(&'a self, samples: &'a [(Event, String)]) -> Vec<&'a str> {
        match (&self.template, self.digest) {
            (Some(t), _) => vec![t.as_str()],
            (None, Some(_)) => vec!["digest"],
            (None, None) => {
                let mut kinds: Vec<&str> = samples.iter().map(|(e, _)| e.kind.as_str()).collect();
                kinds.sort_unstable();
                kinds.dedup();
                kinds
            }
        }
    }

    /// Renders the templates with sample events: a digest must render for all of them at once;
    /// a named template for at least one sample (templates are often written for one kind); the
    /// default per-kind templates each for every sample of their kind.
    fn check_render(&self, check: &mut Check<'_>) {
        let (name, r, samples) = (check.name, &*check.renderer, check.samples);
        if self.digest.is_some() {
            let ctx = digest_context(samples.iter().map(|(e, j)| (e, j.as_str())));
            if let Err(e) = render_mail(name, self.addresses(), self.template_for(""), r, &ctx) {
                check.problem("template", format!("with sample events: {e}"));
            }
            return;
        }
        let mut errors = Vec::new();
        for (event, json) in samples {
            let t = self.template_for(event.kind.as_str());
            match render_mail(name, self.addresses(), t, r, &single_context(event, json)) {
                Ok(_) if self.template.is_some() => return,
                Ok(_) => {}
                Err(e) => errors.push(format!("{} sample: {e}", event.kind.as_str())),
            }
        }
        if self.template.is_some() || !errors.is_empty() {
            let what = if self.template.is_some() {
                "renders for no sample event"
            } else {
                "a default template fails"
            };
            check.problem("template", format!("{what}; {}", errors.join("; ")));
        }
    }
}

impl SinkType for EmailConfig {
    const NAME: &'static str = "email";

    fn check(&self, check: &mut Check<'_>) {
        let before = check.problems.len();
        let key = check.key("template");
        for t in self.template_names(check.samples) {
            check.renderer.add_set(t, &key, check.problems);
        }
        if self.to.is_empty() {
            check.problem("to", "names no recipient");
        }
        if let Err(e) = self.target() {
            check.problem("smtp", e);
        }
        for (field, values) in ADDRESS_FIELDS.iter().zip(self.addresses()) {
            for (i, v) in values.iter().enumerate() {
                let key = if *field == "from" {
                    "from".to_string()
                } else {
                    format!("{field}[{i}]")
                };
                if is_template(v) {
                    let name = address_template_name(check.name, field, i);
                    let key = check.key(&key);
                    check.renderer.add_inline(&name, v, &key, check.problems);
                } else if let Err(e) = parse_addresses(v) {
                    check.problem(&key, e);
                }
            }
        }
        if check.problems.len() == before {
            self.check_render(check);
        }
    }

    fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let ctx = match self.digest {
            Some(_) => digest_context(std::iter::once((event, payload))),
            None => single_context(event, payload),
        };
        let mail = render_mail(
            name,
            self.addresses(),
            self.template_for(event.kind.as_str()),
            r,
            &ctx,
        )?;
        let mut v = json!(mail);
        if let (Some(window), Value::Object(m)) = (self.digest, &mut v) {
            m.insert(
                "digest".into(),
                Value::from(humantime::format_duration(window).to_string()),
            );
        }
        Ok(v)
    }

    /// The running sink: a pooled SMTP transport (no connection is made yet).
    fn build(&self, name: &str, r: &Renderer) -> Result<Arc<dyn Sink>, SinkError> {
        let target = self.target().map_err(SinkError::Config)?;
        let transport = target.transport(self.timeout)?;
        Ok(Arc::new(EmailSink {
            name: name.to_string(),
            addresses: self.addresses().map(<[String]>::to_vec),
            template: self.template.clone(),
            digest: self.digest,
            timeout: self.timeout,
            renderer: r.clone(),
            server: target.display(),
            domain: self
                .from
                .parse::<lettre::message::Mailbox>()
                .map(|m| m.email.domain().to_string())
                .unwrap_or_else(|_| "hookbridge.invalid".into()),
            transport,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::problem::Problem;
    use crate::senders::samples::payloads;

    fn config(extra: &str) -> Result<Config, Vec<Problem>> {
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let smtp = if extra.contains("smtp =") {
            ""
        } else {
            "smtp = \"smtp://127.0.0.1:2525\"\n"
        };
        let text = format!(
            "templates = {:?}\n[hooks.h]\n[[routes]]\nmatch = {{}}\nto = [\"mail\"]\n[sinks.mail]\ntype = \"email\"\n{smtp}{extra}\n",
            templates.display().to_string()
        );
        Config::parse(Path::new("routes.toml"), &text)
    }

    fn keys(extra: &str) -> Vec<String> {
        match config(extra) {
            Ok(_) => vec![],
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn default_templates_pass_check() {
        for t in ["portal", "feature-service", "geoprocessing", "survey123"] {
            let k = keys(&format!(
                "from = \"hb@example.org\"\nto = [\"a@example.org\"]\ntemplate = \"{t}\""
            ));
            assert!(k.is_empty(), "{t}: {k:?}");
        }
        let k = keys(
            "from = \"hb@example.org\"\nto = [\"a@example.org\"]\ntemplate = \"digest\"\ndigest = \"5m\"",
        );
        assert!(k.is_empty(), "{k:?}");
    }

    #[test]
    fn built_in_templates_need_no_templates_directory() {
        // No `templates` key and no templates/ beside this config: the built-in ones are used,
        // one per event kind, each rendering every sample of its kind (check_render).
        let text = "[hooks.h]\n[[routes]]\nmatch = {}\nto = [\"mail\"]\n[sinks.mail]\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:2525\"\nfrom = \"hb@example.org\"\nto = [\"a@example.org\"]\n";
        let cfg = Config::parse(Path::new("/nonexistent/routes.toml"), text).unwrap();
        let mail: &EmailConfig =
            &toml::from_str(text.split("type = \"email\"\n").nth(1).unwrap()).unwrap();
        let samples = payloads();
        for &(kind, sample) in &samples {
            let json = sample.body;
            let event = crate::senders::parse_with(kind, "h", &sample.headers, json.as_bytes())
                .unwrap()
                .remove(0);
            let ctx = single_context(&event, json);
            let m = render_mail(
                "mail",
                mail.addresses(),
                mail.template_for(event.kind.as_str()),
                &cfg.renderer,
                &ctx,
            )
            .unwrap();
            assert!(!m.subject.is_empty(), "{kind:?}");
            // ArcGIS's kinds have an HTML part; the other senders' mail is plain text.
            let arcgis = ["portal", "feature-service", "geoprocessing", "survey123"];
            assert_eq!(
                m.html.is_some(),
                arcgis.contains(&event.kind.as_str()),
                "{kind:?}"
            );
            assert!(m.text.contains(&event.event_id), "{kind:?}: {}", m.text);
        }
        let survey_json = samples[6].1.body;
        let survey = crate::senders::parse(samples[6].0, "h", survey_json.as_bytes())
            .unwrap()
            .remove(0);
        let m = render_mail(
            "mail",
            mail.addresses(),
            "survey123",
            &cfg.renderer,
            &single_context(&survey, survey_json),
        )
        .unwrap();
        assert_eq!(m.subject, "Welcome Survey: new record by jsmith");
        assert!(
            m.text.contains("What industry do you work in?: Science"),
            "{}",
            m.text
        );
    }

    #[test]
    fn bad_addresses_and_urls_are_named() {
        let k = keys(
            "from = \"not an address\"\nto = [\"a@example.org\", \"nope\"]\ncc = [\"{{ user }}@example.org\"]\ntemplate = \"portal\"\nsmtp = \"http://x\"",
        );
        let all = k.join("\n");
        assert!(all.contains("sinks.mail.from (line"), "{all}");
        assert!(all.contains("sinks.mail.smtp (line"), "{all}");
        assert!(all.contains("sinks.mail.to[1] (line"), "{all}");
        assert!(!all.contains("sinks.mail.to[0]"), "{all}");
        assert!(!all.contains("sinks.mail.cc[0]"), "{all}");
    }

    #[test]
    fn templates_are_rendered_at_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.subject.tera"), "{{ id }}").unwrap();
        std::fs::write(
            dir.path().join("t.txt.tera"),
            "line 1\n{{ no_such_field }}\n",
        )
        .unwrap();
        let text = format!(
            "templates = {:?}\n[sinks.mail]\ntype = \"email\"\nsmtp = \"smtp://h:25\"\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\ntemplate = \"t\"\n",
            dir.path().display().to_string()
        );
        let p = Config::parse(Path::new("routes.toml"), &text).unwrap_err();
        let all = p
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("sinks.mail.template"), "{all}");
        assert!(all.contains("t.txt"), "{all}");
        assert!(all.contains("no_such_field"), "{all}");
    }
}
