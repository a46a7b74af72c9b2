//! The built-in sink: JSON lines appended to a local file, fsync'd before a delivery counts as done.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Deserialize;

use serde_json::{Value, json};

use super::{
    Delivery, Outcome, Sink, SinkError, body_for_display, payload_template_name,
    register_payload_template,
};
use crate::event::Event;
use crate::problem::Problem;
use crate::render::{PayloadFormat, RenderError, Renderer};

/// `[sinks.NAME]` with `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// File to append to (relative paths are relative to the config file).
    pub path: PathBuf,
    /// What each line holds.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// Tera template for each line when `payload = "template"`.
    pub payload_template: Option<String>,
}

impl FileConfig {
    /// A JSON-lines sink writing normalized events to `path`.
    pub fn for_path(path: PathBuf) -> Self {
        FileConfig {
            path,
            payload: PayloadFormat::Event,
            payload_template: None,
        }
    }

    pub(super) fn register_templates(&self, name: &str, r: &mut Renderer, p: &mut Vec<Problem>) {
        register_payload_template(name, self.payload, self.payload_template.as_deref(), r, p);
    }

    pub(super) fn preview(
        &self,
        name: &str,
        r: &Renderer,
        event: &Event,
        payload: &str,
    ) -> Result<Value, RenderError> {
        let line = r.encode(self.payload, &payload_template_name(name), event, payload)?;
        Ok(json!({ "path": self.path, "line": body_for_display(&line) }))
    }
}

/// Appends one line per delivery; a batch is one write and one fsync.
pub struct FileSink {
    config: FileConfig,
    template: String,
    renderer: Renderer,
    file: Arc<Mutex<Option<File>>>,
}

impl FileSink {
    /// A sink for `config`; the file is opened on `connect`.
    pub fn new(name: &str, config: FileConfig, renderer: Renderer) -> Self {
        FileSink {
            config,
            template: payload_template_name(name),
            renderer,
            file: Arc::new(Mutex::new(None)),
        }
    }

    /// Opens for appending; a last line cut short by a crash is terminated so the next line
    /// starts clean (readers skip the partial one).
    fn open(path: &PathBuf) -> std::io::Result<File> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                file.sync_data()?;
            }
        }
        Ok(file)
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let path = self.config.path.clone();
        let slot = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let f = FileSink::open(&path)
                .map_err(|e| SinkError::Unavailable(format!("open {}: {e}", path.display())))?;
            if let Ok(mut guard) = slot.lock() {
                *guard = Some(f);
            }
            Ok(())
        })
        .await
        .map_err(|e| SinkError::Unavailable(e.to_string()))?
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        let mut outcomes = Vec::with_capacity(batch.len());
        for d in batch {
            match self
                .renderer
                .encode(self.config.payload, &self.template, &d.event, &d.payload)
            {
                Ok(mut line) => {
                    line.retain(|b| *b != b'\n');
                    buf.extend_from_slice(&line);
                    buf.push(b'\n');
                    outcomes.push(Outcome::Delivered);
                }
                Err(e) => outcomes.push(Outcome::Reject(e.to_string())),
            }
        }
        let path = self.config.path.clone();
        let slot = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = slot
                .lock()
                .map_err(|_| SinkError::Unavailable("file sink lock poisoned".into()))?;
            if guard.is_none() {
                *guard = Some(FileSink::open(&path).map_err(|e| {
                    SinkError::Unavailable(format!("open {}: {e}", path.display()))
                })?);
            }
            let result = match guard.as_mut() {
                Some(f) => f.write_all(&buf).and_then(|_| f.sync_data()),
                None => Ok(()),
            };
            if let Err(e) = result {
                // Reopen next time: the file may have been rotated or the disk freed.
                *guard = None;
                return Err(SinkError::Unavailable(format!(
                    "write {}: {e}",
                    path.display()
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| SinkError::Unavailable(e.to_string()))??;
        Ok(outcomes)
    }

    fn max_batch(&self) -> usize {
        512
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(seq: u64) -> Delivery {
        Delivery {
            seq,
            attempts: 0,
            event: Event {
                event_id: format!("{seq:032x}"),
                accepted_at: 1,
                ..crate::event::sample(seq)
            },
            payload: Arc::from("{\"raw\":\n true}"),
        }
    }

    #[tokio::test]
    async fn appends_one_line_per_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.jsonl");
        let sink = FileSink::new(
            "log",
            FileConfig::for_path(path.clone()),
            Renderer::new(dir.path().into()),
        );
        sink.connect().await.unwrap();
        let out = sink.send(&[delivery(1), delivery(2)]).await.unwrap();
        assert_eq!(out, vec![Outcome::Delivered, Outcome::Delivered]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].event_id, format!("{:032x}", 2));

        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"cut\":")
            .unwrap();
        let sink = FileSink::new(
            "log",
            FileConfig::for_path(path.clone()),
            Renderer::new(dir.path().into()),
        );
        sink.connect().await.unwrap();
        sink.send(&[delivery(4)]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let last: Event = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last.event_id, format!("{:032x}", 4));

        let raw = FileConfig {
            payload: PayloadFormat::Raw,
            ..FileConfig::for_path(path.clone())
        };
        let sink = FileSink::new("log", raw, Renderer::new(dir.path().into()));
        sink.send(&[delivery(3)]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().last(), Some("{\"raw\": true}"));
    }
}
