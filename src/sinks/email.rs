//! Email sink (lettre + tera): one templated mail per event, or one digest per window.
//!
//! Templates: `templates/NAME.subject.tera`, `NAME.txt.tera` and optionally `NAME.html.tera`
//! (then the mail is multipart/alternative; HTML is autoescaped). A mail for one event sees the
//! event's fields, `payload`, `when_utc`, `accepted_utc` and `link`; a digest sees `events` (a
//! list of those), `count`, and the first event's fields. `from`, `to`, `cc` and `bcc` may be
//! templates too. `hookbridge check` renders every template with sample events.

mod compose;
mod smtp;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use serde_json::{Value, json};

use self::compose::{
    ADDRESS_FIELDS, RenderedMail, address_template_name, digest_context, is_template,
    parse_addresses, render_mail, single_context,
};
use self::smtp::{SmtpTarget, classify};
use super::{Delivery, Outcome, Sink, SinkError};
use crate::arcgis::HookKind;
use crate::clock::now_ms;
use crate::event::{Event, EventKind};
use crate::problem::Problem;
use crate::render::{RenderError, Renderer};
use crate::secret::Secret;

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

/// Largest digest: the dispatcher hands the whole window over at once.
const DIGEST_BATCH: usize = 1000;

/// Sample payloads `hookbridge check` renders the templates with, one per shape ArcGIS sends.
const SAMPLES: [(HookKind, &str); 7] = [
    (
        HookKind::Portal,
        r#"{"info": {"webhookName": "Item activity", "webhookId": "0d8d2d0a6c5a4a3f",
            "portalURL": "https://gis.example.org/portal/", "when": 1700000123456},
           "events": [{"username": "jsmith", "userId": "a1b2c3", "when": 1700000120001,
            "operation": "share", "source": "item", "id": "6cd80cb32d4a4b4d858a020e57fba7b1",
            "properties": {"sharedToGroups": ["Everyone"]}}]}"#,
    ),
    (
        HookKind::FeatureService,
        r#"[{"name": "parcels-edits", "layerId": 0, "orgId": "ABCD1EFghIJK2LmN",
            "serviceName": "Parcels", "lastUpdatedTime": 1629325549649,
            "changesUrl": "https://services.example.com/ABCD/ArcGIS/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[1,2]",
            "events": ["FeaturesCreated"]}]"#,
    ),
    (
        HookKind::FeatureService,
        r#"{"layerId": 0, "serviceName": "Parcels", "changeType": "FeaturesUpdated",
            "orgId": "ABCD1EFghIJK2LmN",
            "changesUrl": "https://services.example.com/ABCD/ArcGIS/rest/services/Parcels/FeatureServer/extractChanges?serverGens=[1,2]"}"#,
    ),
    (
        HookKind::FeatureService,
        r#"{"serviceType": "FeatureServer", "name": "Mains edits",
            "id": "c4a7db24-0c5e-4a00-9103-0c7d2fdc03b4", "folderName": "Water", "serviceName": "Mains",
            "changesUrl": "https://gis.example.org/server/rest/services/Water/Mains/FeatureServer/extractChanges?serverGens=%5B1,2%5D",
            "events": [{"eventType": "FeaturesCreated", "when": 1730385704000}]}"#,
    ),
    (
        HookKind::Geoprocessing,
        r#"{"serviceType": "GPServer", "jobId": "j6e2c1b7f", "name": "buffer-jobs",
            "statusURL": "https://gis.example.org/server/rest/services/Tools/Buffer/GPServer/Buffer/jobs/j6e2c1b7f",
            "taskName": "Buffer", "folderName": "Tools", "serviceName": "Buffer",
            "events": [{"eventType": "esriJobSucceeded", "when": 1730385704000}]}"#,
    ),
    (
        HookKind::Geoprocessing,
        r#"{"webhookName": "buffer-jobs", "jobId": "j6e2c1b7f", "jobStatus": "esriJobSucceeded",
            "serviceName": "Buffer", "taskName": "BufferPoints"}"#,
    ),
    (
        HookKind::Survey123,
        r#"{"eventType": "addData",
            "feature": {"attributes": {"globalid": "{B3863DFC-3E46-4A7B-8366-7B7D0BA85C0D}", "objectid": 11,
                "what_industry_do_you_work_in": "Science"}, "geometry": {"x": 5.1, "y": 52.1,
                "spatialReference": {"wkid": 4326}},
              "layerInfo": {"id": 0, "name": "survey", "globalIdField": "globalid", "objectIdField": "objectid"},
              "result": {"globalId": "{B3863DFC-3E46-4A7B-8366-7B7D0BA85C0D}", "objectId": 11}},
            "surveyInfo": {"formItemId": "9300861aa41049b9bf28897ba2f48796", "formTitle": "Welcome Survey",
              "serviceUrl": "https://services.example.com/ABCD/arcgis/rest/services/survey123_x/FeatureServer"},
            "userInfo": {"username": "jsmith", "fullName": "Jo Smith"},
            "portalInfo": {"url": "https://www.arcgis.com"}}"#,
    ),
];

