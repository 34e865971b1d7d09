//! CPU time and memory of this process, read from `/proc` (Linux), for the report.

use serde::Serialize;

/// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A reading of the process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    cpu_seconds: f64,
    rss_mib: f64,
    wall: Option<std::time::Instant>,
}

/// CPU and memory over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// CPU seconds (user + system) the run took.
    pub cpu_seconds: f64,
    /// CPU seconds per second of the run: above about 1.8 on two cores, the run was CPU-bound.
    pub cpu_load: f64,
    /// CPU milliseconds per delivery.
    pub cpu_ms_per_delivery: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// Resident memory added by the run, per peer, MiB.
    pub rss_per_peer_mib: f64,
}

impl Usage {
    /// Reads the counters now.
    pub fn now() -> Reading {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15, that is 11 and 12 after the state field.
        Reading {
            cpu_seconds: (ticks(11) + ticks(12)) / TICKS_PER_SECOND,
            rss_mib: rss_mib(),
            wall: Some(std::time::Instant::now()),
        }
    }
}

/// Resident memory of the process now, MiB.
pub fn rss_mib() -> f64 {
    status_kib("VmRSS") / 1024.0
}

impl Reading {
    /// The usage from `before` to this reading, over `peers` peers and `deliveries` deliveries.
    pub fn since(&self, before: &Reading, peers: usize, deliveries: u64) -> Usage {
        let cpu = self.cpu_seconds - before.cpu_seconds;
        let wall = match (self.wall, before.wall) {
            (Some(now), Some(then)) => now.duration_since(then).as_secs_f64(),
            _ => 0.0,
        };
        Usage {
            cpu_seconds: cpu,
            cpu_load: if wall > 0.0 { cpu / wall } else { 0.0 },
            cpu_ms_per_delivery: if deliveries > 0 {
                cpu * 1000.0 / deliveries as f64
            } else {
                0.0
            },
            peak_rss_mib: status_kib("VmHWM") / 1024.0,
            rss_per_peer_mib: if peers > 0 {
                (self.rss_mib - before.rss_mib).max(0.0) / peers as f64
            } else {
                0.0
            },
        }
    }
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0.0)
}
