//! What the broker's answers and a broken link mean for each delivery, in one place.

use lapin::publisher_confirm::Confirmation;

use crate::sinks::{Outcome, SinkError};

/// What the broker's answer to one publish means for the delivery.
pub(super) fn confirmation_outcome(confirmation: Confirmation) -> Outcome {
    match confirmation {
        Confirmation::Ack(None) => Outcome::Delivered,
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Outcome::Reject(returned_reason(
                returned.reply_code,
                returned.reply_text.as_str(),
                returned.delivery.exchange.as_str(),
                returned.delivery.routing_key.as_str(),
            ))
        }
        Confirmation::Nack(None) => Outcome::Retry("the broker refused the message (nack)".into()),
        Confirmation::NotRequested => {
            Outcome::Retry("the channel is not in confirm mode; not counted as sent".into())
        }
    }
}

/// The `hookbridge_sink_errors_total` kind of a confirm that is not a plain ack.
pub(super) fn confirmation_error_kind(confirmation: &Confirmation) -> Option<&'static str> {
    match confirmation {
        Confirmation::Ack(None) => None,
        Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => Some("unroutable"),
        Confirmation::Nack(None) => Some("nack"),
        Confirmation::NotRequested => Some("unconfirmed"),
    }
}

/// The dead-letter reason for a message the broker returned as unroutable.
fn returned_reason(code: u16, text: &str, exchange: &str, routing_key: &str) -> String {
    let exchange = if exchange.is_empty() {
        "(default)"
    } else {
        exchange
    };
    format!(
        "unroutable: the broker returned it with {code} {text} \
         (exchange {exchange}, routing key {routing_key:?})"
    )
}

/// The outcome of each delivery of a batch: `Err` when the link broke before its confirm came.
/// If the broker answered for none of them, the sink as a whole is unavailable and no attempt
/// is spent; otherwise the unconfirmed ones are retried.
pub(super) fn batch_outcomes(
    results: Vec<Result<Outcome, String>>,
    heard: bool,
    broken: Option<String>,
) -> Result<Vec<Outcome>, SinkError> {
    match broken {
        Some(reason) if !heard => Err(SinkError::Unavailable(reason)),
        _ => Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(Outcome::Retry))
            .collect()),
    }
}

/// `url` with any password replaced, so that it can be logged.
pub(super) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_map_to_outcomes() {
        assert_eq!(
            confirmation_outcome(Confirmation::Ack(None)),
            Outcome::Delivered
        );
        assert!(matches!(
            confirmation_outcome(Confirmation::Nack(None)),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            confirmation_outcome(Confirmation::NotRequested),
            Outcome::Retry(_)
        ));
        let reason = returned_reason(312, "NO_ROUTE", "", "item.delete");
        assert!(reason.contains("312 NO_ROUTE"), "{reason}");
        assert!(reason.contains("(default)"), "{reason}");
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("amqp://guest:s3cret@broker:5672/%2f"),
            "amqp://guest:***@broker:5672/%2f"
        );
        assert_eq!(redacted("amqp://broker/vh"), "amqp://broker/vh");
    }

    #[test]
    fn a_batch_nobody_answered_for_is_the_sinks_failure() {
        let lost = || vec![Err("gone".to_string()), Ok(Outcome::Delivered)];
        assert!(matches!(
            batch_outcomes(lost(), false, Some("gone".into())),
            Err(SinkError::Unavailable(_))
        ));
        assert_eq!(
            batch_outcomes(lost(), true, Some("gone".into())).unwrap(),
            vec![Outcome::Retry("gone".into()), Outcome::Delivered]
        );
    }
}
