// edge-proxy patch: idle upstream connections kept without a task each.
//
// pingora-pool's `ConnectionPool` watches every idle connection with a task of
// its own: releasing a connection after each request allocated an
// `Arc<Mutex<Stream>>`, two channels, an LRU entry and a timer, and spawned a
// task; taking it back woke that task and waited for it to let go of the lock.
// That is a task spawn and a cross-task hand-over per proxied request.
//
// Here an idle connection is a plain entry in a map under one short lock, and
// it is checked when it is taken (closed by the peer, data it should not have
// sent, past its idle timeout: dropped, and the next one is tried), as nginx
// and HAProxy do. One sweeper task per pool, alive only while the pool holds
// connections, closes the ones the peer closed or that outlived their idle
// timeout, so their descriptors do not wait for the next request.
//
// Tested end to end through edge-proxy: proxy/tests/upstream_pool.rs (this
// crate's own test suite needs the dev-dependencies the vendored copy drops).

use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks at the idle connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    stream: Stream,
    since: Instant,
    expires: Option<Instant>,
    /// Release order over the whole pool: the smallest is the least recently used.
    serial: u64,
}

#[derive(Default)]
struct Groups {
    /// Per reuse key, oldest first.
    by_key: HashMap<u64, VecDeque<Idle>>,
    count: usize,
    serial: u64,
    sweeping: bool,
}

impl Groups {
    fn pop_oldest(&mut self) -> Option<Idle> {
        let key = *self
            .by_key
            .iter()
            .min_by_key(|(_, q)| q.front().map_or(u64::MAX, |i| i.serial))?
            .0;
        let queue = self.by_key.get_mut(&key)?;
        let idle = queue.pop_front();
        if queue.is_empty() {
            self.by_key.remove(&key);
        }
        self.count -= idle.is_some() as usize;
        idle
    }
}

/// Idle connections by reuse key, at most `size` in all (least recently used out first).
pub(crate) struct IdlePool {
    groups: Mutex<Groups>,
    size: usize,
}

impl IdlePool {
    pub(crate) fn new(size: usize) -> Arc<Self> {
        Arc::new(IdlePool {
            groups: Mutex::new(Groups::default()),
            size,
        })
    }

    /// Keep `stream` for reuse under `key`. Returns how long the connection
    /// it pushed out (the least recently used, when the pool is full) had idled.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        stream: Stream,
        idle_timeout: Option<Duration>,
        unexpected_data: &Arc<AtomicU64>,
    ) -> Option<Duration> {
        if self.size == 0 {
            return None;
        }
        let now = Instant::now();
        let (evicted, start_sweeper) = {
            let mut groups = self.groups.lock();
            let evicted = if groups.count >= self.size {
                groups.pop_oldest()
            } else {
                None
            };
            groups.serial += 1;
            let idle = Idle {
                stream,
                since: now,
                expires: idle_timeout.map(|t| now + t),
                serial: groups.serial,
            };
            groups.by_key.entry(key).or_default().push_back(idle);
            groups.count += 1;
            let start_sweeper = !std::mem::replace(&mut groups.sweeping, true);
            (evicted, start_sweeper)
        };
        if start_sweeper {
            let pool = Arc::downgrade(self);
            let unexpected_data = unexpected_data.clone();
            pingora_runtime::current_handle().spawn(sweep(pool, unexpected_data));
        }
        // Dropped (closed) outside the lock.
        evicted.map(|idle| idle.since.elapsed())
    }

    /// The most recently released connection under `key` that has not
    /// outlived its idle timeout (the caller checks that it is still open).
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut groups = self.groups.lock();
                let queue = groups.by_key.get_mut(&key)?;
                let idle = queue.pop_back();
                if queue.is_empty() {
                    groups.by_key.remove(&key);
                }
                groups.count -= idle.is_some() as usize;
                idle?
            };
            if idle.expires.is_none_or(|t| t > now) {
                return Some(idle.stream);
            }
        }
    }

    /// Drop the connections past their idle timeout or no longer reusable.
    /// Returns false once the pool is empty (the sweeper then stops).
    fn sweep_once(&self, unexpected_data: &AtomicU64) -> bool {
        let now = Instant::now();
        let mut dead = Vec::new();
        let mut groups = self.groups.lock();
        let mut removed = 0;
        groups.by_key.retain(|_, queue| {
            let mut keep = VecDeque::with_capacity(queue.len());
            for mut idle in queue.drain(..) {
                if idle.expires.is_none_or(|t| t > now)
                    && super::test_reusable_stream(&mut idle.stream, unexpected_data)
                {
                    keep.push_back(idle);
                } else {
                    dead.push(idle);
                    removed += 1;
                }
            }
            *queue = keep;
            !queue.is_empty()
        });
        groups.count -= removed;
        let more = groups.count > 0;
        if !more {
            groups.sweeping = false;
        }
        drop(groups);
        drop(dead); // closed outside the lock
        more
    }
}

async fn sweep(pool: Weak<IdlePool>, unexpected_data: Arc<AtomicU64>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.sweep_once(&unexpected_data) {
            return;
        }
    }
}
