//! Admission by the time a caller would wait: work that is expensive (a claim's transaction, an
//! argon2id hash) is admitted only while the work already waiting would be done within a bound
//! and within the caller's own deadline, at the rate such work has lately been done. Beyond
//! that the caller is refused at once, with the time to retry after, instead of waiting in a
//! queue for an answer that would come after it stopped listening: under three times the load
//! a service can serve, a queue only adds latency to the calls served and work for callers
//! already gone.
//!
//! The rate is what the callers see: tickets given back per second of wall-clock time while
//! work was in flight, from admission to answer. A rate measured inside the work alone (the
//! time a hash or a batch's commit took) leaves out everything else an admitted job waits for
//! (the database's single writer, the executor, a CPU shared with the hashing threads) and
//! admitted logins were answered after 2.4 s instead of within the one-second bound.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much one measurement moves the rate (an exponentially weighted average).
const WEIGHT: f64 = 0.2;
/// The shortest stretch of busy time one measurement of the rate covers.
const WINDOW: Duration = Duration::from_millis(100);

/// Tickets given back since `since`, while some were in flight all along.
#[derive(Debug, Default)]
struct Window {
    since: Option<Instant>,
    /// When the last ticket was given back.
    last: Option<Instant>,
    returned: usize,
}

#[derive(Debug)]
struct Inner {
    /// Admitted and not yet done.
    in_flight: AtomicUsize,
    /// Tickets given back per second of busy wall-clock time (f64 bits); 0 until measured.
    rate: AtomicU64,
    /// The work's own rate as [`Admission::done`] reports it (f64 bits): the bound until the
    /// wall-clock rate is known.
    hint: AtomicU64,
    window: Mutex<Window>,
    max_wait: Duration,
    floor: usize,
    ceiling: usize,
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Admission(Arc<Inner>);

/// One admitted job, counted until it is dropped (when its answer is given, whether or not
/// anyone still waits for it).
#[derive(Debug)]
pub struct Ticket(Arc<Inner>);

impl Ticket {
    /// Gives the ticket back as of `now` (dropping it gives it back as of the moment it is
    /// dropped).
    pub fn returned_at(self, now: Instant) {
        self.0.returned(now);
        std::mem::forget(self);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.returned(Instant::now());
    }
}

fn ewma(cell: &AtomicU64, measured: f64) {
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| {
        let rate = f64::from_bits(bits);
        let next = if rate == 0.0 { measured } else { rate + WEIGHT * (measured - rate) };
        Some(next.to_bits())
    });
}

impl Inner {
    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One ticket given back at `now`. A window is measured once it covers [`WINDOW`] of busy
    /// time, up to the last ticket given back before this one (those given back at one instant,
    /// a batch's, are counted together): the rate moves towards its tickets per second. When
    /// nothing is left in flight the stretch ends, measured if long enough: idle time says
    /// nothing of how fast work is done.
    fn returned(&self, now: Instant) {
        let mut window = self.window();
        let left = self.in_flight.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        let since = *window.since.get_or_insert(now);
        let last = window.last.unwrap_or(since);
        let covered = last.saturating_duration_since(since);
        if now > last && covered >= WINDOW && window.returned > 0 {
            ewma(&self.rate, window.returned as f64 / covered.as_secs_f64());
            *window = Window { since: Some(last), last: Some(last), returned: 0 };
        }
        window.returned += 1;
        window.last = Some(now);
        if left == 0 {
            let since = window.since.unwrap_or(now);
            let covered = now.saturating_duration_since(since);
            if covered >= WINDOW {
                ewma(&self.rate, window.returned as f64 / covered.as_secs_f64());
            }
            *window = Window::default();
        }
    }
}

impl Admission {
    /// Admits while the jobs in flight would be done within `max_wait`; always at least
    /// `floor` (so that a batch can form), never more than `ceiling` (which is also the bound
    /// until a first job is done: before anything is measured, nothing is refused that a
    /// bounded queue would take).
    pub fn new(max_wait: Duration, floor: usize, ceiling: usize) -> Self {
        Self(Arc::new(Inner {
            in_flight: AtomicUsize::new(0),
            rate: AtomicU64::new(0f64.to_bits()),
            hint: AtomicU64::new(0f64.to_bits()),
            window: Mutex::default(),
            max_wait,
            floor: floor.max(1),
            ceiling: ceiling.max(floor.max(1)),
        }))
    }

    /// How many jobs may be in flight now for a caller who has `deadline` left.
    pub fn bound(&self, deadline: Option<Duration>) -> usize {
        let wait = deadline.map_or(self.0.max_wait, |d| self.0.max_wait.min(d / 2));
        let rate = match f64::from_bits(self.0.rate.load(Ordering::Relaxed)) {
            0.0 => f64::from_bits(self.0.hint.load(Ordering::Relaxed)),
            measured => measured,
        };
        if rate == 0.0 {
            return self.0.ceiling;
        }
        let by_time = (rate * wait.as_secs_f64()) as usize;
        by_time.clamp(self.0.floor, self.0.ceiling)
    }

