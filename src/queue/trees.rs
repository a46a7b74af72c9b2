//! The queue's sled trees, and the tag that says which one a staged write goes to.

/// Which tree a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// `q`: cursors, the deliveries off the ordinary path, marks, meta rows.
    Q,
    /// `log`: one row per accepted request.
    Log,
    /// `dedup`: event dedup keys.
    Dedup,
}

/// The first byte of a rollback key for the trees other than `q` (whose keys start with a
/// letter), so that one undo file can restore rows of all three.
const LOG_TAG: u8 = 1;
const DEDUP_TAG: u8 = 2;

impl Tree {
    /// `key` tagged with this tree, as an undo file stores it.
    pub fn tag(self, key: &[u8]) -> Vec<u8> {
        let tag = match self {
            Tree::Q => return key.to_vec(),
            Tree::Log => LOG_TAG,
            Tree::Dedup => DEDUP_TAG,
        };
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(tag);
        k.extend_from_slice(key);
        k
    }

    /// The tree and key of a tagged key (untagged keys, and those of earlier releases, are `q`'s).
    pub fn untag(tagged: &[u8]) -> (Tree, &[u8]) {
        match tagged.split_first() {
            Some((&LOG_TAG, key)) => (Tree::Log, key),
            Some((&DEDUP_TAG, key)) => (Tree::Dedup, key),
            _ => (Tree::Q, tagged),
        }
    }
}

/// The trees of the queue.
#[derive(Debug, Clone)]
pub struct Trees {
    /// Cursors, exceptions, marks, meta rows.
    pub q: sled::Tree,
    /// The log.
    pub log: sled::Tree,
    /// The dedup keys.
    pub dedup: sled::Tree,
    /// The attempt history (`history.rs`).
    pub history: sled::Tree,
    /// Fetched feature changes (`changes.rs`).
    pub enrich: sled::Tree,
}

impl Trees {
    /// Opens (or creates) every tree in `db`, all at open: a tree sled creates later is only
    /// as durable as the next flush, and a power cut in between has left sled unable to open
    /// the store ("cannot find pid in view_for_key").
    pub fn open(db: &sled::Db) -> sled::Result<Trees> {
        Ok(Trees {
            q: db.open_tree("q")?,
            log: db.open_tree("log")?,
            dedup: db.open_tree("dedup")?,
            history: db.open_tree("history")?,
            enrich: db.open_tree("enrich")?,
        })
    }

    /// The tree `t`.
    pub fn get(&self, t: Tree) -> &sled::Tree {
        match t {
            Tree::Q => &self.q,
            Tree::Log => &self.log,
            Tree::Dedup => &self.dedup,
        }
    }

    /// Writes `value` at `key` of `t` (None: removes it).
    pub fn write(&self, t: Tree, key: &[u8], value: Option<&[u8]>) -> sled::Result<()> {
        match value {
            Some(v) => self.get(t).insert(key, v).map(|_| ()),
            None => self.get(t).remove(key).map(|_| ()),
        }
    }
}
