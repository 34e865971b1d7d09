//! Gossip counted by gossipsub itself, read back out of its metrics registry: a node delivers
//! each record once, so the copies that arrive twice are only visible inside gossipsub, and the
//! transport sees nothing but encrypted bytes. Its send queues towards slow peers are only
//! visible there too.

use std::collections::HashMap;
use std::ops::AddAssign;

use libp2p::metrics::Registry;

/// gossipsub's counter of message copies received, duplicates included.
const RECEIVED: &str = "topic_msg_recv_counts_unfiltered_total";
/// gossipsub's counter of messages received once they passed the duplicate check.
const FIRST_COPIES: &str = "topic_msg_recv_counts_total";
/// gossipsub's counter of the bytes of message copies received, duplicates included.
const RECEIVED_BYTES: &str = "topic_msg_recv_bytes_unfiltered_total";
/// gossipsub's histogram of the length of each peer's send queue, sampled at every heartbeat
/// (buckets 50 wide), by queue.
const QUEUE_SIZE_BUCKET: &str = "queue_size_bucket";
/// gossipsub's histogram of the messages it could not send to a peer per heartbeat (the queue
/// was full, or a message waited too long in it): its sum is every message dropped.
const FAILED_MESSAGES_SUM: &str = "failed_messages_sum";

/// Gossip messages a node's gossipsub received since it started, over every topic, so
/// simulations can tell how many copies of each record a peer takes in and what they weigh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipCounts {
    /// Message copies received, every copy counted.
    pub received: u64,
    /// Copies dropped on arrival: messages seen before (echoes of the node's own messages
    /// included) and the rare copy gossipsub rejects before its duplicate check (bad signature).
    pub duplicates: u64,
    /// Bytes of the message copies received, every copy counted: the gossipsub message as
    /// encoded (data, signature, topic, sequence number), without Noise and Yamux framing.
    pub received_bytes: u64,
    /// The longest send queue towards one peer seen at a heartbeat, rounded up to gossipsub's
    /// bucket of 50 messages (over nodes: the longest of all), so simulations can check that a
    /// slow reader does not make its senders buffer without bound.
    pub longest_send_queue: u64,
    /// Messages dropped instead of sent because a peer read too slowly: its send queue was full,
    /// or they waited in it longer than allowed.
    pub dropped_for_slow_peers: u64,
}

impl GossipCounts {
    /// The counts in a registry that a gossipsub behaviour records into
    /// (`gossipsub::Behaviour::with_metrics`); zero when it has recorded nothing yet.
    pub fn from_registry(registry: &Registry) -> Self {
        let mut text = String::new();
        // Writing into a String cannot fail.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
            unreachable!("encoding metrics into memory failed: {e}");
        }
        Self::from_text(&text)
    }

    /// The counts in metrics encoded as OpenMetrics text, summed over topics.
    fn from_text(text: &str) -> Self {
        let (mut received, mut first_copies, mut received_bytes) = (0, 0, 0);
        let mut dropped = 0.0;
        // Per queue: the cumulative count of each bucket, by upper bound.
        let mut queues: HashMap<String, Vec<(f64, u64)>> = HashMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let value = line.rsplit(' ').next().unwrap_or_default();
            if name == FAILED_MESSAGES_SUM {
                dropped += value.parse::<f64>().unwrap_or(0.0);
                continue;
            }
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match name {
                RECEIVED => received += value,
                FIRST_COPIES => first_copies += value,
                RECEIVED_BYTES => received_bytes += value,
                QUEUE_SIZE_BUCKET => {
                    if let Some((queue, bound)) = bucket_labels(line) {
                        queues.entry(queue).or_default().push((bound, value));
                    }
                }
                _ => {}
            }
        }
        let longest_send_queue = queues
            .values()
            .filter_map(|buckets| highest_bucket(buckets))
            .fold(0, u64::max);
        Self {
            received,
            duplicates: received.saturating_sub(first_copies),
            received_bytes,
            longest_send_queue,
            dropped_for_slow_peers: dropped as u64,
        }
    }
}

