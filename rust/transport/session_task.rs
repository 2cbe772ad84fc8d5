//! What every transport's per-session task needs: the session closed when the task ends, however it ends, and a sleep until an optional deadline.

use crate::engine::Session;

/// Closes the session when dropped (the task returned, panicked or was cancelled).
pub(super) struct CloseOnDrop(pub(super) Session);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Sleep until `deadline`; forever without one (a `select!` arm that never fires).
pub(super) async fn sleep_until(deadline: Option<impl Into<tokio::time::Instant>>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
