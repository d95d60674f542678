//! Open-loop scheduling without coordinated omission.
//!
//! In open-loop mode message `i` is due at `t0 + i / rate`, whatever happened
//! to earlier messages. Its latency is measured from that intended start, so
//! when the server (or the pool of connections) falls behind, the waiting time
//! shows up in the histogram instead of silently lowering the offered rate.

use std::time::{Duration, Instant};

/// How early a worker may start a message: tokio timers have millisecond
/// resolution, so sleeping until exactly the intended time would add up to
/// 1 ms of artificial lateness.
pub const EARLY_SLACK: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub t0: Instant,
    pub interval_ns: f64,
}

impl Schedule {
    pub fn new(t0: Instant, rate_per_s: f64) -> Schedule {
        assert!(rate_per_s > 0.0);
        Schedule { t0, interval_ns: 1e9 / rate_per_s }
    }

    /// Intended start of operation `i` (0-based).
    pub fn intended(&self, i: u64) -> Instant {
        self.t0 + Duration::from_nanos((i as f64 * self.interval_ns).round() as u64)
    }

    /// Instant until which a worker should sleep before starting `i`, or
    /// None if it is due (within the early slack) already.
    pub fn wait_until(&self, i: u64, now: Instant) -> Option<Instant> {
        let due = self.intended(i);
        let wake = due.checked_sub(EARLY_SLACK)?;
        (wake > now).then_some(wake)
    }
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
    fn intended_does_not_depend_on_progress() {
        // the schedule is a pure function of the index: a slow message does
        // not push later ones back
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0);
        let late_now = t0 + Duration::from_secs(5);
        assert_eq!(s.wait_until(10, late_now), None);
        assert_eq!(s.intended(10), t0 + Duration::from_millis(10));
        assert_eq!(s.wait_until(10_000, late_now), Some(t0 + Duration::from_millis(9_999)));
    }

    #[test]
    fn latency_counts_queueing_delay() {
        let t0 = Instant::now();
        let intended = t0 + Duration::from_millis(10);
        // started 40 ms late, served in 5 ms -> 45 ms
        let lat = latency_from(intended, t0 + Duration::from_millis(50), t0 + Duration::from_millis(55));
        assert_eq!(lat, Duration::from_millis(45));
        // started 0.5 ms early -> measured from the actual start
        let started = intended - Duration::from_micros(500);
        let lat = latency_from(intended, started, started + Duration::from_millis(2));
        assert_eq!(lat, Duration::from_millis(2));
    }
}
