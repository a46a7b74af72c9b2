//! What a Kafka failure means for a delivery, and librdkafka's messages made safe to log.

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::sinks::{Outcome, SinkError};

/// librdkafka's complaint about a setting, named by its key under `options`.
pub(super) fn config_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, _) => format!("options.{key}: {desc}"),
        other => format!("cannot create the kafka producer: {other}"),
    }
}

/// `text` with the value of every secret-looking setting blanked out, since librdkafka's
/// messages may quote the value they refused.
pub(super) fn redact(text: &str, c: &ClientConfig) -> String {
    c.config_map()
        .into_keys()
        .filter(|key| is_secret_key(key))
        .filter_map(|key| c.get(key).filter(|v| !v.is_empty()))
        .fold(text.to_string(), |t, value| t.replace(value, "***"))
}

/// Whether a librdkafka property may hold a credential.
pub(super) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "key",
        "token",
        "jaas",
        "oauthbearer.config",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// How a failed send should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The brokers refused this message for good: dead-letter it.
    Permanent,
    /// Worth another attempt later.
    Transient,
    /// The cluster did not answer in time: when a whole batch fails so, the sink is down.
    Outage,
    /// The producer cannot go on; it is replaced and the message retried.
    Fatal,
}

/// Sorts a send error: permanent refusals, outages, fatal producer states, and the rest.
pub(super) fn classify(e: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::InvalidRecord
            | C::PolicyViolation
            | C::InvalidTimestamp
            | C::UnsupportedForMessageFormat
            | C::InvalidRequiredAcks
            | C::BadMessage
            | C::InvalidArgument
            | C::KeySerialization
            | C::ValueSerialization,
        ) => Failure::Permanent,
        Some(
            C::MessageTimedOut
            | C::RequestTimedOut
            | C::OperationTimedOut
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::Resolve
            | C::NetworkException
            | C::SSL
            | C::Authentication
            | C::SaslAuthenticationFailed,
        ) => Failure::Outage,
        Some(C::Fatal | C::Fenced | C::OutOfOrderSequenceNumber | C::InvalidProducerEpoch) => {
            Failure::Fatal
        }
        _ => Failure::Transient,
    }
}

/// The outcome of each delivery of a batch, from why each failed (`None`: acknowledged). A batch
/// in which every message met an outage is the sink's failure, not the messages': no attempt
/// is spent.
pub(super) fn outcomes(
    failures: Vec<Option<(Failure, String)>>,
    brokers: &str,
) -> Result<Vec<Outcome>, SinkError> {
    if !failures.is_empty()
        && failures
            .iter()
            .all(|f| matches!(f, Some((Failure::Outage, _))))
    {
        let reason = failures
            .iter()
            .flatten()
            .map(|(_, r)| r.as_str())
            .next()
            .unwrap_or_default();
        return Err(SinkError::Unavailable(format!(
            "kafka brokers {brokers} unavailable: {reason}"
        )));
    }
    Ok(failures
        .into_iter()
        .map(|f| match f {
            None => Outcome::Delivered,
            Some((Failure::Permanent, reason)) => Outcome::Reject(reason),
            Some((_, reason)) => Outcome::Retry(reason),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_blanked_out_of_messages() {
        let mut c = ClientConfig::new();
        c.set("sasl.password", "hunter2").set("acks", "all");
        assert_eq!(
            redact("bad sasl.password hunter2 with acks all", &c),
            "bad sasl.password *** with acks all"
        );
    }

    #[test]
    fn broker_errors_are_classified() {
        let p = |c| classify(&KafkaError::MessageProduction(c));
        assert_eq!(p(RDKafkaErrorCode::MessageSizeTooLarge), Failure::Permanent);
        assert_eq!(
            p(RDKafkaErrorCode::UnknownTopicOrPartition),
            Failure::Permanent
        );
        assert_eq!(
            p(RDKafkaErrorCode::TopicAuthorizationFailed),
            Failure::Permanent
        );
        assert_eq!(p(RDKafkaErrorCode::MessageTimedOut), Failure::Outage);
        assert_eq!(p(RDKafkaErrorCode::AllBrokersDown), Failure::Outage);
        assert_eq!(p(RDKafkaErrorCode::NotEnoughReplicas), Failure::Transient);
        assert_eq!(p(RDKafkaErrorCode::QueueFull), Failure::Transient);
        assert_eq!(p(RDKafkaErrorCode::Fatal), Failure::Fatal);
    }
}
