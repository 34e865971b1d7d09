//! Measurements: when each record was published and when each peer received it, and the report
//! made from them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use grapevine_node::crdt::RecordId;
use tokio::time::Instant;

use crate::network::Traffic;

/// Every publication and every delivery, with the in-process clock.
#[derive(Debug, Default)]
pub struct DeliveryLog {
    published: HashMap<RecordId, (usize, Instant)>,
    received: HashMap<RecordId, BTreeMap<usize, Instant>>,
}

impl DeliveryLog {
    /// `peer` published `record` at `at`.
    pub fn published(&mut self, record: RecordId, peer: usize, at: Instant) {
        self.published.insert(record, (peer, at));
    }

    /// `peer` received `record` at `at`; a later receipt of the same record is ignored.
    pub fn received(&mut self, record: RecordId, peer: usize, at: Instant) {
        self.received
            .entry(record)
            .or_default()
            .entry(peer)
            .or_insert(at);
    }

    /// Whether `peer` received any of `records`.
    pub fn received_any(&self, peer: usize, records: &HashSet<RecordId>) -> bool {
        records.iter().any(|record| {
            self.received
                .get(record)
                .is_some_and(|got| got.contains_key(&peer))
        })
    }

    /// The report over the peers `members` (running honest room members), leaving out what
    /// `excluded` peers (hostile ones) published, after `elapsed`.
    pub fn report(
        &self,
        members: &[usize],
        excluded: &[usize],
        elapsed: Duration,
        traffic: &Traffic,
    ) -> Report {
        let mut expected = 0usize;
        let mut delivered = 0usize;
        let mut to_95 = Vec::new();
        let mut to_all = Vec::new();
        let mut all = Vec::new();
        for (record, (publisher, at)) in &self.published {
            if excluded.contains(publisher) {
                continue;
            }
            let receivers: Vec<usize> =
                members.iter().copied().filter(|p| p != publisher).collect();
            if receivers.is_empty() {
                continue;
            }
            let got = self.received.get(record);
            let mut latencies: Vec<Duration> = receivers
                .iter()
                .filter_map(|p| got.and_then(|g| g.get(p)))
                .map(|t| t.saturating_duration_since(*at))
                .collect();
            latencies.sort();
            expected += receivers.len();
            delivered += latencies.len();
            all.extend(&latencies);
            let need_95 = (receivers.len() * 95).div_ceil(100);
            if latencies.len() >= need_95 && need_95 > 0 {
                to_95.push(latencies[need_95 - 1]);
            }
            if latencies.len() == receivers.len() {
                to_all.push(latencies[latencies.len() - 1]);
            }
        }
        Report {
            members: members.len(),
            published: self
                .published
                .values()
                .filter(|(publisher, _)| !excluded.contains(publisher))
                .count(),
            delivery_ratio: if expected == 0 {
                1.0
            } else {
                delivered as f64 / expected as f64
            },
            latency_to_95: Percentiles::of(to_95),
            latency_to_all: Percentiles::of(to_all),
            latency_per_delivery: Percentiles::of(all),
            bytes_per_delivery: if delivered == 0 {
                0.0
            } else {
                traffic.bytes.load(Ordering::Relaxed) as f64 / delivered as f64
            },
            connections_opened: traffic.connections.load(Ordering::Relaxed),
            elapsed,
            convergence: None,
        }
    }
}

/// p50 / p95 / p99 / max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Percentiles {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(mut values: Vec<Duration>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort();
        let at = |q: f64| {
            let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            values[index].as_secs_f64() * 1000.0
        };
        Self {
            count: values.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// What a simulation measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// Running honest room members at the end.
    pub members: usize,
    /// Records published (by honest members, and measured).
    pub published: usize,
    /// Deliveries made over deliveries expected (every running member but the publisher).
    pub delivery_ratio: f64,
    /// Per record: time until 95 % of the members held it.
    pub latency_to_95: Percentiles,
    /// Per record: time until every member held it (records that reached everyone).
    pub latency_to_all: Percentiles,
    /// Every single delivery.
    pub latency_per_delivery: Percentiles,
    /// Bytes that crossed the network (payload and control) per delivery.
    pub bytes_per_delivery: f64,
    /// Connections opened in the simulated network.
    pub connections_opened: u64,
    /// Time since the simulation started.
    pub elapsed: Duration,
    /// Time to identical heads everywhere, when it was measured.
    pub convergence: Option<Duration>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, name: &str, p: &Percentiles| {
            writeln!(
                f,
                "{name:<24} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8}",
                p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.count
            )
        };
        writeln!(
            f,
            "members {}, records published {}, ran {:.1} s",
            self.members,
            self.published,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "delivery ratio           {:.4}", self.delivery_ratio)?;
        writeln!(
            f,
            "{:<24} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency (ms)", "p50", "p95", "p99", "max", "n"
        )?;
        row(f, "  to 95 % of members", &self.latency_to_95)?;
        row(f, "  to all members", &self.latency_to_all)?;
        row(f, "  per delivery", &self.latency_per_delivery)?;
        writeln!(f, "bytes per delivery       {:.0}", self.bytes_per_delivery)?;
        writeln!(f, "connections opened       {}", self.connections_opened)?;
        if let Some(c) = self.convergence {
            writeln!(f, "converged after          {:.2} s", c.as_secs_f64())?;
        }
        Ok(())
    }
}