    /// A ticket, or `None` when the caller would wait too long (see [`Admission::bound`]).
    pub fn admit(&self, deadline: Option<Duration>) -> Option<Ticket> {
        self.admit_at(deadline, Instant::now())
    }

    /// [`Admission::admit`] as of `now`: the first ticket of a busy stretch starts its window.
    pub fn admit_at(&self, deadline: Option<Duration>, now: Instant) -> Option<Ticket> {
        let bound = self.bound(deadline);
        let mut window = self.0.window();
        let taken = self
            .0
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < bound).then_some(n + 1));
        let was = taken.ok()?;
        if was == 0 {
            *window = Window { since: Some(now), last: None, returned: 0 };
        }
        Some(Ticket(self.0.clone()))
    }

    /// `jobs` jobs were done in `took` of the work itself: until the rate seen by callers is
    /// measured, the bound follows `jobs / took`.
    pub fn done(&self, jobs: usize, took: Duration) {
        if jobs == 0 || took.is_zero() {
            return;
        }
        ewma(&self.0.hint, jobs as f64 / took.as_secs_f64());
    }

    /// Tickets given back per second of busy time, as lately measured (0 until it is).
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.0.rate.load(Ordering::Relaxed))
    }

    /// Jobs admitted and not yet done.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Relaxed)
    }
}

/// The time the caller of `request` has left, as its `grpc-timeout` says; `None` without one.
pub fn deadline_of<T>(request: &tonic::Request<T>) -> Option<Duration> {
    crate::deadline::of_metadata(request.metadata())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_any_rate_is_known_up_to_the_ceiling_is_admitted_and_after_it_the_floor_at_least() {
        let admission = Admission::new(Duration::from_secs(1), 2, 3);
        let _a = admission.admit(None).expect("first");
        let _b = admission.admit(None).expect("second");
        let c = admission.admit(None).expect("third");
        assert!(admission.admit(None).is_none(), "the ceiling is reached");
        drop(c);
        admission.done(1, Duration::from_secs(10)); // 0.1 a second: a second's wait is 0 jobs
        assert_eq!(admission.bound(None), 2, "the floor");
        assert!(admission.admit(None).is_none(), "two are in flight");
    }

    #[test]
    fn the_bound_is_what_the_recent_rate_does_within_the_wait_and_the_callers_deadline() {
        let admission = Admission::new(Duration::from_secs(1), 4, 10_000);
        admission.done(100, Duration::from_millis(100)); // 1,000 a second
        assert_eq!(admission.bound(None), 1000);
        assert_eq!(admission.bound(Some(Duration::from_millis(200))), 100, "half of 200 ms");
        assert_eq!(admission.bound(Some(Duration::from_millis(1))), 4, "never below the floor");
        admission.done(10, Duration::from_millis(100)); // slower now: 100 a second
        assert!(admission.bound(None) < 1000, "the rate follows what is measured");
    }

    #[test]
    fn a_ticket_is_given_back_when_dropped() {
        let admission = Admission::new(Duration::from_secs(1), 1, 1);
        let ticket = admission.admit(None).expect("first");
        assert!(admission.admit(None).is_none());
        drop(ticket);
        assert_eq!(admission.in_flight(), 0);
        admission.admit(None).expect("after the first is done");
    }

    #[test]
    fn admitted_work_answered_slower_than_its_own_rate_lowers_the_bound() {
        // The hashes themselves go at 1,000 a second, but the logins around them (the database,
        // a shared CPU) are answered at 10 a second: the bound is what callers see.
        let admission = Admission::new(Duration::from_secs(1), 4, 10_000);
        admission.done(100, Duration::from_millis(100));
        assert_eq!(admission.bound(None), 1000, "until answers are measured, the work's rate");
        let t0 = Instant::now();
        let tickets: Vec<Ticket> =
            (0..10).map(|_| admission.admit_at(None, t0).expect("admitted")).collect();
        for ticket in tickets {
            ticket.returned_at(t0 + Duration::from_secs(1));
        }
        assert_eq!(admission.rate(), 10.0);
        assert_eq!(admission.bound(None), 10, "ten answered a second, for a second's wait");
        assert_eq!(admission.in_flight(), 0);
    }

    #[test]
    fn idle_time_between_busy_stretches_does_not_count_as_slowness() {
        let admission = Admission::new(Duration::from_secs(1), 1, 10_000);
        let t0 = Instant::now();
        let (a, b) = (admission.admit_at(None, t0).unwrap(), admission.admit_at(None, t0).unwrap());
        a.returned_at(t0 + Duration::from_millis(50));
        b.returned_at(t0 + Duration::from_millis(100));
        assert_eq!(admission.rate(), 20.0, "two in 100 ms");
        // A minute with nothing to do, then ten answered in 100 ms.
        let t1 = t0 + Duration::from_secs(60);
        let tickets: Vec<Ticket> =
            (0..10).map(|_| admission.admit_at(None, t1).expect("admitted")).collect();
        for ticket in tickets {
            ticket.returned_at(t1 + Duration::from_millis(100));
        }
        assert_eq!(admission.rate(), 20.0 + WEIGHT * (100.0 - 20.0), "the idle minute left out");
    }
}
