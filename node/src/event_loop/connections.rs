//! Keeping the number of connections bounded. Gossipsub keeps a stream open to every peer it
//! talks to, so libp2p's idle timeout never closes a connection between two nodes; Kademlia
//! lookups and room discovery would otherwise leave a node connected to most of the network.
//! Past the idle timeout the node closes, itself, connections that no room mesh needs.

use std::collections::HashSet;
use std::time::Instant;

use libp2p::PeerId;

use super::EventLoop;

impl EventLoop {
    /// Closes connections to peers that are in no room mesh, have no sync exchange in flight,
    /// hold no relay reservation or circuit here, have been connected for the idle connection timeout, and are beyond the kept routing
    /// contacts (bootstrap peers first, then the longest connected).
    pub(super) fn handle_prune_tick(&mut self) {
        let mesh: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let syncing: HashSet<PeerId> = self.exchanges.values().map(|e| e.peer).collect();
        let mut extras: Vec<(bool, Instant, PeerId)> = self
            .connected_since
            .iter()
            .filter(|(peer, _)| {
                !mesh.contains(*peer) && !syncing.contains(*peer) && !self.nat.relays_for(peer)
            })
            .map(|(peer, since)| (!self.bootstrap_peers.contains(peer), *since, *peer))
            .collect();
        if extras.len() <= self.routing_contacts {
            return;
        }
        extras.sort();
        let now = Instant::now();
        for (_, since, peer) in extras.into_iter().skip(self.routing_contacts) {
            if now.duration_since(since) >= self.idle_connection_timeout {
                tracing::debug!(%peer, "closing a connection no room mesh needs");
                // Err only when the peer is no longer connected.
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }
}
