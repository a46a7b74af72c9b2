//! What can go wrong in the queue, each case with what the operator can do about it.

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// sled failed (disk full, I/O error, corruption).
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// Another process (a running daemon) holds the data directory.
    #[error("the data directory {0} is in use by another hookbridge process")]
    Locked(std::path::PathBuf),
    /// Writing the delivery would take free space below `storage.min_free`.
    #[error(
        "only {free} bytes free on the queue's disk; this write needs about {need} and storage.min_free ({min_free}) must stay free"
    )]
    DiskFull {
        /// Bytes available.
        free: u64,
        /// The configured floor.
        min_free: u64,
        /// Bytes the write would take on disk (sled's overhead included).
        need: u64,
    },
    /// The disk is already below the floor at start: the store is not opened (opening writes).
    #[error(
        "only {free} bytes free on the queue's disk, {need} short of what starting needs (storage.min_free = {min_free}, plus the reserve); free space, then start again"
    )]
    NoRoomToStart {
        /// Bytes available.
        free: u64,
        /// The configured floor.
        min_free: u64,
        /// Bytes missing.
        need: u64,
    },
    /// A failed batch's rollback could not be recorded or applied.
    #[error("{0}")]
    Rollback(#[from] super::rollback::RollbackError),
    /// A group commit failed; nothing of that batch was acknowledged.
    #[error("the write failed: {0}")]
    Commit(String),
    /// An earlier write failed: nothing more is written or acknowledged until a restart.
    #[error("an earlier write failed (disk full or I/O error); restart once fixed")]
    Failed,
    /// The committer has stopped (shutting down).
    #[error("the queue is shutting down")]
    Closed,
    /// A row could not be decoded.
    #[error("corrupt queue row {key}: {reason}")]
    Corrupt {
        /// Which row.
        key: String,
        /// Why.
        reason: String,
    },
}
