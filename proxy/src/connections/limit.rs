//! The connection cap: at most `limits.max_connections` client connections
//! open; one beyond waits for a slot as it would in the listen backlog, for
//! `header_timeout`, then is closed. Each connection's requests are served by
//! the keep-alive loop (keepalive.rs). At SIGTERM, idle keep-alive connections
//! stay for the drain's linger, so that busy ones get their
//! `Connection: close` between requests (drain.rs).

use super::in_flight::REQUESTS_ON_CONNECTION;
use super::keepalive;
use crate::metrics::METRICS;
use crate::state::SharedSnapshot;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

pub struct ConnectionLimit<A> {
    inner: Arc<A>,
    slots: Arc<Semaphore>,
    /// How long a connection beyond the limit waits for a slot.
    wait: Duration,
    /// The live limits: the first request's head and keep-alive idle time.
    state: SharedSnapshot,
    /// How long idle connections are kept after SIGTERM (drain.rs).
    linger: Duration,
    /// Set once the linger is over: idle connections close.
    closing: watch::Sender<bool>,
}

impl<A> ConnectionLimit<A> {
    pub fn new(
        inner: A,
        max_connections: usize,
        wait: Duration,
        state: SharedSnapshot,
        linger: Duration,
    ) -> Self {
        // Every reason shows from the start, at zero, for alerts on its rate.
        for reason in ["header_timeout", "connection_limit", "idle_timeout"] {
            METRICS
                .client_connections_closed
                .with_label_values(&[reason]);
        }
        crate::client_limits::export_at_zero();
        METRICS
            .client_connections_max
            .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        ConnectionLimit {
            inner: Arc::new(inner),
            slots: Arc::new(Semaphore::new(max_connections)),
            wait,
            state,
            linger,
            closing: watch::Sender::new(false),
        }
    }
}

impl<A> ConnectionLimit<A> {
    /// This connection's place among its address's, when a per-client
    /// connection limit is set; `None`: one too many. A peer in
    /// `trusted_proxies` carries many clients and is not counted.
    fn per_client_place(&self, stream: &Stream) -> Option<crate::client_limits::Held> {
        let free = crate::client_limits::Held::free();
        let snapshot = self.state.load();
        let Some(limits) = snapshot
            .per_client
            .as_ref()
            .filter(|l| l.concurrent.is_some())
        else {
            return Some(free);
        };
        let digest = stream.get_socket_digest();
        let Some(peer) = digest
            .as_ref()
            .and_then(|d| d.peer_addr()?.as_inet().map(|a| a.ip()))
        else {
            return Some(free);
        };
        let trusted = snapshot
            .trusted_proxies
            .iter()
            .any(|n| crate::config::net_contains(n, peer));
        if trusted {
            return Some(free);
        }
        limits.hold(peer)
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for ConnectionLimit<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Over the limit, a connection waits as it would in the listen backlog.
        let Ok(Ok(_slot)) = tokio::time::timeout(self.wait, self.slots.acquire()).await else {
            METRICS
                .client_connections_closed
                .with_label_values(&["connection_limit"])
                .inc();
            return None;
        };
        // `limits.per_client.connections`: one too many from this address is
        // closed before its request is read.
        let _place = self.per_client_place(&stream)?;
        let _open = OpenConnection::count();
        let serve = keepalive::serve(&self.inner, stream, shutdown, &self.state, &self.closing);
        REQUESTS_ON_CONNECTION.scope(Cell::new(0), serve).await
    }

    /// At SIGTERM: idle keep-alive connections stay for the linger, so that
    /// busy ones get their `Connection: close` between requests (drain.rs).
    async fn cleanup(&self) {
        tokio::time::sleep(self.linger).await;
        self.closing.send_replace(true);
        ServerApp::cleanup(&*self.inner).await;
    }
}

/// Counts one open connection in the gauge for as long as it lives, however it ends.
struct OpenConnection;

impl OpenConnection {
    fn count() -> Self {
        METRICS.client_connections.inc();
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.client_connections.dec();
    }
}
