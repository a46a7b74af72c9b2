//! What JetStream's answers and a broken link mean for each delivery, in one place.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::publish::PublishAck;

use crate::sinks::Outcome;

/// What became of one published message once its acknowledgement was awaited.
#[derive(Debug)]
pub(super) enum Acked {
    /// Decided: delivered (a duplicate JetStream dropped counts), retried or dead-lettered.
    Done(Outcome),
    /// No stream answered for the subject: whether one takes it decides (see
    /// [`no_stream_outcome`]).
    NoStream(String),
    /// The link failed before an answer came: not sent.
    Lost(String),
}

/// What JetStream's answer (or its absence) to one publish means for the delivery.
pub(super) fn ack_outcome(subject: &str, answer: Result<PublishAck, PublishError>) -> Acked {
    let error = match answer {
        Ok(_) => return Acked::Done(Outcome::Delivered),
        Err(e) => e,
    };
    match error.kind() {
        PublishErrorKind::StreamNotFound => Acked::NoStream(subject.to_string()),
        PublishErrorKind::TimedOut => {
            Acked::Lost("no acknowledgement from JetStream in time".into())
        }
        PublishErrorKind::BrokenPipe => Acked::Lost("the connection to NATS broke".into()),
        _ => match api_error(&error) {
            Some((code, text)) if refused_for_good(code) => Acked::Done(Outcome::Reject(format!(
                "JetStream refused the message on subject {subject:?}: {text} (error {})",
                code.0
            ))),
            Some((code, text)) => Acked::Done(Outcome::Retry(format!(
                "JetStream: {text} (error {})",
                code.0
            ))),
            None => Acked::Done(Outcome::Retry(format!("JetStream publish: {error}"))),
        },
    }
}

/// The `hookbridge_sink_errors_total` kind of an answer that is not a plain acknowledgement.
pub(super) fn error_kind(acked: &Acked) -> Option<&'static str> {
    match acked {
        Acked::Done(Outcome::Delivered) => None,
        Acked::Done(Outcome::Reject(_)) => Some("refused"),
        Acked::Done(_) => Some("nack"),
        Acked::NoStream(_) => Some("no_stream"),
        Acked::Lost(_) => Some("connection_lost"),
    }
}

/// The JetStream API error behind a publish error, with its text.
fn api_error(error: &PublishError) -> Option<(ErrorCode, String)> {
    let source = std::error::Error::source(error)?;
    let api = source.downcast_ref::<async_nats::jetstream::Error>()?;
    Some((api.error_code(), api.to_string()))
}

/// JetStream errors that no retry can fix: the message is too large for the stream, or it
/// would land in another stream than the sink's `stream`.
fn refused_for_good(code: ErrorCode) -> bool {
    code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM || code == ErrorCode::STREAM_NOT_MATCH
}

/// A message no stream answered for: dead-lettered when JetStream says no stream takes its
/// subject (`found` is `Ok(None)`), else retried (JetStream was not ready to answer).
pub(super) fn no_stream_outcome(subject: &str, found: Result<Option<String>, String>) -> Outcome {
    match found {
        Ok(None) => Outcome::Reject(format!(
            "no JetStream stream takes subject {subject:?}: add it to a stream's subjects"
        )),
        Ok(Some(stream)) => Outcome::Retry(format!(
            "stream {stream} takes subject {subject:?} but did not answer"
        )),
        Err(e) => Outcome::Retry(format!(
            "no stream answered for subject {subject:?}, and JetStream could not say which takes it: {e}"
        )),
    }
}

/// `text` with every secret in `secrets` replaced, and the password of any URL in it, so that
/// a client's error can be logged.
pub(super) fn scrub(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 3)
        .fold(text.to_string(), |t, s| t.replace(s, "***"))
}

/// The server URLs without any password, for logs and errors.
pub(super) fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            match (url.find("://"), url.rfind('@')) {
                (Some(scheme_end), Some(at)) if at > scheme_end => {
                    let userinfo = &url[scheme_end + 3..at];
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
                }
                (None, Some(at)) => format!("***@{}", &url[at + 1..]),
                _ => url.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{SinkError, batch_outcomes};

    #[test]
    fn answers_map_to_outcomes() {
        let timed_out = ack_outcome("a.b", Err(PublishError::new(PublishErrorKind::TimedOut)));
        assert!(matches!(timed_out, Acked::Lost(_)), "{timed_out:?}");
        let none = ack_outcome(
            "a.b",
            Err(PublishError::new(PublishErrorKind::StreamNotFound)),
        );
        assert!(
            matches!(&none, Acked::NoStream(s) if s == "a.b"),
            "{none:?}"
        );
        assert_eq!(error_kind(&none), Some("no_stream"));
        assert!(matches!(
            no_stream_outcome("a.b", Ok(None)),
            Outcome::Reject(r) if r.contains("no JetStream stream takes subject \"a.b\"")
        ));
        assert!(matches!(
            no_stream_outcome("a.b", Err("timed out".into())),
            Outcome::Retry(_)
        ));
    }

    #[test]
    fn a_batch_nobody_answered_is_an_outage() {
        let r = batch_outcomes(vec![Err("lost".into()), Err("lost".into())], false);
        assert!(matches!(r, Err(SinkError::Unavailable(_))));
        let r = batch_outcomes(vec![Ok(Outcome::Delivered), Err("lost".into())], true).unwrap();
        assert!(matches!(r[1], Outcome::Retry(_)));
        let r = batch_outcomes(vec![Ok(Outcome::Reject("bad".into()))], false).unwrap();
        assert!(matches!(r[0], Outcome::Reject(_)));
    }

    #[test]
    fn urls_and_errors_lose_their_secrets() {
        assert_eq!(
            redacted("nats://u:pw@h:4222, tls://h2:4222"),
            "nats://u:***@h:4222,tls://h2:4222"
        );
        assert_eq!(scrub("auth tok3n failed", &["tok3n"]), "auth *** failed");
    }
}
