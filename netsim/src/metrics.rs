//! Measurements: when each record was published and when each peer received it, and the report
//! made from them, with gossipsub's own counts of the copies that arrived.
//!
//! Definitions, the same for Grapevine and the baseline:
//! - duplicates per record per peer: gossip copies a peer dropped on arrival as already seen,
//!   over the messages it took in by gossip (its first copies), summed over peers;
//! - payload bytes: the encoded gossipsub messages (data, signature, topic, sequence number)
//!   that arrived at the peers, every copy counted, duplicates included;
//! - control bytes: every other byte on the simulated wire (gossip control such as IHAVE, IWANT,
//!   GRAFT, PRUNE and IDONTWANT, subscriptions, Noise handshakes and framing, Yamux, and for
//!   Grapevine also history sync, Kademlia, identify and ping).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use grapevine_node::GossipCounts;
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

    /// Whether `record` was published by a member through the simulation (a message, not a
    /// profile or a preloaded record).
    pub fn was_published(&self, record: &RecordId) -> bool {
        self.published.contains_key(record)
    }

    /// How long after `at` every one of `peers` held every record published before `at` (its
    /// publisher aside), counting records already held at `at` as zero; `None` while one is
    /// still missing somewhere. After a repair or a restart this is the time to catch up on
    /// what was missed, measured even while new traffic keeps heads apart.
    pub fn caught_up_after(&self, at: Instant, peers: &[usize]) -> Option<Duration> {
        let mut latest = Duration::ZERO;
        for (record, &(publisher, published_at)) in &self.published {
            if published_at >= at {
                continue;
            }
            let got = self.received.get(record);
            for &peer in peers.iter().filter(|&&p| p != publisher) {
                let when = got?.get(&peer)?;
                latest = latest.max(when.saturating_duration_since(at));
            }
        }
        Some(latest)
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
    /// `excluded` peers (hostile ones) published, after `elapsed`; `gossip` is what the peers'
    /// gossipsub counted.
    pub fn report(
        &self,
        members: &[usize],
        excluded: &[usize],
        elapsed: Duration,
        traffic: &Traffic,
        gossip: GossipCounts,
    ) -> Report {
        let mut expected = 0usize;
        let mut delivered = 0usize;
        let mut to_95 = Vec::new();
        let mut to_all = Vec::new();
        let mut all = Vec::new();
        let mut delivered_at = Vec::new();
        let first_published = self
            .published
            .values()
            .filter(|(publisher, _)| !excluded.contains(publisher))
            .map(|(_, at)| *at)
            .min();
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
            if let Some(first) = first_published {
                delivered_at.extend(
                    receivers
                        .iter()
                        .filter_map(|p| got.and_then(|g| g.get(p)))
                        .map(|t| t.saturating_duration_since(first).as_secs_f64()),
                );
            }
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
        let wire_bytes = traffic.bytes.load(Ordering::Relaxed);
        let per_delivery = |bytes: u64| {
            if delivered == 0 {
                0.0
            } else {
                bytes as f64 / delivered as f64
            }
        };
        let first_copies = gossip.received.saturating_sub(gossip.duplicates);
        let curves = Curves::new(&all, delivered_at, expected);
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
            bytes_per_delivery: per_delivery(wire_bytes),
            payload_bytes_per_delivery: per_delivery(gossip.received_bytes),
            control_bytes_per_delivery: per_delivery(
                wire_bytes.saturating_sub(gossip.received_bytes),
            ),
            duplicates_per_record_per_peer: (first_copies > 0)
                .then(|| gossip.duplicates as f64 / first_copies as f64),
            curves,
            longest_send_queue: gossip.longest_send_queue,
            dropped_for_slow_peers: gossip.dropped_for_slow_peers,
            connections_opened: traffic.connections.load(Ordering::Relaxed),
            connections_per_node: None,
            elapsed,
            convergence: None,
        }
    }
}

