//! The runtime a raw-audio server owns: its tokio threads, its listeners,
//! a cancellation token for every task, and a stop that lets connections
//! close cleanly first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::realtime::TransportError;

/// A running server's runtime and the state every task shares.
pub(crate) struct Served {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) cancel: CancellationToken,
    /// Open conversations.
    pub(crate) connections: Arc<AtomicUsize>,
    pub(crate) name: &'static str,
}

impl Served {
    /// A runtime of `threads` workers (0: one per core, at most 4).
    pub(crate) fn new(threads: usize, name: &'static str) -> Result<Self, TransportError> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(TransportError::Runtime)?;
        Ok(Self {
            runtime,
            cancel: CancellationToken::new(),
            connections: Arc::new(AtomicUsize::new(0)),
            name,
        })
    }

    /// Bind `host:port` (0: any free port) on this runtime.
    pub(crate) fn bind(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(tokio::net::TcpListener, SocketAddr), TransportError> {
        let addr_text = format!("{host}:{port}");
        let bind_err = |source| TransportError::Bind {
            addr: addr_text.clone(),
            source,
        };
        let std_listener = std::net::TcpListener::bind((host, port)).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = std_listener.local_addr().map_err(bind_err)?;
        let _guard = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?;
        Ok((listener, addr))
    }

    /// Open conversations.
    pub(crate) fn open(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Cancel every task, give the conversations up to two seconds to close
    /// (they see the token and end their sessions), then stop the runtime.
    pub(crate) fn stop(self) {
        self.cancel.cancel();
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside another runtime blocking is not allowed.
            self.runtime.shutdown_background();
        } else {
            let connections = Arc::clone(&self.connections);
            self.runtime.block_on(async move {
                let deadline = Instant::now() + Duration::from_secs(2);
                while connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            self.runtime.shutdown_timeout(Duration::from_secs(1));
        }
        tracing::info!("{} server stopped", self.name);
    }
}

/// Decrements the open-conversation count when dropped.
pub(crate) struct ConversationGuard(Arc<AtomicUsize>);

impl ConversationGuard {
    /// A guard that counts into `counter` (for tasks holding only the counter).
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(counter))
    }
}

impl Drop for ConversationGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sleep until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
