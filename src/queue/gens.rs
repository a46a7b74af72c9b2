//! What reconciliation remembers per hook: each layer's last `serverGen`, the windows the
//! hook's webhook delivered, and the windows a poll is delivering (so a restart between the
//! fetch and the `serverGen` update neither loses nor repeats them).
//!
//! Rows of the tree `enrich`: `G` + hook + 0 + layer (u32) → the layer's serverGen (u64);
//! `W` + hook + 0 + layer + from + to → nothing (a webhook delivery's window); `I` + hook →
//! [`Intent`] (JSON). `G` and `I` are written and flushed before a poll goes on.

use serde::{Deserialize, Serialize};

use super::keys::u64_at;
use super::log;
use super::{Queue, QueueError, decode, encode};

const GEN: u8 = b'G';
const WINDOW: u8 = b'W';
const INTENT: u8 = b'I';

/// One layer's changes between two server generations, as a poll delivers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerWindow {
    /// The layer id.
    pub layer: u32,
    /// The serverGen the window starts after.
    pub from: u64,
    /// The serverGen it ends at.
    pub to: u64,
}

/// The windows a poll found, recorded before their events are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// One per layer with changes.
    pub windows: Vec<LayerWindow>,
    /// Each layer's serverGen once they are delivered.
    pub gens: Vec<(u32, u64)>,
}

fn hook_prefix(prefix: u8, hook: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(hook.len() + 2);
    k.push(prefix);
    k.extend_from_slice(hook.as_bytes());
    k.push(0);
    k
}

fn layer_key(prefix: u8, hook: &str, layer: u32) -> Vec<u8> {
    let mut k = hook_prefix(prefix, hook);
    k.extend_from_slice(&layer.to_be_bytes());
    k
}

impl Queue {
    /// Layer `layer`'s last serverGen for `hook`, if one is stored.
    pub fn server_gen(&self, hook: &str, layer: u32) -> Result<Option<u64>, QueueError> {
        Ok(self
            .trees
            .enrich
            .get(layer_key(GEN, hook, layer))?
            .and_then(|v| u64_at(&v, 0)))
    }

    /// Stores each layer's serverGen for `hook`, drops the intent and the webhook windows now
    /// behind them, and flushes before returning.
    pub async fn set_server_gens(&self, hook: &str, gens: &[(u32, u64)]) -> Result<(), QueueError> {
        let tree = &self.trees.enrich;
        for (layer, gen_) in gens {
            tree.insert(layer_key(GEN, hook, *layer), &gen_.to_be_bytes())?;
            for (from, to) in self.webhook_windows(hook, *layer)? {
                if to <= *gen_ {
                    tree.remove(window_key(hook, *layer, from, to))?;
                }
            }
        }
        tree.remove(hook_prefix(INTENT, hook))?;
        self.flush_async().await
    }

    /// The windows a poll of `hook` was delivering when the daemon stopped, if any.
    pub fn intent(&self, hook: &str) -> Result<Option<Intent>, QueueError> {
        let key = hook_prefix(INTENT, hook);
        match self.trees.enrich.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// Records the windows a poll of `hook` is about to deliver, flushed before returning.
    pub async fn set_intent(&self, hook: &str, intent: &Intent) -> Result<(), QueueError> {
        self.trees
            .enrich
            .insert(hook_prefix(INTENT, hook), encode(intent))?;
        self.flush_async().await
    }

    /// Records that `hook`'s webhook delivered layer `layer`'s changes from `from` to `to`.
    pub fn record_webhook_window(
        &self,
        hook: &str,
        layer: u32,
        from: u64,
        to: u64,
    ) -> Result<(), QueueError> {
        self.trees
            .enrich
            .insert(window_key(hook, layer, from, to), &[])?;
        Ok(())
    }

    /// The windows `hook`'s webhook delivered for `layer`, by their start.
    pub fn webhook_windows(&self, hook: &str, layer: u32) -> Result<Vec<(u64, u64)>, QueueError> {
        let prefix = layer_key(WINDOW, hook, layer);
        let mut out = Vec::new();
        for item in self.trees.enrich.scan_prefix(&prefix) {
            let (k, _) = item?;
            if let (Some(from), Some(to)) = (u64_at(&k, prefix.len()), u64_at(&k, prefix.len() + 8))
            {
                out.push((from, to));
            }
        }
        Ok(out)
    }

    /// The newest seq the log holds (0 when it is empty).
    pub fn last_seq(&self) -> Result<u64, QueueError> {
        let Some(item) = self.trees.log.iter().next_back() else {
            return Ok(0);
        };
        let (k, v) = item?;
        Ok(log::LogRow::decode(&k, &v)?.end().saturating_sub(1))
    }

    /// [`Queue::flush`] on a blocking thread.
    pub async fn flush_async(&self) -> Result<(), QueueError> {
        let (files, db) = (self.store.files.clone(), self.db.clone());
        tokio::task::spawn_blocking(move || files.flush(&db).map(|_| ()))
            .await
            .map_err(|e| QueueError::Storage(sled::Error::Io(std::io::Error::other(e))))?
    }
}

fn window_key(hook: &str, layer: u32, from: u64, to: u64) -> Vec<u8> {
    let mut k = layer_key(WINDOW, hook, layer);
    k.extend_from_slice(&from.to_be_bytes());
    k.extend_from_slice(&to.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> std::sync::Arc<Queue> {
        Queue::open(dir, crate::queue::tests::long()).unwrap()
    }

    #[tokio::test]
    async fn gens_intents_and_webhook_windows_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(dir.path());
        assert_eq!(queue.server_gen("h", 0).unwrap(), None);
        queue.record_webhook_window("h", 0, 10, 14).unwrap();
        queue.record_webhook_window("h", 0, 20, 24).unwrap();
        queue.record_webhook_window("other", 0, 1, 2).unwrap();
        let intent = Intent {
            windows: vec![LayerWindow {
                layer: 0,
                from: 14,
                to: 20,
            }],
            gens: vec![(0, 20)],
        };
        queue.set_intent("h", &intent).await.unwrap();
        queue.close().unwrap();
        drop(queue);

        let queue = open(dir.path());
        assert_eq!(queue.intent("h").unwrap(), Some(intent));
        assert_eq!(queue.webhook_windows("h", 0).unwrap(), [(10, 14), (20, 24)]);
        queue.set_server_gens("h", &[(0, 20)]).await.unwrap();
        assert_eq!(queue.server_gen("h", 0).unwrap(), Some(20));
        assert_eq!(queue.intent("h").unwrap(), None);
        assert_eq!(
            queue.webhook_windows("h", 0).unwrap(),
            [(20, 24)],
            "windows behind the serverGen are dropped"
        );
        assert_eq!(queue.webhook_windows("other", 0).unwrap(), [(1, 2)]);
        assert_eq!(queue.last_seq().unwrap(), 0);
        queue.close().unwrap();
    }
}
