//! The open file, and appending a batch with one write and one fsync.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::encode::Encoder;
use super::errors::{io_failed, render_failed, task_failed};
use crate::event::Delivery;
use crate::sinks::{Outcome, Sink, SinkError};

/// Appends one line per delivery; a batch is one write and one fsync.
pub(super) struct FileSink {
    path: PathBuf,
    encoder: Encoder,
    file: Arc<Mutex<Option<File>>>,
}

impl FileSink {
    /// A sink appending to `path`; the file is opened on `connect` or the first `send`.
    pub fn new(path: PathBuf, encoder: Encoder) -> Self {
        FileSink {
            path,
            encoder,
            file: Arc::new(Mutex::new(None)),
        }
    }
}

/// Opens for appending; a last line cut short by a crash is terminated so the next line starts
/// clean (readers skip the partial one). The file's directory entry (and those of the
/// directories created for it) is synced first: the data fsync'd into a file whose entry is
/// not on disk yet is lost with it in a power cut, after the queue was told it was delivered.
fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        crate::durable::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    crate::durable::sync_parent(path)?;
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

/// Writes `buf` to the file in `slot` (opening it first if needed) and syncs it. On failure the
/// file is closed, so the next batch reopens it: it may have been rotated or the disk freed.
fn append(slot: &Mutex<Option<File>>, path: &Path, buf: &[u8]) -> Result<(), SinkError> {
    let mut guard = slot
        .lock()
        .map_err(|_| SinkError::Unavailable("file sink lock poisoned".into()))?;
    let mut file = match guard.take() {
        Some(f) => f,
        None => open(path).map_err(|e| io_failed("open", path, &e))?,
    };
    file.write_all(buf)
        .and_then(|_| file.sync_data())
        .map_err(|e| io_failed("write", path, &e))?;
    *guard = Some(file);
    Ok(())
}

#[async_trait]
impl Sink for FileSink {
    async fn connect(&self) -> Result<(), SinkError> {
        let path = self.path.clone();
        let slot = self.file.clone();
        tokio::task::spawn_blocking(move || {
            let f = open(&path).map_err(|e| io_failed("open", &path, &e))?;
            if let Ok(mut guard) = slot.lock() {
                *guard = Some(f);
            }
            Ok(())
        })
        .await
        .map_err(|e| task_failed(&e))?
    }

    async fn send(&self, batch: &[Delivery]) -> Result<Vec<Outcome>, SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 512);
        let mut outcomes = Vec::with_capacity(batch.len());
        for d in batch {
            match self.encoder.line(&d.event, &d.payload) {
                Ok(line) => {
                    buf.extend_from_slice(&line);
                    outcomes.push(Outcome::Delivered);
                }
                Err(e) => outcomes.push(render_failed(&e)),
            }
        }
        let path = self.path.clone();
        let slot = self.file.clone();
        tokio::task::spawn_blocking(move || append(&slot, &path, &buf))
            .await
            .map_err(|e| task_failed(&e))??;
        Ok(outcomes)
    }

    fn max_batch(&self) -> usize {
        512
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::render::{PayloadFormat, Renderer};

    fn file_sink(path: &Path, payload: PayloadFormat) -> FileSink {
        let renderer = Renderer::new(path.parent().unwrap().into());
        FileSink::new(path.into(), Encoder::new("log", payload, renderer))
    }

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
        let sink = file_sink(&path, PayloadFormat::Event);
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
        let sink = file_sink(&path, PayloadFormat::Event);
        sink.connect().await.unwrap();
        sink.send(&[delivery(4)]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let last: Event = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last.event_id, format!("{:032x}", 4));

        let sink = file_sink(&path, PayloadFormat::Raw);
        sink.send(&[delivery(3)]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().last(), Some("{\"raw\": true}"));
    }
}
