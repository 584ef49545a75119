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
//!
//! Connections idle between requests wait in `client_limits`, which closes
//! them when [`Lingering::closing`] turns true.

use crate::client_limits::requests_in_flight;
use crate::metrics::METRICS;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::{ExecutionPhase, Server, ShutdownWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct Lingering<A> {
    inner: Arc<A>,
    linger: Duration,
    /// Set once the linger is over: idle connections close.
    closing: watch::Sender<bool>,
}

impl<A> Lingering<A> {
    pub fn new(inner: A, linger: Duration) -> Self {
        Lingering {
            inner: Arc::new(inner),
            linger,
            closing: watch::Sender::new(false),
        }
    }

    /// Turns true once the linger after SIGTERM is over: idle connections close.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
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
        self.closing.send_replace(true);
        self.inner.http_cleanup().await;
    }
}

/// pingora sleeps out the whole grace period after SIGTERM, busy or not. This
/// ends the process as soon as there is nothing left to drain: no client
/// connection open, or no request in flight once idle keep-alives have had
/// their `linger`. `drain_timeout` (pingora's grace period) stays the bound.
pub fn exit_when_drained(server: &Server, linger: Duration) {
    let mut phases = server.watch_execution_phase();
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
            let started = Instant::now();
            // Another proxy takes over the Ingress status while this one drains.
            crate::ingress::shutdown();
            loop {
                let idle = requests_in_flight() == 0;
                if METRICS.client_connections.get() == 0 || (idle && started.elapsed() >= linger) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::info!(after = ?started.elapsed(), "drained: exiting");
            crate::access_log::flush();
            std::process::exit(0);
        })
        .expect("spawn the drain thread");
}