/// The kinds of event a mail may be about, each with a built-in template of its name.
const EVENT_KINDS: [&str; 4] = ["portal", "feature-service", "geoprocessing", "survey123"];

impl EmailConfig {
    /// The address lists in `ADDRESS_FIELDS` order.
    fn addresses(&self) -> [&[String]; 4] {
        [
            std::slice::from_ref(&self.from),
            &self.to,
            &self.cc,
            &self.bcc,
        ]
    }

    /// The SMTP server, as configured.
    fn target(&self) -> Result<SmtpTarget, String> {
        SmtpTarget::parse(
            self.smtp.expose(),
            self.user.as_deref(),
            self.password.as_ref().map(Secret::expose),
        )
    }

    /// The template base name for an event of `kind`.
    fn template_for(&self, kind: EventKind) -> &str {
        match (&self.template, self.digest) {
            (Some(t), _) => t,
            (None, Some(_)) => "digest",
            (None, None) => kind.as_str(),
        }
    }

    /// Every template base name the sink may render.
    fn template_names(&self) -> Vec<&str> {
        match (&self.template, self.digest) {
            (Some(t), _) => vec![t.as_str()],
            (None, Some(_)) => vec!["digest"],
            (None, None) => EVENT_KINDS.to_vec(),
        }
    }

    pub(super) fn register_templates(&self, name: &str, r: &mut Renderer, p: &mut Vec<Problem>) {
        let before = p.len();
        let key = format!("sinks.{name}.template");
        for t in self.template_names() {
            r.add_set(t, &key, p);
        }
        if self.to.is_empty() {
            p.push(Problem::new(
                format!("sinks.{name}.to"),
                "names no recipient",
            ));
        }
        if let Err(e) = self.target() {
            p.push(Problem::new(format!("sinks.{name}.smtp"), e));
        }
        for (field, values) in ADDRESS_FIELDS.iter().zip(self.addresses()) {
            for (i, v) in values.iter().enumerate() {
                let key = if *field == "from" {
                    format!("sinks.{name}.from")
                } else {
                    format!("sinks.{name}.{field}[{i}]")
                };
                if is_template(v) {
                    r.add_inline(&address_template_name(name, field, i), v, &key, p);
                } else if let Err(e) = parse_addresses(v) {
                    p.push(Problem::new(key, e));
                }
            }
        }
        if p.len() == before {
            self.check_render(name, r, p);
        }
    }

