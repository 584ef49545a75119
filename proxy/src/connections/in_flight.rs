//! Requests in flight: whose head has arrived and whose response is not
//! finished yet (an upgraded connection counts until its tunnel closes).
//! Shutdown waits for this to reach zero rather than for the whole drain
//! timeout (drain.rs); the head deadline reads whether the head arrived.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

tokio::task_local! {
    /// Set while a request is read and served: has its head arrived?
    pub(super) static HEAD_READ: Arc<AtomicBool>;
    /// Set for the life of a client connection: requests begun on it so far.
    pub(super) static REQUESTS_ON_CONNECTION: Cell<u64>;
}

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
pub(super) struct InFlight(pub(super) Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.load(Ordering::Relaxed) {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
