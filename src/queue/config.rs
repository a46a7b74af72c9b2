//! `[storage]`: where the queue lives, how long it remembers, how much disk it leaves free.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Retention;

/// `[storage]`: where the durable queue lives and how long it remembers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory (relative paths are relative to the config file).
    #[serde(default = "default_data")]
    pub path: PathBuf,
    /// How long an accepted event id is remembered to refuse retried deliveries.
    #[serde(default = "days7", with = "humantime_serde")]
    pub dedup_window: Duration,
    /// How long delivered events are kept (for status queries).
    #[serde(default = "day1", with = "humantime_serde")]
    pub keep_delivered: Duration,
    /// How long dead letters are kept before they are purged.
    #[serde(default = "days7", with = "humantime_serde")]
    pub keep_dead: Duration,
    /// Free space below which deliveries are refused with 503, so the store never fills up.
    #[serde(default = "default_min_free")]
    pub min_free: bytesize::ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: default_data(),
            dedup_window: days7(),
            keep_delivered: day1(),
            keep_dead: days7(),
            min_free: default_min_free(),
        }
    }
}

fn default_min_free() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(100)
}
fn default_data() -> PathBuf {
    PathBuf::from("./data")
}
fn day1() -> Duration {
    Duration::from_secs(86_400)
}
fn days7() -> Duration {
    Duration::from_secs(7 * 86_400)
}

impl StorageConfig {
    /// How long each kind of row is kept, and the free space accepts must leave.
    pub fn retention(&self) -> Retention {
        Retention {
            dedup_window: self.dedup_window,
            keep_delivered: self.keep_delivered,
            keep_dead: self.keep_dead,
            min_free: self.min_free.as_u64(),
        }
    }
}
