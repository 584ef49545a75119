//! The request-head deadline: pingora times out each read of a request head,
//! not the whole head, so a client sending a byte every few seconds would hold
//! its connection forever. [`HeaderDeadline`] races each request against one
//! deadline that the proxy disarms (`in_flight::head_read`) as soon as the
//! head is parsed.

use super::in_flight::{InFlight, HEAD_READ, REQUESTS_ON_CONNECTION};
use crate::metrics::METRICS;
use crate::state::SharedSnapshot;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.process_new_http_boxed(Box::new(session), shutdown)
            .await
    }

    // The session comes boxed from the keep-alive loop and goes on boxed: a
    // future holding it by value is 1.4 KiB larger, copied whole per request.
    async fn process_new_http_boxed(
        self: &Arc<Self>,
        mut session: Box<ServerSession>,
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
        let serve = HEAD_READ.scope(
            read.clone(),
            self.inner.process_new_http_boxed(session, shutdown),
        );
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
