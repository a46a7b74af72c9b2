//! What the SMTP server's answers, and its silences, mean for a delivery: in one place.

use std::time::Duration;

use lettre::transport::smtp::Error as SmtpError;

use crate::sinks::{Outcome, SinkError};

/// Maps a failed send: 4xx → retry, 5xx → dead letter with the server's text, anything else
/// (refused, timed out, TLS, broken connection) → the server is unavailable.
pub(super) fn classify(error: &SmtpError, server: &str) -> Result<Outcome, SinkError> {
    if error.is_transient() {
        Ok(Outcome::Retry(format!("SMTP server {server}: {error}")))
    } else if error.is_permanent() {
        Ok(Outcome::Reject(format!("SMTP server {server}: {error}")))
    } else {
        Err(SinkError::Unavailable(format!(
            "SMTP server {server}: {error}"
        )))
    }
}

/// The server took longer than `bound` over one mail: it is unavailable, no attempt is spent.
pub(super) fn unfinished(server: &str, bound: Duration) -> SinkError {
    SinkError::Unavailable(format!(
        "SMTP server {server} did not finish a mail within {}",
        humantime::format_duration(bound)
    ))
}

/// The server did not answer the connection check (`NOOP`), or failed it.
pub(super) fn no_answer(server: &str, error: Option<&SmtpError>) -> SinkError {
    match error {
        Some(e) => SinkError::Unavailable(format!("SMTP server {server}: {e}")),
        None => SinkError::Unavailable(format!("SMTP server {server} did not answer NOOP")),
    }
}
