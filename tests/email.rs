//! The email sink end to end: the real daemon sends to a real SMTP server (the `mailin` protocol
//! state machine on a loopback socket) that captures every mail and can answer 4xx/5xx.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BASE_CONFIG, Daemon, free_port, sample};
use mailin::{Action, Handler, Response, SessionBuilder};
use mailparse::{MailHeaderMap, ParsedMail};

/// One mail the server accepted.
#[derive(Debug, Clone)]
struct Mail {
    /// Envelope recipients (RCPT TO), Bcc included.
    rcpt: Vec<String>,
    /// The message as sent after DATA.
    data: Vec<u8>,
}

impl Mail {
    fn parsed(&self) -> ParsedMail<'_> {
        mailparse::parse_mail(&self.data).expect("a parseable mail")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.parsed().headers.get_first_value(name)
    }

    fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    fn content_type(&self) -> String {
        self.parsed().ctype.mimetype.clone()
    }

    /// The decoded body of the first part of this MIME type.
    fn part(&self, mime: &str) -> Option<String> {
        fn find(p: &ParsedMail<'_>, mime: &str) -> Option<String> {
            if p.subparts.is_empty() {
                return (p.ctype.mimetype == mime).then(|| p.get_body().expect("body"));
            }
            p.subparts.iter().find_map(|s| find(s, mime))
        }
        find(&self.parsed(), mime)
    }

    fn text(&self) -> String {
        self.part("text/plain").unwrap_or_default()
    }
}

/// What the server shares between its connections and the test.
#[derive(Clone, Default)]
struct Capture {
    mails: Arc<Mutex<Vec<Mail>>>,
    /// Answers to give at the end of DATA, in order, before accepting again with 250.
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
    /// Every end of DATA, accepted or not.
    attempts: Arc<AtomicUsize>,
    /// AUTH PLAIN user names and passwords received.
    logins: Arc<Mutex<Vec<(String, String)>>>,
}

/// One SMTP session's handler.
struct Session {
    capture: Capture,
    rcpt: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Session {
    fn data_start(&mut self, _domain: &str, _from: &str, _8bit: bool, to: &[String]) -> Response {
        self.rcpt = to.to_vec();
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        self.capture
            .logins
            .lock()
            .unwrap()
            .push((user.to_string(), password.to_string()));
        if password == PASSWORD {
            mailin::response::AUTH_OK
        } else {
            mailin::response::INVALID_CREDENTIALS
        }
    }

    fn data_end(&mut self) -> Response {
        self.capture.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some((code, text)) = self.capture.answers.lock().unwrap().pop_front() {
            return Response::custom(code, text);
        }
        self.capture.mails.lock().unwrap().push(Mail {
            rcpt: std::mem::take(&mut self.rcpt),
            data: std::mem::take(&mut self.data),
        });
        mailin::response::OK
    }
}

/// The password the server's AUTH PLAIN accepts.
const PASSWORD: &str = "s3cret pass";

/// A capturing SMTP server on loopback.
struct SmtpServer {
    port: u16,
    capture: Capture,
}

impl SmtpServer {
    /// Listens on `port` (0: any free port) and serves each connection on its own thread.
    fn start(port: u16) -> SmtpServer {
        SmtpServer::start_with(port, false)
    }

