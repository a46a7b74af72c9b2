//! Retry policy: how often a delivery is tried, and how long to wait between attempts.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay after the first failure.
    #[serde(with = "humantime_serde")]
    pub first: Duration,
    /// Cap on any one delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

/// `[defaults.retry]` or `[sinks.NAME.retry]`: how often a delivery is tried before it is dead.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts before a delivery becomes a dead letter.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Delay between attempts.
    #[serde(default = "default_backoff")]
    pub backoff: Backoff,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            backoff: default_backoff(),
        }
    }
}

/// The longest wait a destination's `Retry-After` is honoured for; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Backoff {
    /// The delay before attempt `attempt + 1`: exponential from `first`, capped at `max`, with
    /// jitter in the upper half so that many failures do not retry in lockstep. The one backoff
    /// of the dispatchers and the change feed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self.first.saturating_mul(1u32 << exp).min(self.max);
        let half = base / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// The delay before attempt `attempt + 1` when the destination asked for `after` (HTTP
    /// `Retry-After`): the backoff or that wait, whichever is longer. The wait asked is
    /// honoured whatever the backoff's `max` (a receiver's rate limit is its own to set), up
    /// to [`MAX_RETRY_AFTER`], so that a destination cannot park a delivery for days.
    pub fn delay_after(&self, attempt: u32, after: Option<Duration>) -> Duration {
        let backoff = self.delay(attempt);
        match after {
            Some(after) => backoff.max(after.min(MAX_RETRY_AFTER)),
            None => backoff,
        }
    }
}

fn default_attempts() -> u32 {
    12
}
fn default_backoff() -> Backoff {
    Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(300),
    }
}
