//! Open-loop scheduling without coordinated omission.
//!
//! In open-loop mode message `i` is due at `t0 + i / rate`, whatever happened
//! to earlier messages. Its latency is measured from that intended start, so
//! when the server (or the pool of connections) falls behind, the waiting time
//! shows up in the histogram instead of silently lowering the offered rate.
//!
//! Pacing runs on its own OS thread: tokio timers have 1 ms resolution, which
//! would add up to a millisecond of artificial lateness to every message. The
//! pacer thread sleeps with `std::thread::sleep` (tens of microseconds of
//! precision) and hands out one semaphore permit per due message; a worker
//! takes a permit, then the next message index. A message therefore never
//! starts before its intended time, and the time a worker needed to pick it up
//! is visible as `schedule_lag`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub t0: Instant,
    pub interval_ns: f64,
}

impl Schedule {
    pub fn new(t0: Instant, rate_per_s: f64) -> Schedule {
        assert!(rate_per_s > 0.0);
        Schedule {
            t0,
            interval_ns: 1e9 / rate_per_s,
        }
    }

    /// Intended start of operation `i` (0-based).
    pub fn intended(&self, i: u64) -> Instant {
        self.t0 + Duration::from_nanos((i as f64 * self.interval_ns).round() as u64)
    }

    /// Number of operations due at `now` (those with intended <= now).
    pub fn due_count(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.t0) {
            None => 0,
            Some(e) => (e.as_nanos() as f64 / self.interval_ns).floor() as u64 + 1,
        }
    }
}

/// Hands out permits at the schedule's pace from a dedicated thread.
pub struct Pacer {
    pub permits: Arc<Semaphore>,
    /// Set (with the final number of released permits) when pacing ended.
    pub done: Arc<AtomicBool>,
    pub released: Arc<AtomicU64>,
}

/// Shortest sleep of the pacer thread; due messages are released in batches
/// at very high rates instead of sleeping for every one.
const MIN_SLEEP: Duration = Duration::from_micros(20);

