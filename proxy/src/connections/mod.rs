//! Bounds on what one client connection can hold of the proxy, and how its
//! requests are read, one concern per file:
//! - `limit.rs`: the cap on open connections (and the linger at SIGTERM);
//! - `keepalive.rs`: the HTTP/1 keep-alive loop, idle connections holding
//!   only their socket, closed after `idle_timeout`;
//! - `head_deadline.rs`: a request head must be complete in time (slowloris);
//! - `in_flight.rs`: requests in flight, which shutdown waits for.

mod head_deadline;
mod in_flight;
mod keepalive;
mod limit;

pub use head_deadline::HeaderDeadline;
pub use in_flight::{head_read, requests_in_flight};
pub use limit::ConnectionLimit;
