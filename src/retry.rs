//! Retry policy: how often a delivery is tried, and how long to wait between attempts.

use std::time::Duration;

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

fn default_attempts() -> u32 {
    12
}
fn default_backoff() -> Backoff {
    Backoff {
        first: Duration::from_secs(1),
        max: Duration::from_secs(300),
    }
}
