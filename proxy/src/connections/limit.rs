//! Bounds on what one client can hold of the proxy: how long it may take to
//! send a request head (a slowloris trickle is cut off), how long a kept-alive
//! connection may sit idle, and how many connections are open at once.
//!
//! pingora times out each read of a request head, not the whole head, so a
//! client sending a byte every few seconds would hold its connection forever.
//! [`HeaderDeadline`] races each request against one deadline that the proxy
//! disarms (`head_read`) as soon as the head is parsed. [`ConnectionLimit`]
//! wraps the whole TCP (or TLS) connection and runs its HTTP/1 keep-alive
//! loop itself, so that a connection idle between requests holds only its
//! socket: it waits for the next request's first bytes (`wait_readable`, a
//! patch in third_party/pingora-core) before pingora allocates what reading
//! and proxying a request takes (its request future alone is 14 KiB, its
//! connection future 4 KiB), and closes it after `limits.idle_timeout`.

use crate::metrics::METRICS;
use crate::state::SharedSnapshot;
use async_trait::async_trait;
use pingora::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp,
};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

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

impl<A: HttpServerApp + Send + Sync + 'static> ConnectionLimit<A> {
    /// pingora's HTTP/1 keep-alive loop (apps/mod.rs), waiting for each
    /// request's first bytes with nothing but the stream held. HTTP/2 (by
    /// ALPN) goes to pingora's own handling.
    async fn serve(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let reuses = self
            .inner
            .server_options()
            .and_then(|o| o.keepalive_request_limit);
        let mut persistent: Option<HttpPersistentSettings> = None;
        for first in std::iter::once(true).chain(std::iter::repeat(false)) {
            let limits = self.state.load().limits;
            let (idle, reason) = if first {
                (limits.header_timeout, "header_timeout")
            } else {
                (limits.idle_timeout, "idle_timeout")
            };
            let mut closing = self.closing.subscribe();
            // Idle with as little as possible: the write buffer (1460 bytes)
            // is rebuilt by the next response's first write.
            stream.release_idle_buffers();
            tokio::select! {
                biased;
                ready = stream.wait_readable() => ready.ok()?,
                _ = closing.wait_for(|closing| *closing) => return None,
                _ = tokio::time::sleep(idle) => {
                    METRICS.client_connections_closed.with_label_values(&[reason]).inc();
                    return None;
                }
            }
            let mut session = ServerSession::new_http1(stream);
            session.set_keepalive_reuses_remaining(reuses);
            // Header names are case-insensitive; keeping their case costs a
            // second header map per request and per response (7% of the
            // instructions per request). They go on lowercase, or Title-Case
            // for the common standard ones, as with HAProxy.
            session.set_preserve_header_case(false);
            if let Some(settings) = persistent.take() {
                settings.apply_to_session(&mut session);
            }
            let reused: ReusedHttpStream = self.inner.process_new_http(session, shutdown).await?;
            (stream, persistent) = reused.consume();
        }
        None
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
        let _open = OpenConnection::count();
        REQUESTS_ON_CONNECTION
            .scope(Cell::new(0), self.serve(stream, shutdown))
            .await
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
