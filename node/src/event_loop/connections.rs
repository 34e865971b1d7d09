//! Keeping the number of connections bounded, with room left for newcomers. Gossipsub keeps a
//! stream open to every peer it talks to, so libp2p's idle timeout never closes a connection
//! between two nodes; Kademlia lookups and room discovery would otherwise leave a node connected
//! to most of the network, at its connection limit, refusing the members who join later. So the
//! node closes, itself, connections that no room mesh needs once they pass the idle timeout,
//! and, near its limit, the least useful ones at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::gossipsub::TopicHash;

use super::EventLoop;
use crate::behaviour::MESH_N_LOW;

/// Connections younger than this are never closed to make room: long enough for identify, the
/// peers' subscriptions and a GRAFT to arrive, so the newcomer the room was made for stays.
const NEW_CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// The share of a connection limit kept free for newcomers: an eighth, at least one connection.
const HEADROOM_DIVISOR: u32 = 8;

/// The number of connections above which the node makes room, for a limit of `max`.
pub(super) fn trim_threshold(max: u32) -> usize {
    let headroom = (max / HEADROOM_DIVISOR).max(1);
    max.saturating_sub(headroom) as usize
}

/// How much a connected peer is worth keeping when room must be made, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Usefulness {
    /// In none of this node's rooms: a DHT contact or a passer-by.
    Stranger,
    /// A member of one of this node's rooms, outside its meshes: useful for sync only.
    RoomMember,
    /// In room meshes that all have more than [`MESH_N_LOW`] peers: gossipsub grafts another
    /// (a newcomer, say) at its next heartbeat.
    SurplusMeshPeer,
}

/// A peer's open connections, as far as making room is concerned.
struct PeerConnections {
    since: Instant,
    total: usize,
    inbound: usize,
}

impl EventLoop {
    /// Open connections per connected peer, with when the first one opened.
    fn connections_per_peer(&self) -> HashMap<PeerId, PeerConnections> {
        let mut peers: HashMap<PeerId, PeerConnections> = HashMap::new();
        for connection in self.connections.values() {
            let peer = peers.entry(connection.peer).or_insert(PeerConnections {
                since: connection.since,
                total: 0,
                inbound: 0,
            });
            peer.since = peer.since.min(connection.since);
            peer.total += 1;
            peer.inbound += usize::from(connection.inbound);
        }
        peers
    }

    /// Peers with a sync exchange in flight: closing their connection would cut it off.
    fn syncing_peers(&self) -> HashSet<PeerId> {
        self.exchanges.values().map(|e| e.peer).collect()
    }

    /// Peers whose connections must stay whatever happens: a sync exchange in flight, a relay
    /// reservation or circuit held here, or a bootstrap peer (the node's way back into the DHT).
    fn protected_peers(&self) -> HashSet<PeerId> {
        let mut protected = self.syncing_peers();
        protected.extend(self.bootstrap_peers.iter().copied());
        protected.extend(
            self.connections
                .values()
                .map(|c| c.peer)
                .filter(|peer| self.nat.relays_for(peer)),
        );
        protected
    }

