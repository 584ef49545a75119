//! Request rates per key in fixed memory: a count-min sketch whose cells are
//! GCRA "theoretical arrival times" (the leaky bucket of nginx's `limit_req`
//! with `burst` and `nodelay`, kept in one atomic word per cell).
//!
//! A key reads the least-loaded of its cells, one per row: keys that share
//! a cell only ever make each other look busier, never idler, so a flood is
//! never let through; a well-behaved client is limited by mistake only when
//! every one of its cells is shared with a busy client.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// A rate: `requests` per `per`, with `burst` more at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds between two requests at the steady rate (GCRA's T).
    interval: u64,
    /// How far ahead of now a key's arrival time may run (GCRA's tau).
    tolerance: u64,
}

impl Rate {
    /// `requests` (at least 1) per `per`, and `burst` requests beyond them at once.
    pub fn new(requests: u32, per: Duration, burst: u32) -> Self {
        let interval = (per.as_nanos() / u128::from(requests.max(1))).max(1);
        let interval = u64::try_from(interval).unwrap_or(u64::MAX);
        Rate {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst)),
        }
    }
}

pub struct Sketch {
    rows: Box<[(Box<[AtomicU64]>, foldhash::fast::RandomState)]>,
}

/// Nanoseconds on a clock that starts at 1 (0 is a cell never used).
fn now() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
}

impl Sketch {
    pub fn new(rows: usize, cells: usize) -> Self {
        Sketch {
            rows: (0..rows)
                .map(|_| {
                    let cells: Box<[AtomicU64]> = (0..cells).map(|_| AtomicU64::new(0)).collect();
                    (cells, foldhash::fast::RandomState::default())
                })
                .collect(),
        }
    }

    /// Count one request of `key` against `rate`: `Ok` lets it through,
    /// `Err` says how long until the key may send again.
    pub fn admit(&self, key: impl Hash, rate: Rate) -> Result<(), Duration> {
        let now = now();
        let cells: [Option<&AtomicU64>; 4] = std::array::from_fn(|i| {
            self.rows.get(i).map(|(cells, hasher)| {
                let slot = hasher.hash_one(&key) as usize % cells.len();
                &cells[slot]
            })
        });
        let cells = cells.iter().flatten();
        let arrival = cells
            .clone()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
            .max(now);
        let ahead = arrival - now;
        if ahead > rate.tolerance {
            return Err(Duration::from_nanos(ahead - rate.tolerance));
        }
        // Conservative update: no cell is raised past what this key needs.
        let next = arrival.saturating_add(rate.interval);
        for cell in cells {
            cell.fetch_max(next, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Bytes held, whatever the number of keys.
    pub fn bytes(&self) -> usize {
        self.rows.iter().map(|(c, _)| c.len() * 8).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let sketch = Sketch::new(2, 1024);
        // 10 per second, burst 5: 6 at once (nginx's burst + the one), then no more.
        let rate = Rate::new(10, Duration::from_secs(1), 5);
        for i in 0..6 {
            assert_eq!(sketch.admit("a", rate), Ok(()), "request {i}");
        }
        let wait = sketch.admit("a", rate).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another key is untouched.
        assert_eq!(sketch.admit("b", rate), Ok(()));
        std::thread::sleep(wait + Duration::from_millis(5));
        assert_eq!(sketch.admit("a", rate), Ok(()));
        assert!(sketch.admit("a", rate).is_err());
    }

    #[test]
    fn without_burst_one_per_interval() {
        let sketch = Sketch::new(2, 64);
        let rate = Rate::new(1, Duration::from_secs(60), 0);
        assert_eq!(sketch.admit(1u32, rate), Ok(()));
        let wait = sketch.admit(1u32, rate).unwrap_err();
        assert!(wait > Duration::from_secs(59), "{wait:?}");
    }

    #[test]
    fn memory_is_fixed_and_many_keys_do_not_break_it() {
        let sketch = Sketch::new(2, 4096);
        let rate = Rate::new(1000, Duration::from_secs(1), 10);
        for key in 0..100_000u32 {
            let _ = sketch.admit(key, rate);
        }
        assert_eq!(sketch.bytes(), 2 * 4096 * 8);
    }
}
