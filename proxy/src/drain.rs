//! Closing client connections gently on SIGTERM.
//!
//! On SIGTERM pingora stops accepting, marks every later response
//! `Connection: close`, and — at once — drops every keep-alive connection that
//! is waiting for its next request. A client that had just sent that request
//! sees the connection close under it (wrk counts a read error; browsers retry,
//! scripts may not). This wrapper delays that last step by `linger`: in the
//! meantime each busy connection gets its `Connection: close` on its next
//! response and moves to the replacement proxy by itself; only connections idle
//! for the whole linger are dropped.

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use std::time::Duration;

pub struct Lingering<A> {
    inner: Arc<A>,
    linger: Duration,
}

impl<A> Lingering<A> {
    pub fn new(inner: A, linger: Duration) -> Self {
        Lingering {
            inner: Arc::new(inner),
            linger,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Lingering<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        tokio::time::sleep(self.linger).await;
        self.inner.http_cleanup().await;
    }
}
