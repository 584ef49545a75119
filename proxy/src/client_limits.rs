//! Bounds on what one client can hold of the proxy: how long it may take to
//! send a request head (a slowloris trickle is cut off), how long a kept-alive
//! connection may sit idle, and how many connections are open at once.
//!
//! pingora times out each read of a request head, not the whole head, so a
//! client sending a byte every few seconds would hold its connection forever.
//! [`HeaderDeadline`] races each request against one deadline that the proxy
//! disarms (`head_read`) as soon as the head is parsed. [`ConnectionLimit`]
//! wraps the whole TCP (or TLS) connection.

use crate::metrics::METRICS;
use crate::state::SharedSnapshot;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

tokio::task_local! {
    /// Set while a request is read and served: has its head arrived?
    static HEAD_READ: Arc<AtomicBool>;
    /// Set for the life of a client connection: requests begun on it so far.
    static REQUESTS_ON_CONNECTION: Cell<u64>;
}

/// Requests whose head has arrived and whose response is not finished yet
/// (an upgraded connection counts until its tunnel closes). Shutdown waits for
/// this to reach zero rather than for the whole drain timeout.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

pub fn requests_in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// Called by the proxy once a request head is parsed: the deadline no longer
/// applies, and the request is in flight until `process_new_http` returns.
pub fn head_read() {
    let _ = HEAD_READ.try_with(|read| {
        if !read.swap(true, Ordering::Relaxed) {
            IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// Ends a request's time in flight when it is served, however that ends.
struct InFlight(Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.load(Ordering::Relaxed) {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

pub struct HeaderDeadline<A> {
    inner: Arc<A>,
    state: SharedSnapshot,
}

impl<A> HeaderDeadline<A> {
    pub fn new(inner: A, state: SharedSnapshot) -> Self {
        HeaderDeadline {
            inner: Arc::new(inner),
            state,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for HeaderDeadline<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let limits = self.state.load().limits;
        // pingora's own keep-alive wait is 60 s; after SIGTERM it is off, and stays off.
        if !*shutdown.borrow() {
            session.set_keepalive(Some(limits.idle_timeout.as_secs().max(1)));
        }
        // The first request's head is due `header_timeout` after the connection
        // opened; a later one may first wait out the keep-alive idle time.
        let earlier = REQUESTS_ON_CONNECTION
            .try_with(|n| n.replace(n.get() + 1))
            .unwrap_or(0);
        let deadline = if earlier == 0 {
            limits.header_timeout
        } else {
            limits.header_timeout + limits.idle_timeout
        };

        let read = Arc::new(AtomicBool::new(false));
        let _in_flight = InFlight(read.clone());
        let serve = HEAD_READ.scope(read.clone(), self.inner.process_new_http(session, shutdown));
        tokio::pin!(serve);
        tokio::select! {
            served = &mut serve => served,
            _ = tokio::time::sleep(deadline) => {
                if read.load(Ordering::Relaxed) {
                    serve.await
                } else {
                    // Dropping the session closes the connection.
                    METRICS
                        .client_connections_closed
                        .with_label_values(&["header_timeout"])
                        .inc();
                    tracing::debug!(?deadline, "request head not complete in time: closing");
                    None
                }
            }
        }
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

pub struct ConnectionLimit<A> {
    inner: Arc<A>,
    slots: Arc<Semaphore>,
    /// How long a connection beyond the limit waits for a slot.
    wait: Duration,
}

impl<A> ConnectionLimit<A> {
    pub fn new(inner: A, max_connections: usize, wait: Duration) -> Self {
        // Both reasons show from the start, at zero, for alerts on their rate.
        for reason in ["header_timeout", "connection_limit"] {
            METRICS
                .client_connections_closed
                .with_label_values(&[reason]);
        }
        ConnectionLimit {
            inner: Arc::new(inner),
            slots: Arc::new(Semaphore::new(max_connections)),
            wait,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionLimit<A> {
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
        let _open = OpenConnection::count();
        REQUESTS_ON_CONNECTION
            .scope(Cell::new(0), self.inner.process_new(stream, shutdown))
            .await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
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
