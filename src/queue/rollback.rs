//! Rolling back a batch whose write failed, so that a refused request leaves nothing behind.
//!
//! A group's rows are applied to sled before the fsync that makes them durable; if that fsync
//! (or the apply) fails, sled may already have put part of them on disk, and a store that met
//! ENOSPC refuses every later write, so it cannot be cleaned up in place. The committer
//! therefore records what undoes the group in a rollback file (on room freed by the reserve)
//! before it answers 503, tries to undo the rows at once, and `Queue::open` applies whatever
//! rollback files remain before it takes any request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::trees::{Tree, Trees};

/// What undoes a batch: for each key it wrote (tagged with its tree, see [`Tree::tag`]), the
/// value it had before (None: it was absent).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Undo(pub Vec<(Vec<u8>, Option<Vec<u8>>)>);

/// Why a rollback file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// The file system refused.
    #[error("rollback file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A rollback file is cut short or altered.
    #[error("rollback file {0} is damaged")]
    Damaged(String),
}

impl Undo {
    /// Adds another batch's undo after this one's (applied in reverse, last batch first).
    pub fn extend(&mut self, other: Undo) {
        self.0.extend(other.0);
    }

    /// Records that `key` of `tree` held `old` before a write.
    pub fn push(&mut self, tree: Tree, key: &[u8], old: Option<Vec<u8>>) {
        self.0.push((tree.tag(key), old));
    }

    /// Restores every key, the last written first.
    pub fn apply(&self, trees: &Trees) -> sled::Result<()> {
        for (tagged, old) in self.0.iter().rev() {
            let (tree, key) = Tree::untag(tagged);
            trees.write(tree, key, old.as_deref())?;
        }
        Ok(())
    }

    /// The file form: per key, its length, the key, a flag, the old value's length and bytes;
    /// then a CRC-like checksum of everything before it, so a torn file is recognized.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, old) in &self.0 {
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key);
            match old {
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    out.extend_from_slice(v);
                }
                None => out.push(0),
            }
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Undo> {
        let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
        if checksum(body) != u64::from_be_bytes(sum.try_into().ok()?) {
            return None;
        }
        let mut rows = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (key, r) = take_len_prefixed(rest)?;
            let (flag, r) = r.split_first()?;
            let (old, r) = match flag {
                0 => (None, r),
                1 => {
                    let (v, r) = take_len_prefixed(r)?;
                    (Some(v.to_vec()), r)
                }
                _ => return None,
            };
            rows.push((key.to_vec(), old));
            rest = r;
        }
        Some(Undo(rows))
    }
}

fn take_len_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    rest.split_at_checked(len)
}

/// FNV-1a, 64 bits: enough to tell a torn file from a whole one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The rollback files of one data directory.
#[derive(Debug)]
pub struct Rollbacks {
    dir: PathBuf,
    next: AtomicU64,
}

impl Rollbacks {
    /// The rollback files kept under `data_dir`.
    pub fn new(data_dir: &Path) -> Rollbacks {
        Rollbacks {
            dir: data_dir.join("rollback"),
            next: AtomicU64::new(0),
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RollbackError + '_ {
        move |source| RollbackError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Writes `undo` durably (temporary file, fsync, rename, fsync of the directory) and
    /// returns its path.
    pub fn record(&self, undo: &Undo) -> Result<PathBuf, RollbackError> {
        crate::durable::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let name = format!("{:016}-{n:04}", crate::clock::now_ms());
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(format!("{name}.undo"));
        let mut f = std::fs::File::create(&tmp).map_err(Self::io(&tmp))?;
        f.write_all(&undo.encode()).map_err(Self::io(&tmp))?;
        f.sync_all().map_err(Self::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(Self::io(&self.dir))?;
        Ok(path)
    }

    /// The recorded rollbacks, oldest first; half-written temporary files are deleted (their
    /// batch was never answered, and never acknowledged).
    pub fn pending(&self) -> Result<Vec<(PathBuf, Undo)>, RollbackError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.dir)(e)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(Self::io(&self.dir))?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("undo") => paths.push(path),
                Some("tmp") => std::fs::remove_file(&path).map_err(Self::io(&path))?,
                _ => {}
            }
        }
        paths.sort();
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = std::fs::read(&path).map_err(Self::io(&path))?;
            let undo = Undo::decode(&bytes)
                .ok_or_else(|| RollbackError::Damaged(path.display().to_string()))?;
            out.push((path, undo));
        }
        Ok(out)
    }

    /// Deletes a rollback file once its undo is applied and flushed, durably: a rollback that
    /// came back after a power cut would undo rows written since.
    pub fn done(&self, path: &Path) -> Result<(), RollbackError> {
        std::fs::remove_file(path).map_err(Self::io(path))?;
        crate::durable::sync_dir(&self.dir).map_err(Self::io(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undo_round_trips_and_a_torn_file_is_refused() {
        let undo = Undo(vec![
            (b"e1".to_vec(), None),
            (b"d1".to_vec(), Some(b"old".to_vec())),
            (Vec::new(), Some(Vec::new())),
        ]);
        let bytes = undo.encode();
        assert_eq!(Undo::decode(&bytes), Some(undo));
        for cut in 0..bytes.len() {
            assert_eq!(Undo::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[3] ^= 1;
        assert_eq!(Undo::decode(&flipped), None);
    }

    #[test]
    fn recorded_rollbacks_come_back_in_order_and_go_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let r = Rollbacks::new(dir.path());
        let a = r.record(&Undo(vec![(b"a".to_vec(), None)])).unwrap();
        let b = r.record(&Undo(vec![(b"b".to_vec(), None)])).unwrap();
        std::fs::write(dir.path().join("rollback/zz.tmp"), b"torn").unwrap();
        let pending = r.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].0, a);
        assert_eq!(pending[1].0, b);
        assert!(!dir.path().join("rollback/zz.tmp").exists());
        r.done(&a).unwrap();
        r.done(&b).unwrap();
        assert!(r.pending().unwrap().is_empty());
    }
}
