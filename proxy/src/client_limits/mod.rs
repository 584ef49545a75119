//! Per-client limits: request rates and open connections (or requests in
//! flight) per client address, node-wide (`limits.per_client`) and per route
//! (ingress-nginx's `limit-rps`, `limit-rpm`, `limit-connections`).
//!
//! Memory is fixed whatever the number of clients (a million addresses cost
//! what ten do): rates live in a count-min sketch of GCRA cells (gcra.rs),
//! counts in pingora-limits' count-min `Estimator`. Both only ever
//! over-estimate a client, so a flood is never let through; the price is
//! that, with very many busy clients, an idle one can share all of its cells
//! with busy ones and be limited too. The tables are allocated the first
//! time a limit is used: with limits off they cost nothing.
//!
//! Limits are per proxy process (per node), as ingress-nginx's are per
//! replica: a client that spreads over N nodes gets N times the rate.

mod gcra;

pub use gcra::Rate;

use crate::config::{net_contains, IpNet};
use crate::metrics::METRICS;
use pingora_limits::estimator::Estimator;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Rows and cells of each table: 2 x 65536 cells of 8 bytes (1 MiB) for
/// rates, 2 x 32768 for counts (512 KiB). Two rows: a client is wrongly
/// limited only if both of its cells are shared with busy clients.
const ROWS: usize = 2;
const RATE_CELLS: usize = 1 << 16;
const COUNT_CELLS: usize = 1 << 15;
/// Clients remembered for "logged this minute" (4 bytes each).
const LOG_CELLS: usize = 1 << 12;

struct Tables {
    rates: gcra::Sketch,
    counts: Estimator,
    logged: (Box<[AtomicU32]>, foldhash::fast::RandomState),
}

static TABLES: LazyLock<Tables> = LazyLock::new(|| Tables {
    rates: gcra::Sketch::new(ROWS, RATE_CELLS),
    counts: Estimator::new(ROWS, COUNT_CELLS),
    logged: (
        (0..LOG_CELLS).map(|_| AtomicU32::new(0)).collect(),
        foldhash::fast::RandomState::default(),
    ),
});

/// Bytes the tables hold once in use: fixed.
pub fn table_bytes() -> usize {
    TABLES.rates.bytes() + ROWS * COUNT_CELLS * 8 + LOG_CELLS * 4
}

/// Which limit answered, as the metric and the log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `limits.per_client.requests_per_second`.
    ClientRate = 0,
    /// `limits.per_client.connections`.
    ClientConnections = 1,
    /// A route's `limit-rps` / `limit-rpm`.
    RouteRate = 2,
    /// A route's `limit-connections` (requests in flight).
    RouteConnections = 3,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::ClientRate,
        Reason::ClientConnections,
        Reason::RouteRate,
        Reason::RouteConnections,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ClientRate => "client_rate",
            Reason::ClientConnections => "client_connections",
            Reason::RouteRate => "route_rate",
            Reason::RouteConnections => "route_connections",
        }
    }
}

/// A set of limits on each client address: node-wide, or one route's (its
/// zone: clients are counted per Ingress, as ingress-nginx's zones are).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    /// What the counters are keyed by besides the address: 0 node-wide.
    zone: u64,
    /// Each must admit the request (`limit-rpm` and `limit-rps` together).
    pub rates: Vec<Rate>,
    /// Open connections (node-wide) or requests in flight (a route's).
    pub concurrent: Option<u32>,
    /// Addresses no limit applies to.
    pub exempt: Vec<IpNet>,
    /// The answer beyond a limit: 429 unless configured (`limits.limited_status`).
    pub status: u16,
}

/// A request turned away: the answer's status and `Retry-After` seconds.
pub struct Limited {
    pub status: u16,
    pub retry_after: u64,
}

impl ClientLimits {
    /// Node-wide limits (zone 0).
    pub fn node(
        rates: Vec<Rate>,
        concurrent: Option<u32>,
        exempt: Vec<IpNet>,
        status: u16,
    ) -> Self {
        ClientLimits {
            zone: 0,
            rates,
            concurrent,
            exempt,
            status,
        }
    }

    /// A route's limits, counted in the zone named `zone` (routes of one
    /// Ingress share it).
    pub fn zone(
        zone: &str,
        rates: Vec<Rate>,
        concurrent: Option<u32>,
        exempt: Vec<IpNet>,
        status: u16,
    ) -> Self {
        // Fixed seeds: the same zone keeps its counters across snapshots.
        let zone = foldhash::quality::FixedState::with_seed(0x65646765).hash_one(zone) | 1;
        ClientLimits {
            zone,
            ..ClientLimits::node(rates, concurrent, exempt, status)
        }
    }

    fn applies_to(&self, client: IpAddr) -> bool {
        !self.exempt.iter().any(|n| net_contains(n, client))
    }

    fn reasons(&self) -> (Reason, Reason) {
        match self.zone {
            0 => (Reason::ClientRate, Reason::ClientConnections),
            _ => (Reason::RouteRate, Reason::RouteConnections),
        }
    }

