//! What a file sink's failures mean for its deliveries.

use std::path::Path;

use crate::render::RenderError;
use crate::sinks::{Outcome, SinkError};

/// A line that cannot be rendered will not render on a retry either: a dead letter.
pub(super) fn render_failed(e: &RenderError) -> Outcome {
    Outcome::Reject(e.to_string())
}

/// Opening, writing or syncing failed (disk full, permissions, a missing mount): the file as a
/// whole is unavailable, and no attempt is spent until it works again.
pub(super) fn io_failed(what: &str, path: &Path, e: &std::io::Error) -> SinkError {
    SinkError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// The blocking task that wrote the file did not finish (the runtime is stopping).
pub(super) fn task_failed(e: &tokio::task::JoinError) -> SinkError {
    SinkError::Unavailable(format!("file write task: {e}"))
}
