//! Admission by the time a caller would wait: work that is expensive (a claim's transaction, an
//! argon2id hash) is admitted only while the work already waiting would be done within a bound
//! and within the caller's own deadline, at the rate such work has lately been done. Beyond
//! that the caller is refused at once, with the time to retry after, instead of waiting in a
//! queue for an answer that would come after it stopped listening: under three times the load
//! a service can serve, a queue only adds latency to the calls served and work for callers
//! already gone.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How much one measurement moves the rate (an exponentially weighted average).
const WEIGHT: f64 = 0.2;

#[derive(Debug)]
struct Inner {
    /// Admitted and not yet done.
    in_flight: AtomicUsize,
    /// Jobs done per second while working (f64 bits); 0 until the first is done.
    rate: AtomicU64,
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

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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
            max_wait,
            floor: floor.max(1),
            ceiling: ceiling.max(floor.max(1)),
        }))
    }

    /// How many jobs may be in flight now for a caller who has `deadline` left.
    pub fn bound(&self, deadline: Option<Duration>) -> usize {
        let wait = deadline.map_or(self.0.max_wait, |d| self.0.max_wait.min(d / 2));
        let rate = f64::from_bits(self.0.rate.load(Ordering::Relaxed));
        if rate == 0.0 {
            return self.0.ceiling;
        }
        let by_time = (rate * wait.as_secs_f64()) as usize;
        by_time.clamp(self.0.floor, self.0.ceiling)
    }

    /// A ticket, or `None` when the caller would wait too long (see [`Admission::bound`]).
    pub fn admit(&self, deadline: Option<Duration>) -> Option<Ticket> {
        let bound = self.bound(deadline);
        let taken = self
            .0
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < bound).then_some(n + 1));
        taken.ok().map(|_| Ticket(self.0.clone()))
    }

    /// `jobs` jobs were done in `took` of work: the rate moves towards `jobs / took`.
    pub fn done(&self, jobs: usize, took: Duration) {
        if jobs == 0 || took.is_zero() {
            return;
        }
        let measured = jobs as f64 / took.as_secs_f64();
        let _ = self.0.rate.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |bits| {
            let rate = f64::from_bits(bits);
            let next = if rate == 0.0 { measured } else { rate + WEIGHT * (measured - rate) };
            Some(next.to_bits())
        });
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
}