impl Pacer {
    /// Start pacing `total` operations; stops at `deadline` or when `stop`
    /// is set. `wake_extra` permits are added at the end so that every
    /// waiting worker wakes up and sees `done`.
    pub fn spawn(
        s: Schedule,
        total: u64,
        deadline: Instant,
        stop: impl Fn() -> bool + Send + 'static,
        wake_extra: usize,
    ) -> Pacer {
        let permits = Arc::new(Semaphore::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let released = Arc::new(AtomicU64::new(0));
        let (p, d, r) = (permits.clone(), done.clone(), released.clone());
        std::thread::Builder::new()
            .name("loadgen-pacer".into())
            .spawn(move || {
                let mut rel = 0u64;
                // bounded: ends at `total` permits or at the deadline
                while rel < total && !stop() {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    let due = s.due_count(now).min(total);
                    if due > rel {
                        r.store(due, Ordering::Release);
                        p.add_permits((due - rel) as usize);
                        rel = due;
                        continue;
                    }
                    let next = s.intended(rel).min(deadline);
                    std::thread::sleep(next.saturating_duration_since(now).max(MIN_SLEEP));
                }
                d.store(true, Ordering::Release);
                p.add_permits(wake_extra);
            })
            .expect("spawn pacer thread");
        Pacer {
            permits,
            done,
            released,
        }
    }

    /// Wait for the next due operation; returns false when pacing ended.
    pub async fn next(&self, claim: impl FnOnce() -> u64) -> Option<u64> {
        let permit = self.permits.acquire().await.ok()?;
        permit.forget();
        let i = claim();
        if self.done.load(Ordering::Acquire) && i >= self.released.load(Ordering::Acquire) {
            // one of the wake-up permits: hand it on to the next waiter
            self.permits.add_permits(1);
            return None;
        }
        Some(i)
    }
}

/// The open loop at `rate` operations per second from `t0`, if one is
/// asked for: its schedule, and a pacer releasing `total` operations until
/// `deadline` or until `live` is stopped, with a wake-up for each of
/// `workers` at the end.
pub fn open_loop(
    rate: Option<f64>,
    t0: Instant,
    total: u64,
    deadline: Instant,
    live: &Arc<crate::stats::Live>,
    workers: usize,
) -> (Option<Schedule>, Option<Pacer>) {
    let schedule = rate.map(|r| Schedule::new(t0, r));
    let pacer = schedule.map(|s| {
        let l = live.clone();
        Pacer::spawn(
            s,
            total,
            deadline,
            move || l.stop.load(Ordering::Relaxed),
            workers,
        )
    });
    (schedule, pacer)
}

/// Latency of an operation that was due at `intended`, actually started at
/// `started` and completed at `end`. A late start counts from the intended
/// time (the wait is part of the latency); an early start (within the slack)
/// counts from the actual start, so latency is never under-reported.
pub fn latency_from(intended: Instant, started: Instant, end: Instant) -> Duration {
    end.saturating_duration_since(intended.min(started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_fixed_intervals() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 100.0);
        assert_eq!(s.intended(0), t0);
        assert_eq!(s.intended(1), t0 + Duration::from_millis(10));
        assert_eq!(s.intended(10), t0 + Duration::from_millis(100));
        assert_eq!(s.intended(12_345), t0 + Duration::from_millis(123_450));
        let s = Schedule::new(t0, 3.0);
        assert_eq!(s.intended(3), t0 + Duration::from_secs(1));
        assert_eq!(s.intended(1), t0 + Duration::from_nanos(333_333_333));
    }

    #[test]
    fn due_count_follows_the_clock() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0);
        assert_eq!(s.due_count(t0), 1);
        assert_eq!(s.due_count(t0 + Duration::from_micros(999)), 1);
        assert_eq!(s.due_count(t0 + Duration::from_millis(1)), 2);
        // the schedule is a pure function of time: a stall does not push
        // later messages back, everything due is released at once
        assert_eq!(s.due_count(t0 + Duration::from_secs(5)), 5001);
    }

    #[test]
    fn pacer_never_releases_early_and_keeps_the_rate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t0 = Instant::now() + Duration::from_millis(5);
            let s = Schedule::new(t0, 2000.0);
            let pacer = Pacer::spawn(s, 100, t0 + Duration::from_secs(10), || false, 4);
            let next = AtomicU64::new(0);
            let mut got = Vec::new();
            while let Some(i) = pacer.next(|| next.fetch_add(1, Ordering::Relaxed)).await {
                let now = Instant::now();
                assert!(
                    now >= s.intended(i),
                    "op {i} started before its intended time"
                );
                got.push((i, now));
            }
            assert_eq!(got.len(), 100);
            let last = got.last().unwrap();
            assert_eq!(last.0, 99);
            // 100 ops at 2000/s take ~49.5 ms
            let span = last.1.duration_since(t0);
            assert!(
                span >= Duration::from_micros(49_500) && span < Duration::from_millis(500),
                "{span:?}"
            );
        });
    }

    #[test]
    fn pacer_stops_at_deadline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t0 = Instant::now();
            let s = Schedule::new(t0, 1000.0);
            let pacer = Pacer::spawn(s, u64::MAX, t0 + Duration::from_millis(30), || false, 1);
            let next = AtomicU64::new(0);
            let mut n = 0;
            while pacer
                .next(|| next.fetch_add(1, Ordering::Relaxed))
                .await
                .is_some()
            {
                n += 1;
            }
            assert!((20..=32).contains(&n), "{n}");
        });
    }

    #[test]
    fn latency_counts_queueing_delay() {
        let t0 = Instant::now();
        let intended = t0 + Duration::from_millis(10);
        // started 40 ms late, served in 5 ms -> 45 ms
        let lat = latency_from(
            intended,
            t0 + Duration::from_millis(50),
            t0 + Duration::from_millis(55),
        );
        assert_eq!(lat, Duration::from_millis(45));
        // started 0.5 ms early -> measured from the actual start
        let started = intended - Duration::from_micros(500);
        let lat = latency_from(intended, started, started + Duration::from_millis(2));
        assert_eq!(lat, Duration::from_millis(2));
    }
}
