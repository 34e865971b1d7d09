//! Gossip counted by gossipsub itself, read back out of its metrics registry: a node delivers
//! each record once, so the copies that arrive twice are only visible inside gossipsub, and the
//! transport sees nothing but encrypted bytes.

use std::ops::AddAssign;

use libp2p::metrics::Registry;

/// gossipsub's counter of message copies received, duplicates included.
const RECEIVED: &str = "topic_msg_recv_counts_unfiltered_total";
/// gossipsub's counter of messages received once they passed the duplicate check.
const FIRST_COPIES: &str = "topic_msg_recv_counts_total";
/// gossipsub's counter of the bytes of message copies received, duplicates included.
const RECEIVED_BYTES: &str = "topic_msg_recv_bytes_unfiltered_total";

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
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()) else {
                continue;
            };
            match name {
                RECEIVED => received += value,
                FIRST_COPIES => first_copies += value,
                RECEIVED_BYTES => received_bytes += value,
                _ => {}
            }
        }
        Self {
            received,
            duplicates: received.saturating_sub(first_copies),
            received_bytes,
        }
    }
}

impl AddAssign for GossipCounts {
    /// Sums counts over peers.
    fn add_assign(&mut self, other: Self) {
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.received_bytes += other.received_bytes;
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
            }
        );
    }

    #[test]
    fn an_empty_registry_counts_nothing() {
        assert_eq!(
            GossipCounts::from_registry(&Registry::default()),
            GossipCounts::default()
        );
    }
}