    /// Renders the templates with sample events: a digest must render for all of them at once;
    /// a named template for at least one sample (templates are often written for one kind); the
    /// default per-kind templates each for every sample of their kind.
    fn check_render(&self, name: &str, r: &Renderer, p: &mut Vec<Problem>) {
        let samples: Vec<(Event, String)> = SAMPLES
            .iter()
            .filter_map(|(kind, json)| {
                let mut e = crate::arcgis::parse(*kind, "sample", json.as_bytes())
                    .ok()?
                    .into_iter()
                    .next()?;
                e.accepted_at = 1_700_000_125_000;
                Some((e, json.to_string()))
            })
            .collect();
        let key = format!("sinks.{name}.template");
        if self.digest.is_some() {
            let ctx = digest_context(samples.iter().map(|(e, j)| (e, j.as_str())));
            if let Err(e) = render_mail(name, self, self.template_for(EventKind::Portal), r, &ctx) {
                p.push(Problem::new(key, format!("with sample events: {e}")));
            }
            return;
        }
        let mut errors = Vec::new();
        for (event, json) in &samples {
            let t = self.template_for(event.kind);
            match render_mail(name, self, t, r, &single_context(event, json)) {
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
            p.push(Problem::new(key, format!("{what}; {}", errors.join("; "))));
        }
    }

    pub(super) fn preview(
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
        let mail = render_mail(name, self, self.template_for(event.kind), r, &ctx)?;
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
    pub(super) fn build(
        &self,
        name: &str,
        r: &Renderer,
    ) -> Result<Option<Arc<dyn Sink>>, SinkError> {
        let target = self.target().map_err(SinkError::Config)?;
        let transport = target.transport(self.timeout)?;
        Ok(Some(Arc::new(EmailSink {
            name: name.to_string(),
            config: self.clone(),
            renderer: r.clone(),
            server: target.display(),
            domain: self
                .from
                .parse::<lettre::message::Mailbox>()
                .map(|m| m.email.domain().to_string())
                .unwrap_or_else(|_| "hookbridge.invalid".into()),
            transport,
        })))
    }
}

/// Sends templated mail through a pooled SMTP connection.
pub struct EmailSink {
    name: String,
    config: EmailConfig,
    renderer: Renderer,
    /// `host:port`, for messages.
    server: String,
    /// The right-hand side of Message-IDs.
    domain: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl EmailSink {
    /// Renders a mail; a failure is the payload's fault and is not going to change on retry.
    fn compose(
        &self,
        kind: EventKind,
        ctx: &tera::Context,
        message_id: String,
    ) -> Result<lettre::Message, String> {
        let t = self.config.template_for(kind);
        let mail: RenderedMail = render_mail(&self.name, &self.config, t, &self.renderer, ctx)
            .map_err(|e| e.to_string())?;
        mail.message(message_id)
    }

    /// Sends one message and maps the server's answer. The whole exchange is bounded too
    /// (twice `timeout`): a server that stops answering must not stall the dispatcher.
    async fn deliver(&self, message: lettre::Message) -> Result<Outcome, SinkError> {
        let bound = self.config.timeout.saturating_mul(2);
        match tokio::time::timeout(bound, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(Outcome::Delivered),
            Ok(Err(e)) => classify(&e, &self.server),
            Err(_) => Err(SinkError::Unavailable(format!(
                "SMTP server {} did not finish a mail within {}",
                self.server,
                humantime::format_duration(bound)
            ))),
        }
    }

    /// One mail for the whole batch; every delivery shares its outcome.
    async fn send_digest(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let ctx = digest_context(batch.iter().map(|d| (&d.event, &*d.payload)));
        let first = batch
            .first()
            .map(|d| d.event.event_id.as_str())
            .unwrap_or("");
        let id = format!(
            "<digest.{first}.{}.{}@{}>",
            batch.len(),
            self.name,
            self.domain
        );
        let kind = batch.first().map_or(EventKind::Portal, |d| d.event.kind);
        let outcome = match self.compose(kind, &ctx, id) {
            Ok(m) => self.deliver(m).await?,
            Err(e) => Outcome::Reject(e),
        };
        if outcome == Outcome::Delivered {
            tracing::info!(sink = %self.name, events = batch.len(), "digest mail sent");
        }
        Ok(vec![outcome; batch.len()])
    }
}

#[async_trait]
impl Sink for EmailSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let bound = self.config.timeout.saturating_mul(2);
        match tokio::time::timeout(bound, self.transport.test_connection()).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) | Err(_) => Err(SinkError::Unavailable(format!(
                "SMTP server {} did not answer NOOP",
                self.server
            ))),
            Ok(Err(e)) => Err(SinkError::Unavailable(format!(
                "SMTP server {}: {e}",
                self.server
            ))),
        }
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        if self.config.digest.is_some() {
            return self.send_digest(batch).await;
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for d in batch {
            let ctx = single_context(&d.event, &d.payload);
            let id = format!("<{}.{}@{}>", d.event.event_id, self.name, self.domain);
            let message = match self.compose(d.event.kind, &ctx, id) {
                Ok(m) => m,
                Err(e) => {
                    outcomes.push(Outcome::Reject(e));
                    continue;
                }
            };
            match self.deliver(message).await {
                Ok(o) => outcomes.push(o),
                // Nothing went out yet: let the dispatcher back off without spending attempts.
                Err(e) if !outcomes.contains(&Outcome::Delivered) => return Err(e),
                // Some mail went out: keep those outcomes, retry the rest.
                Err(e) => {
                    let reason = e.to_string();
                    outcomes.resize(batch.len(), Outcome::Retry(reason));
                    break;
                }
            }
        }
        Ok(outcomes)
    }

