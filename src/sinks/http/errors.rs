//! The one place that reads a receiver's answer, or reqwest's failure, into what becomes of the
//! delivery: delivered, retried (after `Retry-After` when the receiver names one),
//! dead-lettered, or the receiver unreachable as a whole.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use crate::sinks::Outcome;

/// How much of a refusing answer's body a dead letter quotes.
pub(super) const QUOTED_BYTES: usize = 512;

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attempt {
    /// The receiver answered, or the delivery was decided without sending (a template failed).
    Answered(Outcome),
    /// No connection: refused, no DNS name, a TLS handshake that failed. The receiver is down
    /// as a whole; nothing was sent.
    Unreachable(String),
}

/// What a status means for the delivery. `retry_after` is the answer's header, `body` the first
/// bytes of the answer, `url` the receiver as logs may show it.
pub(super) fn answer(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    body: &[u8],
    url: &str,
    now: SystemTime,
) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let reason = format!("{url} answered {}{}", status_text(status), quoted(body));
    if code == 408 || code == 429 || status.is_server_error() {
        return match retry_after.and_then(|v| retry_after_delay(v, now)) {
            Some(after) => Outcome::RetryAfter(reason, after),
            None => Outcome::Retry(reason),
        };
    }
    if code == 410 {
        return Outcome::Reject(format!(
            "the endpoint is gone: {reason}; change the sink's url and replay the dead letters"
        ));
    }
    if status.is_redirection() {
        return Outcome::Reject(format!(
            "{reason}: redirects are not followed (a POST would turn into a GET); point the sink's url at the final address"
        ));
    }
    if status.is_client_error() {
        return Outcome::Reject(reason);
    }
    // 1xx as a final answer: not a refusal, so worth another attempt.
    Outcome::Retry(reason)
}

/// `404 Not Found`.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(text) => format!("{} {text}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// `: <the first 512 bytes of the answer>`, control characters escaped, or nothing.
fn quoted(body: &[u8]) -> String {
    let head = &body[..body.len().min(QUOTED_BYTES)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let shown: String = text
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    let more = if body.len() > QUOTED_BYTES { "…" } else { "" };
    format!(": {shown}{more}")
}

/// A `Retry-After` value: delay-seconds or an HTTP date, as a wait from `now`.
pub(super) fn retry_after_delay(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What a request that got no answer means: an unreachable receiver (no attempt spent), or a
/// timeout or broken exchange (an attempt: the receiver may have seen the request).
pub(super) fn failure(e: reqwest::Error, url: &str, timeout: Duration) -> Attempt {
    let (connect, timed_out) = (e.is_connect(), e.is_timeout());
    let cause = causes(e);
    if connect {
        return Attempt::Unreachable(format!("cannot connect to {url}: {cause}"));
    }
    if timed_out {
        return Attempt::Answered(Outcome::Retry(format!(
            "{url} did not answer within {}",
            humantime::format_duration(timeout)
        )));
    }
    Attempt::Answered(Outcome::Retry(format!("request to {url} failed: {cause}")))
}

/// reqwest's message and its causes, without the URL reqwest would add (it may hold a token).
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://r.example/…";

    fn at(code: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
        let header = retry_after.map(|v| HeaderValue::from_str(v).unwrap());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        answer(
            StatusCode::from_u16(code).unwrap(),
            header.as_ref(),
            body,
            URL,
            now,
        )
    }

    #[test]
    fn every_answer_class() {
        for ok in [200, 201, 202, 204] {
            assert_eq!(at(ok, None, b""), Outcome::Delivered);
        }
        for again in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(at(again, None, b""), Outcome::Retry(_)), "{again}");
        }
        match at(410, None, b"") {
            Outcome::Reject(r) => assert!(
                r.contains("endpoint is gone") && r.contains("410 Gone"),
                "{r}"
            ),
            other => panic!("{other:?}"),
        }
        match at(400, None, b"{\"error\":\"bad field\"}\n") {
            Outcome::Reject(r) => {
                assert_eq!(
                    r,
                    "https://r.example/… answered 400 Bad Request: {\"error\":\"bad field\"}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(at(302, None, b""), Outcome::Reject(r) if r.contains("redirects")));
    }

    #[test]
    fn a_refusal_quotes_only_the_first_512_bytes_with_controls_escaped() {
        let mut body = b"line\r\nnext\x1b[31m".to_vec();
        body.extend(std::iter::repeat_n(b'x', 2000));
        let Outcome::Reject(r) = at(422, None, &body) else {
            panic!()
        };
        assert!(r.contains("line\\r\\nnext\\u{1b}[31m"), "{r}");
        assert!(r.ends_with('…'), "{r}");
        assert!(r.len() < 700, "{}", r.len());
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(
            at(429, Some("7"), b""),
            Outcome::RetryAfter(
                format!("{URL} answered 429 Too Many Requests"),
                Duration::from_secs(7)
            )
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        match at(503, Some("Tue, 14 Nov 2023 22:14:20 GMT"), b"") {
            Outcome::RetryAfter(_, d) => assert_eq!(d, Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
        match at(503, Some("Tue, 14 Nov 2023 22:00:00 GMT"), b"") {
            Outcome::RetryAfter(_, d) => assert_eq!(d, Duration::ZERO),
            other => panic!("{other:?}"),
        }
        assert!(matches!(at(503, Some("soon"), b""), Outcome::Retry(_)));
        // Retry-After on a refusal changes nothing.
        assert!(matches!(at(404, Some("5"), b""), Outcome::Reject(_)));
    }
}
