//! What the broker's acknowledgements and a broken link mean for each delivery, in one place.

use rumqttc::v5::mqttbytes::v5::{PubAckReason, PubCompReason, PubRecReason};

use crate::sinks::Outcome;

/// The broker's answer to one publish, as the session saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) with success.
    Done,
    /// Accepted, but no subscription matched (reason 0x10).
    NoSubscribers,
    /// Refused for good (not authorized, topic name invalid, payload format invalid).
    Refused(String),
    /// Refused for now (quota exceeded, packet id in use, unspecified): worth a retry.
    Busy(String),
    /// The link or the session was lost before the answer came: not sent.
    Lost(String),
}

/// A PUBACK's (or a QoS 2 PUBREC's) reason code as an answer.
pub(super) fn ack_answer(reason: &PubAckReason) -> Answer {
    use PubAckReason as R;
    match reason {
        R::Success => Answer::Done,
        R::NoMatchingSubscribers => Answer::NoSubscribers,
        R::NotAuthorized => {
            Answer::Refused("not authorized to publish to this topic (0x87)".into())
        }
        R::TopicNameInvalid => Answer::Refused("the topic name is invalid (0x90)".into()),
        R::PayloadFormatInvalid => Answer::Refused("the payload format is invalid (0x99)".into()),
        R::QuotaExceeded => Answer::Busy("quota exceeded (0x97)".into()),
        R::PacketIdentifierInUse => Answer::Busy("packet identifier in use (0x91)".into()),
        R::ImplementationSpecificError => {
            Answer::Busy("implementation-specific error (0x83)".into())
        }
        R::UnspecifiedError => Answer::Busy("unspecified error (0x80)".into()),
    }
}

/// A QoS 2 PUBREC's reason code: `None` when the exchange goes on (PUBREL, then PUBCOMP).
pub(super) fn rec_answer(reason: &PubRecReason) -> Option<Answer> {
    use PubRecReason as R;
    let same = match reason {
        R::Success | R::NoMatchingSubscribers => return None,
        R::NotAuthorized => PubAckReason::NotAuthorized,
        R::TopicNameInvalid => PubAckReason::TopicNameInvalid,
        R::PayloadFormatInvalid => PubAckReason::PayloadFormatInvalid,
        R::QuotaExceeded => PubAckReason::QuotaExceeded,
        R::PacketIdentifierInUse => PubAckReason::PacketIdentifierInUse,
        R::ImplementationSpecificError => PubAckReason::ImplementationSpecificError,
        R::UnspecifiedError => PubAckReason::UnspecifiedError,
    };
    Some(ack_answer(&same))
}

/// A PUBCOMP's reason code as an answer.
pub(super) fn comp_answer(reason: &PubCompReason) -> Answer {
    match reason {
        PubCompReason::Success => Answer::Done,
        PubCompReason::PacketIdentifierNotFound => {
            Answer::Busy("the broker no longer knew the packet id (0x92)".into())
        }
    }
}

/// What an answer means for the delivery (`Err`: not sent, the link failed), and its
/// `hookbridge_sink_errors_total` kind.
pub(super) fn outcome(
    answer: Answer,
    topic: &str,
    require_subscribers: bool,
) -> (Result<Outcome, String>, Option<&'static str>) {
    match answer {
        Answer::Done => (Ok(Outcome::Delivered), None),
        Answer::NoSubscribers if require_subscribers => (
            Ok(Outcome::Reject(format!(
                "no subscriber: the broker had no subscription matching topic {topic:?} \
                 (require_subscribers = true)"
            ))),
            Some("unroutable"),
        ),
        Answer::NoSubscribers => (Ok(Outcome::Delivered), None),
        Answer::Refused(why) => (
            Ok(Outcome::Reject(format!(
                "the broker refused topic {topic:?}: {why}"
            ))),
            Some("refused"),
        ),
        Answer::Busy(why) => (
            Ok(Outcome::Retry(format!("the broker: {why}"))),
            Some("nack"),
        ),
        Answer::Lost(why) => (Err(why), Some("connection_lost")),
    }
}

/// `text` with `secret` replaced, so that a client's error can be logged.
pub(super) fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 3 => text.replace(s, "***"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{SinkError, batch_outcomes};

    #[test]
    fn reason_codes_map_to_outcomes() {
        assert_eq!(
            outcome(ack_answer(&PubAckReason::Success), "t", true).0,
            Ok(Outcome::Delivered)
        );
        let (r, kind) = outcome(ack_answer(&PubAckReason::NoMatchingSubscribers), "t", true);
        assert!(
            matches!(r, Ok(Outcome::Reject(ref w)) if w.contains("no subscriber")),
            "{r:?}"
        );
        assert_eq!(kind, Some("unroutable"));
        assert_eq!(
            outcome(ack_answer(&PubAckReason::NoMatchingSubscribers), "t", false).0,
            Ok(Outcome::Delivered)
        );
        let (r, _) = outcome(ack_answer(&PubAckReason::NotAuthorized), "a/b", false);
        assert!(matches!(r, Ok(Outcome::Reject(ref w)) if w.contains("0x87") && w.contains("a/b")));
        let (r, _) = outcome(ack_answer(&PubAckReason::QuotaExceeded), "t", false);
        assert!(matches!(r, Ok(Outcome::Retry(_))));
        assert_eq!(rec_answer(&PubRecReason::Success), None);
        assert!(matches!(
            rec_answer(&PubRecReason::NotAuthorized),
            Some(Answer::Refused(_))
        ));
        assert_eq!(comp_answer(&PubCompReason::Success), Answer::Done);
    }

    #[test]
    fn a_batch_nobody_answered_is_an_outage() {
        let r = batch_outcomes(vec![Err("lost".into())], false);
        assert!(matches!(r, Err(SinkError::Unavailable(_))));
        let r = batch_outcomes(vec![Ok(Outcome::Delivered), Err("lost".into())], true).unwrap();
        assert!(matches!(r[1], Outcome::Retry(_)));
        assert_eq!(scrub("bad pw hunter2", Some("hunter2")), "bad pw ***");
    }
}