/// The labels of a histogram bucket line other than its bound (which queue), and its bound
/// (`le`, infinite for `+Inf`).
fn bucket_labels(line: &str) -> Option<(String, f64)> {
    let labels = line.split_once('{')?.1.split_once('}')?.0;
    let mut bound = None;
    let mut others = Vec::new();
    for label in labels.split(',') {
        match label.strip_prefix("le=") {
            Some(le) => bound = le.trim_matches('"').parse::<f64>().ok(),
            None => others.push(label),
        }
    }
    Some((others.join(","), bound?))
}

/// The upper bound of the lowest bucket holding every observation of a cumulative histogram:
/// the largest value observed, rounded up to its bucket. `None` when nothing was observed.
fn highest_bucket(buckets: &[(f64, u64)]) -> Option<u64> {
    let total = buckets.iter().map(|&(_, count)| count).max()?;
    if total == 0 {
        return None;
    }
    buckets
        .iter()
        .filter(|&&(_, count)| count == total)
        .map(|&(bound, _)| bound)
        .reduce(f64::min)
        .map(|bound| {
            if bound.is_finite() {
                bound as u64
            } else {
                u64::MAX
            }
        })
}

impl AddAssign for GossipCounts {
    /// Sums counts over peers; the longest send queue is the longest of all.
    fn add_assign(&mut self, other: Self) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.received_bytes += other.received_bytes;
        self.longest_send_queue = self.longest_send_queue.max(other.longest_send_queue);
        self.dropped_for_slow_peers += other.dropped_for_slow_peers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_copies_received_beyond_the_first() {
        let text = "# TYPE topic_msg_recv_counts_unfiltered counter\n\
            topic_msg_recv_counts_unfiltered_total{hash=\"a\"} 7\n\
            topic_msg_recv_counts_unfiltered_total{hash=\"b\"} 3\n\
            topic_msg_recv_counts_total{hash=\"a\"} 4\n\
            topic_msg_recv_counts_total{hash=\"b\"} 1\n\
            topic_msg_recv_bytes_unfiltered_total{hash=\"a\"} 700\n\
            topic_msg_recv_bytes_total{hash=\"a\"} 400\n\
            # EOF\n";
        let counts = GossipCounts::from_text(text);
        assert_eq!(
            counts,
            GossipCounts {
                received: 10,
                duplicates: 5,
                received_bytes: 700,
                longest_send_queue: 0,
                dropped_for_slow_peers: 0,
            }
        );
    }

    #[test]
    fn the_longest_send_queue_is_the_bound_of_the_bucket_holding_every_sample() {
        let text = "# TYPE queue_size histogram\n\
            queue_size_sum{message_type=\"non_priority\"} 260.0\n\
            queue_size_count{message_type=\"non_priority\"} 3\n\
            queue_size_bucket{le=\"0.0\",message_type=\"non_priority\"} 1\n\
            queue_size_bucket{le=\"50.0\",message_type=\"non_priority\"} 1\n\
            queue_size_bucket{le=\"100.0\",message_type=\"non_priority\"} 2\n\
            queue_size_bucket{le=\"150.0\",message_type=\"non_priority\"} 2\n\
            queue_size_bucket{le=\"200.0\",message_type=\"non_priority\"} 3\n\
            queue_size_bucket{le=\"+Inf\",message_type=\"non_priority\"} 3\n\
            queue_size_bucket{le=\"0.0\",message_type=\"priority\"} 3\n\
            queue_size_bucket{le=\"+Inf\",message_type=\"priority\"} 3\n\
            failed_messages_sum{message_type=\"non_priority\"} 12.0\n\
            failed_messages_sum{message_type=\"priority\"} 0.0\n\
            # EOF\n";
        let counts = GossipCounts::from_text(text);
        assert_eq!(counts.longest_send_queue, 200);
        assert_eq!(counts.dropped_for_slow_peers, 12);
        let mut total = counts;
        total += GossipCounts {
            longest_send_queue: 50,
            dropped_for_slow_peers: 3,
            ..GossipCounts::default()
        };
        assert_eq!(total.longest_send_queue, 200);
        assert_eq!(total.dropped_for_slow_peers, 15);
    }

    #[test]
    fn an_empty_registry_counts_nothing() {
        assert_eq!(
            GossipCounts::from_registry(&Registry::default()),
            GossipCounts::default()
        );
    }
}
