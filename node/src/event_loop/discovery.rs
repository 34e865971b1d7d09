//! Finding peers: Kademlia provider records per room, identify feeding the routing table, mDNS
//! on the local network.

use grapevine_crdt::RoomId;
use libp2p::identify;
use libp2p::kad::{self, GetProvidersOk, QueryResult};
use libp2p::mdns;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use super::EventLoop;
use crate::behaviour::{KAD_PROTOCOL, room_provider_key};

impl EventLoop {
    /// Announces this node as a member of `room` and looks up the other members.
    pub(super) fn discover_room(&mut self, room: RoomId) {
        let key = room_provider_key(room);
        let kad = &mut self.swarm.behaviour_mut().kad;
        if let Err(e) = kad.start_providing(key.clone()) {
            tracing::warn!(error = %e, "announcing a room in the DHT failed");
        }
        kad.get_providers(key);
    }

    /// Stops announcing `room` (the record expires at the other peers).
    pub(super) fn forget_room(&mut self, room: RoomId) {
        self.swarm
            .behaviour_mut()
            .kad
            .stop_providing(&room_provider_key(room));
    }

    pub(super) fn handle_room_lookup_tick(&mut self) {
        let rooms: Vec<RoomId> = self.rooms.keys().copied().collect();
        for room in rooms {
            self.discover_room(room);
        }
    }

    pub(super) fn handle_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        self.note_relay(peer_id, &info.protocols);
        // Only peers that serve the DHT belong in the routing table.
        if !info.protocols.contains(&StreamProtocol::new(KAD_PROTOCOL)) {
            return;
        }
        for addr in info.listen_addrs {
            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
        }
    }

    pub(super) fn handle_kad(&mut self, event: kad::Event) {
        if let kad::Event::OutboundQueryProgressed {
            result: QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })),
            ..
        } = event
        {
            // Dialled now, while the query still holds the providers' addresses.
            for peer in providers {
                self.dial_member(peer, Vec::new());
            }
        }
    }

    pub(super) fn handle_mdns(&mut self, event: mdns::Event) {
        if let mdns::Event::Discovered(found) = event {
            for (peer, addr) in found {
                self.dial_member(peer, vec![addr]);
            }
        }
    }

    /// Dials a peer found by discovery unless it is this node or already connected.
    fn dial_member(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return;
        }
        let opts = DialOpts::peer_id(peer).addresses(addresses).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "not dialling a discovered peer");
        }
    }
}
