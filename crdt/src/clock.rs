//! Hybrid logical clock timestamps for records: close to wall-clock time so people can read them,
//! yet strictly increasing on each device and never behind anything the device has seen, so a reply
//! sorts after the message it answers even when clocks disagree a little.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bits of an [`Hlc`] that hold the logical counter; the rest hold Unix milliseconds.
const COUNTER_BITS: u32 = 16;
/// How far ahead of our wall clock a remote timestamp may be and still advance our clock. A peer
/// with a clock far in the future must not drag everyone's timestamps along with it.
pub const MAX_CLOCK_DRIFT_MS: u64 = 60_000;

/// A hybrid-logical-clock timestamp: Unix milliseconds in the high 48 bits, a counter in the low 16.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Builds a timestamp from wall-clock milliseconds and a counter.
    pub fn new(unix_millis: u64, counter: u16) -> Self {
        Hlc((unix_millis << COUNTER_BITS) | u64::from(counter))
    }

    /// The wall-clock part, in milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// The logical part, which orders events within one millisecond.
    pub fn counter(self) -> u16 {
        (self.0 & ((1 << COUNTER_BITS) - 1)) as u16
    }
}

/// The clock of one device: hands out increasing timestamps and learns from the ones it receives.
#[derive(Debug, Default, Clone)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next timestamp, from the system's wall clock.
    pub fn now(&mut self) -> Hlc {
        self.tick(wall_clock_millis())
    }

    /// The next timestamp when the wall clock reads `wall_millis`: never below what was handed out
    /// or observed before.
    pub fn tick(&mut self, wall_millis: u64) -> Hlc {
        let wall = Hlc::new(wall_millis, 0);
        self.last = if wall > self.last {
            wall
        } else {
            Hlc(self.last.0.saturating_add(1))
        };
        self.last
    }

    /// Takes note of a timestamp from another device, unless it is implausibly far in the future.
    pub fn observe(&mut self, remote: Hlc, wall_millis: u64) {
        if remote.unix_millis() <= wall_millis.saturating_add(MAX_CLOCK_DRIFT_MS) {
            self.last = self.last.max(remote);
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock (zero if the clock is before 1970).
pub fn wall_clock_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase_even_when_the_wall_clock_stalls_or_goes_back() {
        let mut clock = HlcClock::new();
        let a = clock.tick(1_000);
        let b = clock.tick(1_000);
        let c = clock.tick(900);
        let d = clock.tick(2_000);
        assert!(a < b && b < c && c < d);
        assert_eq!(b.unix_millis(), 1_000);
        assert_eq!(b.counter(), 1);
        assert_eq!(d, Hlc::new(2_000, 0));
    }

    #[test]
    fn observed_timestamps_push_the_clock_forward_within_the_drift_bound() {
        let mut clock = HlcClock::new();
        clock.observe(Hlc::new(5_000, 3), 1_000);
        assert!(clock.tick(1_000) > Hlc::new(5_000, 3));
        clock.observe(Hlc::new(1_000_000, 0), 1_000);
        assert!(clock.tick(1_000) < Hlc::new(1_000_000, 0));
    }
}
