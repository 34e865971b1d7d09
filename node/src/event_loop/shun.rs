//! Cutting off graylisted peers. Gossipsub only ignores the messages of a peer whose score is
//! below the graylist threshold: the peer stays connected, and everything it sends is still
//! carried, decrypted and decoded before it is dropped. A node therefore closes the connections
//! of a peer as soon as its score falls below the threshold and refuses its new ones until the
//! score is back above it; gossipsub keeps the score of a disconnected peer with a negative score
//! for an hour (`retain_score`), so a peer that redials at once is still refused.
//!
//! What graylists a peer is misbehaviour that honest nodes do not show: invalid records (every
//! node gives the same verdict, and checks before forwarding), bad sync messages, broken gossip
//! promises and GRAFTs during a backoff, weighted so that a slip or two stays far above the
//! threshold (see `behaviour.rs`).

use libp2p::PeerId;

use super::EventLoop;
use crate::behaviour::score_thresholds;

impl EventLoop {
    /// Whether gossipsub's score of `peer` is below the graylist threshold.
    fn is_graylisted(&self, peer: &PeerId) -> bool {
        let graylist = score_thresholds().graylist_threshold;
        self.swarm
            .behaviour()
            .gossipsub
            .peer_score(peer)
            .is_some_and(|score| score < graylist)
    }

    /// Closes every connection of `peer` and refuses its new ones, if it is graylisted. Called
    /// right after anything that lowers a score: a rejected message, a bad sync message.
    pub(super) fn shun_if_graylisted(&mut self, peer: PeerId) {
        // `block_peer` tells whether the peer was not refused already: warn once.
        if !self.is_graylisted(&peer) || !self.swarm.behaviour_mut().shunned.block_peer(peer) {
            return;
        }
        self.warn(
            Some(peer),
            "graylisted by gossipsub scoring: disconnected, and refused until its score recovers"
                .to_string(),
        );
    }

    /// Shuns connected peers graylisted by penalties that come without a message to check
    /// (broken promises, GRAFTs during a backoff), and lets back in shunned peers whose score
    /// has recovered (gossipsub forgets a disconnected peer's score after an hour).
    pub(super) fn review_shunned(&mut self) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            self.shun_if_graylisted(peer);
        }
        let recovered: Vec<PeerId> = self
            .swarm
            .behaviour()
            .shunned
            .blocked_peers()
            .iter()
            .filter(|peer| !self.is_graylisted(peer))
            .copied()
            .collect();
        for peer in recovered {
            tracing::info!(%peer, "score recovered: no longer refused");
            self.swarm.behaviour_mut().shunned.unblock_peer(peer);
        }
    }
}