    /// Count one request of `client` against the rates.
    pub fn admit_request(&self, client: IpAddr) -> Result<(), Limited> {
        if self.rates.is_empty() || !self.applies_to(client) {
            return Ok(());
        }
        let client = client.to_canonical();
        for (i, rate) in self.rates.iter().enumerate() {
            if let Err(wait) = TABLES.rates.admit((self.zone, i, client), *rate) {
                let (reason, _) = self.reasons();
                limited(reason, client);
                // Whole seconds, rounded up: never "retry now" to a limited client.
                let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(Limited {
                    status: self.status,
                    retry_after: retry_after.max(1),
                });
            }
        }
        Ok(())
    }

    /// Count one open connection or request in flight of `client`: `Some`
    /// holds its place until dropped, `None` is one too many. Exempt clients
    /// and limits without a count always get a (free) place.
    pub fn hold(&self, client: IpAddr) -> Option<Held> {
        let Some(max) = self.concurrent else {
            return Some(Held::free());
        };
        if !self.applies_to(client) {
            return Some(Held::free());
        }
        let key = (self.zone, client.to_canonical());
        let now = TABLES.counts.incr(key, 1);
        if now > max as isize {
            TABLES.counts.decr(key, 1);
            let (_, reason) = self.reasons();
            limited(reason, key.1);
            return None;
        }
        Some(Held(Some(key)))
    }
}

/// One place counted for a client, given back when dropped.
pub struct Held(Option<(u64, IpAddr)>);

impl Held {
    /// A place no limit counts.
    pub fn free() -> Self {
        Held(None)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(key) = self.0 {
            TABLES.counts.decr(key, 1);
        }
    }
}

/// `edge_proxy_client_limited_total` by reason, resolved once: a flood does
/// no label lookup per request.
static COUNTERS: LazyLock<[prometheus::IntCounter; 4]> =
    LazyLock::new(|| Reason::ALL.map(|r| METRICS.limited.with_label_values(&[r.as_str()])));

/// Show every reason from the start, at zero, for alerts on its rate.
pub fn export_at_zero() {
    LazyLock::force(&COUNTERS);
}

/// Count a limited request or connection; log it once per client and minute
/// at most (a flood must not flood the log too).
fn limited(reason: Reason, client: IpAddr) {
    COUNTERS[reason as usize].inc();
    let minute = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60);
    if first_in_minute(minute, client) {
        tracing::warn!(
            client = %client,
            limit = reason.as_str(),
            "client over its limit; further ones from it are not logged for a minute"
        );
    }
}

fn first_in_minute(minute: u64, client: impl Hash) -> bool {
    // Never 0, the value of a cell not used yet.
    let minute = (minute as u32).wrapping_add(1).max(1);
    let (cells, hasher) = &TABLES.logged;
    let cell = &cells[hasher.hash_one(client) as usize % cells.len()];
    cell.swap(minute, Ordering::Relaxed) != minute
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn concurrent_places_are_given_back() {
        let limits = ClientLimits::zone("test/places", Vec::new(), Some(2), Vec::new(), 429);
        let a = limits.hold(ip("192.0.2.1")).unwrap();
        let _b = limits.hold(ip("192.0.2.1")).unwrap();
        assert!(limits.hold(ip("192.0.2.1")).is_none());
        // Another client, and the same one as IPv4-mapped IPv6, counted as itself.
        assert!(limits.hold(ip("192.0.2.2")).is_some());
        assert!(limits.hold(ip("::ffff:192.0.2.1")).is_none());
        drop(a);
        assert!(limits.hold(ip("192.0.2.1")).is_some());
    }

    use std::time::Duration;

    #[test]
    fn exempt_ranges_are_not_limited_and_zones_apart() {
        let rate = Rate::new(1, Duration::from_secs(60), 0);
        let exempt = vec!["10.0.0.0/8".parse().unwrap()];
        let one = ClientLimits::zone("test/one", vec![rate], Some(0), exempt, 503);
        let two = ClientLimits::zone("test/two", vec![rate], None, Vec::new(), 503);
        for _ in 0..10 {
            assert!(one.admit_request(ip("10.1.2.3")).is_ok());
            assert!(one.hold(ip("10.1.2.3")).is_some());
        }
        assert!(one.admit_request(ip("192.0.2.9")).is_ok());
        let limited = one.admit_request(ip("192.0.2.9")).unwrap_err();
        assert_eq!(limited.status, 503);
        assert!(
            (59..=60).contains(&limited.retry_after),
            "{}",
            limited.retry_after
        );
        // Another zone counts the same client from zero.
        assert!(two.admit_request(ip("192.0.2.9")).is_ok());
    }

    #[test]
    fn a_client_is_logged_once_a_minute() {
        let client = ip("198.51.100.77");
        assert!(first_in_minute(1000, client));
        assert!(!first_in_minute(1000, client));
        assert!(first_in_minute(1001, client), "the next minute logs again");
        assert!(!first_in_minute(1001, client));
    }
}
