//! When to try again: exponential backoff with jitter, so that many senders failing together do
//! not retry together.

/// The wait before attempt `attempts + 1`, in milliseconds: `base_ms`, doubling per attempt up
/// to `max_ms`, then a random point in its upper half.
pub fn backoff_ms(attempts: i64, base_ms: i64, max_ms: i64) -> i64 {
    let exp = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    let wait = base_ms.saturating_mul(1_i64 << exp).min(max_ms).max(2);
    wait / 2 + rand::random_range(0..=wait / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_per_attempt_within_their_jitter_and_stop_growing_at_the_cap() {
        for _ in 0..100 {
            assert!((250..=500).contains(&backoff_ms(1, 500, 60_000)));
            assert!((500..=1_000).contains(&backoff_ms(2, 500, 60_000)));
            assert!((30_000..=60_000).contains(&backoff_ms(12, 500, 60_000)));
            assert!((30_000..=60_000).contains(&backoff_ms(i64::MAX, 500, 60_000)));
        }
    }
}
