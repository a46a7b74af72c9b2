//! What librdkafka says, in hookbridge's log without shouting: with its brokers down,
//! librdkafka reports the same error tens of times a second. The first error of a spell is
//! logged, the rest are counted and summed up at most once a minute, and the end of the spell
//! is logged once; librdkafka's informational lines go to `debug`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

/// How often a spell of errors is summed up.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// The sink's librdkafka context: its logs and errors, rate-limited. Clones share the spell,
/// so the sink keeps one to say when a batch went through.
#[derive(Clone)]
pub(super) struct QuietContext {
    sink: String,
    spell: Arc<Mutex<Option<Spell>>>,
}

/// Errors since the first of a run of them.
struct Spell {
    started: Instant,
    last_summary: Instant,
    since_summary: u64,
    total: u64,
    latest: String,
}

impl QuietContext {
    /// The context of sink `sink`.
    pub fn new(sink: &str) -> Self {
        QuietContext {
            sink: sink.to_string(),
            spell: Arc::new(Mutex::new(None)),
        }
    }

    /// One error from librdkafka: logged when it starts a spell, counted otherwise.
    fn note(&self, message: &str) {
        let mut guard = match self.spell.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        match guard.as_mut() {
            None => {
                tracing::warn!(sink = %self.sink, error = %message, "kafka: librdkafka reports errors; more are summed up every minute until they stop");
                *guard = Some(Spell {
                    started: now,
                    last_summary: now,
                    since_summary: 0,
                    total: 1,
                    latest: message.to_string(),
                });
            }
            Some(spell) => {
                spell.total += 1;
                spell.since_summary += 1;
                spell.latest = message.to_string();
                if now.duration_since(spell.last_summary) >= SUMMARY_EVERY {
                    tracing::warn!(sink = %self.sink, errors = spell.since_summary, latest = %spell.latest, "kafka: librdkafka still reports errors");
                    spell.last_summary = now;
                    spell.since_summary = 0;
                }
            }
        }
    }

    /// A batch was acknowledged: a spell of errors, if any, is over.
    pub fn recovered(&self) {
        let mut guard = match self.spell.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(spell) = guard.take() {
            tracing::info!(sink = %self.sink, errors = spell.total, lasted = ?Duration::from_secs(spell.started.elapsed().as_secs()), "kafka: librdkafka's errors stopped");
        }
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => self.note(&format!("{fac} {log_message}")),
            _ => tracing::debug!(sink = %self.sink, "librdkafka: {fac} {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note(&format!("{error}: {reason}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spell_of_errors_starts_once_and_ends_once() {
        let c = QuietContext::new("bus");
        for _ in 0..300 {
            c.error(KafkaError::Canceled, "AllBrokersDown");
        }
        let spell = c.spell.lock().unwrap();
        assert_eq!(spell.as_ref().map(|s| s.total), Some(300));
        drop(spell);
        c.recovered();
        assert!(c.spell.lock().unwrap().is_none());
    }
}