    fn hold_until(&self, batch: &[Delivery]) -> Option<u64> {
        let window = self.config.digest?;
        let oldest = batch.iter().map(|d| d.event.accepted_at).min()?;
        let until = u64::try_from(oldest)
            .unwrap_or(0)
            .saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        (until > now_ms()).then_some(until)
    }

    fn max_batch(&self) -> usize {
        if self.config.digest.is_some() {
            DIGEST_BATCH
        } else {
            64
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

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
        let crate::sinks::SinkConfig::Email(mail) = &cfg.sinks["mail"].config else {
            panic!("not an email sink");
        };
        for (kind, json) in SAMPLES {
            let event = crate::arcgis::parse(kind, "h", json.as_bytes())
                .unwrap()
                .remove(0);
            let ctx = single_context(&event, json);
            let m = render_mail(
                "mail",
                mail,
                mail.template_for(event.kind),
                &cfg.renderer,
                &ctx,
            )
            .unwrap();
            assert!(!m.subject.is_empty() && m.html.is_some(), "{kind:?}");
            assert!(m.text.contains(&event.event_id), "{kind:?}: {}", m.text);
        }
        let survey = crate::arcgis::parse(HookKind::Survey123, "h", SAMPLES[6].1.as_bytes())
            .unwrap()
            .remove(0);
        let m = render_mail(
            "mail",
            mail,
            "survey123",
            &cfg.renderer,
            &single_context(&survey, SAMPLES[6].1),
        )
        .unwrap();
        assert_eq!(m.subject, "Welcome Survey: new record by jsmith");
        assert!(
            m.text.contains("what_industry_do_you_work_in: Science"),
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
        assert!(all.contains("sinks.mail.from:"), "{all}");
        assert!(all.contains("sinks.mail.smtp:"), "{all}");
        assert!(all.contains("sinks.mail.to[1]:"), "{all}");
        assert!(!all.contains("sinks.mail.to[0]"), "{all}");
        assert!(!all.contains("sinks.mail.cc[0]"), "{all}");
    }

    fn delivery() -> Delivery {
        let json = SAMPLES[0].1;
        let mut events = crate::arcgis::parse(HookKind::Portal, "portal", json.as_bytes()).unwrap();
        Delivery {
            seq: 1,
            attempts: 0,
            event: events.remove(0),
            payload: Arc::from(json),
        }
    }

    #[tokio::test]
    async fn a_server_that_stops_answering_does_not_stall_the_sink() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(b"220 mute.test ESMTP\r\n").await;
                    let mut buf = [0u8; 512];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        let cfg = config(&format!(
            "smtp = \"smtp://127.0.0.1:{port}\"\nfrom = \"hb@example.org\"\nto = [\"a@example.org\"]\ntemplate = \"portal\"\ntimeout = \"200ms\""
        ))
        .unwrap();
        let sink = cfg.sinks["mail"]
            .config
            .build("mail", &cfg.renderer)
            .unwrap()
            .unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(
            sink.connect().await,
            Err(SinkError::Unavailable(_))
        ));
        let e = sink.send(&[delivery()]).await.unwrap_err();
        assert!(e.to_string().contains("did not finish a mail"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// A tokio test: lettre's connection pool spawns its housekeeping on the runtime.
    #[tokio::test]
    async fn digests_hold_until_the_oldest_event_is_a_window_old() {
        let cfg = config(
            "from = \"hb@example.org\"\nto = [\"a@example.org\"]\ntemplate = \"digest\"\ndigest = \"1m\"",
        )
        .unwrap();
        let sink = cfg.sinks["mail"]
            .config
            .build("mail", &cfg.renderer)
            .unwrap()
            .unwrap();
        let now = now_ms();
        let (mut a, mut b) = (delivery(), delivery());
        a.event.accepted_at = now as i64 - 10_000;
        b.event.accepted_at = now as i64;
        assert_eq!(
            sink.hold_until(&[b.clone(), a.clone()]),
            Some(now - 10_000 + 60_000)
        );
        a.event.accepted_at = now as i64 - 61_000;
        assert_eq!(sink.hold_until(&[b, a]), None);
        assert_eq!(sink.max_batch(), DIGEST_BATCH);
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
