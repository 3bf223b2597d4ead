//! How many calls of one method the gateway lets through at once, adapted to how fast they are
//! answered (the idea of Envoy's adaptive concurrency filter and Netflix's concurrency limits).
//!
//! A fixed bound on calls in flight is either too low for a quiet day or too high for click
//! day: at three times the load the suite can serve, a bound of a thousand claims let in enough
//! to saturate both CPUs, and then everything queued for the CPU — the refusals and a citizen's
//! cheap read included, at 250 ms. The bound that keeps latency where it is when the suite is
//! not loaded is the one to hold: beyond it, more calls in flight only wait longer.
//!
//! The rule, once per window of answers: the window's mean latency is the *sample*; the
//! *baseline* is the method's latency when few calls are in flight (learned from windows in
//! which at most the floor were); while the sample stays within [`TOLERANCE`] of the baseline
//! (plus [`SLACK`], for methods whose baseline is a millisecond) and the limit was reached, the
//! limit grows by its square root; when the sample goes beyond, the limit shrinks in
//! proportion (to a tenth at most in one window). An unreached limit stays where it is, so a
//! portal's burst on a quiet day passes. The floor is never refused, so a method held at it answers at
//! low concurrency, and its windows re-learn the baseline if the method has become slower for
//! good. Until a baseline is known the limit is the ceiling: nothing is refused that the fixed
//! bound would take.

use std::time::{Duration, Instant};

/// The answers one adjustment looks at: at least this much time …
const WINDOW: Duration = Duration::from_millis(100);
/// … and at least this many answers.
const MIN_SAMPLES: u32 = 8;
/// How much slower than the baseline the method may answer before its limit shrinks.
const TOLERANCE: f64 = 2.0;
/// The least the latency may rise over the baseline before the limit shrinks: a sample a few
/// milliseconds over a one-millisecond baseline is the machine's noise, not a queue.
const SLACK: Duration = Duration::from_millis(5);
/// The most one window shrinks the limit by (to a tenth).
const MAX_SHRINK: f64 = 0.1;
/// How much one low-concurrency window moves the baseline.
const BASELINE_WEIGHT: f64 = 0.25;

/// One method's limit and what it has seen. The caller holds it under a lock and gives it the
/// time, so that the rule can be tested with a clock driven by hand.
#[derive(Debug)]
pub struct Limit {
    floor: usize,
    ceiling: usize,
    limit: f64,
    in_flight: usize,
    baseline: Option<Duration>,
    window: Window,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    answers: u32,
    total: Duration,
    /// The most calls in flight at once during the window.
    peak: usize,
    /// Whether a call was refused for the limit during the window.
    limited: bool,
}

impl Window {
    fn new(start: Instant, in_flight: usize) -> Self {
        Self { start, answers: 0, total: Duration::ZERO, peak: in_flight, limited: false }
    }
}

impl Limit {
    /// A method's limit, between `floor` and `ceiling` calls in flight, as of `now`.
    pub fn new(floor: usize, ceiling: usize, now: Instant) -> Self {
        let ceiling = ceiling.max(1);
        let floor = floor.clamp(1, ceiling);
        Self {
            floor,
            ceiling,
            limit: ceiling as f64,
            in_flight: 0,
            baseline: None,
            window: Window::new(now, 0),
        }
    }

    /// The calls that may be in flight now.
    pub fn current(&self) -> usize {
        (self.limit as usize).clamp(self.floor, self.ceiling)
    }

    /// One more call in flight, or `false` when the limit is reached.
    pub fn try_acquire(&mut self) -> bool {
        if self.is_full() {
            return false;
        }
        self.in_flight += 1;
        self.window.peak = self.window.peak.max(self.in_flight);
        true
    }

    /// Whether a call now would be refused (counted as refused if so).
    pub fn is_full(&mut self) -> bool {
        let full = self.in_flight >= self.current();
        self.window.limited |= full;
        full
    }

    /// A call let through was answered at `now`, after `took`.
    pub fn release(&mut self, took: Duration, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.window.answers += 1;
        self.window.total += took;
        if self.window.answers >= MIN_SAMPLES && now.duration_since(self.window.start) >= WINDOW {
            self.adjust();
            self.window = Window::new(now, self.in_flight);
        }
    }

