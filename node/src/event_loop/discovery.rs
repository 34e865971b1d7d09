//! Finding peers: Kademlia provider records per room, identify feeding the routing table, mDNS
//! on the local network.

use std::collections::HashSet;

use std::time::Instant;

use grapevine_crdt::RoomId;
use libp2p::identify;
use libp2p::kad::{self, GetProvidersOk, QueryResult};
use libp2p::mdns;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use super::{ANNOUNCED_ADDRS_PER_PEER, EventLoop, FIRST_LOOKUP_BACKOFF, MAX_LAN_PEERS};
use crate::behaviour::{KAD_PROTOCOL, MESH_N, MESH_N_LOW, room_provider_key};

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

    /// Looks up each room short of members whose lookup is due, backing off from
    /// `FIRST_LOOKUP_BACKOFF` to the room lookup interval; a room with enough members needs
    /// none, and starts from the short wait again if it runs short later.
    pub(super) fn handle_room_lookup_tick(&mut self) {
        self.redial_lan_peers();
        self.redial_bootstrap();
        let now = Instant::now();
        let mut due = Vec::new();
        for (&room, joined) in &self.rooms {
            let lonely = self.room_members(&joined.topic).len() < MESH_N_LOW;
            due.push((room, lonely && now >= joined.next_lookup, lonely));
        }
        for (room, look_up, lonely) in due {
            let max = self.room_lookup_interval;
            let Some(joined) = self.rooms.get_mut(&room) else {
                continue;
            };
            if !lonely {
                joined.lookup_backoff = FIRST_LOOKUP_BACKOFF.min(max);
                joined.next_lookup = now + joined.lookup_backoff;
            } else if look_up {
                joined.lookup_backoff = (joined.lookup_backoff * 2).min(max);
                joined.next_lookup = now + joined.lookup_backoff;
                self.discover_room(room);
            }
        }
    }

    /// Looks up (and announces again) the rooms with fewer connected members than
    /// [`MESH_N_LOW`]. A room with enough members needs no lookup: each one is a DHT walk that
    /// connects to some twenty peers, and Kademlia republishes the announcement made at join.
    pub(super) fn discover_lonely_rooms(&mut self) {
        let lonely: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(_, joined)| self.room_members(&joined.topic).len() < MESH_N_LOW)
            .map(|(room, _)| *room)
            .collect();
        for room in lonely {
            self.discover_room(room);
        }
    }

    pub(super) fn handle_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        self.note_relay(peer_id, &info.protocols);
        self.announced_addrs.insert(
            peer_id,
            info.listen_addrs
                .iter()
                .take(ANNOUNCED_ADDRS_PER_PEER)
                .cloned()
                .collect(),
        );
        // Only peers that serve the DHT belong in the routing table.
        if !info.protocols.contains(&StreamProtocol::new(KAD_PROTOCOL)) {
            return;
        }
        for addr in info.listen_addrs {
            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
        }
    }

    pub(super) fn handle_kad(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id,
            result: QueryResult::GetProviders(result),
            step,
            ..
        } = event
        else {
            return;
        };
        if let Ok(GetProvidersOk::FoundProviders { key, providers }) = result {
            self.dial_providers(id, &key, providers);
        }
        if step.last {
            self.provider_dials.remove(&id);
        }
    }

    /// Dials room members found by a lookup, but only while the room has fewer connected members
    /// than [`MESH_N_LOW`], and only up to [`MESH_N`] of them: a room needs a gossipsub mesh, not
    /// a connection to every member. Dialled now, while the query still holds their addresses.
    fn dial_providers(
        &mut self,
        query: kad::QueryId,
        key: &kad::RecordKey,
        providers: HashSet<PeerId>,
    ) {
        let Some(topic) = self
            .rooms
            .iter()
            .find(|(room, _)| room_provider_key(**room) == *key)
            .map(|(_, joined)| joined.topic.clone())
        else {
            return;
        };
        let members = self.room_members(&topic).len();
        let dialled = self.provider_dials.get(&query).copied().unwrap_or(0);
        if members >= MESH_N_LOW {
            return;
        }
        let mut budget = MESH_N.saturating_sub(members + dialled);
        for peer in providers {
            if budget == 0 {
                break;
            }
            if self.dial_member(peer, Vec::new()) {
                budget -= 1;
                *self.provider_dials.entry(query).or_default() += 1;
            }
        }
    }

    pub(super) fn handle_mdns(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(found) => {
                let mut new = HashSet::new();
                for (peer, addr) in found {
                    if !self.lan_peers.contains_key(&peer) && self.lan_peers.len() >= MAX_LAN_PEERS
                    {
                        continue;
                    }
                    let addresses = self.lan_peers.entry(peer).or_default();
                    if !addresses.contains(&addr) {
                        addresses.push(addr);
                    }
                    new.insert(peer);
                }
                for peer in new {
                    self.dial_lan_peer(peer);
                }
            }
            mdns::Event::Expired(gone) => {
                for (peer, addr) in gone {
                    if let Some(addresses) = self.lan_peers.get_mut(&peer) {
                        addresses.retain(|a| *a != addr);
                        if addresses.is_empty() {
                            self.lan_peers.remove(&peer);
                        }
                    }
                }
            }
        }
    }

    /// Dials the bootstrap peers again while the node has no connection at all (a first dial can
    /// be refused by a busy bootstrap node, or fail while the network is down), backing off from
    /// `FIRST_LOOKUP_BACKOFF` to the room lookup interval; a connection resets the wait. A node
    /// with other peers needs no bootstrap connection: its routing table still holds the
    /// bootstrap nodes for lookups, and redialling them would keep every member connected to
    /// nodes that close connections they do not need.
    fn redial_bootstrap(&mut self) {
        let connected = self.swarm.connected_peers().next().is_some();
        let now = Instant::now();
        if connected || self.bootstrap_addrs.is_empty() {
            self.bootstrap_backoff = FIRST_LOOKUP_BACKOFF;
            self.next_bootstrap_dial = now + FIRST_LOOKUP_BACKOFF;
            return;
        }
        if now < self.next_bootstrap_dial {
            return;
        }
        self.bootstrap_backoff = (self.bootstrap_backoff * 2).min(self.room_lookup_interval);
        self.next_bootstrap_dial = now + self.bootstrap_backoff;
        for addr in self.bootstrap_addrs.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "redialling a bootstrap peer failed");
            }
        }
    }

    /// Dials every peer on the local network that is not connected: a dial can fail when two
    /// peers that found each other at the same instant dial each other at once (a TCP
    /// simultaneous open), and mDNS reports a peer only once until it expires.
    pub(super) fn redial_lan_peers(&mut self) {
        // A LAN larger than the node's limits: the peers it made room by closing stay closed.
        if self.near_connection_limit() {
            return;
        }
        let peers: Vec<PeerId> = self.lan_peers.keys().copied().collect();
        for peer in peers {
            self.dial_lan_peer(peer);
        }
    }

    /// One dial to a peer found by mDNS, at all its addresses: separate dials would be refused
    /// while the first (perhaps at an address that does not answer) is pending.
    fn dial_lan_peer(&mut self, peer: PeerId) {
        if let Some(addresses) = self.lan_peers.get(&peer).cloned() {
            self.dial_member(peer, addresses);
        }
    }

    /// Dials a peer found by discovery unless it is this node or already connected; says
    /// whether a dial started.
    fn dial_member(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) -> bool {
        if peer == *self.swarm.local_peer_id() || self.swarm.is_connected(&peer) {
            return false;
        }
        // Kademlia adds the addresses it knows (its routing table and running lookups): a
        // provider found by a lookup is dialled at the addresses the lookup learnt.
        let opts = DialOpts::peer_id(peer)
            .addresses(addresses)
            .extend_addresses_through_behaviour()
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "not dialling a discovered peer");
                false
            }
        }
    }
}
