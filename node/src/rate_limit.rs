//! Token buckets: how often one peer may ask this node for work, on average and in a burst.

use std::time::Instant;

/// A rate: `burst` requests at once, then `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests allowed back to back after a quiet period.
    pub burst: u32,
    /// Requests allowed per second in the long run.
    pub per_second: f64,
}

/// One peer's budget under a [`Rate`]: full at first, spent one token per request, refilled
/// continuously.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: Rate,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst),
            refilled_at: now,
        }
    }

    /// Spends one token if there is one; `false` means the request is over the rate.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate.per_second)
            .min(f64::from(self.rate.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RATE: Rate = Rate {
        burst: 3,
        per_second: 2.0,
    };

    #[test]
    fn a_burst_is_allowed_then_the_average_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RATE, start);
        assert!((0..3).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        let half_second = start + Duration::from_millis(500);
        assert!(bucket.try_take(half_second));
        assert!(!bucket.try_take(half_second));
    }

    #[test]
    fn a_long_pause_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RATE, start);
        let later = start + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| bucket.try_take(later)).count(), 3);
    }
}