    /// A call let through was answered, its time not taken into account (a stream's).
    pub fn release_unmeasured(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn adjust(&mut self) {
        let sample = self.window.total / self.window.answers;
        if self.window.peak <= self.floor {
            self.baseline = Some(match self.baseline {
                None => sample,
                Some(b) => b.mul_f64(1.0 - BASELINE_WEIGHT) + sample.mul_f64(BASELINE_WEIGHT),
            });
        }
        let Some(baseline) = self.baseline else { return };
        let target = baseline.mul_f64(TOLERANCE).max(baseline + SLACK);
        if sample > target {
            // In proportion to how far over, by at most nine tenths: at the start of click day
            // a thousand claims let in at once answered in 200 ms where 6 ms was the baseline,
            // and halving at each window left the CPU the queue (refusals included) for half a
            // second; one window now brings the limit to what answers in time.
            let shrink = (target.as_secs_f64() / sample.as_secs_f64()).max(MAX_SHRINK);
            // From what was in flight, not from a limit never reached: a limit far above the
            // calls actually open would otherwise take many windows to mean anything.
            let from = self.limit.min(self.window.peak as f64);
            self.limit = (from * shrink).max(self.floor as f64);
        } else if self.window.limited {
            self.limit = (self.limit + self.limit.sqrt().max(1.0)).min(self.ceiling as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A method's limit with a clock driven by hand.
    struct Sim {
        limit: Limit,
        clock: Instant,
    }

    impl Sim {
        fn new(floor: usize) -> Self {
            let clock = Instant::now();
            Self { limit: Limit::new(floor, 1024, clock), clock }
        }

        /// `n` calls at once, each answered after `took(admitted)`, for `windows` windows.
        fn load_by(&mut self, n: usize, took: impl Fn(usize) -> Duration, windows: u32) {
            for _ in 0..windows {
                let admitted = (0..n).filter(|_| self.limit.try_acquire()).count();
                self.clock += WINDOW;
                for _ in 0..admitted {
                    self.limit.release(took(admitted), self.clock);
                }
            }
        }

        fn load(&mut self, n: usize, took: Duration, windows: u32) {
            self.load_by(n, |_| took, windows);
        }
    }

    #[test]
    fn with_no_baseline_yet_the_limit_is_the_ceiling() {
        let mut sim = Sim::new(16);
        sim.load(1024, Duration::from_millis(400), 5);
        assert_eq!(sim.limit.current(), 1024, "nothing to compare with: the fixed bound holds");
    }

    #[test]
    fn when_answers_slow_down_under_load_the_limit_falls_towards_the_floor_and_rises_again() {
        let mut sim = Sim::new(16);
        // A quiet morning: a few claims at once, answered in 8 ms.
        sim.load(8, Duration::from_millis(8), 5);
        assert_eq!(sim.limit.current(), 1024, "unreached, it stays where it was");
        // Click day: the queue grows, answers come after 400 ms.
        sim.load(2000, Duration::from_millis(400), 2);
        assert_eq!(sim.limit.current(), 16, "shrunk to the floor within two windows");
        // The queue drains: answers at the baseline again, the limit reached each window.
        sim.load(2000, Duration::from_millis(9), 20);
        let grown = sim.limit.current();
        assert!(grown > 64, "grew back while answers stayed fast: {grown}");
    }

    #[test]
    fn the_limit_settles_where_answers_stay_within_tolerance() {
        let mut sim = Sim::new(8);
        sim.load(4, Duration::from_millis(10), 3);
        // A service that answers in 10 ms up to 100 calls at once, and queues beyond.
        let queueing =
            |admitted: usize| Duration::from_millis(10).mul_f64((admitted as f64 / 100.0).max(1.0));
        sim.load_by(1000, queueing, 200);
        let settled = sim.limit.current();
        assert!((100..=260).contains(&settled), "settled at {settled}");
    }

    #[test]
    fn a_method_that_became_slower_for_good_learns_its_new_baseline_at_the_floor() {
        let mut sim = Sim::new(16);
        sim.load(8, Duration::from_millis(2), 5);
        // Now every answer takes 50 ms, however few are in flight.
        sim.load(200, Duration::from_millis(50), 80);
        assert!(sim.limit.current() > 16, "relearned: {}", sim.limit.current());
    }

    #[test]
    fn the_floor_is_never_refused() {
        let mut sim = Sim::new(16);
        sim.load(8, Duration::from_millis(1), 5);
        for _ in 0..20 {
            sim.load(2000, Duration::from_secs(2), 1);
            assert!(sim.limit.current() >= 16);
        }
        assert_eq!((0..16).filter(|_| sim.limit.try_acquire()).count(), 16);
    }
}