    /// Reviews the graylisted peers (see the `shun` part), then closes connections to peers
    /// that are in no room mesh, have no sync exchange in flight, hold no relay reservation or
    /// circuit here, have been connected for the idle connection timeout, and are beyond the
    /// kept routing contacts (bootstrap peers first, then the longest connected).
    pub(super) fn handle_prune_tick(&mut self) {
        self.review_shunned();
        self.forget_unneeded_addresses();
        let mesh: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let syncing = self.syncing_peers();
        let mut extras: Vec<(bool, Instant, PeerId)> = self
            .connections_per_peer()
            .into_iter()
            .filter(|(peer, _)| {
                !mesh.contains(peer) && !syncing.contains(peer) && !self.nat.relays_for(peer)
            })
            .map(|(peer, c)| (!self.bootstrap_peers.contains(&peer), c.since, peer))
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

    /// Keeps announced addresses only of peers that are connected or remembered by a room.
    fn forget_unneeded_addresses(&mut self) {
        let connected: HashSet<PeerId> = self.connections.values().map(|c| c.peer).collect();
        let remembered: HashSet<PeerId> = self
            .rooms
            .values()
            .flat_map(|joined| joined.remembered.iter().copied())
            .collect();
        self.announced_addrs
            .retain(|peer, _| connected.contains(peer) || remembered.contains(peer));
    }

    /// Whether the node is at the point where it makes room rather than taking more peers.
    pub(super) fn near_connection_limit(&self) -> bool {
        let inbound = self.connections.values().filter(|c| c.inbound).count();
        self.connections.len() >= self.trim_above || inbound >= self.incoming_trim_above
    }

    /// Near the connection limits, closes the least useful connections (strangers, then room
    /// members outside the meshes, then peers of meshes larger than [`MESH_N_LOW`]; the oldest
    /// first) until the node is back below them, so a member who joins later is not refused.
    /// Connections younger than [`NEW_CONNECTION_GRACE`] and protected peers stay.
    pub(super) fn make_room_for_newcomers(&mut self) {
        let mut peers = self.connections_per_peer();
        // Connections already being closed no longer count.
        peers.retain(|peer, _| !self.closing.contains(peer));
        let total: usize = peers.values().map(|p| p.total).sum();
        let inbound: usize = peers.values().map(|p| p.inbound).sum();
        let mut excess = total.saturating_sub(self.trim_above);
        let mut inbound_excess = inbound.saturating_sub(self.incoming_trim_above);
        if excess == 0 && inbound_excess == 0 {
            return;
        }
        let protected = self.protected_peers();
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let topics: Vec<TopicHash> = self.rooms.values().map(|j| j.topic.clone()).collect();
        let mut mesh_sizes: HashMap<TopicHash, usize> = topics
            .iter()
            .map(|t| (t.clone(), gossipsub.mesh_peers(t).count()))
            .collect();
        let meshes_of = |peer: &PeerId| -> Vec<TopicHash> {
            topics
                .iter()
                .filter(|t| gossipsub.mesh_peers(t).any(|p| p == peer))
                .cloned()
                .collect()
        };
        let members: HashSet<PeerId> = gossipsub
            .all_peers()
            .filter(|(_, subscribed)| subscribed.iter().any(|t| topics.contains(t)))
            .map(|(peer, _)| *peer)
            .collect();
        let now = Instant::now();
        let mut candidates: Vec<(Usefulness, Instant, PeerId, Vec<TopicHash>)> = peers
            .iter()
            .filter(|(peer, c)| {
                !protected.contains(peer) && now.duration_since(c.since) >= NEW_CONNECTION_GRACE
            })
            .map(|(peer, c)| {
                let meshes = meshes_of(peer);
                let usefulness = if !meshes.is_empty() {
                    Usefulness::SurplusMeshPeer
                } else if members.contains(peer) {
                    Usefulness::RoomMember
                } else {
                    Usefulness::Stranger
                };
                (usefulness, c.since, *peer, meshes)
            })
            .collect();
        candidates.sort_by_key(|(usefulness, since, _, _)| (*usefulness, *since));
        let mut closing = Vec::new();
        for (_, _, peer, meshes) in candidates {
            if excess == 0 && inbound_excess == 0 {
                break;
            }
            let connections = &peers[&peer];
            if excess == 0 && connections.inbound == 0 {
                continue;
            }
            if meshes.iter().any(|t| mesh_sizes[t] <= MESH_N_LOW) {
                continue;
            }
            for topic in &meshes {
                if let Some(size) = mesh_sizes.get_mut(topic) {
                    *size -= 1;
                }
            }
            excess = excess.saturating_sub(connections.total);
            inbound_excess = inbound_excess.saturating_sub(connections.inbound);
            closing.push(peer);
        }
        for peer in closing {
            tracing::debug!(%peer, "closing a connection to make room for newcomers");
            if self.swarm.disconnect_peer_id(peer).is_ok() {
                self.closing.insert(peer);
            }
        }
    }
}