    /// Like `start`; with `auth`, AUTH PLAIN is offered (over plain text: a test server).
    fn start_with(port: u16, auth: bool) -> SmtpServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind SMTP port");
        let port = listener.local_addr().unwrap().port();
        let capture = Capture::default();
        let shared = capture.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let capture = shared.clone();
                std::thread::spawn(move || serve(stream, capture, auth));
            }
        });
        SmtpServer { port, capture }
    }

    fn answer_next(&self, code: u16, text: &str) {
        self.capture
            .answers
            .lock()
            .unwrap()
            .push_back((code, text.to_string()));
    }

    fn mails(&self) -> Vec<Mail> {
        self.capture.mails.lock().unwrap().clone()
    }

    fn attempts(&self) -> usize {
        self.capture.attempts.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` mails arrived (20 s at most), returning them all.
    async fn wait_mails(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mails = self.mails();
            if mails.len() >= n || Instant::now() > deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Runs one SMTP session: greeting, then line by line through mailin's state machine.
fn serve(stream: TcpStream, capture: Capture, auth: bool) {
    let ip: IpAddr = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or([127, 0, 0, 1].into());
    let handler = Session {
        capture,
        rcpt: vec![],
        data: vec![],
    };
    let mut builder = SessionBuilder::new("capture.test");
    if auth {
        builder
            .enable_auth(mailin::AuthMechanism::Plain)
            .insecure_enable_plaintext_auth();
    }
    let mut session = builder.build(ip, handler);
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut writer = stream;
    if session.greeting().write_to(&mut writer).is_err() {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let res = session.process(&line);
        match res.action {
            // mailin stays in its DATA state after a refused DATA, so close the connection
            // after an error answer, as many servers do; the client reconnects.
            Action::Reply if res.is_error => {
                let _ = res.write_to(&mut writer);
                return;
            }
            Action::Reply => {
                if res.write_to(&mut writer).is_err() || writer.flush().is_err() {
                    return;
                }
            }
            Action::Close | Action::UpgradeTls => {
                let _ = res.write_to(&mut writer);
                return;
            }
            Action::NoReply => {}
        }
    }
}

fn templates_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("templates")
        .display()
        .to_string()
}

/// A daemon config with two hooks and one email sink per kind (`portal`, `feature-service`
/// templates), or a single sink with `sink_extra` for everything when it is given.
fn config(smtp_port: u16, templates: &str, sink_extra: Option<&str>) -> String {
    let head = format!(
        r#"
templates = "{templates}"

{BASE_CONFIG}

[defaults.retry]
attempts = 5
backoff = {{ first = "100ms", max = "300ms" }}
"#
    );
    let sink = |name: &str, extra: &str| {
        let smtp = if extra.contains("smtp =") {
            String::new()
        } else {
            format!("smtp = \"smtp://127.0.0.1:{smtp_port}\"")
        };
        format!(
            r#"
[sinks.{name}]
type = "email"
{smtp}
from = "hookbridge@example.org"
to = ["gis-admins@example.org"]
timeout = "5s"
{extra}
"#
        )
    };
    match sink_extra {
        Some(extra) => format!(
            "{head}{}\n[[routes]]\nmatch = {{}}\nto = [\"mail\"]\n",
            sink("mail", extra)
        ),
        None => format!(
            "{head}{}{}\n[[routes]]\nmatch = {{ kind = \"portal\" }}\nto = [\"portal-mail\"]\n\n[[routes]]\nmatch = {{ kind = \"feature-service\" }}\nto = [\"feature-mail\"]\n",
            sink(
                "portal-mail",
                "template = \"portal\"\ncc = [\"Ops <ops@example.org>\"]\nbcc = [\"audit@example.org\"]"
            ),
            sink("feature-mail", "template = \"feature-service\""),
        ),
    }
}

async fn post(d: &Daemon, hook: &str, body: &[u8]) {
    let a = d.post_signed(hook, body).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

fn by_subject<'a>(mails: &'a [Mail], subject: &str) -> &'a Mail {
    mails
        .iter()
        .find(|m| m.subject() == subject)
        .unwrap_or_else(|| {
            let all: Vec<_> = mails.iter().map(Mail::subject).collect();
            panic!("no mail with subject {subject:?}; subjects: {all:#?}")
        })
}

#[tokio::test]
async fn every_sample_becomes_a_clear_mail() {
    let smtp = SmtpServer::start(0);
    let d = Daemon::start(&config(smtp.port, &templates_dir(), None));
    for (hook, name) in [
        ("portal", "portal-group-update.json"),
        ("portal", "portal-item-share-multi.json"),
        ("portal", "portal-user-role.json"),
        ("features", "feature-created.json"),
        ("features", "feature-multi.json"),
    ] {
        post(&d, hook, &sample(name)).await;
    }
    // 1 + 2 + 1 portal events, 1 + 4 feature-service events (one per layer and change type).
    let mails = smtp.wait_mails(9).await;
    assert_eq!(mails.len(), 9, "{}", d.log_text());

    let group = by_subject(
        &mails,
        "Group 4adc30bb03054812a846fa592de105de was updated by administrator",
    );
    assert!(
        group
            .text()
            .contains("What:    group 4adc30bb03054812a846fa592de105de, update")
    );
    assert!(group.text().contains(
        "https://gis.example.org/portal/home/group.html?id=4adc30bb03054812a846fa592de105de"
    ));
    assert!(group.text().contains("\"Group monitoring\""));

    let shared = by_subject(
        &mails,
        "Item 6cd80cb32d4a4b4d858a020e57fba7b1 was shared with Everyone, 4adc30bb03054812a846fa592de105de by jsmith",
    );
    assert!(
        shared.text().contains("Who:     jsmith"),
        "{}",
        shared.text()
    );
    assert!(shared.text().contains("When:    2023-11-14 22:15:20 UTC"));
    // A list reads as a list, not as JSON.
    assert!(
        shared
            .text()
            .contains("sharedToGroups: Everyone, 4adc30bb03054812a846fa592de105de"),
        "{}",
        shared.text()
    );
    let deleted = by_subject(
        &mails,
        "Item 7dd95fadaec84859ab8ed1059e675e0c was deleted by jsmith",
    );
    assert!(deleted.text().contains(
        "https://gis.example.org/portal/home/item.html?id=7dd95fadaec84859ab8ed1059e675e0c"
    ));

    let role = by_subject(
        &mails,
        "User u1TestUser's role became Publisher (changed by admin)",
    );
    assert!(role.text().contains("userRoleUpdatedTo: Publisher"));

    let created: Vec<_> = mails
        .iter()
        .filter(|m| m.subject() == "Parcels layer 0: features created")
        .collect();
    assert_eq!(created.len(), 2, "feature-created and feature-multi");
    assert!(
        created
            .iter()
            .any(|m| m.text().contains("serverGens=[21891591,25166741]"))
    );
    by_subject(&mails, "Parcels layer 0: features updated");
    by_subject(&mails, "Parcels layer 0: features deleted");
    let attach = by_subject(&mails, "Parcels layer 2: attachments added");
    let text = attach.text();
    assert!(text.contains("Change:  AttachmentsCreated"), "{text}");
    assert!(text.contains(
        "Layer:   https://services.example.com/ABCD1EFghIJK2LmN/ArcGIS/rest/services/Parcels/FeatureServer/2"
    ));
    assert!(text.contains("returnAttachments=true"), "{text}");

    // Headers and envelope: From, To, Cc shown; Bcc only in the envelope.
    assert_eq!(
        group.header("From").as_deref(),
        Some("hookbridge@example.org")
    );
    assert_eq!(
        group.header("To").as_deref(),
        Some("gis-admins@example.org")
    );
    assert!(group.header("Cc").unwrap().contains("ops@example.org"));
    assert_eq!(group.header("Bcc"), None);
    let mut rcpt = group.rcpt.clone();
    rcpt.sort();
    assert_eq!(
        rcpt,
        [
            "audit@example.org",
            "gis-admins@example.org",
            "ops@example.org"
        ]
    );
    assert_eq!(attach.rcpt, ["gis-admins@example.org"]);
    assert!(
        group
            .header("Message-ID")
            .unwrap()
            .contains("portal-mail@example.org")
    );
}

#[tokio::test]
async fn html_template_makes_multipart_alternative_and_text_only_otherwise() {
    let smtp = SmtpServer::start(0);
    let d = Daemon::start(&config(smtp.port, &templates_dir(), None));
    post(&d, "portal", &sample("portal-group-update.json")).await;
    let mails = smtp.wait_mails(1).await;
    let m = &mails[0];
    assert_eq!(m.content_type(), "multipart/alternative");
    let html = m.part("text/html").expect("an HTML part");
    assert!(html.contains("<a href="), "{html}");
    assert!(
        m.text()
            .contains("Group 4adc30bb03054812a846fa592de105de was updated by administrator.")
    );

    // The same kind of template without its .html file: a text/plain mail.
    let plain = tempfile::tempdir().unwrap();
    for part in ["subject", "txt"] {
        std::fs::copy(
            Path::new(&templates_dir()).join(format!("feature-service.{part}.tera")),
            plain.path().join(format!("feature-service.{part}.tera")),
        )
        .unwrap();
    }
    let smtp = SmtpServer::start(0);
    let d = Daemon::start(&config(
        smtp.port,
        &plain.path().display().to_string(),
        Some("template = \"feature-service\""),
    ));
    post(&d, "features", &sample("feature-created.json")).await;
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", d.log_text());
    assert_eq!(mails[0].content_type(), "text/plain");
    assert_eq!(mails[0].part("text/html"), None);
    assert!(mails[0].text().contains("Change:  FeaturesCreated"));
}

#[tokio::test]
async fn hostile_values_cannot_inject_markup_or_headers() {
    let smtp = SmtpServer::start(0);
    let d = Daemon::start(&config(smtp.port, &templates_dir(), None));
    let mut body: serde_json::Value =
        serde_json::from_slice(&sample("portal-item-share-multi.json")).unwrap();
    body["events"][0]["username"] =
        "<script>alert(1)</script>\r\nBcc: evil@x.example\r\nX-Evil: 1".into();
    body["events"][0]["properties"]["sharedToGroups"] =
        serde_json::json!(["<img src=x onerror=alert(2)>"]);
    body["info"]["webhookName"] = "\"><b>hook</b>".into();
    post(&d, "portal", &serde_json::to_vec(&body).unwrap()).await;
    let mails = smtp.wait_mails(2).await;
    let m = mails
        .iter()
        .find(|m| m.subject().contains("was shared"))
        .expect("the share mail");

    let subject = m.subject();
    assert!(
        !subject.contains('\r') && !subject.contains('\n'),
        "{subject:?}"
    );
    assert!(subject.ends_with("by <script>alert(1)</script> Bcc: evil@x.example X-Evil: 1"));
    assert_eq!(m.header("Bcc"), None);
    assert_eq!(m.header("X-Evil"), None);
    assert!(!m.rcpt.iter().any(|r| r.contains("evil")), "{:?}", m.rcpt);
    // Raw header lines: nothing starts with an injected name.
    let raw = String::from_utf8_lossy(&m.data);
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(
        !head
            .lines()
            .any(|l| l.starts_with("Bcc:") || l.starts_with("X-Evil")),
        "{head}"
    );

    let html = m.part("text/html").unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>hook"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{html}"
    );
    // The text part is plain text: the values appear as they are.
    assert!(m.text().contains("Who:     <script>alert(1)</script>"));
}

#[tokio::test]
async fn a_digest_sends_the_window_as_one_mail() {
    let smtp = SmtpServer::start(0);
    let d = Daemon::start(&config(
        smtp.port,
        &templates_dir(),
        Some("template = \"digest\"\ndigest = \"2s\""),
    ));
    post(&d, "portal", &sample("portal-item-share-multi.json")).await;
    post(&d, "portal", &sample("portal-group-update.json")).await;
    post(&d, "features", &sample("feature-created.json")).await;
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", d.log_text());
    // Nothing more comes after the window.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "one mail for the window");
    let m = &mails[0];
    assert!(
        m.subject().starts_with("4 ArcGIS events since "),
        "{}",
        m.subject()
    );
    let text = m.text();
    for id in [
        "item 6cd80cb32d4a4b4d858a020e57fba7b1 share by jsmith",
        "item 7dd95fadaec84859ab8ed1059e675e0c delete by jsmith",
        "group 4adc30bb03054812a846fa592de105de update by administrator",
        "featureService Parcels/0 FeaturesCreated",
    ] {
        assert!(text.contains(id), "{id} missing from {text}");
    }
    assert_eq!(m.content_type(), "multipart/alternative");
}

#[tokio::test]
async fn a_4xx_is_retried_and_delivered_once() {
    let smtp = SmtpServer::start(0);
    smtp.answer_next(451, "4.3.0 Try again later");
    let d = Daemon::start(&config(
        smtp.port,
        &templates_dir(),
        Some("template = \"portal\""),
    ));
    post(&d, "portal", &sample("portal-group-update.json")).await;
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", d.log_text());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(smtp.mails().len(), 1, "delivered once");
    assert_eq!(
        smtp.attempts(),
        2,
        "one refused attempt, then the accepted one"
    );
    assert!(d.log_text().contains("Try again later"), "{}", d.log_text());
}

#[tokio::test]
async fn a_5xx_is_dead_lettered_with_the_server_text() {
    let smtp = SmtpServer::start(0);
    smtp.answer_next(550, "5.7.1 gis-admins mailbox is full of eels");
    let mut d = Daemon::start(&config(
        smtp.port,
        &templates_dir(),
        Some("template = \"portal\""),
    ));
    post(&d, "portal", &sample("portal-group-update.json")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log_text().contains("dead-lettered") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(d.stop().success());
    assert_eq!(smtp.attempts(), 1, "a permanent failure is not retried");
    assert!(smtp.mails().is_empty());
    let out = d.cli(&["dlq", "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("full of eels"), "{stdout}");
    assert!(stdout.contains("550"), "{stdout}");
}

#[tokio::test]
async fn a_server_that_is_down_then_up_gets_the_mail() {
    let port = free_port();
    let d = Daemon::start(&config(
        port,
        &templates_dir(),
        Some("template = \"portal\""),
    ));
    post(&d, "portal", &sample("portal-user-role.json")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let smtp = SmtpServer::start(port);
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", d.log_text());
    assert_eq!(
        mails[0].subject(),
        "User u1TestUser's role became Publisher (changed by admin)"
    );
}

#[tokio::test]
async fn credentials_from_the_config_reach_the_server() {
    let smtp = SmtpServer::start_with(0, true);
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("smtp-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let d = Daemon::start(&config(
        smtp.port,
        &templates_dir(),
        Some(&format!(
            "template = \"portal\"\nuser = \"hookbridge\"\npassword = \"file:{}\"",
            file.display()
        )),
    ));
    post(&d, "portal", &sample("portal-group-update.json")).await;
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", d.log_text());
    let logins = smtp.capture.logins.lock().unwrap().clone();
    assert_eq!(logins[0], ("hookbridge".to_string(), PASSWORD.to_string()));
    assert!(
        !d.log_text().contains(PASSWORD),
        "the password is never logged"
    );
}

#[tokio::test]
async fn required_starttls_that_the_server_lacks_sends_nothing() {
    let smtp = SmtpServer::start_with(0, true);
    let d = Daemon::start(&config(
        smtp.port,
        &templates_dir(),
        Some(&format!(
            "template = \"portal\"\nsmtp = \"smtp://hookbridge:{}@127.0.0.1:{}?tls=starttls\"",
            PASSWORD.replace(' ', "%20"),
            smtp.port
        )),
    ));
    post(&d, "portal", &sample("portal-group-update.json")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(smtp.mails().is_empty());
    assert!(
        smtp.capture.logins.lock().unwrap().is_empty(),
        "no credentials in clear"
    );
    let log = d.log_text();
    assert!(log.contains("sink cannot connect yet"), "{log}");
    assert!(log.to_lowercase().contains("starttls"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("s3cret"), "{log}");
}

#[tokio::test]
async fn a_digest_survives_a_restart() {
    let smtp = SmtpServer::start(0);
    let mut d = Daemon::start(&config(
        smtp.port,
        &templates_dir(),
        Some("template = \"digest\"\ndigest = \"4s\""),
    ));
    post(&d, "portal", &sample("portal-item-share-multi.json")).await;
    post(&d, "portal", &sample("portal-group-update.json")).await;
    assert!(d.stop().success());
    assert!(smtp.mails().is_empty(), "the window was not over yet");
    d.spawn();
    let mails = smtp.wait_mails(1).await;
    assert_eq!(mails.len(), 1, "{}", d.log_text());
    assert!(
        mails[0].subject().starts_with("3 ArcGIS events"),
        "{}",
        mails[0].subject()
    );
}

#[tokio::test]
async fn explain_prints_the_rendered_mail() {
    let d = Daemon::start(&config(free_port(), &templates_dir(), None));
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples/portal-user-role.json");
    let out = d.cli(&["explain", "--hook", "portal", &file.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mail = &v["events"][0]["deliveries"][0]["message"];
    assert_eq!(
        mail["subject"],
        "User u1TestUser's role became Publisher (changed by admin)"
    );
    assert_eq!(mail["to"][0], "gis-admins@example.org");
    assert!(mail["text"].as_str().unwrap().contains("Who:     admin"));
    assert!(mail["html"].as_str().unwrap().contains("<table"));
}

/// A portal delivery whose one event has the id `svc-<n>`.
fn unique_portal(n: u64) -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&common::sample("portal-group-update.json")).expect("json");
    v["events"][0]["id"] = serde_json::Value::from(format!("svc-{n:02}"));
    serde_json::to_vec(&v).expect("json")
}

/// A config with a file sink rendering `line` and an email sink mailing to the test's SMTP server
/// with the templates in `{dir}/mail`.
fn reload_config(smtp: u16, line: &str) -> String {
    format!(
        r#"
templates = "mail"
[server]
listen = "127.0.0.1:{{port}}"
[storage]
path = "{{dir}}/data"
[hooks.portal]
kind = "portal"
secrets = ["example-signature-key"]
[sinks.log]
type = "file"
path = "{{dir}}/events.jsonl"
payload = "template"
payload_template = '{line}'
[sinks.mail]
type = "email"
smtp = "smtp://127.0.0.1:{smtp}"
from = "hb@example.org"
to = ["admins@example.org"]
template = "note"
[[routes]]
match = {{}}
to = ["log", "mail"]
"#
    )
}

#[tokio::test]
async fn sighup_rebuilds_sinks_with_new_templates() {
    let smtp = SmtpServer::start(0);
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::write(mail.join("note.subject.tera"), "first subject {{ id }}").unwrap();
    std::fs::write(mail.join("note.txt.tera"), "first body").unwrap();
    let d = Daemon::start_in(
        &reload_config(smtp.port, r#"{"v":1,"id":"{{ id }}"}"#),
        dir,
        &[],
    );
    assert_eq!(
        d.post_signed("portal", &unique_portal(10)).await.status,
        200
    );
    let lines = d.wait_lines("events.jsonl", 1).await;
    assert_eq!(lines[0]["v"], 1, "{lines:?}");
    smtp.wait_mails(1).await;

    // Change the file sink's template and the mail template file, then reload.
    std::fs::write(mail.join("note.subject.tera"), "second subject {{ id }}").unwrap();
    std::fs::write(
        &d.config,
        reload_config(smtp.port, r#"{"v":2,"id":"{{ id }}"}"#)
            .replace("{port}", d.url.rsplit(':').next().unwrap_or_default())
            .replace("{dir}", &d.dir.path().display().to_string()),
    )
    .unwrap();
    d.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !d.log_text().contains("config reloaded; sinks rebuilt") {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload:\n{}",
            d.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        d.post_signed("portal", &unique_portal(11)).await.status,
        200
    );
    let lines = d.wait_lines("events.jsonl", 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[1]["v"], 2,
        "the next event uses the new template: {lines:?}"
    );
    let mails = smtp.wait_mails(2).await;
    assert_eq!(mails[0].subject(), "first subject svc-10");
    assert_eq!(
        mails[1].subject(),
        "second subject svc-11",
        "the next mail uses the new file"
    );
    assert!(d.log_text().contains("config reloaded; sinks rebuilt"));
}
