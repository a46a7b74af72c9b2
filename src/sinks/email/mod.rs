//! Email sink (lettre + tera): one templated mail per event, or one digest per window.
//!
//! Templates: `templates/NAME.subject.tera`, `NAME.txt.tera` and optionally `NAME.html.tera`
//! (then the mail is multipart/alternative; HTML is autoescaped). A mail for one event sees the
//! event's fields, `payload`, `when_utc`, `accepted_utc` and `link`; a digest sees `events` (a
//! list of those), `count`, and the first event's fields. `from`, `to`, `cc` and `bcc` may be
//! templates too. `hookbridge check` renders every template with sample events.
//!
//! `config.rs` holds the settings, checks them and builds the sink, `encode.rs` renders mail,
//! `send.rs` owns the SMTP transport and sends, `errors.rs` says what each answer of the server
//! means; none of them imports `config.rs`: the sink keeps the settings it sends with.

mod config;
mod encode;
mod errors;
mod send;

pub use config::EmailConfig;