/// The single deliveries of a run, each sorted, for the latency distribution and the
/// convergence curve of a plot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Curves {
    /// Latency of every delivery, in ms, shortest first.
    pub latencies_ms: Vec<f64>,
    /// When each delivery happened, in seconds since the first measured record was published,
    /// earliest first.
    pub delivered_at_s: Vec<f64>,
    /// Deliveries expected: (record, member) pairs, the publisher left out.
    pub expected: usize,
}

impl Curves {
    fn new(latencies: &[Duration], mut delivered_at_s: Vec<f64>, expected: usize) -> Self {
        let mut latencies_ms: Vec<f64> =
            latencies.iter().map(|l| l.as_secs_f64() * 1000.0).collect();
        latencies_ms.sort_by(f64::total_cmp);
        delivered_at_s.sort_by(f64::total_cmp);
        Self {
            latencies_ms,
            delivered_at_s,
            expected,
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

/// What the network and gossipsub had counted at one moment: a report made later counts only
/// what came after it (so a warm-up is left out).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountsAt {
    bytes: u64,
    connections: u64,
    gossip: GossipCounts,
}

impl CountsAt {
    /// The counts now.
    pub fn now(traffic: &Traffic, gossip: GossipCounts) -> Self {
        Self {
            bytes: traffic.bytes.load(Ordering::Relaxed),
            connections: traffic.connections.load(Ordering::Relaxed),
            gossip,
        }
    }

    /// What was counted since this moment, given the counts now.
    pub fn since(&self, traffic: &Traffic, gossip: GossipCounts) -> (Traffic, GossipCounts) {
        let since = Traffic::default();
        let bytes = traffic.bytes.load(Ordering::Relaxed);
        let connections = traffic.connections.load(Ordering::Relaxed);
        since
            .bytes
            .store(bytes.saturating_sub(self.bytes), Ordering::Relaxed);
        since.connections.store(
            connections.saturating_sub(self.connections),
            Ordering::Relaxed,
        );
        let gossip = GossipCounts {
            received: gossip.received.saturating_sub(self.gossip.received),
            duplicates: gossip.duplicates.saturating_sub(self.gossip.duplicates),
            received_bytes: gossip
                .received_bytes
                .saturating_sub(self.gossip.received_bytes),
            dropped_for_slow_peers: gossip
                .dropped_for_slow_peers
                .saturating_sub(self.gossip.dropped_for_slow_peers),
            // The longest queue is a peak, not a count: the run's own.
            longest_send_queue: gossip.longest_send_queue,
        };
        (since, gossip)
    }
}

/// Connections held per node at one moment.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ConnectionsPerNode {
    /// Mean over the nodes asked.
    pub mean: f64,
    /// The most any node held.
    pub max: u32,
}

impl ConnectionsPerNode {
    /// Mean and maximum of `counts`; `None` when there are none.
    pub fn of(counts: &[u32]) -> Option<Self> {
        let max = *counts.iter().max()?;
        let mean = counts.iter().map(|&c| f64::from(c)).sum::<f64>() / counts.len() as f64;
        Some(Self { mean, max })
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
    /// Of those, the gossip messages that arrived, every copy counted (see the module's
    /// definitions).
    pub payload_bytes_per_delivery: f64,
    /// Of those, everything else: gossip control, framing, handshakes, and Grapevine's sync and
    /// discovery.
    pub control_bytes_per_delivery: f64,
    /// Gossip copies dropped as already seen per message a peer took in by gossip; `None` when
    /// no gossip message arrived at all.
    pub duplicates_per_record_per_peer: Option<f64>,
    /// The single deliveries behind the figures, for plots; left out of the JSON.
    #[serde(skip)]
    pub curves: Curves,
    /// The longest gossipsub send queue towards one peer any node had at a heartbeat, in
    /// messages, rounded up to 50: what a slow reader makes its senders hold.
    pub longest_send_queue: u64,
    /// Gossip messages the nodes dropped instead of sending because the peer read too slowly.
    pub dropped_for_slow_peers: u64,
    /// Connections opened in the simulated network.
    pub connections_opened: u64,
    /// Connections each running honest node holds when the report is made, once its
    /// Kademlia walks and syncs are over: what a node keeps, against `connections_opened`
    /// over the whole run; `None` where nodes cannot be asked (the baseline).
    pub connections_per_node: Option<ConnectionsPerNode>,
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
        writeln!(
            f,
            "bytes per delivery       {:.0} (payload {:.0}, control {:.0})",
            self.bytes_per_delivery,
            self.payload_bytes_per_delivery,
            self.control_bytes_per_delivery
        )?;
        match self.duplicates_per_record_per_peer {
            Some(d) => writeln!(f, "duplicates per record per peer {d:.2}")?,
            None => writeln!(f, "duplicates per record per peer n/a (no gossip arrived)")?,
        }
        writeln!(
            f,
            "longest send queue       {} messages ({} dropped for slow peers)",
            self.longest_send_queue, self.dropped_for_slow_peers
        )?;
        writeln!(f, "connections opened       {}", self.connections_opened)?;
        if let Some(c) = self.connections_per_node {
            writeln!(
                f,
                "connections per node     {:.1} mean, {} max (held at the report)",
                c.mean, c.max
            )?;
        }
        if let Some(c) = self.convergence {
            writeln!(f, "converged after          {:.2} s", c.as_secs_f64())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_splits_into_gossip_payload_and_control_and_duplicates_are_per_first_copy() {
        let start = Instant::now();
        let mut log = DeliveryLog::default();
        let record = RecordId([7; 32]);
        log.published(record, 0, start);
        log.received(record, 1, start + Duration::from_millis(30));
        log.received(record, 2, start + Duration::from_millis(10));
        let traffic = Traffic::default();
        traffic.bytes.store(10_000, Ordering::Relaxed);
        // Two first copies and three duplicates, 500 bytes each.
        let gossip = GossipCounts {
            received: 5,
            duplicates: 3,
            received_bytes: 2_500,
            ..GossipCounts::default()
        };
        let report = log.report(&[0, 1, 2], &[], Duration::from_secs(1), &traffic, gossip);
        assert_eq!(report.bytes_per_delivery, 5_000.0);
        assert_eq!(report.payload_bytes_per_delivery, 1_250.0);
        assert_eq!(report.control_bytes_per_delivery, 3_750.0);
        assert_eq!(report.duplicates_per_record_per_peer, Some(1.5));
        assert_eq!(report.curves.latencies_ms, vec![10.0, 30.0]);
        assert_eq!(report.curves.delivered_at_s, vec![0.01, 0.03]);
        assert_eq!(report.curves.expected, 2);
    }

    #[test]
    fn catching_up_counts_records_published_before_the_moment_until_the_last_peer_has_them() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (r1, r2, r3) = (RecordId([1; 32]), RecordId([2; 32]), RecordId([3; 32]));
        let mut log = DeliveryLog::default();
        log.published(r1, 0, at(0));
        log.published(r2, 1, at(1_000));
        log.published(r3, 2, at(9_000));
        log.received(r1, 1, at(2_000));
        log.received(r2, 0, at(3_000));
        log.received(r2, 2, at(4_000));
        // r3 comes after the moment: no one needs to hold it.
        assert_eq!(
            log.caught_up_after(at(1_500), &[0, 1, 2]),
            None,
            "2 lacks r1"
        );
        log.received(r1, 2, at(5_000));
        assert_eq!(
            log.caught_up_after(at(1_500), &[0, 1, 2]),
            Some(Duration::from_millis(3_500))
        );
        assert_eq!(
            log.caught_up_after(at(6_000), &[0, 1, 2]),
            Some(Duration::ZERO),
            "everything was held already"
        );
    }

    #[test]
    fn without_gossip_there_is_no_duplicate_figure() {
        let report = DeliveryLog::default().report(
            &[0, 1],
            &[],
            Duration::ZERO,
            &Traffic::default(),
            GossipCounts::default(),
        );
        assert_eq!(report.duplicates_per_record_per_peer, None);
        assert_eq!(report.payload_bytes_per_delivery, 0.0);
    }
}
